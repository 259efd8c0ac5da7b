//! dlib's tiled image pyramid (`input_rgb_image_pyramid<pyramid_down<6>>`): the image and its
//! 5/6-scaled copies packed into one canvas, so one fully-convolutional pass sees every scale.

use crate::geometry::{Point, Rect};

/// Layout of the levels on the canvas (`compute_tiled_image_pyramid_details`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tiling {
    pub rects: Vec<Rect>,
    pub width: usize,
    pub height: usize,
}

/// `pyramid_down<6>`: each level is floor(5/6) of the previous one.
fn down6(n: i64) -> i64 {
    (5.0 / 6.0 * n as f64).floor() as i64
}

pub(crate) fn tiling(nr: i64, nc: i64, padding: i64, outer: i64) -> Tiling {
    if nr <= 0 || nc <= 0 {
        return Tiling {
            rects: Vec::new(),
            width: 0,
            height: 0,
        };
    }
    const MIN_HEIGHT: i64 = 5;
    let mut rects = vec![Rect::new(0, 0, nc - 1, nr - 1)];
    let (mut r, mut c) = (nr, nc);
    loop {
        r = down6(r);
        c = down6(c);
        if r * c == 0 || r < MIN_HEIGHT {
            break;
        }
        rects.push(Rect::new(0, 0, c - 1, r - 1));
    }
    let mut total_height: i64 = rects.iter().map(|r| r.height() + padding).sum();
    total_height -= padding * 2;
    let mut height = 0;
    let mut prev_width = 0;
    let first = rects[0];
    for rc in &rects {
        if rc.width() <= first.width() - prev_width - padding
            && (height - first.height()) * 2 >= total_height - first.height()
        {
            break;
        }
        height += rc.height() + padding;
        prev_width = rc.width();
    }
    height -= padding;
    let width = first.width();
    let (canvas_h, canvas_w) = (height + outer * 2, width + outer * 2);
    let mut y = outer;
    let mut i = 0;
    while y < height + outer && i < rects.len() {
        let rc = rects[i];
        rects[i] = Rect::new(outer, y, outer + rc.right, y + rc.bottom);
        y += rects[i].height() + padding;
        i += 1;
    }
    y -= padding;
    while i < rects.len() {
        let (p1x, p1y) = (outer + width - 1, y - 1);
        let rc = rects[i];
        let r = Rect::new(p1x - rc.right, p1y - rc.bottom, p1x, p1y);
        if !rects[0].intersect(&r).is_empty() {
            break;
        }
        rects[i] = r;
        y -= r.height() + padding;
        i += 1;
    }
    rects.truncate(i);
    Tiling {
        rects,
        width: canvas_w as usize,
        height: canvas_h as usize,
    }
}

/// `pyramid_down<6>::point_up`, `levels` times.
fn point_up6(mut p: Point, levels: usize) -> Point {
    for _ in 0..levels {
        p = Point::new(p.x * 6.0 / 5.0 + 0.3, p.y * 6.0 / 5.0 + 0.3);
    }
    p
}

/// Map a canvas rectangle back to the level-0 image (`tiled_pyramid_to_image`).
pub(crate) fn canvas_to_image(t: &Tiling, l: f64, top: f64, r: f64, b: f64) -> (Point, Point) {
    let c = Point::new((l + r) / 2.0, (top + b) / 2.0);
    let (cx, cy) = c.rounded();
    let mut best = (f64::INFINITY, 0usize);
    for (i, rc) in t.rects.iter().enumerate() {
        if rc.contains(cx, cy) {
            best = (0.0, i);
            break;
        }
        let nx = cx.clamp(rc.left, rc.right);
        let ny = cy.clamp(rc.top, rc.bottom);
        let d = (((nx - cx).pow(2) + (ny - cy).pow(2)) as f64).sqrt();
        if d < best.0 {
            best = (d, i);
        }
    }
    let level = best.1;
    let (ox, oy) = (t.rects[level].left as f64, t.rects[level].top as f64);
    let a = point_up6(Point::new(l - ox, top - oy), level);
    let z = point_up6(Point::new(r - ox, b - oy), level);
    (
        Point::new(a.x.min(z.x), a.y.min(z.y)),
        Point::new(a.x.max(z.x), a.y.max(z.y)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_shrink_by_five_sixths_and_do_not_overlap() {
        let t = tiling(501, 502, 10, 11);
        assert_eq!(t.rects[0], Rect::new(11, 11, 512, 511));
        assert_eq!(t.rects[1].width(), 418);
        assert_eq!(t.rects[1].height(), 417);
        for i in 0..t.rects.len() {
            let r = t.rects[i];
            assert!(r.left >= 0 && r.top >= 0);
            assert!(r.right < t.width as i64 && r.bottom < t.height as i64);
            for j in i + 1..t.rects.len() {
                assert!(r.intersect(&t.rects[j]).is_empty(), "{i} and {j} overlap");
            }
        }
    }
}
