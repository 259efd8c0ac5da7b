//! `uniface bench`: speed as ratios against baselines measured in the same process.

use std::time::Instant;

use serde_json::json;
use uniface::core::candle::{Device, Tensor};
use uniface::{Backend, Embedder, Error, ModelStore};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `runs` calls after one warm-up call.
fn time(runs: usize, mut f: impl FnMut() -> uniface::Result<()>) -> uniface::Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

/// GFLOP/s of candle's f32 matmul on 1024×1024 matrices: the practical GEMM ceiling.
fn gemm_ceiling(runs: usize) -> uniface::Result<f64> {
    let n = 1024;
    let a = Tensor::ones((n, n), candle_dtype(), &Device::Cpu)?;
    let b = Tensor::ones((n, n), candle_dtype(), &Device::Cpu)?;
    let s = time(runs.clamp(3, 10), || {
        a.matmul(&b)?;
        Ok(())
    })?;
    Ok(2.0 * (n * n * n) as f64 / s / 1e9)
}

fn candle_dtype() -> uniface::core::candle::DType {
    uniface::core::candle::DType::F32
}

pub fn embed(batch: usize, runs: usize, layers: bool, json_out: bool) -> uniface::Result<()> {
    let batch = batch.max(1);
    let models = ModelStore::from_env()?.ensure()?;
    let bytes = std::fs::read(&models.embedder).map_err(|e| Error::Io {
        path: models.embedder.clone(),
        source: e,
    })?;
    let file = uniface::core::embed::parse_resnet("resnet", &bytes)?;
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

    if json_out {
        let layers: Vec<_> = per_layer
            .iter()
            .map(|(i, name, dims, t)| json!({"op": i, "name": name, "output": dims, "ms": t * 1e3}))
            .collect();
        println!(
            "{}",
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
        );
        return Ok(());
    }
    println!(
        "embedder, batch {batch}, {} thread(s), median of {runs} runs",
        rayon_threads()
    );
    println!(
        "  gemm path          {:8.3} ms/face  ({:.1} faces/s)",
        per_face(t_fast) * 1e3,
        1.0 / per_face(t_fast)
    );
    println!(
        "  candle conv2d      {:8.3} ms/face  (baseline; gemm path is {:.2}x faster)",
        per_face(t_stock) * 1e3,
        t_stock / t_fast
    );
    println!(
        "  work               {:.3} GFLOP/face; {gflops:.1} GFLOP/s = {:.0}% of candle's 1024^3 matmul ({ceiling:.1} GFLOP/s, same run)",
        flops / 1e9,
        100.0 * gflops / ceiling
    );
    for (i, name, dims, t) in &per_layer {
        if *t > 1e-5 {
            println!(
                "    {i:3} {name:<10} {:<18} {:8.3} ms",
                format!("{dims:?}"),
                t * 1e3
            );
        }
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
