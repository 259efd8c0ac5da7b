//! `uniface eval identification`: open-set 1:N identification on a labelled list, through a
//! real on-disk gallery (`uniface-index`).

use std::path::{Path, PathBuf};

use serde_json::json;
use uniface::core::template::{ModelFingerprint, Template};
use uniface::index::{Durability, Gallery, GalleryOptions};
use uniface::{Error, FaceAnalyzer};

struct Entry {
    role: String,
    identity: String,
    path: PathBuf,
}

fn parse_list(list: &Path, root: &Path) -> uniface::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(list).map_err(|e| Error::Io {
        path: list.to_owned(),
        source: e,
    })?;
    let mut lines = text.lines();
    let bad = |m: String| Error::InvalidArgument {
        name: "list",
        message: m,
    };
    if lines.next().map(str::trim) != Some("role\tidentity\tpath") {
        return Err(bad("the header must be `role<TAB>identity<TAB>path`".into()));
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [role, identity, path] = f.as_slice() else {
            return Err(bad(format!(
                "line {}: expected 3 tab-separated fields",
                i + 2
            )));
        };
        if !["gallery", "mated", "nonmated"].contains(role) {
            return Err(bad(format!("line {}: unknown role {role:?}", i + 2)));
        }
        out.push(Entry {
            role: (*role).to_owned(),
            identity: (*identity).to_owned(),
            path: root.join(path),
        });
    }
    Ok(out)
}

fn index_error(e: uniface::index::Error) -> Error {
    Error::InvalidArgument {
        name: "gallery",
        message: e.to_string(),
    }
}

/// FNIR at the threshold that lets through `fpir` of the non-mated searches.
fn fnir_at_fpir(mated: &[(bool, f32)], nonmated: &[f32], fpir: f64) -> (f64, f32) {
    let mut nm = nonmated.to_vec();
    nm.sort_by(f32::total_cmp);
    let allowed = (fpir * nm.len() as f64).floor() as usize;
    // a search "alarms" when its best distance is below the threshold
    let t = nm.get(allowed).copied().unwrap_or(f32::INFINITY);
    let misses = mated.iter().filter(|(hit, d)| !hit || *d >= t).count();
    (misses as f64 / mated.len().max(1) as f64, t)
}

pub fn run(list: &Path, root: &Path, cache: Option<&Path>, json_out: bool) -> uniface::Result<()> {
    let start = std::time::Instant::now();
    let entries = parse_list(list, root)?;
    let analyzer = FaceAnalyzer::from_env()?;
    let paths: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
    let descriptors = crate::corpus::describe_all(&analyzer, root, &paths, cache)?;
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let gallery = Gallery::create(
        dir.path(),
        &GalleryOptions {
            shards: 2,
            durability: Durability::Async,
            ..Default::default()
        },
    )
    .map_err(index_error)?;
    let fp = ModelFingerprint::dlib_resnet_v1();
    let mut no_face = 0;
    for (e, d) in entries.iter().zip(&descriptors) {
        if e.role != "gallery" {
            continue;
        }
        match d {
            Some(d) => {
                gallery
                    .enroll(&e.identity, &Template::new(fp.clone(), d)?)
                    .map_err(index_error)?;
            }
            None => no_face += 1,
        }
    }
    let mut mated = Vec::new(); // (mate at rank 1, best distance)
    let mut nonmated = Vec::new(); // best distance
    let mut rank1 = 0usize;
    for (e, d) in entries.iter().zip(&descriptors) {
        if e.role == "gallery" {
            continue;
        }
        let best = match d {
            Some(d) => {
                let r = gallery
                    .identify(&Template::new(fp.clone(), d)?, 1, 1e-3)
                    .map_err(index_error)?;
                r.candidates
                    .first()
                    .map(|c| (c.subject.clone(), c.distance))
            }
            None => {
                no_face += 1;
                None
            }
        };
        let (subject, distance) = best.unwrap_or_default();
        let distance = if subject.is_empty() {
            f32::INFINITY
        } else {
            distance
        };
        if e.role == "mated" {
            let hit = subject == e.identity;
            rank1 += usize::from(hit);
            mated.push((hit, distance));
        } else {
            nonmated.push(distance);
        }
    }
    let (f2, t2) = fnir_at_fpir(&mated, &nonmated, 1e-2);
    let (f3, t3) = fnir_at_fpir(&mated, &nonmated, 1e-3);
    let rank1_rate = rank1 as f64 / mated.len().max(1) as f64;
    // the thresholds the gallery would use for these FPIR targets, from the shipped
    // calibration alone (OpenSet::Fpir), and what they give on these searches
    let mut calibrated = Vec::new();
    for target in [1e-2, 1e-3] {
        let fmr = gallery.fmr_for_fpir(target).map_err(index_error)?;
        let t = uniface::core::calibration::threshold_for_fmr(fmr)?;
        let alarms = nonmated.iter().filter(|d| **d < t).count();
        let misses = mated.iter().filter(|(hit, d)| !hit || *d >= t).count();
        calibrated.push(json!({
            "target_fpir": target, "fmr_per_comparison": fmr, "threshold": t,
            "measured_fpir": alarms as f64 / nonmated.len().max(1) as f64,
            "false_alarms": alarms,
            "fnir": misses as f64 / mated.len().max(1) as f64,
        }));
    }
    let out = json!({
        "enrolled": gallery.len(), "mated_searches": mated.len(),
        "nonmated_searches": nonmated.len(), "no_face": no_face,
        "rank1": rank1_rate,
        "fnir_at_fpir_1e-2": f2, "threshold_at_fpir_1e-2": t2,
        "fnir_at_fpir_1e-3": f3, "threshold_at_fpir_1e-3": t3,
        "calibrated_fpir": calibrated,
        "seconds": start.elapsed().as_secs_f64(),
    });
    if json_out {
        println!("{out}");
    } else {
        println!(
            "{} enrolled, {} mated and {} non-mated searches ({} photos without a face)",
            gallery.len(),
            mated.len(),
            nonmated.len(),
            no_face
        );
        println!("rank-1 identification rate: {rank1_rate:.4}");
        println!("FNIR @ FPIR=1e-2: {f2:.4} (threshold {t2:.4})");
        println!(
            "FNIR @ FPIR=1e-3: {f3:.4} (threshold {t3:.4}; {} non-mated searches allow {} false alarms)",
            nonmated.len(),
            (1e-3 * nonmated.len() as f64).floor()
        );
        for c in &calibrated {
            println!(
                "calibrated for FPIR {:.0e} (FMR {:.2e} per comparison): threshold {:.4}, measured FPIR {:.4}, FNIR {:.4}",
                c["target_fpir"].as_f64().unwrap_or(0.0),
                c["fmr_per_comparison"].as_f64().unwrap_or(0.0),
                c["threshold"].as_f64().unwrap_or(0.0),
                c["measured_fpir"].as_f64().unwrap_or(0.0),
                c["fnir"].as_f64().unwrap_or(0.0),
            );
        }
    }
    Ok(())
}
