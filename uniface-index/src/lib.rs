//! # uniface-index
//!
//! The gallery for 1:N identification: a directory of shards, each with a write-ahead log
//! ([`wal`]), a snapshot and an in-memory template matrix; subjects own templates and opaque
//! metadata; `identify` answers "who is this?" with ranked candidates and an open-set decision
//! from the calibrated threshold. See [`Gallery`].
//!
//! Each shard keeps an HNSW graph (usearch, [`HnswParams`]) over quantised copies of its
//! templates and re-scores the graph's candidates exactly from the f32 templates; templates not
//! yet in the graph are scanned exactly. A gallery can be encrypted at rest
//! ([`GalleryOptions::encryption`]): per-subject keys, crypto-erasure, key rotation. Layout,
//! recovery, erasure, encryption and the change feed:
//! `docs/GALLERY.md`.
#![forbid(unsafe_code)]

pub mod cluster;
mod gallery;
mod hnsw;
mod keys;
mod shard;
pub mod storage;
pub mod wal;

pub use gallery::{
    check, check_encrypted, merge_candidates, Candidate, Change, CheckReport, Duplicate, Gallery,
    GalleryOptions, Identification, Indexer, Manifest, OpenOptions, OpenReport, OpenSet,
    ShardRouter, DUPLICATE_NEIGHBOURS, MAX_CONNECTIVITY, MAX_EXPANSION, MAX_SHARDS,
};
pub use hnsw::GraphStatus;
pub use keys::CIPHER;
pub use shard::{
    ShardReport, Subject, EXACT_SCAN_LIMIT, MAX_COMPONENT, MAX_METADATA_BYTES, MAX_SUBJECT_BYTES,
};
/// The usearch crate this gallery is built on (for raw baselines and direct use).
pub use usearch;
pub use wal::Durability;

use serde::{Deserialize, Serialize};
use uniface_core::template::ElementType;
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
    /// The request belongs to a shard this gallery was not opened with
    /// ([`OpenOptions::shard`]): another host serves it.
    #[error("shard {shard} is not open here (another host serves it)")]
    NotLocal { shard: usize },
    /// Another writer holds the gallery (or this shard of it): one writer per gallery.
    #[error("the gallery is locked by another writer ({holder}) through {path}; wait for it to finish, or open read-only")]
    Locked {
        path: std::path::PathBuf,
        holder: String,
    },
    /// The gallery was opened read-only ([`OpenOptions::read_only`]).
    #[error("the gallery is open read-only")]
    ReadOnly,
    /// A shard's log stopped accepting writes after an I/O failure that leaves its durable
    /// state unknown (a failed `fsync` is never retried); reopening recovers from the disk.
    #[error("shard log {path} stopped accepting writes: {reason}; reopen the gallery to recover from its log")]
    Failed {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A file or folder the gallery needs is not there (never read as an empty gallery).
    #[error("{path} is missing ({what}): restore it from a backup or a replica")]
    Missing {
        path: std::path::PathBuf,
        what: &'static str,
    },
    /// A value out of its documented range (a template value, a subject id's length, a
    /// graph parameter, a shard count).
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
    /// A file of an encrypted gallery cannot be opened with the key given: another key, an
    /// altered byte, a record or block out of place, a key the key log lacks.
    #[error("{path}: {source}")]
    Crypto {
        path: std::path::PathBuf,
        source: uniface_core::Error,
    },
    /// A thread panicked while changing this shard: its state may be half-changed, so it
    /// answers nothing until the gallery is reopened.
    #[error("shard {shard} is unusable after a panic in another thread; reopen the gallery")]
    Poisoned { shard: usize },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The [`uniface_core::ErrorKind`] of this error (what the bindings map to exceptions
    /// and status codes).
    pub fn kind(&self) -> uniface_core::ErrorKind {
        use uniface_core::ErrorKind as K;
        match self {
            Error::Core(e) => e.kind(),
            Error::Crypto { source, .. } => source.kind(),
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                K::NotFound
            }
            Error::Missing { .. } => K::NotFound,
            Error::Dimension { .. } | Error::InvalidSubject | Error::Invalid { .. } => {
                K::InvalidArgument
            }
            Error::Locked { .. } => K::Locked,
            Error::ReadOnly => K::ReadOnly,
            Error::Usearch(_)
            | Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::Exists { .. }
            | Error::Compacted { .. }
            | Error::ShardCount { .. }
            | Error::NotLocal { .. }
            | Error::Failed { .. }
            | Error::Poisoned { .. } => K::Gallery,
        }
    }
}

/// HNSW parameters of a shard's graph (stored in the manifest; change them with
/// [`Gallery::rebuild`], or only the search expansion with [`Gallery::set_expansion_search`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HnswParams {
    pub dimensions: usize,
    /// Graph degree (usearch `connectivity`, "M").
    pub connectivity: usize,
    /// Candidate list while inserting ("ef_construction").
    pub expansion_add: usize,
    /// Candidate list while searching ("ef"); raised to the number of candidates asked for.
    pub expansion_search: usize,
    /// How the graph stores vectors. Candidates are always re-scored from the f32 templates,
    /// so the graph's quantisation only changes which candidates are found, not their scores;
    /// i8 is the fastest and, after re-scoring, as accurate as f16/f32 on face templates
    /// (`docs/PERFORMANCE.md`).
    #[serde(with = "element_name")]
    pub graph: ElementType,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            dimensions: uniface_core::embed::DESCRIPTOR_DIM,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            graph: ElementType::I8,
        }
    }
}

/// Element types by their names in the manifest ("f32", "f16", "i8").
pub(crate) mod element_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use uniface_core::template::ElementType;

    pub(crate) fn serialize<S: Serializer>(e: &ElementType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(e.name())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ElementType, D::Error> {
        let s = String::deserialize(d)?;
        ElementType::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown element type {s:?}")))
    }
}

fn scalar_kind(e: ElementType) -> ScalarKind {
    match e {
        ElementType::F32 => ScalarKind::F32,
        ElementType::F16 => ScalarKind::F16,
        ElementType::I8 => ScalarKind::I8,
    }
}

/// Options of a squared-L2 HNSW index with `params`.
pub(crate) fn l2_options(params: &HnswParams) -> IndexOptions {
    IndexOptions {
        dimensions: params.dimensions,
        metric: MetricKind::L2sq,
        quantization: scalar_kind(params.graph),
        connectivity: params.connectivity,
        expansion_add: params.expansion_add,
        expansion_search: params.expansion_search,
        multi: false,
    }
}

/// Most vectors [`new_l2_index`] reserves room for (2^32).
pub const MAX_INDEX_CAPACITY: usize = 1 << 32;

/// Create an empty squared-L2 usearch index with `params` (the configuration a gallery's
/// shards use) and room for `capacity` vectors: the raw baseline of the benchmarks.
pub fn new_l2_index(params: &HnswParams, capacity: usize) -> Result<Index> {
    if capacity > MAX_INDEX_CAPACITY {
        return Err(Error::Invalid {
            what: "capacity",
            message: format!("{capacity}; at most {MAX_INDEX_CAPACITY} vectors"),
        });
    }
    let index =
        usearch::new_index(&l2_options(params)).map_err(|e| Error::Usearch(e.to_string()))?;
    index
        .reserve(capacity)
        .map_err(|e| Error::Usearch(e.to_string()))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_neighbour_is_found() {
        let params = HnswParams {
            dimensions: 4,
            graph: ElementType::F32,
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
