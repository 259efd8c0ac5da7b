//! Calibration tables: load one (the shipped table, JSON text or a file from `uniface
//! calibrate --out`), get thresholds and decisions from it, attach it to a gallery; and the
//! face-selection rule of one-face calls.

use std::ffi::c_char;

use uniface_core::calibration::CalibrationTable;
use uniface_core::detect::FaceSelection;

use crate::boundary::{self, uf_status, Failure};
use crate::gallery::uf_gallery;
use crate::{boxed, out_arg, ref_arg, str_arg, uf_analyzer, uf_decision};

/// A calibration table: thresholds for target false-match rates with the evidence behind
/// them. Immutable: safe to share between threads.
pub struct uf_calibration {
    inner: CalibrationTable,
}

/// Which face a one-face call (assess, liveness) uses.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum uf_selection {
    /// The largest box (the default).
    UF_SELECTION_LARGEST = 0,
    /// The box nearest the image centre (how the shipped calibration was made).
    UF_SELECTION_NEAREST_CENTRE = 1,
    /// The most confident detection.
    UF_SELECTION_HIGHEST_SCORE = 2,
}

fn selection_of(v: u32) -> Result<FaceSelection, Failure> {
    use uf_selection::*;
    Ok(match v {
        v if v == UF_SELECTION_LARGEST as u32 => FaceSelection::Largest,
        v if v == UF_SELECTION_NEAREST_CENTRE as u32 => FaceSelection::NearestCentre,
        v if v == UF_SELECTION_HIGHEST_SCORE as u32 => FaceSelection::HighestScore,
        other => {
            return Err(Failure::invalid(format!(
                "selection {other} is not a uf_selection (0, 1 or 2)"
            )))
        }
    })
}

fn selection_code(s: FaceSelection) -> u32 {
    match s {
        FaceSelection::Largest => uf_selection::UF_SELECTION_LARGEST as u32,
        FaceSelection::NearestCentre => uf_selection::UF_SELECTION_NEAREST_CENTRE as u32,
        FaceSelection::HighestScore => uf_selection::UF_SELECTION_HIGHEST_SCORE as u32,
    }
}

/// The table shipped with the default model (LFW, every pair of 7,701 photos). Release with
/// `uf_calibration_free`.
#[no_mangle]
pub unsafe extern "C" fn uf_calibration_default(out: *mut *mut uf_calibration) -> uf_status {
    boundary::run(|| {
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let inner = uniface_core::calibration::default_table()?.clone();
        *out = boxed(uf_calibration { inner });
        Ok(())
    })
}

/// Parse a table from its JSON text (NUL-terminated UTF-8); a malformed table is
/// `UF_STATUS_INVALID_ARGUMENT`. Release with `uf_calibration_free`.
#[no_mangle]
pub unsafe extern "C" fn uf_calibration_from_json(
    json: *const c_char,
    out: *mut *mut uf_calibration,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `json` is NULL or a NUL-terminated string (the header's contract).
        let json = unsafe { str_arg(json, "json") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let inner = CalibrationTable::from_json(json)?;
        *out = boxed(uf_calibration { inner });
        Ok(())
    })
}

/// Read a table from a JSON file (`uniface calibrate --out`; at most 64 MiB). Release with
/// `uf_calibration_free`.
#[no_mangle]
pub unsafe extern "C" fn uf_calibration_load(
    path: *const c_char,
    out: *mut *mut uf_calibration,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `path` is NULL or a NUL-terminated string (the header's contract).
        let path = std::path::Path::new(unsafe { str_arg(path, "path") }?);
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let io = |e| uniface_core::Error::Io {
            path: path.to_owned(),
            source: e,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > 64 << 20 {
            return Err(Failure::invalid(format!(
                "{} is {len} bytes; a calibration table is at most 64 MiB",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let inner = CalibrationTable::from_json(&text)?;
        *out = boxed(uf_calibration { inner });
        Ok(())
    })
}

/// Release a table (NULL: no-op). Galleries it was attached to keep their own copy.
#[no_mangle]
pub unsafe extern "C" fn uf_calibration_free(table: *mut uf_calibration) {
    if !table.is_null() {
        // SAFETY: a pointer from uf_calibration_* not freed before (the header's contract).
        drop(unsafe { Box::from_raw(table) });
    }
}

/// The distance threshold for a target false-match rate; targets below the smallest the
/// table supports (`uf_calibration_info`) are `UF_STATUS_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn uf_calibration_threshold(
    table: *const uf_calibration,
    fmr: f64,
    threshold: *mut f32,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `table` is NULL or a live handle of ours (the header's contract).
        let t = unsafe { ref_arg(table, "table") }?;
        // SAFETY: `threshold` is NULL or writable (the header's contract).
        let threshold = unsafe { out_arg(threshold, "threshold") }?;
        *threshold = t.inner.threshold_for_fmr(fmr)?;
        Ok(())
    })
}

/// The smallest false-match rate the table supports (10 impostor pairs below its
/// threshold), and the face-selection rule (`uf_selection`) its photos were described with;
/// either pointer may be NULL.
#[no_mangle]
pub unsafe extern "C" fn uf_calibration_info(
    table: *const uf_calibration,
    min_fmr: *mut f64,
    selection: *mut u32,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `table` is NULL or a live handle of ours (the header's contract).
        let t = unsafe { ref_arg(table, "table") }?;
        // SAFETY: both are NULL or writable (the header's contract).
        if let Some(m) = unsafe { min_fmr.as_mut() } {
            *m = t.inner.min_fmr();
        }
        // SAFETY: as above.
        if let Some(s) = unsafe { selection.as_mut() } {
            *s = selection_code(t.inner.selection);
        }
        Ok(())
    })
}

/// The decision on the best (smallest) of `comparisons` ≥ 1 distances at a target `fmr` for
/// the whole decision (1 for a single pair; see `uf_decision.comparisons`).
#[no_mangle]
pub unsafe extern "C" fn uf_calibration_decide(
    table: *const uf_calibration,
    distance: f32,
    fmr: f64,
    comparisons: u32,
    out: *mut uf_decision,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `table` is NULL or a live handle of ours (the header's contract).
        let t = unsafe { ref_arg(table, "table") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        *out = t.inner.decide_best_of(distance, fmr, comparisons)?.into();
        Ok(())
    })
}

/// Decide `uf_gallery_identify` and `uf_gallery_verify` with a copy of `table` instead of
/// the shipped one. Not while another thread uses `gallery`: attach before sharing it.
#[no_mangle]
pub unsafe extern "C" fn uf_gallery_set_calibration(
    gallery: *mut uf_gallery,
    table: *const uf_calibration,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `gallery` is NULL or a live handle of ours that no other thread uses now
        // (the header's contract).
        let g = unsafe { out_arg(gallery, "gallery") }?;
        // SAFETY: `table` is NULL or a live handle of ours (the header's contract).
        let t = unsafe { ref_arg(table, "table") }?;
        g.inner.set_calibration(t.inner.clone());
        Ok(())
    })
}

/// Which face `analyzer`'s one-face calls (assess, liveness) use: a `uf_selection`. Not while
/// another thread uses `analyzer`: set it before sharing.
#[no_mangle]
pub unsafe extern "C" fn uf_analyzer_set_selection(
    analyzer: *mut uf_analyzer,
    selection: u32,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `analyzer` is NULL or a live handle of ours that no other thread uses now
        // (the header's contract).
        let a = unsafe { out_arg(analyzer, "analyzer") }?;
        a.inner.selection = selection_of(selection)?;
        Ok(())
    })
}
