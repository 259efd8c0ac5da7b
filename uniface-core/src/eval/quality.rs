//! Quality on LFW: the error-versus-discard characteristic of the unified score (ISO/IEC
//! 29794-1) against sharpness and random discard, the distribution of the measures, and
//! liveness on a sample of real faces.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use super::corpus::{cache_writer, label_by_folder, select_with_retry};
use super::edc::{edc_by, partial_area, quantiles, random_edc, QUANTILE_LEVELS};
use super::pairs::{photos_of, read_pairs};
use super::plot;
use crate::align::{face_chip, CHIP_PADDING, CHIP_SIZE};
use crate::calibration::{self, LabelledSet};
use crate::compare::Metric;
use crate::detect::FaceSelection;
use crate::embed::{euclidean_distance, Descriptor, DESCRIPTOR_DIM};
use crate::liveness::LivenessDetector;
use crate::pipeline::par_map_bounded;
use crate::{Error, FaceAnalyzer, Result};

/// What the quality run keeps per photo.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoQuality {
    pub descriptor: Descriptor,
    pub unified: f32,
    pub unified_scalar: f32,
    pub sharpness: f32,
    pub eye_distance: f32,
    pub yaw: f32,
    /// Liveness score and verdict, for the photos of the liveness sample.
    pub liveness: Option<(f32, bool)>,
}

const CACHE_HEADER: &str = "# uniface quality cache v1 dlib-resnet-v1 minifasnet";

fn row_line(key: &str, r: &Option<PhotoQuality>) -> String {
    match r {
        None => format!("{key}\t-\n"),
        Some(r) => {
            let d: Vec<String> = r.descriptor.iter().map(|v| v.to_string()).collect();
            let l = r.liveness.map_or("-".to_owned(), |(s, live)| {
                format!("{s}:{}", u8::from(live))
            });
            format!(
                "{key}\t{}\t{}\t{}\t{}\t{}\t{l}\t{}\n",
                r.unified,
                r.unified_scalar,
                r.sharpness,
                r.eye_distance,
                r.yaw,
                d.join(",")
            )
        }
    }
}

fn parse_row(fields: &[&str]) -> Option<Option<PhotoQuality>> {
    if fields == ["-"] {
        return Some(None);
    }
    let [u, us, sh, ied, yaw, l, d] = fields else {
        return None;
    };
    let liveness = match *l {
        "-" => None,
        v => {
            let (s, live) = v.split_once(':')?;
            Some((s.parse().ok()?, live == "1"))
        }
    };
    let values: Vec<f32> = d.split(',').filter_map(|v| v.parse().ok()).collect();
    Some(Some(PhotoQuality {
        descriptor: Descriptor::try_from(values.as_slice()).ok()?,
        unified: u.parse().ok()?,
        unified_scalar: us.parse().ok()?,
        sharpness: sh.parse().ok()?,
        eye_distance: ied.parse().ok()?,
        yaw: yaw.parse().ok()?,
        liveness,
    }))
}

fn read_cache(path: &Path) -> HashMap<String, Option<PhotoQuality>> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return out;
    };
    let mut lines = text.lines();
    if lines.next() == Some(CACHE_HEADER) {
        for line in lines {
            let f: Vec<&str> = line.split('\t').collect();
            if let Some((k, rest)) = f.split_first() {
                if let Some(r) = parse_row(rest) {
                    out.insert((*k).to_owned(), r);
                }
            }
        }
    }
    out
}

/// The measures of the face nearest the centre of the photo at `path` (`None`: no face),
/// with liveness when `liveness` is given.
pub fn assess_photo(
    analyzer: &FaceAnalyzer,
    liveness: Option<&LivenessDetector>,
    path: &Path,
) -> Result<Option<PhotoQuality>> {
    let img = crate::image::load_rgb(path)?;
    let Some((face, lm, n)) = select_with_retry(analyzer, &img, FaceSelection::NearestCentre)?
    else {
        return Ok(None);
    };
    let chip = face_chip(&img, &lm, CHIP_SIZE, CHIP_PADDING);
    let q = crate::quality::measure(&img, &face, &lm, &chip, n);
    let (u, descriptor) = crate::quality::unified_and_descriptor(&analyzer.embedder, &img, &lm)?;
    let live = match liveness {
        Some(d) => {
            let l = d.check(&img, &face.rect())?;
            Some((l.score, l.is_live))
        }
        None => None,
    };
    Ok(Some(PhotoQuality {
        descriptor,
        unified: u.raw,
        unified_scalar: u.scalar,
        sharpness: q.sharpness.raw,
        eye_distance: q.inter_eye_distance.raw,
        yaw: q.yaw.raw,
        liveness: live,
    }))
}

/// Options of [`quality_lfw`].
#[derive(Debug, Clone, Copy)]
pub struct QualityOptions<'a> {
    pub pairs: Option<&'a Path>,
    /// A cache of per-photo rows, reused and extended.
    pub cache: Option<&'a Path>,
    /// How many photos (spread over the set) also get a liveness check.
    pub liveness_sample: usize,
}

impl Default for QualityOptions<'_> {
    fn default() -> Self {
        Self {
            pairs: None,
            cache: None,
            liveness_sample: 500,
        }
    }
}

/// What [`quality_lfw`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityEval {
    pub photos: usize,
    pub with_face: usize,
    pub genuine_pairs: usize,
    pub impostor_pairs: u64,
    /// The FMR 1e-3 threshold of every pair of the photos.
    pub threshold: f32,
    /// Discard fractions 0, 0.01, …, 1.
    pub fractions: Vec<f64>,
    /// FNMR at each fraction, discarding by the unified score, by sharpness, at random.
    pub unified: Vec<f64>,
    pub sharpness: Vec<f64>,
    pub random: Vec<f64>,
    pub liveness_sample: usize,
    pub liveness_live: usize,
    /// Quantiles ([`QUANTILE_LEVELS`]) of each measure over the photos with a face.
    pub distribution: BTreeMap<&'static str, [f32; 5]>,
    pub seconds: f64,
}

/// Run the quality evaluation on the LFW folder `root`. `progress(k)` counts photos assessed.
pub fn quality_lfw(
    analyzer: &FaceAnalyzer,
    liveness: &LivenessDetector,
    root: &Path,
    options: &QualityOptions<'_>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<QualityEval> {
    let start = Instant::now();
    let pairs_path = options
        .pairs
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("pairs.txt"));
    let images = photos_of(&read_pairs(root, &pairs_path)?);
    let step = (images.len() / options.liveness_sample.max(1)).max(1);
    let key = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let cached = options.cache.map(read_cache).unwrap_or_default();
    let writer = options
        .cache
        .map(|c| cache_writer(c, CACHE_HEADER, cached.is_empty()))
        .transpose()?;
    let indexed: Vec<(usize, &PathBuf)> = images.iter().enumerate().collect();
    let rows: Vec<Option<PhotoQuality>> = par_map_bounded(
        &indexed,
        analyzer.batch_memory,
        |(_, p)| analyzer.working_set_of_file(p),
        |&(i, p)| -> Result<Option<PhotoQuality>> {
            let k = key(p);
            if let Some(r) = cached.get(&k) {
                progress(1);
                return Ok(r.clone());
            }
            let live = (i % step == 0).then_some(liveness);
            let r = assess_photo(analyzer, live, p)?;
            if let Some(w) = &writer {
                let mut f = w.lock().unwrap_or_else(|e| e.into_inner());
                // a row that fails to land is recomputed next time
                let _ = f.write_all(row_line(&k, &r).as_bytes());
            }
            progress(1);
            Ok(r)
        },
    )
    .into_iter()
    .collect::<Result<_>>()?;
    let with_face: Vec<(PathBuf, &PhotoQuality)> = images
        .iter()
        .zip(&rows)
        .filter_map(|(p, r)| r.as_ref().map(|r| (p.clone(), r)))
        .collect();
    let paths: Vec<PathBuf> = with_face.iter().map(|w| w.0.clone()).collect();
    let labels: Vec<u32> = label_by_folder(&paths).into_iter().map(|l| l.0).collect();
    let kept: Vec<&PhotoQuality> = with_face.iter().map(|w| w.1).collect();
    let vectors: Vec<f32> = kept.iter().flat_map(|r| r.descriptor).collect();
    let set = LabelledSet {
        vectors: &vectors,
        dim: DESCRIPTOR_DIM,
        labels: &labels,
    };
    let c = calibration::calibrate(
        &set,
        Metric::Euclidean,
        &[1e-3],
        "",
        FaceSelection::NearestCentre,
        "",
        &|_| {},
    )?;
    let threshold = c.table.rows[0].threshold;
    let impostor_pairs = c.table.rows[0].impostor_comparisons;
    // genuine pairs: (pair unified scalar, pair sharpness, distance), pair quality = the min
    let mut genuine: Vec<(f32, f32, f32)> = Vec::new();
    let mut by_label: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    for members in by_label.values() {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                let (a, b) = (kept[i], kept[j]);
                genuine.push((
                    a.unified_scalar.min(b.unified_scalar),
                    a.sharpness.min(b.sharpness),
                    euclidean_distance(&a.descriptor, &b.descriptor),
                ));
            }
        }
    }
    let fractions: Vec<f64> = (0..=100).map(|i| f64::from(i) * 0.01).collect();
    let by = |key: fn(&(f32, f32, f32)) -> f32| {
        edc_by(
            genuine.iter().map(|g| (key(g), g.2)).collect(),
            threshold,
            &fractions,
        )
    };
    let unified = by(|g| g.0);
    let sharpness = by(|g| g.1);
    let distances: Vec<f32> = genuine.iter().map(|g| g.2).collect();
    let random = random_edc(
        &distances,
        threshold,
        &fractions,
        200,
        0x853c_49e6_748f_ea9b,
    );
    let sampled: Vec<(f32, bool)> = rows.iter().flatten().filter_map(|r| r.liveness).collect();
    let col = |f: fn(&PhotoQuality) -> f32| quantiles(kept.iter().map(|r| f(r)).collect());
    let distribution = BTreeMap::from([
        ("unified_raw", col(|r| r.unified)),
        ("unified_scalar", col(|r| r.unified_scalar)),
        ("sharpness", col(|r| r.sharpness)),
        ("inter_eye_distance", col(|r| r.eye_distance)),
        ("yaw", col(|r| r.yaw)),
    ]);
    Ok(QualityEval {
        photos: images.len(),
        with_face: kept.len(),
        genuine_pairs: genuine.len(),
        impostor_pairs,
        threshold,
        fractions,
        unified,
        sharpness,
        random,
        liveness_sample: sampled.len(),
        liveness_live: sampled.iter().filter(|s| s.1).count(),
        distribution,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl QualityEval {
    /// Partial area under each EDC up to 20 % discarded: (unified, sharpness, random).
    pub fn pauc_0_20(&self) -> (f64, f64, f64) {
        let p = |c: &[f64]| partial_area(&self.fractions, c, 0.2);
        (p(&self.unified), p(&self.sharpness), p(&self.random))
    }

    /// The report as the JSON object `uniface eval quality --json` prints.
    pub fn to_json(&self) -> Value {
        let (pu, ps, pr) = self.pauc_0_20();
        let d = &self.distribution;
        json!({
            "photos": self.photos, "with_face": self.with_face,
            "genuine_pairs": self.genuine_pairs, "impostor_pairs": self.impostor_pairs,
            "threshold_fmr_1e-3": self.threshold, "fnmr_no_discard": self.unified[0],
            "pauc_0_20": {"unified": pu, "sharpness": ps, "random": pr},
            "fnmr_at_10pct_discard": {
                "unified": self.unified[10], "sharpness": self.sharpness[10],
                "random": self.random[10],
            },
            "liveness_sample": self.liveness_sample, "liveness_live": self.liveness_live,
            "liveness_live_fraction":
                self.liveness_live as f64 / self.liveness_sample.max(1) as f64,
            "lfw_distribution": {
                "quantiles": QUANTILE_LEVELS,
                "unified_raw": d["unified_raw"], "unified_scalar": d["unified_scalar"],
                "sharpness": d["sharpness"], "inter_eye_distance": d["inter_eye_distance"],
                "yaw": d["yaw"],
            },
            "seconds": self.seconds,
        })
    }

    /// The EDCs as CSV at `path` and as a PNG chart (up to 20 % discarded) beside it.
    pub fn write_edc(&self, path: &Path) -> Result<()> {
        let mut csv = String::from("discard_fraction,fnmr_unified,fnmr_sharpness,fnmr_random\n");
        for (i, f) in self.fractions.iter().enumerate() {
            csv.push_str(&format!(
                "{f},{},{},{}\n",
                self.unified[i], self.sharpness[i], self.random[i]
            ));
        }
        std::fs::write(path, csv).map_err(|e| Error::io(path, e))?;
        let upto = self
            .fractions
            .iter()
            .position(|&f| f > 0.2 + 1e-9)
            .unwrap_or(self.fractions.len());
        let series = |name: &str, c: &[f64]| {
            let pts = self.fractions[..upto].iter().zip(c).map(|(&f, &v)| (f, v));
            (name.to_owned(), pts.collect::<Vec<_>>())
        };
        let top = self
            .unified
            .iter()
            .chain(&self.random)
            .chain(&self.sharpness)
            .take(upto * 3)
            .fold(0f64, |m, &v| m.max(v));
        plot::chart(
            &path.with_extension("png"),
            "EDC - FNMR AT FMR 1E-3 (LFW)",
            plot::Axis {
                min: 0.0,
                max: 0.2,
                log: false,
                label: "DISCARDED FRACTION",
            },
            plot::Axis {
                min: 0.0,
                max: (top * 1.1).max(0.01),
                log: false,
                label: "FNMR",
            },
            &[
                series("UNIFIED", &self.unified),
                series("SHARPNESS", &self.sharpness),
                series("RANDOM", &self.random),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_rows_round_trip() {
        let mut d = [0f32; 128];
        d[3] = 0.25;
        let r = PhotoQuality {
            descriptor: d,
            unified: 0.5,
            unified_scalar: 40.0,
            sharpness: 120.5,
            eye_distance: 33.0,
            yaw: -4.5,
            liveness: Some((0.75, true)),
        };
        for row in [Some(r), None] {
            let line = row_line("a/b.jpg", &row);
            let f: Vec<&str> = line.trim_end().split('\t').collect();
            assert_eq!(f[0], "a/b.jpg");
            assert_eq!(parse_row(&f[1..]), Some(row));
        }
        assert_eq!(parse_row(&["1", "2"]), None);
    }
}
