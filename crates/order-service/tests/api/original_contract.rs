//! What the original system's clients and consumers rely on, written from its contract (issue
//! 12), not from our code: the events our producer writes pass the original consumer's checks
//! (every id a version 4 UUID, `orderDate` ISO 8601, `customerId` an integer, statuses of the
//! enum); `ID_FORMAT=uuid7` is the opt-in exception; error bodies carry `statusCode`, and
//! `/health` answers `"health": true`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    OutboxRow, TestApp, assert_error, ids, sample_cancel_request, sample_create_request, spawn_app,
    spawn_app_with,
};

/// The original consumer's UUID check (class-validator `isUUID('4')`):
/// `^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`, case-insensitive.
fn is_uuid_v4(value: &Value) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| {
            if matches!(index, 8 | 13 | 18 | 23) {
                *byte == b'-'
            } else {
                byte.is_ascii_hexdigit()
            }
        })
        && bytes[14] == b'4'
        && matches!(bytes[19].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b')
}

fn is_status(value: &Value) -> bool {
    matches!(value.as_str(), Some("ENTERED" | "CANCELLED" | "SHIPPED"))
}

/// An ISO 8601 instant, as JavaScript's `Date.toISOString()` writes it
/// (`2024-01-01T12:00:00.000Z`).
fn is_iso_8601(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        chrono::DateTime::parse_from_rfc3339(text).is_ok()
            && text.len() == 24
            && text.ends_with('Z')
            && text.as_bytes()[10] == b'T'
    })
}

/// Every check the original consumer makes of an outbox row's payload; panics naming the
/// first that fails.
fn assert_original_consumer_accepts(row: &OutboxRow) {
    let payload = &row.payload;
    assert_eq!(row.aggregate_type, "order", "{payload}");
    assert_eq!(payload["eventType"], row.event_type.as_str(), "{payload}");
    match row.event_type.as_str() {
        "OrderCreated" => {
            assert!(is_uuid_v4(&payload["id"]), "id: {payload}");
            assert_eq!(payload["id"], row.aggregate_id.as_str(), "{payload}");
            assert!(is_iso_8601(&payload["orderDate"]), "orderDate: {payload}");
            assert!(
                payload["customerId"].is_i64(),
                "customerId an integer: {payload}"
            );
            // Our extra member: its ids and statuses obey the same rules.
            for line in payload["lineItems"].as_array().unwrap() {
                assert!(is_uuid_v4(&line["id"]), "lineItems[].id: {payload}");
                assert!(is_status(&line["status"]), "lineItems[].status: {payload}");
            }
        }
        "OrderLineUpdated" => {
            assert!(is_uuid_v4(&payload["orderId"]), "orderId: {payload}");
            assert_eq!(payload["orderId"], row.aggregate_id.as_str(), "{payload}");
            assert!(
                is_uuid_v4(&payload["orderLineId"]),
                "orderLineId: {payload}"
            );
            assert!(is_status(&payload["oldStatus"]), "oldStatus: {payload}");
            assert!(is_status(&payload["newStatus"]), "newStatus: {payload}");
        }
        other => panic!("the original consumer knows no event type {other}"),
    }
}

/// POST the sample order, cancel its first line, ship its second: three events.
async fn readme_flows(app: &TestApp) -> (String, Vec<String>) {
    let (order_id, line_ids) = ids(&app.create_sample_order().await);
    for (line, body) in [
        (&line_ids[0], sample_cancel_request()),
        (&line_ids[1], json!({"newStatus": "SHIPPED"})),
    ] {
        assert_eq!(
            app.put_line(&order_id, line, &body).await.status(),
            StatusCode::OK
        );
    }
    (order_id, line_ids)
}

#[test]
fn the_consumer_checks_tell_v4_from_other_ids() {
    assert!(is_uuid_v4(&json!("6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2")));
    assert!(is_uuid_v4(&json!("6F1C2A3E-8B4D-4F5A-AC6B-7D8E9FA0B1C2")));
    for bad in [
        json!(uuid::Uuid::now_v7().to_string()),
        json!("6f1c2a3e-8b4d-4f5a-7c6b-7d8e9fa0b1c2"),
        json!("6f1c2a3e8b4d4f5a9c6b7d8e9fa0b1c2"),
        json!(42),
    ] {
        assert!(!is_uuid_v4(&bad), "{bad}");
    }
    assert!(is_iso_8601(&json!("2024-01-01T12:00:00.000Z")));
    assert!(!is_iso_8601(&json!("2024-01-01 12:00:00")));
    assert!(!is_iso_8601(&json!("yesterday")));
}

#[tokio::test]
async fn our_events_pass_the_original_consumers_checks() {
    let app = spawn_app().await;

    let (order_id, line_ids) = readme_flows(&app).await;

    let rows = app.outbox_rows().await;
    let types: Vec<&str> = rows.iter().map(|row| row.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["OrderCreated", "OrderLineUpdated", "OrderLineUpdated"]
    );
    for row in &rows {
        assert_original_consumer_accepts(row);
        assert_eq!(row.id.get_version_num(), 4, "outbox row id: {row:?}");
    }
    assert_eq!(rows[1].payload["orderLineId"], line_ids[0].as_str());
    assert_eq!(rows[2].payload["orderLineId"], line_ids[1].as_str());
    assert_eq!(rows[0].payload["id"], order_id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn id_format_uuid7_makes_time_ordered_ids_everywhere() {
    let app = spawn_app_with(&[("ID_FORMAT", "uuid7")]).await;
    let lines: Vec<Value> = (0..5)
        .map(|i| json!({"item": format!("item {i}"), "quantity": 1, "totalPrice": 1}))
        .collect();
    let body = json!({"customerId": 9, "orderDate": "2024-01-01T12:00:00Z", "lineItems": lines});
    let created: Value = app.post_order(&body).await.json().await.unwrap();

    let (order_id, line_ids) = readme_flows(&app).await;

    let version = |text: &str| uuid::Uuid::parse_str(text).unwrap().get_version_num();
    assert_eq!(version(&order_id), 7);
    for line in &line_ids {
        assert_eq!(version(line), 7);
    }
    let rows = app.outbox_rows().await;
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert_eq!(row.id.get_version_num(), 7, "outbox row id: {row:?}");
        assert!(
            !is_uuid_v4(&Value::String(row.aggregate_id.clone())),
            "the original's consumers would refuse it"
        );
    }
    let fetched: Value = app.fetch_order(&created).await;
    assert_eq!(fetched, created, "lines in request order");
    app.stop().await;
}

#[tokio::test]
async fn error_bodies_carry_the_status_code() {
    let app = spawn_app().await;
    let unknown = "0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5";

    for (response, status, code, field) in [
        (
            app.post_order_raw("{\"customerId\": ", Some("application/json"))
                .await,
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            app.post_order_raw(
                serde_json::to_vec(&sample_create_request()).unwrap(),
                Some("text/plain"),
            )
            .await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            app.post_order(&json!({"customerId": "3"})).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("customerId"),
        ),
        (
            app.get_order("42").await,
            StatusCode::BAD_REQUEST,
            "invalid_path_parameter",
            Some("orderId"),
        ),
        (
            app.get_order(unknown).await,
            StatusCode::NOT_FOUND,
            "order_not_found",
            Some("orderId"),
        ),
        (
            app.get("/no/such/route").await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            app.request(Method::DELETE, "/orders").await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        ),
    ] {
        let expected = status.as_u16();
        let body = assert_error(response, status, code, field).await;
        assert_eq!(body["statusCode"], json!(expected), "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn health_answers_the_originals_key() {
    let app = spawn_app().await;

    let body = app.get_ok_json("/health").await;

    assert_eq!(body["health"], json!(true), "{body}");
    app.stop().await;
}
