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
//! - **Collections.** One gallery per collection ([`Galleries`]): the default collection's in
//!   `gallery/`, each other's in `collections/<folder>/gallery/`, made when its first face
//!   arrives. A bootstrap builds them all in `bootstrap/` and moves the default gallery into
//!   place last, so a replica whose `gallery/` is there holds every collection.
//! - **Failures.** An event that can never be applied (it does not open under the key, its
//!   template is not one this gallery holds, its kind is unknown) is moved to the replica's
//!   dead-letter queue `uniface.dead.<name>` and counted (`/readyz`, the audit then shows the
//!   drift and `repair` mends it), so that it does not block the events behind it. An event
//!   that failed for a reason that may pass (an I/O error, a full disk, a failed `fsync`) goes
//!   back to the queue, and the gallery is closed and opened again from its files before the
//!   next try — a write whose durability failed is never taken as done. A lost broker
//!   connection is re-established with back-off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;
use uniface::core::crypto::{Key, KeyProvider};
use uniface::index::{Durability, Gallery, GalleryOptions, OpenOptions};
use uniface::{ModelFingerprint, Template};

use crate::db::Event;
use crate::{collection, db, lock, relay, Error, Result};

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
    /// Events set aside in the dead-letter queue (they could never be applied).
    pub dead_lettered: i64,
    pub last_error: Option<String>,
}

/// A replica's galleries, one per collection. `Send + Sync`.
pub struct Galleries {
    dir: PathBuf,
    options: OpenOptions,
    made_with: GalleryOptions,
    held: RwLock<BTreeMap<String, Arc<Gallery>>>,
    /// One collection's gallery made at a time.
    making: Mutex<()>,
    /// Held while an event is applied, and by an audit's repair from its last look at the
    /// database to its last change: a repair never acts on what an event changed meanwhile.
    pub(crate) changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Galleries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Galleries")
            .field("dir", &self.dir)
            .field(
                "collections",
                &self.held.read().map(|h| h.len()).unwrap_or(0),
            )
            .finish_non_exhaustive()
    }
}

/// Where `collection`'s gallery lives under a replica's folder (or a bootstrap's).
fn gallery_path(root: &Path, collection: &str) -> PathBuf {
    if collection.is_empty() {
        root.join("gallery")
    } else {
        root.join("collections")
            .join(collection::folder(collection))
            .join("gallery")
    }
}

impl Galleries {
    /// Open the galleries under `dir`: the default one (it must be there) and every collection's.
    fn open(
        dir: &Path,
        options: OpenOptions,
        made_with: GalleryOptions,
    ) -> Result<(Self, Vec<String>)> {
        let fingerprint = ModelFingerprint::dlib_resnet_v1();
        let mut messages = Vec::new();
        let mut held = BTreeMap::new();
        let open = |collection: String,
                    path: PathBuf,
                    held: &mut BTreeMap<String, Arc<Gallery>>,
                    messages: &mut Vec<String>|
         -> Result<()> {
            let (g, report) = Gallery::open_with_options(&path, &fingerprint, &options)?;
            messages.extend(
                report
                    .messages()
                    .iter()
                    .map(|m| format!("{}: {m}", path.display())),
            );
            held.insert(collection, Arc::new(g));
            Ok(())
        };
        open(
            String::new(),
            gallery_path(dir, ""),
            &mut held,
            &mut messages,
        )?;
        let collections = dir.join("collections");
        if collections.exists() {
            let entries = std::fs::read_dir(&collections).map_err(|e| io(&collections, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io(&collections, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let Some(c) = name
                    .strip_prefix("c-")
                    .and_then(crate::upstream::unhex)
                    .and_then(|b| String::from_utf8(b).ok())
                    .filter(|c| !c.is_empty() && collection::check(c).is_ok())
                else {
                    messages.push(format!(
                        "{}: not a collection's folder; left alone",
                        entry.path().display()
                    ));
                    continue;
                };
                // a gallery being made when the process stopped is made again when needed
                let half = entry.path().join("gallery.new");
                if half.exists() {
                    std::fs::remove_dir_all(&half).map_err(|e| io(&half, e))?;
                }
                // a gallery folder is opened whatever state it is in: a damaged one is an
                // error that names it, never a collection silently left out
                let path = gallery_path(dir, &c);
                if path.exists() {
                    open(c, path, &mut held, &mut messages)?;
                }
            }
        }
        Ok((
            Self {
                dir: dir.to_owned(),
                options,
                made_with,
                held: RwLock::new(held),
                making: Mutex::new(()),
                changes: tokio::sync::Mutex::new(()),
            },
            messages,
        ))
    }

    /// The gallery of `collection`, if it has one here.
    pub fn get(&self, collection: &str) -> Option<Arc<Gallery>> {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(collection)
            .cloned()
    }

    /// Every collection's gallery.
    pub fn all(&self) -> Vec<(String, Arc<Gallery>)> {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, g)| (c.clone(), g.clone()))
            .collect()
    }

    /// Templates held, in every collection.
    pub fn len(&self) -> usize {
        self.all().iter().map(|(_, g)| g.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The default collection's gallery (there is always one).
    pub fn default_gallery(&self) -> Result<Arc<Gallery>> {
        self.get("")
            .ok_or_else(|| Error::Invalid("a replica without its default gallery".into()))
    }

    /// The gallery of `collection`, made when it has none yet: created beside its place, made
    /// durable, moved into place and opened (a process stopped half-way leaves no half gallery).
    pub fn get_or_make(&self, collection: &str) -> Result<Arc<Gallery>> {
        if let Some(g) = self.get(collection) {
            return Ok(g);
        }
        collection::check(collection)?;
        let _one = lock(&self.making);
        if let Some(g) = self.get(collection) {
            return Ok(g);
        }
        let target = gallery_path(&self.dir, collection);
        let home = target.parent().unwrap_or(&self.dir).to_owned();
        if !target.join("manifest.json").exists() {
            make_dirs(&home)?;
            let fresh = home.join("gallery.new");
            if fresh.exists() {
                std::fs::remove_dir_all(&fresh).map_err(|e| io(&fresh, e))?;
            }
            drop(Gallery::create(&fresh, &self.made_with)?);
            std::fs::rename(&fresh, &target).map_err(|e| io(&target, e))?;
            sync_dir(&home)?;
        }
        let (g, _) = Gallery::open_with_options(
            &target,
            &ModelFingerprint::dlib_resnet_v1(),
            &self.options,
        )?;
        let g = Arc::new(g);
        self.held
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(collection.to_owned(), g.clone());
        Ok(g)
    }
}

/// A running replica. `Send + Sync`.
pub struct Replica {
    config: ReplicaConfig,
    galleries: RwLock<Option<Arc<Galleries>>>,
    consuming: AtomicBool,
    applied_seq: AtomicI64,
    events_applied: AtomicI64,
    dead_lettered: AtomicI64,
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

/// Declare a durable queue (nothing happens when it exists).
async fn declare_durable(channel: &Channel, name: &str) -> Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Where the replica sets aside events it can never apply.
pub fn dead_letter_queue(name: &str) -> String {
    format!("uniface.dead.{name}")
}

/// Whether an event's failure is in the event itself (it would fail again every time).
fn is_permanent(e: &Error) -> bool {
    use uniface::core::ErrorKind as K;
    match e {
        Error::Uniface(u) => matches!(
            u.kind(),
            K::InvalidArgument | K::Template | K::Crypto | K::Image | K::NoFace
        ),
        Error::Invalid(_) => true,
        _ => false,
    }
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
            galleries: RwLock::new(None),
            consuming: AtomicBool::new(false),
            applied_seq: AtomicI64::new(0),
            events_applied: AtomicI64::new(0),
            dead_lettered: AtomicI64::new(0),
            last_error: Mutex::new(None),
            channel: Mutex::new(None),
        });
        let run = me.clone();
        tokio::spawn(async move { run.run().await });
        me
    }

    /// The galleries, once bootstrapped (`None` also while they are being opened again after a
    /// failure).
    pub fn galleries(&self) -> Option<Arc<Galleries>> {
        self.galleries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The default collection's gallery, once bootstrapped.
    pub fn gallery(&self) -> Option<Arc<Gallery>> {
        self.galleries().and_then(|g| g.get(""))
    }

    fn set_galleries(&self, g: Option<Arc<Galleries>>) {
        *self.galleries.write().unwrap_or_else(|e| e.into_inner()) = g;
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The gallery's shard count, and the one shard held (`None`: all of them).
    pub fn holds(&self) -> (usize, Option<usize>) {
        (self.config.shards, self.config.shard)
    }

    pub fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            name: self.config.name.clone(),
            bootstrapped: self.galleries().is_some(),
            consuming: self.consuming.load(Ordering::SeqCst),
            applied_seq: self.applied_seq.load(Ordering::SeqCst),
            events_applied: self.events_applied.load(Ordering::SeqCst),
            dead_lettered: self.dead_lettered.load(Ordering::SeqCst),
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
        declare_durable(&channel, &queue).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                relay::EXCHANGE.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let dead = dead_letter_queue(&self.config.name);
        declare_durable(&channel, &dead).await?;
        let galleries = match self.galleries() {
            Some(g) => g,
            None => {
                let g = Arc::new(self.open_or_bootstrap().await?);
                self.set_galleries(Some(g.clone()));
                g
            }
        };
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
            let g = galleries.clone();
            let seq = event.seq;
            let applying = galleries.changes.lock().await;
            let applied = tokio::task::spawn_blocking(move || apply_to(&g, &key, &event))
                .await
                .map_err(|e| Error::Invalid(format!("applying an event panicked: {e}")))?;
            drop(applying);
            match applied {
                Ok(()) => {
                    delivery.ack(BasicAckOptions::default()).await?;
                    self.applied_seq.fetch_max(seq, Ordering::SeqCst);
                    self.events_applied.fetch_add(1, Ordering::SeqCst);
                    metrics::counter!("uniface_replica_events_applied_total").increment(1);
                }
                Err(e) if is_permanent(&e) => {
                    // never applicable: set aside (confirmed) so the events behind it go on
                    let confirm = channel
                        .basic_publish(
                            "".into(),
                            dead.as_str().into(),
                            BasicPublishOptions::default(),
                            &delivery.data,
                            delivery.properties.clone(),
                        )
                        .await?;
                    if !confirm.await?.is_ack() {
                        return Err(Error::Nacked { seq });
                    }
                    delivery.ack(BasicAckOptions::default()).await?;
                    self.dead_lettered.fetch_add(1, Ordering::SeqCst);
                    metrics::counter!("uniface_replica_events_dead_lettered_total").increment(1);
                    self.fail(format!(
                        "outbox event {seq} can never be applied and was moved to {dead}: {e}"
                    ));
                }
                Err(e) => {
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await?;
                    let _ = connection.close(0, "retrying".into()).await;
                    // the galleries are opened again from their files: what they hold in
                    // memory may include a change whose durability failed
                    self.set_galleries(None);
                    return Err(Error::Invalid(format!(
                        "outbox event {seq} could not be applied (it stays queued; the gallery is reopened): {e}"
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

    /// What this replica is configured to hold, as written beside its gallery.
    fn holds_text(&self) -> String {
        let shard = self
            .config
            .shard
            .map_or_else(|| "all".to_owned(), |s| s.to_string());
        format!("shards={} shard={shard}\n", self.config.shards)
    }

    fn holds_file(&self) -> PathBuf {
        self.config.dir.join("gallery.holds")
    }

    /// How a collection's gallery is made when its first face arrives.
    fn made_with(&self) -> GalleryOptions {
        GalleryOptions {
            shards: self.config.shards,
            encryption: Some(self.config.key.clone()),
            ..GalleryOptions::default()
        }
    }

    async fn open_or_bootstrap(&self) -> Result<Galleries> {
        let dir = self.gallery_dir();
        if dir.join("manifest.json").exists() {
            // a gallery made for other shards (another --shard or --shards, or one from before
            // this file was written) would answer for subjects it does not hold: made again
            let recorded = std::fs::read_to_string(self.holds_file()).ok();
            if recorded.as_deref() != Some(self.holds_text().as_str()) {
                tracing::warn!(
                    replica = %self.config.name,
                    "the gallery in {} was made for {}, this replica holds {}: bootstrapping it again from the database",
                    dir.display(),
                    recorded.as_deref().map_or("unknown shards", str::trim),
                    self.holds_text().trim()
                );
                std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
            }
        }
        if !dir.join("manifest.json").exists() {
            self.bootstrap().await?;
        }
        let (root, options, made_with) = (
            self.config.dir.clone(),
            self.open_options(),
            self.made_with(),
        );
        let (g, messages) =
            tokio::task::spawn_blocking(move || Galleries::open(&root, options, made_with))
                .await
                .map_err(|e| Error::Invalid(format!("opening the galleries panicked: {e}")))??;
        for m in messages {
            tracing::warn!(replica = %self.config.name, "{m}");
        }
        Ok(g)
    }

    /// Copy every face from PostgreSQL into fresh galleries (one per collection), then move
    /// them into place, the default collection's last.
    async fn bootstrap(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let fresh = self.config.dir.join("bootstrap");
        // (`gallery.bootstrap`: where a bootstrap before collections built its gallery)
        for old in [fresh.clone(), self.config.dir.join("gallery.bootstrap")] {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
            }
        }
        std::fs::create_dir_all(&fresh).map_err(|e| io(&fresh, e))?;
        let mut building = Building {
            root: fresh.clone(),
            options: GalleryOptions {
                durability: Durability::Async,
                ..self.made_with()
            },
            shard: self.config.shard,
            made: BTreeMap::new(),
        };
        building = blocking(move || {
            building.gallery("")?;
            Ok(building)
        })
        .await?;
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
            let key = key.clone();
            let n;
            (building, n) = blocking(move || {
                let n = building.enroll_page(&key, &page)?;
                Ok((building, n))
            })
            .await?;
            copied += n;
        }
        // the subjects' metadata, from the same snapshot
        let with_metadata = tx
            .query(
                "SELECT subject, metadata FROM subjects WHERE metadata <> ''::bytea",
                &[],
            )
            .await?;
        let metadata: Vec<(String, Vec<u8>)> = with_metadata
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        tx.commit().await?;
        blocking(move || {
            for (subject, sealed) in &metadata {
                if let Some(g) = building.holding(subject)? {
                    g.update_metadata(subject, &db::open_metadata(&key, subject, sealed)?)?;
                }
            }
            for (c, g) in &building.made {
                g.checkpoint()?;
                // its folder's entry, where the gallery did not make the folder itself
                if let Some(home) = gallery_path(&building.root, c).parent() {
                    sync_dir(home)?;
                }
            }
            Ok(())
        })
        .await?;
        // what it holds first: a gallery in place always has its record (a record without its
        // gallery only makes the next start bootstrap)
        let holds = self.holds_file();
        let part = self.config.dir.join("gallery.holds.part");
        std::fs::write(&part, self.holds_text()).map_err(|e| io(&part, e))?;
        std::fs::File::open(&part)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&part, e))?;
        std::fs::rename(&part, &holds).map_err(|e| io(&holds, e))?;
        // the collections, then the default gallery: with `gallery/` in place, all are
        let collections = self.config.dir.join("collections");
        if collections.exists() {
            std::fs::remove_dir_all(&collections).map_err(|e| io(&collections, e))?;
        }
        let built = fresh.join("collections");
        if built.exists() {
            std::fs::rename(&built, &collections).map_err(|e| io(&collections, e))?;
        }
        let dir = self.gallery_dir();
        std::fs::rename(fresh.join("gallery"), &dir).map_err(|e| io(&dir, e))?;
        sync_dir(&self.config.dir)?;
        std::fs::remove_dir_all(&fresh).map_err(|e| io(&fresh, e))?;
        let state = State {
            bootstrap_seq: position,
            bootstrap_faces: copied,
        };
        // for operators only (nothing reads it: outbox sequence numbers are not in commit order,
        // so no event may be skipped by its number)
        let path = self.config.dir.join("replica.json");
        let tmp = self.config.dir.join("replica.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&state).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &path))
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

/// The galleries a bootstrap builds, one per collection, made as their first face comes.
struct Building {
    root: PathBuf,
    options: GalleryOptions,
    shard: Option<usize>,
    made: BTreeMap<String, Gallery>,
}

impl Building {
    fn gallery(&mut self, collection: &str) -> Result<&Gallery> {
        if !self.made.contains_key(collection) {
            collection::check(collection)?;
            let path = gallery_path(&self.root, collection);
            if let Some(home) = path.parent() {
                make_dirs(home)?;
            }
            let g = Gallery::create(&path, &self.options)?;
            self.made.insert(collection.to_owned(), g);
        }
        Ok(&self.made[collection])
    }

    /// The gallery that holds `subject` (its collection's), `None` when this replica holds
    /// another shard.
    fn holding(&mut self, subject: &str) -> Result<Option<&Gallery>> {
        let router = self.gallery("")?.router();
        if self.shard.is_some_and(|s| router.shard_of(subject) != s) {
            return Ok(None);
        }
        self.gallery(collection::split(subject).0).map(Some)
    }

    fn enroll_page(&mut self, key: &Key, page: &[db::StoredFace]) -> Result<u64> {
        let mut n = 0;
        for f in page {
            let Some(g) = self.holding(&f.subject)? else {
                continue;
            };
            let t = Template::open_sealed(key, &db::face_aad(&f.subject, f.face_id), &f.sealed)?;
            g.enroll_as(&f.subject, f.face_id as u64, &t)?;
            n += 1;
        }
        Ok(n)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Invalid(format!("a gallery task panicked: {e}")))?
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Uniface(uniface::Error::io(path, e))
}

/// `create_dir_all`, with every folder it made (and the one it made it in) synced, so that the
/// folders survive a power loss with what is renamed into them.
fn make_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent)?;
    }
    std::fs::create_dir(dir).map_err(|e| io(dir, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
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

/// Apply one event to the gallery of its subject's collection (made when the event brings the
/// collection's first face), durably; a repeat changes nothing.
pub fn apply_to(galleries: &Galleries, key: &Key, e: &Event) -> Result<()> {
    let collection = collection::split(&e.subject).0;
    collection::check(collection)?;
    let brings = matches!(e.kind.as_str(), "FaceEnrolled" | "MetadataSet") && e.payload.is_some();
    let g = if brings {
        // (not for subjects of shards held elsewhere)
        let d = galleries.default_gallery()?;
        if !d.local_shards().contains(&d.router().shard_of(&e.subject)) {
            return Ok(());
        }
        Some(galleries.get_or_make(collection)?)
    } else {
        galleries.get(collection)
    };
    match g {
        Some(g) => apply(&g, key, e),
        // removals in a collection this replica never held a face of: nothing to do
        None => Ok(()),
    }
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
        // removals checkpoint, so that nothing of what went stays in any file; a repeat (nothing
        // to remove) does not (an encrypted gallery destroyed the subject's key already)
        "FaceRemoved" => {
            let face_id = e
                .face_id
                .ok_or_else(|| Error::Invalid(format!("event {}: no face id", e.seq)))?;
            if g.remove_template(face_id as u64)? {
                g.checkpoint()?;
            }
        }
        "SubjectRemoved" => {
            if g.remove_subject(&e.subject)? > 0 {
                g.checkpoint()?;
            }
        }
        // its metadata erased from the outbox before it was sent: the removal follows
        "MetadataSet" if e.payload.is_none() => {}
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
