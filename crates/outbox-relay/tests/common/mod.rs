//! Helpers shared by the relay's integration tests: an outbox database, a queue bound to an
//! exchange, relay configuration for in-process and spawned relays, consuming messages.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use outbox_relay::Config;
use outbox_relay::config::Cli;
use sqlx::PgPool;
use test_support::{TestDatabase, TestVhost, unique_suffix, wait_until};

/// The outbox table of `crates/outbox`, plus an unrelated table in the same schema.
pub const OUTBOX_DDL: &[&str] = &[
    "CREATE SCHEMA orders",
    "CREATE TABLE orders.outbox_event (
        id             uuid PRIMARY KEY,
        aggregate_type varchar(255) NOT NULL,
        aggregate_id   varchar(255) NOT NULL,
        type           varchar(255) NOT NULL,
        payload        jsonb NOT NULL,
        \"timestamp\"  timestamptz NOT NULL
    )",
    "CREATE TABLE orders.other_table (id bigserial PRIMARY KEY, note text)",
];

/// A database with the outbox table, a vhost, and unique slot/publication names.
pub struct Fixture {
    pub db: TestDatabase,
    pub vhost: TestVhost,
    pub slot: String,
    pub publication: String,
}

impl Fixture {
    pub async fn new(prefix: &str) -> Self {
        test_support::init_tracing();
        let db = TestDatabase::create(prefix).await.unwrap();
        for statement in OUTBOX_DDL {
            sqlx::query(statement).execute(&db.pool).await.unwrap();
        }
        let vhost = TestVhost::create(prefix).await.unwrap();
        let suffix = unique_suffix();
        Self {
            db,
            vhost,
            slot: format!("slot_{suffix}"),
            publication: format!("pub_{suffix}"),
        }
    }

    /// Flags for an in-process relay against this fixture.
    pub fn cli(&self) -> Cli {
        Cli {
            database_url: Some(self.db.url.clone()),
            amqp_url: Some(self.vhost.amqp_url.clone()),
            slot: Some(self.slot.clone()),
            publication: Some(self.publication.clone()),
            http_port: Some("0".into()),
            connect_timeout_secs: Some("5".into()),
            status_interval_ms: Some("100".into()),
            ..Cli::default()
        }
    }

    pub fn config(&self) -> Config {
        Config::from_cli(self.cli()).unwrap()
    }

    /// Environment for a spawned relay against this fixture.
    pub fn env(&self, http_port: u16) -> HashMap<String, String> {
        HashMap::from([
            ("DATABASE_URL".into(), self.db.url.clone()),
            ("AMQP_URL".into(), self.vhost.amqp_url.clone()),
            ("RELAY_SLOT".into(), self.slot.clone()),
            ("RELAY_PUBLICATION".into(), self.publication.clone()),
            ("RELAY_HTTP_PORT".into(), http_port.to_string()),
            ("RELAY_CONNECT_TIMEOUT_SECS".into(), "10".into()),
            ("RELAY_STATUS_INTERVAL_MS".into(), "100".into()),
            ("RUST_LOG".into(), "info".into()),
        ])
    }

    pub async fn cleanup(self) {
        self.db.drop_database().await.unwrap();
        self.vhost.delete().await.unwrap();
    }
}

/// One outbox row to insert.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: uuid::Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: String,
}

impl Row {
    pub fn order(aggregate_id: &str, event_type: &str, n: usize) -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            aggregate_type: "order".into(),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            payload: format!(r#"{{"n": {n}, "orderId": "{aggregate_id}"}}"#),
        }
    }
}

/// Inserts `rows` in one transaction.
pub async fn insert_transaction(pool: &PgPool, rows: &[Row]) {
    let mut tx = pool.begin().await.unwrap();
    for row in rows {
        sqlx::query(
            "INSERT INTO orders.outbox_event \
             (id, aggregate_type, aggregate_id, type, payload, \"timestamp\") \
             VALUES ($1, $2, $3, $4, $5::jsonb, now())",
        )
        .bind(row.id)
        .bind(&row.aggregate_type)
        .bind(&row.aggregate_id)
        .bind(&row.event_type)
        .bind(&row.payload)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Inserts `count` numbered events for aggregate `aggregate`, `per_tx` to a transaction,
/// server-side (fast); ids are `md5`-derived uuids, payload `{"n": i}`.
pub async fn insert_series(pool: &PgPool, start: usize, count: usize, per_tx: usize) {
    let mut next = start;
    while next < start + count {
        let end = (next + per_tx).min(start + count);
        sqlx::query(
            "INSERT INTO orders.outbox_event \
             (id, aggregate_type, aggregate_id, type, payload, \"timestamp\") \
             SELECT gen_random_uuid(), 'order', 'agg-' || (i % 7), 'Numbered', \
                    jsonb_build_object('n', i), now() \
             FROM generate_series($1::bigint, $2::bigint - 1) AS i",
        )
        .bind(next as i64)
        .bind(end as i64)
        .execute(pool)
        .await
        .unwrap();
        next = end;
    }
}

/// An AMQP connection to the fixture's vhost with a queue bound to `exchange`.
pub struct BoundQueue {
    pub connection: Connection,
    pub channel: Channel,
    pub queue: String,
}

pub async fn amqp_channel(amqp_url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// Opens an existing queue (e.g. after a broker restart).
pub async fn open_queue(amqp_url: &str, queue: &str) -> BoundQueue {
    let (connection, channel) = amqp_channel(amqp_url).await;
    BoundQueue {
        connection,
        channel,
        queue: queue.to_owned(),
    }
}

/// Declares `exchange` (durable fanout, as the relay does) and a queue bound to it.
pub async fn bind_queue(amqp_url: &str, exchange: &str) -> BoundQueue {
    let (connection, channel) = amqp_channel(amqp_url).await;
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let queue = format!("q_{}", unique_suffix());
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    BoundQueue {
        connection,
        channel,
        queue,
    }
}

/// A consumed message.
#[derive(Debug, Clone)]
pub struct Received {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Received {
    pub fn message_id(&self) -> Option<String> {
        self.properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let headers = self.properties.headers().as_ref()?;
        headers.inner().iter().find_map(|(key, value)| {
            (key.as_str() == name).then(|| match value {
                AMQPValue::LongString(text) => {
                    String::from_utf8_lossy(text.as_bytes()).into_owned()
                }
                other => format!("{other:?}"),
            })
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl BoundQueue {
    /// Gets (and acks) up to `count` messages, waiting up to `timeout` for them.
    pub async fn take(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let mut received = Vec::with_capacity(count);
        let deadline = tokio::time::Instant::now() + timeout;
        while received.len() < count && tokio::time::Instant::now() < deadline {
            match self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                Some(message) => {
                    let delivery = message.delivery;
                    received.push(Received {
                        exchange: delivery.exchange.to_string(),
                        routing_key: delivery.routing_key.to_string(),
                        properties: delivery.properties,
                        body: delivery.data,
                    });
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        received
    }

    /// Consumes until `done` says so or `timeout`; returns everything consumed.
    pub async fn take_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Vec<Received> {
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&received) && tokio::time::Instant::now() < deadline {
            let batch = self.take(1000, Duration::from_millis(200)).await;
            received.extend(batch);
        }
        received
    }

    /// Closes the connection (before the vhost is deleted).
    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }

    /// Messages ready in the queue right now (passive declare).
    pub async fn ready(&self) -> u32 {
        self.channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }
}

/// The slot's confirmed_flush_lsn as a number.
pub async fn slot_confirmed(pool: &PgPool, slot: &str) -> Option<u64> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await
    .unwrap();
    row.and_then(|(lsn,)| lsn)
        .map(|text| text.parse::<pgoutput::Lsn>().unwrap().0)
}

/// The server's current WAL insert position.
pub async fn current_wal_lsn(pool: &PgPool) -> u64 {
    let (lsn,): (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await
        .unwrap();
    lsn.parse::<pgoutput::Lsn>().unwrap().0
}

/// Whether the slot is held by a session right now.
pub async fn slot_active(pool: &PgPool, slot: &str) -> bool {
    let row: Option<(bool,)> =
        sqlx::query_as("SELECT active FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(pool)
            .await
            .unwrap();
    row.is_some_and(|(active,)| active)
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The relay binary as a child process.
pub struct RelayProcess {
    pub child: tokio::process::Child,
    pub http_port: u16,
}

impl RelayProcess {
    pub fn spawn(env: &HashMap<String, String>) -> Self {
        let http_port: u16 = env
            .get("RELAY_HTTP_PORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
        command
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if std::env::var_os("RELAY_TEST_LOGS").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command.spawn().unwrap();
        Self { child, http_port }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Peak resident memory (VmHWM) in KiB, while the process lives.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
    }

    pub async fn kill9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap()
            .unwrap()
    }

    pub async fn health(&self) -> Option<(u16, serde_json::Value)> {
        let response = reqwest::get(format!("http://127.0.0.1:{}/health", self.http_port))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// Waits until `/health` says the relay streams.
    pub async fn wait_streaming(&self) {
        wait_until("relay streaming", test_support::EVENTUALLY, || async {
            self.health()
                .await
                .filter(|(_, body)| body["streaming"] == true)
                .map(|_| ())
        })
        .await
        .unwrap();
    }
}

/// `crates/outbox-relay` (for resources and scripts).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails with the unique payload numbers that are missing in `received`.
pub fn assert_all_numbers(received: &[Received], count: usize) {
    let mut seen = vec![false; count];
    for message in received {
        let n = message.body_json()["n"].as_u64().unwrap() as usize;
        if n < count {
            seen[n] = true;
        }
    }
    let missing: Vec<usize> = (0..count).filter(|n| !seen[*n]).collect();
    assert!(
        missing.is_empty(),
        "{} events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Consumes a queue in the background, recording each message's payload number `n`.
pub struct Collector {
    numbers: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start(queue: &BoundQueue) -> Self {
        use futures::StreamExt;
        let channel = queue.connection.create_channel().await.unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.queue.as_str().into(),
                format!("c_{}", unique_suffix()).as_str().into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let numbers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&numbers);
        let task = tokio::spawn(async move {
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let value: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
                sink.lock().unwrap().push(value["n"].as_u64().unwrap());
            }
        });
        Self { numbers, task }
    }

    /// Messages received, duplicates included.
    pub fn received(&self) -> usize {
        self.numbers.lock().unwrap().len()
    }

    /// Distinct numbers below `count` received.
    pub fn distinct(&self, count: usize) -> usize {
        let numbers = self.numbers.lock().unwrap();
        let mut seen = vec![false; count];
        for n in numbers.iter() {
            if let Some(slot) = seen.get_mut(*n as usize) {
                *slot = true;
            }
        }
        seen.iter().filter(|s| **s).count()
    }

    /// Waits until every number below `count` arrived; fails naming how many are missing.
    pub async fn wait_all(&self, count: usize, timeout: Duration) {
        let waited = wait_until("every event", timeout, || async {
            (self.distinct(count) == count).then_some(())
        })
        .await;
        assert!(
            waited.is_ok(),
            "{} of {count} events missing after {timeout:?}",
            count - self.distinct(count)
        );
    }

    pub fn numbers(&self) -> Vec<u64> {
        self.numbers.lock().unwrap().clone()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}
