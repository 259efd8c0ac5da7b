//! Real photographs of every kind, and broken inputs: sensible results, typed errors, no panic.

mod common;

use std::sync::OnceLock;

use common::{models, shared_data};
use uniface::core::Error;
use uniface::FaceAnalyzer;

fn analyzer() -> &'static FaceAnalyzer {
    static A: OnceLock<FaceAnalyzer> = OnceLock::new();
    A.get_or_init(|| FaceAnalyzer::new(models()).unwrap())
}

fn faces_in(name: &str, upsample: u32) -> usize {
    let path = shared_data().join("photos").join(name);
    let img = uniface::core::image::load_rgb(&path).unwrap();
    let a = analyzer().clone().with_options(uniface::DetectOptions {
        upsample,
        ..Default::default()
    });
    a.analyze(&img).unwrap().len()
}

#[test]
fn photos_give_sensible_face_counts() {
    assert_eq!(
        faces_in("no_face_landscape_view.jpg", 1),
        0,
        "landscape: no face, no error"
    );
    assert_eq!(
        faces_in("group_6faces_insightface_t1.jpg", 0),
        6,
        "group photo"
    );
    assert_eq!(faces_in("two_faces_two_people.jpg", 0), 2);
    assert_eq!(faces_in("two_faces_kit_with_rose.jpg", 1), 2);
    assert_eq!(faces_in("small_face_obama_small.jpg", 1), 1);
    assert_eq!(
        faces_in("occluded_masked_face_mask2.jpg", 1),
        1,
        "masked face"
    );
}

/// Every photo of `../shared/data/photos` by name, with the faces found at upsample 0 (as
/// dlib finds them: the golden images among them are checked box by box elsewhere).
const PHOTOS_AT_UPSAMPLE_0: [(&str, usize); 15] = [
    ("crowd_many_small_faces_worlds-largest-selfie.jpg", 1),
    ("group_6faces_insightface_t1.jpg", 6),
    ("multi_faces_obama_and_biden.jpg", 3),
    ("no_face_landscape_view.jpg", 0),
    ("occluded_masked_face_mask2.jpg", 1),
    ("partial_face_obama_partial_face.jpg", 1),
    ("profile_left_face.jpg", 1),
    ("quality_blurred_face_blur.jpg", 1),
    ("rotated_180_rot_180.png", 0),
    ("rotated_90_rot_90.png", 1),
    ("rotated_sideways_image_T1.jpg", 1),
    ("small_face_obama_small.jpg", 1),
    ("spoof_photo_of_screen_rgb_fake.jpg", 1),
    ("two_faces_kit_with_rose.jpg", 2),
    ("two_faces_two_people.jpg", 2),
];

#[test]
fn every_photo_is_analysed_without_error() {
    let dir = shared_data().join("photos");
    let a = analyzer().clone().with_options(uniface::DetectOptions {
        upsample: 0,
        ..Default::default()
    });
    for (name, expected) in PHOTOS_AT_UPSAMPLE_0 {
        let img = uniface::core::image::load_rgb(&dir.join(name)).unwrap();
        let faces = a.analyze(&img).unwrap();
        assert_eq!(faces.len(), expected, "{name}");
        for f in &faces {
            assert!(f.bbox.score > 0.0);
            assert_eq!(f.chip.dimensions(), (150, 150));
            assert!(f.embedding.iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn broken_inputs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(shared_data().join("photos/small_face_obama_small.jpg")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.jpg", Vec::new()),
        ("truncated.jpg", good[..good.len() / 3].to_vec()),
        (
            "garbage.jpg",
            b"\xff\xd8\xff\xe0 this is not really a jpeg".to_vec(),
        ),
        ("text.png", b"just text".to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| uniface::core::image::load_rgb(&path));
        match result {
            Ok(Err(Error::Image { .. })) => {}
            Ok(other) => panic!(
                "{name}: expected an image error, got {:?}",
                other.map(|i| i.dimensions())
            ),
            Err(_) => panic!("{name}: panicked"),
        }
    }
    // A 54-byte BMP whose header claims 60,000 × 60,000 pixels (3.6 gigapixels).
    let mut bmp = Vec::new();
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&54u32.to_le_bytes()); // file size
    bmp.extend_from_slice(&0u32.to_le_bytes()); // reserved
    bmp.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    bmp.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
    bmp.extend_from_slice(&60_000i32.to_le_bytes());
    bmp.extend_from_slice(&60_000i32.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes()); // planes
    bmp.extend_from_slice(&24u16.to_le_bytes()); // bits per pixel
    bmp.extend_from_slice(&[0u8; 24]); // no compression, sizes, palette
    let err = uniface::core::image::decode_rgb(&bmp).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageTooLarge {
                width: 60_000,
                height: 60_000,
                ..
            }
        ),
        "{err:?}"
    );
    // Missing file
    let err = uniface::core::image::load_rgb(&dir.path().join("missing.jpg")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[test]
fn tiny_and_odd_images_return_no_faces() {
    for (w, h) in [(1, 1), (3, 200), (200, 3), (40, 40)] {
        let img = image::RgbImage::new(w, h);
        assert_eq!(analyzer().analyze(&img).unwrap().len(), 0, "{w}x{h}");
    }
}

fn iou(a: &uniface::FaceBox, b: &uniface::FaceBox) -> f64 {
    let inter = a.rect().intersect(&b.rect()).area() as f64;
    inter / (a.rect().area() as f64 + b.rect().area() as f64 - inter)
}

/// A 12-megapixel version of the group photo (upscaled 3.125×, as a phone would take it) is
/// detected under the canvas budget, on a reduced copy, and gives the same six faces.
#[test]
fn a_phone_sized_photo_is_detected_within_the_budget() {
    use uniface::core::detect::{Resolution, DEFAULT_MAX_CANVAS_PIXELS};
    let path = shared_data().join("photos/group_6faces_insightface_t1.jpg");
    let small = uniface::core::image::load_rgb(&path).unwrap();
    let s = 3.125;
    let big = image::imageops::resize(
        &small,
        (f64::from(small.width()) * s) as u32,
        (f64::from(small.height()) * s) as u32,
        image::imageops::FilterType::Triangle,
    );
    let a = analyzer();
    let original = a.detect(&small).unwrap();
    let d = a.detect_planned(&big).unwrap();
    assert_eq!(d.plan.resolution, Resolution::Reduced);
    assert!(d.plan.canvas_pixels <= DEFAULT_MAX_CANVAS_PIXELS);
    assert!(d.plan.warning().unwrap().contains("4000x2768"));
    assert_eq!(d.faces.len(), original.len(), "{:?}", d.faces);
    for o in &original {
        let scaled = uniface::FaceBox {
            left: (o.left as f64 * s) as i64,
            top: (o.top as f64 * s) as i64,
            right: (o.right as f64 * s) as i64,
            bottom: (o.bottom as f64 * s) as i64,
            score: o.score,
        };
        let best = d.faces.iter().map(|f| iou(f, &scaled)).fold(0.0, f64::max);
        // measured: 0.52 to 0.92 (box sizes step with the pyramid level)
        assert!(best >= 0.45, "{o:?} best IoU {best}");
    }
    // landmarks and chips come from the full-resolution photo
    let faces = a.analyze(&big).unwrap();
    assert_eq!(faces.len(), 6);
    assert!(faces.iter().all(|f| f.chip.dimensions() == (150, 150)));
}

/// `upsample` far past what the budget holds is clamped (with a warning), not allocated.
#[test]
fn an_extreme_upsample_is_clamped() {
    use uniface::core::detect::Resolution;
    let path = shared_data().join("photos/small_face_obama_small.jpg");
    let img = uniface::core::image::load_rgb(&path).unwrap();
    for upsample in [7, 31, u32::MAX] {
        let a = analyzer().clone().with_options(uniface::DetectOptions {
            upsample,
            ..Default::default()
        });
        let d = a.detect_planned(&img).unwrap();
        assert_eq!(d.plan.resolution, Resolution::Reduced, "{upsample}");
        assert!(
            d.plan.scale() > 4.0 && d.plan.scale() < 16.0,
            "{:?}",
            d.plan
        );
        assert_eq!(d.faces.len(), 1, "upsample {upsample}");
        assert!(d.plan.warning().is_some());
    }
    // an out-of-range budget is a typed error
    let a = analyzer().clone().with_options(uniface::DetectOptions {
        max_canvas_pixels: 0,
        ..Default::default()
    });
    assert!(matches!(
        a.detect(&img),
        Err(Error::InvalidArgument {
            name: "max_canvas_pixels",
            ..
        })
    ));
}
