//! The outbox relay: events leave PostgreSQL for RabbitMQ in order, at least once.
//!
//! A pass takes the relays' advisory lock (several relays may run for availability; one
//! publishes at a time, so events leave in order; the others stand by), claims the oldest unsent events
//! (`FOR UPDATE SKIP LOCKED`), publishes each as a persistent
//! message on the durable fanout exchange [`EXCHANGE`] (message id = outbox sequence number,
//! headers `kind`, `subject`, `face_id`; body = the sealed template of a `FaceEnrolled`), waits
//! for the broker's publisher confirms, and only then marks them sent and commits. A relay that
//! dies between the confirm and the commit publishes the events again: consumers are
//! idempotent by the message id.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio_postgres::Client;

use crate::{Error, Result};

/// The exchange the events are published on.
pub const EXCHANGE: &str = "uniface.events";

/// A connection and a channel in confirm mode, with the exchange declared (durable).
pub async fn connect(url: &str) -> Result<(Connection, Channel)> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel))
}

/// One pass over at most `batch` unsent events; returns how many were published and marked.
pub async fn relay_once(client: &mut Client, channel: &Channel, batch: i64) -> Result<usize> {
    let tx = client.transaction().await?;
    // one relay publishes at a time, so events leave in outbox order: a consumer must never
    // see a removal before the enrollment it undoes (SKIP LOCKED alone would let two relays
    // publish two batches in either order)
    let ours: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock(7165052)", &[])
        .await?
        .get(0);
    if !ours {
        // another relay is publishing: stand by
        return Ok(0);
    }
    let rows = tx
        .query(
            "SELECT seq, kind, subject, face_id, payload FROM outbox
             WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&batch],
        )
        .await?;
    let mut pending = Vec::with_capacity(rows.len());
    for r in &rows {
        let seq: i64 = r.get(0);
        let kind: String = r.get(1);
        let subject: String = r.get(2);
        let face_id: Option<i64> = r.get(3);
        let payload: Option<Vec<u8>> = r.get(4);
        let mut headers = FieldTable::default();
        headers.insert("kind".into(), AMQPValue::LongString(kind.into()));
        headers.insert("subject".into(), AMQPValue::LongString(subject.into()));
        if let Some(f) = face_id {
            headers.insert("face_id".into(), AMQPValue::LongLongInt(f));
        }
        let properties = BasicProperties::default()
            .with_message_id(seq.to_string().into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                EXCHANGE.into(),
                "".into(),
                BasicPublishOptions::default(),
                payload.as_deref().unwrap_or_default(),
                properties,
            )
            .await?;
        pending.push((seq, confirm));
    }
    let mut sent = Vec::with_capacity(pending.len());
    for (seq, confirm) in pending {
        if !confirm.await?.is_ack() {
            return Err(Error::Nacked { seq });
        }
        sent.push(seq);
    }
    tx.execute(
        "UPDATE outbox SET sent_at = now() WHERE seq = ANY($1)",
        &[&sent],
    )
    .await?;
    tx.commit().await?;
    Ok(sent.len())
}

/// The longest a relay pass may take.
pub const PASS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Relay forever: connect (again, with back-off, whenever the database or the broker goes
/// away), pass over the outbox, sleep `idle` when it is empty.
pub async fn run(db_url: String, amqp_url: String, batch: i64, idle: std::time::Duration) {
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        let session = async {
            let mut client = crate::db::connect(&db_url).await?;
            let (_connection, channel) = connect(&amqp_url).await?;
            tracing::info!("relay connected");
            let mut last_expiry: Option<std::time::Instant> = None;
            loop {
                // the relay also forgets expired idempotency keys, once a minute
                if last_expiry.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                    last_expiry = Some(std::time::Instant::now());
                    match crate::db::expire_idempotency(&client).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("forgot {n} expired idempotency keys"),
                        Err(e) => tracing::warn!(error = %e, "expiring idempotency keys"),
                    }
                }
                // a broker that blocks publishers (a memory or disk alarm) or a half-open
                // connection must not hold the lock and the rows for ever: the pass is cut
                // off, its transaction rolls back with the connection, and a new one starts
                let n =
                    tokio::time::timeout(PASS_TIMEOUT, relay_once(&mut client, &channel, batch))
                        .await
                        .map_err(|_| {
                            Error::Invalid(format!(
                                "a relay pass took longer than {PASS_TIMEOUT:?}"
                            ))
                        })??;
                if n > 0 {
                    metrics::counter!("uniface_relay_events_published_total").increment(n as u64);
                } else {
                    tokio::time::sleep(idle).await;
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), Error>(())
        };
        match session.await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "relay: retrying in {pause:?}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
}
