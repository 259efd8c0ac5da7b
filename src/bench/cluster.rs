//! `uniface bench cluster`: clustering speed and memory on the gallery bench's synthetic
//! face-like templates (4 samples per identity around a centre), with quality against the
//! identities they were drawn from, and the cost of adding faces to a finished clustering.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use super::{rayon_threads, unit_vectors, Report};
use crate::index::cluster::{bcubed, pairwise, ClusterOptions, Clusterer, Method, Threshold};
use crate::Result;

/// Same-identity samples are about 0.78 apart and different identities about 1.6 (the
/// generator's centre + 0.55 × unit noise): this distance separates them (the LFW
/// calibration's thresholds are for real faces, not these).
pub const SYNTHETIC_THRESHOLD: f32 = 1.1;

/// Peak resident memory of this process so far (VmHWM), in bytes; 0 where unknown.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `templates` faces of `templates / 4` identities, then `added` more: half fresh samples
/// of enrolled identities, half of new identities (4 each).
fn faces(templates: usize, added: usize) -> (Vec<f32>, Vec<u32>) {
    let dim = crate::core::embed::DESCRIPTOR_DIM;
    let identities = templates.div_ceil(4) + added.div_ceil(8) + 1;
    let centres: Vec<Vec<f32>> = unit_vectors(identities, dim).collect();
    let mut noise = unit_vectors(templates + added + 7, dim).skip(7);
    let (mut out, mut truth) = (Vec::with_capacity((templates + added) * dim), Vec::new());
    let mut push = |id: usize, out: &mut Vec<f32>| {
        let n = noise.next().unwrap_or_default();
        out.extend(centres[id].iter().zip(&n).map(|(c, e)| c + 0.55 * e));
        truth.push(id as u32);
    };
    for i in 0..templates {
        push(i / 4, &mut out);
    }
    let first_new = templates.div_ceil(4);
    for j in 0..added {
        let id = if j % 2 == 0 {
            (j * 7919) % first_new.max(1)
        } else {
            first_new + j / 8
        };
        push(id, &mut out);
    }
    (out, truth)
}

/// Cluster `templates` synthetic faces with each of `methods` (`neighbours` per face), then
/// add `added` faces to the average-linkage clustering; timings per stage, peak memory,
/// quality against the true identities.
pub fn cluster(
    templates: usize,
    added: usize,
    methods: &[Method],
    neighbours: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Report> {
    let dim = crate::core::embed::DESCRIPTOR_DIM;
    let made = Instant::now();
    let (all, truth) = faces(templates, added);
    let (first, later) = all.split_at(templates * dim);
    progress(&format!(
        "made {templates} + {added} synthetic faces in {:.1} s; peak memory {:.0} MiB",
        made.elapsed().as_secs_f64(),
        peak_rss() as f64 / (1 << 20) as f64
    ));
    let mut rows = Vec::new();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{templates} synthetic faces (4 per identity), {neighbours} neighbours, {} threads, threshold {SYNTHETIC_THRESHOLD}",
        rayon_threads()
    );
    let _ = writeln!(
        text,
        "| method | neighbour graph (s) | clustering (s) | clusters | BCubed F | pairwise F | peak memory (MiB) |"
    );
    let _ = writeln!(text, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut kept = None;
    for &method in methods {
        let options = ClusterOptions {
            method,
            threshold: Threshold::Distance(SYNTHETIC_THRESHOLD),
            neighbours,
            ..Default::default()
        };
        let start = Instant::now();
        let graph_done = Mutex::new(None);
        let c = Clusterer::fit(first, dim, options, &|p| {
            if p.stage == "clustering" {
                let mut g = graph_done.lock().unwrap_or_else(|e| e.into_inner());
                if g.is_none() {
                    *g = Some(start.elapsed().as_secs_f64());
                }
            } else if p.done % (1 << 16) == 0 {
                progress(&format!(
                    "{}: neighbours {}/{}",
                    method.name(),
                    p.done,
                    p.total
                ));
            }
        })?;
        let total = start.elapsed().as_secs_f64();
        let graph = graph_done
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(total);
        let b = bcubed(&truth[..templates], c.labels());
        let p = pairwise(&truth[..templates], c.labels());
        let rss = peak_rss() as f64 / (1 << 20) as f64;
        let _ = writeln!(
            text,
            "| {} | {graph:.1} | {:.1} | {} | {:.4} | {:.4} | {rss:.0} |",
            method.name(),
            total - graph,
            c.clusters(),
            b.f,
            p.f
        );
        progress(&format!("{}: done in {total:.1} s", method.name()));
        rows.push(json!({
            "method": method.name(), "graph_seconds": graph, "cluster_seconds": total - graph,
            "clusters": c.clusters(), "bcubed": b, "pairwise": p, "peak_rss_mib": rss,
        }));
        if method == Method::AverageLinkage || kept.is_none() {
            kept = Some(c);
        }
    }
    let mut additions = Value::Null;
    if let (Some(mut c), true) = (kept, added > 0) {
        let start = Instant::now();
        let a = c.add(later, &|_| {})?;
        let seconds = start.elapsed().as_secs_f64();
        let b = bcubed(&truth, c.labels());
        let _ = writeln!(
            text,
            "added {added} faces ({}) in {seconds:.2} s ({:.2} ms each): {} new clusters, {} merges; BCubed F of all {:.4}; peak memory {:.0} MiB",
            c.options().method.name(),
            seconds * 1e3 / added as f64,
            a.new_clusters,
            a.merges.len(),
            b.f,
            peak_rss() as f64 / (1 << 20) as f64
        );
        additions = json!({
            "method": c.options().method.name(), "faces": added, "seconds": seconds,
            "new_clusters": a.new_clusters, "merges": a.merges.len(), "bcubed_after": b,
        });
    }
    let json = json!({
        "templates": templates, "neighbours": neighbours, "threads": rayon_threads(),
        "threshold": SYNTHETIC_THRESHOLD, "methods": rows, "additions": additions,
    });
    Ok(Report { json, text })
}
