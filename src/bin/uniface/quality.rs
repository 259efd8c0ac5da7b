//! `uniface quality`: the enrollment/verification gate (quality measures, reason codes and
//! liveness) on each photo.

use std::path::PathBuf;

use clap::ValueEnum;
use serde_json::json;
use uniface::core::liveness::LivenessDetector;
use uniface::core::quality::Policy;
use uniface::{Error, FaceAnalyzer, ModelStore};

#[derive(Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    Enrollment,
    Verification,
}

pub fn run(
    images: &[PathBuf],
    json_out: bool,
    policy: PolicyArg,
    no_liveness: bool,
) -> uniface::Result<()> {
    let mut policy = match policy {
        PolicyArg::Enrollment => Policy::enrollment(),
        PolicyArg::Verification => Policy::verification(),
    };
    let analyzer = FaceAnalyzer::from_env()?;
    let liveness = if no_liveness {
        policy.require_live = false;
        None
    } else {
        Some(LivenessDetector::from_store(&ModelStore::from_env()?)?)
    };
    let mut failed = 0;
    for path in images {
        let result = uniface::core::image::load_rgb(path)
            .and_then(|img| analyzer.assess(&img, &policy, liveness.as_ref()));
        match result {
            Ok(a) if json_out => {
                let mut v = serde_json::to_value(&a).unwrap_or_default();
                v["image"] = json!(path);
                println!("{v}");
            }
            Ok(a) => {
                let reasons: Vec<&str> = a.reasons.iter().map(|r| r.name()).collect();
                println!(
                    "{}: {} ({} face(s)){}",
                    path.display(),
                    if a.accepted { "ACCEPTED" } else { "REFUSED" },
                    a.faces_found,
                    if reasons.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", reasons.join(", "))
                    }
                );
                if let Some(q) = &a.quality {
                    println!(
                        "  eyes {:.0} px, inside {:.2}, yaw {:+.0}° pitch {:+.0}° roll {:+.0}°, sharpness {:.0}, luminance {:.2}±{:.2}, under {:.2} over {:.2}, range {:.2}{}",
                        q.inter_eye_distance.raw, q.face_inside.raw, q.yaw.raw, q.pitch.raw,
                        q.roll.raw, q.sharpness.raw, q.luminance_mean.raw, q.luminance_std.raw,
                        q.under_exposure.raw, q.over_exposure.raw, q.dynamic_range.raw,
                        q.unified.map(|u| format!(", unified {:.3} ({:.0}/100)", u.raw, u.scalar)).unwrap_or_default()
                    );
                }
                if let Some(l) = &a.liveness {
                    println!(
                        "  liveness {:.3} ({})",
                        l.score,
                        if l.is_live { "live" } else { "attack" }
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", path.display());
            }
        }
    }
    crate::corpus::failures(failed, images.len(), "assessed")
}

/// What `eval quality` keeps per photo.
#[derive(Clone)]
struct Row {
    descriptor: uniface::Descriptor,
    unified: f32,
    unified_scalar: f32,
    sharpness: f32,
    eye_distance: f32,
    yaw: f32,
    /// Liveness score and verdict, for the photos of the liveness sample.
    liveness: Option<(f32, bool)>,
}

fn row_line(key: &str, r: &Option<Row>) -> String {
    match r {
        None => format!("{key}\t-\n"),
        Some(r) => {
            let d: Vec<String> = r.descriptor.iter().map(|v| v.to_string()).collect();
            let l = r.liveness.map_or("-".to_owned(), |(s, live)| {
                format!("{s}:{}", u8::from(live))
            });
            format!(
                "{key}\t{}\t{}\t{}\t{}\t{}\t{l}\t{}\n",
                r.unified,
                r.unified_scalar,
                r.sharpness,
                r.eye_distance,
                r.yaw,
                d.join(",")
            )
        }
    }
}

fn parse_row(fields: &[&str]) -> Option<Option<Row>> {
    if fields == ["-"] {
        return Some(None);
    }
    let [u, us, sh, ied, yaw, l, d] = fields else {
        return None;
    };
    let liveness = match *l {
        "-" => None,
        v => {
            let (s, live) = v.split_once(':')?;
            Some((s.parse().ok()?, live == "1"))
        }
    };
    let values: Vec<f32> = d.split(',').filter_map(|v| v.parse().ok()).collect();
    Some(Some(Row {
        descriptor: uniface::Descriptor::try_from(values.as_slice()).ok()?,
        unified: u.parse().ok()?,
        unified_scalar: us.parse().ok()?,
        sharpness: sh.parse().ok()?,
        eye_distance: ied.parse().ok()?,
        yaw: yaw.parse().ok()?,
        liveness,
    }))
}

fn assess_photo(
    analyzer: &FaceAnalyzer,
    liveness: Option<&LivenessDetector>,
    path: &std::path::Path,
) -> uniface::Result<Option<Row>> {
    let img = uniface::core::image::load_rgb(path)?;
    let Some((face, lm, n)) = crate::corpus::centre_face(analyzer, &img)? else {
        return Ok(None);
    };
    let chip = uniface::core::align::face_chip(
        &img,
        &lm,
        uniface::core::align::CHIP_SIZE,
        uniface::core::align::CHIP_PADDING,
    );
    let q = uniface::core::quality::measure(&img, &face, &lm, &chip, n);
    let (u, descriptor) =
        uniface::core::quality::unified_and_descriptor(&analyzer.embedder, &img, &lm)?;
    let live = match liveness {
        Some(d) => {
            let l = d.check(&img, &face.rect())?;
            Some((l.score, l.is_live))
        }
        None => None,
    };
    Ok(Some(Row {
        descriptor,
        unified: u.raw,
        unified_scalar: u.scalar,
        sharpness: q.sharpness.raw,
        eye_distance: q.inter_eye_distance.raw,
        yaw: q.yaw.raw,
        liveness: live,
    }))
}

/// FNMR after discarding the lowest-quality fraction of genuine pairs, at each fraction.
fn edc(pairs: &[(f32, f32)], threshold: f32, fractions: &[f64]) -> Vec<f64> {
    // pairs: (pair quality, distance), sorted by quality ascending
    fractions
        .iter()
        .map(|&f| {
            let skip = ((f * pairs.len() as f64).round() as usize).min(pairs.len());
            let kept = &pairs[skip..];
            kept.iter().filter(|p| p.1 >= threshold).count() as f64 / kept.len().max(1) as f64
        })
        .collect()
}

fn partial_area(fractions: &[f64], fnmr: &[f64], upto: f64) -> f64 {
    let mut area = 0.0;
    for i in 1..fractions.len() {
        if fractions[i] > upto + 1e-12 {
            break;
        }
        area += (fractions[i] - fractions[i - 1]) * (fnmr[i] + fnmr[i - 1]) / 2.0;
    }
    area
}

fn quantiles(mut v: Vec<f32>) -> [f32; 5] {
    v.sort_by(f32::total_cmp);
    let q = |p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f32::NAN)
    };
    [q(0.01), q(0.05), q(0.5), q(0.95), q(0.99)]
}

/// `uniface eval quality`: error-versus-discard characteristic of the unified score on LFW
/// (ISO/IEC 29794-1), the LFW distribution of the measures, and liveness on a sample.
pub fn eval(
    root: &std::path::Path,
    pairs: Option<&std::path::Path>,
    cache: Option<&std::path::Path>,
    edc_out: Option<&std::path::Path>,
    liveness_sample: usize,
    json_out: bool,
) -> uniface::Result<()> {
    use std::collections::HashMap;
    use std::io::Write;
    use uniface::core::calibration::{self, LabelledSet};
    use uniface::core::compare::Metric;

    let start = std::time::Instant::now();
    let pairs_path = pairs
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| root.join("pairs.txt"));
    let listed = crate::eval::parse_pairs(root, &pairs_path)?;
    let mut images: Vec<PathBuf> = listed
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    images.sort();
    images.dedup();
    let analyzer = FaceAnalyzer::from_env()?;
    let detector = LivenessDetector::from_store(&ModelStore::from_env()?)?;
    let step = (images.len() / liveness_sample.max(1)).max(1);
    let key = |p: &std::path::Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let header = "# uniface quality cache v1 dlib-resnet-v1 minifasnet";
    let mut cached: HashMap<String, Option<Row>> = HashMap::new();
    if let Some(c) = cache {
        if let Ok(text) = std::fs::read_to_string(c) {
            let mut lines = text.lines();
            if lines.next() == Some(header) {
                for line in lines {
                    let f: Vec<&str> = line.split('\t').collect();
                    if let Some((k, rest)) = f.split_first() {
                        if let Some(r) = parse_row(rest) {
                            cached.insert((*k).to_owned(), r);
                        }
                    }
                }
            }
        }
    }
    let writer = crate::corpus::open_cache(cache, header, cached.is_empty())?;
    let bar = crate::corpus::progress(images.len(), "assessing");
    let indexed: Vec<(usize, &PathBuf)> = images.iter().enumerate().collect();
    let rows: Vec<Option<Row>> = uniface::core::pipeline::par_map_bounded(
        &indexed,
        analyzer.batch_memory,
        |(_, p)| analyzer.working_set_of_file(p),
        |&(i, p)| -> uniface::Result<Option<Row>> {
            let k = key(p);
            if let Some(r) = cached.get(&k) {
                bar.inc(1);
                return Ok(r.clone());
            }
            let live = (i % step == 0).then_some(&detector);
            let r = assess_photo(&analyzer, live, p)?;
            if let Some(w) = &writer {
                let mut f = w.lock().unwrap_or_else(|e| e.into_inner());
                let _ = f.write_all(row_line(&k, &r).as_bytes());
            }
            bar.inc(1);
            Ok(r)
        },
    )
    .into_iter()
    .collect::<uniface::Result<_>>()?;
    bar.finish_and_clear();
    // Every pair of the photos with a face: the FMR 1e-3 threshold and the genuine pairs.
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut labels = Vec::new();
    let mut vectors = Vec::new();
    let mut quality = Vec::new();
    let mut kept: Vec<&Row> = Vec::new();
    for (p, r) in images.iter().zip(&rows) {
        let Some(r) = r else { continue };
        let id = p
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let next = ids.len() as u32;
        labels.push(*ids.entry(id).or_insert(next));
        vectors.extend_from_slice(&r.descriptor);
        quality.push(r.unified_scalar);
        kept.push(r);
    }
    let set = LabelledSet {
        vectors: &vectors,
        dim: uniface::core::embed::DESCRIPTOR_DIM,
        labels: &labels,
    };
    let c = calibration::calibrate(&set, Metric::Euclidean, &[1e-3], "", "", &|_| {})?;
    let threshold = c.table.rows[0].threshold;
    let impostors = c.table.rows[0].impostor_comparisons;
    // Genuine pairs with their pair quality (min of the two photos).
    let mut genuine: Vec<(f32, f32, f32)> = Vec::new(); // (unified, sharpness, distance)
    let mut by_label: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    for members in by_label.values() {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                let d = uniface::euclidean_distance(&kept[i].descriptor, &kept[j].descriptor);
                genuine.push((
                    quality[i].min(quality[j]),
                    kept[i].sharpness.min(kept[j].sharpness),
                    d,
                ));
            }
        }
    }
    let fractions: Vec<f64> = (0..=100).map(|i| f64::from(i) * 0.01).collect();
    let curve = |key: &dyn Fn(&(f32, f32, f32)) -> f32| {
        let mut v: Vec<(f32, f32)> = genuine.iter().map(|g| (key(g), g.2)).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        edc(&v, threshold, &fractions)
    };
    let unified_curve = curve(&|g| g.0);
    let sharp_curve = curve(&|g| g.1);
    // Random discard: the mean over 200 seeded shuffles.
    let mut random_curve = vec![0f64; fractions.len()];
    let mut rng = 0x853c_49e6_748f_ea9bu64;
    let rounds = 200;
    for _ in 0..rounds {
        let mut v: Vec<(f32, f32)> = genuine
            .iter()
            .map(|g| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                ((rng >> 40) as f32, g.2)
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (acc, f) in random_curve.iter_mut().zip(edc(&v, threshold, &fractions)) {
            *acc += f / f64::from(rounds);
        }
    }
    let pauc = |c: &[f64]| partial_area(&fractions, c, 0.2);
    let (pu, ps, pr) = (
        pauc(&unified_curve),
        pauc(&sharp_curve),
        pauc(&random_curve),
    );
    if let Some(path) = edc_out {
        let mut csv = String::from("discard_fraction,fnmr_unified,fnmr_sharpness,fnmr_random\n");
        for (i, f) in fractions.iter().enumerate() {
            csv.push_str(&format!(
                "{f},{},{},{}\n",
                unified_curve[i], sharp_curve[i], random_curve[i]
            ));
        }
        std::fs::write(path, csv).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
        let upto = fractions
            .iter()
            .position(|&f| f > 0.2 + 1e-9)
            .unwrap_or(fractions.len());
        let series = |name: &str, c: &[f64]| {
            (
                name.to_owned(),
                fractions[..upto]
                    .iter()
                    .zip(c)
                    .map(|(&f, &v)| (f, v))
                    .collect::<Vec<_>>(),
            )
        };
        let top = unified_curve
            .iter()
            .chain(&random_curve)
            .chain(&sharp_curve)
            .take(upto * 3)
            .fold(0f64, |m, &v| m.max(v));
        crate::plot::chart(
            &path.with_extension("png"),
            "EDC - FNMR AT FMR 1E-3 (LFW)",
            crate::plot::Axis {
                min: 0.0,
                max: 0.2,
                log: false,
                label: "DISCARDED FRACTION",
            },
            crate::plot::Axis {
                min: 0.0,
                max: (top * 1.1).max(0.01),
                log: false,
                label: "FNMR",
            },
            &[
                series("UNIFIED", &unified_curve),
                series("SHARPNESS", &sharp_curve),
                series("RANDOM", &random_curve),
            ],
        )?;
    }
    let sampled: Vec<(f32, bool)> = rows.iter().flatten().filter_map(|r| r.liveness).collect();
    let live = sampled.iter().filter(|s| s.1).count();
    let col = |f: &dyn Fn(&Row) -> f32| quantiles(kept.iter().map(|r| f(r)).collect());
    let dist = json!({
        "quantiles": [0.01, 0.05, 0.5, 0.95, 0.99],
        "unified_raw": col(&|r| r.unified), "unified_scalar": col(&|r| r.unified_scalar),
        "sharpness": col(&|r| r.sharpness), "inter_eye_distance": col(&|r| r.eye_distance),
        "yaw": col(&|r| r.yaw),
    });
    let out = json!({
        "photos": images.len(), "with_face": kept.len(), "genuine_pairs": genuine.len(),
        "impostor_pairs": impostors, "threshold_fmr_1e-3": threshold,
        "fnmr_no_discard": unified_curve[0],
        "pauc_0_20": {"unified": pu, "sharpness": ps, "random": pr},
        "fnmr_at_10pct_discard": {"unified": unified_curve[10], "sharpness": sharp_curve[10], "random": random_curve[10]},
        "liveness_sample": sampled.len(), "liveness_live": live,
        "liveness_live_fraction": live as f64 / sampled.len().max(1) as f64,
        "lfw_distribution": dist, "seconds": start.elapsed().as_secs_f64(),
    });
    if json_out {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(())
}
