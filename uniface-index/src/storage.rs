//! The storage seam: every byte a gallery reads or writes, every `fsync`, rename and lock goes
//! through a [`Storage`]. [`FsStorage`] is the real filesystem (the default);
//! [`MemStorage`] is an in-memory disk for tests that can fail any operation with `ENOSPC` or
//! `EIO`, count `fsync`s, refuse writes like a read-only mount, and lose power: it remembers
//! what was last made durable (file contents at their last `fsync`, directory entries at their
//! directory's last `fsync`) and [`MemStorage::after_power_loss`] returns the disk as a reboot
//! would find it.
//!
//! The operations are the few a log-structured store needs: read a file, write a new file and
//! sync it, append to and sync a log, rename, remove, sync a directory, take an advisory lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// An open log file, appended to at its end.
pub trait LogFile: Send + Sync {
    /// Length of the file as far as this handle knows it (after a failed append, the length
    /// before it).
    fn len(&self) -> u64;
    /// Whether [`LogFile::len`] is 0.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Write all of `bytes` at the end. On error, part of them may have reached the file.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`.
    fn sync(&mut self) -> io::Result<()>;
    /// Cut the file to `len` bytes (appends continue there).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// A held advisory lock; released when dropped.
pub trait LockGuard: Send + Sync {}

/// Where a gallery keeps its files. Implementations must be usable from many threads.
pub trait Storage: Send + Sync + fmt::Debug {
    /// The whole file (`NotFound` when there is none).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Length and CRC-32C of a file, without holding it in memory where possible.
    fn checksum(&self, path: &Path) -> io::Result<(u64, u32)> {
        let b = self.read(path)?;
        Ok((b.len() as u64, uniface_core::template::crc32c(&b)))
    }
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Names of the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Create a directory and its parents.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Create (or replace) `path` holding `bytes`, and `fsync` it (not its directory).
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// `fsync` a file written by someone else (a graph usearch saved to a local path).
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Open an existing file for appending.
    fn open_log(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// `fsync` a directory, so that the entries created, renamed or removed in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Take the exclusive advisory lock of `path` (created if needed) without waiting:
    /// `Ok(Err(holder))` when another handle holds it, `holder` being what it wrote.
    #[allow(clippy::type_complexity)]
    fn try_lock(&self, path: &Path, holder: &str)
        -> io::Result<Result<Box<dyn LockGuard>, String>>;
    /// The path on the local filesystem, when files are real files (usearch can then read,
    /// write and memory-map them directly).
    fn local_path(&self, _path: &Path) -> Option<PathBuf> {
        None
    }
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStorage;

struct FsLog {
    file: File,
    len: u64,
}

impl LogFile for FsLog {
    fn len(&self) -> u64 {
        self.len
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(bytes, self.len)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }
}

struct FsLock {
    _file: File,
}

impl LockGuard for FsLock {}

impl Storage for FsStorage {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn checksum(&self, path: &Path) -> io::Result<(u64, u32)> {
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut len, mut crc) = (0u64, 0u32);
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok((len, crc));
            }
            crc = uniface_core::template::crc32c_append(crc, &buf[..n]);
            len += n as u64;
        }
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        out.sort();
        Ok(out)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn open_log(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Box::new(FsLog { file, len }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(
        &self,
        path: &Path,
        holder: &str,
    ) -> io::Result<Result<Box<dyn LockGuard>, String>> {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {
                file.set_len(0)?;
                use std::os::unix::fs::FileExt;
                file.write_all_at(holder.as_bytes(), 0)?;
                Ok(Ok(Box::new(FsLock { _file: file })))
            }
            Err(fs4::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Ok(Err(text.trim().to_owned()))
            }
            Err(fs4::TryLockError::Error(e)) => Err(e),
        }
    }

    fn local_path(&self, path: &Path) -> Option<PathBuf> {
        Some(path.to_owned())
    }
}

/// What [`MemStorage`] does to the operations that change the disk (writes, appends, syncs,
/// truncations, renames, removals, directory syncs and directory creation; reads never fail).
/// A full disk (`NoSpace`) does not refuse operations that free space (removals, shrinking
/// truncations). A failed `fsync` behaves as Linux's: the bytes it did not write are never
/// written by a later `fsync` (which reports success) unless they are written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Nothing fails.
    #[default]
    None,
    /// Operation `n` (counting from 1) fails with `error`; an append or a file write that
    /// fails writes the first half of its bytes first (a partial write).
    FailAt { n: u64, error: IoFault },
    /// Operation `n` and every later one fail (a disk that stays full until
    /// [`MemStorage::set_fault`] clears it).
    FailFrom { n: u64, error: IoFault },
    /// The power goes out just before `fsync` number `n` (file and directory syncs counted
    /// together): that sync and every later operation fail with `EIO`, and
    /// [`MemStorage::after_power_loss`] gives the disk as it was made durable. With `torn`,
    /// the first half of the bytes appended to each file since its last sync survive as well
    /// (a torn write), instead of none.
    PowerLossAtSync { n: u64, torn: bool },
}

/// The errors a [`Fault`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoFault {
    /// `ENOSPC`: the disk is full.
    NoSpace,
    /// `EIO`: the device failed.
    Io,
}

impl IoFault {
    fn error(self) -> io::Error {
        match self {
            IoFault::NoSpace => io::Error::from_raw_os_error(28),
            IoFault::Io => io::Error::from_raw_os_error(5),
        }
    }
}

#[derive(Clone, Default)]
struct Inode {
    data: Vec<u8>,
    /// Contents at the last `fsync`.
    durable: Vec<u8>,
    /// Bytes whose write-back failed with an `fsync` that returned an error: as Linux does,
    /// they are marked clean and never written by a later `fsync` (which then reports
    /// success), unless written again.
    lost: Option<(usize, usize)>,
}

impl Inode {
    /// A successful `fsync`.
    fn sync(&mut self) {
        let mut d = self.data.clone();
        if let Some((from, to)) = self.lost {
            for (i, b) in d.iter_mut().enumerate().take(to).skip(from) {
                *b = self.durable.get(i).copied().unwrap_or(0);
            }
        }
        self.durable = d;
    }

    /// A failed `fsync`: what was not yet durable is dropped from the write-back.
    fn fail_sync(&mut self) {
        let from = self.durable.len().min(self.data.len());
        self.lost = Some((from, self.data.len()));
    }

    /// Bytes `from..` were written again.
    fn rewritten(&mut self, from: usize) {
        if let Some((a, b)) = self.lost {
            if from <= a {
                self.lost = None;
            } else if from < b {
                self.lost = Some((a, from));
            }
        }
    }
}

#[derive(Default, Clone)]
struct Disk {
    inodes: Vec<Inode>,
    /// Path → inode, as the running system sees it.
    names: BTreeMap<PathBuf, usize>,
    /// Path → inode, as of each directory's last `fsync`.
    durable_names: BTreeMap<PathBuf, usize>,
    /// Directories (created durably: a simplification, since a gallery syncs after creating).
    dirs: BTreeSet<PathBuf>,
    locks: BTreeMap<PathBuf, String>,
    fault: Fault,
    ops: u64,
    syncs: u64,
    file_syncs: u64,
    powered_off: bool,
    torn: bool,
    read_only: bool,
    sync_delay: std::time::Duration,
}

impl Disk {
    /// Count a mutating operation and decide whether it fails.
    fn op(&mut self, is_sync: bool) -> io::Result<()> {
        self.op_of(is_sync, false)
    }

    /// Like [`Disk::op`]; `frees` for operations that release space (a shrinking truncate, a
    /// removal), which a full disk does not refuse.
    fn op_of(&mut self, is_sync: bool, frees: bool) -> io::Result<()> {
        if self.powered_off {
            return Err(IoFault::Io.error());
        }
        if self.read_only {
            return Err(io::Error::from_raw_os_error(30));
        }
        self.ops += 1;
        if is_sync {
            self.syncs += 1;
        }
        let spared = |e: IoFault| frees && e == IoFault::NoSpace;
        match self.fault {
            Fault::FailAt { n, error } if self.ops == n && !spared(error) => Err(error.error()),
            Fault::FailFrom { n, error } if self.ops >= n && !spared(error) => Err(error.error()),
            Fault::PowerLossAtSync { n, torn } if is_sync && self.syncs == n => {
                self.powered_off = true;
                self.torn = torn;
                Err(IoFault::Io.error())
            }
            _ => Ok(()),
        }
    }

    /// `fsync` of inode `ino`: counted, maybe failed (dropping its unsynced bytes from the
    /// write-back, as Linux does), else its contents become durable.
    fn fsync(&mut self, ino: usize) -> io::Result<()> {
        if let Err(e) = self.op(true) {
            self.inodes[ino].fail_sync();
            return Err(e);
        }
        self.file_syncs += 1;
        self.inodes[ino].sync();
        Ok(())
    }

    fn inode(&self, path: &Path) -> io::Result<usize> {
        self.names
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() && !self.dirs.contains(p) => {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
            _ => Ok(()),
        }
    }
}

/// An in-memory disk with fault injection and simulated power loss (see the module docs).
/// Clones share the disk, as two processes share a real one.
#[derive(Clone, Default)]
pub struct MemStorage {
    disk: Arc<Mutex<Disk>>,
}

impl fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.lock();
        f.debug_struct("MemStorage")
            .field("files", &d.names.len())
            .field("ops", &d.ops)
            .field("syncs", &d.syncs)
            .field("fault", &d.fault)
            .finish()
    }
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // the disk's own bookkeeping cannot be left half-done by a panic of a caller
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set the fault plan; counting of operations and syncs starts again from 0.
    pub fn set_fault(&self, fault: Fault) {
        let mut d = self.lock();
        d.fault = fault;
        d.ops = 0;
        d.syncs = 0;
    }

    /// Make every file `fsync` take this long (as a disk's flush does), so that concurrent
    /// writers overlap.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.lock().sync_delay = delay;
    }

    /// Refuse every change with `EROFS`, as a read-only mount does.
    pub fn set_read_only(&self, read_only: bool) {
        self.lock().read_only = read_only;
    }

    /// Mutating operations since the last [`MemStorage::set_fault`].
    pub fn operations(&self) -> u64 {
        self.lock().ops
    }

    /// `fsync`s (files and directories) since the last [`MemStorage::set_fault`].
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// File `fsync`s (`fdatasync` of logs and of new files) since this disk was made.
    pub fn file_syncs(&self) -> u64 {
        self.lock().file_syncs
    }

    /// Whether a [`Fault::PowerLossAtSync`] has struck.
    pub fn powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// The disk as a reboot finds it: the directory entries as of their directories' last
    /// `fsync`, each file's contents as of its last `fsync` (plus half of what was appended
    /// since, for a torn power loss). Locks are gone, no fault is set.
    pub fn after_power_loss(&self) -> MemStorage {
        let d = self.lock();
        let mut disk = Disk {
            dirs: d.dirs.clone(),
            ..Default::default()
        };
        for (path, &ino) in &d.durable_names {
            let old = &d.inodes[ino];
            let mut data = old.durable.clone();
            if d.torn && old.data.len() > data.len() && old.data.starts_with(&data) {
                let extra = (old.data.len() - data.len()) / 2;
                data.extend_from_slice(&old.data[data.len()..data.len() + extra]);
            }
            disk.names.insert(path.clone(), disk.inodes.len());
            disk.durable_names.insert(path.clone(), disk.inodes.len());
            disk.inodes.push(Inode {
                durable: data.clone(),
                data,
                lost: None,
            });
        }
        MemStorage {
            disk: Arc::new(Mutex::new(disk)),
        }
    }

    /// The disk as a restarted process finds it: the same running kernel, so everything
    /// written is readable, and what is not yet durable — pages whose write-back failed
    /// included — is still not. Locks are gone, no fault is set.
    pub fn after_crash(&self) -> MemStorage {
        let d = self.lock();
        let disk = Disk {
            locks: Default::default(),
            fault: Fault::None,
            ops: 0,
            syncs: 0,
            powered_off: false,
            torn: false,
            read_only: false,
            sync_delay: Default::default(),
            ..d.clone()
        };
        MemStorage {
            disk: Arc::new(Mutex::new(disk)),
        }
    }

    /// Replace a file's contents outright (to damage it in a test); not counted, never fails.
    pub fn overwrite(&self, path: &Path, bytes: &[u8]) {
        let mut d = self.lock();
        let ino = match d.names.get(path) {
            Some(&i) => i,
            None => {
                d.inodes.push(Inode::default());
                let i = d.inodes.len() - 1;
                d.names.insert(path.to_owned(), i);
                d.durable_names.insert(path.to_owned(), i);
                i
            }
        };
        d.inodes[ino] = Inode {
            data: bytes.to_vec(),
            durable: bytes.to_vec(),
            lost: None,
        };
    }

    /// Every file and its length.
    pub fn files(&self) -> Vec<(PathBuf, usize)> {
        let d = self.lock();
        d.names
            .iter()
            .map(|(p, &i)| (p.clone(), d.inodes[i].data.len()))
            .collect()
    }
}

struct MemLog {
    disk: Arc<Mutex<Disk>>,
    path: PathBuf,
    len: u64,
}

impl MemLog {
    fn with<T>(&self, f: impl FnOnce(&mut Disk) -> io::Result<T>) -> io::Result<T> {
        let mut d = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut d)
    }

    fn ino(&self, d: &Disk) -> io::Result<usize> {
        // the handle keeps its file even after it was renamed over or removed; a handle is
        // only used while its path names it in a gallery, so a look-up by path is enough here
        d.inode(&self.path)
    }
}

impl LogFile for MemLog {
    fn len(&self) -> u64 {
        self.len
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let at = self.len as usize;
        let r = self.with(|d| {
            let ino = self.ino(d)?;
            let result = d.op(false);
            let n = if result.is_ok() {
                bytes.len()
            } else {
                bytes.len() / 2
            };
            if !d.powered_off {
                let node = &mut d.inodes[ino];
                node.data.truncate(at);
                node.data.resize(at, 0);
                node.data.extend_from_slice(&bytes[..n]);
                node.rewritten(at);
            }
            result
        });
        if r.is_ok() {
            self.len += bytes.len() as u64;
        }
        r
    }

    fn sync(&mut self) -> io::Result<()> {
        let delay = self.with(|d| Ok(d.sync_delay))?;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        self.with(|d| {
            let ino = self.ino(d)?;
            d.fsync(ino)
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|d| {
            let ino = self.ino(d)?;
            let shrinks = len as usize <= d.inodes[ino].data.len();
            d.op_of(false, shrinks)?;
            d.inodes[ino].data.resize(len as usize, 0);
            Ok(())
        })?;
        self.len = len;
        Ok(())
    }
}

struct MemLock {
    disk: Arc<Mutex<Disk>>,
    path: PathBuf,
}

impl LockGuard for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut d = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        d.locks.remove(&self.path);
    }
}

impl Storage for MemStorage {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let d = self.lock();
        if d.powered_off {
            return Err(IoFault::Io.error());
        }
        Ok(d.inodes[d.inode(path)?].data.clone())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let d = self.lock();
        Ok(d.names.contains_key(path) || d.dirs.contains(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let d = self.lock();
        if !d.dirs.contains(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let files = d.names.keys().map(PathBuf::as_path);
        let subdirs = d.dirs.iter().map(PathBuf::as_path);
        let mut out: Vec<String> = files
            .chain(subdirs)
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        out.sort();
        Ok(out)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut d = self.lock();
        if d.dirs.contains(path) {
            return Ok(());
        }
        d.op(false)?;
        let mut p = Some(path);
        while let Some(dir) = p {
            if dir.as_os_str().is_empty() {
                break;
            }
            d.dirs.insert(dir.to_owned());
            p = dir.parent();
        }
        Ok(())
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut d = self.lock();
        d.parent_exists(path)?;
        let written = d.op(false);
        if d.powered_off {
            return written;
        }
        // a new inode, as open(O_TRUNC) of a new file would give (its name is durable only
        // after the directory is synced)
        let ino = match d.names.get(path) {
            Some(&i) => i,
            None => {
                d.inodes.push(Inode::default());
                let i = d.inodes.len() - 1;
                d.names.insert(path.to_owned(), i);
                i
            }
        };
        let n = if written.is_ok() {
            bytes.len()
        } else {
            bytes.len() / 2
        };
        d.inodes[ino].data = bytes[..n].to_vec();
        d.inodes[ino].rewritten(0);
        written?;
        d.fsync(ino)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut d = self.lock();
        let ino = d.inode(path)?;
        d.fsync(ino)
    }

    fn open_log(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let d = self.lock();
        if d.powered_off {
            return Err(IoFault::Io.error());
        }
        let len = d.inodes[d.inode(path)?].data.len() as u64;
        Ok(Box::new(MemLog {
            disk: self.disk.clone(),
            path: path.to_owned(),
            len,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut d = self.lock();
        d.inode(from)?;
        d.parent_exists(to)?;
        d.op(false)?;
        if let Some(ino) = d.names.remove(from) {
            d.names.insert(to.to_owned(), ino);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut d = self.lock();
        d.inode(path)?;
        d.op_of(false, true)?;
        d.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut d = self.lock();
        if !d.dirs.contains(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        d.op(true)?;
        let in_dir = |p: &Path| p.parent() == Some(dir);
        d.durable_names.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, usize)> = d
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        d.durable_names.extend(current);
        Ok(())
    }

    fn try_lock(
        &self,
        path: &Path,
        holder: &str,
    ) -> io::Result<Result<Box<dyn LockGuard>, String>> {
        let mut d = self.lock();
        if d.powered_off {
            return Err(IoFault::Io.error());
        }
        if d.read_only {
            return Err(io::Error::from_raw_os_error(30));
        }
        if let Some(h) = d.locks.get(path) {
            return Ok(Err(h.clone()));
        }
        d.locks.insert(path.to_owned(), holder.to_owned());
        Ok(Ok(Box::new(MemLock {
            disk: self.disk.clone(),
            path: path.to_owned(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_keeps_only_what_was_synced() {
        let s = MemStorage::new();
        let dir = Path::new("/g");
        s.create_dir(dir).unwrap();
        s.write_synced(&dir.join("a"), b"one").unwrap();
        s.sync_dir(dir).unwrap();
        s.write_synced(&dir.join("b"), b"two").unwrap(); // name never synced
        let mut log = s.open_log(&dir.join("a")).unwrap();
        log.append(b"+synced").unwrap();
        log.sync().unwrap();
        log.append(b"+lost").unwrap();
        s.rename(&dir.join("a"), &dir.join("c")).unwrap(); // rename never synced
        let after = s.after_power_loss();
        assert_eq!(after.read(&dir.join("a")).unwrap(), b"one+synced");
        assert!(!after.exists(&dir.join("b")).unwrap());
        assert!(!after.exists(&dir.join("c")).unwrap());
        assert_eq!(
            s.after_crash().read(&dir.join("c")).unwrap(),
            b"one+synced+lost"
        );
    }

    #[test]
    fn a_failed_append_writes_part_of_its_bytes() {
        let s = MemStorage::new();
        s.create_dir(Path::new("/g")).unwrap();
        s.write_synced(Path::new("/g/log"), b"").unwrap();
        let mut log = s.open_log(Path::new("/g/log")).unwrap();
        s.set_fault(Fault::FailAt {
            n: 1,
            error: IoFault::NoSpace,
        });
        let e = log.append(b"abcdef").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(log.len(), 0);
        assert_eq!(s.read(Path::new("/g/log")).unwrap(), b"abc");
        log.truncate(0).unwrap();
        log.append(b"xy").unwrap();
        assert_eq!(s.read(Path::new("/g/log")).unwrap(), b"xy");
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let s = MemStorage::new();
        let first = s
            .try_lock(Path::new("/LOCK"), "pid 1")
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(
            s.try_lock(Path::new("/LOCK"), "pid 2")
                .unwrap()
                .err()
                .unwrap(),
            "pid 1"
        );
        drop(first);
        assert!(s.try_lock(Path::new("/LOCK"), "pid 2").unwrap().is_ok());
    }

    #[test]
    fn the_file_lock_is_exclusive_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("LOCK");
        let first = FsStorage
            .try_lock(&p, "pid 1 (test)")
            .unwrap()
            .ok()
            .unwrap();
        let holder = FsStorage.try_lock(&p, "pid 2").unwrap().err().unwrap();
        assert_eq!(holder, "pid 1 (test)");
        drop(first);
        assert!(FsStorage.try_lock(&p, "pid 2").unwrap().is_ok());
    }
}
