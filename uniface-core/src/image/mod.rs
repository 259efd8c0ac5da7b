//! Image input: decoding from files or bytes (JPEG, PNG, WebP, BMP, GIF first frame, TIFF) with
//! EXIF orientation applied and a pixel limit against decompression bombs, and raw pixel buffers
//! with explicit layout.
//!
//! JPEG pixels come from libjpeg-turbo's decoder (through `mozjpeg`), the decoder behind Pillow
//! and therefore behind the reference pipeline: other decoders differ by up to 3 levels on
//! about one pixel in ten, which is enough to move borderline detections across the threshold.

use std::io::Cursor;
use std::path::Path;

/// The decoded image type every stage takes (8-bit RGB, row-major).
pub use ::image::RgbImage;
use ::image::{DynamicImage, ImageDecoder, ImageReader};

use crate::{Error, Result};

/// Default largest accepted image: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Layout of a raw pixel buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb,
    Rgba,
    Bgr,
    Bgra,
    Gray,
}

impl PixelFormat {
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Gray => 1,
            PixelFormat::Rgb | PixelFormat::Bgr => 3,
            PixelFormat::Rgba | PixelFormat::Bgra => 4,
        }
    }
}

/// Default largest accepted image file: 64 MB (a 100-megapixel JPEG is far smaller).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

/// Limits on an encoded image, checked before anything proportional to it is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted width × height (checked against the header before decoding).
    pub max_pixels: u64,
    /// Largest accepted file (checked against its declared size before reading).
    pub max_file_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

impl ImageLimits {
    /// Decode an image file under these limits.
    pub fn load_rgb(&self, path: &Path) -> Result<RgbImage> {
        let bytes = read_limited(path, self.max_file_bytes)?;
        decode_rgb_named(&path.display().to_string(), &bytes, self.max_pixels)
    }
}

/// Width and height from an image file's header (nothing decoded); `None` when it cannot be
/// read or is not an image.
pub fn peek_dimensions(path: &Path) -> Option<(u32, u32)> {
    use std::io::Read;
    // Only the first MiB is read: headers of real photos (EXIF included) lie well inside it,
    // and a 2 GB junk file costs nothing here either.
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(PEEK_BYTES)
        .read_to_end(&mut head)
        .ok()?;
    peek_dimensions_bytes(&head)
}

/// Bytes of a file [`peek_dimensions`] reads.
const PEEK_BYTES: u64 = 1 << 20;

/// Width and height from encoded bytes' header (nothing decoded).
pub fn peek_dimensions_bytes(bytes: &[u8]) -> Option<(u32, u32)> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// Decode an image file to RGB (EXIF orientation applied, default pixel and file-size limits).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    ImageLimits::default().load_rgb(path)
}

/// Read a file of at most `max_bytes` bytes: a larger one is refused before its contents are
/// read (its declared size first, then through a reader that stops one byte past the limit,
/// for files whose size is not known in advance), so a 2 GB file costs nothing.
pub fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let too_big = |size: String| Error::Image {
        path: path.display().to_string(),
        message: format!("{size} bytes: larger than the {max_bytes}-byte limit for an image file"),
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let declared = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if declared > max_bytes {
        return Err(too_big(declared.to_string()));
    }
    let mut bytes = Vec::with_capacity(declared as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big(format!("more than {max_bytes}")));
    }
    Ok(bytes)
}

/// Decode encoded bytes to RGB (EXIF orientation applied, default pixel limit).
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    decode_rgb_named("<bytes>", bytes, DEFAULT_MAX_PIXELS)
}

/// Decode with an explicit pixel limit; `name` appears in errors.
pub fn decode_rgb_named(name: &str, bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    let fail = |message: String| Error::Image {
        path: name.to_owned(),
        message,
    };
    if bytes.is_empty() {
        return Err(fail("empty input (0 bytes)".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    if reader.format().is_none() {
        return Err(fail("unrecognised image format".into()));
    }
    let mut decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    check_size(name, u64::from(w), u64::from(h), max_pixels)?;
    let orientation = decoder.orientation().ok();
    let is_jpeg = bytes.starts_with(&[0xFF, 0xD8]);
    let mut img = match is_jpeg.then(|| decode_jpeg(bytes)).flatten() {
        Some(rgb) => {
            drop(decoder);
            rgb?
        }
        None => DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))?,
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    // (`into_rgb8` keeps an RGB buffer as it is; `to_rgb8` would copy it)
    Ok(img.into_rgb8())
}

/// Decode a JPEG with libjpeg-turbo; `None` when it cannot produce RGB (e.g. CMYK), so the
/// caller falls back to the pure-Rust decoder.
fn decode_jpeg(bytes: &[u8]) -> Option<Result<DynamicImage>> {
    // Data cut short decodes to grey in libjpeg with only a warning: refuse it up front.
    let tail = &bytes[bytes.len().saturating_sub(1 << 16)..];
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Some(Err(Error::Image {
            path: "<jpeg>".into(),
            message: "truncated JPEG: no end-of-image marker".into(),
        }));
    }
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<(usize, usize, Vec<u8>)> {
        let mut d = mozjpeg::Decompress::new_mem(bytes)?.rgb()?;
        let (w, h) = (d.width(), d.height());
        let rows: Vec<[u8; 3]> = d.read_scanlines()?;
        d.finish()?;
        // (no copy: the pixel rows become the image buffer)
        Ok((w, h, rows.into_flattened()))
    });
    match decoded {
        Ok(Ok((w, h, px))) => RgbImage::from_raw(w as u32, h as u32, px).map(|i| Ok(i.into())),
        _ => None,
    }
}

fn check_size(name: &str, w: u64, h: u64, max_pixels: u64) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::Image {
            path: name.to_owned(),
            message: format!("image has no pixels ({w}x{h})"),
        });
    }
    if w * h > max_pixels {
        return Err(Error::ImageTooLarge {
            width: w,
            height: h,
            max_pixels,
        });
    }
    Ok(())
}

/// Copy a raw pixel buffer (`stride` bytes per row) into an RGB image.
pub fn from_raw(
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
) -> Result<RgbImage> {
    check_size(
        "<raw buffer>",
        width as u64,
        height as u64,
        DEFAULT_MAX_PIXELS,
    )?;
    let ch = format.channels();
    // (the pixel limit keeps these small, but the stride is the caller's: checked arithmetic)
    let row = width * ch;
    if stride < row {
        return Err(Error::BufferLength {
            expected: row,
            got: stride,
        });
    }
    let needed = stride
        .checked_mul(height - 1)
        .and_then(|n| n.checked_add(row))
        .ok_or_else(|| Error::InvalidArgument {
            name: "stride",
            message: format!("{stride} bytes a row × {height} rows overflows the address space"),
        })?;
    if data.len() < needed {
        return Err(Error::BufferLength {
            expected: needed,
            got: data.len(),
        });
    }
    let mut out = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for px in data[y * stride..y * stride + row].chunks_exact(ch) {
            out.extend_from_slice(&match format {
                PixelFormat::Rgb | PixelFormat::Rgba => [px[0], px[1], px[2]],
                PixelFormat::Bgr | PixelFormat::Bgra => [px[2], px[1], px[0]],
                PixelFormat::Gray => [px[0], px[0], px[0]],
            });
        }
    }
    RgbImage::from_raw(width as u32, height as u32, out).ok_or(Error::BufferLength {
        expected: width * height * 3,
        got: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_size_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.jpg");
        // a sparse 2 GB file: refused by its declared size, no byte of it read
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(2 << 30).unwrap();
        let e = load_rgb(&path).unwrap_err().to_string();
        assert!(
            e.contains("2147483648 bytes") && e.contains("junk.jpg"),
            "{e}"
        );
        // the header peek that sizes batches reads its first MiB only
        assert_eq!(peek_dimensions(&path), None);
        // the limit itself is inclusive
        std::fs::write(&path, png(4, 4)).unwrap();
        assert_eq!(peek_dimensions(&path), Some((4, 4)));
        let n = std::fs::metadata(&path).unwrap().len();
        assert!(read_limited(&path, n).is_ok());
        assert!(read_limited(&path, n - 1).is_err());
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| ::image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ::image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_png_bytes() {
        let img = decode_rgb(&png(5, 3)).unwrap();
        assert_eq!(img.dimensions(), (5, 3));
        assert_eq!(img.get_pixel(4, 2).0, [4, 2, 7]);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(decode_rgb(&[]), Err(Error::Image { .. })));
        assert!(matches!(
            decode_rgb(b"hello world"),
            Err(Error::Image { .. })
        ));
        let bytes = png(64, 64);
        assert!(matches!(
            decode_rgb(&bytes[..bytes.len() / 2]),
            Err(Error::Image { .. })
        ));
        assert!(matches!(
            decode_rgb_named("big", &png(20, 20), 399),
            Err(Error::ImageTooLarge {
                width: 20,
                height: 20,
                ..
            })
        ));
    }

    #[test]
    fn raw_buffers_respect_stride_and_order() {
        // 2x2 BGR with a stride of 8 bytes (2 bytes of row padding)
        let data = [3, 2, 1, 6, 5, 4, 0, 0, 9, 8, 7, 12, 11, 10];
        let img = from_raw(&data, 2, 2, 8, PixelFormat::Bgr).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [1, 2, 3]);
        assert_eq!(img.get_pixel(1, 1).0, [10, 11, 12]);
        assert!(matches!(
            from_raw(&data[..10], 2, 2, 8, PixelFormat::Bgr),
            Err(Error::BufferLength { .. })
        ));
        assert!(from_raw(&data, 0, 2, 8, PixelFormat::Bgr).is_err());
        // a stride whose product with the height overflows is a typed error, not a panic
        assert!(matches!(
            from_raw(&data, 2, 2, usize::MAX, PixelFormat::Bgr),
            Err(Error::InvalidArgument { name: "stride", .. })
        ));
        assert!(matches!(
            from_raw(&data, 2, 3, usize::MAX / 2 + 1, PixelFormat::Bgr),
            Err(Error::InvalidArgument { name: "stride", .. })
        ));
    }
}
