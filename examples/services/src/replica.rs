//! An identification replica: a uniface-index [`Gallery`] in its own folder (encrypted under
//! the deployment's key), fed by the outbox events on its own durable queue.
//!
//! - **Idempotent.** A face enters the gallery under its database id
//!   ([`Gallery::enroll_as`]), so a redelivered `FaceEnrolled` is a no-op; removals of what is
//!   gone already are no-ops too. An event is acknowledged only after the gallery has made its
//!   change durable; removals are followed by a checkpoint, so nothing of an erased subject
//!   stays in the gallery's files.
//! - **Bootstrap.** A new or wiped replica binds its queue first (events from then on wait for
//!   it), then copies the faces from PostgreSQL page by page inside one snapshot into a fresh
//!   folder, checkpoints it and only then moves it into place (a bootstrap cut short starts
//!   over). Events older than the snapshot that sit in the queue are harmless repeats: the
//!   relay publishes in outbox order, so an enrollment that the snapshot no longer holds is
//!   followed in the queue by the removal that took it.
//! - **Shards.** With `shard = Some(n)` the replica holds one shard of the gallery; events of
//!   subjects that live on other shards are acknowledged and skipped.
//! - **Failures.** An event that cannot be applied (a key that does not open it, a full disk)
//!   is put back on the queue and the replica reports the error and stops being ready; it
//!   tries again after a pause. A lost broker connection is re-established with back-off.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;
use uniface::core::crypto::{Key, KeyProvider};
use uniface::index::{Durability, Gallery, GalleryOptions, OpenOptions};
use uniface::{ModelFingerprint, Template};

use crate::db::Event;
use crate::{db, lock, relay, Error, Result};

/// How to run a replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Its folder: `gallery/` and `replica.json` live here.
    pub dir: PathBuf,
    /// Its name: the queue is `uniface.replica.<name>`.
    pub name: String,
    /// The gallery's key-encryption key.
    pub key: Arc<dyn KeyProvider>,
    /// The key the database's templates and metadata (and so the events) are sealed under.
    pub sealing: Key,
    /// Shards of the gallery (fixed when the first replica is made).
    pub shards: usize,
    /// Hold only this shard.
    pub shard: Option<usize>,
    pub db_url: String,
    pub amqp_url: String,
}

/// What a replica has done, for `/readyz` and the logs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ReplicaStatus {
    pub name: String,
    pub bootstrapped: bool,
    pub consuming: bool,
    /// The highest outbox sequence number applied.
    pub applied_seq: i64,
    pub events_applied: i64,
    pub last_error: Option<String>,
}

/// A running replica. `Send + Sync`.
pub struct Replica {
    config: ReplicaConfig,
    gallery: OnceLock<Arc<Gallery>>,
    consuming: AtomicBool,
    applied_seq: AtomicI64,
    events_applied: AtomicI64,
    last_error: Mutex<Option<String>>,
    channel: Mutex<Option<Channel>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// The replica's queue.
pub fn queue_name(name: &str) -> String {
    format!("uniface.replica.{name}")
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    /// The outbox position the bootstrap's snapshot had reached.
    bootstrap_seq: i64,
    bootstrap_faces: u64,
}

impl Replica {
    /// Start the replica: bootstrap when its gallery is missing, then consume its queue in the
    /// background (reconnecting as needed). Returns at once; see [`Replica::status`].
    pub fn start(config: ReplicaConfig) -> Arc<Self> {
        let me = Arc::new(Self {
            config,
            gallery: OnceLock::new(),
            consuming: AtomicBool::new(false),
            applied_seq: AtomicI64::new(0),
            events_applied: AtomicI64::new(0),
            last_error: Mutex::new(None),
            channel: Mutex::new(None),
        });
        let run = me.clone();
        tokio::spawn(async move { run.run().await });
        me
    }

    /// The gallery, once bootstrapped.
    pub fn gallery(&self) -> Option<&Arc<Gallery>> {
        self.gallery.get()
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            name: self.config.name.clone(),
            bootstrapped: self.gallery.get().is_some(),
            consuming: self.consuming.load(Ordering::SeqCst),
            applied_seq: self.applied_seq.load(Ordering::SeqCst),
            events_applied: self.events_applied.load(Ordering::SeqCst),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// Events waiting in the replica's queue (`None` while it is not connected).
    pub async fn queued(&self) -> Option<u32> {
        let channel = lock(&self.channel).clone()?;
        let q = channel
            .queue_declare(
                queue_name(&self.config.name).into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        Some(q.message_count())
    }

    fn fail(&self, e: impl std::fmt::Display) {
        let m = e.to_string();
        tracing::error!(replica = %self.config.name, error = %m, "replica");
        *lock(&self.last_error) = Some(m);
    }

    async fn run(self: Arc<Self>) {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.session().await {
                Ok(()) => pause = Duration::from_millis(200),
                Err(e) => self.fail(e),
            }
            self.consuming.store(false, Ordering::SeqCst);
            *lock(&self.channel) = None;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection's life: bind the queue, bootstrap if needed, consume until it breaks.
    async fn session(self: &Arc<Self>) -> Result<()> {
        let (connection, channel) = relay::connect(&self.config.amqp_url).await?;
        let queue = queue_name(&self.config.name);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                relay::EXCHANGE.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        if self.gallery.get().is_none() {
            let gallery = self.open_or_bootstrap().await?;
            let _ = self.gallery.set(Arc::new(gallery));
        }
        let gallery = self.gallery.get().expect("set above").clone();
        channel.basic_qos(64, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("replica-{}", self.config.name).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        *lock(&self.channel) = Some(channel.clone());
        self.consuming.store(true, Ordering::SeqCst);
        *lock(&self.last_error) = None;
        tracing::info!(replica = %self.config.name, "consuming {queue}");
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            let event = match parse_event(&delivery) {
                Ok(e) => e,
                Err(e) => {
                    // not ours to apply (another producer on the exchange): logged, dropped
                    self.fail(format!("an unreadable message was dropped: {e}"));
                    delivery.ack(BasicAckOptions::default()).await?;
                    continue;
                }
            };
            let key = self.config.sealing.clone();
            let g = gallery.clone();
            let seq = event.seq;
            let applied = tokio::task::spawn_blocking(move || apply(&g, &key, &event))
                .await
                .map_err(|e| Error::Invalid(format!("applying an event panicked: {e}")))?;
            match applied {
                Ok(()) => {
                    delivery.ack(BasicAckOptions::default()).await?;
                    self.applied_seq.fetch_max(seq, Ordering::SeqCst);
                    self.events_applied.fetch_add(1, Ordering::SeqCst);
                    metrics::counter!("uniface_replica_events_applied_total").increment(1);
                }
                Err(e) => {
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await?;
                    let _ = connection.close(0, "retrying".into()).await;
                    return Err(Error::Invalid(format!(
                        "outbox event {seq} could not be applied (it stays queued): {e}"
                    )));
                }
            }
        }
        Err(Error::Invalid("the broker closed the consumer".into()))
    }

    fn gallery_dir(&self) -> PathBuf {
        self.config.dir.join("gallery")
    }

    fn open_options(&self) -> OpenOptions {
        OpenOptions {
            key: Some(self.config.key.clone()),
            shard: self.config.shard,
            ..OpenOptions::default()
        }
    }

    async fn open_or_bootstrap(&self) -> Result<Gallery> {
        let dir = self.gallery_dir();
        if !dir.join("manifest.json").exists() {
            self.bootstrap().await?;
        }
        let options = self.open_options();
        let (g, report) = tokio::task::spawn_blocking(move || {
            Gallery::open_with_options(&dir, &ModelFingerprint::dlib_resnet_v1(), &options)
        })
        .await
        .map_err(|e| Error::Invalid(format!("opening the gallery panicked: {e}")))??;
        for m in report.messages() {
            tracing::warn!(replica = %self.config.name, "{m}");
        }
        Ok(g)
    }

    /// Copy every face from PostgreSQL into a fresh gallery, then move it into place.
    async fn bootstrap(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let fresh = self.config.dir.join("gallery.bootstrap");
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(|e| io(&fresh, e))?;
        }
        std::fs::create_dir_all(&self.config.dir).map_err(|e| io(&self.config.dir, e))?;
        let options = GalleryOptions {
            shards: self.config.shards,
            durability: Durability::Async,
            encryption: Some(self.config.key.clone()),
            ..GalleryOptions::default()
        };
        let g = {
            let fresh = fresh.clone();
            blocking(move || Ok(Gallery::create(&fresh, &options)?)).await?
        };
        let g = Arc::new(g);
        let key = self.config.sealing.clone();
        let mut client = db::connect(&self.config.db_url).await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let (position,): (i64,) = {
            let r = tx
                .query_one("SELECT coalesce(max(seq), 0) FROM outbox", &[])
                .await?;
            (r.get(0),)
        };
        let (mut after, mut copied) = (0i64, 0u64);
        loop {
            let page = db::face_page(&tx, after, 2000).await?;
            let Some(last) = page.last() else { break };
            after = last.face_id;
            let (g, key, shard) = (g.clone(), key.clone(), self.config.shard);
            copied += blocking(move || enroll_page(&g, &key, shard, &page)).await?;
        }
        tx.commit().await?;
        {
            let g = g.clone();
            blocking(move || Ok(g.checkpoint()?)).await?;
        }
        drop(g);
        let dir = self.gallery_dir();
        std::fs::rename(&fresh, &dir).map_err(|e| io(&dir, e))?;
        sync_dir(&self.config.dir)?;
        let state = State {
            bootstrap_seq: position,
            bootstrap_faces: copied,
        };
        let path = self.config.dir.join("replica.json");
        std::fs::write(&path, serde_json::to_vec(&state).unwrap_or_default())
            .map_err(|e| io(&path, e))?;
        self.applied_seq.fetch_max(position, Ordering::SeqCst);
        tracing::info!(
            replica = %self.config.name,
            faces = copied,
            outbox_seq = position,
            seconds = started.elapsed().as_secs_f64(),
            "bootstrapped from the database"
        );
        Ok(())
    }
}

fn enroll_page(
    g: &Gallery,
    key: &Key,
    shard: Option<usize>,
    page: &[db::StoredFace],
) -> Result<u64> {
    let router = g.router();
    let mut n = 0;
    for f in page {
        if shard.is_some_and(|s| router.shard_of(&f.subject) != s) {
            continue;
        }
        let t = Template::open_sealed(key, &db::face_aad(&f.subject, f.face_id), &f.sealed)?;
        g.enroll_as(&f.subject, f.face_id as u64, &t)?;
        n += 1;
    }
    Ok(n)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Invalid(format!("a gallery task panicked: {e}")))?
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Uniface(uniface::Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(dir, e))
}

fn parse_event(d: &lapin::message::Delivery) -> Result<Event> {
    let bad = |m: &str| Error::Invalid(format!("message {:?}: {m}", d.properties.message_id()));
    let seq: i64 = d
        .properties
        .message_id()
        .as_ref()
        .and_then(|s| s.as_str().parse().ok())
        .ok_or_else(|| bad("no outbox sequence number as its message id"))?;
    let headers = d
        .properties
        .headers()
        .as_ref()
        .ok_or_else(|| bad("no headers"))?;
    let text = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    };
    let face_id = match headers.inner().get("face_id") {
        Some(AMQPValue::LongLongInt(f)) => Some(*f),
        _ => None,
    };
    Ok(Event {
        seq,
        kind: text("kind").ok_or_else(|| bad("no kind header"))?,
        subject: text("subject").ok_or_else(|| bad("no subject header"))?,
        face_id,
        payload: Some(d.data.clone()).filter(|p| !p.is_empty()),
    })
}

/// Apply one event to the gallery, durably; a repeat changes nothing. Changes of subjects that
/// live on shards this gallery does not hold are skipped.
pub fn apply(g: &Gallery, key: &Key, e: &Event) -> Result<()> {
    let local = g.local_shards().contains(&g.router().shard_of(&e.subject));
    if !local {
        return Ok(());
    }
    match e.kind.as_str() {
        // its template erased from the outbox before it was sent: the removal follows
        "FaceEnrolled" if e.payload.is_none() => {}
        "FaceEnrolled" => {
            let face_id = e
                .face_id
                .ok_or_else(|| Error::Invalid(format!("event {}: no face id", e.seq)))?;
            let sealed = e.payload.as_deref().unwrap_or_default();
            let t = Template::open_sealed(key, &db::face_aad(&e.subject, face_id), sealed)?;
            g.enroll_as(&e.subject, face_id as u64, &t)?;
        }
        "FaceRemoved" => {
            let face_id = e
                .face_id
                .ok_or_else(|| Error::Invalid(format!("event {}: no face id", e.seq)))?;
            if g.remove_template(face_id as u64)? {
                g.checkpoint()?;
            }
        }
        "SubjectRemoved" => {
            g.remove_subject(&e.subject)?;
            // the erasure guarantee: after a checkpoint nothing of it is in any file
            g.checkpoint()?;
        }
        "MetadataSet" => {
            let m = db::open_metadata(key, &e.subject, e.payload.as_deref().unwrap_or_default())?;
            g.update_metadata(&e.subject, &m)?;
        }
        other => {
            return Err(Error::Invalid(format!(
                "event {}: unknown kind {other:?}",
                e.seq
            )))
        }
    }
    Ok(())
}
