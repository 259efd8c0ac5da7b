//! `uniface gallery`: a persistent 1:N gallery on disk (`uniface-index`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use std::sync::Arc;
use uniface::core::crypto::{KeyFile, KeyProvider};
use uniface::core::template::{ModelFingerprint, Template};
use uniface::core::Error;
use uniface::index::{Durability, Gallery, GalleryOptions, HnswParams, OpenOptions, OpenSet};
use uniface::FaceAnalyzer;

/// Graph parameters; what is not given keeps its current (or default) value.
#[derive(Args, Debug, Clone, Default)]
pub struct HnswArgs {
    /// Graph degree ("M").
    #[arg(long)]
    connectivity: Option<usize>,
    /// Candidate list while inserting ("ef_construction").
    #[arg(long)]
    expansion_add: Option<usize>,
    /// Candidate list while searching ("ef").
    #[arg(long)]
    expansion_search: Option<usize>,
    /// How the graph stores vectors: i8, f16 or f32 (candidates are re-scored in f32).
    #[arg(long)]
    graph: Option<String>,
}

impl HnswArgs {
    fn apply(&self, base: HnswParams) -> uniface::Result<HnswParams> {
        let graph = match self.graph.as_deref() {
            None => base.graph,
            Some(name) => {
                uniface::ElementType::from_name(name).ok_or_else(|| Error::InvalidArgument {
                    name: "graph",
                    message: format!("{name:?} is not one of i8, f16, f32"),
                })?
            }
        };
        Ok(HnswParams {
            connectivity: self.connectivity.unwrap_or(base.connectivity),
            expansion_add: self.expansion_add.unwrap_or(base.expansion_add),
            expansion_search: self.expansion_search.unwrap_or(base.expansion_search),
            graph,
            ..base
        })
    }
}

#[derive(Subcommand)]
pub enum GalleryAction {
    /// Create an empty gallery.
    Create {
        #[arg(long, default_value_t = 1)]
        shards: usize,
        #[command(flatten)]
        hnsw: HnswArgs,
        /// Encrypt the gallery at rest under the key of --key-file (templates, metadata and
        /// graphs sealed; per-subject keys, destroyed when a subject is removed).
        #[arg(long)]
        encrypt: bool,
    },
    /// Re-wrap an encrypted gallery's keys under a new key-encryption key (no template is
    /// written again); from then on only the new key opens it.
    RotateKey {
        /// The new key (made by `uniface keys new`).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Build the search graphs again from the stored templates with new parameters.
    Rebuild {
        #[command(flatten)]
        hnsw: HnswArgs,
    },
    /// Enroll the largest face of each photo for SUBJECT, or a folder per subject.
    Enroll {
        /// A folder holding one sub-folder of photos per subject.
        #[arg(long, conflicts_with_all = ["subject", "images"])]
        from_dir: Option<PathBuf>,
        subject: Option<String>,
        images: Vec<PathBuf>,
    },
    /// Who is in this photo? Ranked subjects and the known/unknown decision.
    Identify {
        image: PathBuf,
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Target false-match rate per comparison.
        #[arg(long, default_value_t = 1e-4)]
        fmr: f64,
        /// Target false-positive identification rate instead (converted for the gallery's
        /// size).
        #[arg(long)]
        fpir: Option<f64>,
    },
    /// Is this photo SUBJECT?
    Verify {
        subject: String,
        image: PathBuf,
        #[arg(long, default_value_t = 1e-4)]
        fmr: f64,
    },
    /// Remove a subject (erased from disk at the next checkpoint; at once, by destroying its
    /// key, in an encrypted gallery) or one template.
    Remove {
        #[arg(long, conflicts_with = "template")]
        subject: Option<String>,
        #[arg(long)]
        template: Option<u64>,
    },
    /// Counts, graph parameters and templates waiting for the graph.
    Stats,
    /// Possible duplicate identities: pairs of different subjects whose templates match at
    /// --fmr per comparison (one person enrolled under two names), closest first.
    ///
    /// Every template is searched against the gallery; with n templates there are about
    /// n²/2 comparisons, so keep --fmr small (at 1e-4, a gallery of 10,000 strangers gives
    /// about 5,000 false pairs; at 1e-6, about 50).
    Duplicates {
        #[arg(long, default_value_t = 1e-5)]
        fmr: f64,
    },
    /// Verify every file from disk (checksums, sequence numbers, the state they add up to)
    /// without opening the gallery; exits non-zero on any problem.
    Check,
    /// Fold the logs into snapshots.
    Checkpoint,
    /// Open a shard whose log is damaged before valid records by cutting it at the damage
    /// (the records after it are lost: they are kept beside the log and listed). Take a copy of
    /// the gallery first.
    Repair,
}

/// How the gallery commands open the gallery.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Wait this long for another writer instead of failing at once.
    pub wait_lock: Option<Duration>,
    /// An encrypted gallery's key-encryption key.
    pub key: Option<KeyFile>,
    /// The key-encryption key before an interrupted rotation.
    pub previous_key: Option<KeyFile>,
}

impl Access {
    fn key(&self) -> Option<Arc<dyn KeyProvider>> {
        provider(&self.key)
    }
}

fn provider(file: &Option<KeyFile>) -> Option<Arc<dyn KeyProvider>> {
    file.clone().map(|k| Arc::new(k) as Arc<dyn KeyProvider>)
}

/// Open for writing (the writer's lock) or reading (no lock, nothing changed on disk); what
/// opening recovered is printed on stderr.
fn open_as(
    dir: &Path,
    access: &Access,
    read_only: bool,
    salvage: bool,
) -> uniface::Result<Gallery> {
    let options = OpenOptions {
        durability: Durability::Group,
        read_only,
        salvage,
        lock_timeout: access.wait_lock,
        key: access.key(),
        previous_key: provider(&access.previous_key),
        ..OpenOptions::default()
    };
    let (g, report) =
        Gallery::open_with_options(dir, &ModelFingerprint::dlib_resnet_v1(), &options)?;
    for m in report.messages() {
        eprintln!("recovery: {m}");
    }
    Ok(g)
}

fn open(dir: &Path, access: &Access) -> uniface::Result<Gallery> {
    open_as(dir, access, false, false)
}

fn open_read_only(dir: &Path, access: &Access) -> uniface::Result<Gallery> {
    open_as(dir, access, true, false)
}

/// The template of the photo's face that the analyzer's selection picks.
fn chosen(analyzer: &FaceAnalyzer, path: &Path) -> uniface::Result<Template> {
    let img = uniface::core::image::load_rgb(path)?;
    let (face, _) = analyzer
        .analyze_selected(&img)?
        .ok_or_else(|| Error::NoFace {
            image: path.display().to_string(),
        })?;
    Ok(Template::new(
        ModelFingerprint::dlib_resnet_v1(),
        &face.embedding,
    )?)
}

pub fn run(
    dir: &Path,
    action: GalleryAction,
    json_out: bool,
    access: Access,
) -> uniface::Result<()> {
    match action {
        GalleryAction::Create {
            shards,
            hnsw,
            encrypt,
        } => {
            if encrypt != access.key.is_some() {
                return Err(uniface::Error::invalid(
                    "create",
                    "an encrypted gallery is made with both --encrypt and --key-file FILE (make the key with `uniface keys new --out FILE`)",
                ));
            }
            let g = Gallery::create(
                dir,
                &GalleryOptions {
                    shards,
                    hnsw: hnsw.apply(HnswParams::default())?,
                    encryption: access.key(),
                    ..Default::default()
                },
            )?;
            match g.key_id() {
                Some(id) => println!(
                    "created {} with {shards} shard(s), encrypted under key {id}",
                    dir.display()
                ),
                None => println!("created {} with {shards} shard(s)", dir.display()),
            }
        }
        GalleryAction::RotateKey { new_key_file } => {
            let g = open(dir, &access)?;
            g.rotate_kek(&KeyFile::new(&new_key_file))?;
            println!(
                "the keys of {} are now wrapped under key {} ({}); the old key no longer opens it",
                dir.display(),
                g.key_id().map(|k| k.to_string()).unwrap_or_default(),
                new_key_file.display()
            );
        }
        GalleryAction::Rebuild { hnsw } => {
            let g = open(dir, &access)?;
            let params = hnsw.apply(g.manifest().hnsw)?;
            let start = std::time::Instant::now();
            let n = g.rebuild(params)?;
            let s = start.elapsed().as_secs_f64();
            if json_out {
                println!("{}", json!({"indexed": n, "seconds": s, "hnsw": params}));
            } else {
                println!("rebuilt the graphs of {n} templates in {s:.1} s: {params:?}");
            }
        }
        GalleryAction::Enroll {
            from_dir,
            subject,
            images,
        } => {
            let g = open(dir, &access)?;
            let analyzer = crate::analyzer()?;
            let work: Vec<(String, PathBuf)> = match (from_dir, subject) {
                (Some(root), _) => uniface::eval::corpus::scan_identities(&root)?
                    .into_iter()
                    .flat_map(|(s, ps)| ps.into_iter().map(move |p| (s.clone(), p)))
                    .collect(),
                (None, Some(s)) => images.into_iter().map(|p| (s.clone(), p)).collect(),
                (None, None) => {
                    return Err(uniface::Error::invalid(
                        "enroll",
                        "give SUBJECT IMAGE... or --from-dir DIR",
                    ))
                }
            };
            let total = work.len();
            let bar = crate::eval::bar(total, "enrolling");
            // each enrollment is printed as soon as it is acknowledged (durable), so that the
            // output of an interrupted run says exactly what got in
            let failed = std::sync::atomic::AtomicUsize::new(0);
            // (images in flight bounded by memory, not by the core count)
            let cost = |(_, p): &(String, PathBuf)| analyzer.working_set_of_file(p);
            uniface::core::pipeline::par_map_bounded(
                &work,
                analyzer.batch_memory,
                cost,
                |(s, p)| {
                    match chosen(&analyzer, p).and_then(|t| Ok(g.enroll(s, &t)?)) {
                        Ok(id) if json_out => bar.suspend(|| {
                            println!("{}", json!({"subject": s, "image": p, "template_id": id}))
                        }),
                        Ok(id) => {
                            bar.suspend(|| println!("{s}: template {id} from {}", p.display()))
                        }
                        Err(e) => {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            bar.suspend(|| eprintln!("{}: {e}", p.display()));
                        }
                    }
                    bar.inc(1);
                },
            );
            bar.finish_and_clear();
            // move the new templates into the search graphs, save them (a reopen then loads
            // them instead of indexing again) and make everything durable
            g.index_pending(usize::MAX)?;
            g.save_graphs()?;
            g.flush()?;
            crate::failures(
                failed.load(std::sync::atomic::Ordering::Relaxed),
                total,
                "enrolled",
            )?;
        }
        GalleryAction::Identify {
            image,
            k,
            fmr,
            fpir,
        } => {
            let g = open_read_only(dir, &access)?;
            let t = chosen(&crate::analyzer()?, &image)?;
            let rule = fpir.map_or(OpenSet::Fmr(fmr), OpenSet::Fpir);
            let r = g.identify(&t, k, rule)?;
            if json_out {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                match &r.known {
                    Some(s) => println!("known: {s}"),
                    None => println!("unknown"),
                }
                for c in &r.candidates {
                    println!(
                        "  {:<30} distance {:.4} similarity {:.3}",
                        c.subject, c.distance, c.similarity
                    );
                }
                match r.fpir {
                    Some(f) => println!(
                        "threshold {:.4} for FPIR {f:.0e} (FMR {:.2e} per comparison)",
                        r.threshold, r.fmr
                    ),
                    None => println!("threshold {:.4} for FMR {:.0e}", r.threshold, r.fmr),
                }
            }
        }
        GalleryAction::Verify {
            subject,
            image,
            fmr,
        } => {
            let g = open_read_only(dir, &access)?;
            let t = chosen(&crate::analyzer()?, &image)?;
            match g.verify(&subject, &t, fmr)? {
                Some(d) if json_out => println!(
                    "{}",
                    json!({"subject": subject, "distance": d.distance, "similarity": d.similarity,
                        "threshold": d.threshold, "fmr": d.target_fmr, "match": d.is_match,
                        "comparisons": d.comparisons})
                ),
                Some(d) => println!(
                    "{}: distance {:.4}, threshold {:.4} (best of {} templates, FMR {:.0e} for the subject)",
                    if d.is_match { "MATCH" } else { "NO MATCH" },
                    d.distance,
                    d.threshold,
                    d.comparisons,
                    d.target_fmr
                ),
                None => {
                    return Err(uniface::Error::invalid(
                        "subject",
                        format!("{subject} is not enrolled"),
                    ))
                }
            }
        }
        GalleryAction::Remove { subject, template } => {
            let g = open(dir, &access)?;
            let n = match (subject, template) {
                (Some(s), _) => g.remove_subject(&s)?,
                (None, Some(t)) => usize::from(g.remove_template(t)?),
                (None, None) => {
                    return Err(uniface::Error::invalid(
                        "remove",
                        "give --subject or --template",
                    ))
                }
            };
            g.flush()?;
            println!("removed {n} template(s)");
        }
        GalleryAction::Duplicates { fmr } => {
            let g = open_read_only(dir, &access)?;
            let progress = crate::eval::bar(g.len(), "searching");
            let found = g.duplicates(fmr, &|k| progress.inc(k))?;
            progress.finish_and_clear();
            if json_out {
                for d in &found {
                    println!("{}", serde_json::to_string(d).unwrap_or_default());
                }
            } else {
                let threshold = uniface::core::calibration::threshold_for_fmr(fmr)?;
                println!(
                    "{} possible duplicate pairs among {} subjects (distance under {threshold:.4}, FMR {fmr:.0e} per comparison)",
                    found.len(),
                    g.list().len()
                );
                for d in &found {
                    println!(
                        "  {:<30} {:<30} distance {:.4} (templates {} and {})",
                        d.subjects[0], d.subjects[1], d.distance, d.templates[0], d.templates[1]
                    );
                }
            }
        }
        GalleryAction::Stats => {
            let g = open_read_only(dir, &access)?;
            let m = g.manifest();
            let (subjects, templates) = (g.list().len(), g.len());
            if json_out {
                println!(
                    "{}",
                    json!({"shards": m.shards, "subjects": subjects, "templates": templates,
                        "pending": g.pending(), "hnsw": m.hnsw, "element": m.element,
                        "model_id": m.model_id, "encryption": m.encryption,
                        "key_id": g.key_id().map(|k| k.to_string())})
                );
            } else {
                println!(
                    "{} shard(s), {subjects} subjects, {templates} templates ({} waiting for the graph)",
                    m.shards,
                    g.pending()
                );
                println!("model {}; graph {:?}", m.model_id, m.hnsw);
                if let Some(id) = g.key_id() {
                    println!(
                        "encrypted at rest ({}) under key {id}",
                        m.encryption.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        GalleryAction::Check => {
            let r = match &access.key {
                Some(k) => uniface::index::check_encrypted(dir, k)?,
                None => uniface::index::check(dir)?,
            };
            if json_out {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                println!(
                    "{} shard(s), {} subjects, {} templates: {}",
                    r.shards,
                    r.subjects,
                    r.templates,
                    if r.is_clean() {
                        "consistent"
                    } else {
                        "PROBLEMS"
                    }
                );
                for p in &r.problems {
                    println!("  {p}");
                }
                for n in &r.notes {
                    println!("  note: {n}");
                }
            }
            if !r.is_clean() {
                return Err(uniface::Error::invalid(
                    "gallery",
                    format!("{} problem(s)", r.problems.len()),
                ));
            }
        }
        GalleryAction::Checkpoint => {
            open(dir, &access)?.checkpoint()?;
            println!("checkpoint written");
        }
        GalleryAction::Repair => {
            let g = open_as(dir, &access, false, true)?;
            g.checkpoint()?;
            let r = g.check()?;
            println!(
                "repaired: {} subjects, {} templates; {}",
                r.subjects,
                r.templates,
                if r.is_clean() {
                    "consistent"
                } else {
                    "PROBLEMS remain"
                }
            );
        }
    }
    Ok(())
}
