//! `POST /orders` and `GET /orders/{orderId}`: the sample request, the answer's shape, the rows
//! and the `OrderCreated` outbox event.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Counts, assert_api_error, ids, sample_create_request, spawn_app};

#[tokio::test]
async fn the_sample_request_creates_the_order_and_its_event() {
    let app = spawn_app().await;

    let response = app.post_order(&sample_create_request()).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let order: serde_json::Value = response.json().await.unwrap();
    let (order_id, line_ids) = ids(&order);
    assert_eq!(
        order,
        json!({
            "id": order_id,
            "customerId": 3,
            "orderDate": "2024-01-01T12:00:00.000Z",
            "lineItems": [
                {"id": line_ids[0], "item": "Debezium in Action", "quantity": 2, "totalPrice": 39.98, "status": "ENTERED"},
                {"id": line_ids[1], "item": "Debezium for Dummies", "quantity": 1, "totalPrice": 29.99, "status": "ENTERED"}
            ]
        })
    );
    assert_eq!(app.counts().await, Counts::new(1, 2, 1));
    let prices: Vec<(String, Option<i32>)> = sqlx::query_as(
        "SELECT total_price::text, position FROM orders.order_line WHERE order_id = $1::uuid \
         ORDER BY position",
    )
    .bind(&order_id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        prices,
        [("39.98".to_owned(), Some(0)), ("29.99".to_owned(), Some(1))]
    );

    let events = app.outbox_rows().await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(
        event.id.get_version_num(),
        4,
        "event id v4 by default, as the original's consumers require"
    );
    assert_eq!(
        uuid::Uuid::parse_str(&order_id).unwrap().get_version_num(),
        4
    );
    for line_id in &line_ids {
        assert_eq!(uuid::Uuid::parse_str(line_id).unwrap().get_version_num(), 4);
    }
    assert_eq!(event.aggregate_type, "order");
    assert_eq!(event.aggregate_id, order_id);
    assert_eq!(event.event_type, "OrderCreated");
    let mut expected_payload = order.clone();
    expected_payload["eventType"] = json!("OrderCreated");
    assert_eq!(event.payload, expected_payload);

    app.stop().await;
}

#[tokio::test]
async fn get_answers_the_created_order() {
    let app = spawn_app().await;
    let created = app.create_sample_order().await;
    let (order_id, _) = ids(&created);

    let response = app.get_order(&order_id).await;

    assert_eq!(response.status(), StatusCode::OK);
    let fetched: serde_json::Value = response.json().await.unwrap();
    assert_eq!(fetched, created);
    app.stop().await;
}

#[tokio::test]
async fn order_dates_with_an_offset_or_fraction_are_answered_in_utc_millis() {
    let app = spawn_app().await;
    for (sent, answered) in [
        ("2024-01-01T14:00:00+02:00", "2024-01-01T12:00:00.000Z"),
        ("2024-06-30T23:59:59.123Z", "2024-06-30T23:59:59.123Z"),
        ("2024-06-30T23:59:59.123456789", "2024-06-30T23:59:59.123Z"),
    ] {
        let mut body = sample_create_request();
        body["orderDate"] = json!(sent);
        let response = app.post_order(&body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{sent}");
        let created: serde_json::Value = response.json().await.unwrap();
        assert_eq!(created["orderDate"], answered, "{sent}");
        let fetched: serde_json::Value = app.fetch_order(&created).await;
        assert_eq!(fetched, created, "{sent}");
    }
    app.stop().await;
}

#[tokio::test]
async fn lines_keep_their_request_order_and_prices() {
    let app = spawn_app().await;
    let lines: Vec<_> = (0..50)
        .map(|i| json!({"item": format!("item {i}"), "quantity": i + 1, "totalPrice": i as f64 + 0.5}))
        .collect();
    let body =
        json!({"customerId": 2147483647, "orderDate": "2024-01-01T12:00:00", "lineItems": lines});

    let created: serde_json::Value = app.post_order(&body).await.json().await.unwrap();
    let fetched: serde_json::Value = app.fetch_order(&created).await;

    assert_eq!(fetched, created);
    let (_, line_ids) = crate::helpers::ids(&created);
    let mut sorted = line_ids.clone();
    sorted.sort();
    assert_ne!(sorted, line_ids, "v4 ids: id order is not request order");
    for (i, line) in fetched["lineItems"].as_array().unwrap().iter().enumerate() {
        assert_eq!(line["item"], format!("item {i}"));
        assert_eq!(line["totalPrice"], json!(i as f64 + 0.5));
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_or_malformed_order_ids_are_refused() {
    let app = spawn_app().await;

    let response = app.get_order("0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5").await;
    let body = assert_api_error(response, "order_not_found", Some("orderId")).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5")
    );

    let response = app.get_order("%FF%FE").await;
    assert_api_error(response, "invalid_path_parameter", Some("path")).await;
    for bad in [
        "42",
        "not-a-uuid",
        "0f5c7d1e2a3b4c5d8e9fa0b1c2d3e4f5",
        "%00",
    ] {
        let response = app.get_order(bad).await;
        assert_api_error(response, "invalid_path_parameter", Some("orderId")).await;
    }
    app.stop().await;
}
