//! `GET /health` and `GET /metrics`, and how the service answers while the database is gone.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_api_error, ids, sample_create_request, spawn_app};

/// The value of the sample of `name` whose labels include all of `labels`.
fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| label_text.contains(&format!("{key}=\"{value}\""))))
            .then(|| value.parse().ok())?
        })
        .next()
}

#[tokio::test]
async fn health_reports_the_database_up() {
    let app = spawn_app().await;

    let body = app.get_ok_json("/health").await;

    assert_eq!(
        body,
        json!({"status": "UP", "database": "UP", "health": true}),
        "ours and the original's {{\"health\": true}}"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_events_by_type() {
    let app = spawn_app().await;
    let (order_id, line_ids) = ids(&app.create_sample_order().await);
    app.create_sample_order().await;
    let statuses = [
        app.get_order(&order_id).await.status(),
        app.put_status(&order_id, &line_ids[0], "CANCELLED")
            .await
            .status(),
        app.put_status(&order_id, &line_ids[0], "CANCELLED")
            .await
            .status(),
        app.post_order(&json!({})).await.status(),
        app.get("/no/such/route").await.status(),
    ];
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::CONFLICT,
            StatusCode::BAD_REQUEST,
            StatusCode::NOT_FOUND
        ]
    );

    let text = app.metrics_text().await;
    let requests = |method, route, status| {
        metric_value(
            &text,
            "http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("POST", "/orders", "201"), Some(2.0), "{text}");
    assert_eq!(requests("POST", "/orders", "400"), Some(1.0), "{text}");
    assert_eq!(
        requests("GET", "/orders/{orderId}", "200"),
        Some(1.0),
        "{text}"
    );
    let line_route = "/orders/{orderId}/lines/{orderLineId}";
    assert_eq!(requests("PUT", line_route, "200"), Some(1.0), "{text}");
    assert_eq!(requests("PUT", line_route, "409"), Some(1.0), "{text}");
    assert_eq!(requests("GET", "unmatched", "404"), Some(1.0), "{text}");
    assert!(!text.contains(&order_id), "raw ids never become labels");

    let events = |event_type| {
        metric_value(
            &text,
            "outbox_events_written_total",
            &[("event_type", event_type)],
        )
    };
    assert_eq!(events("OrderCreated"), Some(2.0), "{text}");
    assert_eq!(events("OrderLineUpdated"), Some(1.0), "{text}");

    let histogram_count = metric_value(
        &text,
        "http_request_duration_seconds_count",
        &[("method", "POST"), ("route", "/orders")],
    );
    assert_eq!(histogram_count, Some(3.0), "{text}");
    assert!(
        metric_value(
            &text,
            "http_request_duration_seconds_bucket",
            &[("route", "/orders"), ("le", "+Inf")]
        )
        .is_some(),
        "{text}"
    );
    assert!(metric_value(&text, "db_pool_connections", &[]).is_some_and(|n| n >= 1.0));
    app.stop().await;
}

#[tokio::test]
async fn without_its_database_the_service_answers_503_and_writes_nothing() {
    let app = spawn_app().await;
    let (order_id, _) = ids(&app.create_sample_order().await);
    let before = app.counts().await;

    app.app_pool.close().await;

    let response = app.get("/health").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["database"], "DOWN");
    assert_eq!(body["health"], false);

    let response = app.post_order(&sample_create_request()).await;
    assert_api_error(response, "database_unavailable", None).await;
    let response = app.get_order(&order_id).await;
    assert_api_error(response, "database_unavailable", None).await;
    assert_eq!(app.counts().await, before);
    app.stop().await;
}
