//! A shard's approximate-nearest-neighbour graph: usearch HNSW over f16 copies of the
//! templates (squared Euclidean), keyed by template id. Candidates it returns are re-scored
//! exactly from the f32 vectors, so its quantisation never reaches a decision.
//!
//! usearch facts this wrapper relies on (`../shared/reference/index.md`): `add` needs capacity
//! reserved in advance and never grows it; every concurrent call needs one of the thread
//! contexts created by `reserve_capacity_and_threads` (beyond them calls fail at once);
//! `reserve`, `load` and `save` must not run concurrently with `add`/`search` (callers hold the
//! shard's write lock for them); `expansion_search` is not stored in the file.

use std::path::Path;

use usearch::{Index, ScalarKind};

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
}

impl Hnsw {
    pub(crate) fn new(params: &HnswParams) -> Result<Self> {
        let index = Index::new(&crate::l2_options(params, ScalarKind::F16)).map_err(usearch)?;
        index
            .reserve_capacity_and_threads(1024, thread_contexts())
            .map_err(usearch)?;
        Ok(Self { index })
    }

    /// Load a saved graph (or start empty when there is none).
    pub(crate) fn open(path: &Path, params: &HnswParams) -> Result<Self> {
        if !path.exists() {
            return Self::new(params);
        }
        let index = Index::restore(&path.to_string_lossy()).map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            message: format!("HNSW graph: {e}"),
        })?;
        if index.dimensions() != params.dimensions {
            return Err(Error::Dimension {
                expected: params.dimensions,
                got: index.dimensions(),
            });
        }
        let capacity = index.capacity().max(index.size() + 1024);
        index
            .reserve_capacity_and_threads(capacity, thread_contexts())
            .map_err(usearch)?;
        index.change_expansion_search(params.expansion_search);
        Ok(Self { index })
    }

    pub(crate) fn len(&self) -> usize {
        self.index.size()
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.index.contains(id)
    }

    /// Make room for `additional` more vectors (exclusive access required).
    pub(crate) fn reserve(&mut self, additional: usize) -> Result<()> {
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

    pub(crate) fn remove(&self, id: u64) -> Result<()> {
        self.index.remove(id).map(|_| ()).map_err(usearch)
    }

    /// Up to `k` candidates whose ids pass `keep` (ids of removed templates can linger in a
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
        Ok(found
            .keys
            .into_iter()
            .zip(found.distances)
            .filter(|(id, _)| keep(*id))
            .map(|(id, d)| (id, d.max(0.0).sqrt()))
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
