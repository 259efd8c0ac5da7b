//! `uniface gallery` end to end on real LFW photos (linked, not copied, into a temp folder).

mod common;

use std::process::Command;

use common::{models, ok, shared_data};
use serde_json::Value;

fn uniface(gallery: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uniface"));
    c.env("UNIFACE_MODEL_DIR", &models().dir)
        .arg("gallery")
        .arg("--gallery")
        .arg(gallery);
    c
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

fn fails(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn the_cli_refuses_bad_sizes_and_names_and_check_fails_on_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let lfw = shared_data().join("lfw");
    // shard counts outside 1..=4096 are refused, leaving nothing behind
    for n in ["0", "100000"] {
        let g = tmp.path().join(format!("g{n}"));
        let err = fails(uniface(&g).args(["create", "--shards", n]));
        assert!(err.contains("shard count"), "{err}");
        assert!(!g.join("manifest.json").exists() && !g.join("shard-000").exists());
    }
    // folder names that are not UTF-8 are refused by name, never merged into one subject
    let people = tmp.path().join("people");
    for (raw, person) in [(b"bad\xff", "Abel_Pacheco"), (b"bad\xfe", "Aaron_Peirsol")] {
        use std::os::unix::ffi::OsStrExt;
        let d = people.join(std::ffi::OsStr::from_bytes(raw));
        std::fs::create_dir_all(&d).unwrap();
        let f = format!("{person}_0001.jpg");
        std::os::unix::fs::symlink(lfw.join(person).join(&f), d.join(&f)).unwrap();
    }
    let g = tmp.path().join("g");
    ok(uniface(&g).arg("create"));
    let err = fails(uniface(&g).arg("enroll").arg("--from-dir").arg(&people));
    assert!(err.contains("not UTF-8"), "{err}");
    // graph parameters outside their documented ranges
    let err = fails(uniface(&g).args(["rebuild", "--connectivity", "100000"]));
    assert!(err.contains("connectivity must lie in"), "{err}");
    // enrolled templates go into a saved graph: a reopen has nothing to index
    let photo = lfw.join("Abel_Pacheco/Abel_Pacheco_0001.jpg");
    ok(uniface(&g).arg("enroll").arg("Abel_Pacheco").arg(&photo));
    let st: Value = serde_json::from_str(&ok(uniface(&g).args(["--json", "stats"]))).unwrap();
    assert_eq!(st["pending"], 0, "{st}");
    // a reader is not stopped by the lock file, and changes nothing
    let log = g.join("shard-000/wal.log");
    let before = std::fs::read(&log).unwrap();
    ok(uniface(&g).args(["--json", "identify"]).arg(&photo));
    assert_eq!(std::fs::read(&log).unwrap(), before);
    // a k of 10^11 sizes nothing (it once asked for 25.6 TB): one subject, one candidate
    let r: Value = serde_json::from_str(&ok(uniface(&g)
        .args(["--json", "identify", "--k", "100000000000"])
        .arg(&photo)))
    .unwrap();
    assert_eq!(r["candidates"].as_array().map(Vec::len), Some(1), "{r}");
    // output into a closed pipe ends quietly (no panic)
    let mut child = uniface(&g)
        .args(["--json", "stats"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // check exits non-zero on each kind of damage, and is clean again once it is undone
    ok(uniface(&g)
        .arg("enroll")
        .arg("Aaron_Peirsol")
        .arg(lfw.join("Aaron_Peirsol/Aaron_Peirsol_0001.jpg")));
    ok(uniface(&g).arg("check"));
    let damage = |path: std::path::PathBuf, at: usize, expect: &str| {
        let good = std::fs::read(&path).unwrap();
        let mut b = good.clone();
        b[at] ^= 0xff;
        std::fs::write(&path, &b).unwrap();
        let out = uniface(&g).arg("check").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!out.status.success() && text.contains(expect), "{text}");
        std::fs::write(&path, &good).unwrap();
        ok(uniface(&g).arg("check"));
    };
    damage(log, 30, "followed by a valid frame");
    damage(g.join("shard-000/hnsw.usearch"), 200, "saved graph");
    damage(g.join("manifest.json"), 30, "manifest.json");
}

#[test]
fn enroll_prints_each_enrollment_once_it_is_durable() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let lfw = shared_data().join("lfw");
    let people = tmp.path().join("people");
    // about 40 photos: seconds of work after the first one is acknowledged
    let mut n = 0;
    for entry in std::fs::read_dir(&lfw).unwrap() {
        let dir = entry.unwrap().path();
        for f in std::fs::read_dir(&dir).unwrap().take(2) {
            let f = f.unwrap().path();
            let d = people.join(dir.file_name().unwrap());
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(&f, d.join(f.file_name().unwrap())).unwrap();
            n += 1;
        }
        if n >= 40 {
            break;
        }
    }
    let g = tmp.path().join("g");
    ok(uniface(&g).arg("create"));
    let mut child = uniface(&g)
        .args(["--json", "enroll", "--from-dir"])
        .arg(&people)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // the first line came while the run was still going: kill it there
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run had already ended"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let printed: Value = serde_json::from_str(&first).unwrap();
    let st: Value = serde_json::from_str(&ok(uniface(&g).args(["--json", "stats"]))).unwrap();
    let templates = st["templates"].as_u64().unwrap();
    assert!(templates >= 1 && templates < n as u64, "{st}");
    // what was printed is in the gallery
    let subject = printed["subject"].as_str().unwrap();
    let photo = printed["image"].as_str().unwrap();
    let v: Value =
        serde_json::from_str(&ok(uniface(&g).args(["--json", "verify", subject, photo]))).unwrap();
    assert_eq!(v["match"], true, "{v}");
}

/// `--help` describes each command under its own name, and `--gallery` works after the
/// subcommand too, as users type it.
#[test]
fn help_names_each_command_and_options_go_after_the_subcommand() {
    let help = ok(Command::new(env!("CARGO_BIN_EXE_uniface")).arg("--help"));
    let line = |name: &str| {
        help.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("eval").contains("Measure accuracy"), "{help}");
    assert!(line("verify").contains("same person"), "{help}");
    assert!(!line("verify").contains("Measure accuracy"), "{help}");
    let tmp = tempfile::tempdir().unwrap();
    let g = tmp.path().join("g");
    ok(Command::new(env!("CARGO_BIN_EXE_uniface"))
        .args(["gallery", "create", "--gallery"])
        .arg(&g));
    assert!(g.join("manifest.json").exists());
}

#[test]
fn an_encrypted_gallery_needs_its_key_file_for_every_command_and_rotates() {
    let tmp = tempfile::tempdir().unwrap();
    let lfw = shared_data().join("lfw");
    let (key, new_key) = (tmp.path().join("kek"), tmp.path().join("kek2"));
    for k in [&key, &new_key] {
        ok(Command::new(env!("CARGO_BIN_EXE_uniface"))
            .args(["keys", "new", "--out"])
            .arg(k));
    }
    let g = tmp.path().join("gallery");
    let with = |k: &std::path::Path| {
        let mut c = uniface(&g);
        c.arg("--key-file").arg(k);
        c
    };
    // --encrypt without a key, and a key without --encrypt, are refused
    assert!(fails(uniface(&g).args(["create", "--encrypt"])).contains("--key-file"));
    assert!(fails(with(&key).arg("create")).contains("--encrypt"));
    let created = ok(with(&key).args(["create", "--encrypt", "--shards", "2"]));
    assert!(created.contains("encrypted under key"), "{created}");
    for name in ["Abel_Pacheco", "Aaron_Peirsol"] {
        ok(with(&key)
            .args(["enroll", name])
            .arg(lfw.join(name).join(format!("{name}_0001.jpg"))));
    }
    let probe = lfw.join("Abel_Pacheco/Abel_Pacheco_0004.jpg");
    let identify = |c: &mut Command| -> Value {
        serde_json::from_str(&ok(c
            .args(["--json", "identify", "--fmr", "1e-3"])
            .arg(&probe)))
        .unwrap()
    };
    assert_eq!(identify(&mut with(&key))["known"], "Abel_Pacheco");
    // without the key, or with another one: refused, naming what to do
    let no_key = fails(uniface(&g).args(["identify"]).arg(&probe));
    assert!(
        no_key.contains("encrypted") && no_key.contains("--key-file"),
        "{no_key}"
    );
    let wrong = fails(with(&new_key).args(["identify"]).arg(&probe));
    assert!(
        wrong.contains("keys.log") && wrong.contains("sealed under key"),
        "{wrong}"
    );
    let c: Value = serde_json::from_str(&ok(with(&key).args(["--json", "check"]))).unwrap();
    assert!(c["problems"].as_array().unwrap().is_empty(), "{c}");
    let out = uniface(&g).arg("check").output().unwrap();
    assert!(!out.status.success());
    let problems = String::from_utf8_lossy(&out.stdout);
    assert!(
        problems.contains("encrypted") && problems.contains("--key-file"),
        "{problems}"
    );
    let stats: Value = serde_json::from_str(&ok(with(&key).args(["--json", "stats"]))).unwrap();
    assert_eq!(stats["encryption"], "xchacha20-poly1305");
    // rotation: the new key opens it, the old one no longer does
    ok(with(&key)
        .arg("rotate-key")
        .arg("--new-key-file")
        .arg(&new_key));
    assert_eq!(identify(&mut with(&new_key))["known"], "Abel_Pacheco");
    fails(with(&key).arg("stats"));
    // removal destroys the subject's key at once
    ok(with(&new_key).args(["remove", "--subject", "Abel_Pacheco"]));
    assert_ne!(identify(&mut with(&new_key))["known"], "Abel_Pacheco");
    // a rotation that stopped after shard 0 (shard 1's key log as it was before: rotation
    // changes no key) is finished with --previous-key-file
    let k1 = std::fs::read(g.join("shard-001/keys.log")).unwrap();
    ok(with(&new_key)
        .arg("rotate-key")
        .arg("--new-key-file")
        .arg(&key));
    std::fs::write(g.join("shard-001/keys.log"), &k1).unwrap();
    let stopped = fails(with(&key).arg("stats"));
    assert!(stopped.contains("shard-001"), "{stopped}");
    let out = with(&key)
        .arg("--previous-key-file")
        .arg(&new_key)
        .arg("checkpoint")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("re-wrapped"),
        "{stderr}"
    );
    ok(with(&key).arg("stats"));
}
