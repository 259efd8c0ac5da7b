//! `uniface cluster`: argument parsing over `uniface::cluster`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use uniface::cluster::{ClusterOptions, Method, Threshold};
use uniface::Error;

/// `uniface cluster`'s options.
#[derive(Args)]
pub struct ClusterArgs {
    /// One JSON object per face: {"image", "face": [left, top, right, bottom], "cluster": N}
    /// (clusters numbered by size, 0 the largest).
    #[arg(long)]
    json: bool,
    /// Two faces of different people fall under the threshold at this rate per comparison
    /// (the shipped LFW calibration's distance for it; the default measured best on LFW).
    #[arg(long, default_value_t = uniface::cluster::DEFAULT_FMR, conflicts_with = "threshold")]
    fmr: f64,
    /// A distance threshold instead of --fmr (dlib's examples use 0.5 with chinese-whispers).
    #[arg(long)]
    threshold: Option<f32>,
    /// average-linkage (default: merges groups by their mean distance, so a chain of
    /// look-alikes does not join two people), chinese-whispers (dlib's), or components
    /// (single linkage).
    #[arg(long, value_parser = method, default_value = "average-linkage")]
    method: Method,
    /// Neighbours per face in the graph the methods work on.
    #[arg(long, default_value_t = 32)]
    neighbours: usize,
    /// Chinese Whispers' random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write one folder of links per cluster here (cluster-00000 is the largest), and a
    /// contact sheet cluster-NNNNN.png of its faces beside each.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    detection: crate::DetectArgs,
    /// Image files or folders (walked recursively for images).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn method(name: &str) -> Result<Method, String> {
    Method::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Method::ALL
            .iter()
            .map(|m| m.name().replace('_', "-"))
            .collect();
        format!("unknown method {name:?}; one of {}", names.join(", "))
    })
}

pub fn run(a: ClusterArgs) -> uniface::Result<()> {
    a.detection.options().validate()?;
    let images = uniface::core::eval::corpus::scan_images(&a.paths)?;
    if images.is_empty() {
        return Err(Error::invalid(
            "paths",
            "no image files (jpg, jpeg, png, bmp, webp, gif, tiff) under the paths given",
        ));
    }
    let options = ClusterOptions {
        method: a.method,
        threshold: a
            .threshold
            .map_or(Threshold::Fmr(a.fmr), Threshold::Distance),
        neighbours: a.neighbours,
        seed: a.seed,
        ..Default::default()
    };
    let analyzer = crate::analyzer()?.with_options(a.detection.options());
    let described = crate::eval::bar(images.len(), "describing");
    let (faces, failed) =
        uniface::cluster::describe_faces(&analyzer, &images, a.out.is_some(), &|k| {
            described.inc(k)
        });
    described.finish_and_clear();
    for (path, e) in &failed {
        eprintln!("error: {}: {e}", path.display());
        if a.json {
            println!("{}", json!({"image": path, "error": e.to_string()}));
        }
    }
    let labels = uniface::cluster::cluster_faces(&faces, options, &|_| {})?;
    let clusters = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    if a.json {
        for (f, l) in faces.iter().zip(&labels) {
            let b = &f.bbox;
            println!(
                "{}",
                json!({"image": f.image, "face": [b.left, b.top, b.right, b.bottom], "cluster": l})
            );
        }
    } else {
        println!(
            "{} faces in {} images: {clusters} clusters",
            faces.len(),
            images.len() - failed.len()
        );
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); clusters];
        for (i, &l) in labels.iter().enumerate() {
            members[l as usize].push(i);
        }
        for (l, m) in members.iter().enumerate() {
            let mut shown: Vec<String> = m
                .iter()
                .take(5)
                .map(|&i| faces[i].image.display().to_string())
                .collect();
            if m.len() > 5 {
                shown.push(format!("… {} more", m.len() - 5));
            }
            println!("cluster {l}: {} faces: {}", m.len(), shown.join(", "));
        }
    }
    if let Some(out) = &a.out {
        let n = uniface::cluster::write_clusters(out, &faces, &labels)?;
        eprintln!(
            "wrote {n} cluster folders and contact sheets to {}",
            out.display()
        );
    }
    crate::failures(failed.len(), images.len(), "read or analysed")
}
