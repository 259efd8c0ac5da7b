//! The one place where Rust meets C: status codes, the per-thread last error, and `run`, which
//! every exported function goes through (panics caught, errors turned into status codes).

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Result of every fallible function. Values are explicit and never reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum uf_status {
    UF_STATUS_OK = 0,
    /// A required pointer argument was NULL.
    UF_STATUS_NULL_PARAMETER = 1,
    /// An internal error was caught at the boundary (a bug: please report it).
    UF_STATUS_PANIC = 2,
    /// An argument is out of range, inconsistent or not UTF-8.
    UF_STATUS_INVALID_ARGUMENT = 3,
    /// A file could not be read or written.
    UF_STATUS_IO = 4,
    /// A model file is missing, corrupt, unreadable or could not be downloaded.
    UF_STATUS_MODEL = 5,
    /// An image could not be decoded, is too large, or a pixel buffer is too short.
    UF_STATUS_IMAGE = 6,
    /// No face where one was required.
    UF_STATUS_NO_FACE = 7,
    /// A template is malformed, damaged, or from another model.
    UF_STATUS_TEMPLATE = 8,
    /// A gallery operation failed (damaged files, wrong model, ...).
    UF_STATUS_GALLERY = 9,
    /// The caller's buffer is too small; the size needed is reported where the function
    /// has a `needed` argument.
    UF_STATUS_BUFFER_TOO_SMALL = 10,
    /// A file or directory does not exist.
    UF_STATUS_NOT_FOUND = 11,
    /// Another writer holds the gallery (one writer per gallery); the message names it.
    UF_STATUS_LOCKED = 12,
    /// The gallery was opened read-only.
    UF_STATUS_READ_ONLY = 13,
    /// A key is wrong, malformed or unsafely stored, or sealed bytes do not authenticate
    /// (altered, or opened with other associated data).
    UF_STATUS_CRYPTO = 14,
}

/// A static NUL-terminated description of a status code (any value: one that is not a
/// `uf_status` gives "unknown status code"). Thread-safe.
#[no_mangle]
pub extern "C" fn uf_status_str(status: u32) -> *const c_char {
    use uf_status::*;
    // an integer, never a Rust enum, comes from C: a value outside the enum would be
    // undefined behaviour as a `uf_status`
    let known = [
        UF_STATUS_OK,
        UF_STATUS_NULL_PARAMETER,
        UF_STATUS_PANIC,
        UF_STATUS_INVALID_ARGUMENT,
        UF_STATUS_IO,
        UF_STATUS_MODEL,
        UF_STATUS_IMAGE,
        UF_STATUS_NO_FACE,
        UF_STATUS_TEMPLATE,
        UF_STATUS_GALLERY,
        UF_STATUS_BUFFER_TOO_SMALL,
        UF_STATUS_NOT_FOUND,
        UF_STATUS_LOCKED,
        UF_STATUS_READ_ONLY,
        UF_STATUS_CRYPTO,
    ];
    let Some(&status) = known.iter().find(|s| **s as u32 == status) else {
        return c"unknown status code".as_ptr();
    };
    let s: &'static str = match status {
        UF_STATUS_OK => "ok\0",
        UF_STATUS_NULL_PARAMETER => "a required pointer argument was NULL\0",
        UF_STATUS_PANIC => "internal error (a panic was caught at the API boundary)\0",
        UF_STATUS_INVALID_ARGUMENT => "invalid argument\0",
        UF_STATUS_IO => "I/O error\0",
        UF_STATUS_MODEL => "model file missing, corrupt or unreadable\0",
        UF_STATUS_IMAGE => "image could not be decoded or has the wrong size\0",
        UF_STATUS_NO_FACE => "no face found\0",
        UF_STATUS_TEMPLATE => "template malformed, damaged or from another model\0",
        UF_STATUS_GALLERY => "gallery operation failed\0",
        UF_STATUS_BUFFER_TOO_SMALL => "buffer too small\0",
        UF_STATUS_NOT_FOUND => "file or directory not found\0",
        UF_STATUS_LOCKED => "the gallery is locked by another writer\0",
        UF_STATUS_READ_ONLY => "the gallery is open read-only\0",
        UF_STATUS_CRYPTO => "wrong key, or sealed bytes that do not authenticate\0",
    };
    s.as_ptr().cast()
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Why a call failed, before it becomes a status code and a message.
pub(crate) enum Failure {
    Null(&'static str),
    TooSmall { needed: usize, got: usize },
    Status(uf_status, String),
}

impl Failure {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Status(uf_status::UF_STATUS_INVALID_ARGUMENT, message.into())
    }

    fn into_parts(self) -> (uf_status, String) {
        match self {
            Failure::Null(name) => (
                uf_status::UF_STATUS_NULL_PARAMETER,
                format!("{name} must not be NULL"),
            ),
            Failure::TooSmall { needed, got } => (
                uf_status::UF_STATUS_BUFFER_TOO_SMALL,
                format!("buffer too small: {needed} needed, {got} given"),
            ),
            Failure::Status(s, m) => (s, m),
        }
    }
}

/// The status of an error kind (the one mapping, shared with the Python exceptions through
/// `uniface_core::ErrorKind`).
fn status_of(kind: uniface_core::ErrorKind) -> uf_status {
    use uf_status::*;
    use uniface_core::ErrorKind as K;
    match kind {
        K::NotFound => UF_STATUS_NOT_FOUND,
        K::Io => UF_STATUS_IO,
        K::Image => UF_STATUS_IMAGE,
        K::NoFace => UF_STATUS_NO_FACE,
        K::Template => UF_STATUS_TEMPLATE,
        K::InvalidArgument => UF_STATUS_INVALID_ARGUMENT,
        K::Gallery => UF_STATUS_GALLERY,
        K::Locked => UF_STATUS_LOCKED,
        K::ReadOnly => UF_STATUS_READ_ONLY,
        K::Crypto => UF_STATUS_CRYPTO,
        _ => UF_STATUS_MODEL,
    }
}

impl From<uniface_core::Error> for Failure {
    fn from(e: uniface_core::Error) -> Self {
        Self::Status(status_of(e.kind()), e.to_string())
    }
}

impl From<uniface_index::Error> for Failure {
    fn from(e: uniface_index::Error) -> Self {
        Self::Status(status_of(e.kind()), e.to_string())
    }
}

pub(crate) type Outcome<T> = Result<T, Failure>;

fn set_last_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Run the body of an exported function: a panic becomes `UF_STATUS_PANIC`, a failure its
/// status; either way the message is kept for `uf_last_error_message` on this thread.
pub(crate) fn run(f: impl FnOnce() -> Outcome<()>) -> uf_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => uf_status::UF_STATUS_OK,
        Ok(Err(failure)) => {
            let (status, message) = failure.into_parts();
            set_last_error(message);
            status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!("internal error: {what}"));
            uf_status::UF_STATUS_PANIC
        }
    }
}

/// Copy the message of the last failure on this thread into `buf` (`len` bytes, NUL
/// included). `*needed` (if not NULL) receives the size the message needs, NUL included;
/// when `len` is smaller the result is `UF_STATUS_BUFFER_TOO_SMALL` and nothing is written.
/// An empty message means no call on this thread has failed. Thread-safe (per thread).
#[no_mangle]
pub unsafe extern "C" fn uf_last_error_message(
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> uf_status {
    let message = LAST_ERROR.with(|e| e.borrow().clone());
    // SAFETY: `buf` is NULL or valid for `len` bytes, `needed` NULL or valid (the header's
    // contract).
    match unsafe { write_text(&message, buf, len, needed) } {
        Ok(()) => uf_status::UF_STATUS_OK,
        Err(Failure::TooSmall { .. }) => uf_status::UF_STATUS_BUFFER_TOO_SMALL,
        Err(_) => uf_status::UF_STATUS_NULL_PARAMETER,
    }
}

/// The caller's output buffer for `size` bytes: `*needed` (if not NULL) receives `size`;
/// a `len` below it is `BUFFER_TOO_SMALL` (checked before NULL, so `buf = NULL, len = 0` asks
/// for the size).
///
/// # Safety
/// `buf` is NULL or valid for writing `len` bytes for `'a`; `needed` is NULL or writable.
pub(crate) unsafe fn out_buffer<'a>(
    buf: *mut u8,
    len: usize,
    needed: *mut usize,
    size: usize,
) -> Outcome<&'a mut [u8]> {
    // SAFETY: `needed` is NULL or valid (the caller's contract).
    if let Some(n) = unsafe { needed.as_mut() } {
        *n = size;
    }
    if len < size {
        return Err(Failure::TooSmall {
            needed: size,
            got: len,
        });
    }
    if buf.is_null() {
        return Err(Failure::Null("buf"));
    }
    // SAFETY: `buf` is non-NULL and valid for `len ≥ size` bytes (the caller's contract).
    Ok(unsafe { std::slice::from_raw_parts_mut(buf, size) })
}

/// Copy `text` and a NUL into `buf` (`len` bytes); `*needed` (if not NULL) receives the size
/// needed. Nothing is written when `len` is too small or `buf` is NULL.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes; `needed` is NULL or valid.
pub(crate) unsafe fn write_text(
    text: &str,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> Outcome<()> {
    let size = text.len() + 1;
    // SAFETY: forwarded from this function's contract.
    let dst = unsafe { out_buffer(buf.cast::<u8>(), len, needed, size) }?;
    dst[..text.len()].copy_from_slice(text.as_bytes());
    dst[text.len()] = 0;
    Ok(())
}
