//! `uniface.eval`: the protocols behind `docs/ACCURACY.md` (`lfw`, `describe_folder`,
//! `k_fold`, `tar_at_far`, `eer`), thin over `uniface_core::eval`.

use std::path::PathBuf;

use numpy::PyArrayMethods;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use uniface_core::embed::DESCRIPTOR_DIM;
use uniface_core::eval::{corpus, lfw as protocol, pairs};

use crate::analyzer::{selection, FaceAnalyzer};
use crate::errors;

/// The k-fold protocol's figures on one set of pair scores.
#[pyclass(frozen, get_all, module = "uniface.eval")]
pub struct KFold {
    pub fold_accuracy: Vec<f64>,
    pub fold_thresholds: Vec<f32>,
    pub accuracy_mean: f64,
    /// Population standard deviation over the folds.
    pub accuracy_std: f64,
    /// `{far: (tar, threshold)}` for FAR 1e-2 and 1e-3.
    pub tar_at_far: std::collections::BTreeMap<String, (f64, f32)>,
    pub eer: f64,
}

impl From<&pairs::KFold> for KFold {
    fn from(k: &pairs::KFold) -> Self {
        let t = |x: &pairs::TarAtFar| (format!("{:e}", x.far), (x.tar, x.threshold));
        Self {
            fold_accuracy: k.fold_accuracy.clone(),
            fold_thresholds: k.fold_thresholds.clone(),
            accuracy_mean: k.accuracy_mean,
            accuracy_std: k.accuracy_std,
            tar_at_far: [t(&k.tar_at_far_1e2), t(&k.tar_at_far_1e3)]
                .into_iter()
                .collect(),
            eer: k.eer,
        }
    }
}

#[pymethods]
impl KFold {
    fn __repr__(&self) -> String {
        format!(
            "KFold(accuracy={:.4} ± {:.4}, eer={:.4})",
            self.accuracy_mean, self.accuracy_std, self.eer
        )
    }
}

/// What `uniface.eval.lfw` measured: the protocol for templates stored as f32, f16 and i8.
#[pyclass(frozen, module = "uniface.eval")]
pub struct LfwReport {
    inner: protocol::LfwReport,
}

#[pymethods]
impl LfwReport {
    #[getter]
    fn pairs(&self) -> usize {
        self.inner.pairs
    }

    #[getter]
    fn images(&self) -> usize {
        self.inner.images
    }

    /// Photos where no face was found.
    #[getter]
    fn failed_images(&self) -> Vec<String> {
        let f = &self.inner.failed_images;
        f.iter().map(|p| p.display().to_string()).collect()
    }

    /// The protocol for templates stored as `element` ("f32", "f16" or "i8").
    #[pyo3(signature = (element="f32"))]
    fn protocol(&self, element: &str) -> PyResult<KFold> {
        self.inner
            .results
            .iter()
            .find(|r| r.element.name() == element)
            .map(|r| KFold::from(&r.protocol))
            .ok_or_else(|| {
                errors::InvalidArgumentError::new_err(format!(
                    "element must be \"f32\", \"f16\" or \"i8\", not {element:?}"
                ))
            })
    }

    /// The f32 figures (`protocol("f32")`).
    #[getter]
    fn f32(&self) -> KFold {
        KFold::from(self.inner.main())
    }

    #[getter]
    fn seconds(&self) -> f64 {
        self.inner.seconds
    }

    /// The JSON object `uniface eval lfw --json` prints.
    fn to_json(&self) -> String {
        self.inner.to_json().to_string()
    }

    /// The report `uniface eval lfw` prints.
    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        let m = self.inner.main();
        format!(
            "LfwReport(pairs={}, accuracy={:.4} ± {:.4})",
            self.inner.pairs, m.accuracy_mean, m.accuracy_std
        )
    }
}

/// The LFW View 2 protocol on the folder `root` (`root/<Name>/<Name>_<NNNN>.jpg`, pairs in
/// `pairs` or `root/pairs.txt`): one descriptor per photo (`selection`, default the face
/// nearest the centre), cached in `cache` when given, the 10-fold accuracy, TAR at FAR and
/// EER for f32, f16 and i8 templates. Releases the GIL.
#[pyfunction]
#[pyo3(signature = (analyzer, root, *, pairs=None, cache=None, selection="nearest_centre"))]
pub fn lfw(
    py: Python<'_>,
    analyzer: &FaceAnalyzer,
    root: PathBuf,
    pairs: Option<PathBuf>,
    cache: Option<PathBuf>,
    selection: &str,
) -> PyResult<LfwReport> {
    let options = protocol::LfwOptions {
        cache: cache.as_deref(),
        det: false,
        selection: self::selection(selection)?,
    };
    let pairs_file = pairs.unwrap_or_else(|| root.join("pairs.txt"));
    py.detach(|| {
        let listed = pairs::read_pairs(&root, &pairs_file)?;
        protocol::lfw(&analyzer.inner, &root, &listed, &options, &|_| {})
    })
    .map(|inner| LfwReport { inner })
    .map_err(errors::core)
}

/// One descriptor per photo of a folder of identities (`root/<identity>/<photo>`):
/// `(descriptors N×128 float32, labels, identities, skipped)` — `labels[i]` indexes
/// `identities`; photos without a face are left out and listed in `skipped`. What
/// `uniface.calibrate` takes. Releases the GIL.
#[pyfunction]
#[pyo3(signature = (analyzer, root, *, cache=None, selection="nearest_centre"))]
#[allow(clippy::type_complexity)]
pub fn describe_folder<'py>(
    py: Python<'py>,
    analyzer: &FaceAnalyzer,
    root: PathBuf,
    cache: Option<PathBuf>,
    selection: &str,
) -> PyResult<(
    Bound<'py, PyArray2<f32>>,
    Vec<u32>,
    Vec<String>,
    Vec<String>,
)> {
    let selection = self::selection(selection)?;
    let (labelled, names) = py
        .detach(|| {
            let identities = corpus::scan_identities(&root)?;
            let photos: Vec<(u32, PathBuf)> = identities
                .iter()
                .enumerate()
                .flat_map(|(i, (_, ps))| ps.iter().map(move |p| (i as u32, p.clone())))
                .collect();
            let l = corpus::Labelled::describe(
                &analyzer.inner,
                &root,
                &photos,
                selection,
                cache.as_deref(),
                &|_| {},
            )?;
            Ok((l, identities.into_iter().map(|i| i.0).collect::<Vec<_>>()))
        })
        .map_err(errors::core)?;
    let n = labelled.labels.len();
    let array = labelled
        .vectors
        .into_pyarray(py)
        .reshape([n, DESCRIPTOR_DIM])?;
    let skipped = labelled.skipped.iter().map(|p| p.display().to_string());
    Ok((array, labelled.labels, names, skipped.collect()))
}

fn scored(distances: &[f32], same: &[bool], folds: &[usize]) -> PyResult<Vec<pairs::ScoredPair>> {
    if distances.len() != same.len() || (!folds.is_empty() && folds.len() != same.len()) {
        return Err(errors::InvalidArgumentError::new_err(format!(
            "distances, same and folds must have one entry per pair ({}, {}, {})",
            distances.len(),
            same.len(),
            folds.len()
        )));
    }
    Ok(distances
        .iter()
        .zip(same)
        .enumerate()
        .map(|(i, (&distance, &same))| pairs::ScoredPair {
            distance,
            same,
            fold: folds.get(i).copied().unwrap_or(0),
        })
        .collect())
}

/// The k-fold protocol on pair distances: `same[i]` whether pair i is one person, `folds[i]`
/// its fold (0-based); each fold is decided at the best threshold of the others.
#[pyfunction]
pub fn k_fold(distances: Vec<f32>, same: Vec<bool>, folds: Vec<usize>) -> PyResult<KFold> {
    Ok(KFold::from(&pairs::k_fold(&scored(
        &distances, &same, &folds,
    )?)))
}

/// `(tar, threshold)` at the largest threshold whose FAR does not exceed `far`.
#[pyfunction]
pub fn tar_at_far(distances: Vec<f32>, same: Vec<bool>, far: f64) -> PyResult<(f64, f32)> {
    let t = pairs::tar_at_far(&scored(&distances, &same, &[])?, far);
    Ok((t.tar, t.threshold))
}

/// The equal error rate of pair distances.
#[pyfunction]
pub fn eer(distances: Vec<f32>, same: Vec<bool>) -> PyResult<f64> {
    Ok(pairs::eer(&scored(&distances, &same, &[])?))
}
