//! The whole system as its users run it: the three real binaries as separate processes against
//! the real PostgreSQL and RabbitMQ. Creates an order with the sample request, waits for its
//! shipment, cancels a line, waits for the cancellation, then SIGKILLs the relay, creates more
//! orders while it is down, restarts it, and checks that every order got exactly one shipment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result};
use e2e::{
    Environment, cancel_line, create_order, finish, log_dir, repo_file, start_binary,
    start_order_service, start_shipment_service, wait_for_line_status, wait_for_shipment_lines,
};
use sqlx::PgPool;
use test_support::process::{ServiceProcess, free_port};
use test_support::{EVENTUALLY, TestDatabase, TestVhost, unique_suffix, wait_until};

async fn shipments_for(pool: &PgPool, order_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM shipments.shipment WHERE order_id::text = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_flows_to_a_shipment_and_survives_a_relay_crash() -> Result<()> {
    test_support::init_tracing();
    let orders_db = TestDatabase::create("e2e_orders").await?;
    let shipments_db = TestDatabase::create("e2e_shipments").await?;
    let vhost = TestVhost::create("e2e").await?;
    let log_dir = log_dir()?;

    let (order_port, shipment_port, relay_port) = (free_port(), free_port(), free_port());
    let suffix = unique_suffix();
    let shipment_service =
        start_shipment_service(&shipments_db.url, &vhost.amqp_url, shipment_port, &log_dir).await?;
    let order_service = start_order_service(&orders_db.url, order_port, &log_dir).await?;
    let relay = start_binary(
        "outbox-relay",
        relay_port,
        [
            ("DATABASE_URL", orders_db.url.clone()),
            ("AMQP_URL", vhost.amqp_url.clone()),
            ("RELAY_SLOT", format!("e2e_{suffix}")),
            ("RELAY_PUBLICATION", format!("e2e_{suffix}")),
            ("RELAY_HTTP_PORT", relay_port.to_string()),
        ],
        Environment::Inherited,
        &log_dir,
    )
    .await?;

    let mut services = [shipment_service, order_service, relay];
    let [_, _, relay] = &mut services;
    let result = run_flows(&orders_db, &shipments_db, order_port, relay).await;
    finish(&mut services, result, [orders_db, shipments_db], vhost).await
}

async fn run_flows(
    orders_db: &TestDatabase,
    shipments_db: &TestDatabase,
    order_port: u16,
    relay: &mut ServiceProcess,
) -> Result<()> {
    let client = reqwest::Client::new();
    let order_url = format!("http://127.0.0.1:{order_port}");
    let sample = repo_file("resources/data/create-order-request.json")?;

    // Create an order with the sample request; its shipment appears with both lines.
    let order = create_order(&client, &order_url, &sample).await?;
    let order_id = order["id"].as_str().context("order id")?.to_owned();
    let line_id = order["lineItems"][0]["id"]
        .as_str()
        .context("line id")?
        .to_owned();
    let pool = &shipments_db.pool;
    wait_for_shipment_lines(pool, &order_id, 2).await?;
    assert_eq!(
        shipments_for(pool, &order_id).await,
        1,
        "one shipment, with one line per order line"
    );

    // Cancel one line through the API; the shipment line follows.
    cancel_line(&client, &order_url, &order_id, &line_id).await?;
    wait_for_line_status(pool, &line_id, "CANCELLED").await?;

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
