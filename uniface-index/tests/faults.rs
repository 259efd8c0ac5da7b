//! Fault injection, the way SQLite is tested: a scripted workload of enrollments, batch
//! enrollments, metadata updates, removals, checkpoints, graph saves and rebuilds runs on the
//! in-memory disk of `uniface_index::storage`, and for every N the Nth disk operation fails
//! (`ENOSPC`, `EIO`, or a disk that stays full), or the power goes out just before the Nth
//! `fsync` (dropping every byte not yet synced, with and without a torn last write). After each
//! fault the gallery is reopened — as a restarted process finds the disk, and as a reboot does
//! — and checked against what the workload saw acknowledged: every acknowledged change is
//! there, nothing removed with acknowledgement is back, nothing never written appears, a failed
//! batch is all or nothing per shard, the reopened gallery is consistent and writable.
//!
//! `UNIFACE_FAULTS=full` runs the long workload (the figures in the notes); the default is a
//! reduced one that CI runs.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use uniface_core::crypto::{Key, KeyProvider};
use uniface_core::template::{ModelFingerprint, Template};
use uniface_index::storage::{Fault, IoFault, MemStorage, Storage};
use uniface_index::{Durability, Gallery, GalleryOptions, HnswParams, OpenOptions, ShardRouter};

const DIM: usize = 16;
const SHARDS: usize = 2;

fn vector(seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..DIM)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn template(seed: u64) -> Template {
    Template::new(ModelFingerprint::dlib_resnet_v1(), &vector(seed)).unwrap()
}

#[derive(Debug, Clone)]
enum Step {
    Enroll(usize, u64),
    EnrollMany(Vec<(usize, u64)>),
    /// Remove the template enrolled by an earlier step (by its index), if it was acknowledged.
    RemoveTemplate(usize),
    RemoveSubject(usize),
    SetMetadata(usize, u8),
    Checkpoint,
    IndexPending,
    SaveGraphs,
    Rebuild(usize),
}

fn workload(rounds: usize) -> Vec<Step> {
    let mut w = Vec::new();
    let mut seed = 1;
    let mut next = || {
        seed += 1;
        seed
    };
    for r in 0..rounds {
        let base = r * 7;
        for i in 0..4 {
            w.push(Step::Enroll(base + i, next()));
        }
        w.push(Step::EnrollMany(
            (0..5).map(|i| (base + i % 3, next())).collect(),
        ));
        w.push(Step::SetMetadata(base + 1, r as u8 + 1));
        let first = w.len() - 6;
        w.push(Step::RemoveTemplate(first));
        w.push(Step::IndexPending);
        w.push(Step::Checkpoint);
        w.push(Step::Enroll(base + 5, next()));
        w.push(Step::RemoveSubject(base + 2));
        w.push(Step::SaveGraphs);
        w.push(Step::Enroll(base + 2, next()));
        if r % 2 == 1 {
            w.push(Step::Rebuild(8 + 4 * (r % 3)));
        }
        w.push(Step::SetMetadata(base + 5, 200));
        w.push(Step::RemoveSubject(base + 5));
    }
    w
}

fn name(s: usize) -> String {
    format!("s{s}")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Known {
    Present,
    Removed,
    /// Changed by an unacknowledged operation: either way is right.
    Maybe,
}

/// What the workload saw acknowledged.
#[derive(Default, Clone)]
struct Model {
    /// Templates with known ids (acknowledged enrollments).
    ids: BTreeMap<u64, (String, Vec<f32>, Known)>,
    /// Unacknowledged enrollments (id unknown): (subject, vector) → may be present, unless a
    /// later acknowledged removal of the subject killed it.
    maybe: Vec<(String, Vec<f32>, bool)>,
    /// Failed batches: per shard, the items (indices into `maybe`), present all or none
    /// (leaving out items a later acknowledged removal took away).
    batches: Vec<Vec<usize>>,
    /// Per subject: the metadata values it may have now.
    metadata: BTreeMap<String, BTreeSet<Vec<u8>>>,
    /// Ids returned by each enrollment step, by step index.
    step_ids: BTreeMap<usize, u64>,
    acked: usize,
}

impl Model {
    fn meta(&mut self, s: &str) -> &mut BTreeSet<Vec<u8>> {
        self.metadata
            .entry(s.to_owned())
            .or_insert_with(|| [Vec::new()].into())
    }
}

fn run(g: &Gallery, steps: &[Step], m: &mut Model) {
    let router = ShardRouter::new(SHARDS);
    for (k, step) in steps.iter().enumerate() {
        match step {
            Step::Enroll(s, seed) => match g.enroll(&name(*s), &template(*seed)) {
                Ok(id) => {
                    m.acked += 1;
                    m.step_ids.insert(k, id);
                    m.ids.insert(id, (name(*s), vector(*seed), Known::Present));
                }
                Err(_) => m.maybe.push((name(*s), vector(*seed), false)),
            },
            Step::EnrollMany(items) => {
                let ts: Vec<(String, Template)> = items
                    .iter()
                    .map(|(s, v)| (name(*s), template(*v)))
                    .collect();
                let refs: Vec<(&str, &Template)> =
                    ts.iter().map(|(s, t)| (s.as_str(), t)).collect();
                match g.enroll_many(&refs) {
                    Ok(ids) => {
                        m.acked += ids.len();
                        m.step_ids.insert(k, ids[0]);
                        for (id, (s, v)) in ids.into_iter().zip(items) {
                            m.ids.insert(id, (name(*s), vector(*v), Known::Present));
                        }
                    }
                    Err(_) => {
                        let mut per_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
                        for (s, v) in items {
                            per_shard
                                .entry(router.shard_of(&name(*s)))
                                .or_default()
                                .push(m.maybe.len());
                            m.maybe.push((name(*s), vector(*v), false));
                        }
                        m.batches.extend(per_shard.into_values());
                    }
                }
            }
            Step::RemoveTemplate(at) => {
                let Some(&id) = m.step_ids.get(at) else {
                    continue;
                };
                match g.remove_template(id) {
                    Ok(_) => {
                        m.acked += 1;
                        if let Some(e) = m.ids.get_mut(&id) {
                            e.2 = Known::Removed;
                        }
                    }
                    Err(_) => {
                        if let Some(e) = m.ids.get_mut(&id) {
                            if e.2 == Known::Present {
                                e.2 = Known::Maybe;
                            }
                        }
                    }
                }
            }
            Step::RemoveSubject(s) => {
                let subject = name(*s);
                let ok = g.remove_subject(&subject).is_ok();
                m.acked += usize::from(ok);
                for e in m.ids.values_mut().filter(|e| e.0 == subject) {
                    e.2 = match (ok, e.2) {
                        (true, _) => Known::Removed,
                        (false, Known::Present) => Known::Maybe,
                        (false, k) => k,
                    };
                }
                for e in m.maybe.iter_mut().filter(|e| e.0 == subject) {
                    e.2 |= ok;
                }
                let meta = m.meta(&subject);
                if ok {
                    *meta = [Vec::new()].into();
                } else {
                    meta.insert(Vec::new());
                }
            }
            Step::SetMetadata(s, v) => {
                let subject = name(*s);
                let ok = g.update_metadata(&subject, &[*v; 3]).is_ok();
                m.acked += usize::from(ok);
                let meta = m.meta(&subject);
                if ok {
                    *meta = [vec![*v; 3]].into();
                } else {
                    meta.insert(vec![*v; 3]);
                }
            }
            Step::Checkpoint => {
                let _ = g.checkpoint();
            }
            Step::IndexPending => {
                let _ = g.index_pending(usize::MAX);
            }
            Step::SaveGraphs => {
                let _ = g.save_graphs();
            }
            Step::Rebuild(connectivity) => {
                let _ = g.rebuild(HnswParams {
                    connectivity: *connectivity,
                    ..g.manifest().hnsw
                });
            }
        }
    }
}

thread_local! {
    /// The key-encryption key of the galleries this thread makes and opens (`None`: plain).
    static KEY: std::cell::RefCell<Option<Key>> = const { std::cell::RefCell::new(None) };
}

fn key() -> Option<Arc<dyn KeyProvider>> {
    KEY.with(|k| {
        k.borrow()
            .clone()
            .map(|k| Arc::new(k) as Arc<dyn KeyProvider>)
    })
}

fn gallery_options(storage: &MemStorage) -> GalleryOptions {
    GalleryOptions {
        dimension: DIM,
        shards: SHARDS,
        durability: Durability::Sync,
        storage: Arc::new(storage.clone()),
        encryption: key(),
        ..Default::default()
    }
}

/// Open the gallery on `storage` with `options` (their storage replaced).
fn open_on(
    storage: &MemStorage,
    options: OpenOptions,
) -> uniface_index::Result<(Gallery, uniface_index::OpenReport)> {
    let options = OpenOptions {
        storage: Arc::new(storage.clone()),
        key: options.key.or_else(key),
        ..options
    };
    Gallery::open_with_options(
        Path::new("/g"),
        &ModelFingerprint::dlib_resnet_v1(),
        &options,
    )
}

fn reopen(storage: &MemStorage) -> uniface_index::Result<Gallery> {
    open_on(storage, OpenOptions::default()).map(|(g, _)| g)
}

/// Compare a reopened gallery with the model; returns the violations, and the id of one more
/// enrollment made to show the gallery writable (acknowledged: a later reopen must keep it).
fn verify(g: &Gallery, m: &Model) -> (Vec<String>, Option<u64>) {
    let mut bad = Vec::new();
    let mut actual: BTreeMap<u64, (String, Vec<f32>)> = BTreeMap::new();
    for s in g.list() {
        for id in g.get(&s).map(|x| x.templates).unwrap_or_default() {
            if let Some(t) = g.template(id) {
                actual.insert(id, t);
            }
        }
    }
    for (id, (s, v, known)) in &m.ids {
        match (known, actual.get(id)) {
            (Known::Present, None) => bad.push(format!("LOST acknowledged template {id} of {s}")),
            (Known::Present, Some(a)) if (&a.0, &a.1) != (s, v) => {
                bad.push(format!("template {id} changed"))
            }
            (Known::Removed, Some(_)) => {
                bad.push(format!("template {id} of {s} is back after its removal"))
            }
            _ => {}
        }
    }
    for (id, (s, v)) in &actual {
        if m.ids.contains_key(id) {
            continue;
        }
        match m.maybe.iter().find(|e| &e.0 == s && &e.1 == v) {
            Some(e) if e.2 => bad.push(format!("template {id} of {s} survived a removal")),
            Some(_) => {}
            None => bad.push(format!("template {id} of {s} was never enrolled")),
        }
    }
    let present = |s: &String, v: &Vec<f32>| actual.values().any(|a| (&a.0, &a.1) == (s, v));
    for batch in &m.batches {
        let live: Vec<&(String, Vec<f32>, bool)> = batch
            .iter()
            .map(|&i| &m.maybe[i])
            .filter(|e| !e.2)
            .collect();
        let n = live.iter().filter(|e| present(&e.0, &e.1)).count();
        if n != 0 && n != live.len() {
            bad.push(format!("half a batch: {n} of {} items", live.len()));
        }
    }
    for (s, allowed) in &m.metadata {
        let got = g.get(s).map(|x| x.metadata).unwrap_or_default();
        if !allowed.contains(&got) {
            bad.push(format!("metadata of {s} is {got:?}, allowed {allowed:?}"));
        }
    }
    match g.check() {
        Ok(r) if r.is_clean() => {}
        Ok(r) => bad.push(format!("check after reopening: {:?}", r.problems)),
        Err(e) => bad.push(format!("check failed: {e}")),
    }
    let after = match g.enroll("after", &template(999_999)) {
        Ok(id) => Some(id),
        Err(e) => {
            bad.push(format!("the reopened gallery refuses writes: {e}"));
            None
        }
    };
    (bad, after)
}

#[derive(Default, Debug)]
struct Totals {
    runs: usize,
    faulted_ops: usize,
    power_loss_points: usize,
    acked_checked: usize,
    lost_or_wrong: usize,
    unopenable: usize,
    panics: usize,
}

/// One faulty run: the workload under `fault`, then a reopen of each disk image the fault can
/// leave, each checked against the model.
fn one(steps: &[Step], fault: Fault, heal: bool, totals: &mut Totals, failures: &mut Vec<String>) {
    totals.runs += 1;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let disk = MemStorage::new();
        let g = Gallery::create(Path::new("/g"), &gallery_options(&disk)).unwrap();
        disk.set_fault(fault);
        let mut m = Model::default();
        run(&g, steps, &mut m);
        if heal {
            // the space comes back: the gallery takes writes again (after a reopen at most)
            disk.set_fault(Fault::None);
            let recovered = g.enroll("healed", &template(777_777)).is_ok();
            let mut m2 = m;
            if recovered {
                // acknowledged by this process: must survive
                let id = g.get("healed").unwrap().templates[0];
                m2.ids
                    .insert(id, ("healed".into(), vector(777_777), Known::Present));
                m2.acked += 1;
            }
            m = m2;
        }
        let images: Vec<(&str, MemStorage)> = if disk.powered_off() {
            vec![("after power loss", disk.after_power_loss())]
        } else {
            vec![
                ("after a restart", disk.after_crash()),
                ("after power loss", disk.after_power_loss()),
            ]
        };
        drop(g);
        let mut found = Vec::new();
        for (when, image) in images {
            match reopen(&image) {
                Ok(g) => {
                    let (bad, after) = verify(&g, &m);
                    found.extend(bad.into_iter().map(|v| format!("{fault:?} {when}: {v}")));
                    drop(g);
                    // and what the restarted gallery acknowledged survives a power loss (pages
                    // whose write-back failed before the restart must not undermine it)
                    if when == "after a restart" {
                        let mut m2 = m.clone();
                        if let Some(id) = after {
                            m2.ids
                                .insert(id, ("after".into(), vector(999_999), Known::Present));
                        }
                        let when = "after a restart, then a power loss";
                        match reopen(&image.after_power_loss()) {
                            Ok(g) => found.extend(
                                verify(&g, &m2)
                                    .0
                                    .into_iter()
                                    .map(|v| format!("{fault:?} {when}: {v}")),
                            ),
                            Err(e) => found.push(format!("{fault:?} {when}: UNOPENABLE: {e}")),
                        }
                    }
                }
                Err(e) => found.push(format!("{fault:?} {when}: UNOPENABLE: {e}")),
            }
        }
        (m.acked, found)
    }));
    match outcome {
        Ok((acked, found)) => {
            totals.acked_checked += acked;
            totals.unopenable += found.iter().filter(|f| f.contains("UNOPENABLE")).count();
            totals.lost_or_wrong += found.iter().filter(|f| !f.contains("UNOPENABLE")).count();
            failures.extend(found);
        }
        Err(_) => {
            totals.panics += 1;
            failures.push(format!("{fault:?}: PANIC"));
        }
    }
}

/// Operations and syncs the workload makes without a fault.
fn counts(steps: &[Step]) -> (u64, u64) {
    let disk = MemStorage::new();
    let g = Gallery::create(Path::new("/g"), &gallery_options(&disk)).unwrap();
    disk.set_fault(Fault::None);
    let mut m = Model::default();
    run(&g, steps, &mut m);
    let clean = reopen(&disk.after_crash()).unwrap();
    assert!(
        verify(&clean, &m).0.is_empty(),
        "the workload fails without faults"
    );
    (disk.operations(), disk.syncs())
}

#[test]
fn every_fault_at_every_point_loses_nothing_acknowledged() {
    every_fault_at_every_point(None);
}

#[test]
fn every_fault_at_every_point_loses_nothing_acknowledged_when_encrypted() {
    every_fault_at_every_point(Some(Key::from_bytes([7; 32])));
}

fn every_fault_at_every_point(encryption: Option<Key>) {
    let full = std::env::var("UNIFACE_FAULTS").is_ok_and(|v| v == "full");
    let steps = workload(if full { 20 } else { 2 });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (totals, failures) = pool.install(|| {
        KEY.with(|k| *k.borrow_mut() = encryption.clone());
        let (ops, syncs) = counts(&steps);
        let mut totals = Totals::default();
        let mut failures = Vec::new();
        for n in 1..=ops + 1 {
            for error in [IoFault::NoSpace, IoFault::Io] {
                one(&steps, Fault::FailAt { n, error }, false, &mut totals, &mut failures);
                totals.faulted_ops += 1;
            }
            one(
                &steps,
                Fault::FailFrom {
                    n,
                    error: IoFault::NoSpace,
                },
                true,
                &mut totals,
                &mut failures,
            );
            totals.faulted_ops += 1;
        }
        for n in 1..=syncs + 1 {
            for torn in [false, true] {
                one(
                    &steps,
                    Fault::PowerLossAtSync { n, torn },
                    false,
                    &mut totals,
                    &mut failures,
                );
                totals.power_loss_points += 1;
            }
        }
        eprintln!(
            "fault injection{}: {} steps, {ops} disk operations and {syncs} fsyncs per run; {totals:?}",
            if encryption.is_some() { " (encrypted)" } else { "" },
            steps.len()
        );
        (totals, failures)
    });
    assert!(
        failures.is_empty(),
        "{} violations, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    assert_eq!(totals.lost_or_wrong + totals.unopenable + totals.panics, 0);
    assert!(totals.acked_checked > 0);
}

#[test]
fn sync_syncs_once_per_write_and_group_fewer_under_concurrency() {
    // Sync: one fdatasync of the log per acknowledged write
    let disk = MemStorage::new();
    let g = Gallery::create(Path::new("/g"), &gallery_options(&disk)).unwrap();
    let before = disk.file_syncs();
    for i in 0..50 {
        g.enroll(&name(i), &template(i as u64)).unwrap();
    }
    assert_eq!(disk.file_syncs() - before, 50);
    drop(g);
    // Group: four writers share syncs (each sync takes 2 ms, as a disk flush does)
    let disk = MemStorage::new();
    disk.set_sync_delay(std::time::Duration::from_millis(2));
    let options = GalleryOptions {
        shards: 1,
        durability: Durability::Group,
        ..gallery_options(&disk)
    };
    let g = Gallery::create(Path::new("/g"), &options).unwrap();
    let before = disk.file_syncs();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let g = &g;
            s.spawn(move || {
                for i in 0..50 {
                    g.enroll(&format!("w{t}-{i}"), &template(t * 1000 + i))
                        .unwrap();
                }
            });
        }
    });
    let syncs = disk.file_syncs() - before;
    assert_eq!(g.len(), 200);
    assert!(
        syncs < 200,
        "group commit made {syncs} syncs for 200 writes"
    );
    eprintln!("group commit: {syncs} fsyncs for 200 acknowledged writes of 4 writers");
    // and every one of them survives a power loss
    let g2 = reopen(&disk.after_power_loss()).unwrap();
    assert_eq!(g2.len(), 200);
}

#[test]
fn async_loses_at_most_the_writes_since_the_last_flush_and_only_a_suffix() {
    for torn in [false, true] {
        let disk = MemStorage::new();
        let options = GalleryOptions {
            shards: 1,
            durability: Durability::Async,
            ..gallery_options(&disk)
        };
        let g = Gallery::create(Path::new("/g"), &options).unwrap();
        for i in 0..10 {
            g.enroll(&name(i), &template(i as u64)).unwrap();
        }
        g.flush().unwrap();
        for i in 10..20 {
            g.enroll(&name(i), &template(i as u64)).unwrap();
        }
        // the power goes out before anything else is synced
        disk.set_fault(Fault::PowerLossAtSync { n: 1, torn });
        assert!(g.flush().is_err());
        let after = reopen(&disk.after_power_loss()).unwrap();
        let kept: Vec<usize> = (0..20).filter(|i| after.get(&name(*i)).is_some()).collect();
        // everything flushed is there; of the rest, a prefix in enrollment order
        assert!(kept.len() >= 10, "{kept:?}");
        assert_eq!(kept, (0..kept.len()).collect::<Vec<_>>(), "torn {torn}");
        assert!(after.check().unwrap().is_clean());
    }
}

#[test]
fn a_second_writer_is_refused_and_readers_change_nothing() {
    let disk = MemStorage::new();
    let g = Gallery::create(Path::new("/g"), &gallery_options(&disk)).unwrap();
    g.enroll("a", &template(1)).unwrap();
    let err = reopen(&disk).err().expect("a second writer was let in");
    assert!(matches!(err, uniface_index::Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("pid "), "{err}");
    // a reader opens beside the writer, on a disk that refuses every change
    let before = disk.files();
    let reader_disk = disk.clone();
    reader_disk.set_read_only(true);
    let (r, report) = open_on(&reader_disk, OpenOptions::read_only()).unwrap();
    assert!(report.is_clean(), "{:?}", report.messages());
    assert_eq!(
        r.identify(&template(1), 1, 1e-3).unwrap().candidates.len(),
        1
    );
    assert!(matches!(
        r.enroll("b", &template(2)),
        Err(uniface_index::Error::ReadOnly)
    ));
    assert!(r.check().unwrap().is_clean());
    assert_eq!(disk.files(), before, "a read-only open changed a file");
    reader_disk.set_read_only(false);
    // the writer goes on; a waiting writer gets in once it is gone
    g.enroll("c", &template(3)).unwrap();
    let waiter = std::thread::spawn({
        let disk = disk.clone();
        move || {
            let options = OpenOptions {
                lock_timeout: Some(std::time::Duration::from_secs(30)),
                ..OpenOptions::default()
            };
            open_on(&disk, options).map(|(g, _)| g.len())
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(g);
    assert_eq!(waiter.join().unwrap().unwrap(), 2);
}

#[test]
fn damage_and_missing_files_are_typed_errors_and_check_finds_them() {
    let make = || {
        let disk = MemStorage::new();
        let g = Gallery::create(Path::new("/g"), &gallery_options(&disk)).unwrap();
        for i in 0..40 {
            g.enroll(&name(i), &template(i as u64)).unwrap();
        }
        g.index_pending(usize::MAX).unwrap();
        g.checkpoint().unwrap();
        for i in 40..60 {
            g.enroll(&name(i), &template(i as u64)).unwrap();
        }
        drop(g);
        disk
    };
    let open_err = |disk: &MemStorage| reopen(disk).err().map(|e| e.to_string());
    let shard0 = Path::new("/g/shard-000");
    // a byte flipped early in the log: valid records follow, so it is corruption
    let disk = make();
    let log = shard0.join("wal.log");
    let mut b = disk.read(&log).unwrap();
    b[40] ^= 0xff;
    disk.overwrite(&log, &b);
    let e = open_err(&disk).expect("damaged log accepted");
    assert!(e.contains("followed by a valid frame"), "{e}");
    assert_eq!(disk.read(&log).unwrap(), b, "the log was cut");
    // salvage keeps what precedes the damage and says so
    let (_, report) = open_on(
        &disk,
        OpenOptions {
            salvage: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert!(
        report.messages().iter().any(|m| m.contains("SALVAGED")),
        "{report:?}"
    );
    // a missing snapshot: the log starts after it, so it is an error, not an empty shard
    let disk = make();
    disk.remove(&shard0.join("templates.snap")).unwrap();
    let e = open_err(&disk).expect("missing snapshot accepted");
    assert!(e.contains("templates.snap is missing"), "{e}");
    // a missing shard folder
    let disk = make();
    for (p, _) in disk.files() {
        if p.starts_with("/g/shard-001") {
            disk.remove(&p).unwrap();
        }
    }
    // (the in-memory disk keeps empty folders: a folder without its log)
    let e = open_err(&disk).expect("missing shard accepted");
    assert!(e.contains("missing"), "{e}");
    // an edited manifest
    let disk = make();
    let m = Path::new("/g/manifest.json");
    let text = String::from_utf8(disk.read(m).unwrap()).unwrap();
    disk.overwrite(m, text.replace("\"f32\"", "\"f16\"").as_bytes());
    let e = open_err(&disk).expect("edited manifest accepted");
    assert!(e.contains("checksum mismatch"), "{e}");
    // a damaged graph is never handed to usearch: dropped, reported, re-indexed
    let disk = make();
    let graph = shard0.join("hnsw.usearch");
    let mut b = disk.read(&graph).unwrap();
    let mid = b.len() / 2;
    b[mid..mid + 64].fill(0xff);
    disk.overwrite(&graph, &b);
    let (g, report) = open_on(&disk, OpenOptions::read_only()).unwrap();
    assert!(!report.is_clean());
    assert!(
        !g.check().unwrap().is_clean(),
        "check missed the damaged graph"
    );
    for i in (0..60).step_by(7) {
        let r = g.identify(&template(i as u64), 1, 1e-3).unwrap();
        assert_eq!(r.candidates[0].subject, name(i));
    }
    drop(g);
    let g = reopen(&disk).unwrap();
    assert!(
        g.check().unwrap().is_clean(),
        "a writer did not replace the damaged graph"
    );
}

#[test]
fn invalid_templates_are_refused_before_they_are_logged() {
    let disk = MemStorage::new();
    let options = GalleryOptions {
        element: uniface_core::template::ElementType::F16,
        ..gallery_options(&disk)
    };
    let g = Gallery::create(Path::new("/g"), &options).unwrap();
    let log = Path::new("/g/shard-000/wal.log");
    let huge = |x: f32| {
        let mut v = vector(1);
        v[3] = x;
        Template::new(ModelFingerprint::dlib_resnet_v1(), &v).unwrap()
    };
    let ops = disk.operations();
    assert!(g.enroll("a", &huge(70_000.0)).is_err(), "above f16's range");
    assert!(
        g.enroll("a", &huge(1e30)).is_err(),
        "an unsearchable magnitude"
    );
    assert!(g.enroll(&"x".repeat(2000), &template(1)).is_err());
    assert_eq!(disk.operations(), ops, "something was logged");
    // a batch with one bad item logs nothing, and sequence numbers stay unique
    g.enroll("a", &template(1)).unwrap();
    let ok = template(2);
    let bad = huge(1e30);
    assert!(g.enroll_many(&[("b", &ok), ("c", &bad)]).is_err());
    g.enroll("a", &template(3)).unwrap();
    let seqs = |log: &Path| -> Vec<u64> {
        uniface_index::wal::parse(&disk.read(log).unwrap(), log)
            .unwrap()
            .records
            .iter()
            .map(|r| r.seq)
            .collect()
    };
    let home = ShardRouter::new(SHARDS).shard_of("a");
    let other = Path::new("/g/shard-001/wal.log");
    let (home_log, other_log) = if home == 0 {
        (log, other)
    } else {
        (other, log)
    };
    assert_eq!(seqs(home_log), vec![1, 2]);
    assert_eq!(seqs(other_log), Vec::<u64>::new());
    drop(g);
    let g = reopen(&disk).unwrap();
    assert_eq!(g.len(), 2);
    assert!(g.identify(&template(1), 1, 1e-3).is_ok());
}

#[test]
fn a_rebuild_killed_before_its_manifest_leaves_graphs_that_are_rebuilt_not_misused() {
    let disk = MemStorage::new();
    let g = Gallery::create(Path::new("/g"), &gallery_options(&disk)).unwrap();
    for i in 0..30 {
        g.enroll(&name(i), &template(i as u64)).unwrap();
    }
    g.index_pending(usize::MAX).unwrap();
    g.checkpoint().unwrap();
    let manifest = Path::new("/g/manifest.json");
    let old = disk.read(manifest).unwrap();
    g.rebuild(HnswParams {
        connectivity: 8,
        ..g.manifest().hnsw
    })
    .unwrap();
    drop(g);
    // the state a kill between writing the new graphs and the manifest leaves
    disk.overwrite(manifest, &old);
    let (g, report) = open_on(&disk, OpenOptions::default()).unwrap();
    let said = report.messages().join("\n");
    assert!(said.contains("other parameters"), "{said}");
    assert_eq!(g.manifest().hnsw.connectivity, 16);
    assert_eq!(g.pending(), 30, "the mismatched graph was used");
    for i in (0..30).step_by(5) {
        let r = g.identify(&template(i as u64), 1, 1e-3).unwrap();
        assert_eq!(r.candidates[0].subject, name(i));
    }
    g.index_pending(usize::MAX).unwrap();
    g.checkpoint().unwrap();
    assert!(g.check().unwrap().is_clean());
}

#[test]
fn a_failed_fsync_is_neither_fed_to_replicas_nor_reported_clean() {
    let disk = MemStorage::new();
    let options = GalleryOptions {
        shards: 1,
        ..gallery_options(&disk)
    };
    let g = Gallery::create(Path::new("/g"), &options).unwrap();
    g.enroll("a", &template(1)).unwrap();
    // operation 1 is the append, 2 its fdatasync
    disk.set_fault(Fault::FailAt {
        n: 2,
        error: IoFault::Io,
    });
    assert!(g.enroll("b", &template(2)).is_err());
    let feed = g.changes_since(&[0]).unwrap();
    assert_eq!(
        feed.len(),
        1,
        "a change whose fsync failed was fed: {feed:?}"
    );
    let report = g.check().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("stopped accepting writes")),
        "{report:?}"
    );
    assert!(matches!(
        g.enroll("c", &template(3)),
        Err(uniface_index::Error::Failed { .. })
    ));
}
