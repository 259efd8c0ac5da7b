//! One shard of a gallery: its templates in memory (a contiguous matrix for exact scoring),
//! its write-ahead log, and its snapshot file.
//!
//! Snapshot layout (little-endian): magic `UFGS`, `u16` version 2, `u64` last sequence number
//! covered, `u64` highest template id ever enrolled, `u32` dimension, `u32` subject count, then per subject: name (`u32` + UTF-8),
//! metadata (`u32` + bytes), `u32` template count, per template `u64` id + `dim` f32 values;
//! finally the CRC-32C of everything before it. An encrypted gallery's snapshot is version 3:
//! after each subject's name comes its block (metadata, template count, templates) as one
//! sealed envelope (`u32` + bytes) instead of in the clear, and after the last subject the
//! sealed index of the subjects (`u32` + envelope, see `keys`). Written to a temporary file,
//! synced, renamed over the old one, and the directory synced.
//!
//! A shard directory always holds `wal.log` (written at creation, replaced at each
//! checkpoint) and, once a checkpoint has run, `templates.snap`; the log's header names the
//! sequence number its snapshot covers, so a missing or older snapshot is detected rather than
//! read as an empty shard.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use uniface_core::compare::{Metric, Neighbor, TemplateMatrix};
use uniface_core::template::{crc32c, ElementType};

use zeroize::Zeroizing;

use crate::hnsw::{GraphStatus, Hnsw};
use crate::keys::{KeyChanges, KeyLogReport, KeyRing, Opened, SnapshotIndex};
use crate::storage::{LockGuard, Storage};
use crate::wal::{self, Durability, LogContents, Op, Record, TornTail, Wal};
use crate::{Error, HnswParams, Result};
use uniface_core::crypto::Key;

/// Shards with at most this many templates are searched by exact scan; larger ones through the
/// HNSW graph plus an exact scan of the templates not yet in it. The crossover, measured by
/// `uniface bench gallery` on one core: an exact scan costs 30 µs at 4,000 templates, as much
/// as the graph path (i8 graph, ef 64, f32 re-scoring); at 16,000 it costs 119 µs against
/// 44 µs. Below the limit the exact scan is as fast and has perfect recall.
pub const EXACT_SCAN_LIMIT: usize = 4_096;

const SNAP_MAGIC: [u8; 4] = *b"UFGS";
const SNAP_VERSION: u16 = 2;
/// An encrypted gallery's snapshot: each subject's block sealed (see `keys`).
const SNAP_VERSION_SEALED: u16 = 3;

/// Hashes template ids (already unique integers) with one multiplication instead of SipHash:
/// the id lookups of every search candidate are on the query path.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;

/// A subject's entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subject {
    pub templates: Vec<u64>,
    pub metadata: Vec<u8>,
}

struct Entry {
    subject: String,
    row: usize,
    vector: Vec<f32>,
}

/// Templates with their vectors, to be inserted into a graph.
pub(crate) type Batch = Vec<(u64, Vec<f32>)>;

/// In-memory state of a shard (everything but the log).
pub(crate) struct State {
    pub(crate) dim: usize,
    pub(crate) subjects: BTreeMap<String, Subject>,
    templates: IdMap<Entry>,
    /// Row → template id.
    rows: Vec<u64>,
    matrix: TemplateMatrix,
    pub(crate) last_seq: u64,
    /// The graph, and the templates enrolled but not yet in it (scanned exactly).
    pub(crate) hnsw: Hnsw,
    /// Ordered, so that the indexer takes the oldest first.
    pub(crate) pending: BTreeSet<u64>,
    /// Templates removed from the graph since it was built (usearch keeps their bytes).
    tombstones: usize,
    /// The highest template id ever enrolled here (kept in the snapshot, so that ids of
    /// removed templates are never handed out again).
    pub(crate) max_id: u64,
}

impl State {
    pub(crate) fn new(dim: usize, element: ElementType, hnsw: Hnsw) -> Self {
        Self {
            dim,
            subjects: BTreeMap::new(),
            templates: IdMap::default(),
            rows: Vec::new(),
            matrix: TemplateMatrix::new(dim, element),
            last_seq: 0,
            hnsw,
            pending: Default::default(),
            tombstones: 0,
            max_id: 0,
        }
    }

    /// Start a new, empty graph with every template pending (the old graph's file keeps the
    /// bytes of removed templates, so erasure must not write it again).
    pub(crate) fn reset_graph(&mut self, params: &HnswParams) -> Result<()> {
        self.hnsw = Hnsw::new(params)?;
        self.pending = self.templates.keys().copied().collect();
        self.tombstones = 0;
        Ok(())
    }

    pub(crate) fn template_count(&self) -> usize {
        self.templates.len()
    }

    pub(crate) fn template_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.templates.keys().copied()
    }

    /// The highest template id ever enrolled (removed ones included).
    pub(crate) fn max_template_id(&self) -> Option<u64> {
        self.templates.keys().copied().max().max(Some(self.max_id))
    }

    pub(crate) fn contains_template(&self, id: u64) -> bool {
        self.templates.contains_key(&id)
    }

    /// A template's subject and f32 vector.
    pub(crate) fn entry(&self, id: u64) -> Option<(&str, &[f32])> {
        self.templates
            .get(&id)
            .map(|e| (e.subject.as_str(), e.vector.as_slice()))
    }

    pub(crate) fn vector(&self, id: u64) -> Option<&[f32]> {
        self.templates.get(&id).map(|e| e.vector.as_slice())
    }

    /// Take `id` out of the graph if it holds it (whether or not it is also pending: a graph
    /// saved after enrollments that the log replays holds them). The graph is derived data: if
    /// usearch fails, it is dropped (every template pending) instead of failing the change.
    fn unindex(&mut self, id: u64) {
        self.pending.remove(&id);
        if self.hnsw.contains(id) {
            self.tombstones += 1;
            if self.hnsw.remove(id).is_err() {
                let params = *self.hnsw.params();
                if let Ok(fresh) = Hnsw::new(&params) {
                    self.hnsw = fresh;
                    self.pending = self.templates.keys().copied().collect();
                }
            }
        }
    }

    fn remove_row(&mut self, id: u64) -> Result<()> {
        let Some(e) = self.templates.remove(&id) else {
            return Ok(());
        };
        self.unindex(id);
        if let Some(moved_from) = self.matrix.swap_remove(e.row) {
            self.rows.swap_remove(e.row);
            if moved_from != e.row {
                let moved = self.rows[e.row];
                if let Some(m) = self.templates.get_mut(&moved) {
                    m.row = e.row;
                }
            }
        }
        if let Some(s) = self.subjects.get_mut(&e.subject) {
            s.templates.retain(|&t| t != id);
            if s.templates.is_empty() && s.metadata.is_empty() {
                self.subjects.remove(&e.subject);
            }
        }
        Ok(())
    }

    /// Apply one logged change (replay and live writes go through here).
    pub(crate) fn apply(&mut self, rec: &Record) -> Result<()> {
        match &rec.op {
            Op::Enroll {
                subject,
                template_id,
                vector,
            } => {
                if vector.len() != self.dim {
                    return Err(Error::Dimension {
                        expected: self.dim,
                        got: vector.len(),
                    });
                }
                self.remove_row(*template_id)?;
                let row = self.matrix.push(vector)?;
                self.max_id = self.max_id.max(*template_id);
                self.pending.insert(*template_id);
                self.rows.push(*template_id);
                self.templates.insert(
                    *template_id,
                    Entry {
                        subject: subject.clone(),
                        row,
                        vector: vector.clone(),
                    },
                );
                self.subjects
                    .entry(subject.clone())
                    .or_default()
                    .templates
                    .push(*template_id);
            }
            Op::RemoveTemplate { template_id } => self.remove_row(*template_id)?,
            Op::RemoveSubject { subject } => {
                if let Some(s) = self.subjects.remove(subject) {
                    for id in s.templates {
                        self.remove_row(id)?;
                    }
                }
            }
            Op::SetMetadata { subject, metadata } => {
                let s = self.subjects.entry(subject.clone()).or_default();
                s.metadata = metadata.clone();
                // a subject with neither templates nor metadata is not kept (as a snapshot
                // would not keep it)
                if s.metadata.is_empty() && s.templates.is_empty() {
                    self.subjects.remove(subject);
                }
            }
            Op::SealedEnroll { .. } | Op::SealedMetadata { .. } => {
                return Err(Error::Invalid {
                    what: "record",
                    message: format!(
                        "record {} is sealed: it is opened before it is applied",
                        rec.seq
                    ),
                })
            }
        }
        self.last_seq = self.last_seq.max(rec.seq);
        Ok(())
    }

    /// Internal consistency: matrix rows, the template table and the subjects agree.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.matrix.len() != self.templates.len() || self.rows.len() != self.templates.len() {
            p.push(format!(
                "{} matrix rows, {} row ids, {} templates",
                self.matrix.len(),
                self.rows.len(),
                self.templates.len()
            ));
        }
        for (row, id) in self.rows.iter().enumerate() {
            match self.templates.get(id) {
                Some(e) if e.row == row => {}
                _ => p.push(format!("row {row} points at template {id} inconsistently")),
            }
        }
        let listed: usize = self.subjects.values().map(|s| s.templates.len()).sum();
        if listed != self.templates.len() {
            p.push(format!(
                "subjects list {listed} templates, the table has {}",
                self.templates.len()
            ));
        }
        for (id, e) in &self.templates {
            if !self
                .subjects
                .get(&e.subject)
                .is_some_and(|s| s.templates.contains(id))
            {
                p.push(format!("template {id} is not listed under {}", e.subject));
            }
        }
        p
    }

    /// Candidates for the `k` nearest templates: (template id, approximate distance). An exact
    /// scan for small shards; otherwise the graph plus an exact scan of the pending templates.
    pub(crate) fn nearest(
        &self,
        probe: &[f32],
        metric: Metric,
        k: usize,
    ) -> Result<Vec<(u64, f32)>> {
        if self.templates.len() <= EXACT_SCAN_LIMIT || self.hnsw.len() == 0 {
            let found: Vec<Neighbor> = self.matrix.nearest(probe, metric, k)?;
            return Ok(found
                .into_iter()
                .map(|n| (self.rows[n.index], n.distance))
                .collect());
        }
        // (ids no longer enrolled, which a graph restored from an older checkpoint can hold,
        // are dropped by the caller's look-up of each candidate's f32 vector)
        let none_pending = self.pending.is_empty();
        let mut out = self
            .hnsw
            .search(probe, k, |id| none_pending || !self.pending.contains(&id))?;
        if !none_pending {
            for id in &self.pending {
                if let Some(e) = self.templates.get(id) {
                    out.push((
                        *id,
                        uniface_core::compare::distance(metric, probe, &e.vector)?,
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.1.total_cmp(&b.1));
        out.truncate(k.max(1) * 2);
        Ok(out)
    }

    /// Up to `max` pending templates with their vectors, after making room for them in the
    /// graph (exclusive access).
    pub(crate) fn take_pending(&mut self, max: usize) -> Result<(u64, Batch)> {
        // oldest first: the graph's nodes then lie in enrollment order, so a subject's
        // templates (usually enrolled together) are neighbours in memory as well
        let batch: Vec<(u64, Vec<f32>)> = self
            .pending
            .iter()
            .take(max)
            .filter_map(|id| self.templates.get(id).map(|e| (*id, e.vector.clone())))
            .collect();
        self.hnsw.reserve(batch.len())?;
        Ok((self.hnsw.generation(), batch))
    }

    /// Every template with its vector (a rebuild's input).
    pub(crate) fn all_vectors(&self) -> Vec<(u64, Vec<f32>)> {
        let mut all: Vec<(u64, Vec<f32>)> = self
            .templates
            .iter()
            .map(|(id, e)| (*id, e.vector.clone()))
            .collect();
        all.sort_unstable_by_key(|a| a.0);
        all
    }

    /// Replace the graph with one built from `ids`: what was removed meanwhile comes out of
    /// it, what was enrolled meanwhile is pending (exclusive access).
    pub(crate) fn install_graph(&mut self, mut graph: Hnsw, ids: &[u64]) -> Result<()> {
        let mut tombstones = 0;
        for id in ids {
            if !self.templates.contains_key(id) {
                graph.remove(*id)?;
                tombstones += 1;
            }
        }
        let built: IdSet = ids.iter().copied().collect();
        self.pending = self
            .templates
            .keys()
            .copied()
            .filter(|id| !built.contains(id))
            .collect();
        self.hnsw = graph;
        self.tombstones = tombstones;
        Ok(())
    }

    /// After a batch was added to the graph: mark what is still enrolled as indexed, and take
    /// out of the graph what was removed in the meantime.
    pub(crate) fn finish_indexing(&mut self, ids: &[u64]) -> Result<()> {
        for id in ids {
            if !self.pending.remove(id) && !self.templates.contains_key(id) {
                // removed while it was being inserted: out again, and the graph's file must
                // not be saved with its bytes
                self.unindex(*id);
            }
        }
        Ok(())
    }

    /// After a saved graph was loaded and the log replayed: what the graph holds is indexed;
    /// ids it holds that are no longer enrolled count as tombstones (so the graph is not saved
    /// again with their bytes).
    pub(crate) fn settle_graph(&mut self) {
        let indexed: Vec<u64> = self
            .pending
            .iter()
            .copied()
            .filter(|id| self.hnsw.contains(*id))
            .collect();
        for id in &indexed {
            self.pending.remove(id);
        }
        let held = self.templates.len() - self.pending.len();
        self.tombstones += self.hnsw.len().saturating_sub(held);
    }

    /// A subject's block of the snapshot: metadata, then its templates (id and values).
    fn subject_block(&self, s: &Subject) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            8 + s.metadata.len() + s.templates.len() * (8 + 4 * self.dim),
        ));
        out.extend_from_slice(&(s.metadata.len() as u32).to_le_bytes());
        out.extend_from_slice(&s.metadata);
        out.extend_from_slice(&(s.templates.len() as u32).to_le_bytes());
        for id in &s.templates {
            out.extend_from_slice(&id.to_le_bytes());
            if let Some(e) = self.templates.get(id) {
                e.vector
                    .iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
        }
        out
    }

    /// The snapshot file's bytes; with `keys`, each subject's block is sealed under its key
    /// (which must exist: [`KeyRing::ensure`]).
    pub(crate) fn snapshot_bytes(&self, keys: Option<&KeyRing>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(&SNAP_MAGIC);
        let version = match keys {
            Some(_) => SNAP_VERSION_SEALED,
            None => SNAP_VERSION,
        };
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&self.last_seq.to_le_bytes());
        out.extend_from_slice(&self.max_template_id().unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.subjects.len() as u32).to_le_bytes());
        let mut index = SnapshotIndex::new();
        for (name, s) in &self.subjects {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            let block = self.subject_block(s);
            match keys {
                Some(k) => {
                    let sealed = k.seal_block(self.last_seq, name, &block)?;
                    index.push(name, &sealed);
                    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
                    out.extend_from_slice(&sealed);
                }
                None => out.extend_from_slice(&block),
            }
        }
        if let Some(k) = keys {
            // the list of subjects, sealed: no block can be dropped or added unseen
            let sealed = k.seal_index(self.last_seq, &index)?;
            out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
            out.extend_from_slice(&sealed);
        }
        let crc = crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Rebuild a state from snapshot bytes (of a shard of dimension `expected_dim`); an
    /// encrypted gallery's snapshot needs its shard's `keys`. Subjects whose key an erasure
    /// destroyed are skipped and returned (the log must hold their removal).
    pub(crate) fn from_snapshot(
        bytes: &[u8],
        expected_dim: usize,
        element: ElementType,
        path: &Path,
        hnsw: Hnsw,
        mut keys: Option<&mut KeyRing>,
    ) -> Result<(Self, Vec<String>)> {
        let bad = |m: &str| Error::Corrupt {
            path: path.to_owned(),
            message: m.to_owned(),
        };
        if bytes.len() < 34 || bytes[..4] != SNAP_MAGIC {
            return Err(bad("not a shard snapshot"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        if crc32c(body) != u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) {
            return Err(bad("checksum mismatch"));
        }
        let mut r = SnapReader { b: body, at: 4 };
        let version = u16::from_le_bytes(
            r.take(2)
                .ok_or_else(|| bad("header"))?
                .try_into()
                .map_err(|_| bad("header"))?,
        );
        match (version, keys.is_some()) {
            (SNAP_VERSION, false) | (SNAP_VERSION_SEALED, true) => {}
            (SNAP_VERSION, true) => {
                return Err(bad(
                    "the snapshot of an encrypted gallery is in the clear (a file from another gallery?)",
                ))
            }
            (SNAP_VERSION_SEALED, false) => {
                return Err(bad("the snapshot is encrypted but the gallery is not"))
            }
            _ => return Err(bad("unsupported snapshot version")),
        }
        let last_seq = r.u64().ok_or_else(|| bad("header"))?;
        let max_id = r.u64().ok_or_else(|| bad("header"))?;
        let dim = r.u32().ok_or_else(|| bad("header"))?;
        if dim != expected_dim {
            return Err(bad(&format!(
                "dimension {dim}, the manifest says {expected_dim}"
            )));
        }
        let subjects = r.u32().ok_or_else(|| bad("header"))?;
        let mut state = State::new(dim, element, hnsw);
        let mut index = SnapshotIndex::new();
        let mut erased = Vec::new();
        for _ in 0..subjects {
            let name = r
                .bytes()
                .and_then(|b| String::from_utf8(b.to_vec()).ok())
                .ok_or_else(|| bad("subject name"))?;
            let plain;
            let block: &[u8] = match keys.as_deref_mut() {
                Some(k) => {
                    let sealed = r.bytes().ok_or_else(|| bad("truncated"))?;
                    index.push(&name, sealed);
                    match k.open_block(path, last_seq, &name, sealed)? {
                        Some(p) => {
                            plain = p;
                            &plain
                        }
                        None => {
                            erased.push(name);
                            continue;
                        }
                    }
                }
                None => r.block(dim).ok_or_else(|| bad("truncated"))?,
            };
            state.apply_block(&name, block, path)?;
        }
        if let Some(k) = keys.as_deref() {
            let sealed = r
                .bytes()
                .ok_or_else(|| bad("the sealed index is missing"))?;
            k.check_index(path, last_seq, &index, sealed)?;
        }
        if r.at != body.len() {
            return Err(bad("trailing bytes"));
        }
        state.last_seq = last_seq;
        state.max_id = state.max_id.max(max_id);
        Ok((state, erased))
    }

    /// Apply one subject's snapshot block.
    fn apply_block(&mut self, name: &str, block: &[u8], path: &Path) -> Result<()> {
        let bad = |m: &str| Error::Corrupt {
            path: path.to_owned(),
            message: m.to_owned(),
        };
        let dim = self.dim;
        let mut r = SnapReader { b: block, at: 0 };
        let metadata = r.bytes().ok_or_else(|| bad("truncated"))?.to_vec();
        let t = r.u32().ok_or_else(|| bad("truncated"))?;
        if !metadata.is_empty() {
            self.subjects.entry(name.to_owned()).or_default().metadata = metadata;
        }
        for _ in 0..t {
            let id = r.u64().ok_or_else(|| bad("id"))?;
            let raw = r.take(dim * 4).ok_or_else(|| bad("truncated"))?;
            let vector: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let op = Op::Enroll {
                subject: name.to_owned(),
                template_id: id,
                vector,
            };
            validate(&op, dim).map_err(|e| bad(&e.to_string()))?;
            self.apply(&Record { seq: 0, op })?;
        }
        if r.at != block.len() {
            return Err(bad("a subject's block has trailing bytes"));
        }
        Ok(())
    }
}

/// Reads a snapshot's fields.
struct SnapReader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> SnapReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(n)
    }
    /// A plain subject block (metadata, count, templates) of dimension `dim`, whole.
    fn block(&mut self, dim: usize) -> Option<&'a [u8]> {
        let start = self.at;
        self.bytes()?;
        let t = self.u32()?;
        self.take(t.checked_mul(8 + 4 * dim)?)?;
        self.b.get(start..self.at)
    }
}

/// Largest component magnitude of a stored template. Descriptors of the supported models lie
/// well inside ±1 (dlib's within ±0.5); the bound keeps every squared distance finite in f32
/// and every value inside f16's range, so an accepted template can always be searched.
pub const MAX_COMPONENT: f32 = 1024.0;
/// Longest subject id, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 1024;
/// Largest metadata of a subject, in bytes.
pub const MAX_METADATA_BYTES: usize = 1 << 20;

/// Refuse a change that could not be applied, or would make the shard unsearchable, before it
/// is logged: every logged record applies.
pub(crate) fn validate(op: &Op, dim: usize) -> Result<()> {
    let subject_ok = |s: &str| {
        if s.is_empty() {
            Err(Error::InvalidSubject)
        } else if s.len() > MAX_SUBJECT_BYTES {
            Err(Error::Invalid {
                what: "subject",
                message: format!("{} bytes, at most {MAX_SUBJECT_BYTES}", s.len()),
            })
        } else {
            Ok(())
        }
    };
    match op {
        Op::Enroll {
            subject, vector, ..
        } => {
            subject_ok(subject)?;
            if vector.len() != dim {
                return Err(Error::Dimension {
                    expected: dim,
                    got: vector.len(),
                });
            }
            if let Some(i) = vector
                .iter()
                .position(|v| !v.is_finite() || v.abs() > MAX_COMPONENT)
            {
                return Err(Error::Invalid {
                    what: "template",
                    message: format!(
                        "value {i} is {}: template values must be finite and within ±{MAX_COMPONENT}",
                        vector[i]
                    ),
                });
            }
            Ok(())
        }
        Op::RemoveSubject { subject } => subject_ok(subject),
        Op::SealedEnroll { .. } | Op::SealedMetadata { .. } => Err(Error::Invalid {
            what: "record",
            message: "sealed records belong to an encrypted gallery's own log; feed the plain changes of `changes_since`".into(),
        }),
        Op::SetMetadata { subject, metadata } => {
            subject_ok(subject)?;
            if metadata.len() > MAX_METADATA_BYTES {
                return Err(Error::Invalid {
                    what: "metadata",
                    message: format!("{} bytes, at most {MAX_METADATA_BYTES}", metadata.len()),
                });
            }
            Ok(())
        }
        Op::RemoveTemplate { .. } => Ok(()),
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source: e,
    }
}

/// Write `bytes` to `path` atomically and durably (temporary file, synced, renamed, directory
/// synced); the temporary file is removed if a step fails.
pub(crate) fn atomic_write(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(storage, path, bytes).map_err(|e| *e.error)
}

/// A failed [`replace_file`]; `renamed`: the new file is in place (only the directory's sync
/// failed), so it is what the path holds now.
pub(crate) struct ReplaceError {
    pub renamed: bool,
    pub error: Box<Error>,
}

/// [`atomic_write`], telling a failure before the rename from one after it.
pub(crate) fn replace_file(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
) -> std::result::Result<(), ReplaceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    if let Err(e) = storage
        .write_synced(&tmp, bytes)
        .and_then(|()| storage.rename(&tmp, path))
    {
        let _ = storage.remove(&tmp);
        return Err(ReplaceError {
            renamed: false,
            error: Box::new(io(path, e)),
        });
    }
    storage.sync_dir(dir).map_err(|e| ReplaceError {
        renamed: true,
        error: Box::new(io(dir, e)),
    })
}

/// Temporary files a shard's writes can leave behind when interrupted.
pub(crate) const TEMPORARY_FILES: [&str; 6] = [
    "templates.tmp",
    "keys.tmp",
    "hnsw.tmp",
    "hnsw.sum-tmp",
    "wal.tmp",
    "LOCK.tmp",
];

/// How to open a shard.
#[derive(Debug, Clone)]
pub(crate) struct ShardOptions {
    pub durability: Durability,
    pub view: bool,
    pub read_only: bool,
    pub salvage: bool,
    pub lock_timeout: Option<std::time::Duration>,
    /// An encrypted gallery's key-encryption key.
    pub kek: Option<Key>,
    /// The key-encryption key before an interrupted rotation.
    pub previous_kek: Option<Key>,
}

/// What opening one shard found and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardReport {
    pub shard: usize,
    /// The sequence number the snapshot covers (0 without one).
    pub snapshot_seq: u64,
    /// Log records applied after the snapshot.
    pub records_replayed: usize,
    /// The last sequence number applied.
    pub last_seq: u64,
    /// An append that never finished (never acknowledged): cut off by a writer, ignored by a
    /// read-only open (a writer may be in the middle of it).
    pub torn_tail: Option<TornTail>,
    /// Where a writer kept the bytes it cut off.
    pub tail_saved_to: Option<PathBuf>,
    /// With `salvage`: the damage that the log was cut at (what followed it may have been
    /// acknowledged).
    pub salvaged: Option<String>,
    /// Interrupted writes' temporary files that a writer removed.
    pub removed_temporary: Vec<PathBuf>,
    /// The saved search graph.
    pub graph: GraphStatus,
    /// Encrypted galleries: where a writer cut a torn append off the key log (it held no key
    /// in use).
    pub key_log_torn_tail: Option<u64>,
    /// Encrypted galleries: where a writer kept the torn append it cut off the key log.
    pub key_log_tail_saved_to: Option<PathBuf>,
    /// Encrypted galleries: subject keys a writer destroyed because nothing live was sealed
    /// under them (a removal whose erasure was interrupted). Unused spare keys, destroyed at
    /// every writer's open, are not counted.
    pub keys_destroyed: usize,
    /// Encrypted galleries: subjects whose records or snapshot block are sealed under a key
    /// an erasure destroyed, with no removal of them in the log: a key log newer than the data
    /// (a backup restored with the current key log: these subjects were removed since), or
    /// altered files. They are left out.
    pub erased_without_removal: Vec<String>,
    /// Encrypted galleries: the key log was re-wrapped from the previous key-encryption key
    /// (an interrupted rotation finished).
    pub keys_rewrapped: bool,
}

impl ShardReport {
    /// Whether opening found nothing to recover or report.
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none()
            && self.key_log_torn_tail.is_none()
            && self.keys_destroyed == 0
            && self.erased_without_removal.is_empty()
            && !self.keys_rewrapped
            && self.salvaged.is_none()
            && self.removed_temporary.is_empty()
            && !matches!(self.graph, GraphStatus::Dropped { .. })
    }

    /// One line per finding, naming the files.
    pub fn messages(&self, dir: &Path) -> Vec<String> {
        let mut m = Vec::new();
        let log = Shard::wal_path(dir);
        if let (Some(t), Some(_)) = (&self.torn_tail, &self.salvaged) {
            m.push(format!(
                "shard {}: {}: SALVAGED: kept {} records; the {} bytes from byte {} on, which may hold acknowledged records, were cut off{}",
                self.shard,
                log.display(),
                self.records_replayed,
                t.bytes,
                t.offset,
                self.tail_saved_to
                    .as_ref()
                    .map(|p| format!(" and kept in {}", p.display()))
                    .unwrap_or_default()
            ));
        } else if let Some(t) = &self.torn_tail {
            let what = match &self.tail_saved_to {
                Some(p) => format!("cut off and kept in {}", p.display()),
                None => "ignored (read-only open)".into(),
            };
            m.push(format!(
                "shard {}: {}: an unfinished append of {} bytes at byte {} ({}), never acknowledged, was {what}",
                self.shard,
                log.display(),
                t.bytes,
                t.offset,
                t.reason
            ));
        }
        for p in &self.removed_temporary {
            m.push(format!(
                "shard {}: removed {} left by an interrupted write",
                self.shard,
                p.display()
            ));
        }
        if let GraphStatus::Dropped { reason } = &self.graph {
            m.push(format!(
                "shard {}: the saved graph {} was not used ({reason}); its templates are searched exactly until re-indexed",
                self.shard,
                Shard::hnsw_path(dir).display()
            ));
        }
        let keys = KeyRing::path_in(dir);
        if let Some(at) = self.key_log_torn_tail {
            let what = match &self.key_log_tail_saved_to {
                Some(p) => format!("cut off and kept in {}", p.display()),
                None => "ignored (read-only open)".into(),
            };
            m.push(format!(
                "shard {}: {}: an unfinished append at byte {at} (keys never used) was {what}",
                self.shard,
                keys.display()
            ));
        }
        if !self.erased_without_removal.is_empty() {
            m.push(format!(
                "shard {}: {} subject(s) are sealed under keys an erasure destroyed but this log holds no removal of them (a backup opened with a newer key log, or altered files); left out: {}",
                self.shard,
                self.erased_without_removal.len(),
                self.erased_without_removal.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if self.keys_destroyed > 0 {
            m.push(format!(
                "shard {}: {}: destroyed {} keys that nothing live was sealed under (finishing an interrupted erasure, or unused)",
                self.shard,
                keys.display(),
                self.keys_destroyed
            ));
        }
        if self.keys_rewrapped {
            m.push(format!(
                "shard {}: {}: re-wrapped under the current key-encryption key (an interrupted rotation finished)",
                self.shard,
                keys.display()
            ));
        }
        m
    }
}

/// Who holds a writer's lock: written into the lock file for the next one to read.
pub(crate) fn lock_holder() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "?".into());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "pid {} ({exe}), since unix time {since}",
        std::process::id()
    )
}

/// Take the writer's lock of a shard directory, waiting up to `timeout` for it.
fn take_lock(
    storage: &dyn Storage,
    dir: &Path,
    timeout: Option<std::time::Duration>,
) -> Result<Box<dyn LockGuard>> {
    let path = dir.join("LOCK");
    let holder = lock_holder();
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        match storage.try_lock(&path, &holder).map_err(|e| io(&path, e))? {
            Ok(guard) => return Ok(guard),
            Err(other) => {
                if deadline.is_none_or(|d| std::time::Instant::now() >= d) {
                    return Err(Error::Locked {
                        path,
                        holder: other,
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A name for the cut-off tail of `log` that is not taken yet.
pub(crate) fn corrupt_name(storage: &dyn Storage, log: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", log.display());
    let mut name = PathBuf::from(&base);
    let mut n = 1;
    while storage.exists(&name).unwrap_or(false) {
        name = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    name
}

/// A shard's files as read together: the snapshot (if any), the log's bytes and what they
/// parse to, and the damage a salvage cut off.
struct ShardFiles {
    snapshot: Option<Vec<u8>>,
    bytes: Vec<u8>,
    contents: LogContents,
    salvaged: Option<String>,
}

/// A shard: state behind the gallery's lock, plus its log.
pub(crate) struct Shard {
    pub(crate) dir: PathBuf,
    storage: Arc<dyn Storage>,
    /// Shared so that writers can wait for durability without holding the shard lock; `None`
    /// for a read-only open.
    wal: Option<Arc<Wal>>,
    pub(crate) state: State,
    /// An encrypted gallery's keys.
    pub(crate) keys: Option<KeyRing>,
    /// The writer's lock, held while the shard is open for writing.
    _lock: Option<Box<dyn LockGuard>>,
}

impl Shard {
    pub(crate) fn snapshot_path(dir: &Path) -> PathBuf {
        dir.join("templates.snap")
    }

    pub(crate) fn wal_path(dir: &Path) -> PathBuf {
        dir.join("wal.log")
    }

    pub(crate) fn hnsw_path(dir: &Path) -> PathBuf {
        dir.join("hnsw.usearch")
    }

    /// Make the files of a new, empty shard (the caller syncs the gallery directory); with
    /// `kek`, an empty key log wrapped under it.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        index: usize,
        kek: Option<&Key>,
    ) -> Result<()> {
        storage.create_dir(dir).map_err(|e| io(dir, e))?;
        if let Some(kek) = kek {
            KeyRing::create(storage, dir, index, kek)?;
        }
        wal::write_empty(storage, &Self::wal_path(dir), 0)?;
        storage.sync_dir(dir).map_err(|e| io(dir, e))
    }

    /// The log, unless the shard was opened read-only.
    pub(crate) fn wal(&self) -> Result<&Arc<Wal>> {
        self.wal.as_ref().ok_or(Error::ReadOnly)
    }

    /// Read the snapshot and the log as one consistent pair: a read-only reader may see a
    /// writer's checkpoint replace them between its two reads, and then reads again.
    fn read_files(storage: &dyn Storage, dir: &Path, options: &ShardOptions) -> Result<ShardFiles> {
        let snap = Self::snapshot_path(dir);
        let log = Self::wal_path(dir);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let snapshot = match storage.read(&snap) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(&snap, e)),
            };
            let bytes = match storage.read(&log) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::Missing {
                        path: log,
                        what: "the shard's write-ahead log",
                    })
                }
                Err(e) => return Err(io(&log, e)),
            };
            let (contents, salvaged) = match wal::parse(&bytes, &log) {
                Ok(c) => (c, None),
                Err(Error::Corrupt { message, .. }) if options.salvage => {
                    let c = wal::parse_prefix(&bytes, &log)?;
                    (c, Some(message))
                }
                Err(e) => return Err(e),
            };
            let snapshot_seq = snapshot.as_deref().and_then(snapshot_seq).unwrap_or(0);
            if options.read_only && contents.base_seq > snapshot_seq && attempt < 10 {
                continue; // a checkpoint ran between the two reads
            }
            return Ok(ShardFiles {
                snapshot,
                bytes,
                contents,
                salvaged,
            });
        }
    }

    /// Open a shard directory: snapshot (if any), graph, then the log records after the
    /// snapshot. A writer takes the shard's lock, removes temporary files of interrupted
    /// writes and cuts off a torn tail (keeping it); a read-only open changes nothing.
    pub(crate) fn open(
        storage: &Arc<dyn Storage>,
        index: usize,
        dir: &Path,
        element: ElementType,
        params: &HnswParams,
        options: &ShardOptions,
    ) -> Result<(Self, ShardReport)> {
        let st: &dyn Storage = storage.as_ref();
        if !st.exists(dir).map_err(|e| io(dir, e))? {
            return Err(Error::Missing {
                path: dir.to_owned(),
                what: "a shard folder",
            });
        }
        let lock = match options.read_only {
            true => None,
            false => Some(take_lock(st, dir, options.lock_timeout)?),
        };
        let mut removed_temporary = Vec::new();
        if !options.read_only {
            for name in TEMPORARY_FILES {
                let p = dir.join(name);
                if st.exists(&p).unwrap_or(false) {
                    st.remove(&p).map_err(|e| io(&p, e))?;
                    removed_temporary.push(p);
                }
            }
        }
        // the key log after the data (every key a record read was sealed under had been
        // appended before the record); a reader also before it, and reads again when a
        // writer's checkpoint or erasure changed the key log meanwhile
        let mut attempt = 0;
        let (files, key_bytes) = loop {
            attempt += 1;
            let before = match (&options.kek, options.read_only) {
                (Some(_), true) => Some(KeyRing::read_bytes(st, dir)?),
                _ => None,
            };
            let files = Self::read_files(st, dir, options)?;
            let key_bytes = match &options.kek {
                Some(_) => Some(KeyRing::read_bytes(st, dir)?),
                None => None,
            };
            if before.is_some() && before != key_bytes && attempt < 10 {
                continue;
            }
            break (files, key_bytes);
        };
        let ShardFiles {
            snapshot,
            bytes,
            contents,
            salvaged,
        } = files;
        let snap_path = Self::snapshot_path(dir);
        let log_path = Self::wal_path(dir);
        let (mut keys, key_report): (Option<KeyRing>, KeyLogReport) =
            match (&options.kek, &key_bytes) {
                (Some(kek), Some(kb)) => {
                    let (ring, r) =
                        KeyRing::load(storage, dir, index, kb, kek, options.previous_kek.as_ref())?;
                    (Some(ring), r)
                }
                _ => {
                    if st.exists(&KeyRing::path_in(dir)).unwrap_or(false) {
                        return Err(Error::Corrupt {
                            path: KeyRing::path_in(dir),
                            message:
                                "a key log in a gallery whose manifest says it is not encrypted"
                                    .into(),
                        });
                    }
                    (None, Default::default())
                }
            };
        let (mut state, erased_in_snapshot) = match &snapshot {
            Some(b) => State::from_snapshot(
                b,
                params.dimensions,
                element,
                &snap_path,
                Hnsw::new(params)?,
                keys.as_mut(),
            )?,
            None => (
                State::new(params.dimensions, element, Hnsw::new(params)?),
                Vec::new(),
            ),
        };
        if contents.base_seq > state.last_seq {
            let message = match snapshot {
                None => format!(
                    "the log starts after sequence {} but there is no snapshot holding the changes up to it (templates.snap is missing)",
                    contents.base_seq
                ),
                Some(_) => format!(
                    "the log starts after sequence {} but the snapshot only covers up to {} (an older templates.snap)",
                    contents.base_seq, state.last_seq
                ),
            };
            return Err(Error::Corrupt {
                path: snap_path,
                message,
            });
        }
        // the graph saved with the snapshot: what it holds is indexed, the rest pending
        let opener = keys.as_ref().map(|k| move |b: &[u8]| k.open_graph(b));
        let (graph, graph_status) = Hnsw::load(
            st,
            &Self::hnsw_path(dir),
            params,
            options.view,
            opener.as_ref().map(|f| f as &crate::hnsw::Opener<'_>),
        )?;
        state.hnsw = graph;
        let snapshot_seq = state.last_seq;
        let mut replayed = 0;
        // the last removal of each subject in the log: what an erased record must precede
        let mut removal: HashMap<&str, u64> = HashMap::new();
        for rec in contents.records.iter().filter(|r| r.seq > snapshot_seq) {
            if let Op::RemoveSubject { subject } = &rec.op {
                removal.insert(subject, rec.seq);
            }
        }
        let mut unremoved: BTreeSet<String> = erased_in_snapshot
            .into_iter()
            .filter(|s| !removal.contains_key(s.as_str()))
            .collect();
        for rec in &contents.records {
            // records a checkpoint already folded into the snapshot are skipped
            if rec.seq <= snapshot_seq {
                continue;
            }
            let opened = match keys.as_ref() {
                Some(k) => k.open_op(&log_path, rec.seq, &rec.op)?,
                None => Opened::Op(rec.op.clone(), None),
            };
            match opened {
                Opened::Op(op, key) => {
                    let rec = Record { seq: rec.seq, op };
                    state.apply(&rec).map_err(|e| Error::Corrupt {
                        path: log_path.clone(),
                        message: format!("record {} cannot be applied: {e}", rec.seq),
                    })?;
                    if let Some(k) = keys.as_mut() {
                        k.track(&rec.op, key)?;
                    }
                }
                Opened::Erased => {
                    // sealed under a key an erasure destroyed: a removal of the subject
                    // follows in the log (else the key log is newer than this log: reported)
                    let subject = match &rec.op {
                        Op::SealedEnroll {
                            template_id,
                            subject,
                            ..
                        } => {
                            state.max_id = state.max_id.max(*template_id);
                            subject.as_str()
                        }
                        Op::SealedMetadata { subject, .. } => subject.as_str(),
                        _ => "",
                    };
                    if removal.get(subject).is_none_or(|&r| r < rec.seq) {
                        unremoved.insert(subject.to_owned());
                    }
                    state.last_seq = state.last_seq.max(rec.seq);
                }
            }
            replayed += 1;
        }
        // what the graph holds is indexed, the rest pending (ids are never reused, so a graph
        // saved after the log's enrollments holds exactly their vectors)
        state.settle_graph();
        let mut report = ShardReport {
            shard: index,
            snapshot_seq,
            records_replayed: replayed,
            last_seq: state.last_seq,
            torn_tail: contents.tail.clone(),
            tail_saved_to: None,
            salvaged: None,
            removed_temporary,
            graph: graph_status,
            key_log_torn_tail: key_report.torn_tail,
            key_log_tail_saved_to: None,
            keys_destroyed: 0,
            erased_without_removal: unremoved.into_iter().collect(),
            keys_rewrapped: key_report.rewrapped,
        };
        report.salvaged = salvaged;
        let wal = if options.read_only {
            None
        } else {
            if matches!(report.graph, GraphStatus::Dropped { .. }) {
                // derived data: the writer re-indexes from the templates
                Hnsw::remove_saved(st, &Self::hnsw_path(dir))?;
                st.sync_dir(dir).map_err(|e| io(dir, e))?;
            }
            let cut = contents.valid_len as usize;
            if cut < bytes.len() {
                let keep = corrupt_name(st, &log_path);
                st.write_synced(&keep, &bytes[cut..])
                    .and_then(|()| st.sync_dir(dir))
                    .map_err(|e| io(&keep, e))?;
                report.tail_saved_to = Some(keep);
            }
            // the log goes on in a new file holding the valid frames, written and synced now:
            // after an earlier `fsync` failure (in this process or a previous one) the kernel
            // may hold pages of the old file marked clean that never reached the disk, which
            // no later `fsync` would write; what was replayed is now durable for certain (and
            // a torn tail is left behind in the old file's bytes)
            let fresh = if contents.last_seq() < state.last_seq {
                // the snapshot covers more than the log holds (an `Async` log lost its end in a
                // power cut after a checkpoint): start the log after the snapshot
                wal::header(state.last_seq).to_vec()
            } else {
                bytes[..cut].to_vec()
            };
            let tmp = log_path.with_extension("tmp");
            st.write_synced(&tmp, &fresh)
                .and_then(|()| st.rename(&tmp, &log_path))
                .and_then(|()| st.sync_dir(dir))
                .map_err(|e| {
                    let _ = st.remove(&tmp);
                    io(&log_path, e)
                })?;
            if let (Some(k), Some(kb)) = (keys.as_mut(), &key_bytes) {
                report.key_log_tail_saved_to = k.finish_open(kb, &key_report)?;
                // (after a salvage the keys of the records cut off are kept: the operator may
                // still read them from the kept tail)
                if report.salvaged.is_some() {
                    k.withdraw_spares();
                } else {
                    let (n, graph) = k.destroy_unused()?;
                    report.keys_destroyed = n;
                    if graph {
                        Hnsw::remove_saved(st, &Self::hnsw_path(dir))?;
                        st.sync_dir(dir).map_err(|e| io(dir, e))?;
                    }
                }
            }
            let file = st.open_log(&log_path).map_err(|e| io(&log_path, e))?;
            Some(Arc::new(Wal::new(
                storage.clone(),
                &log_path,
                file,
                state.last_seq,
                options.durability,
            )))
        };
        Ok((
            Self {
                dir: dir.to_owned(),
                storage: storage.clone(),
                wal,
                state,
                keys,
                _lock: lock,
            },
            report,
        ))
    }

    /// Snapshot the state and the graph, then start an empty log. A graph that had templates
    /// removed is dropped (its saved files removed) and rebuilt by later `index_pending`
    /// calls, so that removed templates leave every file. (A crash between the steps leaves an
    /// older graph at worst: its removed ids are filtered out of searches and the ids it lacks
    /// are pending, i.e. scanned exactly, until indexed again.)
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        let wal = self.wal()?.clone();
        wal.flush()?;
        if let Some(k) = self.keys.as_mut() {
            let subjects = &self.state.subjects;
            k.forget_absent(|s| subjects.contains_key(s));
            k.ensure(subjects.keys().map(String::as_str))?;
        }
        let storage = self.storage.clone();
        let st = storage.as_ref();
        atomic_write(
            st,
            &Self::snapshot_path(&self.dir),
            &self.state.snapshot_bytes(self.keys.as_ref())?,
        )?;
        let graph = Self::hnsw_path(&self.dir);
        // removals since the last checkpoint: the graph key goes with the subjects' keys
        let retired = self.keys.as_mut().is_some_and(KeyRing::retire_graph_key);
        if self.state.tombstones > 0 {
            // removed templates must leave every file: drop the graph, re-index from the
            // snapshot's templates (pending meanwhile, so searches stay exact)
            let params = *self.state.hnsw.params();
            self.state.reset_graph(&params)?;
            Hnsw::remove_saved(st, &graph)?;
            st.sync_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        } else if self.state.hnsw.len() > 0 {
            self.write_graph()?;
        } else if retired {
            Hnsw::remove_saved(st, &graph)?;
            st.sync_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        }
        wal.restart(self.state.last_seq)?;
        // nothing sealed under a destroyed key is left in the log
        match self.keys.as_mut() {
            Some(k) => k.compact(),
            None => Ok(()),
        }
    }

    /// Save the graph (sealed under the graph key in an encrypted gallery).
    fn write_graph(&mut self) -> Result<()> {
        let path = Self::hnsw_path(&self.dir);
        let st = self.storage.as_ref();
        match self.keys.as_mut() {
            Some(k) => {
                let mut seal = |b: &[u8]| k.seal_graph(b);
                self.state.hnsw.save(st, &path, Some(&mut seal))
            }
            None => self.state.hnsw.save(st, &path, None),
        }
    }

    /// Records as this shard's log stores them (sealed, in an encrypted gallery, with the key
    /// changes to [`Shard::settle_keys`] once they are logged); `None` when they are stored as
    /// they are.
    pub(crate) fn seal_records(
        &mut self,
        records: &[Record],
    ) -> Result<Option<(Vec<Record>, KeyChanges)>> {
        match self.keys.as_mut() {
            Some(k) => k.seal_batch(records).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn settle_keys(&mut self, changes: Option<KeyChanges>) {
        if let (Some(k), Some(c)) = (self.keys.as_mut(), changes) {
            k.settle(c);
        }
    }

    /// Whether an encrypted shard holds a key for `subject` (which may be absent from the
    /// state: its last template removed by id).
    pub(crate) fn has_key_for(&self, subject: &str) -> bool {
        self.keys.as_ref().is_some_and(|k| k.has_subject(subject))
    }

    /// Whether removed subjects' keys wait to be destroyed ([`Shard::erase`]).
    pub(crate) fn erasure_pending(&self) -> bool {
        self.keys.as_ref().is_some_and(KeyRing::has_doomed)
    }

    /// Crypto-erasure: destroy the keys of subjects whose removal is durable (and the graph
    /// key, removing the saved graph, which holds copies of their templates). Returns whether
    /// the graph key went.
    pub(crate) fn erase(&mut self) -> Result<bool> {
        let wal = self.wal()?.clone();
        let Some(k) = self.keys.as_mut() else {
            return Ok(false);
        };
        // the removal on disk before its key goes (an `Async` log may not have synced it yet):
        // a destroyed key is never ahead of the removal that destroyed it
        if k.doomed_up_to() > wal.synced_seq() {
            wal.flush()?;
        }
        let graph = k.erase(wal.synced_seq())?;
        // (also after a retry: no graph key left means no saved graph may stay)
        if graph || !k.has_graph_key() {
            let st = self.storage.as_ref();
            Hnsw::remove_saved(st, &Self::hnsw_path(&self.dir))?;
            st.sync_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        }
        Ok(graph)
    }

    /// The plain form of logged records (for the change feed): in an encrypted gallery, a
    /// record sealed under a destroyed key is given as the removal that erased it.
    pub(crate) fn open_records(&self, records: Vec<Record>) -> Result<Vec<Record>> {
        let Some(k) = self.keys.as_ref() else {
            return Ok(records);
        };
        let log = Self::wal_path(&self.dir);
        records
            .into_iter()
            .map(|r| {
                let op = match k.open_op(&log, r.seq, &r.op)? {
                    Opened::Op(op, _) => op,
                    Opened::Erased => match r.op {
                        Op::SealedEnroll { template_id, .. } => Op::RemoveTemplate { template_id },
                        Op::SealedMetadata { subject, .. } => Op::RemoveSubject { subject },
                        other => other,
                    },
                };
                Ok(Record { seq: r.seq, op })
            })
            .collect()
    }

    /// Save the graph alone (so that a reopen need not index again), unless templates were
    /// removed from it since it was built: their bytes would be written (erasure waits for a
    /// checkpoint instead).
    pub(crate) fn save_graph(&mut self) -> Result<bool> {
        if let Some(why) = self.wal()?.failure() {
            // the graph may hold templates whose enrollment never became durable
            return Err(Error::Failed {
                path: Self::wal_path(&self.dir),
                reason: why,
            });
        }
        if self.state.tombstones > 0 || self.state.hnsw.len() == 0 {
            return Ok(false);
        }
        self.write_graph()?;
        Ok(true)
    }
}

/// The sequence number a snapshot covers, from its header (no checksum check).
pub(crate) fn snapshot_seq(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= 14 && bytes[..4] == SNAP_MAGIC)
        .then(|| u64::from_le_bytes(bytes[6..14].try_into().unwrap_or_default()))
}
