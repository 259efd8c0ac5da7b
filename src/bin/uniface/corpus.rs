//! Labelled photo collections for `eval` and `calibrate`: one folder per identity, one
//! descriptor per photo (the face nearest the image centre), with an optional descriptor cache
//! so that repeated runs over the same photos skip the expensive part.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use uniface::core::pipeline::par_map_bounded;
use uniface::core::template::ModelFingerprint;
use uniface::{Descriptor, DetectOptions, Error, FaceAnalyzer};

const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "webp", "gif", "tiff"];

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source: e,
    }
}

/// Photos grouped by identity: `root/<identity>/<photo>`. Identities and photos are sorted by
/// name; folders without photos are skipped, as are files directly under `root`.
pub fn scan_identities(root: &Path) -> uniface::Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|e| io_error(root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(root, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let mut photos = Vec::new();
        for f in std::fs::read_dir(&path).map_err(|e| io_error(&path, e))? {
            let f = f.map_err(|e| io_error(&path, e))?.path();
            let ext = f
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if f.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
                photos.push(f);
            }
        }
        if photos.is_empty() {
            continue;
        }
        photos.sort();
        // a subject id is the folder's name exactly: two names that differ only in bytes
        // that are not UTF-8 must not become one subject
        let name = entry.file_name().into_string().map_err(|raw| Error::InvalidArgument {
            name: "subject",
            message: format!(
                "the folder name {raw:?} in {} is not UTF-8; rename it (subject ids are UTF-8 text)",
                root.display()
            ),
        })?;
        out.push((name, photos));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The face nearest the image centre with its landmarks and the number of faces found;
/// detection is retried at upsample 2 when none is found at upsample 1.
pub fn centre_face(
    analyzer: &FaceAnalyzer,
    img: &image::RgbImage,
) -> uniface::Result<Option<(uniface::FaceBox, uniface::Landmarks, usize)>> {
    let (cx, cy) = (f64::from(img.width()) / 2.0, f64::from(img.height()) / 2.0);
    for upsample in [1, 2] {
        let opts = DetectOptions {
            upsample,
            ..Default::default()
        };
        let found = analyzer.detector.detect(img, &opts)?;
        let n = found.len();
        let best = found.into_iter().min_by(|a, b| {
            let d = |f: &uniface::FaceBox| {
                let (x, y) = (
                    (f.left + f.right) as f64 / 2.0,
                    (f.top + f.bottom) as f64 / 2.0,
                );
                (x - cx).powi(2) + (y - cy).powi(2)
            };
            d(a).total_cmp(&d(b))
        });
        if let Some(b) = best {
            let lm = analyzer.landmarks.predict(img, &b.rect());
            return Ok(Some((b, lm, n)));
        }
    }
    Ok(None)
}

/// The descriptor of the face nearest the image centre ([`centre_face`]); `None` when no
/// face is found at all.
pub fn describe(analyzer: &FaceAnalyzer, path: &Path) -> uniface::Result<Option<Descriptor>> {
    let img = uniface::core::image::load_rgb(path)?;
    match centre_face(analyzer, &img)? {
        Some((b, lm, _)) => {
            let faces = analyzer.describe(&img, vec![(b, lm)])?;
            Ok(faces.first().map(|f| f.embedding))
        }
        None => Ok(None),
    }
}

fn cache_header(fp: &ModelFingerprint) -> String {
    let sha: String = fp
        .weights_sha256
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "# uniface descriptor cache v1\t{}\t{sha}\t{}",
        fp.model_id, fp.preprocessing
    )
}

/// Entries of a cache file keyed by path relative to the collection root; an empty map when
/// the file does not exist or was made by another model or recipe.
fn read_cache(path: &Path, header: &str) -> uniface::Result<HashMap<String, Option<Descriptor>>> {
    let mut out = HashMap::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_error(path, e)),
    };
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        eprintln!(
            "note: {} was made by another model or recipe; recomputing",
            path.display()
        );
        return Ok(out);
    }
    for line in lines {
        let Some((key, values)) = line.split_once('\t') else {
            continue;
        };
        if values == "-" {
            out.insert(key.to_owned(), None);
            continue;
        }
        let parsed: Vec<f32> = values.split(',').filter_map(|v| v.parse().ok()).collect();
        // A torn last line (interrupted run) is simply recomputed.
        if let Ok(d) = Descriptor::try_from(parsed.as_slice()) {
            out.insert(key.to_owned(), Some(d));
        }
    }
    Ok(out)
}

/// A cache file opened for appending (a fresh one starts with `header`), shared by threads.
pub fn open_cache(
    cache: Option<&Path>,
    header: &str,
    fresh: bool,
) -> uniface::Result<Option<std::sync::Mutex<std::fs::File>>> {
    let Some(c) = cache else { return Ok(None) };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!fresh)
        .truncate(fresh)
        .open(c)
        .map_err(|e| io_error(c, e))?;
    if fresh {
        writeln!(f, "{header}").map_err(|e| io_error(c, e))?;
    }
    Ok(Some(std::sync::Mutex::new(f)))
}

/// Report per-item failures (already printed) as one error, or `Ok` when there were none.
pub fn failures(failed: usize, total: usize, what: &str) -> uniface::Result<()> {
    if failed == 0 {
        return Ok(());
    }
    Err(Error::Image {
        path: format!("{failed} of {total} images"),
        message: format!("could not be {what}"),
    })
}

fn cache_line(key: &str, d: &Option<Descriptor>) -> String {
    match d {
        None => format!("{key}\t-\n"),
        Some(d) => {
            let values: Vec<String> = d.iter().map(|v| v.to_string()).collect();
            format!("{key}\t{}\n", values.join(","))
        }
    }
}

pub fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(len as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let template = format!("{what} {{bar:40}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}");
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// One descriptor (or `None`: no face) per image, in order. With `cache`, descriptors already
/// stored there for the same model are reused and new ones appended as they are computed, so
/// an interrupted run resumes where it stopped.
pub fn describe_all(
    analyzer: &FaceAnalyzer,
    root: &Path,
    images: &[PathBuf],
    cache: Option<&Path>,
) -> uniface::Result<Vec<Option<Descriptor>>> {
    let header = cache_header(&ModelFingerprint::dlib_resnet_v1());
    let key = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let cached = match cache {
        Some(c) => read_cache(c, &header)?,
        None => HashMap::new(),
    };
    let writer = open_cache(cache, &header, cached.is_empty())?;
    let bar = progress(images.len(), "embedding");
    // (images in flight bounded by memory, not by the core count)
    let cost = |p: &PathBuf| {
        if cached.contains_key(&key(p)) {
            0
        } else {
            analyzer.working_set_of_file(p)
        }
    };
    let out: uniface::Result<Vec<Option<Descriptor>>> =
        par_map_bounded(images, analyzer.batch_memory, cost, |p| {
            let k = key(p);
            if let Some(d) = cached.get(&k) {
                bar.inc(1);
                return Ok(*d);
            }
            let d = describe(analyzer, p)?;
            if let (Some(w), Some(c)) = (&writer, cache) {
                let mut f = w.lock().unwrap_or_else(|e| e.into_inner());
                f.write_all(cache_line(&k, &d).as_bytes())
                    .map_err(|e| io_error(c, e))?;
            }
            bar.inc(1);
            Ok(d)
        })
        .into_iter()
        .collect();
    bar.finish_and_clear();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lines_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tsv");
        let header = cache_header(&ModelFingerprint::dlib_resnet_v1());
        let mut d = [0f32; 128];
        for (i, v) in d.iter_mut().enumerate() {
            *v = (i as f32 * 0.37).sin() / 7.0;
        }
        let text = format!(
            "{header}\n{}{}a/torn\t0.1,0.2\n",
            cache_line("a/x.jpg", &Some(d)),
            cache_line("b/y.jpg", &None)
        );
        std::fs::write(&path, text).unwrap();
        let back = read_cache(&path, &header).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back["a/x.jpg"], Some(d));
        assert_eq!(back["b/y.jpg"], None);
        // another model's cache is ignored
        assert!(read_cache(&path, "# other").unwrap().is_empty());
    }

    #[test]
    fn identities_are_folders_with_photos() {
        let dir = tempfile::tempdir().unwrap();
        for (who, files) in [
            ("b", vec!["2.jpg", "1.PNG", "notes.txt"]),
            ("a", vec!["x.jpg"]),
        ] {
            std::fs::create_dir(dir.path().join(who)).unwrap();
            for f in files {
                std::fs::write(dir.path().join(who).join(f), b"").unwrap();
            }
        }
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        std::fs::write(dir.path().join("loose.jpg"), b"").unwrap();
        let ids = scan_identities(dir.path()).unwrap();
        let names: Vec<_> = ids.iter().map(|i| i.0.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let b: Vec<_> = ids[1].1.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(b, ["1.PNG", "2.jpg"]);
    }
}
