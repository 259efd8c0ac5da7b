//! The gallery: open/create, enroll, identify into a caller-sized array, remove, flush, close.

use std::ffi::c_char;
use std::path::Path;
use std::sync::Arc;

use uniface_core::crypto::{Key, KeyProvider};

use uniface_index::{Durability, Gallery, GalleryOptions, OpenOptions, OpenReport};

use crate::boundary::{self, uf_status, Failure};
use crate::{out_arg, ref_arg, str_arg, uf_decision, uf_template};

/// Longest subject id in bytes (the C API refuses longer ones, so candidates never truncate).
pub const UF_SUBJECT_MAX: usize = 255;
/// Size of `uf_candidate.subject`: `UF_SUBJECT_MAX` bytes and the terminating NUL.
pub const UF_SUBJECT_BUFFER: usize = 256;
const _: () = assert!(UF_SUBJECT_BUFFER == UF_SUBJECT_MAX + 1);

/// A persistent, crash-safe gallery directory. Thread-safe: enrollments, removals and
/// searches may run concurrently from many threads on one handle.
pub struct uf_gallery {
    pub(crate) inner: Gallery,
    /// What opening found and recovered (`uf_gallery_open_report`).
    report: Option<OpenReport>,
}

/// One ranked subject of an identification.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct uf_candidate {
    /// NUL-terminated subject id.
    pub subject: [c_char; UF_SUBJECT_BUFFER],
    pub template_id: u64,
    pub distance: f32,
    pub similarity: f32,
}

/// When an enrollment is acknowledged.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum uf_durability {
    /// fsync before each enrollment returns.
    UF_DURABILITY_SYNC = 0,
    /// Concurrent enrollments share one fsync.
    UF_DURABILITY_GROUP = 1,
    /// Left to the OS (survives a process crash, not a power loss).
    UF_DURABILITY_ASYNC = 2,
}

/// A subject id argument: 1 to `UF_SUBJECT_MAX` bytes of UTF-8.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that stays valid and unchanged for `'a`.
unsafe fn subject_arg<'a>(p: *const c_char) -> Result<&'a str, Failure> {
    // SAFETY: forwarded from this function's contract.
    let s = unsafe { str_arg(p, "subject") }?;
    if s.is_empty() || s.len() > UF_SUBJECT_MAX {
        return Err(Failure::invalid(format!(
            "subject ids are 1 to {UF_SUBJECT_MAX} bytes, got {}",
            s.len()
        )));
    }
    Ok(s)
}

/// Open the gallery in `dir`, or create it there when `create` is true and there is none
/// (`shards` ≥ 1 shards). `durability` is a `uf_durability` value (others:
/// `UF_STATUS_INVALID_ARGUMENT`). Release with `uf_gallery_close`. An encrypted gallery is
/// opened with `uf_gallery_open_encrypted` (here: `UF_STATUS_CRYPTO`).
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_open(
    dir: *const c_char,
    create: bool,
    shards: usize,
    durability: u32,
    out: *mut *mut uf_gallery,
) -> uf_status {
    // SAFETY: forwarded from the header's contract (no key).
    boundary::run(|| unsafe { open_impl(dir, create, shards, durability, None, out) })
}

/// `uf_gallery_open` for a gallery encrypted at rest under the key-encryption key `key`
/// (`UF_KEY_LEN` bytes, e.g. from `uf_key_generate`; the caller may wipe it once this
/// returns). Created with `create`, the gallery is encrypted: templates, metadata and graphs
/// sealed, each subject under a key of its own that `uf_gallery_remove` destroys at once. A
/// wrong key, or altered or misplaced bytes, give `UF_STATUS_CRYPTO`; a plain gallery opened
/// with a key gives `UF_STATUS_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_open_encrypted(
    dir: *const c_char,
    create: bool,
    shards: usize,
    durability: u32,
    key: *const u8,
    out: *mut *mut uf_gallery,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `key` is NULL or readable for UF_KEY_LEN bytes (the header's contract).
        let key = unsafe { crate::crypto::key_arg(key) }?;
        // SAFETY: forwarded from the header's contract.
        unsafe { open_impl(dir, create, shards, durability, Some(key), out) }
    })
}

/// Re-wrap every subject's key of an encrypted gallery under `new_key` (`UF_KEY_LEN` bytes);
/// no template is written again, and from then on only `new_key` opens the gallery. A plain
/// gallery gives `UF_STATUS_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_rotate_key(
    gallery: *const uf_gallery,
    new_key: *const u8,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
        let g = unsafe { ref_arg(gallery, "gallery") }?;
        // SAFETY: `new_key` is NULL or readable for UF_KEY_LEN bytes (the header's contract).
        let key = unsafe { crate::crypto::key_arg(new_key) }?;
        Ok(g.inner.rotate_kek(&key)?)
    })
}

/// # Safety
/// `dir` is NULL or a NUL-terminated string; `out` is NULL or writable.
unsafe fn open_impl(
    dir: *const c_char,
    create: bool,
    shards: usize,
    durability: u32,
    key: Option<Key>,
    out: *mut *mut uf_gallery,
) -> Result<(), Failure> {
    // SAFETY: forwarded from this function's contract.
    let dir = Path::new(unsafe { str_arg(dir, "dir") }?);
    // SAFETY: forwarded from this function's contract.
    let out = unsafe { out_arg(out, "out") }?;
    let mode = match durability {
        d if d == uf_durability::UF_DURABILITY_SYNC as u32 => Durability::Sync,
        d if d == uf_durability::UF_DURABILITY_GROUP as u32 => Durability::Group,
        d if d == uf_durability::UF_DURABILITY_ASYNC as u32 => Durability::Async,
        other => {
            return Err(Failure::invalid(format!(
                "durability {other} is not a uf_durability (0, 1 or 2)"
            )))
        }
    };
    let key = key.map(|k| Arc::new(k) as Arc<dyn KeyProvider>);
    let (inner, report) = if create && !dir.join("manifest.json").exists() {
        let options = GalleryOptions {
            shards,
            durability: mode,
            encryption: key,
            ..Default::default()
        };
        (Gallery::create(dir, &options)?, None)
    } else {
        let fp = uniface_core::template::ModelFingerprint::dlib_resnet_v1();
        let options = OpenOptions {
            durability: mode,
            key,
            ..OpenOptions::default()
        };
        let (g, r) = Gallery::open_with_options(dir, &fp, &options)?;
        (g, Some(r))
    };
    *out = Box::into_raw(Box::new(uf_gallery { inner, report }));
    Ok(())
}

/// Open the gallery in `dir` for reading only: no lock is taken (a writer may be enrolling
/// meanwhile), no file is changed (it works on a read-only filesystem); enrollments and
/// removals fail with `UF_STATUS_READ_ONLY`. Release with `uf_gallery_close`. (Plain galleries
/// only.)
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_open_read_only(
    dir: *const c_char,
    out: *mut *mut uf_gallery,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `dir` is NULL or a NUL-terminated string (the header's contract).
        let dir = Path::new(unsafe { str_arg(dir, "dir") }?);
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let fp = uniface_core::template::ModelFingerprint::dlib_resnet_v1();
        let (inner, report) = Gallery::open_with_options(dir, &fp, &OpenOptions::read_only())?;
        *out = Box::into_raw(Box::new(uf_gallery {
            inner,
            report: Some(report),
        }));
        Ok(())
    })
}

/// What opening the gallery found and recovered, one line per finding (an unfinished append
/// cut off, temporary files removed, a damaged search graph rebuilt, ...), as NUL-terminated
/// text in `buf` (`len` bytes); empty when opening found nothing to report (or the gallery was
/// just created). `*needed` (if not NULL) receives the size needed, NUL included; a smaller
/// `len` gives `UF_STATUS_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_open_report(
    gallery: *const uf_gallery,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
        let g = unsafe { ref_arg(gallery, "gallery") }?;
        let text = g
            .report
            .as_ref()
            .map(|r| r.messages().join("\n"))
            .unwrap_or_default();
        // SAFETY: `buf` is NULL or valid for writing `len` bytes, `needed` NULL or valid (the
        // header's contract).
        unsafe { boundary::write_text(&text, buf, len, needed) }
    })
}

/// Enroll `template` for `subject`; `*template_id` (if not NULL) receives its id. Returns
/// once the enrollment is durable (per the durability mode) and searchable.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_enroll(
    gallery: *const uf_gallery,
    subject: *const c_char,
    template: *const uf_template,
    template_id: *mut u64,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
        let g = unsafe { ref_arg(gallery, "gallery") }?;
        // SAFETY: `subject` is NULL or a NUL-terminated string (the header's contract).
        let subject = unsafe { subject_arg(subject) }?;
        // SAFETY: `template` is NULL or a live handle of ours (the header's contract).
        let t = unsafe { ref_arg(template, "template") }?;
        let id = g.inner.enroll(subject, &t.inner)?;
        // SAFETY: `template_id` is NULL or writable (the header's contract).
        if let Some(out) = unsafe { template_id.as_mut() } {
            *out = id;
        }
        Ok(())
    })
}

/// Who is this? Writes up to `capacity` candidates (best first, one per subject) into
/// `candidates` and their number into `*count`; `*known` (if not NULL) is true when the best
/// candidate is closer than the calibrated threshold for per-comparison false-match rate
/// `fmr`.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_identify(
    gallery: *const uf_gallery,
    probe: *const uf_template,
    fmr: f64,
    candidates: *mut uf_candidate,
    capacity: usize,
    count: *mut usize,
    known: *mut bool,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
        let g = unsafe { ref_arg(gallery, "gallery") }?;
        // SAFETY: `probe` is NULL or a live handle of ours (the header's contract).
        let p = unsafe { ref_arg(probe, "probe") }?;
        // SAFETY: `count` is NULL or writable (the header's contract).
        let count = unsafe { out_arg(count, "count") }?;
        if candidates.is_null() && capacity > 0 {
            return Err(Failure::Null("candidates"));
        }
        let r = g.inner.identify(&p.inner, capacity.max(1), fmr)?;
        let n = r.candidates.len().min(capacity);
        for (i, c) in r.candidates.iter().take(n).enumerate() {
            let mut subject = [0 as c_char; UF_SUBJECT_BUFFER];
            for (dst, b) in subject
                .iter_mut()
                .zip(c.subject.as_bytes().iter().take(UF_SUBJECT_MAX))
            {
                *dst = *b as c_char;
            }
            let candidate = uf_candidate {
                subject,
                template_id: c.template_id,
                distance: c.distance,
                similarity: c.similarity,
            };
            // SAFETY: `candidates` is valid for `capacity` values (the header's contract),
            // checked non-NULL above, and `i < n ≤ capacity`.
            unsafe { candidates.add(i).write(candidate) };
        }
        *count = n;
        // SAFETY: `known` is NULL or writable (the header's contract).
        if let Some(k) = unsafe { known.as_mut() } {
            *k = r.known.is_some();
        }
        Ok(())
    })
}

/// 1:1 against `subject`'s closest template. `UF_STATUS_INVALID_ARGUMENT` when the subject
/// is not enrolled.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_verify(
    gallery: *const uf_gallery,
    subject: *const c_char,
    probe: *const uf_template,
    fmr: f64,
    out: *mut uf_decision,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
        let g = unsafe { ref_arg(gallery, "gallery") }?;
        // SAFETY: `subject` is NULL or a NUL-terminated string (the header's contract).
        let subject = unsafe { subject_arg(subject) }?;
        // SAFETY: `probe` is NULL or a live handle of ours (the header's contract).
        let p = unsafe { ref_arg(probe, "probe") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        match g.inner.verify(subject, &p.inner, fmr)? {
            Some(d) => {
                *out = d.into();
                Ok(())
            }
            None => Err(Failure::invalid(format!("{subject} is not enrolled"))),
        }
    })
}

/// Remove a subject and its templates (erased from disk at the next checkpoint); `*removed`
/// (if not NULL) receives how many templates went.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_remove(
    gallery: *const uf_gallery,
    subject: *const c_char,
    removed: *mut usize,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
        let g = unsafe { ref_arg(gallery, "gallery") }?;
        // SAFETY: `subject` is NULL or a NUL-terminated string (the header's contract).
        let subject = unsafe { subject_arg(subject) }?;
        let n = g.inner.remove_subject(subject)?;
        // SAFETY: `removed` is NULL or writable (the header's contract).
        if let Some(out) = unsafe { removed.as_mut() } {
            *out = n;
        }
        Ok(())
    })
}

/// Number of templates (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_len(gallery: *const uf_gallery) -> usize {
    // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
    unsafe { gallery.as_ref() }.map_or(0, |g| g.inner.len())
}

/// Make every log durable now.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_flush(gallery: *const uf_gallery) -> uf_status {
    // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
    boundary::run(|| Ok(unsafe { ref_arg(gallery, "gallery") }?.inner.flush()?))
}

/// Fold the logs into snapshots (and erase removed subjects from disk).
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_checkpoint(gallery: *const uf_gallery) -> uf_status {
    // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
    boundary::run(|| Ok(unsafe { ref_arg(gallery, "gallery") }?.inner.checkpoint()?))
}

/// Flush and release a gallery (NULL: no-op). Not while another thread uses it.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_close(gallery: *mut uf_gallery) -> uf_status {
    if gallery.is_null() {
        return uf_status::UF_STATUS_OK;
    }
    // SAFETY: a non-NULL `gallery` came from `Box::into_raw` in `uf_gallery_open*` and is
    // released once (the header's contract).
    let g = unsafe { Box::from_raw(gallery) };
    boundary::run(move || Ok(g.inner.flush()?))
}
