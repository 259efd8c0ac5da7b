//! Speed as ratios against baselines measured in the same process (what `uniface bench`
//! prints): the embedder against candle's stock convolution and a plain GEMM, 1:N scoring
//! against the memory-read bandwidth, the capture gate against one embedding, and
//! ([`gallery`]) the gallery against raw usearch. Each returns a [`Report`]; none asserts a
//! time.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{json, Value};

use crate::core::candle::{Device, Tensor};
use crate::core::Error;
use crate::{Backend, Embedder, ModelStore, Result};

pub mod cluster;
pub mod gallery;

/// A benchmark's figures, as JSON and as the text `uniface bench` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub json: Value,
    pub text: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `runs` calls after one warm-up call.
pub fn time<E: Into<crate::Error>>(
    runs: usize,
    mut f: impl FnMut() -> std::result::Result<(), E>,
) -> Result<f64> {
    f().map_err(Into::into)?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f().map_err(Into::into)?;
        t.push(start.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

/// GFLOP/s of candle's f32 matmul on 1024×1024 matrices: the practical GEMM ceiling.
fn gemm_ceiling(runs: usize) -> Result<f64> {
    let n = 1024;
    let a = Tensor::ones((n, n), candle_dtype(), &Device::Cpu)?;
    let b = Tensor::ones((n, n), candle_dtype(), &Device::Cpu)?;
    let s = time(runs.clamp(3, 10), || {
        a.matmul(&b)?;
        Ok::<(), crate::Error>(())
    })?;
    Ok(2.0 * (n * n * n) as f64 / s / 1e9)
}

fn candle_dtype() -> crate::core::candle::DType {
    crate::core::candle::DType::F32
}

/// The embedder: GEMM path against candle's conv2d and a 1024³ matmul, optionally per layer.
pub fn embed(batch: usize, runs: usize, layers: bool) -> Result<Report> {
    let batch = batch.max(1);
    let models = ModelStore::from_env()?.ensure()?;
    let bytes = std::fs::read(&models.embedder).map_err(|e| Error::Io {
        path: models.embedder.clone(),
        source: e,
    })?;
    let file = crate::core::embed::parse_resnet("resnet", &bytes)?;
    let fast = Embedder::from_parsed(&file, Backend::Gemm, &Device::Cpu)?;
    let stock = Embedder::from_parsed(&file, Backend::CandleConv2d, &Device::Cpu)?;
    // Deterministic pixels; the cost does not depend on them.
    let rgb: Vec<u8> = (0..batch * 150 * 150 * 3)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let x = fast.input_tensor(&rgb, batch)?;

    let t_fast = time(runs, || fast.network().forward(&x).map(|_| ()))?;
    let t_stock = time(runs.div_ceil(2), || stock.network().forward(&x).map(|_| ()))?;
    let ceiling = gemm_ceiling(runs)?;
    let flops = fast.flops_per_face() as f64;
    let per_face = |t: f64| t / batch as f64;
    let gflops = flops * batch as f64 / t_fast / 1e9;

    let mut per_layer = Vec::new();
    if layers {
        let mut sums: Vec<(usize, &'static str, Vec<usize>, f64)> = Vec::new();
        for run in 0..=runs {
            let mut last = Instant::now();
            fast.network().forward_inspect(&x, |i, name, out| {
                let dt = last.elapsed().as_secs_f64();
                if run == 0 {
                    sums.push((i, name, out.dims().to_vec(), 0.0));
                } else if let Some(s) = sums.iter_mut().find(|s| s.0 == i) {
                    s.3 += dt;
                }
                last = Instant::now();
            })?;
        }
        per_layer = sums
            .into_iter()
            .map(|(i, name, dims, t)| (i, name, dims, t / runs.max(1) as f64))
            .collect();
    }

    let json = {
        let layers: Vec<_> = per_layer
            .iter()
            .map(|(i, name, dims, t)| json!({"op": i, "name": name, "output": dims, "ms": t * 1e3}))
            .collect();
        json!({
                "batch": batch,
                "threads": rayon_threads(),
                "gemm_ms_per_face": per_face(t_fast) * 1e3,
                "candle_conv2d_ms_per_face": per_face(t_stock) * 1e3,
                "speedup_vs_candle_conv2d": t_stock / t_fast,
                "gflop_per_face": flops / 1e9,
                "gflops": gflops,
                "gemm_ceiling_gflops": ceiling,
                "fraction_of_gemm_ceiling": gflops / ceiling,
                "layers": layers,
        })
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "embedder, batch {batch}, {} thread(s), median of {runs} runs",
        rayon_threads()
    );
    let _ = writeln!(
        text,
        "  gemm path          {:8.3} ms/face  ({:.1} faces/s)",
        per_face(t_fast) * 1e3,
        1.0 / per_face(t_fast)
    );
    let _ = writeln!(
        text,
        "  candle conv2d      {:8.3} ms/face  (baseline; gemm path is {:.2}x faster)",
        per_face(t_stock) * 1e3,
        t_stock / t_fast
    );
    let _ = writeln!(
        text,
        "  work               {:.3} GFLOP/face; {gflops:.1} GFLOP/s = {:.0}% of candle's 1024^3 matmul ({ceiling:.1} GFLOP/s, same run)",
        flops / 1e9,
        100.0 * gflops / ceiling
    );
    for (i, name, dims, t) in &per_layer {
        if *t > 1e-5 {
            let _ = writeln!(
                text,
                "    {i:3} {name:<10} {:<18} {:8.3} ms",
                format!("{dims:?}"),
                t * 1e3
            );
        }
    }
    Ok(Report { json, text })
}

/// Threads rayon uses (RAYON_NUM_THREADS, else the cores).
pub fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Bytes per second of the plainest possible read of `buf` (a vectorised wrapping sum) on the
/// current rayon pool: the ceiling that 1:N scoring of a gallery larger than the caches can
/// approach.
fn read_bandwidth(buf: &[u64], runs: usize) -> Result<f64> {
    use rayon::prelude::*;
    let s = time(runs, || {
        let sum = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(sum);
        Ok::<(), crate::Error>(())
    })?;
    Ok(std::mem::size_of_val(buf) as f64 / s)
}

/// `n` pseudo-random unit vectors of `dim` values (deterministic).
pub fn unit_vectors(n: usize, dim: usize) -> impl Iterator<Item = Vec<f32>> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..n).map(move |_| {
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    })
}

/// `uniface bench compare`: 1:N scoring throughput of f32, f16 and i8 matrices, one core and
/// all cores, against the machine's plain memory-read bandwidth measured in the same run.
/// 1:N scoring throughput per element type against the plain memory-read bandwidth.
pub fn compare(templates: usize, runs: usize) -> Result<Report> {
    use crate::core::compare::{Metric, TemplateMatrix};
    use crate::core::template::ElementType;
    let dim = crate::core::embed::DESCRIPTOR_DIM;
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::InvalidArgument {
            name: "threads",
            message: e.to_string(),
        })?;
    let all_threads = rayon::current_num_threads();
    // One buffer as large as the f32 gallery, touched before timing.
    let read_buf: Vec<u64> = (0..templates * dim / 2).map(|i| i as u64).collect();
    let read_one = single.install(|| read_bandwidth(&read_buf, runs))?;
    let read_all = read_bandwidth(&read_buf, runs)?;
    drop(read_buf);
    let probe = unit_vectors(1, dim).next().unwrap_or_default();
    let mut rows = Vec::new();
    for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
        let mut m = TemplateMatrix::new(dim, element);
        m.reserve(templates);
        for v in unit_vectors(templates, dim) {
            m.push(&v)?;
        }
        let mut out = vec![0f32; templates];
        let metric = Metric::Euclidean;
        let t_one = single.install(|| time(runs, || m.distances_into(&probe, metric, &mut out)))?;
        let t_all = time(runs, || m.distances_into(&probe, metric, &mut out))?;
        let bytes = (m.bytes_read_per_row(metric) * templates) as f64;
        rows.push((element, bytes, t_one, t_all));
    }
    let gb = |b: f64| b / 1e9;
    let json = {
        let results: Vec<_> = rows
            .iter()
            .map(|(e, bytes, t1, ta)| {
                json!({
                    "element": format!("{e:?}").to_lowercase(),
                    "bytes_per_template": bytes / templates as f64,
                    "one_core_templates_per_s": templates as f64 / t1,
                    "one_core_gb_per_s": gb(bytes / t1),
                    "one_core_fraction_of_read": bytes / t1 / read_one,
                    "all_cores_templates_per_s": templates as f64 / ta,
                    "all_cores_gb_per_s": gb(bytes / ta),
                    "all_cores_fraction_of_read": bytes / ta / read_all,
                })
            })
            .collect();
        json!({
                "templates": templates, "dim": dim, "metric": "euclidean",
                "threads": all_threads,
                "read_gb_per_s_one_core": gb(read_one),
                "read_gb_per_s_all_cores": gb(read_all),
                "results": results,
        })
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "1:N scoring, {templates} templates of {dim} values, euclidean, median of {runs} runs"
    );
    let _ = writeln!(
        text,
        "  plain memory read: {:.1} GB/s one core, {:.1} GB/s {all_threads} threads (same run)",
        gb(read_one),
        gb(read_all)
    );
    for (e, bytes, t1, ta) in &rows {
        let _ = writeln!(
            text,
            "  {:<4} one core {:7.1} M templates/s {:5.1} GB/s ({:3.0}% of read) | {all_threads} threads {:7.1} M/s {:5.1} GB/s ({:3.0}%)",
            format!("{e:?}").to_lowercase(),
            templates as f64 / t1 / 1e6,
            gb(bytes / t1),
            100.0 * bytes / t1 / read_one,
            templates as f64 / ta / 1e6,
            gb(bytes / ta),
            100.0 * bytes / ta / read_all,
        );
    }
    Ok(Report { json, text })
}

/// `uniface bench gate`: per-face cost of the quality measures, the unified score, liveness
/// and, as the yardstick, one embedding — on one photo's largest face.
pub fn gate(image: &std::path::Path, runs: usize) -> Result<Report> {
    use crate::core::align::{face_chip, CHIP_PADDING, CHIP_SIZE};
    use crate::core::liveness::LivenessDetector;
    use crate::core::quality;
    let analyzer = crate::FaceAnalyzer::from_env()?;
    let liveness = LivenessDetector::from_store(&ModelStore::from_env()?)?;
    let img = crate::core::image::load_rgb(image)?;
    let Some((face, lm, found)) = analyzer.select_face(&img)? else {
        return Err(crate::Error::Core(Error::NoFace {
            image: image.display().to_string(),
        }));
    };
    let chip = face_chip(&img, &lm, CHIP_SIZE, CHIP_PADDING);
    let t_measure = time(runs, || {
        let c = face_chip(&img, &lm, CHIP_SIZE, CHIP_PADDING);
        std::hint::black_box(quality::measure(&img, &face, &lm, &c, found));
        Ok::<(), crate::Error>(())
    })?;
    let t_unified = time(runs, || {
        quality::unified(&analyzer.embedder, &img, &lm).map(|m| {
            std::hint::black_box(m);
        })
    })?;
    let t_embed = time(runs, || {
        analyzer
            .embedder
            .embed_chips(std::slice::from_ref(&chip))
            .map(|e| {
                std::hint::black_box(e);
            })
    })?;
    let t_live = time(runs, || {
        liveness.check(&img, &face.rect()).map(|l| {
            std::hint::black_box(l);
        })
    })?;
    let ms = |t: f64| t * 1e3;
    let json = json!({
        "image": image, "threads": rayon_threads(),
        "quality_measures_ms": ms(t_measure), "unified_ms": ms(t_unified),
        "one_embedding_ms": ms(t_embed), "liveness_ms": ms(t_live),
    });
    let mut text = String::new();
    let _ = writeln!(
        text,
        "gate on {} ({} thread(s)), median of {runs} runs",
        image.display(),
        rayon_threads()
    );
    let _ = writeln!(
        text,
        "  quality measures (chip + all measures)  {:8.3} ms",
        ms(t_measure)
    );
    let _ = writeln!(
        text,
        "  unified score (5 chips, 5 embeddings)   {:8.3} ms  = {:.1}x one embedding ({:.3} ms)",
        ms(t_unified),
        t_unified / t_embed,
        ms(t_embed)
    );
    let _ = writeln!(
        text,
        "  liveness (2 MiniFASNets)                {:8.3} ms",
        ms(t_live)
    );
    Ok(Report { json, text })
}
