//! Face detection with dlib's MMOD CNN (`mmod_human_face_detector.dat`; Davis E. King,
//! "Max-Margin Object Detection", 2015; CC0-1.0 weights).
//!
//! As dlib does: optionally upsample the image 2× (`upsample` times, bilinear), pack it and its
//! 5/6-scaled copies into one tiled canvas, normalise it ((pixel − mean)/256), run the
//! fully-convolutional network (three 5×5 stride-2 convolutions, three 5×5 convolutions of 45
//! filters, a 9×9 scoring head; batch norm folded), turn every positive score of the stride-8
//! map into an 80×80 window mapped back through the pyramid, and keep the best-scoring windows
//! with dlib's non-maximum suppression. Large canvases run in horizontal strips, so memory stays
//! bounded whatever the photo's size.

mod pyramid;
mod resize;

use std::path::Path;

use ::image::RgbImage;
use candle_core::{Device, Tensor};

use crate::dlib::dnn::{self, DnnFile, Layer, LossDetails};
use crate::geometry::{Point, Rect};
use crate::nn::{conv_gemm_relu_in, fold, gemm_weight_padded, TapConv};
use crate::{Error, Result};

/// A detected face: dlib's inclusive pixel box and the detector's confidence.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FaceBox {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
    pub score: f32,
}

impl FaceBox {
    pub fn rect(&self) -> Rect {
        Rect::new(self.left, self.top, self.right, self.bottom)
    }
}

/// Detection options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectOptions {
    /// Times the image is upsampled 2× first (finds smaller faces; face_recognition's
    /// `number_of_times_to_upsample`). Default 1.
    pub upsample: u32,
    /// Minimum score; dlib's default is 0.
    pub threshold: f32,
    /// Drop faces whose box is narrower than this many pixels (after mapping back).
    pub min_face_size: u32,
    /// Keep at most this many faces (best first); 0 keeps all.
    pub max_faces: usize,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            upsample: 1,
            threshold: 0.0,
            min_face_size: 0,
            max_faces: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct ConvStep {
    weight: Tensor,
    /// Set for the single-filter head: computed tap by tap instead of through im2col.
    taps: Option<TapConv>,
    k: usize,
    stride: usize,
    pad: usize,
    relu: bool,
}

/// The MMOD face detector. `Send + Sync`; detection takes `&self`.
#[derive(Debug, Clone)]
pub struct Detector {
    steps: Vec<ConvStep>,
    mean_rgb: [f32; 3],
    window: (f64, f64),
    nms: (f64, f64),
    padding: i64,
    outer_padding: i64,
    device: Device,
}

/// Largest canvas area (pixels) processed in one piece: bounds the im2col buffers to about
/// 200 MB whatever the photo's size.
const STRIP_PIXELS: usize = 1 << 21;

impl Detector {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let file = crate::dlib::parse_dnn(
            name,
            bytes,
            &dnn::mmod_spec(),
            dnn::InputSpec::RgbImagePyramid,
        )?;
        Self::from_parsed(name, &file, &Device::Cpu)
    }

    fn from_parsed(name: &str, file: &DnnFile, device: &Device) -> Result<Self> {
        let bad = |message: String| Error::ModelFormat {
            file: name.to_owned(),
            offset: 0,
            message,
        };
        let LossDetails::Mmod(opts) = &file.loss else {
            return Err(bad("not an MMOD detector".into()));
        };
        let &[(ww, wh)] = opts.windows.as_slice() else {
            return Err(bad(format!(
                "expected one detector window, got {:?}",
                opts.windows
            )));
        };
        let mut steps = Vec::new();
        let mut i = 0;
        // Channels the previous step's output carries (widened to a multiple of 16).
        let mut carried = 3usize;
        while i < file.layers.len() {
            let Layer::Conv(c) = &file.layers[i] else {
                return Err(bad(format!("unexpected layer {i} in the detector")));
            };
            let affine = match file.layers.get(i + 1) {
                Some(Layer::Affine { gamma, beta }) => {
                    i += 1;
                    Some((gamma.as_slice(), beta.as_slice()))
                }
                _ => None,
            };
            let relu = matches!(file.layers.get(i + 1), Some(Layer::Relu));
            if relu {
                i += 1;
            }
            let (w, b) = fold(c, affine);
            if c.in_channels > carried {
                return Err(bad(format!("layer {i} expects {} channels", c.in_channels)));
            }
            let taps = (c.out_channels < 8 && c.stride_y == 1)
                .then(|| TapConv::new(c, &w, &b, carried, device))
                .transpose()?;
            let out = if c.out_channels > 16 {
                c.out_channels.div_ceil(16) * 16
            } else {
                c.out_channels
            };
            let weight = gemm_weight_padded(c, &w, &b, carried, out, device)?;
            carried = out;
            steps.push(ConvStep {
                taps,
                weight,
                k: c.kh,
                stride: c.stride_y,
                pad: c.pad_y,
                relu,
            });
            i += 1;
        }
        Ok(Self {
            steps,
            mean_rgb: file.input.mean_rgb,
            window: (ww as f64, wh as f64),
            nms: opts.nms,
            padding: file.input.pyramid_padding as i64,
            outer_padding: file.input.pyramid_outer_padding as i64,
            device: device.clone(),
        })
    }

    /// Detect faces, best first.
    pub fn detect(&self, img: &RgbImage, opts: &DetectOptions) -> Result<Vec<FaceBox>> {
        let (mut w, mut h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let mut pixels = std::borrow::Cow::Borrowed(img.as_raw().as_slice());
        for _ in 0..opts.upsample {
            // pyramid_up with pyramid_down<2>: (2H+1) × (2W+2), bilinear
            let (nw, nh) = (2 * w + 2, 2 * h + 1);
            pixels = std::borrow::Cow::Owned(resize::resize_rgb(&pixels, w, h, nw, nh));
            (w, h) = (nw, nh);
        }
        let tiling = pyramid::tiling(h as i64, w as i64, self.padding, self.outer_padding);
        if tiling.rects.is_empty() {
            return Ok(Vec::new());
        }
        let canvas = self.canvas(&pixels, w, h, &tiling);
        let mut dets = self.score(&canvas, &tiling, opts.threshold)?;
        dets.sort_by(|a, b| b.1.total_cmp(&a.1));
        // dlib's NMS on integer rectangles, best first
        let mut kept: Vec<(Rect, f32)> = Vec::new();
        for (r, s) in dets {
            if kept.iter().any(|(k, _)| self.overlaps(k, &r)) {
                continue;
            }
            kept.push((r, s));
        }
        let mut out = Vec::with_capacity(kept.len());
        for (r, score) in kept {
            let (mut a, mut b) = (
                Point::new(r.left as f64, r.top as f64),
                Point::new(r.right as f64, r.bottom as f64),
            );
            for _ in 0..opts.upsample {
                a = Point::new(a.x / 2.0 - 1.25, a.y / 2.0 - 0.75);
                b = Point::new(b.x / 2.0 - 1.25, b.y / 2.0 - 0.75);
            }
            let fb = FaceBox {
                left: a.x.round() as i64,
                top: a.y.round() as i64,
                right: b.x.round() as i64,
                bottom: b.y.round() as i64,
                score,
            };
            if (fb.right - fb.left + 1) < i64::from(opts.min_face_size) {
                continue;
            }
            out.push(fb);
            if opts.max_faces > 0 && out.len() == opts.max_faces {
                break;
            }
        }
        Ok(out)
    }

    /// dlib's `test_box_overlap`: intersection over the bounding box of both, or coverage.
    fn overlaps(&self, a: &Rect, b: &Rect) -> bool {
        let inner = a.intersect(b).area() as f64;
        if inner == 0.0 {
            return false;
        }
        let outer = Rect::new(
            a.left.min(b.left),
            a.top.min(b.top),
            a.right.max(b.right),
            a.bottom.max(b.bottom),
        )
        .area() as f64;
        inner / outer > self.nms.0
            || inner / a.area() as f64 > self.nms.1
            || inner / b.area() as f64 > self.nms.1
    }

    /// The normalised tiled pyramid, channels-last.
    fn canvas(&self, rgb: &[u8], w: usize, h: usize, t: &pyramid::Tiling) -> Vec<f32> {
        let (cw, ch) = (t.width, t.height);
        let mut planes = vec![vec![0f32; cw * ch]; 3];
        let r0 = t.rects[0];
        for (k, plane) in planes.iter_mut().enumerate() {
            for y in 0..h {
                let dst = &mut plane[(r0.top as usize + y) * cw + r0.left as usize..][..w];
                for (x, d) in dst.iter_mut().enumerate() {
                    *d = (f32::from(rgb[(y * w + x) * 3 + k]) - self.mean_rgb[k]) / 256.0;
                }
            }
            for i in 1..t.rects.len() {
                let (s, d) = (t.rects[i - 1], t.rects[i]);
                let src_off = s.top as usize * cw + s.left as usize;
                let dst_off = d.top as usize * cw + d.left as usize;
                // source and destination never overlap; copy the source level out first
                let src: Vec<f32> = plane
                    [src_off..src_off + (s.height() as usize - 1) * cw + s.width() as usize]
                    .to_vec();
                resize::resize_plane_f32(
                    &src,
                    s.width() as usize,
                    s.height() as usize,
                    cw,
                    &mut plane[dst_off..],
                    d.width() as usize,
                    d.height() as usize,
                    cw,
                );
            }
        }
        let mut nhwc = Vec::with_capacity(cw * ch * 3);
        for ((r, g), b) in planes[0].iter().zip(&planes[1]).zip(&planes[2]) {
            nhwc.extend_from_slice(&[*r, *g, *b]);
        }
        nhwc
    }

    /// Run the network over the canvas in strips; every score above `threshold` becomes a
    /// window in image coordinates.
    fn score(
        &self,
        canvas: &[f32],
        t: &pyramid::Tiling,
        threshold: f32,
    ) -> Result<Vec<(Rect, f32)>> {
        let (cw, ch) = (t.width, t.height);
        // Geometry of the strided (unpadded) front and the padded back of the network.
        let front: Vec<&ConvStep> = self.steps.iter().take_while(|s| s.stride > 1).collect();
        let back = &self.steps[front.len()..];
        let factor: usize = front.iter().map(|s| s.stride).product();
        if front.iter().any(|s| s.pad != 0) || back.iter().any(|s| s.stride != 1) {
            return Err(Error::ModelFormat {
                file: "mmod_human_face_detector.dat".into(),
                offset: 0,
                message: "unexpected detector geometry".into(),
            });
        }
        // rows of the stride-`factor` map: out = (in − k)/s + 1 per front layer
        let map_rows = |mut n: usize| {
            for s in &front {
                n = if n < s.k { 0 } else { (n - s.k) / s.stride + 1 };
            }
            n
        };
        let total = map_rows(ch);
        if total == 0 || map_rows(cw) == 0 {
            return Ok(Vec::new());
        }
        // Input rows that feed map rows [a, b): [factor·a, factor·(b−1) + span).
        let span = front
            .iter()
            .rev()
            .fold(1usize, |acc, s| (acc - 1) * s.stride + s.k);
        let halo: usize = back.iter().map(|s| s.pad).sum();
        let per_strip = (STRIP_PIXELS / (factor * cw.max(1))).max(2 * halo + 8);
        let mut out = Vec::new();
        let mut r0 = 0;
        while r0 < total {
            let r1 = (r0 + per_strip).min(total);
            let a = r0.saturating_sub(halo);
            let b = (r1 + halo).min(total);
            let in0 = factor * a;
            let in1 = (factor * (b - 1) + span).min(ch);
            let strip = Tensor::from_slice(
                &canvas[in0 * cw * 3..in1 * cw * 3],
                (1, in1 - in0, cw, 3),
                &self.device,
            )?;
            let mut x = strip;
            // Each ReLU is applied by the consumer: fused into the next im2col, or explicit
            // before the tap-wise head.
            let mut pending_relu = false;
            for s in &self.steps {
                x = match &s.taps {
                    Some(t) => t.forward(&if pending_relu { x.relu()? } else { x })?,
                    None => conv_gemm_relu_in(&x, &s.weight, s.k, s.stride, s.pad, pending_relu)?,
                };
                pending_relu = s.relu;
            }
            if pending_relu {
                x = x.relu()?;
            }
            let (_, mh, mw, _) = x.dims4()?;
            let scores: Vec<f32> = x.flatten_all()?.to_vec1()?;
            for row in r0..r1 {
                let local = row - a;
                if local >= mh {
                    break;
                }
                for col in 0..mw {
                    let s = scores[local * mw + col];
                    if s > threshold {
                        out.push((self.window_rect(t, row, col), s));
                    }
                }
            }
            r0 = r1;
        }
        Ok(out)
    }

    /// The detection window centred on map cell (row, col), in image coordinates.
    fn window_rect(&self, t: &pyramid::Tiling, row: usize, col: usize) -> Rect {
        // output → input through every convolution: p·stride − pad + k/2
        let (mut x, mut y) = (col as f64, row as f64);
        for s in self.steps.iter().rev() {
            let off = (s.k / 2) as f64 - s.pad as f64;
            x = x * s.stride as f64 + off;
            y = y * s.stride as f64 + off;
        }
        let (w, h) = (self.window.0 - 1.0, self.window.1 - 1.0);
        let (a, b) =
            pyramid::canvas_to_image(t, x - w / 2.0, y - h / 2.0, x + w / 2.0, y + h / 2.0);
        Rect::new(
            a.x.round() as i64,
            a.y.round() as i64,
            b.x.round() as i64,
            b.y.round() as i64,
        )
    }
}
