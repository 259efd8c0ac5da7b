//! Crash safety for real: a child process enrolls continuously with `Sync` durability and
//! prints each acknowledged enrollment; the parent SIGKILLs it at a random moment, reopens the
//! gallery, and checks that every acknowledged enrollment is there and `check()` is clean —
//! 20 rounds on the same gallery.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use uniface_core::template::{ModelFingerprint, Template};
use uniface_index::{Durability, Gallery, GalleryOptions};

const CHILD_ENV: &str = "UNIFACE_CRASH_CHILD_DIR";
const TEST_NAME: &str = "sigkill_during_sync_enrollment_loses_nothing_acknowledged";

fn template(seed: u64) -> Template {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..128)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    Template::new(ModelFingerprint::dlib_resnet_v1(), &v).unwrap()
}

/// The child: enroll until killed, acknowledging each enrollment on stdout.
fn child(dir: &str, round: u64) -> ! {
    let (g, _) = Gallery::open(
        dir.as_ref(),
        &ModelFingerprint::dlib_resnet_v1(),
        Durability::Sync,
    )
    .expect("child open");
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let subject = format!("r{round}-{i}");
        g.enroll(&subject, &template(round * 1_000_000 + i))
            .expect("enroll");
        if i % 7 == 3 {
            g.update_metadata(&subject, b"meta").expect("metadata");
        }
        writeln!(out, "ack {subject}").expect("stdout");
        out.flush().expect("flush");
    }
    unreachable!()
}

#[test]
fn sigkill_during_sync_enrollment_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let round = std::env::var("UNIFACE_CRASH_ROUND")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        child(&dir, round);
    }
    let dir = tempfile::tempdir().unwrap();
    drop(
        Gallery::create(
            dir.path(),
            &GalleryOptions {
                shards: 2,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashSet<String> = HashSet::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut killed_mid_run = 0;
    for round in 0..20u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("UNIFACE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
                .filter_map(|l| l.strip_prefix("ack ").map(str::to_owned))
                .collect::<Vec<String>>()
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(30 + rng % 250));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed_mid_run += 1;
        }
        let this_round = reader.join().unwrap();
        acked.extend(this_round);
        let (g, _) = Gallery::open(
            dir.path(),
            &ModelFingerprint::dlib_resnet_v1(),
            Durability::Sync,
        )
        .unwrap();
        let report = g.check().unwrap();
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
        for s in &acked {
            assert!(g.get(s).is_some(), "round {round}: acknowledged {s} lost");
        }
        assert!(g.len() >= acked.len());
        if round % 5 == 4 {
            g.checkpoint().unwrap();
        }
    }
    assert_eq!(
        killed_mid_run, 20,
        "the child must die by the signal every round"
    );
    assert!(
        acked.len() >= 20,
        "too few enrollments to mean anything: {}",
        acked.len()
    );
    println!(
        "{} acknowledged enrollments survived 20 SIGKILLs",
        acked.len()
    );
}
