//! # UniFace
//!
//! Face biometrics as an embeddable library: model store, detection, alignment, embedding,
//! comparison, calibrated decisions, evaluation and 1:N galleries. This facade re-exports the
//! engine crates:
//!
//! * [`core`] (`uniface-core`): model store, dlib model readers, the face pipeline,
//!   calibration, quality, liveness and evaluation;
//! * [`index`] (`uniface-index`): the gallery;
//! * [`eval`]: `uniface_core::eval` plus open-set identification through a gallery;
//! * [`mod@bench`]: speed as same-run ratios against baselines (`uniface bench`).
//!
//! One error type covers both ([`Error`]): `?` lifts either crate's error into it.
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

pub mod bench;
pub mod cluster;
pub mod eval;

pub use uniface_core::calibration::{CalibrationTable, Decision};
pub use uniface_core::compare::{Metric, TemplateMatrix};
pub use uniface_core::detect::{DetectOptions, Detector, FaceBox, FaceSelection};
pub use uniface_core::embed::{euclidean_distance, Backend, Descriptor, Embedder};
pub use uniface_core::landmarks::Landmarks;
pub use uniface_core::model_store::{ModelCard, ModelSet, ModelStore};
pub use uniface_core::template::{ElementType, ModelFingerprint, Template};
pub use uniface_core::{Face, FaceAnalyzer};

/// Everything that can go wrong in UniFace: an engine error or a gallery error, each with its
/// crate's structured variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Core(uniface_core::Error),
    #[error(transparent)]
    Index(uniface_index::Error),
}

/// The facade's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<uniface_core::Error> for Error {
    fn from(e: uniface_core::Error) -> Self {
        Self::Core(e)
    }
}

impl From<uniface_core::candle::Error> for Error {
    fn from(e: uniface_core::candle::Error) -> Self {
        Self::Core(uniface_core::Error::Candle(e))
    }
}

impl From<uniface_index::Error> for Error {
    /// A gallery error that is an engine error underneath is reported as the engine error.
    fn from(e: uniface_index::Error) -> Self {
        match e {
            uniface_index::Error::Core(e) => Self::Core(e),
            e => Self::Index(e),
        }
    }
}

impl Error {
    /// The [`core::ErrorKind`] of this error.
    pub fn kind(&self) -> uniface_core::ErrorKind {
        match self {
            Self::Core(e) => e.kind(),
            Self::Index(e) => e.kind(),
        }
    }

    /// An invalid argument (the CLI's and the services' own checks).
    pub fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        Self::Core(uniface_core::Error::InvalidArgument {
            name,
            message: message.into(),
        })
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Self::Core(uniface_core::Error::Io {
            path: path.into(),
            source,
        })
    }
}
