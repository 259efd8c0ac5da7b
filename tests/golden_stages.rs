//! Landmarks and aligned chips against dlib's golden outputs, stage by stage: each stage gets
//! dlib's own input (box, landmarks), so its error is its own.

mod common;

use common::{golden_images, models, read_chip, Parity, CHIP_TOLERANCE, LANDMARK_TOLERANCE_PX};
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
        "{n} landmarks: mean error {mean:.2e} px, worst {:.2e} px ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= LANDMARK_TOLERANCE_PX,
        "landmark error {} px on {}",
        worst.0,
        worst.1
    );
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
        "{n} chips: worst mean |Δ| {:.2e} / 255 ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= CHIP_TOLERANCE,
        "chip mean |Δ| {} / 255 on {}",
        worst.0,
        worst.1
    );
}

#[test]
fn the_whole_pipeline_matches_dlib_end_to_end() {
    // Our detector's boxes feed our landmarks, our chips and our embedder: every stage is
    // compared with dlib's at once, on all 50 golden images at their recorded upsample.
    use uniface::{DetectOptions, FaceAnalyzer};
    let analyzer = FaceAnalyzer::new(models()).unwrap();
    let images = golden_images();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .chunks(images.len().div_ceil(2))
            .map(|part| {
                let analyzer = &analyzer;
                s.spawn(move || {
                    part.iter()
                        .map(|(path, upsample, _)| {
                            let a = analyzer.clone().with_options(DetectOptions {
                                upsample: *upsample,
                                ..Default::default()
                            });
                            a.analyze(&decode(path)).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut n = 0usize;
    let mut worst_iou = 1.0f64;
    let mut worst = Parity {
        boxes_identical: true,
        ..Parity::default()
    };
    for ((path, _, golden), found) in images.iter().zip(&results) {
        assert_eq!(
            found.len(),
            golden.len(),
            "{}: found {:?}, dlib found {:?}",
            path.display(),
            found.iter().map(|f| f.bbox).collect::<Vec<_>>(),
            golden
                .iter()
                .map(|f| (f.rect, f.confidence))
                .collect::<Vec<_>>()
        );
        for g in golden {
            let gr = Rect::new(g.rect[0], g.rect[1], g.rect[2], g.rect[3]);
            let f = found
                .iter()
                .max_by(|a, b| a.bbox.rect().iou(&gr).total_cmp(&b.bbox.rect().iou(&gr)))
                .unwrap();
            n += 1;
            worst_iou = worst_iou.min(f.bbox.rect().iou(&gr));
            worst.boxes_identical &= f.bbox.rect() == gr;
            worst.score = worst
                .score
                .max((f64::from(f.bbox.score) - g.confidence).abs());
            let lm: f64 = f
                .landmarks
                .points
                .iter()
                .zip(&g.landmarks)
                .map(|(p, q)| ((p.x - q[0]).powi(2) + (p.y - q[1]).powi(2)).sqrt())
                .sum::<f64>()
                / 5.0;
            worst.landmarks_px = worst.landmarks_px.max(lm);
            let chip = read_chip(&g.chip);
            let d: f64 = f
                .chip
                .as_raw()
                .iter()
                .zip(chip.as_raw())
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
                .sum::<f64>()
                / chip.as_raw().len() as f64;
            worst.chip = worst.chip.max(d);
            let dist = f
                .embedding
                .iter()
                .zip(&g.descriptor_from_image)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            worst.descriptor_distance = worst.descriptor_distance.max(dist);
        }
    }
    println!(
        "{n} faces end to end: worst box IoU {worst_iou:.4}, worst |Δscore| {:.2e}, \
         worst mean landmark error {:.2e} px, worst chip mean |Δ| {:.2e}/255, \
         worst descriptor distance {:.2e}",
        worst.score, worst.landmarks_px, worst.chip, worst.descriptor_distance
    );
    assert_eq!(worst.violation(), None, "{worst:?}");
}

/// A test of the test: each end-to-end tolerance fails on a perturbation of the size it
/// guards against — a box one pixel off, a landmark 0.02 px off, one descriptor value 1e-4
/// off — starting from the measured worst values.
#[test]
fn perturbed_stage_outputs_fail_the_tolerances() {
    let measured = Parity {
        boxes_identical: true,
        score: 1.31e-4,
        landmarks_px: 0.0,
        chip: 0.0,
        descriptor_distance: 1.86e-6,
    };
    assert_eq!(measured.violation(), None);
    let off_box = Parity {
        boxes_identical: false,
        ..measured
    };
    let off_landmark = Parity {
        landmarks_px: 0.02,
        ..measured
    };
    // one value off by 1e-4 moves the descriptor by 1e-4 (Euclidean)
    let mut d = [0.1f32; 128];
    let golden = d;
    d[5] += 1e-4;
    let dist = d
        .iter()
        .zip(&golden)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        .sqrt();
    let off_descriptor = Parity {
        descriptor_distance: measured.descriptor_distance + dist,
        ..measured
    };
    let off_chip = Parity {
        chip: 1.0,
        ..measured
    };
    for p in [off_box, off_landmark, off_descriptor, off_chip] {
        assert!(p.violation().is_some(), "{p:?}");
    }
}
