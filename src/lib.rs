//! # UniFace
//!
//! Face biometrics as an embeddable library: model store, detection, alignment, embedding,
//! comparison and 1:N galleries. This facade re-exports the engine crates:
//!
//! * [`core`] (`uniface-core`): model store, dlib model readers, the face embedder;
//! * [`index`] (`uniface-index`): the gallery.
//!
//! ```no_run
//! use uniface::{Embedder, ModelStore};
//! # fn main() -> uniface::Result<()> {
//! let models = ModelStore::from_env()?.ensure()?;
//! let embedder = Embedder::from_file(&models.embedder)?;
//! let chip = image::RgbImage::new(150, 150);
//! let descriptor = embedder.embed_chip(&chip)?;
//! println!("{} values", descriptor.len());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub use uniface_core as core;
pub use uniface_index as index;

pub use uniface_core::calibration::{CalibrationTable, Decision};
pub use uniface_core::compare::{Metric, TemplateMatrix};
pub use uniface_core::detect::{DetectOptions, Detector, FaceBox};
pub use uniface_core::embed::{euclidean_distance, Backend, Descriptor, Embedder};
pub use uniface_core::landmarks::Landmarks;
pub use uniface_core::model_store::{ModelCard, ModelSet, ModelStore};
pub use uniface_core::template::{ElementType, ModelFingerprint, Template};
pub use uniface_core::{Error, Face, FaceAnalyzer, Result};
