//! The write-ahead log of a shard: every change is appended here, and made durable according to
//! the [`Durability`] mode, before it is applied in memory and acknowledged.
//!
//! Record framing (little-endian): `u32` payload length, `u32` CRC-32C of the payload, payload.
//! Payload: `u64` sequence number, `u8` operation, then the operation's fields (strings and
//! byte strings are `u32` length + bytes; vectors `u32` dimension + f32 values).
//!
//! Replay reads records until the end of the file or the first record that is truncated or fails
//! its checksum; everything from there on is reported and cut off (a crash mid-append leaves at
//! most one torn record, which was never acknowledged).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use uniface_core::template::crc32c;

use crate::{Error, Result};

/// Largest payload accepted on replay (a corrupt length must not allocate gigabytes).
const MAX_RECORD: u32 = 64 << 20;

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

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(64);
        p.extend_from_slice(&self.seq.to_le_bytes());
        match &self.op {
            Op::Enroll {
                subject,
                template_id,
                vector,
            } => {
                p.push(1);
                put_bytes(&mut p, subject.as_bytes());
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
                put_bytes(&mut p, subject.as_bytes());
            }
            Op::SetMetadata { subject, metadata } => {
                p.push(4);
                put_bytes(&mut p, subject.as_bytes());
                put_bytes(&mut p, metadata);
            }
        }
        let mut out = Vec::with_capacity(p.len() + 8);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c(&p).to_le_bytes());
        out.extend_from_slice(&p);
        out
    }

    pub(crate) fn decode(p: &[u8]) -> Option<Record> {
        let mut r = Reader { b: p, at: 0 };
        let seq = u64::from_le_bytes(r.take::<8>()?);
        let op = match r.take::<1>()?[0] {
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
            _ => return None,
        };
        (r.at == p.len()).then_some(Record { seq, op })
    }
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

/// What replay found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayReport {
    pub records: usize,
    /// Byte offset and reason of the first bad record, when the log did not end cleanly.
    pub stopped_at: Option<(u64, String)>,
    /// Bytes cut off after the last good record.
    pub truncated_bytes: u64,
}

struct SyncState {
    /// Highest sequence number written to the file.
    written: u64,
    /// Highest sequence number known durable.
    synced: u64,
    syncing: bool,
}

/// An open write-ahead log.
pub struct Wal {
    path: PathBuf,
    file: Mutex<File>,
    state: Mutex<SyncState>,
    synced: Condvar,
    durability: Durability,
    syncs: std::sync::atomic::AtomicU64,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source: e,
    }
}

/// `fsync` a directory, so that a rename or a new file in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

impl Wal {
    /// Open (creating if needed) and replay: every good record is passed to `apply` in order,
    /// the log is cut after the last good record.
    pub fn open(
        path: &Path,
        durability: Durability,
        mut apply: impl FnMut(Record) -> Result<()>,
    ) -> Result<(Self, ReplayReport)> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io(path, e))?;
        if !existed {
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
        let mut report = ReplayReport::default();
        let mut at = 0usize;
        let mut last_seq = 0u64;
        while at < bytes.len() {
            let bad = |why: &str| Some((at as u64, why.to_owned()));
            let Some(head) = bytes.get(at..at + 8) else {
                report.stopped_at = bad("truncated record header");
                break;
            };
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len > MAX_RECORD {
                report.stopped_at = bad("record length out of range");
                break;
            }
            let Some(payload) = bytes.get(at + 8..at + 8 + len as usize) else {
                report.stopped_at = bad("truncated record");
                break;
            };
            if crc32c(payload) != crc {
                report.stopped_at = bad("checksum mismatch");
                break;
            }
            let Some(rec) = Record::decode(payload) else {
                report.stopped_at = bad("undecodable record");
                break;
            };
            if rec.seq <= last_seq && last_seq > 0 {
                report.stopped_at = bad("sequence number went backwards");
                break;
            }
            last_seq = rec.seq;
            apply(rec)?;
            report.records += 1;
            at += 8 + len as usize;
        }
        if at < bytes.len() {
            report.truncated_bytes = (bytes.len() - at) as u64;
            file.set_len(at as u64).map_err(|e| io(path, e))?;
            file.sync_all().map_err(|e| io(path, e))?;
        }
        file.seek(SeekFrom::End(0)).map_err(|e| io(path, e))?;
        Ok((
            Self {
                path: path.to_owned(),
                file: Mutex::new(file),
                state: Mutex::new(SyncState {
                    written: last_seq,
                    synced: last_seq,
                    syncing: false,
                }),
                synced: Condvar::new(),
                durability,
                syncs: Default::default(),
            },
            report,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append records (in order) and return once they are as durable as the mode promises
    /// ([`Wal::write`] then [`Wal::commit`]).
    pub fn append(&self, records: &[Record]) -> Result<()> {
        match self.write(records)? {
            Some(seq) => self.commit(seq),
            None => Ok(()),
        }
    }

    /// Write records (in order) to the file without waiting for durability; returns the last
    /// sequence number written. Callers serialise writes per shard (sequence numbers increase)
    /// and call [`Wal::commit`] before acknowledging, outside their lock, so that concurrent
    /// writers share a sync in [`Durability::Group`] mode.
    pub fn write(&self, records: &[Record]) -> Result<Option<u64>> {
        let Some(last) = records.last() else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&r.encode());
        }
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(&buf).map_err(|e| io(&self.path, e))?;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.written = s.written.max(last.seq);
        Ok(Some(last.seq))
    }

    /// Wait until record `seq` is as durable as the mode promises.
    pub fn commit(&self, seq: u64) -> Result<()> {
        match self.durability {
            Durability::Async => Ok(()),
            Durability::Sync => self.sync_now(),
            Durability::Group => self.wait_synced(seq),
        }
    }

    /// How many `fdatasync` calls this log has made (group commit makes fewer than appends).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn sync_now(&self) -> Result<()> {
        let target = self.state.lock().unwrap_or_else(|e| e.into_inner()).written;
        let f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.sync_data().map_err(|e| io(&self.path, e))?;
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(f);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.synced = s.synced.max(target);
        Ok(())
    }

    /// Group commit: the first waiter syncs for everyone written so far; the others wait.
    fn wait_synced(&self, seq: u64) -> Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.synced >= seq {
                return Ok(());
            }
            if !s.syncing {
                s.syncing = true;
                let target = s.written;
                drop(s);
                let result = {
                    let f = self.file.lock().unwrap_or_else(|e| e.into_inner());
                    self.syncs
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    f.sync_data().map_err(|e| io(&self.path, e))
                };
                s = self.state.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Empty the log (after a checkpoint made its records redundant).
    pub fn truncate(&self) -> Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.set_len(0).map_err(|e| io(&self.path, e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| io(&self.path, e))?;
        f.sync_all().map_err(|e| io(&self.path, e))
    }

    /// Every good record of the log file at `path` (for change feeds and tools).
    pub fn read_all(path: &Path) -> Result<(Vec<Record>, ReplayReport)> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(path, e)),
        };
        let mut out = Vec::new();
        let mut report = ReplayReport::default();
        let mut at = 0usize;
        while at < bytes.len() {
            let Some(head) = bytes.get(at..at + 8) else {
                report.stopped_at = Some((at as u64, "truncated record header".into()));
                break;
            };
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            match bytes.get(at + 8..at + 8 + len) {
                Some(p) if crc32c(p) == crc => match Record::decode(p) {
                    Some(r) => out.push(r),
                    None => {
                        report.stopped_at = Some((at as u64, "undecodable record".into()));
                        break;
                    }
                },
                _ => {
                    report.stopped_at = Some((at as u64, "bad record".into()));
                    break;
                }
            }
            at += 8 + len;
        }
        report.records = out.len();
        report.truncated_bytes = (bytes.len() - at) as u64;
        Ok((out, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn records_round_trip() {
        for r in records() {
            let e = r.encode();
            assert_eq!(Record::decode(&e[8..]), Some(r));
        }
    }

    #[test]
    fn a_cut_at_every_byte_keeps_exactly_the_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let all = records();
        let bytes: Vec<u8> = all.iter().flat_map(|r| r.encode()).collect();
        let ends: Vec<usize> = all
            .iter()
            .scan(0, |acc, r| {
                *acc += r.encode().len();
                Some(*acc)
            })
            .collect();
        for cut in 0..=bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let mut got = Vec::new();
            let (wal, report) = Wal::open(&path, Durability::Sync, |r| {
                got.push(r);
                Ok(())
            })
            .unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(got, all[..whole].to_vec(), "cut {cut}");
            assert_eq!(report.records, whole);
            assert_eq!(report.stopped_at.is_some(), !ends.contains(&cut) && cut > 0);
            // the torn tail is gone, and appending continues cleanly after the good records
            let next = Record {
                seq: 100,
                op: Op::RemoveTemplate { template_id: 1 },
            };
            wal.append(std::slice::from_ref(&next)).unwrap();
            drop(wal);
            let (again, report) = Wal::read_all(&path).unwrap();
            assert_eq!(again.len(), whole + 1, "cut {cut}");
            assert!(report.stopped_at.is_none());
        }
    }

    #[test]
    fn a_flipped_bit_stops_replay_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let all = records();
        let mut bytes: Vec<u8> = all.iter().flat_map(|r| r.encode()).collect();
        let first = all[0].encode().len();
        bytes[first + 12] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let mut n = 0;
        let (_, report) = Wal::open(&path, Durability::Async, |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
        let (at, why) = report.stopped_at.unwrap();
        assert_eq!(at as usize, first);
        assert!(why.contains("checksum"), "{why}");
    }

    #[test]
    fn group_commit_serves_concurrent_appenders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (wal, _) = Wal::open(&path, Durability::Group, |_| Ok(())).unwrap();
        let next = Mutex::new(1u64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
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
        let (back, report) = Wal::read_all(&path).unwrap();
        assert!(report.stopped_at.is_none());
        let seqs: Vec<u64> = back.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        assert!(wal.sync_count() <= 200);
    }
}
