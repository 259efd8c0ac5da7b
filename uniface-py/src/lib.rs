//! Python bindings for UniFace (`uniface._uniface`). Thin: argument conversion, error mapping
//! and GIL release only; every behaviour lives in `uniface-core` and `uniface-index`.
//!
//! Inputs are copied into owned buffers while the GIL is held, the work runs with the GIL
//! released (`Python::detach`), and outputs move into numpy arrays without copies.

mod analyzer;
mod errors;
mod gallery;
mod image;
mod template;

use pyo3::prelude::*;

/// Download (if needed) and verify the model files; returns the directory that holds them.
#[pyfunction]
fn fetch_models(py: Python<'_>) -> PyResult<String> {
    py.detach(|| {
        let store = uniface_core::model_store::ModelStore::from_env()?;
        store.ensure().map(|set| set.dir.display().to_string())
    })
    .map_err(errors::core)
}

/// Re-hash every installed model file against the pinned SHA-256; returns the directory, or
/// raises `ModelError` naming the first file that differs.
#[pyfunction]
#[pyo3(signature = (models_dir=None))]
fn verify_models(py: Python<'_>, models_dir: Option<std::path::PathBuf>) -> PyResult<String> {
    py.detach(|| {
        let store = match models_dir {
            Some(d) => uniface_core::model_store::ModelStore::offline(d),
            None => uniface_core::model_store::ModelStore::from_env()?,
        };
        store.verify()?;
        Ok(store.models_dir().display().to_string())
    })
    .map_err(errors::core)
}

#[pymodule(gil_used = false)]
fn _uniface(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<analyzer::FaceAnalyzer>()?;
    m.add_class::<analyzer::Face>()?;
    m.add_class::<analyzer::Detection>()?;
    m.add_class::<template::Template>()?;
    m.add_class::<template::Decision>()?;
    m.add_class::<gallery::Gallery>()?;
    m.add_class::<gallery::OpenReport>()?;
    m.add_class::<gallery::Candidate>()?;
    m.add_class::<gallery::Identification>()?;
    m.add_function(wrap_pyfunction!(template::verify, m)?)?;
    m.add_function(wrap_pyfunction!(template::threshold_for_fmr, m)?)?;
    m.add_function(wrap_pyfunction!(fetch_models, m)?)?;
    m.add_function(wrap_pyfunction!(verify_models, m)?)?;
    Ok(())
}
