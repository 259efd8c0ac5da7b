//! Python bindings for UniFace (`uniface._uniface`). Thin: argument conversion, error mapping
//! and GIL release only; every behaviour lives in `uniface-core` and `uniface-index`.
//!
//! Inputs are copied into owned buffers while the GIL is held, the work runs with the GIL
//! released (`Python::detach`), and outputs move into numpy arrays without copies.

mod analyzer;
mod calibration;
mod cluster;
mod errors;
mod eval;
mod gallery;
mod image;
mod results;
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
    m.add_class::<gallery::ShardRouter>()?;
    m.add_class::<gallery::Duplicate>()?;
    m.add_class::<cluster::Clusterer>()?;
    m.add_class::<cluster::Additions>()?;
    m.add_function(wrap_pyfunction!(cluster::cluster, m)?)?;
    m.add_function(wrap_pyfunction!(gallery::merge_candidates, m)?)?;
    m.add_function(wrap_pyfunction!(gallery::per_comparison_fmr, m)?)?;
    m.add_class::<results::Assessment>()?;
    m.add_class::<results::QualityReport>()?;
    m.add_class::<results::Measure>()?;
    m.add_class::<results::Liveness>()?;
    m.add_class::<results::CheckReport>()?;
    m.add_class::<results::Subject>()?;
    m.add_class::<calibration::CalibrationTable>()?;
    m.add_class::<calibration::ThresholdRow>()?;
    m.add_class::<eval::KFold>()?;
    m.add_class::<eval::LfwReport>()?;
    m.add_function(wrap_pyfunction!(calibration::calibrate, m)?)?;
    m.add_function(wrap_pyfunction!(results::reason_name, m)?)?;
    m.add_function(wrap_pyfunction!(eval::lfw, m)?)?;
    m.add_function(wrap_pyfunction!(eval::describe_folder, m)?)?;
    m.add_function(wrap_pyfunction!(eval::k_fold, m)?)?;
    m.add_function(wrap_pyfunction!(eval::tar_at_far, m)?)?;
    m.add_function(wrap_pyfunction!(eval::eer, m)?)?;
    m.add_function(wrap_pyfunction!(template::verify, m)?)?;
    m.add_function(wrap_pyfunction!(template::threshold_for_fmr, m)?)?;
    m.add_function(wrap_pyfunction!(template::generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(fetch_models, m)?)?;
    m.add_function(wrap_pyfunction!(verify_models, m)?)?;
    Ok(())
}
