//! The extraction pipeline stage by stage: detection on a 250×250 LFW image and on the
//! 1280×886 group photo, landmarks, chip extraction, and the whole pipeline on the LFW image.
//!
//! ```text
//! RAYON_NUM_THREADS=1 taskset -c 0 cargo bench --bench pipeline   # one core
//! ```
//!
//! Needs the models (store) and ../shared/data (real photos).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use uniface::core::align::{face_chip, CHIP_PADDING, CHIP_SIZE};
use uniface::{DetectOptions, FaceAnalyzer, ModelStore};

fn photo(rel: &str) -> image::RgbImage {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel);
    uniface::core::image::load_rgb(&p).expect("the benches need ../shared/data")
}

fn bench(c: &mut Criterion) {
    let models = ModelStore::from_env()
        .and_then(|s| s.ensure())
        .expect("models");
    let analyzer = FaceAnalyzer::new(&models).expect("load models");
    let lfw = photo("lfw/Mark_Redman/Mark_Redman_0001.jpg");
    let group = photo("photos/group_6faces_insightface_t1.jpg");
    let up = |n| DetectOptions {
        upsample: n,
        ..Default::default()
    };

    let mut g = c.benchmark_group("detect");
    g.sample_size(10);
    g.bench_function("lfw-250x250/upsample-1", |b| {
        b.iter(|| analyzer.detector.detect(&lfw, &up(1)).unwrap())
    });
    g.bench_function("lfw-250x250/upsample-0", |b| {
        b.iter(|| analyzer.detector.detect(&lfw, &up(0)).unwrap())
    });
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("group-1280x886/upsample-0", |b| {
        b.iter(|| analyzer.detector.detect(&group, &up(0)).unwrap())
    });
    g.bench_function("group-1280x886/upsample-1", |b| {
        b.iter(|| analyzer.detector.detect(&group, &up(1)).unwrap())
    });
    g.finish();

    let faces = analyzer.detector.detect(&lfw, &up(1)).unwrap();
    let rect = faces[0].rect();
    let lm = analyzer.landmarks.predict(&lfw, &rect);
    c.bench_function("landmarks/5-point", |b| {
        b.iter(|| analyzer.landmarks.predict(&lfw, &rect))
    });
    c.bench_function("align/chip-150", |b| {
        b.iter(|| face_chip(&lfw, &lm, CHIP_SIZE, CHIP_PADDING))
    });

    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    for n in [0, 1] {
        let a = analyzer.clone().with_options(up(n));
        g.bench_function(format!("lfw-250x250/upsample-{n}"), |b| {
            b.iter(|| a.analyze(&lfw).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
