//! Analyse many photos at once with bounded memory: `FaceAnalyzer::analyze_batch` works on as
//! many images at a time as `batch_memory` holds (default 1 GiB), whatever the core count.
//!
//! ```text
//! cargo run --release --example analyze_batch -- photo1.jpg photo2.jpg ...
//! ```

use uniface::core::image::load_rgb;
use uniface::FaceAnalyzer;

fn main() -> uniface::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    let analyzer = FaceAnalyzer::from_env()?;
    let images = paths
        .iter()
        .map(|p| load_rgb(p.as_ref()))
        .collect::<uniface::core::Result<Vec<_>>>()?;
    for (path, faces) in paths.iter().zip(analyzer.analyze_batch(&images)) {
        let faces = faces?;
        println!("{path}: {} face(s)", faces.len());
        for f in faces {
            let b = f.bbox;
            println!(
                "  box [{}, {}, {}, {}] score {:.3}",
                b.left, b.top, b.right, b.bottom, b.score
            );
        }
    }
    Ok(())
}
