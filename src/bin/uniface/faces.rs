//! `uniface detect` and `uniface embed`.

use std::path::PathBuf;

use rayon::prelude::*;
use serde_json::{json, Value};
use uniface::{DetectOptions, FaceAnalyzer};

fn analyse(analyzer: &FaceAnalyzer, path: &PathBuf, embed: bool) -> uniface::Result<Value> {
    let img = uniface::core::image::load_rgb(path)?;
    let faces: Vec<Value> = if embed {
        analyzer
            .analyze(&img)?
            .into_iter()
            .map(|f| {
                json!({
                    "box": [f.bbox.left, f.bbox.top, f.bbox.right, f.bbox.bottom],
                    "score": f.bbox.score,
                    "landmarks": f.landmarks.points.iter().map(|p| [p.x as i64, p.y as i64]).collect::<Vec<_>>(),
                    "embedding": f.embedding.to_vec(),
                })
            })
            .collect()
    } else {
        analyzer
            .detect_landmarks(&img)?
            .into_iter()
            .map(|(b, lm)| {
                json!({
                    "box": [b.left, b.top, b.right, b.bottom],
                    "score": b.score,
                    "landmarks": lm.points.iter().map(|p| [p.x as i64, p.y as i64]).collect::<Vec<_>>(),
                })
            })
            .collect()
    };
    Ok(json!({
        "image": path,
        "width": img.width(),
        "height": img.height(),
        "faces": faces,
    }))
}

/// Analyse images in parallel, print in input order; failures are reported per image and make
/// the exit status non-zero.
pub fn run(images: &[PathBuf], upsample: u32, json_out: bool, embed: bool) -> uniface::Result<()> {
    let analyzer = FaceAnalyzer::from_env()?.with_options(DetectOptions {
        upsample,
        ..Default::default()
    });
    let results: Vec<_> = images
        .par_iter()
        .map(|p| analyse(&analyzer, p, embed))
        .collect();
    let mut failed = 0;
    for (path, r) in images.iter().zip(results) {
        match r {
            Ok(v) if json_out => println!("{v}"),
            Ok(v) => {
                let faces = v["faces"].as_array().map_or(0, Vec::len);
                println!("{}: {faces} face(s)", path.display());
                for f in v["faces"].as_array().into_iter().flatten() {
                    println!(
                        "  box {} score {:.3}",
                        f["box"],
                        f["score"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            Err(e) => {
                failed += 1;
                if json_out {
                    println!("{}", json!({"image": path, "error": e.to_string()}));
                }
                eprintln!("error: {}: {e}", path.display());
            }
        }
    }
    if failed > 0 {
        return Err(uniface::Error::Image {
            path: format!("{failed} of {} images", images.len()),
            message: "could not be analysed".into(),
        });
    }
    Ok(())
}
