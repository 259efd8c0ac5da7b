//! The embedder against dlib itself: every golden chip's descriptor within
//! `DESCRIPTOR_TOLERANCE` (5e-6; measured 5.1e-7).

mod common;

use std::sync::Arc;

use common::{golden_faces, max_abs_diff, models, read_chip, GoldenFace, DESCRIPTOR_TOLERANCE};
use uniface::core::dlib::dnn::DnnFile;
use uniface::{Backend, Embedder};

const TOLERANCE: f32 = DESCRIPTOR_TOLERANCE;

fn parsed() -> DnnFile {
    let bytes = std::fs::read(&models().embedder).unwrap();
    uniface::core::embed::parse_resnet("resnet", &bytes).unwrap()
}

fn check_backend(backend: Backend) {
    let file = parsed();
    let embedder = Embedder::from_parsed(&file, backend, &uniface::core::Device::Cpu).unwrap();
    let faces = golden_faces();
    let ours: Vec<_> = faces
        .iter()
        .map(|f| embedder.embed_chip(&read_chip(&f.chip)).unwrap())
        .collect();
    let worst = worst_of(&ours, &faces);
    println!(
        "{backend:?}: {} golden chips, worst max|Δ| = {:.3e} ({})",
        faces.len(),
        worst.0,
        worst.1
    );
    assert!(
        worst.0 <= TOLERANCE,
        "{backend:?}: max |Δ| {} on {} exceeds {TOLERANCE}",
        worst.0,
        worst.1
    );
}

/// The largest max |Δ| of `ours` against the golden descriptors, and its image.
fn worst_of(ours: &[uniface::Descriptor], faces: &[GoldenFace]) -> (f32, String) {
    let mut worst = (0.0f32, String::new());
    for (d, face) in ours.iter().zip(faces) {
        let diff = max_abs_diff(d, &face.descriptor);
        if diff > worst.0 {
            worst = (diff, face.image.clone());
        }
    }
    worst
}

/// A test of the test: one value of one descriptor off by 1e-4 — twenty times the tolerance,
/// and well inside what a broken layer or a wrong rounding would do — fails the check.
#[test]
fn a_descriptor_perturbed_by_1e_4_fails_the_tolerance() {
    let embedder = Embedder::from_file(&models().embedder).unwrap();
    let faces: Vec<GoldenFace> = golden_faces().into_iter().take(3).collect();
    let mut ours: Vec<_> = faces
        .iter()
        .map(|f| embedder.embed_chip(&read_chip(&f.chip)).unwrap())
        .collect();
    assert!(worst_of(&ours, &faces).0 <= TOLERANCE);
    ours[1][77] += 1e-4;
    let (worst, image) = worst_of(&ours, &faces);
    assert!(worst > TOLERANCE, "{worst}");
    assert_eq!(image, faces[1].image);
}

#[test]
fn gemm_backend_matches_dlib_on_every_golden_chip() {
    check_backend(Backend::Gemm);
}

#[test]
fn candle_conv2d_backend_matches_dlib_on_every_golden_chip() {
    check_backend(Backend::CandleConv2d);
}

#[test]
fn batched_embedding_equals_one_by_one() {
    let embedder = Embedder::from_file(&models().embedder).unwrap();
    let faces = golden_faces();
    let chips: Vec<_> = faces.iter().take(20).map(|f| read_chip(&f.chip)).collect();
    let batch = embedder.embed_chips(&chips).unwrap();
    assert_eq!(batch.len(), chips.len());
    for (chip, b) in chips.iter().zip(&batch) {
        let single = embedder.embed_chip(chip).unwrap();
        assert!(max_abs_diff(&single, b) <= 1e-5);
    }
}

#[test]
fn one_embedder_serves_many_threads() {
    let embedder = Arc::new(Embedder::from_file(&models().embedder).unwrap());
    let faces = golden_faces();
    let chips: Arc<Vec<_>> = Arc::new(faces.iter().take(8).map(|f| read_chip(&f.chip)).collect());
    let expected: Vec<_> = chips
        .iter()
        .map(|c| embedder.embed_chip(c).unwrap())
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (embedder, chips) = (Arc::clone(&embedder), Arc::clone(&chips));
            std::thread::spawn(move || {
                (0..chips.len())
                    .map(|i| {
                        let i = (i + t) % chips.len();
                        (i, embedder.embed_chip(&chips[i]).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (i, d) in h.join().unwrap() {
            assert!(max_abs_diff(&d, &expected[i]) <= 1e-5);
        }
    }
}

#[test]
fn the_same_person_matches_across_photos_and_another_does_not() {
    // Obama (left) and Biden (right) in one photo, against two other photos of Obama.
    let embedder = Embedder::from_file(&models().embedder).unwrap();
    let faces = golden_faces();
    let of = |name: &str| -> Vec<_> {
        faces
            .iter()
            .filter(|f| f.image.ends_with(name))
            .map(|f| embedder.embed_chip(&read_chip(&f.chip)).unwrap())
            .collect()
    };
    let pair = of("two_faces_two_people.jpg");
    let mut obama = of("small_face_obama_small.jpg");
    obama.extend(of("partial_face_obama_partial_face.jpg"));
    assert_eq!((pair.len(), obama.len()), (2, 2));
    for o in &obama {
        let to_obama = uniface::euclidean_distance(&pair[0], o);
        let to_biden = uniface::euclidean_distance(&pair[1], o);
        assert!(to_obama < 0.6, "Obama vs Obama at {to_obama}");
        assert!(to_biden > 0.6, "Biden vs Obama at {to_biden}");
    }
}

#[test]
fn wrong_chip_sizes_are_typed_errors() {
    let embedder = Embedder::from_file(&models().embedder).unwrap();
    let err = embedder
        .embed_chip(&image::RgbImage::new(149, 150))
        .unwrap_err();
    assert!(
        matches!(
            err,
            uniface::core::Error::ChipSize {
                width: 149,
                height: 150,
                ..
            }
        ),
        "{err:?}"
    );
    let err = embedder.embed_rgb_batch(&[0u8; 10], 1).unwrap_err();
    assert!(
        matches!(err, uniface::core::Error::BufferLength { .. }),
        "{err:?}"
    );
}
