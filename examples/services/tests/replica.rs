//! An identification replica on real servers (`stack.sh up --servers-only`): it bootstraps from
//! PostgreSQL over several pages while events keep coming, ends equal to the database (the
//! audit's digests), and stays equal when every event is delivered again (idempotence), when an
//! erasure arrives, and after its folder is wiped and it bootstraps again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use uniface::core::crypto::{KeyFile, KeyProvider};
use uniface_services::replica::{Replica, ReplicaConfig};
use uniface_services::{audit, bench, db, relay};

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
    let g = replica.gallery().unwrap().clone();
    assert_eq!(g.len(), 4500);

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
    while relay::relay_once(&mut client, &channel, 100).await.unwrap() > 0 {}
    wait_for("the events applied", || {
        replica.status().events_applied == 6
    })
    .await;
    assert_eq!(g.len(), 4495);
    assert_eq!(g.get("synthetic-9").unwrap().metadata, br#"{"tier": 2}"#);
    let report = audit::audit(&client, &key, g.clone(), false).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!((report.database_faces, report.replica_faces), (4495, 4495));

    // every event delivered again: nothing changes
    client
        .execute("UPDATE outbox SET sent_at = NULL", &[])
        .await
        .unwrap();
    while relay::relay_once(&mut client, &channel, 100).await.unwrap() > 0 {}
    wait_for("the repeats applied", || {
        replica.status().events_applied == 12
    })
    .await;
    let report = audit::audit(&client, &key, g.clone(), false).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(g.len(), 4495);

    // drift is found and repaired: a face removed behind the replica's back
    let some = g.get("synthetic-100").unwrap().templates[0];
    assert!(g.remove_template(some).unwrap());
    let report = audit::audit(&client, &key, g.clone(), true).await.unwrap();
    assert!(
        !report.clean && report.missing == 1 && report.repaired == 1,
        "{report:?}"
    );
    assert_eq!(report.missing_ids, vec![some as i64]);
    assert!(
        audit::audit(&client, &key, g.clone(), false)
            .await
            .unwrap()
            .clean
    );

    // a second replica, made now, bootstraps to the same state
    let fresh = Replica::start(config("r1"));
    wait_for("the second bootstrap", || fresh.status().consuming).await;
    let g1 = fresh.gallery().unwrap().clone();
    assert_eq!(g1.len(), 4495);
    assert!(g1.get("synthetic-1").is_none());
    let report = audit::audit(&client, &key, g1, false).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.replica_faces, 4495);
}
