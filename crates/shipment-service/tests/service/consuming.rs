//! Exactly-once effects: duplicates, each event type, both wire formats, crash between commit
//! and ack, update before create, ordering with a prefetch window.

use test_support::{EVENTUALLY, wait_until};
use uuid::Uuid;
use wire_format::WireFormat;

use crate::support::*;

#[tokio::test]
async fn the_same_event_three_times_makes_one_shipment() {
    let app = spawn_app().await;
    let order = Order::new(2);
    let event_id = Uuid::new_v4();
    for _ in 0..3 {
        app.publisher
            .publish_plain(event_id, &order.created())
            .await;
    }
    app.sync().await;

    assert_eq!(app.shipment_count(order.id).await, 1);
    assert_eq!(app.count("shipment_line").await, 3); // 2 lines + 1 of the sync order
    assert_eq!(app.consumed_count(event_id).await, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn order_created_makes_a_shipment_with_its_lines() {
    let app = spawn_app().await;
    let order = Order::new(2);
    app.create_order(&order).await;

    let (customer, date, status): (i32, chrono::DateTime<chrono::Utc>, String) = sqlx::query_as(
        "SELECT customer_id, order_date, status FROM shipments.shipment WHERE order_id = $1",
    )
    .bind(order.id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(customer, 3);
    assert_eq!(date.to_rfc3339(), "2024-01-01T12:00:00+00:00");
    assert_eq!(status, "PENDING");
    let lines: Vec<(Uuid, String, i32, String)> = sqlx::query_as(
        "SELECT order_line_id, item, quantity, status FROM shipments.shipment_line ORDER BY position",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        lines,
        vec![
            (order.lines[0], "Book 0".to_owned(), 1, "ENTERED".to_owned()),
            (order.lines[1], "Book 1".to_owned(), 2, "ENTERED".to_owned()),
        ]
    );
    app.cleanup().await;
}

#[tokio::test]
async fn line_updates_change_the_line_and_the_shipment_status() {
    let app = spawn_app().await;
    let partly = Order::new(2);
    let cancelled = Order::new(2);
    for order in [&partly, &cancelled] {
        app.publisher.publish_event(&order.created()).await;
    }
    app.publisher
        .publish_events(&[
            partly.line_updated(0, "CANCELLED"),
            cancelled.line_updated(0, "CANCELLED"),
            cancelled.line_updated(1, "CANCELLED"),
        ])
        .await;
    app.sync().await;

    assert_eq!(app.line_status(partly.lines[0]).await.unwrap(), "CANCELLED");
    assert_eq!(app.line_status(partly.lines[1]).await.unwrap(), "ENTERED");
    assert_eq!(app.shipment_status(partly.id).await.unwrap(), "PENDING");
    assert_eq!(
        app.shipment_status(cancelled.id).await.unwrap(),
        "CANCELLED"
    );

    // Shipping the last open line: nothing left to ship.
    app.publisher
        .publish_event(&partly.line_updated(1, "SHIPPED"))
        .await;
    app.sync().await;
    assert_eq!(app.line_status(partly.lines[1]).await.unwrap(), "SHIPPED");
    assert_eq!(app.shipment_status(partly.id).await.unwrap(), "SHIPPED");
    app.cleanup().await;
}

#[tokio::test]
async fn debezium_samples_are_applied_exactly_once() {
    let app = spawn_app().await;
    let created = sample("order-created.json");
    let order_id = sample_order_id(&created);
    let event_id = sample_id(&created, "/source_row/id");
    app.publisher.publish_sample(&created).await;
    // The 3.x variant with extended headers is the same event: a duplicate.
    let extended = sample("extended-headers/order-created.json");
    app.publisher.publish_sample(&extended).await;
    app.sync().await;

    assert_eq!(app.shipment_count(order_id).await, 1);
    assert_eq!(app.shipment_status(order_id).await.unwrap(), "PENDING");
    assert_eq!(app.consumed_count(event_id).await, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn debezium_line_update_sample_cancels_the_line() {
    let app = spawn_app().await;
    let updated = sample("order-line-updated.json");
    let order_id = sample_order_id(&updated);
    let line_id = sample_id(&updated, "/source_row/payload/orderLineId");
    // The order itself, as the relay's Debezium format encodes a real OrderCreated.
    let order = Order {
        id: order_id,
        lines: vec![line_id],
    };
    app.publisher
        .publish_created(WireFormat::Debezium, Uuid::new_v4(), &order.created())
        .await;
    app.publisher.publish_sample(&updated).await;
    app.sync().await;

    assert_eq!(app.line_status(line_id).await.unwrap(), "CANCELLED");
    assert_eq!(app.shipment_status(order_id).await.unwrap(), "CANCELLED");
    app.cleanup().await;
}

#[tokio::test]
async fn a_crash_between_commit_and_ack_still_applies_once() {
    let event_id = Uuid::new_v4();
    let app = spawn_app_with(&[], |config| {
        config.consumer.hooks.drop_connection_after_commit_of = Some(event_id);
    })
    .await;
    let order = Order::new(2);
    app.publisher
        .publish_plain(event_id, &order.created())
        .await;
    app.wait_for_shipment(order.id).await;
    // The connection dropped before the ack: the broker redelivers after the reconnect, and the
    // redelivery is recognised as a duplicate (and acked, so the queue drains).
    app.sync().await;
    app.wait_queue_drained().await;

    assert_eq!(app.shipment_count(order.id).await, 1);
    assert_eq!(app.count("shipment_line").await, 3);
    assert_eq!(app.count("consumed_message").await, 2);
    // A duplicate was counted.
    app.assert_metric("outcome=\"duplicate\"").await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_update_before_its_order_is_applied_when_the_order_arrives() {
    let app = spawn_app().await;
    let order = Order::new(2);
    let update_id = Uuid::new_v4();
    app.publisher
        .publish_plain(update_id, &order.line_updated(1, "CANCELLED"))
        .await;
    wait_until("the update to be parked", EVENTUALLY, || async {
        (app.count("pending_line_update").await == 1).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(app.shipment_count(order.id).await, 0);

    app.create_order(&order).await;
    assert_eq!(app.line_status(order.lines[1]).await.unwrap(), "CANCELLED");
    assert_eq!(app.line_status(order.lines[0]).await.unwrap(), "ENTERED");
    assert_eq!(app.count("pending_line_update").await, 0);

    // The parked update redelivered later is a duplicate, not a second park.
    app.publisher
        .publish_plain(update_id, &order.line_updated(1, "CANCELLED"))
        .await;
    app.sync().await;
    assert_eq!(app.count("pending_line_update").await, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn with_a_prefetch_window_every_order_ends_in_its_final_state() {
    let app = spawn_app_with(&[("RABBITMQ_PREFETCH", "50")], |_| {}).await;
    // Interleaved events of many orders; some updates come before their order.
    let orders: Vec<Order> = (0..30).map(|_| Order::new(3)).collect();
    for (index, order) in orders.iter().enumerate() {
        if index % 3 == 0 {
            app.publisher
                .publish_event(&order.line_updated(0, "CANCELLED"))
                .await;
        }
        app.publisher.publish_event(&order.created()).await;
    }
    for (index, order) in orders.iter().enumerate() {
        if index % 3 != 0 {
            app.publisher
                .publish_event(&order.line_updated(0, "CANCELLED"))
                .await;
        }
        app.publisher
            .publish_events(&[
                order.line_updated(1, "SHIPPED"),
                order.line_updated(2, "CANCELLED"),
            ])
            .await;
    }
    app.sync().await;

    for order in &orders {
        assert_eq!(app.line_status(order.lines[0]).await.unwrap(), "CANCELLED");
        assert_eq!(app.line_status(order.lines[1]).await.unwrap(), "SHIPPED");
        assert_eq!(app.line_status(order.lines[2]).await.unwrap(), "CANCELLED");
        assert_eq!(app.shipment_status(order.id).await.unwrap(), "SHIPPED");
    }
    assert_eq!(app.count("pending_line_update").await, 0);
    assert_eq!(app.count("consumed_message").await, 30 * 4 + 1);
    app.cleanup().await;
}

#[tokio::test]
async fn events_keep_being_applied_after_the_database_drops_our_sessions() {
    let app = spawn_app().await;
    let first = Order::new(1);
    app.create_order(&first).await;

    // Every session on the service's database goes (as in a PostgreSQL restart or failover).
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&test_support::pg_admin_url())
            .await
            .unwrap();
    let terminated: Vec<(bool,)> =
        sqlx::query_as("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&app.db.name)
            .fetch_all(&mut admin)
            .await
            .unwrap();
    assert!(
        !terminated.is_empty(),
        "the service had no session to terminate"
    );

    let second = Order::new(1);
    app.create_order(&second).await;
    assert_eq!(app.shipment_count(second.id).await, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn one_batch_with_early_updates_duplicates_and_later_updates_ends_right() {
    // Built, not started: everything below is delivered as one batch.
    let built = build_app(&[], |_| {}).await;
    let publisher = &built.publisher;
    let early = Order::new(2); // an update before its order, in the same batch
    let stored = Order::new(2); // an update parked by an earlier batch
    let plain = Order::new(2); // created, then updated twice in the batch
    let parked_before = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO shipments.pending_line_update (event_id, order_id, order_line_id, old_status, new_status) \
         VALUES ($1, $2, $3, 'ENTERED', 'SHIPPED')",
    )
    .bind(parked_before)
    .bind(stored.id)
    .bind(stored.lines[1])
    .execute(&built.db.pool)
    .await
    .unwrap();
    let created_id = Uuid::new_v4();
    let events = [
        (Uuid::new_v4(), early.line_updated(0, "CANCELLED")),
        (created_id, plain.created()),
        (created_id, plain.created()), // duplicate inside the batch
        (Uuid::new_v4(), early.created()),
        (Uuid::new_v4(), plain.line_updated(0, "SHIPPED")),
        (Uuid::new_v4(), stored.created()),
        (Uuid::new_v4(), plain.line_updated(1, "CANCELLED")),
        (Uuid::new_v4(), early.line_updated(1, "CANCELLED")),
    ];
    for (id, payload) in &events {
        publisher.publish_plain(*id, payload).await;
    }
    let app = built.start();
    app.wait_for_shipment(stored.id).await;
    app.sync().await;

    assert_eq!(app.line_status(early.lines[0]).await.unwrap(), "CANCELLED");
    assert_eq!(app.line_status(early.lines[1]).await.unwrap(), "CANCELLED");
    assert_eq!(app.shipment_status(early.id).await.unwrap(), "CANCELLED");
    assert_eq!(app.line_status(plain.lines[0]).await.unwrap(), "SHIPPED");
    assert_eq!(app.line_status(plain.lines[1]).await.unwrap(), "CANCELLED");
    assert_eq!(app.shipment_status(plain.id).await.unwrap(), "SHIPPED");
    assert_eq!(app.line_status(stored.lines[1]).await.unwrap(), "SHIPPED");
    assert_eq!(app.shipment_status(stored.id).await.unwrap(), "PENDING");
    assert_eq!(app.shipment_count(plain.id).await, 1);
    assert_eq!(app.count("pending_line_update").await, 0);
    assert_eq!(app.count("consumed_message").await, 7 + 1);
    app.cleanup().await;
}
