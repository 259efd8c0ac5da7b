//! How well a clustering matches the true identities: pairwise and BCubed precision, recall
//! and F (Amigó et al. 2009), the measures face-clustering papers report.

use std::collections::HashMap;

use serde::Serialize;

/// Precision, recall and their harmonic mean F.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClusterScores {
    pub precision: f64,
    pub recall: f64,
    pub f: f64,
}

impl ClusterScores {
    fn new(precision: f64, recall: f64) -> Self {
        let f = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            f,
        }
    }
}

/// Sizes of each (cluster, class) cell, each cluster and each class.
struct Counts {
    cells: HashMap<(u32, u32), u64>,
    clusters: HashMap<u32, u64>,
    classes: HashMap<u32, u64>,
}

fn counts(truth: &[u32], predicted: &[u32]) -> Counts {
    let mut c = Counts {
        cells: HashMap::new(),
        clusters: HashMap::new(),
        classes: HashMap::new(),
    };
    for (&t, &p) in truth.iter().zip(predicted) {
        *c.cells.entry((p, t)).or_default() += 1;
        *c.clusters.entry(p).or_default() += 1;
        *c.classes.entry(t).or_default() += 1;
    }
    c
}

fn pairs(n: u64) -> f64 {
    (n * n.saturating_sub(1) / 2) as f64
}

/// Pairwise scores: of the pairs put in one cluster, the share of one identity (precision);
/// of the pairs of one identity, the share put in one cluster (recall). A clustering of
/// singletons has precision 1. `truth` and `predicted` label the same items in order (extra
/// items of the longer are ignored).
pub fn pairwise(truth: &[u32], predicted: &[u32]) -> ClusterScores {
    let c = counts(truth, predicted);
    let together: f64 = c.cells.values().map(|&n| pairs(n)).sum();
    let clustered: f64 = c.clusters.values().map(|&n| pairs(n)).sum();
    let same: f64 = c.classes.values().map(|&n| pairs(n)).sum();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 1.0 };
    ClusterScores::new(ratio(together, clustered), ratio(together, same))
}

/// BCubed scores: for each item, the share of its cluster that is of its identity
/// (precision) and the share of its identity that is in its cluster (recall), averaged
/// over the items.
pub fn bcubed(truth: &[u32], predicted: &[u32]) -> ClusterScores {
    let c = counts(truth, predicted);
    let n = truth.len().min(predicted.len());
    if n == 0 {
        return ClusterScores::new(1.0, 1.0);
    }
    let (mut p, mut r) = (0f64, 0f64);
    for (&(cluster, class), &cell) in &c.cells {
        // each of the `cell` items contributes cell / |cluster| and cell / |class|
        let cell = cell as f64;
        p += cell * cell / c.clusters[&cluster] as f64;
        r += cell * cell / c.classes[&class] as f64;
    }
    ClusterScores::new(p / n as f64, r / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_clustering_scores_one_whatever_its_ids() {
        let truth = [0, 0, 1, 1, 1, 2];
        let predicted = [7, 7, 3, 3, 3, 9];
        for s in [pairwise(&truth, &predicted), bcubed(&truth, &predicted)] {
            assert_eq!((s.precision, s.recall, s.f), (1.0, 1.0, 1.0));
        }
    }

    #[test]
    fn scores_by_hand() {
        // classes {a a a b}, clusters {x x} {x b}: one wrong item in the second cluster
        let truth = [0, 0, 0, 1];
        let predicted = [0, 0, 1, 1];
        let pw = pairwise(&truth, &predicted);
        // pairs together: 1 (both of cluster 0); clustered pairs: 2; same pairs: 3
        assert_eq!((pw.precision, pw.recall), (0.5, 1.0 / 3.0));
        let b = bcubed(&truth, &predicted);
        // precision: 1, 1, 1/2, 1/2 → 0.75; recall: 2/3, 2/3, 1/3, 1 → 2/3
        assert!((b.precision - 0.75).abs() < 1e-12);
        assert!((b.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((b.f - 2.0 * 0.75 * (2.0 / 3.0) / (0.75 + 2.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn singletons_are_precise_and_one_cluster_recalls_everything() {
        let truth = [0, 0, 1, 1];
        let single = pairwise(&truth, &[0, 1, 2, 3]);
        assert_eq!((single.precision, single.recall), (1.0, 0.0));
        let one = bcubed(&truth, &[0, 0, 0, 0]);
        assert_eq!((one.precision, one.recall), (0.5, 1.0));
    }
}
