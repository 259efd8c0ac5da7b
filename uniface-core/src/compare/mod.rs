//! Comparing descriptors: 1:1 distances, a bounded similarity score, and 1:N scoring of one
//! probe against a contiguous matrix of templates stored as f32, f16 or i8.
//!
//! # Metrics and the similarity range
//!
//! The dlib ResNet was trained with a margin on the **Euclidean** distance (pairs closer than
//! 0.6 are the same person), so [`Metric::Euclidean`] is the default. [`Metric::Cosine`]
//! measures `1 − cos θ`. Both are distances in `[0, 2]` for unit-length vectors, and both map to
//! the same **similarity** `S = 1 − d / 2` clamped to `[0, 1]`: 1 for identical vectors, 0.5
//! for orthogonal ones, 0 for opposite ones. dlib's 0.6 threshold is similarity 0.7. The
//! thresholds that carry a false-match rate are in [`crate::calibration`].
//!
//! # 1:N scoring
//!
//! [`TemplateMatrix`] keeps every template in one contiguous buffer (row-major, one row per
//! template) so that scoring streams memory at close to the machine's read bandwidth. The
//! inner loops are compiled for the CPU found at run time (AVX2 + FMA on current x86) and give
//! bit-identical results on every path. Rows are scored in parallel on the rayon pool.
//!
//! - **f32** rows score exactly like [`euclidean`] / [`cosine_distance`].
//! - **f16** rows are widened in registers; the result equals scoring the widened vector.
//! - **i8** rows use symmetric per-template quantisation (`value = q × scale`, `scale =
//!   max |v| / 127`), the same as [`Template::converted`]. The probe is quantised the same way
//!   and the dot product runs in exact integer arithmetic; the distance returned is the one
//!   between the two dequantised vectors, up to f32 rounding.
//!
//! ```
//! use uniface_core::compare::{Metric, TemplateMatrix};
//! use uniface_core::template::ElementType;
//! # fn main() -> uniface_core::Result<()> {
//! let mut gallery = TemplateMatrix::new(3, ElementType::I8);
//! gallery.push(&[0.6, 0.8, 0.0])?;
//! gallery.push(&[0.0, 0.6, 0.8])?;
//! let best = gallery.nearest(&[0.0, 0.8, 0.6], Metric::Euclidean, 1)?;
//! assert_eq!(best[0].index, 1);
//! assert!(best[0].distance < 0.3);
//! # Ok(()) }
//! ```

mod kernels;

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::template::{quantize_i8, ElementType, ModelFingerprint, Template};
use crate::{Error, Result};

/// Rows scored per parallel task: large enough to amortise scheduling, small enough to
/// balance (4096 f32 rows of 128 values are 2 MiB).
const ROWS_PER_TASK: usize = 4096;

/// How two descriptors are compared.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// ‖a − b‖, the distance the dlib model was trained for.
    #[default]
    Euclidean,
    /// 1 − a·b / (‖a‖ ‖b‖); 1 when either vector is zero.
    Cosine,
}

impl Metric {
    /// The similarity in `[0, 1]` of a distance under this metric (`1 − d / 2`, clamped).
    pub fn similarity(self, distance: f32) -> f32 {
        (1.0 - distance / 2.0).clamp(0.0, 1.0)
    }

    /// The distance whose similarity is `similarity` (inverse of [`Metric::similarity`]
    /// inside `[0, 1]`).
    pub fn distance_for_similarity(self, similarity: f32) -> f32 {
        2.0 * (1.0 - similarity.clamp(0.0, 1.0))
    }

    fn combine(self, squared: f32, dot: f32, norm_a: f32, norm_b: f32) -> f32 {
        match self {
            Metric::Euclidean => squared.max(0.0).sqrt(),
            Metric::Cosine => cosine_from_dot(dot, norm_a, norm_b),
        }
    }
}

fn cosine_from_dot(dot: f32, norm_a: f32, norm_b: f32) -> f32 {
    let denom = norm_a * norm_b;
    if denom > 0.0 {
        (1.0 - dot / denom).clamp(0.0, 2.0)
    } else {
        1.0
    }
}

fn check_pair(a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::BufferLength {
            expected: a.len(),
            got: b.len(),
        });
    }
    Ok(())
}

fn check_finite(what: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::NonFinite {
            what: format!("{what} value {i}"),
        }),
        None => Ok(()),
    }
}

/// Euclidean distance between two equal-length vectors.
pub fn euclidean(a: &[f32], b: &[f32]) -> Result<f32> {
    check_pair(a, b)?;
    let d = pulp::Arch::new().dispatch(|| kernels::squared_difference(a, b).sqrt());
    finite_result(d, a, b)
}

/// Cosine distance `1 − cos θ` in `[0, 2]` between two equal-length vectors.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> Result<f32> {
    check_pair(a, b)?;
    let d = pulp::Arch::new().dispatch(|| {
        cosine_from_dot(
            kernels::dot(a, b),
            kernels::dot(a, a).sqrt(),
            kernels::dot(b, b).sqrt(),
        )
    });
    finite_result(d, a, b)
}

/// Distance under `metric`.
pub fn distance(metric: Metric, a: &[f32], b: &[f32]) -> Result<f32> {
    match metric {
        Metric::Euclidean => euclidean(a, b),
        Metric::Cosine => cosine_distance(a, b),
    }
}

fn finite_result(d: f32, a: &[f32], b: &[f32]) -> Result<f32> {
    if d.is_finite() {
        return Ok(d);
    }
    check_finite("first vector", a)?;
    check_finite("second vector", b)?;
    Err(Error::NonFinite {
        what: "distance (values too large)".into(),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Rows {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    I8 { values: Vec<i8>, scales: Vec<f32> },
}

#[inline(always)]
fn score_f32<'r>(
    probe: &[f32],
    probe_norm: f32,
    rows: impl Iterator<Item = &'r [f32]>,
    norms: &[f32],
    metric: Metric,
    out: &mut [f32],
) {
    for ((o, row), &n) in out.iter_mut().zip(rows).zip(norms) {
        *o = match metric {
            Metric::Euclidean => kernels::squared_difference(probe, row).sqrt(),
            Metric::Cosine => cosine_from_dot(kernels::dot(probe, row), probe_norm, n),
        };
    }
}

/// One entry of a nearest-neighbour answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// Row of the matrix.
    pub index: usize,
    pub distance: f32,
}

/// Many templates of one dimension in one contiguous buffer, for fast 1:N scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateMatrix {
    dim: usize,
    fingerprint: Option<ModelFingerprint>,
    rows: Rows,
    /// Euclidean norm of each (dequantised) row.
    norms: Vec<f32>,
}

/// The probe in the form each storage type scores against.
struct Probe {
    values: Vec<f32>,
    norm: f32,
    /// i8 matrices: the quantised probe widened to i16, and its scale.
    quantized: Option<(Vec<i16>, f32)>,
}

fn widen_i8(q: &[i8]) -> Vec<i16> {
    q.iter().map(|&x| i16::from(x)).collect()
}

/// One scoring task, run through [`pulp::Arch::dispatch`] so that the inlined kernels are
/// compiled for the CPU's widest vector unit.
struct ScoreTask<'a> {
    matrix: &'a TemplateMatrix,
    probe: &'a Probe,
    metric: Metric,
    start: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for ScoreTask<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.matrix
            .score_rows_inline(self.probe, self.metric, self.start, self.out);
    }
}

impl TemplateMatrix {
    /// An empty matrix of `dim`-dimensional rows stored as `element`.
    pub fn new(dim: usize, element: ElementType) -> Self {
        let rows = match element {
            ElementType::F32 => Rows::F32(Vec::new()),
            ElementType::F16 => Rows::F16(Vec::new()),
            ElementType::I8 => Rows::I8 {
                values: Vec::new(),
                scales: Vec::new(),
            },
        };
        Self {
            dim,
            fingerprint: None,
            rows,
            norms: Vec::new(),
        }
    }

    /// A matrix of `templates` (all of one fingerprint and dimension) stored as `element`.
    pub fn from_templates(templates: &[Template], element: ElementType) -> Result<Self> {
        let dim = templates.first().map_or(0, Template::dimension);
        let mut m = Self::new(dim, element);
        // (reserved only when every template has the first one's dimension; else `push`
        // reports the odd one)
        if templates.iter().all(|t| t.dimension() == dim) {
            m.reserve(templates.len());
        }
        for t in templates {
            m.push_template(t)?;
        }
        Ok(m)
    }

    /// Reserve room for `additional` more rows.
    pub fn reserve(&mut self, additional: usize) {
        // (a hint: a size past the address space reserves nothing rather than overflowing)
        let Some(n) = additional.checked_mul(self.dim) else {
            return;
        };
        match &mut self.rows {
            Rows::F32(v) => v.reserve(n),
            Rows::F16(v) => v.reserve(n),
            Rows::I8 { values, scales } => {
                values.reserve(n);
                scales.reserve(additional);
            }
        }
        self.norms.reserve(additional);
    }

    /// Append a vector (converted to the storage type); returns its row.
    pub fn push(&mut self, vector: &[f32]) -> Result<usize> {
        if vector.len() != self.dim {
            return Err(Error::BufferLength {
                expected: self.dim,
                got: vector.len(),
            });
        }
        check_finite("template", vector)?;
        let norm = match &mut self.rows {
            Rows::F32(v) => {
                v.extend_from_slice(vector);
                kernels::dot(vector, vector).sqrt()
            }
            Rows::F16(v) => {
                if let Some(i) = vector
                    .iter()
                    .position(|x| x.abs() > f32::from(half::f16::MAX))
                {
                    return Err(Error::NonFinite {
                        what: format!("template value {i} overflows f16"),
                    });
                }
                let start = v.len();
                v.extend(vector.iter().map(|&x| half::f16::from_f32(x)));
                let mut wide = vec![0f32; self.dim];
                v[start..].convert_to_f32_slice(&mut wide);
                kernels::dot(&wide, &wide).sqrt()
            }
            Rows::I8 { values, scales } => {
                let (q, scale) = quantize_i8(vector);
                let sq = kernels::dot_i8(&widen_i8(&q), &q) as f32;
                values.extend_from_slice(&q);
                scales.push(scale);
                sq.sqrt() * scale
            }
        };
        self.norms.push(norm);
        Ok(self.norms.len() - 1)
    }

    /// Append a template; every template of a matrix must share one fingerprint.
    pub fn push_template(&mut self, template: &Template) -> Result<usize> {
        match &self.fingerprint {
            Some(f) if f != template.fingerprint() => {
                return Err(Error::FingerprintMismatch {
                    left: f.model_id.clone(),
                    right: template.fingerprint().model_id.clone(),
                })
            }
            _ => {}
        }
        let row = self.push(&template.vector())?;
        self.fingerprint = Some(template.fingerprint().clone());
        Ok(row)
    }

    /// Remove row `i` by moving the last row into its place (O(dim)); returns the index the
    /// moved row had (the old last row), or `None` when `i` is past the end.
    pub fn swap_remove(&mut self, i: usize) -> Option<usize> {
        let n = self.len();
        if i >= n {
            return None;
        }
        let d = self.dim;
        let last = n - 1;
        fn move_row<T: Copy>(v: &mut Vec<T>, i: usize, last: usize, d: usize) {
            if i != last {
                v.copy_within(last * d..(last + 1) * d, i * d);
            }
            v.truncate(last * d);
        }
        match &mut self.rows {
            Rows::F32(v) => move_row(v, i, last, d),
            Rows::F16(v) => move_row(v, i, last, d),
            Rows::I8 { values, scales } => {
                move_row(values, i, last, d);
                scales.swap_remove(i);
            }
        }
        self.norms.swap_remove(i);
        Some(last)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.norms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.norms.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The fingerprint of the templates pushed with [`TemplateMatrix::push_template`].
    pub fn fingerprint(&self) -> Option<&ModelFingerprint> {
        self.fingerprint.as_ref()
    }

    pub fn element_type(&self) -> ElementType {
        match self.rows {
            Rows::F32(_) => ElementType::F32,
            Rows::F16(_) => ElementType::F16,
            Rows::I8 { .. } => ElementType::I8,
        }
    }

    /// Bytes of template data one probe reads per row under `metric` (vector, plus the i8
    /// scale and the row norm where the metric needs them). Throughput × this is the memory
    /// bandwidth used.
    pub fn bytes_read_per_row(&self, metric: Metric) -> usize {
        match (&self.rows, metric) {
            (Rows::F32(_), Metric::Euclidean) => 4 * self.dim,
            (Rows::F32(_), Metric::Cosine) => 4 * self.dim + 4,
            (Rows::F16(_), Metric::Euclidean) => 2 * self.dim,
            (Rows::F16(_), Metric::Cosine) => 2 * self.dim + 4,
            (Rows::I8 { .. }, _) => self.dim + 8,
        }
    }

    /// Row `i` as f32 (dequantised), or `None` past the end.
    pub fn row(&self, i: usize) -> Option<Vec<f32>> {
        if i >= self.len() {
            return None;
        }
        let r = i * self.dim..(i + 1) * self.dim;
        Some(match &self.rows {
            Rows::F32(v) => v[r].to_vec(),
            Rows::F16(v) => {
                let mut out = vec![0f32; self.dim];
                v[r].convert_to_f32_slice(&mut out);
                out
            }
            Rows::I8 { values, scales } => values[r]
                .iter()
                .map(|&q| f32::from(q) * scales[i])
                .collect(),
        })
    }

    fn prepare(&self, probe: &[f32]) -> Result<Probe> {
        if probe.len() != self.dim {
            return Err(Error::BufferLength {
                expected: self.dim,
                got: probe.len(),
            });
        }
        check_finite("probe", probe)?;
        Ok(match self.rows {
            Rows::I8 { .. } => {
                let (q, scale) = quantize_i8(probe);
                let values: Vec<f32> = q.iter().map(|&x| f32::from(x) * scale).collect();
                let wide = widen_i8(&q);
                let norm = (kernels::dot_i8(&wide, &q) as f32).sqrt() * scale;
                Probe {
                    values,
                    norm,
                    quantized: Some((wide, scale)),
                }
            }
            _ => Probe {
                norm: kernels::dot(probe, probe).sqrt(),
                values: probe.to_vec(),
                quantized: None,
            },
        })
    }

    /// Score rows `start..start + out.len()` with the best instruction set available.
    fn score_rows(&self, p: &Probe, metric: Metric, start: usize, out: &mut [f32]) {
        pulp::Arch::new().dispatch(ScoreTask {
            matrix: self,
            probe: p,
            metric,
            start,
            out,
        });
    }

    #[inline(always)]
    fn score_rows_inline(&self, p: &Probe, metric: Metric, start: usize, out: &mut [f32]) {
        let d = self.dim;
        let n = out.len();
        let norms = &self.norms[start..start + n];
        match &self.rows {
            Rows::F32(v) => {
                let rows = v[start * d..(start + n) * d].chunks_exact(d);
                score_f32(&p.values, p.norm, rows, norms, metric, out);
            }
            Rows::F16(v) => {
                let rows = v[start * d..(start + n) * d].chunks_exact(d);
                for ((o, row), &norm) in out.iter_mut().zip(rows).zip(norms) {
                    *o = match metric {
                        Metric::Euclidean => kernels::squared_difference_f16(&p.values, row).sqrt(),
                        Metric::Cosine => {
                            cosine_from_dot(kernels::dot_f16(&p.values, row), p.norm, norm)
                        }
                    };
                }
            }
            Rows::I8 { values, scales } => {
                let Some((q, sp)) = &p.quantized else {
                    return;
                };
                let rows = &values[start * d..(start + n) * d];
                let scales = &scales[start..start + n];
                let finish = |dot: i32, norm: f32, s: f32| {
                    let dot = dot as f32 * (sp * s);
                    let squared = p.norm * p.norm + norm * norm - 2.0 * dot;
                    metric.combine(squared, dot, p.norm, norm)
                };
                for (j, o) in out.iter_mut().enumerate() {
                    let dot = kernels::dot_i8(q, &rows[j * d..(j + 1) * d]);
                    *o = finish(dot, norms[j], scales[j]);
                }
            }
        }
    }

    /// Distances from `probe` to rows `start..start + out.len()`, on the calling thread.
    pub fn distances_range_into(
        &self,
        probe: &[f32],
        metric: Metric,
        start: usize,
        out: &mut [f32],
    ) -> Result<()> {
        if start + out.len() > self.len() {
            return Err(Error::BufferLength {
                expected: self.len().saturating_sub(start),
                got: out.len(),
            });
        }
        let p = self.prepare(probe)?;
        self.score_rows(&p, metric, start, out);
        Ok(())
    }

    /// Distance from `probe` to every row, written into `out` (length [`TemplateMatrix::len`]).
    /// Runs on the current rayon pool.
    pub fn distances_into(&self, probe: &[f32], metric: Metric, out: &mut [f32]) -> Result<()> {
        if out.len() != self.len() {
            return Err(Error::BufferLength {
                expected: self.len(),
                got: out.len(),
            });
        }
        let p = self.prepare(probe)?;
        out.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(i, o)| self.score_rows(&p, metric, i * ROWS_PER_TASK, o));
        Ok(())
    }

    /// Distance from `probe` to every row.
    pub fn distances(&self, probe: &[f32], metric: Metric) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.len()];
        self.distances_into(probe, metric, &mut out)?;
        Ok(out)
    }

    /// Distances from a probe template, refusing one of another fingerprint.
    pub fn distances_to(&self, probe: &Template, metric: Metric) -> Result<Vec<f32>> {
        if let Some(f) = &self.fingerprint {
            if f != probe.fingerprint() {
                return Err(Error::FingerprintMismatch {
                    left: f.model_id.clone(),
                    right: probe.fingerprint().model_id.clone(),
                });
            }
        }
        self.distances(&probe.vector(), metric)
    }

    /// The `k` rows nearest to `probe`, nearest first (ties by row).
    pub fn nearest(&self, probe: &[f32], metric: Metric, k: usize) -> Result<Vec<Neighbor>> {
        let distances = self.distances(probe, metric)?;
        let k = k.min(distances.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let order = |a: &usize, b: &usize| {
            distances[*a]
                .total_cmp(&distances[*b])
                .then_with(|| a.cmp(b))
        };
        let mut idx: Vec<usize> = (0..distances.len()).collect();
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
        idx.sort_unstable_by(order);
        Ok(idx
            .into_iter()
            .map(|index| Neighbor {
                index,
                distance: distances[index],
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    #[test]
    fn f32_matrix_scores_exactly_like_one_to_one() {
        let rows = vectors(9000, 128, 1);
        let probe = &vectors(1, 128, 2)[0];
        let mut m = TemplateMatrix::new(128, ElementType::F32);
        for r in &rows {
            m.push(r).unwrap();
        }
        for metric in [Metric::Euclidean, Metric::Cosine] {
            let all = m.distances(probe, metric).unwrap();
            for (r, d) in rows.iter().zip(&all) {
                let one = distance(metric, probe, r).unwrap();
                assert_eq!(one.to_bits(), d.to_bits(), "{metric:?}");
            }
        }
    }

    #[test]
    fn quantised_matrices_score_their_dequantised_rows() {
        let rows = vectors(300, 128, 3);
        let probe = &vectors(1, 128, 4)[0];
        for element in [ElementType::F16, ElementType::I8] {
            let mut m = TemplateMatrix::new(128, element);
            for r in &rows {
                m.push(r).unwrap();
            }
            let exact = TemplateMatrix::new(128, ElementType::F32);
            let _ = exact;
            for metric in [Metric::Euclidean, Metric::Cosine] {
                let all = m.distances(probe, metric).unwrap();
                for (i, d) in all.iter().enumerate() {
                    let row = m.row(i).unwrap();
                    // i8 quantises the probe as well; f16 scores the full probe
                    let p: Vec<f32> = match element {
                        ElementType::I8 => {
                            let (q, s) = quantize_i8(probe);
                            q.iter().map(|&x| f32::from(x) * s).collect()
                        }
                        _ => probe.clone(),
                    };
                    let want = distance(metric, &p, &row).unwrap();
                    assert!(
                        (want - d).abs() < 2e-5,
                        "{element:?} {metric:?}: {want} {d}"
                    );
                    let full = distance(metric, probe, &rows[i]).unwrap();
                    assert!(
                        (full - d).abs() < 2e-2,
                        "{element:?} {metric:?}: {full} {d}"
                    );
                }
            }
        }
    }

    #[test]
    fn nearest_finds_the_planted_row_in_every_storage() {
        let rows = vectors(10_000, 128, 5);
        for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
            let mut m = TemplateMatrix::new(128, element);
            for r in &rows {
                m.push(r).unwrap();
            }
            let got = m.nearest(&rows[7777], Metric::Euclidean, 3).unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(got[0].index, 7777, "{element:?}");
            assert!(got[0].distance < 0.02, "{element:?} {}", got[0].distance);
            assert!(got[1].distance >= got[0].distance && got[2].distance >= got[1].distance);
        }
    }

    #[test]
    fn swap_remove_moves_the_last_row_into_the_gap() {
        let rows = vectors(5, 16, 9);
        for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
            let mut m = TemplateMatrix::new(16, element);
            for r in &rows {
                m.push(r).unwrap();
            }
            let before_last = m.row(4).unwrap();
            assert_eq!(m.swap_remove(1), Some(4));
            assert_eq!(m.len(), 4);
            assert_eq!(m.row(1).unwrap(), before_last);
            let d = m.distances(&rows[4], Metric::Euclidean).unwrap();
            assert!(d[1] < 0.02, "{element:?} {d:?}");
            assert_eq!(m.swap_remove(3), Some(3));
            assert_eq!(m.swap_remove(3), None);
            assert_eq!(m.len(), 3);
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let mut m = TemplateMatrix::new(4, ElementType::F32);
        assert!(matches!(
            m.push(&[1.0, 2.0]),
            Err(Error::BufferLength {
                expected: 4,
                got: 2
            })
        ));
        assert!(matches!(
            m.push(&[1.0, f32::NAN, 0.0, 0.0]),
            Err(Error::NonFinite { .. })
        ));
        let mut h = TemplateMatrix::new(2, ElementType::F16);
        assert!(matches!(
            h.push(&[1.0, 70000.0]),
            Err(Error::NonFinite { .. })
        ));
        assert!(h.is_empty());
        m.push(&[1.0, 0.0, 0.0, 0.0]).unwrap();
        assert!(matches!(
            m.distances(&[0.0, f32::INFINITY, 0.0, 0.0], Metric::Euclidean),
            Err(Error::NonFinite { .. })
        ));
        let mut out = vec![0.0; 3];
        assert!(m
            .distances_into(&[0.0; 4], Metric::Euclidean, &mut out)
            .is_err());
        assert!(euclidean(&[0.0; 3], &[0.0; 4]).is_err());
        assert!(matches!(
            euclidean(&[f32::NAN], &[0.0]),
            Err(Error::NonFinite { .. })
        ));
        assert!(m.nearest(&[0.0; 4], Metric::Cosine, 0).unwrap().is_empty());
    }

    #[test]
    fn templates_of_another_model_are_refused() {
        let fp = ModelFingerprint::dlib_resnet_v1();
        let other = ModelFingerprint {
            model_id: "other".into(),
            ..fp.clone()
        };
        let a = Template::new(fp, &[0.5; 8]).unwrap();
        let b = Template::new(other, &[0.5; 8]).unwrap();
        let mut m =
            TemplateMatrix::from_templates(std::slice::from_ref(&a), ElementType::F16).unwrap();
        assert!(matches!(
            m.push_template(&b),
            Err(Error::FingerprintMismatch { .. })
        ));
        assert!(matches!(
            m.distances_to(&b, Metric::Euclidean),
            Err(Error::FingerprintMismatch { .. })
        ));
        assert_eq!(m.distances_to(&a, Metric::Euclidean).unwrap(), vec![0.0]);
    }

    #[test]
    fn similarity_is_bounded_and_inverts() {
        let m = Metric::Euclidean;
        assert_eq!(m.similarity(0.0), 1.0);
        assert_eq!(m.similarity(0.6), 0.7);
        assert_eq!(m.similarity(5.0), 0.0);
        assert!((m.distance_for_similarity(m.similarity(0.45)) - 0.45).abs() < 1e-6);
        assert_eq!(cosine_distance(&[1.0, 0.0], &[0.0, 0.0]).unwrap(), 1.0);
        assert_eq!(cosine_distance(&[1.0, 0.0], &[-2.0, 0.0]).unwrap(), 2.0);
    }
}
