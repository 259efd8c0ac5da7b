//! A shard's approximate-nearest-neighbour graph: usearch HNSW over quantised (i8 by default)
//! copies of the templates (squared Euclidean), keyed by template id. Candidates it returns are re-scored
//! exactly from the f32 vectors, so its quantisation never reaches a decision.
//!
//! usearch facts this wrapper relies on (`../shared/reference/index.md`): `add` needs capacity
//! reserved in advance and never grows it; every concurrent call needs one of the thread
//! contexts created by `reserve_capacity_and_threads` (beyond them calls fail at once);
//! `reserve`, `load` and `save` must not run concurrently with `add`/`search` (callers hold the
//! shard's write lock for them); `expansion_search` is not stored in the file. usearch's loader
//! trusts its input (damage can crash it), so a saved graph is only handed to it after its
//! length and CRC-32C match `hnsw.sum`, written beside it, and its parameters the manifest's.

use std::path::{Path, PathBuf};

use uniface_core::template::{crc32c, ElementType};
use usearch::Index;
use zeroize::Zeroizing;

use crate::storage::Storage;
use crate::{Error, HnswParams, Result};

/// Decrypts a saved graph (or says why it cannot).
pub(crate) type Opener<'a> = dyn Fn(&[u8]) -> std::result::Result<Zeroizing<Vec<u8>>, String> + 'a;
/// Encrypts a graph to be saved.
pub(crate) type Sealer<'a> = dyn FnMut(&[u8]) -> Result<Vec<u8>> + 'a;

fn usearch(e: impl std::fmt::Display) -> Error {
    Error::Usearch(e.to_string())
}

/// Concurrent callers the index is prepared for.
fn thread_contexts() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cpus.max(rayon::current_num_threads()) * 2 + 4).min(256)
}

pub(crate) struct Hnsw {
    index: Index,
    /// Set while the graph is a read-only memory map of this file (`view`): the first
    /// insertion loads it into memory.
    viewed: Option<PathBuf>,
    params: HnswParams,
    /// Factor from usearch's reported distance to the templates' units: usearch reports i8
    /// distances in its integer units (each value × 127). Taken from the index itself, since
    /// a restored graph may predate the manifest's storage.
    distance_scale: f32,
    /// Unique per graph made or loaded: an indexing batch prepared for one graph is never
    /// inserted into its replacement.
    generation: u64,
}

fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn distance_scale(index: &Index) -> f32 {
    if index.scalar_kind() == usearch::ScalarKind::I8 {
        1.0 / 127.0
    } else {
        1.0
    }
}

impl Hnsw {
    pub(crate) fn new(params: &HnswParams) -> Result<Self> {
        let index = Index::new(&crate::l2_options(params)).map_err(usearch)?;
        index
            .reserve_capacity_and_threads(1024, thread_contexts())
            .map_err(usearch)?;
        Ok(Self {
            distance_scale: distance_scale(&index),
            index,
            viewed: None,
            params: *params,
            generation: next_generation(),
        })
    }

    pub(crate) fn params(&self) -> &HnswParams {
        &self.params
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// A restored usearch index made ready for this gallery's use; an error when its
    /// configuration is not what `params` asks for.
    fn adopt(
        index: Index,
        params: &HnswParams,
        view: Option<PathBuf>,
    ) -> std::result::Result<Self, String> {
        let element = match index.scalar_kind() {
            usearch::ScalarKind::F32 => ElementType::F32,
            usearch::ScalarKind::F16 => ElementType::F16,
            usearch::ScalarKind::I8 => ElementType::I8,
            other => return Err(format!("graph stores {other:?} vectors")),
        };
        if index.dimensions() != params.dimensions
            || index.connectivity() != params.connectivity
            || element != params.graph
        {
            return Err(format!(
                "graph has dimension {}, connectivity {} and {} vectors; the manifest asks for {}, {} and {}",
                index.dimensions(),
                index.connectivity(),
                element.name(),
                params.dimensions,
                params.connectivity,
                params.graph.name()
            ));
        }
        let capacity = if view.is_some() {
            index.size()
        } else {
            index.capacity().max(index.size() + 1024)
        };
        index
            .reserve_capacity_and_threads(capacity, thread_contexts())
            .map_err(|e| e.to_string())?;
        index.change_expansion_search(params.expansion_search);
        index.change_expansion_add(params.expansion_add);
        Ok(Self {
            distance_scale: distance_scale(&index),
            index,
            viewed: view,
            params: *params,
            generation: next_generation(),
        })
    }

    /// Load the graph saved at `path`, after checking it against its checksum file and the
    /// manifest's parameters; with `view` (and real files), memory-map it read-only instead
    /// of reading it in (opening is then nearly free and pages are shared with other processes
    /// viewing the same file). A graph that is absent, damaged, unverifiable or built with other
    /// parameters is never handed to usearch's loader: an empty graph is returned (every
    /// template pending, i.e. scanned exactly until indexed again) with the reason.
    ///
    /// With `open` (an encrypted gallery), the file is read in, checked, decrypted by `open`
    /// and restored from memory (never memory-mapped); a file `open` refuses is dropped.
    pub(crate) fn load(
        storage: &dyn Storage,
        path: &Path,
        params: &HnswParams,
        view: bool,
        open: Option<&Opener<'_>>,
    ) -> Result<(Self, GraphStatus)> {
        let fresh = |status| Ok((Self::new(params)?, status));
        let sum_path = path.with_extension("sum");
        let (has_graph, has_sum) = (
            storage.exists(path).unwrap_or(false),
            storage.exists(&sum_path).unwrap_or(false),
        );
        if !has_graph && !has_sum {
            return fresh(GraphStatus::Absent);
        }
        let dropped = |reason: String| fresh(GraphStatus::Dropped { reason });
        let sum = match storage.read(&sum_path) {
            Ok(b) => match GraphSum::decode(&b) {
                Some(s) => s,
                None => return dropped("its checksum file hnsw.sum is damaged".into()),
            },
            Err(e) => return dropped(format!("its checksum file hnsw.sum cannot be read: {e}")),
        };
        if sum.params != GraphSum::of(params).params {
            return dropped(
                "it was built with other parameters than the manifest's (an interrupted rebuild)"
                    .into(),
            );
        }
        let local = storage.local_path(path).filter(|_| open.is_none());
        let restored = match &local {
            Some(real) => match storage.checksum(path) {
                Ok((len, crc)) if len == sum.len && crc == sum.crc => {
                    let name = real.to_string_lossy();
                    if view {
                        Index::restore_view(&name)
                    } else {
                        Index::restore(&name)
                    }
                }
                Ok((len, crc)) => return dropped(mismatch(len, crc, &sum)),
                Err(e) => return dropped(format!("it cannot be read: {e}")),
            },
            None => match storage.read(path) {
                Ok(b) if b.len() as u64 == sum.len && crc32c(&b) == sum.crc => match open {
                    Some(open) => match open(&b) {
                        Ok(plain) => Index::restore_from_buffer(&plain),
                        Err(why) => return dropped(format!("it cannot be decrypted: {why}")),
                    },
                    None => Index::restore_from_buffer(&b),
                },
                Ok(b) => return dropped(mismatch(b.len() as u64, crc32c(&b), &sum)),
                Err(e) => return dropped(format!("it cannot be read: {e}")),
            },
        };
        let index = match restored {
            Ok(i) => i,
            Err(e) => return dropped(format!("usearch could not load it: {e}")),
        };
        let viewed = (view && local.is_some()).then(|| path.to_owned());
        match Self::adopt(index, params, viewed) {
            Ok(h) => {
                let n = h.len();
                Ok((h, GraphStatus::Loaded { templates: n }))
            }
            Err(reason) => dropped(reason),
        }
    }

    /// Change the search expansion (exclusive access: usearch reads it without a lock).
    pub(crate) fn set_expansion_search(&mut self, ef: usize) {
        self.params.expansion_search = ef;
        self.index.change_expansion_search(ef);
    }

    pub(crate) fn len(&self) -> usize {
        self.index.size()
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.index.contains(id)
    }

    /// Make room for `additional` more vectors (exclusive access required). A viewed graph is
    /// read into memory first.
    pub(crate) fn reserve(&mut self, additional: usize) -> Result<()> {
        self.unview()?;
        let need = self.index.size() + additional;
        if need > self.index.capacity() {
            let cap = need.max(self.index.capacity() * 2);
            self.index
                .reserve_capacity_and_threads(cap, thread_contexts())
                .map_err(usearch)?;
        }
        Ok(())
    }

    pub(crate) fn add(&self, id: u64, vector: &[f32]) -> Result<()> {
        self.index.add(id, vector).map_err(usearch)
    }

    pub(crate) fn remove(&mut self, id: u64) -> Result<()> {
        self.unview()?;
        self.index.remove(id).map(|_| ()).map_err(usearch)
    }

    /// Up to `k` candidates whose ids pass `keep`, with approximate Euclidean distances in the
    /// templates' units (ids of removed templates can linger in a
    /// graph restored from an older checkpoint; the filter hides them).
    pub(crate) fn search(
        &self,
        probe: &[f32],
        k: usize,
        keep: impl Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>> {
        if self.index.size() == 0 || k == 0 {
            return Ok(Vec::new());
        }
        // (expansion_search is fixed at creation: changing it here would race with other
        // searches.) A plain search with the filter applied afterwards: a predicate evaluated
        // on every visited node costs more than the rare id it rejects.
        let found = self.index.search(probe, k).map_err(usearch)?;
        let scale = self.distance_scale;
        Ok(found
            .keys
            .into_iter()
            .zip(found.distances)
            .filter(|(id, _)| keep(*id))
            .map(|(id, d)| (id, d.max(0.0).sqrt() * scale))
            .collect())
    }

    /// A viewed graph read into memory (before its first change).
    fn unview(&mut self) -> Result<()> {
        if let Some(path) = self.viewed.take() {
            let index = Index::restore(&path.to_string_lossy()).map_err(|e| Error::Corrupt {
                path: path.clone(),
                message: format!("HNSW graph: {e}"),
            })?;
            *self = Self::adopt(index, &self.params, None)
                .map_err(|message| Error::Corrupt { path, message })?;
        }
        Ok(())
    }

    /// Save to `path` with its checksum file `hnsw.sum` (temporary files, synced, renamed,
    /// directory synced). On failure the temporary files are removed and the saved graph, if
    /// any, is left as it was (or, after a crash between the two renames, fails its check on
    /// the next open and is rebuilt).
    ///
    /// With `seal` (an encrypted gallery), the graph is serialised in memory and `seal`'s
    /// output written instead.
    pub(crate) fn save(
        &self,
        storage: &dyn Storage,
        path: &Path,
        seal: Option<&mut Sealer<'_>>,
    ) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let sum_path = path.with_extension("sum");
        let sum_tmp = path.with_extension("sum-tmp");
        let io = |p: &Path, e: std::io::Error| Error::Io {
            path: p.to_owned(),
            source: e,
        };
        let result = (|| {
            let (len, crc) = match (storage.local_path(&tmp), seal) {
                (_, Some(seal)) => {
                    let mut buf = Zeroizing::new(vec![0u8; self.index.serialized_length()]);
                    self.index.save_to_buffer(&mut buf).map_err(usearch)?;
                    let sealed = seal(&buf)?;
                    storage
                        .write_synced(&tmp, &sealed)
                        .map_err(|e| io(&tmp, e))?;
                    (sealed.len() as u64, crc32c(&sealed))
                }
                (Some(real), None) => {
                    self.index.save(&real.to_string_lossy()).map_err(usearch)?;
                    storage.sync_file(&tmp).map_err(|e| io(&tmp, e))?;
                    storage.checksum(&tmp).map_err(|e| io(&tmp, e))?
                }
                (None, None) => {
                    let mut buf = vec![0u8; self.index.serialized_length()];
                    self.index.save_to_buffer(&mut buf).map_err(usearch)?;
                    storage.write_synced(&tmp, &buf).map_err(|e| io(&tmp, e))?;
                    (buf.len() as u64, crc32c(&buf))
                }
            };
            let sum = GraphSum {
                len,
                crc,
                ..GraphSum::of(&self.params)
            };
            storage
                .write_synced(&sum_tmp, &sum.encode())
                .map_err(|e| io(&sum_tmp, e))?;
            storage.rename(&tmp, path).map_err(|e| io(path, e))?;
            storage
                .rename(&sum_tmp, &sum_path)
                .map_err(|e| io(&sum_path, e))
        })();
        if result.is_err() {
            let _ = storage.remove(&tmp);
            let _ = storage.remove(&sum_tmp);
        }
        result?;
        let dir = path.parent().unwrap_or(Path::new("."));
        storage.sync_dir(dir).map_err(|e| io(dir, e))
    }

    /// Remove a saved graph and its checksum file (erasure: the graph holds copies of removed
    /// templates).
    pub(crate) fn remove_saved(storage: &dyn Storage, path: &Path) -> Result<()> {
        for p in [path.to_owned(), path.with_extension("sum")] {
            match storage.remove(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io { path: p, source: e }),
            }
        }
        Ok(())
    }
}

/// Why a graph file fails its checksum file.
fn mismatch(len: u64, crc: u32, sum: &GraphSum) -> String {
    if len != sum.len {
        format!("{len} bytes where its checksum file says {}", sum.len)
    } else {
        format!(
            "CRC-32C {crc:08x} where its checksum file says {:08x}",
            sum.crc
        )
    }
}

/// What became of a shard's saved graph when it was opened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum GraphStatus {
    /// Loaded, holding this many templates.
    Loaded { templates: usize },
    /// None was saved: every template is pending (scanned exactly until indexed).
    Absent,
    /// The saved graph failed a check and was not used (every template pending, re-indexed by
    /// `index_pending`).
    Dropped { reason: String },
}

/// `hnsw.sum`: what the saved graph must be — magic `UFGC`, `u16` version 1, `u8` graph element
/// code, `u8` 0, `u32` dimensions, `u32` connectivity, `u32` expansion on insertion, `u64` file
/// length, `u32` CRC-32C of the file, `u32` CRC-32C of the 32 bytes before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GraphSum {
    params: [u32; 4],
    len: u64,
    crc: u32,
}

impl GraphSum {
    const LEN: usize = 36;

    fn of(p: &HnswParams) -> Self {
        let element = match p.graph {
            ElementType::F32 => 0,
            ElementType::F16 => 1,
            ElementType::I8 => 2,
        };
        Self {
            params: [
                element,
                p.dimensions as u32,
                p.connectivity as u32,
                p.expansion_add as u32,
            ],
            len: 0,
            crc: 0,
        }
    }

    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..4].copy_from_slice(b"UFGC");
        b[4..6].copy_from_slice(&1u16.to_le_bytes());
        b[6] = self.params[0] as u8;
        for (i, v) in self.params[1..].iter().enumerate() {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[20..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..32].copy_from_slice(&self.crc.to_le_bytes());
        let own = crc32c(&b[..32]);
        b[32..].copy_from_slice(&own.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b.len() != Self::LEN || &b[..4] != b"UFGC" || b[4..6] != 1u16.to_le_bytes() {
            return None;
        }
        if crc32c(&b[..32]) != u32_at(32) {
            return None;
        }
        Some(Self {
            params: [u32::from(b[6]), u32_at(8), u32_at(12), u32_at(16)],
            len: u64::from_le_bytes(b[20..28].try_into().ok()?),
            crc: u32_at(28),
        })
    }
}
