//! One shard of a gallery: its templates in memory (a contiguous matrix for exact scoring),
//! its write-ahead log, and its snapshot file.
//!
//! Snapshot layout (little-endian): magic `UFGS`, `u16` version 1, `u64` last sequence number
//! covered, `u32` dimension, `u32` subject count, then per subject: name (`u32` + UTF-8),
//! metadata (`u32` + bytes), `u32` template count, per template `u64` id + `dim` f32 values;
//! finally the CRC-32C of everything before it. Written to a temporary file, synced, renamed
//! over the old one, and the directory synced.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use uniface_core::compare::{Metric, Neighbor, TemplateMatrix};
use uniface_core::template::{crc32c, ElementType};

use crate::hnsw::Hnsw;
use crate::wal::{sync_dir, Durability, Op, Record, ReplayReport, Wal};
use crate::{Error, HnswParams, Result};

/// Shards with at most this many templates are searched by exact scan; larger ones through the
/// HNSW graph plus an exact scan of the templates not yet in it. The crossover, measured by
/// `uniface bench gallery` on one core: an exact scan costs 30 µs at 4,000 templates, as much
/// as the graph path (i8 graph, ef 64, f32 re-scoring); at 16,000 it costs 119 µs against
/// 44 µs. Below the limit the exact scan is as fast and has perfect recall.
pub const EXACT_SCAN_LIMIT: usize = 4_096;

const SNAP_MAGIC: [u8; 4] = *b"UFGS";
const SNAP_VERSION: u16 = 1;

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

    pub(crate) fn max_template_id(&self) -> Option<u64> {
        self.templates.keys().copied().max()
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

    fn remove_row(&mut self, id: u64) -> Result<()> {
        let Some(e) = self.templates.remove(&id) else {
            return Ok(());
        };
        if !self.pending.remove(&id) && self.hnsw.contains(id) {
            self.hnsw.remove(id)?;
            self.tombstones += 1;
        }
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
                self.subjects.entry(subject.clone()).or_default().metadata = metadata.clone();
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
    pub(crate) fn take_pending(&mut self, max: usize) -> Result<Vec<(u64, Vec<f32>)>> {
        // oldest first: the graph's nodes then lie in enrollment order, so a subject's
        // templates (usually enrolled together) are neighbours in memory as well
        let batch: Vec<(u64, Vec<f32>)> = self
            .pending
            .iter()
            .take(max)
            .filter_map(|id| self.templates.get(id).map(|e| (*id, e.vector.clone())))
            .collect();
        self.hnsw.reserve(batch.len())?;
        Ok(batch)
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
            if !self.pending.remove(id)
                && !self.templates.contains_key(id)
                && self.hnsw.contains(*id)
            {
                self.hnsw.remove(*id)?;
            }
        }
        Ok(())
    }

    fn snapshot_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&SNAP_MAGIC);
        out.extend_from_slice(&SNAP_VERSION.to_le_bytes());
        out.extend_from_slice(&self.last_seq.to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.subjects.len() as u32).to_le_bytes());
        for (name, s) in &self.subjects {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
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
        }
        let crc = crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Rebuild a state from snapshot bytes.
    fn from_snapshot(bytes: &[u8], element: ElementType, path: &Path, hnsw: Hnsw) -> Result<Self> {
        let bad = |m: &str| Error::Corrupt {
            path: path.to_owned(),
            message: m.to_owned(),
        };
        if bytes.len() < 26 || bytes[..4] != SNAP_MAGIC {
            return Err(bad("not a shard snapshot"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        if crc32c(body) != u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) {
            return Err(bad("checksum mismatch"));
        }
        let mut at = 4usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = body.get(at..at + n).ok_or_else(|| bad("truncated"))?;
            at += n;
            Ok(s)
        };
        let u32_ = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let version = u16::from_le_bytes(take(2)?.try_into().map_err(|_| bad("header"))?);
        if version != SNAP_VERSION {
            return Err(bad("unsupported snapshot version"));
        }
        let last_seq = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("header"))?);
        let dim = u32_(take(4)?);
        let subjects = u32_(take(4)?);
        let mut state = State::new(dim, element, hnsw);
        for _ in 0..subjects {
            let n = u32_(take(4)?);
            let name = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("subject name"))?;
            let m = u32_(take(4)?);
            let metadata = take(m)?.to_vec();
            let t = u32_(take(4)?);
            if !metadata.is_empty() {
                state.subjects.entry(name.clone()).or_default().metadata = metadata;
            }
            for _ in 0..t {
                let id = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("id"))?);
                let raw = take(dim * 4)?;
                let vector: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                state.apply(&Record {
                    seq: 0,
                    op: Op::Enroll {
                        subject: name.clone(),
                        template_id: id,
                        vector,
                    },
                })?;
            }
        }
        if at != body.len() {
            return Err(bad("trailing bytes"));
        }
        state.last_seq = last_seq;
        Ok(state)
    }
}

/// Check a snapshot file's framing and checksum.
pub(crate) fn verify_snapshot(bytes: &[u8], path: &Path, dim: usize) -> Result<()> {
    let params = HnswParams {
        dimensions: dim,
        ..Default::default()
    };
    State::from_snapshot(bytes, ElementType::F32, path, Hnsw::new(&params)?).map(|_| ())
}

/// Write `bytes` to `path` atomically and durably.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let io = |p: &Path, e| Error::Io {
        path: p.to_owned(),
        source: e,
    };
    {
        let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    sync_dir(dir)
}

/// A shard: state behind the gallery's lock, plus its log.
pub(crate) struct Shard {
    pub(crate) dir: PathBuf,
    /// Shared so that writers can wait for durability without holding the shard lock.
    pub(crate) wal: std::sync::Arc<Wal>,
    pub(crate) state: State,
    pub(crate) replay: ReplayReport,
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

    /// Open a shard directory: snapshot (if any), then the log records after it.
    pub(crate) fn open(
        dir: &Path,
        element: ElementType,
        params: &HnswParams,
        durability: Durability,
        view: bool,
    ) -> Result<Self> {
        let dim = params.dimensions;
        fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_owned(),
            source: e,
        })?;
        let snap = Self::snapshot_path(dir);
        let mut state = match fs::read(&snap) {
            Ok(b) => {
                let mut st = State::from_snapshot(&b, element, &snap, Hnsw::new(params)?)?;
                // the graph saved with the snapshot: what it holds is indexed, the rest pending
                st.hnsw = Hnsw::open(&Self::hnsw_path(dir), params, view)?;
                let indexed: Vec<u64> = st
                    .pending
                    .iter()
                    .copied()
                    .filter(|id| st.hnsw.contains(*id))
                    .collect();
                for id in indexed {
                    st.pending.remove(&id);
                }
                st
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                State::new(dim, element, Hnsw::new(params)?)
            }
            Err(e) => {
                return Err(Error::Io {
                    path: snap,
                    source: e,
                })
            }
        };
        if state.dim != dim {
            return Err(Error::Dimension {
                expected: dim,
                got: state.dim,
            });
        }
        let covered = state.last_seq;
        let (wal, replay) = Wal::open(&Self::wal_path(dir), durability, |rec| {
            // records a checkpoint already folded into the snapshot are skipped
            if rec.seq > covered {
                state.apply(&rec)?;
            }
            Ok(())
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            wal: std::sync::Arc::new(wal),
            state,
            replay,
        })
    }

    /// Snapshot the state and the graph, then empty the log. A graph that had templates
    /// removed is dropped and rebuilt by later `index_pending` calls, so that removed templates
    /// leave every file. (A crash between the steps leaves an older graph at worst: its removed
    /// ids are filtered out of searches and the ids it lacks are pending, i.e. scanned exactly,
    /// until indexed again.)
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        self.wal.flush()?;
        atomic_write(
            &Self::snapshot_path(&self.dir),
            &self.state.snapshot_bytes(),
        )?;
        if self.state.tombstones > 0 {
            // removed templates must leave every file: drop the graph, re-index from the
            // snapshot's templates (pending meanwhile, so searches stay exact)
            let params = *self.state.hnsw.params();
            self.state.reset_graph(&params)?;
        }
        self.state.hnsw.save(&Self::hnsw_path(&self.dir))?;
        self.wal.truncate()
    }
}
