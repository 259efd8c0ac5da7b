//! Face embedding: 150×150 aligned chips → 128-d descriptors with dlib's ResNet-29.
//!
//! Descriptors are the network's raw output, **not L2-normalised** (their norm is close to 1.4
//! but not exactly); compare them with the Euclidean distance the model was trained for, where
//! 0.6 is the author's match threshold.

mod resnet;

use std::path::Path;

use ::image::RgbImage;
use candle_core::{Device, Tensor};
use rayon::prelude::*;

pub use resnet::{parse as parse_resnet, Backend, ResNet};

use crate::dlib::dnn::DnnFile;
use crate::{Error, Result};

/// Length of a descriptor.
pub const DESCRIPTOR_DIM: usize = 128;
/// Side of the aligned face chip the embedder takes.
pub const CHIP_SIZE: usize = 150;

/// A 128-d face descriptor (raw network output).
pub type Descriptor = [f32; DESCRIPTOR_DIM];

/// Chips per forward pass in batch calls; bounds the im2col buffers (≈ 3 MB per chip).
const MAX_BATCH: usize = 16;

/// The face embedder. `Send + Sync`: share one across threads (e.g. in an `Arc`).
#[derive(Debug, Clone)]
pub struct Embedder {
    net: ResNet,
    mean_rgb: [f32; 3],
    device: Device,
}

impl Embedder {
    /// Load from a `dlib_face_recognition_resnet_model_v1.dat` file on the CPU, fast path.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(
            &path.display().to_string(),
            &bytes,
            Backend::default(),
            &Device::Cpu,
        )
    }

    /// Load from the file's bytes; `name` appears in errors.
    pub fn from_bytes(name: &str, bytes: &[u8], backend: Backend, device: &Device) -> Result<Self> {
        let file = resnet::parse(name, bytes)?;
        Self::from_parsed(&file, backend, device)
    }

    /// Build from an already parsed network.
    pub fn from_parsed(file: &DnnFile, backend: Backend, device: &Device) -> Result<Self> {
        Ok(Self {
            net: ResNet::new(file, backend, device)?,
            mean_rgb: file.input.mean_rgb,
            device: device.clone(),
        })
    }

    /// The same weights executed by another backend.
    pub fn with_backend(&self, file: &DnnFile, backend: Backend) -> Result<Self> {
        Self::from_parsed(file, backend, &self.device)
    }

    pub fn backend(&self) -> Backend {
        self.net.backend()
    }

    /// Floating-point operations per face (2 per multiply–accumulate).
    pub fn flops_per_face(&self) -> u64 {
        self.net.flops_per_face()
    }

    /// Embed one 150×150 RGB chip.
    pub fn embed_chip(&self, chip: &RgbImage) -> Result<Descriptor> {
        let mut out = self.embed_chips(std::slice::from_ref(chip))?;
        out.pop().ok_or(Error::BufferLength {
            expected: 1,
            got: 0,
        })
    }

    /// Embed many chips, batched through the network.
    ///
    /// Groups of chips run in parallel on the rayon pool (one group per thread), which scales
    /// better than splitting each convolution's GEMM across threads.
    pub fn embed_chips(&self, chips: &[RgbImage]) -> Result<Vec<Descriptor>> {
        let threads = rayon::current_num_threads().max(1);
        let per = chips.len().div_ceil(threads).clamp(1, MAX_BATCH);
        let groups: Vec<Result<Vec<Descriptor>>> =
            chips.par_chunks(per).map(|g| self.embed_group(g)).collect();
        let mut out = Vec::with_capacity(chips.len());
        for g in groups {
            out.extend(g?);
        }
        Ok(out)
    }

    fn embed_group(&self, chips: &[RgbImage]) -> Result<Vec<Descriptor>> {
        let mut out = Vec::with_capacity(chips.len());
        for group in chips.chunks(MAX_BATCH) {
            let mut pixels = Vec::with_capacity(group.len() * CHIP_SIZE * CHIP_SIZE * 3);
            for chip in group {
                let (w, h) = chip.dimensions();
                if (w as usize, h as usize) != (CHIP_SIZE, CHIP_SIZE) {
                    return Err(Error::ChipSize {
                        expected: CHIP_SIZE,
                        width: w as usize,
                        height: h as usize,
                    });
                }
                pixels.extend_from_slice(chip.as_raw());
            }
            out.extend(self.embed_rgb_batch(&pixels, group.len())?);
        }
        Ok(out)
    }

    /// Embed `n` chips given as packed 150×150×3 RGB bytes (row-major, interleaved).
    pub fn embed_rgb_batch(&self, rgb: &[u8], n: usize) -> Result<Vec<Descriptor>> {
        let x = self.input_tensor(rgb, n)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let y = self.net.forward(&x)?;
        self.descriptors(&y)
    }

    /// The network behind the embedder (for per-layer inspection).
    pub fn network(&self) -> &ResNet {
        &self.net
    }

    /// Mean-subtracted, scaled (N, 150, 150, 3) input tensor for `n` packed RGB chips.
    pub fn input_tensor(&self, rgb: &[u8], n: usize) -> Result<Tensor> {
        let expected = n * CHIP_SIZE * CHIP_SIZE * 3;
        if rgb.len() != expected {
            return Err(Error::BufferLength {
                expected,
                got: rgb.len(),
            });
        }
        // dlib's input_rgb_image_sized: (pixel − channel mean) / 256, channels R, G, B.
        let input: Vec<f32> = rgb
            .chunks_exact(3)
            .flat_map(|p| {
                [
                    (f32::from(p[0]) - self.mean_rgb[0]) / 256.0,
                    (f32::from(p[1]) - self.mean_rgb[1]) / 256.0,
                    (f32::from(p[2]) - self.mean_rgb[2]) / 256.0,
                ]
            })
            .collect();
        Ok(Tensor::from_vec(
            input,
            (n, CHIP_SIZE, CHIP_SIZE, 3),
            &self.device,
        )?)
    }

    fn descriptors(&self, y: &Tensor) -> Result<Vec<Descriptor>> {
        let rows: Vec<Vec<f32>> = y.to_vec2()?;
        rows.into_iter()
            .map(|r| {
                let got = r.len();
                <Descriptor>::try_from(r).map_err(|_| Error::BufferLength {
                    expected: DESCRIPTOR_DIM,
                    got,
                })
            })
            .collect()
    }
}

/// Euclidean distance between two descriptors (0.6 is dlib's match threshold).
pub fn euclidean_distance(a: &Descriptor, b: &Descriptor) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn embedder_is_send_and_sync() {
        assert_send_sync::<Embedder>();
    }
}
