//! Consumer (issue 7, item 6): shipment-service applying a backlog, against the same SQL
//! straight to PostgreSQL.
//!
//! The backlog is what the relay would publish (plain wire format): half `OrderCreated` with
//! two lines, half `OrderLineUpdated` cancelling a line of those orders. It is queued before the
//! service starts consuming; the time runs from its start to the moment `consumed_message`
//! holds every event. The comparison (the service's own SQL ceiling) applies the same parsed
//! events with `shipment_service::apply::apply_batch` in batches of the service's batch size
//! (`SHIPMENT_BATCH_SIZE`, what the service does on a backlog), sequentially, on a fresh
//! database: no broker, no acks.
//!
//! The service runs with its defaults; `SHIPMENT_BATCH_SIZE` and `RABBITMQ_PREFETCH` set in the
//! bench's own environment are passed to it (and the batch size to the direct SQL), to compare
//! settings without a rebuild.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use events::{LineStatus, OrderEvent, OrderLineUpdated};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use serde::Serialize;
use shipment_service::event::IncomingEvent;
use sqlx::PgPool;
use test_support::{TestDatabase, TestVhost};
use uuid::Uuid;

use crate::workload::sample_order;

/// One repetition.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerRun {
    pub events: usize,
    pub service_events_per_s: f64,
    pub direct_sql_events_per_s: f64,
    /// The batch size of both (`SHIPMENT_BATCH_SIZE` of the service).
    pub batch: usize,
    /// The service's prefetch window (`RABBITMQ_PREFETCH`).
    pub prefetch: usize,
}

/// A message as the relay publishes it.
struct Message {
    id: Uuid,
    event_type: &'static str,
    body: Vec<u8>,
    /// The order id: the routing key with `RELAY_ROUTING_KEY=key`.
    order_id: Uuid,
}

impl Message {
    fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("id".to_owned(), self.id.to_string()),
            ("eventType".to_owned(), self.event_type.to_owned()),
        ]
    }
}

fn backlog(events: usize) -> Result<Vec<Message>> {
    let orders: Vec<_> = (0..events.div_ceil(2)).map(|_| sample_order()).collect();
    let mut messages = Vec::with_capacity(events);
    let mut push = |order_id: Uuid, event: OrderEvent| -> Result<()> {
        messages.push(Message {
            id: Uuid::now_v7(),
            event_type: event.event_type(),
            body: serde_json::to_vec(&event).context("serializing a backlog event")?,
            order_id,
        });
        Ok(())
    };
    for order in &orders {
        push(order.id, order.created_event())?;
    }
    for order in orders.iter().take(events / 2) {
        push(
            order.id,
            OrderEvent::OrderLineUpdated(OrderLineUpdated {
                order_id: order.id,
                order_line_id: order.line_items[0].id,
                new_status: LineStatus::Cancelled,
                old_status: LineStatus::Entered,
            }),
        )?;
    }
    Ok(messages)
}

/// The consumer settings taken from the bench's environment when set.
const PASSED_THROUGH: [&str; 2] = ["SHIPMENT_BATCH_SIZE", "RABBITMQ_PREFETCH"];

fn shipment_config(
    mut variables: HashMap<&'static str, String>,
) -> Result<shipment_service::Config> {
    for name in PASSED_THROUGH {
        if let Ok(value) = std::env::var(name) {
            variables.insert(name, value);
        }
    }
    shipment_service::Config::from_lookup(|name| variables.get(name).cloned())
        .context("shipment-service configuration")
}

fn service_config(db: &TestDatabase, vhost: &TestVhost) -> Result<shipment_service::Config> {
    shipment_config(HashMap::from([
        ("SERVER_PORT", "0".to_owned()),
        ("DATABASE_URL", db.url.clone()),
        ("AMQP_URL", vhost.amqp_url.clone()),
        ("RUST_LOG", "warn".to_owned()),
    ]))
}

/// One repetition with `events` events.
pub async fn consumer_repetition(events: usize) -> Result<ConsumerRun> {
    let messages = backlog(events)?;
    let (service_rate, batch, prefetch) = through_the_service(&messages).await?;
    let direct_rate = straight_sql(&messages, batch).await?;
    Ok(ConsumerRun {
        events: messages.len(),
        service_events_per_s: service_rate,
        direct_sql_events_per_s: direct_rate,
        batch,
        prefetch,
    })
}

async fn through_the_service(messages: &[Message]) -> Result<(f64, usize, usize)> {
    let db = TestDatabase::create("bench_shipment").await?;
    let vhost = TestVhost::create("bench_shipment").await?;
    let result = async {
        let config = service_config(&db, &vhost)?;
        let schema = config.database.schema.clone();
        let exchange = config.broker.exchange.clone();
        let batch = usize::from(config.consumer.batch_size);
        let prefetch = usize::from(config.consumer.prefetch);
        // Build declares the topology; consuming starts with run_until_stopped.
        let app = shipment_service::Application::build(config)
            .await
            .context("starting shipment-service")?;
        publish_all(&vhost.amqp_url, &exchange, messages, false).await?;
        let pool = app.pool().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let last = messages.last().map(|message| message.id);
        let counted = wait_for_all(&pool, &schema, last, messages.len()).await;
        let seconds = started.elapsed().as_secs_f64();
        let _ = stop.send(());
        let _ = server.await;
        counted?;
        anyhow::Ok((messages.len() as f64 / seconds, batch, prefetch))
    }
    .await;
    vhost.delete().await?;
    db.drop_database().await?;
    result
}

/// Waits until `consumed_message` holds `expected` events. The service applies the queue in
/// order, so the last event's id is polled (a primary-key lookup) and the count, a scan of the
/// whole table that would load the 2 cores the service shares, is taken only once that is in
/// (and then until it is complete: a redelivery can reorder).
async fn wait_for_all(
    pool: &PgPool,
    schema: &str,
    last: Option<Uuid>,
    expected: usize,
) -> Result<()> {
    if let Some(last) = last {
        let query = format!(
            "SELECT EXISTS (SELECT 1 FROM \"{schema}\".consumed_message WHERE event_id = $1)"
        );
        let started = Instant::now();
        loop {
            let (done,): (bool,) = sqlx::query_as(&query).bind(last).fetch_one(pool).await?;
            if done {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("shipment-service did not apply the backlog's last event in 600 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let query = format!("SELECT count(*) FROM \"{schema}\".consumed_message");
    let mut last = -1i64;
    let mut last_change = Instant::now();
    loop {
        let (count,): (i64,) = sqlx::query_as(&query).fetch_one(pool).await?;
        if count as usize >= expected {
            return Ok(());
        }
        if count != last {
            last = count;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(60) {
            bail!("shipment-service stalled at {count} of {expected} events");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `messages` with confirms; `routed`: with the order id as routing key.
async fn publish_all(
    amqp_url: &str,
    exchange: &str,
    messages: &[Message],
    routed: bool,
) -> Result<()> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut pending = VecDeque::new();
    let check = |confirmation: Confirmation| match confirmation {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("the broker did not accept a backlog message: {other:?}"),
    };
    for message in messages {
        if pending.len() >= 4096
            && let Some(confirm) = pending.pop_front()
        {
            check(confirm.await?)?;
        }
        let mut headers = FieldTable::default();
        for (name, value) in message.headers() {
            headers.insert(
                name.as_str().into(),
                AMQPValue::LongString(LongString::from(value.as_bytes())),
            );
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message.id.to_string().as_str().into())
            .with_timestamp(Utc::now().timestamp().max(0) as u64)
            .with_headers(headers);
        let routing_key = if routed {
            message.order_id.to_string()
        } else {
            String::new()
        };
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &message.body,
                properties,
            )
            .await?;
        pending.push_back(confirm);
    }
    while let Some(confirm) = pending.pop_front() {
        check(confirm.await?)?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// Partitioned consumption (issue 15): `instances` shipment-service instances (in this
/// process, each with its own connections and pool) sharing [`SCALING_PARTITIONS`] partitions
/// apply a backlog routed by order id.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingRun {
    pub instances: usize,
    pub partitions: u16,
    pub events: usize,
    /// Events applied per second from the moment every partition had its owner to the last
    /// event applied.
    pub events_per_s: f64,
}

pub const SCALING_PARTITIONS: u16 = 4;

/// One [`ScalingRun`]: the backlog is queued first; the instances start, agree on the
/// partitions (a few seconds: the membership settles), and the clock runs from then.
pub async fn scaling_run(events: usize, instances: usize) -> Result<ScalingRun> {
    let messages = backlog(events)?;
    let db = TestDatabase::create("bench_scaling").await?;
    let vhost = TestVhost::create("bench_scaling").await?;
    let result = async {
        let mut config = service_config(&db, &vhost)?;
        config.broker.partitions = SCALING_PARTITIONS;
        let schema = config.database.schema.clone();
        let exchange = config.broker.exchange.clone();
        let mut apps = Vec::new();
        for _ in 0..instances {
            apps.push(
                shipment_service::Application::build(config.clone())
                    .await
                    .context("starting shipment-service")?,
            );
        }
        publish_all(&vhost.amqp_url, &exchange, &messages, true).await?;
        let pool = apps[0].pool().clone();
        let ports: Vec<u16> = apps.iter().map(|app| app.port()).collect();
        let mut stops = Vec::new();
        let mut servers = Vec::new();
        for app in apps {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            servers.push(tokio::spawn(app.run_until_stopped(async move {
                let _ = stopped.await;
            })));
        }
        let spread = wait_partitions_owned(&ports).await;
        let count_query = format!("SELECT count(*) FROM \"{schema}\".consumed_message");
        let (before,): (i64,) = sqlx::query_as(&count_query).fetch_one(&pool).await?;
        let started = Instant::now();
        let counted = match spread {
            Ok(()) => wait_for_all(&pool, &schema, None, messages.len()).await,
            Err(error) => Err(error),
        };
        let seconds = started.elapsed().as_secs_f64();
        for stop in stops {
            let _ = stop.send(());
        }
        for server in servers {
            let _ = server.await;
        }
        counted?;
        let applied = messages.len() as f64 - before as f64;
        anyhow::Ok(ScalingRun {
            instances,
            partitions: SCALING_PARTITIONS,
            events: messages.len(),
            events_per_s: applied / seconds,
        })
    }
    .await;
    vhost.delete().await?;
    db.drop_database().await?;
    result
}

/// Waits until the instances on `ports` together own every partition (their `/health`).
async fn wait_partitions_owned(ports: &[u16]) -> Result<()> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let mut owned = 0;
        for port in ports {
            let body: serde_json::Value = http
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await?
                .json()
                .await?;
            if body["partitions"]["members"].as_u64() == Some(ports.len() as u64) {
                owned += body["partitions"]["owned"].as_array().map_or(0, Vec::len);
            }
        }
        if owned == usize::from(SCALING_PARTITIONS) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the instances did not share the partitions within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn straight_sql(messages: &[Message], batch: usize) -> Result<f64> {
    let db = TestDatabase::create("bench_shipment").await?;
    let vhost_free_config = shipment_config(HashMap::from([
        ("DATABASE_URL", db.url.clone()),
        ("RUST_LOG", "warn".to_owned()),
    ]));
    let result = async {
        let config = vhost_free_config?;
        let pool = shipment_service::db::prepare(&config.database, Duration::from_secs(10))
            .await
            .context("preparing the shipment database")?;
        let events: Vec<IncomingEvent> = messages
            .iter()
            .map(|message| {
                let id = message.id.to_string();
                shipment_service::event::parse(&message.body, Some(&id), &message.headers())
                    .map_err(|poison| anyhow::anyhow!("a backlog event is poison: {poison}"))
            })
            .collect::<Result<_>>()?;
        let started = Instant::now();
        for chunk in events.chunks(batch.max(1)) {
            shipment_service::apply::apply_batch(&pool, chunk)
                .await
                .context("applying a batch straight to PostgreSQL")?;
        }
        let seconds = started.elapsed().as_secs_f64();
        pool.close().await;
        anyhow::Ok(events.len() as f64 / seconds)
    }
    .await;
    db.drop_database().await?;
    result
}
