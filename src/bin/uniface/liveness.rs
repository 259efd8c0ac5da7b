//! `uniface liveness`: presentation-attack detection on every face of each photo.

use std::path::{Path, PathBuf};

use serde_json::json;
use uniface::core::liveness::{LivenessDetector, INPUT_SIZE};
use uniface::core::Error;

fn save_crop(dir: &Path, name: String, bgr: &[u8]) -> uniface::Result<()> {
    let n = INPUT_SIZE as u32;
    let rgb: Vec<u8> = bgr
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    let img = image::RgbImage::from_raw(n, n, rgb).ok_or(Error::BufferLength {
        expected: INPUT_SIZE * INPUT_SIZE * 3,
        got: bgr.len(),
    })?;
    let path = dir.join(name);
    Ok(img.save(&path).map_err(|e| Error::Image {
        path: path.display().to_string(),
        message: e.to_string(),
    })?)
}

pub fn run(
    images: &[PathBuf],
    json_out: bool,
    dump: Option<&Path>,
    box_scale: Option<f32>,
) -> uniface::Result<()> {
    let analyzer = crate::analyzer()?;
    let mut detector = LivenessDetector::from_store(&crate::store()?)?;
    if let Some(s) = box_scale {
        detector = detector.with_box_scale(s);
    }
    if let Some(d) = dump {
        std::fs::create_dir_all(d).map_err(|e| Error::Io {
            path: d.to_owned(),
            source: e,
        })?;
    }
    let mut failed = 0;
    for path in images {
        let result = (|| -> uniface::Result<serde_json::Value> {
            let img = uniface::core::image::load_rgb(path)?;
            let mut faces = Vec::new();
            for (i, (b, _)) in analyzer.detect_landmarks(&img)?.into_iter().enumerate() {
                let l = detector.check(&img, &b.rect())?;
                if let Some(d) = dump {
                    let stem = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    for (crop, m) in detector.crops(&img, &b.rect())?.iter().zip(&l.per_model) {
                        save_crop(d, format!("{stem}_f{i}_{:.1}.png", m.crop_scale), crop)?;
                    }
                }
                faces.push(json!({
                    "box": [b.left, b.top, b.right, b.bottom],
                    "is_live": l.is_live, "score": l.score, "per_model": l.per_model,
                }));
            }
            Ok(json!({"image": path, "faces": faces}))
        })();
        match result {
            Ok(v) if json_out => println!("{v}"),
            Ok(v) => {
                let faces = v["faces"].as_array().cloned().unwrap_or_default();
                println!("{}: {} face(s)", path.display(), faces.len());
                for f in faces {
                    println!(
                        "  {} {} score {:.3}",
                        f["box"],
                        if f["is_live"] == true {
                            "LIVE  "
                        } else {
                            "ATTACK"
                        },
                        f["score"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", path.display());
            }
        }
    }
    crate::failures(failed, images.len(), "processed")
}
