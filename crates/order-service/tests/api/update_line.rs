//! `PUT /orders/{orderId}/lines/{orderLineId}`: allowed and refused status changes, and the
//! `OrderLineUpdated` event written only for a change that happened.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_api_error, ids, sample_cancel_request, spawn_app};

#[tokio::test]
async fn the_sample_cancel_request_cancels_one_line_and_writes_its_event() {
    let app = spawn_app().await;
    let created = app.create_sample_order().await;
    let (order_id, line_ids) = ids(&created);

    let response = app
        .put_line(&order_id, &line_ids[0], &sample_cancel_request())
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let order: serde_json::Value = response.json().await.unwrap();
    let mut expected = created.clone();
    expected["lineItems"][0]["status"] = json!("CANCELLED");
    assert_eq!(order, expected, "the whole order, one line changed");
    let fetched: serde_json::Value = app.get_order(&order_id).await.json().await.unwrap();
    assert_eq!(fetched, expected);

    let events = app.outbox_rows().await;
    assert_eq!(events.len(), 2);
    let event = &events[1];
    assert_eq!(event.event_type, "OrderLineUpdated");
    assert_eq!(event.aggregate_type, "order");
    assert_eq!(event.aggregate_id, order_id);
    assert_eq!(
        event.payload,
        json!({
            "eventType": "OrderLineUpdated",
            "orderId": order_id,
            "orderLineId": line_ids[0],
            "newStatus": "CANCELLED",
            "oldStatus": "ENTERED"
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn an_entered_line_can_be_shipped() {
    let app = spawn_app().await;
    let (order_id, line_ids) = ids(&app.create_sample_order().await);

    let response = app.put_status(&order_id, &line_ids[1], "SHIPPED").await;

    assert_eq!(response.status(), StatusCode::OK);
    let order: serde_json::Value = response.json().await.unwrap();
    assert_eq!(order["lineItems"][0]["status"], "ENTERED");
    assert_eq!(order["lineItems"][1]["status"], "SHIPPED");
    assert_eq!(app.line_status(&line_ids[1]).await, "SHIPPED");
    let events = app.outbox_rows().await;
    assert_eq!(events[1].payload["newStatus"], "SHIPPED");
    app.stop().await;
}

#[tokio::test]
async fn refused_transitions_answer_409_and_write_no_event() {
    let app = spawn_app().await;
    let (order_id, line_ids) = ids(&app.create_sample_order().await);
    let cancel = app.put_status(&order_id, &line_ids[0], "CANCELLED").await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let before = app.counts().await;

    for (line, new_status, current) in [
        (&line_ids[0], "CANCELLED", "CANCELLED"),
        (&line_ids[0], "SHIPPED", "CANCELLED"),
        (&line_ids[0], "ENTERED", "CANCELLED"),
        (&line_ids[1], "ENTERED", "ENTERED"),
    ] {
        let response = app.put_status(&order_id, line, new_status).await;
        let body = assert_api_error(response, "status_conflict", Some("newStatus")).await;
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(current) && message.contains(new_status),
            "{message}"
        );
        assert_eq!(app.line_status(line).await, current);
    }
    assert_eq!(app.counts().await, before, "no event, no change");
    app.stop().await;
}

#[tokio::test]
async fn unknown_orders_and_lines_answer_404_naming_which() {
    let app = spawn_app().await;
    let (order_id, line_ids) = ids(&app.create_sample_order().await);
    let (other_order_id, other_line_ids) = ids(&app.create_sample_order().await);
    let before = app.counts().await;
    let unknown = "0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5";
    let cancel = sample_cancel_request();

    let response = app.put_line(unknown, &line_ids[0], &cancel).await;
    assert_api_error(response, "order_not_found", Some("orderId")).await;

    let response = app.put_line(&order_id, unknown, &cancel).await;
    assert_api_error(response, "order_line_not_found", Some("orderLineId")).await;

    // A line that exists, but in another order.
    let response = app.put_line(&order_id, &other_line_ids[0], &cancel).await;
    assert_api_error(response, "order_line_not_found", Some("orderLineId")).await;

    assert_eq!(app.counts().await, before);
    assert_eq!(app.line_status(&other_line_ids[0]).await, "ENTERED");
    let _ = other_order_id;
    app.stop().await;
}
