//! `uniface eval lfw`: the standard 10-fold LFW verification protocol (View 2).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use uniface::{Error, FaceAnalyzer};

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

pub fn lfw(
    root: &Path,
    pairs: Option<&Path>,
    json_out: bool,
    roc: Option<&Path>,
    cache: Option<&Path>,
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
    let mut table = std::collections::HashMap::new();
    let mut failures = Vec::new();
    for (path, d) in images.iter().zip(descriptors) {
        match d {
            Some(d) => {
                table.insert(path.clone(), d);
            }
            None => failures.push(path.clone()),
        }
    }
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
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
    let all: Vec<(f32, bool)> = scored.iter().map(|s| (s.0, s.1)).collect();
    let (tar2, t2) = tar_at_far(&all, 1e-2);
    let (tar3, t3) = tar_at_far(&all, 1e-3);
    let eer = eer(&all);
    if let Some(path) = roc {
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
        })?;
    }
    let secs = start.elapsed().as_secs_f64();
    if json_out {
        println!(
            "{}",
            json!({
                "pairs": pairs.len(), "images": images.len(), "failures": failures.len(),
                "failed_images": failures, "fold_accuracy": accs, "fold_thresholds": thresholds,
                "accuracy_mean": mean, "accuracy_std": std,
                "tar_at_far_1e-2": tar2, "threshold_at_far_1e-2": t2,
                "tar_at_far_1e-3": tar3, "threshold_at_far_1e-3": t3,
                "eer": eer, "seconds": secs,
            })
        );
    } else {
        println!(
            "LFW View 2: {} pairs, {} images, {} without a face",
            pairs.len(),
            images.len(),
            failures.len()
        );
        for f in &failures {
            println!("  no face: {}", f.display());
        }
        for (i, (a, t)) in accs.iter().zip(&thresholds).enumerate() {
            println!("  fold {:2}: accuracy {a:.4} at threshold {t:.4}", i + 1);
        }
        println!("TAR@FAR=1e-2: {tar2:.4} (threshold {t2:.4})");
        println!("TAR@FAR=1e-3: {tar3:.4} (threshold {t3:.4})");
        println!("EER: {eer:.4}");
        println!("time: {secs:.1} s");
    }
    println!("lfw accuracy: {mean:.4} ± {std:.4}");
    Ok(())
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
