//! Calibrated decisions: thresholds that carry a false-match rate.
//!
//! "Is 0.6 a match?" has no answer without the rate of false matches it buys. A
//! [`CalibrationTable`] is measured on labelled photos: every cross-identity pair is an impostor
//! comparison and every same-identity pair a genuine one. For each target false-match rate
//! (FMR) the table holds the threshold at which `⌊FMR × impostors⌋` impostor pairs score below
//! it (fewer only when distances tie at the boundary), with the counts behind the row, the false-non-match rate at that threshold, and a
//! finer curve used to estimate the FMR of any score.
//!
//! The dlib ResNet ships with a table made from every pair of the 7,701 LFW photos of the
//! View 2 protocol ([`default_table`]; how it was made is in [`CalibrationTable::method`]).
//! A host recomputes one on its own photos with [`calibrate`] (CLI: `uniface calibrate`):
//! thresholds transfer imperfectly across populations and capture conditions.
//!
//! A pair **matches** when its distance is **below** the threshold.
//!
//! ```
//! # fn main() -> uniface_core::Result<()> {
//! let t = uniface_core::calibration::threshold_for_fmr(1e-4)?;
//! let d = uniface_core::calibration::decide(0.35, 1e-4)?;
//! assert!(d.is_match && d.threshold == t && d.estimated_fmr < 1e-4);
//! # Ok(()) }
//! ```

use std::sync::OnceLock;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::compare::{Metric, TemplateMatrix};
use crate::detect::FaceSelection;
use crate::template::ElementType;
use crate::{Error, Result};

/// The target false-match rates of a standard table.
pub const STANDARD_FMRS: [f64; 5] = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6];

/// Fewest impostor pairs below a threshold for [`CalibrationTable::threshold_for_fmr`] to
/// accept its FMR as a target.
pub const MIN_FALSE_MATCHES: u64 = 10;

/// Curve points per decade of FMR.
const CURVE_STEPS_PER_DECADE: i32 = 10;
/// Histogram resolution of the first pass (distance units per bin).
const BINS_PER_UNIT: f32 = 4096.0;
const HISTOGRAM_RANGE: f32 = 4.0;

/// One row of a threshold table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRow {
    pub target_fmr: f64,
    /// Distances below this match.
    pub threshold: f32,
    pub impostor_comparisons: u64,
    /// Impostor pairs below the threshold: `⌊target × impostors⌋`, or fewer when distances
    /// tie at the threshold.
    pub false_matches: u64,
    pub genuine_comparisons: u64,
    /// Genuine pairs at or above the threshold.
    pub false_non_matches: u64,
}

impl ThresholdRow {
    pub fn measured_fmr(&self) -> f64 {
        self.false_matches as f64 / self.impostor_comparisons.max(1) as f64
    }

    pub fn fnmr(&self) -> f64 {
        self.false_non_matches as f64 / self.genuine_comparisons.max(1) as f64
    }
}

/// The measured FMR at a threshold (a point of the impostor distribution's lower tail).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub threshold: f32,
    pub fmr: f64,
}

/// Thresholds for target false-match rates, with the evidence behind them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationTable {
    /// Model the distances came from (a [`crate::model_store::ModelCard`] id).
    pub model_id: String,
    pub metric: Metric,
    /// The rule that chose each photo's face ([`FaceSelection`]): distances of faces chosen
    /// another way are not what the table was measured on. Tables saved before the field
    /// existed were all made with [`FaceSelection::NearestCentre`] and read as such.
    #[serde(default = "legacy_selection")]
    pub selection: FaceSelection,
    /// How the table was made: data, selection, counts, command.
    pub method: String,
    pub identities: u64,
    pub images: u64,
    /// One row per target FMR, largest FMR first.
    pub rows: Vec<ThresholdRow>,
    /// FMR against threshold, increasing, from the smallest resolvable FMR to 1.
    pub curve: Vec<CurvePoint>,
}

/// A calibrated 1:1 decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decision {
    /// The distance compared (the model's metric).
    pub distance: f32,
    /// `1 − distance / 2` in `[0, 1]` (see [`crate::compare`]).
    pub similarity: f32,
    /// Threshold for the target FMR.
    pub threshold: f32,
    pub target_fmr: f64,
    /// `distance < threshold`.
    pub is_match: bool,
    /// How many comparisons the distance is the best of (a subject's templates, see
    /// [`CalibrationTable::decide_best_of`]); 1 for a single pair.
    pub comparisons: u32,
    /// FMR of a threshold placed at this distance: the chance that an impostor pair (or, for
    /// `comparisons` > 1, the best of that many impostor comparisons) scores at least this
    /// close. Reported as the smallest calibrated FMR when the distance is below
    /// every calibrated threshold (an upper bound).
    pub estimated_fmr: f64,
}

fn legacy_selection() -> FaceSelection {
    FaceSelection::NearestCentre
}

fn invalid(name: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        name,
        message: message.into(),
    }
}

impl CalibrationTable {
    /// Parse a table saved as JSON (`uniface calibrate --out`).
    pub fn from_json(text: &str) -> Result<Self> {
        let t: Self = serde_json::from_str(text)
            .map_err(|e| invalid("calibration", format!("not a calibration table: {e}")))?;
        t.validate()?;
        Ok(t)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(invalid("calibration", m.to_owned()));
        if self.curve.is_empty() {
            return bad("empty curve");
        }
        if self
            .curve
            .iter()
            .any(|p| !(p.threshold.is_finite() && p.fmr.is_finite() && p.fmr > 0.0 && p.fmr <= 1.0))
        {
            return bad("curve holds a non-finite or out-of-range point");
        }
        if self
            .curve
            .windows(2)
            .any(|w| w[1].threshold < w[0].threshold || w[1].fmr < w[0].fmr)
        {
            return bad("curve is not increasing");
        }
        if self.rows.iter().any(|r| !r.threshold.is_finite()) {
            return bad("a row threshold is not finite");
        }
        Ok(())
    }

    /// The smallest FMR the table supports: at least [`MIN_FALSE_MATCHES`] impostor pairs must
    /// lie below a threshold for its FMR to be measured rather than guessed.
    pub fn min_fmr(&self) -> f64 {
        let first = self.curve.first().map_or(1.0, |p| p.fmr);
        match self.rows.first() {
            Some(r) if r.impostor_comparisons > 0 => {
                first.max(MIN_FALSE_MATCHES as f64 / r.impostor_comparisons as f64)
            }
            _ => first,
        }
    }

    /// Threshold for a target FMR: the table row when there is one, else interpolated
    /// (log-linearly in FMR) along the curve. Targets below [`CalibrationTable::min_fmr`]
    /// are refused: the data behind the table cannot support them.
    pub fn threshold_for_fmr(&self, fmr: f64) -> Result<f32> {
        if !(fmr.is_finite() && fmr > 0.0 && fmr <= 1.0) {
            return Err(invalid("fmr", format!("{fmr} is not in (0, 1]")));
        }
        // checked before the rows: a row is no better evidence than the curve it lies on
        let min = self.min_fmr();
        if fmr < min * (1.0 - 1e-9) {
            return Err(invalid(
                "fmr",
                format!(
                    "{fmr:.1e} is below {min:.1e}, the smallest false-match rate this calibration \
                     ({} impostor comparisons) supports",
                    self.rows.first().map_or(0, |r| r.impostor_comparisons)
                ),
            ));
        }
        if let Some(r) = self
            .rows
            .iter()
            .find(|r| (r.target_fmr - fmr).abs() <= fmr * 1e-9)
        {
            return Ok(r.threshold);
        }
        let i = self.curve.partition_point(|p| p.fmr < fmr);
        if i == 0 {
            return Ok(self.curve[0].threshold);
        }
        let Some(hi) = self.curve.get(i) else {
            return Ok(self.curve[self.curve.len() - 1].threshold);
        };
        let lo = self.curve[i - 1];
        let f = (fmr.ln() - lo.fmr.ln()) / (hi.fmr.ln() - lo.fmr.ln());
        Ok(lo.threshold + (f as f32) * (hi.threshold - lo.threshold))
    }

    /// FMR of a threshold placed at `distance` (see [`Decision::estimated_fmr`]).
    pub fn estimated_fmr(&self, distance: f32) -> f64 {
        let i = self.curve.partition_point(|p| p.threshold < distance);
        if i == 0 {
            return self.curve.first().map_or(1.0, |p| p.fmr);
        }
        let Some(hi) = self.curve.get(i) else {
            return 1.0;
        };
        let lo = self.curve[i - 1];
        if hi.threshold <= lo.threshold {
            return hi.fmr;
        }
        let f = f64::from((distance - lo.threshold) / (hi.threshold - lo.threshold));
        (lo.fmr.ln() + f * (hi.fmr.ln() - lo.fmr.ln())).exp()
    }

    /// Decide whether a pair at `distance` matches at the target FMR.
    pub fn decide(&self, distance: f32, fmr: f64) -> Result<Decision> {
        self.decide_best_of(distance, fmr, 1)
    }

    /// Decide on the best (smallest) of `comparisons` distances, e.g. a probe against each of
    /// a subject's templates, at a target FMR for the whole decision. The best of *m*
    /// impostor comparisons falls below a per-comparison threshold up to *m* times as often,
    /// so the threshold is the one for the per-comparison rate `1 − (1 − fmr)^(1/m)`
    /// (independent comparisons; a subject's templates are correlated, which makes the
    /// measured rate lower, never higher). Targets that per-comparison rate falls below the
    /// table's [`CalibrationTable::min_fmr`] for are refused.
    pub fn decide_best_of(&self, distance: f32, fmr: f64, comparisons: u32) -> Result<Decision> {
        if !distance.is_finite() {
            return Err(Error::NonFinite {
                what: "distance".into(),
            });
        }
        if comparisons == 0 {
            return Err(invalid(
                "comparisons",
                "a decision needs at least one comparison",
            ));
        }
        if !(fmr.is_finite() && fmr > 0.0 && fmr <= 1.0) {
            return Err(invalid("fmr", format!("{fmr} is not in (0, 1]")));
        }
        let m = f64::from(comparisons);
        let per_comparison = per_comparison_fmr(fmr, u64::from(comparisons))?;
        let threshold = self.threshold_for_fmr(per_comparison)?;
        let single = self.estimated_fmr(distance);
        Ok(Decision {
            distance,
            similarity: self.metric.similarity(distance),
            threshold,
            target_fmr: fmr,
            is_match: distance < threshold,
            comparisons,
            estimated_fmr: if comparisons == 1 {
                single
            } else {
                -(m * (-single).ln_1p()).exp_m1()
            },
        })
    }
}

/// The table as `uniface calibrate` prints it: counts, then one line per target.
impl std::fmt::Display for CalibrationTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} identities, {} photos; metric {:?}; faces: {}; match when distance < threshold",
            self.identities, self.images, self.metric, self.selection
        )?;
        write!(
            f,
            "{:>10} {:>10} {:>14} {:>12} {:>12} {:>10} {:>9}",
            "FMR", "threshold", "impostor", "false match", "genuine", "false non", "FNMR"
        )?;
        for r in &self.rows {
            write!(
                f,
                "\n{:>10.0e} {:>10.4} {:>14} {:>12} {:>12} {:>10} {:>9.4}",
                r.target_fmr,
                r.threshold,
                r.impostor_comparisons,
                r.false_matches,
                r.genuine_comparisons,
                r.false_non_matches,
                r.fnmr()
            )?;
        }
        Ok(())
    }
}

/// The table shipped for the default model (dlib ResNet, LFW; see the model card).
pub fn default_table() -> Result<&'static CalibrationTable> {
    static TABLE: OnceLock<std::result::Result<CalibrationTable, String>> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let json = crate::model_store::RESNET
            .calibration
            .ok_or_else(|| "the model card carries no calibration".to_owned())?;
        CalibrationTable::from_json(json).map_err(|e| e.to_string())
    });
    t.as_ref()
        .map_err(|e| invalid("calibration", format!("shipped table: {e}")))
}

/// Threshold for a target FMR from the shipped table.
pub fn threshold_for_fmr(fmr: f64) -> Result<f32> {
    default_table()?.threshold_for_fmr(fmr)
}

/// The per-comparison false-match rate that holds a result over `comparisons` independent
/// comparisons to the rate `total` for all of them together: 1 − (1 − total)^(1/comparisons)
/// (computed without cancellation for small rates). The one formula behind an FPIR target
/// spread over a gallery's templates and a subject verified against its best of m templates.
/// `total` must lie in (0, 1]; `comparisons` of 0 counts as 1.
pub fn per_comparison_fmr(total: f64, comparisons: u64) -> Result<f64> {
    if !(total.is_finite() && total > 0.0 && total <= 1.0) {
        return Err(invalid("fmr", format!("{total} is not in (0, 1]")));
    }
    if comparisons <= 1 {
        return Ok(total);
    }
    Ok(-((-total).ln_1p() / comparisons as f64).exp_m1())
}

/// A decision from the shipped table.
pub fn decide(distance: f32, fmr: f64) -> Result<Decision> {
    default_table()?.decide(distance, fmr)
}

/// Labelled descriptors to calibrate on.
pub struct LabelledSet<'a> {
    /// Row-major, `labels.len()` rows of `dim` values.
    pub vectors: &'a [f32],
    pub dim: usize,
    /// Identity of each row; equal labels are the same person.
    pub labels: &'a [u32],
}

/// What [`calibrate`] measured besides the table.
pub struct Calibration {
    pub table: CalibrationTable,
    /// Every genuine distance, sorted.
    pub genuine: Vec<f32>,
}

fn bin_of(d: f32) -> usize {
    let max = (HISTOGRAM_RANGE * BINS_PER_UNIT) as usize - 1;
    ((d.max(0.0) * BINS_PER_UNIT) as usize).min(max)
}

/// Every pair `(i, j)`, `i < j`, scored and passed to `visit(distance, same_identity)`,
/// folded per rayon task. `progress(k)` is called after each first index.
fn for_each_pair<A: Send>(
    m: &TemplateMatrix,
    set: &LabelledSet<'_>,
    metric: Metric,
    init: impl Fn() -> A + Sync + Send,
    visit: impl Fn(&mut A, f32, bool) + Sync + Send,
    merge: impl Fn(A, A) -> A + Sync + Send,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<A> {
    let n = set.labels.len();
    (0..n)
        .into_par_iter()
        .try_fold(
            || (init(), Vec::new()),
            |(mut acc, mut buf): (A, Vec<f32>), i| {
                buf.resize(n - i - 1, 0.0);
                let probe = &set.vectors[i * set.dim..(i + 1) * set.dim];
                m.distances_range_into(probe, metric, i + 1, &mut buf)?;
                for (k, &d) in buf.iter().enumerate() {
                    visit(&mut acc, d, set.labels[i] == set.labels[i + 1 + k]);
                }
                progress(1);
                Ok((acc, buf))
            },
        )
        .map(|r| r.map(|(a, _)| a))
        .try_reduce(&init, |a, b| Ok(merge(a, b)))
}

/// Measure a threshold table on labelled descriptors: every cross-identity pair is an impostor
/// comparison, every same-identity pair a genuine one. `targets` are the FMRs of the rows;
/// `progress(k)` reports `k` more of `labels.len()` rows done (each row is scored against every
/// later one, so the first rows are the slowest).
pub fn calibrate(
    set: &LabelledSet<'_>,
    metric: Metric,
    targets: &[f64],
    model_id: &str,
    selection: FaceSelection,
    method: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Calibration> {
    let n = set.labels.len();
    if set.vectors.len() != n * set.dim {
        return Err(Error::BufferLength {
            expected: n * set.dim,
            got: set.vectors.len(),
        });
    }
    if let Some(t) = targets
        .iter()
        .find(|t| !(t.is_finite() && **t > 0.0 && **t < 1.0))
    {
        return Err(invalid("targets", format!("{t} is not in (0, 1)")));
    }
    let mut m = TemplateMatrix::new(set.dim, ElementType::F32);
    m.reserve(n);
    for row in set.vectors.chunks_exact(set.dim.max(1)) {
        m.push(row)?;
    }
    // Pass 1: histogram of impostor distances and every genuine distance.
    let bins = (HISTOGRAM_RANGE * BINS_PER_UNIT) as usize;
    let (hist, mut genuine) = for_each_pair(
        &m,
        set,
        metric,
        || (vec![0u64; bins], Vec::new()),
        |(h, g), d, same| {
            if same {
                g.push(d);
            } else {
                h[bin_of(d)] += 1;
            }
        },
        |(mut ha, mut ga), (hb, gb)| {
            ha.iter_mut().zip(hb).for_each(|(a, b)| *a += b);
            ga.extend(gb);
            (ha, ga)
        },
        &|_| {},
    )?;
    let impostors: u64 = hist.iter().sum();
    if impostors == 0 || genuine.is_empty() {
        return Err(invalid(
            "labels",
            format!(
                "need at least two identities and one identity with two photos \
                 ({impostors} impostor and {} genuine pairs)",
                genuine.len()
            ),
        ));
    }
    genuine.sort_by(f32::total_cmp);
    // Pass 2: the exact lower tail of the impostor distances, as far as the largest target.
    let largest = targets.iter().copied().fold(1e-6, f64::max);
    let need = (largest * impostors as f64).floor() as u64 + 1;
    let mut cum = 0u64;
    let mut cutoff_bin = bins - 1;
    for (b, &c) in hist.iter().enumerate() {
        cum += c;
        if cum >= need {
            cutoff_bin = b;
            break;
        }
    }
    let mut tail = for_each_pair(
        &m,
        set,
        metric,
        Vec::new,
        |t: &mut Vec<f32>, d, same| {
            if !same && bin_of(d) <= cutoff_bin {
                t.push(d);
            }
        },
        |mut a, b| {
            a.extend(b);
            a
        },
        progress,
    )?;
    tail.sort_by(f32::total_cmp);
    // Threshold with exactly `m` impostors below it (from the tail, else the histogram).
    let threshold_for_count = |count: u64| -> f32 {
        let c = count as usize;
        if c < tail.len() {
            if c == 0 {
                return tail[0];
            }
            return (tail[c - 1] + tail[c]) / 2.0;
        }
        let mut cum = 0u64;
        for (b, &h) in hist.iter().enumerate() {
            cum += h;
            if cum >= count {
                return (b + 1) as f32 / BINS_PER_UNIT;
            }
        }
        HISTOGRAM_RANGE
    };
    let below = |t: f32, sorted: &[f32]| sorted.partition_point(|&d| d < t) as u64;
    let false_matches = |t: f32| -> u64 {
        if tail.last().is_some_and(|&l| t <= l) || tail.len() as u64 == impostors {
            below(t, &tail)
        } else {
            hist[..bin_of(t)].iter().sum()
        }
    };
    let mut sorted_targets = targets.to_vec();
    sorted_targets.sort_by(|a, b| b.total_cmp(a));
    let rows = sorted_targets
        .iter()
        .map(|&target| {
            let count = (target * impostors as f64).floor() as u64;
            let threshold = threshold_for_count(count);
            ThresholdRow {
                target_fmr: target,
                threshold,
                impostor_comparisons: impostors,
                false_matches: false_matches(threshold),
                genuine_comparisons: genuine.len() as u64,
                false_non_matches: genuine.len() as u64 - below(threshold, &genuine),
            }
        })
        .collect();
    let mut curve: Vec<CurvePoint> = Vec::new();
    let smallest = (1.0 / impostors as f64).log10();
    let first = (smallest * f64::from(CURVE_STEPS_PER_DECADE)).ceil() as i32;
    for k in first..=0 {
        let fmr = 10f64.powf(f64::from(k) / f64::from(CURVE_STEPS_PER_DECADE));
        let count = ((fmr * impostors as f64).floor() as u64).max(1);
        let threshold = threshold_for_count(count);
        let fmr = count as f64 / impostors as f64;
        if curve
            .last()
            .is_none_or(|p| threshold > p.threshold && fmr > p.fmr)
        {
            curve.push(CurvePoint { threshold, fmr });
        }
    }
    let identities = {
        let mut l = set.labels.to_vec();
        l.sort_unstable();
        l.dedup();
        l.len() as u64
    };
    Ok(Calibration {
        table: CalibrationTable {
            model_id: model_id.to_owned(),
            metric,
            selection,
            method: method.to_owned(),
            identities,
            images: n as u64,
            rows,
            curve,
        },
        genuine,
    })
}

/// Impostor and genuine counts of a labelled set at each threshold: `(false matches,
/// impostor pairs, false non-matches, genuine pairs)` per threshold (for held-out checks).
pub fn error_counts(
    set: &LabelledSet<'_>,
    metric: Metric,
    thresholds: &[f32],
) -> Result<Vec<(u64, u64, u64, u64)>> {
    let n = set.labels.len();
    let mut m = TemplateMatrix::new(set.dim, ElementType::F32);
    for row in set.vectors.chunks_exact(set.dim.max(1)) {
        m.push(row)?;
    }
    if m.len() != n {
        return Err(Error::BufferLength {
            expected: n * set.dim,
            got: set.vectors.len(),
        });
    }
    let k = thresholds.len();
    for_each_pair(
        &m,
        set,
        metric,
        || vec![(0u64, 0u64, 0u64, 0u64); k],
        |acc, d, same| {
            for (a, &t) in acc.iter_mut().zip(thresholds) {
                if same {
                    a.3 += 1;
                    a.2 += u64::from(d >= t);
                } else {
                    a.1 += 1;
                    a.0 += u64::from(d < t);
                }
            }
        },
        |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                *x = (x.0 + y.0, x.1 + y.1, x.2 + y.2, x.3 + y.3);
            }
            a
        },
        &|_| {},
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identities as noisy copies of random centres: impostor distances ≈ 1.4, genuine ≈ 0.4.
    fn synthetic(ids: usize, per: usize, dim: usize) -> (Vec<f32>, Vec<u32>) {
        let mut s = 7u64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let mut v = Vec::new();
        let mut l = Vec::new();
        for id in 0..ids {
            let centre: Vec<f32> = (0..dim).map(|_| next()).collect();
            for _ in 0..per {
                v.extend(centre.iter().map(|c| c + 0.3 * next()));
                l.push(id as u32);
            }
        }
        (v, l)
    }

    #[test]
    fn thresholds_give_exactly_the_counted_false_matches() {
        let (v, l) = synthetic(150, 4, 16);
        let set = LabelledSet {
            vectors: &v,
            dim: 16,
            labels: &l,
        };
        let c = calibrate(
            &set,
            Metric::Euclidean,
            &[1e-2, 1e-3, 1e-4],
            "test",
            FaceSelection::Largest,
            "synthetic",
            &|_| {},
        )
        .unwrap();
        let n = 600u64;
        let genuine = 150 * 6;
        let impostors = n * (n - 1) / 2 - genuine;
        let t = &c.table;
        assert_eq!(t.images, 600);
        assert_eq!(t.identities, 150);
        assert_eq!(t.rows.len(), 3);
        let thresholds: Vec<f32> = t.rows.iter().map(|r| r.threshold).collect();
        let counts = error_counts(&set, Metric::Euclidean, &thresholds).unwrap();
        for (r, cnt) in t.rows.iter().zip(&counts) {
            assert_eq!(r.impostor_comparisons, impostors);
            assert_eq!(r.genuine_comparisons, genuine);
            assert_eq!(
                r.false_matches,
                (r.target_fmr * impostors as f64).floor() as u64
            );
            // an independent recount agrees
            assert_eq!(
                *cnt,
                (r.false_matches, impostors, r.false_non_matches, genuine)
            );
        }
        assert!(thresholds.windows(2).all(|w| w[0] > w[1]));
        // rows and the curve agree; interpolation is monotone
        assert_eq!(t.threshold_for_fmr(1e-3).unwrap(), thresholds[1]);
        let mid = t.threshold_for_fmr(3e-3).unwrap();
        assert!(mid < thresholds[0] && mid > thresholds[1]);
        let e = t.estimated_fmr(thresholds[1]);
        assert!(e > 0.5e-3 && e < 2e-3, "{e}");
        // 10 false matches of 178,800 pairs is the least a target may rest on
        assert!(t.threshold_for_fmr(5e-5).is_err());
        assert!(t.threshold_for_fmr(6e-5).is_ok());
        assert!(t.threshold_for_fmr(f64::NAN).is_err());
        let back = CalibrationTable::from_json(&t.to_json()).unwrap();
        assert_eq!(&back, t);
    }

    #[test]
    fn decisions_follow_the_threshold() {
        let t = default_table().unwrap();
        assert_eq!(t.model_id, crate::model_store::RESNET.id);
        let th = t.threshold_for_fmr(1e-3).unwrap();
        let yes = t.decide(th - 1e-3, 1e-3).unwrap();
        let no = t.decide(th + 1e-3, 1e-3).unwrap();
        assert!(yes.is_match && !no.is_match);
        assert!(yes.estimated_fmr <= no.estimated_fmr);
        assert!(
            (no.estimated_fmr / 1e-3 - 1.0).abs() < 0.2,
            "{}",
            no.estimated_fmr
        );
        assert!(t.decide(f32::NAN, 1e-3).is_err());
        assert!(t.decide(0.5, 0.0).is_err());
        // stricter targets give smaller thresholds
        let ths: Vec<f32> = STANDARD_FMRS
            .iter()
            .map(|&f| t.threshold_for_fmr(f).unwrap())
            .collect();
        assert!(ths.windows(2).all(|w| w[0] > w[1]), "{ths:?}");
    }

    #[test]
    fn the_shipped_table_carries_its_evidence() {
        let t = default_table().unwrap();
        assert_eq!(t.images, 7701);
        assert_eq!(t.identities, 4281);
        assert!(t.method.contains("LFW") && t.method.contains("uniface calibrate"));
        let targets: Vec<f64> = t.rows.iter().map(|r| r.target_fmr).collect();
        assert_eq!(targets, STANDARD_FMRS);
        let n = t.images;
        for r in &t.rows {
            // every pair of the photos is either impostor or genuine
            assert_eq!(
                r.impostor_comparisons + r.genuine_comparisons,
                n * (n - 1) / 2
            );
            // at most ⌊FMR × N⌋ below the threshold; fewer only where distances tie at it
            let allowed = (r.target_fmr * r.impostor_comparisons as f64).floor() as u64;
            assert!(
                r.false_matches <= allowed && r.false_matches + 3 >= allowed,
                "{r:?}"
            );
            assert!(r.measured_fmr() <= r.target_fmr);
            assert!(r.false_matches >= MIN_FALSE_MATCHES, "{r:?}");
        }
        // 1e-6 of 29.6 M impostor pairs is still 29 false matches
        assert!(t.min_fmr() <= 1e-6);
    }

    #[test]
    fn a_row_is_no_exception_to_the_smallest_supported_fmr() {
        // 60 photos of 30 identities: 1,740 impostor pairs, so 10 false matches need FMR
        // 10/1740 ≈ 5.7e-3; a 1e-6 row exists but rests on no false match at all
        let (v, l) = synthetic(30, 2, 8);
        let set = LabelledSet {
            vectors: &v,
            dim: 8,
            labels: &l,
        };
        let t = calibrate(
            &set,
            Metric::Euclidean,
            &STANDARD_FMRS,
            "",
            FaceSelection::Largest,
            "",
            &|_| {},
        )
        .unwrap()
        .table;
        assert_eq!(t.rows[0].impostor_comparisons, 1740);
        assert!(t.rows.iter().any(|r| r.target_fmr == 1e-6));
        assert!((t.min_fmr() - 10.0 / 1740.0).abs() < 1e-12);
        for fmr in [1e-3, 1e-4, 1e-5, 1e-6] {
            assert!(t.threshold_for_fmr(fmr).is_err(), "{fmr}");
        }
        assert!(t.threshold_for_fmr(1e-2).is_ok());
    }

    #[test]
    fn the_best_of_m_comparisons_is_held_to_the_whole_target() {
        let t = default_table().unwrap();
        let one = t.decide(0.5, 1e-3).unwrap();
        assert_eq!(one.comparisons, 1);
        let five = t.decide_best_of(0.5, 1e-3, 5).unwrap();
        let per = -((-1e-3f64).ln_1p() / 5.0).exp_m1();
        assert!((per - 2.0005e-4).abs() < 1e-7, "{per}");
        assert_eq!(five.threshold, t.threshold_for_fmr(per).unwrap());
        assert!(five.threshold < one.threshold);
        assert_eq!((five.comparisons, five.target_fmr), (5, 1e-3));
        // the estimate is for the best of five: 1 − (1 − e)^5 ≈ 5e for small e
        let e = t.estimated_fmr(0.5);
        assert!((five.estimated_fmr - (1.0 - (1.0 - e).powi(5))).abs() < 1e-12);
        assert!(t.decide_best_of(0.5, 1e-3, 0).is_err());
        // a target whose per-comparison share the table cannot support is refused
        assert!(t.decide_best_of(0.5, 1e-6, 10).is_err());
        assert_eq!(t.selection, FaceSelection::NearestCentre);
    }

    #[test]
    fn malformed_tables_are_refused() {
        assert!(CalibrationTable::from_json("{}").is_err());
        let t = default_table().unwrap();
        let mut bad = t.clone();
        bad.curve.reverse();
        assert!(CalibrationTable::from_json(&bad.to_json()).is_err());
    }

    #[test]
    fn a_total_rate_spreads_over_comparisons_without_cancellation() {
        assert_eq!(per_comparison_fmr(1e-2, 1).unwrap(), 1e-2);
        assert_eq!(per_comparison_fmr(1e-2, 0).unwrap(), 1e-2);
        // (1 − p)^n = 1 − total, checked where the naive formula is still accurate
        let p = per_comparison_fmr(0.3, 7).unwrap();
        assert!(((1.0 - p).powi(7) - 0.7).abs() < 1e-12, "{p}");
        // far below f64's epsilon the naive 1 − (1 − t)^(1/n) is 0; this stays t/n to 1e-9
        let p = per_comparison_fmr(1e-18, 1_000_000).unwrap();
        assert!((p / 1e-24 - 1.0).abs() < 1e-9, "{p}");
        for bad in [0.0, -1e-3, 1.5, f64::NAN, f64::INFINITY] {
            assert!(per_comparison_fmr(bad, 10).is_err(), "{bad}");
        }
    }
}
