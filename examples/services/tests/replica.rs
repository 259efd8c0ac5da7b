//! An identification replica on real servers (`stack.sh up --servers-only`): it bootstraps from
//! PostgreSQL over several pages and ends equal to the database (the audit's digests); events
//! after the bootstrap (erasures, metadata, enrollments) arrive through its queue; it stays
//! equal when every event is delivered again (idempotence); an event that can never be applied
//! is set aside in the dead-letter queue without blocking the ones behind it; drift is found
//! and repaired; a second replica made later bootstraps to the same state, metadata included.
//! Faces of other collections go to their own galleries: at the bootstrap, and from the queue
//! (a collection's first face makes its gallery).

mod common;

use std::sync::Arc;
use std::time::Duration;

use uniface::core::crypto::{KeyFile, KeyProvider};
use uniface_services::replica::{Replica, ReplicaConfig};
use uniface_services::{audit, bench, collection, db, relay};

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_bootstraps_then_stays_equal_to_the_database_under_redelivery_and_erasure() {
    let stack = common::Stack::up(&["--servers-only"], &[]);
    let key_path = stack.dir.path().join("deployment.key");
    KeyFile::create(&key_path).unwrap();
    let provider: Arc<dyn KeyProvider> = Arc::new(KeyFile::new(&key_path));
    let key = provider.key().unwrap();
    let amqp = stack.env["UNIFACE_AMQP_URL"].clone();
    // 4,500 faces: three pages of the bootstrap's copy
    bench::seed(stack.pg_url(), &key, 4500).await.unwrap();
    let mut client = db::connect(stack.pg_url()).await.unwrap();
    let t = uniface::Template::new(
        uniface::ModelFingerprint::dlib_resnet_v1(),
        &uniface::bench::unit_vectors(1, 128).next().unwrap(),
    )
    .unwrap();
    // three faces of collection t1 (one subject id the default collection also has)
    for s in ["synthetic-1", "t1-a", "t1-b"] {
        db::enroll(&mut client, &key, &collection::stored("t1", s), &t, None)
            .await
            .unwrap();
    }
    let config = |name: &str| ReplicaConfig {
        dir: stack.dir.path().join(name),
        name: name.to_owned(),
        key: provider.clone(),
        sealing: key.clone(),
        shards: 2,
        shard: None,
        db_url: stack.pg_url().to_owned(),
        amqp_url: amqp.clone(),
    };
    let replica = Replica::start(config("r0"));
    wait_for("bootstrap", || replica.status().consuming).await;
    let gs = replica.galleries().unwrap();
    let g = replica.gallery().unwrap();
    assert_eq!(g.len(), 4500);
    let t1 = gs.get("t1").unwrap();
    assert_eq!(t1.len(), 3);
    assert!(t1.get(&collection::stored("t1", "synthetic-1")).is_some());
    assert!(g.get(&collection::stored("t1", "t1-a")).is_none());

    // changes after the bootstrap arrive through the queue
    let (_connection, channel) = relay::connect(&amqp).await.unwrap();
    let erased: Vec<String> = (1..=5).map(|i| format!("synthetic-{i}")).collect();
    for s in &erased {
        assert!(db::remove_subject(&mut client, s).await.unwrap().is_some());
    }
    db::set_metadata(&mut client, &key, "synthetic-9", br#"{"tier": 2}"#)
        .await
        .unwrap()
        .unwrap();
    // two enrollments through the outbox (their FaceEnrolled events carry the sealed template)
    for s in ["late-1", "late-2"] {
        db::enroll(&mut client, &key, s, &t, None).await.unwrap();
    }
    // a new collection's first face (its gallery is made), t1's erasure of its synthetic-1
    db::enroll(&mut client, &key, &collection::stored("t2", "z"), &t, None)
        .await
        .unwrap();
    db::remove_subject(&mut client, &collection::stored("t1", "synthetic-1"))
        .await
        .unwrap()
        .unwrap();
    while relay::relay_once(&mut client, &channel, 100).await.unwrap() > 0 {}
    wait_for("the events applied", || {
        // (the 3 enrollments of t1 from before the bootstrap too: repeats, no-ops)
        replica.status().events_applied == 13
    })
    .await;
    assert_eq!(g.len(), 4497);
    assert_eq!(g.get("synthetic-9").unwrap().metadata, br#"{"tier": 2}"#);
    assert_eq!(gs.get("t2").unwrap().len(), 1);
    assert_eq!(t1.len(), 2);
    assert!(stack
        .dir
        .path()
        .join("r0/collections")
        .join(collection::folder("t2"))
        .join("gallery/manifest.json")
        .exists());
    let report = audit::audit(&client, &key, &gs, false).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!((report.database_faces, report.replica_faces), (4500, 4500));
    let audited: std::collections::BTreeSet<&str> = report
        .shards
        .iter()
        .map(|s| s.collection.as_str())
        .collect();
    assert_eq!(audited, ["", "t1", "t2"].into());

    // an event nobody can apply (its template does not open) is set aside; the next goes on
    let mut headers = lapin::types::FieldTable::default();
    for (k, v) in [("kind", "FaceEnrolled"), ("subject", "mallory")] {
        headers.insert(
            k.into(),
            lapin::types::AMQPValue::LongString(v.to_owned().into()),
        );
    }
    headers.insert(
        "face_id".into(),
        lapin::types::AMQPValue::LongLongInt(999_999),
    );
    channel
        .basic_publish(
            relay::EXCHANGE.into(),
            "".into(),
            lapin::options::BasicPublishOptions::default(),
            b"not a sealed template",
            lapin::BasicProperties::default()
                .with_message_id("999999".into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(db::remove_subject(&mut client, "late-2")
        .await
        .unwrap()
        .is_some());
    while relay::relay_once(&mut client, &channel, 100).await.unwrap() > 0 {}
    wait_for("the bad event set aside, the next applied", || {
        let s = replica.status();
        s.dead_lettered == 1 && s.events_applied == 14
    })
    .await;
    assert!(g.get("late-2").is_none() && g.get("mallory").is_none());
    let aside = channel
        .basic_get(
            uniface_services::replica::dead_letter_queue("r0")
                .as_str()
                .into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .unwrap()
        .expect("the event in the dead-letter queue");
    assert_eq!(aside.delivery.data, b"not a sealed template");

    // every event delivered again: nothing changes
    client
        .execute("UPDATE outbox SET sent_at = NULL", &[])
        .await
        .unwrap();
    while relay::relay_once(&mut client, &channel, 100).await.unwrap() > 0 {}
    wait_for("the repeats applied", || {
        replica.status().events_applied == 27
    })
    .await;
    let report = audit::audit(&client, &key, &gs, false).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(g.len(), 4496);
    assert_eq!((t1.len(), gs.get("t2").unwrap().len()), (2, 1));

    // drift is found and repaired: a face removed behind the replica's back
    let some = g.get("synthetic-100").unwrap().templates[0];
    assert!(g.remove_template(some).unwrap());
    // and one of t1's
    let other = t1.get(&collection::stored("t1", "t1-a")).unwrap().templates[0];
    assert!(t1.remove_template(other).unwrap());
    let report = audit::audit(&client, &key, &gs, true).await.unwrap();
    assert!(
        !report.clean && report.missing == 2 && report.repaired == 2,
        "{report:?}"
    );
    let mut missing = report.missing_ids.clone();
    missing.sort();
    assert_eq!(missing, vec![some as i64, other as i64]);
    assert!(audit::audit(&client, &key, &gs, false).await.unwrap().clean);

    // a second replica, made now, bootstraps to the same state
    let fresh = Replica::start(config("r1"));
    wait_for("the second bootstrap", || fresh.status().consuming).await;
    let g1 = fresh.gallery().unwrap();
    assert_eq!(g1.len(), 4496);
    assert!(g1.get("synthetic-1").is_none());
    assert_eq!(g1.get("synthetic-9").unwrap().metadata, br#"{"tier": 2}"#);
    let gs1 = fresh.galleries().unwrap();
    assert_eq!(
        (gs1.get("t1").unwrap().len(), gs1.get("t2").unwrap().len()),
        (2, 1)
    );
    let report = audit::audit(&client, &key, &gs1, false).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.replica_faces, 4499);
}
