//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `uniface-core`.
///
/// Variants carry structured fields so callers can react to them (which file, which hash,
/// which byte offset) instead of parsing messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The model registry package could not be downloaded.
    #[error("network error fetching {url}: {message}")]
    Network { url: String, message: String },

    /// A file's SHA-256 is not the pinned value.
    #[error("hash mismatch for {file}: expected sha256 {expected}, got {actual}")]
    HashMismatch {
        file: String,
        expected: String,
        actual: String,
    },

    /// A file's size is not the pinned value (cheap check on load).
    #[error("size mismatch for {file}: expected {expected} bytes, found {actual}")]
    SizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },

    /// A model file that should be present is not.
    #[error("model file missing: {path} (run `uniface models fetch`, or point UNIFACE_MODEL_DIR at a directory holding the model files)")]
    MissingModelFile { path: PathBuf },

    /// The registry archive ended early or its compressed stream is corrupt.
    #[error("truncated or corrupt archive {archive}: {detail}")]
    TruncatedArchive { archive: String, detail: String },

    /// The registry archive lacks a member the store needs.
    #[error("archive {archive} has no member {member}")]
    ArchiveMemberMissing { archive: String, member: String },

    /// The model store was built without the `download` feature and the models are not cached.
    #[error("models are not installed in {dir} and this build cannot download them (feature `download` is off); set UNIFACE_MODEL_DIR")]
    DownloadDisabled { dir: PathBuf },

    /// A dlib `.dat` file does not have the expected structure.
    #[error("malformed model file {file} at byte {offset}: {message}")]
    ModelFormat {
        file: String,
        offset: usize,
        message: String,
    },

    /// An image could not be read or decoded.
    #[error("cannot read image {path}: {message}")]
    Image { path: String, message: String },

    /// An image exceeds the pixel limit (a guard against decompression bombs).
    #[error("image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")]
    ImageTooLarge {
        width: u64,
        height: u64,
        max_pixels: u64,
    },

    /// A face chip has the wrong size for the embedder.
    #[error("face chip must be {expected}x{expected} RGB, got {width}x{height}")]
    ChipSize {
        expected: usize,
        width: usize,
        height: usize,
    },

    /// A buffer has the wrong length for the shape it claims.
    #[error("buffer length mismatch: expected {expected} values, got {got}")]
    BufferLength { expected: usize, got: usize },

    /// An image that must show a face shows none.
    #[error("no face found in {image}")]
    NoFace { image: String },

    /// A vector holds NaN or infinity where finite values are required.
    #[error("non-finite value: {what}")]
    NonFinite { what: String },

    /// An argument is outside the range the function accepts.
    #[error("invalid argument {name}: {message}")]
    InvalidArgument { name: &'static str, message: String },

    /// A serialised template is malformed.
    #[error("malformed template: {message}")]
    TemplateFormat { message: String },

    /// A serialised template's checksum does not match its bytes.
    #[error("template checksum mismatch: stored 0x{stored:08x}, computed 0x{actual:08x} (the bytes were damaged)")]
    TemplateChecksum { stored: u32, actual: u32 },

    /// Templates of different models or preprocessing cannot be compared.
    #[error("templates come from different models or preprocessing ({left} vs {right}); re-enrol with one model")]
    FingerprintMismatch { left: String, right: String },

    /// A sealed envelope does not authenticate, a key is malformed or unsafely stored, or the
    /// random source failed (see [`crate::crypto`]).
    #[error("crypto: {message}")]
    Crypto { message: String },

    /// An envelope was sealed under another key.
    #[error("sealed under key {expected}, but the key given is {got}")]
    WrongKey { expected: String, got: String },

    /// An error from the candle tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// What kind of failure an error is: the one classification that the bindings turn into
/// exceptions (Python) and status codes (C), so that both always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument out of range or inconsistent (NaN values, a wrong dimension, …).
    InvalidArgument,
    /// A file or directory that does not exist.
    NotFound,
    /// Reading or writing a file failed.
    Io,
    /// A model file is missing, corrupt, unreadable or could not be downloaded.
    Model,
    /// An image could not be decoded, is too large, or a pixel buffer has the wrong shape.
    Image,
    /// No face where one was required.
    NoFace,
    /// A template is malformed, damaged, or from another model.
    Template,
    /// A gallery operation failed (damaged files, wrong model, …).
    Gallery,
    /// Another writer holds the gallery.
    Locked,
    /// The gallery was opened read-only.
    ReadOnly,
    /// A key is wrong, missing or unsafely stored, or sealed bytes do not authenticate.
    Crypto,
}

impl Error {
    /// The [`ErrorKind`] of this error.
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Error::MissingModelFile { .. } => K::NotFound,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                K::NotFound
            }
            Error::Io { .. } => K::Io,
            Error::Image { .. }
            | Error::ImageTooLarge { .. }
            | Error::BufferLength { .. }
            | Error::ChipSize { .. } => K::Image,
            Error::NoFace { .. } => K::NoFace,
            Error::TemplateFormat { .. }
            | Error::TemplateChecksum { .. }
            | Error::FingerprintMismatch { .. } => K::Template,
            Error::NonFinite { .. } | Error::InvalidArgument { .. } => K::InvalidArgument,
            Error::Network { .. }
            | Error::HashMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::TruncatedArchive { .. }
            | Error::ArchiveMemberMissing { .. }
            | Error::DownloadDisabled { .. }
            | Error::ModelFormat { .. }
            | Error::Candle(_) => K::Model,
            Error::Crypto { .. } | Error::WrongKey { .. } => K::Crypto,
        }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
