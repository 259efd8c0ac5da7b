//! The whole extraction pipeline in one call: image → faces with box, landmarks, aligned chip
//! and descriptor.

use ::image::RgbImage;
use rayon::prelude::*;

use crate::align::{face_chip, CHIP_PADDING, CHIP_SIZE};
use crate::detect::{DetectOptions, Detection, Detector, FaceBox, FaceSelection};
use crate::embed::{Descriptor, Embedder};
use crate::landmarks::{Landmarks, ShapePredictor};
use crate::liveness::{Liveness, LivenessDetector};
use crate::model_store::{ModelSet, ModelStore};
use crate::quality::{self, Policy, QualityReport, Reason};
use crate::{Error, Result};

/// The face the gate looked at: box, landmarks, aligned chip.
type AssessedFace = (FaceBox, Landmarks, RgbImage);

/// The verdict of the enrollment/verification gate on one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Assessment {
    /// No reason to refuse.
    pub accepted: bool,
    /// Every failed check, in a stable order.
    pub reasons: Vec<Reason>,
    /// The face assessed (picked by [`FaceAnalyzer::selection`]), if any.
    pub face: Option<FaceBox>,
    pub faces_found: usize,
    pub quality: Option<QualityReport>,
    pub liveness: Option<Liveness>,
}

/// One analysed face.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    pub bbox: FaceBox,
    pub landmarks: Landmarks,
    /// The aligned 150×150 chip the descriptor was computed from.
    pub chip: RgbImage,
    pub embedding: Descriptor,
}

/// Detector, landmark model and embedder together. `Send + Sync`: share one across threads.
#[derive(Debug, Clone)]
pub struct FaceAnalyzer {
    pub detector: Detector,
    pub landmarks: ShapePredictor,
    pub embedder: Embedder,
    pub options: DetectOptions,
    /// The face that one-face calls ([`FaceAnalyzer::assess`], [`FaceAnalyzer::select_face`])
    /// use. Default [`FaceSelection::Largest`].
    pub selection: FaceSelection,
    /// Memory, in bytes, that the images a batch works on at once may take together
    /// (estimated by [`FaceAnalyzer::working_set`]; a batch always takes at least one image).
    /// Default [`DEFAULT_BATCH_MEMORY`].
    pub batch_memory: u64,
}

/// Default memory for the images in flight in a batch: 1 GiB (three 12-megapixel photos).
/// The detector uses every core on one image, so more images in flight add memory, not speed.
pub const DEFAULT_BATCH_MEMORY: u64 = 1 << 30;

/// Map `f` over `items` in parallel (rayon), in consecutive windows whose summed `cost` stays
/// within `budget` (each window holds at least one item), so peak memory follows the budget
/// and not the number of cores; results in input order. Windows, not a semaphore: a rayon
/// worker that blocked on one could be the very thread holding the permit.
pub fn par_map_bounded<T: Sync, R: Send>(
    items: &[T],
    budget: u64,
    cost: impl Fn(&T) -> u64 + Sync,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let costs: Vec<u64> = items.par_iter().map(&cost).collect();
    let mut out = Vec::with_capacity(items.len());
    let mut start = 0;
    while start < items.len() {
        let mut end = start + 1;
        let mut sum = costs[start];
        while end < items.len() && sum.saturating_add(costs[end]) <= budget {
            sum += costs[end];
            end += 1;
        }
        out.par_extend(items[start..end].par_iter().map(&f));
        start = end;
    }
    out
}

impl FaceAnalyzer {
    /// Load the three models of a verified model set.
    pub fn new(models: &ModelSet) -> Result<Self> {
        Ok(Self {
            detector: Detector::from_file(&models.detector)?,
            landmarks: ShapePredictor::from_file(&models.shape_predictor)?,
            embedder: Embedder::from_file(&models.embedder)?,
            options: DetectOptions::default(),
            selection: FaceSelection::default(),
            batch_memory: DEFAULT_BATCH_MEMORY,
        })
    }

    /// Models from the default store (`UNIFACE_MODEL_DIR`, or the cache, fetched if needed).
    pub fn from_env() -> Result<Self> {
        Self::new(&ModelStore::from_env()?.ensure()?)
    }

    pub fn with_options(mut self, options: DetectOptions) -> Self {
        self.options = options;
        self
    }

    pub fn with_selection(mut self, selection: FaceSelection) -> Self {
        self.selection = selection;
        self
    }

    pub fn with_batch_memory(mut self, bytes: u64) -> Self {
        self.batch_memory = bytes;
        self
    }

    /// Estimated peak memory, in bytes, of analysing one `width`×`height` photo: its pixels
    /// and what the detector takes ([`crate::detect::DetectPlan::memory_bytes`]).
    pub fn working_set(&self, width: u32, height: u32) -> u64 {
        let photo = 3 * u64::from(width) * u64::from(height);
        let detector = self
            .detector
            .plan(width, height, &self.options)
            .map_or(0, |p| p.memory_bytes());
        photo + detector
    }

    /// [`FaceAnalyzer::working_set`] of an image file from its header (0 when the header
    /// cannot be read: such a file fails at once when decoded).
    pub fn working_set_of_file(&self, path: &std::path::Path) -> u64 {
        crate::image::peek_dimensions(path).map_or(0, |(w, h)| self.working_set(w, h))
    }

    /// Boxes only.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<FaceBox>> {
        self.detector.detect(img, &self.options)
    }

    /// Boxes and the plan the photo was detected under (whether it was seen at less than the
    /// requested resolution).
    pub fn detect_planned(&self, img: &RgbImage) -> Result<Detection> {
        self.detector.detect_planned(img, &self.options)
    }

    /// Boxes and landmarks.
    pub fn detect_landmarks(&self, img: &RgbImage) -> Result<Vec<(FaceBox, Landmarks)>> {
        Ok(self
            .detect(img)?
            .into_iter()
            .map(|b| (b, self.landmarks.predict(img, &b.rect())))
            .collect())
    }

    /// The face [`FaceAnalyzer::selection`] picks, with its landmarks and the number of faces
    /// found; `None` when there is none. Landmarks are predicted for the chosen face only.
    pub fn select_face(&self, img: &RgbImage) -> Result<Option<(FaceBox, Landmarks, usize)>> {
        let found = self.detect(img)?;
        Ok(self
            .selection
            .pick(&found, img.width(), img.height())
            .map(|i| {
                let b = found[i];
                (b, self.landmarks.predict(img, &b.rect()), found.len())
            }))
    }

    /// The chosen face ([`FaceAnalyzer::select_face`]) fully analysed, with the number of faces
    /// found.
    pub fn analyze_selected(&self, img: &RgbImage) -> Result<Option<(Face, usize)>> {
        let Some((b, lm, n)) = self.select_face(img)? else {
            return Ok(None);
        };
        Ok(self.describe(img, vec![(b, lm)])?.pop().map(|f| (f, n)))
    }

    /// Run the quality (and, when the policy asks, liveness) gate on the face of `img` that
    /// [`FaceAnalyzer::selection`] picks.
    /// Refusals are reasons in the result, not errors; an error means the image could not be
    /// processed (or the policy needs liveness and `liveness` is `None`).
    pub fn assess(
        &self,
        img: &RgbImage,
        policy: &Policy,
        liveness: Option<&LivenessDetector>,
    ) -> Result<Assessment> {
        Ok(self.assess_inner(img, policy, liveness)?.0)
    }

    fn assess_inner(
        &self,
        img: &RgbImage,
        policy: &Policy,
        liveness: Option<&LivenessDetector>,
    ) -> Result<(Assessment, Option<AssessedFace>)> {
        if policy.require_live && liveness.is_none() {
            return Err(Error::InvalidArgument {
                name: "liveness",
                message: "the policy requires liveness but no liveness detector was given".into(),
            });
        }
        let found = self.detect_landmarks(img)?;
        let boxes: Vec<FaceBox> = found.iter().map(|f| f.0).collect();
        let picked = self.selection.pick(&boxes, img.width(), img.height());
        let Some((face, lm)) = picked.map(|i| found[i]) else {
            return Ok((
                Assessment {
                    accepted: false,
                    reasons: vec![Reason::NoFace],
                    face: None,
                    faces_found: 0,
                    quality: None,
                    liveness: None,
                },
                None,
            ));
        };
        let mut reasons = Vec::new();
        if policy.single_face && found.len() > 1 {
            reasons.push(Reason::MultipleFaces);
        }
        let chip = face_chip(img, &lm, CHIP_SIZE, CHIP_PADDING);
        let mut q = quality::measure(img, &face, &lm, &chip, found.len());
        if policy.max_unified.is_some() {
            q.unified = Some(quality::unified(&self.embedder, img, &lm)?);
        }
        reasons.extend(policy.check(&q));
        let live = match liveness {
            Some(d) => Some(d.check(img, &face.rect())?),
            None => None,
        };
        if policy.require_live && live.as_ref().is_some_and(|l| !l.is_live) {
            reasons.push(Reason::NotLive);
        }
        Ok((
            Assessment {
                accepted: reasons.is_empty(),
                reasons,
                face: Some(face),
                faces_found: found.len(),
                quality: Some(q),
                liveness: live,
            },
            Some((face, lm, chip)),
        ))
    }

    /// The gate, then — only when it accepts — the descriptor of the assessed face (what an
    /// enrollment service stores).
    pub fn assess_and_describe(
        &self,
        img: &RgbImage,
        policy: &Policy,
        liveness: Option<&LivenessDetector>,
    ) -> Result<(Assessment, Option<Face>)> {
        let (a, face) = self.assess_inner(img, policy, liveness)?;
        let face = match (a.accepted, face) {
            (true, Some((bbox, landmarks, chip))) => {
                let embedding = self
                    .embedder
                    .embed_chips(std::slice::from_ref(&chip))?
                    .into_iter()
                    .next();
                embedding.map(|embedding| Face {
                    bbox,
                    landmarks,
                    chip,
                    embedding,
                })
            }
            _ => None,
        };
        Ok((a, face))
    }

    /// Every face of `img`, best detection first.
    pub fn analyze(&self, img: &RgbImage) -> Result<Vec<Face>> {
        let found = self.detect_landmarks(img)?;
        self.describe(img, found)
    }

    /// Landmarks, chips and descriptors for faces already located.
    pub fn describe(&self, img: &RgbImage, found: Vec<(FaceBox, Landmarks)>) -> Result<Vec<Face>> {
        let chips: Vec<RgbImage> = found
            .iter()
            .map(|(_, lm)| face_chip(img, lm, CHIP_SIZE, CHIP_PADDING))
            .collect();
        let embeddings = self.embedder.embed_chips(&chips)?;
        Ok(found
            .into_iter()
            .zip(chips)
            .zip(embeddings)
            .map(|(((bbox, landmarks), chip), embedding)| Face {
                bbox,
                landmarks,
                chip,
                embedding,
            })
            .collect())
    }

    /// Many images in parallel (rayon), results in input order; the images worked on at once
    /// stay within [`FaceAnalyzer::batch_memory`].
    pub fn analyze_batch(&self, images: &[RgbImage]) -> Vec<Result<Vec<Face>>> {
        par_map_bounded(
            images,
            self.batch_memory,
            |img| self.working_set(img.width(), img.height()),
            |img| self.analyze(img),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_windows_keep_order_and_the_budget() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let items: Vec<u64> = (0..40).map(|i| 1 + i % 7).collect();
        let (live, peak) = (AtomicU64::new(0), AtomicU64::new(0));
        let out = par_map_bounded(
            &items,
            10,
            |&c| c,
            |&c| {
                let now = live.fetch_add(c, Ordering::SeqCst) + c;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
                live.fetch_sub(c, Ordering::SeqCst);
                c * 2
            },
        );
        assert_eq!(out, items.iter().map(|c| c * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 10);
        // an item over the budget still runs, alone
        assert_eq!(
            par_map_bounded(&[50u64, 1], 10, |&c| c, |&c| c),
            vec![50, 1]
        );
    }

    #[test]
    fn analyzer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<FaceAnalyzer>();
        check::<Face>();
    }
}
