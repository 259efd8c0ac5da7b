//! The consistency audit between PostgreSQL and a replica's galleries: the count and, per
//! collection and shard, a digest of (face id, subject, SHA-256 of the template's vector) on
//! both sides; the faces
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

use crate::replica::Galleries;
use crate::{collection, db, Error, Result};

/// How many face ids of each kind of drift a report lists (the counts are complete).
pub const LISTED: usize = 100;

/// One shard's digests, in one collection's gallery.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShardDigest {
    pub collection: String,
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

/// Audit a replica's galleries against the database (the shards they hold), collection by
/// collection (a face in another collection's gallery counts as extra there and missing in its
/// own); repair the drift when asked.
pub async fn audit(
    client: &Client,
    key: &Key,
    galleries: &Galleries,
    repair: bool,
) -> Result<AuditReport> {
    let default = galleries.default_gallery()?;
    let router = default.router();
    let local = default.local_shards();
    // the database side, the shards this replica holds, by collection
    let mut database: BTreeMap<String, Entries> = BTreeMap::new();
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
            let c = collection::split(&f.subject).0.to_owned();
            database
                .entry(c)
                .or_default()
                .insert(f.face_id, (f.subject, vector_hash(&t.vector())));
            templates.insert(f.face_id, t);
        }
    }
    // the replica side
    let held = galleries.all();
    let replica: BTreeMap<String, Entries> = tokio::task::spawn_blocking(move || {
        held.iter()
            .map(|(c, g)| {
                let mut out = BTreeMap::new();
                for s in g.list() {
                    for id in g.get(&s).map(|e| e.templates).unwrap_or_default() {
                        if let Some((subject, v)) = g.template(id) {
                            out.insert(id as i64, (subject, vector_hash(&v)));
                        }
                    }
                }
                (c.clone(), out)
            })
            .collect()
    })
    .await
    .map_err(|e| Error::Invalid(format!("reading the gallery panicked: {e}")))?;
    let empty = Entries::new();
    let collections: std::collections::BTreeSet<&String> =
        database.keys().chain(replica.keys()).collect();
    let (mut shards, mut missing, mut extra, mut different) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // (collection, face ids) to repair
    let mut drift: Vec<(String, Vec<i64>, Vec<i64>)> = Vec::new();
    for c in collections {
        let d = database.get(c).unwrap_or(&empty);
        let r = replica.get(c).unwrap_or(&empty);
        for &s in &local {
            let on = |e: &Entries| {
                digest(
                    e.iter()
                        .filter(|(_, (subject, _))| router.shard_of(subject) == s),
                )
            };
            let (dd, rd) = (on(d), on(r));
            shards.push(ShardDigest {
                collection: c.clone(),
                shard: s,
                matches: dd == rd,
                database: dd,
                replica: rd,
            });
        }
        let m: Vec<i64> = d.keys().filter(|id| !r.contains_key(id)).copied().collect();
        let x: Vec<i64> = r.keys().filter(|id| !d.contains_key(id)).copied().collect();
        let f: Vec<i64> = d
            .iter()
            .filter(|(id, e)| r.get(id).is_some_and(|o| o != *e))
            .map(|(id, _)| *id)
            .collect();
        if !(m.is_empty() && x.is_empty() && f.is_empty()) {
            let add = m.iter().chain(&f).copied().collect();
            let remove = x.iter().chain(&f).copied().collect();
            drift.push((c.clone(), add, remove));
        }
        missing.extend(m);
        extra.extend(x);
        different.extend(f);
    }
    let mut repaired = 0;
    if repair && !drift.is_empty() {
        // no event is applied from here to the last change; and what the database says now
        // decides: a face erased or enrolled since it was read above (its event applied
        // meanwhile) is left as it is
        let _paused = galleries.changes.lock().await;
        let named: Vec<i64> = drift
            .iter()
            .flat_map(|(_, add, remove)| add.iter().chain(remove))
            .copied()
            .collect();
        let present: std::collections::BTreeSet<i64> = client
            .query(
                "SELECT face_id FROM faces WHERE face_id = ANY($1)",
                &[&named],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let drift: Vec<(String, Vec<i64>, Vec<i64>)> = drift
            .into_iter()
            .map(|(c, add, remove)| {
                let add: Vec<i64> = add.into_iter().filter(|id| present.contains(id)).collect();
                // an "extra" face that is in the database now was enrolled since the read
                let remove = remove
                    .into_iter()
                    .filter(|id| !present.contains(id) || add.contains(id))
                    .collect();
                (c, add, remove)
            })
            .collect();
        let subjects: BTreeMap<i64, String> = database
            .values()
            .flat_map(|e| e.iter().map(|(id, (s, _))| (*id, s.clone())))
            .collect();
        let galleries: Vec<(Arc<Gallery>, Vec<i64>, Vec<i64>)> = drift
            .into_iter()
            .map(|(c, add, remove)| {
                let g = match add.is_empty() {
                    true => galleries.get(&c),
                    false => Some(galleries.get_or_make(&c)?),
                };
                Ok(g.map(|g| (g, add, remove)))
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        repaired = tokio::task::spawn_blocking(move || -> Result<usize> {
            let mut n = 0;
            for (g, add, remove) in &galleries {
                for id in remove {
                    n += usize::from(g.remove_template(*id as u64)?);
                }
                for id in add {
                    g.enroll_as(&subjects[id], *id as u64, &templates[id])?;
                    n += 1;
                }
                g.checkpoint()?;
            }
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
        database_faces: database.values().map(BTreeMap::len).sum(),
        replica_faces: replica.values().map(BTreeMap::len).sum(),
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
