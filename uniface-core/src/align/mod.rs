//! Face alignment: dlib's `get_face_chip_details` + `extract_image_chip` for the 5-point model.
//!
//! A similarity transform maps dlib's 5-point template (eye corners and nose base, padded by
//! `padding` on every side) onto the detected landmarks; the chip is sampled from the image
//! with bilinear interpolation (pixels outside the image are black). When the face is more
//! than twice the chip's size, the image is first reduced with dlib's 2:1 pyramid so the
//! sampling does not alias, exactly as dlib does.

use ::image::RgbImage;

use crate::geometry::{similarity_transform, Point};
use crate::landmarks::Landmarks;

/// dlib's 5-point template in unit coordinates.
const TEMPLATE: [(f64, f64); 5] = [
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
];

/// Default chip side and padding (what the embedder was trained with).
pub const CHIP_SIZE: u32 = 150;
pub const CHIP_PADDING: f64 = 0.25;

/// A rectangle with real corners (dlib's `drectangle`): width = right − left + 1.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DRect {
    l: f64,
    t: f64,
    r: f64,
    b: f64,
}

impl DRect {
    fn empty() -> Self {
        Self {
            l: 0.0,
            t: 0.0,
            r: -1.0,
            b: -1.0,
        }
    }
    fn is_empty(&self) -> bool {
        self.t > self.b || self.l > self.r
    }
    fn area(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            (self.r - self.l + 1.0) * (self.b - self.t + 1.0)
        }
    }
    fn center(&self) -> Point {
        Point::new((self.l + self.r) / 2.0, (self.t + self.b) / 2.0)
    }
    fn add_point(&mut self, p: Point) {
        if self.is_empty() {
            *self = DRect {
                l: p.x,
                t: p.y,
                r: p.x,
                b: p.y,
            };
        } else {
            self.l = self.l.min(p.x);
            self.t = self.t.min(p.y);
            self.r = self.r.max(p.x);
            self.b = self.b.max(p.y);
        }
    }
    /// The pyramid_down<2> image of a rectangle.
    fn down(&self) -> Self {
        let mut out = DRect::empty();
        out.add_point(Point::new(self.l / 2.0 - 1.25, self.t / 2.0 - 0.75));
        out.add_point(Point::new(self.r / 2.0 - 1.25, self.b / 2.0 - 0.75));
        out
    }
}

/// Where a chip lies in the image: a rectangle and a rotation about its centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipDetails {
    rect: DRect,
    /// Radians.
    pub angle: f64,
    pub size: u32,
}

impl ChipDetails {
    /// The chip's corners in the image (top-left, top-right, bottom-right, bottom-left of the
    /// chip), i.e. the rotated region it samples.
    pub fn corners(&self) -> [Point; 4] {
        let r = &self.rect;
        let c = Point::new((r.l + r.r) / 2.0, (r.t + r.b) / 2.0);
        [
            Point::new(r.l, r.t),
            Point::new(r.r, r.t),
            Point::new(r.r, r.b),
            Point::new(r.l, r.b),
        ]
        .map(|p| rotate(c, p, self.angle))
    }
}

/// dlib's `get_face_chip_details` for a 5-point shape.
pub fn chip_details(landmarks: &Landmarks, size: u32, padding: f64) -> ChipDetails {
    let s = f64::from(size);
    let from: Vec<Point> = TEMPLATE
        .iter()
        .map(|&(x, y)| {
            Point::new(
                (padding + x) / (2.0 * padding + 1.0) * s,
                (padding + y) / (2.0 * padding + 1.0) * s,
            )
        })
        .collect();
    let t = similarity_transform(&from, &landmarks.points);
    let (px, py) = (t.m[0][0], t.m[1][0]);
    let angle = py.atan2(px);
    let scale = (px * px + py * py).sqrt();
    let c = t.apply(Point::new(s / 2.0, s / 2.0));
    let (w, h) = (s * scale - 1.0, s * scale - 1.0);
    ChipDetails {
        rect: DRect {
            l: c.x - w / 2.0,
            t: c.y - h / 2.0,
            r: c.x + w / 2.0,
            b: c.y + h / 2.0,
        },
        angle,
        size,
    }
}

/// The aligned `size`×`size` face chip (dlib's `get_face_chip(img, shape, size, padding)`).
pub fn face_chip(img: &RgbImage, landmarks: &Landmarks, size: u32, padding: f64) -> RgbImage {
    extract_chip(img, &chip_details(landmarks, size, padding))
}

fn rotate(center: Point, p: Point, angle: f64) -> Point {
    let (s, c) = angle.sin_cos();
    let (x, y) = (p.x - center.x, p.y - center.y);
    Point::new(c * x - s * y + center.x, s * x + c * y + center.y)
}

/// dlib's `extract_image_chip` with bilinear interpolation.
pub fn extract_chip(img: &RgbImage, d: &ChipDetails) -> RgbImage {
    let size = d.size.max(1);
    let chip_area = f64::from(size) * f64::from(size);
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    let mut chip = RgbImage::new(size, size);
    if iw == 0 || ih == 0 {
        return chip;
    }
    // Pyramid depth → how much context the crop keeps around the rotated rectangle.
    let mut grow = 2.0;
    let mut r = d.rect.down();
    // (bounded: a non-finite rectangle from bad landmarks must not loop forever)
    for _ in 0..64 {
        if r.area() <= chip_area {
            break;
        }
        r = r.down();
        grow = grow * 2.0 + 2.0;
    }
    let cent = d.rect.center();
    let mut rot = DRect::empty();
    for corner in [
        Point::new(d.rect.l, d.rect.t),
        Point::new(d.rect.r, d.rect.t),
        Point::new(d.rect.l, d.rect.b),
        Point::new(d.rect.r, d.rect.b),
    ] {
        rot.add_point(rotate(cent, corner, d.angle));
    }
    let grown = DRect {
        l: (rot.l - grow).max(0.0),
        t: (rot.t - grow).max(0.0),
        r: (rot.r + grow).min((iw - 1) as f64),
        b: (rot.b + grow).min((ih - 1) as f64),
    };
    // drectangle → rectangle rounds half away from zero
    let (bl, bt, br, bb) = (
        grown.l.round() as i64,
        grown.t.round() as i64,
        grown.r.round() as i64,
        grown.b.round() as i64,
    );
    if bl > br || bt > bb {
        return chip; // the chip lies entirely outside the image
    }
    // Pick the pyramid level and move the rectangle into the crop's frame.
    let mut rect = DRect {
        l: d.rect.l - bl as f64,
        t: d.rect.t - bt as f64,
        r: d.rect.r - bl as f64,
        b: d.rect.b - bt as f64,
    };
    let mut level: i32 = -1;
    while rect.down().area() > chip_area && level < 64 {
        level += 1;
        rect = rect.down();
    }
    let mut src = Plane::crop(img, bl, bt, br, bb);
    for _ in 0..=level {
        src = src.pyramid_down();
    }
    let c = rect.center();
    let tl = rotate(c, Point::new(rect.l, rect.t), d.angle);
    let tr = rotate(c, Point::new(rect.r, rect.t), d.angle);
    let blp = rotate(c, Point::new(rect.l, rect.b), d.angle);
    let n = f64::from(size - 1).max(1.0);
    let (ux, uy) = ((tr.x - tl.x) / n, (tr.y - tl.y) / n);
    let (vx, vy) = ((blp.x - tl.x) / n, (blp.y - tl.y) / n);
    for (cx, cy, px) in chip.enumerate_pixels_mut() {
        let (x, y) = (f64::from(cx), f64::from(cy));
        let p = Point::new(tl.x + ux * x + vx * y, tl.y + uy * x + vy * y);
        px.0 = src.bilinear(p).unwrap_or([0, 0, 0]);
    }
    chip
}

/// An RGB plane used for cropping, reducing and sampling.
struct Plane {
    w: usize,
    h: usize,
    data: Vec<u8>,
}

impl Plane {
    fn crop(img: &RgbImage, l: i64, t: i64, r: i64, b: i64) -> Self {
        let (w, h) = ((r - l + 1) as usize, (b - t + 1) as usize);
        let iw = img.width() as usize;
        let raw = img.as_raw();
        let mut data = Vec::with_capacity(w * h * 3);
        for y in t as usize..=b as usize {
            let start = (y * iw + l as usize) * 3;
            data.extend_from_slice(&raw[start..start + w * 3]);
        }
        Self { w, h, data }
    }

    /// dlib's `pyramid_down<2>` for RGB: a separable [1 4 6 4 1] filter, keeping every other
    /// row and column, with integer arithmetic (sum / 256, truncated).
    fn pyramid_down(&self) -> Self {
        if self.w <= 8 || self.h <= 8 {
            return Self {
                w: 0,
                h: 0,
                data: Vec::new(),
            };
        }
        let tw = (self.w - 3) / 2;
        let (ow, oh) = ((self.w - 3) / 2, (self.h - 3) / 2);
        let mut tmp = vec![0u32; self.h * tw * 3];
        for r in 0..self.h {
            let row = &self.data[r * self.w * 3..(r + 1) * self.w * 3];
            for c in 0..tw {
                let oc = 2 * c;
                for k in 0..3 {
                    let p = |i: usize| u32::from(row[(oc + i) * 3 + k]);
                    tmp[(r * tw + c) * 3 + k] = p(0) + 4 * p(1) + 6 * p(2) + 4 * p(3) + p(4);
                }
            }
        }
        let mut data = vec![0u8; ow * oh * 3];
        let mut dr = 0;
        let mut r = 2;
        while r + 2 < self.h && dr < oh {
            for c in 0..tw {
                for k in 0..3 {
                    let t = |rr: usize| tmp[(rr * tw + c) * 3 + k];
                    let v = t(r - 2) + 4 * t(r - 1) + 6 * t(r) + 4 * t(r + 1) + t(r + 2);
                    data[(dr * ow + c) * 3 + k] = (v / 256) as u8;
                }
            }
            dr += 1;
            r += 2;
        }
        Self { w: ow, h: oh, data }
    }

    fn bilinear(&self, p: Point) -> Option<[u8; 3]> {
        let left = p.x.floor();
        let top = p.y.floor();
        if left < 0.0 || top < 0.0 || left + 1.0 >= self.w as f64 || top + 1.0 >= self.h as f64 {
            return None;
        }
        let (l, t) = (left as usize, top as usize);
        let (fx, fy) = (p.x - left, p.y - top);
        let px = |x: usize, y: usize, k: usize| f64::from(self.data[(y * self.w + x) * 3 + k]);
        let mut out = [0u8; 3];
        for (k, o) in out.iter_mut().enumerate() {
            let v = (1.0 - fy) * ((1.0 - fx) * px(l, t, k) + fx * px(l + 1, t, k))
                + fy * ((1.0 - fx) * px(l, t + 1, k) + fx * px(l + 1, t + 1, k));
            *o = v as u8; // truncation, as dlib's vector_to_pixel
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_landmarks_give_an_upright_unit_chip() {
        // Landmarks placed exactly at the template positions for a 150 px chip: identity.
        let s = 150.0;
        let p = 0.25;
        let mut points = [Point::default(); 5];
        for (i, &(x, y)) in TEMPLATE.iter().enumerate() {
            points[i] = Point::new((p + x) / (2.0 * p + 1.0) * s, (p + y) / (2.0 * p + 1.0) * s);
        }
        let d = chip_details(&Landmarks { points }, 150, 0.25);
        assert!(d.angle.abs() < 1e-9);
        // dlib centres the 149-wide rectangle on the transformed chip centre (75, 75).
        assert!((d.rect.l - 0.5).abs() < 1e-9 && (d.rect.r - 149.5).abs() < 1e-9);
        // Sampling a gradient half a pixel off the grid truncates back to the grid values.
        let img = RgbImage::from_fn(150, 150, |x, y| ::image::Rgb([x as u8, y as u8, 0]));
        let chip = extract_chip(&img, &d);
        assert_eq!(chip.get_pixel(10, 20).0[0], 10);
        assert_eq!(chip.get_pixel(10, 20).0[1], 20);
    }

    #[test]
    fn absurd_landmarks_give_a_black_chip_not_a_hang() {
        let img = RgbImage::from_pixel(50, 50, ::image::Rgb([9, 9, 9]));
        for v in [f64::NAN, f64::INFINITY, 1e300, -1e300] {
            let lm = Landmarks {
                points: [Point::new(v, v); 5],
            };
            let chip = face_chip(&img, &lm, 150, 0.25);
            assert_eq!(chip.dimensions(), (150, 150));
        }
    }

    #[test]
    fn pyramid_down_of_a_flat_image_keeps_its_value() {
        let img = RgbImage::from_pixel(20, 16, ::image::Rgb([100, 50, 200]));
        let p = Plane::crop(&img, 0, 0, 19, 15).pyramid_down();
        assert_eq!((p.w, p.h), (8, 6));
        assert!(p.data.chunks(3).all(|c| c == [100, 50, 200]));
    }
}
