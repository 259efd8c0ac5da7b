//! The deployment's figures (`uniface-services bench ...`, driven by `bench.sh`): enrollments
//! per second and identification latency through the gateway at several numbers of concurrent
//! clients, the same work through the library in one process (the gateway's overhead as a
//! ratio), and a replica's bootstrap from PostgreSQL.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use uniface::core::crypto::Key;
use uniface::index::{Gallery, GalleryOptions};
use uniface::{FaceAnalyzer, ModelFingerprint, ModelStore, Template};

use crate::replica::{Replica, ReplicaConfig};
use crate::{db, Error, Result};

/// The first photo of each LFW person, in name order, at most `n`.
pub fn lfw_photos(lfw: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let io = |e: std::io::Error| Error::Uniface(uniface::Error::io(lfw, e));
    let mut people: Vec<PathBuf> = std::fs::read_dir(lfw)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    people.sort();
    let mut out = Vec::new();
    for p in people {
        let mut imgs: Vec<PathBuf> = std::fs::read_dir(&p)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().is_some_and(|x| x == "jpg"))
            .collect();
        imgs.sort();
        if let Some(first) = imgs.into_iter().next() {
            out.push(first);
        }
        if out.len() == n {
            break;
        }
    }
    Ok(out)
}

/// Throughput and latency of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub what: String,
    pub clients: usize,
    pub requests: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests refused (503: the pool was full) and retried.
    pub retried: usize,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

/// Run `job(i)` for `i` in `0..n` on `clients` threads; `job` returns how many times it was
/// refused before it succeeded.
fn drive(
    what: &str,
    clients: usize,
    n: usize,
    job: impl Fn(usize) -> Result<usize> + Sync,
) -> Result<Run> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Result<(Vec<Duration>, usize)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let (mut lat, mut retried) = (Vec::new(), 0);
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            return Ok((lat, retried));
                        }
                        let t = Instant::now();
                        retried += job(i)?;
                        lat.push(t.elapsed());
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Invalid("a client panicked".into())))
            })
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (mut all, mut retried) = (Vec::new(), 0);
    for r in results {
        let (lat, re) = r?;
        all.extend(lat);
        retried += re;
    }
    all.sort();
    Ok(Run {
        what: what.to_owned(),
        clients,
        requests: n,
        per_second: n as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        retried,
    })
}

/// A request through the gateway, retried while it answers 503 (the pool is full); how many
/// retries it took.
fn post(
    agent: &ureq::Agent,
    url: &str,
    key: &str,
    body: &[u8],
    content_type: &str,
) -> Result<usize> {
    let mut retried = 0;
    loop {
        let r = agent
            .post(url)
            .header("Authorization", format!("Bearer {key}"))
            .header("Content-Type", content_type)
            .send(body)
            .map_err(|e| Error::Invalid(format!("{url}: {e}")))?;
        match r.status().as_u16() {
            200 | 201 => return Ok(retried),
            503 | 429 => {
                retried += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            s => return Err(Error::Invalid(format!("{url}: status {s}"))),
        }
    }
}

/// What a bench run sends: photos, or templates (the service's own cost, without the CNN).
#[derive(Debug, Clone)]
pub enum Payload {
    Photos(Vec<PathBuf>),
    /// This many synthetic templates.
    Templates(usize),
}

impl Payload {
    /// The request bodies and their content type.
    pub(crate) fn bodies(&self) -> Result<(Vec<Vec<u8>>, &'static str)> {
        match self {
            Payload::Photos(photos) => Ok((
                photos
                    .iter()
                    .map(|p| std::fs::read(p).map_err(|e| Error::Uniface(uniface::Error::io(p, e))))
                    .collect::<Result<_>>()?,
                "image/jpeg",
            )),
            Payload::Templates(n) => Ok((
                synthetic(*n)?.iter().map(Template::to_bytes).collect(),
                crate::http::TEMPLATE_TYPE,
            )),
        }
    }
}

/// `n` synthetic templates of the deployment's model.
fn synthetic(n: usize) -> Result<Vec<Template>> {
    uniface::bench::unit_vectors(n, uniface::core::embed::DESCRIPTOR_DIM)
        .map(|v| Ok(Template::new(ModelFingerprint::dlib_resnet_v1(), &v)?))
        .collect()
}

/// Enrollments, then identifications, through the gateway at `url`, for each client count.
/// Subjects are named `bench-<clients>-<i>` (`bench-t<clients>-<i>` for templates).
pub fn http(url: &str, key: &str, payload: &Payload, clients: &[usize]) -> Result<Vec<Run>> {
    let (bytes, content_type) = payload.bodies()?;
    let tag = match payload {
        Payload::Photos(_) => "",
        Payload::Templates(_) => "t",
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(64)
        .build()
        .into();
    let mut runs = Vec::new();
    for &c in clients {
        runs.push(drive("enroll", c, bytes.len(), |i| {
            post(
                &agent,
                &format!("{url}/v1/subjects/bench-{tag}{c}-{i}/faces?policy=none"),
                key,
                &bytes[i],
                content_type,
            )
        })?);
        runs.push(drive("identify", c, bytes.len(), |i| {
            post(
                &agent,
                &format!("{url}/v1/identify?face=largest&k=5"),
                key,
                &bytes[i],
                content_type,
            )
        })?);
    }
    Ok(runs)
}

/// The same work through the library in this process: the analyzer and a gallery (durable
/// enrollments, as the replica's), `clients` threads.
pub fn library(payload: &Payload, clients: &[usize]) -> Result<Vec<Run>> {
    let (bytes, _) = payload.bodies()?;
    let analyzer = FaceAnalyzer::new(&ModelStore::from_env()?.ensure()?)?;
    let photos = matches!(payload, Payload::Photos(_));
    let template = |b: &[u8]| -> Result<Option<Template>> {
        if !photos {
            return Ok(Some(Template::from_bytes(b)?));
        }
        let img = uniface::core::image::decode_rgb(b)?;
        Ok(match analyzer.analyze_selected(&img)? {
            Some((f, _)) => Some(Template::new(
                ModelFingerprint::dlib_resnet_v1(),
                &f.embedding,
            )?),
            None => None,
        })
    };
    let dir = tempfile::tempdir().map_err(|e| Error::Invalid(e.to_string()))?;
    let g = Gallery::create(dir.path(), &GalleryOptions::default())?;
    let mut runs = Vec::new();
    for &c in clients {
        runs.push(drive("enroll", c, bytes.len(), |i| {
            if let Some(t) = template(&bytes[i])? {
                g.enroll(&format!("bench-{c}-{i}"), &t)?;
            }
            Ok(0)
        })?);
        runs.push(drive("identify", c, bytes.len(), |i| {
            if let Some(t) = template(&bytes[i])? {
                g.identify(&t, 5, uniface::index::OpenSet::Fpir(1e-2))?;
            }
            Ok(0)
        })?);
    }
    Ok(runs)
}

/// Write `n` synthetic faces (one per subject `synthetic-<i>`, sealed as enrollment seals
/// them) straight into the tables, in batches; returns the seconds it took.
pub async fn seed(db_url: &str, key: &Key, n: usize) -> Result<f64> {
    let started = Instant::now();
    let mut client = db::connect(db_url).await?;
    db::migrate(&mut client).await?;
    let fp = ModelFingerprint::dlib_resnet_v1();
    let key_id = key.id().to_string();
    let mut vectors = uniface::bench::unit_vectors(n, uniface::core::embed::DESCRIPTOR_DIM);
    let mut done = 0;
    while done < n {
        let m = (n - done).min(5000);
        let ids: Vec<i64> = client
            .query(
                "SELECT nextval('faces_face_id_seq') FROM generate_series(1, $1::bigint)",
                &[&(m as i64)],
            )
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let subjects: Vec<String> = ids.iter().map(|id| format!("synthetic-{id}")).collect();
        let sealed: Vec<Vec<u8>> = ids
            .iter()
            .zip(&subjects)
            .map(|(id, s)| {
                let v = vectors.next().unwrap_or_default();
                let t = Template::new(fp.clone(), &v)?;
                Ok(t.seal(key, &db::face_aad(s, *id))?)
            })
            .collect::<Result<_>>()?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO subjects (subject) SELECT unnest($1::text[])",
            &[&subjects],
        )
        .await?;
        tx.execute(
            "INSERT INTO faces (face_id, subject, sealed, key_id, model_id, weights_sha256, preprocessing)
             SELECT f, s, b, $4, $5, $6, $7 FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS t(f, s, b)",
            &[
                &ids,
                &subjects,
                &sealed,
                &key_id,
                &fp.model_id,
                &fp.to_hex(),
                &i32::from(fp.preprocessing),
            ],
        )
        .await?;
        tx.commit().await?;
        done += m;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A replica bootstrapped into a fresh folder: (seconds until it is ready to consume,
/// templates it holds).
pub async fn bootstrap(config: ReplicaConfig) -> Result<(f64, usize)> {
    let started = Instant::now();
    let replica = Replica::start(config);
    loop {
        let s = replica.status();
        if s.consuming {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            return Err(Error::Invalid(format!(
                "the replica did not bootstrap within an hour: {s:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let held = replica.galleries().map_or(0, |g| g.len());
    Ok((seconds, held))
}

/// Peak resident memory of a process (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
