//! `uniface gallery` end to end on real LFW photos (linked, not copied, into a temp folder).

mod common;

use std::process::Command;

use common::{models, shared_data};
use serde_json::Value;

fn uniface(gallery: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uniface"));
    c.env("UNIFACE_MODEL_DIR", &models().dir)
        .arg("gallery")
        .arg("--gallery")
        .arg(gallery);
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn create_enroll_identify_remove_and_check() {
    let tmp = tempfile::tempdir().unwrap();
    let people = tmp.path().join("people");
    let lfw = shared_data().join("lfw");
    for (name, first) in [
        ("Abel_Pacheco", 1),
        ("Aaron_Peirsol", 1),
        ("Akhmed_Zakayev", 1),
    ] {
        std::fs::create_dir_all(people.join(name)).unwrap();
        let f = format!("{name}_{first:04}.jpg");
        std::os::unix::fs::symlink(lfw.join(name).join(&f), people.join(name).join(&f)).unwrap();
    }
    let g = tmp.path().join("gallery");
    ok(uniface(&g).args(["create", "--shards", "2"]));
    let out = ok(uniface(&g)
        .arg("--json")
        .arg("enroll")
        .arg("--from-dir")
        .arg(&people));
    assert_eq!(out.lines().count(), 3, "{out}");
    let probe = lfw.join("Abel_Pacheco/Abel_Pacheco_0004.jpg");
    let r: Value = serde_json::from_str(&ok(uniface(&g)
        .args(["--json", "identify", "--fmr", "1e-3"])
        .arg(&probe)))
    .unwrap();
    assert_eq!(r["known"], "Abel_Pacheco", "{r}");
    assert_eq!(r["candidates"].as_array().unwrap().len(), 3);
    let c: Value = serde_json::from_str(&ok(uniface(&g).args(["--json", "check"]))).unwrap();
    assert_eq!(c["templates"], 3);
    assert!(c["problems"].as_array().unwrap().is_empty());
    // an FPIR target is converted for the gallery's size (3 templates)
    let r: Value = serde_json::from_str(&ok(uniface(&g)
        .args(["--json", "identify", "--fpir", "1e-2"])
        .arg(&probe)))
    .unwrap();
    assert_eq!(r["fpir"], 1e-2, "{r}");
    let fmr = r["fmr"].as_f64().unwrap();
    assert!((fmr - (1.0 - 0.99f64.powf(1.0 / 3.0))).abs() < 1e-9, "{r}");
    assert_eq!(r["known"], "Abel_Pacheco", "{r}");
    // rebuild with other graph parameters: recorded in the manifest, same answers
    ok(uniface(&g).args(["rebuild", "--connectivity", "8", "--graph", "f16"]));
    let st: Value = serde_json::from_str(&ok(uniface(&g).args(["--json", "stats"]))).unwrap();
    assert_eq!(st["hnsw"]["connectivity"], 8, "{st}");
    assert_eq!(st["hnsw"]["graph"], "f16", "{st}");
    assert_eq!(st["pending"], 0, "{st}");
    let r: Value = serde_json::from_str(&ok(uniface(&g)
        .args(["--json", "identify", "--fmr", "1e-3"])
        .arg(&probe)))
    .unwrap();
    assert_eq!(r["known"], "Abel_Pacheco", "{r}");
    ok(uniface(&g).args(["remove", "--subject", "Abel_Pacheco"]));
    ok(uniface(&g).arg("checkpoint"));
    let r: Value = serde_json::from_str(&ok(uniface(&g)
        .args(["--json", "identify", "--fmr", "1e-3"])
        .arg(&probe)))
    .unwrap();
    assert_eq!(r["known"], Value::Null, "{r}");
    // a second create over the same directory is refused
    let out = uniface(&g).arg("create").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}
