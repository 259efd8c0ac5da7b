//! Calibrated decisions from the command line: `uniface verify` and `uniface calibrate` on real
//! LFW photos (read in place from the shared data folder).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{models, shared_data};
use serde_json::Value;

fn uniface() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uniface"));
    c.env("UNIFACE_MODEL_DIR", &models().dir);
    c
}

fn lfw(name: &str, n: u32) -> PathBuf {
    shared_data()
        .join("lfw")
        .join(name)
        .join(format!("{name}_{n:04}.jpg"))
}

fn run_json(args: &[&std::ffi::OsStr]) -> Value {
    let out = uniface().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn verify_accepts_a_genuine_pair_and_rejects_an_impostor() {
    // The first same-person and different-person lines of LFW's pairs.txt.
    let (a, b) = (lfw("Abel_Pacheco", 1), lfw("Abel_Pacheco", 4));
    let strict = run_json(&["verify".as_ref(), "--json".as_ref(), a.as_ref(), b.as_ref()]);
    for key in ["distance", "similarity", "threshold", "fmr", "match"] {
        assert!(strict.get(key).is_some(), "{key} missing: {strict}");
    }
    // This genuine pair (distance ≈ 0.52) is rejected at the default FMR 1e-4 and accepted
    // at 1e-3: the trade-off the calibration table documents.
    assert_eq!(strict["fmr"], 1e-4);
    assert_eq!(strict["match"], false, "{strict}");
    let same = run_json(&[
        "verify".as_ref(),
        "--json".as_ref(),
        "--fmr".as_ref(),
        "1e-3".as_ref(),
        a.as_ref(),
        b.as_ref(),
    ]);
    assert_eq!(same["match"], true, "{same}");
    assert_eq!(same["distance"], strict["distance"]);
    let d = same["distance"].as_f64().unwrap();
    let t = same["threshold"].as_f64().unwrap();
    assert!(d < t && t > strict["threshold"].as_f64().unwrap());
    let s = same["similarity"].as_f64().unwrap();
    assert!((s - (1.0 - d / 2.0)).abs() < 1e-6);
    let e = same["estimated_fmr"].as_f64().unwrap();
    assert!(e > 1e-4 && e < 1e-3, "{e}");

    let other = lfw("Aaron_Peirsol", 1);
    let diff = run_json(&[
        "verify".as_ref(),
        "--json".as_ref(),
        "--fmr".as_ref(),
        "1e-2".as_ref(),
        a.as_ref(),
        other.as_ref(),
    ]);
    assert_eq!(diff["match"], false, "{diff}");
    // a looser target gives a larger threshold
    assert!(diff["threshold"].as_f64().unwrap() > t);
    assert!(diff["estimated_fmr"].as_f64().unwrap() > 1e-2);
}

#[test]
fn verify_fails_clearly_without_a_face_or_with_an_unsupported_target() {
    let a = lfw("Abel_Pacheco", 1);
    let landscape = shared_data().join("photos/no_face_landscape_view.jpg");
    let out = uniface()
        .arg("verify")
        .arg(&a)
        .arg(&landscape)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no face found in") && err.contains("no_face_landscape_view"),
        "{err}"
    );

    let out = uniface()
        .args(["verify", "--fmr", "1e-9"])
        .arg(&a)
        .arg(&a)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smallest false-match rate"), "{err}");
}

#[test]
fn calibrate_counts_every_pair_of_a_labelled_folder() {
    // Six people with 2-4 photos each, linked (not copied) into a folder per identity.
    let people = [
        ("Abel_Pacheco", 4),
        ("Akhmed_Zakayev", 3),
        ("Amber_Tamblyn", 2),
        ("Anders_Fogh_Rasmussen", 4),
        ("Angela_Bassett", 4),
        ("Andy_Roddick", 4),
    ];
    let root = tempfile::tempdir().unwrap();
    let mut n = 0u64;
    let mut genuine = 0u64;
    for (name, count) in people {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let mut photos: Vec<PathBuf> = std::fs::read_dir(shared_data().join("lfw").join(name))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        photos.sort();
        let mut have = 0u64;
        for src in photos.iter().take(count) {
            std::os::unix::fs::symlink(src, dir.join(src.file_name().unwrap())).unwrap();
            have += 1;
        }
        n += have;
        genuine += have * have.saturating_sub(1) / 2;
    }
    assert!(n >= 12 && genuine >= 6, "too few shared photos: {n}");
    let table_path = root.path().join("table.json");
    let t = run_json(&[
        "calibrate".as_ref(),
        "--json".as_ref(),
        "--root".as_ref(),
        root.path().as_os_str(),
        "--fmr".as_ref(),
        "0.1".as_ref(),
        "--fmr".as_ref(),
        "0.02".as_ref(),
        "--out".as_ref(),
        table_path.as_os_str(),
    ]);
    assert_eq!(t["images"], n);
    assert_eq!(t["identities"], 6);
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let impostors = n * (n - 1) / 2 - genuine;
    for r in rows {
        assert_eq!(r["impostor_comparisons"], impostors);
        assert_eq!(r["genuine_comparisons"], genuine);
        let fmr = r["target_fmr"].as_f64().unwrap();
        assert_eq!(
            r["false_matches"].as_u64().unwrap(),
            (fmr * impostors as f64).floor() as u64
        );
    }
    assert!(rows[0]["threshold"].as_f64() > rows[1]["threshold"].as_f64());
    // the saved table drives `verify`
    let a = lfw("Abel_Pacheco", 1);
    let b = lfw("Abel_Pacheco", 4);
    let v = run_json(&[
        "verify".as_ref(),
        "--json".as_ref(),
        "--fmr".as_ref(),
        "0.1".as_ref(),
        "--calibration".as_ref(),
        table_path.as_os_str(),
        a.as_ref(),
        b.as_ref(),
    ]);
    let (got, want) = (
        v["threshold"].as_f64().unwrap(),
        rows[0]["threshold"].as_f64().unwrap(),
    );
    assert!((got - want).abs() < 1e-6, "{got} {want}");
}

#[test]
fn quality_and_liveness_json_mirror_the_rust_types() {
    let live_dir = shared_data().join("liveness/minifasnet");
    let blur = shared_data().join("photos/quality_blurred_face_blur.jpg");
    let spoof = shared_data().join("photos/spoof_photo_of_screen_rgb_fake.jpg");
    let out = uniface()
        .env("UNIFACE_LIVENESS_DIR", &live_dir)
        .args(["quality", "--json"])
        .arg(&blur)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(q["accepted"], false);
    assert!(
        q["reasons"]
            .as_array()
            .unwrap()
            .contains(&Value::from("blurry")),
        "{q}"
    );
    let sharp = &q["quality"]["sharpness"];
    assert!(sharp["raw"].as_f64().unwrap() >= 0.0 && sharp["scalar"].as_f64().is_some());
    assert_eq!(q["liveness"]["per_model"].as_array().unwrap().len(), 2);

    let out = uniface()
        .env("UNIFACE_LIVENESS_DIR", &live_dir)
        .args(["liveness", "--json"])
        .arg(&spoof)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    let face = &l["faces"][0];
    assert_eq!(face["is_live"], false, "{l}");
    let models: Vec<&str> = face["per_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["minifasnet-v2-2.7", "minifasnet-v1se-4.0"]);
    assert!(face["score"].as_f64().unwrap() < 0.5);
}
