//! The relational store against a real PostgreSQL (started by `stack.sh up` in a temporary
//! folder, stopped by `stack.sh down`), on dlib's descriptors of LFW faces from
//! `../shared/data/golden`: migrations apply once and refuse edits, an enrollment commits its
//! face and its outbox event together, templates come back equal and are nowhere on disk in the
//! clear (the same scan finds a plain copy: the test of the test), sealed rows open only under
//! their key, subject and face id, and the relay delivers every event to RabbitMQ once, in
//! order, with publisher confirms.

mod common;

use std::collections::HashSet;
use std::path::Path;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use uniface::core::crypto::Key;
use uniface::{ModelFingerprint, Template};
use uniface_services::{db, relay};

/// (person, descriptor) of the golden LFW faces.
fn lfw_faces() -> Vec<(String, Vec<f32>)> {
    let path = common::shared().join("data/golden/golden.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set UNIFACE_SHARED_DIR)", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for img in json["images"].as_array().unwrap() {
        let name = img["image"].as_str().unwrap_or_default();
        let Some(person) = name.strip_prefix("lfw/").and_then(|n| n.split('/').next()) else {
            continue;
        };
        for face in img["faces"].as_array().unwrap() {
            let v: Vec<f32> = face["descriptor_from_chip"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            out.push((person.to_owned(), v));
        }
    }
    assert!(out.len() >= 30, "{} golden LFW faces", out.len());
    out
}

fn windows(vectors: &[Vec<f32>]) -> HashSet<[u8; 16]> {
    let mut out = HashSet::new();
    for v in vectors {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        for start in (0..=b.len() - 16).step_by(4) {
            out.insert(b[start..start + 16].try_into().unwrap());
        }
    }
    out
}

fn hits(dir: &Path, wanted: &HashSet<[u8; 16]>) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += hits(&p, wanted);
        } else if let Ok(b) = std::fs::read(&p) {
            n += b
                .windows(16)
                .filter(|w| wanted.contains(<&[u8; 16]>::try_from(*w).unwrap()))
                .count();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_commits_face_and_event_together_and_the_relay_delivers_it() {
    let stack = common::Stack::up(&["--servers-only"], &[]);
    let mut client = db::connect(stack.pg_url()).await.unwrap();
    // migrations: once, then nothing to do; an edited one is refused
    assert_eq!(db::migrate(&mut client).await.unwrap(), vec![1, 2, 3, 4]);
    assert!(db::migrate(&mut client).await.unwrap().is_empty());
    client
        .execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    let e = db::migrate(&mut client).await.unwrap_err();
    assert!(
        matches!(e, db::Error::MigrationChanged { version: 1, .. }),
        "{e}"
    );
    let sum = format!(
        "{:08x}",
        uniface::core::template::crc32c(db::MIGRATIONS[0].2.as_bytes())
    );
    client
        .execute(
            "UPDATE schema_migrations SET checksum = $1 WHERE version = 1",
            &[&sum],
        )
        .await
        .unwrap();

    let key = Key::generate().unwrap();
    let faces = lfw_faces();
    let fp = ModelFingerprint::dlib_resnet_v1();
    let mut last_seq = 0;
    let mut enrolled = Vec::new();
    for (person, v) in &faces {
        let t = Template::new(fp.clone(), v).unwrap();
        let q = serde_json::json!({"unified": 0.9});
        let r = db::enroll(&mut client, &key, person, &t, Some(&q))
            .await
            .unwrap();
        // one event per enrollment, in commit order
        assert!(r.outbox_seq > last_seq);
        last_seq = r.outbox_seq;
        enrolled.push((person.clone(), r, v.clone()));
    }
    let events = db::unsent(&client, 1000).await.unwrap();
    assert_eq!(events.len(), faces.len());
    for (e, (person, r, _)) in events.iter().zip(&enrolled) {
        assert_eq!(
            (&e.kind[..], &e.subject, e.face_id, e.seq),
            ("FaceEnrolled", person, Some(r.face_id), r.outbox_seq)
        );
    }
    // the relay publishes them in order with publisher confirms, then marks them sent; a
    // durable queue bound to the exchange (an identification replica's) gets each once
    let (_connection, channel) = relay::connect(&stack.env["UNIFACE_AMQP_URL"])
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare("replica-0".into(), durable, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            "replica-0".into(),
            relay::EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut passes = Vec::new();
    loop {
        let n = relay::relay_once(&mut client, &channel, 16).await.unwrap();
        if n == 0 {
            break;
        }
        passes.push(n);
    }
    assert_eq!(passes.iter().sum::<usize>(), faces.len(), "{passes:?}");
    assert!(db::unsent(&client, 10).await.unwrap().is_empty());
    for e in &events {
        let m = channel
            .basic_get("replica-0".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a message per event");
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string());
        assert_eq!(id, Some(e.seq.to_string()));
        assert_eq!(Some(&m.delivery.data), e.payload.as_ref());
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert!(channel
        .basic_get("replica-0".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());

    // the templates come back equal, under the key
    for (person, r, v) in &enrolled {
        let back = db::faces(&client, &key, person).await.unwrap();
        let (_, t) = back.iter().find(|(id, _)| *id == r.face_id).unwrap();
        assert_eq!(&t.vector(), v);
    }
    // another key, or a row moved to another subject: a crypto error, never a template
    let other = Key::generate().unwrap();
    let e = db::faces(&client, &other, &faces[0].0).await.unwrap_err();
    assert!(e.to_string().contains("sealed under key"), "{e}");
    let (victim, face) = (&enrolled[1].0, enrolled[1].1.face_id);
    client
        .execute("INSERT INTO subjects (subject) VALUES ('mallory')", &[])
        .await
        .unwrap();
    client
        .execute(
            "UPDATE faces SET subject = 'mallory' WHERE face_id = $1",
            &[&face],
        )
        .await
        .unwrap();
    let e = db::faces(&client, &key, "mallory").await.unwrap_err();
    assert!(e.to_string().contains("does not authenticate"), "{e}");
    assert!(!db::faces(&client, &key, victim)
        .await
        .unwrap()
        .iter()
        .any(|(id, _)| *id == face));

    // nothing of any template in the clear in the database's files (pages written out by a
    // checkpoint); a plain copy of one is found by the same scan
    let data = stack.dir.path().join("postgres/data");
    let all: Vec<Vec<f32>> = faces.iter().map(|f| f.1.clone()).collect();
    client.execute("CHECKPOINT", &[]).await.unwrap();
    let sealed_hits = hits(&data, &windows(&all));
    client
        .batch_execute("CREATE TABLE plain_copy (b bytea)")
        .await
        .unwrap();
    let plain: Vec<u8> = all[0].iter().flat_map(|x| x.to_le_bytes()).collect();
    client
        .execute("INSERT INTO plain_copy VALUES ($1)", &[&plain])
        .await
        .unwrap();
    client.execute("CHECKPOINT", &[]).await.unwrap();
    let plain_hits = hits(&data, &windows(&all[..1]));
    eprintln!(
        "{} templates in PostgreSQL: {sealed_hits} hits of their 16-byte windows in the data files; after a plain copy of one: {plain_hits}",
        faces.len()
    );
    assert_eq!(sealed_hits, 0);
    assert!(
        plain_hits >= 125,
        "the scan finds only {plain_hits} windows of a plain copy"
    );
}
