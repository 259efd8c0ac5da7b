//! C API for UniFace: `libuniface.so` / `libuniface.a` and the generated `include/uniface.h`.
//!
//! Conventions (the header repeats them on each item):
//! - Every fallible function returns a [`uf_status`]; outputs are written only on success.
//!   After a failure, [`uf_last_error_message`] returns a description (per thread).
//! - Objects are opaque handles made by `uf_*_new`/`_open`/… and released by the matching
//!   `uf_*_free`; `uf_*_free(NULL)` does nothing. Freeing a handle twice is undefined
//!   behaviour (as with `free`): set your pointer to NULL after freeing it.
//! - NULL for a required pointer gives `UF_STATUS_NULL_PARAMETER`; a Rust panic never crosses
//!   the boundary: it is caught and reported as `UF_STATUS_PANIC`.
//! - Strings are NUL-terminated UTF-8.

#![allow(non_camel_case_types)]
// Every unsafe operation sits in its own `unsafe` block with the reason it is sound.
#![deny(unsafe_op_in_unsafe_fn)]
// Every `extern "C"` function checks its pointers for NULL and documents the rest of its
// contract in the header; clippy's per-function `# Safety` sections would repeat that.
#![allow(clippy::missing_safety_doc)]

// Panics are caught at the boundary and reported as `UF_STATUS_PANIC` (and the JPEG decoder
// signals libjpeg errors by unwinding): built with `panic = "abort"`, a bad image would abort
// the host process instead.
#[cfg(panic = "abort")]
compile_error!("uniface-capi must be built with panic = \"unwind\": the C boundary catches panics");

mod boundary;
mod calibration;
mod cluster;
mod crypto;
mod gallery;

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use uniface_core::image::{self, PixelFormat};
use uniface_core::liveness::LazyLivenessDetector;
use uniface_core::model_store::ModelStore;
use uniface_core::quality::Policy;
use uniface_core::template::{ModelFingerprint, Template};

pub use boundary::{uf_last_error_message, uf_status, uf_status_str};
use boundary::{Failure, Outcome};
pub use cluster::*;
pub use gallery::*;

/// Values in an embedding.
pub const UF_EMBEDDING_DIM: usize = 128;
const _: () = assert!(UF_EMBEDDING_DIM == uniface_core::embed::DESCRIPTOR_DIM);
/// Values in a landmark array: 5 points × (x, y).
pub const UF_LANDMARK_VALUES: usize = 10;
/// Most reason codes an assessment reports.
pub const UF_MAX_REASONS: usize = 16;

/// The library version as a static NUL-terminated string (e.g. "0.1.0"); equal to
/// `UF_VERSION_STRING`. Thread-safe.
#[no_mangle]
pub extern "C" fn uf_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Trigger an internal panic inside the library (a diagnostic for integrators' test suites):
/// always returns `UF_STATUS_PANIC`, showing that no panic crosses the C boundary.
#[no_mangle]
pub extern "C" fn uf_debug_trigger_panic() -> uf_status {
    boundary::run(|| -> Outcome<()> { panic!("uf_debug_trigger_panic was called") })
}

/// Layout of a raw pixel buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum uf_pixel_format {
    UF_PIXEL_RGB = 0,
    UF_PIXEL_BGR = 1,
    UF_PIXEL_RGBA = 2,
    UF_PIXEL_BGRA = 3,
    UF_PIXEL_GRAY = 4,
}

/// Which capture policy an assessment applies.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum uf_policy {
    /// Strict: frontal, sharp, well exposed, one face, live.
    UF_POLICY_ENROLLMENT = 0,
    /// Tolerant: what a verification probe needs.
    UF_POLICY_VERIFICATION = 1,
}

/// A face box in pixels with the detector's score.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct uf_box {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
    pub score: f32,
}

/// A calibrated 1:1 decision.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct uf_decision {
    /// Euclidean distance between the descriptors.
    pub distance: f32,
    /// `1 - distance / 2`, in [0, 1].
    pub similarity: f32,
    /// Threshold for the target false-match rate.
    pub threshold: f32,
    pub target_fmr: f64,
    /// `distance < threshold`.
    pub is_match: bool,
    /// False-match rate of a threshold placed at this distance (for `comparisons` > 1: of
    /// the best of that many comparisons).
    pub estimated_fmr: f64,
    /// How many comparisons the distance is the best of (a subject's templates in
    /// `uf_gallery_verify`, held to `target_fmr` as a whole); 1 for a single pair.
    pub comparisons: u32,
}

impl From<uniface_core::calibration::Decision> for uf_decision {
    fn from(d: uniface_core::calibration::Decision) -> Self {
        Self {
            distance: d.distance,
            similarity: d.similarity,
            threshold: d.threshold,
            target_fmr: d.target_fmr,
            is_match: d.is_match,
            estimated_fmr: d.estimated_fmr,
            comparisons: d.comparisons,
        }
    }
}

/// The capture gate's verdict on the largest face of an image.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct uf_assessment {
    pub accepted: bool,
    pub faces_found: usize,
    /// Number of valid entries in `reasons`.
    pub reason_count: usize,
    /// Stable reason codes (1 no face, 2 multiple faces, 3 too small, 4 cut off, 5 yaw,
    /// 6 pitch, 7 roll, 8 blurry, 9 too dark, 10 too bright, 11 underexposed, 12 overexposed,
    /// 13 low dynamic range, 14 low unified quality, 15 not live).
    pub reasons: [u16; UF_MAX_REASONS],
    /// The face assessed (zero when none).
    pub face: uf_box,
    /// Head pose in degrees, sharpness (variance of the Laplacian), and the 0-100 scalar of
    /// the sharpness measure; zero when no face was found.
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
    pub sharpness: f32,
    pub inter_eye_distance: f32,
    /// Whether liveness was checked, and its result.
    pub liveness_checked: bool,
    pub liveness_score: f32,
    pub is_live: bool,
}

/// Detector, landmarks and embedder. Thread-safe: one analyzer may be used from many threads
/// at once.
pub struct uf_analyzer {
    pub(crate) inner: uniface_core::FaceAnalyzer,
    liveness: LazyLivenessDetector,
}

/// The faces found in one image, best detection first. Immutable: safe to read from many
/// threads.
pub struct uf_faces {
    faces: Vec<uniface_core::Face>,
}

/// A stored face descriptor (vector, model fingerprint, checksummed binary form). Immutable:
/// safe to share between threads.
pub struct uf_template {
    pub(crate) inner: Template,
}

/// # Safety
/// `p` is NULL or a NUL-terminated string valid and unchanged for `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &'static str) -> Outcome<&'a str> {
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    // SAFETY: non-NULL, and NUL-terminated and valid for `'a` (this function's contract).
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Failure::invalid(format!("{name} is not valid UTF-8")))
}

/// # Safety
/// `p` is NULL or valid, aligned and not aliased for writing a `T` for `'a`.
pub(crate) unsafe fn out_arg<'a, T>(p: *mut T, name: &'static str) -> Outcome<&'a mut T> {
    // SAFETY: this function's contract.
    unsafe { p.as_mut() }.ok_or(Failure::Null(name))
}

/// # Safety
/// `p` is NULL or points to a live `T` that nothing mutates for `'a`.
pub(crate) unsafe fn ref_arg<'a, T>(p: *const T, name: &'static str) -> Outcome<&'a T> {
    // SAFETY: this function's contract.
    unsafe { p.as_ref() }.ok_or(Failure::Null(name))
}

/// # Safety
/// `p` is NULL or valid for reading `len` bytes, unchanged for `'a`.
pub(crate) unsafe fn bytes_arg<'a>(
    p: *const u8,
    len: usize,
    name: &'static str,
) -> Outcome<&'a [u8]> {
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    // SAFETY: non-NULL, valid for `len` bytes (this function's contract).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Copy `values` into the caller's `out` (`len` floats): NULL and short buffers refused.
///
/// # Safety
/// `out` is NULL or valid for writing `len` floats.
unsafe fn copy_out(out: *mut f32, len: usize, values: &[f32]) -> Outcome<()> {
    if out.is_null() {
        return Err(Failure::Null("out"));
    }
    if len < values.len() {
        return Err(Failure::TooSmall {
            needed: values.len(),
            got: len,
        });
    }
    // SAFETY: non-NULL, valid for `len ≥ values.len()` floats (this function's contract).
    unsafe { std::slice::from_raw_parts_mut(out, values.len()) }.copy_from_slice(values);
    Ok(())
}

pub(crate) fn boxed<T>(v: T) -> *mut T {
    Box::into_raw(Box::new(v))
}

/// Create an analyzer. `models_dir`: a folder holding dlib's three model files (never
/// downloads), or NULL for the default store (`UNIFACE_MODEL_DIR`, else the cache under
/// `UNIFACE_HOME`, downloaded and SHA-256-verified on first use). On success `*out` holds a
/// handle to release with `uf_analyzer_free`.
#[no_mangle]
pub unsafe extern "C" fn uf_analyzer_new(
    models_dir: *const c_char,
    out: *mut *mut uf_analyzer,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let store = if models_dir.is_null() {
            ModelStore::from_env()?
        } else {
            // SAFETY: `models_dir` is NULL or a NUL-terminated string (the header's contract).
            ModelStore::offline(PathBuf::from(unsafe { str_arg(models_dir, "models_dir") }?))
        };
        let set = store.ensure()?;
        let inner = uniface_core::FaceAnalyzer::new(&set)?;
        *out = boxed(uf_analyzer {
            inner,
            liveness: LazyLivenessDetector::new(store),
        });
        Ok(())
    })
}

/// Release an analyzer (NULL: no-op). Not while another thread uses it.
#[no_mangle]
pub unsafe extern "C" fn uf_analyzer_free(analyzer: *mut uf_analyzer) {
    if !analyzer.is_null() {
        // SAFETY: from `Box::into_raw` in `uf_analyzer_new`, released once (the header's contract).
        drop(unsafe { Box::from_raw(analyzer) });
    }
}

fn analyze(a: &uf_analyzer, img: &image::RgbImage, out: &mut *mut uf_faces) -> Outcome<()> {
    let faces = a.inner.analyze(img)?;
    *out = boxed(uf_faces { faces });
    Ok(())
}

/// Detect, align and embed every face of an image file (JPEG, PNG, WebP, BMP, GIF, TIFF; EXIF
/// orientation applied). `*out` receives a `uf_faces` to release with `uf_faces_free` (it may
/// hold zero faces).
#[no_mangle]
pub unsafe extern "C" fn uf_analyzer_analyze_file(
    analyzer: *const uf_analyzer,
    path: *const c_char,
    out: *mut *mut uf_faces,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `analyzer` is NULL or a live handle of ours (the header's contract).
        let a = unsafe { ref_arg(analyzer, "analyzer") }?;
        // SAFETY: `path` is NULL or a NUL-terminated string (the header's contract).
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        analyze(a, &image::load_rgb(std::path::Path::new(path))?, out)
    })
}

/// As `uf_analyzer_analyze_file`, from an encoded image in memory (`len` bytes).
#[no_mangle]
pub unsafe extern "C" fn uf_analyzer_analyze_encoded(
    analyzer: *const uf_analyzer,
    data: *const u8,
    len: usize,
    out: *mut *mut uf_faces,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `analyzer` is NULL or a live handle of ours (the header's contract).
        let a = unsafe { ref_arg(analyzer, "analyzer") }?;
        // SAFETY: `data` is NULL or readable for the length given (the header's contract).
        let bytes = unsafe { bytes_arg(data, len, "data") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        analyze(a, &image::decode_rgb(bytes)?, out)
    })
}

/// As `uf_analyzer_analyze_file`, from raw pixels: `height` rows of `stride` bytes, each
/// starting with `width` pixels in `format` (a `uf_pixel_format` value; others:
/// `UF_STATUS_INVALID_ARGUMENT`). `len` is the buffer's size in bytes (checked).
#[no_mangle]
pub unsafe extern "C" fn uf_analyzer_analyze_pixels(
    analyzer: *const uf_analyzer,
    pixels: *const u8,
    len: usize,
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
    out: *mut *mut uf_faces,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `analyzer` is NULL or a live handle of ours (the header's contract).
        let a = unsafe { ref_arg(analyzer, "analyzer") }?;
        // SAFETY: `pixels` is NULL or readable for the length given (the header's contract).
        let data = unsafe { bytes_arg(pixels, len, "pixels") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        if width == 0 || height == 0 {
            return Err(Failure::invalid("width and height must be positive"));
        }
        use uf_pixel_format::*;
        let format = [
            (UF_PIXEL_RGB, PixelFormat::Rgb),
            (UF_PIXEL_BGR, PixelFormat::Bgr),
            (UF_PIXEL_RGBA, PixelFormat::Rgba),
            (UF_PIXEL_BGRA, PixelFormat::Bgra),
            (UF_PIXEL_GRAY, PixelFormat::Gray),
        ]
        .into_iter()
        .find(|(c, _)| *c as u32 == format)
        .map(|(_, f)| f)
        .ok_or_else(|| Failure::invalid(format!("format {format} is not a uf_pixel_format")))?;
        let img = image::from_raw(data, width as usize, height as usize, stride, format)?;
        analyze(a, &img, out)
    })
}

/// Run the capture gate (quality measures, and liveness for the enrollment policy) on the
/// face of an image file that the analyzer's selection picks (`uf_analyzer_set_selection`;
/// default the largest). Refusals are reasons in `*out`, not errors.
#[no_mangle]
pub unsafe extern "C" fn uf_analyzer_assess_file(
    analyzer: *const uf_analyzer,
    path: *const c_char,
    policy: u32,
    out: *mut uf_assessment,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `analyzer` is NULL or a live handle of ours (the header's contract).
        let a = unsafe { ref_arg(analyzer, "analyzer") }?;
        // SAFETY: `path` is NULL or a NUL-terminated string (the header's contract).
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let policy = match policy {
            p if p == uf_policy::UF_POLICY_ENROLLMENT as u32 => Policy::enrollment(),
            p if p == uf_policy::UF_POLICY_VERIFICATION as u32 => Policy::verification(),
            other => {
                return Err(Failure::invalid(format!(
                    "policy {other} is not a uf_policy (0 or 1)"
                )))
            }
        };
        let img = image::load_rgb(std::path::Path::new(path))?;
        let live = if policy.require_live {
            Some(a.liveness.get()?)
        } else {
            None
        };
        let r = a.inner.assess(&img, &policy, live)?;
        let mut v = uf_assessment {
            accepted: r.accepted,
            faces_found: r.faces_found,
            reason_count: r.reasons.len().min(UF_MAX_REASONS),
            ..Default::default()
        };
        for (slot, reason) in v.reasons.iter_mut().zip(&r.reasons) {
            *slot = reason.code();
        }
        if let Some(f) = r.face {
            v.face = face_box(&f);
        }
        if let Some(q) = &r.quality {
            v.yaw = q.yaw.raw;
            v.pitch = q.pitch.raw;
            v.roll = q.roll.raw;
            v.sharpness = q.sharpness.raw;
            v.inter_eye_distance = q.inter_eye_distance.raw;
        }
        if let Some(l) = &r.liveness {
            v.liveness_checked = true;
            v.liveness_score = l.score;
            v.is_live = l.is_live;
        }
        *out = v;
        Ok(())
    })
}

/// Liveness of the chosen face (`uf_analyzer_set_selection`; default the largest) of an
/// image file: `*score` in [0, 1] (mean "real" probability of the two MiniFASNet models) and
/// `*is_live`. `UF_STATUS_NO_FACE` when there is no face.
#[no_mangle]
pub unsafe extern "C" fn uf_analyzer_liveness_file(
    analyzer: *const uf_analyzer,
    path: *const c_char,
    score: *mut f32,
    is_live: *mut bool,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `analyzer` is NULL or a live handle of ours (the header's contract).
        let a = unsafe { ref_arg(analyzer, "analyzer") }?;
        // SAFETY: `path` is NULL or a NUL-terminated string (the header's contract).
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: `score` is NULL or writable (the header's contract).
        let score = unsafe { out_arg(score, "score") }?;
        // SAFETY: `is_live` is NULL or writable (the header's contract).
        let is_live = unsafe { out_arg(is_live, "is_live") }?;
        let img = image::load_rgb(std::path::Path::new(path))?;
        let (face, _, _) =
            a.inner
                .select_face(&img)?
                .ok_or_else(|| uniface_core::Error::NoFace {
                    image: path.to_owned(),
                })?;
        let l = a.liveness.get()?.check(&img, &face.rect())?;
        *score = l.score;
        *is_live = l.is_live;
        Ok(())
    })
}

fn face_box(b: &uniface_core::detect::FaceBox) -> uf_box {
    uf_box {
        left: b.left,
        top: b.top,
        right: b.right,
        bottom: b.bottom,
        score: b.score,
    }
}

/// Number of faces (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn uf_faces_count(faces: *const uf_faces) -> usize {
    // SAFETY: `faces` is NULL or a live handle of ours (the header's contract).
    unsafe { faces.as_ref() }.map_or(0, |f| f.faces.len())
}

/// # Safety
/// `faces` is NULL or a live `uf_faces` handle, not freed for `'a`.
unsafe fn face_at<'a>(faces: *const uf_faces, index: usize) -> Outcome<&'a uniface_core::Face> {
    // SAFETY: `faces` is NULL or a live handle of ours (the header's contract).
    let f = unsafe { ref_arg(faces, "faces") }?;
    f.faces.get(index).ok_or_else(|| {
        Failure::invalid(format!(
            "face index {index} out of range ({} faces)",
            f.faces.len()
        ))
    })
}

/// Box and score of face `index`.
#[no_mangle]
pub unsafe extern "C" fn uf_faces_box(
    faces: *const uf_faces,
    index: usize,
    out: *mut uf_box,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `faces` is NULL or a live `uf_faces` handle (the header's contract).
        let f = unsafe { face_at(faces, index) }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        *unsafe { out_arg(out, "out") }? = face_box(&f.bbox);
        Ok(())
    })
}

/// The 5 landmarks of face `index` as x0, y0, …, x4, y4 into `out` (`len` ≥
/// `UF_LANDMARK_VALUES`, else `UF_STATUS_BUFFER_TOO_SMALL`).
#[no_mangle]
pub unsafe extern "C" fn uf_faces_landmarks(
    faces: *const uf_faces,
    index: usize,
    out: *mut f32,
    len: usize,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `faces` is NULL or a live `uf_faces` handle (the header's contract).
        let f = unsafe { face_at(faces, index) }?;
        let xy: Vec<f32> = f
            .landmarks
            .points
            .iter()
            .flat_map(|p| [p.x as f32, p.y as f32])
            .collect();
        // SAFETY: `out` is NULL or writable for `len` floats (the header's contract).
        unsafe { copy_out(out, len, &xy) }
    })
}

/// Copy the embedding of face `index` into `out` (`len` ≥ `UF_EMBEDDING_DIM` floats, else
/// `UF_STATUS_BUFFER_TOO_SMALL`).
#[no_mangle]
pub unsafe extern "C" fn uf_faces_embedding(
    faces: *const uf_faces,
    index: usize,
    out: *mut f32,
    len: usize,
) -> uf_status {
    // SAFETY: `faces` is NULL or a live handle; `out` is NULL or valid for writing `len`
    // floats (the header's contract).
    boundary::run(|| unsafe { copy_out(out, len, &face_at(faces, index)?.embedding) })
}

/// A template of face `index` (release with `uf_template_free`).
#[no_mangle]
pub unsafe extern "C" fn uf_faces_template(
    faces: *const uf_faces,
    index: usize,
    out: *mut *mut uf_template,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `faces` is NULL or a live `uf_faces` handle (the header's contract).
        let f = unsafe { face_at(faces, index) }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let inner = Template::new(ModelFingerprint::dlib_resnet_v1(), &f.embedding)?;
        *out = boxed(uf_template { inner });
        Ok(())
    })
}

/// Release a face list (NULL: no-op).
#[no_mangle]
pub unsafe extern "C" fn uf_faces_free(faces: *mut uf_faces) {
    if !faces.is_null() {
        // SAFETY: from `Box::into_raw` in this library, released once (the header's contract).
        drop(unsafe { Box::from_raw(faces) });
    }
}

/// A template of the default model from `len` floats: `UF_STATUS_INVALID_ARGUMENT` unless
/// `len` is `UF_EMBEDDING_DIM`, `UF_STATUS_TEMPLATE` when a value is not finite.
#[no_mangle]
pub unsafe extern "C" fn uf_template_from_embedding(
    embedding: *const f32,
    len: usize,
    out: *mut *mut uf_template,
) -> uf_status {
    boundary::run(|| {
        if embedding.is_null() {
            return Err(Failure::Null("embedding"));
        }
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        if len != UF_EMBEDDING_DIM {
            return Err(Failure::invalid(format!(
                "embeddings of the default model have {UF_EMBEDDING_DIM} values, got {len}"
            )));
        }
        // SAFETY: `embedding` is non-NULL (checked above) and valid for `len` floats (the
        // header's contract).
        let v = unsafe { std::slice::from_raw_parts(embedding, len) };
        let inner = Template::new(ModelFingerprint::dlib_resnet_v1(), v)?;
        *out = boxed(uf_template { inner });
        Ok(())
    })
}

/// Serialize into `buf` (`len` bytes). `*needed` (if not NULL) always receives the size;
/// when `len` is smaller the result is `UF_STATUS_BUFFER_TOO_SMALL` and nothing is written.
/// Call with `buf = NULL, len = 0` to ask for the size.
#[no_mangle]
pub unsafe extern "C" fn uf_template_serialize(
    template: *const uf_template,
    buf: *mut u8,
    len: usize,
    needed: *mut usize,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `template` is NULL or a live handle of ours (the header's contract).
        let t = unsafe { ref_arg(template, "template") }?;
        let bytes = t.inner.to_bytes();
        // SAFETY: `buf` is NULL or writable for `len` bytes, `needed` NULL or writable (the
        // header's contract).
        let dst = unsafe { boundary::out_buffer(buf, len, needed, bytes.len()) }?;
        dst.copy_from_slice(&bytes);
        Ok(())
    })
}

/// Parse a serialized template (checksum, version and values verified).
#[no_mangle]
pub unsafe extern "C" fn uf_template_deserialize(
    data: *const u8,
    len: usize,
    out: *mut *mut uf_template,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `data` is NULL or readable for the length given (the header's contract).
        let bytes = unsafe { bytes_arg(data, len, "data") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let inner = Template::from_bytes(bytes)?;
        *out = boxed(uf_template { inner });
        Ok(())
    })
}

/// Copy a template's vector (as f32) into `out` (`len` ≥ `UF_EMBEDDING_DIM`).
#[no_mangle]
pub unsafe extern "C" fn uf_template_vector(
    template: *const uf_template,
    out: *mut f32,
    len: usize,
) -> uf_status {
    // SAFETY: `template` is NULL or a live handle; `out` is NULL or valid for writing `len`
    // floats (the header's contract).
    boundary::run(|| unsafe { copy_out(out, len, &ref_arg(template, "template")?.inner.vector()) })
}

/// Release a template (NULL: no-op).
#[no_mangle]
pub unsafe extern "C" fn uf_template_free(template: *mut uf_template) {
    if !template.is_null() {
        // SAFETY: from `Box::into_raw` in this library, released once (the header's contract).
        drop(unsafe { Box::from_raw(template) });
    }
}

/// Are `a` and `b` the same person at target false-match rate `fmr` (e.g. 1e-4)? The
/// threshold comes from the shipped calibration.
#[no_mangle]
pub unsafe extern "C" fn uf_verify(
    a: *const uf_template,
    b: *const uf_template,
    fmr: f64,
    out: *mut uf_decision,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `a` is NULL or a live handle of ours (the header's contract).
        let a = unsafe { ref_arg(a, "a") }?;
        // SAFETY: `b` is NULL or a live handle of ours (the header's contract).
        let b = unsafe { ref_arg(b, "b") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let d = a.inner.distance(&b.inner)?;
        *out = uniface_core::calibration::decide(d, fmr)?.into();
        Ok(())
    })
}

/// The quality measures' reason name for a code from `uf_assessment.reasons` (static string;
/// "unknown" for other values).
#[no_mangle]
pub extern "C" fn uf_reason_str(code: u16) -> *const c_char {
    use uniface_core::quality::Reason;
    // NUL-terminated copies of `Reason::name`, checked against it by a test
    const NAMES: [&str; 16] = [
        "unknown\0",
        "no_face\0",
        "multiple_faces\0",
        "face_too_small\0",
        "face_cut_off\0",
        "yaw_too_large\0",
        "pitch_too_large\0",
        "roll_too_large\0",
        "blurry\0",
        "too_dark\0",
        "too_bright\0",
        "underexposed\0",
        "overexposed\0",
        "low_dynamic_range\0",
        "low_unified_quality\0",
        "not_live\0",
    ];
    let i = Reason::from_code(code).map_or(0, |r| usize::from(r.code()));
    NAMES.get(i).copied().unwrap_or(NAMES[0]).as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: uf_version returns a pointer to a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(uf_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn reason_names_match_the_core_codes() {
        use uniface_core::quality::Reason;
        for r in Reason::ALL {
            // SAFETY: static NUL-terminated strings.
            let s = unsafe { CStr::from_ptr(uf_reason_str(r.code())) };
            assert_eq!(s.to_str().unwrap(), r.name());
        }
        for code in [0, 16, u16::MAX] {
            // SAFETY: static NUL-terminated strings.
            let s = unsafe { CStr::from_ptr(uf_reason_str(code)) };
            assert_eq!(s.to_str().unwrap(), "unknown");
        }
    }

    #[test]
    fn a_panic_is_caught_and_reported() {
        assert_eq!(uf_debug_trigger_panic(), uf_status::UF_STATUS_PANIC);
        let mut buf = [0 as c_char; 256];
        let mut needed = 0usize;
        // SAFETY: buf is 256 bytes, needed is a valid pointer.
        let s = unsafe { uf_last_error_message(buf.as_mut_ptr(), buf.len(), &mut needed) };
        assert_eq!(s, uf_status::UF_STATUS_OK);
        // SAFETY: written NUL-terminated on success.
        let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert!(msg.contains("uf_debug_trigger_panic"), "{msg}");
    }

    #[test]
    fn committed_header_is_current() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/uniface.h"));
        let committed = include_str!("../include/uniface.h");
        assert_eq!(
            committed, generated,
            "include/uniface.h is stale: copy $OUT_DIR/uniface.h over it (cargo build -p uniface-capi)"
        );
    }
}
