//! MiniFASNet (V2 and V1SE): the silent face anti-spoofing networks of Minivision
//! (`minivision-ai/Silent-Face-Anti-Spoofing`, Apache-2.0), rebuilt in candle from the shipped
//! `state_dict` files.
//!
//! An 80×80 BGR crop (values 0–255, no normalisation) goes through a pruned MobileFaceNet-style
//! trunk — a 3×3 stride-2 convolution, a depthwise 3×3, then inverted-bottleneck blocks
//! (1×1 expand + PReLU, depthwise 3×3 + PReLU, 1×1 linear projection; residual inside the
//! stages, stride 2 between them; V1SE adds a squeeze-and-excitation gate to the last block of
//! each stage) — a 1×1 convolution to 512 channels, a 5×5 depthwise convolution to 1×1, a
//! linear layer to 128 with batch norm, and a 3-way classifier (0 = print attack, 1 = real,
//! 2 = replay attack). Batch norms are folded into the preceding weights at load time. Channel
//! counts come from the weight shapes, so both pruned variants load with the same code.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};

use super::torch_legacy::StateTensor;
use crate::{Error, Result};

const BN_EPS: f32 = 1e-5;
/// Side of the square input crop.
pub const INPUT_SIZE: usize = 80;

struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    /// Depthwise layers keep plain weights and bias for the direct loop (candle runs grouped
    /// convolutions as one small convolution per channel, which is slow).
    depthwise: Option<(Vec<f32>, Vec<f32>, usize)>,
    stride: usize,
    padding: usize,
    groups: usize,
    prelu: Option<Tensor>,
}

struct Se {
    fc1: ConvBn,
    fc2: ConvBn,
}

enum Block {
    Conv(ConvBn),
    Bottleneck(Box<Bottleneck>),
}

struct Bottleneck {
    expand: ConvBn,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
    se: Option<Se>,
}

/// One MiniFASNet.
pub struct MiniFasNet {
    blocks: Vec<Block>,
    /// Linear 512 → 128 with its batch norm folded in.
    embed_weight: Tensor,
    embed_bias: Tensor,
    /// Linear 128 → 3.
    classify: Tensor,
}

struct Weights<'a> {
    file: &'a str,
    map: &'a HashMap<String, StateTensor>,
    device: &'a Device,
}

impl Weights<'_> {
    fn get(&self, name: &str) -> Result<&StateTensor> {
        self.map.get(name).ok_or_else(|| Error::ModelFormat {
            file: self.file.to_owned(),
            offset: 0,
            message: format!("tensor {name} missing"),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Per-channel scale and shift of batch norm `prefix`.
    fn batch_norm(&self, prefix: &str, channels: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let g = &self.get(&format!("{prefix}.weight"))?.values;
        let b = &self.get(&format!("{prefix}.bias"))?.values;
        let m = &self.get(&format!("{prefix}.running_mean"))?.values;
        let v = &self.get(&format!("{prefix}.running_var"))?.values;
        if [g.len(), b.len(), m.len(), v.len()] != [channels; 4] {
            return Err(Error::ModelFormat {
                file: self.file.to_owned(),
                offset: 0,
                message: format!("{prefix}: batch norm of the wrong size"),
            });
        }
        let scale: Vec<f32> = g
            .iter()
            .zip(v)
            .map(|(g, v)| g / (v + BN_EPS).sqrt())
            .collect();
        let shift = b
            .iter()
            .zip(m)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Ok((scale, shift))
    }

    /// A bias-free convolution `{prefix}.{conv}` followed by batch norm `{prefix}.{bn}`, folded.
    fn conv_bn(&self, conv: &str, bn: &str, prelu: Option<&str>, stride: usize) -> Result<ConvBn> {
        let w = self.get(&format!("{conv}.weight"))?;
        let &[out, per_group, kh, kw] = w.shape.as_slice() else {
            return Err(Error::ModelFormat {
                file: self.file.to_owned(),
                offset: 0,
                message: format!("{conv}: expected a 4-d convolution weight"),
            });
        };
        let (scale, shift) = self.batch_norm(bn, out)?;
        let per_out = per_group * kh * kw;
        let folded: Vec<f32> = w
            .values
            .iter()
            .enumerate()
            .map(|(i, x)| x * scale[i / per_out])
            .collect();
        let groups = if per_group == 1 && kh > 1 { out } else { 1 };
        let depthwise = (groups > 1 && kh == kw).then(|| (folded.clone(), shift.clone(), kh));
        let prelu = match prelu {
            Some(p) => {
                let a = &self.get(&format!("{p}.weight"))?.values;
                Some(Tensor::from_slice(a, (1, a.len(), 1, 1), self.device)?)
            }
            None => None,
        };
        Ok(ConvBn {
            depthwise,
            weight: Tensor::from_vec(folded, (out, per_group, kh, kw), self.device)?,
            bias: Tensor::from_vec(shift, (1, out, 1, 1), self.device)?,
            stride,
            padding: if kh == 3 { 1 } else { 0 },
            groups,
            prelu,
        })
    }

    fn conv_block(&self, p: &str, stride: usize) -> Result<ConvBn> {
        self.conv_bn(
            &format!("{p}.conv"),
            &format!("{p}.bn"),
            Some(&format!("{p}.prelu")),
            stride,
        )
    }

    fn linear_block(&self, p: &str) -> Result<ConvBn> {
        self.conv_bn(&format!("{p}.conv"), &format!("{p}.bn"), None, 1)
    }

    fn bottleneck(&self, p: &str, stride: usize, residual: bool) -> Result<Block> {
        let se = if self.has(&format!("{p}.se_module.fc1.weight")) {
            Some(Se {
                fc1: self.conv_bn(
                    &format!("{p}.se_module.fc1"),
                    &format!("{p}.se_module.bn1"),
                    None,
                    1,
                )?,
                fc2: self.conv_bn(
                    &format!("{p}.se_module.fc2"),
                    &format!("{p}.se_module.bn2"),
                    None,
                    1,
                )?,
            })
        } else {
            None
        };
        Ok(Block::Bottleneck(Box::new(Bottleneck {
            expand: self.conv_block(&format!("{p}.conv"), 1)?,
            depthwise: self.conv_block(&format!("{p}.conv_dw"), stride)?,
            project: self.linear_block(&format!("{p}.project"))?,
            residual,
            se,
        })))
    }
}

/// Depthwise k×k convolution with bias over an `[N, C, H, W]` tensor, zero padding `pad`.
fn depthwise(
    x: &Tensor,
    w: &[f32],
    bias: &[f32],
    k: usize,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    // (the kernel size is the model file's: a kernel wider than the map is an error, not a
    // wrapped subtraction)
    if k == 0 || stride == 0 || k > h + 2 * pad || k > wd + 2 * pad {
        return Err(Error::InvalidArgument {
            name: "kernel",
            message: format!("a {k}x{k} depthwise kernel (stride {stride}) over a {h}x{wd} map"),
        });
    }
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (wd + 2 * pad - k) / stride + 1;
    let input = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * c * ho * wo];
    for (plane, o) in out.chunks_exact_mut(ho * wo).enumerate() {
        let ch = plane % c;
        let src = &input[plane * h * wd..(plane + 1) * h * wd];
        let kern = &w[ch * k * k..(ch + 1) * k * k];
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = bias[ch];
                for ky in 0..k {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let row = &src[iy as usize * wd..(iy as usize + 1) * wd];
                    for kx in 0..k {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        if ix >= 0 && ix < wd as isize {
                            acc += row[ix as usize] * kern[ky * k + kx];
                        }
                    }
                }
                o[oy * wo + ox] = acc;
            }
        }
    }
    Ok(Tensor::from_vec(out, (n, c, ho, wo), x.device())?)
}

impl ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, kh, kw) = self.weight.dims4()?;
        let y = match &self.depthwise {
            Some((w, b, k)) => depthwise(x, w, b, *k, self.stride, self.padding)?,
            // 1×1 convolution = one matrix product per image
            None if kh == 1 && kw == 1 && self.stride == 1 && self.groups == 1 => {
                let (n, c, h, w) = x.dims4()?;
                let out = self.weight.dim(0)?;
                let w2 = self
                    .weight
                    .reshape((1, out, c))?
                    .broadcast_as((n, out, c))?;
                w2.matmul(&x.reshape((n, c, h * w))?)?
                    .reshape((n, out, h, w))?
                    .broadcast_add(&self.bias)?
            }
            None => x
                .conv2d(&self.weight, self.padding, self.stride, 1, self.groups)?
                .broadcast_add(&self.bias)?,
        };
        Ok(match &self.prelu {
            Some(a) => (y.relu()? + y.minimum(0f32)?.broadcast_mul(a)?)?,
            None => y,
        })
    }
}

impl MiniFasNet {
    /// Build from a state dict (names without the `module.` prefix).
    pub fn from_state_dict(
        file: &str,
        map: &HashMap<String, StateTensor>,
        device: &Device,
    ) -> Result<Self> {
        let w = Weights { file, map, device };
        let mut blocks = vec![
            Block::Conv(w.conv_block("conv1", 2)?),
            Block::Conv(w.conv_block("conv2_dw", 1)?),
            w.bottleneck("conv_23", 2, false)?,
        ];
        for (stage, down) in [("conv_3", "conv_34"), ("conv_4", "conv_45"), ("conv_5", "")] {
            let mut i = 0;
            while w.has(&format!("{stage}.model.{i}.conv.conv.weight")) {
                blocks.push(w.bottleneck(&format!("{stage}.model.{i}"), 1, true)?);
                i += 1;
            }
            if i == 0 {
                return Err(Error::ModelFormat {
                    file: file.to_owned(),
                    offset: 0,
                    message: format!("stage {stage} has no blocks"),
                });
            }
            if !down.is_empty() {
                blocks.push(w.bottleneck(down, 2, false)?);
            }
        }
        blocks.push(Block::Conv(w.conv_block("conv_6_sep", 1)?));
        blocks.push(Block::Conv(w.linear_block("conv_6_dw")?));
        let lin = w.get("linear.weight")?;
        let &[emb, feat] = lin.shape.as_slice() else {
            return Err(Error::ModelFormat {
                file: file.to_owned(),
                offset: 0,
                message: "linear.weight is not 2-d".into(),
            });
        };
        let (scale, shift) = w.batch_norm("bn", emb)?;
        let folded: Vec<f32> = lin
            .values
            .iter()
            .enumerate()
            .map(|(i, x)| x * scale[i / feat])
            .collect();
        let prob = w.get("prob.weight")?;
        Ok(Self {
            blocks,
            embed_weight: Tensor::from_vec(folded, (emb, feat), device)?,
            embed_bias: Tensor::from_vec(shift, (1, emb), device)?,
            classify: Tensor::from_slice(&prob.values, (prob.shape[0], prob.shape[1]), device)?,
        })
    }

    /// Class logits of a batch of crops, `[N, 3, 80, 80]` BGR in 0–255.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for b in &self.blocks {
            x = match b {
                Block::Conv(c) => c.forward(&x)?,
                Block::Bottleneck(b) => {
                    let Bottleneck {
                        expand,
                        depthwise,
                        project,
                        residual,
                        se,
                    } = b.as_ref();
                    let y = project.forward(&depthwise.forward(&expand.forward(&x)?)?)?;
                    let y = match se {
                        Some(se) => {
                            let g = y.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
                            let g = se.fc1.forward(&g)?.relu()?;
                            let g = candle_nn::ops::sigmoid(&se.fc2.forward(&g)?)?;
                            y.broadcast_mul(&g)?
                        }
                        None => y,
                    };
                    if *residual {
                        (x + y)?
                    } else {
                        y
                    }
                }
            };
        }
        let x = x.flatten_from(1)?;
        let x = x
            .matmul(&self.embed_weight.t()?)?
            .broadcast_add(&self.embed_bias)?;
        Ok(x.matmul(&self.classify.t()?)?)
    }

    /// Softmax probabilities of one crop (80×80×3 BGR bytes, row-major).
    pub fn probabilities(&self, bgr: &[u8], device: &Device) -> Result<[f32; 3]> {
        if bgr.len() != INPUT_SIZE * INPUT_SIZE * 3 {
            return Err(Error::BufferLength {
                expected: INPUT_SIZE * INPUT_SIZE * 3,
                got: bgr.len(),
            });
        }
        let x = Tensor::from_slice(bgr, (1, INPUT_SIZE, INPUT_SIZE, 3), device)?
            .to_dtype(DType::F32)?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let logits = self.forward(&x)?;
        let p = candle_nn::ops::softmax(&logits, D::Minus1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        match p.as_slice() {
            &[a, b, c] => Ok([a, b, c]),
            other => Err(Error::BufferLength {
                expected: 3,
                got: other.len(),
            }),
        }
    }
}
