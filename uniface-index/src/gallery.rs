//! The gallery: a directory of shards behind one API.
//!
//! ```text
//! gallery/
//!   manifest.json          format version, model fingerprint, dimension, metric, storage, shards
//!   shard-000/wal.log      write-ahead log (see `wal`)
//!   shard-000/templates.snap   snapshot written by `checkpoint` (see `shard`)
//!   shard-001/...
//! ```
//!
//! An enrollment is written to its shard's log, made durable as the [`Durability`] mode says,
//! and applied in memory before `enroll` returns: acknowledged means durable and searchable.
//! `checkpoint` folds the logs into snapshots and empties them; after it, removed subjects are
//! gone from every file (erasure). Search is an exact scan of each shard's contiguous matrix,
//! fanned out over the shards with rayon.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use uniface_core::calibration::{self, CalibrationTable};
use uniface_core::compare::Metric;
use uniface_core::template::{ElementType, ModelFingerprint, Template};

use crate::shard::{atomic_write, Shard, Subject};
use crate::wal::{Durability, Op, Record, ReplayReport};
use crate::{Error, Result};

const FORMAT_VERSION: u32 = 1;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub model_id: String,
    pub weights_sha256: String,
    pub preprocessing: u16,
    pub dimension: usize,
    pub metric: Metric,
    /// Storage of the search matrices (templates are always kept in f32 as well).
    pub element: String,
    pub shards: usize,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Manifest {
    fn fingerprint_matches(&self, f: &ModelFingerprint) -> bool {
        self.model_id == f.model_id
            && self.weights_sha256 == hex(&f.weights_sha256)
            && self.preprocessing == f.preprocessing
    }

    fn element(&self) -> Result<ElementType> {
        match self.element.as_str() {
            "f32" => Ok(ElementType::F32),
            "f16" => Ok(ElementType::F16),
            "i8" => Ok(ElementType::I8),
            other => Err(Error::Corrupt {
                path: PathBuf::from("manifest.json"),
                message: format!("unknown element type {other:?}"),
            }),
        }
    }
}

/// How to create a gallery.
#[derive(Debug, Clone)]
pub struct GalleryOptions {
    pub fingerprint: ModelFingerprint,
    pub dimension: usize,
    pub shards: usize,
    /// Storage of the search matrices: f32, or f16/i8 (the f32 vectors are kept for re-ranking).
    pub element: ElementType,
    pub durability: Durability,
}

impl Default for GalleryOptions {
    fn default() -> Self {
        Self {
            fingerprint: ModelFingerprint::dlib_resnet_v1(),
            dimension: uniface_core::embed::DESCRIPTOR_DIM,
            shards: 1,
            element: ElementType::F32,
            durability: Durability::Sync,
        }
    }
}

/// Stable subject → shard routing (FNV-1a of the subject id, modulo the shard count), so that
/// hosts that split a gallery over machines agree on where a subject lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRouter {
    shards: usize,
}

impl ShardRouter {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: shards.max(1),
        }
    }

    pub fn shard_of(&self, subject: &str) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in subject.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % self.shards as u64) as usize
    }
}

/// One ranked subject of an identification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub subject: String,
    /// The subject's closest template.
    pub template_id: u64,
    pub distance: f32,
    pub similarity: f32,
}

/// The answer to "who is this?".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identification {
    /// Best first, one entry per subject.
    pub candidates: Vec<Candidate>,
    /// The best candidate when it is closer than the threshold, else `None` (unknown).
    pub known: Option<String>,
    pub threshold: f32,
    /// Target false-match rate of the threshold (per comparison).
    pub fmr: f64,
}

/// One change of the feed: a log record and the shard it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub shard: usize,
    pub record: Record,
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub shards: usize,
    pub subjects: usize,
    pub templates: usize,
    /// Empty when the gallery is consistent.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What `open` found.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenReport {
    /// Per shard: the log replay.
    pub replay: Vec<ReplayReport>,
}

/// A persistent, sharded gallery. `Send + Sync`: searches run while enrollments happen (one
/// writer per shard at a time).
pub struct Gallery {
    dir: PathBuf,
    manifest: Manifest,
    router: ShardRouter,
    shards: Vec<RwLock<Shard>>,
    next_id: AtomicU64,
    calibration: CalibrationTable,
    indexing: std::sync::Mutex<()>,
}

fn shard_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("shard-{i:03}"))
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Gallery {
    /// Create a new, empty gallery in `dir` (which must not hold one already).
    pub fn create(dir: &Path, options: &GalleryOptions) -> Result<Self> {
        let path = dir.join("manifest.json");
        if path.exists() {
            return Err(Error::Exists { path });
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_owned(),
            source: e,
        })?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            model_id: options.fingerprint.model_id.clone(),
            weights_sha256: hex(&options.fingerprint.weights_sha256),
            preprocessing: options.fingerprint.preprocessing,
            dimension: options.dimension,
            metric: Metric::Euclidean,
            element: match options.element {
                ElementType::F32 => "f32",
                ElementType::F16 => "f16",
                ElementType::I8 => "i8",
            }
            .into(),
            shards: options.shards.max(1),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        atomic_write(&path, &json)?;
        Ok(Self::open_with(dir, manifest, options.durability)?.0)
    }

    /// Open an existing gallery, refusing one made with another model than `expected`.
    pub fn open(
        dir: &Path,
        expected: &ModelFingerprint,
        durability: Durability,
    ) -> Result<(Self, OpenReport)> {
        let path = dir.join("manifest.json");
        let text = std::fs::read(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::Corrupt {
                path,
                message: format!("unsupported format version {}", manifest.format_version),
            });
        }
        if !manifest.fingerprint_matches(expected) {
            return Err(Error::Core(uniface_core::Error::FingerprintMismatch {
                left: manifest.model_id.clone(),
                right: expected.model_id.clone(),
            }));
        }
        Self::open_with(dir, manifest, durability)
    }

    fn open_with(
        dir: &Path,
        manifest: Manifest,
        durability: Durability,
    ) -> Result<(Self, OpenReport)> {
        let element = manifest.element()?;
        let shards: Vec<Shard> = (0..manifest.shards)
            .into_par_iter()
            .map(|i| Shard::open(&shard_dir(dir, i), manifest.dimension, element, durability))
            .collect::<Result<_>>()?;
        let next = shards
            .iter()
            .filter_map(|s| s.state.max_template_id())
            .max()
            .map_or(1, |m| m + 1);
        let report = OpenReport {
            replay: shards.iter().map(|s| s.replay.clone()).collect(),
        };
        let calibration = calibration::default_table()?.clone();
        Ok((
            Self {
                dir: dir.to_owned(),
                router: ShardRouter::new(manifest.shards),
                manifest,
                shards: shards.into_iter().map(RwLock::new).collect(),
                next_id: AtomicU64::new(next),
                calibration,
                indexing: std::sync::Mutex::new(()),
            },
            report,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn router(&self) -> ShardRouter {
        self.router
    }

    /// Use another calibration table for open-set decisions (e.g. from `uniface calibrate`).
    pub fn set_calibration(&mut self, table: CalibrationTable) {
        self.calibration = table;
    }

    fn check_template(&self, t: &Template) -> Result<Vec<f32>> {
        if !self.manifest.fingerprint_matches(t.fingerprint()) {
            return Err(Error::Core(uniface_core::Error::FingerprintMismatch {
                left: self.manifest.model_id.clone(),
                right: t.fingerprint().model_id.clone(),
            }));
        }
        let v = t.vector();
        if v.len() != self.manifest.dimension {
            return Err(Error::Dimension {
                expected: self.manifest.dimension,
                got: v.len(),
            });
        }
        Ok(v)
    }

    /// Log, apply and make durable changes on `shard` (one write, one durability wait).
    fn commit_many(&self, shard: usize, ops: Vec<Op>) -> Result<()> {
        let (wal, seq) = {
            let mut s = write_lock(&self.shards[shard]);
            let first = s.state.last_seq + 1;
            let records: Vec<Record> = ops
                .into_iter()
                .enumerate()
                .map(|(i, op)| Record {
                    seq: first + i as u64,
                    op,
                })
                .collect();
            let Some(last) = s.wal.write(&records)? else {
                return Ok(());
            };
            for r in &records {
                s.state.apply(r)?;
            }
            (s.wal.clone(), last)
        };
        // durability outside the lock, so that concurrent writers share a group commit
        wal.commit(seq)
    }

    fn commit(&self, shard: usize, op: Op) -> Result<()> {
        self.commit_many(shard, vec![op])
    }

    /// Enroll many templates at once: one log write and one durability wait per shard, which
    /// is how a bulk load reaches tens of thousands of durable enrollments per second. Returns
    /// the template ids in input order.
    pub fn enroll_many(&self, items: &[(&str, &Template)]) -> Result<Vec<u64>> {
        let mut per_shard: Vec<Vec<Op>> = vec![Vec::new(); self.shards.len()];
        let mut ids = Vec::with_capacity(items.len());
        for (subject, t) in items {
            if subject.is_empty() {
                return Err(Error::InvalidSubject);
            }
            let vector = self.check_template(t)?;
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            per_shard[self.router.shard_of(subject)].push(Op::Enroll {
                subject: (*subject).to_owned(),
                template_id: id,
                vector,
            });
            ids.push(id);
        }
        for (shard, ops) in per_shard.into_iter().enumerate() {
            if !ops.is_empty() {
                self.commit_many(shard, ops)?;
            }
        }
        Ok(ids)
    }

    /// Enroll a template for `subject`; returns its id once it is durable and searchable.
    pub fn enroll(&self, subject: &str, template: &Template) -> Result<u64> {
        if subject.is_empty() {
            return Err(Error::InvalidSubject);
        }
        let vector = self.check_template(template)?;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.commit(
            self.router.shard_of(subject),
            Op::Enroll {
                subject: subject.to_owned(),
                template_id: id,
                vector,
            },
        )?;
        Ok(id)
    }

    /// Remove one template; `false` when there is no such template.
    pub fn remove_template(&self, id: u64) -> Result<bool> {
        for (i, s) in self.shards.iter().enumerate() {
            if read_lock(s).state.contains_template(id) {
                self.commit(i, Op::RemoveTemplate { template_id: id })?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Remove a subject with all its templates and metadata; returns how many templates went.
    /// The data leaves every file at the next [`Gallery::checkpoint`].
    pub fn remove_subject(&self, subject: &str) -> Result<usize> {
        let shard = self.router.shard_of(subject);
        let n = match read_lock(&self.shards[shard]).state.subjects.get(subject) {
            Some(s) => s.templates.len(),
            None => return Ok(0),
        };
        self.commit(
            shard,
            Op::RemoveSubject {
                subject: subject.to_owned(),
            },
        )?;
        Ok(n)
    }

    /// Replace a subject's opaque metadata.
    pub fn update_metadata(&self, subject: &str, metadata: &[u8]) -> Result<()> {
        if subject.is_empty() {
            return Err(Error::InvalidSubject);
        }
        self.commit(
            self.router.shard_of(subject),
            Op::SetMetadata {
                subject: subject.to_owned(),
                metadata: metadata.to_vec(),
            },
        )
    }

    /// A subject's templates and metadata.
    pub fn get(&self, subject: &str) -> Option<Subject> {
        read_lock(&self.shards[self.router.shard_of(subject)])
            .state
            .subjects
            .get(subject)
            .cloned()
    }

    /// Every subject id, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .shards
            .iter()
            .flat_map(|s| {
                read_lock(s)
                    .state
                    .subjects
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| read_lock(s).state.template_count())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Who is this? The `k` best subjects (exact scan of every shard, best template per
    /// subject, re-scored in f32), and the open-set decision at false-match rate `fmr`.
    pub fn identify(&self, probe: &Template, k: usize, fmr: f64) -> Result<Identification> {
        let v = self.check_template(probe)?;
        let threshold = self.calibration.threshold_for_fmr(fmr)?;
        let metric = self.manifest.metric;
        // oversample so that one subject's several templates cannot crowd others out
        let per_shard = (k * 4).max(16);
        let mut found: Vec<Candidate> = self
            .shards
            .par_iter()
            .map(|s| -> Result<Vec<Candidate>> {
                let s = read_lock(s);
                let mut out = Vec::new();
                for (id, _) in s.state.nearest(&v, metric, per_shard)? {
                    let (Some(subject), Some(exact)) = (s.state.subject_of(id), s.state.vector(id))
                    else {
                        continue;
                    };
                    let d = uniface_core::compare::distance(metric, &v, exact)?;
                    out.push(Candidate {
                        subject: subject.to_owned(),
                        template_id: id,
                        distance: d,
                        similarity: metric.similarity(d),
                    });
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let candidates = merge_candidates(&mut found, k);
        let known = candidates
            .first()
            .filter(|c| c.distance < threshold)
            .map(|c| c.subject.clone());
        Ok(Identification {
            candidates,
            known,
            threshold,
            fmr,
        })
    }

    /// [`Gallery::identify`] for many probes, in parallel on the rayon pool.
    pub fn identify_batch(
        &self,
        probes: &[Template],
        k: usize,
        fmr: f64,
    ) -> Result<Vec<Identification>> {
        probes
            .par_iter()
            .map(|p| self.identify(p, k, fmr))
            .collect()
    }

    /// 1:1 against a claimed subject: the decision for its closest template.
    pub fn verify(
        &self,
        subject: &str,
        probe: &Template,
        fmr: f64,
    ) -> Result<Option<calibration::Decision>> {
        let v = self.check_template(probe)?;
        let s = read_lock(&self.shards[self.router.shard_of(subject)]);
        let Some(entry) = s.state.subjects.get(subject) else {
            return Ok(None);
        };
        let mut best: Option<f32> = None;
        for id in &entry.templates {
            if let Some(t) = s.state.vector(*id) {
                let d = uniface_core::compare::distance(self.manifest.metric, &v, t)?;
                best = Some(best.map_or(d, |b: f32| b.min(d)));
            }
        }
        match best {
            Some(d) => Ok(Some(self.calibration.decide(d, fmr)?)),
            None => Ok(None),
        }
    }

    /// Fold every shard's log into its snapshot and empty the log.
    pub fn checkpoint(&self) -> Result<()> {
        for s in &self.shards {
            write_lock(s).checkpoint()?;
        }
        Ok(())
    }

    /// The last sequence number applied on each shard (a replica's position in the feed).
    pub fn positions(&self) -> Vec<u64> {
        self.shards
            .iter()
            .map(|s| read_lock(s).state.last_seq)
            .collect()
    }

    /// The change feed: every change after `since[shard]` on each shard, in order, read from
    /// the logs. Sequence numbers are per shard and increase by one per change. When a
    /// checkpoint has already folded changes the caller still needs into a snapshot, the answer
    /// is [`Error::Compacted`]: the replica must start again from a copy of the gallery.
    pub fn changes_since(&self, since: &[u64]) -> Result<Vec<Change>> {
        if since.len() != self.shards.len() {
            return Err(Error::ShardCount {
                expected: self.shards.len(),
                got: since.len(),
            });
        }
        let mut out = Vec::new();
        for (i, (s, &from)) in self.shards.iter().zip(since).enumerate() {
            let s = read_lock(s);
            if from >= s.state.last_seq {
                continue;
            }
            let (records, _) = crate::wal::Wal::read_all(s.wal.path())?;
            let first = records.first().map(|r| r.seq);
            if first.is_none_or(|f| f > from + 1) {
                return Err(Error::Compacted {
                    shard: i,
                    since: from,
                    available_from: first.unwrap_or(s.state.last_seq + 1),
                });
            }
            out.extend(
                records
                    .into_iter()
                    .filter(|r| r.seq > from && r.seq <= s.state.last_seq)
                    .map(|record| Change { shard: i, record }),
            );
        }
        Ok(out)
    }

    /// Apply a feed from another gallery with the same manifest (a replica catching up).
    /// Changes already applied are skipped, so a feed may be applied twice; a gap in the
    /// sequence is an error. Returns how many changes were applied.
    pub fn apply_changes(&self, changes: &[Change]) -> Result<usize> {
        let mut applied = 0;
        for c in changes {
            let shard = self.shards.get(c.shard).ok_or(Error::ShardCount {
                expected: self.shards.len(),
                got: c.shard + 1,
            })?;
            let seq = {
                let mut s = write_lock(shard);
                if c.record.seq <= s.state.last_seq {
                    continue;
                }
                if c.record.seq != s.state.last_seq + 1 {
                    return Err(Error::Compacted {
                        shard: c.shard,
                        since: s.state.last_seq,
                        available_from: c.record.seq,
                    });
                }
                if let Op::Enroll { template_id, .. } = &c.record.op {
                    self.next_id.fetch_max(template_id + 1, Ordering::SeqCst);
                }
                s.wal.write(std::slice::from_ref(&c.record))?;
                s.state.apply(&c.record)?;
                c.record.seq
            };
            read_lock(shard).wal.commit(seq)?;
            applied += 1;
        }
        Ok(applied)
    }

    /// Verify the manifest, every snapshot's checksum, every log record's checksum, and that each
    /// shard's matrix, template table and subjects agree (and that subjects sit on the shard the
    /// router assigns).
    pub fn check(&self) -> Result<CheckReport> {
        let mut problems = Vec::new();
        let path = self.dir.join("manifest.json");
        match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        {
            Some(m) if m == self.manifest => {}
            _ => {
                problems.push("manifest.json is unreadable or differs from the open gallery".into())
            }
        }
        let (mut subjects, mut templates) = (0, 0);
        for (i, s) in self.shards.iter().enumerate() {
            let s = read_lock(s);
            let snap = Shard::snapshot_path(&s.dir);
            if let Ok(bytes) = std::fs::read(&snap) {
                if let Err(e) =
                    crate::shard::verify_snapshot(&bytes, &snap, self.manifest.dimension)
                {
                    problems.push(format!("shard {i}: {e}"));
                }
            }
            let (_, report) = crate::wal::Wal::read_all(s.wal.path())?;
            if let Some((at, why)) = report.stopped_at {
                problems.push(format!("shard {i}: log damaged at byte {at}: {why}"));
            }
            problems.extend(
                s.state
                    .problems()
                    .into_iter()
                    .map(|p| format!("shard {i}: {p}")),
            );
            for name in s.state.subjects.keys() {
                if self.router.shard_of(name) != i {
                    problems.push(format!(
                        "shard {i}: subject {name} belongs on another shard"
                    ));
                }
            }
            subjects += s.state.subjects.len();
            templates += s.state.template_count();
        }
        Ok(CheckReport {
            shards: self.shards.len(),
            subjects,
            templates,
            problems,
        })
    }

    /// Move up to `max_per_shard` pending templates of each shard into its HNSW graph; returns
    /// how many were indexed. Until then they are found by exact scan, so enrollment never
    /// waits for the graph: a host calls this from a background thread (see
    /// [`Gallery::pending`]). Searches continue while it runs.
    pub fn index_pending(&self, max_per_shard: usize) -> Result<usize> {
        let _one_indexer = self.indexing.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0;
        for shard in &self.shards {
            let batch = write_lock(shard).state.take_pending(max_per_shard)?;
            if batch.is_empty() {
                continue;
            }
            {
                let s = read_lock(shard);
                for (id, v) in &batch {
                    s.state.hnsw.add(*id, v)?;
                }
            }
            let ids: Vec<u64> = batch.iter().map(|b| b.0).collect();
            write_lock(shard).state.finish_indexing(&ids)?;
            done += ids.len();
        }
        Ok(done)
    }

    /// Templates enrolled but not yet in a graph.
    pub fn pending(&self) -> usize {
        self.shards
            .iter()
            .map(|s| read_lock(s).state.pending.len())
            .sum()
    }

    /// Make every log durable now (for `Async` and `Group` modes).
    pub fn flush(&self) -> Result<()> {
        for s in &self.shards {
            read_lock(s).wal.flush()?;
        }
        Ok(())
    }
}

/// Merge candidates gathered from several shards (local or remote): best distance per subject,
/// best first, at most `k`.
pub fn merge_candidates(found: &mut Vec<Candidate>, k: usize) -> Vec<Candidate> {
    found.sort_by(|a, b| {
        a.distance
            .total_cmp(&b.distance)
            .then_with(|| a.subject.cmp(&b.subject))
    });
    let mut seen = std::collections::HashSet::new();
    found
        .drain(..)
        .filter(|c| seen.insert(c.subject.clone()))
        .take(k)
        .collect()
}
