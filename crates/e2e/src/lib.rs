//! End-to-end tests live in `tests/`: `whole_system.rs` runs the three real binaries as separate
//! processes against the real servers; `original_system.rs` runs them on the original system's
//! databases and Debezium configuration; `tracing.rs` follows one trace id from an HTTP request
//! to the consumer's transaction; `deployment_files.rs` checks docker-compose.yml and the
//! Dockerfile without a Docker engine.
//!
//! This library holds what those tests share: the repository's files, starting the binaries,
//! the README flows over HTTP, and waiting for their effect in the shipment database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use sqlx::PgPool;
use test_support::process::{ServiceCommand, ServiceProcess};
use test_support::{EVENTUALLY, TestDatabase, TestVhost, unique_suffix, wait_until};

/// How long each service may take to exit after SIGTERM at the end of a test.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of the repository, e.g. `resources/data/create-order-request.json`.
pub fn repo_file(relative: &str) -> Result<String> {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// A fresh folder for the services' log files.
pub fn log_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("outbox-e2e-{}", unique_suffix()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// How a binary gets its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// This process's environment plus the given variables, `RUST_LOG=info`.
    Inherited,
    /// Exactly the given variables: as a container started with only its own settings.
    Only,
}

/// Starts workspace binary `name` with `env`, its output appended to `<log_dir>/<name>.log`,
/// and waits until its `/health` on `port` answers.
pub async fn start_binary<K, V>(
    name: &str,
    port: u16,
    env: impl IntoIterator<Item = (K, V)>,
    environment: Environment,
    log_dir: &Path,
) -> Result<ServiceProcess>
where
    K: Into<String>,
    V: Into<String>,
{
    let mut command = ServiceCommand::workspace(name)?
        .http_port(port)
        .log_file(log_dir.join(format!("{name}.log")));
    command = match environment {
        Environment::Inherited => command.env("RUST_LOG", "info"),
        Environment::Only => command.env_clear(),
    };
    command.envs(env).start(EVENTUALLY).await
}

/// Starts `name` with the inherited environment plus its database, HTTP port and `more`.
async fn start_service(
    name: &str,
    database_url: &str,
    port: u16,
    more: Vec<(&str, String)>,
    log_dir: &Path,
) -> Result<ServiceProcess> {
    let mut env = vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("SERVER_PORT", port.to_string()),
    ];
    env.extend(more);
    start_binary(name, port, env, Environment::Inherited, log_dir).await
}

/// Starts shipment-service on `database_url` and `amqp_url`, serving HTTP on `port`.
pub async fn start_shipment_service(
    database_url: &str,
    amqp_url: &str,
    port: u16,
    log_dir: &Path,
) -> Result<ServiceProcess> {
    let amqp = vec![("AMQP_URL", amqp_url.to_owned())];
    start_service("shipment-service", database_url, port, amqp, log_dir).await
}

/// Starts order-service on `database_url`, serving HTTP on `port`.
pub async fn start_order_service(
    database_url: &str,
    port: u16,
    log_dir: &Path,
) -> Result<ServiceProcess> {
    start_service("order-service", database_url, port, Vec::new(), log_dir).await
}

/// Ends a test: [`stop_all`], then drops its databases and vhost; passes `result` on.
pub async fn finish(
    services: &mut [ServiceProcess],
    result: Result<()>,
    databases: impl IntoIterator<Item = TestDatabase>,
    vhost: TestVhost,
) -> Result<()> {
    stop_all(services, result.is_err()).await;
    for database in databases {
        database.drop_database().await?;
    }
    vhost.delete().await?;
    result
}

/// SIGTERMs the services, last started first; shows their logs' tails when the test failed.
pub async fn stop_all(services: &mut [ServiceProcess], failed: bool) {
    if failed {
        for service in services.iter() {
            eprintln!("--- {} log ---\n{}", service.name(), service.log_tail(40));
        }
    }
    for service in services.iter_mut().rev() {
        let _ = service.terminate(SHUTDOWN_GRACE).await;
    }
}

/// Sends `request` with the JSON `body`; fails unless the answer has `expected` status.
async fn send_json(
    request: reqwest::RequestBuilder,
    body: String,
    expected: reqwest::StatusCode,
    what: &str,
) -> Result<reqwest::Response> {
    let response = request
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if response.status() != expected {
        bail!(
            "{what} answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    Ok(response)
}

/// `POST /orders` with `body`; the created order.
pub async fn create_order(client: &reqwest::Client, order_url: &str, body: &str) -> Result<Value> {
    let request = client.post(format!("{order_url}/orders"));
    let response = send_json(
        request,
        body.to_owned(),
        reqwest::StatusCode::CREATED,
        "POST /orders",
    )
    .await?;
    Ok(response.json().await?)
}

/// `PUT /orders/{order}/lines/{line}` with the sample cancel request; fails unless 200.
pub async fn cancel_line(
    client: &reqwest::Client,
    order_url: &str,
    order_id: &str,
    line_id: &str,
) -> Result<()> {
    let request = client.put(format!("{order_url}/orders/{order_id}/lines/{line_id}"));
    let body = repo_file("resources/data/cancel-order-line-request.json")?;
    let what = format!("PUT of line {line_id}");
    send_json(request, body, reqwest::StatusCode::OK, &what).await?;
    Ok(())
}

/// Waits until order `order_id`'s shipment has `count` lines.
pub async fn wait_for_shipment_lines(pool: &PgPool, order_id: &str, count: i64) -> Result<()> {
    wait_until(
        &format!("{count} shipment lines of order {order_id}"),
        EVENTUALLY,
        || async {
            let lines: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM shipments.shipment_line l JOIN shipments.shipment s \
                 ON s.id = l.shipment_id WHERE s.order_id::text = $1",
            )
            .bind(order_id)
            .fetch_one(pool)
            .await
            .ok()?;
            (lines == count).then_some(())
        },
    )
    .await
}

/// Waits until shipment line `line_id` has `status`.
pub async fn wait_for_line_status(pool: &PgPool, line_id: &str, status: &str) -> Result<()> {
    wait_until(
        &format!("shipment line {line_id} {status}"),
        EVENTUALLY,
        || async {
            let current: Option<String> = sqlx::query_scalar(
                "SELECT status FROM shipments.shipment_line WHERE order_line_id::text = $1",
            )
            .bind(line_id)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
            (current.as_deref() == Some(status)).then_some(())
        },
    )
    .await
}
