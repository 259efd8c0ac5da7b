//! Encryption at rest: a shard's key log and the keys it holds.
//!
//! An encrypted gallery ([`crate::GalleryOptions::encryption`]) gives every subject a data key
//! of its own (a random 256-bit [`Key`]), each shard's search graph one more, and each shard an
//! integrity key. The keys live in the shard's `keys.log`, each *wrapped* (sealed) under the
//! host's key-encryption key (KEK); nothing else in the gallery holds them. Templates and
//! metadata are sealed under their subject's key in the log and the snapshot, the graph file
//! under the graph key (XChaCha20-Poly1305, [`uniface_core::crypto`]), each with its place as
//! associated data: a record's shard, sequence number, template id and subject; a snapshot
//! block's shard, snapshot sequence and subject. A record or a block moved elsewhere fails to
//! authenticate, and the snapshot's list of subjects is sealed under the integrity key, so a
//! block cannot be dropped from it either.
//!
//! Removing a subject *destroys* its key: the key log is rewritten without it (a new file,
//! synced, renamed over the old one, the folder synced) before the removal is acknowledged,
//! and the graph key with it (saved graphs hold quantised copies of every template). From then
//! on the subject's templates in every file — old logs, snapshots, and copies of them taken
//! before the removal — cannot be opened with the key log. The destroyed key's id stays in the
//! key log, sealed with its owner, until the next checkpoint, so that the records sealed under
//! it are known to be erased rather than damaged. A copy of `keys.log` taken before the removal
//! still opens them: hosts keep key-log backups apart and expire them (`docs/GALLERY.md`).
//!
//! New keys are made ahead of need, [`SPARE_BATCH`] at a time in one synced append, so that a
//! new subject seldom costs a sync of its own; a spare becomes a subject's with the first
//! record sealed under it. Spares nothing was sealed under are destroyed when a writer opens
//! the shard (a torn enrollment's record must not stay readable under a key handed on).
//!
//! Layout (little-endian): a 20-byte header — magic `UFKL`, `u16` version 1, `u16` 0, the KEK's
//! 8-byte id, `u32` CRC-32C of the 16 bytes before it — then entries, each framed as `u32`
//! length, `u32` CRC-32C, body: `u8` kind (1 a subject's key, 2 a graph key, 3 a destroyed
//! key, 4 a spare, 5 the integrity key), the key's 8-byte id, for kind 1 the subject (`u32` +
//! UTF-8), then (`u32` + envelope) the key wrapped under the KEK — for kind 3 instead the
//! destroyed key's owner sealed under the KEK. A new key is appended and synced before anything
//! sealed under it is written; a torn append (never used) is cut off by the next writer, which
//! keeps its bytes in `keys.log.corrupt-<time>`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uniface_core::crypto::{self, Key, KeyId};
use uniface_core::template::crc32c;
use zeroize::Zeroizing;

use crate::shard::{replace_file, ReplaceError};
use crate::storage::Storage;
use crate::wal::{frame, Op, Record};
use crate::{Error, Result};

/// The name of a shard's key log.
pub(crate) const KEY_LOG: &str = "keys.log";
/// The cipher an encrypted gallery's manifest names.
pub const CIPHER: &str = "xchacha20-poly1305";
/// Spare keys made at once when a batch needs new ones: one key-log sync then serves this many
/// new subjects.
pub const SPARE_BATCH: usize = 256;

const MAGIC: [u8; 4] = *b"UFKL";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 20;
const MAX_ENTRY: u32 = 1 << 16;

const PURPOSE_WRAP: &str = "uniface gallery key v1";
const PURPOSE_DESTROYED: &str = "uniface gallery destroyed key v1";
const PURPOSE_RECORD: &str = "uniface gallery record v1";
const PURPOSE_SNAPSHOT: &str = "uniface gallery snapshot v1";
const PURPOSE_INDEX: &str = "uniface gallery snapshot index v1";
const PURPOSE_GRAPH: &str = "uniface gallery graph v1";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Subject(String),
    Graph,
    /// Made ahead of need; a subject's from the first record sealed under it.
    Spare,
    /// Seals the snapshot's list of subjects.
    Integrity,
}

impl Owner {
    fn kind(&self) -> u8 {
        match self {
            Owner::Subject(_) => 1,
            Owner::Graph => 2,
            Owner::Spare => 4,
            Owner::Integrity => 5,
        }
    }

    /// Bytes that name the owner (the associated data of its wrapped key).
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.kind()];
        if let Owner::Subject(s) = self {
            v.extend_from_slice(s.as_bytes());
        }
        v
    }

    fn decode(b: &[u8]) -> Option<Owner> {
        Some(match *b.first()? {
            1 => Owner::Subject(String::from_utf8(b[1..].to_vec()).ok()?),
            2 => Owner::Graph,
            4 => Owner::Spare,
            5 => Owner::Integrity,
            _ => return None,
        })
    }
}

struct Held {
    owner: Owner,
    key: Key,
    /// As in the file (kept so that rewrites do not seal again).
    wrapped: Vec<u8>,
}

/// A destroyed key: whose it was, and that record as the file holds it.
struct Gone {
    owner: Owner,
    sealed: Vec<u8>,
}

/// What opening a sealed record gave.
pub(crate) enum Opened {
    /// The plain record and the key that sealed it.
    Op(Op, Option<KeyId>),
    /// Sealed under the subject's key, which an erasure destroyed.
    Erased,
}

/// What loading a key log found.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct KeyLogReport {
    /// Where a torn append starts (its bytes held no key in use); a writer cuts it off.
    pub torn_tail: Option<u64>,
    /// Wrapped under the previous KEK (an interrupted rotation): a writer re-wraps it.
    pub rewrapped: bool,
}

/// Key changes of a batch of records, applied once it is logged.
#[derive(Default)]
pub(crate) struct KeyChanges {
    current: HashMap<String, Option<KeyId>>,
    doomed: Vec<(u64, KeyId)>,
}

/// The keys of one shard.
pub(crate) struct KeyRing {
    shard: usize,
    path: PathBuf,
    storage: Arc<dyn Storage>,
    kek: Key,
    keys: HashMap<KeyId, Held>,
    /// Each subject's current key (set by enrollments and by replay).
    by_subject: HashMap<String, KeyId>,
    graph: Option<KeyId>,
    integrity: Option<KeyId>,
    /// Keys made ahead of need, not yet any subject's.
    spares: Vec<KeyId>,
    /// Keys destroyed since the last checkpoint.
    destroyed: HashMap<KeyId, Gone>,
    /// Keys of removed subjects with the removal's sequence number: destroyed once the
    /// removal is durable.
    doomed: Vec<(u64, KeyId)>,
    /// The file's state is not known to be durable (an append that could not be cut back, a
    /// replacement whose folder sync failed): the next change replaces the file first.
    unsynced: Option<String>,
}

fn crypto_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Crypto {
        path: path.to_owned(),
        source: uniface_core::Error::Crypto {
            message: message.into(),
        },
    }
}

fn in_file(path: &Path) -> impl Fn(uniface_core::Error) -> Error + '_ {
    move |source| Error::Crypto {
        path: path.to_owned(),
        source,
    }
}

fn header(kek: KeyId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&kek.0);
    let crc = crc32c(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Associated data of a wrapped key (or a destroyed key's record): shard, id, owner.
fn wrap_aad(shard: usize, id: KeyId, owner: &Owner) -> Vec<u8> {
    let mut a = (shard as u32).to_le_bytes().to_vec();
    a.extend_from_slice(&id.0);
    a.extend_from_slice(&owner.encode());
    a
}

fn destroyed_aad(shard: usize, id: KeyId) -> Vec<u8> {
    let mut a = (shard as u32).to_le_bytes().to_vec();
    a.extend_from_slice(&id.0);
    a
}

fn key_entry(id: KeyId, owner: &Owner, wrapped: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + wrapped.len());
    b.push(owner.kind());
    b.extend_from_slice(&id.0);
    if let Owner::Subject(s) = owner {
        put(&mut b, s.as_bytes());
    }
    put(&mut b, wrapped);
    frame(&b)
}

fn destroyed_entry(id: KeyId, sealed: &[u8]) -> Vec<u8> {
    let mut b = vec![3u8];
    b.extend_from_slice(&id.0);
    put(&mut b, sealed);
    frame(&b)
}

enum Parsed {
    Key(KeyId, Owner, Vec<u8>),
    Destroyed(KeyId, Vec<u8>),
}

fn parse_body(b: &[u8]) -> Option<Parsed> {
    let kind = *b.first()?;
    let id = KeyId(b.get(1..9)?.try_into().ok()?);
    let mut at = 9;
    let mut bytes = || -> Option<&[u8]> {
        let n = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        let s = b.get(at + 4..at + 4 + n)?;
        at += 4 + n;
        Some(s)
    };
    let parsed = match kind {
        1 => {
            let subject = String::from_utf8(bytes()?.to_vec()).ok()?;
            Parsed::Key(id, Owner::Subject(subject), bytes()?.to_vec())
        }
        2 => Parsed::Key(id, Owner::Graph, bytes()?.to_vec()),
        3 => Parsed::Destroyed(id, bytes()?.to_vec()),
        4 => Parsed::Key(id, Owner::Spare, bytes()?.to_vec()),
        5 => Parsed::Key(id, Owner::Integrity, bytes()?.to_vec()),
        _ => return None,
    };
    (at == b.len()).then_some(parsed)
}

/// The valid entry at `at` and its end (`None`: cut short, failing its checksum, or not an
/// entry).
fn frame_at(bytes: &[u8], at: usize) -> Option<(Parsed, usize)> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_ENTRY {
        return None;
    }
    let body = bytes.get(at + 8..at + 8 + len as usize)?;
    if crc32c(body) != crc {
        return None;
    }
    parse_body(body).map(|p| (p, at + 8 + len as usize))
}

/// Bytes of a record's associated data: its place in the log.
fn record_aad(shard: usize, seq: u64, code: u8, template_id: u64, subject: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(21 + subject.len());
    a.extend_from_slice(&(shard as u32).to_le_bytes());
    a.extend_from_slice(&seq.to_le_bytes());
    a.push(code);
    a.extend_from_slice(&template_id.to_le_bytes());
    a.extend_from_slice(subject.as_bytes());
    a
}

fn snapshot_aad(shard: usize, seq: u64, subject: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(12 + subject.len());
    a.extend_from_slice(&(shard as u32).to_le_bytes());
    a.extend_from_slice(&seq.to_le_bytes());
    a.extend_from_slice(subject.as_bytes());
    a
}

/// The list a snapshot's index seals: each subject and the tag of its block.
pub(crate) struct SnapshotIndex(Vec<u8>);

impl SnapshotIndex {
    pub(crate) fn new() -> Self {
        Self(Vec::new())
    }

    /// Add a subject and its sealed block (whose last 16 bytes, the tag, authenticate it).
    pub(crate) fn push(&mut self, subject: &str, sealed: &[u8]) {
        put(&mut self.0, subject.as_bytes());
        self.0
            .extend_from_slice(&sealed[sealed.len().saturating_sub(16)..]);
    }
}

fn read_file(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    match storage.read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing {
            path: path.to_owned(),
            what: "the shard's key log (an encrypted gallery cannot be read without it)",
        }),
        Err(e) => Err(Error::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

impl KeyRing {
    pub(crate) fn path_in(dir: &Path) -> PathBuf {
        dir.join(KEY_LOG)
    }

    /// Write the key log of a new shard: its integrity key wrapped under `kek` (the caller
    /// syncs the directory).
    pub(crate) fn create(storage: &dyn Storage, dir: &Path, shard: usize, kek: &Key) -> Result<()> {
        let key = Key::generate()?;
        let id = key.id();
        let wrapped = crypto::seal(
            kek,
            PURPOSE_WRAP,
            &wrap_aad(shard, id, &Owner::Integrity),
            &key.to_bytes()[..],
        )?;
        let mut bytes = header(kek.id()).to_vec();
        bytes.extend_from_slice(&key_entry(id, &Owner::Integrity, &wrapped));
        crate::shard::atomic_write(storage, &Self::path_in(dir), &bytes)
    }

    /// The key log's bytes as they are now (a read-only reader compares them before and after
    /// reading the data files).
    pub(crate) fn read_bytes(storage: &dyn Storage, dir: &Path) -> Result<Vec<u8>> {
        read_file(storage, &Self::path_in(dir))
    }

    /// Parse and unwrap the key log `bytes` of shard `shard` in `dir` with `kek`, or with
    /// `previous` when the log is still wrapped under it (a rotation that did not finish: a
    /// writer then re-wraps it under `kek`, [`KeyRing::finish_open`]).
    pub(crate) fn load(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        shard: usize,
        bytes: &[u8],
        kek: &Key,
        previous: Option<&Key>,
    ) -> Result<(Self, KeyLogReport)> {
        let path = Self::path_in(dir);
        let corrupt = |message: String| Error::Corrupt {
            path: path.clone(),
            message,
        };
        let h = bytes
            .get(..HEADER_LEN)
            .ok_or_else(|| corrupt(format!("{} bytes: no key-log header", bytes.len())))?;
        if h[..4] != MAGIC {
            return Err(corrupt("not a key log (bad magic)".into()));
        }
        if crc32c(&h[..16]) != u32::from_le_bytes([h[16], h[17], h[18], h[19]]) {
            return Err(corrupt("key-log header checksum mismatch".into()));
        }
        let version = u16::from_le_bytes([h[4], h[5]]);
        if version != VERSION {
            return Err(corrupt(format!("unsupported key-log version {version}")));
        }
        let wrapped_under = KeyId(h[8..16].try_into().unwrap_or_default());
        let mut report = KeyLogReport::default();
        let unwrap_with = if wrapped_under == kek.id() {
            kek
        } else if let Some(p) = previous.filter(|p| p.id() == wrapped_under) {
            report.rewrapped = true;
            p
        } else {
            return Err(Error::Crypto {
                path,
                source: uniface_core::Error::WrongKey {
                    expected: wrapped_under.to_string(),
                    got: kek.id().to_string(),
                },
            });
        };
        let mut ring = Self {
            shard,
            path: path.clone(),
            storage: storage.clone(),
            kek: kek.clone(),
            keys: HashMap::new(),
            by_subject: HashMap::new(),
            graph: None,
            integrity: None,
            spares: Vec::new(),
            destroyed: HashMap::new(),
            doomed: Vec::new(),
            unsynced: None,
        };
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            match frame_at(bytes, at) {
                Some((Parsed::Key(id, owner, wrapped), end)) => {
                    let aad = wrap_aad(shard, id, &owner);
                    let raw = crypto::open(unwrap_with, PURPOSE_WRAP, &aad, &wrapped)
                        .map_err(in_file(&path))?;
                    let key = Key::from_slice(&raw).map_err(in_file(&path))?;
                    if key.id() != id {
                        return Err(crypto_error(
                            &path,
                            format!("the key at byte {at} is not the key {id} its entry names"),
                        ));
                    }
                    match owner {
                        Owner::Graph => ring.graph = Some(id),
                        Owner::Spare => ring.spares.push(id),
                        Owner::Integrity => ring.integrity = Some(id),
                        Owner::Subject(_) => {}
                    }
                    let wrapped = match report.rewrapped {
                        true => crypto::seal(kek, PURPOSE_WRAP, &aad, &raw[..])?,
                        false => wrapped,
                    };
                    ring.keys.insert(
                        id,
                        Held {
                            owner,
                            key,
                            wrapped,
                        },
                    );
                    at = end;
                }
                Some((Parsed::Destroyed(id, sealed), end)) => {
                    let aad = destroyed_aad(shard, id);
                    let raw = crypto::open(unwrap_with, PURPOSE_DESTROYED, &aad, &sealed)
                        .map_err(in_file(&path))?;
                    let owner = Owner::decode(&raw).ok_or_else(|| {
                        crypto_error(
                            &path,
                            format!("the destroyed key at byte {at} names no owner"),
                        )
                    })?;
                    let sealed = match report.rewrapped {
                        true => crypto::seal(kek, PURPOSE_DESTROYED, &aad, &raw)?,
                        false => sealed,
                    };
                    ring.keys.remove(&id);
                    ring.spares.retain(|s| *s != id);
                    if ring.graph == Some(id) {
                        ring.graph = None;
                    }
                    if ring.integrity == Some(id) {
                        ring.integrity = None;
                    }
                    ring.destroyed.insert(id, Gone { owner, sealed });
                    at = end;
                }
                None => {
                    let next_valid = (at + 1..bytes.len().saturating_sub(8))
                        .find(|&o| frame_at(bytes, o).is_some());
                    if let Some(valid) = next_valid {
                        return Err(corrupt(format!(
                            "damaged entry at byte {at} is followed by a valid entry at byte {valid}: keys in use may lie behind the damage; restore the key log from its backup"
                        )));
                    }
                    // a complete entry that fails its checksum may be a torn write as well
                    // (a file extended before its bytes landed); either way no record sealed
                    // under it was acknowledged unless the damage is later than the write: the
                    // replay then fails on the missing key, and the bytes are kept
                    report.torn_tail = Some(at as u64);
                    break;
                }
            }
        }
        if ring.integrity.is_none() {
            return Err(crypto_error(&path, "the key log holds no integrity key"));
        }
        Ok((ring, report))
    }

    /// A writer, after a successful replay: keep a torn tail's bytes beside the log and cut it
    /// off, and re-wrap a log still under the previous KEK.
    pub(crate) fn finish_open(
        &mut self,
        bytes: &[u8],
        report: &KeyLogReport,
    ) -> Result<Option<PathBuf>> {
        let mut kept = None;
        if let Some(at) = report.torn_tail {
            let name = crate::shard::corrupt_name(self.storage.as_ref(), &self.path);
            let dir = self.path.parent().unwrap_or(Path::new("."));
            self.storage
                .write_synced(&name, &bytes[at as usize..])
                .and_then(|()| self.storage.sync_dir(dir))
                .map_err(|e| Error::Io {
                    path: name.clone(),
                    source: e,
                })?;
            kept = Some(name);
        }
        if report.torn_tail.is_some() || report.rewrapped {
            self.replace().map_err(|e| *e.error)?;
        }
        Ok(kept)
    }

    /// The whole key log as it should be: every held key (but `except`) and every destroyed
    /// one (unless `forget_destroyed`).
    fn encode(&self, except: &HashSet<KeyId>, forget_destroyed: bool) -> Vec<u8> {
        let mut out = header(self.kek.id()).to_vec();
        let ordered: BTreeMap<[u8; 8], &Held> = self
            .keys
            .iter()
            .filter(|(id, _)| !except.contains(id))
            .map(|(id, h)| (id.0, h))
            .collect();
        for (id, h) in ordered {
            out.extend_from_slice(&key_entry(KeyId(id), &h.owner, &h.wrapped));
        }
        if !forget_destroyed {
            let gone: BTreeMap<[u8; 8], &Gone> =
                self.destroyed.iter().map(|(id, g)| (id.0, g)).collect();
            for (id, g) in gone {
                out.extend_from_slice(&destroyed_entry(KeyId(id), &g.sealed));
            }
        }
        out
    }

    /// Replace the file by `bytes`: a new file, synced, renamed over the old one, the folder
    /// synced. After the rename the new file is the key log whatever follows.
    fn replace_with(&mut self, bytes: &[u8]) -> std::result::Result<(), ReplaceError> {
        let result = replace_file(self.storage.as_ref(), &self.path, bytes);
        match &result {
            Ok(()) => self.unsynced = None,
            Err(e) if e.renamed => {
                self.unsynced = Some(format!(
                    "the folder sync after replacing it failed ({})",
                    e.error
                ))
            }
            Err(_) => {} // the old file is still in place
        }
        result
    }

    fn replace(&mut self) -> std::result::Result<(), ReplaceError> {
        let bytes = self.encode(&HashSet::new(), false);
        self.replace_with(&bytes)
    }

    /// Append entries and sync them (replacing the file first when its state is unknown).
    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if self.unsynced.is_some() {
            self.replace().map_err(|e| *e.error)?;
        }
        let io = |e| Error::Io {
            path: self.path.clone(),
            source: e,
        };
        let mut f = self.storage.open_log(&self.path).map_err(io)?;
        let good = f.len();
        if let Err(e) = f.append(bytes).and_then(|()| f.sync()) {
            if let Err(cut) = f.truncate(good).and_then(|()| f.sync()) {
                self.unsynced = Some(format!(
                    "an append failed ({e}) and cutting it back failed too ({cut})"
                ));
            }
            return Err(io(e));
        }
        Ok(())
    }

    fn new_key(&self, owner: &Owner) -> Result<(KeyId, Held)> {
        loop {
            let key = Key::generate()?;
            let id = key.id();
            if self.keys.contains_key(&id) || self.destroyed.contains_key(&id) {
                continue; // 64-bit ids: never in practice
            }
            let wrapped = crypto::seal(
                &self.kek,
                PURPOSE_WRAP,
                &wrap_aad(self.shard, id, owner),
                &key.to_bytes()[..],
            )?;
            return Ok((
                id,
                Held {
                    owner: owner.clone(),
                    key,
                    wrapped,
                },
            ));
        }
    }

    /// Give every one of `subjects` that has none a key.
    pub(crate) fn ensure<'a>(&mut self, subjects: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let missing: Vec<&str> = subjects
            .into_iter()
            .filter(|s| !self.by_subject.contains_key(*s))
            .collect();
        let ids = self.take_spares(missing.len())?;
        for (s, id) in missing.into_iter().zip(ids) {
            self.assign(id, s)?;
            self.by_subject.insert(s.to_owned(), id);
        }
        Ok(())
    }

    /// `n` spare keys, making (in one synced append) more when there are too few.
    fn take_spares(&mut self, n: usize) -> Result<Vec<KeyId>> {
        if self.spares.len() < n {
            let make = (n - self.spares.len()).max(SPARE_BATCH);
            let mut fresh: Vec<(KeyId, Held)> = Vec::with_capacity(make);
            let mut bytes = Vec::new();
            while fresh.len() < make {
                let (id, held) = self.new_key(&Owner::Spare)?;
                if fresh.iter().any(|(f, _)| *f == id) {
                    continue;
                }
                bytes.extend_from_slice(&key_entry(id, &held.owner, &held.wrapped));
                fresh.push((id, held));
            }
            self.append(&bytes)?;
            for (id, held) in fresh {
                self.spares.push(id);
                self.keys.insert(id, held);
            }
        }
        let at = self.spares.len().saturating_sub(n);
        Ok(self.spares.split_off(at))
    }

    /// A spare key becomes `subject`'s (in memory; the key log says so at its next rewrite).
    fn assign(&mut self, id: KeyId, subject: &str) -> Result<()> {
        self.spares.retain(|s| *s != id);
        let shard = self.shard;
        if let Some(h) = self.keys.get_mut(&id) {
            if h.owner == Owner::Spare {
                let owner = Owner::Subject(subject.to_owned());
                h.wrapped = crypto::seal(
                    &self.kek,
                    PURPOSE_WRAP,
                    &wrap_aad(shard, id, &owner),
                    &h.key.to_bytes()[..],
                )?;
                h.owner = owner;
            }
        }
        Ok(())
    }

    fn subject_key(&self, subject: &str) -> Result<&Key> {
        self.by_subject
            .get(subject)
            .and_then(|id| self.keys.get(id))
            .map(|h| &h.key)
            .ok_or_else(|| crypto_error(&self.path, format!("subject {subject} has no key")))
    }

    /// The live key an envelope names, `Ok(None)` when an erasure destroyed `subject`'s key;
    /// an error when the key is unknown, or was not `subject`'s.
    fn key_for(
        &self,
        sealed: &[u8],
        subject: &str,
        file: &Path,
        what: &str,
    ) -> Result<Option<&Key>> {
        let id = crypto::sealed_key_id(sealed)
            .ok_or_else(|| crypto_error(file, format!("{what} is not sealed")))?;
        let theirs = |o: &Owner| *o == Owner::Subject(subject.to_owned());
        if let Some(h) = self.keys.get(&id) {
            if theirs(&h.owner) || h.owner == Owner::Spare {
                return Ok(Some(&h.key));
            }
            return Err(crypto_error(
                file,
                format!("{what} is sealed under a key that is not {subject}'s"),
            ));
        }
        match self.destroyed.get(&id) {
            Some(g) if theirs(&g.owner) => Ok(None),
            Some(_) => Err(crypto_error(
                file,
                format!("{what} names a destroyed key that was not {subject}'s"),
            )),
            None => Err(crypto_error(
                file,
                format!("{what} is sealed under key {id}, which this key log does not hold (nor record as destroyed): the key log is older than the data, or of another gallery"),
            )),
        }
    }

    /// The plain record of a logged one (`log` names the file for errors), with the key that
    /// sealed it (replay makes it the subject's current key: [`KeyRing::track`]).
    pub(crate) fn open_op(&self, log: &Path, seq: u64, op: &Op) -> Result<Opened> {
        let (subject, code, template_id, sealed) = match op {
            Op::SealedEnroll {
                subject,
                template_id,
                sealed,
            } => (subject, 1u8, *template_id, sealed),
            Op::SealedMetadata { subject, sealed } => (subject, 4, 0, sealed),
            Op::RemoveSubject { .. } | Op::RemoveTemplate { .. } => {
                return Ok(Opened::Op(op.clone(), None))
            }
            Op::Enroll { .. } | Op::SetMetadata { .. } => {
                return Err(crypto_error(
                    log,
                    format!("record {seq} of an encrypted gallery is in the clear"),
                ))
            }
        };
        let what = format!("record {seq}");
        let Some(key) = self.key_for(sealed, subject, log, &what)? else {
            return Ok(Opened::Erased);
        };
        let aad = record_aad(self.shard, seq, code, template_id, subject);
        let plain = crypto::open(key, PURPOSE_RECORD, &aad, sealed).map_err(|e| {
            in_file(log)(match e {
                uniface_core::Error::Crypto { message } => uniface_core::Error::Crypto {
                    message: format!("record {seq}: {message}"),
                },
                other => other,
            })
        })?;
        let op = match code {
            1 => Op::Enroll {
                subject: subject.clone(),
                template_id,
                vector: plain
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            },
            _ => Op::SetMetadata {
                subject: subject.clone(),
                metadata: plain.to_vec(),
            },
        };
        Ok(Opened::Op(op, Some(key.id())))
    }

    /// Replay: a record sealed under `key` makes it its subject's current key; a removal
    /// leaves the subject without one.
    pub(crate) fn track(&mut self, op: &Op, key: Option<KeyId>) -> Result<()> {
        match (op, key) {
            (Op::RemoveSubject { subject }, _) => {
                self.by_subject.remove(subject);
            }
            (Op::Enroll { subject, .. } | Op::SetMetadata { subject, .. }, Some(k)) => {
                self.assign(k, subject)?;
                self.by_subject.insert(subject.clone(), k);
            }
            _ => {}
        }
        Ok(())
    }

    /// Records as the log stores them, in order: enrollments' vectors and metadata sealed
    /// under their subject's key, removals as they are. Subjects without a key (or removed
    /// earlier in the batch) get a spare one. The returned [`KeyChanges`] are applied with
    /// [`KeyRing::settle`] once the records are logged.
    pub(crate) fn seal_batch(&mut self, records: &[Record]) -> Result<(Vec<Record>, KeyChanges)> {
        // how many new keys the batch needs (a subject without one, or removed earlier in it)
        let mut has: HashMap<&str, bool> = HashMap::new();
        let mut needed = 0;
        for r in records {
            match &r.op {
                Op::Enroll { subject, .. } | Op::SetMetadata { subject, .. } => {
                    let now = *has
                        .entry(subject)
                        .or_insert_with(|| self.by_subject.contains_key(subject));
                    if !now {
                        needed += 1;
                        has.insert(subject, true);
                    }
                }
                Op::RemoveSubject { subject } => {
                    has.insert(subject, false);
                }
                _ => {}
            }
        }
        let mut spares = self.take_spares(needed)?.into_iter();
        let mut current: HashMap<&str, Option<KeyId>> = HashMap::new();
        let mut uses: Vec<Option<KeyId>> = Vec::with_capacity(records.len());
        let mut changes = KeyChanges::default();
        for r in records {
            match &r.op {
                Op::Enroll { subject, .. } | Op::SetMetadata { subject, .. } => {
                    let now = match current.get(subject.as_str()) {
                        Some(k) => *k,
                        None => self.by_subject.get(subject).copied(),
                    };
                    let id = match now {
                        Some(id) => id,
                        None => {
                            let id = spares.next().ok_or_else(|| {
                                crypto_error(&self.path, "fewer spare keys than counted")
                            })?;
                            self.assign(id, subject)?;
                            id
                        }
                    };
                    current.insert(subject, Some(id));
                    uses.push(Some(id));
                }
                Op::RemoveSubject { subject } => {
                    let now = match current.get(subject.as_str()) {
                        Some(k) => *k,
                        None => self.by_subject.get(subject).copied(),
                    };
                    if let Some(id) = now {
                        changes.doomed.push((r.seq, id));
                    }
                    current.insert(subject, None);
                    uses.push(None);
                }
                _ => uses.push(None),
            }
        }
        changes.current = current
            .into_iter()
            .map(|(s, k)| (s.to_owned(), k))
            .collect();
        let sealed = records
            .iter()
            .zip(uses)
            .map(|(r, key)| {
                let op = match key {
                    Some(id) => self.seal_with(id, r.seq, &r.op)?,
                    None => r.op.clone(),
                };
                Ok(Record { seq: r.seq, op })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((sealed, changes))
    }

    fn seal_with(&self, id: KeyId, seq: u64, op: &Op) -> Result<Op> {
        let key = &self
            .keys
            .get(&id)
            .ok_or_else(|| crypto_error(&self.path, format!("key {id} is not held")))?
            .key;
        Ok(match op {
            Op::Enroll {
                subject,
                template_id,
                vector,
            } => {
                let plain: Zeroizing<Vec<u8>> =
                    Zeroizing::new(vector.iter().flat_map(|v| v.to_le_bytes()).collect());
                let aad = record_aad(self.shard, seq, 1, *template_id, subject);
                Op::SealedEnroll {
                    subject: subject.clone(),
                    template_id: *template_id,
                    sealed: crypto::seal(key, PURPOSE_RECORD, &aad, &plain)?,
                }
            }
            Op::SetMetadata { subject, metadata } => {
                let aad = record_aad(self.shard, seq, 4, 0, subject);
                Op::SealedMetadata {
                    subject: subject.clone(),
                    sealed: crypto::seal(key, PURPOSE_RECORD, &aad, metadata)?,
                }
            }
            other => other.clone(),
        })
    }

    /// The records of a [`KeyRing::seal_batch`] were logged: subjects take their new keys and
    /// removed subjects' keys wait for [`KeyRing::erase`].
    pub(crate) fn settle(&mut self, changes: KeyChanges) {
        for (s, k) in changes.current {
            match k {
                Some(k) => self.by_subject.insert(s, k),
                None => self.by_subject.remove(&s),
            };
        }
        self.doomed.extend(changes.doomed);
    }

    /// A subject's block of a snapshot covering `seq`, sealed.
    pub(crate) fn seal_block(&self, seq: u64, subject: &str, block: &[u8]) -> Result<Vec<u8>> {
        let aad = snapshot_aad(self.shard, seq, subject);
        Ok(crypto::seal(
            self.subject_key(subject)?,
            PURPOSE_SNAPSHOT,
            &aad,
            block,
        )?)
    }

    /// A sealed snapshot block opened (`None`: erased); the subject's key is tracked.
    pub(crate) fn open_block(
        &mut self,
        snap: &Path,
        seq: u64,
        subject: &str,
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let what = format!("the snapshot's block of subject {subject}");
        let Some(key) = self.key_for(sealed, subject, snap, &what)? else {
            return Ok(None);
        };
        let aad = snapshot_aad(self.shard, seq, subject);
        let plain = crypto::open(key, PURPOSE_SNAPSHOT, &aad, sealed).map_err(in_file(snap))?;
        let id = key.id();
        self.assign(id, subject)?;
        self.by_subject.insert(subject.to_owned(), id);
        Ok(Some(plain))
    }

    fn integrity_key(&self) -> Result<&Key> {
        self.integrity
            .and_then(|id| self.keys.get(&id))
            .map(|h| &h.key)
            .ok_or_else(|| crypto_error(&self.path, "the integrity key is missing"))
    }

    /// The snapshot's index (its subjects and their blocks' tags) sealed for a snapshot
    /// covering `seq`.
    pub(crate) fn seal_index(&self, seq: u64, index: &SnapshotIndex) -> Result<Vec<u8>> {
        let aad = snapshot_aad(self.shard, seq, "");
        Ok(crypto::seal(
            self.integrity_key()?,
            PURPOSE_INDEX,
            &aad,
            &index.0,
        )?)
    }

    /// Check a snapshot's sealed index against the subjects and blocks read.
    pub(crate) fn check_index(
        &self,
        snap: &Path,
        seq: u64,
        index: &SnapshotIndex,
        sealed: &[u8],
    ) -> Result<()> {
        let aad = snapshot_aad(self.shard, seq, "");
        let listed = crypto::open(self.integrity_key()?, PURPOSE_INDEX, &aad, sealed)
            .map_err(in_file(snap))?;
        if listed[..] != index.0[..] {
            return Err(crypto_error(
                snap,
                "the snapshot's subjects are not the ones its sealed index lists (a block was removed, added or replaced)",
            ));
        }
        Ok(())
    }

    /// Seal a saved graph (creating the shard's graph key if it has none).
    pub(crate) fn seal_graph(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        let id = match self.graph {
            Some(id) => id,
            None => {
                let (id, held) = self.new_key(&Owner::Graph)?;
                self.append(&key_entry(id, &held.owner, &held.wrapped))?;
                self.keys.insert(id, held);
                self.graph = Some(id);
                id
            }
        };
        let key = &self
            .keys
            .get(&id)
            .ok_or_else(|| crypto_error(&self.path, "graph key lost"))?
            .key;
        Ok(crypto::seal(
            key,
            PURPOSE_GRAPH,
            &(self.shard as u32).to_le_bytes(),
            bytes,
        )?)
    }

    /// A saved graph opened, or why not (the caller drops the graph and re-indexes).
    pub(crate) fn open_graph(
        &self,
        sealed: &[u8],
    ) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
        let id = crypto::sealed_key_id(sealed).ok_or("it is not sealed")?;
        match (self.keys.get(&id), self.destroyed.get(&id)) {
            (Some(h), _) if h.owner == Owner::Graph => crypto::open(
                &h.key,
                PURPOSE_GRAPH,
                &(self.shard as u32).to_le_bytes(),
                sealed,
            )
            .map_err(|e| e.to_string()),
            (Some(_), _) => Err("it is sealed under a key that is not a graph key".into()),
            (None, Some(_)) => Err("its key was destroyed by an erasure".into()),
            (None, None) => Err(format!("its key {id} is not in the key log")),
        }
    }

    /// Whether `subject` has a key (it may have none left in the state: its last template
    /// removed by id).
    pub(crate) fn has_subject(&self, subject: &str) -> bool {
        self.by_subject.contains_key(subject)
    }

    /// Before a checkpoint: subjects that left the state without a removal (their last
    /// template removed by id) let go of their keys, which the checkpoint then drops.
    pub(crate) fn forget_absent(&mut self, present: impl Fn(&str) -> bool) {
        self.by_subject.retain(|s, _| present(s));
    }

    /// After a salvage: spares that may have sealed the records cut off are never handed to
    /// another subject (they stay in the key log, for the kept tail, until the next
    /// checkpoint or writer open).
    pub(crate) fn withdraw_spares(&mut self) {
        self.spares.clear();
    }

    /// Whether the shard has a graph key now.
    pub(crate) fn has_graph_key(&self) -> bool {
        self.graph.is_some()
    }

    /// Whether removed subjects' keys wait for [`KeyRing::erase`] (or the last erasure is not
    /// known to be durable).
    pub(crate) fn has_doomed(&self) -> bool {
        !self.doomed.is_empty() || self.unsynced.is_some()
    }

    /// The highest removal sequence number waiting for erasure.
    pub(crate) fn doomed_up_to(&self) -> u64 {
        self.doomed.iter().map(|d| d.0).max().unwrap_or(0)
    }

    /// Destroy, durably, the keys of removed subjects whose removal is durable (sequence
    /// number up to `durable`), and the graph key with them. Returns whether the graph key
    /// was destroyed (the caller removes the saved graph).
    pub(crate) fn erase(&mut self, durable: u64) -> Result<bool> {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.doomed)
            .into_iter()
            .partition(|d| d.0 <= durable);
        self.doomed = later;
        let ids: Vec<KeyId> = now.iter().map(|d| d.1).collect();
        match self.destroy(&ids) {
            Ok(graph) => Ok(graph),
            Err(failed) => {
                let (e, kept) = *failed;
                // not destroyed on disk: they wait for the next removal or checkpoint
                let seq: HashMap<KeyId, u64> = now.iter().map(|d| (d.1, d.0)).collect();
                self.doomed.extend(
                    kept.into_iter()
                        .map(|id| (seq.get(&id).copied().unwrap_or(0), id)),
                );
                Err(e)
            }
        }
    }

    /// Destroy `ids` (and the graph key, when any of them is a subject's), durably. Returns
    /// whether the graph key went; on failure the error and the subject keys not destroyed.
    #[allow(clippy::type_complexity)]
    fn destroy(&mut self, ids: &[KeyId]) -> std::result::Result<bool, Box<(Error, Vec<KeyId>)>> {
        let mut gone: Vec<KeyId> = ids
            .iter()
            .copied()
            .filter(|id| self.keys.contains_key(id))
            .collect();
        let subject_ids: Vec<KeyId> = gone
            .iter()
            .copied()
            .filter(|id| matches!(self.keys.get(id).map(|h| &h.owner), Some(Owner::Subject(_))))
            .collect();
        // every graph key goes with subject keys: the current one and any retired by a
        // checkpoint that did not finish (a saved graph may be sealed under either)
        let mut graph = false;
        if !subject_ids.is_empty() {
            for (id, h) in &self.keys {
                if h.owner == Owner::Graph && !gone.contains(id) {
                    gone.push(*id);
                }
            }
            graph = gone
                .iter()
                .any(|id| matches!(self.keys.get(id).map(|h| &h.owner), Some(Owner::Graph)));
        }
        if gone.is_empty() {
            if self.unsynced.is_some() {
                self.replace()
                    .map_err(|e| Box::new((*e.error, Vec::new())))?;
            }
            return Ok(false);
        }
        let mut next = Vec::new();
        for id in &gone {
            let Some(owner) = self.keys.get(id).map(|h| &h.owner) else {
                continue;
            };
            if *owner == Owner::Spare {
                continue; // never sealed anything live: dropped without a record
            }
            let sealed = crypto::seal(
                &self.kek,
                PURPOSE_DESTROYED,
                &destroyed_aad(self.shard, *id),
                &owner.encode(),
            )
            .map_err(|e| Box::new((Error::Core(e), subject_ids.clone())))?;
            next.push((
                *id,
                Gone {
                    owner: owner.clone(),
                    sealed,
                },
            ));
        }
        // the new file first; memory follows what is on disk
        let except: HashSet<KeyId> = gone.iter().copied().collect();
        let mut bytes = self.encode(&except, false);
        for (id, g) in &next {
            bytes.extend_from_slice(&destroyed_entry(*id, &g.sealed));
        }
        let result = self.replace_with(&bytes);
        if let Err(ReplaceError {
            renamed: false,
            error,
        }) = result
        {
            return Err(Box::new((*error, subject_ids)));
        }
        for id in &gone {
            self.keys.remove(id);
        }
        self.spares.retain(|s| !except.contains(s));
        for (id, g) in next {
            self.destroyed.insert(id, g);
        }
        if self.graph.is_some_and(|g| gone.contains(&g)) {
            self.graph = None;
        }
        match result {
            Ok(()) => Ok(graph),
            // renamed but the folder not synced: destroyed here; the next change replaces the
            // file again, and the erasure is reported as failed until then
            Err(e) => Err(Box::new((*e.error, Vec::new()))),
        }
    }

    /// After replay, for a writer: destroy the keys nothing live was sealed under — subject
    /// keys of a removal whose erasure was interrupted, and unused spares (one may have sealed
    /// an enrollment that was torn off the log). Returns how many were destroyed and whether
    /// the graph key went with them.
    pub(crate) fn destroy_unused(&mut self) -> Result<(usize, bool)> {
        let used: HashSet<KeyId> = self.by_subject.values().copied().collect();
        let unused: Vec<KeyId> = self
            .keys
            .iter()
            .filter(|(id, h)| {
                matches!(h.owner, Owner::Subject(_) | Owner::Spare) && !used.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        let n = unused
            .iter()
            .filter(|id| matches!(self.keys[*id].owner, Owner::Subject(_)))
            .count();
        let graph = self.destroy(&unused).map_err(|f| f.0)?;
        Ok((n, graph))
    }

    /// Before a checkpoint writes the graph: when subject keys are to be dropped (removals
    /// since the last checkpoint), retire the graph key, so that the graph is saved under a
    /// new one and the old key — which may have sealed graphs holding the removed subjects —
    /// goes with them. Returns whether it was retired (the caller removes a saved graph it
    /// does not replace).
    pub(crate) fn retire_graph_key(&mut self) -> bool {
        let used: HashSet<KeyId> = self.by_subject.values().copied().collect();
        let erasing = !self.destroyed.is_empty()
            || !self.doomed.is_empty()
            || self
                .keys
                .iter()
                .any(|(id, h)| matches!(h.owner, Owner::Subject(_)) && !used.contains(id));
        erasing && self.graph.take().is_some()
    }

    /// After a checkpoint emptied the log: keep only the keys something live uses (subjects',
    /// the graph's, the integrity key, spares) and forget destroyed keys' ids (nothing sealed
    /// under them is left). The file is replaced first; memory follows it.
    pub(crate) fn compact(&mut self) -> Result<()> {
        let keep: HashSet<KeyId> = self
            .by_subject
            .values()
            .copied()
            .chain(self.graph)
            .chain(self.integrity)
            .chain(self.spares.iter().copied())
            .collect();
        let except: HashSet<KeyId> = self
            .keys
            .keys()
            .copied()
            .filter(|id| !keep.contains(id))
            .collect();
        if except.is_empty() && self.destroyed.is_empty() && self.unsynced.is_none() {
            self.doomed.clear();
            return Ok(());
        }
        let bytes = self.encode(&except, true);
        let result = self.replace_with(&bytes);
        if let Err(ReplaceError {
            renamed: false,
            error,
        }) = result
        {
            return Err(*error);
        }
        self.keys.retain(|id, _| keep.contains(id));
        self.destroyed.clear();
        self.doomed.clear();
        result.map_err(|e| *e.error)
    }

    /// Re-wrap every key (and destroyed key's record) under `kek`; no data is sealed again.
    pub(crate) fn rotate(&mut self, kek: &Key) -> Result<()> {
        let mut wrapped = HashMap::with_capacity(self.keys.len());
        for (id, h) in &self.keys {
            let w = crypto::seal(
                kek,
                PURPOSE_WRAP,
                &wrap_aad(self.shard, *id, &h.owner),
                &h.key.to_bytes()[..],
            )?;
            wrapped.insert(*id, w);
        }
        let mut gone = HashMap::with_capacity(self.destroyed.len());
        for (id, g) in &self.destroyed {
            let s = crypto::seal(
                kek,
                PURPOSE_DESTROYED,
                &destroyed_aad(self.shard, *id),
                &g.owner.encode(),
            )?;
            gone.insert(*id, s);
        }
        let old_kek = std::mem::replace(&mut self.kek, kek.clone());
        let mut old = Vec::with_capacity(wrapped.len());
        for (id, w) in wrapped {
            if let Some(h) = self.keys.get_mut(&id) {
                old.push((id, std::mem::replace(&mut h.wrapped, w)));
            }
        }
        let mut old_gone = Vec::with_capacity(gone.len());
        for (id, s) in gone {
            if let Some(g) = self.destroyed.get_mut(&id) {
                old_gone.push((id, std::mem::replace(&mut g.sealed, s)));
            }
        }
        match self.replace() {
            Ok(()) => Ok(()),
            Err(ReplaceError {
                renamed: true,
                error,
            }) => Err(*error),
            Err(ReplaceError {
                renamed: false,
                error,
            }) => {
                self.kek = old_kek;
                for (id, w) in old {
                    if let Some(h) = self.keys.get_mut(&id) {
                        h.wrapped = w;
                    }
                }
                for (id, s) in old_gone {
                    if let Some(g) = self.destroyed.get_mut(&id) {
                        g.sealed = s;
                    }
                }
                Err(*error)
            }
        }
    }

    /// The id of the KEK the log is wrapped under.
    pub(crate) fn kek_id(&self) -> KeyId {
        self.kek.id()
    }
}
