//! `uniface.Template`, `uniface.Decision`, `uniface.verify`, `uniface.threshold_for_fmr`.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use uniface_core::calibration;
use uniface_core::template::{ElementType, ModelFingerprint};

use crate::errors;

fn element(name: &str) -> PyResult<ElementType> {
    ElementType::from_name(name).ok_or_else(|| {
        errors::InvalidArgumentError::new_err(format!(
            "element must be \"f32\", \"f16\" or \"i8\", not {name:?}"
        ))
    })
}

/// A stored face descriptor: its vector (f32, or f16/i8 to save space), the fingerprint of
/// the model that made it, and a checksummed binary form.
#[pyclass(frozen, module = "uniface")]
#[derive(Clone)]
pub struct Template {
    pub inner: uniface_core::template::Template,
}

/// A template or an embedding (1-D float32 array or sequence of floats) as a template of the
/// default model.
pub fn as_template(obj: &Bound<'_, PyAny>) -> PyResult<uniface_core::template::Template> {
    if let Ok(t) = obj.cast::<Template>() {
        return Ok(t.get().inner.clone());
    }
    let v: Vec<f32> = match obj.extract::<PyReadonlyArray1<'_, f32>>() {
        Ok(a) => a.as_array().iter().copied().collect(),
        Err(_) => obj.extract::<Vec<f32>>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(
                "expected a uniface.Template or a 1-D float32 embedding",
            )
        })?,
    };
    let dim = uniface_core::embed::DESCRIPTOR_DIM;
    if v.len() != dim {
        return Err(errors::InvalidArgumentError::new_err(format!(
            "embeddings of the default model have {dim} values, got {}",
            v.len()
        )));
    }
    uniface_core::template::Template::new(ModelFingerprint::dlib_resnet_v1(), &v)
        .map_err(errors::core)
}

#[pymethods]
impl Template {
    /// A template of the default model (dlib ResNet) from a 128-value embedding, stored as
    /// `element` ("f32", "f16" or "i8").
    #[new]
    #[pyo3(signature = (embedding, element="f32"))]
    fn new(embedding: &Bound<'_, PyAny>, element: &str) -> PyResult<Self> {
        let e = self::element(element)?;
        Ok(Self {
            inner: as_template(embedding)?.converted(e),
        })
    }

    /// Parse the binary form (checksum and fingerprint verified).
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        uniface_core::template::Template::from_bytes(data)
            .map(|inner| Self { inner })
            .map_err(errors::core)
    }

    /// The binary form (versioned, with a CRC-32C).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    /// The template encrypted and authenticated under `key` (32 bytes, e.g. from
    /// `uniface.generate_key()`), bound to `aad` (a subject id, a row key: `open_sealed`
    /// needs the same bytes). For a queue or a database row; each call uses a fresh nonce.
    #[pyo3(signature = (key, aad=b"".as_slice()))]
    fn seal<'py>(&self, py: Python<'py>, key: &[u8], aad: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let key = uniface_core::crypto::Key::from_slice(key).map_err(errors::core)?;
        let sealed = self.inner.seal(&key, aad).map_err(errors::core)?;
        Ok(PyBytes::new(py, &sealed))
    }

    /// A template from `seal`'s bytes; another key, other `aad` or an altered byte raise
    /// `CryptoError`.
    #[staticmethod]
    #[pyo3(signature = (key, data, aad=b"".as_slice()))]
    fn open_sealed(key: &[u8], data: &[u8], aad: &[u8]) -> PyResult<Self> {
        let key = uniface_core::crypto::Key::from_slice(key).map_err(errors::core)?;
        uniface_core::template::Template::open_sealed(&key, aad, data)
            .map(|inner| Self { inner })
            .map_err(errors::core)
    }

    /// The vector as float32 (dequantised for f16/i8 storage).
    #[getter]
    fn vector<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.inner.vector().into_pyarray(py)
    }

    /// Storage: "f32", "f16" or "i8".
    #[getter]
    fn element(&self) -> &'static str {
        self.inner.element_type().name()
    }

    #[getter]
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }

    /// The model that made it.
    #[getter]
    fn model_id(&self) -> String {
        self.inner.fingerprint().model_id.clone()
    }

    /// The same template in another storage.
    fn converted(&self, element: &str) -> PyResult<Self> {
        Ok(Self {
            inner: self.inner.converted(self::element(element)?),
        })
    }

    /// Euclidean distance to another template of the same model.
    fn distance(&self, other: &Bound<'_, PyAny>) -> PyResult<f32> {
        self.inner
            .distance(&as_template(other)?)
            .map_err(errors::core)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Template>()
            .is_ok_and(|o| o.get().inner.to_bytes() == self.inner.to_bytes())
    }

    fn __repr__(&self) -> String {
        format!(
            "Template(model={:?}, element={:?}, dimension={})",
            self.inner.fingerprint().model_id,
            self.element(),
            self.inner.dimension()
        )
    }
}

/// A calibrated 1:1 decision. True when it is a match.
#[pyclass(frozen, get_all, module = "uniface")]
pub struct Decision {
    /// Euclidean distance between the two descriptors.
    pub distance: f32,
    /// `1 − distance / 2`, in [0, 1].
    pub similarity: f32,
    /// The threshold for the target false-match rate.
    pub threshold: f32,
    pub target_fmr: f64,
    pub is_match: bool,
    /// False-match rate of a threshold placed at this distance (for `comparisons` > 1: of
    /// the best of that many comparisons).
    pub estimated_fmr: f64,
    /// How many comparisons the distance is the best of (a subject's templates); 1 for a pair.
    pub comparisons: u32,
}

impl From<calibration::Decision> for Decision {
    fn from(d: calibration::Decision) -> Self {
        Self {
            distance: d.distance,
            similarity: d.similarity,
            threshold: d.threshold,
            target_fmr: d.target_fmr,
            is_match: d.is_match,
            estimated_fmr: d.estimated_fmr,
            comparisons: d.comparisons,
        }
    }
}

type DecisionArgs = (f32, f32, f32, f64, bool, f64, u32);

#[pymethods]
impl Decision {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        distance: f32,
        similarity: f32,
        threshold: f32,
        target_fmr: f64,
        is_match: bool,
        estimated_fmr: f64,
        comparisons: u32,
    ) -> Self {
        Self {
            distance,
            similarity,
            threshold,
            target_fmr,
            is_match,
            estimated_fmr,
            comparisons,
        }
    }

    /// Pickling (for Ray and multiprocessing): rebuilt from its fields.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, DecisionArgs)> {
        let d = slf.get();
        Ok((
            slf.get_type().into_any(),
            (
                d.distance,
                d.similarity,
                d.threshold,
                d.target_fmr,
                d.is_match,
                d.estimated_fmr,
                d.comparisons,
            ),
        ))
    }

    fn __bool__(&self) -> bool {
        self.is_match
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(is_match={}, distance={:.4}, threshold={:.4}, target_fmr={:e})",
            if self.is_match { "True" } else { "False" },
            self.distance,
            self.threshold,
            self.target_fmr
        )
    }
}

/// Are `a` and `b` the same person? Templates or embeddings; the threshold comes from
/// `calibration` (a `CalibrationTable`; default: the shipped one) for the target
/// false-match rate `fmr`.
#[pyfunction]
#[pyo3(signature = (a, b, fmr=1e-4, *, calibration=None))]
pub fn verify(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    fmr: f64,
    calibration: Option<PyRef<'_, crate::calibration::CalibrationTable>>,
) -> PyResult<Decision> {
    let d = as_template(a)?
        .distance(&as_template(b)?)
        .map_err(errors::core)?;
    match calibration {
        Some(t) => t.inner.decide(d, fmr),
        None => uniface_core::calibration::decide(d, fmr),
    }
    .map(Decision::from)
    .map_err(errors::core)
}

/// 32 fresh random bytes from the operating system: a key for `Template.seal`. Keep it as
/// you keep your other secrets.
#[pyfunction]
pub fn generate_key(py: Python<'_>) -> PyResult<Bound<'_, PyBytes>> {
    let key = uniface_core::crypto::Key::generate().map_err(errors::core)?;
    Ok(PyBytes::new(py, &key.to_bytes()[..]))
}

/// The calibrated distance threshold for a target false-match rate.
#[pyfunction]
pub fn threshold_for_fmr(fmr: f64) -> PyResult<f32> {
    calibration::threshold_for_fmr(fmr).map_err(errors::core)
}
