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
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "subjects_faces_outbox",
        include_str!("../migrations/0001_subjects_faces_outbox.sql"),
    ),
    (
        2,
        "api_keys_metadata",
        include_str!("../migrations/0002_api_keys_metadata.sql"),
    ),
    (
        3,
        "idempotency",
        include_str!("../migrations/0003_idempotency.sql"),
    ),
    (
        4,
        "collections",
        include_str!("../migrations/0004_collections.sql"),
    ),
];

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
pub fn face_aad(subject: &str, face_id: i64) -> Vec<u8> {
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
    let face_id = next_face_id(client).await?;
    enroll_face(client, key, subject, face_id, template, quality, None)
        .await?
        .ok_or_else(|| {
            Error::Invalid("an enrollment without an idempotency key was refused".into())
        })
}

/// A new face id (for [`enroll_face`]: what goes with the face elsewhere — its image — can be
/// written under it before the face is).
pub async fn next_face_id(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT nextval('faces_face_id_seq')", &[])
        .await?
        .get(0))
}

/// [`enroll`] under a face id from [`next_face_id`].
pub async fn enroll_face(
    client: &mut Client,
    key: &Key,
    subject: &str,
    face_id: i64,
    template: &Template,
    quality: Option<&serde_json::Value>,
    idempotency: Option<&Idempotency>,
) -> Result<Option<Enrolled>> {
    let tx = client.transaction().await?;
    if let Some(i) = idempotency {
        // first, so that a concurrent request with the same key waits here for this one
        let taken = tx
            .execute(
                // an expired key (not yet forgotten by the relay) is taken over
                "INSERT INTO idempotency (principal, key, fingerprint, subject, status, answer)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (principal, key) DO UPDATE
                   SET fingerprint = EXCLUDED.fingerprint, subject = EXCLUDED.subject,
                       status = EXCLUDED.status, answer = EXCLUDED.answer, created_at = now()
                   WHERE idempotency.created_at <= now() - make_interval(hours => $7)",
                &[
                    &i.principal,
                    &i.key,
                    &i.fingerprint.as_slice(),
                    &subject,
                    &i32::from(i.status),
                    &i.answer,
                    &IDEMPOTENCY_HOURS,
                ],
            )
            .await?;
        if taken == 0 {
            return Ok(None);
        }
    }
    tx.execute(
        "INSERT INTO subjects (subject) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&subject],
    )
    .await?;
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
    let outbox_seq = event(&tx, "FaceEnrolled", subject, Some(face_id), Some(&sealed)).await?;
    tx.commit().await?;
    Ok(Some(Enrolled {
        face_id,
        outbox_seq,
    }))
}

/// An enrollment's idempotency key and the answer it is to be remembered with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// Who asked (keys are per caller).
    pub principal: String,
    pub key: String,
    /// SHA-256 of what was asked.
    pub fingerprint: [u8; 32],
    pub status: u16,
    pub answer: serde_json::Value,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_HOURS: i32 = 24;

/// The remembered answer to `principal`'s `key`: (fingerprint, status, answer).
pub async fn idempotent_answer(
    client: &Client,
    principal: &str,
    key: &str,
) -> Result<Option<(Vec<u8>, u16, serde_json::Value)>> {
    let row = client
        .query_opt(
            "SELECT fingerprint, status, answer FROM idempotency
             WHERE principal = $1 AND key = $2
               AND created_at > now() - make_interval(hours => $3)",
            &[&principal, &key, &IDEMPOTENCY_HOURS],
        )
        .await?;
    Ok(row.map(|r| {
        let status: i32 = r.get(1);
        (r.get(0), u16::try_from(status).unwrap_or(500), r.get(2))
    }))
}

/// Forget idempotency keys older than [`IDEMPOTENCY_HOURS`]; how many.
pub async fn expire_idempotency(client: &Client) -> Result<u64> {
    Ok(client
        .execute(
            "DELETE FROM idempotency WHERE created_at <= now() - make_interval(hours => $1)",
            &[&IDEMPOTENCY_HOURS],
        )
        .await?)
}

/// Write an outbox event in the transaction of the change it announces; its sequence number.
async fn event(
    tx: &tokio_postgres::Transaction<'_>,
    kind: &str,
    subject: &str,
    face_id: Option<i64>,
    payload: Option<&[u8]>,
) -> Result<i64> {
    Ok(tx
        .query_one(
            "INSERT INTO outbox (kind, subject, face_id, payload) VALUES ($1, $2, $3, $4)
             RETURNING seq",
            &[&kind, &subject, &face_id, &payload],
        )
        .await?
        .get(0))
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

/// The purpose a subject's metadata is sealed for (its associated data is the subject).
const METADATA: &str = "uniface.services.metadata";

/// Seal a subject's metadata (the bytes of the `MetadataSet` event and of the column).
pub fn seal_metadata(key: &Key, subject: &str, metadata: &[u8]) -> Result<Vec<u8>> {
    Ok(uniface::core::crypto::seal(
        key,
        METADATA,
        subject.as_bytes(),
        metadata,
    )?)
}

/// Open what [`seal_metadata`] sealed.
pub fn open_metadata(key: &Key, subject: &str, sealed: &[u8]) -> Result<Vec<u8>> {
    Ok(uniface::core::crypto::open(key, METADATA, subject.as_bytes(), sealed)?.to_vec())
}

/// What a removal committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The faces that went with it.
    pub face_ids: Vec<i64>,
    pub outbox_seq: i64,
}

/// Remove a subject with its faces and metadata, and write its `SubjectRemoved` event, in one
/// transaction; `None` when there is no such subject.
pub async fn remove_subject(client: &mut Client, subject: &str) -> Result<Option<Removed>> {
    let tx = client.transaction().await?;
    // the subject's row locked first: a concurrent enrollment (which key-share-locks it to
    // insert a face) waits, so the faces read next are all the faces that go
    let found = tx
        .query_opt(
            "SELECT subject FROM subjects WHERE subject = $1 FOR UPDATE",
            &[&subject],
        )
        .await?;
    if found.is_none() {
        return Ok(None);
    }
    let face_ids: Vec<i64> = tx
        .query(
            "SELECT face_id FROM faces WHERE subject = $1 ORDER BY face_id",
            &[&subject],
        )
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    tx.execute("DELETE FROM subjects WHERE subject = $1", &[&subject])
        .await?;
    // and the remembered answers that name it
    tx.execute("DELETE FROM idempotency WHERE subject = $1", &[&subject])
        .await?;
    // erasure reaches the outbox too: the sealed templates its enrollment events carry
    forget_payloads(&tx, subject, None).await?;
    let outbox_seq = event(&tx, "SubjectRemoved", subject, None, None).await?;
    tx.commit().await?;
    Ok(Some(Removed {
        face_ids,
        outbox_seq,
    }))
}

/// Drop the templates that outbox events of `subject` (of one face, or all) still carry: sent
/// events are deleted, unsent ones keep their place with an empty payload (a consumer skips an
/// enrollment whose template is gone: the removal follows it).
async fn forget_payloads(
    tx: &tokio_postgres::Transaction<'_>,
    subject: &str,
    face_id: Option<i64>,
) -> Result<()> {
    tx.execute(
        "DELETE FROM outbox WHERE subject = $1 AND ($2::bigint IS NULL OR face_id = $2)
         AND sent_at IS NOT NULL",
        &[&subject, &face_id],
    )
    .await?;
    tx.execute(
        "UPDATE outbox SET payload = NULL WHERE subject = $1
         AND ($2::bigint IS NULL OR face_id = $2) AND payload IS NOT NULL",
        &[&subject, &face_id],
    )
    .await?;
    Ok(())
}

/// Remove one face of `subject` and write its `FaceRemoved` event; `None` when the subject has
/// no such face.
pub async fn remove_face(client: &mut Client, subject: &str, face_id: i64) -> Result<Option<i64>> {
    let tx = client.transaction().await?;
    let gone = tx
        .execute(
            "DELETE FROM faces WHERE subject = $1 AND face_id = $2",
            &[&subject, &face_id],
        )
        .await?;
    if gone == 0 {
        return Ok(None);
    }
    forget_payloads(&tx, subject, Some(face_id)).await?;
    let seq = event(&tx, "FaceRemoved", subject, Some(face_id), None).await?;
    tx.commit().await?;
    Ok(Some(seq))
}

/// Replace a subject's metadata (sealed) and write its `MetadataSet` event; `None` when there
/// is no such subject.
pub async fn set_metadata(
    client: &mut Client,
    key: &Key,
    subject: &str,
    metadata: &[u8],
) -> Result<Option<i64>> {
    let sealed = seal_metadata(key, subject, metadata)?;
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE subjects SET metadata = $2 WHERE subject = $1",
            &[&subject, &sealed],
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    let seq = event(&tx, "MetadataSet", subject, None, Some(&sealed)).await?;
    tx.commit().await?;
    Ok(Some(seq))
}

/// A subject as the template service shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SubjectInfo {
    pub subject: String,
    pub faces: Vec<FaceInfo>,
    /// The metadata, opened (empty when none was set).
    #[serde(skip)]
    pub metadata: Vec<u8>,
    pub created_at: String,
}

/// One face of a subject (never its template).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FaceInfo {
    pub face_id: i64,
    pub model_id: String,
    pub quality: Option<serde_json::Value>,
    pub created_at: String,
}

/// A subject with its faces; `None` when there is no such subject.
pub async fn subject(client: &Client, key: &Key, subject: &str) -> Result<Option<SubjectInfo>> {
    let Some(row) = client
        .query_opt(
            "SELECT metadata, created_at::text FROM subjects WHERE subject = $1",
            &[&subject],
        )
        .await?
    else {
        return Ok(None);
    };
    let sealed: Vec<u8> = row.get(0);
    let metadata = match sealed.is_empty() {
        true => Vec::new(),
        false => open_metadata(key, subject, &sealed)?,
    };
    let faces = client
        .query(
            "SELECT face_id, model_id, quality, created_at::text FROM faces WHERE subject = $1
             ORDER BY face_id",
            &[&subject],
        )
        .await?
        .into_iter()
        .map(|r| FaceInfo {
            face_id: r.get(0),
            model_id: r.get(1),
            quality: r.get(2),
            created_at: r.get(3),
        })
        .collect();
    Ok(Some(SubjectInfo {
        subject: subject.to_owned(),
        faces,
        metadata,
        created_at: row.get(1),
    }))
}

/// The subjects of `collection` after `cursor` (a subject id of it) in order, at most `limit`,
/// with their face counts; the ids as the collection's callers know them.
pub async fn list_subjects(
    client: &Client,
    collection: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, i64)>> {
    let prefix = crate::collection::prefix(collection);
    let after = cursor.map(|c| crate::collection::stored(collection, c));
    let rows = client
        .query(
            "SELECT s.subject, count(f.face_id) FROM subjects s
             LEFT JOIN faces f ON f.subject = s.subject
             WHERE ($1::text IS NULL OR s.subject > $1)
               AND CASE WHEN $3 = '' THEN strpos(s.subject, chr(31)) = 0
                        ELSE starts_with(s.subject, $3) END
             GROUP BY s.subject ORDER BY s.subject LIMIT $2",
            &[&after, &limit, &prefix],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let stored: String = r.get(0);
            (crate::collection::split(&stored).1.to_owned(), r.get(1))
        })
        .collect())
}

/// One stored face, sealed as in the table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFace {
    pub face_id: i64,
    pub subject: String,
    pub sealed: Vec<u8>,
}

/// Faces with ids above `after`, in id order, at most `limit` (a paged copy: bootstrap, audit).
pub async fn face_page(
    client: &impl tokio_postgres::GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredFace>> {
    let rows = client
        .query(
            "SELECT face_id, subject, sealed FROM faces WHERE face_id > $1 ORDER BY face_id
             LIMIT $2",
            &[&after, &limit],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredFace {
            face_id: r.get(0),
            subject: r.get(1),
            sealed: r.get(2),
        })
        .collect())
}

/// How far the outbox is: (last sequence number written, events not yet sent).
pub async fn outbox_position(client: &Client) -> Result<(i64, i64)> {
    let r = client
        .query_one(
            "SELECT coalesce((SELECT max(seq) FROM outbox), 0),
                    (SELECT count(*) FROM outbox WHERE sent_at IS NULL)",
            &[],
        )
        .await?;
    Ok((r.get(0), r.get(1)))
}
