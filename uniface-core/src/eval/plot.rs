//! Small line charts as PNG (DET and similar curves), with no font or plotting dependency:
//! axes, decade grid lines, tick labels and a legend drawn with a built-in 3×5 pixel font.

use std::path::Path;

use crate::{Error, Result};
use image::{Rgb, RgbImage};

const WIDTH: u32 = 720;
const HEIGHT: u32 = 540;
const LEFT: i64 = 80;
const RIGHT: i64 = 24;
const TOP: i64 = 48;
const BOTTOM: i64 = 64;
const SCALE: i64 = 3;

pub const COLOURS: [[u8; 3]; 4] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [148, 103, 189],
];

/// One axis: log10 range when `log`, else linear.
#[derive(Clone, Copy)]
pub struct Axis {
    pub min: f64,
    pub max: f64,
    pub log: bool,
    pub label: &'static str,
}

impl Axis {
    fn t(&self, v: f64) -> Option<f64> {
        let (v, lo, hi) = if self.log {
            if v <= 0.0 {
                return None;
            }
            (v.log10(), self.min.log10(), self.max.log10())
        } else {
            (v, self.min, self.max)
        };
        Some((v - lo) / (hi - lo))
    }

    /// Tick values: every decade (log) or five even steps (linear).
    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (lo, hi) = (
                self.min.log10().ceil() as i32,
                self.max.log10().floor() as i32,
            );
            (lo..=hi).map(|e| 10f64.powi(e)).collect()
        } else {
            (0..=5)
                .map(|i| self.min + (self.max - self.min) * f64::from(i) / 5.0)
                .collect()
        }
    }

    fn tick_label(&self, v: f64) -> String {
        if self.log {
            format!("1E{}", v.log10().round() as i32)
        } else {
            let s = format!("{v:.2}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
    }
}

fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' | 'O' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' | 'S' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '-' => [0, 0, 7, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        '%' => [5, 1, 2, 4, 5],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '/' => [1, 1, 2, 4, 4],
        '=' => [0, 7, 0, 7, 0],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 7, 4, 7],
        'F' => [7, 4, 7, 4, 4],
        'G' => [7, 4, 5, 5, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'P' => [7, 5, 7, 4, 4],
        'Q' => [7, 5, 5, 7, 1],
        'R' => [6, 5, 6, 5, 5],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        _ => [0; 5],
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: [u8; 3]) {
    for (i, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            put(
                                img,
                                x + (i as i64 * 4 + col) * SCALE + dx,
                                y + row as i64 * SCALE + dy,
                                c,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> i64 {
    (s.chars().count() as i64 * 4 - 1) * SCALE
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: i64) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for s in 0..=steps {
        let x = x0 + (x1 - x0) * s / steps;
        let y = y0 + (y1 - y0) * s / steps;
        for d in 0..thick {
            put(img, x, y + d, c);
            put(img, x + d, y, c);
        }
    }
}

/// A chart of `series` (label, points) on `x` and `y`, titled `title`, saved as PNG.
pub fn chart(
    path: &Path,
    title: &str,
    x: Axis,
    y: Axis,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    let (w, h) = (i64::from(WIDTH), i64::from(HEIGHT));
    let (pw, ph) = (w - LEFT - RIGHT, h - TOP - BOTTOM);
    let px = |v: f64| {
        x.t(v)
            .map(|t| LEFT + (t.clamp(0.0, 1.0) * pw as f64).round() as i64)
    };
    let py = |v: f64| {
        y.t(v)
            .map(|t| TOP + ph - (t.clamp(0.0, 1.0) * ph as f64).round() as i64)
    };
    let grey = [220, 220, 220];
    let ink = [40, 40, 40];
    for t in x.ticks() {
        if let Some(gx) = px(t) {
            line(&mut img, (gx, TOP), (gx, TOP + ph), grey, 1);
            let l = x.tick_label(t);
            text(&mut img, gx - text_width(&l) / 2, TOP + ph + 8, &l, ink);
        }
    }
    for t in y.ticks() {
        if let Some(gy) = py(t) {
            line(&mut img, (LEFT, gy), (LEFT + pw, gy), grey, 1);
            let l = y.tick_label(t);
            text(&mut img, LEFT - 8 - text_width(&l), gy - 7, &l, ink);
        }
    }
    line(&mut img, (LEFT, TOP), (LEFT + pw, TOP), ink, 1);
    line(&mut img, (LEFT, TOP + ph), (LEFT + pw, TOP + ph), ink, 1);
    line(&mut img, (LEFT, TOP), (LEFT, TOP + ph), ink, 1);
    line(&mut img, (LEFT + pw, TOP), (LEFT + pw, TOP + ph), ink, 1);
    text(&mut img, (w - text_width(title)) / 2, 14, title, ink);
    text(
        &mut img,
        LEFT + (pw - text_width(x.label)) / 2,
        h - 26,
        x.label,
        ink,
    );
    text(&mut img, 8, 14, y.label, ink);
    for (i, (label, points)) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let mut last: Option<(i64, i64)> = None;
        for &(vx, vy) in points {
            let p = match (px(vx), py(vy)) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => None,
            };
            if let (Some(a), Some(b)) = (last, p) {
                line(&mut img, a, b, c, 2);
            }
            last = p.or(last);
        }
        // legend in the lower-left corner, which DET and EDC curves leave empty
        let ly = TOP + ph - 16 - (series.len() - i) as i64 * 22;
        let lx = LEFT + 16;
        line(&mut img, (lx, ly + 7), (lx + 30, ly + 7), c, 3);
        text(&mut img, lx + 40, ly, label, ink);
    }
    img.save(path).map_err(|e| Error::Image {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_its_series_in_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("det.png");
        let axis = |label| Axis {
            min: 1e-4,
            max: 1.0,
            log: true,
            label,
        };
        let pts: Vec<(f64, f64)> = (0..40)
            .map(|i| {
                let f = 10f64.powf(-4.0 + f64::from(i) / 10.0);
                (f, (0.01 / f).min(1.0))
            })
            .collect();
        chart(
            &path,
            "DET",
            axis("FMR"),
            axis("FNMR"),
            &[("F32".into(), pts)],
        )
        .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        let coloured = img.pixels().filter(|p| p.0 == COLOURS[0]).count();
        assert!(coloured > 500, "{coloured}");
    }
}
