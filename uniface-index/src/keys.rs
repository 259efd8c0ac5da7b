//! Encryption at rest: a shard's key log and the keys it holds.
//!
//! An encrypted gallery ([`crate::GalleryOptions::encryption`]) gives every subject a data key
//! of its own (a random 256-bit [`Key`]), and each shard's search graph one more. The keys live
//! in the shard's `keys.log`, each *wrapped* (sealed) under the host's key-encryption key
//! (KEK); nothing else in the gallery holds them. Templates and metadata are sealed under
//! their subject's key in the log and the snapshot, the graph file under the graph key
//! (XChaCha20-Poly1305, [`uniface_core::crypto`]), each with its place as associated data: a
//! record's shard, sequence number, template id and subject; a snapshot block's shard,
//! snapshot sequence and subject. A record or a block moved elsewhere fails to authenticate.
//!
//! Removing a subject *destroys* its key: the key log is rewritten without it (a new file,
//! synced, renamed over the old one) before the removal is acknowledged, and the graph key
//! with it (the saved graph holds quantised copies of every template). From then on the
//! subject's templates in every file — old logs, snapshots, and copies of them taken before the
//! removal — cannot be opened with the key log; the destroyed key's id stays in the key log
//! (without the key) until the next checkpoint, so that the records sealed under it are known
//! to be erased rather than damaged. A copy of `keys.log` taken before the removal still opens
//! them: hosts must keep key-log backups apart and expire them (`docs/GALLERY.md`).
//!
//! Layout (little-endian): a 20-byte header — magic `UFKL`, `u16` version 1, `u16` 0, the KEK's
//! 8-byte id, `u32` CRC-32C of the 16 bytes before it — then entries, each framed as `u32`
//! length, `u32` CRC-32C, body: `u8` kind (1 a subject's key, 2 a graph key, 3 a destroyed key),
//! the key's 8-byte id, for kind 1 the subject (`u32` + UTF-8), for kinds 1 and 2 the wrapped
//! key (`u32` + envelope). A new key is appended and synced before anything sealed under it is
//! written; a torn append is cut off by the next writer (it held no key in use).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uniface_core::crypto::{self, Key, KeyId};
use uniface_core::template::crc32c;
use zeroize::Zeroizing;

use crate::storage::Storage;
use crate::wal::{Op, Record};
use crate::{Error, Result};

/// The name of a shard's key log.
pub(crate) const KEY_LOG: &str = "keys.log";
/// The cipher an encrypted gallery's manifest names.
pub const CIPHER: &str = "xchacha20-poly1305";

const MAGIC: [u8; 4] = *b"UFKL";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 20;
const MAX_ENTRY: u32 = 1 << 16;

const PURPOSE_WRAP: &str = "uniface gallery key v1";
const PURPOSE_RECORD: &str = "uniface gallery record v1";
const PURPOSE_SNAPSHOT: &str = "uniface gallery snapshot v1";
const PURPOSE_GRAPH: &str = "uniface gallery graph v1";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Subject(String),
    Graph,
}

struct Held {
    owner: Owner,
    key: Key,
    /// As in the file (kept so that rewrites do not seal again).
    wrapped: Vec<u8>,
}

/// What opening a sealed record gave.
pub(crate) enum Opened {
    /// The plain record and the key that sealed it.
    Op(Op, Option<KeyId>),
    /// Sealed under a key destroyed by an erasure.
    Erased,
}

/// What loading a key log found and did.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct KeyLogReport {
    /// A torn append cut off (its bytes held no key in use).
    pub torn_tail: Option<u64>,
    /// Re-wrapped from the previous KEK (an interrupted rotation finished).
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
    /// Ids of keys destroyed since the last checkpoint.
    destroyed: HashSet<KeyId>,
    /// Keys of removed subjects with the removal's sequence number: destroyed once the
    /// removal is durable.
    doomed: Vec<(u64, KeyId)>,
    /// Set when an append failed and could not be cut back: the file's end is unknown.
    failed: Option<String>,
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

fn wrap_aad(shard: usize, owner: &Owner) -> Vec<u8> {
    let mut a = (shard as u32).to_le_bytes().to_vec();
    match owner {
        Owner::Subject(s) => {
            a.push(1);
            a.extend_from_slice(s.as_bytes());
        }
        Owner::Graph => a.push(2),
    }
    a
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn key_entry(id: KeyId, owner: &Owner, wrapped: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + wrapped.len());
    match owner {
        Owner::Subject(s) => {
            b.push(1);
            b.extend_from_slice(&id.0);
            put(&mut b, s.as_bytes());
        }
        Owner::Graph => {
            b.push(2);
            b.extend_from_slice(&id.0);
        }
    }
    put(&mut b, wrapped);
    frame(&b)
}

fn destroyed_entry(id: KeyId) -> Vec<u8> {
    let mut b = vec![3u8];
    b.extend_from_slice(&id.0);
    frame(&b)
}

enum Parsed {
    Key(KeyId, Owner, Vec<u8>),
    Destroyed(KeyId),
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
        3 => Parsed::Destroyed(id),
        _ => return None,
    };
    (at == b.len()).then_some(parsed)
}

fn frame_at(bytes: &[u8], at: usize) -> Option<(Parsed, usize)> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?);
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if len > MAX_ENTRY {
        return None;
    }
    let body = bytes.get(at + 8..at + 8 + len as usize)?;
    (crc32c(body) == crc)
        .then(|| parse_body(body))
        .flatten()
        .map(|p| (p, at + 8 + len as usize))
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

impl KeyRing {
    pub(crate) fn path_in(dir: &Path) -> PathBuf {
        dir.join(KEY_LOG)
    }

    /// Write the empty key log of a new shard (the caller syncs the directory).
    pub(crate) fn create(storage: &dyn Storage, dir: &Path, kek: &Key) -> Result<()> {
        let path = Self::path_in(dir);
        crate::shard::atomic_write(storage, &path, &header(kek.id()))
    }

    /// Read and unwrap the key log of shard `shard` in `dir` with `kek`, or with `previous`
    /// when the log is still wrapped under it (a rotation that did not finish: a writer
    /// re-wraps it under `kek`). A writer cuts off a torn append.
    pub(crate) fn load(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        shard: usize,
        kek: &Key,
        previous: Option<&Key>,
        writer: bool,
    ) -> Result<(Self, KeyLogReport)> {
        let path = Self::path_in(dir);
        let bytes = match storage.read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing {
                    path,
                    what: "the shard's key log (an encrypted gallery cannot be read without it)",
                })
            }
            Err(e) => return Err(Error::Io { path, source: e }),
        };
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
            destroyed: HashSet::new(),
            doomed: Vec::new(),
            failed: None,
        };
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            match frame_at(&bytes, at) {
                Some((Parsed::Key(id, owner, wrapped), end)) => {
                    let aad = wrap_aad(shard, &owner);
                    let raw = crypto::open(unwrap_with, PURPOSE_WRAP, &aad, &wrapped)
                        .map_err(in_file(&path))?;
                    let key = Key::from_slice(&raw).map_err(in_file(&path))?;
                    if key.id() != id {
                        return Err(crypto_error(
                            &path,
                            format!("the key at byte {at} is not the key {id} its entry names"),
                        ));
                    }
                    if owner == Owner::Graph {
                        ring.graph = Some(id);
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
                Some((Parsed::Destroyed(id), end)) => {
                    ring.keys.remove(&id);
                    ring.destroyed.insert(id);
                    at = end;
                }
                None => {
                    if let Some(valid) = (at + 1..bytes.len().saturating_sub(8))
                        .find(|&o| frame_at(&bytes, o).is_some())
                    {
                        return Err(corrupt(format!(
                            "damaged entry at byte {at} is followed by a valid entry at byte {valid}: keys in use may lie behind the damage; restore the key log from its backup"
                        )));
                    }
                    report.torn_tail = Some(at as u64);
                    break;
                }
            }
        }
        if writer && (report.torn_tail.is_some() || report.rewrapped) {
            ring.rewrite()?;
        }
        Ok((ring, report))
    }

    /// The whole key log as it should be now.
    fn encode(&self) -> Vec<u8> {
        let mut out = header(self.kek.id()).to_vec();
        let ordered: BTreeMap<[u8; 8], &Held> = self.keys.iter().map(|(id, h)| (id.0, h)).collect();
        for (id, h) in ordered {
            out.extend_from_slice(&key_entry(KeyId(id), &h.owner, &h.wrapped));
        }
        let mut gone: Vec<[u8; 8]> = self.destroyed.iter().map(|k| k.0).collect();
        gone.sort_unstable();
        for id in gone {
            out.extend_from_slice(&destroyed_entry(KeyId(id)));
        }
        out
    }

    /// Replace the file by the current key set (new file, synced, renamed, directory synced).
    fn rewrite(&mut self) -> Result<()> {
        crate::shard::atomic_write(self.storage.as_ref(), &self.path, &self.encode())?;
        self.failed = None;
        Ok(())
    }

    /// Append entries and sync them.
    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(why) = &self.failed {
            return Err(Error::Failed {
                path: self.path.clone(),
                reason: why.clone(),
            });
        }
        let io = |e| Error::Io {
            path: self.path.clone(),
            source: e,
        };
        let mut f = self.storage.open_log(&self.path).map_err(io)?;
        let good = f.len();
        if let Err(e) = f.append(bytes).and_then(|()| f.sync()) {
            if let Err(cut) = f.truncate(good).and_then(|()| f.sync()) {
                self.failed = Some(format!(
                    "an append failed ({e}) and cutting it back failed too ({cut}); a checkpoint or a reopen rewrites the key log"
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
            if self.keys.contains_key(&id) || self.destroyed.contains(&id) {
                continue; // 64-bit ids: never in practice
            }
            let wrapped = crypto::seal(
                &self.kek,
                PURPOSE_WRAP,
                &wrap_aad(self.shard, owner),
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

    /// Give every one of `subjects` that has none a key (one durable append).
    pub(crate) fn ensure<'a>(&mut self, subjects: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let mut fresh: Vec<(String, KeyId, Held)> = Vec::new();
        for s in subjects {
            if !self.by_subject.contains_key(s) {
                let (id, held) = self.new_key(&Owner::Subject(s.to_owned()))?;
                fresh.push((s.to_owned(), id, held));
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for (_, id, h) in &fresh {
            bytes.extend_from_slice(&key_entry(*id, &h.owner, &h.wrapped));
        }
        self.append(&bytes)?;
        for (s, id, h) in fresh {
            self.by_subject.insert(s, id);
            self.keys.insert(id, h);
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

    /// The key an envelope names: `Ok(None)` when an erasure destroyed it.
    fn key_of(&self, sealed: &[u8], what: &str) -> Result<Option<&Held>> {
        let id = crypto::sealed_key_id(sealed)
            .ok_or_else(|| crypto_error(&self.path, format!("{what} is not sealed")))?;
        if let Some(h) = self.keys.get(&id) {
            return Ok(Some(h));
        }
        if self.destroyed.contains(&id) {
            return Ok(None);
        }
        Err(crypto_error(
            &self.path,
            format!("{what} is sealed under key {id}, which this key log does not hold (nor record as destroyed): the key log is older than the data, or of another gallery"),
        ))
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
        let Some(held) = self.key_of(sealed, &what)? else {
            return Ok(Opened::Erased);
        };
        if held.owner != Owner::Subject(subject.clone()) {
            return Err(crypto_error(
                log,
                format!("record {seq} is sealed under another subject's key"),
            ));
        }
        let aad = record_aad(self.shard, seq, code, template_id, subject);
        let plain = crypto::open(&held.key, PURPOSE_RECORD, &aad, sealed).map_err(|e| {
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
        Ok(Opened::Op(op, Some(held.key.id())))
    }

    /// Replay: a record sealed under `key` makes it its subject's current key; a removal
    /// leaves the subject without one.
    pub(crate) fn track(&mut self, op: &Op, key: Option<KeyId>) {
        match (op, key) {
            (Op::RemoveSubject { subject }, _) => {
                self.by_subject.remove(subject);
            }
            (Op::Enroll { subject, .. } | Op::SetMetadata { subject, .. }, Some(k)) => {
                self.by_subject.insert(subject.clone(), k);
            }
            _ => {}
        }
    }

    /// Records as the log stores them, in order: enrollments' vectors and metadata sealed
    /// under their subject's key, removals as they are. Subjects without a key (or removed
    /// earlier in the batch) get a new one, all in one durable append to the key log. The
    /// returned [`KeyChanges`] are applied with [`KeyRing::settle`] once the records are
    /// logged.
    pub(crate) fn seal_batch(&mut self, records: &[Record]) -> Result<(Vec<Record>, KeyChanges)> {
        let mut current: HashMap<&str, Option<KeyId>> = HashMap::new();
        let mut fresh: Vec<(KeyId, Held)> = Vec::new();
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
                            let (id, held) = self.new_key(&Owner::Subject(subject.clone()))?;
                            fresh.push((id, held));
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
        if !fresh.is_empty() {
            let mut bytes = Vec::new();
            for (id, h) in &fresh {
                bytes.extend_from_slice(&key_entry(*id, &h.owner, &h.wrapped));
            }
            self.append(&bytes)?;
            self.keys.extend(fresh);
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
        let Some(held) = self.key_of(sealed, &what)? else {
            return Ok(None);
        };
        if held.owner != Owner::Subject(subject.to_owned()) {
            return Err(crypto_error(
                snap,
                format!("{what} is sealed under another subject's key"),
            ));
        }
        let aad = snapshot_aad(self.shard, seq, subject);
        let plain =
            crypto::open(&held.key, PURPOSE_SNAPSHOT, &aad, sealed).map_err(in_file(snap))?;
        let id = held.key.id();
        self.by_subject.insert(subject.to_owned(), id);
        Ok(Some(plain))
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
        match self.key_of(sealed, "the graph") {
            Ok(Some(h)) if h.owner == Owner::Graph => crypto::open(
                &h.key,
                PURPOSE_GRAPH,
                &(self.shard as u32).to_le_bytes(),
                sealed,
            )
            .map_err(|e| e.to_string()),
            Ok(Some(_)) => Err("it is sealed under a subject's key".into()),
            Ok(None) => Err("its key was destroyed by an erasure".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether removed subjects' keys wait for [`KeyRing::erase`].
    pub(crate) fn has_doomed(&self) -> bool {
        !self.doomed.is_empty()
    }

    /// Destroy, durably, the keys of removed subjects whose removal is durable (sequence
    /// number up to `durable`), and the graph key with them (the graph holds copies of their
    /// templates); returns how many keys were destroyed.
    pub(crate) fn erase(&mut self, durable: u64) -> Result<usize> {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.doomed)
            .into_iter()
            .partition(|d| d.0 <= durable);
        self.doomed = later;
        let mut gone: Vec<(u64, KeyId)> = now;
        if gone.is_empty() {
            return Ok(0);
        }
        gone.extend(self.graph.take().map(|g| (0, g)));
        self.destroy(gone)
    }

    fn destroy(&mut self, ids: Vec<(u64, KeyId)>) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut removed = Vec::new();
        for (seq, id) in &ids {
            if let Some(h) = self.keys.remove(id) {
                self.destroyed.insert(*id);
                removed.push((*seq, *id, h));
            }
        }
        if let Err(e) = self.rewrite() {
            // not destroyed on disk: keep them (and retry at the next removal or checkpoint)
            for (seq, id, h) in removed {
                self.destroyed.remove(&id);
                match h.owner {
                    Owner::Subject(_) => self.doomed.push((seq, id)),
                    Owner::Graph => self.graph = self.graph.or(Some(id)),
                }
                self.keys.insert(id, h);
            }
            return Err(e);
        }
        Ok(removed.len())
    }

    /// After replay: destroy subject keys that nothing live was sealed under (a removal whose
    /// key destruction was interrupted, a key made for an enrollment that never reached the
    /// log). Writers only; returns how many.
    pub(crate) fn destroy_unused(&mut self) -> Result<usize> {
        let used: HashSet<KeyId> = self.by_subject.values().copied().collect();
        let unused: Vec<(u64, KeyId)> = self
            .keys
            .iter()
            .filter(|(id, h)| matches!(h.owner, Owner::Subject(_)) && !used.contains(id))
            .map(|(id, _)| (0, *id))
            .collect();
        self.destroy(unused)
    }

    /// After a checkpoint emptied the log: forget destroyed keys' ids (nothing sealed under
    /// them is left) and drop keys nothing live uses.
    pub(crate) fn compact(&mut self) -> Result<()> {
        let used: HashSet<KeyId> = self
            .by_subject
            .values()
            .copied()
            .chain(self.graph)
            .collect();
        let before = self.keys.len() + self.destroyed.len();
        self.keys.retain(|id, _| used.contains(id));
        self.destroyed.clear();
        self.doomed.clear();
        if self.keys.len() != before {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Re-wrap every key under `kek` (no data is sealed again).
    pub(crate) fn rotate(&mut self, kek: &Key) -> Result<()> {
        let mut next = HashMap::with_capacity(self.keys.len());
        for (id, h) in &self.keys {
            let wrapped = crypto::seal(
                kek,
                PURPOSE_WRAP,
                &wrap_aad(self.shard, &h.owner),
                &h.key.to_bytes()[..],
            )?;
            next.insert(*id, wrapped);
        }
        let old_kek = std::mem::replace(&mut self.kek, kek.clone());
        let old: Vec<(KeyId, Vec<u8>)> = next
            .into_iter()
            .filter_map(|(id, w)| {
                self.keys
                    .get_mut(&id)
                    .map(|h| (id, std::mem::replace(&mut h.wrapped, w)))
            })
            .collect();
        if let Err(e) = self.rewrite() {
            self.kek = old_kek;
            for (id, w) in old {
                if let Some(h) = self.keys.get_mut(&id) {
                    h.wrapped = w;
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// The id of the KEK the log is wrapped under.
    pub(crate) fn kek_id(&self) -> KeyId {
        self.kek.id()
    }
}
