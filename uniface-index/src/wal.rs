//! The write-ahead log of a shard: every change is appended here, and made durable according to
//! the [`Durability`] mode, before it is applied in memory and acknowledged.
//!
//! File layout (little-endian): a 20-byte header — magic `UFWL`, `u16` version 2, `u16` 0,
//! `u64` base sequence number (the snapshot's when the log was started; the first record is
//! `base + 1`), `u32` CRC-32C of the 16 bytes before it — then frames. A frame is `u32` payload
//! length, `u32` CRC-32C of the payload, payload; the payload is `u64` first sequence number,
//! `u32` record count, then each record's operation (`u8` code and fields: strings and byte
//! strings are `u32` length + bytes, vectors `u32` dimension + f32 values; codes 1–4 enroll,
//! remove a template, remove a subject, set metadata; in an encrypted gallery enrollments and
//! metadata are codes 5 and 6, their vector or metadata a sealed envelope, see the gallery's
//! `keys` module). A frame is written
//! with one append, so a batch in one frame is applied whole or not at all; sequence numbers
//! increase by one per record, without gaps, from the base.
//!
//! Reading ([`parse`]) stops at the first frame that is truncated, fails its checksum or does
//! not decode. If nothing valid follows it, it is a *torn tail* — the append in progress when
//! the process or the machine stopped, never acknowledged — and a writer cuts it off (keeping
//! the bytes in `wal.log.corrupt-<time>`). If a valid frame follows, records that may have been
//! acknowledged lie behind the damage: that is [`Error::Corrupt`], and nothing is cut.
//!
//! Writing: an append that fails is cut back before anything else is accepted (if even that
//! fails, the log refuses writes); an `fsync` that fails is never retried (the kernel may have
//! dropped the data and would report success the second time) — the log refuses writes until
//! the gallery is reopened and recovers from what is on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use uniface_core::template::crc32c;

use crate::storage::{LogFile, Storage};
use crate::{Error, Result};

/// Largest frame payload accepted (a corrupt length must not allocate gigabytes); batches
/// larger than [`FRAME_TARGET`] are split into several frames.
pub const MAX_FRAME: u32 = 64 << 20;
/// Batches are split into frames of about this many payload bytes.
pub const FRAME_TARGET: usize = 16 << 20;

const MAGIC: [u8; 4] = *b"UFWL";
const VERSION: u16 = 2;
/// Length of the log's file header.
pub const HEADER_LEN: usize = 20;

/// When an append is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `fdatasync` before every acknowledgement.
    #[default]
    Sync,
    /// Group commit: concurrent appenders share one `fdatasync`; each waits until a sync covers
    /// its record.
    Group,
    /// Left to the operating system (survives a process crash, not a power loss).
    Async,
}

impl Durability {
    /// Every mode, strictest first.
    pub const ALL: [Self; 3] = [Self::Sync, Self::Group, Self::Async];

    /// The stable name: `sync`, `group`, `async` (the manifest's, the CLI's and the
    /// bindings').
    pub fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Group => "group",
            Self::Async => "async",
        }
    }

    /// The mode of a [`Durability::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// One change to a shard.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Enroll {
        subject: String,
        template_id: u64,
        vector: Vec<f32>,
    },
    RemoveTemplate {
        template_id: u64,
    },
    RemoveSubject {
        subject: String,
    },
    SetMetadata {
        subject: String,
        metadata: Vec<u8>,
    },
    /// An enrollment as an encrypted gallery logs it: the vector sealed under the subject's
    /// key, with the record's place as associated data (see the gallery's `keys` docs).
    SealedEnroll {
        subject: String,
        template_id: u64,
        sealed: Vec<u8>,
    },
    /// Metadata as an encrypted gallery logs it, sealed under the subject's key.
    SealedMetadata {
        subject: String,
        sealed: Vec<u8>,
    },
}

/// A logged change with its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub op: Op,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

impl Op {
    fn encode_into(&self, p: &mut Vec<u8>) {
        match self {
            Op::Enroll {
                subject,
                template_id,
                vector,
            } => {
                p.push(1);
                put_bytes(p, subject.as_bytes());
                p.extend_from_slice(&template_id.to_le_bytes());
                p.extend_from_slice(&(vector.len() as u32).to_le_bytes());
                vector
                    .iter()
                    .for_each(|v| p.extend_from_slice(&v.to_le_bytes()));
            }
            Op::RemoveTemplate { template_id } => {
                p.push(2);
                p.extend_from_slice(&template_id.to_le_bytes());
            }
            Op::RemoveSubject { subject } => {
                p.push(3);
                put_bytes(p, subject.as_bytes());
            }
            Op::SetMetadata { subject, metadata } => {
                p.push(4);
                put_bytes(p, subject.as_bytes());
                put_bytes(p, metadata);
            }
            Op::SealedEnroll {
                subject,
                template_id,
                sealed,
            } => {
                p.push(5);
                put_bytes(p, subject.as_bytes());
                p.extend_from_slice(&template_id.to_le_bytes());
                put_bytes(p, sealed);
            }
            Op::SealedMetadata { subject, sealed } => {
                p.push(6);
                put_bytes(p, subject.as_bytes());
                put_bytes(p, sealed);
            }
        }
    }

    /// Bytes the operation takes in a frame.
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Op::Enroll {
                subject, vector, ..
            } => 1 + 4 + subject.len() + 8 + 4 + 4 * vector.len(),
            Op::RemoveTemplate { .. } => 9,
            Op::RemoveSubject { subject } => 5 + subject.len(),
            Op::SetMetadata { subject, metadata } => 9 + subject.len() + metadata.len(),
            Op::SealedEnroll {
                subject, sealed, ..
            } => 1 + 4 + subject.len() + 8 + 4 + sealed.len(),
            Op::SealedMetadata { subject, sealed } => 9 + subject.len() + sealed.len(),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Option<Op> {
        Some(match r.take::<1>()?[0] {
            1 => {
                let subject = r.string()?;
                let template_id = u64::from_le_bytes(r.take::<8>()?);
                let dim = u32::from_le_bytes(r.take::<4>()?) as usize;
                let raw = r.slice(dim.checked_mul(4)?)?;
                let vector = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Op::Enroll {
                    subject,
                    template_id,
                    vector,
                }
            }
            2 => Op::RemoveTemplate {
                template_id: u64::from_le_bytes(r.take::<8>()?),
            },
            3 => Op::RemoveSubject {
                subject: r.string()?,
            },
            4 => Op::SetMetadata {
                subject: r.string()?,
                metadata: r.bytes()?.to_vec(),
            },
            5 => Op::SealedEnroll {
                subject: r.string()?,
                template_id: u64::from_le_bytes(r.take::<8>()?),
                sealed: r.bytes()?.to_vec(),
            },
            6 => Op::SealedMetadata {
                subject: r.string()?,
                sealed: r.bytes()?.to_vec(),
            },
            _ => return None,
        })
    }
}

/// One frame holding `records` (consecutive sequence numbers).
pub(crate) fn encode_frame(records: &[Record]) -> Vec<u8> {
    let body: usize = records.iter().map(|r| r.op.encoded_len()).sum();
    let mut p = Vec::with_capacity(12 + body);
    p.extend_from_slice(&records.first().map_or(0, |r| r.seq).to_le_bytes());
    p.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        r.op.encode_into(&mut p);
    }
    frame(&p)
}

/// `payload` framed: `u32` length, `u32` CRC-32C, the bytes (the log's frames and the key
/// log's entries).
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn decode_payload(p: &[u8]) -> Option<Vec<Record>> {
    let mut r = Reader { b: p, at: 0 };
    let first = u64::from_le_bytes(r.take::<8>()?);
    let count = u32::from_le_bytes(r.take::<4>()?) as u64;
    // (each operation takes at least 5 bytes: `count` cannot promise more records than that)
    if count == 0 || count > (p.len() as u64).saturating_sub(12) / 5 {
        return None;
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        out.push(Record {
            seq: first.checked_add(i)?,
            op: Op::decode(&mut r)?,
        });
    }
    (r.at == p.len()).then_some(out)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn slice(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.slice(N)?.try_into().ok()
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take::<4>()?) as usize;
        self.slice(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

/// The file header of a log whose first record will be `base_seq + 1`.
pub(crate) fn header(base_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&base_seq.to_le_bytes());
    let crc = crc32c(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Bytes after the last valid frame that hold no valid frame: an append that never finished.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    /// Where the tail starts.
    pub offset: u64,
    pub bytes: u64,
    /// Why the frame there is not valid.
    pub reason: String,
}

/// A log as read from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct LogContents {
    /// The sequence number the log starts after.
    pub base_seq: u64,
    pub records: Vec<Record>,
    /// Bytes of the header and the valid frames.
    pub valid_len: u64,
    pub tail: Option<TornTail>,
}

impl LogContents {
    /// The last sequence number in the log (the base when it holds no record).
    pub fn last_seq(&self) -> u64 {
        self.records.last().map_or(self.base_seq, |r| r.seq)
    }
}

/// The payload of `bytes` when they are exactly one valid [`frame`].
pub(crate) fn unframe(bytes: &[u8]) -> std::result::Result<&[u8], &'static str> {
    let (head, payload) = bytes
        .split_first_chunk::<8>()
        .ok_or("truncated frame header")?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len != payload.len() {
        return Err("frame length does not match the bytes");
    }
    if crc32c(payload) != crc {
        return Err("checksum mismatch");
    }
    Ok(payload)
}

/// The records of one whole frame (`bytes` holds exactly one), or why it is not valid.
pub(crate) fn decode_frame(bytes: &[u8]) -> std::result::Result<Vec<Record>, &'static str> {
    match frame_at(bytes, 0)? {
        (records, end) if end == bytes.len() => Ok(records),
        _ => Err("bytes after the frame"),
    }
}

/// The valid frame at `at`, if there is one: its records and its end.
fn frame_at(bytes: &[u8], at: usize) -> std::result::Result<(Vec<Record>, usize), &'static str> {
    let Some(head) = bytes.get(at..at + 8) else {
        return Err("truncated frame header");
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_FRAME {
        return Err("frame length out of range");
    }
    let end = at + 8 + len as usize;
    let Some(payload) = bytes.get(at + 8..end) else {
        return Err("truncated frame");
    };
    if crc32c(payload) != crc {
        return Err("checksum mismatch");
    }
    decode_payload(payload)
        .map(|r| (r, end))
        .ok_or("undecodable frame")
}

/// Parse a whole log file (see the module docs): `Err(Corrupt)` for a damaged header, a gap in
/// the sequence, or damage followed by valid frames.
pub fn parse(bytes: &[u8], path: &Path) -> Result<LogContents> {
    parse_with(bytes, path, false)
}

/// Parse the valid prefix of a damaged log: everything from the first bad frame on is the
/// tail, whatever follows it (for salvaging a shard whose log is corrupt).
pub fn parse_prefix(bytes: &[u8], path: &Path) -> Result<LogContents> {
    parse_with(bytes, path, true)
}

fn parse_with(bytes: &[u8], path: &Path, salvage: bool) -> Result<LogContents> {
    let corrupt = |message: String| Error::Corrupt {
        path: path.to_owned(),
        message,
    };
    let h = bytes
        .get(..HEADER_LEN)
        .ok_or_else(|| corrupt(format!("{} bytes: no log header", bytes.len())))?;
    if h[..4] != MAGIC {
        return Err(corrupt("not a gallery log (bad magic)".into()));
    }
    if crc32c(&h[..16]) != u32::from_le_bytes([h[16], h[17], h[18], h[19]]) {
        return Err(corrupt("log header checksum mismatch".into()));
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != VERSION {
        return Err(corrupt(format!("unsupported log version {version}")));
    }
    let base_seq = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
    let mut records: Vec<Record> = Vec::new();
    let mut at = HEADER_LEN;
    let mut tail = None;
    while at < bytes.len() {
        let expected = records.last().map_or(base_seq, |r| r.seq) + 1;
        match frame_at(bytes, at) {
            Ok((recs, _)) if salvage && recs[0].seq != expected => {
                tail = Some(TornTail {
                    offset: at as u64,
                    bytes: (bytes.len() - at) as u64,
                    reason: format!("sequence {} where {expected} was expected", recs[0].seq),
                });
                break;
            }
            Ok((recs, end)) => {
                if recs[0].seq != expected {
                    return Err(corrupt(format!(
                        "frame at byte {at} starts at sequence {}, expected {expected}",
                        recs[0].seq
                    )));
                }
                records.extend(recs);
                at = end;
            }
            Err(reason) => {
                // a valid frame further on means acknowledged records lie behind the damage
                // (one that continues the sequence: bytes inside a torn frame, such as a
                // subject's metadata, are not mistaken for one by chance)
                let valid_after = || {
                    (at + 1..bytes.len().saturating_sub(8))
                        .filter_map(|o| frame_at(bytes, o).ok().map(|(r, _)| (o, r[0].seq)))
                        .find(|&(_, seq)| seq >= expected)
                };
                if let Some((valid, seq)) = (!salvage).then(valid_after).flatten() {
                    return Err(corrupt(format!(
                        "damaged frame at byte {at} ({reason}) is followed by a valid frame at \
                         byte {valid} (sequence {seq}): records after the damage may have been \
                         acknowledged, so nothing was cut; restore this shard from a backup or a \
                         replica, or open it with `salvage` to keep what precedes the damage"
                    )));
                }
                tail = Some(TornTail {
                    offset: at as u64,
                    bytes: (bytes.len() - at) as u64,
                    reason: reason.to_owned(),
                });
                break;
            }
        }
    }
    Ok(LogContents {
        base_seq,
        records,
        valid_len: at as u64,
        tail,
    })
}

/// Read and parse the log at `path`.
pub fn read_log(storage: &dyn Storage, path: &Path) -> Result<LogContents> {
    let bytes = storage.read(path).map_err(|e| io(path, e))?;
    parse(&bytes, path)
}

/// Write a new, empty log starting after `base_seq` at `path` (through a temporary file and a
/// rename; the caller syncs the directory).
pub(crate) fn write_empty(storage: &dyn Storage, path: &Path, base_seq: u64) -> Result<()> {
    let tmp = path.with_extension("tmp");
    storage
        .write_synced(&tmp, &header(base_seq))
        .and_then(|()| storage.rename(&tmp, path))
        .map_err(|e| {
            let _ = storage.remove(&tmp);
            io(path, e)
        })
}

struct SyncState {
    /// Highest sequence number written to the file.
    written: u64,
    /// Highest sequence number known durable.
    synced: u64,
    syncing: bool,
    /// Set after an I/O failure that leaves the file's durable state unknown: the log
    /// refuses writes until the gallery is reopened.
    failed: Option<String>,
}

/// An open write-ahead log.
pub struct Wal {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    file: Mutex<Box<dyn LogFile>>,
    state: Mutex<SyncState>,
    synced: Condvar,
    durability: Durability,
    syncs: AtomicU64,
    /// Set with `SyncState::failed` (a lock-free check on the write path).
    stopped: std::sync::atomic::AtomicBool,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source: e,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // every critical section below leaves its state whole before anything can panic
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Wal {
    /// A log for appending to `file`, whose valid contents end at record `last_seq`.
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        path: &Path,
        file: Box<dyn LogFile>,
        last_seq: u64,
        durability: Durability,
    ) -> Self {
        Self {
            storage,
            path: path.to_owned(),
            file: Mutex::new(file),
            state: Mutex::new(SyncState {
                written: last_seq,
                synced: last_seq,
                syncing: false,
                failed: None,
            }),
            synced: Condvar::new(),
            durability,
            syncs: Default::default(),
            stopped: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn failed_error(&self, reason: &str) -> Error {
        Error::Failed {
            path: self.path.clone(),
            reason: reason.to_owned(),
        }
    }

    fn check_failed(&self, s: &SyncState) -> Result<()> {
        match &s.failed {
            Some(r) => Err(self.failed_error(r)),
            None => Ok(()),
        }
    }

    /// [`Wal::check_failed`] without taking the state lock when all is well.
    fn check_stopped(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            return self.check_failed(&lock(&self.state));
        }
        Ok(())
    }

    fn fail(&self, why: String) {
        let mut s = lock(&self.state);
        s.failed.get_or_insert(why);
        self.stopped.store(true, Ordering::Release);
        drop(s);
        self.synced.notify_all();
    }

    /// Stop accepting writes (the caller found the log and its shard's memory apart); the
    /// error to return.
    pub(crate) fn stop(&self, why: String) -> Error {
        let e = self.failed_error(&why);
        self.fail(why);
        e
    }

    /// Whether the log has stopped accepting writes after an I/O failure (and why).
    pub fn failure(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }

    /// Append records (in order) and return once they are as durable as the mode promises
    /// ([`Wal::write`] then [`Wal::commit`]).
    pub fn append(&self, records: &[Record]) -> Result<()> {
        match self.write(records)? {
            Some(seq) => self.commit(seq),
            None => Ok(()),
        }
    }

    /// Write records (in order, consecutive sequence numbers) to the file without waiting for
    /// durability; returns the last sequence number written. Batches above [`FRAME_TARGET`]
    /// bytes go in several frames. Callers serialise writes per shard and call
    /// [`Wal::commit`] before acknowledging, outside their lock, so that concurrent writers
    /// share a sync in [`Durability::Group`] mode. A failed write is cut back off the file.
    pub fn write(&self, records: &[Record]) -> Result<Option<u64>> {
        let Some(last) = records.last() else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        let mut start = 0;
        let mut size = 0;
        for (i, r) in records.iter().enumerate() {
            let n = r.op.encoded_len();
            if i > start && size + n > FRAME_TARGET {
                buf.extend_from_slice(&encode_frame(&records[start..i]));
                start = i;
                size = 0;
            }
            size += n;
        }
        buf.extend_from_slice(&encode_frame(&records[start..]));
        let mut f = lock(&self.file);
        self.check_stopped()?;
        let good = f.len();
        if let Err(e) = f.append(&buf) {
            // nothing may follow a partial frame: cut it off, or stop writing
            if let Err(cut) = f.truncate(good) {
                self.fail(format!(
                    "an append failed ({e}) and cutting it back failed too ({cut})"
                ));
            }
            return Err(io(&self.path, e));
        }
        let mut s = lock(&self.state);
        s.written = s.written.max(last.seq);
        Ok(Some(last.seq))
    }

    /// Wait until record `seq` is as durable as the mode promises.
    pub fn commit(&self, seq: u64) -> Result<()> {
        match self.durability {
            Durability::Async => self.check_stopped(),
            Durability::Sync => self.sync_now(),
            Durability::Group => self.wait_synced(seq),
        }
    }

    /// The last sequence number as durable as the mode promises (what a change feed may hand
    /// to replicas: a record written but not yet synced may still be lost, and its sequence
    /// number then reused).
    pub fn durable_seq(&self) -> u64 {
        let s = lock(&self.state);
        match self.durability {
            Durability::Async => s.written,
            _ => s.synced,
        }
    }

    /// The last sequence number known to be on disk (synced), whatever the mode.
    pub fn synced_seq(&self) -> u64 {
        lock(&self.state).synced
    }

    /// How many `fdatasync` calls this log has made (group commit makes fewer than appends).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// One `fdatasync` of the file; a failure stops the log (never retried).
    fn sync_file(&self, f: &mut Box<dyn LogFile>) -> Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        f.sync().map_err(|e| {
            self.fail(format!(
                "fsync failed ({e}): what reached the disk is unknown"
            ));
            io(&self.path, e)
        })
    }

    fn sync_now(&self) -> Result<()> {
        let mut f = lock(&self.file);
        let target = {
            let s = lock(&self.state);
            self.check_failed(&s)?;
            s.written
        };
        self.sync_file(&mut f)?;
        drop(f);
        let mut s = lock(&self.state);
        s.synced = s.synced.max(target);
        Ok(())
    }

    /// Group commit: the first waiter syncs for everyone written so far; the others wait.
    fn wait_synced(&self, seq: u64) -> Result<()> {
        let mut s = lock(&self.state);
        loop {
            if s.synced >= seq {
                return Ok(());
            }
            self.check_failed(&s)?;
            if !s.syncing {
                s.syncing = true;
                let target = s.written;
                drop(s);
                let result = {
                    let mut f = lock(&self.file);
                    self.sync_file(&mut f)
                };
                s = lock(&self.state);
                s.syncing = false;
                if result.is_ok() {
                    s.synced = s.synced.max(target);
                }
                self.synced.notify_all();
                result?;
            } else {
                s = self.synced.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Make everything written so far durable (whatever the mode).
    pub fn flush(&self) -> Result<()> {
        self.sync_now()
    }

    /// Replace the log by an empty one starting after `base_seq` (after a checkpoint made its
    /// records redundant): a new file renamed over the old one, then the directory synced.
    /// A failure before the rename leaves the old log in use; one after it stops the log.
    pub(crate) fn restart(&self, base_seq: u64) -> Result<()> {
        let mut f = lock(&self.file);
        self.check_failed(&lock(&self.state))?;
        write_empty(self.storage.as_ref(), &self.path, base_seq)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let reopened = self
            .storage
            .open_log(&self.path)
            .and_then(|new| self.storage.sync_dir(dir).map(|()| new));
        match reopened {
            Ok(new) => {
                *f = new;
                Ok(())
            }
            Err(e) => {
                self.fail(format!("the log was replaced but then: {e}"));
                Err(io(&self.path, e))
            }
        }
    }

    /// Every good record of the log file at `path`, and the torn tail if there is one (for
    /// change feeds and tools; the real filesystem).
    pub fn read_all(path: &Path) -> Result<LogContents> {
        read_log(&crate::storage::FsStorage, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Fault, IoFault, MemStorage};

    fn records() -> Vec<Record> {
        vec![
            Record {
                seq: 1,
                op: Op::Enroll {
                    subject: "alice".into(),
                    template_id: 7,
                    vector: vec![0.5, -0.25, 1.0],
                },
            },
            Record {
                seq: 2,
                op: Op::SetMetadata {
                    subject: "alice".into(),
                    metadata: b"{\"desk\":4}".to_vec(),
                },
            },
            Record {
                seq: 3,
                op: Op::RemoveTemplate { template_id: 7 },
            },
            Record {
                seq: 4,
                op: Op::RemoveSubject {
                    subject: "alice".into(),
                },
            },
        ]
    }

    fn log_bytes(frames: &[&[Record]]) -> Vec<u8> {
        let mut b = header(0).to_vec();
        for f in frames {
            b.extend_from_slice(&encode_frame(f));
        }
        b
    }

    #[test]
    fn frames_round_trip_and_know_their_length() {
        let all = records();
        for r in &all {
            let mut p = Vec::new();
            r.op.encode_into(&mut p);
            assert_eq!(p.len(), r.op.encoded_len());
        }
        let b = log_bytes(&[&all[..1], &all[1..]]);
        let c = parse(&b, Path::new("wal.log")).unwrap();
        assert_eq!(c.records, all);
        assert_eq!(c.valid_len as usize, b.len());
        assert!(c.tail.is_none());
    }

    #[test]
    fn a_cut_at_every_byte_is_a_torn_tail_and_keeps_whole_frames() {
        let all = records();
        let b = log_bytes(&[&all[..1], &all[1..3], &all[3..]]);
        let f1 = HEADER_LEN + encode_frame(&all[..1]).len();
        let f2 = f1 + encode_frame(&all[1..3]).len();
        for cut in HEADER_LEN..=b.len() {
            let c = parse(&b[..cut], Path::new("wal.log")).unwrap();
            let whole = match cut {
                c if c == b.len() => 4,
                c if c >= f2 => 3,
                c if c >= f1 => 1,
                _ => 0,
            };
            // a frame is all or nothing: records 2 and 3 come together
            assert_eq!(c.records, all[..whole].to_vec(), "cut {cut}");
            let boundary = [HEADER_LEN, f1, f2, b.len()].contains(&cut);
            assert_eq!(c.tail.is_none(), boundary, "cut {cut}");
        }
        for cut in 0..HEADER_LEN {
            assert!(parse(&b[..cut], Path::new("wal.log")).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn damage_followed_by_a_valid_frame_is_corruption_not_a_tail() {
        let all = records();
        let mut b = log_bytes(&[&all[..1], &all[1..2], &all[2..]]);
        let second = HEADER_LEN + encode_frame(&all[..1]).len();
        b[second + 12] ^= 0x10;
        let e = parse(&b, Path::new("wal.log")).unwrap_err().to_string();
        assert!(e.contains(&format!("byte {second}")), "{e}");
        assert!(e.contains("followed by a valid frame"), "{e}");
        // damage in the last frame only: a torn tail
        let mut b = log_bytes(&[&all[..1], &all[1..]]);
        let last = b.len() - 3;
        b[last] ^= 1;
        let c = parse(&b, Path::new("wal.log")).unwrap();
        assert_eq!(c.records.len(), 1);
        assert_eq!(c.tail.unwrap().reason, "checksum mismatch");
    }

    #[test]
    fn a_gap_in_the_sequence_is_corruption() {
        let mut all = records();
        all[2].seq = 9;
        let b = log_bytes(&[&all[..2], &all[2..3]]);
        let e = parse(&b, Path::new("wal.log")).unwrap_err().to_string();
        assert!(e.contains("expected 3"), "{e}");
    }

    fn mem_wal(durability: Durability) -> (MemStorage, Wal) {
        let s = MemStorage::new();
        s.create_dir(Path::new("/s")).unwrap();
        let path = Path::new("/s/wal.log");
        write_empty(&s, path, 0).unwrap();
        let file = s.open_log(path).unwrap();
        let wal = Wal::new(Arc::new(s.clone()), path, file, 0, durability);
        (s, wal)
    }

    #[test]
    fn a_failed_append_is_cut_back_and_later_appends_follow_the_good_records() {
        let (s, wal) = mem_wal(Durability::Sync);
        let all = records();
        wal.append(&all[..1]).unwrap();
        s.set_fault(Fault::FailAt {
            n: 1,
            error: IoFault::NoSpace,
        });
        assert!(wal.append(&all[1..2]).is_err());
        wal.append(&all[1..]).unwrap();
        let c = read_log(&s, Path::new("/s/wal.log")).unwrap();
        assert_eq!(c.records, all);
        assert!(c.tail.is_none());
    }

    #[test]
    fn a_failed_fsync_stops_the_log_and_is_not_retried() {
        let (s, wal) = mem_wal(Durability::Group);
        let all = records();
        // operation 1 is the append, 2 the sync
        s.set_fault(Fault::FailAt {
            n: 2,
            error: IoFault::Io,
        });
        assert!(matches!(wal.append(&all[..1]), Err(Error::Io { .. })));
        assert!(wal.failure().is_some());
        let before = s.operations();
        assert!(matches!(wal.append(&all[1..2]), Err(Error::Failed { .. })));
        assert!(matches!(wal.flush(), Err(Error::Failed { .. })));
        assert_eq!(
            s.operations(),
            before,
            "nothing touched the disk after the failure"
        );
    }

    #[test]
    fn group_commit_serves_concurrent_appenders() {
        let (s, wal) = mem_wal(Durability::Group);
        let next = Mutex::new(1u64);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..50 {
                        // the shard lock: sequence number and write, in order
                        let seq = {
                            let mut n = next.lock().unwrap();
                            let r = Record {
                                seq: *n,
                                op: Op::RemoveTemplate { template_id: *n },
                            };
                            wal.write(std::slice::from_ref(&r)).unwrap();
                            *n += 1;
                            r.seq
                        };
                        // durability outside the lock
                        wal.commit(seq).unwrap();
                    }
                });
            }
        });
        let c = read_log(&s, Path::new("/s/wal.log")).unwrap();
        let seqs: Vec<u64> = c.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        assert!(wal.sync_count() <= 200);
    }
}
