//! `uniface gallery`: a persistent 1:N gallery on disk (`uniface-index`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use uniface::core::template::{ModelFingerprint, Template};
use uniface::index::{Durability, Gallery, GalleryOptions, HnswParams, OpenOptions, OpenSet};
use uniface::{Error, FaceAnalyzer};

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
    /// Remove a subject (erased from disk at the next checkpoint) or one template.
    Remove {
        #[arg(long, conflicts_with = "template")]
        subject: Option<String>,
        #[arg(long)]
        template: Option<u64>,
    },
    /// Counts, graph parameters and templates waiting for the graph.
    Stats,
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

fn index_error(e: uniface::index::Error) -> Error {
    Error::InvalidArgument {
        name: "gallery",
        message: e.to_string(),
    }
}

/// How the gallery commands open the gallery.
#[derive(Debug, Clone, Copy, Default)]
pub struct Access {
    /// Wait this long for another writer instead of failing at once.
    pub wait_lock: Option<Duration>,
}

/// Open for writing (the writer's lock) or reading (no lock, nothing changed on disk); what
/// opening recovered is printed on stderr.
fn open_as(dir: &Path, access: Access, read_only: bool, salvage: bool) -> uniface::Result<Gallery> {
    let options = OpenOptions {
        durability: Durability::Group,
        read_only,
        salvage,
        lock_timeout: access.wait_lock,
        ..OpenOptions::default()
    };
    let (g, report) =
        Gallery::open_with_options(dir, &ModelFingerprint::dlib_resnet_v1(), &options)
            .map_err(index_error)?;
    for m in report.messages() {
        eprintln!("recovery: {m}");
    }
    Ok(g)
}

fn open(dir: &Path, access: Access) -> uniface::Result<Gallery> {
    open_as(dir, access, false, false)
}

fn open_read_only(dir: &Path, access: Access) -> uniface::Result<Gallery> {
    open_as(dir, access, true, false)
}

fn largest(analyzer: &FaceAnalyzer, path: &Path) -> uniface::Result<Template> {
    let img = uniface::core::image::load_rgb(path)?;
    let face = analyzer
        .analyze(&img)?
        .into_iter()
        .max_by_key(|f| f.bbox.rect().area())
        .ok_or_else(|| Error::NoFace {
            image: path.display().to_string(),
        })?;
    Template::new(ModelFingerprint::dlib_resnet_v1(), &face.embedding)
}

pub fn run(
    dir: &Path,
    action: GalleryAction,
    json_out: bool,
    access: Access,
) -> uniface::Result<()> {
    match action {
        GalleryAction::Create { shards, hnsw } => {
            Gallery::create(
                dir,
                &GalleryOptions {
                    shards,
                    hnsw: hnsw.apply(HnswParams::default())?,
                    ..Default::default()
                },
            )
            .map_err(index_error)?;
            println!("created {} with {shards} shard(s)", dir.display());
        }
        GalleryAction::Rebuild { hnsw } => {
            let g = open(dir, access)?;
            let params = hnsw.apply(g.manifest().hnsw)?;
            let start = std::time::Instant::now();
            let n = g.rebuild(params).map_err(index_error)?;
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
            let g = open(dir, access)?;
            let analyzer = FaceAnalyzer::from_env()?;
            let work: Vec<(String, PathBuf)> = match (from_dir, subject) {
                (Some(root), _) => crate::corpus::scan_identities(&root)?
                    .into_iter()
                    .flat_map(|(s, ps)| ps.into_iter().map(move |p| (s.clone(), p)))
                    .collect(),
                (None, Some(s)) => images.into_iter().map(|p| (s.clone(), p)).collect(),
                (None, None) => {
                    return Err(Error::InvalidArgument {
                        name: "enroll",
                        message: "give SUBJECT IMAGE... or --from-dir DIR".into(),
                    })
                }
            };
            let total = work.len();
            let bar = crate::corpus::progress(total, "enrolling");
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
                    match largest(&analyzer, p).and_then(|t| g.enroll(s, &t).map_err(index_error)) {
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
            g.index_pending(usize::MAX).map_err(index_error)?;
            g.save_graphs().map_err(index_error)?;
            g.flush().map_err(index_error)?;
            crate::corpus::failures(
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
            let g = open_read_only(dir, access)?;
            let t = largest(&FaceAnalyzer::from_env()?, &image)?;
            let rule = fpir.map_or(OpenSet::Fmr(fmr), OpenSet::Fpir);
            let r = g.identify(&t, k, rule).map_err(index_error)?;
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
            let g = open_read_only(dir, access)?;
            let t = largest(&FaceAnalyzer::from_env()?, &image)?;
            match g.verify(&subject, &t, fmr).map_err(index_error)? {
                Some(d) if json_out => println!(
                    "{}",
                    json!({"subject": subject, "distance": d.distance, "similarity": d.similarity,
                        "threshold": d.threshold, "fmr": d.target_fmr, "match": d.is_match})
                ),
                Some(d) => println!(
                    "{}: distance {:.4}, threshold {:.4}",
                    if d.is_match { "MATCH" } else { "NO MATCH" },
                    d.distance,
                    d.threshold
                ),
                None => {
                    return Err(Error::InvalidArgument {
                        name: "subject",
                        message: format!("{subject} is not enrolled"),
                    })
                }
            }
        }
        GalleryAction::Remove { subject, template } => {
            let g = open(dir, access)?;
            let n = match (subject, template) {
                (Some(s), _) => g.remove_subject(&s).map_err(index_error)?,
                (None, Some(t)) => usize::from(g.remove_template(t).map_err(index_error)?),
                (None, None) => {
                    return Err(Error::InvalidArgument {
                        name: "remove",
                        message: "give --subject or --template".into(),
                    })
                }
            };
            g.flush().map_err(index_error)?;
            println!("removed {n} template(s)");
        }
        GalleryAction::Stats => {
            let g = open_read_only(dir, access)?;
            let m = g.manifest();
            let (subjects, templates) = (g.list().len(), g.len());
            if json_out {
                println!(
                    "{}",
                    json!({"shards": m.shards, "subjects": subjects, "templates": templates,
                        "pending": g.pending(), "hnsw": m.hnsw, "element": m.element,
                        "model_id": m.model_id})
                );
            } else {
                println!(
                    "{} shard(s), {subjects} subjects, {templates} templates ({} waiting for the graph)",
                    m.shards,
                    g.pending()
                );
                println!("model {}; graph {:?}", m.model_id, m.hnsw);
            }
        }
        GalleryAction::Check => {
            let r = uniface::index::check(dir).map_err(index_error)?;
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
                return Err(Error::InvalidArgument {
                    name: "gallery",
                    message: format!("{} problem(s)", r.problems.len()),
                });
            }
        }
        GalleryAction::Checkpoint => {
            open(dir, access)?.checkpoint().map_err(index_error)?;
            println!("checkpoint written");
        }
        GalleryAction::Repair => {
            let g = open_as(dir, access, false, true)?;
            g.checkpoint().map_err(index_error)?;
            let r = g.check().map_err(index_error)?;
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
