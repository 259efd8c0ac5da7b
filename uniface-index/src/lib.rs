//! # uniface-index
//!
//! The gallery for 1:N identification: a directory of shards, each with a write-ahead log
//! ([`wal`]), a snapshot and an in-memory template matrix; subjects own templates and opaque
//! metadata; `identify` answers "who is this?" with ranked candidates and an open-set decision
//! from the calibrated threshold. See [`Gallery`].
//!
//! Status: persistence, crash recovery, exact search, routing and merging are in place; the
//! HNSW index per shard ([`new_l2_index`]), the change feed and the CLI are the next steps.
#![forbid(unsafe_code)]

mod gallery;
mod hnsw;
mod shard;
pub mod wal;

pub use gallery::{
    merge_candidates, Candidate, Change, CheckReport, Gallery, GalleryOptions, Identification,
    Manifest, OpenReport, ShardRouter,
};
pub use shard::{Subject, EXACT_SCAN_LIMIT};
pub use wal::Durability;

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// Errors of `uniface-index`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// usearch reported a failure (its C++ exception, converted at the crate edge).
    #[error("usearch: {0}")]
    Usearch(String),
    /// A vector's length does not match the index dimension.
    #[error("dimension mismatch: index has {expected}, vector has {got}")]
    Dimension { expected: usize, got: usize },
    /// An error from `uniface-core`.
    #[error(transparent)]
    Core(#[from] uniface_core::Error),
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A gallery file is damaged or not what it claims to be.
    #[error("corrupt gallery file {path}: {message}")]
    Corrupt {
        path: std::path::PathBuf,
        message: String,
    },
    /// `create` found a gallery already there.
    #[error("a gallery already exists at {path}")]
    Exists { path: std::path::PathBuf },
    /// The change feed no longer holds changes the caller needs (a checkpoint folded them into
    /// a snapshot), or a feed has a gap.
    #[error("shard {shard}: changes after {since} are needed but the log starts at {available_from}; copy the gallery and follow the feed from there")]
    Compacted {
        shard: usize,
        since: u64,
        available_from: u64,
    },
    /// Positions or changes for another number of shards.
    #[error("the gallery has {expected} shards, the request names {got}")]
    ShardCount { expected: usize, got: usize },
    /// Subject ids must be non-empty.
    #[error("subject id must not be empty")]
    InvalidSubject,
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// HNSW parameters of a shard index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    pub dimensions: usize,
    /// Graph degree (usearch `connectivity`).
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            dimensions: uniface_core::embed::DESCRIPTOR_DIM,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
        }
    }
}

/// Options of a squared-L2 HNSW index storing `quantization`.
pub(crate) fn l2_options(params: &HnswParams, quantization: ScalarKind) -> IndexOptions {
    IndexOptions {
        dimensions: params.dimensions,
        metric: MetricKind::L2sq,
        quantization,
        connectivity: params.connectivity,
        expansion_add: params.expansion_add,
        expansion_search: params.expansion_search,
        multi: false,
    }
}

fn new_reserved(params: &HnswParams, quantization: ScalarKind, capacity: usize) -> Result<Index> {
    let index = usearch::new_index(&l2_options(params, quantization))
        .map_err(|e| Error::Usearch(e.to_string()))?;
    index
        .reserve(capacity)
        .map_err(|e| Error::Usearch(e.to_string()))?;
    Ok(index)
}

/// Create an empty squared-L2 HNSW index storing f16, with room for `capacity` vectors (the
/// configuration the gallery's shards use; a raw baseline for benchmarks).
pub fn new_f16_l2_index(params: &HnswParams, capacity: usize) -> Result<Index> {
    new_reserved(params, ScalarKind::F16, capacity)
}

/// Create an empty Euclidean (squared L2) f32 HNSW index with room for `capacity` vectors.
pub fn new_l2_index(params: &HnswParams, capacity: usize) -> Result<Index> {
    new_reserved(params, ScalarKind::F32, capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_neighbour_is_found() {
        let params = HnswParams {
            dimensions: 4,
            ..Default::default()
        };
        let index = new_l2_index(&params, 8).unwrap();
        index.add(1, &[0.0f32, 0.0, 0.0, 1.0]).unwrap();
        index.add(2, &[1.0f32, 0.0, 0.0, 0.0]).unwrap();
        index.add(3, &[0.0f32, 1.0, 0.0, 0.0]).unwrap();
        let found = index.search(&[0.9f32, 0.1, 0.0, 0.0], 2).unwrap();
        assert_eq!(found.keys[0], 2);
        assert!((found.distances[0] - 0.02).abs() < 1e-6);
        assert_eq!(found.keys.len(), 2);
    }
}
