//! `uniface.CalibrationTable`, `uniface.ThresholdRow`, `uniface.calibrate`.

use numpy::PyReadonlyArray2;
use pyo3::prelude::*;
use uniface_core::calibration::{self, LabelledSet, STANDARD_FMRS};
use uniface_core::compare::Metric;

use crate::analyzer::selection;
use crate::errors;
use crate::template::Decision;

/// Thresholds for target false-match rates, with the evidence behind them: measured on
/// labelled photos (every cross-identity pair an impostor comparison, every same-identity
/// pair a genuine one). A pair matches when its distance is below the threshold.
#[pyclass(frozen, module = "uniface")]
#[derive(Clone)]
pub struct CalibrationTable {
    pub inner: calibration::CalibrationTable,
}

/// One row of a table: a target FMR, its threshold and the counts behind it.
#[pyclass(frozen, get_all, module = "uniface")]
pub struct ThresholdRow {
    pub target_fmr: f64,
    pub threshold: f32,
    pub impostor_comparisons: u64,
    pub false_matches: u64,
    pub genuine_comparisons: u64,
    pub false_non_matches: u64,
    /// `false_non_matches / genuine_comparisons`.
    pub fnmr: f64,
}

#[pymethods]
impl CalibrationTable {
    /// The table shipped with the default model (LFW, every pair of its 7,701 photos).
    #[staticmethod]
    fn default() -> PyResult<Self> {
        calibration::default_table()
            .map(|t| Self { inner: t.clone() })
            .map_err(errors::core)
    }

    /// Parse a table saved as JSON (`to_json`, `uniface calibrate --out`); malformed tables
    /// raise `InvalidArgumentError`.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        calibration::CalibrationTable::from_json(text)
            .map(|inner| Self { inner })
            .map_err(errors::core)
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// The distance threshold for a target false-match rate (rows exactly, else interpolated
    /// along the curve); targets below `min_fmr` raise `InvalidArgumentError`.
    fn threshold_for_fmr(&self, fmr: f64) -> PyResult<f32> {
        self.inner.threshold_for_fmr(fmr).map_err(errors::core)
    }

    /// The decision for a pair at `distance` at the target `fmr`; with `comparisons` = m > 1
    /// the distance is the best of m comparisons and the decision is held to `fmr` as a whole.
    #[pyo3(signature = (distance, fmr=1e-4, comparisons=1))]
    fn decide(&self, distance: f32, fmr: f64, comparisons: i64) -> PyResult<Decision> {
        let m = errors::int_arg("comparisons", comparisons, 1, u32::MAX.into())?;
        self.inner
            .decide_best_of(distance, fmr, m)
            .map(Decision::from)
            .map_err(errors::core)
    }

    /// The FMR of a threshold placed at `distance`.
    fn estimated_fmr(&self, distance: f32) -> f64 {
        self.inner.estimated_fmr(distance)
    }

    /// The smallest FMR the table supports (10 impostor pairs below its threshold).
    #[getter]
    fn min_fmr(&self) -> f64 {
        self.inner.min_fmr()
    }

    #[getter]
    fn model_id(&self) -> &str {
        &self.inner.model_id
    }

    /// The face-selection rule the photos were described with.
    #[getter]
    fn selection(&self) -> &'static str {
        self.inner.selection.name()
    }

    /// How the table was made.
    #[getter]
    fn method(&self) -> &str {
        &self.inner.method
    }

    #[getter]
    fn identities(&self) -> u64 {
        self.inner.identities
    }

    #[getter]
    fn images(&self) -> u64 {
        self.inner.images
    }

    /// One row per target FMR, largest first.
    #[getter]
    fn rows(&self) -> Vec<ThresholdRow> {
        self.inner
            .rows
            .iter()
            .map(|r| ThresholdRow {
                target_fmr: r.target_fmr,
                threshold: r.threshold,
                impostor_comparisons: r.impostor_comparisons,
                false_matches: r.false_matches,
                genuine_comparisons: r.genuine_comparisons,
                false_non_matches: r.false_non_matches,
                fnmr: r.fnmr(),
            })
            .collect()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<CalibrationTable>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "CalibrationTable(model_id={:?}, selection={:?}, identities={}, images={}, rows={})",
            self.inner.model_id,
            self.inner.selection.name(),
            self.inner.identities,
            self.inner.images,
            self.inner.rows.len()
        )
    }
}

#[pymethods]
impl ThresholdRow {
    fn __repr__(&self) -> String {
        format!(
            "ThresholdRow(target_fmr={:e}, threshold={:.4}, false_matches={}/{}, fnmr={:.4})",
            self.target_fmr,
            self.threshold,
            self.false_matches,
            self.impostor_comparisons,
            self.fnmr
        )
    }
}

/// A calibration table from labelled descriptors: `descriptors` is an N×D float32 array (one
/// row per photo), `labels` N identity labels (equal labels are the same person). Every pair
/// is scored (Euclidean); `fmrs` are the rows' target rates (default 1e-2 … 1e-6);
/// `selection` records how the faces were chosen, `method` how the data was made. Releases
/// the GIL while it scores.
#[pyfunction]
#[pyo3(signature = (descriptors, labels, *, fmrs=None, selection="nearest_centre", model_id="dlib-resnet-v1", method=""))]
pub fn calibrate(
    py: Python<'_>,
    descriptors: PyReadonlyArray2<'_, f32>,
    labels: Vec<i64>,
    fmrs: Option<Vec<f64>>,
    selection: &str,
    model_id: &str,
    method: &str,
) -> PyResult<CalibrationTable> {
    let selection = self::selection(selection)?;
    let a = descriptors.as_array();
    let (n, dim) = a.dim();
    if labels.len() != n {
        return Err(errors::InvalidArgumentError::new_err(format!(
            "{} labels for {n} descriptors",
            labels.len()
        )));
    }
    let labels: Vec<u32> = labels
        .iter()
        .map(|&l| errors::int_arg("labels", l, 0, u32::MAX.into()))
        .collect::<PyResult<_>>()?;
    let vectors: Vec<f32> = a.iter().copied().collect();
    let fmrs = fmrs.unwrap_or_else(|| STANDARD_FMRS.to_vec());
    py.detach(|| {
        let set = LabelledSet {
            vectors: &vectors,
            dim,
            labels: &labels,
        };
        calibration::calibrate(
            &set,
            Metric::Euclidean,
            &fmrs,
            model_id,
            selection,
            method,
            &|_| {},
        )
    })
    .map(|c| CalibrationTable { inner: c.table })
    .map_err(errors::core)
}
