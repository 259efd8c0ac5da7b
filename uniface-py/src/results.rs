//! Typed results: `uniface.Assessment`, `QualityReport`, `Measure`, `Liveness`,
//! `CheckReport`, `Subject` (classes with documented attributes, not dicts).

use pyo3::prelude::*;
use uniface_core::quality::{self, Reason};

type BoxTuple = (i64, i64, i64, i64);

/// One quality measure: its raw value, a 0–100 scalar (higher is better) and, when the gate
/// refused the face on it, the reason's name.
#[pyclass(frozen, get_all, module = "uniface")]
#[derive(Clone)]
pub struct Measure {
    /// The field name (`"sharpness"`, `"yaw"`, …).
    pub name: &'static str,
    pub raw: f32,
    pub scalar: f32,
    /// The refusal this measure caused (`"blurry"`, …), or None.
    pub reason: Option<&'static str>,
}

#[pymethods]
impl Measure {
    fn __repr__(&self) -> String {
        format!(
            "Measure({}: raw={:.4}, scalar={:.1}{})",
            self.name,
            self.raw,
            self.scalar,
            self.reason
                .map(|r| format!(", reason={r:?}"))
                .unwrap_or_default()
        )
    }
}

/// Every quality measure of one face (ISO/IEC 29794-5 style), each a [`Measure`].
#[pyclass(frozen, get_all, module = "uniface")]
#[derive(Clone)]
pub struct QualityReport {
    pub face_count: Measure,
    pub inter_eye_distance: Measure,
    pub face_height: Measure,
    pub face_inside: Measure,
    /// Which side of the face leaves the image ("left", "right", "top", "bottom"), if any.
    pub cut_off_side: Option<&'static str>,
    pub yaw: Measure,
    pub pitch: Measure,
    pub roll: Measure,
    pub sharpness: Measure,
    pub luminance_mean: Measure,
    pub luminance_std: Measure,
    pub under_exposure: Measure,
    pub over_exposure: Measure,
    pub dynamic_range: Measure,
    /// The unified quality score, when the policy asked for it.
    pub unified: Option<Measure>,
}

impl QualityReport {
    /// `reasons`: the refusals to attach to the measures that caused them.
    pub fn new(q: &quality::QualityReport, reasons: &[Reason]) -> Self {
        let m = |name: &'static str, v: quality::Measure| Measure {
            name,
            raw: v.raw,
            scalar: v.scalar,
            reason: reasons
                .iter()
                .find(|r| r.measure() == Some(name))
                .map(|r| r.name()),
        };
        Self {
            face_count: m("face_count", q.face_count),
            inter_eye_distance: m("inter_eye_distance", q.inter_eye_distance),
            face_height: m("face_height", q.face_height),
            face_inside: m("face_inside", q.face_inside),
            cut_off_side: q.cut_off_side,
            yaw: m("yaw", q.yaw),
            pitch: m("pitch", q.pitch),
            roll: m("roll", q.roll),
            sharpness: m("sharpness", q.sharpness),
            luminance_mean: m("luminance_mean", q.luminance_mean),
            luminance_std: m("luminance_std", q.luminance_std),
            under_exposure: m("under_exposure", q.under_exposure),
            over_exposure: m("over_exposure", q.over_exposure),
            dynamic_range: m("dynamic_range", q.dynamic_range),
            unified: q.unified.map(|u| m("unified", u)),
        }
    }
}

#[pymethods]
impl QualityReport {
    /// Every measure, in field order.
    #[getter]
    fn measures(&self) -> Vec<Measure> {
        let mut v = vec![
            self.face_count.clone(),
            self.inter_eye_distance.clone(),
            self.face_height.clone(),
            self.face_inside.clone(),
            self.yaw.clone(),
            self.pitch.clone(),
            self.roll.clone(),
            self.sharpness.clone(),
            self.luminance_mean.clone(),
            self.luminance_std.clone(),
            self.under_exposure.clone(),
            self.over_exposure.clone(),
            self.dynamic_range.clone(),
        ];
        v.extend(self.unified.clone());
        v
    }

    fn __repr__(&self) -> String {
        format!(
            "QualityReport(inter_eye_distance={:.1}, yaw={:+.1}, sharpness={:.1})",
            self.inter_eye_distance.raw, self.yaw.raw, self.sharpness.raw
        )
    }
}

/// The liveness (presentation-attack) verdict on one face.
#[pyclass(frozen, get_all, module = "uniface")]
#[derive(Clone)]
pub struct Liveness {
    /// Mean probability of "real" over the models, 0–1.
    pub score: f32,
    pub is_live: bool,
    /// Per model: `(model id, crop scale, (print attack, real, replay attack) probabilities)`.
    pub per_model: Vec<(&'static str, f32, (f32, f32, f32))>,
}

impl From<&uniface_core::liveness::Liveness> for Liveness {
    fn from(l: &uniface_core::liveness::Liveness) -> Self {
        Self {
            score: l.score,
            is_live: l.is_live,
            per_model: l
                .per_model
                .iter()
                .map(|m| {
                    let [a, b, c] = m.probabilities;
                    (m.model, m.crop_scale, (a, b, c))
                })
                .collect(),
        }
    }
}

#[pymethods]
impl Liveness {
    fn __bool__(&self) -> bool {
        self.is_live
    }

    fn __repr__(&self) -> String {
        format!(
            "Liveness(is_live={}, score={:.3})",
            if self.is_live { "True" } else { "False" },
            self.score
        )
    }
}

/// The capture gate's verdict on one image.
#[pyclass(frozen, get_all, module = "uniface")]
pub struct Assessment {
    pub accepted: bool,
    /// Every refusal, by stable name (`"blurry"`, `"not_live"`, …), in a stable order.
    pub reasons: Vec<&'static str>,
    /// The same refusals as stable numeric codes (`uniface.reason_name(code)` names them).
    pub reason_codes: Vec<u16>,
    /// `(left, top, right, bottom)` of the face assessed, or None when there is none.
    #[pyo3(name = "box")]
    pub bbox: Option<BoxTuple>,
    pub faces_found: usize,
    pub quality: Option<QualityReport>,
    pub liveness: Option<Liveness>,
}

impl From<&uniface_core::pipeline::Assessment> for Assessment {
    fn from(a: &uniface_core::pipeline::Assessment) -> Self {
        Self {
            accepted: a.accepted,
            reasons: a.reasons.iter().map(|r| r.name()).collect(),
            reason_codes: a.reasons.iter().map(|r| r.code()).collect(),
            bbox: a.face.map(|b| (b.left, b.top, b.right, b.bottom)),
            faces_found: a.faces_found,
            quality: a
                .quality
                .as_ref()
                .map(|q| QualityReport::new(q, &a.reasons)),
            liveness: a.liveness.as_ref().map(Liveness::from),
        }
    }
}

#[pymethods]
impl Assessment {
    fn __bool__(&self) -> bool {
        self.accepted
    }

    fn __repr__(&self) -> String {
        format!(
            "Assessment(accepted={}, reasons={:?}, faces_found={})",
            if self.accepted { "True" } else { "False" },
            self.reasons,
            self.faces_found
        )
    }
}

/// The stable name of a refusal code (None for an unknown code).
#[pyfunction]
pub fn reason_name(code: i64) -> Option<&'static str> {
    u16::try_from(code)
        .ok()
        .and_then(Reason::from_code)
        .map(Reason::name)
}

/// What `Gallery.check()` found.
#[pyclass(frozen, get_all, module = "uniface")]
pub struct CheckReport {
    pub shards: usize,
    pub subjects: usize,
    pub templates: usize,
    /// Damage found; empty when the gallery is consistent.
    pub problems: Vec<String>,
    /// Findings that are not damage (kept tails of earlier recoveries, the lock holder).
    pub notes: Vec<String>,
}

impl From<uniface_index::CheckReport> for CheckReport {
    fn from(r: uniface_index::CheckReport) -> Self {
        Self {
            shards: r.shards,
            subjects: r.subjects,
            templates: r.templates,
            problems: r.problems,
            notes: r.notes,
        }
    }
}

type CheckReportArgs = (usize, usize, usize, Vec<String>, Vec<String>);

#[pymethods]
impl CheckReport {
    #[new]
    fn py_new(
        shards: usize,
        subjects: usize,
        templates: usize,
        problems: Vec<String>,
        notes: Vec<String>,
    ) -> Self {
        Self {
            shards,
            subjects,
            templates,
            problems,
            notes,
        }
    }

    /// Pickling (for Ray and multiprocessing): rebuilt from its fields.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, CheckReportArgs)> {
        let r = slf.get();
        Ok((
            slf.get_type().into_any(),
            (
                r.shards,
                r.subjects,
                r.templates,
                r.problems.clone(),
                r.notes.clone(),
            ),
        ))
    }

    /// No problems.
    #[getter]
    fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn __bool__(&self) -> bool {
        self.clean()
    }

    fn __repr__(&self) -> String {
        format!(
            "CheckReport(clean={}, subjects={}, templates={}, problems={})",
            if self.clean() { "True" } else { "False" },
            self.subjects,
            self.templates,
            self.problems.len()
        )
    }
}

/// One enrolled subject: its template ids and metadata.
#[pyclass(frozen, module = "uniface")]
pub struct Subject {
    #[pyo3(get)]
    pub id: String,
    #[pyo3(get)]
    pub templates: Vec<u64>,
    pub metadata: Vec<u8>,
}

#[pymethods]
impl Subject {
    /// The subject's metadata bytes (empty when none were stored).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, &self.metadata)
    }

    fn __repr__(&self) -> String {
        format!("Subject({:?}, templates={:?})", self.id, self.templates)
    }
}
