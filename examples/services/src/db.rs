//! The relational store: versioned SQL migrations, and the enrollment transaction with its
//! outbox row (a change and the event announcing it commit together, or neither does).
//!
//! Templates are stored sealed ([`Template::seal`]) under the deployment's key with the
//! subject and the face id as associated data, so a row copied to another subject or face does
//! not open; the `FaceEnrolled` event carries the same sealed bytes.

use std::collections::HashMap;

use tokio_postgres::{Client, NoTls};
use uniface::core::crypto::Key;
use uniface::core::template::{crc32c, Template};

/// The migrations, in order: (version, name, SQL). Applied ones are recorded with a checksum of
/// their SQL, so an edited migration is refused rather than silently skipped.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "subjects_faces_outbox",
    include_str!("../migrations/0001_subjects_faces_outbox.sql"),
)];

pub use crate::{Error, Result};

/// Connect to `url` (`postgresql://user@host:port/db`); the connection runs on the tokio
/// runtime until the client is dropped.
pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("database connection: {e}");
        }
    });
    Ok(client)
}

/// Apply the migrations not applied yet, in one transaction under an advisory lock (so that
/// services starting together migrate once); returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7165051)", &[])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: HashMap<i32, String> = tx
        .query("SELECT version, checksum FROM schema_migrations", &[])
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut done = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        let now = format!("{:08x}", crc32c(sql.as_bytes()));
        match applied.get(&version) {
            Some(recorded) if *recorded == now => {}
            Some(recorded) => {
                return Err(Error::MigrationChanged {
                    version,
                    name,
                    recorded: recorded.clone(),
                    now,
                })
            }
            None => {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&version, &name, &now],
                )
                .await?;
                done.push(version);
            }
        }
    }
    tx.commit().await?;
    Ok(done)
}

/// What an enrollment committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enrolled {
    pub face_id: i64,
    /// The position of its `FaceEnrolled` event in the outbox.
    pub outbox_seq: i64,
}

/// The associated data a face's sealed template is bound to.
fn face_aad(subject: &str, face_id: i64) -> Vec<u8> {
    let mut a = subject.as_bytes().to_vec();
    a.push(0);
    a.extend_from_slice(&face_id.to_le_bytes());
    a
}

/// Enroll `template` for `subject` in one transaction: the subject (if new), the face with
/// its template sealed under `key`, and the `FaceEnrolled` outbox event. Acknowledged (Ok) only
/// after the commit.
pub async fn enroll(
    client: &mut Client,
    key: &Key,
    subject: &str,
    template: &Template,
    quality: Option<&serde_json::Value>,
) -> Result<Enrolled> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO subjects (subject) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&subject],
    )
    .await?;
    let face_id: i64 = tx
        .query_one("SELECT nextval('faces_face_id_seq')", &[])
        .await?
        .get(0);
    let sealed = template.seal(key, &face_aad(subject, face_id))?;
    let fp = template.fingerprint();
    tx.execute(
        "INSERT INTO faces (face_id, subject, sealed, key_id, model_id, weights_sha256,
                            preprocessing, quality)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &face_id,
            &subject,
            &sealed,
            &key.id().to_string(),
            &fp.model_id,
            &fp.to_hex(),
            &i32::from(fp.preprocessing),
            &quality,
        ],
    )
    .await?;
    let outbox_seq: i64 = tx
        .query_one(
            "INSERT INTO outbox (kind, subject, face_id, payload)
             VALUES ('FaceEnrolled', $1, $2, $3) RETURNING seq",
            &[&subject, &face_id, &sealed],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(Enrolled {
        face_id,
        outbox_seq,
    })
}

/// A subject's faces, their templates opened with `key` (another key, or a row moved to
/// another subject or face id, is a crypto error).
pub async fn faces(client: &Client, key: &Key, subject: &str) -> Result<Vec<(i64, Template)>> {
    let rows = client
        .query(
            "SELECT face_id, sealed FROM faces WHERE subject = $1 ORDER BY face_id",
            &[&subject],
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            let face_id: i64 = r.get(0);
            let sealed: Vec<u8> = r.get(1);
            Ok((
                face_id,
                Template::open_sealed(key, &face_aad(subject, face_id), &sealed)?,
            ))
        })
        .collect()
}

/// One outbox event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub kind: String,
    pub subject: String,
    pub face_id: Option<i64>,
    pub payload: Option<Vec<u8>>,
}

/// Events not yet marked sent, in order, at most `limit`.
pub async fn unsent(client: &Client, limit: i64) -> Result<Vec<Event>> {
    let rows = client
        .query(
            "SELECT seq, kind, subject, face_id, payload FROM outbox
             WHERE sent_at IS NULL ORDER BY seq LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Event {
            seq: r.get(0),
            kind: r.get(1),
            subject: r.get(2),
            face_id: r.get(3),
            payload: r.get(4),
        })
        .collect())
}
