//! The gallery: a directory of shards behind one API.
//!
//! ```text
//! gallery/
//!   manifest.json          format version, model fingerprint, dimension, metric, storage,
//!                          shards, graph parameters, CRC-32C of all of it
//!   shard-000/LOCK         the writer's advisory lock (and who holds it)
//!   shard-000/wal.log      write-ahead log (see `wal`)
//!   shard-000/templates.snap   snapshot written by `checkpoint` (see `shard`)
//!   shard-000/hnsw.usearch, hnsw.sum   search graph and its checksum
//!   shard-000/keys.log     encrypted galleries: the shard's keys, wrapped under the host's key
//!   shard-001/...
//! ```
//!
//! One writer per gallery: a writer holds each open shard's `LOCK` (`flock`); a second writer
//! gets [`Error::Locked`]. Read-only opens ([`OpenOptions::read_only`]) take no lock and change
//! no file.
//!
//! An enrollment is written to its shard's log, made durable as the [`Durability`] mode says,
//! and applied in memory before `enroll` returns: acknowledged means durable and searchable.
//! `checkpoint` folds the logs into snapshots and empties them; after it, removed subjects are
//! gone from every file (erasure). Search takes candidates from each shard's HNSW graph (plus an
//! exact scan of templates not yet in it; small shards are scanned exactly), re-scores them in
//! f32 and fans out over the shards with rayon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use uniface_core::calibration::{self, CalibrationTable};
use uniface_core::compare::Metric;
use uniface_core::template::{ElementType, ModelFingerprint, Template};

use crate::hnsw::GraphStatus;
use crate::shard::{atomic_write, validate, Shard, ShardOptions, ShardReport, State, Subject};
use crate::storage::{FsStorage, Storage};
use crate::wal::{Durability, Op, Record};
use crate::{Error, HnswParams, Result};
use uniface_core::crypto::{Key, KeyProvider};

/// Version 2: the manifest carries a checksum, logs a header and batch frames, graphs a
/// checksum file.
const FORMAT_VERSION: u32 = 2;

/// Most shards a gallery may have.
pub const MAX_SHARDS: usize = 4096;
/// Largest graph degree accepted ([`HnswParams::connectivity`]).
pub const MAX_CONNECTIVITY: usize = 256;
/// Largest candidate list accepted ([`HnswParams::expansion_add`], `expansion_search`).
pub const MAX_EXPANSION: usize = 8192;

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
    /// The shards' graph parameters.
    pub hnsw: HnswParams,
    /// The cipher of an encrypted gallery ([`GalleryOptions::encryption`]); absent for a
    /// plain one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// CRC-32C (hex) of the manifest's JSON with this field empty.
    #[serde(default)]
    pub checksum: String,
}

impl Manifest {
    /// The fingerprint the manifest names (`None` when its hash is not 64 hex digits).
    fn fingerprint(&self) -> Option<ModelFingerprint> {
        ModelFingerprint::from_hex(&self.model_id, &self.weights_sha256, self.preprocessing)
    }

    fn element(&self) -> Result<ElementType> {
        ElementType::from_name(&self.element).ok_or_else(|| Error::Corrupt {
            path: PathBuf::from("manifest.json"),
            message: format!("unknown element type {:?}", self.element),
        })
    }

    /// The checksum of everything but the checksum field.
    fn compute_checksum(&self) -> Result<String> {
        let body = Manifest {
            checksum: String::new(),
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Corrupt {
            path: PathBuf::from("manifest.json"),
            message: e.to_string(),
        })?;
        Ok(format!("{:08x}", uniface_core::template::crc32c(&bytes)))
    }
}

/// Check graph parameters against their documented ranges.
pub(crate) fn check_hnsw(p: &HnswParams) -> Result<()> {
    let ok = (2..=MAX_CONNECTIVITY).contains(&p.connectivity)
        && (1..=MAX_EXPANSION).contains(&p.expansion_add)
        && (1..=MAX_EXPANSION).contains(&p.expansion_search);
    if !ok {
        return Err(Error::Invalid {
            what: "graph parameters",
            message: format!(
                "connectivity must lie in 2..={MAX_CONNECTIVITY} and the expansions in 1..={MAX_EXPANSION}; got connectivity {}, expansion_add {}, expansion_search {}",
                p.connectivity, p.expansion_add, p.expansion_search
            ),
        });
    }
    Ok(())
}

fn check_shards(n: usize) -> Result<()> {
    if !(1..=MAX_SHARDS).contains(&n) {
        return Err(Error::Invalid {
            what: "shard count",
            message: format!("{n}; a gallery has 1 to {MAX_SHARDS} shards"),
        });
    }
    Ok(())
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
    /// Graph parameters (`dimensions` is taken from `dimension`).
    pub hnsw: HnswParams,
    /// Where the files live (the real filesystem unless a test says otherwise).
    pub storage: Arc<dyn Storage>,
    /// Encrypt the gallery at rest under this key-encryption key (see `docs/GALLERY.md`,
    /// "Encryption at rest"): every template and metadata in the logs and snapshots is sealed
    /// under its subject's own key, the graphs under a graph key, those keys wrapped by this
    /// one in each shard's `keys.log`. Fixed at creation (recorded in the manifest); every
    /// open then needs [`OpenOptions::key`].
    pub encryption: Option<Arc<dyn KeyProvider>>,
}

impl Default for GalleryOptions {
    fn default() -> Self {
        Self {
            fingerprint: ModelFingerprint::dlib_resnet_v1(),
            dimension: uniface_core::embed::DESCRIPTOR_DIM,
            shards: 1,
            element: ElementType::F32,
            durability: Durability::Sync,
            hnsw: HnswParams::default(),
            storage: Arc::new(FsStorage),
            encryption: None,
        }
    }
}

/// How to open a gallery.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub durability: Durability,
    /// Memory-map the saved graphs read-only (usearch `view`) instead of reading them in:
    /// opening a large gallery is then nearly free and read-only replicas on one machine share
    /// the pages. The first insertion into a shard's graph reads it into memory.
    pub view: bool,
    /// Open only this shard: a host that serves one shard of a gallery split over machines.
    /// Routing still uses the manifest's shard count; requests for subjects that live on other
    /// shards fail with [`Error::NotLocal`]; searches cover the local shard (merge the hosts'
    /// answers with [`merge_candidates`]).
    pub shard: Option<usize>,
    /// Open for reading only: no lock is taken (a writer may be appending meanwhile), no file
    /// is changed, created or repaired — the snapshot and the log up to its last complete
    /// record are read — so it works on a read-only filesystem. Writes fail with
    /// [`Error::ReadOnly`].
    pub read_only: bool,
    /// Wait up to this long for another writer to release the gallery instead of failing at
    /// once with [`Error::Locked`].
    pub lock_timeout: Option<Duration>,
    /// Open a shard whose log is damaged *before* valid records ([`Error::Corrupt`] otherwise)
    /// by cutting it at the damage: the records behind it are lost (they are kept in
    /// `wal.log.corrupt-<time>` and reported in [`OpenReport`]). An operator's decision, after
    /// a copy of the gallery was taken.
    pub salvage: bool,
    /// Where the files live (the real filesystem unless a test says otherwise).
    pub storage: Arc<dyn Storage>,
    /// The key-encryption key of an encrypted gallery (required for one, refused for a plain
    /// one).
    pub key: Option<Arc<dyn KeyProvider>>,
    /// The key-encryption key before a [`Gallery::rotate_kek`] that did not finish: shards
    /// still wrapped under it are re-wrapped under [`OpenOptions::key`] (reported).
    pub previous_key: Option<Arc<dyn KeyProvider>>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            view: false,
            shard: None,
            read_only: false,
            lock_timeout: None,
            salvage: false,
            storage: Arc::new(FsStorage),
            key: None,
            previous_key: None,
        }
    }
}

impl OpenOptions {
    /// Options for a read-only open.
    pub fn read_only() -> Self {
        Self {
            read_only: true,
            ..Self::default()
        }
    }
}

/// The open-set rule: how strict the "known" decision of [`Gallery::identify`] is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpenSet {
    /// A target false-match rate per comparison (the calibration table's own unit).
    Fmr(f64),
    /// A target false-positive identification rate: the chance that a probe of someone not
    /// enrolled is declared known. The gallery converts it to a per-comparison rate for its
    /// current size `n` (templates searched): FMR = 1 − (1 − FPIR)^(1/n), which assumes
    /// independent comparisons; several templates of one subject are correlated, so the
    /// measured FPIR is at or below the target (`docs/ACCURACY.md`). Targets the calibration
    /// cannot resolve at this size are refused with an error rather than guessed.
    Fpir(f64),
}

impl From<f64> for OpenSet {
    fn from(fmr: f64) -> Self {
        Self::Fmr(fmr)
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
    /// The target false-positive identification rate, when the rule was [`OpenSet::Fpir`].
    pub fpir: Option<f64>,
}

/// Nearest other subjects [`Gallery::duplicates`] looks at per template.
pub const DUPLICATE_NEIGHBOURS: usize = 8;

/// Two subjects whose templates match ([`Gallery::duplicates`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Duplicate {
    /// The two subject ids, in sorted order.
    pub subjects: [String; 2],
    /// Their closest templates (in the order of `subjects`).
    pub templates: [u64; 2],
    pub distance: f32,
    pub similarity: f32,
}

impl Duplicate {
    fn new(subject: &str, id: u64, other: Candidate, metric: Metric) -> Self {
        let (subjects, templates) = if subject <= other.subject.as_str() {
            ([subject.to_owned(), other.subject], [id, other.template_id])
        } else {
            ([other.subject, subject.to_owned()], [other.template_id, id])
        };
        Self {
            subjects,
            templates,
            distance: other.distance,
            similarity: metric.similarity(other.distance),
        }
    }
}

/// One change of the feed: a log record and the shard it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub shard: usize,
    pub record: Record,
}

impl Change {
    /// The change as bytes for another process or host (a replica fed over the network): a
    /// frame as the log writes them (length, CRC-32C) around the shard number (`u32`,
    /// little-endian) and the record's own log frame. An encrypted gallery's feed carries opened
    /// records, so these bytes are as sensitive as the templates.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut inner = (self.shard as u32).to_le_bytes().to_vec();
        inner.extend(crate::wal::encode_frame(std::slice::from_ref(&self.record)));
        crate::wal::frame(&inner)
    }

    /// A change from [`Change::to_bytes`]; damaged or truncated bytes are [`Error::Invalid`],
    /// never a wrong change.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |message: &str| Error::Invalid {
            what: "change",
            message: message.to_owned(),
        };
        let inner = crate::wal::unframe(bytes).map_err(bad)?;
        let (head, frame) = inner
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("shorter than a shard number"))?;
        let mut records = crate::wal::decode_frame(frame).map_err(bad)?;
        if records.len() != 1 {
            return Err(bad("a change holds exactly one record"));
        }
        Ok(Self {
            shard: u32::from_le_bytes(*head) as usize,
            record: records.remove(0),
        })
    }
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub shards: usize,
    pub subjects: usize,
    pub templates: usize,
    /// Empty when the gallery is consistent.
    pub problems: Vec<String>,
    /// Findings that are not damage (kept tails of earlier recoveries, who holds the lock).
    pub notes: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What `open` found and did, shard by shard: every recovery is reported here (and printed by
/// the CLI, exposed by the bindings), never silent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenReport {
    pub dir: PathBuf,
    pub read_only: bool,
    /// The shards opened, in shard order.
    pub shards: Vec<ShardReport>,
}

impl OpenReport {
    /// Whether opening found nothing to recover or report.
    pub fn is_clean(&self) -> bool {
        self.shards.iter().all(ShardReport::is_clean)
    }

    /// One line per finding, naming the files (empty when clean).
    pub fn messages(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(|s| s.messages(&shard_dir(&self.dir, s.shard)))
            .collect()
    }

    /// Log records replayed over all shards.
    pub fn records_replayed(&self) -> usize {
        self.shards.iter().map(|s| s.records_replayed).sum()
    }
}

/// A persistent, sharded gallery. `Send + Sync`: searches run while enrollments happen (one
/// writer per shard at a time).
pub struct Gallery {
    dir: PathBuf,
    manifest: RwLock<Manifest>,
    router: ShardRouter,
    /// Indexed by shard number; `None` for shards another host serves.
    shards: Vec<Option<RwLock<Shard>>>,
    /// Per shard: the next template id is `k × shards + shard` for the next `k`, so that hosts
    /// serving different shards never hand out the same id.
    next_k: Vec<AtomicU64>,
    calibration: CalibrationTable,
    indexing: Mutex<()>,
    /// Fixed at open: copied out of the manifest for the hot paths.
    fingerprint: ModelFingerprint,
    dimension: usize,
    metric: Metric,
    storage: Arc<dyn Storage>,
    read_only: bool,
    /// An encrypted gallery's key-encryption key (replaced by `rotate_kek`).
    kek: Mutex<Option<Key>>,
    /// Fixed at open: whether the gallery is encrypted (the hot paths skip the key ring).
    encrypted: bool,
}

fn shard_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("shard-{i:03}"))
}

/// For infallible accessors (counts, lists): a shard poisoned by a panic still answers them
/// from its last state; every fallible call reports [`Error::Poisoned`] instead.
fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn read_shard(l: &RwLock<Shard>, shard: usize) -> Result<std::sync::RwLockReadGuard<'_, Shard>> {
    l.read().map_err(|_| Error::Poisoned { shard })
}

fn write_shard(l: &RwLock<Shard>, shard: usize) -> Result<std::sync::RwLockWriteGuard<'_, Shard>> {
    l.write().map_err(|_| Error::Poisoned { shard })
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Gallery {
    /// Create a new, empty gallery in `dir` (which must not hold one already).
    ///
    /// The shards' folders and logs are made first and the manifest last, so an interrupted
    /// create leaves no gallery (and a folder that `create` refuses until it is emptied).
    pub fn create(dir: &Path, options: &GalleryOptions) -> Result<Self> {
        let storage = options.storage.as_ref();
        let path = dir.join("manifest.json");
        let io = |p: &Path, e| Error::Io {
            path: p.to_owned(),
            source: e,
        };
        if storage.exists(&path).map_err(|e| io(&path, e))? {
            return Err(Error::Exists { path });
        }
        check_shards(options.shards)?;
        let hnsw = HnswParams {
            dimensions: options.dimension,
            ..options.hnsw
        };
        check_hnsw(&hnsw)?;
        if !(1..=uniface_core::template::MAX_DIM).contains(&options.dimension) {
            return Err(Error::Invalid {
                what: "dimension",
                message: format!(
                    "{}; templates have 1 to {} values",
                    options.dimension,
                    uniface_core::template::MAX_DIM
                ),
            });
        }
        storage.create_dir(dir).map_err(|e| io(dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage.sync_dir(parent).map_err(|e| io(parent, e))?;
        }
        for i in 0..options.shards {
            let d = shard_dir(dir, i);
            if storage.exists(&d).map_err(|e| io(&d, e))? {
                return Err(Error::Exists { path: d });
            }
        }
        let kek = options.encryption.as_ref().map(|p| p.key()).transpose()?;
        for i in 0..options.shards {
            Shard::create(storage, &shard_dir(dir, i), i, kek.as_ref())?;
        }
        let mut manifest = Manifest {
            format_version: FORMAT_VERSION,
            model_id: options.fingerprint.model_id.clone(),
            weights_sha256: options.fingerprint.to_hex(),
            preprocessing: options.fingerprint.preprocessing,
            dimension: options.dimension,
            metric: Metric::Euclidean,
            element: options.element.name().into(),
            shards: options.shards,
            hnsw,
            encryption: kek.as_ref().map(|_| crate::keys::CIPHER.to_owned()),
            checksum: String::new(),
        };
        write_manifest(storage, dir, &mut manifest)?;
        let open = OpenOptions {
            durability: options.durability,
            storage: options.storage.clone(),
            key: kek.map(|k| Arc::new(k) as Arc<dyn KeyProvider>),
            ..OpenOptions::default()
        };
        Ok(Self::open_with(dir, manifest, &open)?.0)
    }

    /// Open an existing gallery, refusing one made with another model than `expected`.
    pub fn open(
        dir: &Path,
        expected: &ModelFingerprint,
        durability: Durability,
    ) -> Result<(Self, OpenReport)> {
        let options = OpenOptions {
            durability,
            ..OpenOptions::default()
        };
        Self::open_with_options(dir, expected, &options)
    }

    /// [`Gallery::open`] with more options (e.g. memory-mapped graphs).
    pub fn open_with_options(
        dir: &Path,
        expected: &ModelFingerprint,
        options: &OpenOptions,
    ) -> Result<(Self, OpenReport)> {
        let manifest = read_manifest(options.storage.as_ref(), &dir.join("manifest.json"))?;
        if manifest.fingerprint().as_ref() != Some(expected) {
            return Err(Error::Core(uniface_core::Error::FingerprintMismatch {
                left: manifest.model_id.clone(),
                right: expected.model_id.clone(),
            }));
        }
        Self::open_with(dir, manifest, options)
    }

    fn open_with(
        dir: &Path,
        manifest: Manifest,
        options: &OpenOptions,
    ) -> Result<(Self, OpenReport)> {
        let element = manifest.element()?;
        let fingerprint = manifest.fingerprint().ok_or_else(|| Error::Corrupt {
            path: dir.join("manifest.json"),
            message: "weights_sha256 is not 64 hex digits".into(),
        })?;
        let n = manifest.shards;
        let wanted: Vec<usize> = match options.shard {
            Some(i) if i >= n => {
                return Err(Error::ShardCount {
                    expected: n,
                    got: i + 1,
                })
            }
            Some(i) => vec![i],
            None => (0..n).collect(),
        };
        let manifest_path = dir.join("manifest.json");
        let kek = match (&manifest.encryption, &options.key) {
            (Some(cipher), Some(p)) => {
                if cipher != crate::keys::CIPHER {
                    return Err(Error::Corrupt {
                        path: manifest_path,
                        message: format!("unknown cipher {cipher:?}"),
                    });
                }
                if options.view {
                    return Err(Error::Invalid {
                        what: "open options",
                        message: "the graphs of an encrypted gallery are decrypted into memory; they cannot be memory-mapped (open without `view`)".into(),
                    });
                }
                Some(p.key()?)
            }
            (Some(_), None) => {
                return Err(Error::Crypto {
                    path: manifest_path,
                    source: uniface_core::Error::Crypto {
                        message: "the gallery is encrypted: open it with its key-encryption key (`OpenOptions::key`, `--key-file`)".into(),
                    },
                })
            }
            (None, Some(_)) => {
                return Err(Error::Invalid {
                    what: "open options",
                    message: format!(
                        "a key was given but the gallery at {} is not encrypted (encryption is chosen when a gallery is created)",
                        dir.display()
                    ),
                })
            }
            (None, None) => None,
        };
        let previous_kek = options.previous_key.as_ref().map(|p| p.key()).transpose()?;
        let shard_options = ShardOptions {
            durability: options.durability,
            view: options.view,
            read_only: options.read_only,
            salvage: options.salvage,
            lock_timeout: options.lock_timeout,
            kek: kek.clone(),
            previous_kek,
        };
        let (opened, reports): (Vec<Shard>, Vec<ShardReport>) = wanted
            .par_iter()
            .map(|&i| {
                Shard::open(
                    &options.storage,
                    i,
                    &shard_dir(dir, i),
                    element,
                    &manifest.hnsw,
                    &shard_options,
                )
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        // ids above every id on the loaded shards, striped by shard
        let max_id = opened
            .iter()
            .filter_map(|s| s.state.max_template_id())
            .max()
            .unwrap_or(0);
        let next_k = (0..n)
            .map(|s| AtomicU64::new(first_k_above(max_id, s, n)))
            .collect();
        let report = OpenReport {
            dir: dir.to_owned(),
            read_only: options.read_only,
            shards: reports,
        };
        let mut shards: Vec<Option<RwLock<Shard>>> = (0..n).map(|_| None).collect();
        for (i, shard) in wanted.into_iter().zip(opened) {
            shards[i] = Some(RwLock::new(shard));
        }
        let calibration = calibration::default_table()?.clone();
        Ok((
            Self {
                dir: dir.to_owned(),
                router: ShardRouter::new(n),
                dimension: manifest.dimension,
                metric: manifest.metric,
                fingerprint,
                manifest: RwLock::new(manifest),
                shards,
                next_k,
                calibration,
                indexing: Mutex::new(()),
                storage: options.storage.clone(),
                read_only: options.read_only,
                encrypted: kek.is_some(),
                kek: Mutex::new(kek),
            },
            report,
        ))
    }

    /// Whether the gallery was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the gallery is encrypted at rest ([`GalleryOptions::encryption`]).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// The id of the key-encryption key the gallery is opened with (`None` when it is not
    /// encrypted): safe to show and log.
    pub fn key_id(&self) -> Option<uniface_core::crypto::KeyId> {
        self.kek_now().map(|k| k.id())
    }

    fn kek_now(&self) -> Option<Key> {
        self.kek.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-wrap every data key of every shard held here under `new` (no template is written
    /// again; each shard's key log is replaced atomically). From then on only `new` opens the
    /// gallery. If it fails part-way, shards already rotated need `new` and the others the old
    /// key: open with `key = new` and `previous_key = old` to finish (or call this again).
    pub fn rotate_kek(&self, new: &dyn KeyProvider) -> Result<()> {
        self.writable()?;
        if !self.encrypted {
            return Err(Error::Invalid {
                what: "key rotation",
                message: format!("the gallery at {} is not encrypted", self.dir.display()),
            });
        }
        let new = new.key()?;
        let mut kek = self.kek.lock().unwrap_or_else(|e| e.into_inner());
        for (i, s) in self.loaded() {
            let mut s = write_shard(s, i)?;
            if let Some(k) = s.keys.as_mut() {
                if k.kek_id() != new.id() {
                    k.rotate(&new)?;
                }
            }
        }
        *kek = Some(new);
        Ok(())
    }

    fn writable(&self) -> Result<()> {
        match self.read_only {
            true => Err(Error::ReadOnly),
            false => Ok(()),
        }
    }

    /// The shards this gallery holds, with their numbers.
    fn loaded(&self) -> impl Iterator<Item = (usize, &RwLock<Shard>)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    fn slot(&self, shard: usize) -> Result<&RwLock<Shard>> {
        match self.shards.get(shard) {
            Some(Some(s)) => Ok(s),
            Some(None) => Err(Error::NotLocal { shard }),
            None => Err(Error::ShardCount {
                expected: self.shards.len(),
                got: shard + 1,
            }),
        }
    }

    /// A new template id on `shard`.
    fn new_id(&self, shard: usize) -> u64 {
        let k = self.next_k[shard].fetch_add(1, Ordering::SeqCst);
        k * self.shards.len() as u64 + shard as u64
    }

    /// The shard numbers this gallery holds (all of them unless opened with
    /// [`OpenOptions::shard`]).
    pub fn local_shards(&self) -> Vec<usize> {
        self.loaded().map(|(i, _)| i).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest as it is now (graph parameters change with `rebuild`).
    pub fn manifest(&self) -> Manifest {
        read_lock(&self.manifest).clone()
    }

    fn fingerprint_matches(&self, f: &ModelFingerprint) -> bool {
        *f == self.fingerprint
    }

    pub fn router(&self) -> ShardRouter {
        self.router
    }

    /// Use another calibration table for open-set decisions (e.g. from `uniface calibrate`).
    pub fn set_calibration(&mut self, table: CalibrationTable) {
        self.calibration = table;
    }

    /// A template's vector, if it is of this gallery's model and dimension (stored templates
    /// are validated in full before they are logged, by `validate`).
    fn check_template(&self, t: &Template) -> Result<Vec<f32>> {
        if !self.fingerprint_matches(t.fingerprint()) {
            return Err(Error::Core(uniface_core::Error::FingerprintMismatch {
                left: self.fingerprint.model_id.clone(),
                right: t.fingerprint().model_id.clone(),
            }));
        }
        let v = t.vector();
        if v.len() != self.dimension {
            return Err(Error::Dimension {
                expected: self.dimension,
                got: v.len(),
            });
        }
        Ok(v)
    }

    /// A probe's vector: as [`Gallery::check_template`], and within the values a stored
    /// template may hold (so that every distance is finite).
    fn check_probe(&self, t: &Template) -> Result<Vec<f32>> {
        let v = self.check_template(t)?;
        if let Some(i) = v
            .iter()
            .position(|x| !x.is_finite() || x.abs() > crate::MAX_COMPONENT)
        {
            return Err(Error::Invalid {
                what: "probe",
                message: format!(
                    "value {i} is {}: values must be finite and within ±{}",
                    v[i],
                    crate::MAX_COMPONENT
                ),
            });
        }
        Ok(v)
    }

    /// Validate, log, apply and make durable changes on `shard` (one write, one durability
    /// wait). Nothing is logged unless every change is valid; a logged change that cannot be
    /// applied (a bug) stops the shard's log rather than leave the log and memory apart.
    fn commit_many(&self, shard: usize, ops: Vec<Op>) -> Result<()> {
        self.writable()?;
        for op in &ops {
            validate(op, self.dimension)?;
        }
        let (wal, seq) = {
            let mut s = write_shard(self.slot(shard)?, shard)?;
            let wal = s.wal()?.clone();
            // an id chosen by the caller ([`Gallery::enroll_as`]) may already be taken; the
            // ids this gallery picks never are
            for op in &ops {
                if let Op::Enroll { template_id, .. } = op {
                    if s.state.contains_template(*template_id) {
                        return Err(Error::Invalid {
                            what: "template id",
                            message: format!("{template_id} is already enrolled"),
                        });
                    }
                }
            }
            let first = s.state.last_seq + 1;
            let records: Vec<Record> = ops
                .into_iter()
                .enumerate()
                .map(|(i, op)| Record {
                    seq: first + i as u64,
                    op,
                })
                .collect();
            let sealed = s.seal_records(&records)?;
            let logged = sealed.as_ref().map_or(&records[..], |(r, _)| &r[..]);
            let Some(last) = wal.write(logged)? else {
                return Ok(());
            };
            s.settle_keys(sealed.map(|(_, c)| c));
            for r in &records {
                if let Err(e) = s.state.apply(r) {
                    return Err(wal.stop(format!(
                        "record {} was logged but could not be applied: {e}",
                        r.seq
                    )));
                }
            }
            (wal, last)
        };
        // durability outside the lock, so that concurrent writers share a group commit
        wal.commit(seq)?;
        self.finish_erasure(shard)
    }

    /// Crypto-erasure of subjects removed on `shard` whose removal is durable: their keys are
    /// destroyed before the removal is acknowledged.
    fn finish_erasure(&self, shard: usize) -> Result<()> {
        if !self.encrypted {
            return Ok(());
        }
        let slot = self.slot(shard)?;
        if read_shard(slot, shard)?.erasure_pending() {
            write_shard(slot, shard)?.erase()?;
        }
        Ok(())
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
        self.writable()?;
        for (subject, t) in items {
            if subject.is_empty() {
                return Err(Error::InvalidSubject);
            }
            let vector = self.check_template(t)?;
            let shard = self.router.shard_of(subject);
            self.slot(shard)?;
            let id = self.new_id(shard);
            per_shard[shard].push(Op::Enroll {
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
        self.writable()?;
        if subject.is_empty() {
            return Err(Error::InvalidSubject);
        }
        let vector = self.check_template(template)?;
        let shard = self.router.shard_of(subject);
        self.slot(shard)?;
        let id = self.new_id(shard);
        self.commit(
            shard,
            Op::Enroll {
                subject: subject.to_owned(),
                template_id: id,
                vector,
            },
        )?;
        Ok(id)
    }

    /// Enroll a template under an id the caller chose — a host database's primary key, so that
    /// a service applying the same event twice (a message queue's redelivery) changes nothing:
    /// `Ok(false)` when `id` is already enrolled for `subject` (nothing is written), an
    /// [`Error::Invalid`] when it belongs to another subject. Later ids this gallery picks
    /// itself stay above it. Ids are unique per gallery; a gallery split over hosts by
    /// [`OpenOptions::shard`] relies on the caller's ids being unique across them.
    ///
    /// ```
    /// # fn main() -> uniface_index::Result<()> {
    /// use uniface_core::template::{ModelFingerprint, Template};
    /// use uniface_index::{Gallery, GalleryOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let g = Gallery::create(dir.path(), &GalleryOptions::default())?;
    /// let t = Template::new(ModelFingerprint::dlib_resnet_v1(), &[0.1; 128])?;
    /// assert!(g.enroll_as("alice", 41, &t)?); // written
    /// assert!(!g.enroll_as("alice", 41, &t)?); // the same event again: nothing to do
    /// assert!(g.enroll_as("bob", 41, &t).is_err()); // the id is alice's
    /// assert_eq!(g.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn enroll_as(&self, subject: &str, id: u64, template: &Template) -> Result<bool> {
        self.writable()?;
        if subject.is_empty() {
            return Err(Error::InvalidSubject);
        }
        let vector = self.check_template(template)?;
        let taken = |g: &Self| g.template(id).map(|(owner, _)| owner == subject);
        match taken(self) {
            Some(true) => return Ok(false),
            Some(false) => return Err(taken_by_other(id)),
            None => {}
        }
        let shard = self.router.shard_of(subject);
        self.slot(shard)?;
        let n = self.shards.len();
        for (k, next) in self.next_k.iter().enumerate() {
            next.fetch_max(first_k_above(id, k, n), Ordering::SeqCst);
        }
        let enrolled = self.commit(
            shard,
            Op::Enroll {
                subject: subject.to_owned(),
                template_id: id,
                vector,
            },
        );
        match enrolled {
            Ok(()) => Ok(true),
            // a concurrent call with the same id got there first
            Err(Error::Invalid {
                what: "template id",
                ..
            }) => match taken(self) {
                Some(true) => Ok(false),
                _ => Err(taken_by_other(id)),
            },
            Err(e) => Err(e),
        }
    }

    /// Remove one template; `false` when there is no such template.
    pub fn remove_template(&self, id: u64) -> Result<bool> {
        self.writable()?;
        for (i, s) in self.loaded() {
            if read_shard(s, i)?.state.contains_template(id) {
                self.commit(i, Op::RemoveTemplate { template_id: id })?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Remove a subject with all its templates and metadata; returns how many templates went.
    /// The data leaves every file at the next [`Gallery::checkpoint`]. In an encrypted gallery
    /// the subject's key is destroyed before this returns (crypto-erasure): its templates in
    /// every file, and in copies of the files, can no longer be opened with the key log.
    pub fn remove_subject(&self, subject: &str) -> Result<usize> {
        self.writable()?;
        let shard = self.router.shard_of(subject);
        let (found, keyed) = {
            let s = read_shard(self.slot(shard)?, shard)?;
            (
                s.state.subjects.get(subject).map(|s| s.templates.len()),
                s.has_key_for(subject),
            )
        };
        let n = match found {
            Some(n) => n,
            // no longer in the state (its last template removed by id) but its key lives: the
            // removal is logged all the same, so that the key is destroyed
            None if keyed => 0,
            None => {
                // (a retry after an erasure that failed: its keys go now)
                self.finish_erasure(shard)?;
                return Ok(0);
            }
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

    /// A subject's templates and metadata (`None` when it is not enrolled, or lives on a
    /// shard this gallery does not hold).
    pub fn get(&self, subject: &str) -> Option<Subject> {
        let s = self.slot(self.router.shard_of(subject)).ok()?;
        read_lock(s).state.subjects.get(subject).cloned()
    }

    /// A template's subject and stored vector (`None` when there is no such template here).
    pub fn template(&self, id: u64) -> Option<(String, Vec<f32>)> {
        self.loaded().find_map(|(_, s)| {
            read_lock(s)
                .state
                .entry(id)
                .map(|(subject, v)| (subject.to_owned(), v.to_vec()))
        })
    }

    /// Every subject id, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .loaded()
            .flat_map(|(_, s)| {
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
        self.loaded()
            .map(|(_, s)| read_lock(s).state.template_count())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Who is this? The `k` best subjects (candidates from every shard, re-scored exactly in
    /// f32, best template per subject) and the open-set decision: `open_set` is a per-comparison
    /// FMR (a plain `f64`) or an [`OpenSet::Fpir`] target.
    pub fn identify(
        &self,
        probe: &Template,
        k: usize,
        open_set: impl Into<OpenSet>,
    ) -> Result<Identification> {
        let v = self.check_probe(probe)?;
        let (fmr, fpir) = match open_set.into() {
            OpenSet::Fmr(f) => (f, None),
            OpenSet::Fpir(f) => (self.fmr_for_fpir(f)?, Some(f)),
        };
        let threshold = self.calibration.threshold_for_fmr(fmr)?;
        // a caller's `k` never sizes an allocation: there are at most `len` candidates
        let k = k.min(self.len());
        // oversample so that one subject's several templates cannot crowd others out
        let per_shard = k.saturating_mul(4).max(8);
        let local: Vec<(usize, &RwLock<Shard>)> = self.loaded().collect();
        let mut found = if local.len() == 1 {
            // no hand-off to the thread pool for a single shard: it costs more than it saves
            self.search_shard(local[0], &v, k, per_shard)?
        } else {
            local
                .par_iter()
                .map(|&s| self.search_shard(s, &v, k, per_shard))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect()
        };
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
            fpir,
        })
    }

    /// One shard's best `k` subjects for `v` from `per_shard` candidates, re-scored exactly.
    fn search_shard(
        &self,
        (i, shard): (usize, &RwLock<Shard>),
        v: &[f32],
        k: usize,
        per_shard: usize,
    ) -> Result<Vec<Candidate>> {
        let s = read_shard(shard, i)?;
        let mut scored: Vec<(f32, u64, &str)> = Vec::with_capacity(per_shard * 2);
        for (id, _) in s.state.nearest(v, self.metric, per_shard)? {
            if let Some((subject, exact)) = s.state.entry(id) {
                let d = uniface_core::compare::distance(self.metric, v, exact)?;
                scored.push((d, id, subject));
            }
        }
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.2.cmp(b.2)));
        let mut out: Vec<Candidate> = Vec::with_capacity(k);
        for (d, id, subject) in scored {
            if out.len() == k {
                break;
            }
            if out.iter().all(|c| c.subject != subject) {
                out.push(Candidate {
                    subject: subject.to_owned(),
                    template_id: id,
                    distance: d,
                    similarity: self.metric.similarity(d),
                });
            }
        }
        Ok(out)
    }

    /// Possible duplicate identities: pairs of *different* subjects with templates closer
    /// than the calibrated threshold for `fmr` per comparison (one person enrolled under two
    /// names, or two people the model cannot tell apart), closest first, each pair once with
    /// its closest templates. Every template is searched like a probe (graph candidates
    /// re-scored exactly, its [`DUPLICATE_NEIGHBOURS`] nearest other subjects); memory holds
    /// the template ids and the pairs found, never the vectors at once. `progress(k)` counts
    /// templates searched.
    ///
    /// Among *n* templates there are about *n²/2* comparisons, so `fmr` must be small for
    /// the false pairs to be few: at 1e-3 expect about `fmr × n² / 2` of them in a gallery
    /// of strangers (`docs/GALLERY.md`).
    pub fn duplicates(&self, fmr: f64, progress: &(dyn Fn(u64) + Sync)) -> Result<Vec<Duplicate>> {
        let threshold = self.calibration.threshold_for_fmr(fmr)?;
        let ids: Vec<u64> = self
            .loaded()
            .map(|(i, s)| Ok(read_shard(s, i)?.state.template_ids().collect::<Vec<_>>()))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let k = DUPLICATE_NEIGHBOURS.min(self.len());
        let per_shard = k.saturating_mul(4).max(8);
        let local: Vec<(usize, &RwLock<Shard>)> = self.loaded().collect();
        let found: Vec<Vec<Duplicate>> = ids
            .par_iter()
            .map(|&id| {
                let Some((subject, v)) = self.template(id) else {
                    return Ok(Vec::new()); // removed meanwhile
                };
                let mut out = Vec::new();
                for &shard in &local {
                    for c in self.search_shard(shard, &v, k + 1, per_shard)? {
                        if c.subject != subject && c.distance < threshold {
                            out.push(Duplicate::new(&subject, id, c, self.metric));
                        }
                    }
                }
                progress(1);
                Ok(out)
            })
            .collect::<Result<_>>()?;
        let mut best: HashMap<(String, String), Duplicate> = HashMap::new();
        for d in found.into_iter().flatten() {
            let key = (d.subjects[0].clone(), d.subjects[1].clone());
            match best.get(&key) {
                Some(b) if (b.distance, b.templates) <= (d.distance, d.templates) => {}
                _ => {
                    best.insert(key, d);
                }
            }
        }
        let mut out: Vec<Duplicate> = best.into_values().collect();
        out.sort_by(|a, b| {
            a.distance
                .total_cmp(&b.distance)
                .then_with(|| a.subjects.cmp(&b.subjects))
        });
        Ok(out)
    }

    /// Enroll `template` for `subject` and report who else it matches: the identification of
    /// the template restricted to *other* subjects (up to `k`, with `known` set when the
    /// closest is under the threshold of `open_set`). Nothing is refused: the host decides
    /// what a possible duplicate means (a second look, a fraud case). The search runs before
    /// the enrollment, so the new template never matches itself.
    pub fn enroll_reporting_duplicates(
        &self,
        subject: &str,
        template: &Template,
        k: usize,
        open_set: impl Into<OpenSet>,
    ) -> Result<(u64, Identification)> {
        let open_set = open_set.into();
        let mut found = if self.is_empty() {
            let (fmr, fpir) = match open_set {
                OpenSet::Fmr(f) => (f, None),
                OpenSet::Fpir(f) => (f, Some(f)),
            };
            self.check_probe(template)?;
            Identification {
                candidates: Vec::new(),
                known: None,
                threshold: self.calibration.threshold_for_fmr(fmr)?,
                fmr,
                fpir,
            }
        } else {
            self.identify(template, k.saturating_add(1), open_set)?
        };
        found.candidates.retain(|c| c.subject != subject);
        found.candidates.truncate(k);
        found.known = found
            .candidates
            .first()
            .filter(|c| c.distance < found.threshold)
            .map(|c| c.subject.clone());
        let id = self.enroll(subject, template)?;
        Ok((id, found))
    }

    /// The per-comparison false-match rate that gives a false-positive identification rate of
    /// `fpir` over the templates enrolled now (see [`OpenSet::Fpir`]).
    pub fn fmr_for_fpir(&self, fpir: f64) -> Result<f64> {
        if !(fpir > 0.0 && fpir < 1.0) {
            return Err(Error::Core(uniface_core::Error::InvalidArgument {
                name: "fpir",
                message: format!("must lie in (0, 1), got {fpir}"),
            }));
        }
        Ok(uniface_core::calibration::per_comparison_fmr(
            fpir,
            self.len() as u64,
        )?)
    }

    /// [`Gallery::identify`] for many probes, in parallel on the rayon pool.
    pub fn identify_batch(
        &self,
        probes: &[Template],
        k: usize,
        open_set: impl Into<OpenSet>,
    ) -> Result<Vec<Identification>> {
        let open_set = open_set.into();
        probes
            .par_iter()
            .map(|p| self.identify(p, k, open_set))
            .collect()
    }

    /// 1:1 against a claimed subject: the decision on its closest template, held to `fmr` for
    /// the subject as a whole. The best of a subject's *m* templates falls below a
    /// per-comparison threshold up to *m* times as often as one does, so the threshold is the
    /// one for `1 − (1 − fmr)^(1/m)` per comparison
    /// ([`CalibrationTable::decide_best_of`]); [`calibration::Decision::comparisons`] is *m*.
    /// `None` when the subject is not enrolled.
    pub fn verify(
        &self,
        subject: &str,
        probe: &Template,
        fmr: f64,
    ) -> Result<Option<calibration::Decision>> {
        let v = self.check_probe(probe)?;
        let shard = self.router.shard_of(subject);
        let s = read_shard(self.slot(shard)?, shard)?;
        let Some(entry) = s.state.subjects.get(subject) else {
            return Ok(None);
        };
        let mut best: Option<f32> = None;
        let mut compared = 0u32;
        for id in &entry.templates {
            if let Some(t) = s.state.vector(*id) {
                let d = uniface_core::compare::distance(self.metric, &v, t)?;
                best = Some(best.map_or(d, |b: f32| b.min(d)));
                compared = compared.saturating_add(1);
            }
        }
        match best {
            Some(d) => Ok(Some(self.calibration.decide_best_of(d, fmr, compared)?)),
            None => Ok(None),
        }
    }

    /// Fold every shard's log into its snapshot and empty the log.
    pub fn checkpoint(&self) -> Result<()> {
        self.writable()?;
        for (i, s) in self.loaded() {
            write_shard(s, i)?.checkpoint()?;
        }
        Ok(())
    }

    /// Save every shard's search graph (without a checkpoint), so that a reopen loads it
    /// instead of indexing again; shards with templates removed since their graph was built
    /// are left to the next checkpoint (the graph still holds the removed templates' bytes).
    /// Returns how many graphs were saved.
    pub fn save_graphs(&self) -> Result<usize> {
        self.writable()?;
        // usearch must not save while an insertion or a search runs: no indexer, no reader
        let _one_indexer = self.indexing.lock().unwrap_or_else(|e| e.into_inner());
        let mut saved = 0;
        for (i, s) in self.loaded() {
            saved += usize::from(write_shard(s, i)?.save_graph()?);
        }
        Ok(saved)
    }

    /// The last sequence number applied on each shard (a replica's position in the feed),
    /// indexed by shard number; 0 for shards this gallery does not hold.
    pub fn positions(&self) -> Vec<u64> {
        self.shards
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| read_lock(s).state.last_seq))
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
        for (i, s) in self.loaded() {
            let from = since[i];
            let s = read_shard(s, i)?;
            // only what is durable: a change written but not yet synced may still be lost
            let upto = match s.wal() {
                Ok(w) => w.durable_seq().min(s.state.last_seq),
                Err(_) => s.state.last_seq,
            };
            if from >= upto {
                continue;
            }
            let records = s.open_records(
                crate::wal::read_log(self.storage.as_ref(), &Shard::wal_path(&s.dir))?.records,
            )?;
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
                    .filter(|r| r.seq > from && r.seq <= upto)
                    .map(|record| Change { shard: i, record }),
            );
        }
        Ok(out)
    }

    /// Apply a feed from another gallery with the same manifest (a replica catching up).
    /// Changes already applied are skipped, so a feed may be applied twice; a gap in the
    /// sequence is an error; changes of shards this gallery does not hold are skipped (a
    /// one-shard replica may tail a whole gallery's feed). Returns how many were applied.
    pub fn apply_changes(&self, changes: &[Change]) -> Result<usize> {
        self.writable()?;
        let mut applied = 0;
        for c in changes {
            let shard = match self.slot(c.shard) {
                Ok(s) => s,
                Err(Error::NotLocal { .. }) => continue,
                Err(e) => return Err(e),
            };
            validate(&c.record.op, self.dimension)?;
            let (wal, seq) = {
                let mut s = write_shard(shard, c.shard)?;
                let wal = s.wal()?.clone();
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
                    let n = self.shards.len();
                    for (k, next) in self.next_k.iter().enumerate() {
                        next.fetch_max(first_k_above(*template_id, k, n), Ordering::SeqCst);
                    }
                }
                let one = std::slice::from_ref(&c.record);
                let sealed = s.seal_records(one)?;
                wal.write(sealed.as_ref().map_or(one, |(r, _)| &r[..]))?;
                s.settle_keys(sealed.map(|(_, c)| c));
                if let Err(e) = s.state.apply(&c.record) {
                    return Err(wal.stop(format!(
                        "record {} was logged but could not be applied: {e}",
                        c.record.seq
                    )));
                }
                (wal, c.record.seq)
            };
            wal.commit(seq)?;
            self.finish_erasure(c.shard)?;
            applied += 1;
        }
        Ok(applied)
    }

    /// Check the gallery: every file re-read from disk and verified as [`check`] does, and the
    /// state the disk holds compared with this open gallery's memory (template ids, subjects,
    /// metadata, sequence numbers). No write lands between the two (the shards are read-locked).
    pub fn check(&self) -> Result<CheckReport> {
        // (the manifest and the key before the shards: `set_expansion_search` and
        // `rotate_kek` take them in that order; the key held throughout, so that no rotation
        // runs between reading it and reading the shards)
        let manifest = self.manifest();
        let kek_guard = self.kek.lock().unwrap_or_else(|e| e.into_inner());
        let kek = kek_guard.clone();
        let guards = self
            .loaded()
            .map(|(i, s)| read_shard(s, i).map(|g| (i, g)))
            .collect::<Result<Vec<_>>>()?;
        let local: Vec<usize> = guards.iter().map(|(i, _)| *i).collect();
        let (mut report, on_disk) =
            check_files(&self.storage, &self.dir, Some(&local), kek.as_ref());
        if let Ok(m) = read_manifest(self.storage.as_ref(), &self.dir.join("manifest.json")) {
            if m != manifest {
                report
                    .problems
                    .push("manifest.json differs from the open gallery's".into());
            }
        }
        for (i, g) in &guards {
            if let Some(why) = g.wal().ok().and_then(|w| w.failure()) {
                report.problems.push(format!(
                    "shard {i}: its log stopped accepting writes ({why}); what it holds since is not known to be durable: reopen the gallery"
                ));
            }
            if let Some(disk) = on_disk.get(i) {
                report.problems.extend(
                    compare_states(&g.state, disk)
                        .into_iter()
                        .map(|p| format!("shard {i}: {p}")),
                );
            }
        }
        Ok(report)
    }

    /// Move up to `max_per_shard` pending templates of each shard into its HNSW graph (in
    /// parallel on the rayon pool); returns how many were indexed. Until then they are found
    /// by exact scan, so enrollment never waits for the graph: [`Gallery::spawn_indexer`] runs
    /// this in the background, or a host calls it itself. Searches continue while it runs;
    /// writers to a shard wait for the batch being inserted into it.
    pub fn index_pending(&self, max_per_shard: usize) -> Result<usize> {
        let _one_indexer = self.indexing.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0;
        for (i, shard) in self.loaded() {
            let (generation, batch) = write_shard(shard, i)?.state.take_pending(max_per_shard)?;
            if batch.is_empty() {
                continue;
            }
            {
                let s = read_shard(shard, i)?;
                let graph = &s.state.hnsw;
                if graph.generation() != generation {
                    continue; // a checkpoint or a rebuild replaced the graph meanwhile
                }
                // on threads of our own, not rayon's: searches on the pool that wait for this
                // shard (behind a waiting writer) must not starve the insertion holding it
                let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
                let chunk = batch.len().div_ceil(workers).max(1);
                std::thread::scope(|sc| {
                    let jobs: Vec<_> = batch
                        .chunks(chunk)
                        .map(|part| {
                            sc.spawn(move || {
                                part.iter()
                                    .filter(|(id, _)| !graph.contains(*id))
                                    .try_for_each(|(id, v)| graph.add(*id, v))
                            })
                        })
                        .collect();
                    jobs.into_iter().try_for_each(|j| {
                        j.join().unwrap_or_else(|_| {
                            Err(Error::Usearch("an indexing thread panicked".into()))
                        })
                    })
                })?;
            }
            let ids: Vec<u64> = batch.iter().map(|b| b.0).collect();
            write_shard(shard, i)?.state.finish_indexing(&ids)?;
            done += ids.len();
        }
        Ok(done)
    }

    /// Build every shard's graph again from the template store with new parameters (e.g. a
    /// larger `connectivity`, or another graph storage), then checkpoint. Each new graph is
    /// built beside the old one, so searches and enrollments go on meanwhile; templates
    /// enrolled during the build are pending in the new graph. Returns the templates indexed.
    pub fn rebuild(&self, params: HnswParams) -> Result<usize> {
        self.writable()?;
        let params = HnswParams {
            dimensions: self.dimension,
            ..params
        };
        check_hnsw(&params)?;
        let _one_indexer = self.indexing.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0;
        for (i, shard) in self.loaded() {
            let all = read_shard(shard, i)?.state.all_vectors();
            let mut graph = crate::hnsw::Hnsw::new(&params)?;
            graph.reserve(all.len())?;
            all.par_iter().try_for_each(|(id, v)| graph.add(*id, v))?;
            let ids: Vec<u64> = all.into_iter().map(|(id, _)| id).collect();
            write_shard(shard, i)?.state.install_graph(graph, &ids)?;
            done += ids.len();
        }
        // the new graphs first, then the manifest that names their parameters: a crash
        // between the two leaves graphs that fail their check against the manifest on the next
        // open and are rebuilt (reported), never a graph used with the wrong parameters
        self.checkpoint()?;
        let mut m = write_lock(&self.manifest);
        let mut next = m.clone();
        next.hnsw = params;
        write_manifest(self.storage.as_ref(), &self.dir, &mut next)?;
        *m = next;
        Ok(done)
    }

    /// Change the graphs' search expansion ("ef": more candidates, higher recall, slower) and
    /// record it in the manifest.
    pub fn set_expansion_search(&self, ef: usize) -> Result<()> {
        self.writable()?;
        let mut m = write_lock(&self.manifest);
        let mut next = m.clone();
        next.hnsw.expansion_search = ef;
        check_hnsw(&next.hnsw)?;
        write_manifest(self.storage.as_ref(), &self.dir, &mut next)?;
        for (i, shard) in self.loaded() {
            write_shard(shard, i)?.state.hnsw.set_expansion_search(ef);
        }
        *m = next;
        Ok(())
    }

    /// Start a background thread that moves pending templates into the graphs in batches of
    /// `batch` per shard, sleeping `idle` when there is nothing to do. It stops when the
    /// returned [`Indexer`] is dropped (or [`Indexer::stop`]ped) or the gallery is dropped.
    pub fn spawn_indexer(self: &Arc<Self>, batch: usize, idle: Duration) -> Indexer {
        let gallery: Weak<Self> = Arc::downgrade(self);
        let stop = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let indexed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, last_error, indexed) = (stop.clone(), last_error.clone(), indexed.clone());
            std::thread::Builder::new()
                .name("uniface-indexer".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let Some(g) = gallery.upgrade() else { break };
                        let result = g.index_pending(batch.max(1));
                        drop(g);
                        match result {
                            Ok(0) => std::thread::park_timeout(idle),
                            Ok(n) => {
                                indexed.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                *last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(e.to_string());
                                std::thread::park_timeout(idle);
                            }
                        }
                    }
                })
                .ok()
        };
        Indexer {
            stop,
            thread,
            last_error,
            indexed,
        }
    }

    /// Templates enrolled but not yet in a graph.
    pub fn pending(&self) -> usize {
        self.loaded()
            .map(|(_, s)| read_lock(s).state.pending.len())
            .sum()
    }

    /// Make every log durable now (for `Async` and `Group` modes).
    pub fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        for (i, s) in self.loaded() {
            let wal = read_shard(s, i)?.wal()?.clone();
            wal.flush()?;
        }
        Ok(())
    }
}

/// The handle of a background indexer ([`Gallery::spawn_indexer`]); dropping it stops the
/// thread (after the batch in progress).
pub struct Indexer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    last_error: Arc<Mutex<Option<String>>>,
    indexed: Arc<AtomicU64>,
}

impl Indexer {
    /// Whether the thread is running (it could not be spawned, or it stopped because the
    /// gallery was dropped, when not).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Templates it has moved into graphs so far.
    pub fn indexed(&self) -> u64 {
        self.indexed.load(Ordering::Relaxed)
    }

    /// The last error `index_pending` returned (the thread keeps trying).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stop and wait for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The smallest `k ≥ 1` with `k × shards + shard > id`: the first striped id of `shard` above
/// `id`.
fn taken_by_other(id: u64) -> Error {
    Error::Invalid {
        what: "template id",
        message: format!("{id} is already enrolled for another subject"),
    }
}

fn first_k_above(id: u64, shard: usize, shards: usize) -> u64 {
    let (s, n) = (shard as u64, shards.max(1) as u64);
    if id < s {
        return 1;
    }
    ((id - s) / n + 1).max(1)
}

/// Read, parse and verify `manifest.json` (checksum, format version, ranges); the graph
/// dimension is the manifest's dimension.
fn read_manifest(storage: &dyn Storage, path: &Path) -> Result<Manifest> {
    let corrupt = |message: String| Error::Corrupt {
        path: path.to_owned(),
        message,
    };
    let text = match storage.read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Missing {
                path: path.to_owned(),
                what: "the gallery's manifest (is this a gallery folder?)",
            })
        }
        Err(e) => {
            return Err(Error::Io {
                path: path.to_owned(),
                source: e,
            })
        }
    };
    let version = serde_json::from_slice::<serde_json::Value>(&text)
        .map_err(|e| corrupt(e.to_string()))?
        .get("format_version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(FORMAT_VERSION)) {
        let found = version.map_or("no format version".into(), |v| {
            format!("format version {v}")
        });
        return Err(corrupt(format!(
            "{found}; this library reads version {FORMAT_VERSION} (galleries of version 1 \
             have no checksums: re-create the gallery and enroll again)"
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    if manifest.checksum != manifest.compute_checksum()? {
        return Err(corrupt(format!(
            "checksum mismatch (the file says {:?}): it was damaged or edited",
            manifest.checksum
        )));
    }
    check_shards(manifest.shards).map_err(|e| corrupt(e.to_string()))?;
    if manifest.hnsw.dimensions != manifest.dimension {
        return Err(corrupt(format!(
            "graph dimension {} differs from the dimension {}",
            manifest.hnsw.dimensions, manifest.dimension
        )));
    }
    check_hnsw(&manifest.hnsw).map_err(|e| corrupt(e.to_string()))?;
    manifest.element()?;
    Ok(manifest)
}

/// Write `manifest` with its checksum (which is set in `manifest` too, so that the open
/// gallery's copy equals the file's).
fn write_manifest(storage: &dyn Storage, dir: &Path, manifest: &mut Manifest) -> Result<()> {
    let path = dir.join("manifest.json");
    manifest.checksum = manifest.compute_checksum()?;
    let m = &*manifest;
    let json = serde_json::to_vec_pretty(m).map_err(|e| Error::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    atomic_write(storage, &path, &json)
}

/// Check the gallery in `dir` from its files alone, without opening it (no lock taken, nothing
/// changed; a writer may be running): the manifest's checksum and ranges; in each shard the
/// log (header, every frame's checksum, sequence numbers without gaps from the snapshot's, no
/// damage and no torn tail), the snapshot (present when the log says one must be, checksum,
/// covering the log's start), the graph (checksum file, parameters, loadable), temporary files
/// of interrupted writes; the state they add up to (matrix, template table, subjects agree;
/// every subject on the shard the router assigns). `problems` is empty when all is well.
///
/// An encrypted gallery is checked with [`check_encrypted`] (here its shards are reported
/// unreadable without the key).
pub fn check(dir: &Path) -> Result<CheckReport> {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    Ok(check_files(&storage, dir, None, None).0)
}

/// [`check`] of an encrypted gallery, with its key-encryption key: every sealed record,
/// snapshot block and key is authenticated too.
pub fn check_encrypted(dir: &Path, key: &dyn KeyProvider) -> Result<CheckReport> {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let kek = key.key()?;
    Ok(check_files(&storage, dir, None, Some(&kek)).0)
}

/// [`check`] over any storage, for the shards `only` (all when `None`); also returns each
/// readable shard's state as the disk holds it.
fn check_files(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    only: Option<&[usize]>,
    kek: Option<&Key>,
) -> (CheckReport, std::collections::BTreeMap<usize, State>) {
    let mut report = CheckReport {
        shards: 0,
        subjects: 0,
        templates: 0,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let mut states = std::collections::BTreeMap::new();
    let manifest = match read_manifest(storage.as_ref(), &dir.join("manifest.json")) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(e.to_string());
            return (report, states);
        }
    };
    let element = match manifest.element() {
        Ok(e) => e,
        Err(e) => {
            report.problems.push(e.to_string());
            return (report, states);
        }
    };
    let router = ShardRouter::new(manifest.shards);
    let kek = match (&manifest.encryption, kek) {
        (Some(_), None) => {
            report.problems.push(format!(
                "{} is encrypted: check it with its key-encryption key (`check_encrypted`, `--key-file`)",
                dir.display()
            ));
            return (report, states);
        }
        (None, Some(_)) => {
            report.problems.push(format!(
                "a key was given but {} is not encrypted",
                dir.display()
            ));
            return (report, states);
        }
        (_, k) => k.cloned(),
    };
    let options = ShardOptions {
        durability: Durability::Async,
        view: false,
        read_only: true,
        salvage: false,
        lock_timeout: None,
        kek,
        previous_kek: None,
    };
    for i in 0..manifest.shards {
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        report.shards += 1;
        let sdir = shard_dir(dir, i);
        if let Ok(names) = storage.list(&sdir) {
            for n in names {
                if crate::shard::TEMPORARY_FILES.contains(&n.as_str()) {
                    report.problems.push(format!(
                        "shard {i}: {} was left by an interrupted write (a writer removes it when it opens the gallery)",
                        sdir.join(&n).display()
                    ));
                } else if n.contains(".corrupt-") {
                    report.notes.push(format!(
                        "shard {i}: {} holds bytes cut off by an earlier recovery",
                        sdir.join(&n).display()
                    ));
                }
            }
        }
        let (shard, opened) =
            match Shard::open(storage, i, &sdir, element, &manifest.hnsw, &options) {
                Ok(x) => x,
                Err(e) => {
                    report.problems.push(format!("shard {i}: {e}"));
                    continue;
                }
            };
        if let Some(t) = &opened.torn_tail {
            report.problems.push(format!(
                "shard {i}: {} ends in an unfinished append of {} bytes at byte {} ({}); it was never acknowledged, and the next writer cuts it off",
                Shard::wal_path(&sdir).display(),
                t.bytes,
                t.offset,
                t.reason
            ));
        }
        if let GraphStatus::Dropped { reason } = &opened.graph {
            report.problems.push(format!(
                "shard {i}: the saved graph {} is unusable ({reason}); the next writer re-indexes",
                Shard::hnsw_path(&sdir).display()
            ));
        }
        let st = shard.state;
        report
            .problems
            .extend(st.problems().into_iter().map(|p| format!("shard {i}: {p}")));
        for name in st.subjects.keys() {
            if router.shard_of(name) != i {
                report.problems.push(format!(
                    "shard {i}: subject {name} belongs on another shard"
                ));
            }
        }
        report.subjects += st.subjects.len();
        report.templates += st.template_count();
        states.insert(i, st);
    }
    (report, states)
}

/// Differences between a shard's state in memory and on disk.
fn compare_states(memory: &State, disk: &State) -> Vec<String> {
    let mut p = Vec::new();
    if memory.last_seq != disk.last_seq {
        p.push(format!(
            "memory has applied changes up to sequence {}, the disk holds them up to {}",
            memory.last_seq, disk.last_seq
        ));
    }
    let ids = |s: &State| -> std::collections::BTreeSet<u64> { s.template_ids().collect() };
    let (m, d) = (ids(memory), ids(disk));
    let only_memory: Vec<&u64> = m.difference(&d).take(5).collect();
    let only_disk: Vec<&u64> = d.difference(&m).take(5).collect();
    if !only_memory.is_empty() || !only_disk.is_empty() {
        p.push(format!(
            "{} templates in memory, {} on disk; only in memory: {only_memory:?}, only on disk: {only_disk:?}",
            m.len(),
            d.len()
        ));
    }
    for id in m.intersection(&d) {
        if memory.entry(*id) != disk.entry(*id) {
            p.push(format!("template {id} differs between memory and disk"));
        }
    }
    if memory.subjects != disk.subjects {
        p.push("the subjects (templates or metadata) differ between memory and disk".into());
    }
    p
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
