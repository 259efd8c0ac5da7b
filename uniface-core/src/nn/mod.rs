//! Tensor kernels shared by the networks: channels-last convolution as im2col + one GEMM.

pub(crate) mod nhwc;

use candle_core::{Device, Tensor};

use crate::dlib::dnn::ConvParams;
use crate::Result;
use nhwc::{Im2Col, TapSum};

/// Fold `affine(conv(x))` into one convolution: w'[o] = w[o]·γ[o], b'[o] = b[o]·γ[o] + β[o].
pub(crate) fn fold(c: &ConvParams, affine: Option<(&[f32], &[f32])>) -> (Vec<f32>, Vec<f32>) {
    let per_out = c.in_channels * c.kh * c.kw;
    let mut w = c.weight.clone();
    let mut b = c.bias.clone();
    if let Some((g, beta)) = affine {
        for o in 0..c.out_channels {
            let go = f64::from(g[o]);
            for v in &mut w[o * per_out..(o + 1) * per_out] {
                *v = (f64::from(*v) * go) as f32;
            }
            b[o] = (f64::from(b[o]) * go + f64::from(beta[o])) as f32;
        }
    }
    (w, b)
}

/// (O, C, kh, kw) weights and O biases → the (kh·kw·C + 1, O) matrix that multiplies NHWC
/// im2col rows.
pub(crate) fn gemm_weight(c: &ConvParams, w: &[f32], b: &[f32], device: &Device) -> Result<Tensor> {
    gemm_weight_padded(c, w, b, c.in_channels, c.out_channels, device)
}

/// [`gemm_weight`] for an input carrying `cin ≥ C` channels (the extra ones are ignored) and
/// an output widened to `cout ≥ O` channels (the extra ones are zero). GEMM kernels run
/// markedly faster on widths that are multiples of 16.
pub(crate) fn gemm_weight_padded(
    c: &ConvParams,
    w: &[f32],
    b: &[f32],
    cin: usize,
    cout: usize,
    device: &Device,
) -> Result<Tensor> {
    let (o, ci, kh, kw) = (c.out_channels, c.in_channels, c.kh, c.kw);
    let k = kh * kw * cin;
    let mut m = vec![0f32; (k + 1) * cout];
    for oc in 0..o {
        for ic in 0..ci {
            for y in 0..kh {
                for x in 0..kw {
                    let row = (y * kw + x) * cin + ic;
                    m[row * cout + oc] = w[((oc * ci + ic) * kh + y) * kw + x];
                }
            }
        }
        m[k * cout + oc] = b[oc];
    }
    Ok(Tensor::from_vec(m, (k + 1, cout), device)?)
}

/// A convolution over a (B, H, W, C) tensor with a [`gemm_weight`] matrix: (B, OH, OW, O).
pub(crate) fn conv_gemm(
    x: &Tensor,
    weight: &Tensor,
    k: usize,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_gemm_relu_in(x, weight, k, stride, pad, false)
}

/// [`conv_gemm`] of `relu(x)` when `relu_input`, without materialising `relu(x)`.
pub(crate) fn conv_gemm_relu_in(
    x: &Tensor,
    weight: &Tensor,
    k: usize,
    stride: usize,
    pad: usize,
    relu_input: bool,
) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let o = weight.dim(1)?;
    let probe = Im2Col {
        kh: k,
        kw: k,
        stride,
        pad,
        relu: relu_input,
        rows: None,
    };
    let (oh, ow) = probe.out_hw(h, w);
    // Output rows per piece: keep each im2col piece near IM2COL_BYTES so it stays in cache
    // and below the allocator's mmap threshold (no page faults on every call).
    let row_bytes = ow * (k * k * c + 1) * 4;
    let per_piece = (IM2COL_BYTES / row_bytes.max(1)).max(1);
    let total = b * oh;
    let mut pieces = Vec::with_capacity(total.div_ceil(per_piece));
    let mut q = 0;
    while q < total {
        let end = (q + per_piece).min(total);
        let cols = x.apply_op1_no_bwd(&Im2Col {
            rows: Some((q, end)),
            ..probe
        })?;
        pieces.push(cols.matmul(weight)?);
        q = end;
    }
    let out = match pieces.len() {
        0 => Tensor::zeros((0, o), weight.dtype(), weight.device())?,
        1 => pieces.swap_remove(0),
        _ => Tensor::cat(&pieces, 0)?,
    };
    Ok(out.reshape((b, oh, ow, o))?)
}

/// Target size of one im2col piece.
const IM2COL_BYTES: usize = 4 << 20;

/// A stride-1 convolution with few output channels and a large kernel, computed tap by tap:
/// one GEMM (pixels × C)·(C × k²·O) then a shifted sum, so no k²-fold im2col copy is built.
#[derive(Debug, Clone)]
pub(crate) struct TapConv {
    /// (C, k·k·O): column (ky·k + kx)·O + o.
    weight: Tensor,
    bias: Vec<f32>,
    k: usize,
    pad: usize,
}

impl TapConv {
    /// `cin ≥ C`: channels the input carries (extra ones are ignored).
    pub fn new(c: &ConvParams, w: &[f32], b: &[f32], cin: usize, device: &Device) -> Result<Self> {
        let (o, ci, k) = (c.out_channels, c.in_channels, c.kh);
        let mut m = vec![0f32; cin * k * k * o];
        for oc in 0..o {
            for ic in 0..ci {
                for y in 0..k {
                    for x in 0..k {
                        m[ic * k * k * o + (y * k + x) * o + oc] =
                            w[((oc * ci + ic) * k + y) * k + x];
                    }
                }
            }
        }
        Ok(Self {
            weight: Tensor::from_vec(m, (cin, k * k * o), device)?,
            bias: b.to_vec(),
            k,
            pad: c.pad_y,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let p = x.reshape((b * h * w, c))?.matmul(&self.weight)?;
        Ok(p.apply_op1_no_bwd(&TapSum {
            b,
            h,
            w,
            k: self.k,
            pad: self.pad,
            bias: self.bias.clone(),
        })?)
    }
}
