//! Image arguments: a numpy array (`H×W×3` uint8 RGB, `H×W×4` RGBA, `H×W` grey; BGR/BGRA with
//! `bgr=True`), a path (`str` or `os.PathLike`), or encoded `bytes`. Copied into owned buffers
//! while the GIL is held; decoded after it is released.

use std::path::PathBuf;

use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use uniface_core::image::{self, PixelFormat, RgbImage};

use crate::errors::ImageError;

/// An image argument, owned: safe to use without the GIL.
pub enum ImageInput {
    Path(PathBuf),
    Encoded(Vec<u8>),
    Pixels {
        data: Vec<u8>,
        width: usize,
        height: usize,
        format: PixelFormat,
    },
}

impl ImageInput {
    pub fn from_py(obj: &Bound<'_, PyAny>, bgr: bool) -> PyResult<Self> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Self::Encoded(b.as_bytes().to_vec()));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, u8>>() {
            let shape = a.shape().to_vec();
            let (height, width, format) = match (shape.as_slice(), bgr) {
                ([h, w], _) => (*h, *w, PixelFormat::Gray),
                ([h, w, 3], false) => (*h, *w, PixelFormat::Rgb),
                ([h, w, 3], true) => (*h, *w, PixelFormat::Bgr),
                ([h, w, 4], false) => (*h, *w, PixelFormat::Rgba),
                ([h, w, 4], true) => (*h, *w, PixelFormat::Bgra),
                _ => {
                    return Err(ImageError::new_err(format!(
                        "expected an H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA) uint8 array, got shape {shape:?}"
                    )))
                }
            };
            if width == 0 || height == 0 {
                return Err(ImageError::new_err(format!(
                    "empty image of shape {shape:?}"
                )));
            }
            let data = match a.as_slice() {
                Ok(s) => s.to_vec(),
                // not C-contiguous (a slice or a transposed view): copy element by element
                Err(_) => a.as_array().iter().copied().collect(),
            };
            return Ok(Self::Pixels {
                data,
                width,
                height,
                format,
            });
        }
        if let Ok(p) = obj.extract::<PathBuf>() {
            return Ok(Self::Path(p));
        }
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "an image is a numpy uint8 array, a path or bytes, not {}",
            obj.get_type().name()?
        )))
    }

    /// Width and height without decoding (from the header for files and bytes).
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        match self {
            Self::Path(p) => image::peek_dimensions(p),
            Self::Encoded(b) => image::peek_dimensions_bytes(b),
            Self::Pixels { width, height, .. } => {
                Some(((*width).try_into().ok()?, (*height).try_into().ok()?))
            }
        }
    }

    /// Decode or convert (call without the GIL).
    pub fn load(&self) -> uniface_core::Result<RgbImage> {
        match self {
            Self::Path(p) => image::load_rgb(p),
            Self::Encoded(b) => image::decode_rgb(b),
            Self::Pixels {
                data,
                width,
                height,
                format,
            } => image::from_raw(data, *width, *height, width * format.channels(), *format),
        }
    }
}
