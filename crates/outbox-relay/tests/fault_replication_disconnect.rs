//! The replication connection is killed mid-stream (its walsender terminated, as when the
//! database restarts or the network drops): the relay reconnects from its flush position and
//! every event arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Collector, Fixture, bind_queue, insert_series, wait_relay_streaming};
use outbox_relay::Relay;
use test_support::{EVENTUALLY, wait_until};

const EVENTS: usize = 10_000;
const DISCONNECTS: usize = 3;

async fn walsender_pid(fixture: &Fixture) -> Option<i32> {
    let row: Option<(Option<i32>,)> =
        sqlx::query_as("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&fixture.slot)
            .fetch_optional(&fixture.db.pool)
            .await
            .unwrap();
    row.and_then(|(pid,)| pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replication_connections_lose_nothing() {
    let fixture = Fixture::new("relay_pgdrop").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let collector = Collector::start(&queue).await;
    let relay = Relay::start(fixture.config()).await.unwrap();

    let pool = fixture.db.pool.clone();
    let writer = tokio::spawn(async move { insert_series(&pool, 0, EVENTS, 40).await });
    let mut last_pid = None;
    for round in 1..=DISCONNECTS {
        let target = round * EVENTS / (DISCONNECTS + 1);
        wait_until("events flowing", Duration::from_secs(120), || async {
            (collector.received() >= target).then_some(())
        })
        .await
        .unwrap();
        let pid = wait_until("a new replication session", EVENTUALLY, || async {
            walsender_pid(&fixture)
                .await
                .filter(|pid| Some(*pid) != last_pid)
        })
        .await
        .unwrap();
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&fixture.db.pool)
            .await
            .unwrap();
        last_pid = Some(pid);
    }
    writer.await.unwrap();
    collector.wait_all(EVENTS, Duration::from_secs(120)).await;
    wait_relay_streaming(&relay, "streaming again").await;
    eprintln!(
        "replication disconnects: {EVENTS} events, {DISCONNECTS} disconnects, {} received",
        collector.received()
    );
    relay.shutdown().await.unwrap();
    collector.stop();
    queue.close().await;
    fixture.cleanup().await;
}

/// The slot is dropped under a running relay (as an operator might, or as PostgreSQL does when
/// it invalidates a slot past `max_slot_wal_keep_size`): the relay does not quietly create a new
/// one and carry on from the current WAL position; it reports what happened and what it means.
#[tokio::test]
async fn a_dropped_slot_is_reported_with_what_it_means() {
    let fixture = Fixture::new("relay_slotgone").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let relay = Relay::start(fixture.config()).await.unwrap();
    wait_relay_streaming(&relay, "streaming").await;

    // The relay reconnects quickly: terminate its session and drop the slot until the drop wins.
    wait_until("the slot dropped", EVENTUALLY, || async {
        if let Some(pid) = walsender_pid(&fixture).await {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&fixture.db.pool)
                .await
                .unwrap();
        }
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(&fixture.slot)
            .execute(&fixture.db.pool)
            .await
            .ok()
    })
    .await
    .unwrap();

    let error = wait_until("the missing slot reported", EVENTUALLY, || async {
        relay
            .status()
            .report()
            .last_error
            .filter(|error| error.contains("no longer exists"))
    })
    .await
    .unwrap();
    assert!(error.contains(&fixture.slot), "{error}");
    // It says what recovers: re-create the slot and re-publish from the table.
    assert!(
        error.contains("outbox-relay resync --recreate-slot"),
        "{error}"
    );
    assert!(!relay.status().report().streaming);
    // Nothing was created behind the operator's back.
    let slots: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&fixture.slot)
            .fetch_one(&fixture.db.pool)
            .await
            .unwrap();
    assert_eq!(slots, 0);
    relay.shutdown().await.unwrap();
    queue.close().await;
    fixture.cleanup().await;
}
