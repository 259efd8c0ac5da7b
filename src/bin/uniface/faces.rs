//! `uniface detect` and `uniface embed`.

use std::path::PathBuf;

use serde_json::{json, Value};
use uniface::{DetectOptions, FaceAnalyzer};

fn analyse(analyzer: &FaceAnalyzer, path: &PathBuf, embed: bool) -> uniface::Result<Value> {
    let img = uniface::core::image::load_rgb(path)?;
    let detection = analyzer.detect_planned(&img)?;
    let found: Vec<_> = detection
        .faces
        .iter()
        .map(|b| (*b, analyzer.landmarks.predict(&img, &b.rect())))
        .collect();
    let face = |b: &uniface::FaceBox, lm: &uniface::Landmarks| {
        json!({
            "box": [b.left, b.top, b.right, b.bottom],
            "score": b.score,
            "landmarks": lm.points.iter().map(|p| [p.x as i64, p.y as i64]).collect::<Vec<_>>(),
        })
    };
    let faces: Vec<Value> = if embed {
        analyzer
            .describe(&img, found)?
            .into_iter()
            .map(|f| {
                let mut v = face(&f.bbox, &f.landmarks);
                v["embedding"] = json!(f.embedding.to_vec());
                v
            })
            .collect()
    } else {
        found.iter().map(|(b, lm)| face(b, lm)).collect()
    };
    Ok(json!({
        "image": path,
        "width": img.width(),
        "height": img.height(),
        "faces": faces,
        "detection": detection.plan,
        "warning": detection.plan.warning(),
    }))
}

/// Analyse images in parallel, print in input order; failures are reported per image and make
/// the exit status non-zero.
pub fn run(
    images: &[PathBuf],
    options: DetectOptions,
    json_out: bool,
    embed: bool,
) -> uniface::Result<()> {
    options.validate()?;
    let analyzer = crate::analyzer()?.with_options(options);
    let results = uniface::core::pipeline::par_map_bounded(
        images,
        analyzer.batch_memory,
        |p| analyzer.working_set_of_file(p),
        |p| analyse(&analyzer, p, embed),
    );
    let mut failed = 0;
    for (path, r) in images.iter().zip(results) {
        match r {
            Ok(v) if json_out => println!("{v}"),
            Ok(v) => {
                if let Some(w) = v["warning"].as_str() {
                    eprintln!("warning: {}: {w}", path.display());
                }
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
        return Err(uniface::Error::Core(uniface::core::Error::Image {
            path: format!("{failed} of {} images", images.len()),
            message: "could not be analysed".into(),
        }));
    }
    Ok(())
}
