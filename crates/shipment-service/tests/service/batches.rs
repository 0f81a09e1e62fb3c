//! Backlogs of many batches (`SHIPMENT_BATCH_SIZE` well below the backlog, a prefetch window of
//! several batches, one multiple ack per batch): bad events in the middle of batches, per-order
//! order across batch boundaries, and a crash between a batch's commit and its ack.

use std::collections::HashSet;

use lapin::BasicProperties;
use lapin::types::ShortString;
use serde_json::{Value, json};
use test_support::{EVENTUALLY, wait_until};
use uuid::Uuid;

use crate::support::*;

/// Small batches and a window of three, so a backlog of a hundred-odd events spans many batches
/// with the next ones already buffered.
const SMALL_BATCHES: [(&str, &str); 2] =
    [("SHIPMENT_BATCH_SIZE", "7"), ("RABBITMQ_PREFETCH", "21")];

/// Publishes `events` (event id, payload) without waiting for each confirm, then waits for all.
async fn publish_backlog(publisher: &Publisher, events: &[(Uuid, Value)]) {
    for (id, payload) in events {
        publisher
            .publish_no_wait(
                payload.to_string().as_bytes(),
                plain_properties(*id, payload),
            )
            .await;
    }
    publisher.channel.wait_for_confirms().await.unwrap();
}

/// Waits until `consumed_message` holds `expected` rows.
async fn wait_consumed(app: &TestApp, expected: i64) {
    wait_until("the backlog to be applied", EVENTUALLY, || async {
        (app.count("consumed_message").await >= expected).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_events_inside_batches_of_a_backlog_leave_their_neighbours_applied_once() {
    // Built, not started: the backlog waits in the queue and arrives batch after batch.
    let built = build_app(&SMALL_BATCHES, |_| {}).await;
    let orders: Vec<Order> = (0..60).map(|_| Order::new(2)).collect();
    let mut events: Vec<(Uuid, Value)> = orders
        .iter()
        .map(|order| (Uuid::new_v4(), order.created()))
        .collect();
    // A line update for each order, after all the creates.
    events.extend(
        orders
            .iter()
            .map(|order| (Uuid::new_v4(), order.line_updated(1, "SHIPPED"))),
    );
    // Redeliveries of earlier events, a batch or more after their first copy.
    let repeated = [events[3].clone(), events[30].clone(), events[64].clone()];
    events.insert(40, repeated[0].clone());
    events.insert(75, repeated[1].clone());
    events.insert(100, repeated[2].clone());
    // A decodable update the state rejects (the order lists its lines; this is not one), in
    // the middle of the updates.
    let rejected_id = Uuid::new_v4();
    let stranger = json!({"eventType": "OrderLineUpdated", "orderId": orders[20].id,
        "orderLineId": Uuid::new_v4(), "newStatus": "CANCELLED", "oldStatus": "ENTERED"});
    events.insert(90, (rejected_id, stranger));
    publish_backlog(&built.publisher, &events[..52]).await;
    // Undecodable, in the middle of the creates.
    let malformed_id = Uuid::new_v4();
    built
        .publisher
        .publish(
            b"{\"eventType\": \"OrderCreated\", \"id\": ",
            BasicProperties::default().with_message_id(ShortString::from(malformed_id.to_string())),
        )
        .await;
    publish_backlog(&built.publisher, &events[52..]).await;

    let app = built.start();
    // 60 creates and 60 updates; the repeats and the two bad ones are not recorded.
    wait_consumed(&app, 120).await;
    let mut letters = take_dead_letters(&app, 2).await;
    letters.sort_by_key(|letter| letter.message_id != Some(malformed_id.to_string()));
    letters[0].assert_dead_lettered(malformed_id, "malformed", "");
    letters[1].assert_dead_lettered(rejected_id, "rejected", "has no line");
    app.wait_queue_drained().await;

    for order in &orders {
        assert_eq!(app.shipment_count(order.id).await, 1);
        assert_eq!(app.line_status(order.lines[0]).await.unwrap(), "ENTERED");
        assert_eq!(app.line_status(order.lines[1]).await.unwrap(), "SHIPPED");
    }
    for (id, _) in &events {
        let expected = i64::from(*id != rejected_id);
        assert_eq!(app.consumed_count(*id).await, expected, "event {id}");
    }
    assert_eq!(app.count("consumed_message").await, 120);
    assert_eq!(app.count("shipment_line").await, 120);
    assert_eq!(app.count("pending_line_update").await, 0);
    assert_eq!(app.dead_letter_depth().await, 0);
    app.assert_metric("outcome=\"duplicate\"").await;
    app.cleanup().await;
}

#[tokio::test]
async fn each_orders_events_apply_in_queue_order_across_batch_boundaries() {
    // Per order: created, line 0 shipped, line 0 cancelled. Applied in queue order the cancel
    // contradicts the shipped line and is dead-lettered; applied the other way round the line
    // would end CANCELLED and the ship would be dead-lettered. Groups of 4 orders (12 events)
    // against batches of 7 put every position of the three events across a boundary.
    let built = build_app(&SMALL_BATCHES, |_| {}).await;
    let orders: Vec<Order> = (0..40).map(|_| Order::new(2)).collect();
    let mut events = Vec::new();
    let mut cancels = HashSet::new();
    for group in orders.chunks(4) {
        for order in group {
            events.push((Uuid::new_v4(), order.created()));
        }
        for order in group {
            events.push((Uuid::new_v4(), order.line_updated(0, "SHIPPED")));
        }
        for order in group {
            let id = Uuid::new_v4();
            cancels.insert(id.to_string());
            events.push((id, order.line_updated(0, "CANCELLED")));
        }
    }
    publish_backlog(&built.publisher, &events).await;

    let app = built.start();
    let letters = take_dead_letters(&app, orders.len()).await;
    for letter in &letters {
        let id = letter.message_id.clone().unwrap();
        assert!(cancels.contains(&id), "{id} is not a cancel");
        assert_eq!(
            letter.header_text("x-death-reason").as_deref(),
            Some("rejected")
        );
    }
    wait_consumed(&app, 80).await;
    app.wait_queue_drained().await;
    for order in &orders {
        assert_eq!(app.line_status(order.lines[0]).await.unwrap(), "SHIPPED");
        assert_eq!(app.line_status(order.lines[1]).await.unwrap(), "ENTERED");
        assert_eq!(app.shipment_status(order.id).await.unwrap(), "PENDING");
    }
    assert_eq!(app.count("consumed_message").await, 80);
    assert_eq!(app.dead_letter_depth().await, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn a_crash_between_a_batchs_commit_and_its_ack_still_applies_each_event_once() {
    let orders: Vec<Order> = (0..100).map(|_| Order::new(1)).collect();
    let events: Vec<(Uuid, Value)> = orders
        .iter()
        .map(|order| (Uuid::new_v4(), order.created()))
        .collect();
    // An event deep in the backlog: its batch, and the batches buffered behind it, are
    // delivered again after the reconnect.
    let crash_after = events[50].0;
    let built = build_app(&SMALL_BATCHES, |config| {
        config.consumer.hooks.drop_connection_after_commit_of = Some(crash_after);
    })
    .await;
    publish_backlog(&built.publisher, &events).await;

    let app = built.start();
    wait_consumed(&app, 100).await;
    // The redelivered, committed events are duplicates (acked, so the queue drains).
    app.sync().await;
    app.wait_queue_drained().await;
    app.assert_metric("outcome=\"duplicate\"").await;

    for (order, (id, _)) in orders.iter().zip(&events) {
        assert_eq!(app.shipment_count(order.id).await, 1);
        assert_eq!(app.consumed_count(*id).await, 1);
    }
    assert_eq!(app.count("consumed_message").await, 101);
    assert_eq!(app.count("shipment").await, 101);
    assert_eq!(app.count("shipment_line").await, 101);
    assert_eq!(app.dead_letter_depth().await, 0);
    app.cleanup().await;
}
