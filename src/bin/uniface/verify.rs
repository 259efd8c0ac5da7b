//! `uniface verify`: a calibrated 1:1 decision between the faces of two photos.

use std::path::Path;

use serde_json::json;
use uniface::core::calibration::{self, CalibrationTable};
use uniface::core::compare::{self, Metric};
use uniface::{Error, Face, FaceAnalyzer, FaceSelection};

/// The chosen face of a photo, and how many faces it shows.
fn chosen_face(analyzer: &FaceAnalyzer, path: &Path) -> uniface::Result<(Face, usize)> {
    let img = uniface::core::image::load_rgb(path)?;
    let found = analyzer.analyze_selected(&img)?;
    Ok(found.ok_or_else(|| uniface::core::Error::NoFace {
        image: path.display().to_string(),
    })?)
}

pub fn run(
    images: [&Path; 2],
    fmr: f64,
    calibration_file: Option<&Path>,
    select: Option<FaceSelection>,
    json_out: bool,
) -> uniface::Result<()> {
    let table = match calibration_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            CalibrationTable::from_json(&text)?
        }
        None => calibration::default_table()?.clone(),
    };
    // Validate the target before any expensive work.
    table.threshold_for_fmr(fmr)?;
    let selection = select.unwrap_or(table.selection);
    if selection != table.selection {
        eprintln!(
            "warning: comparing the {selection} face, but the calibration was made with \
             {}; its false-match rates hold for that rule",
            table.selection
        );
    }
    let analyzer = crate::analyzer()?.with_selection(selection);
    let [a, b] = images;
    let (fa, fb) = rayon::join(|| chosen_face(&analyzer, a), || chosen_face(&analyzer, b));
    let ((fa, na), (fb, nb)) = (fa?, fb?);
    let distance = compare::distance(Metric::Euclidean, &fa.embedding, &fb.embedding)?;
    let d = table.decide(distance, fmr)?;
    if json_out {
        let face = |path: &Path, f: &Face, count: usize| {
            let b = &f.bbox;
            json!({
                "image": path, "faces": count,
                "box": [b.left, b.top, b.right, b.bottom], "score": b.score,
            })
        };
        println!(
            "{}",
            json!({
                "distance": d.distance, "similarity": d.similarity, "threshold": d.threshold,
                "fmr": d.target_fmr, "match": d.is_match, "estimated_fmr": d.estimated_fmr,
                "selection": selection, "a": face(a, &fa, na), "b": face(b, &fb, nb),
            })
        );
        return Ok(());
    }
    for (path, n) in [(a, na), (b, nb)] {
        if n > 1 {
            println!(
                "{}: {n} faces, comparing the {selection} one",
                path.display()
            );
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
    Ok(())
}
