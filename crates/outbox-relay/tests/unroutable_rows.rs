//! Outbox rows the router cannot route are never skipped silently: without a dead-letter
//! exchange the relay stalls at the row (health says why, the slot stays before it); with one,
//! the row goes there with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    Fixture, Row, add_destination_column, assert_dead_lettered, bind_queue, current_wal_lsn,
    routed_by_destination, slot_confirmed, wait_stalled,
};
use outbox_relay::Relay;
use test_support::EVENTUALLY;

async fn insert_with_destination(fixture: &Fixture, row: &Row, destination: Option<&str>) {
    sqlx::query(
        "INSERT INTO orders.outbox_event \
         (id, aggregate_type, aggregate_id, type, payload, \"timestamp\", destination) \
         VALUES ($1, $2, $3, $4, $5::jsonb, now(), $6)",
    )
    .bind(row.id)
    .bind(&row.aggregate_type)
    .bind(&row.aggregate_id)
    .bind(&row.event_type)
    .bind(&row.payload)
    .bind(destination)
    .execute(&fixture.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_row_with_a_null_routing_value_stalls_the_relay() {
    let fixture = Fixture::new("relay_row_stall").await;
    add_destination_column(&fixture.db.pool).await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let relay = Relay::start(routed_by_destination(fixture.cli(), None))
        .await
        .unwrap();

    let first = Row::order("agg", "First", 0);
    insert_with_destination(&fixture, &first, Some("order.events")).await;
    let bad = Row::order("agg", "Unroutable", 1);
    let before_bad = current_wal_lsn(&fixture.db.pool).await;
    insert_with_destination(&fixture, &bad, None).await;
    let after = Row::order("agg", "After", 2);
    insert_with_destination(&fixture, &after, Some("order.events")).await;

    let received = queue.take(1, EVENTUALLY).await;
    assert_eq!(received[0].message_id(), Some(first.id.to_string()));
    let report = wait_stalled(&relay).await;
    let reason = report.stalled.unwrap();
    assert!(
        reason.contains("destination") && reason.contains("route.by.field"),
        "{reason}"
    );
    assert!(!report.ready);
    assert_eq!(report.unroutable_events, 1);
    // Nothing after the row is published, and the slot stays before it.
    assert!(queue.take(1, Duration::from_millis(500)).await.is_empty());
    let confirmed = slot_confirmed(&fixture.db.pool, &fixture.slot)
        .await
        .unwrap();
    assert!(
        confirmed <= before_bad,
        "the slot must not pass the unroutable row"
    );

    relay.shutdown().await.unwrap();
    queue.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_row_with_a_null_routing_value_goes_to_the_dead_letter_exchange() {
    let fixture = Fixture::new("relay_row_dlx").await;
    add_destination_column(&fixture.db.pool).await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let dead_letters = bind_queue(&fixture.vhost.amqp_url, "outbox.dead-letter").await;
    let relay = Relay::start(routed_by_destination(
        fixture.cli(),
        Some("outbox.dead-letter"),
    ))
    .await
    .unwrap();

    let rows = [
        (Row::order("agg", "First", 0), Some("order.events")),
        (Row::order("agg", "Unroutable", 1), None),
        (Row::order("agg", "After", 2), Some("order.events")),
    ];
    for (row, destination) in &rows {
        insert_with_destination(&fixture, row, *destination).await;
    }
    let routed = queue.take(2, EVENTUALLY).await;
    let ids: Vec<_> = routed.iter().map(|m| m.message_id().unwrap()).collect();
    assert_eq!(
        ids,
        vec![rows[0].0.id.to_string(), rows[2].0.id.to_string()]
    );
    assert_dead_lettered(&dead_letters, &rows[1].0.id.to_string()).await;
    let report = relay.status().report();
    assert!(report.stalled.is_none());
    assert_eq!(report.unroutable_events, 1);

    relay.shutdown().await.unwrap();
    queue.close().await;
    dead_letters.close().await;
    fixture.cleanup().await;
}
