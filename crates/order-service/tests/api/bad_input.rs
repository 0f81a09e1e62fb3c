//! Bad input: every case answers a JSON error naming the field, never a 5xx, and changes
//! nothing in the database (row counts compared before and after).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{assert_api_error, ids, sample_create_request, spawn_app};

fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    *body.pointer_mut(pointer).unwrap() = value;
    body
}

fn without(mut body: Value, parent: &str, field: &str) -> Value {
    body.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(field);
    body
}

#[tokio::test]
async fn invalid_create_requests_are_refused_with_the_field_named() {
    let app = spawn_app().await;
    app.create_sample_order().await;
    let before = app.counts().await;
    let sample = sample_create_request();
    let line = json!({"item": "x", "quantity": 1, "totalPrice": 1});
    let lines = |n: usize| json!({"customerId": 3, "orderDate": "2024-01-01T12:00:00", "lineItems": vec![line.clone(); n]});

    // Per field: the error's field name, its JSON pointer in the sample request, and the bad
    // values it refuses (None: the field is missing).
    let bad_values = vec![
        (
            "customerId",
            "/customerId",
            vec![
                ("missing", None),
                ("null", Some(Value::Null)),
                ("a string", Some(json!("3"))),
                ("a fraction", Some(json!(3.5))),
                ("zero", Some(json!(0))),
                ("negative", Some(json!(-3))),
                ("over int32", Some(json!(2147483648i64))),
            ],
        ),
        (
            "orderDate",
            "/orderDate",
            vec![
                ("missing", None),
                ("not a date", Some(json!("yesterday"))),
                ("a number", Some(json!(1704110400))),
                ("impossible", Some(json!("2024-02-30T12:00:00"))),
            ],
        ),
        (
            "lineItems",
            "/lineItems",
            vec![
                ("missing", None),
                ("empty", Some(json!([]))),
                ("an object", Some(json!({}))),
            ],
        ),
        (
            "lineItems[1]",
            "/lineItems/1",
            vec![("a number", Some(json!(7)))],
        ),
        (
            "lineItems[1].item",
            "/lineItems/1/item",
            vec![
                ("missing", None),
                ("empty", Some(json!(""))),
                ("blank", Some(json!("   "))),
                ("too long", Some(json!("x".repeat(256)))),
                ("with NUL", Some(json!("a\u{0}b"))),
                ("a number", Some(json!(5))),
            ],
        ),
        (
            "lineItems[0].quantity",
            "/lineItems/0/quantity",
            vec![
                ("missing", None),
                ("zero", Some(json!(0))),
                ("negative", Some(json!(-2))),
                ("a fraction", Some(json!(1.5))),
                ("a string", Some(json!("2"))),
                ("over int32", Some(json!(4294967296i64))),
            ],
        ),
        (
            "lineItems[0].totalPrice",
            "/lineItems/0/totalPrice",
            vec![
                ("missing", None),
                ("negative", Some(json!(-0.01))),
                ("a string", Some(json!("39.98"))),
                ("non-numeric", Some(json!("abc"))),
                ("three decimals", Some(json!(39.985))),
                ("over numeric(12,2)", Some(json!(10000000000.0))),
                ("huge", Some(json!(1e300))),
            ],
        ),
    ];
    let mut cases: Vec<(String, Value, &str)> = vec![
        ("body is an array".into(), json!([]), "$"),
        ("body is null".into(), Value::Null, "$"),
        ("body is a string".into(), json!("order"), "$"),
        ("too many lineItems".into(), lines(1001), "lineItems"),
        (
            "unknown top-level field".into(),
            with(sample.clone(), "/lineItems", json!([line.clone()]))
                .as_object()
                .cloned()
                .map(|mut o| {
                    o.insert("status".into(), json!("NEW"));
                    Value::Object(o)
                })
                .unwrap(),
            "status",
        ),
        (
            "status given for a line".into(),
            with(
                sample.clone(),
                "/lineItems/0",
                json!({"item": "x", "quantity": 1, "totalPrice": 1, "status": "SHIPPED"}),
            ),
            "lineItems[0].status",
        ),
    ];
    for (field, pointer, values) in bad_values {
        for (what, value) in values {
            let body = match value {
                Some(value) => with(sample.clone(), pointer, value),
                None => {
                    let (parent, name) = pointer.rsplit_once('/').unwrap();
                    without(sample.clone(), parent, name)
                }
            };
            cases.push((format!("{field} {what}"), body, field));
        }
    }
    for (case, body, field) in cases {
        let response = app.post_order(&body).await;
        assert!(
            response.status() == StatusCode::BAD_REQUEST,
            "{case}: status {}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_field", "{case}: {body}");
        assert_eq!(body["field"], field, "{case}: {body}");
        let named = if field == "$" { "the body" } else { field };
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(named)),
            "{case}: {body}"
        );
    }
    assert_eq!(app.counts().await, before, "nothing written");
    app.stop().await;
}

#[tokio::test]
async fn malformed_bodies_and_media_types_are_refused() {
    let app = spawn_app().await;
    let before = app.counts().await;
    let sample = serde_json::to_string(&sample_create_request()).unwrap();

    for (case, raw) in [
        ("truncated", "{\"customerId\":3,"),
        ("empty", ""),
        ("trailing garbage", "{} x"),
        ("not json at all", "order please"),
    ] {
        let response = app
            .post_order_raw(raw.to_owned(), Some("application/json"))
            .await;
        let status = response.status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "malformed_json", "{case}: {body}");
    }
    let invalid_utf8 = app
        .post_order_raw(vec![b'{', 0xff, 0xfe, b'}'], Some("application/json"))
        .await;
    assert_api_error(invalid_utf8, "malformed_json", None).await;

    let response = app.post_order_raw(sample.clone(), None).await;
    assert_api_error(response, "unsupported_media_type", None).await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let response = app.post_order_raw(sample.clone(), Some(content_type)).await;
        assert_api_error(response, "unsupported_media_type", None).await;
    }
    // Parameters are fine.
    let response = app
        .post_order_raw(sample.clone(), Some("application/json; charset=utf-8"))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let after_one = app.counts().await;
    assert_eq!(after_one.orders, before.orders + 1);

    // Over the 64 KiB limit, whether or not Content-Length announces it.
    let huge = format!(
        "{{\"customerId\":3,\"orderDate\":\"2024-01-01T12:00:00\",\"lineItems\":[{{\"item\":\"{}\",\"quantity\":1,\"totalPrice\":1}}]}}",
        "x".repeat(70 * 1024)
    );
    let response = app
        .post_order_raw(huge.clone(), Some("application/json"))
        .await;
    assert_api_error(response, "payload_too_large", None).await;
    let status_line = post_chunked(&app.address, huge.as_bytes()).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    assert_eq!(app.counts().await, after_one, "nothing more written");
    app.stop().await;
}

/// POSTs `body` with chunked transfer encoding (no Content-Length, so the limit can only be
/// enforced while reading) over a raw connection; returns the response's status line.
async fn post_chunked(address: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(8192) {
        let sent = async {
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            stream.write_all(chunk).await?;
            stream.write_all(b"\r\n").await
        };
        // The server may answer 413 and close before it has read everything.
        if sent.await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn invalid_status_changes_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (order_id, line_ids) = ids(&app.create_sample_order().await);
    let line = &line_ids[0];
    let before = app.counts().await;

    for (case, body, field) in [
        ("unknown status", json!({"newStatus": "LOST"}), "newStatus"),
        (
            "lower-case status",
            json!({"newStatus": "cancelled"}),
            "newStatus",
        ),
        ("status a number", json!({"newStatus": 2}), "newStatus"),
        ("status missing", json!({}), "newStatus"),
        ("status null", json!({"newStatus": null}), "newStatus"),
        (
            "unknown field",
            json!({"newStatus": "CANCELLED", "reason": "x"}),
            "reason",
        ),
        ("body an array", json!(["CANCELLED"]), "$"),
    ] {
        let response = app.put_line(&order_id, line, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_field", "{case}: {body}");
        assert_eq!(body["field"], field, "{case}: {body}");
    }

    let response = app
        .put_line_raw(&order_id, line, "{\"newStatus\":", Some("application/json"))
        .await;
    assert_api_error(response, "malformed_json", None).await;
    let response = app
        .put_line_raw(&order_id, line, "{\"newStatus\":\"CANCELLED\"}", None)
        .await;
    assert_api_error(response, "unsupported_media_type", None).await;
    let response = app
        .put_line_raw(&order_id, line, "newStatus=CANCELLED", Some("text/plain"))
        .await;
    assert_api_error(response, "unsupported_media_type", None).await;

    let cancel = json!({"newStatus": "CANCELLED"});
    let response = app.put_line("not-a-uuid", line, &cancel).await;
    assert_api_error(response, "invalid_path_parameter", Some("orderId")).await;
    let response = app.put_line(&order_id, "42", &cancel).await;
    assert_api_error(response, "invalid_path_parameter", Some("orderLineId")).await;

    assert_eq!(app.counts().await, before);
    assert_eq!(app.line_status(line).await, "ENTERED");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;

    let response = app.get("/nothing/here").await;
    assert_api_error(response, "not_found", None).await;
    let response = app.request(Method::DELETE, "/orders").await;
    assert_api_error(response, "method_not_allowed", None).await;
    let response = app
        .request(
            Method::DELETE,
            "/orders/0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5",
        )
        .await;
    assert_api_error(response, "method_not_allowed", None).await;

    assert_eq!(app.counts().await.orders, 0);
    app.stop().await;
}
