//! Trace propagation through the outbox, with the three real binaries, the real PostgreSQL and
//! RabbitMQ, and an OTLP/HTTP (JSON) receiver in the test standing in for a collector:
//!
//! - an order POSTed with a `traceparent` keeps that trace id from the HTTP request (the
//!   order-service span), through the outbox row's `tracingspancontext` column and the
//!   message's `traceparent` header (the shipment-service span is a child of the order-service
//!   request span), to the consumer's transaction;
//! - an outbox table without that column (the original system's) still delivers its events,
//!   read by the polling source, with no trace headers: the consumer's span starts a new trace.
//!   There the order-service exports to a collector that never answers: it serves and stops
//!   all the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use e2e::{Environment, finish, log_dir, repo_file, start_binary, wait_for_shipment_lines};
use serde_json::Value;
use test_support::process::{ServiceProcess, free_port};
use test_support::{EVENTUALLY, TestDatabase, TestVhost, unique_suffix, wait_until};

/// One exported span, as the receiver read it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

/// `POST /v1/traces` with an OTLP JSON `ExportTraceServiceRequest`: keeps every span.
async fn receive(State(spans): State<Spans>, body: Bytes) -> &'static str {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return "{}";
    };
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let mut received = Vec::new();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|attribute| attribute["key"] == "service.name")
            .map(|attribute| text(&attribute["value"]["stringValue"]))
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: text(&span["name"]),
                    trace_id: text(&span["traceId"]).to_lowercase(),
                    span_id: text(&span["spanId"]).to_lowercase(),
                    parent_span_id: text(&span["parentSpanId"]).to_lowercase(),
                });
            }
        }
    }
    spans.lock().unwrap().extend(received);
    "{}"
}

/// Starts the receiver on a free port; returns its base URL and what it received.
async fn start_receiver() -> Result<(String, Spans)> {
    let spans = Spans::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(Arc::clone(&spans));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, spans))
}

/// The variables that point a binary at the receiver; a short batch delay keeps the test
/// quick (the SDK reads `OTEL_BSP_SCHEDULE_DELAY`).
fn otel_env(endpoint: &str, service: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_SERVICE_NAME", service.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ]
}

/// A random W3C trace id and parent span id, as a caller of the API would send.
fn caller_context() -> (String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (trace_id, span_id)
}

/// `POST /orders` with the sample body and a `traceparent` header; the new order's id.
async fn create_traced_order(order_url: &str, traceparent: &str) -> Result<String> {
    let response = reqwest::Client::new()
        .post(format!("{order_url}/orders"))
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .body(repo_file("resources/data/create-order-request.json")?)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::CREATED,
        "POST /orders answered {}",
        response.status()
    );
    let order: Value = response.json().await?;
    Ok(order["id"].as_str().context("order id")?.to_owned())
}

/// The shipment-service and the order-service, each exporting to `endpoint`; `order_env` is
/// added to the order-service's settings.
async fn start_system(
    orders_db: &TestDatabase,
    shipments_db: &TestDatabase,
    vhost: &TestVhost,
    endpoint: &str,
    order_env: Vec<(&'static str, String)>,
) -> Result<(Vec<ServiceProcess>, u16)> {
    let log_dir = log_dir()?;
    let (order_port, shipment_port) = (free_port(), free_port());
    let mut shipment = vec![
        ("DATABASE_URL", shipments_db.url.clone()),
        ("SERVER_PORT", shipment_port.to_string()),
        ("AMQP_URL", vhost.amqp_url.clone()),
    ];
    shipment.extend(otel_env(endpoint, "shipment-service"));
    let shipment = start_binary(
        "shipment-service",
        shipment_port,
        shipment,
        Environment::Inherited,
        &log_dir,
    )
    .await?;
    let mut order = vec![
        ("DATABASE_URL", orders_db.url.clone()),
        ("SERVER_PORT", order_port.to_string()),
    ];
    order.extend(otel_env(endpoint, "order-service"));
    order.extend(order_env);
    let order = start_binary(
        "order-service",
        order_port,
        order,
        Environment::Inherited,
        &log_dir,
    )
    .await?;
    Ok((vec![shipment, order], order_port))
}

async fn start_relay(
    orders_db: &TestDatabase,
    vhost: &TestVhost,
    endpoint: &str,
    more: Vec<(&'static str, String)>,
) -> Result<ServiceProcess> {
    let relay_port = free_port();
    let suffix = unique_suffix();
    let mut env = vec![
        ("DATABASE_URL", orders_db.url.clone()),
        ("AMQP_URL", vhost.amqp_url.clone()),
        ("RELAY_SLOT", format!("trace_{suffix}")),
        ("RELAY_PUBLICATION", format!("trace_{suffix}")),
        ("RELAY_HTTP_PORT", relay_port.to_string()),
    ];
    env.extend(otel_env(endpoint, "outbox-relay"));
    env.extend(more);
    start_binary(
        "outbox-relay",
        relay_port,
        env,
        Environment::Inherited,
        &log_dir()?,
    )
    .await
}

/// The first span received that `matches`, waiting for the batch exporters.
async fn span_where(
    spans: &Spans,
    what: &str,
    matches: impl Fn(&ReceivedSpan) -> bool,
) -> Result<ReceivedSpan> {
    wait_until(what, EVENTUALLY, || async {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|span| matches(span))
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_from_the_http_request_to_the_consumer_transaction() -> Result<()> {
    test_support::init_tracing();
    let (endpoint, spans) = start_receiver().await?;
    let orders_db = TestDatabase::create("trace_orders").await?;
    let shipments_db = TestDatabase::create("trace_shipments").await?;
    let vhost = TestVhost::create("trace").await?;
    let (mut services, order_port) =
        start_system(&orders_db, &shipments_db, &vhost, &endpoint, Vec::new()).await?;
    let relay = start_relay(&orders_db, &vhost, &endpoint, Vec::new()).await;
    let result = match relay {
        Ok(relay) => {
            services.push(relay);
            traced_flow(&orders_db, &shipments_db, order_port, &spans).await
        }
        Err(error) => Err(error),
    };
    finish(&mut services, result, [orders_db, shipments_db], vhost).await
}

async fn traced_flow(
    orders_db: &TestDatabase,
    shipments_db: &TestDatabase,
    order_port: u16,
    spans: &Spans,
) -> Result<()> {
    let (trace_id, caller_span) = caller_context();
    let order_id = create_traced_order(
        &format!("http://127.0.0.1:{order_port}"),
        &format!("00-{trace_id}-{caller_span}-01"),
    )
    .await?;
    wait_for_shipment_lines(&shipments_db.pool, &order_id, 2).await?;

    // The outbox row holds the request's context, in Debezium's Properties format.
    let stored: Option<String> = sqlx::query_scalar(
        "SELECT tracingspancontext FROM orders.outbox_event WHERE aggregate_id = $1",
    )
    .bind(&order_id)
    .fetch_one(&orders_db.pool)
    .await?;
    let stored = stored.context("the outbox row has no trace context")?;
    assert!(
        stored.starts_with(&format!("traceparent=00-{trace_id}-")),
        "{stored:?}"
    );

    // The order-service request span continues the caller's trace...
    let request = span_where(spans, "the order-service request span", |span| {
        span.service == "order-service"
            && span.trace_id == trace_id
            && span.parent_span_id == caller_span
    })
    .await?;
    assert_eq!(request.name, "POST /orders");
    assert!(
        stored.contains(&format!("-{}-", request.span_id)),
        "the row holds the request span's context: {stored:?}"
    );
    // ... and the consumer's transaction is its child, through the message's traceparent.
    let consumer = span_where(spans, "the shipment-service transaction span", |span| {
        span.service == "shipment-service" && span.name == "OrderCreated process"
    })
    .await?;
    assert_eq!(consumer.trace_id, trace_id, "{consumer:?}");
    assert_eq!(consumer.parent_span_id, request.span_id, "{consumer:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_the_column_still_delivers_without_trace_headers() -> Result<()> {
    test_support::init_tracing();
    let (endpoint, spans) = start_receiver().await?;
    let orders_db = TestDatabase::create("trace_nocol_orders").await?;
    let shipments_db = TestDatabase::create("trace_nocol_shipments").await?;
    let vhost = TestVhost::create("trace_nocol").await?;
    // A collector that takes connections and never answers (never accepted: the kernel's
    // backlog completes the handshakes).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (mut services, order_port) = start_system(
        &orders_db,
        &shipments_db,
        &vhost,
        &endpoint,
        vec![
            ("OUTBOX_TRACING_SPAN_CONTEXT_FIELD", "none".to_owned()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", silent.local_addr()?),
            ),
        ],
    )
    .await?;
    // The original system's table: no trace column. The polling source reads it.
    let dropped = sqlx::query("ALTER TABLE orders.outbox_event DROP COLUMN tracingspancontext")
        .execute(&orders_db.pool)
        .await;
    let relay = match dropped {
        Ok(_) => {
            start_relay(
                &orders_db,
                &vhost,
                &endpoint,
                vec![("RELAY_SOURCE", "polling".to_owned())],
            )
            .await
        }
        Err(error) => Err(error.into()),
    };
    let result = match relay {
        Ok(relay) => {
            services.push(relay);
            untraced_flow(&shipments_db, order_port, &spans).await
        }
        Err(error) => Err(error),
    };
    // The silent collector holds no shutdown up: the order-service exits on SIGTERM, cleanly.
    let result = match result {
        Ok(()) => services[1]
            .terminate(e2e::SHUTDOWN_GRACE)
            .await
            .and_then(|status| {
                anyhow::ensure!(status.success(), "order-service exited with {status}");
                Ok(())
            }),
        Err(error) => Err(error),
    };
    drop(silent);
    finish(&mut services, result, [orders_db, shipments_db], vhost).await
}

async fn untraced_flow(shipments_db: &TestDatabase, order_port: u16, spans: &Spans) -> Result<()> {
    let (trace_id, caller_span) = caller_context();
    let order_id = create_traced_order(
        &format!("http://127.0.0.1:{order_port}"),
        &format!("00-{trace_id}-{caller_span}-01"),
    )
    .await?;
    wait_for_shipment_lines(&shipments_db.pool, &order_id, 2).await?;
    // The message carried no context: the consumer's span is a new root.
    let consumer = span_where(spans, "the shipment-service transaction span", |span| {
        span.service == "shipment-service" && span.name == "OrderCreated process"
    })
    .await?;
    assert_ne!(consumer.trace_id, trace_id, "{consumer:?}");
    assert_eq!(consumer.parent_span_id, "", "{consumer:?}");
    Ok(())
}
