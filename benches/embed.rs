//! Embedder throughput: one chip and a batch of 32, for the fast GEMM path and, as the
//! in-process baseline, candle's stock conv2d.
//!
//! Threads come from the environment, so one core is measured as one core:
//!
//! ```text
//! RAYON_NUM_THREADS=1 taskset -c 0 cargo bench --bench embed   # one core
//! cargo bench --bench embed                                    # all cores
//! ```
//!
//! Models come from the store; chips from ../shared/data/golden when present, otherwise a
//! synthetic chip (the network's cost does not depend on the pixels).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uniface::{Backend, Embedder, ModelStore};

fn chips(n: usize) -> Vec<image::RgbImage> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/golden/chips");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    (0..n)
        .map(|i| match files.get(i % files.len().max(1)) {
            Some(p) => image::open(p).expect("decode chip").to_rgb8(),
            None => image::RgbImage::from_fn(150, 150, |x, y| {
                image::Rgb([(x + i as u32) as u8, y as u8, (x * y) as u8])
            }),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let models = ModelStore::from_env()
        .and_then(|s| s.ensure())
        .expect("models");
    let bytes = std::fs::read(&models.embedder).expect("read model");
    let file = uniface::core::embed::parse_resnet("resnet", &bytes).expect("parse");
    let threads = format!("{}-threads", rayon::current_num_threads());
    let one = chips(1);
    let batch = chips(32);
    for backend in [Backend::Gemm, Backend::CandleConv2d] {
        let e = Embedder::from_parsed(&file, backend, &uniface::core::Device::Cpu).unwrap();
        let mut g = c.benchmark_group(format!("embed/{backend:?}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("chip", &threads), |b| {
            b.iter(|| e.embed_chip(&one[0]).unwrap())
        });
        g.throughput(Throughput::Elements(32));
        g.bench_function(BenchmarkId::new("batch32", &threads), |b| {
            b.iter(|| e.embed_chips(&batch).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
