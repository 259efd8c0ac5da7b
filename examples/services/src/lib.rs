//! # uniface-services
//!
//! The reference deployment of UniFace (issue 17): the services a face-biometrics host runs —
//! gateway, enrollment, verification, identification, template management, outbox relay — over
//! PostgreSQL, RabbitMQ and the gallery, as one binary whose roles are chosen by flag.
//!
//! - [`db`]: versioned migrations; the enrollment transaction that writes the subject, the face
//!   (its template sealed under the deployment's key, never in the clear) and the outbox event
//!   together; removals and metadata with their events.
//! - [`relay`]: the outbox relay, publishing the events to RabbitMQ with publisher confirms.
//! - [`replica`]: an identification replica — an encrypted gallery fed idempotently from its
//!   own durable queue, bootstrapped from PostgreSQL.
//! - [`engine`]: the CPU work on a bounded blocking pool.
//! - [`collection`]: tenancy — each key sees one collection's subjects, in every query.
//! - [`auth`]: API keys (argon2id), JWT, rate limits; [`http`]: the v1 API; [`audit`]: the
//!   database against the replicas; [`upstream`]: a gateway in front of one process per role.
//!
//! `stack.sh` runs the servers and the services; `docs/DEPLOYMENT.md` describes the whole.

pub mod audit;
pub mod auth;
pub mod bench;
pub mod collection;
pub mod db;
pub mod engine;
pub mod http;
pub mod images;
pub mod load;
pub mod relay;
pub mod replica;
pub mod telemetry;
pub mod upstream;

/// Errors of the services.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("{0}")]
    Invalid(String),
    #[error("message queue: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Uniface(#[from] uniface::Error),
    #[error("migration {version} ({name}) was applied with other SQL (checksum {recorded}, the file's is {now}): migrations are never edited once applied; add a new one")]
    MigrationChanged {
        version: i32,
        name: &'static str,
        recorded: String,
        now: String,
    },
    #[error(
        "the broker refused outbox event {seq} (a negative publisher confirm); it stays unsent"
    )]
    Nacked { seq: i64 },
}

impl From<uniface::core::Error> for Error {
    fn from(e: uniface::core::Error) -> Self {
        Error::Uniface(e.into())
    }
}

impl From<uniface::index::Error> for Error {
    fn from(e: uniface::index::Error) -> Self {
        Error::Uniface(e.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A mutex's guard, also after a panic elsewhere poisoned it (the data are plain state).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
