//! Clustering embeddings by identity, and possible duplicate identities of a gallery.

use std::ffi::c_char;

use uniface_index::cluster::{self, ClusterOptions, Method, Threshold};

use crate::boundary::{self, uf_status, Failure};
use crate::gallery::{uf_gallery, UF_SUBJECT_BUFFER, UF_SUBJECT_MAX};
use crate::{out_arg, ref_arg};

/// How `uf_cluster` groups faces.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum uf_cluster_method {
    /// Average-linkage agglomeration (the default: a chain of look-alikes does not join two
    /// people).
    UF_CLUSTER_AVERAGE_LINKAGE = 0,
    /// dlib's Chinese Whispers (`chinese_whispers_clustering`).
    UF_CLUSTER_CHINESE_WHISPERS = 1,
    /// Connected components of the thresholded graph (single linkage).
    UF_CLUSTER_COMPONENTS = 2,
}

/// Group `count` embeddings of `dim` floats each (row after row in `embeddings`) by identity:
/// writes one label per row into `labels` (room for `count`), numbered 0, 1, 2, … in order of
/// first appearance. The threshold is the shipped calibration's distance for false-match
/// rate `fmr` per comparison, or `threshold` when it is above 0 (a distance; dlib's examples
/// use 0.5 with Chinese Whispers). `method` is a `uf_cluster_method` value (others:
/// `UF_STATUS_INVALID_ARGUMENT`). 32 neighbours per face, seed 0. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn uf_cluster(
    embeddings: *const f32,
    count: usize,
    dim: usize,
    method: u32,
    fmr: f64,
    threshold: f32,
    labels: *mut u32,
) -> uf_status {
    boundary::run(|| {
        let method = match method {
            0 => Method::AverageLinkage,
            1 => Method::ChineseWhispers,
            2 => Method::Components,
            m => return Err(Failure::invalid(format!("unknown uf_cluster_method {m}"))),
        };
        if count > 0 && (embeddings.is_null() || labels.is_null()) {
            return Err(Failure::Null(if embeddings.is_null() {
                "embeddings"
            } else {
                "labels"
            }));
        }
        if dim == 0 || dim > cluster::MAX_DIMENSION {
            return Err(Failure::invalid(format!(
                "dim must lie in 1..={}, got {dim}",
                cluster::MAX_DIMENSION
            )));
        }
        let values = count
            .checked_mul(dim)
            .filter(|&n| n <= isize::MAX as usize / 4)
            .ok_or_else(|| Failure::invalid(format!("{count} × {dim} floats is too many")))?;
        let faces: &[f32] = if count == 0 {
            &[]
        } else {
            // SAFETY: non-NULL (checked above) and valid for `count × dim` floats (the
            // header's contract); the product was checked not to overflow.
            unsafe { std::slice::from_raw_parts(embeddings, values) }
        };
        let options = ClusterOptions {
            method,
            threshold: if threshold > 0.0 {
                Threshold::Distance(threshold)
            } else {
                Threshold::Fmr(fmr)
            },
            ..Default::default()
        };
        let found = cluster::cluster(faces, dim, options)?;
        for (i, l) in found.into_iter().enumerate() {
            // SAFETY: `labels` is non-NULL (checked above) and valid for `count` values (the
            // header's contract); `i < count`.
            unsafe { labels.add(i).write(l) };
        }
        Ok(())
    })
}

/// Two subjects whose templates match (`uf_gallery_duplicates`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct uf_duplicate {
    /// NUL-terminated subject ids, in sorted order.
    pub subject_a: [c_char; UF_SUBJECT_BUFFER],
    pub subject_b: [c_char; UF_SUBJECT_BUFFER],
    /// Their closest templates.
    pub template_a: u64,
    pub template_b: u64,
    pub distance: f32,
}

fn subject_buffer(s: &str) -> [c_char; UF_SUBJECT_BUFFER] {
    let mut out = [0 as c_char; UF_SUBJECT_BUFFER];
    for (dst, b) in out.iter_mut().zip(s.as_bytes().iter().take(UF_SUBJECT_MAX)) {
        *dst = *b as c_char;
    }
    out
}

/// Possible duplicate identities: pairs of different subjects whose templates match at `fmr`
/// per comparison, closest first. Writes up to `capacity` pairs into `pairs` and the number
/// *found* into `*count` (which may be more than `capacity`: call again with more room, or
/// with `pairs = NULL, capacity = 0` to ask). Every template is searched; keep `fmr` small
/// (n templates make about n²/2 comparisons).
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_duplicates(
    gallery: *const uf_gallery,
    fmr: f64,
    pairs: *mut uf_duplicate,
    capacity: usize,
    count: *mut usize,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `gallery` is NULL or a live handle of ours (the header's contract).
        let g = unsafe { ref_arg(gallery, "gallery") }?;
        // SAFETY: `count` is NULL or writable (the header's contract).
        let count = unsafe { out_arg(count, "count") }?;
        if pairs.is_null() && capacity > 0 {
            return Err(Failure::Null("pairs"));
        }
        let found = g.inner.duplicates(fmr, &|_| {})?;
        for (i, d) in found.iter().take(capacity).enumerate() {
            let pair = uf_duplicate {
                subject_a: subject_buffer(&d.subjects[0]),
                subject_b: subject_buffer(&d.subjects[1]),
                template_a: d.templates[0],
                template_b: d.templates[1],
                distance: d.distance,
            };
            // SAFETY: `pairs` is valid for `capacity` values (the header's contract), checked
            // non-NULL above, and `i < capacity`.
            unsafe { pairs.add(i).write(pair) };
        }
        *count = found.len();
        Ok(())
    })
}
