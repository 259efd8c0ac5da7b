//! Error-versus-discard characteristic (ISO/IEC 29794-1): how the false-non-match rate falls
//! as the lowest-quality comparisons are discarded.

/// FNMR at `threshold` after discarding the lowest-quality fraction of the genuine pairs, at
/// each of `fractions`. `pairs` are `(pair quality, distance)` sorted by quality, lowest
/// first; a pair is a non-match when its distance is at or above the threshold.
pub fn edc(pairs: &[(f32, f32)], threshold: f32, fractions: &[f64]) -> Vec<f64> {
    fractions
        .iter()
        .map(|&f| {
            let skip = ((f * pairs.len() as f64).round() as usize).min(pairs.len());
            let kept = &pairs[skip..];
            kept.iter().filter(|p| p.1 >= threshold).count() as f64 / kept.len().max(1) as f64
        })
        .collect()
}

/// The EDC of `(quality, distance)` pairs in any order (sorted here by quality).
pub fn edc_by(mut pairs: Vec<(f32, f32)>, threshold: f32, fractions: &[f64]) -> Vec<f64> {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    edc(&pairs, threshold, fractions)
}

/// The EDC of a quality score that knows nothing: the mean over `rounds` seeded random
/// orders (xorshift64 from `seed`), the baseline a quality measure must beat.
pub fn random_edc(
    distances: &[f32],
    threshold: f32,
    fractions: &[f64],
    rounds: u32,
    seed: u64,
) -> Vec<f64> {
    let mut out = vec![0f64; fractions.len()];
    let mut rng = seed;
    for _ in 0..rounds {
        let v: Vec<(f32, f32)> = distances
            .iter()
            .map(|&d| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                ((rng >> 40) as f32, d)
            })
            .collect();
        for (acc, f) in out.iter_mut().zip(edc_by(v, threshold, fractions)) {
            *acc += f / f64::from(rounds);
        }
    }
    out
}

/// Trapezoid area under `(fractions, fnmr)` from the first fraction up to `upto`.
pub fn partial_area(fractions: &[f64], fnmr: &[f64], upto: f64) -> f64 {
    let mut area = 0.0;
    for i in 1..fractions.len().min(fnmr.len()) {
        if fractions[i] > upto + 1e-12 {
            break;
        }
        area += (fractions[i] - fractions[i - 1]) * (fnmr[i] + fnmr[i - 1]) / 2.0;
    }
    area
}

/// The 1, 5, 50, 95 and 99 % quantiles (nearest rank) of `v`; NaN for an empty `v`.
pub fn quantiles(mut v: Vec<f32>) -> [f32; 5] {
    v.sort_by(f32::total_cmp);
    let q = |p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f32::NAN)
    };
    [q(0.01), q(0.05), q(0.5), q(0.95), q(0.99)]
}

/// The quantile levels of [`quantiles`].
pub const QUANTILE_LEVELS: [f64; 5] = [0.01, 0.05, 0.5, 0.95, 0.99];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discarding_the_worst_pairs_by_hand() {
        // qualities 1..=4, the two worst pairs are the non-matches (distance ≥ 0.5)
        let pairs = [(1.0, 0.9), (2.0, 0.6), (3.0, 0.1), (4.0, 0.2)];
        let f = [0.0, 0.25, 0.5, 0.75];
        assert_eq!(edc(&pairs, 0.5, &f), [0.5, 1.0 / 3.0, 0.0, 0.0]);
        // area over [0, 0.5]: (0.5 + 1/3)/2 × 0.25 + (1/3 + 0)/2 × 0.25
        let a = partial_area(&f, &edc(&pairs, 0.5, &f), 0.5);
        assert!((a - (0.5 + 2.0 / 3.0) / 8.0).abs() < 1e-12, "{a}");
        // a random order keeps the FNMR near the overall 0.5
        let r = random_edc(&[0.9, 0.6, 0.1, 0.2], 0.5, &f, 2000, 7);
        assert!(
            (r[0] - 0.5).abs() < 1e-12 && (r[2] - 0.5).abs() < 0.05,
            "{r:?}"
        );
        let q = quantiles((1..=101).map(|i| i as f32).collect());
        assert_eq!(q, [2.0, 6.0, 51.0, 96.0, 100.0]);
        assert!(quantiles(Vec::new())[0].is_nan());
    }
}
