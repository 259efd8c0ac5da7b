//! One exception hierarchy rooted at `uniface.UniFaceError`; missing files are the builtin
//! `FileNotFoundError`.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError};
use pyo3::prelude::*;

create_exception!(
    uniface,
    UniFaceError,
    PyException,
    "Base class of every UniFace error."
);
create_exception!(
    uniface,
    ModelError,
    UniFaceError,
    "A model file is missing, corrupt, unreadable, or could not be downloaded."
);
create_exception!(
    uniface,
    ImageError,
    UniFaceError,
    "An image could not be decoded, is too large, or a pixel buffer has the wrong shape."
);
create_exception!(
    uniface,
    NoFaceError,
    UniFaceError,
    "No face was found where one was required."
);
create_exception!(
    uniface,
    TemplateError,
    UniFaceError,
    "A template is malformed, damaged, or from another model."
);
create_exception!(
    uniface,
    GalleryError,
    UniFaceError,
    "A gallery operation failed (damaged files, wrong model, unknown subject, ...)."
);
create_exception!(
    uniface,
    GalleryLockedError,
    GalleryError,
    "Another writer holds the gallery (one writer per gallery); the message names it."
);
create_exception!(
    uniface,
    InvalidArgumentError,
    UniFaceError,
    "An argument is out of range or inconsistent (NaN values, wrong dimension, ...)."
);

/// An integer argument within `[lo, hi]`, converted to `T`; anything else is an
/// `InvalidArgumentError` naming the argument and its range (integers are taken as `i64`, so
/// 0, negative values and 2^63 − 1 all arrive here rather than failing in the conversion).
pub fn int_arg<T: TryFrom<i64>>(name: &str, v: i64, lo: i64, hi: i64) -> PyResult<T> {
    if (lo..=hi).contains(&v) {
        if let Ok(t) = T::try_from(v) {
            return Ok(t);
        }
    }
    Err(InvalidArgumentError::new_err(format!(
        "{name} must be from {lo} to {hi}, got {v}"
    )))
}

/// Map a core error to its Python exception.
pub fn core(err: uniface_core::Error) -> PyErr {
    use uniface_core::Error as E;
    let msg = err.to_string();
    match &err {
        E::MissingModelFile { .. } => PyFileNotFoundError::new_err(msg),
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        E::Image { .. } | E::ImageTooLarge { .. } | E::BufferLength { .. } | E::ChipSize { .. } => {
            ImageError::new_err(msg)
        }
        E::NoFace { .. } => NoFaceError::new_err(msg),
        E::TemplateFormat { .. } | E::TemplateChecksum { .. } | E::FingerprintMismatch { .. } => {
            TemplateError::new_err(msg)
        }
        E::NonFinite { .. } | E::InvalidArgument { .. } => InvalidArgumentError::new_err(msg),
        E::Io { .. } => UniFaceError::new_err(msg),
        _ => ModelError::new_err(msg),
    }
}

/// Map a gallery error to its Python exception.
pub fn index(err: uniface_index::Error) -> PyErr {
    use uniface_index::Error as E;
    match err {
        E::Core(e) => core(e),
        E::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(err.to_string())
        }
        E::Missing { .. } => PyFileNotFoundError::new_err(err.to_string()),
        E::Dimension { .. } | E::InvalidSubject | E::Invalid { .. } => {
            InvalidArgumentError::new_err(err.to_string())
        }
        E::Locked { .. } => GalleryLockedError::new_err(err.to_string()),
        other => GalleryError::new_err(other.to_string()),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("UniFaceError", py.get_type::<UniFaceError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add("NoFaceError", py.get_type::<NoFaceError>())?;
    m.add("TemplateError", py.get_type::<TemplateError>())?;
    m.add("GalleryError", py.get_type::<GalleryError>())?;
    m.add("GalleryLockedError", py.get_type::<GalleryLockedError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    Ok(())
}
