//! Helpers shared by the relay's integration tests: an outbox database, a queue bound to an
//! exchange, relay configuration for in-process and spawned relays, consuming messages, the
//! relay binary as a process (SIGKILL and standby scenarios), and small fixtures for stalls,
//! unroutable rows and start errors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use outbox_relay::config::Cli;
use outbox_relay::{Config, HealthReport, Relay, RunningRelay};
use sqlx::PgPool;
use test_support::process::{ServiceCommand, ServiceProcess};
use test_support::{EVENTUALLY, TestDatabase, TestVhost, unique_suffix, wait_until};

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

/// The flags every in-process relay of these tests has (the database is the caller's): the
/// broker, slot and publication, an HTTP port the system picks, short timeouts.
pub fn relay_cli(amqp_url: &str, slot: &str, publication: &str) -> Cli {
    Cli {
        amqp_url: Some(amqp_url.to_owned()),
        slot: Some(slot.to_owned()),
        publication: Some(publication.to_owned()),
        http_port: Some("0".into()),
        connect_timeout_secs: Some("5".into()),
        status_interval_ms: Some("100".into()),
        ..Cli::default()
    }
}

/// Waits until the in-process `relay` reports that it streams (`what` names the wait).
pub async fn wait_relay_streaming(relay: &RunningRelay, what: &str) {
    wait_until(what, EVENTUALLY, || async {
        relay.status().report().streaming.then_some(())
    })
    .await
    .unwrap();
}

/// Starts the relay binary on `fixture`, waits until it streams, and returns it with the
/// slot's confirmed position at that moment.
pub async fn spawn_streaming(fixture: &Fixture) -> (ServiceProcess, u64) {
    let relay = spawn_relay(&fixture.env(test_support::process::free_port()));
    wait_streaming(&relay).await;
    let confirmed = slot_confirmed(&fixture.db.pool, &fixture.slot)
        .await
        .unwrap();
    (relay, confirmed)
}

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

    /// This fixture's database URL, logging in as `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        let options = &self.db.options;
        format!(
            "postgres://{user}:{password}@{}:{}/{}",
            options.get_host(),
            options.get_port(),
            self.db.name
        )
    }

    /// Flags for an in-process relay against this fixture.
    pub fn cli(&self) -> Cli {
        Cli {
            database_url: Some(self.db.url.clone()),
            ..relay_cli(&self.vhost.amqp_url, &self.slot, &self.publication)
        }
    }

    /// Waits until the slot's confirmed position reaches `lsn` (`what` names it in the timeout
    /// error); returns that position.
    pub async fn wait_slot_past(&self, what: &str, lsn: u64) -> u64 {
        wait_until(what, EVENTUALLY, || async {
            slot_confirmed(&self.db.pool, &self.slot)
                .await
                .filter(|confirmed| *confirmed >= lsn)
        })
        .await
        .unwrap()
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

    /// [`Row::order`] for each `n` of `numbers`, in order.
    pub fn orders(aggregate_id: &str, event_type: &str, numbers: Range<usize>) -> Vec<Self> {
        numbers
            .map(|n| Self::order(aggregate_id, event_type, n))
            .collect()
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

/// How long a relay process may take to exit after SIGTERM.
pub const GRACEFUL_EXIT: Duration = Duration::from_secs(60);

/// The relay binary as a child process with exactly `env` (its output shown only when
/// `RELAY_TEST_LOGS` is set); its HTTP port is the env's `RELAY_HTTP_PORT`.
pub fn spawn_relay(env: &HashMap<String, String>) -> ServiceProcess {
    let http_port: u16 = env
        .get("RELAY_HTTP_PORT")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut command = ServiceCommand::new("outbox-relay", env!("CARGO_BIN_EXE_outbox-relay"))
        .env_clear()
        .envs(env)
        .http_port(http_port);
    if std::env::var_os("RELAY_TEST_LOGS").is_some() {
        command = command.inherit_output();
    }
    command.spawn().unwrap()
}

/// Waits until the relay's `/health` says it streams.
pub async fn wait_streaming(relay: &ServiceProcess) {
    relay
        .wait_health("relay streaming", EVENTUALLY, |_, body| {
            body["streaming"] == true
        })
        .await
        .unwrap();
}

/// SIGTERM; asserts a graceful, successful exit.
pub async fn stop_relay(relay: &mut ServiceProcess) {
    let status = relay.terminate(GRACEFUL_EXIT).await.unwrap();
    assert!(status.success(), "graceful exit after SIGTERM: {status}");
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

/// A relay process run through SIGKILLs while a writer inserts numbered events: what the
/// test checks and cleans up afterwards.
pub struct CrashRun {
    pub relay: ServiceProcess,
    pub collector: Collector,
    pub queue: BoundQueue,
    pub events: usize,
    pub crashes: usize,
}

/// Starts a relay with `env`, writes `events` numbered events (50 a transaction) in the
/// background, SIGKILLs the relay `crashes` times (after each even share of the events has
/// arrived) and restarts it with the same `env`; returns once the writer is done and every
/// event arrived.
pub async fn sigkill_mid_stream(
    fixture: &Fixture,
    env: &HashMap<String, String>,
    events: usize,
    crashes: usize,
) -> CrashRun {
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let collector = Collector::start(&queue).await;
    let mut relay = spawn_relay(env);
    wait_streaming(&relay).await;

    let pool = fixture.db.pool.clone();
    let writer = tokio::spawn(async move { insert_series(&pool, 0, events, 50).await });
    for crash in 1..=crashes {
        let target = crash * events / (crashes + 1);
        wait_until(
            "events flowing before the crash",
            Duration::from_secs(120),
            || async { (collector.received() >= target).then_some(()) },
        )
        .await
        .unwrap();
        relay.kill9().await.unwrap();
        relay = spawn_relay(env);
    }
    writer.await.unwrap();
    collector.wait_all(events, Duration::from_secs(180)).await;
    CrashRun {
        relay,
        collector,
        queue,
        events,
        crashes,
    }
}

impl CrashRun {
    /// Prints what arrived (as `label`), stops the relay asserting a graceful exit, and closes
    /// the queue.
    pub async fn finish(mut self, label: &str) {
        let (events, crashes) = (self.events, self.crashes);
        let received = self.collector.received();
        eprintln!(
            "{label}: {events} events, {crashes} crashes, {received} messages received \
             ({} duplicates)",
            received - events
        );
        stop_relay(&mut self.relay).await;
        self.collector.stop();
        self.queue.close().await;
    }
}

/// Two relay processes on one source: the active one streaming, the second standing by.
pub struct StandbyPair {
    pub active: ServiceProcess,
    pub standby: ServiceProcess,
    pub collector: Collector,
    pub queue: BoundQueue,
}

impl StandbyPair {
    /// Starts the active relay and waits until it streams, then the second one, and checks that
    /// it stands by: `/health` answers 503, not streaming.
    pub async fn start(fixture: &Fixture, env: impl Fn() -> HashMap<String, String>) -> Self {
        let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
        let collector = Collector::start(&queue).await;
        let active = spawn_relay(&env());
        wait_streaming(&active).await;
        let standby = spawn_relay(&env());
        let (code, health) = standby
            .wait_health("second relay stands by", EVENTUALLY, |_, body| {
                body["standby"] == true
            })
            .await
            .unwrap();
        assert_eq!(code, 503, "a standby is not ready: {health}");
        assert_eq!(health["streaming"], false);
        Self {
            active,
            standby,
            collector,
            queue,
        }
    }

    /// Writes `events` numbered events in the background, `per_tx` a transaction, and waits
    /// until a third of them arrived; returns the writer.
    pub async fn write_events(
        &self,
        fixture: &Fixture,
        events: usize,
        per_tx: usize,
    ) -> tokio::task::JoinHandle<()> {
        let pool = fixture.db.pool.clone();
        let writer = tokio::spawn(async move { insert_series(&pool, 0, events, per_tx).await });
        wait_until("events flowing", EVENTUALLY, || async {
            (self.collector.received() >= events / 3).then_some(())
        })
        .await
        .unwrap();
        writer
    }

    /// SIGKILLs the active relay and waits until the standby streams, then for the writer and
    /// every event; returns how long the takeover took.
    pub async fn kill_active(
        &mut self,
        writer: tokio::task::JoinHandle<()>,
        events: usize,
    ) -> Duration {
        self.active.kill9().await.unwrap();
        let killed_at = std::time::Instant::now();
        wait_streaming(&self.standby).await;
        let takeover = killed_at.elapsed();
        writer.await.unwrap();
        self.collector
            .wait_all(events, Duration::from_secs(120))
            .await;
        takeover
    }

    /// Prints the takeover (as `label`), stops the standby asserting a graceful exit, and closes
    /// the queue.
    pub async fn finish(mut self, label: &str, events: usize, takeover: Duration) {
        eprintln!(
            "{label}: took over {:.2} s after SIGKILL; {events} events, {} received",
            takeover.as_secs_f64(),
            self.collector.received()
        );
        stop_relay(&mut self.standby).await;
        self.collector.stop();
        self.queue.close().await;
    }
}

/// Rows left in the outbox table.
pub async fn outbox_rows(pool: &PgPool) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders.outbox_event")
        .fetch_one(pool)
        .await
        .unwrap();
    count
}

/// Waits until the polling source deleted every row it published.
pub async fn wait_table_empty(pool: &PgPool) {
    wait_until("outbox table emptied", EVENTUALLY, || async {
        (outbox_rows(pool).await == 0).then_some(())
    })
    .await
    .unwrap();
}

/// The error of a relay that must not start (fails the test if it starts).
pub async fn start_error(cli: Cli) -> String {
    match Relay::start(Config::from_cli(cli).unwrap()).await {
        Ok(relay) => {
            relay.shutdown().await.unwrap();
            panic!("the relay started")
        }
        Err(error) => error.to_string(),
    }
}

/// Waits until the in-process relay reports a stall; returns that report.
pub async fn wait_stalled(relay: &RunningRelay) -> HealthReport {
    wait_until("stall reported", EVENTUALLY, || async {
        let report = relay.status().report();
        report.stalled.is_some().then_some(report)
    })
    .await
    .unwrap()
}

/// Waits until the in-process relay is ready again after a stall.
pub async fn wait_stall_cleared(relay: &RunningRelay) {
    wait_until("stall cleared", EVENTUALLY, || async {
        relay.status().report().ready.then_some(())
    })
    .await
    .unwrap();
}

/// The text of an in-process relay's `/metrics`.
pub async fn metrics_text(http_addr: SocketAddr) -> String {
    reqwest::get(format!("http://{http_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Adds a nullable `destination` column to route rows by.
pub async fn add_destination_column(pool: &PgPool) {
    sqlx::query("ALTER TABLE orders.outbox_event ADD COLUMN destination text")
        .execute(pool)
        .await
        .unwrap();
}

/// `cli` routing each row to the exchange named in its `destination` column, rows the router
/// cannot route going to `dead_letter_exchange` if given.
pub fn routed_by_destination(cli: Cli, dead_letter_exchange: Option<&str>) -> Config {
    Config::from_cli(Cli {
        route_by_field: Some("destination".into()),
        route_topic_replacement: Some("${routedByValue}".into()),
        dead_letter_exchange: dead_letter_exchange.map(Into::into),
        ..cli
    })
    .unwrap()
}

/// Takes the one dead letter of the row `id`, whose `destination` was NULL, and checks that it
/// carries the row, the reason and the table.
pub async fn assert_dead_lettered(dead_letters: &BoundQueue, id: &str) {
    let dead = dead_letters.take(1, EVENTUALLY).await;
    assert_eq!(dead.len(), 1);
    let body = dead[0].body_json();
    assert_eq!(body["id"], id);
    assert!(body["destination"].is_null());
    let reason = dead[0].header("x-outbox-relay-error").unwrap();
    assert!(reason.contains("destination"), "{reason}");
    assert_eq!(
        dead[0].header("x-outbox-relay-table").as_deref(),
        Some("orders.outbox_event")
    );
}
