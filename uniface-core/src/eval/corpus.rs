//! Labelled photo collections: one folder per identity, one descriptor per photo chosen by a
//! [`FaceSelection`], and a descriptor cache so that repeated runs over the same photos skip
//! the expensive part.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::calibration::{self, Calibration, LabelledSet};
use crate::compare::Metric;
use crate::detect::{DetectOptions, FaceSelection};
use crate::embed::{Descriptor, DESCRIPTOR_DIM};
use crate::pipeline::{par_map_bounded, FaceAnalyzer};
use crate::template::ModelFingerprint;
use crate::{Error, Result};

const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "webp", "gif", "tiff"];

fn is_image(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// The images named by `paths`: files as given (whatever their extension), folders walked
/// recursively for image files (by extension), each folder's in name order. Symbolic links
/// to folders are not followed (no cycles).
pub fn scan_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
            .collect::<Result<_>>()?;
        entries.sort();
        for p in entries {
            let meta = std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, e))?;
            if meta.is_dir() {
                walk(&p, out)?;
            } else if is_image(&p) && p.is_file() {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Photos grouped by identity: `root/<identity>/<photo>`. Identities and photos are sorted by
/// name; folders without photos are skipped, as are files directly under `root`.
pub fn scan_identities(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let mut photos = Vec::new();
        for f in std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
            let f = f.map_err(|e| Error::io(&path, e))?.path();
            if f.is_file() && is_image(&f) {
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

/// The face `selection` picks in `img`, with its landmarks and the number of faces found,
/// detected with the analyzer's options and, when that finds nothing, once more at one more
/// level of upsampling (small faces in portrait sets).
pub fn select_with_retry(
    analyzer: &FaceAnalyzer,
    img: &image::RgbImage,
    selection: FaceSelection,
) -> Result<Option<(crate::detect::FaceBox, crate::landmarks::Landmarks, usize)>> {
    let first = analyzer.options.upsample;
    for upsample in [first, first.saturating_add(1)] {
        let opts = DetectOptions {
            upsample,
            ..analyzer.options
        };
        let found = analyzer.detector.detect(img, &opts)?;
        if let Some(i) = selection.pick(&found, img.width(), img.height()) {
            let b = found[i];
            return Ok(Some((
                b,
                analyzer.landmarks.predict(img, &b.rect()),
                found.len(),
            )));
        }
    }
    Ok(None)
}

/// The descriptor of the face [`select_with_retry`] picks in the photo at `path`; `None`
/// when no face is found.
pub fn describe_photo(
    analyzer: &FaceAnalyzer,
    path: &Path,
    selection: FaceSelection,
) -> Result<Option<Descriptor>> {
    let img = crate::image::load_rgb(path)?;
    match select_with_retry(analyzer, &img, selection)? {
        Some((b, lm, _)) => Ok(analyzer
            .describe(&img, vec![(b, lm)])?
            .first()
            .map(|f| f.embedding)),
        None => Ok(None),
    }
}

/// A descriptor cache file: one line per photo (`path<TAB>v1,v2,…` or `path<TAB>-` for no
/// face), keyed by the path relative to the collection root, behind a header naming the
/// model, preprocessing and face selection. A file made another way is ignored (and
/// rewritten); a torn last line (an interrupted run) is recomputed.
pub struct DescriptorCache {
    path: PathBuf,
    header: String,
    entries: HashMap<String, Option<Descriptor>>,
}

impl DescriptorCache {
    fn header(fp: &ModelFingerprint, selection: FaceSelection) -> (String, Option<String>) {
        let base = format!(
            "# uniface descriptor cache v1\t{}\t{}\t{}",
            fp.model_id,
            fp.to_hex(),
            fp.preprocessing
        );
        // version 1 files predate the selection field: they were all nearest-centre
        let legacy = (selection == FaceSelection::NearestCentre).then(|| base.clone());
        (format!("{base}\t{}", selection.name()), legacy)
    }

    /// Open (or start) the cache at `path` for descriptors of `fp` chosen by `selection`.
    pub fn open(path: &Path, fp: &ModelFingerprint, selection: FaceSelection) -> Result<Self> {
        let (header, legacy) = Self::header(fp, selection);
        let mut entries = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut lines = text.lines();
                let first = lines.next();
                if first == Some(header.as_str()) || (first.is_some() && first == legacy.as_deref())
                {
                    for line in lines {
                        let Some((key, values)) = line.split_once('\t') else {
                            continue;
                        };
                        if values == "-" {
                            entries.insert(key.to_owned(), None);
                            continue;
                        }
                        let parsed: Vec<f32> =
                            values.split(',').filter_map(|v| v.parse().ok()).collect();
                        if let Ok(d) = Descriptor::try_from(parsed.as_slice()) {
                            entries.insert(key.to_owned(), Some(d));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
        Ok(Self {
            path: path.to_owned(),
            header,
            entries,
        })
    }

    /// How many photos the cache holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached result for `key`: `Some(None)` is a photo known to show no face.
    pub fn get(&self, key: &str) -> Option<Option<Descriptor>> {
        self.entries.get(key).copied()
    }

    fn writer(&self) -> Result<Mutex<std::fs::File>> {
        cache_writer(&self.path, &self.header, self.entries.is_empty())
    }

    fn line(key: &str, d: &Option<Descriptor>) -> String {
        match d {
            None => format!("{key}\t-\n"),
            Some(d) => {
                let values: Vec<String> = d.iter().map(|v| v.to_string()).collect();
                format!("{key}\t{}\n", values.join(","))
            }
        }
    }
}

/// A cache file opened for appending, shared by the threads that fill it; when `fresh` (the
/// file held nothing usable) it is truncated and starts with `header`.
pub(crate) fn cache_writer(path: &Path, header: &str, fresh: bool) -> Result<Mutex<std::fs::File>> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!fresh)
        .truncate(fresh)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    if fresh {
        writeln!(f, "{header}").map_err(|e| Error::io(path, e))?;
    }
    Ok(Mutex::new(f))
}

/// One descriptor (or `None`: no face) per image, in order, each from [`describe_photo`].
/// With `cache`, photos already there are reused and new ones appended as they are computed,
/// so an interrupted run resumes where it stopped. `progress(k)` reports `k` more images done.
/// Images in flight are bounded by [`FaceAnalyzer::batch_memory`].
pub fn describe_all(
    analyzer: &FaceAnalyzer,
    root: &Path,
    images: &[PathBuf],
    selection: FaceSelection,
    cache: Option<&Path>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Option<Descriptor>>> {
    let fp = ModelFingerprint::dlib_resnet_v1();
    let cache = cache
        .map(|c| DescriptorCache::open(c, &fp, selection))
        .transpose()?;
    let writer = cache.as_ref().map(DescriptorCache::writer).transpose()?;
    let key = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let cached = |p: &Path| cache.as_ref().and_then(|c| c.get(&key(p)));
    let cost = |p: &PathBuf| {
        if cached(p).is_some() {
            0
        } else {
            analyzer.working_set_of_file(p)
        }
    };
    par_map_bounded(images, analyzer.batch_memory, cost, |p| {
        if let Some(d) = cached(p) {
            progress(1);
            return Ok(d);
        }
        let d = describe_photo(analyzer, p, selection)?;
        if let (Some(w), Some(c)) = (&writer, &cache) {
            let mut f = w.lock().unwrap_or_else(|e| e.into_inner());
            f.write_all(DescriptorCache::line(&key(p), &d).as_bytes())
                .map_err(|e| Error::io(&c.path, e))?;
        }
        progress(1);
        Ok(d)
    })
    .into_iter()
    .collect()
}

/// Descriptors of labelled photos that show a face, with their labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labelled {
    /// Row-major, one [`DESCRIPTOR_DIM`]-value row per photo kept.
    pub vectors: Vec<f32>,
    pub labels: Vec<u32>,
    /// Photos without a face (left out).
    pub skipped: Vec<PathBuf>,
}

impl Labelled {
    /// Keep the photos with a descriptor.
    pub fn new(photos: &[(u32, PathBuf)], descriptors: Vec<Option<Descriptor>>) -> Self {
        let mut out = Self::default();
        for ((label, path), d) in photos.iter().zip(descriptors) {
            match d {
                Some(d) => {
                    out.vectors.extend_from_slice(&d);
                    out.labels.push(*label);
                }
                None => out.skipped.push(path.clone()),
            }
        }
        out
    }

    /// Describe `photos` ([`describe_all`]) and keep those with a face.
    pub fn describe(
        analyzer: &FaceAnalyzer,
        root: &Path,
        photos: &[(u32, PathBuf)],
        selection: FaceSelection,
        cache: Option<&Path>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Self> {
        let paths: Vec<PathBuf> = photos.iter().map(|p| p.1.clone()).collect();
        let d = describe_all(analyzer, root, &paths, selection, cache, progress)?;
        Ok(Self::new(photos, d))
    }

    pub fn set(&self) -> LabelledSet<'_> {
        LabelledSet {
            vectors: &self.vectors,
            dim: DESCRIPTOR_DIM,
            labels: &self.labels,
        }
    }
}

/// Labels for photos by their folder (`root/<identity>/<photo>`), numbered in order of first
/// appearance.
pub fn label_by_folder(photos: &[PathBuf]) -> Vec<(u32, PathBuf)> {
    let mut ids: HashMap<String, u32> = HashMap::new();
    photos
        .iter()
        .map(|p| {
            let id = p
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default();
            let next = ids.len() as u32;
            (*ids.entry(id).or_insert(next), p.clone())
        })
        .collect()
}

/// A photo folder calibrated: the table and the photos left out.
pub struct FolderCalibration {
    pub calibration: Calibration,
    pub photos: usize,
    pub identities: usize,
    pub skipped: Vec<PathBuf>,
}

/// Options of [`calibrate_folder`].
#[derive(Debug, Clone)]
pub struct CalibrateOptions<'a> {
    /// Target FMRs (default [`calibration::STANDARD_FMRS`]).
    pub fmrs: &'a [f64],
    pub selection: FaceSelection,
    pub cache: Option<&'a Path>,
    /// A sentence about the data, put first in the table's method.
    pub note: Option<&'a str>,
}

impl Default for CalibrateOptions<'_> {
    fn default() -> Self {
        Self {
            fmrs: &calibration::STANDARD_FMRS,
            selection: FaceSelection::NearestCentre,
            cache: None,
            note: None,
        }
    }
}

/// A threshold table from a folder of labelled photos (`root/<identity>/<photo>`; what
/// `uniface calibrate` runs): one descriptor per photo, every pair scored.
/// `describe_progress(k)` counts photos described, `pair_progress(k)` rows of pairs scored.
pub fn calibrate_folder(
    analyzer: &FaceAnalyzer,
    root: &Path,
    options: &CalibrateOptions<'_>,
    describe_progress: &(dyn Fn(u64) + Sync),
    pair_progress: &(dyn Fn(u64) + Sync),
) -> Result<FolderCalibration> {
    let identities = scan_identities(root)?;
    let photos: Vec<(u32, PathBuf)> = identities
        .iter()
        .enumerate()
        .flat_map(|(i, (_, ps))| ps.iter().map(move |p| (i as u32, p.clone())))
        .collect();
    let labelled = Labelled::describe(
        analyzer,
        root,
        &photos,
        options.selection,
        options.cache,
        describe_progress,
    )?;
    let n = labelled.labels.len();
    let mut method = options.note.map(|n| format!("{n}. ")).unwrap_or_default();
    method.push_str(&format!(
        "`uniface calibrate` (uniface {}): {} photos in {} identity folders; one descriptor per \
         photo ({}, detector upsample {}, else {}); {} photos without a face skipped; every \
         pair of the remaining {n} photos scored (Euclidean): cross-identity pairs are impostor \
         comparisons, same-identity pairs genuine ones. Each threshold lies midway between the \
         k-th and (k+1)-th smallest impostor distance, k = floor(FMR x impostor comparisons).",
        env!("CARGO_PKG_VERSION"),
        photos.len(),
        identities.len(),
        selection_phrase(options.selection),
        analyzer.options.upsample,
        analyzer.options.upsample.saturating_add(1),
        labelled.skipped.len(),
    ));
    let fmrs = if options.fmrs.is_empty() {
        &calibration::STANDARD_FMRS[..]
    } else {
        options.fmrs
    };
    let calibration = calibration::calibrate(
        &labelled.set(),
        Metric::Euclidean,
        fmrs,
        crate::model_store::RESNET.id,
        options.selection,
        &method,
        pair_progress,
    )?;
    Ok(FolderCalibration {
        calibration,
        photos: photos.len(),
        identities: identities.len(),
        skipped: labelled.skipped,
    })
}

fn selection_phrase(s: FaceSelection) -> &'static str {
    match s {
        FaceSelection::Largest => "the largest face",
        FaceSelection::NearestCentre => "the face nearest the image centre",
        FaceSelection::HighestScore => "the most confident face",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lines_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tsv");
        let fp = ModelFingerprint::dlib_resnet_v1();
        let (header, legacy) = DescriptorCache::header(&fp, FaceSelection::NearestCentre);
        let mut d = [0f32; 128];
        for (i, v) in d.iter_mut().enumerate() {
            *v = (i as f32 * 0.37).sin() / 7.0;
        }
        let body = format!(
            "{}{}a/torn\t0.1,0.2\n",
            DescriptorCache::line("a/x.jpg", &Some(d)),
            DescriptorCache::line("b/y.jpg", &None)
        );
        for h in [header, legacy.unwrap()] {
            std::fs::write(&path, format!("{h}\n{body}")).unwrap();
            let back = DescriptorCache::open(&path, &fp, FaceSelection::NearestCentre).unwrap();
            assert_eq!(back.len(), 2);
            assert_eq!(back.get("a/x.jpg"), Some(Some(d)));
            assert_eq!(back.get("b/y.jpg"), Some(None));
            assert_eq!(back.get("a/torn"), None);
            // descriptors of another face selection are not these
            let other = DescriptorCache::open(&path, &fp, FaceSelection::Largest).unwrap();
            assert!(other.is_empty());
        }
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
        let labelled = label_by_folder(&[
            PathBuf::from("r/x/1.jpg"),
            PathBuf::from("r/y/1.jpg"),
            PathBuf::from("r/x/2.jpg"),
        ]);
        let l: Vec<u32> = labelled.iter().map(|p| p.0).collect();
        assert_eq!(l, [0, 1, 0]);
    }
}
