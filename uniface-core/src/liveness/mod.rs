//! Liveness (presentation-attack detection): is the face in front of the camera, or a photo or
//! a screen showing one?
//!
//! [`LivenessDetector`] runs Minivision's two MiniFASNet models (Apache-2.0) as their authors
//! do: MiniFASNetV2 on a crop of 2.7× the face box and MiniFASNetV1SE on a crop of 4.0×, both
//! resized to 80×80; the two softmax outputs are summed and the face is live when "real" is the
//! largest class. Weights come from the model store ([`crate::model_store::LIVENESS_V2`],
//! [`crate::model_store::LIVENESS_V1SE`]); the legacy `torch.save` files are read directly.
//!
//! The reference crops around boxes of its own RetinaFace detector, which frame the whole head;
//! MMOD's boxes are tighter (brows to chin). [`BOX_SCALE`] widens our boxes to the reference's
//! proportions before the crop (how it was chosen is in `docs/QUALITY.md`).
//!
//! The vendor states TPR 97.8 % at FPR 1e-5 on private data; there is no public benchmark of
//! these models, and a handful of sample photos is a smoke test, not an APCER/BPCER figure.

pub mod minifasnet;
pub mod torch_legacy;

use std::path::Path;

use candle_core::Device;
use image::RgbImage;
use serde::Serialize;

use crate::geometry::Rect;
use crate::model_store::{ModelCard, ModelStore, LIVENESS_V1SE, LIVENESS_V2};
use crate::{Error, Result};
pub use minifasnet::{MiniFasNet, INPUT_SIZE};

/// Factor that widens an MMOD box (about its centre) to the framing of the reference
/// detector's boxes before the liveness crops are taken.
pub const BOX_SCALE: f32 = 1.2;

/// Class index of a real face in the models' output.
pub const REAL: usize = 1;

/// One model's verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelScore {
    pub model: &'static str,
    /// Crop size as a multiple of the face box.
    pub crop_scale: f32,
    /// Softmax over (print attack, real, replay attack).
    pub probabilities: [f32; 3],
}

/// The fused verdict for one face.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Liveness {
    /// Mean probability of "real" over the models, 0–1.
    pub score: f32,
    /// "Real" is the largest class of the summed probabilities (the authors' rule).
    pub is_live: bool,
    pub per_model: Vec<ModelScore>,
}

struct Model {
    card: &'static ModelCard,
    crop_scale: f32,
    net: MiniFasNet,
}

/// A [`LivenessDetector`] loaded from a model store on first use: for analyzers that check
/// liveness only when asked (the models are downloaded or read at that moment, once, even
/// when many threads ask at the same time). `Send + Sync`.
pub struct LazyLivenessDetector {
    store: ModelStore,
    cell: std::sync::OnceLock<LivenessDetector>,
    loading: std::sync::Mutex<()>,
}

impl LazyLivenessDetector {
    pub fn new(store: ModelStore) -> Self {
        Self {
            store,
            cell: std::sync::OnceLock::new(),
            loading: std::sync::Mutex::new(()),
        }
    }

    /// The detector, loading it first if needed (a failed load is retried on the next call).
    pub fn get(&self) -> Result<&LivenessDetector> {
        if let Some(d) = self.cell.get() {
            return Ok(d);
        }
        let _one = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = self.cell.get() {
            return Ok(d);
        }
        let d = LivenessDetector::from_store(&self.store)?;
        Ok(self.cell.get_or_init(|| d))
    }
}

/// Both MiniFASNet models, ready to score faces. `Send + Sync`.
pub struct LivenessDetector {
    models: Vec<Model>,
    box_scale: f32,
    device: Device,
}

/// The reference's crop box for a face box `(x, y, w, h)` in an image of `src_w × src_h`:
/// `scale` times the box about its centre (shrunk to fit the image), shifted inside the image;
/// returns inclusive integer corners.
fn crop_box(rect: &Rect, scale: f32, src_w: u32, src_h: u32) -> (i64, i64, i64, i64) {
    let (x, y) = (rect.left as f32, rect.top as f32);
    let (bw, bh) = (rect.width().max(1) as f32, rect.height().max(1) as f32);
    let (sw, sh) = (src_w as f32, src_h as f32);
    let scale = scale.min((sh - 1.0) / bh).min((sw - 1.0) / bw);
    let (nw, nh) = (bw * scale, bh * scale);
    let (cx, cy) = (x + bw / 2.0, y + bh / 2.0);
    let (mut l, mut t, mut r, mut b) = (cx - nw / 2.0, cy - nh / 2.0, cx + nw / 2.0, cy + nh / 2.0);
    if l < 0.0 {
        r -= l;
        l = 0.0;
    }
    if t < 0.0 {
        b -= t;
        t = 0.0;
    }
    if r > sw {
        l -= r - sw;
        r = sw;
    }
    if b > sh {
        t -= b - sh;
        b = sh;
    }
    (l as i64, t as i64, r as i64, b as i64)
}

/// The 80×80 BGR crop (row-major bytes) the models see: the reference's crop box (`scale`
/// times the face box about its centre, shrunk to fit and shifted inside the image) resized
/// with bilinear interpolation (pixel centres aligned, edge pixels clamped).
pub fn crop_bgr(img: &RgbImage, rect: &Rect, scale: f32) -> Result<Vec<u8>> {
    let (w, h) = img.dimensions();
    if w < 2 || h < 2 {
        return Err(Error::Image {
            path: "<image>".into(),
            message: format!("{w}x{h} is too small for a liveness crop"),
        });
    }
    let (l, t, r, b) = crop_box(rect, scale, w, h);
    let (l, t) = (l.clamp(0, i64::from(w) - 1), t.clamp(0, i64::from(h) - 1));
    let (r, b) = (r.clamp(l, i64::from(w) - 1), b.clamp(t, i64::from(h) - 1));
    let (cw, ch) = ((r - l + 1) as f32, (b - t + 1) as f32);
    let n = INPUT_SIZE;
    let (fx, fy) = (cw / n as f32, ch / n as f32);
    let mut out = vec![0u8; n * n * 3];
    let px = |x: i64, y: i64| img.get_pixel((l + x) as u32, (t + y) as u32).0;
    let (maxx, maxy) = (r - l, b - t);
    for oy in 0..n {
        let sy = ((oy as f32 + 0.5) * fy - 0.5).max(0.0);
        let y0 = (sy.floor() as i64).min(maxy);
        let y1 = (y0 + 1).min(maxy);
        let wy = if y0 == maxy { 0.0 } else { sy - y0 as f32 };
        for ox in 0..n {
            let sx = ((ox as f32 + 0.5) * fx - 0.5).max(0.0);
            let x0 = (sx.floor() as i64).min(maxx);
            let x1 = (x0 + 1).min(maxx);
            let wx = if x0 == maxx { 0.0 } else { sx - x0 as f32 };
            let (a, bb, c, d) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
            for ch in 0..3 {
                let top = f32::from(a[ch]) * (1.0 - wx) + f32::from(bb[ch]) * wx;
                let bot = f32::from(c[ch]) * (1.0 - wx) + f32::from(d[ch]) * wx;
                let v = top * (1.0 - wy) + bot * wy;
                // BGR order
                out[(oy * n + ox) * 3 + (2 - ch)] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(out)
}

impl LivenessDetector {
    /// Load the two models from their `.pth` files (V2 2.7×, V1SE 4.0×).
    pub fn from_files(v2: &Path, v1se: &Path, device: &Device) -> Result<Self> {
        let mut models = Vec::new();
        for (path, card, crop_scale) in [(v2, &LIVENESS_V2, 2.7f32), (v1se, &LIVENESS_V1SE, 4.0)] {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let name = path.display().to_string();
            let dict = torch_legacy::read_state_dict(&name, &bytes)?;
            let net = MiniFasNet::from_state_dict(&name, &dict, device)?;
            models.push(Model {
                card,
                crop_scale,
                net,
            });
        }
        Ok(Self {
            models,
            box_scale: BOX_SCALE,
            device: device.clone(),
        })
    }

    /// Load from the model store (verified by SHA-256; fetched on first use).
    pub fn from_store(store: &ModelStore) -> Result<Self> {
        let [v2, v1se] = store.liveness_models()?;
        Self::from_files(&v2, &v1se, &Device::Cpu)
    }

    /// The same detector with another box widening factor (see [`BOX_SCALE`]).
    pub fn with_box_scale(mut self, box_scale: f32) -> Self {
        self.box_scale = box_scale;
        self
    }

    pub fn box_scale(&self) -> f32 {
        self.box_scale
    }

    fn widened(&self, rect: &Rect) -> Rect {
        let (cx, cy) = (
            (rect.left + rect.right) as f32 / 2.0,
            (rect.top + rect.bottom) as f32 / 2.0,
        );
        let (hw, hh) = (
            rect.width() as f32 * self.box_scale / 2.0,
            rect.height() as f32 * self.box_scale / 2.0,
        );
        Rect::new(
            (cx - hw).round() as i64,
            (cy - hh).round() as i64,
            (cx + hw).round() as i64 - 1,
            (cy + hh).round() as i64 - 1,
        )
    }

    /// The crops each model sees for `face` (80×80×3 BGR bytes, in model order).
    pub fn crops(&self, img: &RgbImage, face: &Rect) -> Result<Vec<Vec<u8>>> {
        let rect = self.widened(face);
        self.models
            .iter()
            .map(|m| crop_bgr(img, &rect, m.crop_scale))
            .collect()
    }

    /// Score one crop with model `index` (0 = V2 2.7×, 1 = V1SE 4.0×).
    pub fn model_probabilities(&self, index: usize, bgr: &[u8]) -> Result<[f32; 3]> {
        let m = self.models.get(index).ok_or(Error::BufferLength {
            expected: self.models.len(),
            got: index,
        })?;
        m.net.probabilities(bgr, &self.device)
    }

    /// Is the face at `face` in `img` live?
    pub fn check(&self, img: &RgbImage, face: &Rect) -> Result<Liveness> {
        let crops = self.crops(img, face)?;
        let mut per_model = Vec::new();
        let mut sum = [0f32; 3];
        for (m, crop) in self.models.iter().zip(&crops) {
            let p = m.net.probabilities(crop, &self.device)?;
            for (s, v) in sum.iter_mut().zip(p) {
                *s += v;
            }
            per_model.push(ModelScore {
                model: m.card.id,
                crop_scale: m.crop_scale,
                probabilities: p,
            });
        }
        let label = (0..3)
            .max_by(|&a, &b| sum[a].total_cmp(&sum[b]))
            .unwrap_or(0);
        Ok(Liveness {
            score: sum[REAL] / self.models.len().max(1) as f32,
            is_live: label == REAL,
            per_model,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn detector_is_send_and_sync() {
        assert_send_sync::<LivenessDetector>();
    }

    #[test]
    fn crop_boxes_stay_inside_the_image() {
        // a box near the corner: the crop shifts inside rather than padding
        let r = Rect::new(5, 5, 54, 54);
        let (l, t, rr, b) = crop_box(&r, 2.7, 640, 480);
        assert!(l >= 0 && t >= 0 && rr <= 640 && b <= 480);
        assert!((rr - l - 135).abs() <= 1, "{l} {rr}");
        // a box larger than the image: the scale shrinks to fit
        let (l, t, rr, b) = crop_box(&Rect::new(0, 0, 99, 99), 4.0, 100, 100);
        assert!(l >= 0 && t >= 0 && rr <= 100 && b <= 100);
        let img = RgbImage::from_pixel(120, 90, image::Rgb([10, 20, 30]));
        let c = crop_bgr(&img, &Rect::new(40, 30, 79, 69), 2.7).unwrap();
        assert_eq!(c.len(), 80 * 80 * 3);
        assert_eq!(&c[..3], &[30, 20, 10]);
        assert!(crop_bgr(&RgbImage::new(1, 1), &Rect::new(0, 0, 0, 0), 2.7).is_err());
    }
}
