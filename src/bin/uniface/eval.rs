//! `uniface eval …` and `uniface calibrate`: argument parsing over `uniface::eval`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use uniface::core::liveness::LivenessDetector;
use uniface::eval::{corpus, held_out, lfw, open_set, pairs, quality};
use uniface::{Error, FaceSelection};

/// A progress bar on stderr when it is a terminal (hidden otherwise).
pub fn bar(len: usize, what: &str) -> indicatif::ProgressBar {
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

/// Photos of a labelled set and how their faces are chosen.
#[derive(Args)]
pub struct Photos {
    /// The photo folder (LFW: <root>/<Name>/<Name>_<NNNN>.jpg; calibrate: one folder per
    /// identity).
    #[arg(long)]
    root: PathBuf,
    /// Descriptor cache file: reused when it exists, extended as photos are described.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The face each photo contributes.
    #[arg(long, value_parser = crate::selection, default_value = "nearest_centre")]
    select: FaceSelection,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum EvalTarget {
    /// LFW View 2: 10-fold verification accuracy (threshold chosen on 9 folds, tested on the
    /// 10th), TAR at FAR 1e-2 and 1e-3, EER. The last line is `lfw accuracy: MEAN ± STD`.
    Lfw {
        #[command(flatten)]
        photos: Photos,
        /// The pairs file (default: <root>/pairs.txt).
        #[arg(long)]
        pairs: Option<PathBuf>,
        /// Write the ROC curve (threshold, FAR, TAR) as CSV.
        #[arg(long)]
        roc: Option<PathBuf>,
        /// Write a DET curve over every pair of the photos (f32, f16 and i8 templates) as CSV
        /// here, and as PNG beside it.
        #[arg(long)]
        det: Option<PathBuf>,
    },
    /// Error-versus-discard (ISO/IEC 29794-1) of the unified quality score on LFW, the LFW
    /// distribution of the measures, and liveness on a sample of real faces.
    Quality {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        pairs: Option<PathBuf>,
        /// Quality cache file: reused when it exists, extended as photos are assessed.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Write the EDC as CSV here, and as PNG beside it.
        #[arg(long)]
        edc: Option<PathBuf>,
        /// How many photos (spread over the set) also get a liveness check.
        #[arg(long, default_value_t = 500)]
        liveness_sample: usize,
        #[arg(long)]
        json: bool,
    },
    /// Open-set 1:N identification through an on-disk gallery: rank-1 rate and FNIR at FPIR.
    ///
    /// LIST is tab-separated with the header `role identity path`; roles are `gallery`
    /// (enrolled), `mated` (probe of an enrolled identity) and `nonmated` (probe of someone not
    /// enrolled); paths are relative to ROOT.
    Identification {
        #[command(flatten)]
        photos: Photos,
        #[arg(long)]
        list: PathBuf,
    },
    /// Clustering by identity on a folder of identities (ROOT/<identity>/<photo>, one face per
    /// photo): pairwise and BCubed precision, recall and F and the number of clusters for each
    /// method at each --fmr, and for Chinese Whispers at dlib's distance 0.5.
    Cluster {
        #[command(flatten)]
        photos: Photos,
        /// Target false-match rates of the thresholds (repeatable; default 1e-3 4e-4 1e-4).
        #[arg(long)]
        fmr: Vec<f64>,
        /// Neighbours per face in the graph.
        #[arg(long, default_value_t = 32)]
        neighbours: usize,
        /// Write `path identity label…` per photo as TSV (one label column per row of the
        /// report) for tools/cluster_reference.py.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
    /// Possible duplicate identities (`gallery duplicates`) on a folder of identities where
    /// some people are enrolled twice, under a second name: how many of them are found, and
    /// how many reported pairs are two different people, at each --fmr.
    Duplicates {
        #[command(flatten)]
        photos: Photos,
        /// People (with two or more photos) enrolled under a second name.
        #[arg(long, default_value_t = 20)]
        twins: usize,
        /// False-match rates per comparison (repeatable; default 1e-3 1e-5 1e-6).
        #[arg(long)]
        fmr: Vec<f64>,
    },
    /// Held-out check of calibration: thresholds from the other LFW folds, FMR measured on one.
    Calibration {
        #[command(flatten)]
        photos: Photos,
        #[arg(long)]
        pairs: Option<PathBuf>,
        /// The held-out fold (1-based).
        #[arg(long, default_value_t = 10)]
        fold: usize,
    },
}

/// `uniface calibrate`'s options.
#[derive(Args)]
pub struct Calibrate {
    #[command(flatten)]
    photos: Photos,
    /// Write the table as JSON (loadable with `uniface verify --calibration`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Target false-match rates (repeatable; default 1e-2 1e-3 1e-4 1e-5 1e-6).
    #[arg(long)]
    fmr: Vec<f64>,
    /// A sentence about the data, stored in the table's `method`.
    #[arg(long)]
    note: Option<String>,
}

/// The rates given on the command line, or `default` when none were.
fn or_default(given: Vec<f64>, default: &[f64]) -> Vec<f64> {
    if given.is_empty() {
        default.to_vec()
    } else {
        given
    }
}

fn pairs_path(root: &Path, pairs: Option<PathBuf>) -> PathBuf {
    pairs.unwrap_or_else(|| root.join("pairs.txt"))
}

pub fn eval(target: EvalTarget) -> uniface::Result<()> {
    let analyzer = crate::analyzer()?;
    match target {
        EvalTarget::Lfw {
            photos: p,
            pairs,
            roc,
            det,
        } => {
            let listed = pairs::read_pairs(&p.root, &pairs_path(&p.root, pairs))?;
            let progress = bar(pairs::photos_of(&listed).len(), "describing");
            let options = lfw::LfwOptions {
                cache: p.cache.as_deref(),
                det: det.is_some(),
                selection: p.select,
            };
            let r = lfw::lfw(&analyzer, &p.root, &listed, &options, &|k| progress.inc(k))?;
            progress.finish_and_clear();
            if let Some(path) = roc {
                r.write_roc(&path)?;
            }
            if let Some(path) = det {
                r.write_det(&path)?;
                eprintln!(
                    "DET: {} and {}",
                    path.display(),
                    path.with_extension("png").display()
                );
            }
            if p.json {
                println!("{}", r.to_json());
            } else {
                println!("{r}");
            }
        }
        EvalTarget::Quality {
            root,
            pairs,
            cache,
            edc,
            liveness_sample,
            json,
        } => {
            let liveness = LivenessDetector::from_store(&crate::store()?)?;
            let progress = bar(0, "assessing");
            let options = quality::QualityOptions {
                pairs: pairs.as_deref(),
                cache: cache.as_deref(),
                liveness_sample,
            };
            let r =
                quality::quality_lfw(&analyzer, &liveness, &root, &options, &|k| progress.inc(k))?;
            progress.finish_and_clear();
            if let Some(path) = edc {
                r.write_edc(&path)?;
            }
            let v = r.to_json();
            if json {
                println!("{v}");
            } else {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
        }
        EvalTarget::Identification { photos: p, list } => {
            let entries = open_set::read_list(&list, &p.root)?;
            let progress = bar(entries.len(), "describing");
            let r = uniface::eval::identification(
                &analyzer,
                &entries,
                &p.root,
                p.select,
                p.cache.as_deref(),
                &|k| progress.inc(k),
            )?;
            progress.finish_and_clear();
            if p.json {
                println!("{}", r.to_json());
            } else {
                println!("{r}");
            }
        }
        EvalTarget::Cluster {
            photos: p,
            fmr,
            neighbours,
            labels,
        } => {
            let fmrs = or_default(fmr, &[1e-3, 4e-4, 1e-4]);
            let progress = bar(0, "describing");
            let r = uniface::eval::clustering(
                &analyzer,
                &p.root,
                p.select,
                p.cache.as_deref(),
                &fmrs,
                neighbours,
                &|k| progress.inc(k),
            )?;
            progress.finish_and_clear();
            if let Some(path) = labels {
                std::fs::write(&path, r.labels_tsv()).map_err(|e| Error::io(&path, e))?;
            }
            if p.json {
                println!("{}", serde_json::to_value(&r).unwrap_or_default());
            } else {
                println!("{r}");
            }
        }
        EvalTarget::Duplicates {
            photos: p,
            twins,
            fmr,
        } => {
            let fmrs = or_default(fmr, &[1e-3, 1e-5, 1e-6]);
            let progress = bar(0, "describing");
            let r = uniface::eval::duplicates(
                &analyzer,
                &p.root,
                p.select,
                p.cache.as_deref(),
                twins,
                &fmrs,
                &|k| progress.inc(k),
            )?;
            progress.finish_and_clear();
            if p.json {
                println!("{}", serde_json::to_value(&r).unwrap_or_default());
            } else {
                println!("{r}");
            }
        }
        EvalTarget::Calibration {
            photos: p,
            pairs,
            fold,
        } => {
            let listed = pairs::read_pairs(&p.root, &pairs_path(&p.root, pairs))?;
            let progress = bar(pairs::photos_of(&listed).len(), "describing");
            let r = held_out::held_out_lfw(
                &analyzer,
                &p.root,
                &listed,
                fold,
                p.select,
                p.cache.as_deref(),
                &|k| progress.inc(k),
            )?;
            progress.finish_and_clear();
            if p.json {
                println!("{}", serde_json::to_value(&r).unwrap_or_default());
            } else {
                println!("{r}");
            }
        }
    }
    Ok(())
}

pub fn calibrate(c: Calibrate) -> uniface::Result<()> {
    let start = std::time::Instant::now();
    let analyzer = crate::analyzer()?;
    let options = corpus::CalibrateOptions {
        fmrs: &c.fmr,
        selection: c.photos.select,
        cache: c.photos.cache.as_deref(),
        note: c.note.as_deref(),
    };
    let (described, scored) = (bar(0, "describing"), bar(0, "scoring pairs"));
    let r = corpus::calibrate_folder(
        &analyzer,
        &c.photos.root,
        &options,
        &|k| described.inc(k),
        &|k| scored.inc(k),
    )?;
    described.finish_and_clear();
    scored.finish_and_clear();
    let table = &r.calibration.table;
    if let Some(path) = &c.out {
        std::fs::write(path, table.to_json() + "\n").map_err(|e| Error::io(path, e))?;
    }
    if c.photos.json {
        println!("{}", table.to_json());
        return Ok(());
    }
    println!("{table}");
    for p in &r.skipped {
        println!("  no face: {}", p.display());
    }
    println!("time: {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
