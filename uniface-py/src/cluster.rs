//! `uniface.cluster`, `uniface.Clusterer`: grouping embeddings by identity
//! (`uniface_index::cluster`).

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use uniface_index::cluster::{self as engine, ClusterOptions, Method, Threshold};

use crate::errors;

fn options(
    method: &str,
    fmr: f64,
    threshold: Option<f32>,
    neighbours: i64,
    seed: u64,
) -> PyResult<ClusterOptions> {
    let method = Method::from_name(method).ok_or_else(|| {
        errors::InvalidArgumentError::new_err(format!(
            "unknown method {method:?}; one of average_linkage, chinese_whispers, components"
        ))
    })?;
    let neighbours = errors::int_arg("neighbours", neighbours, 1, engine::MAX_NEIGHBOURS as i64)?;
    Ok(ClusterOptions {
        method,
        threshold: threshold.map_or(Threshold::Fmr(fmr), Threshold::Distance),
        neighbours,
        seed,
        ..Default::default()
    })
}

/// The rows of an N×D float32 array, copied (the GIL is released afterwards).
fn rows(embeddings: &PyReadonlyArray2<'_, f32>) -> (Vec<f32>, usize) {
    let a = embeddings.as_array();
    (a.iter().copied().collect(), a.dim().1)
}

/// Group embeddings (an N×D float32 array, one face per row) by identity; returns one label
/// per row, numbered 0, 1, 2, … in order of first appearance.
///
/// `method`: "average_linkage" (default), "chinese_whispers" (dlib's
/// `chinese_whispers_clustering`) or "components". The threshold is the shipped
/// calibration's distance for `fmr` per comparison, or `threshold` (a distance) when given.
/// Releases the GIL while it works.
#[pyfunction]
#[pyo3(signature = (embeddings, *, fmr=4e-4, threshold=None, method="average_linkage", neighbours=32, seed=0))]
pub fn cluster<'py>(
    py: Python<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    fmr: f64,
    threshold: Option<f32>,
    method: &str,
    neighbours: i64,
    seed: u64,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let opts = options(method, fmr, threshold, neighbours, seed)?;
    let (faces, dim) = rows(&embeddings);
    let labels = py
        .detach(|| engine::cluster(&faces, dim.max(1), opts))
        .map_err(errors::index)?;
    Ok(labels.into_pyarray(py))
}

/// A clustering that new faces can join without redoing it (a photo library's nightly
/// run): `Clusterer(embeddings, ...)` clusters a first batch, `add(embeddings)` adds more.
/// Cluster ids are stable between calls (a merge reported by `add` folds one id into
/// another) and not contiguous.
#[pyclass(module = "uniface")]
pub struct Clusterer {
    inner: engine::Clusterer,
}

/// What `Clusterer.add` did: the cluster of each new face, how many clusters are new, and
/// the merges `(from, into)` of existing clusters in the order they happened.
#[pyclass(frozen, get_all, module = "uniface")]
pub struct Additions {
    pub labels: Py<PyArray1<u32>>,
    pub new_clusters: usize,
    pub merges: Vec<(u32, u32)>,
}

#[pymethods]
impl Additions {
    fn __repr__(&self) -> String {
        format!(
            "Additions(new_clusters={}, merges={:?})",
            self.new_clusters, self.merges
        )
    }
}

#[pymethods]
impl Clusterer {
    #[new]
    #[pyo3(signature = (embeddings, *, fmr=4e-4, threshold=None, method="average_linkage", neighbours=32, seed=0))]
    fn new(
        py: Python<'_>,
        embeddings: PyReadonlyArray2<'_, f32>,
        fmr: f64,
        threshold: Option<f32>,
        method: &str,
        neighbours: i64,
        seed: u64,
    ) -> PyResult<Self> {
        let opts = options(method, fmr, threshold, neighbours, seed)?;
        let (faces, dim) = rows(&embeddings);
        let inner = py
            .detach(|| engine::Clusterer::fit(&faces, dim.max(1), opts, &|_| {}))
            .map_err(errors::index)?;
        Ok(Self { inner })
    }

    /// Add faces (an M×D float32 array); returns `Additions`.
    fn add(
        &mut self,
        py: Python<'_>,
        embeddings: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<Additions> {
        let (faces, _) = rows(&embeddings);
        let inner = &mut self.inner;
        let a = py
            .detach(|| inner.add(&faces, &|_| {}))
            .map_err(errors::index)?;
        Ok(Additions {
            labels: a.labels.into_pyarray(py).unbind(),
            new_clusters: a.new_clusters,
            merges: a.merges.iter().map(|m| (m.from, m.into)).collect(),
        })
    }

    /// The cluster id of every face so far, in the order they were given.
    #[getter]
    fn labels<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u32>> {
        self.inner.labels().to_vec().into_pyarray(py)
    }

    /// How many clusters there are.
    #[getter]
    fn clusters(&self) -> usize {
        self.inner.clusters()
    }

    /// The distance threshold in force.
    #[getter]
    fn threshold(&self) -> f32 {
        self.inner.threshold()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Clusterer(faces={}, clusters={}, method={:?}, threshold={:.4})",
            self.inner.len(),
            self.inner.clusters(),
            self.inner.options().method.name(),
            self.inner.threshold()
        )
    }
}
