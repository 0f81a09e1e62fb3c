//! Test harness shared by every crate's integration tests.
//!
//! The tests run against the real PostgreSQL (with `wal_level=logical`) and RabbitMQ that
//! `scripts/infra.sh up` starts (`make test` does it). Each test asks for its own resources:
//!
//! - [`TestDatabase::create`]: a fresh database with a unique name, dropped by
//!   [`TestDatabase::drop_database`] together with any replication slots on it;
//! - [`TestVhost::create`]: a fresh RabbitMQ virtual host, deleted by [`TestVhost::delete`];
//! - [`ManagementApi`]: PUT/DELETE on the RabbitMQ management API (users, permissions);
//! - [`wait_until`]: polls a condition with a generous timeout instead of sleeping a fixed time;
//! - [`process`]: the workspace's binaries as child processes (spawn, wait for `/health`,
//!   SIGKILL, restart, SIGTERM), for the end-to-end and fault tests.
//!
//! Server addresses come from `TEST_PG_URL` (an admin connection string, default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`), `TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672`) and `TEST_RABBITMQ_API` (the management API, default
//! `http://guest:guest@127.0.0.1:15672`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

pub mod process;

/// Admin connection string of the test PostgreSQL server.
pub fn pg_admin_url() -> String {
    std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

/// AMQP URL of the test RabbitMQ node, without a vhost.
pub fn amqp_base_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned())
}

/// Base URL of the RabbitMQ management API, with credentials.
pub fn rabbitmq_api_url() -> String {
    std::env::var("TEST_RABBITMQ_API")
        .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".to_owned())
}

/// Logs of the code under test go to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A short unique suffix for names of databases, vhosts, slots, queues.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    /// Connection string to this database as the superuser.
    pub url: String,
    pub options: PgConnectOptions,
    pub pool: PgPool,
}

impl TestDatabase {
    /// Creates `t_<prefix>_<unique>` and connects a small pool to it.
    pub async fn create(prefix: &str) -> Result<Self> {
        let name = format!("t_{prefix}_{}", unique_suffix());
        let admin_url = pg_admin_url();
        let mut admin = PgConnection::connect(&admin_url).await.with_context(
            || "cannot reach the test PostgreSQL: run `scripts/infra.sh up` (make test does)",
        )?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = replace_database(&admin_url, &name);
        let options: PgConnectOptions = url.parse()?;
        let options = options.disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        Ok(Self {
            name,
            url,
            options,
            pool,
        })
    }

    /// Drops the replication slots on this database, then the database itself.
    pub async fn drop_database(self) -> Result<()> {
        self.pool.close().await;
        drop_database_and_slots(&self.name).await
    }
}

/// Drops a database after terminating its sessions and dropping its replication slots (an
/// abandoned slot would hold WAL forever).
pub async fn drop_database_and_slots(name: &str) -> Result<()> {
    let mut admin = PgConnection::connect(&pg_admin_url()).await?;
    // Walsenders hold their slot active; terminate them before dropping.
    sqlx::query(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
         WHERE database = $1 AND active_pid IS NOT NULL",
    )
    .bind(name)
    .execute(&mut admin)
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slots: Vec<(String,)> =
            sqlx::query_as("SELECT slot_name::text FROM pg_replication_slots WHERE database = $1")
                .bind(name)
                .fetch_all(&mut admin)
                .await?;
        let mut all_dropped = true;
        for (slot,) in slots {
            if sqlx::query("SELECT pg_drop_replication_slot($1)")
                .bind(&slot)
                .execute(&mut admin)
                .await
                .is_err()
            {
                all_dropped = false;
                sqlx::query(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND active_pid IS NOT NULL",
                )
                .bind(&slot)
                .execute(&mut admin)
                .await?;
            }
        }
        if all_dropped {
            break;
        }
        if Instant::now() > deadline {
            bail!("replication slots of database {name} stayed active for 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

fn replace_database(url: &str, database: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, rest)) => {
            let query = rest
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("{base}/{database}{query}")
        }
        None => format!("{url}/{database}"),
    }
}

/// A RabbitMQ virtual host of its own for one test.
#[derive(Debug, Clone)]
pub struct TestVhost {
    pub name: String,
    /// AMQP URL with this vhost.
    pub amqp_url: String,
}

impl TestVhost {
    /// Creates vhost `t_<prefix>_<unique>` and grants the test user every permission on it.
    pub async fn create(prefix: &str) -> Result<Self> {
        let name = format!("t_{prefix}_{}", unique_suffix());
        let api = ManagementApi::from_env()?;
        api.put(&format!("/api/vhosts/{name}"), None)
            .await
            .with_context(|| format!("creating vhost {name}"))?;
        api.put(
            &format!("/api/permissions/{name}/{}", api.user),
            Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await
        .with_context(|| format!("granting permissions on vhost {name}"))?;
        Ok(Self {
            amqp_url: format!("{}/{name}", amqp_base_url()),
            name,
        })
    }

    /// Deletes the vhost with everything in it.
    pub async fn delete(self) -> Result<()> {
        ManagementApi::from_env()?
            .delete(&format!("/api/vhosts/{}", self.name))
            .await
    }

    /// Number of messages ready in `queue` of this vhost, per the management API (which lags
    /// the broker by a few seconds; use it for "eventually" checks only).
    pub async fn queue_json(&self, queue: &str) -> Result<serde_json::Value> {
        let api = ManagementApi::from_env()?;
        let response = reqwest::Client::new()
            .get(format!("{}/api/queues/{}/{queue}", api.base, self.name))
            .basic_auth(&api.user, Some(&api.password))
            .send()
            .await?;
        Ok(response.json().await?)
    }
}

/// The RabbitMQ management API of the test broker ([`rabbitmq_api_url`]), with its credentials.
pub struct ManagementApi {
    base: String,
    pub user: String,
    password: String,
}

/// Without the password.
impl std::fmt::Debug for ManagementApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementApi")
            .field("base", &self.base)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ManagementApi {
    pub fn from_env() -> Result<Self> {
        let url =
            reqwest::Url::parse(&rabbitmq_api_url()).context("TEST_RABBITMQ_API is not a URL")?;
        let user = if url.username().is_empty() {
            "guest".to_owned()
        } else {
            url.username().to_owned()
        };
        let password = url.password().unwrap_or("guest").to_owned();
        let mut base = url.clone();
        base.set_username("").ok();
        base.set_password(None).ok();
        Ok(Self {
            base: base.as_str().trim_end_matches('/').to_owned(),
            user,
            password,
        })
    }

    /// PUT `path` (e.g. `/api/vhosts/x`) with an optional JSON body; fails unless it succeeds.
    pub async fn put(&self, path: &str, body: Option<serde_json::Value>) -> Result<()> {
        let mut request = reqwest::Client::new()
            .put(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.context(
            "cannot reach the RabbitMQ management API: run `scripts/infra.sh up` (make test does)",
        )?;
        if !response.status().is_success() {
            bail!("PUT {path}: HTTP {}", response.status());
        }
        Ok(())
    }

    /// DELETE `path` (what is already gone counts as deleted).
    pub async fn delete(&self, path: &str) -> Result<()> {
        reqwest::Client::new()
            .delete(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await?;
        Ok(())
    }
}

/// Polls `condition` every 50 ms until it returns `Some`, failing after `timeout` with `what` in
/// the message. Tests wait on conditions, never on fixed sleeps.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The default generous timeout for "eventually" conditions.
pub const EVENTUALLY: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            replace_database("postgres://u:p@h:1/postgres", "x"),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(
            replace_database("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
    }
}
