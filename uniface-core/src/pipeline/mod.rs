//! The whole extraction pipeline in one call: image → faces with box, landmarks, aligned chip
//! and descriptor.

use ::image::RgbImage;
use rayon::prelude::*;

use crate::align::{face_chip, CHIP_PADDING, CHIP_SIZE};
use crate::detect::{DetectOptions, Detector, FaceBox};
use crate::embed::{Descriptor, Embedder};
use crate::landmarks::{Landmarks, ShapePredictor};
use crate::model_store::{ModelSet, ModelStore};
use crate::Result;

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
}

impl FaceAnalyzer {
    /// Load the three models of a verified model set.
    pub fn new(models: &ModelSet) -> Result<Self> {
        Ok(Self {
            detector: Detector::from_file(&models.detector)?,
            landmarks: ShapePredictor::from_file(&models.shape_predictor)?,
            embedder: Embedder::from_file(&models.embedder)?,
            options: DetectOptions::default(),
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

    /// Boxes only.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<FaceBox>> {
        self.detector.detect(img, &self.options)
    }

    /// Boxes and landmarks.
    pub fn detect_landmarks(&self, img: &RgbImage) -> Result<Vec<(FaceBox, Landmarks)>> {
        Ok(self
            .detect(img)?
            .into_iter()
            .map(|b| (b, self.landmarks.predict(img, &b.rect())))
            .collect())
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

    /// Many images in parallel (rayon), results in input order.
    pub fn analyze_batch(&self, images: &[RgbImage]) -> Vec<Result<Vec<Face>>> {
        images.par_iter().map(|img| self.analyze(img)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyzer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<FaceAnalyzer>();
        check::<Face>();
    }
}
