//! A shard's approximate-nearest-neighbour graph: usearch HNSW over quantised (i8 by default)
//! copies of the templates (squared Euclidean), keyed by template id. Candidates it returns are re-scored
//! exactly from the f32 vectors, so its quantisation never reaches a decision.
//!
//! usearch facts this wrapper relies on (`../shared/reference/index.md`): `add` needs capacity
//! reserved in advance and never grows it; every concurrent call needs one of the thread
//! contexts created by `reserve_capacity_and_threads` (beyond them calls fail at once);
//! `reserve`, `load` and `save` must not run concurrently with `add`/`search` (callers hold the
//! shard's write lock for them); `expansion_search` is not stored in the file.

use std::path::{Path, PathBuf};

use usearch::Index;

use crate::{Error, HnswParams, Result};

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
        })
    }

    pub(crate) fn params(&self) -> &HnswParams {
        &self.params
    }

    /// Load a saved graph (or start empty when there is none); with `view`, memory-map it
    /// read-only instead of reading it in (opening is then nearly free and pages are shared
    /// with other processes viewing the same file).
    pub(crate) fn open(path: &Path, params: &HnswParams, view: bool) -> Result<Self> {
        if !path.exists() {
            return Self::new(params);
        }
        let name = path.to_string_lossy();
        let restored = if view {
            Index::restore_view(&name)
        } else {
            Index::restore(&name)
        };
        let index = restored.map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            message: format!("HNSW graph: {e}"),
        })?;
        if index.dimensions() != params.dimensions {
            return Err(Error::Dimension {
                expected: params.dimensions,
                got: index.dimensions(),
            });
        }
        let capacity = if view {
            index.size()
        } else {
            index.capacity().max(index.size() + 1024)
        };
        index
            .reserve_capacity_and_threads(capacity, thread_contexts())
            .map_err(usearch)?;
        index.change_expansion_search(params.expansion_search);
        index.change_expansion_add(params.expansion_add);
        Ok(Self {
            distance_scale: distance_scale(&index),
            index,
            viewed: view.then(|| path.to_owned()),
            params: *params,
        })
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
        if let Some(path) = self.viewed.take() {
            *self = Self::open(&path, &self.params, false)?;
        }
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
        if let Some(path) = self.viewed.take() {
            *self = Self::open(&path, &self.params, false)?;
        }
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

    /// Save atomically next to `path` (temporary file, rename).
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        self.index.save(&tmp.to_string_lossy()).map_err(usearch)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::Io {
                path: tmp.clone(),
                source: e,
            })?;
        std::fs::rename(&tmp, path).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
        crate::wal::sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
}
