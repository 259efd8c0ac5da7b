//! The gallery on disk: enrollment, identification, reopening, checkpoints, erasure, crash
//! recovery at every byte of the log, fingerprint checks and concurrent use. Real files with
//! fsync; templates are random unit vectors shaped like face descriptors.

use std::path::Path;

use uniface_core::template::{ElementType, ModelFingerprint, Template};
use uniface_index::{
    merge_candidates, Change, Durability, Gallery, GalleryOptions, HnswParams, OpenOptions,
    OpenSet, ShardRouter,
};

fn unit(seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..128)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// A template of identity `id`: its centre plus a little noise (distance ≈ 0.3 to the centre).
fn template(id: u64, sample: u64) -> Template {
    let c = unit(id + 1);
    let noise = unit(1_000_000 + id * 100 + sample);
    let v: Vec<f32> = c.iter().zip(&noise).map(|(a, b)| a + 0.3 * b).collect();
    Template::new(ModelFingerprint::dlib_resnet_v1(), &v).unwrap()
}

fn options(shards: usize) -> GalleryOptions {
    GalleryOptions {
        shards,
        ..Default::default()
    }
}

fn open(dir: &Path) -> Gallery {
    Gallery::open(dir, &ModelFingerprint::dlib_resnet_v1(), Durability::Sync)
        .unwrap()
        .0
}

#[test]
fn enrolled_subjects_are_identified_and_strangers_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(3)).unwrap();
    for id in 0..40 {
        for s in 0..2 {
            g.enroll(&format!("person-{id}"), &template(id, s)).unwrap();
        }
    }
    assert_eq!(g.len(), 80);
    assert_eq!(g.list().len(), 40);
    let r = g.identify(&template(17, 9), 5, 1e-4).unwrap();
    assert_eq!(r.known.as_deref(), Some("person-17"), "{r:?}");
    assert_eq!(r.candidates.len(), 5);
    assert!(r
        .candidates
        .windows(2)
        .all(|w| w[0].distance <= w[1].distance));
    let stranger = g.identify(&template(999, 0), 5, 1e-4).unwrap();
    assert_eq!(stranger.known, None, "{stranger:?}");
    let d = g
        .verify("person-17", &template(17, 5), 1e-4)
        .unwrap()
        .unwrap();
    assert!(d.is_match);
    let d = g
        .verify("person-18", &template(17, 5), 1e-4)
        .unwrap()
        .unwrap();
    assert!(!d.is_match);
    assert!(g.verify("nobody", &template(1, 1), 1e-4).unwrap().is_none());
    // the best of a subject's two templates is held to the target as a whole: the threshold
    // is the one for 1 − (1 − 1e-4)^(1/2) per comparison
    assert_eq!(d.comparisons, 2);
    let table = uniface_core::calibration::default_table().unwrap();
    let per = -((-1e-4f64).ln_1p() / 2.0).exp_m1();
    assert_eq!(d.threshold, table.threshold_for_fmr(per).unwrap());
    assert!(d.threshold < table.threshold_for_fmr(1e-4).unwrap());
}

#[test]
fn reopening_keeps_everything_with_or_without_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    {
        let g = Gallery::create(dir.path(), &options(2)).unwrap();
        for id in 0..10 {
            g.enroll(&format!("p{id}"), &template(id, 0)).unwrap();
        }
        g.update_metadata("p3", b"badge 42").unwrap();
        g.checkpoint().unwrap();
        for id in 10..15 {
            g.enroll(&format!("p{id}"), &template(id, 0)).unwrap();
        }
        assert_eq!(g.remove_subject("p4").unwrap(), 1);
    }
    let g = open(dir.path());
    assert_eq!(g.len(), 14);
    assert_eq!(g.get("p3").unwrap().metadata, b"badge 42");
    assert!(g.get("p4").is_none());
    assert_eq!(
        g.identify(&template(12, 3), 1, 1e-4)
            .unwrap()
            .known
            .as_deref(),
        Some("p12")
    );
    // ids keep increasing after a reopen
    let id = g.enroll("p99", &template(99, 0)).unwrap();
    assert!(id > 15, "{id}");
}

#[test]
fn a_removed_subject_leaves_every_file_after_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(2)).unwrap();
    g.enroll("erase-me-please", &template(1, 0)).unwrap();
    g.update_metadata("erase-me-please", b"secret-metadata")
        .unwrap();
    g.enroll("keep", &template(2, 0)).unwrap();
    g.checkpoint().unwrap();
    g.remove_subject("erase-me-please").unwrap();
    let contains = |needle: &[u8]| {
        walk(dir.path()).iter().any(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
    };
    assert!(
        contains(b"erase-me-please"),
        "present before the checkpoint"
    );
    g.checkpoint().unwrap();
    assert!(!contains(b"erase-me-please"));
    assert!(!contains(b"secret-metadata"));
    assert!(contains(b"keep"));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_crash_at_any_byte_of_the_log_reopens_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(1)).unwrap();
    for id in 0..3 {
        g.enroll(&format!("p{id}"), &template(id, 0)).unwrap();
    }
    g.checkpoint().unwrap();
    let mut acked = Vec::new();
    for id in 3..7 {
        g.enroll(&format!("p{id}"), &template(id, 0)).unwrap();
        let wal = dir.path().join("shard-000/wal.log");
        acked.push(std::fs::metadata(&wal).unwrap().len());
    }
    drop(g);
    let wal = dir.path().join("shard-000/wal.log");
    let full = std::fs::read(&wal).unwrap();
    let snapshot = std::fs::read(dir.path().join("shard-000/templates.snap")).unwrap();
    // (the log's 20-byte header is written whole, through a rename, when the log is made)
    for cut in uniface_index::wal::HEADER_LEN..=full.len() {
        // the state a crash leaves when the log was written up to `cut`
        std::fs::write(&wal, &full[..cut]).unwrap();
        std::fs::write(dir.path().join("shard-000/templates.snap"), &snapshot).unwrap();
        let (g, report) = Gallery::open(
            dir.path(),
            &ModelFingerprint::dlib_resnet_v1(),
            Durability::Sync,
        )
        .unwrap();
        let whole = acked.iter().filter(|&&end| end as usize <= cut).count();
        assert_eq!(g.len(), 3 + whole, "cut {cut}");
        assert_eq!(report.shards[0].records_replayed, whole);
        assert_eq!(
            report.is_clean(),
            acked.contains(&(cut as u64)) || cut == 20,
            "cut {cut}"
        );
        // every enrollment whose record is complete is there and searchable
        for id in 0..3 + whole as u64 {
            let r = g.identify(&template(id, 7), 1, 1e-4).unwrap();
            assert_eq!(r.known, Some(format!("p{id}")), "cut {cut}");
        }
        // and the gallery keeps working
        g.enroll("after", &template(50, 0)).unwrap();
    }
}

#[test]
fn another_models_gallery_and_templates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(1)).unwrap();
    let other = ModelFingerprint {
        preprocessing: 9,
        ..ModelFingerprint::dlib_resnet_v1()
    };
    let t = Template::new(other.clone(), &unit(1)).unwrap();
    assert!(g.enroll("x", &t).is_err());
    assert!(g.identify(&t, 1, 1e-3).is_err());
    assert!(g.enroll("", &template(1, 0)).is_err());
    drop(g);
    assert!(Gallery::open(dir.path(), &other, Durability::Sync).is_err());
    assert!(
        Gallery::create(dir.path(), &options(1)).is_err(),
        "overwrote a gallery"
    );
    // a damaged snapshot is a typed error, not a panic
    let g = open(dir.path());
    g.enroll("a", &template(1, 0)).unwrap();
    g.checkpoint().unwrap();
    drop(g);
    let snap = dir.path().join("shard-000/templates.snap");
    let mut b = std::fs::read(&snap).unwrap();
    b[20] ^= 1;
    std::fs::write(&snap, b).unwrap();
    let err = Gallery::open(
        dir.path(),
        &ModelFingerprint::dlib_resnet_v1(),
        Durability::Sync,
    )
    .err()
    .expect("corrupt snapshot accepted");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn searches_run_while_enrollments_happen() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(
        dir.path(),
        &GalleryOptions {
            shards: 4,
            durability: Durability::Group,
            ..Default::default()
        },
    )
    .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let g = &g;
            s.spawn(move || {
                for i in 0..50 {
                    g.enroll(&format!("w{t}-{i}"), &template(t * 1000 + i, 0))
                        .unwrap();
                }
            });
        }
        for _ in 0..2 {
            let g = &g;
            s.spawn(move || {
                for i in 0..50 {
                    let _ = g.identify(&template(i, 1), 3, 1e-3).unwrap();
                }
            });
        }
    });
    assert_eq!(g.len(), 200);
    drop(g);
    assert_eq!(open(dir.path()).len(), 200);
}

#[test]
fn routing_is_stable() {
    let r = ShardRouter::new(8);
    let spread: Vec<usize> = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|s| r.shard_of(s))
        .collect();
    // FNV-1a 64 ("alice" = 0x508b2abb65a03907, computed independently) modulo 8: fixed
    // forever, since changing it would strand subjects on the wrong shard
    assert_eq!(spread, vec![7, 4, 2, 7]);
    let counts = (0..8000).fold([0usize; 8], |mut c, i| {
        c[r.shard_of(&format!("subject-{i}"))] += 1;
        c
    });
    assert!(
        counts.iter().all(|&c| (800..1200).contains(&c)),
        "{counts:?}"
    );
}

#[test]
fn the_change_feed_replays_into_a_replica_that_answers_identically() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let primary = Gallery::create(a.path(), &options(3)).unwrap();
    let replica = Gallery::create(b.path(), &options(3)).unwrap();
    for id in 0..30 {
        primary.enroll(&format!("p{id}"), &template(id, 0)).unwrap();
    }
    primary.update_metadata("p2", b"m").unwrap();
    primary.remove_subject("p5").unwrap();
    let feed = primary.changes_since(&replica.positions()).unwrap();
    assert_eq!(feed.len(), 32);
    assert_eq!(replica.apply_changes(&feed).unwrap(), 32);
    assert_eq!(
        replica.apply_changes(&feed).unwrap(),
        0,
        "a repeated feed is a no-op"
    );
    // more changes later: the replica catches up incrementally
    for id in 30..40 {
        primary.enroll(&format!("p{id}"), &template(id, 0)).unwrap();
    }
    let removed = primary.get("p7").unwrap().templates[0];
    primary.remove_template(removed).unwrap();
    let feed = primary.changes_since(&replica.positions()).unwrap();
    assert_eq!(feed.len(), 11);
    replica.apply_changes(&feed).unwrap();
    assert_eq!(replica.positions(), primary.positions());
    assert_eq!(replica.list(), primary.list());
    for probe in 0..45 {
        let p = template(probe, 3);
        assert_eq!(
            replica.identify(&p, 3, 1e-3).unwrap(),
            primary.identify(&p, 3, 1e-3).unwrap()
        );
    }
    // the replica survives a reopen and keeps following
    drop(replica);
    let replica = open(b.path());
    assert_eq!(replica.positions(), primary.positions());
    // after a checkpoint the old changes are gone: a stale position is told so
    primary.checkpoint().unwrap();
    let err = primary.changes_since(&[0; 3]).unwrap_err();
    assert!(err.to_string().contains("copy the gallery"), "{err}");
    assert!(primary
        .changes_since(&primary.positions())
        .unwrap()
        .is_empty());
}

#[test]
fn the_change_feed_crosses_processes_as_bytes_and_damage_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let primary = Gallery::create(a.path(), &options(2)).unwrap();
    let replica = Gallery::create(b.path(), &options(2)).unwrap();
    for id in 0..10 {
        primary.enroll(&format!("p{id}"), &template(id, 0)).unwrap();
    }
    primary.update_metadata("p1", b"meta").unwrap();
    primary.remove_subject("p3").unwrap();
    let feed = primary.changes_since(&replica.positions()).unwrap();
    let wire: Vec<Vec<u8>> = feed.iter().map(Change::to_bytes).collect();
    let back: Vec<Change> = wire
        .iter()
        .map(|b| Change::from_bytes(b).unwrap())
        .collect();
    assert_eq!(back, feed);
    // every flipped bit and every cut of a change is refused, never read as another change
    for w in &wire {
        for at in 0..w.len() {
            let mut d = w.clone();
            d[at] ^= 0x10;
            assert!(Change::from_bytes(&d).is_err(), "flip at byte {at}");
        }
        for cut in 0..w.len() {
            assert!(Change::from_bytes(&w[..cut]).is_err(), "cut at {cut}");
        }
    }
    assert_eq!(replica.apply_changes(&back).unwrap(), feed.len());
    assert_eq!(replica.list(), primary.list());
    assert_eq!(replica.get("p1").unwrap().metadata, b"meta".to_vec());
}

#[test]
fn bulk_enrollment_is_durable_and_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(2)).unwrap();
    let ts: Vec<Template> = (0..100).map(|i| template(i, 0)).collect();
    let names: Vec<String> = (0..100).map(|i| format!("b{i}")).collect();
    let items: Vec<(&str, &Template)> = names.iter().map(String::as_str).zip(&ts).collect();
    let ids = g.enroll_many(&items).unwrap();
    assert_eq!(ids.len(), 100);
    // ids are striped by shard (id mod shards = shard) and increase within a shard
    let router = ShardRouter::new(2);
    for shard in 0..2u64 {
        let mine: Vec<u64> = names
            .iter()
            .zip(&ids)
            .filter(|(n, _)| router.shard_of(n) as u64 == shard)
            .map(|(_, id)| *id)
            .collect();
        assert!(mine.iter().all(|id| id % 2 == shard), "{mine:?}");
        assert!(mine.windows(2).all(|w| w[1] > w[0]), "{mine:?}");
    }
    drop(g);
    let g = open(dir.path());
    assert_eq!(g.len(), 100);
    assert_eq!(
        g.identify(&template(42, 5), 1, 1e-4)
            .unwrap()
            .known
            .as_deref(),
        Some("b42")
    );
    assert!(g.check().unwrap().is_clean());
}

#[test]
fn a_large_shard_searches_through_the_graph_and_its_pending_buffer() {
    let n = uniface_index::EXACT_SCAN_LIMIT + 2_000;
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(
        dir.path(),
        &GalleryOptions {
            durability: Durability::Async,
            ..Default::default()
        },
    )
    .unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("g{i}")).collect();
    let ts: Vec<Template> = (0..n as u64).map(|i| template(i, 0)).collect();
    let items: Vec<(&str, &Template)> = names.iter().map(String::as_str).zip(&ts).collect();
    g.enroll_many(&items).unwrap();
    assert_eq!(g.pending(), n);
    // index most of them; the rest stay pending and must still be found (inserted from one
    // thread, so that the graph, and so its recall, is the same in every run: with parallel
    // insertion it varies with the scheduling)
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let indexed = one_thread.install(|| g.index_pending(n - 500)).unwrap();
    assert_eq!(indexed, n - 500);
    assert_eq!(g.pending(), 500);
    // every template is probed: the 500 pending ones are scanned exactly and must all be found;
    // the graph's are found at its recall. Measured here: 5,590 of 5,596 (99.89 %); the i8 graph
    // differs between CPUs (their distance kernels round differently), and one of 63 sampled
    // probes missed on another machine, so the bound is 99.5 % (at most 27 misses), 5x the misses
    // measured here
    let (mut graph_hits, mut pending_hits) = (0, 0);
    for id in 0..n as u64 {
        let r = g.identify(&template(id, 4), 1, 1e-3).unwrap();
        let hit = usize::from(r.candidates[0].subject == format!("g{id}"));
        if id < (n - 500) as u64 {
            graph_hits += hit;
        } else {
            pending_hits += hit;
        }
    }
    assert_eq!(pending_hits, 500);
    assert!(
        graph_hits * 1000 >= (n - 500) * 995,
        "{graph_hits}/{}",
        n - 500
    );
    // removals reach the graph; a checkpoint saves it; a reopen uses it
    g.remove_subject("g0").unwrap();
    g.checkpoint().unwrap();
    drop(g);
    let g = open(dir.path());
    // the removal dropped the graph at the checkpoint (erasure); everything is pending again
    assert_eq!(g.pending(), n - 1);
    assert!(!dir.path().join("shard-000/hnsw.usearch").exists());
    assert!(!dir.path().join("shard-000/hnsw.sum").exists());
    assert_eq!(g.index_pending(n).unwrap(), n - 1);
    g.checkpoint().unwrap();
    drop(g);
    let g = open(dir.path());
    assert_eq!(g.pending(), 0, "a clean graph is reloaded as is");
    let r = g.identify(&template(0, 4), 3, 1e-3).unwrap();
    assert!(r.candidates.iter().all(|c| c.subject != "g0"), "{r:?}");
    let last = n as u64 - 7;
    let r = g.identify(&template(last, 4), 1, 1e-3).unwrap();
    assert_eq!(r.candidates[0].subject, format!("g{last}"));
    assert!(g.check().unwrap().is_clean());
}

#[test]
fn batch_identification_equals_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(2)).unwrap();
    for id in 0..50 {
        g.enroll(&format!("q{id}"), &template(id, 0)).unwrap();
    }
    let probes: Vec<Template> = (0..60).map(|i| template(i, 2)).collect();
    let batch = g.identify_batch(&probes, 3, 1e-3).unwrap();
    for (p, b) in probes.iter().zip(&batch) {
        assert_eq!(&g.identify(p, 3, 1e-3).unwrap(), b);
    }
}

/// A gallery above the exact-scan limit, its graph built and checkpointed.
fn large_gallery(dir: &Path, n: usize) -> Gallery {
    let g = Gallery::create(
        dir,
        &GalleryOptions {
            durability: Durability::Async,
            ..Default::default()
        },
    )
    .unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("g{i}")).collect();
    let ts: Vec<Template> = (0..n as u64).map(|i| template(i, 0)).collect();
    let items: Vec<(&str, &Template)> = names.iter().map(String::as_str).zip(&ts).collect();
    g.enroll_many(&items).unwrap();
    assert_eq!(g.index_pending(usize::MAX).unwrap(), n);
    g.checkpoint().unwrap();
    g
}

/// Top-1 identity rate of the graph over 97 probes. The graph is built on several threads, so
/// its shape and an occasional miss depend on the build order: in CI, one miss in 25 probes once
/// failed the old 0.99 bar. Measured 1.00 in repeated runs; the bar, 0.97, allows two misses.
fn hit_rate(g: &Gallery, n: usize) -> f64 {
    let ids: Vec<u64> = (0..n as u64).step_by(53).collect();
    let hits = ids
        .iter()
        .filter(|&&id| {
            let r = g.identify(&template(id, 4), 1, 1e-3).unwrap();
            r.candidates[0].subject == format!("g{id}")
        })
        .count();
    hits as f64 / ids.len() as f64
}

#[test]
fn memory_mapped_graphs_search_then_turn_writable_and_rebuild_changes_parameters() {
    let n = uniface_index::EXACT_SCAN_LIMIT + 1_000;
    let dir = tempfile::tempdir().unwrap();
    drop(large_gallery(dir.path(), n));
    let fp = ModelFingerprint::dlib_resnet_v1();
    let view = OpenOptions {
        durability: Durability::Async,
        view: true,
        ..OpenOptions::default()
    };
    let (g, _) = Gallery::open_with_options(dir.path(), &fp, &view).unwrap();
    assert_eq!(g.pending(), 0, "the mapped graph holds every template");
    let rate = hit_rate(&g, n);
    assert!(rate >= 0.97, "{rate}");
    // a new enrollment is found at once (pending, scanned exactly), then indexed: the first
    // insertion reads the mapped graph into memory
    g.enroll("newcomer", &template(777_777, 0)).unwrap();
    assert_eq!(g.pending(), 1);
    let r = g.identify(&template(777_777, 3), 1, 1e-3).unwrap();
    assert_eq!(r.known.as_deref(), Some("newcomer"));
    assert_eq!(g.index_pending(10).unwrap(), 1);
    assert_eq!(g.pending(), 0);
    let r = g.identify(&template(777_777, 3), 1, 1e-3).unwrap();
    assert_eq!(r.known.as_deref(), Some("newcomer"));
    // removing through a mapped graph works too (after a fresh view)
    g.checkpoint().unwrap();
    drop(g);
    let (g, _) = Gallery::open_with_options(dir.path(), &fp, &view).unwrap();
    assert_eq!(g.remove_subject("g5").unwrap(), 1);
    let r = g.identify(&template(5, 4), 3, 1e-3).unwrap();
    assert!(r.candidates.iter().all(|c| c.subject != "g5"), "{r:?}");

    // rebuild with other parameters: recorded in the manifest, searches unchanged, and the
    // new graph is what a reopen loads
    let params = HnswParams {
        connectivity: 24,
        expansion_add: 96,
        graph: ElementType::F16,
        ..Default::default()
    };
    assert_eq!(g.rebuild(params).unwrap(), n, "n + the newcomer − g5");
    assert_eq!(g.manifest().hnsw.connectivity, 24);
    assert_eq!(g.pending(), 0);
    let rate = hit_rate(&g, n);
    assert!(rate >= 0.97, "{rate}");
    g.set_expansion_search(40).unwrap();
    assert!(g
        .rebuild(HnswParams {
            connectivity: 1,
            ..params
        })
        .is_err());
    drop(g);
    let g = open(dir.path());
    let m = g.manifest();
    assert_eq!(
        (m.hnsw.connectivity, m.hnsw.expansion_search, m.hnsw.graph),
        (24, 40, ElementType::F16)
    );
    assert_eq!(g.pending(), 0, "the rebuilt graph was saved");
    let rate = hit_rate(&g, n);
    assert!(rate >= 0.97, "{rate}");
    assert!(g.check().unwrap().is_clean());
}

#[test]
fn the_background_indexer_drains_pending_templates_while_searches_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let g = std::sync::Arc::new(
        Gallery::create(
            dir.path(),
            &GalleryOptions {
                durability: Durability::Group,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let indexer = g.spawn_indexer(64, std::time::Duration::from_millis(5));
    assert!(indexer.is_running());
    let n = 3_000u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            for id in 0..n {
                g.enroll(&format!("b{id}"), &template(id, 0)).unwrap();
            }
        });
        s.spawn(|| {
            for id in 0..200 {
                // every acknowledged enrollment is searchable whatever the indexer is doing
                let _ = g.identify(&template(id, 2), 1, 1e-3).unwrap();
            }
        });
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while g.pending() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(g.pending(), 0);
    assert_eq!(indexer.indexed(), n);
    assert_eq!(indexer.last_error(), None);
    indexer.stop();
    let r = g.identify(&template(1234, 3), 1, 1e-3).unwrap();
    assert_eq!(r.known.as_deref(), Some("b1234"));
    // the indexer holds the gallery weakly: dropping the gallery ends it
    let indexer = g.spawn_indexer(64, std::time::Duration::from_millis(5));
    drop(g);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while indexer.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!indexer.is_running());
}

#[test]
fn fpir_targets_become_per_comparison_rates_for_the_gallery_size() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(2)).unwrap();
    for id in 0..100 {
        g.enroll(&format!("f{id}"), &template(id, 0)).unwrap();
    }
    let fmr = g.fmr_for_fpir(1e-2).unwrap();
    // 1 − (1 − 0.01)^(1/100)
    assert!((fmr - 1.004_983_08e-4).abs() < 1e-11, "{fmr}");
    let r = g.identify(&template(7, 3), 1, OpenSet::Fpir(1e-2)).unwrap();
    assert_eq!(r.fpir, Some(1e-2));
    assert_eq!(r.fmr, fmr);
    let expected = uniface_core::calibration::threshold_for_fmr(fmr).unwrap();
    assert_eq!(r.threshold, expected);
    assert_eq!(r.known.as_deref(), Some("f7"));
    // a larger gallery needs a stricter threshold for the same FPIR
    let before = r.threshold;
    for id in 100..1_000 {
        g.enroll(&format!("f{id}"), &template(id, 0)).unwrap();
    }
    let r = g.identify(&template(7, 3), 1, OpenSet::Fpir(1e-2)).unwrap();
    assert!(r.threshold < before, "{} vs {before}", r.threshold);
    for bad in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(g.fmr_for_fpir(bad).is_err(), "{bad}");
    }
    // a target the calibration cannot resolve at this size is refused, not guessed
    assert!(g.identify(&template(7, 3), 1, OpenSet::Fpir(1e-9)).is_err());
}

#[test]
fn hosts_serving_one_shard_each_answer_like_the_whole_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(3)).unwrap();
    for id in 0..60 {
        g.enroll(&format!("h{id}"), &template(id, 0)).unwrap();
    }
    g.checkpoint().unwrap();
    let probes: Vec<Template> = (0..60).step_by(7).map(|id| template(id, 3)).collect();
    let whole: Vec<_> = probes
        .iter()
        .map(|p| g.identify(p, 3, 1e-3).unwrap())
        .collect();
    let total = g.len();
    drop(g);
    let fp = ModelFingerprint::dlib_resnet_v1();
    let hosts: Vec<Gallery> = (0..3)
        .map(|i| {
            let o = OpenOptions {
                shard: Some(i),
                ..OpenOptions::default()
            };
            Gallery::open_with_options(dir.path(), &fp, &o).unwrap().0
        })
        .collect();
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(h.local_shards(), vec![i]);
        assert!(h.check().unwrap().is_clean());
    }
    assert_eq!(hosts.iter().map(Gallery::len).sum::<usize>(), total);
    // each host searches its shard; merged, the answers are the whole gallery's
    for (p, w) in probes.iter().zip(&whole) {
        let mut found: Vec<_> = hosts
            .iter()
            .flat_map(|h| h.identify(p, 3, 1e-3).unwrap().candidates)
            .collect();
        assert_eq!(merge_candidates(&mut found, 3), w.candidates);
    }
    // a host takes only its own subjects; ids handed out by different hosts never collide
    let router = ShardRouter::new(3);
    let mut ids = std::collections::HashSet::new();
    for n in 0..30 {
        let subject = format!("new{n}");
        let home = router.shard_of(&subject);
        for (i, h) in hosts.iter().enumerate() {
            let r = h.enroll(&subject, &template(1_000 + n, 0));
            if i == home {
                assert!(ids.insert(r.unwrap()), "duplicate id");
            } else {
                assert!(
                    matches!(r, Err(uniface_index::Error::NotLocal { shard }) if shard == home)
                );
            }
        }
    }
    assert!(matches!(
        hosts[0].remove_subject("new_elsewhere_x"),
        Ok(0) | Err(uniface_index::Error::NotLocal { .. })
    ));
    drop(hosts);
    // the whole gallery sees every host's enrollments, with distinct ids
    let g = open(dir.path());
    assert_eq!(g.len(), total + 30);
    assert!(g.check().unwrap().is_clean());
    let r = g.identify(&template(1_007, 2), 1, 1e-3).unwrap();
    assert_eq!(r.known.as_deref(), Some("new7"));
    let beyond = OpenOptions {
        shard: Some(3),
        ..OpenOptions::default()
    };
    assert!(Gallery::open_with_options(dir.path(), &fp, &beyond).is_err());
}

#[test]
fn a_saved_graph_never_keeps_a_removed_template_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    // an f32 graph, so that a template's bytes in the graph file are its f32 bytes
    let options = GalleryOptions {
        hnsw: HnswParams {
            graph: ElementType::F32,
            ..Default::default()
        },
        ..options(1)
    };
    let g = Gallery::create(dir.path(), &options).unwrap();
    let kept = g.enroll("kept", &template(1, 0)).unwrap();
    let gone = g.enroll("gone", &template(2, 0)).unwrap();
    g.index_pending(usize::MAX).unwrap();
    assert_eq!(g.save_graphs().unwrap(), 1);
    g.remove_subject("gone").unwrap();
    drop(g);
    // the reopened gallery replays the removal against a graph that holds the template
    let g = open(dir.path());
    g.checkpoint().unwrap();
    g.index_pending(usize::MAX).unwrap();
    g.save_graphs().unwrap();
    let v = template(2, 0).vector();
    let needle: Vec<u8> = v[..8].iter().flat_map(|x| x.to_le_bytes()).collect();
    let kept_v = template(1, 0).vector();
    let kept_needle: Vec<u8> = kept_v[..8].iter().flat_map(|x| x.to_le_bytes()).collect();
    let holds = |n: &[u8]| {
        walk(dir.path())
            .into_iter()
            .filter(|f| {
                let bytes = std::fs::read(f).unwrap();
                bytes.windows(n.len()).any(|w| w == n)
            })
            .collect::<Vec<_>>()
    };
    assert!(
        holds(&needle).is_empty(),
        "{:?} hold the removed template",
        holds(&needle)
    );
    assert!(
        holds(&kept_needle).len() >= 2,
        "the scan cannot see templates in the snapshot and the graph: {:?}",
        holds(&kept_needle)
    );
    drop(g);
    // the highest id was removed and checkpointed away: a reopened gallery does not hand it
    // out again
    let g = open(dir.path());
    let next = g.enroll("new", &template(3, 0)).unwrap();
    assert!(
        next > gone && next > kept,
        "id {next} reused (removed {gone})"
    );
    assert!(g.check().unwrap().is_clean());
}

#[test]
fn any_k_is_answered_with_at_most_every_subject() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(2)).unwrap();
    for id in 0..5 {
        g.enroll(&format!("p{id}"), &template(id, 0)).unwrap();
    }
    for k in [0usize, 1, 5, 6, 100_000_000_000, usize::MAX] {
        let r = g.identify(&template(1, 1), k, 1e-3).unwrap();
        assert_eq!(r.candidates.len(), k.min(5), "k {k}");
    }
    let batch = g
        .identify_batch(&[template(2, 1)], usize::MAX, 1e-3)
        .unwrap();
    assert_eq!(batch[0].candidates.len(), 5);
}

#[test]
fn a_new_or_retuned_gallery_checks_clean_against_its_own_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(2)).unwrap();
    g.enroll("a", &template(1, 0)).unwrap();
    assert!(g.check().unwrap().is_clean(), "{:?}", g.check().unwrap());
    g.set_expansion_search(32).unwrap();
    assert!(g.check().unwrap().is_clean(), "{:?}", g.check().unwrap());
    g.rebuild(HnswParams {
        connectivity: 8,
        ..g.manifest().hnsw
    })
    .unwrap();
    assert!(g.check().unwrap().is_clean(), "{:?}", g.check().unwrap());
    assert_eq!(g.manifest(), {
        drop(g);
        open(dir.path()).manifest()
    });
}

#[test]
fn ids_chosen_by_the_caller_make_a_repeated_change_harmless_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let g = Gallery::create(dir.path(), &options(3)).unwrap();
        // ids of another system (a database's keys), not the gallery's striping
        for (i, id) in [7u64, 1000, 3, 2_000_000].into_iter().enumerate() {
            assert!(g
                .enroll_as(&format!("person-{i}"), id, &template(i as u64, 0))
                .unwrap());
        }
        // a redelivered event: nothing written, nothing changed
        let logged = g.positions();
        assert!(!g.enroll_as("person-1", 1000, &template(1, 0)).unwrap());
        assert_eq!(g.positions(), logged);
        // the id of someone else is refused
        let e = g.enroll_as("person-2", 1000, &template(2, 1)).unwrap_err();
        assert!(e.to_string().contains("another subject"), "{e}");
        assert_eq!(g.len(), 4);
        // the gallery's own ids stay clear of them
        let own = g.enroll("person-0", &template(0, 1)).unwrap();
        assert!(own > 2_000_000, "{own}");
    }
    let g = open(dir.path());
    assert_eq!(g.len(), 5);
    assert_eq!(g.template(1000).unwrap().0, "person-1");
    assert!(!g.enroll_as("person-3", 2_000_000, &template(3, 0)).unwrap());
    assert!(g.enroll("person-0", &template(0, 2)).unwrap() > 2_000_000);
    assert!(g.remove_template(7).unwrap());
    assert!(g.enroll_as("person-0", 7, &template(0, 0)).unwrap());
    let r = g.identify(&template(1, 5), 1, 1e-4).unwrap();
    assert_eq!(r.known.as_deref(), Some("person-1"));
    assert_eq!(r.candidates[0].template_id, 1000);
}

#[test]
fn duplicates_are_pairs_of_other_subjects_and_enrollment_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gallery::create(dir.path(), &options(2)).unwrap();
    for id in 0..30 {
        for s in 0..2 {
            g.enroll(&format!("person-{id:02}"), &template(id, s))
                .unwrap();
        }
    }
    // two people enrolled a second time under other names (another sample of their face)
    g.enroll("alias-a", &template(3, 7)).unwrap();
    g.enroll("alias-b", &template(21, 8)).unwrap();
    let found = g.duplicates(1e-4, &|_| {}).unwrap();
    let pairs: Vec<[&str; 2]> = found
        .iter()
        .map(|d| [d.subjects[0].as_str(), d.subjects[1].as_str()])
        .collect();
    assert_eq!(
        pairs,
        vec![["alias-a", "person-03"], ["alias-b", "person-21"]],
        "{found:?}"
    );
    for d in &found {
        // the templates named are the subjects' own, and the distance theirs
        let a = g.template(d.templates[0]).unwrap();
        let b = g.template(d.templates[1]).unwrap();
        assert_eq!(
            [a.0.as_str(), b.0.as_str()],
            [d.subjects[0].as_str(), d.subjects[1].as_str()]
        );
        let exact = uniface_core::compare::euclidean(&a.1, &b.1).unwrap();
        assert!((exact - d.distance).abs() < 1e-5);
    }
    // an enrollment that matches someone else is made, and reported
    let (id, r) = g
        .enroll_reporting_duplicates("alias-c", &template(11, 9), 3, 1e-4)
        .unwrap();
    assert_eq!(g.template(id).unwrap().0, "alias-c");
    assert_eq!(r.known.as_deref(), Some("person-11"), "{r:?}");
    assert!(r.candidates.iter().all(|c| c.subject != "alias-c"));
    // one of a subject's own further templates is not a duplicate of itself
    let (_, r) = g
        .enroll_reporting_duplicates("person-05", &template(5, 9), 3, 1e-4)
        .unwrap();
    assert_eq!(r.known, None, "{r:?}");
    assert!(r.candidates.iter().all(|c| c.subject != "person-05"));
    // the first enrollment of an empty gallery reports nothing
    let empty = tempfile::tempdir().unwrap();
    let e = Gallery::create(empty.path(), &options(1)).unwrap();
    let (_, r) = e
        .enroll_reporting_duplicates("x", &template(1, 0), 3, 1e-4)
        .unwrap();
    assert!(r.candidates.is_empty() && r.known.is_none());
}
