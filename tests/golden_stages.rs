//! Landmarks and aligned chips against dlib's golden outputs, stage by stage: each stage gets
//! dlib's own input (box, landmarks), so its error is its own.

mod common;

use common::{golden_images, models, read_chip};
use uniface::core::geometry::Rect;
use uniface::core::landmarks::ShapePredictor;

fn decode(path: &std::path::Path) -> image::RgbImage {
    uniface::core::image::load_rgb(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn landmarks_match_dlib_from_dlib_boxes() {
    let sp = ShapePredictor::from_file(&models().shape_predictor).unwrap();
    let (mut n, mut sum, mut worst) = (0usize, 0.0f64, (0.0f64, String::new()));
    for (path, _, faces) in golden_images() {
        if faces.is_empty() {
            continue;
        }
        let img = decode(&path);
        for f in &faces {
            let r = Rect::new(f.rect[0], f.rect[1], f.rect[2], f.rect[3]);
            let lm = sp.predict(&img, &r);
            for (p, g) in lm.points.iter().zip(&f.landmarks) {
                let e = ((p.x - g[0]).powi(2) + (p.y - g[1]).powi(2)).sqrt();
                sum += e;
                n += 1;
                if e > worst.0 {
                    worst = (e, path.display().to_string());
                }
            }
        }
    }
    let mean = sum / n as f64;
    println!(
        "{n} landmarks: mean error {mean:.3} px, worst {:.3} px ({})",
        worst.0, worst.1
    );
    assert!(mean <= 1.0, "mean landmark error {mean} px");
}

#[test]
fn chips_match_dlib_from_dlib_landmarks() {
    let (mut n, mut worst) = (0usize, (0.0f64, String::new()));
    for (path, _, faces) in golden_images() {
        if faces.is_empty() {
            continue;
        }
        let img = decode(&path);
        for f in &faces {
            let lm = uniface::core::landmarks::Landmarks {
                points: f
                    .landmarks
                    .map(|p| uniface::core::geometry::Point::new(p[0], p[1])),
            };
            let chip = uniface::core::align::face_chip(&img, &lm, 150, 0.25);
            let golden = read_chip(&f.chip);
            let diff: f64 = chip
                .as_raw()
                .iter()
                .zip(golden.as_raw())
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
                .sum::<f64>()
                / golden.as_raw().len() as f64;
            n += 1;
            if diff > worst.0 {
                worst = (diff, path.display().to_string());
            }
        }
    }
    println!(
        "{n} chips: worst mean |Δ| {:.3} / 255 ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= 2.0,
        "chip mean |Δ| {} / 255 on {}",
        worst.0,
        worst.1
    );
}

#[test]
fn detections_match_dlib() {
    use uniface::core::detect::{DetectOptions, Detector};
    let det = Detector::from_file(&models().detector).unwrap();
    let (mut faces_n, mut worst_iou, mut worst_score) = (0usize, (1.0f64, String::new()), 0.0f64);
    for (path, upsample, faces) in golden_images() {
        let img = decode(&path);
        let opts = DetectOptions {
            upsample,
            ..Default::default()
        };
        let found = det.detect(&img, &opts).unwrap();
        assert_eq!(
            found.len(),
            faces.len(),
            "{}: found {found:?}, dlib found {:?}",
            path.display(),
            faces
                .iter()
                .map(|f| (f.rect, f.confidence))
                .collect::<Vec<_>>()
        );
        for g in &faces {
            let gr = Rect::new(g.rect[0], g.rect[1], g.rect[2], g.rect[3]);
            let (best, score) = found
                .iter()
                .map(|f| (f.rect().iou(&gr), f.score))
                .fold((0.0, 0.0f32), |a, b| if b.0 > a.0 { b } else { a });
            faces_n += 1;
            worst_score = worst_score.max((f64::from(score) - g.confidence).abs());
            if best < worst_iou.0 {
                worst_iou = (best, path.display().to_string());
            }
        }
    }
    println!(
        "{faces_n} faces: worst IoU {:.3} ({}), worst |Δscore| {worst_score:.4}",
        worst_iou.0, worst_iou.1
    );
    assert!(worst_iou.0 >= 0.9, "IoU {} on {}", worst_iou.0, worst_iou.1);
    assert!(worst_score <= 1e-2, "score differs by {worst_score}");
}
