//! `uniface eval lfw`: the standard 10-fold LFW verification protocol (View 2).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use std::collections::HashMap;

use uniface::core::calibration;
use uniface::core::compare::Metric;
use uniface::core::template::{ElementType, ModelFingerprint, Template};
use uniface::{Descriptor, Error, FaceAnalyzer};

pub struct Pair {
    pub a: PathBuf,
    pub b: PathBuf,
    pub same: bool,
    /// 0-based.
    pub fold: usize,
}

pub fn parse_pairs(root: &Path, pairs: &Path) -> uniface::Result<Vec<Pair>> {
    let text = std::fs::read_to_string(pairs).map_err(|e| Error::Io {
        path: pairs.to_owned(),
        source: e,
    })?;
    let bad = |line: &str| Error::Io {
        path: pairs.to_owned(),
        source: std::io::Error::other(format!("malformed pairs line: {line:?}")),
    };
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| bad(""))?;
    let nums: Vec<usize> = header
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let &[folds, per] = nums.as_slice() else {
        return Err(bad(header));
    };
    let img = |name: &str, n: &str| -> PathBuf {
        let n: usize = n.parse().unwrap_or(0);
        root.join(name).join(format!("{name}_{n:04}.jpg"))
    };
    let mut out = Vec::new();
    for (i, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let fold = i / (2 * per);
        let pair = match f.as_slice() {
            [name, a, b] => Pair {
                a: img(name, a),
                b: img(name, b),
                same: true,
                fold,
            },
            [n1, a, n2, b] => Pair {
                a: img(n1, a),
                b: img(n2, b),
                same: false,
                fold,
            },
            _ => return Err(bad(line)),
        };
        out.push(pair);
    }
    if out.len() != folds * 2 * per {
        return Err(bad(&format!(
            "{} pairs, header says {}",
            out.len(),
            folds * 2 * per
        )));
    }
    Ok(out)
}

/// Best accuracy threshold on `train` (distances below it are "same").
fn best_threshold(train: &[(f32, bool)]) -> f32 {
    let mut sorted: Vec<(f32, bool)> = train.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_diff = sorted.iter().filter(|p| !p.1).count();
    // threshold just above sorted[i]: same-pairs ≤ i accepted
    let (mut correct, mut best, mut best_t) = (n_diff, n_diff, 0.0f32);
    for i in 0..sorted.len() {
        correct = if sorted[i].1 {
            correct + 1
        } else {
            correct - 1
        };
        let next = sorted.get(i + 1).map_or(sorted[i].0 + 1e-3, |p| p.0);
        if correct > best && next > sorted[i].0 {
            best = correct;
            best_t = (sorted[i].0 + next) / 2.0;
        }
    }
    best_t
}

fn rates(scored: &[(f32, bool)], t: f32) -> (f64, f64) {
    let same = scored.iter().filter(|p| p.1).count().max(1) as f64;
    let diff = scored.iter().filter(|p| !p.1).count().max(1) as f64;
    let tar = scored.iter().filter(|p| p.1 && p.0 < t).count() as f64 / same;
    let far = scored.iter().filter(|p| !p.1 && p.0 < t).count() as f64 / diff;
    (tar, far)
}

/// TAR at the largest threshold whose FAR does not exceed `far`.
fn tar_at_far(scored: &[(f32, bool)], far: f64) -> (f64, f32) {
    let mut impostor: Vec<f32> = scored.iter().filter(|p| !p.1).map(|p| p.0).collect();
    impostor.sort_by(f32::total_cmp);
    let allowed = (far * impostor.len() as f64).floor() as usize;
    let t = impostor.get(allowed).copied().unwrap_or(f32::INFINITY);
    (rates(scored, t).0, t)
}

fn eer(scored: &[(f32, bool)]) -> f64 {
    let mut ts: Vec<f32> = scored
        .iter()
        .map(|p| p.0)
        .filter(|d| d.is_finite())
        .collect();
    ts.sort_by(f32::total_cmp);
    let mut best = (f64::INFINITY, 1.0);
    for t in ts {
        let (tar, far) = rates(scored, t);
        let frr = 1.0 - tar;
        if (frr - far).abs() < best.0 {
            best = ((frr - far).abs(), (frr + far) / 2.0);
        }
    }
    best.1
}

/// Results of the 10-fold protocol on one set of pair scores.
struct Protocol {
    accs: Vec<f64>,
    thresholds: Vec<f32>,
    mean: f64,
    std: f64,
    tar2: (f64, f32),
    tar3: (f64, f32),
    eer: f64,
}

fn protocol(scored: &[(f32, bool, usize)]) -> Protocol {
    let folds = scored.iter().map(|s| s.2).max().map_or(0, |m| m + 1);
    let mut accs = Vec::new();
    let mut thresholds = Vec::new();
    for f in 0..folds {
        let train: Vec<(f32, bool)> = scored
            .iter()
            .filter(|s| s.2 != f)
            .map(|s| (s.0, s.1))
            .collect();
        let test: Vec<(f32, bool)> = scored
            .iter()
            .filter(|s| s.2 == f)
            .map(|s| (s.0, s.1))
            .collect();
        let t = best_threshold(&train);
        let correct = test.iter().filter(|p| (p.0 < t) == p.1).count();
        accs.push(correct as f64 / test.len() as f64);
        thresholds.push(t);
    }
    let mean = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
    let std =
        (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len().max(1) as f64).sqrt();
    let all: Vec<(f32, bool)> = scored.iter().map(|s| (s.0, s.1)).collect();
    Protocol {
        tar2: tar_at_far(&all, 1e-2),
        tar3: tar_at_far(&all, 1e-3),
        eer: eer(&all),
        accs,
        thresholds,
        mean,
        std,
    }
}

/// Every descriptor stored as `element` and read back (what a gallery of such templates sees).
fn quantised(d: &Descriptor, element: ElementType) -> uniface::Result<Descriptor> {
    let t = Template::new(ModelFingerprint::dlib_resnet_v1(), d)?.converted(element);
    Descriptor::try_from(t.vector().as_slice()).map_err(|_| Error::BufferLength {
        expected: d.len(),
        got: t.dimension(),
    })
}

/// DET points (threshold, FMR, FNMR) over every pair of the photos: cross-identity pairs are
/// impostors, same-identity pairs genuine (identity = the photo's folder).
fn det_points(table: &HashMap<PathBuf, Descriptor>) -> uniface::Result<(Vec<[f64; 3]>, u64, u64)> {
    let mut keys: Vec<&PathBuf> = table.keys().collect();
    keys.sort();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut labels = Vec::new();
    let mut vectors = Vec::new();
    for k in keys {
        let id = k
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let next = ids.len() as u32;
        labels.push(*ids.entry(id).or_insert(next));
        vectors.extend_from_slice(&table[k]);
    }
    let set = calibration::LabelledSet {
        vectors: &vectors,
        dim: uniface::core::embed::DESCRIPTOR_DIM,
        labels: &labels,
    };
    let c = calibration::calibrate(
        &set,
        Metric::Euclidean,
        &calibration::STANDARD_FMRS,
        "",
        "",
        &|_| {},
    )?;
    let genuine = c.genuine.len() as u64;
    let impostors = c.table.rows.first().map_or(0, |r| r.impostor_comparisons);
    let points = c
        .table
        .curve
        .iter()
        .map(|p| {
            let accepted = c.genuine.partition_point(|&d| d < p.threshold) as u64;
            let fnmr = (genuine - accepted) as f64 / genuine.max(1) as f64;
            [f64::from(p.threshold), p.fmr, fnmr]
        })
        .collect();
    Ok((points, impostors, genuine))
}

fn write_det(
    path: &Path,
    curves: &[(ElementType, Vec<[f64; 3]>)],
    impostors: u64,
    genuine: u64,
) -> uniface::Result<()> {
    let mut csv = String::from("element,threshold,fmr,fnmr,impostor_pairs,genuine_pairs\n");
    for (e, pts) in curves {
        for p in pts {
            csv.push_str(&format!(
                "{},{},{},{},{impostors},{genuine}\n",
                e.name(),
                p[0],
                p[1],
                p[2]
            ));
        }
    }
    std::fs::write(path, csv).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e,
    })?;
    let series: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|(e, pts)| {
            (
                e.name().to_owned(),
                pts.iter().map(|p| (p[1], p[2])).collect(),
            )
        })
        .collect();
    let min_fmr = 10f64.powf((1.0 / impostors.max(1) as f64).log10().floor());
    crate::plot::chart(
        &path.with_extension("png"),
        "LFW DET - EVERY PAIR OF 7701 PHOTOS",
        crate::plot::Axis {
            min: min_fmr,
            max: 1.0,
            log: true,
            label: "FMR",
        },
        crate::plot::Axis {
            min: 1e-3,
            max: 1.0,
            log: true,
            label: "FNMR",
        },
        &series,
    )
}

pub fn lfw(
    root: &Path,
    pairs: Option<&Path>,
    json_out: bool,
    roc: Option<&Path>,
    cache: Option<&Path>,
    det: Option<&Path>,
) -> uniface::Result<()> {
    let start = Instant::now();
    let pairs_path = pairs
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("pairs.txt"));
    let pairs = parse_pairs(root, &pairs_path)?;
    let mut images: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    images.sort();
    images.dedup();
    let analyzer = FaceAnalyzer::from_env()?;
    let descriptors = crate::corpus::describe_all(&analyzer, root, &images, cache)?;
    let mut table = HashMap::new();
    let mut failures = Vec::new();
    for (path, d) in images.iter().zip(descriptors) {
        match d {
            Some(d) => {
                table.insert(path.clone(), d);
            }
            None => failures.push(path.clone()),
        }
    }
    let mut results = Vec::new();
    let mut det_curves = Vec::new();
    let mut det_counts = (0, 0);
    for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
        let table: HashMap<PathBuf, Descriptor> = table
            .iter()
            .map(|(k, d)| Ok((k.clone(), quantised(d, element)?)))
            .collect::<uniface::Result<_>>()?;
        // Pairs with an image where no face was found score +inf: predicted "different".
        let scored: Vec<(f32, bool, usize)> = pairs
            .iter()
            .map(|p| {
                let d = match (table.get(&p.a), table.get(&p.b)) {
                    (Some(a), Some(b)) => uniface::euclidean_distance(a, b),
                    _ => f32::INFINITY,
                };
                (d, p.same, p.fold)
            })
            .collect();
        if element == ElementType::F32 {
            if let Some(path) = roc {
                write_roc(path, &scored)?;
            }
        }
        if det.is_some() {
            let (pts, imp, gen) = det_points(&table)?;
            det_curves.push((element, pts));
            det_counts = (imp, gen);
        }
        results.push((element, protocol(&scored)));
    }
    if let Some(path) = det {
        write_det(path, &det_curves, det_counts.0, det_counts.1)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let main = &results[0].1;
    if json_out {
        let quantised: serde_json::Map<String, serde_json::Value> = results[1..]
            .iter()
            .map(|(e, r)| {
                (
                    e.name().to_owned(),
                    json!({
                        "accuracy_mean": r.mean, "accuracy_std": r.std,
                        "accuracy_delta_pp": 100.0 * (r.mean - main.mean),
                        "tar_at_far_1e-3": r.tar3.0, "eer": r.eer,
                    }),
                )
            })
            .collect();
        println!(
            "{}",
            json!({
                "pairs": pairs.len(), "images": images.len(), "failures": failures.len(),
                "failed_images": failures, "fold_accuracy": main.accs,
                "fold_thresholds": main.thresholds,
                "accuracy_mean": main.mean, "accuracy_std": main.std,
                "tar_at_far_1e-2": main.tar2.0, "threshold_at_far_1e-2": main.tar2.1,
                "tar_at_far_1e-3": main.tar3.0, "threshold_at_far_1e-3": main.tar3.1,
                "eer": main.eer, "quantised": quantised, "seconds": secs,
            })
        );
        return Ok(());
    }
    println!(
        "LFW View 2: {} pairs, {} images, {} without a face",
        pairs.len(),
        images.len(),
        failures.len()
    );
    for f in &failures {
        println!("  no face: {}", f.display());
    }
    for (i, (a, t)) in main.accs.iter().zip(&main.thresholds).enumerate() {
        println!("  fold {:2}: accuracy {a:.4} at threshold {t:.4}", i + 1);
    }
    println!(
        "TAR@FAR=1e-2: {:.4} (threshold {:.4})",
        main.tar2.0, main.tar2.1
    );
    println!(
        "TAR@FAR=1e-3: {:.4} (threshold {:.4})",
        main.tar3.0, main.tar3.1
    );
    println!("EER: {:.4}", main.eer);
    for (e, r) in &results {
        println!(
            "templates as {:<3}: accuracy {:.4} ± {:.4} ({:+.2} pp vs f32), TAR@FAR=1e-3 {:.4}, EER {:.4}",
            e.name(),
            r.mean,
            r.std,
            100.0 * (r.mean - main.mean),
            r.tar3.0,
            r.eer
        );
    }
    if let Some(p) = det {
        println!(
            "DET over every pair ({} impostor, {} genuine): {} and {}",
            det_counts.0,
            det_counts.1,
            p.display(),
            p.with_extension("png").display()
        );
    }
    println!("time: {secs:.1} s");
    println!("lfw accuracy: {:.4} ± {:.4}", main.mean, main.std);
    Ok(())
}

fn write_roc(path: &Path, scored: &[(f32, bool, usize)]) -> uniface::Result<()> {
    let all: Vec<(f32, bool)> = scored.iter().map(|s| (s.0, s.1)).collect();
    let mut ts: Vec<f32> = all.iter().map(|p| p.0).filter(|d| d.is_finite()).collect();
    ts.sort_by(f32::total_cmp);
    ts.dedup();
    let mut csv = String::from("threshold,far,tar\n");
    for t in ts {
        let (tar, far) = rates(&all, t + 1e-6);
        csv.push_str(&format!("{t},{far},{tar}\n"));
    }
    std::fs::write(path, csv).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_separates_a_clean_split() {
        let train = [
            (0.2, true),
            (0.3, true),
            (0.5, true),
            (0.7, false),
            (0.9, false),
        ];
        let t = best_threshold(&train);
        assert!(t > 0.5 && t < 0.7, "{t}");
        let (tar, far) = rates(&train, t);
        assert_eq!((tar, far), (1.0, 0.0));
    }
}
