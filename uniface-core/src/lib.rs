//! # uniface-core
//!
//! The engine of UniFace: model store, dlib model readers and the face embedder. Later stages
//! (image input, detection, landmarks, alignment, comparison, quality) join as their own modules.
//!
//! ```no_run
//! use uniface_core::{model_store::ModelStore, embed::Embedder};
//! # fn main() -> uniface_core::Result<()> {
//! let store = ModelStore::from_env()?;
//! let models = store.ensure()?; // downloads and verifies on first use
//! let embedder = Embedder::from_file(&models.embedder)?;
//! let chip = image::open("chip.png").map_err(|e| uniface_core::Error::Image {
//!     path: "chip.png".into(),
//!     message: e.to_string(),
//! })?;
//! let descriptor = embedder.embed_chip(&chip.to_rgb8())?;
//! assert_eq!(descriptor.len(), 128);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod align;
pub mod detect;
pub mod dlib;
pub mod embed;
mod error;
pub mod geometry;
pub mod image;
pub mod landmarks;
pub mod model_store;
mod nn;
pub mod pipeline;
pub mod template;

/// The tensor library the networks run on.
pub use candle_core as candle;
pub use candle_core::Device;
pub use error::{Error, Result};
pub use pipeline::{Face, FaceAnalyzer};
