//! The held-out check of a calibration: thresholds measured on some identities, false-match
//! rates measured on others, with an identity-level bootstrap of the measurement's
//! uncertainty.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use super::pairs::Pair;
use crate::calibration::{self, CalibrationTable, LabelledSet};
use crate::compare::{Metric, TemplateMatrix};
use crate::template::ElementType;
use crate::{Error, Result};

/// 95 % interval of the impostor FMR at each threshold under a bootstrap that resamples
/// identities with replacement (`rounds` rounds, xorshift64 from a fixed seed): the
/// uncertainty of an FMR measured on these identities. False matches cluster on a few
/// look-alike identity pairs, so this is wider than a Poisson count suggests.
pub fn identity_bootstrap(
    set: &LabelledSet<'_>,
    metric: Metric,
    thresholds: &[f32],
    rounds: usize,
) -> Result<Vec<(f64, f64)>> {
    let dim = set.dim;
    let n = set.labels.len();
    if set.vectors.len() != n * dim || rounds == 0 {
        return Err(Error::BufferLength {
            expected: n * dim,
            got: set.vectors.len(),
        });
    }
    let ids = set
        .labels
        .iter()
        .copied()
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut photos_of = vec![0f64; ids];
    for &l in set.labels {
        photos_of[l as usize] += 1.0;
    }
    let mut m = TemplateMatrix::new(dim, ElementType::F32);
    for row in set.vectors.chunks_exact(dim.max(1)) {
        m.push(row)?;
    }
    // false matches per (identity, identity, threshold), sparse
    let mut fm: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    let mut buf = Vec::new();
    for i in 0..n {
        buf.resize(n - i - 1, 0.0);
        m.distances_range_into(
            &set.vectors[i * dim..(i + 1) * dim],
            metric,
            i + 1,
            &mut buf,
        )?;
        for (k, &d) in buf.iter().enumerate() {
            let (a, b) = (set.labels[i], set.labels[i + 1 + k]);
            if a == b {
                continue;
            }
            for (t, &th) in thresholds.iter().enumerate() {
                if d < th {
                    let e = fm
                        .entry((a.min(b), a.max(b)))
                        .or_insert_with(|| vec![0; thresholds.len()]);
                    e[t] += 1;
                }
            }
        }
    }
    let present: Vec<usize> = (0..ids).filter(|&i| photos_of[i] > 0.0).collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); thresholds.len()];
    let mut w = vec![0f64; ids];
    for _ in 0..rounds {
        w.iter_mut().for_each(|x| *x = 0.0);
        for _ in 0..present.len() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            w[present[(rng % present.len() as u64) as usize]] += 1.0;
        }
        let (s1, s2) = present.iter().fold((0.0, 0.0), |(a, b), &i| {
            (
                a + w[i] * photos_of[i],
                b + w[i] * w[i] * photos_of[i] * photos_of[i],
            )
        });
        let impostors = (s1 * s1 - s2) / 2.0;
        for (t, out) in samples.iter_mut().enumerate() {
            let false_matches: f64 = fm
                .iter()
                .map(|(&(a, b), c)| w[a as usize] * w[b as usize] * f64::from(c[t]))
                .sum();
            out.push(false_matches / impostors.max(1.0));
        }
    }
    Ok(samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
            (q(0.025), q(0.975))
        })
        .collect())
}

/// One target of a held-out check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldOutRow {
    pub target_fmr: f64,
    pub threshold: f32,
    pub train_impostor: u64,
    pub train_false_matches: u64,
    pub train_genuine: u64,
    pub train_fnmr: f64,
    pub test_impostor: u64,
    pub test_false_matches: u64,
    pub test_fmr: f64,
    pub test_genuine: u64,
    pub test_fnmr: f64,
    /// `target × test impostors`.
    pub expected_false_matches: f64,
    /// At least 10 false matches expected.
    pub poisson_resolvable: bool,
    /// The bootstrap's 95 % interval of the test FMR.
    pub bootstrap_fmr_95: [f64; 2],
    /// The test set resolves the target: 10 expected false matches and a bootstrap interval
    /// spanning at most a factor of 4 (it could tell a factor-2 error from chance).
    pub resolvable: bool,
    pub within_factor_2_of_target: bool,
    /// Test FMR over the target.
    pub ratio: f64,
    /// Within a factor of 2, or not resolvable (nothing to judge).
    pub within_factor_2: bool,
}

/// [`held_out_check`]'s result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldOut {
    pub rows: Vec<HeldOutRow>,
    /// Every row [`HeldOutRow::within_factor_2`].
    pub all_within_factor_2: bool,
}

/// Apply `train`'s thresholds to the pairs of `test` (other identities) and compare the
/// measured false-match rates with the targets, with a `rounds`-round identity bootstrap.
pub fn held_out_check(
    train: &CalibrationTable,
    test: &LabelledSet<'_>,
    rounds: usize,
) -> Result<HeldOut> {
    let thresholds: Vec<f32> = train.rows.iter().map(|r| r.threshold).collect();
    let counts = calibration::error_counts(test, train.metric, &thresholds)?;
    let intervals = identity_bootstrap(test, train.metric, &thresholds, rounds)?;
    let rows: Vec<HeldOutRow> = train
        .rows
        .iter()
        .zip(&counts)
        .zip(&intervals)
        .map(|((r, &(fm, imp, fnm, gen)), &(lo, hi))| {
            let measured = fm as f64 / imp.max(1) as f64;
            let expected = r.target_fmr * imp as f64;
            let naive = expected >= 10.0;
            let resolvable = naive && lo > 0.0 && hi / lo <= 4.0;
            let ratio = measured / r.target_fmr;
            let within = (0.5..=2.0).contains(&ratio);
            HeldOutRow {
                target_fmr: r.target_fmr,
                threshold: r.threshold,
                train_impostor: r.impostor_comparisons,
                train_false_matches: r.false_matches,
                train_genuine: r.genuine_comparisons,
                train_fnmr: r.fnmr(),
                test_impostor: imp,
                test_false_matches: fm,
                test_fmr: measured,
                test_genuine: gen,
                test_fnmr: fnm as f64 / gen.max(1) as f64,
                expected_false_matches: expected,
                poisson_resolvable: naive,
                bootstrap_fmr_95: [lo, hi],
                resolvable,
                within_factor_2_of_target: within,
                ratio,
                within_factor_2: !resolvable || within,
            }
        })
        .collect();
    Ok(HeldOut {
        all_within_factor_2: rows.iter().all(|r| r.within_factor_2),
        rows,
    })
}

/// The photos of a pair list split by fold for a held-out check: `(train, test)` as
/// `(identity label, photo)` sorted by photo, identity = the photo's folder name, `test_fold`
/// 1-based. Refused when an identity appears in more than one fold (the folds must hold
/// disjoint identities, as LFW View 2's do).
#[allow(clippy::type_complexity)]
pub fn split_by_fold(
    pairs: &[Pair],
    test_fold: usize,
) -> Result<(Vec<(u32, PathBuf)>, Vec<(u32, PathBuf)>)> {
    let folds = pairs.iter().map(|p| p.fold + 1).max().unwrap_or(0);
    if test_fold == 0 || test_fold > folds {
        return Err(Error::InvalidArgument {
            name: "fold",
            message: format!("{test_fold} is not in 1..={folds}"),
        });
    }
    let mut photo_fold: HashMap<PathBuf, (String, usize)> = HashMap::new();
    for p in pairs {
        for path in [&p.a, &p.b] {
            let id = path
                .parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            photo_fold.insert(path.clone(), (id, p.fold + 1));
        }
    }
    let mut photos: Vec<(PathBuf, String, usize)> = photo_fold
        .into_iter()
        .map(|(p, (id, f))| (p, id, f))
        .collect();
    photos.sort();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut id_folds: HashMap<u32, usize> = HashMap::new();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (path, id, fold) in photos {
        let next = ids.len() as u32;
        let label = *ids.entry(id.clone()).or_insert(next);
        if *id_folds.entry(label).or_insert(fold) != fold {
            return Err(Error::InvalidArgument {
                name: "pairs",
                message: format!("{id} appears in more than one fold"),
            });
        }
        if fold == test_fold {
            test.push((label, path));
        } else {
            train.push((label, path));
        }
    }
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::FaceSelection;

    #[test]
    fn a_perfectly_separated_test_set_has_no_false_matches() {
        // train: 3 identities on a line; test: 2 identities far apart
        let train_v = [0.0f32, 0.05, 1.0, 1.05, 2.0, 2.1];
        let train_l = [0, 0, 1, 1, 2, 2];
        let table = calibration::calibrate(
            &LabelledSet {
                vectors: &train_v,
                dim: 1,
                labels: &train_l,
            },
            Metric::Euclidean,
            &[0.5],
            "",
            FaceSelection::Largest,
            "",
            &|_| {},
        )
        .unwrap()
        .table;
        let test_v = [10.0f32, 10.01, 20.0, 20.01];
        let test_l = [0, 0, 1, 1];
        let test = LabelledSet {
            vectors: &test_v,
            dim: 1,
            labels: &test_l,
        };
        let h = held_out_check(&table, &test, 50).unwrap();
        let r = &h.rows[0];
        assert_eq!((r.test_impostor, r.test_genuine), (4, 2));
        assert_eq!((r.test_false_matches, r.test_fnmr), (0, 0.0));
        assert_eq!(r.bootstrap_fmr_95, [0.0, 0.0]);
        // 2 expected false matches resolve nothing: the row passes by not being judged
        assert!(!r.resolvable && r.within_factor_2 && !r.within_factor_2_of_target);
        assert!(h.all_within_factor_2);
    }

    #[test]
    fn folds_split_by_identity() {
        let p = |a: &str, b: &str, fold| Pair {
            a: PathBuf::from(a),
            b: PathBuf::from(b),
            same: false,
            fold,
        };
        let pairs = [p("A/1", "B/1", 0), p("C/1", "D/1", 1), p("C/2", "C/1", 1)];
        let (train, test) = split_by_fold(&pairs, 2).unwrap();
        assert_eq!(train.len(), 2);
        assert_eq!(test.len(), 3);
        assert!(split_by_fold(&pairs, 3).is_err() && split_by_fold(&pairs, 0).is_err());
        let leak = [p("A/1", "B/1", 0), p("A/2", "C/1", 1)];
        assert!(split_by_fold(&leak, 1).is_err());
    }
}

/// [`held_out_lfw`]'s result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldOutReport {
    /// 1-based.
    pub test_fold: usize,
    pub train_images: usize,
    pub test_images: usize,
    /// Photos without a face, in either part.
    pub skipped: usize,
    #[serde(flatten)]
    pub check: HeldOut,
}

/// The held-out check on a pair list's folds: thresholds from every fold but `test_fold`
/// (1-based), false-match rates measured on it (View 2's folds hold disjoint identities).
/// `progress(k)` counts photos described.
pub fn held_out_lfw(
    analyzer: &crate::FaceAnalyzer,
    root: &std::path::Path,
    pairs: &[Pair],
    test_fold: usize,
    selection: crate::detect::FaceSelection,
    cache: Option<&std::path::Path>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<HeldOutReport> {
    use super::corpus::Labelled;
    let (train, test) = split_by_fold(pairs, test_fold)?;
    let train = Labelled::describe(analyzer, root, &train, selection, cache, progress)?;
    let test = Labelled::describe(analyzer, root, &test, selection, cache, progress)?;
    let table = calibration::calibrate(
        &train.set(),
        Metric::Euclidean,
        &calibration::STANDARD_FMRS,
        crate::model_store::RESNET.id,
        selection,
        "held-out check",
        &|_| {},
    )?
    .table;
    Ok(HeldOutReport {
        test_fold,
        train_images: train.labels.len(),
        test_images: test.labels.len(),
        skipped: train.skipped.len() + test.skipped.len(),
        check: held_out_check(&table, &test.set(), 2000)?,
    })
}

impl std::fmt::Display for HeldOutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = self.test_fold;
        writeln!(
            f,
            "thresholds from folds other than {k} ({} photos), measured on fold {k} ({} photos)",
            self.train_images, self.test_images
        )?;
        writeln!(
            f,
            "{:>8} {:>9} {:>11} {:>7} {:>9} {:>6} {:>8} {:>19} {:>7} {:>9}",
            "target",
            "threshold",
            "impostors",
            "false m",
            "test FMR",
            "ratio",
            "expected",
            "bootstrap 95% FMR",
            "resolv",
            "test FNMR"
        )?;
        for r in &self.check.rows {
            let [lo, hi] = r.bootstrap_fmr_95;
            writeln!(
                f,
                "{:>8.0e} {:>9.4} {:>11} {:>7} {:>9.2e} {:>6.2} {:>8.1} {:>19} {:>7} {:>9.4}",
                r.target_fmr,
                r.threshold,
                r.test_impostor,
                r.test_false_matches,
                r.test_fmr,
                r.ratio,
                r.expected_false_matches,
                format!("{lo:.1e}..{hi:.1e}"),
                r.resolvable,
                r.test_fnmr,
            )?;
        }
        write!(
            f,
            "every resolvable target within a factor of 2: {}",
            if self.check.all_within_factor_2 {
                "yes"
            } else {
                "NO"
            }
        )
    }
}
