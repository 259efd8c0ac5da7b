//! Face image quality: is this capture good enough to recognise?
//!
//! Measures modelled on the ISO/IEC 29794-5 components that BSI's OFIQ implements, computed
//! from the image, the detected box, the five landmarks and the aligned chip in well under a
//! millisecond, plus a recognition-aware **unified score** that costs four extra embeddings.
//! Each [`Measure`] carries its raw value and a 0–100 scalar (higher is better); a [`Policy`]
//! turns them into stable [`Reason`] codes. Definitions, thresholds and the measurements behind
//! the defaults are in `docs/QUALITY.md`.
//!
//! | measure | raw value |
//! | --- | --- |
//! | `face_count` | faces the detector found in the image |
//! | `inter_eye_distance` | pixels between the eye centres |
//! | `face_height` | pixels, detector box |
//! | `face_inside` | fraction of the aligned face region (the chip's footprint) inside the image |
//! | `yaw`, `pitch`, `roll` | degrees ([`pose`]) |
//! | `sharpness` | variance of the Laplacian of the chip's face area (grey levels²) |
//! | `luminance_mean`, `luminance_std` | of the chip's face area, 0–1 |
//! | `under_exposure`, `over_exposure` | fraction of face pixels below 0.1 / above 0.95 |
//! | `dynamic_range` | 99th − 1st percentile of the face area's luminance, 0–1 |
//! | `unified` | mean distance of five perturbed embeddings (flip, ±1 px shifts) to their mean |

pub mod pose;

use image::RgbImage;
use serde::Serialize;

use crate::align::{chip_details, extract_chip, CHIP_PADDING, CHIP_SIZE};
use crate::detect::FaceBox;
use crate::embed::{Descriptor, Embedder};
use crate::geometry::Point;
use crate::landmarks::Landmarks;
use crate::Result;

/// One quality measure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measure {
    pub raw: f32,
    /// 0 (worst) to 100 (best).
    pub scalar: f32,
}

impl Measure {
    fn new(raw: f64, scalar: f64) -> Self {
        Self {
            raw: raw as f32,
            scalar: scalar.clamp(0.0, 100.0) as f32,
        }
    }
}

/// Every measure of one face.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    pub face_count: Measure,
    pub inter_eye_distance: Measure,
    pub face_height: Measure,
    pub face_inside: Measure,
    /// The image side the face region crosses most (`left`, `right`, `top`, `bottom`), if any.
    pub cut_off_side: Option<&'static str>,
    pub yaw: Measure,
    pub pitch: Measure,
    pub roll: Measure,
    pub sharpness: Measure,
    pub luminance_mean: Measure,
    pub luminance_std: Measure,
    pub under_exposure: Measure,
    pub over_exposure: Measure,
    pub dynamic_range: Measure,
    /// Present when computed ([`unified`]).
    pub unified: Option<Measure>,
}

/// Why a capture is refused. The snake_case names and the numbers are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NoFace = 1,
    MultipleFaces = 2,
    FaceTooSmall = 3,
    FaceCutOff = 4,
    YawTooLarge = 5,
    PitchTooLarge = 6,
    RollTooLarge = 7,
    Blurry = 8,
    TooDark = 9,
    TooBright = 10,
    Underexposed = 11,
    Overexposed = 12,
    LowDynamicRange = 13,
    LowUnifiedQuality = 14,
    NotLive = 15,
}

impl Reason {
    /// The stable numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NoFace => "no_face",
            Reason::MultipleFaces => "multiple_faces",
            Reason::FaceTooSmall => "face_too_small",
            Reason::FaceCutOff => "face_cut_off",
            Reason::YawTooLarge => "yaw_too_large",
            Reason::PitchTooLarge => "pitch_too_large",
            Reason::RollTooLarge => "roll_too_large",
            Reason::Blurry => "blurry",
            Reason::TooDark => "too_dark",
            Reason::TooBright => "too_bright",
            Reason::Underexposed => "underexposed",
            Reason::Overexposed => "overexposed",
            Reason::LowDynamicRange => "low_dynamic_range",
            Reason::LowUnifiedQuality => "low_unified_quality",
            Reason::NotLive => "not_live",
        }
    }

    /// Every reason, in code order.
    pub const ALL: [Self; 15] = [
        Reason::NoFace,
        Reason::MultipleFaces,
        Reason::FaceTooSmall,
        Reason::FaceCutOff,
        Reason::YawTooLarge,
        Reason::PitchTooLarge,
        Reason::RollTooLarge,
        Reason::Blurry,
        Reason::TooDark,
        Reason::TooBright,
        Reason::Underexposed,
        Reason::Overexposed,
        Reason::LowDynamicRange,
        Reason::LowUnifiedQuality,
        Reason::NotLive,
    ];

    /// The reason of a stable [`Reason::code`] (what a C host or a stored record holds).
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The reason of a stable [`Reason::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The [`QualityReport`] field whose check gives this reason (`None` for the face's
    /// absence and liveness, which no measure carries).
    pub fn measure(self) -> Option<&'static str> {
        Some(match self {
            Reason::NoFace | Reason::NotLive => return None,
            Reason::MultipleFaces => "face_count",
            Reason::FaceTooSmall => "inter_eye_distance",
            Reason::FaceCutOff => "face_inside",
            Reason::YawTooLarge => "yaw",
            Reason::PitchTooLarge => "pitch",
            Reason::RollTooLarge => "roll",
            Reason::Blurry => "sharpness",
            Reason::TooDark | Reason::TooBright => "luminance_mean",
            Reason::Underexposed => "under_exposure",
            Reason::Overexposed => "over_exposure",
            Reason::LowDynamicRange => "dynamic_range",
            Reason::LowUnifiedQuality => "unified",
        })
    }
}

/// Thresholds on raw values (a measure fails when outside them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Policy {
    /// Refuse images with more than one face (else the largest face is assessed).
    pub single_face: bool,
    pub min_inter_eye_distance: f32,
    pub min_face_inside: f32,
    pub max_yaw: f32,
    pub max_pitch: f32,
    pub max_roll: f32,
    pub min_sharpness: f32,
    pub min_luminance: f32,
    pub max_luminance: f32,
    pub max_under_exposure: f32,
    pub max_over_exposure: f32,
    pub min_dynamic_range: f32,
    /// Largest unified raw value (perturbation spread) accepted; `None` skips the unified
    /// score (saves four embeddings).
    pub max_unified: Option<f32>,
    /// Require a live face (needs a liveness detector).
    pub require_live: bool,
}

impl Policy {
    /// For enrollment: one face, frontal, sharp, well lit, live.
    pub fn enrollment() -> Self {
        Self {
            single_face: true,
            min_inter_eye_distance: 60.0,
            min_face_inside: 0.9,
            max_yaw: 30.0,
            max_pitch: 30.0,
            max_roll: 30.0,
            min_sharpness: 15.0,
            min_luminance: 0.15,
            max_luminance: 0.9,
            max_under_exposure: 0.35,
            max_over_exposure: 0.2,
            min_dynamic_range: 0.2,
            max_unified: Some(0.12),
            require_live: true,
        }
    }

    /// For verification probes: more tolerant; the largest face is used.
    pub fn verification() -> Self {
        Self {
            single_face: false,
            min_inter_eye_distance: 25.0,
            min_face_inside: 0.75,
            max_yaw: 45.0,
            max_pitch: 40.0,
            max_roll: 45.0,
            min_sharpness: 10.0,
            min_luminance: 0.08,
            max_luminance: 0.95,
            max_under_exposure: 0.6,
            max_over_exposure: 0.4,
            min_dynamic_range: 0.1,
            max_unified: None,
            require_live: true,
        }
    }

    /// Reasons this report fails the policy (empty when it passes). Face count and liveness
    /// are judged by the caller, which knows them.
    pub fn check(&self, q: &QualityReport) -> Vec<Reason> {
        let mut r = Vec::new();
        let mut fail = |bad: bool, reason| {
            if bad {
                r.push(reason);
            }
        };
        fail(
            q.inter_eye_distance.raw < self.min_inter_eye_distance,
            Reason::FaceTooSmall,
        );
        fail(q.face_inside.raw < self.min_face_inside, Reason::FaceCutOff);
        fail(q.yaw.raw.abs() > self.max_yaw, Reason::YawTooLarge);
        fail(q.pitch.raw.abs() > self.max_pitch, Reason::PitchTooLarge);
        fail(q.roll.raw.abs() > self.max_roll, Reason::RollTooLarge);
        fail(q.sharpness.raw < self.min_sharpness, Reason::Blurry);
        fail(q.luminance_mean.raw < self.min_luminance, Reason::TooDark);
        fail(q.luminance_mean.raw > self.max_luminance, Reason::TooBright);
        fail(
            q.under_exposure.raw > self.max_under_exposure,
            Reason::Underexposed,
        );
        fail(
            q.over_exposure.raw > self.max_over_exposure,
            Reason::Overexposed,
        );
        fail(
            q.dynamic_range.raw < self.min_dynamic_range,
            Reason::LowDynamicRange,
        );
        if let (Some(max), Some(u)) = (self.max_unified, q.unified) {
            fail(u.raw > max, Reason::LowUnifiedQuality);
        }
        r
    }
}

/// Grey levels (0–1) of the chip's face area (the template square inside the padding).
fn face_area_luma(chip: &RgbImage) -> (Vec<f32>, usize) {
    let n = chip.width() as usize;
    let pad = (n as f64 * CHIP_PADDING / (1.0 + 2.0 * CHIP_PADDING)).round() as usize;
    let side = n.saturating_sub(2 * pad).max(1);
    let mut out = Vec::with_capacity(side * side);
    for y in pad..pad + side {
        for x in pad..pad + side {
            let p = chip.get_pixel(x.min(n - 1) as u32, y.min(n - 1) as u32).0;
            out.push(
                (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
                    / 255.0,
            );
        }
    }
    (out, side)
}

/// Fraction of the quadrilateral `q` inside `w × h` (20×20 samples), and the side it crosses
/// most.
fn inside_fraction(q: &[Point; 4], w: f64, h: f64) -> (f64, Option<&'static str>) {
    let steps = 20;
    let mut inside = 0;
    let mut out = [0usize; 4];
    for i in 0..steps {
        for j in 0..steps {
            let (u, v) = (
                (i as f64 + 0.5) / steps as f64,
                (j as f64 + 0.5) / steps as f64,
            );
            let top = (
                q[0].x + (q[1].x - q[0].x) * u,
                q[0].y + (q[1].y - q[0].y) * u,
            );
            let bot = (
                q[3].x + (q[2].x - q[3].x) * u,
                q[3].y + (q[2].y - q[3].y) * u,
            );
            let (x, y) = (top.0 + (bot.0 - top.0) * v, top.1 + (bot.1 - top.1) * v);
            let sides = [x < 0.0, x > w - 1.0, y < 0.0, y > h - 1.0];
            if sides.iter().any(|&s| s) {
                for (o, s) in out.iter_mut().zip(sides) {
                    *o += usize::from(s);
                }
            } else {
                inside += 1;
            }
        }
    }
    let worst = (0..4).max_by_key(|&i| out[i]).filter(|&i| out[i] > 0);
    (
        inside as f64 / (steps * steps) as f64,
        worst.map(|i| ["left", "right", "top", "bottom"][i]),
    )
}

fn percentile(sorted: &[f32], p: f64) -> f32 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The image measures of one face (everything but the unified score). `face_count` is the
/// number of faces found in the image; `chip` is the face's aligned chip.
pub fn measure(
    img: &RgbImage,
    face: &FaceBox,
    landmarks: &Landmarks,
    chip: &RgbImage,
    face_count: usize,
) -> QualityReport {
    let p = pose::estimate(landmarks);
    let details = chip_details(landmarks, CHIP_SIZE, CHIP_PADDING);
    let (inside, side) = inside_fraction(
        &details.corners(),
        f64::from(img.width()),
        f64::from(img.height()),
    );
    let (luma, side_px) = face_area_luma(chip);
    let n = luma.len().max(1) as f64;
    let mean = luma.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = luma
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let under = luma.iter().filter(|&&v| v < 0.1).count() as f64 / n;
    let over = luma.iter().filter(|&&v| v > 0.95).count() as f64 / n;
    let mut sorted = luma.clone();
    sorted.sort_by(f32::total_cmp);
    let range = f64::from(percentile(&sorted, 0.99) - percentile(&sorted, 0.01));
    // Laplacian (4-neighbour) variance in grey levels 0–255.
    let mut lap = Vec::with_capacity(side_px * side_px);
    for y in 1..side_px.saturating_sub(1) {
        for x in 1..side_px.saturating_sub(1) {
            let at = |xx: usize, yy: usize| f64::from(luma[yy * side_px + xx]) * 255.0;
            lap.push(at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y));
        }
    }
    let ln = lap.len().max(1) as f64;
    let lmean = lap.iter().sum::<f64>() / ln;
    let sharp = lap.iter().map(|v| (v - lmean).powi(2)).sum::<f64>() / ln;
    let angle = |a: f64| Measure::new(a, 100.0 * a.to_radians().cos().max(0.0));
    QualityReport {
        face_count: Measure::new(face_count as f64, if face_count == 1 { 100.0 } else { 0.0 }),
        inter_eye_distance: Measure::new(p.eye_distance, 100.0 * p.eye_distance / 60.0),
        face_height: Measure::new(
            face.rect().height() as f64,
            100.0 * face.rect().height() as f64 / 120.0,
        ),
        face_inside: Measure::new(inside, 100.0 * inside),
        cut_off_side: side,
        yaw: angle(p.yaw),
        pitch: angle(p.pitch),
        roll: angle(p.roll),
        sharpness: Measure::new(sharp, 100.0 * (1.0 - (-sharp / 100.0).exp())),
        luminance_mean: Measure::new(mean, 100.0 * (1.0 - (mean - 0.5).abs() * 2.0)),
        luminance_std: Measure::new(var.sqrt(), 100.0 * var.sqrt() / 0.25),
        under_exposure: Measure::new(under, 100.0 * (1.0 - under)),
        over_exposure: Measure::new(over, 100.0 * (1.0 - over)),
        dynamic_range: Measure::new(range, 100.0 * range),
        unified: None,
    }
}

/// Landmarks moved by `(dx, dy)` pixels.
fn shifted(lm: &Landmarks, dx: f64, dy: f64) -> Landmarks {
    Landmarks {
        points: lm.points.map(|p| Point::new(p.x + dx, p.y + dy)),
    }
}

/// The recognition-aware unified score: embed the face five ways — the chip, its mirror image
/// and chips cut with the landmarks moved by one pixel left, right and down — and measure how
/// far the descriptors spread (mean distance to their mean). A face the network recognises
/// confidently barely moves; blur, occlusion, pose and poor light spread the descriptors (in
/// the spirit of SER-FIQ's stochastic embeddings, with deterministic perturbations). Scalar:
/// `100 · exp(−spread / 0.08)`.
pub fn unified(embedder: &Embedder, img: &RgbImage, landmarks: &Landmarks) -> Result<Measure> {
    Ok(unified_and_descriptor(embedder, img, landmarks)?.0)
}

/// [`unified`] and, from the same batch, the face's ordinary descriptor (the unperturbed
/// chip's), so that a caller who needs both pays for five embeddings, not six.
pub fn unified_and_descriptor(
    embedder: &Embedder,
    img: &RgbImage,
    landmarks: &Landmarks,
) -> Result<(Measure, Descriptor)> {
    let d = chip_details(landmarks, CHIP_SIZE, CHIP_PADDING);
    let chip = extract_chip(img, &d);
    let mut chips = vec![chip.clone(), image::imageops::flip_horizontal(&chip)];
    for (dx, dy) in [(-1.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
        let m = shifted(landmarks, dx, dy);
        chips.push(extract_chip(
            img,
            &chip_details(&m, CHIP_SIZE, CHIP_PADDING),
        ));
    }
    let e: Vec<Descriptor> = embedder.embed_chips(&chips)?;
    let dim = e.first().map_or(0, |v| v.len());
    let mut mean = vec![0f32; dim];
    for v in &e {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += x / e.len() as f32;
        }
    }
    let spread = e
        .iter()
        .map(|v| {
            v.iter()
                .zip(&mean)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt()
        })
        .sum::<f32>()
        / e.len().max(1) as f32;
    let s = f64::from(spread);
    let descriptor = e.first().copied().ok_or(crate::Error::BufferLength {
        expected: chips.len(),
        got: 0,
    })?;
    Ok((Measure::new(s, 100.0 * (-s / 0.08).exp()), descriptor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_grey_chip_is_blurry_and_flat() {
        let chip = RgbImage::from_pixel(150, 150, image::Rgb([128, 128, 128]));
        let img = RgbImage::from_pixel(300, 300, image::Rgb([128, 128, 128]));
        let lm = Landmarks {
            points: [
                Point::new(180.0, 120.0),
                Point::new(160.0, 120.0),
                Point::new(120.0, 120.0),
                Point::new(140.0, 120.0),
                Point::new(150.0, 149.6),
            ],
        };
        let face = FaceBox {
            left: 100,
            top: 90,
            right: 200,
            bottom: 190,
            score: 1.0,
        };
        let q = measure(&img, &face, &lm, &chip, 1);
        assert!(q.sharpness.raw < 1e-6);
        assert!(q.dynamic_range.raw < 1e-6);
        assert!((q.luminance_mean.raw - 0.502).abs() < 0.01);
        assert_eq!(q.face_inside.raw, 1.0);
        assert!(q.yaw.raw.abs() < 1.0 && q.roll.raw.abs() < 1e-3, "{q:?}");
        let reasons = Policy::enrollment().check(&q);
        assert!(reasons.contains(&Reason::Blurry));
        assert!(reasons.contains(&Reason::LowDynamicRange));
        assert!(!reasons.contains(&Reason::FaceCutOff));
        // a face at the image's edge is cut off
        let edge = shifted(&lm, -150.0, 0.0);
        let q = measure(&img, &face, &edge, &chip, 1);
        assert!(q.face_inside.raw < 0.7, "{}", q.face_inside.raw);
        assert_eq!(q.cut_off_side, Some("left"));
    }

    #[test]
    fn reason_codes_are_stable() {
        assert_eq!(Reason::NoFace.code(), 1);
        assert_eq!(Reason::NotLive.code(), 15);
        assert_eq!(
            serde_json::to_string(&Reason::FaceCutOff).unwrap(),
            "\"face_cut_off\""
        );
        assert_eq!(Reason::LowUnifiedQuality.name(), "low_unified_quality");
        for (i, r) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(r.code() as usize, i + 1);
            assert_eq!(Reason::from_code(r.code()), Some(r));
            assert_eq!(Reason::from_name(r.name()), Some(r));
            // the name is the serde name
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.name())
            );
        }
        assert_eq!(Reason::from_code(0), None);
        assert_eq!(Reason::from_code(16), None);
        assert_eq!(Reason::Blurry.measure(), Some("sharpness"));
        assert_eq!(Reason::NotLive.measure(), None);
    }
}
