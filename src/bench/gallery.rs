//! The gallery against raw usearch on the same synthetic face-like
//! templates, in one run — build rate, recall, identity top-1, single-caller QPS and latency
//! over a sweep of the search expansion, batch scaling, 1 vs 2 shards, durable enrollment per
//! durability mode, open and recovery time, bytes per template.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::core::template::{ElementType, ModelFingerprint, Template};
use crate::core::Error;
use std::sync::Arc;

use crate::core::crypto::{Key, KeyProvider};
use crate::index::{Durability, Gallery, GalleryOptions, HnswParams, OpenOptions};
use crate::{Metric, Result, TemplateMatrix};
use rayon::prelude::*;
use serde_json::{json, Value};

use super::{rayon_threads, time, unit_vectors};

/// Synthetic templates: identity centres on the sphere, 4 samples per identity (centre plus
/// 0.55 × a random unit vector: same-identity cosine ≈ 0.77, different ≈ 0 ± 0.09), and
/// probes that are fresh samples of enrolled identities.
struct Data {
    fp: ModelFingerprint,
    vectors: Vec<Vec<f32>>,
    /// (identity, vector)
    probes: Vec<(usize, Vec<f32>)>,
    /// index of the exact nearest template of each probe
    exact: Vec<usize>,
}

impl Data {
    fn new(templates: usize, queries: usize) -> Result<Self> {
        let dim = crate::core::embed::DESCRIPTOR_DIM;
        let centres: Vec<Vec<f32>> = unit_vectors(templates / 4 + 1, dim).collect();
        let noise: Vec<Vec<f32>> = unit_vectors(templates + queries + 7, dim).skip(7).collect();
        let sample = |identity: usize, k: usize| -> Vec<f32> {
            centres[identity]
                .iter()
                .zip(&noise[k])
                .map(|(c, n)| c + 0.55 * n)
                .collect()
        };
        let vectors: Vec<Vec<f32>> = (0..templates).map(|i| sample(i / 4, i)).collect();
        let probes: Vec<(usize, Vec<f32>)> = (0..queries)
            .map(|q| {
                let id = (q * 7919) % (templates / 4).max(1);
                (id, sample(id, templates + q))
            })
            .collect();
        // exact ground truth: a full f32 scan per probe
        let mut matrix = TemplateMatrix::new(dim, ElementType::F32);
        matrix.reserve(templates);
        for v in &vectors {
            matrix.push(v)?;
        }
        let exact = probes
            .par_iter()
            .map(|(_, p)| {
                matrix
                    .nearest(p, Metric::Euclidean, 1)
                    .map(|n| n.first().map_or(usize::MAX, |n| n.index))
            })
            .collect::<crate::core::Result<_>>()?;
        Ok(Self {
            fp: ModelFingerprint::dlib_resnet_v1(),
            vectors,
            probes,
            exact,
        })
    }

    fn template(&self, v: &[f32]) -> Result<Template> {
        Ok(Template::new(self.fp.clone(), v)?)
    }
}

/// Quality and speed of one search configuration: single caller, one query at a time.
struct Sweep {
    top1: usize,
    recall: usize,
    lat: Vec<f64>,
}

impl Sweep {
    fn json(mut self, n: usize, what: Value) -> Value {
        self.lat.sort_by(f64::total_cmp);
        let pct = |p: f64| self.lat[((self.lat.len() - 1) as f64 * p).round() as usize] * 1e3;
        let mut out = json!({
            "identity_top1": self.top1 as f64 / n as f64,
            "recall_at_1": self.recall as f64 / n as f64,
            "qps_one_caller": n as f64 / self.lat.iter().sum::<f64>(),
            "latency_ms_p50": pct(0.5),
            "latency_ms_p99": pct(0.99),
        });
        if let (Some(o), Some(w)) = (out.as_object_mut(), what.as_object()) {
            o.extend(w.clone());
        }
        out
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn one_thread_pool() -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| crate::Error::invalid("threads", e.to_string()))
}

fn encryption(key: Option<&Key>) -> Option<Arc<dyn KeyProvider>> {
    key.map(|k| Arc::new(k.clone()) as Arc<dyn KeyProvider>)
}

/// Durable enrollment rate per durability mode (one thread; `Group` also with 4 callers and
/// with batches).
fn enroll_rates(data: &Data, tmp: &Path, key: Option<&Key>) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let n_all = data.vectors.len();
    // (mode, threads, templates, batch size)
    for (mode, threads, n, batch) in [
        (Durability::Sync, 1, 2_000.min(n_all), 1),
        (Durability::Group, 4, 8_000.min(n_all), 1),
        (Durability::Group, 1, 50_000.min(n_all), 256),
        (Durability::Async, 1, 50_000.min(n_all), 1),
    ] {
        let dir = tmp.join(format!("{mode:?}-{threads}-{batch}"));
        let options = GalleryOptions {
            durability: mode,
            encryption: encryption(key),
            ..Default::default()
        };
        let g = Gallery::create(&dir, &options)?;
        let ts: Vec<Template> = data.vectors[..n]
            .iter()
            .map(|v| data.template(v))
            .collect::<Result<_>>()?;
        let names: Vec<String> = (0..n).map(|i| format!("s{}", i / 4)).collect();
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let (g, ts, names) = (&g, &ts, &names);
                s.spawn(move || {
                    let mine: Vec<(&str, &Template)> = (t..n)
                        .step_by(threads)
                        .map(|i| (names[i].as_str(), &ts[i]))
                        .collect();
                    for chunk in mine.chunks(batch) {
                        let _ = g.enroll_many(chunk);
                    }
                });
            }
        });
        let rate = n as f64 / start.elapsed().as_secs_f64();
        out.push(json!({
            "durability": format!("{mode:?}").to_lowercase(),
            "threads": threads, "batch": batch, "enrolls_per_s": rate,
        }));
        drop(g);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(out)
}

/// `ids[i]`: the template id the gallery gave template `i`.
fn search_gallery(data: &Data, g: &Gallery, ids: &[u64]) -> Result<Sweep> {
    let index_of: std::collections::HashMap<u64, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut sweep = Sweep {
        top1: 0,
        recall: 0,
        lat: Vec::with_capacity(data.probes.len()),
    };
    let probes: Vec<Template> = data
        .probes
        .iter()
        .map(|(_, p)| data.template(p))
        .collect::<Result<_>>()?;
    for ((p, (id, _)), exact) in probes.iter().zip(&data.probes).zip(&data.exact) {
        let start = Instant::now();
        let r = g.identify(p, 1, 1e-3)?;
        sweep.lat.push(start.elapsed().as_secs_f64());
        if let Some(c) = r.candidates.first() {
            sweep.top1 += usize::from(c.subject == format!("s{id}"));
            sweep.recall += usize::from(index_of.get(&c.template_id) == Some(exact));
        }
    }
    Ok(sweep)
}

/// Build a gallery of every template with `shards` shards, index it, checkpoint it, reopen it.
fn build_gallery(
    data: &Data,
    dir: &Path,
    shards: usize,
    key: Option<&Key>,
    progress: &dyn Fn(&str),
) -> Result<(Gallery, Vec<u64>, serde_json::Map<String, Value>)> {
    let options = GalleryOptions {
        shards,
        durability: Durability::Async,
        encryption: encryption(key),
        ..Default::default()
    };
    let g = Gallery::create(dir, &options)?;
    let names: Vec<String> = (0..data.vectors.len())
        .map(|i| format!("s{}", i / 4))
        .collect();
    let mut ids = Vec::with_capacity(data.vectors.len());
    for (chunk, names) in data.vectors.chunks(4096).zip(names.chunks(4096)) {
        let ts: Vec<Template> = chunk
            .iter()
            .map(|v| data.template(v))
            .collect::<Result<_>>()?;
        let items: Vec<(&str, &Template)> =
            names.iter().map(String::as_str).zip(ts.iter()).collect();
        ids.extend(g.enroll_many(&items)?);
    }
    progress(&format!(
        "  {shards} shard(s): {} templates enrolled; building graphs…",
        g.len()
    ));
    let start = Instant::now();
    let indexed = g.index_pending(usize::MAX)?;
    let build_s = start.elapsed().as_secs_f64();
    g.checkpoint()?;
    drop(g);
    let bytes = dir_bytes(dir);
    let fp = &data.fp;
    let plain = OpenOptions {
        durability: Durability::Async,
        key: encryption(key),
        ..OpenOptions::default()
    };
    // the fastest of three opens (the files in the page cache, as on a serving host)
    let mut open_s = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let (g, _) = Gallery::open_with_options(dir, fp, &plain)?;
        open_s = open_s.min(start.elapsed().as_secs_f64());
        drop(g);
    }
    let view_s = match key {
        // an encrypted gallery's graphs are decrypted into memory, never mapped
        Some(_) => f64::NAN,
        None => {
            let view = OpenOptions {
                view: true,
                ..plain.clone()
            };
            let start = Instant::now();
            let (g, _) = Gallery::open_with_options(dir, fp, &view)?;
            let s = start.elapsed().as_secs_f64();
            drop(g);
            s
        }
    };
    let (g, _) = Gallery::open_with_options(dir, fp, &plain)?;
    let mut info = serde_json::Map::new();
    info.insert("shards".into(), json!(shards));
    info.insert(
        "graph_inserts_per_s".into(),
        json!(indexed as f64 / build_s),
    );
    info.insert("build_seconds".into(), json!(build_s));
    info.insert("open_seconds".into(), json!(open_s));
    info.insert("open_view_seconds".into(), json!(view_s));
    info.insert(
        "bytes_per_template".into(),
        json!(bytes as f64 / data.vectors.len() as f64),
    );
    Ok((g, ids, info))
}

/// Recovery after a crash: `n` enrollments logged after the last checkpoint and never folded
/// into it (a process killed at that point leaves exactly this), then `open` replays them.
fn recovery(data: &Data, g: Gallery, n: usize) -> Result<Value> {
    let n = n.min(data.vectors.len());
    let ts: Vec<Template> = data.vectors[..n]
        .iter()
        .map(|v| data.template(v))
        .collect::<Result<_>>()?;
    let items: Vec<(&str, &Template)> = ts.iter().map(|t| ("recovered", t)).collect();
    for chunk in items.chunks(1024) {
        g.enroll_many(chunk)?;
    }
    g.flush()?;
    let dir = g.dir().to_owned();
    drop(g);
    let start = Instant::now();
    let (g, report) = Gallery::open(&dir, &data.fp, Durability::Async)?;
    let s = start.elapsed().as_secs_f64();
    let replayed = report.records_replayed();
    Ok(json!({"log_records": replayed, "open_seconds": s, "pending_after": g.pending()}))
}

fn search_raw(data: &Data, raw: &crate::index::usearch::Index) -> Result<Sweep> {
    let mut sweep = Sweep {
        top1: 0,
        recall: 0,
        lat: Vec::with_capacity(data.probes.len()),
    };
    for ((id, p), exact) in data.probes.iter().zip(&data.exact) {
        let start = Instant::now();
        let m = raw
            .search(p, 1)
            .map_err(|e| crate::index::Error::Usearch(e.to_string()))?;
        sweep.lat.push(start.elapsed().as_secs_f64());
        if let Some(&k) = m.keys.first() {
            sweep.top1 += usize::from(k as usize / 4 == *id);
            sweep.recall += usize::from(k as usize == *exact);
        }
    }
    Ok(sweep)
}

/// Exact scan (f32 matrix) against the graph path (i8 HNSW at the default expansion, exact
/// re-scoring included) per query, one core, for small shard sizes: where does the graph start
/// to pay?
fn crossover(data: &Data) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let one = one_thread_pool()?;
    for n in [500usize, 1_000, 2_000, 4_000, 8_000, 16_000] {
        if n > data.vectors.len() {
            break;
        }
        let mut matrix = TemplateMatrix::new(data.vectors[0].len(), ElementType::F32);
        for v in &data.vectors[..n] {
            matrix.push(v)?;
        }
        let graph = crate::index::new_l2_index(&HnswParams::default(), n)?;
        for (i, v) in data.vectors[..n].iter().enumerate() {
            graph
                .add(i as u64, v)
                .map_err(|e| crate::index::Error::Usearch(e.to_string()))?;
        }
        let probes: Vec<&Vec<f32>> = data.probes.iter().map(|p| &p.1).take(300).collect();
        let (exact_s, graph_s) = one.install(|| -> Result<(f64, f64)> {
            let start = Instant::now();
            for p in &probes {
                std::hint::black_box(matrix.nearest(p, Metric::Euclidean, 8)?);
            }
            let exact_s = start.elapsed().as_secs_f64();
            let start = Instant::now();
            for p in &probes {
                let m = graph
                    .search(p, 8)
                    .map_err(|e| crate::index::Error::Usearch(e.to_string()))?;
                // the gallery re-scores the graph's candidates in f32
                for k in &m.keys {
                    let v = &data.vectors[*k as usize];
                    std::hint::black_box(crate::core::compare::euclidean(p, v)?);
                }
            }
            Ok((exact_s, start.elapsed().as_secs_f64()))
        })?;
        let q = probes.len() as f64;
        out.push(json!({
            "templates": n,
            "exact_scan_us": exact_s / q * 1e6,
            "graph_us": graph_s / q * 1e6,
        }));
    }
    Ok(out)
}

/// The smallest expansion whose identity top-1 reaches `target`, with its QPS.
fn at_target(rows: &[Value], target: f64) -> Value {
    rows.iter()
        .filter(|r| r["identity_top1"].as_f64().unwrap_or(0.0) >= target)
        .min_by_key(|r| r["expansion_search"].as_u64().unwrap_or(u64::MAX))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The whole comparison on `templates` synthetic templates and `queries` probes, sweeping
/// the search expansions `efs`, against raw usearch graphs of each `baselines` storage;
/// `progress(stage)` names each stage as it starts. The figures as one JSON object.
pub fn gallery(
    templates: usize,
    queries: usize,
    efs: &[usize],
    baselines: &[ElementType],
    progress: &dyn Fn(&str),
) -> Result<Value> {
    let tmp = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    progress(&format!(
        "generating {templates} templates and {queries} probes, exact ground truth…"
    ));
    let data = Data::new(templates, queries)?;
    progress("durable enrollment per mode…");
    let enroll = enroll_rates(&data, tmp.path(), None)?;
    progress("exact scan vs graph for small shards…");
    let small = crossover(&data)?;
    let default_ef = HnswParams::default().expansion_search;
    let mut search = Vec::new();
    let mut shard_latency = Vec::new();
    let mut batch = Value::Null;
    let mut recovered = Value::Null;
    for shards in [1usize, 2] {
        let dir = tmp.path().join(format!("search-{shards}"));
        let (g, ids, info) = build_gallery(&data, &dir, shards, None, progress)?;
        let mut rows = Vec::new();
        for &ef in efs {
            g.set_expansion_search(ef)?;
            let mut what = info.clone();
            what.insert("index".into(), json!(format!("gallery, {shards} shard(s)")));
            what.insert("expansion_search".into(), json!(ef));
            rows.push(search_gallery(&data, &g, &ids)?.json(queries, Value::Object(what)));
        }
        search.extend(rows.iter().cloned());
        shard_latency.push(json!({"shards": shards, "rows": rows}));
        if shards == 1 {
            // batch scaling at the smallest expansion that reaches the target (else the largest)
            let batch_ef = at_target(&rows, 0.99)["expansion_search"]
                .as_u64()
                .map_or_else(
                    || efs.iter().copied().max().unwrap_or(default_ef),
                    |e| e as usize,
                );
            g.set_expansion_search(batch_ef)?;
            let probes: Vec<Template> = data
                .probes
                .iter()
                .map(|(_, p)| data.template(p))
                .collect::<Result<_>>()?;
            let run = || g.identify_batch(&probes, 1, 1e-3).map(|_| ());
            let t1 = one_thread_pool()?.install(|| time(3, run))?;
            let tn = time(3, run)?;
            batch = json!({
                "expansion_search": batch_ef,
                "qps_one_thread": probes.len() as f64 / t1,
                "qps_all_threads": probes.len() as f64 / tn,
                "threads": rayon_threads(),
                "speedup": t1 / tn,
            });
            recovered = recovery(&data, g, 10_000)?;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    // raw usearch on the same templates and probes, the same graph parameters
    for &element in baselines {
        let params = HnswParams {
            graph: element,
            ..Default::default()
        };
        progress(&format!("raw usearch {element:?}: building…"));
        let raw = crate::index::new_l2_index(&params, templates)?;
        let start = Instant::now();
        data.vectors
            .par_iter()
            .enumerate()
            .try_for_each(|(i, v)| raw.add(i as u64, v))
            .map_err(|e| crate::index::Error::Usearch(e.to_string()))?;
        let rate = templates as f64 / start.elapsed().as_secs_f64();
        for &ef in efs {
            raw.change_expansion_search(ef);
            let what = json!({
                "index": format!("raw usearch {}", format!("{element:?}").to_lowercase()),
                "expansion_search": ef,
                "graph_inserts_per_s": rate,
                "bytes_per_template": raw.serialized_length() as f64 / templates as f64,
            });
            search.push(search_raw(&data, &raw)?.json(queries, what));
        }
    }
    let target = 0.99;
    let gallery_rows: Vec<Value> = search
        .iter()
        .filter(|r| r["index"] == "gallery, 1 shard(s)")
        .cloned()
        .collect();
    let mut matched = vec![json!({"index": "gallery", "at": at_target(&gallery_rows, target)})];
    for &element in baselines {
        let name = format!("raw usearch {}", format!("{element:?}").to_lowercase());
        let rows: Vec<Value> = search
            .iter()
            .filter(|r| r["index"] == name.as_str())
            .cloned()
            .collect();
        matched.push(json!({"index": name, "at": at_target(&rows, target)}));
    }
    let out = json!({
        "templates": templates, "queries": queries, "rayon_threads": rayon_threads(),
        "enroll": enroll, "search": search, "exact_vs_graph_one_core": small,
        "at_identity_top1_0_99": matched,
        "shards_1_vs_2": shard_latency,
        "batch_identify": batch,
        "recovery": recovered,
    });
    Ok(out)
}

/// The cost of encryption at rest, plain against encrypted in one run on `templates` synthetic
/// templates (4 per subject): durable enrollment per durability mode, open time (the graphs
/// decrypted and read in instead of loaded from the file), identify QPS on one caller (which
/// should not change: search runs on plaintext in memory), the time a subject's removal takes
/// (its key destroyed: the key log rewritten), and a key rotation.
pub fn encryption_cost(
    templates: usize,
    queries: usize,
    progress: &dyn Fn(&str),
) -> Result<super::Report> {
    let tmp = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    progress(&format!(
        "generating {templates} templates and {queries} probes…"
    ));
    let data = Data::new(templates, queries)?;
    let key = Key::generate()?;
    let mut enroll = Vec::new();
    for (name, k) in [("plain", None), ("encrypted", Some(&key))] {
        progress(&format!("durable enrollment per mode, {name}…"));
        enroll.push(enroll_rates(&data, &tmp.path().join(name), k)?);
    }
    let mut rows = Vec::new();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "durable enrollments/s, plain vs encrypted (1 in 4 enrollments is a new subject):"
    );
    for (p, e) in enroll[0].iter().zip(&enroll[1]) {
        let (rp, re) = (
            p["enrolls_per_s"].as_f64().unwrap_or(0.0),
            e["enrolls_per_s"].as_f64().unwrap_or(0.0),
        );
        let _ = writeln!(
            text,
            "  {:<6} {} thread(s), batch {:>3}: {:>9.0} vs {:>9.0}  (×{:.2})",
            p["durability"].as_str().unwrap_or("?"),
            p["threads"],
            p["batch"],
            rp,
            re,
            re / rp
        );
        rows.push(
            json!({"durability": p["durability"], "threads": p["threads"], "batch": p["batch"],
            "plain_enrolls_per_s": rp, "encrypted_enrolls_per_s": re, "ratio": re / rp}),
        );
    }
    let mut opened = Vec::new();
    let mut galleries = Vec::new();
    for (name, k) in [("plain", None), ("encrypted", Some(&key))] {
        progress(&format!(
            "{name}: building a gallery of {templates} templates…"
        ));
        let dir = tmp.path().join(format!("search-{name}"));
        let (g, ids, info) = build_gallery(&data, &dir, 1, k, progress)?;
        opened.push(info);
        galleries.push((g, ids));
    }
    let (open_p, open_e) = (
        opened[0]["open_seconds"].as_f64().unwrap_or(0.0),
        opened[1]["open_seconds"].as_f64().unwrap_or(0.0),
    );
    let _ = writeln!(
        text,
        "open at {templates} templates (graph saved, log empty): {open_p:.3} s vs {open_e:.3} s (×{:.2}); memory-mapped plain: {:.3} s",
        open_e / open_p,
        opened[0]["open_view_seconds"].as_f64().unwrap_or(0.0)
    );
    let mut qps = Vec::new();
    for (g, ids) in &galleries {
        let sweep = one_thread_pool()?.install(|| search_gallery(&data, g, ids))?;
        qps.push(sweep.json(queries, json!({})));
    }
    let (qp, qe) = (
        qps[0]["qps_one_caller"].as_f64().unwrap_or(0.0),
        qps[1]["qps_one_caller"].as_f64().unwrap_or(0.0),
    );
    let _ = writeln!(
        text,
        "identify, one caller: {qp:.0} vs {qe:.0} QPS (×{:.2}); identity top-1 {:.4} vs {:.4}",
        qe / qp,
        qps[0]["identity_top1"].as_f64().unwrap_or(0.0),
        qps[1]["identity_top1"].as_f64().unwrap_or(0.0)
    );
    // a removal: plain logs it; encrypted also destroys the subject's and the graph's keys
    let mut removal = Vec::new();
    for (g, _) in &galleries {
        let start = Instant::now();
        g.remove_subject("s1")?;
        removal.push(start.elapsed().as_secs_f64());
    }
    let start = Instant::now();
    galleries[1].0.rotate_kek(&Key::generate()?)?;
    let rotate_s = start.elapsed().as_secs_f64();
    let _ = writeln!(
        text,
        "remove_subject (sync): {:.2} ms vs {:.2} ms (the key log of {} subjects rewritten); rotate_kek: {:.1} ms",
        removal[0] * 1e3,
        removal[1] * 1e3,
        templates / 4,
        rotate_s * 1e3
    );
    let json = json!({
        "templates": templates, "queries": queries, "enroll": rows,
        "open_seconds": {"plain": open_p, "encrypted": open_e, "plain_view": opened[0]["open_view_seconds"]},
        "bytes_per_template": {"plain": opened[0]["bytes_per_template"], "encrypted": opened[1]["bytes_per_template"]},
        "identify": {"plain": qps[0], "encrypted": qps[1]},
        "remove_subject_seconds": {"plain": removal[0], "encrypted": removal[1]},
        "rotate_kek_seconds": rotate_s,
    });
    let _ = writeln!(
        text,
        "bytes per template on disk: {:.0} vs {:.0}",
        opened[0]["bytes_per_template"].as_f64().unwrap_or(0.0),
        opened[1]["bytes_per_template"].as_f64().unwrap_or(0.0)
    );
    Ok(super::Report { json, text })
}
