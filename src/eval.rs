//! Evaluation ([`uniface_core::eval`], re-exported) and open-set identification through a
//! real on-disk gallery ([`identification`]), and clustering by identity ([`clustering`]).

pub use uniface_core::eval::*;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::core::calibration;
use crate::core::template::{ModelFingerprint, Template};
use crate::index::cluster::{
    bcubed, pairwise, ClusterOptions, ClusterScores, Clusterer, Method, Threshold,
};
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

/// A fresh two-shard gallery in a temporary folder (removed when the folder is dropped),
/// without a sync per enrollment: what the evaluations enroll into.
fn scratch_gallery() -> Result<(tempfile::TempDir, Gallery)> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let gallery = Gallery::create(
        dir.path(),
        &GalleryOptions {
            shards: 2,
            durability: Durability::Async,
            ..Default::default()
        },
    )?;
    Ok((dir, gallery))
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
    let (_dir, gallery) = scratch_gallery()?;
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

/// One clustering measured by [`clustering`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusteringRow {
    pub method: &'static str,
    /// How the threshold was given ("fmr 1e-3", "distance 0.5").
    pub rule: String,
    pub threshold: f32,
    pub clusters: usize,
    pub pairwise: ClusterScores,
    pub bcubed: ClusterScores,
    pub seconds: f64,
    /// The label of each described photo (in [`ClusteringReport::photos`] order).
    #[serde(skip)]
    pub labels: Vec<u32>,
}

/// What [`clustering`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusteringReport {
    /// Photos with a face, in order, with their identity.
    #[serde(skip)]
    pub photos: Vec<(std::path::PathBuf, String)>,
    pub faces: usize,
    pub identities: usize,
    /// Photos where no face was found (left out).
    pub no_face: usize,
    pub neighbours: usize,
    pub rows: Vec<ClusteringRow>,
}

/// Clustering quality on a folder of identities (`root/<identity>/<photo>`, one face per
/// photo by `selection`): each method at each of `fmrs`, and Chinese Whispers at dlib's
/// distance 0.5, scored against the folders with pairwise and BCubed precision, recall and F.
pub fn clustering(
    analyzer: &FaceAnalyzer,
    root: &Path,
    selection: FaceSelection,
    cache: Option<&Path>,
    fmrs: &[f64],
    neighbours: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ClusteringReport> {
    let identities = corpus::scan_identities(root)?;
    let mut paths = Vec::new();
    let mut names = Vec::new();
    for (name, photos) in &identities {
        for p in photos {
            paths.push(p.clone());
            names.push(name.clone());
        }
    }
    let described = corpus::describe_all(analyzer, root, &paths, selection, cache, progress)?;
    let (mut faces, mut truth, mut photos) = (Vec::new(), Vec::new(), Vec::new());
    let mut ids = std::collections::HashMap::new();
    for ((path, name), d) in paths.iter().zip(&names).zip(&described) {
        if let Some(d) = d {
            faces.extend_from_slice(d);
            let next = ids.len() as u32;
            truth.push(*ids.entry(name.clone()).or_insert(next));
            photos.push((path.clone(), name.clone()));
        }
    }
    let dim = crate::core::embed::DESCRIPTOR_DIM;
    let mut runs: Vec<(Method, Threshold, String)> = Vec::new();
    for &fmr in fmrs {
        for m in Method::ALL {
            runs.push((m, Threshold::Fmr(fmr), format!("fmr {fmr:.0e}")));
        }
    }
    runs.push((
        Method::ChineseWhispers,
        Threshold::Distance(0.5),
        "distance 0.5 (dlib)".into(),
    ));
    let mut rows = Vec::new();
    for (method, threshold, rule) in runs {
        let start = Instant::now();
        let options = ClusterOptions {
            method,
            threshold,
            neighbours,
            ..Default::default()
        };
        let c = Clusterer::fit(&faces, dim, options, &|_| {})?;
        let labels = crate::index::cluster::contiguous(c.labels());
        rows.push(ClusteringRow {
            method: method.name(),
            rule,
            threshold: c.threshold(),
            clusters: c.clusters(),
            pairwise: pairwise(&truth, &labels),
            bcubed: bcubed(&truth, &labels),
            seconds: start.elapsed().as_secs_f64(),
            labels,
        });
    }
    Ok(ClusteringReport {
        faces: truth.len(),
        identities: ids.len(),
        no_face: paths.len() - truth.len(),
        neighbours,
        photos,
        rows,
    })
}

impl ClusteringReport {
    /// Tab-separated `path identity label…` (one label column per row of the report), for
    /// the comparison with dlib (`tools/cluster_reference.py`).
    pub fn labels_tsv(&self) -> String {
        let mut out = String::from("path\tidentity");
        for r in &self.rows {
            out.push_str(&format!("\t{}@{}", r.method, r.rule.replace(' ', "_")));
        }
        out.push('\n');
        for (i, (path, name)) in self.photos.iter().enumerate() {
            out.push_str(&format!("{}\t{name}", path.display()));
            for r in &self.rows {
                out.push_str(&format!("\t{}", r.labels[i]));
            }
            out.push('\n');
        }
        out
    }
}

impl std::fmt::Display for ClusteringReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} faces of {} identities ({} photos without a face), {} neighbours per face",
            self.faces, self.identities, self.no_face, self.neighbours
        )?;
        writeln!(
            f,
            "| method | threshold | clusters | pairwise P / R / F | BCubed P / R / F | seconds |"
        )?;
        write!(f, "| --- | --- | ---: | --- | --- | ---: |")?;
        for r in &self.rows {
            let s =
                |c: &ClusterScores| format!("{:.4} / {:.4} / {:.4}", c.precision, c.recall, c.f);
            write!(
                f,
                "\n| {} | {} ({:.4}) | {} | {} | {} | {:.2} |",
                r.method,
                r.rule,
                r.threshold,
                r.clusters,
                s(&r.pairwise),
                s(&r.bcubed),
                r.seconds
            )?;
        }
        Ok(())
    }
}

/// Possible duplicates found at one false-match rate ([`duplicates`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicatesRow {
    pub fmr: f64,
    pub threshold: f32,
    /// Pairs reported.
    pub pairs: usize,
    /// Of the people enrolled twice, how many were reported as a pair.
    pub twins_found: usize,
    /// Pairs of two different people.
    pub false_pairs: usize,
    pub seconds: f64,
}

/// What [`duplicates`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicatesReport {
    pub subjects: usize,
    pub templates: usize,
    /// People enrolled under two names.
    pub twins: usize,
    pub rows: Vec<DuplicatesRow>,
}

/// The alias under which [`duplicates`] enrolls a person a second time.
fn alias(name: &str) -> String {
    format!("{name} (second enrollment)")
}

/// [`Gallery::duplicates`] on a folder of identities: every photo enrolled under its
/// folder's name, except that `twins` people with at least two photos (spread over the
/// sorted list) have their photos split between their name and a second one. Counts, at each
/// of `fmrs`, how many of those people are reported and how many reported pairs are two
/// different people.
pub fn duplicates(
    analyzer: &FaceAnalyzer,
    root: &Path,
    selection: FaceSelection,
    cache: Option<&Path>,
    twins: usize,
    fmrs: &[f64],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<DuplicatesReport> {
    let identities = corpus::scan_identities(root)?;
    let paths: Vec<_> = identities.iter().flat_map(|(_, p)| p.clone()).collect();
    let described = corpus::describe_all(analyzer, root, &paths, selection, cache, progress)?;
    let mut next = described.into_iter();
    let mut people: Vec<(String, Vec<crate::Descriptor>)> = identities
        .iter()
        .map(|(name, photos)| {
            let faces = next.by_ref().take(photos.len()).flatten().collect();
            (name.clone(), faces)
        })
        .collect();
    people.retain(|(_, f)| !f.is_empty());
    let candidates: Vec<usize> = (0..people.len())
        .filter(|&i| people[i].1.len() >= 2)
        .collect();
    let twins = twins.min(candidates.len());
    let step = candidates.len() / twins.max(1);
    let doubled: Vec<usize> = (0..twins).map(|t| candidates[t * step]).collect();
    let (_dir, gallery) = scratch_gallery()?;
    let fp = ModelFingerprint::dlib_resnet_v1();
    let mut items = Vec::new();
    for (i, (name, faces)) in people.iter().enumerate() {
        let half = if doubled.contains(&i) {
            faces.len() / 2
        } else {
            faces.len()
        };
        for (j, f) in faces.iter().enumerate() {
            let subject = if j < half { name.clone() } else { alias(name) };
            items.push((subject, Template::new(fp.clone(), f)?));
        }
    }
    let refs: Vec<(&str, &Template)> = items.iter().map(|(s, t)| (s.as_str(), t)).collect();
    gallery.enroll_many(&refs)?;
    gallery.index_pending(usize::MAX)?;
    let mut rows = Vec::new();
    for &fmr in fmrs {
        let start = Instant::now();
        let found = gallery.duplicates(fmr, &|_| {})?;
        let is_twin = |d: &crate::index::Duplicate| d.subjects[1] == alias(&d.subjects[0]);
        let twins_found = doubled
            .iter()
            .filter(|&&i| {
                let name = &people[i].0;
                found
                    .iter()
                    .any(|d| d.subjects[0] == *name && d.subjects[1] == alias(name))
            })
            .count();
        rows.push(DuplicatesRow {
            fmr,
            threshold: calibration::threshold_for_fmr(fmr)?,
            pairs: found.len(),
            twins_found,
            false_pairs: found.iter().filter(|d| !is_twin(d)).count(),
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(DuplicatesReport {
        subjects: gallery.list().len(),
        templates: gallery.len(),
        twins,
        rows,
    })
}

impl std::fmt::Display for DuplicatesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} subjects, {} templates; {} people enrolled under a second name",
            self.subjects, self.templates, self.twins
        )?;
        writeln!(
            f,
            "| FMR | threshold | pairs | people enrolled twice found | false pairs | seconds |"
        )?;
        write!(f, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
        for r in &self.rows {
            write!(
                f,
                "\n| {:.0e} | {:.4} | {} | {} / {} | {} | {:.1} |",
                r.fmr, r.threshold, r.pairs, r.twins_found, self.twins, r.false_pairs, r.seconds
            )?;
        }
        Ok(())
    }
}
