//! The HTTP routes and their errors.

use serde_json::Value;
use uuid::Uuid;

use crate::support::*;

#[tokio::test]
async fn shipments_are_listed_paged_filtered_and_fetched() {
    let app = spawn_app().await;
    let orders: Vec<Order> = (0..3).map(|_| Order::new(2)).collect();
    for order in &orders {
        app.publisher.publish_event(&order.created()).await;
    }
    app.publisher
        .publish_event(&orders[0].line_updated(0, "CANCELLED"))
        .await;
    app.sync().await;

    let (status, page) = app.get("/shipments?page=0&size=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 4);
    assert_eq!(page["size"], 2);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let (_, last) = app.get("/shipments?page=1&size=3").await;
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    let (_, beyond) = app.get("/shipments?page=9").await;
    assert_eq!(beyond["items"], Value::Array(vec![]));

    let (status, filtered) = app
        .get(&format!("/shipments?orderId={}", orders[0].id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(filtered["total"], 1);
    let shipment = &filtered["items"][0];
    assert_eq!(shipment["orderId"], orders[0].id.to_string());
    assert_eq!(shipment["customerId"], 3);
    assert_eq!(shipment["orderDate"], "2024-01-01T12:00:00.000Z");
    assert_eq!(shipment["status"], "PENDING");
    assert_eq!(
        shipment["lines"][0]["orderLineId"],
        orders[0].lines[0].to_string()
    );
    assert_eq!(shipment["lines"][0]["status"], "CANCELLED");
    assert_eq!(shipment["lines"][1]["item"], "Book 1");
    assert_eq!(shipment["lines"][1]["quantity"], 2);

    let id = shipment["id"].as_str().unwrap();
    let (status, one) = app.get(&format!("/shipments/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(&one, shipment);
    app.cleanup().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_naming_the_field() {
    let app = spawn_app().await;
    for (path, status, field) in [
        ("/shipments/not-a-uuid", 400, Some("id")),
        ("/shipments/%FF%FE", 400, Some("id")),
        ("/shipments?page=-1", 400, Some("page")),
        ("/shipments?page=x", 400, Some("page")),
        ("/shipments?size=0", 400, Some("size")),
        ("/shipments?size=1000", 400, Some("size")),
        ("/shipments?orderId=42", 400, Some("orderId")),
        ("/shipments?colour=red", 400, Some("colour")),
        ("/nowhere", 404, None),
    ] {
        let (actual, body) = app.get(path).await;
        assert_eq!(actual, status, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
        assert!(body["message"].is_string(), "{path}: {body}");
        assert_eq!(body["field"].as_str(), field, "{path}: {body}");
        // The original (NestJS) clients' key.
        assert_eq!(body["statusCode"], status, "{path}: {body}");
    }
    let missing = Uuid::new_v4();
    let (status, body) = app.get(&format!("/shipments/{missing}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["statusCode"], 404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&missing.to_string())
    );

    let response = app.http.post(app.url("/shipments")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    assert_eq!(body["statusCode"], 405);
    app.cleanup().await;
}

#[tokio::test]
async fn health_and_metrics() {
    let app = spawn_app().await;
    app.wait_healthy().await;
    let (_, health) = app.get("/health").await;
    assert_eq!(health["status"], "UP");
    assert_eq!(health["database"], "UP");
    assert_eq!(health["broker"], "UP");
    // The original's answer, alongside ours.
    assert_eq!(health["health"], true);

    app.sync().await;
    let text = app.metrics().await;
    for name in [
        "shipment_messages_consumed_total{event_type=\"OrderCreated\",outcome=\"applied\"}",
        "shipment_processing_seconds_bucket",
        "shipment_event_delay_seconds_bucket",
        "shipment_duplicates_total",
        "shipment_broker_connected",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn health_is_false_when_the_broker_is_gone() {
    let app = spawn_app().await;
    app.wait_healthy().await;
    // Deleting the vhost closes the service's connection, and it cannot reconnect.
    test_support::ManagementApi::from_env()
        .unwrap()
        .delete(&format!("/api/vhosts/{}", app.vhost.name))
        .await
        .unwrap();
    let body = test_support::wait_until("unhealthy", test_support::EVENTUALLY, || async {
        let (status, body) = app.get("/health").await;
        (status == 503).then_some(body)
    })
    .await
    .unwrap();
    assert_eq!(body["health"], false, "{body}");
    assert_eq!(body["broker"], "DOWN", "{body}");
    app.cleanup().await;
}
