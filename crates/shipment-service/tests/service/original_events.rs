//! The original NodeJS producer's events, end to end through RabbitMQ in both wire formats:
//! OrderCreated without lineItems, OrderLineUpdated for lines the shipment never heard of.

use serde_json::Value;
use test_support::{EVENTUALLY, wait_until};
use uuid::Uuid;
use wire_format::WireFormat;

use crate::support::*;

const FORMATS: [WireFormat; 2] = [WireFormat::Plain, WireFormat::Debezium];

async fn lines_of(
    app: &TestApp,
    order_id: Uuid,
) -> Vec<(Uuid, Option<String>, Option<i32>, String)> {
    sqlx::query_as(
        "SELECT l.order_line_id, l.item, l.quantity, l.status FROM shipments.shipment_line l \
         JOIN shipments.shipment s ON s.id = l.shipment_id WHERE s.order_id = $1 \
         ORDER BY l.position",
    )
    .bind(order_id)
    .fetch_all(app.pool())
    .await
    .unwrap()
}

/// Asserts the order's shipment records exactly these lines (indexes into `order.lines`) with
/// these statuses, in order, each without item or quantity (the original producer never sends
/// them); `context` names the case in a failure.
async fn assert_bare_lines(
    app: &TestApp,
    order: &OriginalOrder,
    expected: &[(usize, &str)],
    context: impl std::fmt::Debug,
) {
    let expected: Vec<_> = expected
        .iter()
        .map(|(line, status)| (order.lines[*line], None, None, (*status).to_owned()))
        .collect();
    assert_eq!(lines_of(app, order.id).await, expected, "{context:?}");
}

#[tokio::test]
async fn the_original_producers_events_make_a_pending_shipment_and_record_its_lines() {
    let app = spawn_app().await;
    for format in FORMATS {
        let order = OriginalOrder::new(3);
        let created_id = Uuid::new_v4();
        app.publisher
            .publish_created(format, created_id, &order.created())
            .await;
        app.wait_for_shipment(order.id).await;
        assert_eq!(app.shipment_status(order.id).await.unwrap(), "PENDING");
        assert!(lines_of(&app, order.id).await.is_empty(), "{format:?}");

        // Every line it hears of is cancelled or shipped, yet other lines may exist: PENDING.
        let cancel_id = Uuid::new_v4();
        for (id, event_type, payload) in [
            (
                cancel_id,
                "OrderLineUpdated",
                order.line_updated(0, "CANCELLED"),
            ),
            (
                Uuid::new_v4(),
                "OrderLineUpdated",
                order.line_updated(1, "SHIPPED"),
            ),
            // Duplicates of both kinds are absorbed.
            (created_id, "OrderCreated", order.created()),
            (
                cancel_id,
                "OrderLineUpdated",
                order.line_updated(0, "CANCELLED"),
            ),
        ] {
            app.publisher
                .publish_as(format, id, event_type, &payload)
                .await;
        }
        app.sync().await;

        assert_bare_lines(&app, &order, &[(0, "CANCELLED"), (1, "SHIPPED")], format).await;
        assert_eq!(app.shipment_status(order.id).await.unwrap(), "PENDING");
        assert_eq!(app.shipment_count(order.id).await, 1);
        assert_eq!(app.consumed_count(created_id).await, 1);
        assert_eq!(app.consumed_count(cancel_id).await, 1);
        let lines_known: bool =
            sqlx::query_scalar("SELECT lines_known FROM shipments.shipment WHERE order_id = $1")
                .bind(order.id)
                .fetch_one(app.pool())
                .await
                .unwrap();
        assert!(!lines_known);

        // The API shows the recorded lines without item or quantity.
        let (status, page) = app.get(&format!("/shipments?orderId={}", order.id)).await;
        assert_eq!(status, 200, "{page}");
        let shipment = &page["items"][0];
        assert_eq!(shipment["status"], "PENDING");
        assert_eq!(shipment["customerId"], 7);
        assert_eq!(shipment["orderDate"], "2024-01-01T12:00:00.000Z");
        assert_eq!(shipment["lines"][0]["status"], "CANCELLED");
        assert_eq!(shipment["lines"][0]["item"], Value::Null);
        assert_eq!(shipment["lines"][1]["quantity"], Value::Null);
    }
    assert_eq!(app.dead_letter_depth().await, 0, "nothing is dead-lettered");
    app.cleanup().await;
}

#[tokio::test]
async fn an_original_update_before_its_order_is_parked_then_recorded() {
    let app = spawn_app().await;
    for format in FORMATS {
        let order = OriginalOrder::new(2);
        let update_id = Uuid::new_v4();
        let parked_before = app.count("pending_line_update").await;
        app.publisher
            .publish_update(format, update_id, &order.line_updated(1, "CANCELLED"))
            .await;
        wait_until("the update to be parked", EVENTUALLY, || async {
            (app.count("pending_line_update").await == parked_before + 1).then_some(())
        })
        .await
        .unwrap();
        assert_eq!(app.shipment_count(order.id).await, 0);

        app.publisher
            .publish_created(format, Uuid::new_v4(), &order.created())
            .await;
        app.wait_for_shipment(order.id).await;
        assert_bare_lines(&app, &order, &[(1, "CANCELLED")], format).await;
        assert_eq!(app.shipment_status(order.id).await.unwrap(), "PENDING");
        assert_eq!(app.count("pending_line_update").await, 0);

        // The parked update redelivered later is a duplicate, not a second park or line.
        app.publisher
            .publish_update(format, update_id, &order.line_updated(1, "CANCELLED"))
            .await;
        app.sync().await;
        assert_eq!(app.count("pending_line_update").await, 0);
        assert_eq!(app.consumed_count(update_id).await, 1);
        assert_eq!(lines_of(&app, order.id).await.len(), 1);
    }
    assert_eq!(app.dead_letter_depth().await, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn one_batch_of_the_original_producers_events_ends_right() {
    // Built, not started: everything below is delivered as one batch.
    let built = build_app(&[], |_| {}).await;
    let early = OriginalOrder::new(2); // updates before and after its order, in the batch
    let created_id = Uuid::new_v4();
    let events = [
        (
            WireFormat::Debezium,
            Uuid::new_v4(),
            "OrderLineUpdated",
            early.line_updated(0, "SHIPPED"),
        ),
        (
            WireFormat::Plain,
            created_id,
            "OrderCreated",
            early.created(),
        ),
        (
            WireFormat::Debezium,
            created_id,
            "OrderCreated",
            early.created(),
        ), // duplicate
        (
            WireFormat::Plain,
            Uuid::new_v4(),
            "OrderLineUpdated",
            early.line_updated(1, "CANCELLED"),
        ),
    ];
    for (format, id, event_type, payload) in &events {
        built
            .publisher
            .publish_as(*format, *id, event_type, payload)
            .await;
    }
    let app = built.start();
    app.wait_for_shipment(early.id).await;
    app.sync().await;

    assert_bare_lines(
        &app,
        &early,
        &[(0, "SHIPPED"), (1, "CANCELLED")],
        "one batch",
    )
    .await;
    assert_eq!(app.shipment_status(early.id).await.unwrap(), "PENDING");
    assert_eq!(app.count("pending_line_update").await, 0);
    assert_eq!(app.count("consumed_message").await, 3 + 1);
    assert_eq!(app.dead_letter_depth().await, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn the_captured_debezium_samples_alone_record_the_line() {
    // Debezium's own bytes: the OrderCreated has no lineItems, so the update's line is new.
    let app = spawn_app().await;
    let created = sample("order-created.json");
    let updated = sample("order-line-updated.json");
    let order_id = sample_order_id(&updated);
    let line_id = sample_id(&updated, "/source_row/payload/orderLineId");
    for message in [&created, &updated] {
        app.publisher.publish_sample(message).await;
    }
    app.sync().await;

    assert_eq!(app.line_status(line_id).await.unwrap(), "CANCELLED");
    assert_eq!(app.shipment_status(order_id).await.unwrap(), "PENDING");
    assert_eq!(app.dead_letter_depth().await, 0);
    app.cleanup().await;
}
