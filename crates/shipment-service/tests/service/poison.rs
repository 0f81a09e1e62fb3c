//! Poison messages go to the dead-letter queue with their reason, and the next good message is
//! still processed.

use lapin::BasicProperties;
use lapin::types::ShortString;
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

#[tokio::test]
async fn each_poison_kind_is_dead_lettered_with_its_reason() {
    let app = spawn_app().await;
    let order = Order::new(1);
    let event =
        |id: &Uuid| BasicProperties::default().with_message_id(ShortString::from(id.to_string()));
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let cases: Vec<(Vec<u8>, BasicProperties, &str, &str)> = vec![
        (b"{not json".to_vec(), event(&ids[0]), "malformed", "not JSON"),
        (
            json!({"eventType": "OrderShipped", "id": order.id}).to_string().into_bytes(),
            event(&ids[1]),
            "unknown-event-type",
            "OrderShipped",
        ),
        (
            json!({"eventType": "OrderCreated", "id": order.id, "orderDate": "2024-01-01T12:00:00Z"})
                .to_string()
                .into_bytes(),
            event(&ids[2]),
            "invalid-payload",
            "customerId",
        ),
        (
            json!({"eventType": "OrderCreated", "id": order.id, "customerId": "three", "orderDate": "2024-01-01T12:00:00Z"})
                .to_string()
                .into_bytes(),
            event(&ids[3]),
            "invalid-payload",
            "invalid type",
        ),
        (
            order.created().to_string().into_bytes(),
            BasicProperties::default(),
            "missing-event-id",
            "message_id",
        ),
        (
            json!({"eventType": "OrderLineUpdated", "orderId": order.id, "orderLineId": order.lines[0], "newStatus": "GONE", "oldStatus": "ENTERED"})
                .to_string()
                .into_bytes(),
            event(&ids[5]),
            "invalid-payload",
            "GONE",
        ),
    ];
    for (body, properties, _, _) in &cases {
        app.publisher.publish(body, properties.clone()).await;
    }
    // The next good message is processed.
    app.create_order(&order).await;

    let letters = take_dead_letters(&app, cases.len()).await;
    assert_eq!(letters.len(), cases.len());
    for ((body, properties, reason, mention), letter) in cases.iter().zip(&letters) {
        assert_eq!(&letter.body, body, "the body is kept as it came");
        assert_eq!(
            letter.message_id,
            properties.message_id().as_ref().map(|id| id.to_string())
        );
        assert_eq!(
            letter.header_text("x-death-reason").as_deref(),
            Some(*reason)
        );
        let error = letter.header_text("x-error").unwrap();
        assert!(
            error.contains(mention),
            "{reason}: {error:?} lacks {mention:?}"
        );
        assert_eq!(letter.attempts(), Some(1));
        assert_eq!(
            letter.header_text("x-original-queue").as_deref(),
            Some(QUEUE)
        );
    }
    app.wait_queue_drained().await;
    app.assert_metric("shipment_dead_lettered_total{reason=\"malformed\"}")
        .await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_update_of_a_line_the_order_does_not_have_is_rejected() {
    let app = spawn_app().await;
    let order = Order::new(1);
    app.publisher.publish_event(&order.created()).await;
    let stranger = Order {
        id: order.id,
        lines: vec![Uuid::new_v4()],
    };
    let update_id = Uuid::new_v4();
    app.publisher
        .publish_plain(update_id, &stranger.line_updated(0, "CANCELLED"))
        .await;
    app.sync().await;

    let letters = take_dead_letters(&app, 1).await;
    letters[0].assert_dead_lettered(update_id, "rejected", "has no line");
    // The original headers travel with it.
    assert_eq!(
        letters[0].header_text("eventType").as_deref(),
        Some("OrderLineUpdated")
    );
    assert_eq!(app.line_status(order.lines[0]).await.unwrap(), "ENTERED");
    app.cleanup().await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_after_max_attempts() {
    let app = spawn_app_with(&[("SHIPMENT_MAX_ATTEMPTS", "3")], |_| {}).await;
    // A constraint the event breaks on every attempt (a real database error, no mock).
    sqlx::query(
        "ALTER TABLE shipments.shipment_line ADD CONSTRAINT no_cursed_items CHECK (item <> 'cursed')",
    )
    .execute(app.pool())
    .await
    .unwrap();
    let order = Order::new(1);
    let mut created = order.created();
    created["lineItems"][0]["item"] = json!("cursed");
    let event_id = Uuid::new_v4();
    app.publisher.publish_plain(event_id, &created).await;
    app.sync().await;

    let letters = take_dead_letters(&app, 1).await;
    letters[0].assert_dead_lettered(event_id, "max-attempts", "no_cursed_items");
    assert_eq!(letters[0].attempts(), Some(3));
    // Nothing of it was committed.
    assert_eq!(app.shipment_count(order.id).await, 0);
    assert_eq!(app.consumed_count(event_id).await, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn a_poison_message_inside_a_batch_does_not_take_the_good_ones_down() {
    let poison = b"[1, 2, 3]".to_vec();
    bad_message_inside_a_batch(poison, "malformed").await;
}

#[tokio::test]
async fn a_rejected_event_inside_a_batch_rolls_back_only_itself() {
    // Decodes fine, fails while applying: the batch transaction is rolled back and redone
    // message by message; the good events are applied once, the bad one is dead-lettered.
    let stranger = Order::new(1);
    let update = json!({"eventType": "OrderLineUpdated", "orderId": Uuid::nil(), "orderLineId": stranger.lines[0], "newStatus": "CANCELLED", "oldStatus": "ENTERED"});
    bad_message_inside_a_batch(update.to_string().into_bytes(), "rejected").await;
}

async fn bad_message_inside_a_batch(bad_body: Vec<u8>, reason: &str) {
    // Built, not started: the messages below wait in the queue and arrive as one batch.
    let built = build_app(&[], |_| {}).await;
    let publisher = &built.publisher;
    // An order known to have no lines (`lineItems: []`): an update for Uuid::nil() would
    // otherwise be parked, and without lineItems its line would be recorded, not rejected.
    let nil_order = json!({"eventType": "OrderCreated", "id": Uuid::nil(), "customerId": 1, "orderDate": "2024-01-01T00:00:00Z", "lineItems": []});
    publisher.publish_event(&nil_order).await;
    let orders: Vec<Order> = (0..20).map(|_| Order::new(1)).collect();
    let bad_id = Uuid::new_v4();
    for (index, order) in orders.iter().enumerate() {
        if index == 10 {
            publisher
                .publish(
                    &bad_body,
                    BasicProperties::default()
                        .with_message_id(ShortString::from(bad_id.to_string()))
                        .with_headers(string_table(&[])),
                )
                .await;
        }
        publisher.publish_event(&order.created()).await;
    }
    let app = built.start();
    for order in &orders {
        app.wait_for_shipment(order.id).await;
    }
    let letters = take_dead_letters(&app, 1).await;
    assert_eq!(letters[0].message_id, Some(bad_id.to_string()));
    assert_eq!(
        letters[0].header_text("x-death-reason").as_deref(),
        Some(reason)
    );
    assert_eq!(app.count("shipment").await, 21);
    assert_eq!(app.count("shipment_line").await, 20);
    assert_eq!(app.count("consumed_message").await, 21);
    app.wait_queue_drained().await;
    app.cleanup().await;
}
