//! Encrypted galleries (`docs/GALLERY.md`, "Encryption at rest") on real templates: dlib's
//! descriptors of the LFW photos in `../shared/data/golden`.
//!
//! * no 16-byte window of any template's f32, f16 or i8 encoding (as the graph stores them)
//!   is in any file of an encrypted gallery, while the same scan finds them in a plain one;
//! * a wrong or missing key, a flipped ciphertext bit (checksums repaired, as an attacker
//!   would), a record moved to another position: typed errors, never a wrong answer;
//! * crypto-erasure: a copy of the folder taken before `remove_subject` cannot give the
//!   subject back with the current key logs, and can with its own (older) ones;
//! * key rotation, including one that fails part-way; the change feed between encrypted
//!   galleries with different keys.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uniface::core::crypto::{Key, KeyProvider};
use uniface::core::template::crc32c;
use uniface::core::ErrorKind;
use uniface::index::{Gallery, GalleryOptions, GraphStatus, HnswParams, OpenOptions};
use uniface::{ElementType, ModelFingerprint, Template};

/// (subject, descriptor) for every golden LFW face: the person's name from the path.
fn lfw_templates() -> Vec<(String, Vec<f32>)> {
    let faces: Vec<(String, Vec<f32>)> = common::golden_faces()
        .into_iter()
        .filter(|f| f.image.starts_with("lfw/"))
        .map(|f| {
            let person = f.image.split('/').nth(1).unwrap_or("?").to_owned();
            (person, f.descriptor)
        })
        .collect();
    assert!(
        faces.len() >= 30,
        "{} LFW faces in golden.json",
        faces.len()
    );
    faces
}

fn template(v: &[f32]) -> Template {
    Template::new(ModelFingerprint::dlib_resnet_v1(), v).unwrap()
}

fn provider(k: &Key) -> Option<Arc<dyn KeyProvider>> {
    Some(Arc::new(k.clone()))
}

fn options(graph: ElementType, key: Option<&Key>) -> GalleryOptions {
    GalleryOptions {
        shards: 2,
        hnsw: HnswParams {
            graph,
            ..HnswParams::default()
        },
        encryption: key.and_then(provider),
        ..GalleryOptions::default()
    }
}

fn open(
    dir: &Path,
    key: Option<&Key>,
) -> uniface::index::Result<(Gallery, uniface::index::OpenReport)> {
    let o = OpenOptions {
        key: key.and_then(provider),
        ..OpenOptions::default()
    };
    Gallery::open_with_options(dir, &ModelFingerprint::dlib_resnet_v1(), &o)
}

/// Enroll every face, index, save the graphs, checkpoint, rebuild, then enroll some faces again
/// (so that the log holds records too) and save the graphs once more.
fn fill(g: &Gallery, faces: &[(String, Vec<f32>)]) {
    let ts: Vec<Template> = faces.iter().map(|f| template(&f.1)).collect();
    let items: Vec<(&str, &Template)> = faces.iter().map(|f| f.0.as_str()).zip(&ts).collect();
    g.enroll_many(&items[..items.len() / 2]).unwrap();
    for (s, t) in &items[items.len() / 2..] {
        g.enroll(s, t).unwrap();
    }
    g.update_metadata(&faces[0].0, b"passport 0123").unwrap();
    g.index_pending(usize::MAX).unwrap();
    assert!(g.save_graphs().unwrap() > 0);
    g.checkpoint().unwrap();
    g.rebuild(g.manifest().hnsw).unwrap();
    for (s, t) in &items[..8] {
        g.enroll(&format!("{s} again"), t).unwrap();
    }
    g.index_pending(usize::MAX).unwrap();
    assert!(g.save_graphs().unwrap() > 0);
}

/// Every 16-byte window, at element boundaries, of each template's encodings.
fn windows(faces: &[(String, Vec<f32>)], element: ElementType) -> HashSet<[u8; 16]> {
    let mut out = HashSet::new();
    for (_, v) in faces {
        let (bytes, step): (Vec<u8>, usize) = match element {
            ElementType::F32 => (v.iter().flat_map(|x| x.to_le_bytes()).collect(), 4),
            ElementType::F16 => (
                v.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                2,
            ),
            ElementType::I8 => (usearch_i8(v), 1),
        };
        for start in (0..=bytes.len() - 16).step_by(step) {
            out.insert(bytes[start..start + 16].try_into().unwrap());
        }
    }
    out
}

/// The graph's i8 encoding as usearch makes it: the vector scaled to unit length, × 127,
/// truncated towards zero (found by locating the templates in a plain gallery's graph file;
/// the test of the test below fails if this is not what the file holds).
fn usearch_i8(v: &[f32]) -> Vec<u8> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter()
        .map(|x| (x / norm * 127.0).clamp(-127.0, 127.0) as i8 as u8)
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// (windows found, distinct windows found, files scanned, bytes scanned) over every file
/// under `dir`.
fn scan(dir: &Path, wanted: &HashSet<[u8; 16]>) -> (usize, usize, usize, usize) {
    let (mut hits, mut files, mut bytes) = (0, 0, 0);
    let mut found: HashSet<[u8; 16]> = HashSet::new();
    for f in files_under(dir) {
        let b = std::fs::read(&f).unwrap();
        files += 1;
        bytes += b.len();
        for w in b.windows(16) {
            let w: [u8; 16] = w.try_into().unwrap();
            if wanted.contains(&w) {
                hits += 1;
                found.insert(w);
            }
        }
    }
    (hits, found.len(), files, bytes)
}

#[test]
fn no_window_of_any_template_encoding_is_in_an_encrypted_gallery() {
    let faces = lfw_templates();
    let key = Key::generate().unwrap();
    for graph in [ElementType::F32, ElementType::F16, ElementType::I8] {
        let tmp = tempfile::tempdir().unwrap();
        let (plain, sealed) = (tmp.path().join("plain"), tmp.path().join("sealed"));
        fill(
            &Gallery::create(&plain, &options(graph, None)).unwrap(),
            &faces,
        );
        fill(
            &Gallery::create(&sealed, &options(graph, Some(&key))).unwrap(),
            &faces,
        );
        for files in [&plain, &sealed] {
            let names: Vec<String> = files_under(files)
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            for expected in ["wal.log", "templates.snap", "hnsw.usearch"] {
                assert!(
                    names.iter().any(|n| n == expected),
                    "{expected} missing: {names:?}"
                );
            }
        }
        for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
            let wanted = windows(&faces, element);
            let (hits, _, files, bytes) = scan(&sealed, &wanted);
            eprintln!(
                "graph {}: {} windows of the {} encoding: {hits} hits in {files} files ({bytes} bytes) of the encrypted gallery",
                graph.name(),
                wanted.len(),
                element.name()
            );
            assert_eq!(
                hits,
                0,
                "graph {}, {} windows found",
                graph.name(),
                element.name()
            );
            // the test of the test: the plain gallery holds the f32 values (log, snapshot) and
            // the graph's encoding — every single window of them
            let (plain_hits, distinct, _, _) = scan(&plain, &wanted);
            eprintln!("  the plain gallery: {plain_hits} hits, {distinct} distinct windows");
            if element == ElementType::F32 || element == graph {
                assert_eq!(
                    distinct,
                    wanted.len(),
                    "graph {}: the scan finds only {distinct} of the {} windows of the {} encoding in the plain gallery",
                    graph.name(),
                    wanted.len(),
                    element.name()
                );
            }
        }
        // and the encrypted gallery answers as the plain one does
        let (p, _) = open(&plain, None).unwrap();
        let (s, report) = open(&sealed, Some(&key)).unwrap();
        assert!(report.is_clean(), "{:?}", report.messages());
        assert!(matches!(report.shards[0].graph, GraphStatus::Loaded { .. }));
        assert_eq!(p.len(), s.len());
        for (_, v) in &faces {
            let a = p.identify(&template(v), 3, 1e-3).unwrap();
            let b = s.identify(&template(v), 3, 1e-3).unwrap();
            assert_eq!(a.candidates, b.candidates);
        }
        assert_eq!(s.get(&faces[0].0).unwrap().metadata, b"passport 0123");
        assert!(s.check().unwrap().is_clean());
    }
}

/// Recompute every frame checksum of a log (`UFWL`, 20-byte header) or key log (`UFKL`):
/// what an attacker who alters a byte would do to get past the checksums.
fn refresh_frame_checksums(b: &mut [u8]) {
    let mut at = 20;
    while at + 8 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let end = (at + 8 + len).min(b.len());
        let crc = crc32c(&b[at + 8..end]);
        b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

/// Offsets of the sealed envelopes (`UFS1`) in `b`.
fn envelopes(b: &[u8]) -> Vec<usize> {
    b.windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"UFS1")
        .map(|(i, _)| i)
        .collect()
}

fn kind(r: uniface::index::Result<(Gallery, uniface::index::OpenReport)>) -> (ErrorKind, String) {
    match r {
        Ok(_) => panic!("the damaged gallery opened"),
        Err(e) => (e.kind(), e.to_string()),
    }
}

#[test]
fn wrong_missing_key_altered_and_moved_bytes_are_typed_errors() {
    let faces = lfw_templates();
    let key = Key::generate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("g");
    {
        let g = Gallery::create(&dir, &options(ElementType::I8, Some(&key))).unwrap();
        fill(&g, &faces);
        // single-record frames at the log's end, for the "moved" case
        g.enroll("mover 1", &template(&faces[1].1)).unwrap();
        g.enroll("mover 1", &template(&faces[2].1)).unwrap();
    }
    let copy = |name: &str| {
        let to = tmp.path().join(name);
        copy_dir(&dir, &to);
        to
    };
    // a wrong key, no key, a key for a plain gallery
    let (k, m) = kind(open(&dir, Some(&Key::generate().unwrap())));
    assert_eq!(k, ErrorKind::Crypto, "{m}");
    assert!(
        m.contains("keys.log") && m.contains("sealed under key"),
        "{m}"
    );
    let (k, m) = kind(open(&dir, None));
    assert_eq!(k, ErrorKind::Crypto, "{m}");
    assert!(m.contains("encrypted"), "{m}");
    // a missing key log
    let d = copy("no-keys");
    let shard = |d: &Path, i: usize| d.join(format!("shard-{i:03}"));
    std::fs::remove_file(shard(&d, 0).join("keys.log")).unwrap();
    let (k, m) = kind(open(&d, Some(&key)));
    assert_eq!(k, ErrorKind::NotFound, "{m}");
    // which shard holds "mover 1"
    let (g, _) = open(&dir, Some(&key)).unwrap();
    let mover = g.router().shard_of("mover 1");
    drop(g);
    // one flipped ciphertext bit in the log, checksums repaired
    let d = copy("flipped-log");
    let log = shard(&d, mover).join("wal.log");
    let mut b = std::fs::read(&log).unwrap();
    let last = *envelopes(&b).last().unwrap();
    b[last + 40] ^= 0x10;
    refresh_frame_checksums(&mut b);
    std::fs::write(&log, &b).unwrap();
    let (k, m) = kind(open(&d, Some(&key)));
    assert_eq!(k, ErrorKind::Crypto, "{m}");
    assert!(
        m.contains("wal.log") && m.contains("does not authenticate"),
        "{m}"
    );
    // two records swapped (each keeps its sequence number: each is now where the other was)
    let d = copy("moved");
    let log = shard(&d, mover).join("wal.log");
    let mut b = std::fs::read(&log).unwrap();
    let frames = frame_offsets(&b);
    let (x, y) = (frames[frames.len() - 2], frames[frames.len() - 1]);
    let body = |at: usize| {
        at + 8 + 12..at + 8 + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
    };
    let (bx, by) = (b[body(x)].to_vec(), b[body(y)].to_vec());
    assert_eq!(bx.len(), by.len(), "the two records are alike in size");
    let (rx, ry) = (body(x), body(y));
    b[rx].copy_from_slice(&by);
    b[ry].copy_from_slice(&bx);
    refresh_frame_checksums(&mut b);
    std::fs::write(&log, &b).unwrap();
    let (k, m) = kind(open(&d, Some(&key)));
    assert_eq!(k, ErrorKind::Crypto, "{m}");
    // a flipped bit in a snapshot block, its checksum repaired
    let d = copy("flipped-snapshot");
    let snap = shard(&d, 0).join("templates.snap");
    let mut b = std::fs::read(&snap).unwrap();
    let e = envelopes(&b)[0];
    b[e + 50] ^= 1;
    let n = b.len() - 4;
    let crc = crc32c(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&snap, &b).unwrap();
    let (k, m) = kind(open(&d, Some(&key)));
    assert_eq!(k, ErrorKind::Crypto, "{m}");
    assert!(m.contains("templates.snap"), "{m}");
    // a subject's block dropped from the snapshot (its count and checksum repaired): the
    // sealed index of the snapshot's subjects says so
    let d = copy("dropped-block");
    let snap = shard(&d, 0).join("templates.snap");
    let b = std::fs::read(&snap).unwrap();
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let first = 30; // magic, version, sequence, highest id, dimension, count
    let name_len = u32_at(first);
    let block_len = u32_at(first + 4 + name_len);
    let next = first + 4 + name_len + 4 + block_len;
    let mut cut = b[..first].to_vec();
    let count = u32_at(26) - 1;
    cut[26..30].copy_from_slice(&(count as u32).to_le_bytes());
    cut.extend_from_slice(&b[next..b.len() - 4]);
    let crc = crc32c(&cut);
    cut.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(&snap, &cut).unwrap();
    let (k, m) = kind(open(&d, Some(&key)));
    assert_eq!(k, ErrorKind::Crypto, "{m}");
    assert!(m.contains("sealed index"), "{m}");
    // a flipped bit in a wrapped key
    let d = copy("flipped-key");
    let keys = shard(&d, 0).join("keys.log");
    let mut b = std::fs::read(&keys).unwrap();
    let e = envelopes(&b)[0];
    b[e + 45] ^= 4;
    refresh_frame_checksums(&mut b);
    std::fs::write(&keys, &b).unwrap();
    let (k, m) = kind(open(&d, Some(&key)));
    assert_eq!(k, ErrorKind::Crypto, "{m}");
    assert!(m.contains("keys.log"), "{m}");
    // a flipped bit in the graph, its checksum file repaired: the graph is derived data, so it
    // is dropped (reported) and the templates are searched exactly — the answers stay right
    let d = copy("flipped-graph");
    let graph = shard(&d, 0).join("hnsw.usearch");
    let mut b = std::fs::read(&graph).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x80;
    std::fs::write(&graph, &b).unwrap();
    let sum = shard(&d, 0).join("hnsw.sum");
    let mut s = std::fs::read(&sum).unwrap();
    s[28..32].copy_from_slice(&crc32c(&b).to_le_bytes());
    let own = crc32c(&s[..32]);
    s[32..36].copy_from_slice(&own.to_le_bytes());
    std::fs::write(&sum, &s).unwrap();
    let (g, report) = open(&d, Some(&key)).unwrap();
    match &report.shards[0].graph {
        GraphStatus::Dropped { reason } => {
            assert!(reason.contains("cannot be decrypted"), "{reason}")
        }
        other => panic!("a damaged graph was used: {other:?}"),
    }
    let (reference, _) = open(&dir, Some(&key)).unwrap();
    for (_, v) in &faces {
        let a = reference.identify(&template(v), 3, 1e-3).unwrap();
        assert_eq!(
            g.identify(&template(v), 3, 1e-3).unwrap().candidates,
            a.candidates
        );
    }
    // a plain gallery refuses a key
    let plain = tmp.path().join("plain");
    Gallery::create(&plain, &options(ElementType::I8, None)).unwrap();
    let (k, m) = kind(open(&plain, Some(&key)));
    assert_eq!(k, ErrorKind::InvalidArgument, "{m}");
}

fn frame_offsets(b: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 20;
    while at + 8 <= b.len() {
        out.push(at);
        at += 8 + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    }
    out
}

fn all_vectors(g: &Gallery) -> Vec<Vec<f32>> {
    g.list()
        .iter()
        .flat_map(|s| g.get(s).unwrap().templates)
        .map(|id| g.template(id).unwrap().1)
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let t = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else if p.file_name().unwrap() != "LOCK" {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

#[test]
fn a_copy_taken_before_a_removal_cannot_give_the_subject_back_with_the_current_key_logs() {
    let faces = lfw_templates();
    let key = Key::generate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let g = Gallery::create(&live, &options(ElementType::I8, Some(&key))).unwrap();
    fill(&g, &faces);
    // the subject: in the snapshot, in the log (a second template after the checkpoint) and in
    // the saved graph
    let subject = faces[0].0.clone();
    let again = format!("{subject} again");
    let theirs: Vec<Vec<f32>> = [&subject, &again]
        .iter()
        .flat_map(|s| g.get(s).unwrap().templates)
        .map(|id| g.template(id).unwrap().1)
        .collect();
    assert!(theirs.len() >= 2);
    // and one whose only template is removed by id after the backup: its key still opens
    // that template in the older files, so `remove_subject` destroys it too
    let third = faces
        .iter()
        .rev()
        .map(|f| f.0.clone())
        .find(|s| *s != subject && g.get(s).is_some_and(|x| x.templates.len() == 1))
        .unwrap();
    let third_id = g.get(&third).unwrap().templates[0];
    let third_vector = g.template(third_id).unwrap().1;
    let backup = tmp.path().join("backup");
    copy_dir(&live, &backup);
    assert!(g.remove_template(third_id).unwrap());
    assert!(g.get(&third).is_none());
    let total = g.len();
    assert_eq!(
        g.remove_subject(&subject).unwrap() + g.remove_subject(&again).unwrap(),
        theirs.len()
    );
    assert_eq!(g.remove_subject(&third).unwrap(), 0);
    // no checkpoint: the live files still hold the ciphertext, but its key is gone
    drop(g);
    let (g, report) = open(&live, Some(&key)).unwrap();
    assert!(report.is_clean(), "{:?}", report.messages());
    assert!(g.get(&subject).is_none() && g.get(&again).is_none());
    assert_eq!(g.len(), total - theirs.len());
    drop(g);
    // the backup with the current key logs
    let mixed = tmp.path().join("mixed");
    copy_dir(&backup, &mixed);
    for i in 0..2 {
        let name = format!("shard-{i:03}/keys.log");
        std::fs::copy(live.join(&name), mixed.join(&name)).unwrap();
    }
    let (g, report) = open(&mixed, Some(&key)).unwrap();
    assert!(g.get(&subject).is_none() && g.get(&again).is_none());
    // (reported, not silent: the backup's log holds no removal of them)
    let left_out: Vec<&String> = report
        .shards
        .iter()
        .flat_map(|s| &s.erased_without_removal)
        .collect();
    assert!(
        left_out.contains(&&subject) && left_out.contains(&&again),
        "{left_out:?}"
    );
    assert!(
        left_out.contains(&&third) && g.get(&third).is_none(),
        "{left_out:?}"
    );
    assert!(!all_vectors(&g).contains(&third_vector));
    assert!(report
        .messages()
        .iter()
        .any(|m| m.contains("no removal of them")));
    assert_eq!(g.len(), total - theirs.len());
    let all = all_vectors(&g);
    assert!(
        theirs.iter().all(|t| !all.contains(t)),
        "an erased template came back"
    );
    // the backup's graph is sealed under a destroyed key: dropped, not used
    let shard = g.router().shard_of(&subject);
    assert!(
        matches!(&report.shards[shard].graph, GraphStatus::Dropped { reason } if reason.contains("destroyed")),
        "{:?}",
        report.shards[shard].graph
    );
    drop(g);
    // the backup with its own key logs: the subject is there (hence: key-log backups must be
    // kept apart and expired, docs/GALLERY.md)
    let (g, _) = open(&backup, Some(&key)).unwrap();
    assert!(all_vectors(&g).contains(&third_vector));
    let back: Vec<Vec<f32>> = g
        .get(&subject)
        .unwrap()
        .templates
        .into_iter()
        .chain(g.get(&again).unwrap().templates)
        .map(|id| g.template(id).unwrap().1)
        .collect();
    assert_eq!(back, theirs);
    drop(g);
    // after a checkpoint the ciphertext leaves the files as well
    let (g, _) = open(&live, Some(&key)).unwrap();
    g.checkpoint().unwrap();
    assert!(g.check().unwrap().is_clean());
}

#[test]
fn rotation_rewraps_the_keys_and_an_interrupted_one_finishes_at_the_next_open() {
    let faces = lfw_templates();
    let (old, new) = (Key::generate().unwrap(), Key::generate().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("g");
    let g = Gallery::create(&dir, &options(ElementType::I8, Some(&old))).unwrap();
    fill(&g, &faces);
    let before = std::fs::read(dir.join("shard-000/wal.log")).unwrap();
    g.rotate_kek(&new).unwrap();
    assert_eq!(g.key_id(), Some(new.id()));
    // no template was written again
    assert_eq!(
        std::fs::read(dir.join("shard-000/wal.log")).unwrap(),
        before
    );
    g.enroll("after rotation", &template(&faces[3].1)).unwrap();
    let n = g.len();
    drop(g);
    let (k, m) = kind(open(&dir, Some(&old)));
    assert_eq!(k, ErrorKind::Crypto, "{m}");
    let (g, report) = open(&dir, Some(&new)).unwrap();
    assert!(report.is_clean());
    assert_eq!(g.len(), n);
    drop(g);
    // a rotation that stopped after one shard: shard 0 re-wrapped under `third`, shard 1 still
    // under `new` (its key log as it was before: rotation changes no key); `previous_key`
    // finishes it
    let third = Key::generate().unwrap();
    let k1 = std::fs::read(dir.join("shard-001/keys.log")).unwrap();
    let (g, _) = open(&dir, Some(&new)).unwrap();
    g.rotate_kek(&third).unwrap();
    drop(g);
    std::fs::write(dir.join("shard-001/keys.log"), &k1).unwrap();
    let (k, m) = kind(open(&dir, Some(&third)));
    assert_eq!(k, ErrorKind::Crypto, "{m}");
    assert!(m.contains("shard-001"), "{m}");
    let o = OpenOptions {
        key: provider(&third),
        previous_key: provider(&new),
        ..OpenOptions::default()
    };
    let (g, report) =
        Gallery::open_with_options(&dir, &ModelFingerprint::dlib_resnet_v1(), &o).unwrap();
    assert!(!report.shards[0].keys_rewrapped && report.shards[1].keys_rewrapped);
    assert!(report.messages().iter().any(|m| m.contains("re-wrapped")));
    assert_eq!(g.len(), n);
    drop(g);
    let (g, report) = open(&dir, Some(&third)).unwrap();
    assert!(report.is_clean());
    assert_eq!(g.len(), n);
}

#[test]
fn the_change_feed_carries_plain_changes_between_galleries_with_their_own_keys() {
    let faces = lfw_templates();
    let tmp = tempfile::tempdir().unwrap();
    let (ka, kb) = (Key::generate().unwrap(), Key::generate().unwrap());
    let a = Gallery::create(&tmp.path().join("a"), &options(ElementType::I8, Some(&ka))).unwrap();
    let b = Gallery::create(&tmp.path().join("b"), &options(ElementType::I8, Some(&kb))).unwrap();
    let ts: Vec<Template> = faces.iter().map(|f| template(&f.1)).collect();
    for (f, t) in faces.iter().zip(&ts).take(10) {
        a.enroll(&f.0, t).unwrap();
    }
    a.update_metadata(&faces[0].0, b"m").unwrap();
    a.remove_subject(&faces[1].0).unwrap();
    // an erased enrollment is fed as the removal of its template
    let feed = a.changes_since(&[0, 0]).unwrap();
    // the log's own (sealed) records are refused: only plain changes are fed
    let raw: Vec<uniface::index::Change> = (0..2)
        .flat_map(|i| {
            let log = a.dir().join(format!("shard-{i:03}/wal.log"));
            uniface::index::wal::Wal::read_all(&log)
                .unwrap()
                .records
                .into_iter()
                .map(move |record| uniface::index::Change { shard: i, record })
        })
        .collect();
    assert!(raw
        .iter()
        .any(|c| matches!(c.record.op, uniface::index::wal::Op::SealedEnroll { .. })));
    let e = b.apply_changes(&raw).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(b.is_empty());
    assert_eq!(b.apply_changes(&feed).unwrap(), feed.len());
    assert_eq!(a.list(), b.list());
    for s in a.list() {
        assert_eq!(a.get(&s), b.get(&s));
    }
    assert!(b.get(&faces[1].0).is_none());
    let dir_b = b.dir().to_owned();
    drop(b);
    let (b, report) = open(&dir_b, Some(&kb)).unwrap();
    assert!(report.is_clean());
    assert_eq!(a.list(), b.list());
}
