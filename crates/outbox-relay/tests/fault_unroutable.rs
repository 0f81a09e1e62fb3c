//! An unroutable period: events are published while no queue is bound to their exchange.
//! The broker returns them; the relay stalls (health, metric), does not advance the slot, and
//! once a queue is bound every event arrives, in commit order of first arrival.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    Fixture, bind_queue, current_wal_lsn, insert_series, slot_confirmed, spawn_streaming,
    stop_relay,
};
use test_support::EVENTUALLY;

const EVENTS: usize = 50;

#[tokio::test]
async fn nothing_is_lost_while_no_queue_is_bound() {
    let fixture = Fixture::new("relay_unroutable").await;
    let (mut relay, before) = spawn_streaming(&fixture).await;

    insert_series(&fixture.db.pool, 0, EVENTS, 10).await;
    let written = current_wal_lsn(&fixture.db.pool).await;

    let (code, health) = relay
        .wait_health("relay reports the stall", EVENTUALLY, |_, body| {
            !body["stalled"].is_null()
        })
        .await
        .unwrap();
    assert_eq!(code, 503, "{health}");
    assert!(
        health["unroutable_events"].as_u64().unwrap() >= 1,
        "{health}"
    );
    assert!(
        health["stalled"].as_str().unwrap().contains("order.events"),
        "{health}"
    );
    let metrics = relay.metrics().await.unwrap();
    assert!(
        metrics.contains(r#"outbox_relay_unroutable_total{reason="returned"}"#),
        "{metrics}"
    );
    // Still stalled a while later, and the slot did not pass the undelivered events.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let confirmed = slot_confirmed(&fixture.db.pool, &fixture.slot)
        .await
        .unwrap();
    assert!(confirmed < written, "slot must not pass undelivered events");
    assert!(confirmed >= before);

    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let received = queue
        .take_until(EVENTUALLY, |received| {
            let mut seen: Vec<u64> = received
                .iter()
                .map(|m| m.body_json()["n"].as_u64().unwrap())
                .collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len() == EVENTS
        })
        .await;
    common::assert_all_numbers(&received, EVENTS);
    // Commit order by first arrival.
    let mut first_seen = Vec::new();
    for message in &received {
        let n = message.body_json()["n"].as_u64().unwrap();
        if !first_seen.contains(&n) {
            first_seen.push(n);
        }
    }
    assert_eq!(first_seen, (0..EVENTS as u64).collect::<Vec<_>>());

    relay
        .wait_health("relay ready again", EVENTUALLY, |code, _| code == 200)
        .await
        .unwrap();
    fixture
        .wait_slot_past("slot passes the delivered events", written)
        .await;
    eprintln!(
        "unroutable: {EVENTS} events, {} messages received after binding",
        received.len()
    );
    stop_relay(&mut relay).await;
    queue.close().await;
    fixture.cleanup().await;
}
