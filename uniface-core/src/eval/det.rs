//! DET (detection error trade-off) over every pair of a labelled set.

use serde::Serialize;

use crate::calibration::{self, LabelledSet, STANDARD_FMRS};
use crate::compare::Metric;
use crate::detect::FaceSelection;
use crate::Result;

/// One point: the threshold and both error rates there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DetPoint {
    pub threshold: f64,
    pub fmr: f64,
    pub fnmr: f64,
}

/// A DET curve with the pair counts behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetCurve {
    /// By increasing threshold (and FMR).
    pub points: Vec<DetPoint>,
    pub impostor_pairs: u64,
    pub genuine_pairs: u64,
}

/// The DET of every pair of `set`: cross-identity pairs are impostors, same-identity pairs
/// genuine. The points are the thresholds of a calibration curve (10 per decade of FMR, from
/// one impostor pair below the threshold to all of them).
pub fn det_curve(set: &LabelledSet<'_>, metric: Metric) -> Result<DetCurve> {
    let c = calibration::calibrate(
        set,
        metric,
        &STANDARD_FMRS,
        "",
        FaceSelection::default(),
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
            DetPoint {
                threshold: f64::from(p.threshold),
                fmr: p.fmr,
                fnmr: (genuine - accepted) as f64 / genuine.max(1) as f64,
            }
        })
        .collect();
    Ok(DetCurve {
        points,
        impostor_pairs: impostors,
        genuine_pairs: genuine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_four_photo_det_by_hand() {
        // 1-d points: A at 0 and 0.1, B at 1 and 1.3. Genuine 0.1, 0.3; impostor 0.7, 0.9,
        // 1.0, 1.2.
        let v = [0.0f32, 0.1, 1.0, 1.3];
        let l = [0, 0, 1, 1];
        let set = LabelledSet {
            vectors: &v,
            dim: 1,
            labels: &l,
        };
        let det = det_curve(&set, Metric::Euclidean).unwrap();
        assert_eq!((det.impostor_pairs, det.genuine_pairs), (4, 2));
        let fmrs: Vec<f64> = det.points.iter().map(|p| p.fmr).collect();
        assert_eq!(fmrs, [0.25, 0.5, 0.75, 1.0]);
        // every genuine pair lies below the smallest impostor distance: FNMR 0 throughout
        assert!(det.points.iter().all(|p| p.fnmr == 0.0));
        assert!(det
            .points
            .windows(2)
            .all(|w| w[0].threshold < w[1].threshold));
    }
}
