//! The dlib `.dat` reader on the shipped files and on damaged copies of them.

mod common;

use common::models;
use uniface::core::dlib::{self, dnn};
use uniface::core::Error;

fn resnet(bytes: &[u8]) -> uniface::core::Result<dnn::DnnFile> {
    uniface::core::embed::parse_resnet("resnet", bytes)
}

#[test]
fn the_resnet_file_parses_completely() {
    let bytes = std::fs::read(&models().embedder).unwrap();
    let net = resnet(&bytes).unwrap();
    assert_eq!(net.parameter_count(), 5_614_592);
    let convs = net
        .layers
        .iter()
        .filter(|l| matches!(l, dnn::Layer::Conv(_)))
        .count();
    assert_eq!(convs, 29);
    assert_eq!(net.input.size, Some((150, 150)));
    assert!((net.input.mean_rgb[0] - 122.782).abs() < 1e-3);
    assert!(
        matches!(net.loss, dnn::LossDetails::Metric { dist_thresh, .. } if (dist_thresh - 0.6).abs() < 1e-6)
    );
}

#[test]
fn the_mmod_file_parses_completely() {
    let net = dlib::read_dnn(
        &models().detector,
        &dnn::mmod_spec(),
        dnn::InputSpec::RgbImagePyramid,
    )
    .unwrap();
    assert_eq!(net.parameter_count(), 181_141);
    let dnn::LossDetails::Mmod(opts) = &net.loss else {
        panic!("expected the MMOD loss")
    };
    assert_eq!(opts.windows, vec![(80, 80)]);
    assert!((opts.nms.0 - 0.33828).abs() < 1e-4);
}

#[test]
fn a_truncated_file_is_a_typed_error_at_every_cut() {
    let bytes = std::fs::read(&models().embedder).unwrap();
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((1..200).map(|i| i * bytes.len() / 200));
    cuts.push(bytes.len() - 1);
    for cut in cuts {
        match resnet(&bytes[..cut]) {
            Err(Error::ModelFormat { offset, .. }) => assert!(offset <= cut),
            other => panic!(
                "cut at {cut}: expected ModelFormat, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = std::fs::read(&models().embedder).unwrap();
    bytes.push(0);
    let err = resnet(&bytes).unwrap_err();
    assert!(format!("{err}").contains("trailing"), "{err}");
}

#[test]
fn the_wrong_file_is_refused() {
    let mmod = std::fs::read(&models().detector).unwrap();
    assert!(matches!(resnet(&mmod), Err(Error::ModelFormat { .. })));
    let sp = std::fs::read(&models().shape_predictor).unwrap();
    assert!(matches!(resnet(&sp), Err(Error::ModelFormat { .. })));
    assert!(matches!(
        resnet(b"not a model"),
        Err(Error::ModelFormat { .. })
    ));
    assert!(matches!(resnet(&[]), Err(Error::ModelFormat { .. })));
}

#[test]
fn flipped_bytes_never_panic_and_structural_flips_are_caught() {
    let bytes = std::fs::read(&models().embedder).unwrap();
    // The wrapper headers (one version integer per layer, outer to inner) run from the end of
    // the loss details to the input layer's name: structure only, so every flip there must be
    // refused. Elsewhere a flip may land in raw weights, which only the SHA-256 can see; it
    // must still never panic.
    let input_name = bytes
        .windows(21)
        .position(|w| w == b"input_rgb_image_sized")
        .unwrap();
    let headers = 29..input_name - 2; // bytes 0..29: loss version, name, margin, dist_thresh
    assert_eq!(&bytes[29..31], &[1, 2], "first wrapper header");
    let mut positions: Vec<usize> = (0..input_name + 64).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        positions.push((x % bytes.len() as u64) as usize);
    }
    let mut caught = 0;
    let mut copy = bytes.clone();
    for &p in &positions {
        copy[p] ^= 0x5a;
        let result = std::panic::catch_unwind(|| resnet(&copy).map(|_| ()));
        copy[p] = bytes[p];
        match result {
            Ok(Err(Error::ModelFormat { .. })) => caught += 1,
            Ok(Err(e)) => panic!("flip at {p}: unexpected error type {e:?}"),
            Ok(Ok(())) => assert!(
                !headers.contains(&p),
                "flip at header byte {p} was accepted"
            ),
            Err(_) => panic!("flip at {p} panicked"),
        }
    }
    println!(
        "{caught} of {} flips refused; all {} header bytes among them",
        positions.len(),
        headers.len()
    );
    assert!(caught >= headers.len());
}
