//! The LFW View 2 verification protocol end to end: photos described once, pairs scored with
//! templates stored as f32, f16 and i8, the 10-fold protocol, ROC and DET.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use super::corpus::{describe_all, label_by_folder, Labelled};
use super::det::{det_curve, DetCurve};
use super::pairs::{k_fold, photos_of, roc, KFold, Pair, RocPoint, ScoredPair};
use super::plot;
use crate::compare::Metric;
use crate::detect::FaceSelection;
use crate::embed::{euclidean_distance, Descriptor};
use crate::template::{ElementType, ModelFingerprint, Template};
use crate::{Error, FaceAnalyzer, Result};

/// Options of [`lfw`].
#[derive(Debug, Clone, Copy)]
pub struct LfwOptions<'a> {
    /// A descriptor cache file ([`super::corpus::DescriptorCache`]).
    pub cache: Option<&'a Path>,
    /// Also measure a DET over every pair of the photos, per element type.
    pub det: bool,
    /// The face each photo contributes (default [`FaceSelection::NearestCentre`]: LFW photos
    /// are centred on their subject).
    pub selection: FaceSelection,
}

impl Default for LfwOptions<'_> {
    fn default() -> Self {
        Self {
            cache: None,
            det: false,
            selection: FaceSelection::NearestCentre,
        }
    }
}

/// The protocol's result for templates stored as one element type.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementResult {
    pub element: ElementType,
    pub protocol: KFold,
    /// With [`LfwOptions::det`].
    pub det: Option<DetCurve>,
}

/// What [`lfw`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LfwReport {
    pub pairs: usize,
    pub images: usize,
    /// Photos where no face was found (their pairs score `+inf`: "different").
    pub failed_images: Vec<PathBuf>,
    /// f32 first, then f16 and i8.
    pub results: Vec<ElementResult>,
    /// The f32 ROC.
    pub roc: Vec<RocPoint>,
    pub seconds: f64,
}

/// A descriptor stored as `element` and read back (what a gallery of such templates sees).
pub fn quantised(d: &Descriptor, element: ElementType) -> Result<Descriptor> {
    let t = Template::new(ModelFingerprint::dlib_resnet_v1(), d)?.converted(element);
    Descriptor::try_from(t.vector().as_slice()).map_err(|_| Error::BufferLength {
        expected: d.len(),
        got: t.dimension(),
    })
}

/// Pair distances from a photo → descriptor table; a pair with a photo missing from it
/// scores `+inf`.
pub fn score_pairs(pairs: &[Pair], table: &HashMap<PathBuf, Descriptor>) -> Vec<ScoredPair> {
    pairs
        .iter()
        .map(|p| ScoredPair {
            distance: match (table.get(&p.a), table.get(&p.b)) {
                (Some(a), Some(b)) => euclidean_distance(a, b),
                _ => f32::INFINITY,
            },
            same: p.same,
            fold: p.fold,
        })
        .collect()
}

/// Run the protocol on `pairs` ([`super::pairs::read_pairs`]) of the LFW folder `root`
/// (`root/<Name>/<Name>_<NNNN>.jpg`). `progress(k)` counts photos described (of
/// [`photos_of`]`(pairs)`).
pub fn lfw(
    analyzer: &FaceAnalyzer,
    root: &Path,
    pairs: &[Pair],
    options: &LfwOptions<'_>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<LfwReport> {
    let start = Instant::now();
    let images = photos_of(pairs);
    let descriptors = describe_all(
        analyzer,
        root,
        &images,
        options.selection,
        options.cache,
        progress,
    )?;
    let mut table = HashMap::new();
    let mut failed_images = Vec::new();
    for (path, d) in images.iter().zip(descriptors) {
        match d {
            Some(d) => {
                table.insert(path.clone(), d);
            }
            None => failed_images.push(path.clone()),
        }
    }
    let mut results = Vec::new();
    let mut f32_roc = Vec::new();
    for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
        let table: HashMap<PathBuf, Descriptor> = table
            .iter()
            .map(|(k, d)| Ok((k.clone(), quantised(d, element)?)))
            .collect::<Result<_>>()?;
        let scored = score_pairs(pairs, &table);
        if element == ElementType::F32 {
            f32_roc = roc(&scored);
        }
        let det = if options.det {
            let mut keys: Vec<&PathBuf> = table.keys().collect();
            keys.sort();
            let photos: Vec<PathBuf> = keys.into_iter().cloned().collect();
            let labelled = Labelled::new(
                &label_by_folder(&photos),
                photos.iter().map(|p| Some(table[p])).collect(),
            );
            Some(det_curve(&labelled.set(), Metric::Euclidean)?)
        } else {
            None
        };
        results.push(ElementResult {
            element,
            protocol: k_fold(&scored),
            det,
        });
    }
    Ok(LfwReport {
        pairs: pairs.len(),
        images: images.len(),
        failed_images,
        results,
        roc: f32_roc,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl LfwReport {
    /// The f32 result.
    pub fn main(&self) -> &KFold {
        &self.results[0].protocol
    }

    /// The report as the JSON object `uniface eval lfw --json` prints.
    pub fn to_json(&self) -> Value {
        let main = self.main();
        let quantised: serde_json::Map<String, Value> = self.results[1..]
            .iter()
            .map(|r| {
                let p = &r.protocol;
                (
                    r.element.name().to_owned(),
                    json!({
                        "accuracy_mean": p.accuracy_mean, "accuracy_std": p.accuracy_std,
                        "accuracy_delta_pp": 100.0 * (p.accuracy_mean - main.accuracy_mean),
                        "tar_at_far_1e-3": p.tar_at_far_1e3.tar, "eer": p.eer,
                    }),
                )
            })
            .collect();
        json!({
            "pairs": self.pairs, "images": self.images, "failures": self.failed_images.len(),
            "failed_images": self.failed_images, "fold_accuracy": main.fold_accuracy,
            "fold_thresholds": main.fold_thresholds,
            "accuracy_mean": main.accuracy_mean, "accuracy_std": main.accuracy_std,
            "tar_at_far_1e-2": main.tar_at_far_1e2.tar,
            "threshold_at_far_1e-2": main.tar_at_far_1e2.threshold,
            "tar_at_far_1e-3": main.tar_at_far_1e3.tar,
            "threshold_at_far_1e-3": main.tar_at_far_1e3.threshold,
            "eer": main.eer, "quantised": quantised, "seconds": self.seconds,
        })
    }

    /// The f32 ROC as CSV (`threshold,far,tar`).
    pub fn write_roc(&self, path: &Path) -> Result<()> {
        let mut csv = String::from("threshold,far,tar\n");
        for p in &self.roc {
            csv.push_str(&format!("{},{},{}\n", p.threshold, p.far, p.tar));
        }
        std::fs::write(path, csv).map_err(|e| Error::io(path, e))
    }

    /// The DET curves as CSV at `path` and as a PNG chart beside it (same name, `.png`);
    /// nothing when the run measured none.
    pub fn write_det(&self, path: &Path) -> Result<()> {
        let curves: Vec<(ElementType, &DetCurve)> = self
            .results
            .iter()
            .filter_map(|r| r.det.as_ref().map(|d| (r.element, d)))
            .collect();
        let Some((_, first)) = curves.first() else {
            return Ok(());
        };
        let (impostors, genuine) = (first.impostor_pairs, first.genuine_pairs);
        let mut csv = String::from("element,threshold,fmr,fnmr,impostor_pairs,genuine_pairs\n");
        for (e, c) in &curves {
            for p in &c.points {
                csv.push_str(&format!(
                    "{},{},{},{},{impostors},{genuine}\n",
                    e.name(),
                    p.threshold,
                    p.fmr,
                    p.fnmr
                ));
            }
        }
        std::fs::write(path, csv).map_err(|e| Error::io(path, e))?;
        let series: Vec<(String, Vec<(f64, f64)>)> = curves
            .iter()
            .map(|(e, c)| {
                let pts = c.points.iter().map(|p| (p.fmr, p.fnmr)).collect();
                (e.name().to_owned(), pts)
            })
            .collect();
        let min_fmr = 10f64.powf((1.0 / impostors.max(1) as f64).log10().floor());
        let photos = self.images - self.failed_images.len();
        plot::chart(
            &path.with_extension("png"),
            &format!("LFW DET - EVERY PAIR OF {photos} PHOTOS"),
            plot::Axis {
                min: min_fmr,
                max: 1.0,
                log: true,
                label: "FMR",
            },
            plot::Axis {
                min: 1e-3,
                max: 1.0,
                log: true,
                label: "FNMR",
            },
            &series,
        )
    }
}

/// The report `uniface eval lfw` prints; the last line is `lfw accuracy: MEAN ± STD`.
impl fmt::Display for LfwReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let main = self.main();
        writeln!(
            f,
            "LFW View 2: {} pairs, {} images, {} without a face",
            self.pairs,
            self.images,
            self.failed_images.len()
        )?;
        for p in &self.failed_images {
            writeln!(f, "  no face: {}", p.display())?;
        }
        for (i, (a, t)) in main
            .fold_accuracy
            .iter()
            .zip(&main.fold_thresholds)
            .enumerate()
        {
            writeln!(f, "  fold {:2}: accuracy {a:.4} at threshold {t:.4}", i + 1)?;
        }
        for t in [&main.tar_at_far_1e2, &main.tar_at_far_1e3] {
            writeln!(
                f,
                "TAR@FAR={:.0e}: {:.4} (threshold {:.4})",
                t.far, t.tar, t.threshold
            )?;
        }
        writeln!(f, "EER: {:.4}", main.eer)?;
        for r in &self.results {
            let p = &r.protocol;
            writeln!(
                f,
                "templates as {:<3}: accuracy {:.4} ± {:.4} ({:+.2} pp vs f32), TAR@FAR=1e-3 {:.4}, EER {:.4}",
                r.element.name(),
                p.accuracy_mean,
                p.accuracy_std,
                100.0 * (p.accuracy_mean - main.accuracy_mean),
                p.tar_at_far_1e3.tar,
                p.eer
            )?;
        }
        if let Some(d) = self.results.iter().find_map(|r| r.det.as_ref()) {
            writeln!(
                f,
                "DET over every pair ({} impostor, {} genuine)",
                d.impostor_pairs, d.genuine_pairs
            )?;
        }
        writeln!(f, "time: {:.1} s", self.seconds)?;
        write!(
            f,
            "lfw accuracy: {:.4} ± {:.4}",
            main.accuracy_mean, main.accuracy_std
        )
    }
}
