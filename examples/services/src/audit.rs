//! The consistency audit between PostgreSQL and a replica's gallery: the count and, per shard,
//! a digest of (face id, subject, SHA-256 of the template's vector) on both sides; the faces
//! missing from the replica, those it holds that the database does not, and those whose
//! template differs. `repair` re-applies what is missing or different and removes what is
//! extra. Run it once the replicas are caught up (`/readyz`): events still in flight show up
//! as drift.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use uniface::core::crypto::Key;
use uniface::index::Gallery;
use uniface::Template;

use crate::{db, Error, Result};

/// How many face ids of each kind of drift a report lists (the counts are complete).
pub const LISTED: usize = 100;

/// One shard's digests.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShardDigest {
    pub shard: usize,
    pub database: String,
    pub replica: String,
    pub matches: bool,
}

/// What [`audit`] found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditReport {
    pub clean: bool,
    pub database_faces: usize,
    pub replica_faces: usize,
    pub shards: Vec<ShardDigest>,
    pub missing: usize,
    pub extra: usize,
    pub different: usize,
    /// The first [`LISTED`] face ids of each kind.
    pub missing_ids: Vec<i64>,
    pub extra_ids: Vec<i64>,
    pub different_ids: Vec<i64>,
    /// Changes made by `repair`.
    pub repaired: usize,
}

type Entries = BTreeMap<i64, (String, [u8; 32])>;

fn vector_hash(v: &[f32]) -> [u8; 32] {
    let mut h = Sha256::new();
    for x in v {
        h.update(x.to_le_bytes());
    }
    h.finalize().into()
}

fn digest<'a>(entries: impl Iterator<Item = (&'a i64, &'a (String, [u8; 32]))>) -> String {
    let mut h = Sha256::new();
    for (id, (subject, hash)) in entries {
        h.update(id.to_le_bytes());
        h.update((subject.len() as u64).to_le_bytes());
        h.update(subject.as_bytes());
        h.update(hash);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Audit `gallery` against the database (the shards it holds); repair the drift when asked.
pub async fn audit(
    client: &Client,
    key: &Key,
    gallery: Arc<Gallery>,
    repair: bool,
) -> Result<AuditReport> {
    let router = gallery.router();
    let local = gallery.local_shards();
    // the database side, the shards this replica holds
    let mut database: Entries = BTreeMap::new();
    let mut templates: BTreeMap<i64, Template> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = db::face_page(client, after, 2000).await?;
        let Some(last) = page.last() else { break };
        after = last.face_id;
        for f in page {
            if !local.contains(&router.shard_of(&f.subject)) {
                continue;
            }
            let t = Template::open_sealed(key, &db::face_aad(&f.subject, f.face_id), &f.sealed)?;
            database.insert(f.face_id, (f.subject, vector_hash(&t.vector())));
            templates.insert(f.face_id, t);
        }
    }
    // the replica side
    let g = gallery.clone();
    let replica: Entries = tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for s in g.list() {
            for id in g.get(&s).map(|e| e.templates).unwrap_or_default() {
                if let Some((subject, v)) = g.template(id) {
                    out.insert(id as i64, (subject, vector_hash(&v)));
                }
            }
        }
        out
    })
    .await
    .map_err(|e| Error::Invalid(format!("reading the gallery panicked: {e}")))?;
    let shards = local
        .iter()
        .map(|&s| {
            let on = |e: &Entries| {
                digest(
                    e.iter()
                        .filter(|(_, (subject, _))| router.shard_of(subject) == s),
                )
            };
            let (d, r) = (on(&database), on(&replica));
            ShardDigest {
                shard: s,
                matches: d == r,
                database: d,
                replica: r,
            }
        })
        .collect::<Vec<_>>();
    let missing: Vec<i64> = database
        .keys()
        .filter(|id| !replica.contains_key(id))
        .copied()
        .collect();
    let extra: Vec<i64> = replica
        .keys()
        .filter(|id| !database.contains_key(id))
        .copied()
        .collect();
    let different: Vec<i64> = database
        .iter()
        .filter(|(id, e)| replica.get(id).is_some_and(|r| r != *e))
        .map(|(id, _)| *id)
        .collect();
    let mut repaired = 0;
    if repair && !(missing.is_empty() && extra.is_empty() && different.is_empty()) {
        let g = gallery.clone();
        let (missing, extra, different) = (missing.clone(), extra.clone(), different.clone());
        let subjects: BTreeMap<i64, String> = database
            .iter()
            .map(|(id, (s, _))| (*id, s.clone()))
            .collect();
        repaired = tokio::task::spawn_blocking(move || -> Result<usize> {
            let mut n = 0;
            for id in extra.iter().chain(&different) {
                n += usize::from(g.remove_template(*id as u64)?);
            }
            for id in missing.iter().chain(&different) {
                g.enroll_as(&subjects[id], *id as u64, &templates[id])?;
                n += 1;
            }
            g.checkpoint()?;
            Ok(n)
        })
        .await
        .map_err(|e| Error::Invalid(format!("repairing the gallery panicked: {e}")))??;
    }
    let clean = missing.is_empty()
        && extra.is_empty()
        && different.is_empty()
        && shards.iter().all(|s| s.matches);
    Ok(AuditReport {
        clean,
        database_faces: database.len(),
        replica_faces: replica.len(),
        shards,
        missing: missing.len(),
        extra: extra.len(),
        different: different.len(),
        missing_ids: missing.into_iter().take(LISTED).collect(),
        extra_ids: extra.into_iter().take(LISTED).collect(),
        different_ids: different.into_iter().take(LISTED).collect(),
        repaired,
    })
}
