//! # uniface-services
//!
//! The reference deployment of UniFace (issue 17): the services a face-biometrics host runs —
//! gateway, enrollment, verification, identification, template management, outbox relay — over
//! PostgreSQL, RabbitMQ and the gallery, as one binary whose roles are chosen by flag.
//!
//! Built so far: the relational store ([`db`]): versioned migrations and the enrollment
//! transaction that writes the subject, the face (its template sealed under the deployment's
//! key, never in the clear) and the outbox event together; the outbox [`relay`] that publishes
//! the events to RabbitMQ with publisher confirms. `stack.sh` runs the servers.

pub mod db;
pub mod relay;

/// Errors of the services.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
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

pub type Result<T> = std::result::Result<T, Error>;
