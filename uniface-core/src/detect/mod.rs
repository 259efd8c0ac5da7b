//! Face detection with dlib's MMOD CNN (`mmod_human_face_detector.dat`; Davis E. King,
//! "Max-Margin Object Detection", 2015; CC0-1.0 weights).
//!
//! As dlib does: optionally upsample the image 2× (`upsample` times, bilinear), pack it and its
//! 5/6-scaled copies into one tiled canvas, normalise it ((pixel − mean)/256), run the
//! fully-convolutional network (three 5×5 stride-2 convolutions, three 5×5 convolutions of 45
//! filters, a 9×9 scoring head; batch norm folded), turn every positive score of the stride-8
//! map into an 80×80 window mapped back through the pyramid, and keep the best-scoring windows
//! with dlib's non-maximum suppression.
//!
//! # Resolution policy
//!
//! Memory is bounded by [`DetectOptions::max_canvas_pixels`], not by the photo. When the
//! requested upsampling of the photo fits the budget, detection is exactly dlib's. When it does
//! not (a 12-megapixel phone photo, or `upsample` 7 on a small one), the detector sees a copy
//! resized to the largest scale whose canvas fits (area-averaged when shrinking, bilinear when
//! enlarging), boxes are mapped back to the original, and the [`DetectPlan`] says so
//! ([`Detection::plan`], [`DetectPlan::warning`]). Landmarks and chips are then taken from the
//! full-resolution photo by the later stages. The smallest face found is about
//! [`DetectPlan::smallest_face`] pixels wide (80 pixels at the scale the detector saw).
//!
//! The canvas is kept as three `f32` planes (12 bytes a pixel); the network runs over it in
//! horizontal strips, each interleaved on its own, so the working set is the canvas plus one
//! strip.

mod pyramid;
mod resize;
mod selection;

pub use selection::FaceSelection;

use std::path::Path;

use ::image::RgbImage;
use candle_core::{Device, Tensor};
use rayon::prelude::*;

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
    /// Largest pyramid canvas, in pixels, the detector builds (12 bytes each). A photo whose
    /// requested upsampling needs more is detected on a resized copy (see the module's
    /// resolution policy). Between [`MIN_CANVAS_PIXELS`] and [`MAX_CANVAS_PIXELS`]; default
    /// [`DEFAULT_MAX_CANVAS_PIXELS`].
    pub max_canvas_pixels: u64,
}

/// Default canvas budget: what a 1280×1280 photo needs at `upsample` 1 (its tiled pyramid is
/// 2584×9250 pixels, 287 MB of `f32` planes).
pub const DEFAULT_MAX_CANVAS_PIXELS: u64 = 2584 * 9250;
/// Smallest accepted canvas budget (a 256×256 image's pyramid, about).
pub const MIN_CANVAS_PIXELS: u64 = 1 << 16;
/// Largest accepted canvas budget (24 GB of planes).
pub const MAX_CANVAS_PIXELS: u64 = 1 << 31;

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            upsample: 1,
            threshold: 0.0,
            min_face_size: 0,
            max_faces: 0,
            max_canvas_pixels: DEFAULT_MAX_CANVAS_PIXELS,
        }
    }
}

impl DetectOptions {
    /// The typed error for out-of-range options (the threshold must be finite, the canvas
    /// budget in range).
    pub fn validate(&self) -> Result<()> {
        if !self.threshold.is_finite() {
            return Err(Error::InvalidArgument {
                name: "threshold",
                message: format!("must be a finite number, got {}", self.threshold),
            });
        }
        if !(MIN_CANVAS_PIXELS..=MAX_CANVAS_PIXELS).contains(&self.max_canvas_pixels) {
            return Err(Error::InvalidArgument {
                name: "max_canvas_pixels",
                message: format!(
                    "must be between {MIN_CANVAS_PIXELS} and {MAX_CANVAS_PIXELS}, got {}",
                    self.max_canvas_pixels
                ),
            });
        }
        Ok(())
    }
}

/// How a photo was presented to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Upsampled exactly as requested, as dlib does.
    Exact,
    /// Resized to fit the canvas budget (less resolution than requested).
    Reduced,
}

/// What the detector did with one photo: the resolution it saw and the canvas it built.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DetectPlan {
    /// The photo's size.
    pub width: u32,
    pub height: u32,
    pub requested_upsample: u32,
    pub resolution: Resolution,
    /// dlib upsampling steps applied (0 when [`Resolution::Reduced`]).
    pub upsample: u32,
    /// Size of the image the network saw.
    pub detect_width: u32,
    pub detect_height: u32,
    /// Pixels of the pyramid canvas.
    pub canvas_pixels: u64,
    /// The budget it had to fit.
    pub max_canvas_pixels: u64,
}

/// The detector window's side at pyramid level 0 (dlib's face model: 80×80).
const WINDOW_SIDE: f64 = 80.0;

impl DetectPlan {
    /// Scale of the image the network saw relative to the photo (2 for upsample 1).
    pub fn scale(&self) -> f64 {
        f64::from(self.detect_width) / f64::from(self.width.max(1))
    }

    /// About the narrowest face found, in the photo's pixels.
    pub fn smallest_face(&self) -> f64 {
        WINDOW_SIDE / self.scale()
    }

    /// Estimated peak bytes the detector takes for this photo beyond the photo itself: the
    /// copy it sees, the canvas levels it keeps, and one strip of the network (measured: a
    /// 4000×3000 photo at the default budget takes about 210 MB).
    pub fn memory_bytes(&self) -> u64 {
        let seen = if self.resolution == Resolution::Exact && self.upsample == 0 {
            0
        } else {
            3 * u64::from(self.detect_width) * u64::from(self.detect_height)
        };
        seen + 2 * self.canvas_pixels + 48 * self.canvas_pixels.min(STRIP_PIXELS as u64)
    }

    /// A sentence for the user when the photo was seen at less than the requested resolution.
    pub fn warning(&self) -> Option<String> {
        (self.resolution == Resolution::Reduced).then(|| {
            format!(
                "{}x{} at upsample {} needs more than the {}-pixel canvas budget: detected at \
                 {:.2}x ({}x{}), so faces narrower than about {:.0} pixels are missed \
                 (raise max_canvas_pixels to find them)",
                self.width,
                self.height,
                self.requested_upsample,
                self.max_canvas_pixels,
                self.scale(),
                self.detect_width,
                self.detect_height,
                self.smallest_face(),
            )
        })
    }
}

/// Faces found in one photo, best first, and how the photo was presented to the network.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detection {
    pub faces: Vec<FaceBox>,
    pub plan: DetectPlan,
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
/// 100 MB whatever the photo's size.
const STRIP_PIXELS: usize = 1 << 21;

/// dlib's `pyramid_up` size: (2W + 2) × (2H + 1); `None` past `u32`.
fn upsampled(w: u64, h: u64, times: u32) -> Option<(u64, u64)> {
    let (mut w, mut h) = (w, h);
    for _ in 0..times {
        (w, h) = (w.checked_mul(2)? + 2, h.checked_mul(2)? + 1);
        if w > u64::from(u32::MAX) || h > u64::from(u32::MAX) {
            return None;
        }
    }
    Some((w, h))
}

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

    /// Pixels of the pyramid canvas for a `w`×`h` image at level 0.
    fn canvas_pixels(&self, w: u64, h: u64) -> u64 {
        let t = pyramid::tiling(h as i64, w as i64, self.padding, self.outer_padding);
        t.width as u64 * t.height as u64
    }

    /// How a `width`×`height` photo would be presented to the network under `opts` (see the
    /// module's resolution policy).
    pub fn plan(&self, width: u32, height: u32, opts: &DetectOptions) -> Result<DetectPlan> {
        opts.validate()?;
        let budget = opts.max_canvas_pixels;
        let (w, h) = (u64::from(width), u64::from(height));
        let mut plan = DetectPlan {
            width,
            height,
            requested_upsample: opts.upsample,
            resolution: Resolution::Exact,
            upsample: opts.upsample,
            detect_width: width,
            detect_height: height,
            canvas_pixels: 0,
            max_canvas_pixels: budget,
        };
        if w == 0 || h == 0 {
            return Ok(plan);
        }
        if let Some((uw, uh)) = upsampled(w, h, opts.upsample) {
            // (past the budget the canvas is not computed: its size could overflow)
            let canvas = if uw * uh <= budget {
                self.canvas_pixels(uw, uh)
            } else {
                u64::MAX
            };
            if canvas <= budget {
                plan.detect_width = uw as u32;
                plan.detect_height = uh as u32;
                plan.canvas_pixels = canvas;
                return Ok(plan);
            }
        }
        // The largest scale, at most the requested one, whose canvas fits: the canvas grows
        // with the area, so start from the square root of the ratio and step down.
        let most = 2f64.powi(opts.upsample.min(62) as i32);
        let at = |s: f64| {
            let (sw, sh) = (
                ((w as f64 * s).round() as u64).max(1),
                ((h as f64 * s).round() as u64).max(1),
            );
            (sw, sh, self.canvas_pixels(sw, sh))
        };
        let unit = self.canvas_pixels(w, h).max(1) as f64;
        let mut s = (budget as f64 / unit).sqrt().min(most);
        let (mut sw, mut sh, mut canvas) = at(s);
        while canvas > budget && sw > 1 && sh > 1 {
            s *= 0.995;
            (sw, sh, canvas) = at(s);
        }
        plan.resolution = Resolution::Reduced;
        plan.upsample = 0;
        plan.detect_width = sw as u32;
        plan.detect_height = sh as u32;
        plan.canvas_pixels = canvas;
        Ok(plan)
    }

    /// Detect faces, best first (boxes in the photo's pixels).
    pub fn detect(&self, img: &RgbImage, opts: &DetectOptions) -> Result<Vec<FaceBox>> {
        Ok(self.detect_planned(img, opts)?.faces)
    }

    /// Detect faces, best first, with the plan the photo was detected under.
    pub fn detect_planned(&self, img: &RgbImage, opts: &DetectOptions) -> Result<Detection> {
        let plan = self.plan(img.width(), img.height(), opts)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Ok(Detection {
                faces: Vec::new(),
                plan,
            });
        }
        let (dw, dh) = (plan.detect_width as usize, plan.detect_height as usize);
        let raw = img.as_raw().as_slice();
        let pixels: std::borrow::Cow<[u8]> = match plan.resolution {
            Resolution::Exact => {
                let mut pixels = std::borrow::Cow::Borrowed(raw);
                let (mut cw, mut ch) = (w, h);
                for _ in 0..plan.upsample {
                    // pyramid_up with pyramid_down<2>: (2H+1) × (2W+2), bilinear
                    let (nw, nh) = (2 * cw + 2, 2 * ch + 1);
                    pixels = std::borrow::Cow::Owned(resize::resize_rgb(&pixels, cw, ch, nw, nh));
                    (cw, ch) = (nw, nh);
                }
                pixels
            }
            Resolution::Reduced if dw < w => resize::shrink_rgb(raw, w, h, dw, dh).into(),
            Resolution::Reduced => resize::resize_rgb(raw, w, h, dw, dh).into(),
        };
        // detector pixels → photo pixels
        let back: Box<dyn Fn(Point) -> Point> = match plan.resolution {
            Resolution::Exact => {
                let times = plan.upsample;
                Box::new(move |mut p: Point| {
                    for _ in 0..times {
                        p = Point::new(p.x / 2.0 - 1.25, p.y / 2.0 - 0.75);
                    }
                    p
                })
            }
            // area averaging: pixel centres scale about the half-pixel
            Resolution::Reduced if dw < w => {
                let (sx, sy) = (w as f64 / dw as f64, h as f64 / dh as f64);
                Box::new(move |p: Point| Point::new((p.x + 0.5) * sx - 0.5, (p.y + 0.5) * sy - 0.5))
            }
            // dlib's bilinear resize samples at x·(n_in − 1)/(n_out − 1)
            Resolution::Reduced => {
                let sx = (w as f64 - 1.0) / (dw.max(2) - 1) as f64;
                let sy = (h as f64 - 1.0) / (dh.max(2) - 1) as f64;
                Box::new(move |p: Point| Point::new(p.x * sx, p.y * sy))
            }
        };
        let faces = self.detect_pixels(&pixels, dw, dh, opts, back)?;
        Ok(Detection { faces, plan })
    }

    /// Detection on the image the network sees; `back` maps its points to the photo.
    fn detect_pixels(
        &self,
        pixels: &[u8],
        w: usize,
        h: usize,
        opts: &DetectOptions,
        back: Box<dyn Fn(Point) -> Point>,
    ) -> Result<Vec<FaceBox>> {
        let tiling = pyramid::tiling(h as i64, w as i64, self.padding, self.outer_padding);
        if tiling.rects.is_empty() {
            return Ok(Vec::new());
        }
        let canvas = Canvas::new(pixels, self.mean_rgb, &tiling);
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
            let a = back(Point::new(r.left as f64, r.top as f64));
            let b = back(Point::new(r.right as f64, r.bottom as f64));
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

    /// Run the network over the canvas in strips; every score above `threshold` becomes a
    /// window in image coordinates.
    fn score(
        &self,
        canvas: &Canvas,
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
            let strip =
                Tensor::from_vec(canvas.strip(in0, in1), (1, in1 - in0, cw, 3), &self.device)?;
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

/// dlib's normalised tiled pyramid, produced strip by strip with the values the whole canvas
/// would hold: level 0 is normalised from the image's bytes when a strip needs it, the levels
/// of the canvas's left column are recomputed for each strip from level 0 through a chain of
/// bilinear resizes over just the rows the strip needs, and the small levels of the right
/// column, which every strip near them would otherwise recompute from the whole image, are
/// kept whole (about half of level 0's area, at 12 bytes a pixel).
struct Canvas<'a> {
    rgb: &'a [u8],
    mean: [f32; 3],
    /// (left, top, width, height) of each level on the canvas.
    levels: Vec<(usize, usize, usize, usize)>,
    width: usize,
    /// The levels kept whole, one plane per channel.
    kept: Vec<Option<[Vec<f32>; 3]>>,
}

/// Rows of a level computed at once when a level is kept (bounds the chain's buffers).
const KEEP_ROWS: usize = 64;

impl<'a> Canvas<'a> {
    fn new(rgb: &'a [u8], mean: [f32; 3], t: &pyramid::Tiling) -> Self {
        let levels: Vec<_> = t
            .rects
            .iter()
            .map(|r| {
                (
                    r.left as usize,
                    r.top as usize,
                    r.width() as usize,
                    r.height() as usize,
                )
            })
            .collect();
        let left = levels.first().map_or(0, |l| l.0);
        let mut c = Self {
            rgb,
            mean,
            kept: vec![None; levels.len()],
            levels,
            width: t.width,
        };
        for k in 1..c.levels.len() {
            if c.levels[k].0 == left {
                continue; // left column: recomputed per strip
            }
            let (_, _, w, h) = c.levels[k];
            let planes = std::array::from_fn(|ch| {
                let mut plane = Vec::with_capacity(w * h);
                for a in (0..h).step_by(KEEP_ROWS) {
                    plane.extend(c.rows(k, a, (a + KEEP_ROWS).min(h), ch));
                }
                plane
            });
            c.kept[k] = Some(planes);
        }
        c
    }

    /// Rows `[a, b)` of level `k`, channel `ch`.
    fn rows(&self, k: usize, a: usize, b: usize, ch: usize) -> Vec<f32> {
        let (_, _, w, h) = self.levels[k];
        if k == 0 {
            let (mean, rgb) = (self.mean[ch], &self.rgb[a * w * 3..b * w * 3]);
            let mut out = vec![0f32; (b - a) * w];
            // (rows on every core, written in place: no allocation on the workers)
            out.par_chunks_mut(w)
                .zip(rgb.par_chunks(w * 3))
                .for_each(|(o, p)| {
                    for (v, px) in o.iter_mut().zip(p.chunks_exact(3)) {
                        *v = (f32::from(px[ch]) - mean) / 256.0;
                    }
                });
            return out;
        }
        if let Some(planes) = &self.kept[k] {
            return planes[ch][a * w..b * w].to_vec();
        }
        let (_, _, sw, sh) = self.levels[k - 1];
        let (c, d) = resize::source_span(sh, h, a..b);
        let src = self.rows(k - 1, c, d, ch);
        let mut out = vec![0f32; (b - a) * w];
        resize::resize_plane_rows_f32(&src, c, sw, sh, &mut out, w, h, a..b);
        out
    }

    /// Canvas rows `[y0, y1)`, channels-last.
    fn strip(&self, y0: usize, y1: usize) -> Vec<f32> {
        let cw = self.width;
        let mut out = vec![0f32; (y1 - y0) * cw * 3];
        for (k, &(left, top, w, h)) in self.levels.iter().enumerate() {
            let (from, to) = (y0.max(top), y1.min(top + h));
            if from >= to {
                continue;
            }
            for ch in 0..3 {
                let vals = self.rows(k, from - top, to - top, ch);
                let rows = &mut out[(from - y0) * cw * 3..(to - y0) * cw * 3];
                rows.par_chunks_mut(cw * 3)
                    .zip(vals.par_chunks(w))
                    .for_each(|(dst, row)| {
                        for (x, v) in row.iter().enumerate() {
                            dst[(left + x) * 3 + ch] = *v;
                        }
                    });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_is_a_1280_photo_at_upsample_1() {
        let (w, h) = upsampled(1280, 1280, 1).unwrap();
        let t = pyramid::tiling(h as i64, w as i64, 10, 11);
        assert_eq!((t.width * t.height) as u64, DEFAULT_MAX_CANVAS_PIXELS);
    }

    #[test]
    fn upsampling_sizes_are_checked() {
        assert_eq!(upsampled(250, 250, 1), Some((502, 501)));
        assert_eq!(upsampled(250, 250, 30), None);
        assert_eq!(upsampled(1, 1, u32::MAX), None);
    }

    #[test]
    fn out_of_range_options_are_typed_errors() {
        for bad in [0, MIN_CANVAS_PIXELS - 1, MAX_CANVAS_PIXELS + 1, u64::MAX] {
            let o = DetectOptions {
                max_canvas_pixels: bad,
                ..Default::default()
            };
            assert!(matches!(
                o.validate(),
                Err(Error::InvalidArgument {
                    name: "max_canvas_pixels",
                    ..
                })
            ));
        }
        let o = DetectOptions {
            threshold: f32::NAN,
            ..Default::default()
        };
        assert!(o.validate().is_err());
        assert!(DetectOptions::default().validate().is_ok());
    }
}
