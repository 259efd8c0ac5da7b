//! Evaluation ([`uniface_core::eval`], re-exported) and open-set identification through a
//! real on-disk gallery ([`identification`]).

pub use uniface_core::eval::*;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::core::calibration;
use crate::core::template::{ModelFingerprint, Template};
use crate::index::{Durability, Gallery, GalleryOptions};
use crate::{Error, FaceAnalyzer, FaceSelection, Result};
use open_set::{
    fnir_at, fnir_at_fpir, fpir_at, rank1_rate, FnirAtFpir, ListEntry, MatedSearch, Role,
};

/// What the shipped calibration alone would decide for an FPIR target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibratedFpir {
    pub target_fpir: f64,
    /// [`Gallery::fmr_for_fpir`] at the gallery's size.
    pub fmr_per_comparison: f64,
    pub threshold: f32,
    pub measured_fpir: f64,
    pub false_alarms: usize,
    pub fnir: f64,
}

/// What [`identification`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentificationReport {
    pub enrolled: usize,
    pub mated_searches: usize,
    pub nonmated_searches: usize,
    /// Photos (enrolled or searched) where no face was found.
    pub no_face: usize,
    pub rank1: f64,
    #[serde(skip)]
    pub fnir_at_fpir: [FnirAtFpir; 2],
    #[serde(rename = "calibrated_fpir")]
    pub calibrated: Vec<CalibratedFpir>,
    pub seconds: f64,
}

/// Open-set 1:N identification on a labelled list ([`open_set::read_list`]): the `gallery`
/// photos enrolled in a fresh two-shard gallery in a temporary folder, every `mated` and
/// `nonmated` photo searched (rank 1), FNIR at FPIR 1e-2 and 1e-3, and what the shipped
/// calibration's FPIR thresholds give on these searches. `progress(k)` counts photos
/// described.
pub fn identification(
    analyzer: &FaceAnalyzer,
    entries: &[ListEntry],
    root: &Path,
    selection: FaceSelection,
    cache: Option<&Path>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<IdentificationReport> {
    let start = Instant::now();
    let paths: Vec<_> = entries.iter().map(|e| e.path.clone()).collect();
    let descriptors = corpus::describe_all(analyzer, root, &paths, selection, cache, progress)?;
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let gallery = Gallery::create(
        dir.path(),
        &GalleryOptions {
            shards: 2,
            durability: Durability::Async,
            ..Default::default()
        },
    )?;
    let fp = ModelFingerprint::dlib_resnet_v1();
    let mut no_face = 0;
    for (e, d) in entries.iter().zip(&descriptors) {
        if e.role != Role::Gallery {
            continue;
        }
        match d {
            Some(d) => {
                gallery.enroll(&e.identity, &Template::new(fp.clone(), d)?)?;
            }
            None => no_face += 1,
        }
    }
    let (mut mated, mut nonmated) = (Vec::new(), Vec::new());
    for (e, d) in entries.iter().zip(&descriptors) {
        if e.role == Role::Gallery {
            continue;
        }
        let best = match d {
            Some(d) => {
                let r = gallery.identify(&Template::new(fp.clone(), d)?, 1, 1e-3)?;
                r.candidates.into_iter().next()
            }
            None => {
                no_face += 1;
                None
            }
        };
        let distance = best.as_ref().map_or(f32::INFINITY, |c| c.distance);
        if e.role == Role::Mated {
            let rank1_hit = best.is_some_and(|c| c.subject == e.identity);
            mated.push(MatedSearch {
                rank1_hit,
                distance,
            });
        } else {
            nonmated.push(distance);
        }
    }
    let mut calibrated = Vec::new();
    for target in [1e-2, 1e-3] {
        let fmr = gallery.fmr_for_fpir(target)?;
        let threshold = calibration::threshold_for_fmr(fmr)?;
        calibrated.push(CalibratedFpir {
            target_fpir: target,
            fmr_per_comparison: fmr,
            threshold,
            measured_fpir: fpir_at(&nonmated, threshold),
            false_alarms: nonmated.iter().filter(|d| **d < threshold).count(),
            fnir: fnir_at(&mated, threshold),
        });
    }
    Ok(IdentificationReport {
        enrolled: gallery.len(),
        mated_searches: mated.len(),
        nonmated_searches: nonmated.len(),
        no_face,
        rank1: rank1_rate(&mated),
        fnir_at_fpir: [
            fnir_at_fpir(&mated, &nonmated, 1e-2),
            fnir_at_fpir(&mated, &nonmated, 1e-3),
        ],
        calibrated,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl IdentificationReport {
    /// The report as the JSON object `uniface eval identification --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let [f2, f3] = &self.fnir_at_fpir;
        serde_json::json!({
            "enrolled": self.enrolled, "mated_searches": self.mated_searches,
            "nonmated_searches": self.nonmated_searches, "no_face": self.no_face,
            "rank1": self.rank1,
            "fnir_at_fpir_1e-2": f2.fnir, "threshold_at_fpir_1e-2": f2.threshold,
            "fnir_at_fpir_1e-3": f3.fnir, "threshold_at_fpir_1e-3": f3.threshold,
            "calibrated_fpir": self.calibrated,
            "seconds": self.seconds,
        })
    }
}

impl std::fmt::Display for IdentificationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} enrolled, {} mated and {} non-mated searches ({} photos without a face)",
            self.enrolled, self.mated_searches, self.nonmated_searches, self.no_face
        )?;
        writeln!(f, "rank-1 identification rate: {:.4}", self.rank1)?;
        let [f2, f3] = &self.fnir_at_fpir;
        writeln!(
            f,
            "FNIR @ FPIR=1e-2: {:.4} (threshold {:.4})",
            f2.fnir, f2.threshold
        )?;
        write!(
            f,
            "FNIR @ FPIR=1e-3: {:.4} (threshold {:.4}; {} non-mated searches allow {} false alarms)",
            f3.fnir,
            f3.threshold,
            self.nonmated_searches,
            (1e-3 * self.nonmated_searches as f64).floor()
        )?;
        for c in &self.calibrated {
            write!(
                f,
                "\ncalibrated for FPIR {:.0e} (FMR {:.2e} per comparison): threshold {:.4}, measured FPIR {:.4}, FNIR {:.4}",
                c.target_fpir, c.fmr_per_comparison, c.threshold, c.measured_fpir, c.fnir,
            )?;
        }
        Ok(())
    }
}
