//! Pair protocols: the LFW `pairs.txt` list, k-fold threshold selection, ROC, TAR at FAR, EER.
//!
//! A pair **matches** when its distance is **below** the threshold. Pairs whose photos show
//! no face score `+inf` (always "different").

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

/// One pair of a protocol list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Both photos show the same person.
    pub same: bool,
    /// The fold the pair belongs to, 0-based.
    pub fold: usize,
}

/// A pair's distance with its truth and fold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScoredPair {
    pub distance: f32,
    pub same: bool,
    pub fold: usize,
}

/// Parse an LFW View 2 pairs list: a header `FOLDS PAIRS_PER_HALF_FOLD`, then per fold that
/// many matched lines (`name n1 n2`) followed by as many mismatched ones (`name1 n1 name2
/// n2`). Photos are `root/name/name_NNNN.jpg`.
pub fn parse_pairs(text: &str, root: &Path) -> Result<Vec<Pair>> {
    let bad = |line: &str| Error::InvalidArgument {
        name: "pairs",
        message: format!("malformed pairs line: {line:?}"),
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
    if per == 0 {
        return Err(bad(header));
    }
    let img = |name: &str, n: &str| -> Result<PathBuf> {
        let n: u32 = n.parse().map_err(|_| bad(n))?;
        Ok(root.join(name).join(format!("{name}_{n:04}.jpg")))
    };
    let mut out = Vec::new();
    for (i, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let fold = i / (2 * per);
        let (a, b, same) = match f.as_slice() {
            [name, a, b] => (img(name, a)?, img(name, b)?, true),
            [n1, a, n2, b] => (img(n1, a)?, img(n2, b)?, false),
            _ => return Err(bad(line)),
        };
        out.push(Pair { a, b, same, fold });
    }
    let expected = folds.saturating_mul(2).saturating_mul(per);
    if out.len() != expected {
        return Err(bad(&format!("{} pairs, header says {expected}", out.len())));
    }
    Ok(out)
}

/// [`parse_pairs`] of a file; errors name the file.
pub fn read_pairs(root: &Path, pairs: &Path) -> Result<Vec<Pair>> {
    let text = std::fs::read_to_string(pairs).map_err(|e| Error::io(pairs, e))?;
    parse_pairs(&text, root).map_err(|e| match e {
        Error::InvalidArgument { name, message } => Error::InvalidArgument {
            name,
            message: format!("{}: {message}", pairs.display()),
        },
        e => e,
    })
}

/// The distinct photos of a pair list, sorted.
pub fn photos_of(pairs: &[Pair]) -> Vec<PathBuf> {
    let mut images: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    images.sort();
    images.dedup();
    images
}

/// True- and false-accept rates at a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    /// Same-person pairs below the threshold, over all same-person pairs.
    pub tar: f64,
    /// Different-person pairs below the threshold, over all different-person pairs.
    pub far: f64,
}

/// [`Rates`] of `scored` at `threshold`.
pub fn rates(scored: &[ScoredPair], threshold: f32) -> Rates {
    let same = scored.iter().filter(|p| p.same).count().max(1) as f64;
    let diff = scored.iter().filter(|p| !p.same).count().max(1) as f64;
    let below = |want: bool| {
        scored
            .iter()
            .filter(|p| p.same == want && p.distance < threshold)
            .count() as f64
    };
    Rates {
        tar: below(true) / same,
        far: below(false) / diff,
    }
}

/// The threshold of best accuracy on `train`: midway between the two neighbouring distances
/// where the count of correct decisions peaks (the first peak, scanning up).
pub fn best_threshold(train: &[ScoredPair]) -> f32 {
    let mut sorted: Vec<(f32, bool)> = train.iter().map(|p| (p.distance, p.same)).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_diff = sorted.iter().filter(|p| !p.1).count();
    // a threshold just above sorted[i] accepts pairs 0..=i
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

/// TAR at the largest threshold whose FAR does not exceed a target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TarAtFar {
    pub far: f64,
    pub tar: f64,
    pub threshold: f32,
}

/// [`TarAtFar`]: the threshold is the `⌊far × N⌋`-th smallest impostor distance (0-based), so
/// at most `⌊far × N⌋` impostor pairs lie below it.
pub fn tar_at_far(scored: &[ScoredPair], far: f64) -> TarAtFar {
    let mut impostor: Vec<f32> = scored
        .iter()
        .filter(|p| !p.same)
        .map(|p| p.distance)
        .collect();
    impostor.sort_by(f32::total_cmp);
    let allowed = (far * impostor.len() as f64).floor() as usize;
    let threshold = impostor.get(allowed).copied().unwrap_or(f32::INFINITY);
    TarAtFar {
        far,
        tar: rates(scored, threshold).tar,
        threshold,
    }
}

/// Equal error rate: `(FRR + FAR) / 2` at the finite pair distance where `|FRR − FAR|` is
/// smallest.
pub fn eer(scored: &[ScoredPair]) -> f64 {
    let mut ts: Vec<f32> = scored
        .iter()
        .map(|p| p.distance)
        .filter(|d| d.is_finite())
        .collect();
    ts.sort_by(f32::total_cmp);
    let mut best = (f64::INFINITY, 1.0);
    for t in ts {
        let r = rates(scored, t);
        let frr = 1.0 - r.tar;
        if (frr - r.far).abs() < best.0 {
            best = ((frr - r.far).abs(), (frr + r.far) / 2.0);
        }
    }
    best.1
}

/// The k-fold protocol on one set of pair scores: each fold is decided at the
/// [`best_threshold`] of the other folds; TAR at FAR and EER are over all pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KFold {
    pub fold_accuracy: Vec<f64>,
    pub fold_thresholds: Vec<f32>,
    pub accuracy_mean: f64,
    /// Population standard deviation over the folds.
    pub accuracy_std: f64,
    pub tar_at_far_1e2: TarAtFar,
    pub tar_at_far_1e3: TarAtFar,
    pub eer: f64,
}

/// [`KFold`] of `scored` (folds numbered from 0 by [`ScoredPair::fold`]).
pub fn k_fold(scored: &[ScoredPair]) -> KFold {
    let folds = scored.iter().map(|s| s.fold).max().map_or(0, |m| m + 1);
    let mut accs = Vec::new();
    let mut thresholds = Vec::new();
    for f in 0..folds {
        let (test, train): (Vec<ScoredPair>, Vec<ScoredPair>) =
            scored.iter().partition(|s| s.fold == f);
        let t = best_threshold(&train);
        let correct = test.iter().filter(|p| (p.distance < t) == p.same).count();
        accs.push(correct as f64 / test.len().max(1) as f64);
        thresholds.push(t);
    }
    let n = accs.len().max(1) as f64;
    let mean = accs.iter().sum::<f64>() / n;
    let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n).sqrt();
    KFold {
        tar_at_far_1e2: tar_at_far(scored, 1e-2),
        tar_at_far_1e3: tar_at_far(scored, 1e-3),
        eer: eer(scored),
        fold_accuracy: accs,
        fold_thresholds: thresholds,
        accuracy_mean: mean,
        accuracy_std: std,
    }
}

/// One point of a ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    pub threshold: f32,
    pub far: f64,
    pub tar: f64,
}

/// The ROC at every distinct finite distance `t` (pairs at `t` accepted: the rates are taken
/// at `t + 1e-6`).
pub fn roc(scored: &[ScoredPair]) -> Vec<RocPoint> {
    let mut ts: Vec<f32> = scored
        .iter()
        .map(|p| p.distance)
        .filter(|d| d.is_finite())
        .collect();
    ts.sort_by(f32::total_cmp);
    ts.dedup();
    ts.into_iter()
        .map(|t| {
            let r = rates(scored, t + 1e-6);
            RocPoint {
                threshold: t,
                far: r.far,
                tar: r.tar,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(distance: f32, same: bool, fold: usize) -> ScoredPair {
        ScoredPair {
            distance,
            same,
            fold,
        }
    }

    #[test]
    fn threshold_separates_a_clean_split() {
        let train = [
            sp(0.2, true, 0),
            sp(0.3, true, 0),
            sp(0.5, true, 0),
            sp(0.7, false, 0),
            sp(0.9, false, 0),
        ];
        let t = best_threshold(&train);
        assert_eq!(t, 0.6);
        let r = rates(&train, t);
        assert_eq!((r.tar, r.far), (1.0, 0.0));
    }

    /// Ten pairs in two folds, worked by hand.
    ///
    /// Fold 0: same 0.1 0.3 0.6, different 0.4 0.8. Fold 1: same 0.2 0.5, different 0.36 0.7
    /// 0.9.
    /// * Test fold 0, train on fold 1 (sorted 0.2s 0.36d 0.5s 0.7d 0.9d): correct decisions
    ///   start at 3 (all "different") and peak first at 4 after 0.2, so t = 0.28; fold 0
    ///   gets 0.1 ✓ 0.3 ✗ 0.6 ✗ 0.4 ✓ 0.8 ✓ = 3/5.
    /// * Test fold 1, train on fold 0 (0.1s 0.3s 0.4d 0.6s 0.8d): 2 → 3 → 4 (after 0.3, the
    ///   first peak) → 3 → 4 → 3, so t = 0.35; fold 1 gets 0.2 ✓ 0.5 ✗ 0.36 ✓ 0.7 ✓ 0.9 ✓ = 4/5.
    /// * Mean 0.7, population std 0.1.
    /// * FAR 1e-2 of 5 impostors allows 0 below the threshold: t = 0.36, the smallest
    ///   impostor; same pairs below it 0.1 0.2 0.3, TAR 3/5.
    /// * EER: at t = 0.5, FRR = 2/5 (0.5 and 0.6 not below) and FAR = 2/5 (0.36, 0.4): 0.4.
    #[test]
    fn ten_pairs_by_hand() {
        let scored = [
            sp(0.1, true, 0),
            sp(0.3, true, 0),
            sp(0.6, true, 0),
            sp(0.4, false, 0),
            sp(0.8, false, 0),
            sp(0.2, true, 1),
            sp(0.5, true, 1),
            sp(0.36, false, 1),
            sp(0.7, false, 1),
            sp(0.9, false, 1),
        ];
        let k = k_fold(&scored);
        assert!(
            (k.fold_thresholds[0] - 0.28).abs() < 1e-6,
            "{:?}",
            k.fold_thresholds
        );
        assert!(
            (k.fold_thresholds[1] - 0.35).abs() < 1e-6,
            "{:?}",
            k.fold_thresholds
        );
        assert_eq!(k.fold_accuracy, [0.6, 0.8]);
        assert!((k.accuracy_mean - 0.7).abs() < 1e-12);
        assert!((k.accuracy_std - 0.1).abs() < 1e-12);
        assert_eq!(k.tar_at_far_1e2.threshold, 0.36);
        assert!((k.tar_at_far_1e2.tar - 0.6).abs() < 1e-12);
        assert!((k.eer - 0.4).abs() < 1e-12, "{}", k.eer);
        let roc = roc(&scored);
        assert_eq!(roc.len(), 10);
        assert_eq!((roc[0].tar, roc[0].far), (0.2, 0.0));
        assert_eq!((roc[9].tar, roc[9].far), (1.0, 1.0));
    }

    #[test]
    fn pairs_lists_parse_and_refuse() {
        let root = Path::new("/lfw");
        let text = "1\t1\nA\t1\t2\nA\t1\tB\t3\n";
        let p = parse_pairs(text, root).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].a, root.join("A/A_0001.jpg"));
        assert_eq!(p[0].b, root.join("A/A_0002.jpg"));
        assert!(p[0].same && !p[1].same);
        assert_eq!(p[1].b, root.join("B/B_0003.jpg"));
        assert_eq!(photos_of(&p).len(), 3);
        for bad in [
            "",
            "1\n",
            "1 0\n",
            "2 1\nA 1 2\nA 1 B 3\n",
            "1 1\nA x 2\nA 1 B 3\n",
        ] {
            assert!(parse_pairs(bad, root).is_err(), "{bad:?}");
        }
    }
}
