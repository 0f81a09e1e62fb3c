//! Our pieces dropped into the original system's deployment (issue 12), each test written from the
//! original's contracts: its databases (DDL and rows in `resources/original/`), its Debezium
//! Server `application.properties` with its environment, and outbox rows exactly as its NodeJS
//! producer writes them (v4 ids, no line items, `timestamp` without time zone).
//!
//! - [`every_piece_runs_on_the_originals_databases_and_configuration`]: the three binaries on
//!   databases the original created, the relay on the original file; the README flows work, the
//!   original's rows are kept, and rows written by the original producer are applied too.
//! - [`taking_over_from_debezium_loses_nothing`]: a slot and publication left by Debezium, with
//!   part of the stream confirmed and some events already applied downstream; our relay resumes
//!   from the slot's confirmed position, nothing confirmed is published again, nothing is lost,
//!   and the events published twice are absorbed by shipment-service's dedup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result};
use e2e::{
    Environment, cancel_line, create_order, finish, log_dir, repo_file, repo_root, start_binary,
    start_order_service, start_shipment_service, wait_for_line_status, wait_for_shipment_lines,
};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use test_support::process::{ServiceProcess, free_port};
use test_support::{EVENTUALLY, TestDatabase, TestVhost, unique_suffix, wait_until};
use uuid::Uuid;

/// The original order and shipment of `resources/original/*-rows.sql`.
const ORIGINAL_ORDER: &str = "6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2";
const ORIGINAL_SHIPMENT: &str = "4e1f7a8b-9c0d-4e5f-8a6b-7c8d9e0f1a2b";

fn fixture(name: &str) -> Result<String> {
    repo_file(&format!("resources/original/{name}"))
}

/// A test database laid out by the original system: its DDL, and its rows when `with_rows`.
async fn original_database(prefix: &str, kind: &str, with_rows: bool) -> Result<TestDatabase> {
    let database = TestDatabase::create(prefix).await?;
    sqlx::raw_sql(&fixture(&format!("{kind}-schema.sql"))?)
        .execute(&database.pool)
        .await?;
    if with_rows {
        sqlx::raw_sql(&fixture(&format!("{kind}-rows.sql"))?)
            .execute(&database.pool)
            .await?;
    }
    Ok(database)
}

/// The environment the original Debezium Server container gets, for our relay reading the
/// original `application.properties`. The test's own vhost, slot and publication are passed
/// the way Debezium Server takes any override: the key's name in upper case with `_`.
/// Starts outbox-relay with only the original Debezium Server's environment
/// ([`original_relay_env`]).
async fn start_original_relay(
    database: &TestDatabase,
    vhost: &TestVhost,
    slot: &str,
    http_port: u16,
    log_dir: &Path,
) -> Result<ServiceProcess> {
    let env = original_relay_env(database, vhost, slot, http_port);
    start_binary("outbox-relay", http_port, env, Environment::Only, log_dir).await
}

fn original_relay_env(
    database: &TestDatabase,
    vhost: &TestVhost,
    slot: &str,
    http_port: u16,
) -> Vec<(&'static str, String)> {
    let options: &PgConnectOptions = &database.options;
    let amqp = test_support::amqp_base_url();
    let amqp_port = amqp
        .rsplit(':')
        .next()
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or(5672);
    let admin: url_parts::Admin = url_parts::admin(&test_support::pg_admin_url());
    vec![
        (
            "RELAY_DEBEZIUM_PROPERTIES",
            repo_root()
                .join("resources/debezium/original/application.properties")
                .display()
                .to_string(),
        ),
        ("RABBITMQ_HOSTNAME", "127.0.0.1".to_owned()),
        ("RABBITMQ_PORT", amqp_port.to_string()),
        ("RABBITMQ_USER", "guest".to_owned()),
        ("RABBITMQ_PASSWORD", "guest".to_owned()),
        ("DATABASE_HOSTNAME", options.get_host().to_owned()),
        ("DATABASE_PORT", options.get_port().to_string()),
        ("DATABASE_USER", admin.user),
        ("DATABASE_PASSWORD", admin.password),
        ("DATABASE_NAME", database.name.clone()),
        ("DATABASE_SCHEMA", "orders".to_owned()),
        ("DATABASE_OUTBOX_TABLE", "outbox_event".to_owned()),
        (
            "DEBEZIUM_SINK_RABBITMQ_CONNECTION_VIRTUAL_HOST",
            vhost.name.clone(),
        ),
        ("DEBEZIUM_SOURCE_SLOT_NAME", slot.to_owned()),
        ("DEBEZIUM_SOURCE_PUBLICATION_NAME", slot.to_owned()),
        ("RELAY_HTTP_PORT", http_port.to_string()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("RUST_LOG", "info".to_owned()),
    ]
}

/// User and password of the test server's admin URL (`postgres://user:password@host:port/db`).
mod url_parts {
    pub struct Admin {
        pub user: String,
        pub password: String,
    }

    pub fn admin(url: &str) -> Admin {
        let credentials = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(credentials, _)| credentials)
            .unwrap_or("postgres:postgres");
        let (user, password) = credentials
            .split_once(':')
            .unwrap_or((credentials, "postgres"));
        Admin {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }
}

/// Sum of a Prometheus counter over its labels.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Inserts one OrderCreated outbox row per customer, as the original producer does; their ids.
async fn insert_original_orders(pool: &PgPool, customers: Range<i32>) -> Result<Vec<Uuid>> {
    let mut event_ids = Vec::new();
    for customer in customers {
        let (event, order) = (Uuid::new_v4(), Uuid::new_v4());
        insert_original_event(
            pool,
            event,
            order,
            "OrderCreated",
            original_order_created(order, customer),
        )
        .await?;
        event_ids.push(event);
    }
    Ok(event_ids)
}

/// Inserts an outbox row exactly as the original NodeJS producer does.
async fn insert_original_event(
    pool: &PgPool,
    event_id: Uuid,
    order_id: Uuid,
    event_type: &str,
    payload: Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO orders.outbox_event (id, \"timestamp\", aggregate_id, aggregate_type, payload, \"type\") \
         VALUES ($1, now() AT TIME ZONE 'UTC', $2, 'order', $3, $4)",
    )
    .bind(event_id)
    .bind(order_id.to_string())
    .bind(payload)
    .bind(event_type)
    .execute(pool)
    .await?;
    Ok(())
}

fn original_order_created(order_id: Uuid, customer_id: i32) -> Value {
    serde_json::json!({
        "id": order_id, "eventType": "OrderCreated",
        "orderDate": "2026-12-01T10:00:00.000Z", "customerId": customer_id,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_piece_runs_on_the_originals_databases_and_configuration() -> Result<()> {
    test_support::init_tracing();
    let orders_db = original_database("orig_orders", "orderdb", true).await?;
    let shipments_db = original_database("orig_shipments", "shipmentdb", true).await?;
    let vhost = TestVhost::create("orig").await?;
    let slot = format!("orig_{}", unique_suffix());
    let log_dir = log_dir()?;
    let (order_port, shipment_port, relay_port) = (free_port(), free_port(), free_port());

    let mut services = Vec::new();
    let result = async {
        services.push(
            start_shipment_service(&shipments_db.url, &vhost.amqp_url, shipment_port, &log_dir)
                .await?,
        );
        services.push(start_original_relay(&orders_db, &vhost, &slot, relay_port, &log_dir).await?);
        services.push(start_order_service(&orders_db.url, order_port, &log_dir).await?);
        original_flows(&orders_db, &shipments_db, &vhost, order_port).await
    }
    .await;
    finish(&mut services, result, [orders_db, shipments_db], vhost).await
}

async fn original_flows(
    orders_db: &TestDatabase,
    shipments_db: &TestDatabase,
    vhost: &TestVhost,
    order_port: u16,
) -> Result<()> {
    let client = reqwest::Client::new();
    let order_url = format!("http://127.0.0.1:{order_port}");
    let shipments = &shipments_db.pool;

    // The original's order is served by our order-service from its tables.
    let original: Value = client
        .get(format!("{order_url}/orders/{ORIGINAL_ORDER}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(original["customerId"], 123, "{original}");
    assert_eq!(
        original["lineItems"].as_array().map(Vec::len),
        Some(2),
        "{original}"
    );

    // README flow 1: the sample order becomes a shipment with both lines.
    let order = create_order(
        &client,
        &order_url,
        &repo_file("resources/data/create-order-request.json")?,
    )
    .await?;
    let order_id = order["id"].as_str().context("order id")?.to_owned();
    let line_id = order["lineItems"][0]["id"]
        .as_str()
        .context("line id")?
        .to_owned();
    assert_eq!(
        Uuid::parse_str(&order_id)?.get_version_num(),
        4,
        "ids are v4 by default, as the original's consumers require"
    );
    wait_for_shipment_lines(shipments, &order_id, 2).await?;

    // README flow 2: cancel a line; the shipment line follows.
    cancel_line(&client, &order_url, &order_id, &line_id).await?;
    wait_for_line_status(shipments, &line_id, "CANCELLED").await?;

    // The original producer's rows, written straight into the outbox: an order without line
    // items, then an update of a line the shipment has never heard of.
    let (order, line) = (Uuid::new_v4(), Uuid::new_v4());
    insert_original_event(
        &orders_db.pool,
        Uuid::new_v4(),
        order,
        "OrderCreated",
        original_order_created(order, 77),
    )
    .await?;
    insert_original_event(
        &orders_db.pool,
        Uuid::new_v4(),
        order,
        "OrderLineUpdated",
        serde_json::json!({"orderId": order, "orderLineId": line,
                           "oldStatus": "ENTERED", "newStatus": "CANCELLED"}),
    )
    .await?;
    wait_until(
        "the original producer's line update applied",
        EVENTUALLY,
        || async {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT l.status FROM shipments.shipment_line l JOIN shipments.shipment s \
                 ON s.id = l.shipment_id WHERE s.order_id = $1 AND l.order_line_id = $2",
            )
            .bind(order)
            .bind(line)
            .fetch_optional(shipments)
            .await
            .ok()
            .flatten();
            (status.as_deref() == Some("CANCELLED")).then_some(())
        },
    )
    .await?;
    let customer: i32 =
        sqlx::query_scalar("SELECT customer_id FROM shipments.shipment WHERE order_id = $1")
            .bind(order)
            .fetch_one(shipments)
            .await?;
    assert_eq!(customer, 77);

    // The original's rows are all still there, unchanged.
    let (shipment_order, customer, order_date): (Uuid, i32, Option<String>) = sqlx::query_as(
        "SELECT order_id, customer_id, order_date::text FROM shipments.shipment WHERE id = $1",
    )
    .bind(Uuid::parse_str(ORIGINAL_SHIPMENT)?)
    .fetch_one(shipments)
    .await?;
    assert_eq!(shipment_order.to_string(), ORIGINAL_ORDER);
    assert_eq!(customer, 123);
    assert_eq!(order_date.as_deref(), Some("2019-01-31 12:13:01"));
    let original_consumed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM shipments.consumed_message \
         WHERE time_of_receiving < '2020-01-01'",
    )
    .fetch_one(shipments)
    .await?;
    assert_eq!(original_consumed, 2);
    let original_outbox: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders.outbox_event WHERE \"timestamp\" < '2020-01-01'",
    )
    .fetch_one(&orders_db.pool)
    .await?;
    assert_eq!(original_outbox, 2);

    // Nothing went to the dead-letter queue (the management API lags: give it time).
    wait_until("an empty dead-letter queue", EVENTUALLY, || async {
        let queue = vhost.queue_json("shipment.orders.dlq").await.ok()?;
        (queue["messages"].as_i64() == Some(0)).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_over_from_debezium_loses_nothing() -> Result<()> {
    test_support::init_tracing();
    let orders_db = original_database("takeover_orders", "orderdb", false).await?;
    let shipments_db = TestDatabase::create("takeover_shipments").await?;
    let vhost = TestVhost::create("takeover").await?;
    let slot = format!("takeover_{}", unique_suffix());
    let log_dir = log_dir()?;
    let (shipment_port, relay_port) = (free_port(), free_port());
    let pool = &orders_db.pool;

    // What Debezium leaves behind: its publication (its default autocreate mode is all
    // tables) and its slot, confirmed up to the events it had delivered (batch A).
    sqlx::query(&format!("CREATE PUBLICATION \"{slot}\" FOR ALL TABLES"))
        .execute(pool)
        .await?;
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(&slot)
        .execute(pool)
        .await?;
    let delivered = insert_original_orders(pool, 0..10).await?;
    sqlx::query("SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())")
        .bind(&slot)
        .execute(pool)
        .await?;
    // Batch B: committed after Debezium's last confirmed position. It had published the first
    // half and the consumer applied them, but the crash came before it confirmed them.
    let pending = insert_original_orders(pool, 100..110).await?;

    let mut services = Vec::new();
    let result = async {
        let shipment_service =
            start_shipment_service(&shipments_db.url, &vhost.amqp_url, shipment_port, &log_dir)
                .await?;
        let shipments = &shipments_db.pool;
        // The first half of batch B, applied downstream before the take-over.
        sqlx::query(
            "INSERT INTO shipments.consumed_message (event_id) SELECT * FROM UNNEST($1::uuid[])",
        )
        .bind(&pending[..5])
        .execute(shipments)
        .await?;
        services.push(shipment_service);
        services.push(start_original_relay(&orders_db, &vhost, &slot, relay_port, &log_dir).await?);

        wait_until("every event of batch B consumed", EVENTUALLY, || async {
            let consumed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM shipments.consumed_message WHERE event_id = ANY($1)",
            )
            .bind(&pending)
            .fetch_one(shipments)
            .await
            .ok()?;
            (consumed == 10).then_some(())
        })
        .await?;
        // The republished half is absorbed as duplicates; the consumer counts them.
        let shipment_service = &services[0];
        let duplicates = wait_until("5 duplicates absorbed", EVENTUALLY, || async {
            let metrics = shipment_service.metrics().await.ok()?;
            let duplicates = counter(&metrics, "shipment_duplicates_total");
            (duplicates >= 5.0).then_some(duplicates)
        })
        .await?;
        assert_eq!(duplicates, 5.0, "exactly the unconfirmed, applied half");
        // Events come in commit order, so batch A would have arrived before batch B.
        let republished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM shipments.consumed_message WHERE event_id = ANY($1)",
        )
        .bind(&delivered)
        .fetch_one(shipments)
        .await?;
        assert_eq!(
            republished, 0,
            "events Debezium had confirmed are not published again"
        );
        let shipment_count: i64 = sqlx::query_scalar("SELECT count(*) FROM shipments.shipment")
            .fetch_one(shipments)
            .await?;
        assert_eq!(
            shipment_count, 5,
            "the unapplied half of batch B, each once"
        );
        Ok(())
    }
    .await;
    finish(&mut services, result, [orders_db, shipments_db], vhost).await
}
