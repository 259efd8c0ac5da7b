//! Python bindings for UniFace (`uniface._uniface`). Thin: conversion and error mapping only.
//!
//! This first slice exposes the package version and the model store; the analyzer, templates
//! and the gallery follow as the engine grows.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError};
use pyo3::prelude::*;

create_exception!(
    _uniface,
    UniFaceError,
    PyException,
    "Base class of UniFace errors."
);
create_exception!(
    _uniface,
    ModelError,
    UniFaceError,
    "A model file is missing, corrupt or unreadable."
);

fn to_py(err: uniface_core::Error) -> PyErr {
    use uniface_core::Error as E;
    match &err {
        E::MissingModelFile { .. } => PyFileNotFoundError::new_err(err.to_string()),
        _ => ModelError::new_err(err.to_string()),
    }
}

/// Download (if needed) and verify the model files; returns the directory that holds them.
#[pyfunction]
fn fetch_models(py: Python<'_>) -> PyResult<String> {
    py.detach(|| {
        let store = uniface_core::model_store::ModelStore::from_env()?;
        store.ensure().map(|set| set.dir.display().to_string())
    })
    .map_err(to_py)
}

#[pymodule]
fn _uniface(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("UniFaceError", m.py().get_type::<UniFaceError>())?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add_function(wrap_pyfunction!(fetch_models, m)?)?;
    Ok(())
}
