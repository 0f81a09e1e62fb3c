//! `spawn_app`: a running shipment-service on its own database and vhost, a publisher, and
//! typed helpers to read what the service stored.

use std::collections::HashMap;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::{Value, json};
use shipment_service::{Application, Config};
use sqlx::PgPool;
use test_support::{EVENTUALLY, TestDatabase, TestVhost, wait_until};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;
use wire_format::{Header, HeaderKind, WireFormat};

pub const EXCHANGE: &str = "order.events";
pub const QUEUE: &str = "shipment.orders";
pub const DLQ: &str = "shipment.orders.dlq";

pub struct TestApp {
    pub port: u16,
    pub db: TestDatabase,
    pub vhost: TestVhost,
    pub publisher: Publisher,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The service's configuration for this test's database and vhost, with extra variables.
pub fn config_for(db: &TestDatabase, vhost: &TestVhost, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("SERVER_PORT".to_owned(), "0".to_owned()),
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("AMQP_URL".to_owned(), vhost.amqp_url.clone()),
    ]);
    for (name, value) in extra {
        vars.insert((*name).to_owned(), (*value).to_owned());
    }
    let mut config = Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    config.consumer.retry_backoff = Duration::from_millis(20);
    config.consumer.max_retry_backoff = Duration::from_millis(200);
    config.startup_patience = Duration::from_secs(10);
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[], |_| {}).await
}

/// Builds the app (declaring the topology), starts it, and connects a publisher.
pub async fn spawn_app_with(
    extra: &[(&str, &str)],
    customize: impl FnOnce(&mut Config),
) -> TestApp {
    build_app(extra, customize).await.start()
}

/// The app built (its topology declared) but not started, with its database, vhost and a
/// publisher: messages published now wait in the queue, and arrive as one batch once started.
pub struct BuiltApp {
    pub app: Application,
    pub db: TestDatabase,
    pub vhost: TestVhost,
    pub publisher: Publisher,
}

pub async fn build_app(extra: &[(&str, &str)], customize: impl FnOnce(&mut Config)) -> BuiltApp {
    test_support::init_tracing();
    let db = TestDatabase::create("shipment").await.unwrap();
    let vhost = TestVhost::create("shipment").await.unwrap();
    build_app_on(db, vhost, extra, customize).await
}

/// [`build_app`] on a database (and vhost) the test prepared.
pub async fn build_app_on(
    db: TestDatabase,
    vhost: TestVhost,
    extra: &[(&str, &str)],
    customize: impl FnOnce(&mut Config),
) -> BuiltApp {
    test_support::init_tracing();
    let mut config = config_for(&db, &vhost, extra);
    customize(&mut config);
    let app = Application::build(config).await.unwrap();
    let publisher = Publisher::connect(&vhost).await;
    BuiltApp {
        app,
        db,
        vhost,
        publisher,
    }
}

impl BuiltApp {
    pub fn start(self) -> TestApp {
        let port = self.app.port();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(self.app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        TestApp {
            port,
            db: self.db,
            vhost: self.vhost,
            publisher: self.publisher,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The Prometheus text of `/metrics` (asserting it is served as text/plain).
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        response.text().await.unwrap()
    }

    /// Asserts `/metrics` mentions `series` (a name, or a name with its labels).
    pub async fn assert_metric(&self, series: &str) {
        let metrics = self.metrics().await;
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Stops the service and drops its database and vhost.
    pub async fn cleanup(mut self) {
        self.stop().await;
        self.publisher.close().await;
        self.db.drop_database().await.unwrap();
        self.vhost.delete().await.unwrap();
    }

    /// The value `sql` (with `$1` = `id`) selects, if a row matches.
    async fn scalar_by_id<T>(&self, sql: &str, id: Uuid) -> Option<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .unwrap()
    }

    pub async fn shipment_count(&self, order_id: Uuid) -> i64 {
        let sql = "SELECT count(*) FROM shipments.shipment WHERE order_id = $1";
        self.scalar_by_id(sql, order_id).await.unwrap()
    }

    pub async fn shipment_status(&self, order_id: Uuid) -> Option<String> {
        let sql = "SELECT status FROM shipments.shipment WHERE order_id = $1";
        self.scalar_by_id(sql, order_id).await
    }

    pub async fn line_status(&self, line_id: Uuid) -> Option<String> {
        let sql = "SELECT status FROM shipments.shipment_line WHERE order_line_id = $1";
        self.scalar_by_id(sql, line_id).await
    }

    /// How many times event `event_id` was recorded as consumed (exactly once means 1).
    pub async fn consumed_count(&self, event_id: Uuid) -> i64 {
        let sql = "SELECT count(*) FROM shipments.consumed_message WHERE event_id = $1";
        self.scalar_by_id(sql, event_id).await.unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM shipments.{table}"))
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Messages waiting in the dead-letter queue now (a passive declare: exact, no lag).
    pub async fn dead_letter_depth(&self) -> u32 {
        let channel = self.publisher.connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                DLQ.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel.close(200, "done".into()).await.ok();
        queue.message_count()
    }

    /// Waits until `/health` answers 200 with the original's `"health": true` (the broker flag
    /// is set once the consumer runs).
    pub async fn wait_healthy(&self) {
        wait_until("healthy", EVENTUALLY, || async {
            let (status, body) = self.get("/health").await;
            (status == 200 && body["health"] == true).then_some(())
        })
        .await
        .unwrap();
    }

    /// Waits until the shipment of `order_id` exists.
    pub async fn wait_for_shipment(&self, order_id: Uuid) {
        wait_until("the shipment", EVENTUALLY, || async {
            (self.shipment_count(order_id).await > 0).then_some(())
        })
        .await
        .unwrap();
    }

    /// Publishes `order`'s OrderCreated (under a fresh event id) and waits for its shipment.
    pub async fn create_order(&self, order: &Order) {
        self.publisher.publish_event(&order.created()).await;
        self.wait_for_shipment(order.id).await;
    }

    /// Publishes a fresh order and waits for its shipment: every message published before it
    /// has then been handled (one consumer, in queue order).
    pub async fn sync(&self) {
        self.create_order(&Order::new(1)).await;
    }

    /// Waits until the service's queue has no ready and no unacked message (per the
    /// management API, which lags a few seconds).
    pub async fn wait_queue_drained(&self) {
        wait_until("the queue to drain", Duration::from_secs(60), || async {
            let queue = self.vhost.queue_json(QUEUE).await.ok()?;
            let ready = queue["messages_ready"].as_i64()?;
            let unacked = queue["messages_unacknowledged"].as_i64()?;
            (ready == 0 && unacked == 0).then_some(())
        })
        .await
        .unwrap();
    }
}

/// A confirm-mode publisher on the test's vhost.
pub struct Publisher {
    pub connection: Connection,
    pub channel: Channel,
}

impl Publisher {
    pub async fn connect(vhost: &TestVhost) -> Self {
        let connection = Connection::connect(&vhost.amqp_url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            connection,
            channel,
        }
    }

    pub async fn close(&self) {
        self.connection.close(200, "done".into()).await.ok();
    }

    /// Publishes to `order.events` and waits for the broker's confirm.
    pub async fn publish(&self, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                EXCHANGE.into(),
                "".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(confirm, Confirmation::Ack(None));
    }

    /// Publishes without waiting for the confirm (the backlog test waits for all at once).
    pub async fn publish_no_wait(&self, body: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                EXCHANGE.into(),
                "".into(),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .unwrap();
    }

    /// The relay's plain format: message_id = event id, headers `id` and `eventType`.
    pub async fn publish_plain(&self, event_id: Uuid, payload: &Value) {
        self.publish(
            payload.to_string().as_bytes(),
            plain_properties(event_id, payload),
        )
        .await;
    }

    /// [`Publisher::publish_plain`] under a fresh event id.
    pub async fn publish_event(&self, payload: &Value) {
        self.publish_plain(Uuid::new_v4(), payload).await;
    }

    /// [`Publisher::publish_event`] of each payload, in order.
    pub async fn publish_events(&self, payloads: &[Value]) {
        for payload in payloads {
            self.publish_event(payload).await;
        }
    }

    /// [`Publisher::publish_as`] of an OrderCreated.
    pub async fn publish_created(&self, format: WireFormat, event_id: Uuid, payload: &Value) {
        self.publish_as(format, event_id, "OrderCreated", payload)
            .await;
    }

    /// [`Publisher::publish_as`] of an OrderLineUpdated.
    pub async fn publish_update(&self, format: WireFormat, event_id: Uuid, payload: &Value) {
        self.publish_as(format, event_id, "OrderLineUpdated", payload)
            .await;
    }

    /// Publishes a captured Debezium message (see [`sample`]) with its exact body and headers.
    pub async fn publish_sample(&self, sample: &Value) {
        self.publish_with_headers(
            sample["body"].as_str().unwrap().as_bytes(),
            &sample_headers(sample),
        )
        .await;
    }

    /// Publishes `payload` under `event_id` as the relay does in `format`: `plain` with
    /// message_id and bare `id`/`eventType` headers, `debezium` with Debezium's JSON-envelope
    /// headers and no message_id. `event_type` goes in the header (the original producer's
    /// OrderLineUpdated payload has no `eventType`).
    pub async fn publish_as(
        &self,
        format: WireFormat,
        event_id: Uuid,
        event_type: &str,
        payload: &Value,
    ) {
        let id = event_id.to_string();
        let encoded = wire_format::encode(
            format,
            &payload.to_string(),
            &[
                Header {
                    name: "id",
                    value: &id,
                    kind: HeaderKind::Uuid,
                },
                Header {
                    name: "eventType",
                    value: event_type,
                    kind: HeaderKind::String,
                },
            ],
        )
        .unwrap();
        let mut properties =
            BasicProperties::default().with_headers(string_table(&encoded.headers));
        if format == WireFormat::Plain {
            properties = properties.with_message_id(ShortString::from(id));
        }
        self.publish(&encoded.body, properties).await;
    }

    /// Publishes a body with headers given as strings (AMQP long strings).
    pub async fn publish_with_headers(&self, body: &[u8], headers: &[(String, String)]) {
        self.publish(
            body,
            BasicProperties::default().with_headers(string_table(headers)),
        )
        .await;
    }
}

pub fn plain_properties(event_id: Uuid, payload: &Value) -> BasicProperties {
    let event_type = payload["eventType"].as_str().unwrap_or_default().to_owned();
    BasicProperties::default()
        .with_message_id(ShortString::from(event_id.to_string()))
        .with_content_type("application/json".into())
        .with_timestamp(chrono::Utc::now().timestamp() as u64)
        .with_headers(string_table(&[
            ("id".to_owned(), event_id.to_string()),
            ("eventType".to_owned(), event_type),
        ]))
}

pub fn string_table(headers: &[(String, String)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(
            name.as_str().into(),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    table
}

/// Exact copies of the messages captured from Debezium 3.6.3
/// (`shared/peers/debezium/sample-messages`).
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/debezium");

/// The captured message `name` (a path below the fixtures' folder).
pub fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{SAMPLES}/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn sample_headers(sample: &Value) -> Vec<(String, String)> {
    sample["properties"]["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned()))
        .collect()
}

/// The id of the order a sample is about.
pub fn sample_order_id(sample: &Value) -> Uuid {
    sample_id(sample, "/source_row/aggregate_id")
}

/// The id at `pointer` (a JSON pointer, e.g. `/source_row/aggregate_id`) of a sample.
pub fn sample_id(sample: &Value, pointer: &str) -> Uuid {
    sample
        .pointer(pointer)
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A message read back from the dead-letter queue.
#[derive(Debug)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub headers: HashMap<String, AMQPValue>,
}

impl DeadLetter {
    pub fn header_text(&self, name: &str) -> Option<String> {
        match self.headers.get(name)? {
            AMQPValue::LongString(text) => {
                Some(String::from_utf8_lossy(text.as_bytes()).into_owned())
            }
            AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
            _ => None,
        }
    }

    /// Asserts the letter is message `message_id`, dead-lettered for `reason` with an
    /// `x-error` that mentions `error`.
    pub fn assert_dead_lettered(&self, message_id: Uuid, reason: &str, error: &str) {
        assert_eq!(self.message_id, Some(message_id.to_string()));
        assert_eq!(self.header_text("x-death-reason").as_deref(), Some(reason));
        let text = self.header_text("x-error").unwrap();
        assert!(text.contains(error), "{text}");
    }

    pub fn attempts(&self) -> Option<i64> {
        match self.headers.get("x-attempts")? {
            AMQPValue::LongInt(value) => Some(i64::from(*value)),
            AMQPValue::LongLongInt(value) => Some(*value),
            _ => None,
        }
    }
}

/// Takes (and acks) messages from the dead-letter queue until `expected` are read.
pub async fn take_dead_letters(app: &TestApp, expected: usize) -> Vec<DeadLetter> {
    let channel = app.publisher.connection.create_channel().await.unwrap();
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + EVENTUALLY;
    while letters.len() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {expected} dead letters arrived",
            letters.len()
        );
        let Some(message) = channel
            .basic_get(DLQ.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let delivery = &message.delivery;
        letters.push(DeadLetter {
            body: delivery.data.clone(),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string()),
            headers: delivery
                .properties
                .headers()
                .as_ref()
                .map(|table| {
                    table
                        .inner()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    channel.close(200, "done".into()).await.ok();
    letters
}

/// An order with `lines` lines, and the events about it.
#[derive(Debug, Clone)]
pub struct Order {
    pub id: Uuid,
    pub lines: Vec<Uuid>,
}

impl Order {
    /// A fresh order id and `lines` fresh line ids.
    pub fn new(lines: usize) -> Self {
        Self {
            id: Uuid::new_v4(),
            lines: (0..lines).map(|_| Uuid::new_v4()).collect(),
        }
    }

    pub fn created(&self) -> Value {
        json!({
            "eventType": "OrderCreated",
            "id": self.id,
            "customerId": 3,
            "orderDate": "2024-01-01T12:00:00.000Z",
            "lineItems": self.lines.iter().enumerate().map(|(index, line)| json!({
                "id": line,
                "item": format!("Book {index}"),
                "quantity": index + 1,
                "totalPrice": 19.99,
                "status": "ENTERED",
            })).collect::<Vec<_>>(),
        })
    }

    pub fn line_updated(&self, line: usize, new_status: &str) -> Value {
        json!({
            "eventType": "OrderLineUpdated",
            "orderId": self.id,
            "orderLineId": self.lines[line],
            "newStatus": new_status,
            "oldStatus": "ENTERED",
        })
    }
}

/// The original system's shipment database (its DDL and rows, `resources/original`), in a
/// database of the test's own.
pub async fn original_shipment_db() -> TestDatabase {
    let db = TestDatabase::create("shipment_orig").await.unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../resources/original");
    for file in ["shipmentdb-schema.sql", "shipmentdb-rows.sql"] {
        let sql = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        sqlx::raw_sql(&sql).execute(&db.pool).await.unwrap();
    }
    db
}

/// An order as the original NodeJS producer announces it: no lineItems, and line updates
/// whose payload has no eventType (it travels in the header).
#[derive(Debug, Clone)]
pub struct OriginalOrder {
    pub id: Uuid,
    pub lines: Vec<Uuid>,
}

impl OriginalOrder {
    /// Fresh ids, as [`Order::new`].
    pub fn new(lines: usize) -> Self {
        let Order { id, lines } = Order::new(lines);
        Self { id, lines }
    }

    pub fn created(&self) -> Value {
        json!({
            "id": self.id,
            "eventType": "OrderCreated",
            "orderDate": "2024-01-01T12:00:00.000Z",
            "customerId": 7,
        })
    }

    pub fn line_updated(&self, line: usize, new_status: &str) -> Value {
        json!({
            "orderId": self.id,
            "orderLineId": self.lines[line],
            "oldStatus": "ENTERED",
            "newStatus": new_status,
        })
    }
}
