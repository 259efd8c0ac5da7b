//! `uniface-services`: the reference deployment's one binary. `serve --role all` runs every
//! role in one process; `--role gateway,relay` (and so on) runs some. `migrate`, `keys` and
//! `audit` are the operator's commands. See `examples/services/stack.sh` and
//! `docs/DEPLOYMENT.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use uniface::core::crypto::{KeyFile, KeyProvider};
use uniface_services::auth::{self, Authenticator, JwtConfig};
use uniface_services::engine::Engine;
use uniface_services::http::{self, App};
use uniface_services::replica::{Replica, ReplicaConfig};
use uniface_services::upstream::Upstream;
use uniface_services::{db, relay, Error, Result};

#[derive(Parser)]
#[command(
    version,
    about = "UniFace's reference deployment: gateway, enrollment, verification, identification, templates and outbox relay over PostgreSQL and RabbitMQ (examples/services/stack.sh starts everything)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Export traces over OTLP/HTTP to this collector, e.g. http://127.0.0.1:4318 (spans go to
    /// /v1/traces). Off unless given.
    #[cfg(feature = "otlp")]
    #[arg(long, global = true, env = "UNIFACE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[derive(Args)]
struct DbArg {
    /// The database, e.g. postgresql://uniface@127.0.0.1:5432/uniface (`stack.sh up` writes
    /// it to DIR/env as UNIFACE_PG_URL).
    #[arg(long, env = "UNIFACE_PG_URL")]
    db: String,
}

/// The database, the broker and the deployment key.
#[derive(Args)]
struct Servers {
    #[command(flatten)]
    db: DbArg,
    /// The broker, e.g. amqp://uniface:…@127.0.0.1:5672/%2f (UNIFACE_AMQP_URL in DIR/env).
    #[arg(long, env = "UNIFACE_AMQP_URL", hide_env_values = true)]
    amqp: String,
    /// The deployment key (templates and metadata are sealed under it; replicas' galleries
    /// are encrypted under it).
    #[arg(long, env = "UNIFACE_KEY_FILE")]
    key_file: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations not applied yet (safe to run from several processes).
    Migrate {
        #[command(flatten)]
        db: DbArg,
    },
    /// Run roles: gateway (the HTTP API), enrollment, verification, identification (a
    /// gallery replica fed by the event queue), templates, relay (outbox → queue); `all` is
    /// every one.
    Serve(Box<Serve>),
    /// Make an API key (printed once, as JSON; only its argon2 hash is stored).
    KeysCreate {
        #[command(flatten)]
        db: DbArg,
        /// Comma-separated: enroll, verify, identify, manage, admin.
        #[arg(long)]
        scopes: String,
        /// Requests per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Requests allowed at once above the rate.
        #[arg(long, default_value_t = 100)]
        burst: u32,
        #[arg(long, default_value = "")]
        description: String,
        /// The collection (tenant) whose subjects the key sees: ASCII letters, digits, '-', '_',
        /// '.', at most 64; empty, the default collection (whose admin keys administer all).
        #[arg(long, default_value = "")]
        collection: String,
    },
    /// Write a new deployment key file (32 random bytes, mode 600; never overwrites).
    KeyFile { path: PathBuf },
    /// The deployment's figures (see examples/services/bench.sh and docs/DEPLOYMENT.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Compare every identification replica with the database (through the gateway's
    /// /v1/admin/audit); exit status 1 when they drift.
    Audit {
        /// The gateway, e.g. http://127.0.0.1:8080 (UNIFACE_URL in DIR/env).
        #[arg(long, env = "UNIFACE_URL")]
        url: String,
        /// An admin API key (UNIFACE_ADMIN_KEY in DIR/env).
        #[arg(long, env = "UNIFACE_ADMIN_KEY", hide_env_values = true)]
        key: String,
        /// Re-apply what is missing or different, remove what is extra.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Enrollments, then identifications, of LFW photos through a gateway, at each number of
    /// concurrent clients.
    Http {
        #[command(flatten)]
        gateway: Gateway,
        #[command(flatten)]
        work: Work,
    },
    /// The same work through the library in this process.
    Library {
        #[command(flatten)]
        work: Work,
    },
    /// Write synthetic faces into the database (--faces), then bootstrap a new replica from
    /// it and time that.
    Bootstrap {
        #[command(flatten)]
        servers: Servers,
        /// Synthetic faces to add first.
        #[arg(long, default_value_t = 0)]
        faces: usize,
        /// Where the replica goes (must not exist).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Peak memory (VmHWM) of every process stack.sh started in DIR.
    Memory { dir: PathBuf },
    /// Load through a gateway (see `load --help`).
    Load(Box<Load>),
}

/// The gateway a bench talks to.
#[derive(Args)]
struct Gateway {
    #[arg(long, env = "UNIFACE_URL")]
    url: String,
    /// A key with the scopes the work needs (`stack.sh` writes an admin key to DIR/env).
    #[arg(long, env = "UNIFACE_ADMIN_KEY", hide_env_values = true)]
    key: String,
}

/// Load through a gateway: a mix of requests, closed-loop or open-loop, bounded.
#[derive(Args)]
struct Load {
    #[command(flatten)]
    gateway: Gateway,
    #[command(flatten)]
    work: Work,
    /// Proportions of enroll, verify, identify and erase requests.
    #[arg(long, default_value = "enroll=1,identify=3")]
    mix: uniface_services::load::Mix,
    /// Open loop at this many requests per second (instead of --clients' closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: at most this many requests in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Stop after this many seconds (per client count).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Stop after this many requests (per client count).
    #[arg(long, default_value_t = 1000)]
    max_requests: usize,
    /// Subjects enrolled are PREFIX-<clients>-<n>.
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Write the reports (and every answer) here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw throughput and p99 against concurrency as PNG here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct Work {
    /// LFW's folder (`../shared/data/lfw`).
    #[arg(long)]
    lfw: PathBuf,
    /// Photos per run (the first photo of as many people).
    #[arg(long, default_value_t = 100)]
    photos: usize,
    /// Concurrent clients, comma-separated.
    #[arg(long, default_value = "1,4,16", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Send synthetic templates instead of photos (the service's own cost, without the CNN).
    #[arg(long)]
    templates: bool,
}

impl Work {
    fn payload(&self) -> Result<uniface_services::bench::Payload> {
        use uniface_services::bench::{lfw_photos, Payload};
        Ok(match self.templates {
            true => Payload::Templates(self.photos),
            false => Payload::Photos(lfw_photos(&self.lfw, self.photos)?),
        })
    }
}

fn load(l: &Load) -> Result<()> {
    use uniface_services::load::{self, LoadConfig, Pacing};
    let payload = l.work.payload()?;
    let duration = seconds("--duration", l.duration)?;
    let pacings: Vec<Pacing> = match l.rate {
        Some(rate) => vec![Pacing::Open {
            rate,
            in_flight: l.in_flight,
        }],
        None => l
            .work
            .clients
            .iter()
            .map(|&clients| Pacing::Closed { clients })
            .collect(),
    };
    let mut reports = Vec::new();
    let mut all = Vec::new();
    println!("| pacing | kind | requests | per second | p50 ms | p90 ms | p99 ms | p99.9 ms | statuses |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for (n, pacing) in pacings.into_iter().enumerate() {
        let config = LoadConfig {
            url: l.gateway.url.trim_end_matches('/').to_owned(),
            key: l.gateway.key.clone(),
            mix: l.mix.clone(),
            pacing,
            max_requests: l.max_requests,
            duration,
            prefix: format!("{}-{n}-{}", l.prefix, std::process::id()),
        };
        let (outcomes, secs) = load::run(&config, &payload)?;
        let r = load::report(&outcomes, secs, pacing);
        for (kind, s) in &r.kinds {
            println!(
                "| {} | {kind} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:?} |",
                r.pacing,
                s.requests,
                s.per_second,
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.p999_ms,
                s.statuses
            );
        }
        let clients = match pacing {
            Pacing::Closed { clients } => clients,
            Pacing::Open { in_flight, .. } => in_flight,
        };
        reports.push((clients, r));
        all.push(outcomes);
    }
    if let Some(path) = &l.json {
        let v = serde_json::json!({
            "reports": reports.iter().map(|(_, r)| r).collect::<Vec<_>>(),
            "outcomes": all,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap_or_default())
            .map_err(|e| Error::Uniface(uniface::Error::io(path, e)))?;
    }
    if let Some(path) = &l.plot {
        load_chart(path, &reports)?;
    }
    Ok(())
}

/// Throughput and p99 of each kind against the number of clients, on one log scale.
fn load_chart(
    path: &std::path::Path,
    reports: &[(usize, uniface_services::load::Report)],
) -> Result<()> {
    use uniface::core::eval::plot::{chart, Axis};
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for kind in ["enroll", "identify"] {
        let of = |f: &dyn Fn(&uniface_services::load::Stats) -> f64| -> Vec<(f64, f64)> {
            reports
                .iter()
                .filter_map(|(c, r)| r.kinds.get(kind).map(|s| (*c as f64, f(s))))
                .collect()
        };
        let per_second = of(&|s| s.per_second);
        if !per_second.is_empty() {
            series.push((format!("{kind} per s"), per_second));
            series.push((format!("{kind} p99 ms"), of(&|s| s.p99_ms)));
        }
    }
    let max_clients = reports.iter().map(|(c, _)| *c).max().unwrap_or(1).max(2) as f64;
    chart(
        path,
        "load",
        Axis {
            min: 0.0,
            max: max_clients,
            log: false,
            label: "clients",
        },
        Axis {
            min: 0.1,
            max: 100_000.0,
            log: true,
            label: "per s, p99 ms",
        },
        &series,
    )?;
    Ok(())
}

fn print_runs(runs: &[uniface_services::bench::Run]) {
    println!("| work | clients | requests | per second | p50 ms | p99 ms | retried after 503 |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in runs {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            r.what, r.clients, r.requests, r.per_second, r.p50_ms, r.p99_ms, r.retried
        );
    }
}

async fn bench(what: BenchCommand) -> Result<()> {
    use uniface_services::bench;
    match what {
        BenchCommand::Http { gateway, work } => {
            let runs = tokio::task::spawn_blocking(move || {
                let payload = work.payload()?;
                bench::http(
                    gateway.url.trim_end_matches('/'),
                    &gateway.key,
                    &payload,
                    &work.clients,
                )
            })
            .await
            .map_err(|e| Error::Invalid(e.to_string()))??;
            print_runs(&runs);
        }
        BenchCommand::Load(l) => {
            tokio::task::spawn_blocking(move || load(&l))
                .await
                .map_err(|e| Error::Invalid(e.to_string()))??;
        }
        BenchCommand::Library { work } => {
            let runs = tokio::task::spawn_blocking(move || {
                let payload = work.payload()?;
                bench::library(&payload, &work.clients)
            })
            .await
            .map_err(|e| Error::Invalid(e.to_string()))??;
            print_runs(&runs);
        }
        BenchCommand::Bootstrap {
            servers: Servers { db, amqp, key_file },
            faces,
            dir,
        } => {
            let provider: Arc<dyn KeyProvider> = Arc::new(KeyFile::new(&key_file));
            let key = provider.key()?;
            if faces > 0 {
                let s = bench::seed(&db.db, &key, faces).await?;
                println!("wrote {faces} synthetic faces in {s:.1} s");
            }
            let before = bench::peak_rss_mib(std::process::id()).unwrap_or(0.0);
            let name = format!("bench-{}", std::process::id());
            let (seconds, held) = bench::bootstrap(ReplicaConfig {
                dir,
                name: name.clone(),
                key: provider,
                sealing: key,
                shards: 1,
                shard: None,
                db_url: db.db.clone(),
                amqp_url: amqp.clone(),
            })
            .await?;
            let after = bench::peak_rss_mib(std::process::id()).unwrap_or(0.0);
            println!(
                "bootstrap: {held} templates in {seconds:.1} s ({:.0} per second); peak memory {before:.0} MiB before, {after:.0} MiB after",
                held as f64 / seconds
            );
            // the bench replica's queue is not needed any more
            let (_c, channel) = relay::connect(&amqp).await?;
            channel
                .queue_delete(
                    uniface_services::replica::queue_name(&name).into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await?;
        }
        BenchCommand::Memory { dir } => {
            let mut pids: Vec<_> = std::fs::read_dir(dir.join("pids"))
                .map_err(|e| Error::Uniface(uniface::Error::io(&dir, e)))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            pids.sort();
            println!("| process | peak resident memory (MiB) |");
            println!("| --- | ---: |");
            for p in pids {
                let name = p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if name == "rabbitmq" {
                    // the pid of the broker's start script, not of its Erlang node
                    continue;
                }
                let pid: Option<u32> = std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                if let Some(mib) = pid.and_then(bench::peak_rss_mib) {
                    println!("| {name} | {mib:.0} |");
                }
            }
        }
    }
    Ok(())
}

#[derive(Args)]
struct Serve {
    /// Comma-separated roles, or `all`.
    #[arg(long, default_value = "all")]
    role: String,
    #[command(flatten)]
    servers: Servers,
    /// Where the HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM) and --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The folder of the identification replica's gallery.
    #[arg(long, default_value = "replica")]
    replica_dir: PathBuf,
    /// The replica's name (its queue is uniface.replica.NAME).
    #[arg(long, default_value = "0")]
    replica_name: String,
    /// Shards of the gallery (fixed when a replica is first made).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Hold only this shard.
    #[arg(long)]
    shard: Option<usize>,
    /// Jobs (detection, embedding) run at once on the blocking pool.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs allowed to wait for a worker; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// /readyz fails while a replica has more events than this to apply.
    #[arg(long, default_value_t = 100)]
    ready_lag: u32,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 32 << 20, env = "UNIFACE_MAX_BODY")]
    max_body: usize,
    /// Per-request deadline in seconds (body included: a client that sends its body too slowly
    /// is answered 503 `timeout`).
    #[arg(long, default_value_t = 30.0, env = "UNIFACE_TIMEOUT")]
    timeout: f64,
    /// Seconds a client has to send its request headers (slow clients are disconnected).
    #[arg(long, default_value_t = 10.0, env = "UNIFACE_HEADER_TIMEOUT")]
    header_timeout: f64,
    /// Accept JWTs signed with this HS256 secret file …
    #[arg(long, env = "UNIFACE_JWT_HS256_SECRET_FILE")]
    jwt_hs256_secret_file: Option<PathBuf>,
    /// … or this RS256 public key (PEM).
    #[arg(long, env = "UNIFACE_JWT_RS256_PUBLIC_KEY")]
    jwt_rs256_public_key: Option<PathBuf>,
    /// The `iss` a JWT must carry.
    #[arg(long, env = "UNIFACE_JWT_ISSUER", default_value = "")]
    jwt_issuer: String,
    /// The `aud` a JWT must carry.
    #[arg(long, env = "UNIFACE_JWT_AUDIENCE", default_value = "uniface")]
    jwt_audience: String,
    /// Requests per second (and burst) of a JWT caller.
    #[arg(long, default_value_t = 50.0)]
    jwt_rate: f64,
    #[arg(long, default_value_t = 100)]
    jwt_burst: u32,
    /// Where a role this process does not run lives: ROLE=URL (enrollment, verification,
    /// templates), repeated, several processes per role allowed; its requests are forwarded
    /// there after authentication, to a process that passes its health checks (checked every
    /// second); a request that could not be delivered, or a verification or read that failed,
    /// goes to the role's next process.
    #[arg(long = "upstream", value_name = "ROLE=URL")]
    upstreams: Vec<String>,
    /// An identification replica, repeated: full copies of the gallery (any one answers a
    /// search; another takes over when it fails) or one shard each (a search goes to one
    /// replica of every shard, and is refused with 503 while a shard has none that answers).
    #[arg(long = "replica-url", value_name = "URL")]
    replica_urls: Vec<String>,
    /// Keep raw images here when a caller asks (`?store_image=true`), sealed under the
    /// deployment key; without it images are never kept. (The enrollment and templates
    /// processes need the same store.)
    #[arg(long, env = "UNIFACE_IMAGES_DIR")]
    images: Option<PathBuf>,
    /// The token the deployment's processes trust each other by (any secret string; the
    /// same for every process).
    #[arg(long, env = "UNIFACE_INTERNAL_TOKEN", hide_env_values = true)]
    internal_token: Option<String>,
}

const ROLES: [&str; 6] = [
    "gateway",
    "enrollment",
    "verification",
    "identification",
    "templates",
    "relay",
];

fn roles(text: &str) -> Result<Vec<&'static str>> {
    if text == "all" {
        return Ok(ROLES.to_vec());
    }
    text.split(',')
        .map(|r| {
            ROLES
                .iter()
                .find(|x| **x == r.trim())
                .copied()
                .ok_or_else(|| {
                    Error::Invalid(format!("unknown role {r:?}; roles are {ROLES:?} or all"))
                })
        })
        .collect()
}

fn jwt(s: &Serve) -> Result<Option<JwtConfig>> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| Error::Uniface(uniface::Error::io(p, e)));
    let (key, algorithm) = match (&s.jwt_hs256_secret_file, &s.jwt_rs256_public_key) {
        (None, None) => return Ok(None),
        (Some(f), None) => (
            jsonwebtoken::DecodingKey::from_secret(&read(f)?)
                .map_err(|e| Error::Invalid(format!("{}: {e}", f.display())))?,
            jsonwebtoken::Algorithm::HS256,
        ),
        (None, Some(f)) => (
            jsonwebtoken::DecodingKey::from_rsa_pem(&read(f)?)
                .map_err(|e| Error::Invalid(format!("{}: {e}", f.display())))?,
            jsonwebtoken::Algorithm::RS256,
        ),
        (Some(_), Some(_)) => {
            return Err(Error::Invalid(
                "give one of --jwt-hs256-secret-file and --jwt-rs256-public-key".into(),
            ))
        }
    };
    if s.jwt_issuer.is_empty() {
        return Err(Error::Invalid("JWTs need --jwt-issuer".into()));
    }
    auth::check_rate(s.jwt_rate, s.jwt_burst)?;
    Ok(Some(JwtConfig {
        key,
        algorithm,
        issuer: s.jwt_issuer.clone(),
        audience: s.jwt_audience.clone(),
        rate_per_s: s.jwt_rate,
        burst: s.jwt_burst,
    }))
}

async fn serve(s: Serve) -> Result<()> {
    let roles = roles(&s.role)?;
    let has = |r: &str| roles.contains(&r);
    let provider: Arc<dyn KeyProvider> = Arc::new(KeyFile::new(&s.servers.key_file));
    let key = provider.key()?;
    {
        let mut client = db::connect(&s.servers.db.db).await?;
        db::migrate(&mut client).await?;
    }
    let pool = deadpool_postgres::Config {
        url: Some(s.servers.db.db.clone()),
        ..deadpool_postgres::Config::default()
    }
    .create_pool(
        Some(deadpool_postgres::Runtime::Tokio1),
        tokio_postgres::NoTls,
    )
    .map_err(|e| Error::Invalid(format!("database pool: {e}")))?;
    if has("relay") {
        tokio::spawn(relay::run(
            s.servers.db.db.clone(),
            s.servers.amqp.clone(),
            256,
            Duration::from_millis(50),
        ));
    }
    let mut replicas = Vec::new();
    if has("identification") {
        replicas.push(Replica::start(ReplicaConfig {
            dir: s.replica_dir.clone(),
            name: s.replica_name.clone(),
            key: provider.clone(),
            sealing: key.clone(),
            shards: s.shards,
            shard: s.shard,
            db_url: s.servers.db.db.clone(),
            amqp_url: s.servers.amqp.clone(),
        }));
    }
    let engine = match has("enrollment") || has("verification") || has("identification") {
        true => {
            let (workers, queue) = (s.workers, s.queue);
            Some(Arc::new(
                tokio::task::spawn_blocking(move || {
                    Engine::new(uniface::ModelStore::from_env()?, workers, queue)
                })
                .await
                .map_err(|e| Error::Invalid(format!("loading the models panicked: {e}")))??,
            ))
        }
        false => None,
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Error::Invalid(format!("metrics: {e}")))?;
    let mut routed: std::collections::HashMap<String, Vec<String>> = Default::default();
    for u in &s.upstreams {
        let (role, url) = u
            .split_once('=')
            .ok_or_else(|| Error::Invalid(format!("--upstream {u:?}: write ROLE=URL")))?;
        if !["enrollment", "verification", "templates"].contains(&role) {
            return Err(Error::Invalid(format!(
                "--upstream {u:?}: enrollment, verification or templates (identification replicas are --replica-url)"
            )));
        }
        routed
            .entry(role.to_owned())
            .or_default()
            .push(url.trim_end_matches('/').to_owned());
    }
    if (!routed.is_empty() || !s.replica_urls.is_empty()) && s.internal_token.is_none() {
        return Err(Error::Invalid(
            "a gateway in front of other processes needs --internal-token (UNIFACE_INTERNAL_TOKEN)"
                .into(),
        ));
    }
    let upstream = Upstream::new(
        routed,
        s.replica_urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect(),
        s.internal_token.clone(),
    );
    // know who answers before serving, then keep checking
    upstream.check().await;
    upstream.watch();
    let app = Arc::new(App {
        pool,
        key,
        auth: Authenticator::new(jwt(&s)?),
        engine,
        replicas,
        metrics,
        ready_lag: s.ready_lag,
        max_body: s.max_body,
        timeout: seconds("--timeout", s.timeout)?,
        roles: roles.clone(),
        upstream,
        images: s
            .images
            .as_deref()
            .map(uniface_services::images::Images::local)
            .transpose()?,
    });
    if !has("gateway") {
        // a process without the gateway still answers /healthz, /readyz and /metrics
        tracing::info!("roles {roles:?}: serving health and metrics only");
    }
    let router = http::router(app);
    let addr = s.listen;
    tracing::info!("roles {roles:?}, listening on {addr}");
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        // SIGTERM (stack.sh down, Kubernetes) or Ctrl-C: finish the requests in flight
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let header_timeout = seconds("--header-timeout", s.header_timeout)?;
    let service = router.into_make_service();
    let served = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| Error::Invalid(format!("TLS certificate or key: {e}")))?;
            let mut server = axum_server::bind_rustls(addr, tls);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(header_timeout));
            server.handle(handle).serve(service).await
        }
        _ => {
            let mut server = axum_server::bind(addr);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(header_timeout));
            server.handle(handle).serve(service).await
        }
    };
    served.map_err(|e| Error::Invalid(format!("serving on {addr}: {e}")))
}

/// A positive, finite number of seconds given as `flag`.
fn seconds(flag: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::Invalid(format!("{flag} {v}: give a positive number of seconds")))
}

fn audit(url: &str, key: &str, repair: bool) -> Result<bool> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(format!(
            "{}/v1/admin/audit?repair={repair}",
            url.trim_end_matches('/')
        ))
        .header("Authorization", format!("Bearer {key}"))
        .call()
        .map_err(|e| Error::Invalid(format!("{url}: {e}")))?;
    let status = r.status();
    let body: serde_json::Value = r
        .body_mut()
        .read_json()
        .map_err(|e| Error::Invalid(format!("{url}: {e}")))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&body).unwrap_or_default()
    );
    if !status.is_success() {
        return Err(Error::Invalid(format!("the audit answered {status}")));
    }
    Ok(body["clean"] == serde_json::json!(true))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let telemetry = match uniface_services::telemetry::init(
        #[cfg(feature = "otlp")]
        cli.otlp_endpoint.as_deref(),
        #[cfg(feature = "otlp")]
        match &cli.command {
            Command::Serve(s) => &s.role,
            _ => "cli",
        },
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("uniface-services: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Migrate { db } => {
            async {
                let mut client = db::connect(&db.db).await?;
                let done = db::migrate(&mut client).await?;
                match done.is_empty() {
                    true => println!("the database is up to date"),
                    false => println!("applied migrations {done:?}"),
                }
                Ok(())
            }
            .await
        }
        Command::Serve(s) => serve(*s).await,
        Command::Bench(what) => bench(what).await,
        Command::KeysCreate {
            db,
            scopes,
            rate,
            burst,
            description,
            collection,
        } => {
            async {
                let scopes = auth::parse_scopes(&scopes)?;
                let mut client = db::connect(&db.db).await?;
                db::migrate(&mut client).await?;
                let k = auth::create_key(&client, &scopes, rate, burst, &description, &collection)
                    .await?;
                println!("{}", serde_json::to_string(&k).unwrap_or_default());
                Ok(())
            }
            .await
        }
        Command::KeyFile { path } => KeyFile::create(&path)
            .map(|id| println!("wrote key {id} to {}", path.display()))
            .map_err(Error::from),
        Command::Audit { url, key, repair } => {
            match tokio::task::spawn_blocking(move || audit(&url, &key, repair)).await {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => return std::process::ExitCode::from(1),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::Invalid(e.to_string())),
            }
        }
    };
    telemetry.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uniface-services: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
