//! `uniface.Gallery`: the persistent 1:N gallery of `uniface-index`.

use std::path::PathBuf;
use std::sync::Arc;
use uniface_core::crypto::{Key, KeyFile, KeyProvider};

use pyo3::prelude::*;
use uniface_index::{Durability, GalleryOptions, OpenOptions, OpenSet};

use crate::calibration::CalibrationTable;
use crate::errors;
use crate::results::{CheckReport, Subject};
use crate::template::{as_template, Decision};

fn durability(name: &str) -> PyResult<Durability> {
    Durability::from_name(name).ok_or_else(|| {
        errors::InvalidArgumentError::new_err(format!(
            "durability must be \"sync\", \"group\" or \"async\", not {name:?}"
        ))
    })
}

fn open_set(fmr: f64, fpir: Option<f64>) -> OpenSet {
    fpir.map_or(OpenSet::Fmr(fmr), OpenSet::Fpir)
}

/// What `__reduce__` returns: the class and the arguments that rebuild the object (how results
/// cross process boundaries: Ray, multiprocessing, pickle).
type Reduced<'py, A> = PyResult<(Bound<'py, PyAny>, A)>;

/// Two subjects whose templates match (`Gallery.duplicates`): the subject ids (sorted),
/// their closest templates, and the distance between them.
#[pyclass(frozen, get_all, module = "uniface")]
pub struct Duplicate {
    pub subjects: (String, String),
    pub templates: (u64, u64),
    pub distance: f32,
    pub similarity: f32,
}

#[pymethods]
impl Duplicate {
    fn __repr__(&self) -> String {
        format!(
            "Duplicate(subjects={:?}, templates={:?}, distance={:.4})",
            self.subjects, self.templates, self.distance
        )
    }
}

/// One ranked subject of an identification.
#[pyclass(frozen, get_all, module = "uniface")]
pub struct Candidate {
    pub subject: String,
    pub template_id: u64,
    pub distance: f32,
    pub similarity: f32,
}

#[pymethods]
impl Candidate {
    #[new]
    fn py_new(subject: String, template_id: u64, distance: f32, similarity: f32) -> Self {
        Self {
            subject,
            template_id,
            distance,
            similarity,
        }
    }

    /// Pickling (for Ray and multiprocessing): rebuilt from its fields.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> Reduced<'py, (String, u64, f32, f32)> {
        let c = slf.get();
        Ok((
            slf.get_type().into_any(),
            (c.subject.clone(), c.template_id, c.distance, c.similarity),
        ))
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.subject == other.subject
            && self.template_id == other.template_id
            && self.distance == other.distance
            && self.similarity == other.similarity
    }

    fn __repr__(&self) -> String {
        format!(
            "Candidate(subject={:?}, distance={:.4})",
            self.subject, self.distance
        )
    }
}

/// The answer to "who is this?": ranked candidates and the open-set decision.
#[pyclass(frozen, get_all, module = "uniface")]
pub struct Identification {
    /// Best first, one per subject.
    pub candidates: Vec<Py<Candidate>>,
    /// The best candidate's subject when it is closer than the threshold, else None.
    pub known: Option<String>,
    pub threshold: f32,
    /// False-match rate per comparison of the threshold.
    pub fmr: f64,
    /// The false-positive identification rate asked for, if any.
    pub fpir: Option<f64>,
}

type IdentificationArgs = (Vec<Py<Candidate>>, Option<String>, f32, f64, Option<f64>);

#[pymethods]
impl Identification {
    #[new]
    #[pyo3(signature = (candidates, known, threshold, fmr, fpir=None))]
    fn py_new(
        candidates: Vec<Py<Candidate>>,
        known: Option<String>,
        threshold: f32,
        fmr: f64,
        fpir: Option<f64>,
    ) -> Self {
        Self {
            candidates,
            known,
            threshold,
            fmr,
            fpir,
        }
    }

    /// Pickling (for Ray and multiprocessing): rebuilt from its fields.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> Reduced<'py, IdentificationArgs> {
        let py = slf.py();
        let r = slf.get();
        Ok((
            slf.get_type().into_any(),
            (
                r.candidates.iter().map(|c| c.clone_ref(py)).collect(),
                r.known.clone(),
                r.threshold,
                r.fmr,
                r.fpir,
            ),
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "Identification(known={:?}, candidates={})",
            self.known,
            self.candidates.len()
        )
    }
}

impl From<uniface_index::Candidate> for Candidate {
    fn from(c: uniface_index::Candidate) -> Self {
        Self {
            subject: c.subject,
            template_id: c.template_id,
            distance: c.distance,
            similarity: c.similarity,
        }
    }
}

fn to_py(py: Python<'_>, r: uniface_index::Identification) -> PyResult<Identification> {
    Ok(Identification {
        candidates: r
            .candidates
            .into_iter()
            .map(|c| Py::new(py, Candidate::from(c)))
            .collect::<PyResult<_>>()?,
        known: r.known,
        threshold: r.threshold,
        fmr: r.fmr,
        fpir: r.fpir,
    })
}

/// What opening a gallery found and recovered: every recovery is reported, never silent.
#[pyclass(frozen, get_all, module = "uniface")]
pub struct OpenReport {
    /// True when opening found nothing to recover or report.
    pub clean: bool,
    pub read_only: bool,
    /// Log records replayed over all shards.
    pub records_replayed: usize,
    /// One line per finding, naming the files (an unfinished append cut off and kept,
    /// temporary files removed, a damaged search graph rebuilt, ...).
    pub messages: Vec<String>,
}

#[pymethods]
impl OpenReport {
    #[new]
    fn py_new(
        clean: bool,
        read_only: bool,
        records_replayed: usize,
        messages: Vec<String>,
    ) -> Self {
        Self {
            clean,
            read_only,
            records_replayed,
            messages,
        }
    }

    /// Pickling (for Ray and multiprocessing): rebuilt from its fields.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> Reduced<'py, (bool, bool, usize, Vec<String>)> {
        let r = slf.get();
        Ok((
            slf.get_type().into_any(),
            (r.clean, r.read_only, r.records_replayed, r.messages.clone()),
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "OpenReport(clean={}, records_replayed={}, messages={:?})",
            if self.clean { "True" } else { "False" },
            self.records_replayed,
            self.messages
        )
    }
}

impl From<&uniface_index::OpenReport> for OpenReport {
    fn from(r: &uniface_index::OpenReport) -> Self {
        Self {
            clean: r.is_clean(),
            read_only: r.read_only,
            records_replayed: r.records_replayed(),
            messages: r.messages(),
        }
    }
}

/// A gallery directory: subjects with templates, crash-safe on disk, searched through HNSW
/// graphs with exact re-scoring. Safe to share between threads; searches and enrollments
/// release the GIL. As a context manager it closes (flushes and releases the writer's lock) on exit.
#[pyclass(frozen, module = "uniface")]
pub struct Gallery {
    /// `None` once closed; calls in flight keep their `Arc` until they return.
    inner: std::sync::RwLock<Option<std::sync::Arc<uniface_index::Gallery>>>,
    report: Option<uniface_index::OpenReport>,
}

impl Gallery {
    fn wrap(g: uniface_index::Gallery, report: Option<uniface_index::OpenReport>) -> Self {
        Self {
            inner: std::sync::RwLock::new(Some(std::sync::Arc::new(g))),
            report,
        }
    }

    /// The open gallery, or `GalleryError` after `close()`.
    fn g(&self) -> PyResult<std::sync::Arc<uniface_index::Gallery>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| errors::GalleryError::new_err("the gallery is closed"))
    }
}

#[pymethods]
impl Gallery {
    /// Open the gallery in `path`, or create it there with `create=True` (`shards` shards).
    /// `durability`: "sync" (fsync per enrollment), "group" (shared fsyncs) or "async"
    /// (left to the OS). `view=True` memory-maps the saved graphs. One writer per gallery:
    /// a second writer raises `GalleryLockedError` at once, or waits up to `wait_lock`
    /// seconds; `read_only=True` takes no lock and changes no file (enrollments then raise
    /// `GalleryError`). What opening recovered is in `open_report`. `calibration` (a
    /// `CalibrationTable`, e.g. from `uniface.calibrate` on the host's own photos) replaces
    /// the shipped table for `identify` and `verify` decisions.
    ///
    /// Encryption at rest: `key` (32 bytes, e.g. from `uniface.generate_key()`) or `key_file`
    /// (a file made by `uniface keys new`) is the key-encryption key. Given at creation, the
    /// gallery is encrypted (templates, metadata and graphs sealed; each subject under a key of
    /// its own, destroyed by `remove_subject`); an encrypted gallery needs it at every open
    /// (`CryptoError` without it or with another one). `previous_key` finishes a `rotate_key`
    /// that stopped part-way.
    #[new]
    ///
    /// `shard=i` opens only shard `i` (created with the whole gallery when `create=True` finds
    /// none): one process or Ray actor per shard, each taking only its shard's lock. Routing
    /// still counts every shard (`ShardRouter(gallery.shards)`); an enrollment of a subject
    /// that lives elsewhere raises `GalleryError`; searches cover this shard, to be merged with
    /// the others' by `merge_candidates`.
    #[pyo3(signature = (path, *, create=false, shards=1, shard=None, durability="sync", view=false, read_only=false, wait_lock=None, calibration=None, key=None, key_file=None, previous_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        shards: i64,
        shard: Option<i64>,
        durability: &str,
        view: bool,
        read_only: bool,
        wait_lock: Option<f64>,
        calibration: Option<PyRef<'_, CalibrationTable>>,
        key: Option<&[u8]>,
        key_file: Option<PathBuf>,
        previous_key: Option<&[u8]>,
    ) -> PyResult<Self> {
        let table = calibration.map(|c| c.inner.clone());
        let key: Option<Arc<dyn KeyProvider>> = match (key, key_file) {
            (Some(_), Some(_)) => {
                return Err(errors::InvalidArgumentError::new_err(
                    "give the key as bytes (key=) or as a file (key_file=), not both",
                ))
            }
            (Some(k), None) => Some(Arc::new(Key::from_slice(k).map_err(errors::core)?)),
            (None, Some(f)) => Some(Arc::new(KeyFile::new(f))),
            (None, None) => None,
        };
        let previous_key: Option<Arc<dyn KeyProvider>> = match previous_key {
            Some(k) => Some(Arc::new(Key::from_slice(k).map_err(errors::core)?)),
            None => None,
        };
        let shards: usize = errors::int_arg("shards", shards, 1, uniface_index::MAX_SHARDS as i64)?;
        let shard: Option<usize> = shard
            .map(|i| errors::int_arg("shard", i, 0, uniface_index::MAX_SHARDS as i64 - 1))
            .transpose()?;
        let mode = self::durability(durability)?;
        let lock_timeout = match wait_lock {
            Some(s) if !(s.is_finite() && (0.0..=86_400.0).contains(&s)) => {
                return Err(errors::InvalidArgumentError::new_err(format!(
                    "wait_lock must be a number of seconds from 0 to 86400, not {s}"
                )))
            }
            s => s.map(std::time::Duration::from_secs_f64),
        };
        py.detach(|| {
            let fp = uniface_core::template::ModelFingerprint::dlib_resnet_v1();
            let exists = path.join("manifest.json").exists();
            if create && !exists && !read_only {
                let options = GalleryOptions {
                    shards,
                    durability: mode,
                    encryption: key.clone(),
                    ..Default::default()
                };
                let mut inner = uniface_index::Gallery::create(&path, &options)?;
                if shard.is_none() {
                    if let Some(t) = table {
                        inner.set_calibration(t);
                    }
                    return Ok(Self::wrap(inner, None));
                }
                // one shard of a new gallery: made whole, then opened as that shard alone
                inner.flush()?;
                drop(inner);
            }
            let options = OpenOptions {
                durability: mode,
                view,
                shard,
                read_only,
                lock_timeout,
                key,
                previous_key,
                ..OpenOptions::default()
            };
            let (mut inner, report) =
                uniface_index::Gallery::open_with_options(&path, &fp, &options)?;
            if let Some(t) = table {
                inner.set_calibration(t);
            }
            Ok(Self::wrap(inner, Some(report)))
        })
        .map_err(errors::index)
    }

    /// What opening found and recovered (None for a gallery just created).
    #[getter]
    fn open_report(&self) -> Option<OpenReport> {
        self.report.as_ref().map(OpenReport::from)
    }

    /// Whether the gallery is encrypted at rest.
    #[getter]
    fn encrypted(&self) -> PyResult<bool> {
        Ok(self.g()?.is_encrypted())
    }

    /// The id (16 hex digits) of the key-encryption key the gallery is open with; None when
    /// it is not encrypted. Safe to show and log.
    #[getter]
    fn key_id(&self) -> PyResult<Option<String>> {
        Ok(self.g()?.key_id().map(|k| k.to_string()))
    }

    /// Re-wrap every subject's key under `new_key` (32 bytes); no template is written again.
    /// From then on only `new_key` opens the gallery.
    fn rotate_key(&self, py: Python<'_>, new_key: &[u8]) -> PyResult<()> {
        let new = Key::from_slice(new_key).map_err(errors::core)?;
        let g = self.g()?;
        py.detach(|| g.rotate_kek(&new)).map_err(errors::index)
    }

    /// Enroll a template (or an embedding) for `subject`; returns the template id once it is
    /// durable and searchable.
    fn enroll(&self, py: Python<'_>, subject: &str, template: &Bound<'_, PyAny>) -> PyResult<u64> {
        let t = as_template(template)?;
        let g = self.g()?;
        py.detach(|| g.enroll(subject, &t)).map_err(errors::index)
    }

    /// Enroll many at once (one log write and one sync per shard); ids in input order.
    fn enroll_many(
        &self,
        py: Python<'_>,
        subjects: Vec<String>,
        templates: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<Vec<u64>> {
        if subjects.len() != templates.len() {
            return Err(errors::InvalidArgumentError::new_err(format!(
                "{} subjects for {} templates",
                subjects.len(),
                templates.len()
            )));
        }
        let ts: Vec<_> = templates.iter().map(as_template).collect::<PyResult<_>>()?;
        let g = self.g()?;
        py.detach(|| {
            let items: Vec<(&str, &uniface_core::template::Template)> =
                subjects.iter().map(String::as_str).zip(ts.iter()).collect();
            g.enroll_many(&items)
        })
        .map_err(errors::index)
    }

    /// Who is this? The `k` best subjects and the known/unknown decision at false-match rate
    /// `fmr` per comparison, or at false-positive identification rate `fpir` when given.
    #[pyo3(signature = (probe, k=5, fmr=1e-4, fpir=None))]
    fn identify(
        &self,
        py: Python<'_>,
        probe: &Bound<'_, PyAny>,
        k: i64,
        fmr: f64,
        fpir: Option<f64>,
    ) -> PyResult<Identification> {
        let k: usize = errors::int_arg("k", k, 0, i64::MAX)?;
        let t = as_template(probe)?;
        let g = self.g()?;
        let r = py
            .detach(|| g.identify(&t, k, open_set(fmr, fpir)))
            .map_err(errors::index)?;
        to_py(py, r)
    }

    /// `identify` for many probes, in parallel.
    #[pyo3(signature = (probes, k=5, fmr=1e-4, fpir=None))]
    fn identify_batch(
        &self,
        py: Python<'_>,
        probes: Vec<Bound<'_, PyAny>>,
        k: i64,
        fmr: f64,
        fpir: Option<f64>,
    ) -> PyResult<Vec<Identification>> {
        let k: usize = errors::int_arg("k", k, 0, i64::MAX)?;
        let ts: Vec<_> = probes.iter().map(as_template).collect::<PyResult<_>>()?;
        let g = self.g()?;
        let rs = py
            .detach(|| g.identify_batch(&ts, k, open_set(fmr, fpir)))
            .map_err(errors::index)?;
        rs.into_iter().map(|r| to_py(py, r)).collect()
    }

    /// 1:1 against `subject`'s closest template, held to `fmr` for the subject as a whole
    /// (the best of its m templates is judged at the threshold for 1 − (1 − fmr)^(1/m) per
    /// comparison; `Decision.comparisons` is m); None when the subject is not enrolled.
    #[pyo3(signature = (subject, probe, fmr=1e-4))]
    fn verify(
        &self,
        py: Python<'_>,
        subject: &str,
        probe: &Bound<'_, PyAny>,
        fmr: f64,
    ) -> PyResult<Option<Decision>> {
        let t = as_template(probe)?;
        let g = self.g()?;
        py.detach(|| g.verify(subject, &t, fmr))
            .map(|d| d.map(Decision::from))
            .map_err(errors::index)
    }

    /// Enroll like `enroll`, and report who else the template matches: the identification
    /// restricted to other subjects (`known` is the closest other subject under the
    /// threshold, or None). Nothing is refused; returns `(template_id, identification)`.
    #[pyo3(signature = (subject, template, k=5, fmr=1e-4, fpir=None))]
    fn enroll_reporting_duplicates(
        &self,
        py: Python<'_>,
        subject: &str,
        template: &Bound<'_, PyAny>,
        k: i64,
        fmr: f64,
        fpir: Option<f64>,
    ) -> PyResult<(u64, Identification)> {
        let k: usize = errors::int_arg("k", k, 0, i64::MAX)?;
        let t = as_template(template)?;
        let g = self.g()?;
        let (id, r) = py
            .detach(|| g.enroll_reporting_duplicates(subject, &t, k, open_set(fmr, fpir)))
            .map_err(errors::index)?;
        Ok((id, to_py(py, r)?))
    }

    /// Possible duplicate identities: pairs of different subjects whose templates match at
    /// `fmr` per comparison, closest first (a list of `Duplicate`). With n templates there
    /// are about n²/2 comparisons: keep `fmr` small.
    #[pyo3(signature = (fmr=1e-5))]
    fn duplicates(&self, py: Python<'_>, fmr: f64) -> PyResult<Vec<Duplicate>> {
        let g = self.g()?;
        let found = py
            .detach(|| g.duplicates(fmr, &|_| {}))
            .map_err(errors::index)?;
        Ok(found
            .into_iter()
            .map(|d| Duplicate {
                subjects: (d.subjects[0].clone(), d.subjects[1].clone()),
                templates: (d.templates[0], d.templates[1]),
                distance: d.distance,
                similarity: d.similarity,
            })
            .collect())
    }

    /// Remove a subject and all its templates (erased from disk at the next checkpoint);
    /// returns how many templates went.
    fn remove(&self, py: Python<'_>, subject: &str) -> PyResult<usize> {
        let g = self.g()?;
        py.detach(|| g.remove_subject(subject))
            .map_err(errors::index)
    }

    /// Remove one template; False when there is none with that id.
    fn remove_template(&self, py: Python<'_>, template_id: u64) -> PyResult<bool> {
        let g = self.g()?;
        py.detach(|| g.remove_template(template_id))
            .map_err(errors::index)
    }

    /// Every subject id, sorted.
    fn subjects(&self) -> PyResult<Vec<String>> {
        Ok(self.g()?.list())
    }

    /// A subject's template ids and metadata, or None.
    fn get(&self, subject: &str) -> PyResult<Option<Subject>> {
        Ok(self.g()?.get(subject).map(|s| Subject {
            id: subject.to_owned(),
            templates: s.templates,
            metadata: s.metadata,
        }))
    }

    /// Make every log durable now.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let g = self.g()?;
        py.detach(|| g.flush()).map_err(errors::index)
    }

    /// Fold the logs into snapshots (and erase removed subjects from disk).
    fn checkpoint(&self, py: Python<'_>) -> PyResult<()> {
        let g = self.g()?;
        py.detach(|| g.checkpoint()).map_err(errors::index)
    }

    /// Move templates waiting for the search graph into it; returns how many.
    #[pyo3(signature = (max_per_shard=None))]
    fn index_pending(&self, py: Python<'_>, max_per_shard: Option<i64>) -> PyResult<usize> {
        let most: usize = match max_per_shard {
            Some(n) => errors::int_arg("max_per_shard", n, 0, i64::MAX)?,
            None => usize::MAX,
        };
        let g = self.g()?;
        py.detach(|| g.index_pending(most)).map_err(errors::index)
    }

    /// Templates enrolled but not yet in a search graph (found by exact scan meanwhile).
    #[getter]
    fn pending(&self) -> PyResult<usize> {
        Ok(self.g()?.pending())
    }

    /// Verify checksums and consistency (`problems` empty when clean).
    fn check(&self, py: Python<'_>) -> PyResult<CheckReport> {
        let g = self.g()?;
        let r = py.detach(|| g.check()).map_err(errors::index)?;
        Ok(CheckReport::from(r))
    }

    /// The gallery's number of shards (all of them, whether open here or not).
    #[getter]
    fn shards(&self) -> PyResult<usize> {
        Ok(self.g()?.manifest().shards)
    }

    /// The shards open in this process (all, or the one named by `shard=`).
    #[getter]
    fn local_shards(&self) -> PyResult<Vec<usize>> {
        Ok(self.g()?.local_shards())
    }

    /// Store `metadata` (bytes, up to 1 MiB) for an enrolled subject, replacing what was there.
    fn set_metadata(&self, py: Python<'_>, subject: &str, metadata: &[u8]) -> PyResult<()> {
        let g = self.g()?;
        let m = metadata.to_vec();
        py.detach(|| g.update_metadata(subject, &m))
            .map_err(errors::index)
    }

    /// The last change applied on each shard, indexed by shard number (0 for shards not open
    /// here): a replica's place in the change feed.
    fn positions(&self) -> PyResult<Vec<u64>> {
        Ok(self.g()?.positions())
    }

    /// The change feed: every durable change after `positions` (one number per shard, as
    /// `positions()` gives them), in order, each as bytes for `apply_changes` on a replica
    /// (checksummed: a damaged change is refused). Raises `GalleryError` when a checkpoint has
    /// folded changes the caller still needs into a snapshot (copy the gallery then).
    fn changes_since<'py>(
        &self,
        py: Python<'py>,
        positions: Vec<u64>,
    ) -> PyResult<Vec<Bound<'py, pyo3::types::PyBytes>>> {
        let g = self.g()?;
        let changes = py
            .detach(|| g.changes_since(&positions))
            .map_err(errors::index)?;
        Ok(changes
            .iter()
            .map(|c| pyo3::types::PyBytes::new(py, &c.to_bytes()))
            .collect())
    }

    /// Apply changes from another gallery's `changes_since` (same shard count): ones already
    /// applied are skipped, a gap raises `GalleryError`, changes of shards not open here are
    /// skipped. Returns how many were applied.
    fn apply_changes(&self, py: Python<'_>, changes: Vec<Vec<u8>>) -> PyResult<usize> {
        let decoded = changes
            .iter()
            .map(|b| uniface_index::Change::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(errors::index)?;
        let g = self.g()?;
        py.detach(|| g.apply_changes(&decoded))
            .map_err(errors::index)
    }

    /// Set how many graph candidates a search explores (`ef`, 64 by default): more finds the
    /// true nearest more often and costs time. Recorded in the gallery's manifest.
    fn set_expansion_search(&self, py: Python<'_>, ef: i64) -> PyResult<()> {
        let ef: usize = errors::int_arg("ef", ef, 1, uniface_index::MAX_EXPANSION as i64)?;
        let g = self.g()?;
        py.detach(|| g.set_expansion_search(ef))
            .map_err(errors::index)
    }

    /// The per-comparison false-match rate that `identify(fpir=...)` uses at this gallery's
    /// size (`per_comparison_fmr(fpir, len(gallery))`).
    fn fmr_for_fpir(&self, fpir: f64) -> PyResult<f64> {
        self.g()?.fmr_for_fpir(fpir).map_err(errors::index)
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.g()?.len())
    }

    /// Flush and close: the writer's lock is released (once calls in flight return), so the
    /// gallery can be opened again; later calls on this object raise `GalleryError`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.inner.write().unwrap_or_else(|e| e.into_inner()).take();
        match taken {
            Some(g) => py.detach(|| g.flush()).map_err(errors::index),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.g() {
            Ok(g) => format!(
                "Gallery({:?}, templates={})",
                g.dir().display().to_string(),
                g.len()
            ),
            Err(_) => "Gallery(closed)".into(),
        }
    }
}

/// Where a subject lives in a gallery of `shards` shards: the same stable hash as the gallery
/// (and every host that splits one), so a process that routes enrollments and the gallery agree.
#[pyclass(frozen, module = "uniface")]
pub struct ShardRouter {
    inner: uniface_index::ShardRouter,
    shards: usize,
}

#[pymethods]
impl ShardRouter {
    #[new]
    fn py_new(shards: i64) -> PyResult<Self> {
        let shards: usize = errors::int_arg("shards", shards, 1, uniface_index::MAX_SHARDS as i64)?;
        Ok(Self {
            inner: uniface_index::ShardRouter::new(shards),
            shards,
        })
    }

    /// The shard that holds `subject`.
    fn shard_of(&self, subject: &str) -> usize {
        self.inner.shard_of(subject)
    }

    #[getter]
    fn shards(&self) -> usize {
        self.shards
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> Reduced<'py, (usize,)> {
        Ok((slf.get_type().into_any(), (slf.get().shards,)))
    }

    fn __repr__(&self) -> String {
        format!("ShardRouter(shards={})", self.shards)
    }
}

/// Merge candidates gathered from several shards (several processes or hosts): the best
/// distance per subject, best first, at most `k` — the order a single gallery ranks in.
#[pyfunction]
pub fn merge_candidates(
    py: Python<'_>,
    candidates: Vec<PyRef<'_, Candidate>>,
    k: i64,
) -> PyResult<Vec<Py<Candidate>>> {
    let k: usize = errors::int_arg("k", k, 0, i64::MAX)?;
    let mut found: Vec<uniface_index::Candidate> = candidates
        .iter()
        .map(|c| uniface_index::Candidate {
            subject: c.subject.clone(),
            template_id: c.template_id,
            distance: c.distance,
            similarity: c.similarity,
        })
        .collect();
    uniface_index::merge_candidates(&mut found, k)
        .into_iter()
        .map(|c| Py::new(py, Candidate::from(c)))
        .collect()
}

/// The false-match rate per comparison that holds `comparisons` independent comparisons to
/// `total` together: 1 − (1 − total)^(1/comparisons). With `total` an FPIR and `comparisons`
/// the templates of a gallery (all its shards), it is the FMR `identify(fpir=...)` decides at.
#[pyfunction]
pub fn per_comparison_fmr(total: f64, comparisons: i64) -> PyResult<f64> {
    let n: u64 = errors::int_arg("comparisons", comparisons, 0, i64::MAX)?;
    uniface_core::calibration::per_comparison_fmr(total, n).map_err(errors::core)
}
