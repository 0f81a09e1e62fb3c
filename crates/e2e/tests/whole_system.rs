//! The whole system as its users run it: the three real binaries as separate processes against
//! the real PostgreSQL and RabbitMQ. Creates an order with the sample request, waits for its
//! shipment, cancels a line, waits for the cancellation, then SIGKILLs the relay, creates more
//! orders while it is down, restarts it, and checks that every order got exactly one shipment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use sqlx::PgPool;
use test_support::process::{ServiceCommand, ServiceProcess, free_port};
use test_support::{EVENTUALLY, TestDatabase, TestVhost, unique_suffix, wait_until};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// How long each service may take to exit after SIGTERM at the end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Starts workspace binary `name` with `env`, its output appended to `<log_dir>/<name>.log`,
/// and waits until its `/health` on `port` answers.
async fn start(
    name: &str,
    port: u16,
    env: &[(&str, String)],
    log_dir: &Path,
) -> Result<ServiceProcess> {
    ServiceCommand::workspace(name)?
        .http_port(port)
        .envs(env.iter().cloned())
        .env("RUST_LOG", "info")
        .log_file(log_dir.join(format!("{name}.log")))
        .start(EVENTUALLY)
        .await
}

async fn shipments_for(pool: &PgPool, order_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM shipments.shipment WHERE order_id::text = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

async fn create_order(client: &reqwest::Client, order_url: &str, body: &str) -> Result<Value> {
    let response = client
        .post(format!("{order_url}/orders"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    if response.status() != reqwest::StatusCode::CREATED {
        bail!(
            "POST /orders answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    Ok(response.json().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_flows_to_a_shipment_and_survives_a_relay_crash() -> Result<()> {
    test_support::init_tracing();
    let orders_db = TestDatabase::create("e2e_orders").await?;
    let shipments_db = TestDatabase::create("e2e_shipments").await?;
    let vhost = TestVhost::create("e2e").await?;
    let log_dir = std::env::temp_dir().join(format!("outbox-e2e-{}", unique_suffix()));
    std::fs::create_dir_all(&log_dir)?;

    let (order_port, shipment_port, relay_port) = (free_port(), free_port(), free_port());
    let suffix = unique_suffix();
    let shipment_service = start(
        "shipment-service",
        shipment_port,
        &[
            ("DATABASE_URL", shipments_db.url.clone()),
            ("AMQP_URL", vhost.amqp_url.clone()),
            ("SERVER_PORT", shipment_port.to_string()),
        ],
        &log_dir,
    )
    .await?;
    let order_service = start(
        "order-service",
        order_port,
        &[
            ("DATABASE_URL", orders_db.url.clone()),
            ("SERVER_PORT", order_port.to_string()),
        ],
        &log_dir,
    )
    .await?;
    let relay = start(
        "outbox-relay",
        relay_port,
        &[
            ("DATABASE_URL", orders_db.url.clone()),
            ("AMQP_URL", vhost.amqp_url.clone()),
            ("RELAY_SLOT", format!("e2e_{suffix}")),
            ("RELAY_PUBLICATION", format!("e2e_{suffix}")),
            ("RELAY_HTTP_PORT", relay_port.to_string()),
        ],
        &log_dir,
    )
    .await?;

    let mut services = [shipment_service, order_service, relay];
    let [_, _, relay] = &mut services;
    let result = run_flows(&orders_db, &shipments_db, order_port, relay).await;
    if result.is_err() {
        for service in &services {
            eprintln!("--- {} log ---\n{}", service.name(), service.log_tail(40));
        }
    }
    for service in services.iter_mut().rev() {
        let _ = service.terminate(SHUTDOWN_GRACE).await;
    }
    orders_db.drop_database().await?;
    shipments_db.drop_database().await?;
    vhost.delete().await?;
    result
}

async fn run_flows(
    orders_db: &TestDatabase,
    shipments_db: &TestDatabase,
    order_port: u16,
    relay: &mut ServiceProcess,
) -> Result<()> {
    let client = reqwest::Client::new();
    let order_url = format!("http://127.0.0.1:{order_port}");
    let sample =
        std::fs::read_to_string(repo_root().join("resources/data/create-order-request.json"))?;
    let cancel =
        std::fs::read_to_string(repo_root().join("resources/data/cancel-order-line-request.json"))?;

    // Create an order with the sample request; its shipment appears with both lines.
    let order = create_order(&client, &order_url, &sample).await?;
    let order_id = order["id"].as_str().context("order id")?.to_owned();
    let line_id = order["lineItems"][0]["id"]
        .as_str()
        .context("line id")?
        .to_owned();
    let pool = &shipments_db.pool;
    wait_until("the shipment of the first order", EVENTUALLY, || async {
        (shipments_for(pool, &order_id).await == 1).then_some(())
    })
    .await?;
    let lines: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM shipments.shipment_line l JOIN shipments.shipment s ON s.id = l.shipment_id \
         WHERE s.order_id::text = $1",
    )
    .bind(&order_id)
    .fetch_one(pool)
    .await?;
    assert_eq!(lines, 2, "the shipment has one line per order line");

    // Cancel one line through the API; the shipment line follows.
    let response = client
        .put(format!("{order_url}/orders/{order_id}/lines/{line_id}"))
        .header("content-type", "application/json")
        .body(cancel)
        .send()
        .await?;
    assert_eq!(
        response.status(),
        reqwest::StatusCode::OK,
        "{}",
        response.text().await?
    );
    wait_until("the cancelled shipment line", EVENTUALLY, || async {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM shipments.shipment_line WHERE order_line_id::text = $1",
        )
        .bind(&line_id)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        (status.as_deref() == Some("CANCELLED")).then_some(())
    })
    .await?;

    // Crash the relay, keep producing, restart it: nothing is lost, nothing applied twice.
    relay.kill9().await?;
    let mut more_orders = Vec::new();
    for _ in 0..20 {
        let order = create_order(&client, &order_url, &sample).await?;
        more_orders.push(order["id"].as_str().context("order id")?.to_owned());
    }
    relay.restart()?;
    relay.wait_healthy(EVENTUALLY).await?;
    wait_until(
        "a shipment for every order created while the relay was down",
        EVENTUALLY,
        || async {
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM shipments.shipment")
                .fetch_one(pool)
                .await
                .unwrap_or(0);
            (count == 21).then_some(())
        },
    )
    .await?;
    for order_id in &more_orders {
        assert_eq!(
            shipments_for(pool, order_id).await,
            1,
            "order {order_id} has exactly one shipment"
        );
    }
    let committed_orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.purchase_order")
        .fetch_one(&orders_db.pool)
        .await?;
    assert_eq!(committed_orders, 21);
    Ok(())
}
