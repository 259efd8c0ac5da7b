//! Head pose from the five landmarks (eye corners and nose base), in degrees.
//!
//! Method: a template head under weak perspective. In units of the distance between the eye
//! centres, the template puts the eye centres at `(±0.5, 0, 0)` and the nose base at
//! `(0, NOSE_DROP, NOSE_DEPTH)` (below the eyes and in front of them). Then
//!
//! - **roll** is the angle of the line through the eye centres;
//! - in the roll-corrected frame, the nose base's offsets from the eyes' midpoint, divided by
//!   the measured eye distance, give **yaw** (horizontal offset = −nose depth · tan yaw) and
//!   **pitch** (vertical offset · cos yaw = `NOSE_DROP · cos(pitch) − NOSE_DEPTH · sin(pitch)`,
//!   positive = head tilted up), solved together by a short fixed-point iteration (the head
//!   rotation is roll · yaw · pitch).
//!
//! The estimator is exact for the template head (checked on synthetic projections); for a real
//! person the error is that person's deviation from the template: nose depth and drop vary by
//! roughly ±20 % between people, which scales `tan(yaw)` and shifts pitch by up to ≈ 10°.
//! Five points carry little pitch information; treat pitch as coarse. With the head tilted
//! down by about 23° the nose base sits at the eyes' depth, so yaw cannot be measured there. `NOSE_DROP` is the median
//! over the LFW photos (which are close to frontal on average); `NOSE_DEPTH` is anthropometric
//! (subnasale about 20 mm in front of the eye corners, eye centres about 63 mm apart).

use crate::landmarks::Landmarks;

/// Vertical distance from the eye line to the nose base, in eye distances.
pub const NOSE_DROP: f64 = 0.74;
/// Depth of the nose base in front of the eye corners, in eye distances.
pub const NOSE_DEPTH: f64 = 0.32;

/// Yaw, pitch and roll in degrees, and the eye distance in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    /// Positive: the face turned towards the image's left (its own right).
    pub yaw: f64,
    /// Positive: head tilted up.
    pub pitch: f64,
    /// Positive: eye line rotated clockwise in the image.
    pub roll: f64,
    pub eye_distance: f64,
}

/// Eye centres (image-left eye, image-right eye) and nose base of dlib's 5-point shape.
pub fn key_points(lm: &Landmarks) -> ((f64, f64), (f64, f64), (f64, f64)) {
    let p = &lm.points;
    let mid = |a: usize, b: usize| ((p[a].x + p[b].x) / 2.0, (p[a].y + p[b].y) / 2.0);
    // points 0-1: corners of the eye on the image's right; 2-3: the other eye; 4: nose base
    (mid(2, 3), mid(0, 1), (p[4].x, p[4].y))
}

/// Estimate the pose of a 5-point shape (dlib's `shape_predictor_5` points).
pub fn estimate(lm: &Landmarks) -> Pose {
    let (left, right, nose) = key_points(lm);
    let (dx, dy) = (right.0 - left.0, right.1 - left.1);
    let eye_distance = dx.hypot(dy).max(1e-6);
    let roll = dy.atan2(dx);
    let (c, s) = (roll.cos(), roll.sin());
    let mid = ((left.0 + right.0) / 2.0, (left.1 + right.1) / 2.0);
    let (nx, ny) = (nose.0 - mid.0, nose.1 - mid.1);
    // rotate by −roll into the eye-aligned frame, in eye distances
    let h = (c * nx + s * ny) / eye_distance;
    let v = (-s * nx + c * ny) / eye_distance;
    // Head rotation = roll · yaw · pitch (pitch applied first). With depth A and drop B of the
    // nose after pitch (A² + B² = R², the template's constant), the measurements are
    // h = −A·tan(yaw) and v·cos(yaw) = B. Eliminating A and B leaves a quadratic in
    // c = cos²(yaw): v²c² − (h² + v² + R²)c + R² = 0, whose root in [0, 1] gives yaw; then
    // pitch + atan(depth/drop) = atan2(A, B).
    let radius = NOSE_DROP.hypot(NOSE_DEPTH);
    let alpha = NOSE_DEPTH.atan2(NOSE_DROP);
    let r2 = radius * radius;
    let sum = h * h + v * v + r2;
    let cos2 = if v.abs() < 1e-9 {
        r2 / sum
    } else {
        let disc = (sum * sum - 4.0 * v * v * r2).max(0.0);
        ((sum - disc.sqrt()) / (2.0 * v * v)).clamp(0.0, 1.0)
    };
    let yaw = cos2.sqrt().acos().copysign(-h);
    let b = v * yaw.cos();
    // Near yaw 0 the horizontal offset carries no depth information: the depth follows from
    // A² + B² = R² instead (nose in front of the eyes).
    let a = if yaw.abs() > 1e-3 {
        -h / yaw.tan()
    } else {
        (r2 - b * b).max(0.0).sqrt()
    };
    let pitch = a.atan2(b) - alpha;
    Pose {
        yaw: yaw.to_degrees(),
        pitch: pitch.to_degrees(),
        roll: roll.to_degrees(),
        eye_distance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Point;

    /// The template head rotated by yaw, pitch, roll (degrees), projected orthographically at
    /// `scale` pixels per eye distance, as a 5-point shape.
    fn project(yaw: f64, pitch: f64, roll: f64, scale: f64) -> Landmarks {
        let (y, p, r) = (yaw.to_radians(), pitch.to_radians(), roll.to_radians());
        let pts3 = [
            (0.5 + 0.12, 0.0, 0.0),
            (0.5 - 0.12, 0.0, 0.0),
            (-0.5 - 0.12, 0.0, 0.0),
            (-0.5 + 0.12, 0.0, 0.0),
            (0.0, NOSE_DROP, NOSE_DEPTH),
        ];
        let points = pts3.map(|(x, yy, z)| {
            // pitch about the horizontal axis (positive lifts the nose)
            let (y1, z1) = (yy * p.cos() - z * p.sin(), yy * p.sin() + z * p.cos());
            // yaw about the vertical axis (positive turns the nose to the image's left)
            let x2 = x * y.cos() - z1 * y.sin();
            // roll in the image plane
            let (x3, y3) = (x2 * r.cos() - y1 * r.sin(), x2 * r.sin() + y1 * r.cos());
            Point::new(200.0 + scale * x3, 150.0 + scale * y3)
        });
        Landmarks { points }
    }

    #[test]
    fn recovers_the_pose_of_the_template_head() {
        for yaw in [-60.0, -30.0, 0.0, 20.0, 45.0] {
            // (below about −20° pitch the nose base sinks to the eyes' depth and yaw is lost)
            for pitch in [-10.0, 0.0, 15.0, 25.0] {
                for roll in [-40.0, 0.0, 10.0] {
                    let p = estimate(&project(yaw, pitch, roll, 80.0));
                    assert!((p.yaw - yaw).abs() < 0.5, "yaw {yaw} {pitch} {roll}: {p:?}");
                    assert!(
                        (p.roll - roll).abs() < 0.5,
                        "roll {yaw} {pitch} {roll}: {p:?}"
                    );
                    assert!(
                        (p.pitch - pitch).abs() < 0.5,
                        "pitch {yaw} {pitch} {roll}: {p:?}"
                    );
                }
            }
        }
    }
}
