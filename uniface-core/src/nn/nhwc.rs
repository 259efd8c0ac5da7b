//! Channels-last (NHWC) kernels for the embedder's fast path, as candle custom ops.
//!
//! A convolution becomes one GEMM: [`Im2Col`] lays every receptive field out as a row (with a
//! trailing 1 so the bias rides in the weight matrix), candle's `matmul` multiplies it by the
//! folded filter matrix, and the (rows, out_channels) result *is* the NHWC output, with no
//! transposition. Channels-last keeps each receptive-field row a few contiguous copies.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape};
use rayon::prelude::*;

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

fn dims4(l: &Layout, op: &str) -> candle_core::Result<(usize, usize, usize, usize)> {
    match l.shape().dims() {
        &[b, h, w, c] => Ok((b, h, w, c)),
        d => candle_core::bail!("{op}: expected a 4-d NHWC tensor, got {d:?}"),
    }
}

/// Output extent of a window sliding over `n` with padding `p` on both sides.
pub(crate) fn out_extent(n: usize, k: usize, s: usize, p: usize) -> usize {
    if n + 2 * p < k {
        0
    } else {
        (n + 2 * p - k) / s + 1
    }
}

/// Rows above which the per-row loops are worth splitting across threads.
const PAR_ROWS: usize = 256;

/// (B,H,W,C) → (B·OH·OW, kh·kw·C + 1): receptive fields as rows, with a trailing 1.
pub(crate) struct Im2Col {
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    /// Apply ReLU to the input values while copying them (fuses the previous layer's ReLU).
    pub relu: bool,
    /// Only output rows `[start, end)` of the flattened (image, output row) index, so a large
    /// convolution can run in cache-sized pieces; `None` for all.
    pub rows: Option<(usize, usize)>,
}

/// Copy `src` into `dst`, optionally through ReLU.
#[inline]
fn copy_values(dst: &mut [f32], src: &[f32], relu: bool) {
    if relu {
        dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v.max(0.0));
    } else {
        dst.copy_from_slice(src);
    }
}

impl Im2Col {
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            out_extent(h, self.kh, self.stride, self.pad),
            out_extent(w, self.kw, self.stride, self.pad),
        )
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "uniface-im2col-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let (b, h, w, c) = dims4(l, self.name())?;
        let (oh, ow) = self.out_hw(h, w);
        let k = self.kh * self.kw * c + 1;
        let (q0, q1) = self.rows.unwrap_or((0, b * oh));
        let (q0, q1) = (q0.min(b * oh), q1.min(b * oh));
        let rows = (q1 - q0) * ow;
        let first = q0 * ow;
        let mut out = vec![0f32; rows * k];
        let fill = |(row, dst): (usize, &mut [f32])| {
            let row = row + first;
            let n = row / (oh * ow);
            let oy = (row / ow) % oh;
            let ox = row % ow;
            let img = &x[n * h * w * c..(n + 1) * h * w * c];
            for ky in 0..self.kh {
                let iy = (oy * self.stride + ky) as isize - self.pad as isize;
                let seg = &mut dst[ky * self.kw * c..(ky + 1) * self.kw * c];
                if iy < 0 || iy >= h as isize {
                    continue; // stays zero
                }
                let iy = iy as usize;
                let ix0 = (ox * self.stride) as isize - self.pad as isize;
                if ix0 >= 0 && ix0 as usize + self.kw <= w {
                    let start = (iy * w + ix0 as usize) * c;
                    copy_values(seg, &img[start..start + self.kw * c], self.relu);
                } else {
                    for kx in 0..self.kw {
                        let ix = ix0 + kx as isize;
                        if ix >= 0 && ix < w as isize {
                            let start = (iy * w + ix as usize) * c;
                            copy_values(
                                &mut seg[kx * c..(kx + 1) * c],
                                &img[start..start + c],
                                self.relu,
                            );
                        }
                    }
                }
            }
            dst[k - 1] = 1.0;
        };
        if rows >= PAR_ROWS {
            out.par_chunks_mut(k).enumerate().for_each(fill);
        } else {
            out.chunks_mut(k).enumerate().for_each(fill);
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, k))))
    }
}

/// Max or average pooling over NHWC with a square window; `k == 0` pools the whole plane.
pub(crate) struct Pool {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub max: bool,
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        if self.max {
            "uniface-max-pool-nhwc"
        } else {
            "uniface-avg-pool-nhwc"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let (b, h, w, c) = dims4(l, self.name())?;
        let (k, kh, kw, stride, pad) = if self.k == 0 {
            (0, h, w, 1, 0)
        } else {
            (self.k, self.k, self.k, self.stride, self.pad)
        };
        let _ = k;
        let oh = out_extent(h, kh, stride, pad);
        let ow = out_extent(w, kw, stride, pad);
        let mut out = vec![0f32; b * oh * ow * c];
        let max = self.max;
        let fill = |(pix, dst): (usize, &mut [f32])| {
            let n = pix / (oh * ow);
            let oy = (pix / ow) % oh;
            let ox = pix % ow;
            let img = &x[n * h * w * c..(n + 1) * h * w * c];
            if max {
                dst.fill(f32::NEG_INFINITY);
            }
            let mut count = 0usize;
            for ky in 0..kh {
                let iy = (oy * stride + ky) as isize - pad as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..kw {
                    let ix = (ox * stride + kx) as isize - pad as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let start = (iy as usize * w + ix as usize) * c;
                    let src = &img[start..start + c];
                    count += 1;
                    if max {
                        dst.iter_mut().zip(src).for_each(|(d, &v)| *d = d.max(v));
                    } else {
                        dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                    }
                }
            }
            if !max {
                let inv = 1.0 / (kh * kw) as f32;
                dst.iter_mut().for_each(|d| *d *= inv);
            } else if count == 0 {
                dst.fill(0.0);
            }
        };
        if b * oh * ow >= PAR_ROWS {
            out.par_chunks_mut(c).enumerate().for_each(fill);
        } else {
            out.chunks_mut(c).enumerate().for_each(fill);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, oh, ow, c))))
    }
}

/// dlib's `add_prev`: element-wise sum over the larger of both shapes, each input zero-extended
/// at the bottom/right/high channels (top-left aligned).
pub(crate) struct PaddedAdd;

impl CustomOp2 for PaddedAdd {
    fn name(&self) -> &'static str {
        "uniface-padded-add-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = contiguous(s1, l1, self.name())?;
        let b = contiguous(s2, l2, self.name())?;
        let da = dims4(l1, self.name())?;
        let db = dims4(l2, self.name())?;
        if da.0 != db.0 {
            candle_core::bail!("add_prev: batch sizes differ ({} vs {})", da.0, db.0);
        }
        let (n, h, w, c) = (da.0, da.1.max(db.1), da.2.max(db.2), da.3.max(db.3));
        let mut out = vec![0f32; n * h * w * c];
        for (src, (_, sh, sw, sc)) in [(a, da), (b, db)] {
            for img in 0..n {
                for y in 0..sh {
                    for x in 0..sw {
                        let s0 = ((img * sh + y) * sw + x) * sc;
                        let d0 = ((img * h + y) * w + x) * c;
                        out[d0..d0 + sc]
                            .iter_mut()
                            .zip(&src[s0..s0 + sc])
                            .for_each(|(d, &v)| *d += v);
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, h, w, c))))
    }
}

/// Second half of a stride-1 convolution done tap by tap ("kn2row"): given P = X·W with one
/// column per (tap, output channel), sum each output pixel's taps from the shifted input
/// positions and add the bias. Input (B·H·W, k·k·O), output (B, H', W', O).
pub(crate) struct TapSum {
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub pad: usize,
    pub bias: Vec<f32>,
}

impl CustomOp1 for TapSum {
    fn name(&self) -> &'static str {
        "uniface-tap-sum-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = contiguous(s, l, self.name())?;
        let o = self.bias.len();
        let (b, h, w, k, pad) = (self.b, self.h, self.w, self.k, self.pad);
        let taps = k * k * o;
        if p.len() != b * h * w * taps {
            candle_core::bail!(
                "tap-sum: {} values for {b}x{h}x{w} pixels of {taps} taps",
                p.len()
            );
        }
        let (oh, ow) = (out_extent(h, k, 1, pad), out_extent(w, k, 1, pad));
        let mut out = vec![0f32; b * oh * ow * o];
        let fill = |(row, dst): (usize, &mut [f32])| {
            let n = row / oh;
            let y = row % oh;
            for (x, px) in dst.chunks_mut(o).enumerate() {
                px.copy_from_slice(&self.bias);
                for ky in 0..k {
                    let iy = (y + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (x + kx) as isize - pad as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let src =
                            ((n * h + iy as usize) * w + ix as usize) * taps + (ky * k + kx) * o;
                        px.iter_mut()
                            .zip(&p[src..src + o])
                            .for_each(|(d, v)| *d += v);
                    }
                }
            }
        };
        if b * oh >= 16 {
            out.par_chunks_mut(ow * o).enumerate().for_each(fill);
        } else {
            out.chunks_mut(ow * o).enumerate().for_each(fill);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, oh, ow, o))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn t(v: Vec<f32>, shape: (usize, usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn im2col_pads_with_zeros_and_appends_one() {
        // 1x2x2x1 image [[1,2],[3,4]], 3x3 window, stride 1, pad 1 → 4 rows of 10.
        let x = t(vec![1., -2., 3., 4.], (1, 2, 2, 1));
        let im2col = |relu| Im2Col {
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
            relu,
            rows: None,
        };
        let cols = x.apply_op1_no_bwd(&im2col(false)).unwrap();
        let rows: Vec<Vec<f32>> = cols.to_vec2().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0], vec![0., 0., 0., 0., 1., -2., 0., 3., 4., 1.]);
        assert_eq!(rows[3], vec![1., -2., 0., 3., 4., 0., 0., 0., 0., 1.]);
        // with the ReLU fused in, negative inputs become zero
        let rows: Vec<Vec<f32>> = x
            .apply_op1_no_bwd(&im2col(true))
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(rows[0], vec![0., 0., 0., 0., 1., 0., 0., 3., 4., 1.]);
    }

    #[test]
    fn pools_match_hand_computation() {
        let x = t((0..16).map(|v| v as f32).collect(), (1, 4, 4, 1));
        let m = x
            .apply_op1_no_bwd(&Pool {
                k: 3,
                stride: 2,
                pad: 0,
                max: true,
            })
            .unwrap();
        assert_eq!(
            m.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![10.]
        );
        let a = x
            .apply_op1_no_bwd(&Pool {
                k: 2,
                stride: 2,
                pad: 0,
                max: false,
            })
            .unwrap();
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![2.5, 4.5, 10.5, 12.5]
        );
        let g = x
            .apply_op1_no_bwd(&Pool {
                k: 0,
                stride: 1,
                pad: 0,
                max: false,
            })
            .unwrap();
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![7.5]
        );
    }

    #[test]
    fn padded_add_takes_the_larger_shape() {
        // a: 1x1x1x2, b: 1x2x1x1 → 1x2x1x2
        let a = t(vec![1., 2.], (1, 1, 1, 2));
        let b = t(vec![10., 20.], (1, 2, 1, 1));
        let s = a.apply_op2_no_bwd(&b, &PaddedAdd).unwrap();
        assert_eq!(s.dims(), &[1, 2, 1, 2]);
        assert_eq!(
            s.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![11., 2., 20., 0.]
        );
    }
}
