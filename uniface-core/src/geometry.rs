//! Small geometry shared by the pipeline stages: points, dlib-style rectangles, similarity and
//! affine transforms.

/// A 2-d point in pixel coordinates (x to the right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    /// Round to the nearest integer position as dlib does (`floor(v + 0.5)`).
    pub fn rounded(self) -> (i64, i64) {
        ((self.x + 0.5).floor() as i64, (self.y + 0.5).floor() as i64)
    }
}

/// A rectangle with inclusive integer corners, as dlib's `rectangle`: width = right − left + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

impl Rect {
    pub const fn new(left: i64, top: i64, right: i64, bottom: i64) -> Self {
        Self {
            left,
            top,
            right,
            bottom,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.left > self.right || self.top > self.bottom
    }

    pub fn width(&self) -> i64 {
        if self.is_empty() {
            0
        } else {
            self.right - self.left + 1
        }
    }

    pub fn height(&self) -> i64 {
        if self.is_empty() {
            0
        } else {
            self.bottom - self.top + 1
        }
    }

    pub fn area(&self) -> i64 {
        self.width() * self.height()
    }

    pub fn contains(&self, x: i64, y: i64) -> bool {
        self.left <= x && x <= self.right && self.top <= y && y <= self.bottom
    }

    pub fn intersect(&self, o: &Rect) -> Rect {
        Rect::new(
            self.left.max(o.left),
            self.top.max(o.top),
            self.right.min(o.right),
            self.bottom.min(o.bottom),
        )
    }

    /// Intersection over union of two rectangles (inclusive pixel areas).
    pub fn iou(&self, o: &Rect) -> f64 {
        let inter = self.intersect(o).area() as f64;
        let union = (self.area() + o.area()) as f64 - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// `x ↦ m·x + b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub m: [[f64; 2]; 2],
    pub b: [f64; 2],
}

impl Affine {
    pub fn apply(&self, p: Point) -> Point {
        Point::new(
            self.m[0][0] * p.x + self.m[0][1] * p.y + self.b[0],
            self.m[1][0] * p.x + self.m[1][1] * p.y + self.b[1],
        )
    }
}

/// The least-squares similarity transform (rotation, uniform scale, translation) taking `from`
/// onto `to` (Umeyama 1991), in the closed form that the 2-d case allows.
///
/// Returns the identity for fewer than two points.
pub fn similarity_transform(from: &[Point], to: &[Point]) -> Affine {
    let n = from.len().min(to.len());
    if n < 2 {
        return Affine {
            m: [[1.0, 0.0], [0.0, 1.0]],
            b: [0.0, 0.0],
        };
    }
    let nf = n as f64;
    let (mut mfx, mut mfy, mut mtx, mut mty) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        mfx += from[i].x;
        mfy += from[i].y;
        mtx += to[i].x;
        mty += to[i].y;
    }
    (mfx, mfy, mtx, mty) = (mfx / nf, mfy / nf, mtx / nf, mty / nf);
    let mut sigma_from = 0.0;
    // cov = Σ (to − μ_to)(from − μ_from)ᵀ / n
    let (mut a, mut b, mut c, mut d) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        let (fx, fy) = (from[i].x - mfx, from[i].y - mfy);
        let (tx, ty) = (to[i].x - mtx, to[i].y - mty);
        sigma_from += fx * fx + fy * fy;
        a += tx * fx;
        b += tx * fy;
        c += ty * fx;
        d += ty * fy;
    }
    sigma_from /= nf;
    (a, b, c, d) = (a / nf, b / nf, c / nf, d / nf);
    // The best rotation maximises trace(Rᵀ·cov): angle atan2(c − b, a + d); the optimum is the
    // norm of that vector, which equals Umeyama's trace(D·S) (reflections excluded).
    let (sx, sy) = (a + d, c - b);
    let norm = (sx * sx + sy * sy).sqrt();
    let (cos, sin) = if norm > 0.0 {
        (sx / norm, sy / norm)
    } else {
        (1.0, 0.0)
    };
    let scale = if sigma_from != 0.0 {
        norm / sigma_from
    } else {
        1.0
    };
    let m = [[scale * cos, -scale * sin], [scale * sin, scale * cos]];
    Affine {
        m,
        b: [
            mtx - (m[0][0] * mfx + m[0][1] * mfy),
            mty - (m[1][0] * mfx + m[1][1] * mfy),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        let (s, th, tx, ty) = (1.7f64, 0.3f64, 12.0, -4.0);
        let from = [
            Point::new(0.0, 0.0),
            Point::new(10.0, 1.0),
            Point::new(3.0, 7.0),
            Point::new(-2.0, 5.0),
        ];
        let to: Vec<Point> = from
            .iter()
            .map(|p| {
                Point::new(
                    s * (th.cos() * p.x - th.sin() * p.y) + tx,
                    s * (th.sin() * p.x + th.cos() * p.y) + ty,
                )
            })
            .collect();
        let t = similarity_transform(&from, &to);
        for (f, g) in from.iter().zip(&to) {
            let p = t.apply(*f);
            assert!((p.x - g.x).abs() < 1e-9 && (p.y - g.y).abs() < 1e-9);
        }
    }

    #[test]
    fn rect_sizes_are_inclusive() {
        let r = Rect::new(10, 20, 19, 29);
        assert_eq!((r.width(), r.height(), r.area()), (10, 10, 100));
        assert_eq!(r.iou(&r), 1.0);
        assert_eq!(r.iou(&Rect::new(100, 100, 110, 110)), 0.0);
        assert!(Rect::new(5, 5, 4, 4).is_empty());
    }
}
