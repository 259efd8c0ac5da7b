//! The capture gate on real photos: each known defect is refused with its reason code, good
//! frontal photos pass, and degenerate images give typed results rather than panics.

mod common;

use common::{models, shared_data};
use uniface::core::liveness::LivenessDetector;
use uniface::core::quality::{Policy, Reason};
use uniface::FaceAnalyzer;

fn gate() -> (FaceAnalyzer, LivenessDetector) {
    let dir = shared_data().join("liveness/minifasnet");
    let live = LivenessDetector::from_files(
        &dir.join("2.7_80x80_MiniFASNetV2.pth"),
        &dir.join("4_0_0_80x80_MiniFASNetV1SE.pth"),
        &uniface::core::Device::Cpu,
    )
    .expect("liveness models");
    (FaceAnalyzer::new(models()).expect("analyzer"), live)
}

#[test]
fn each_defect_is_refused_with_its_reason_and_good_photos_pass() {
    let (analyzer, live) = gate();
    let policy = Policy::enrollment();
    let cases: [(&str, Option<Reason>); 8] = [
        ("photos/quality_blurred_face_blur.jpg", Some(Reason::Blurry)),
        (
            "photos/partial_face_obama_partial_face.jpg",
            Some(Reason::FaceCutOff),
        ),
        (
            "photos/small_face_obama_small.jpg",
            Some(Reason::FaceTooSmall),
        ),
        ("photos/profile_left_face.jpg", Some(Reason::YawTooLarge)),
        ("photos/no_face_landscape_view.jpg", Some(Reason::NoFace)),
        (
            "photos/spoof_photo_of_screen_rgb_fake.jpg",
            Some(Reason::NotLive),
        ),
        ("liveness/samples/image_T1.jpg", None),
        ("photos/rotated_sideways_image_T1.jpg", None),
    ];
    for (photo, want) in cases {
        let img = uniface::core::image::load_rgb(&shared_data().join(photo)).unwrap();
        let a = analyzer.assess(&img, &policy, Some(&live)).unwrap();
        match want {
            Some(reason) => {
                assert!(!a.accepted, "{photo} accepted: {a:?}");
                assert!(a.reasons.contains(&reason), "{photo}: {:?}", a.reasons);
            }
            None => assert!(
                a.accepted,
                "{photo} refused: {:?} {:?}",
                a.reasons, a.quality
            ),
        }
        if let Some(q) = &a.quality {
            for m in [q.sharpness, q.yaw, q.inter_eye_distance, q.face_inside] {
                assert!((0.0..=100.0).contains(&m.scalar) && m.raw.is_finite());
            }
        }
    }
}

#[test]
fn degenerate_images_give_typed_results() {
    let (analyzer, live) = gate();
    let policy = Policy::verification();
    let images = [
        image::RgbImage::new(1, 1),
        image::RgbImage::from_pixel(8, 8, image::Rgb([200, 200, 200])),
        image::RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128])),
        image::RgbImage::from_pixel(4000, 3, image::Rgb([30, 60, 90])),
        image::RgbImage::from_pixel(3, 2000, image::Rgb([30, 60, 90])),
    ];
    for img in &images {
        let a = analyzer.assess(img, &policy, Some(&live)).unwrap();
        assert!(!a.accepted);
        assert_eq!(a.reasons, vec![Reason::NoFace], "{:?}", img.dimensions());
    }
    // a policy that needs liveness without a detector is an error, not a silent pass
    let ok = image::RgbImage::new(10, 10);
    assert!(analyzer.assess(&ok, &policy, None).is_err());
    let mut lenient = policy;
    lenient.require_live = false;
    assert!(analyzer.assess(&ok, &lenient, None).is_ok());
}

#[test]
fn accepted_enrollment_yields_the_pipelines_descriptor() {
    let (analyzer, live) = gate();
    let img = uniface::core::image::load_rgb(&shared_data().join("liveness/samples/image_T1.jpg"))
        .unwrap();
    let (a, face) = analyzer
        .assess_and_describe(&img, &Policy::enrollment(), Some(&live))
        .unwrap();
    assert!(a.accepted);
    let face = face.expect("descriptor of an accepted face");
    let plain = analyzer.analyze(&img).unwrap();
    assert_eq!(plain[0].embedding, face.embedding);
    // refused: no descriptor
    let blur =
        uniface::core::image::load_rgb(&shared_data().join("photos/quality_blurred_face_blur.jpg"))
            .unwrap();
    let (a, face) = analyzer
        .assess_and_describe(&blur, &Policy::enrollment(), Some(&live))
        .unwrap();
    assert!(!a.accepted && face.is_none());
}
