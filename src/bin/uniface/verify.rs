//! `uniface verify`: a calibrated 1:1 decision between the faces of two photos.

use std::path::Path;

use serde_json::json;
use uniface::core::calibration::{self, CalibrationTable};
use uniface::core::compare::{self, Metric};
use uniface::{Error, Face, FaceAnalyzer};

/// The largest face of a photo (by box area), and how many faces it shows.
fn largest_face(analyzer: &FaceAnalyzer, path: &Path) -> uniface::Result<(Face, usize)> {
    let img = uniface::core::image::load_rgb(path)?;
    let faces = analyzer.analyze(&img)?;
    let n = faces.len();
    faces
        .into_iter()
        .max_by_key(|f| f.bbox.rect().area())
        .map(|f| (f, n))
        .ok_or_else(|| Error::NoFace {
            image: path.display().to_string(),
        })
}

fn face_json(path: &Path, face: &Face, count: usize) -> serde_json::Value {
    let b = &face.bbox;
    json!({
        "image": path, "faces": count,
        "box": [b.left, b.top, b.right, b.bottom], "score": b.score,
    })
}

pub fn run(
    a: &Path,
    b: &Path,
    fmr: f64,
    calibration_file: Option<&Path>,
    json_out: bool,
) -> uniface::Result<()> {
    let owned;
    let table: &CalibrationTable = match calibration_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
                path: path.to_owned(),
                source: e,
            })?;
            owned = CalibrationTable::from_json(&text)?;
            &owned
        }
        None => calibration::default_table()?,
    };
    // Validate the target before any expensive work.
    table.threshold_for_fmr(fmr)?;
    let analyzer = FaceAnalyzer::from_env()?;
    let (fa, fb) = rayon::join(|| largest_face(&analyzer, a), || largest_face(&analyzer, b));
    let ((fa, na), (fb, nb)) = (fa?, fb?);
    let distance = compare::distance(Metric::Euclidean, &fa.embedding, &fb.embedding)?;
    let d = table.decide(distance, fmr)?;
    if json_out {
        println!(
            "{}",
            json!({
                "distance": d.distance, "similarity": d.similarity, "threshold": d.threshold,
                "fmr": d.target_fmr, "match": d.is_match, "estimated_fmr": d.estimated_fmr,
                "a": face_json(a, &fa, na), "b": face_json(b, &fb, nb),
            })
        );
    } else {
        for (path, n) in [(a, na), (b, nb)] {
            if n > 1 {
                println!("{}: {n} faces, comparing the largest", path.display());
            }
        }
        println!(
            "{}: distance {:.4} (similarity {:.3}), threshold {:.4} for FMR {:.0e}; a threshold \
             at this distance would falsely match about {:.1e} of impostor pairs",
            if d.is_match { "MATCH" } else { "NO MATCH" },
            d.distance,
            d.similarity,
            d.threshold,
            d.target_fmr,
            d.estimated_fmr
        );
    }
    Ok(())
}
