//! dlib DNN containers (`dlib/dnn/core.h`) with the layer details of `dlib/dnn/layers.h`.
//!
//! A serialized network carries no type tags: the reader must know the C++ network type. Each
//! network is therefore described by a [`Node`] list from the outermost object (the loss) inward,
//! mirroring the `using net_type = loss<...<input>>` declaration. Every layer's version string and
//! hyper-parameters are checked against that description.
//!
//! Byte order of a container: each wrapper writes its version, then its sub-network, then its own
//! details. So the file holds all wrapper headers outer→inner, then the input layer, then the
//! layer details inner→outer (forward order). We read it in that order without recursion.

use super::reader::{DatReader, DecodeResult, Tensor4};

/// One wrapper of the network type, outer to inner.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Loss(LossKind),
    Layer(LayerSpec),
    Tag(u8),
    Skip(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    Metric,
    Mmod,
}

/// The expected hyper-parameters of a computational layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSpec {
    Con {
        filters: usize,
        k: usize,
        stride: usize,
    },
    /// `affine` (or `bn_con` folded into affine when loading, as dlib does).
    Affine,
    Relu,
    MaxPool {
        k: usize,
        stride: usize,
    },
    /// `k == 0` pools the whole plane (`avg_pool_everything`).
    AvgPool {
        k: usize,
        stride: usize,
    },
    AddPrev {
        tag: u8,
    },
    FcNoBias {
        outputs: usize,
    },
}

/// The expected input layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSpec {
    RgbImageSized { size: usize },
    RgbImagePyramid,
}

/// A parsed layer, in forward order.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    Conv(ConvParams),
    /// Per-channel `x * gamma + beta`.
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    Relu,
    MaxPool(PoolParams),
    AvgPool(PoolParams),
    /// Output = current ⊕ output of the nearest `Tag(tag)` below, zero-padded to the larger shape.
    AddPrev {
        tag: u8,
    },
    /// Remember the current output under this tag.
    Tag(u8),
    /// Continue from the output remembered under this tag.
    Skip(u8),
    /// `out = x · W`, W stored (inputs, outputs) row-major.
    Fc {
        inputs: usize,
        outputs: usize,
        weight: Vec<f32>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConvParams {
    pub out_channels: usize,
    pub in_channels: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_y: usize,
    pub stride_x: usize,
    pub pad_y: usize,
    pub pad_x: usize,
    /// (out, in, kh, kw) row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    /// 0 means the whole plane.
    pub kh: usize,
    pub kw: usize,
    pub stride_y: usize,
    pub stride_x: usize,
    pub pad_y: usize,
    pub pad_x: usize,
}

/// The input layer's details.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDetails {
    pub version: String,
    /// Channel means in R, G, B order.
    pub mean_rgb: [f32; 3],
    /// Fixed input size (rows, cols) for `input_rgb_image_sized`.
    pub size: Option<(usize, usize)>,
    pub pyramid_padding: usize,
    pub pyramid_outer_padding: usize,
}

/// The loss layer's details that inference needs.
#[derive(Debug, Clone, PartialEq)]
pub enum LossDetails {
    Metric { margin: f32, dist_thresh: f32 },
    Mmod(MmodOptions),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MmodOptions {
    /// Detector windows (width, height).
    pub windows: Vec<(usize, usize)>,
    pub truth_match_iou_threshold: f64,
    /// Non-max suppression: (IoU threshold, percent-covered threshold).
    pub nms: (f64, f64),
    pub ignore: (f64, f64),
}

/// A whole parsed network.
#[derive(Debug, Clone, PartialEq)]
pub struct DnnFile {
    pub input: InputDetails,
    pub loss: LossDetails,
    pub layers: Vec<Layer>,
}

impl DnnFile {
    /// Learnable parameters (conv weights and biases, affine γ/β, fc weights).
    pub fn parameter_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                Layer::Conv(c) => c.weight.len() + c.bias.len(),
                Layer::Affine { gamma, beta } => gamma.len() + beta.len(),
                Layer::Fc { weight, .. } => weight.len(),
                _ => 0,
            })
            .sum()
    }
}

const MAX_STRING: usize = 256;

/// Parse a network whose type is `spec` (outer→inner) over `input`; the whole buffer must be used.
pub fn parse(bytes: &[u8], spec: &[Node], input: InputSpec) -> DecodeResult<DnnFile> {
    let mut r = DatReader::new(bytes);
    // 1. headers, outer → inner
    let mut versions = Vec::with_capacity(spec.len());
    let mut loss = None;
    for (i, node) in spec.iter().enumerate() {
        let over_input = i + 1 == spec.len();
        let v = r.int()?;
        let ok = match node {
            Node::Loss(_) => v == 1,
            Node::Layer(_) if over_input => v == 2 || v == 3,
            Node::Layer(_) => v == 1 || v == 2,
            Node::Tag(_) if over_input => v == 1 || v == 2,
            Node::Tag(_) | Node::Skip(_) => v == 1,
        };
        if !ok {
            return r.error(format!(
                "unexpected container version {v} for {node:?} (wrapper {i})"
            ));
        }
        if let Node::Loss(kind) = node {
            loss = Some(parse_loss(&mut r, *kind)?);
        }
        versions.push(v);
    }
    let Some(loss) = loss else {
        return r.error("network description has no loss layer");
    };
    // 2. the input layer
    let input = parse_input(&mut r, input)?;
    // 3. details, inner → outer = forward order
    let mut layers = Vec::with_capacity(spec.len());
    for (i, node) in spec.iter().enumerate().rev() {
        let over_input = i + 1 == spec.len();
        let v = versions[i];
        match node {
            Node::Loss(_) => {}
            Node::Skip(t) => layers.push(Layer::Skip(*t)),
            Node::Tag(t) => {
                if over_input {
                    empty_tensor(&mut r)?;
                    empty_tensor(&mut r)?;
                    r.bool()?;
                    if v >= 2 {
                        r.ulong()?;
                    }
                }
                layers.push(Layer::Tag(*t));
            }
            Node::Layer(expected) => {
                let layer = parse_details(&mut r, expected)?;
                for _ in 0..3 {
                    r.bool()?;
                }
                empty_tensor(&mut r)?; // x_grad
                empty_tensor(&mut r)?; // cached_output
                if over_input {
                    empty_tensor(&mut r)?; // grad_final
                    if v >= 3 {
                        r.ulong()?; // sample_expansion_factor
                    }
                } else if v == 2 {
                    empty_tensor(&mut r)?; // params_grad
                }
                layers.push(layer);
            }
        }
    }
    if r.remaining() != 0 {
        return r.error(format!(
            "{} trailing bytes after the network",
            r.remaining()
        ));
    }
    Ok(DnnFile {
        input,
        loss,
        layers,
    })
}

/// Training-state tensors are stored but unused at inference; skip them whatever their size.
fn empty_tensor(r: &mut DatReader) -> DecodeResult<()> {
    r.tensor().map(|_| ())
}

fn parse_loss(r: &mut DatReader, kind: LossKind) -> DecodeResult<LossDetails> {
    let version = r.string(MAX_STRING)?;
    match (kind, version.as_str()) {
        (LossKind::Metric, "loss_metric_2") => Ok(LossDetails::Metric {
            margin: r.float()? as f32,
            dist_thresh: r.float()? as f32,
        }),
        (LossKind::Mmod, "loss_mmod_") => {
            let ov = r.int()?;
            if !(1..=4).contains(&ov) {
                return r.error(format!("unsupported mmod_options version {ov}"));
            }
            let windows = if ov == 1 {
                vec![(r.count(1 << 20)?, r.count(1 << 20)?)]
            } else {
                let n = r.count(1024)?;
                let mut w = Vec::with_capacity(n);
                for _ in 0..n {
                    let wv = r.int()?;
                    let size = (r.count(1 << 20)?, r.count(1 << 20)?);
                    if wv >= 2 {
                        r.string(MAX_STRING)?;
                    }
                    w.push(size);
                }
                w
            };
            let _loss_per_false_alarm = r.float()?;
            let _loss_per_missed_target = r.float()?;
            let truth_match_iou_threshold = r.float()?;
            let nms = (r.float()?, r.float()?);
            let ignore = (r.float()?, r.float()?);
            if ov >= 3 {
                r.byte()?;
            }
            if ov >= 4 && r.bool()? {
                return r.error("bounding-box regression is not supported");
            }
            if ov >= 4 {
                r.float()?;
            }
            Ok(LossDetails::Mmod(MmodOptions {
                windows,
                truth_match_iou_threshold,
                nms,
                ignore,
            }))
        }
        _ => r.error(format!("unexpected loss layer '{version}' for {kind:?}")),
    }
}

fn parse_input(r: &mut DatReader, spec: InputSpec) -> DecodeResult<InputDetails> {
    let version = r.string(MAX_STRING)?;
    let expected: &[&str] = match spec {
        InputSpec::RgbImageSized { .. } => &["input_rgb_image_sized"],
        InputSpec::RgbImagePyramid => &["input_rgb_image_pyramid", "input_rgb_image_pyramid2"],
    };
    if !expected.contains(&version.as_str()) {
        return r.error(format!(
            "unexpected input layer '{version}', expected {expected:?}"
        ));
    }
    let mean_rgb = [r.float()? as f32, r.float()? as f32, r.float()? as f32];
    let mut d = InputDetails {
        version,
        mean_rgb,
        size: None,
        pyramid_padding: 10,
        pyramid_outer_padding: 11,
    };
    match spec {
        InputSpec::RgbImageSized { size } => {
            let nr = r.count(1 << 16)?;
            let nc = r.count(1 << 16)?;
            if (nr, nc) != (size, size) {
                return r.error(format!("input size {nr}x{nc}, expected {size}x{size}"));
            }
            d.size = Some((nr, nc));
        }
        InputSpec::RgbImagePyramid => {
            if d.version == "input_rgb_image_pyramid2" {
                d.pyramid_padding = r.count(1 << 16)?;
                d.pyramid_outer_padding = r.count(1 << 16)?;
            }
        }
    }
    Ok(d)
}

fn usize_of(r: &DatReader, v: i64, what: &str) -> DecodeResult<usize> {
    usize::try_from(v).or_else(|_| r.error(format!("negative {what}: {v}")))
}

fn parse_details(r: &mut DatReader, spec: &LayerSpec) -> DecodeResult<Layer> {
    let version = r.string(MAX_STRING)?;
    let mismatch = |r: &DatReader, what: String| -> DecodeResult<Layer> {
        r.error(format!("layer '{version}' does not match {spec:?}: {what}"))
    };
    match (spec, version.as_str()) {
        (LayerSpec::Con { filters, k, stride }, "con_4" | "con_5" | "con_6") => {
            let params = r.tensor()?;
            let num_filters = r.long()?;
            let nr = r.long()?;
            let nc = r.long()?;
            let sy = r.int()?;
            let sx = r.int()?;
            let py = r.int()?;
            let px = r.int()?;
            let fshape = r.alias_tensor()?;
            let bshape = r.alias_tensor()?;
            for _ in 0..4 {
                r.float()?;
            }
            let use_bias = if version != "con_4" { r.bool()? } else { true };
            if version == "con_6" && r.bool()? {
                return mismatch(r, "fused ReLU is not supported".into());
            }
            let got = (
                usize_of(r, num_filters, "filters")?,
                usize_of(r, nr, "rows")?,
                usize_of(r, nc, "cols")?,
                usize_of(r, sy.into(), "stride")?,
                usize_of(r, sx.into(), "stride")?,
            );
            if got != (*filters, *k, *k, *stride, *stride) {
                return mismatch(r, format!("got filters/rows/cols/strides {got:?}"));
            }
            let [o, c, kh, kw] = fshape;
            if (o, kh, kw) != (*filters, *k, *k) || c == 0 {
                return mismatch(r, format!("filter shape {fshape:?}"));
            }
            let nw = o * c * kh * kw;
            let nb = if use_bias { bshape.iter().product() } else { 0 };
            if use_bias && nb != o {
                return mismatch(r, format!("bias shape {bshape:?}"));
            }
            if params.len() != nw + nb {
                return mismatch(
                    r,
                    format!(
                        "{} parameters for {} weights + {} biases",
                        params.len(),
                        nw,
                        nb
                    ),
                );
            }
            let mut weight = params.data;
            let bias = if use_bias {
                weight.split_off(nw)
            } else {
                vec![0.0; o]
            };
            Ok(Layer::Conv(ConvParams {
                out_channels: o,
                in_channels: c,
                kh,
                kw,
                stride_y: *stride,
                stride_x: *stride,
                pad_y: usize_of(r, py.into(), "padding")?,
                pad_x: usize_of(r, px.into(), "padding")?,
                weight,
                bias,
            }))
        }
        (LayerSpec::Affine, "affine_" | "affine_2") => {
            let params = r.tensor()?;
            let g = r.alias_tensor()?;
            let b = r.alias_tensor()?;
            let mode = r.int()?;
            let disabled = version == "affine_2" && r.bool()?;
            if mode != 0 {
                return mismatch(r, format!("mode {mode}, expected CONV_MODE"));
            }
            let ng: usize = g.iter().product();
            let nb: usize = b.iter().product();
            if ng != nb || params.len() != ng + nb {
                return mismatch(r, format!("gamma {g:?} beta {b:?} params {}", params.len()));
            }
            let mut gamma = params.data;
            let mut beta = gamma.split_off(ng);
            if disabled {
                gamma.iter_mut().for_each(|x| *x = 1.0);
                beta.iter_mut().for_each(|x| *x = 0.0);
            }
            Ok(Layer::Affine { gamma, beta })
        }
        (LayerSpec::Affine, "bn_con2") => {
            let params = r.tensor()?;
            let g = r.alias_tensor()?;
            let b = r.alias_tensor()?;
            let _means = r.tensor()?;
            let _invstds = r.tensor()?;
            let running_means = r.tensor()?;
            let running_vars = r.tensor()?;
            r.ulong()?;
            r.ulong()?;
            for _ in 0..4 {
                r.float()?;
            }
            let eps = r.float()?;
            let n: usize = g.iter().product();
            if b.iter().product::<usize>() != n
                || params.len() != 2 * n
                || running_means.len() != n
                || running_vars.len() != n
            {
                return mismatch(r, format!("batch-norm shapes gamma {g:?} beta {b:?}"));
            }
            // dlib's affine_(const bn_&) folds the running statistics into a per-channel affine.
            let mut gamma = Vec::with_capacity(n);
            let mut beta = Vec::with_capacity(n);
            for i in 0..n {
                let gi = f64::from(params.data[i]) / (f64::from(running_vars.data[i]) + eps).sqrt();
                gamma.push(gi as f32);
                beta.push(
                    (f64::from(params.data[n + i]) - gi * f64::from(running_means.data[i])) as f32,
                );
            }
            Ok(Layer::Affine { gamma, beta })
        }
        (LayerSpec::Relu, "relu_") => Ok(Layer::Relu),
        (LayerSpec::Relu, "relu_2") => {
            if r.bool()? {
                return mismatch(r, "disabled ReLU".into());
            }
            Ok(Layer::Relu)
        }
        (LayerSpec::MaxPool { k, stride }, "max_pool_2")
        | (LayerSpec::AvgPool { k, stride }, "avg_pool_2") => {
            let p = PoolParams {
                kh: long_usize(r, "pool rows")?,
                kw: long_usize(r, "pool cols")?,
                stride_y: int_usize(r, "stride")?,
                stride_x: int_usize(r, "stride")?,
                pad_y: int_usize(r, "padding")?,
                pad_x: int_usize(r, "padding")?,
            };
            if (p.kh, p.kw, p.stride_y, p.stride_x) != (*k, *k, *stride, *stride) {
                return mismatch(r, format!("{p:?}"));
            }
            Ok(if version == "max_pool_2" {
                Layer::MaxPool(p)
            } else {
                Layer::AvgPool(p)
            })
        }
        (LayerSpec::AddPrev { tag }, "add_prev_") => Ok(Layer::AddPrev { tag: *tag }),
        (LayerSpec::FcNoBias { outputs }, "fc_2" | "fc_3") => {
            let num_outputs = r.count(1 << 20)?;
            let num_inputs = r.count(1 << 20)?;
            let params: Tensor4 = r.tensor()?;
            let w = r.alias_tensor()?;
            let _b = r.alias_tensor()?;
            let bias_mode = r.int()?;
            for _ in 0..4 {
                r.float()?;
            }
            let use_bias = version == "fc_3" && r.bool()?;
            if num_outputs != *outputs || bias_mode != 1 || use_bias {
                return mismatch(r, format!("outputs {num_outputs}, bias_mode {bias_mode}"));
            }
            if w[0] != num_inputs || w[1] != num_outputs || params.len() != num_inputs * num_outputs
            {
                return mismatch(r, format!("weight shape {w:?}, {} params", params.len()));
            }
            Ok(Layer::Fc {
                inputs: num_inputs,
                outputs: num_outputs,
                weight: params.data,
            })
        }
        _ => mismatch(r, "unexpected layer type".into()),
    }
}

fn long_usize(r: &mut DatReader, what: &str) -> DecodeResult<usize> {
    let v = r.long()?;
    usize_of(r, v, what)
}

fn int_usize(r: &mut DatReader, what: &str) -> DecodeResult<usize> {
    let v = r.int()?;
    usize_of(r, v.into(), what)
}

/// The face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`): 29 convolutions.
///
/// `block<N,s>` = affine∘con3(1)∘relu∘affine∘con3(s); `ares` = relu(x + block<N,1>(x));
/// `ares_down` = relu(avg_pool2(x) ⊕ block<N,2>(x)).
pub fn resnet_spec() -> Vec<Node> {
    use LayerSpec::*;
    fn block(n: usize, stride: usize) -> Vec<Node> {
        vec![
            Node::Layer(Affine),
            Node::Layer(Con {
                filters: n,
                k: 3,
                stride: 1,
            }),
            Node::Layer(Relu),
            Node::Layer(Affine),
            Node::Layer(Con {
                filters: n,
                k: 3,
                stride,
            }),
        ]
    }
    fn ares(n: usize) -> Vec<Node> {
        let mut v = vec![Node::Layer(Relu), Node::Layer(AddPrev { tag: 1 })];
        v.extend(block(n, 1));
        v.push(Node::Tag(1));
        v
    }
    fn ares_down(n: usize) -> Vec<Node> {
        let mut v = vec![
            Node::Layer(Relu),
            Node::Layer(AddPrev { tag: 2 }),
            Node::Layer(AvgPool { k: 2, stride: 2 }),
            Node::Skip(1),
            Node::Tag(2),
        ];
        v.extend(block(n, 2));
        v.push(Node::Tag(1));
        v
    }
    let mut s = vec![
        Node::Loss(LossKind::Metric),
        Node::Layer(FcNoBias { outputs: 128 }),
        Node::Layer(AvgPool { k: 0, stride: 1 }),
    ];
    s.extend(ares_down(256));
    for (n, repeats) in [(256, 2), (128, 2), (64, 3), (32, 3)] {
        for _ in 0..repeats {
            s.extend(ares(n));
        }
        if n != 32 {
            s.extend(ares_down(n));
        }
    }
    s.extend([
        Node::Layer(MaxPool { k: 3, stride: 2 }),
        Node::Layer(Relu),
        Node::Layer(Affine),
        Node::Layer(Con {
            filters: 32,
            k: 7,
            stride: 2,
        }),
    ]);
    s
}

/// The MMOD face detector (`mmod_human_face_detector.dat`): three strided 5×5 convolutions, three
/// 5×5 convolutions of 45 filters, and a 9×9 single-filter head.
pub fn mmod_spec() -> Vec<Node> {
    use LayerSpec::*;
    let mut s = vec![
        Node::Loss(LossKind::Mmod),
        Node::Layer(Con {
            filters: 1,
            k: 9,
            stride: 1,
        }),
    ];
    for _ in 0..3 {
        s.extend([
            Node::Layer(Relu),
            Node::Layer(Affine),
            Node::Layer(Con {
                filters: 45,
                k: 5,
                stride: 1,
            }),
        ]);
    }
    for filters in [32, 32, 16] {
        s.extend([
            Node::Layer(Relu),
            Node::Layer(Affine),
            Node::Layer(Con {
                filters,
                k: 5,
                stride: 2,
            }),
        ]);
    }
    s
}
