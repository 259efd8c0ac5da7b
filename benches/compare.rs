//! 1:N scoring: one probe against 1 M templates stored as f32, f16 and i8, with a plain
//! memory read of the same bytes as the in-process baseline (bytes/s for both, so criterion's
//! throughput lines compare directly).
//!
//! ```text
//! RAYON_NUM_THREADS=1 taskset -c 0 cargo bench --bench compare   # one core
//! cargo bench --bench compare                                    # all cores
//! ```
//! `uniface bench compare` prints the same comparison as ratios.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use uniface::core::compare::{Metric, TemplateMatrix};
use uniface::core::template::ElementType;

const TEMPLATES: usize = 1_000_000;
const DIM: usize = 128;

/// The same fixed-seed unit vectors as `uniface bench compare`.
fn unit_vectors(n: usize) -> Vec<Vec<f32>> {
    uniface::bench::unit_vectors(n, DIM).collect()
}

fn bench(c: &mut Criterion) {
    let vectors = unit_vectors(TEMPLATES);
    let probe = unit_vectors(1).remove(0);
    let mut g = c.benchmark_group("one_probe_1M_templates");
    g.sample_size(10);
    for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
        let mut m = TemplateMatrix::new(DIM, element);
        m.reserve(TEMPLATES);
        for v in &vectors {
            m.push(v).expect("finite");
        }
        let mut out = vec![0f32; TEMPLATES];
        let bytes = m.bytes_read_per_row(Metric::Euclidean) * TEMPLATES;
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("{element:?}").to_lowercase(), |b| {
            b.iter(|| m.distances_into(&probe, Metric::Euclidean, &mut out))
        });
        let read: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
        g.bench_function(format!("memory_read_{}", bytes >> 20), |b| {
            b.iter(|| {
                read.par_chunks(1 << 16)
                    .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
                    .reduce(|| 0, u64::wrapping_add)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
