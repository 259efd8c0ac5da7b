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
    CryptoError,
    UniFaceError,
    "A key is wrong, malformed or unsafely stored, or sealed bytes do not authenticate."
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

/// The exception of an error kind (the one mapping, shared with the C API's status codes
/// through `uniface_core::ErrorKind`).
fn raise(kind: uniface_core::ErrorKind, msg: String) -> PyErr {
    use uniface_core::ErrorKind as K;
    match kind {
        K::NotFound => PyFileNotFoundError::new_err(msg),
        K::Image => ImageError::new_err(msg),
        K::NoFace => NoFaceError::new_err(msg),
        K::Template => TemplateError::new_err(msg),
        K::InvalidArgument => InvalidArgumentError::new_err(msg),
        K::Locked => GalleryLockedError::new_err(msg),
        K::Gallery | K::ReadOnly => GalleryError::new_err(msg),
        K::Model => ModelError::new_err(msg),
        K::Crypto => CryptoError::new_err(msg),
        _ => UniFaceError::new_err(msg),
    }
}

/// Map a core error to its Python exception.
pub fn core(err: uniface_core::Error) -> PyErr {
    raise(err.kind(), err.to_string())
}

/// Map a gallery error to its Python exception.
pub fn index(err: uniface_index::Error) -> PyErr {
    raise(err.kind(), err.to_string())
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
    m.add("CryptoError", py.get_type::<CryptoError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    Ok(())
}
