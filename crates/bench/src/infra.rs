//! The resources of one measurement: a database of its own with the order-service schema,
//! publication and slots, and a RabbitMQ virtual host of its own with the original topology
//! (fanout exchange `order.events` → durable queue `shipment.orders`), the queue of the type
//! under test ([`QueueType`]: the broker ceiling and the drain declare it with the same
//! arguments).
//!
//! Names start with `t_` (through `test-support`), so `cleanup-test-resources` removes whatever
//! an interrupted run leaves behind; a finished run drops its own.

use std::time::Duration;

use anyhow::{Context, Result};
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use test_support::{TestDatabase, TestVhost};

/// The schema the order-service uses by default (`DB_SCHEMA`).
pub const ORDER_SCHEMA: &str = "orders";
/// Its outbox table.
pub const OUTBOX_TABLE: &str = "orders.outbox_event";
/// The exchange the outbox router derives from `aggregate_type = 'order'`.
pub const EXCHANGE: &str = "order.events";
/// The queue of the original system.
pub const QUEUE: &str = "shipment.orders";
/// The publication every relay of one database shares.
pub const PUBLICATION: &str = "bench_publication";

/// The RabbitMQ queue types measured (`--queue-types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueType {
    /// Classic queue, declared with `x-queue-version: 2` (RabbitMQ's newer classic storage).
    Classic,
    /// Quorum queue (`x-queue-type: quorum`; one node here).
    Quorum,
    /// Stream (`x-queue-type: stream`), published to over AMQP 0-9-1 without a consumer.
    /// Broker ceiling only: the drain reads a queue's depth, which a stream does not report.
    Stream,
}

/// A value of a queue argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueArgument {
    Int(i32),
    Text(&'static str),
}

impl QueueType {
    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    /// Its name with the arguments that make it, for the tables.
    pub fn description(self) -> &'static str {
        match self {
            QueueType::Classic => "classic (x-queue-version 2)",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream (AMQP 0-9-1)",
        }
    }

    /// The `queue.declare` arguments of `shipment.orders` of this type: the broker ceiling
    /// (amqprs) and the drain (lapin) both declare the queue with exactly these.
    pub fn arguments(self) -> &'static [(&'static str, QueueArgument)] {
        match self {
            QueueType::Classic => &[("x-queue-version", QueueArgument::Int(2))],
            QueueType::Quorum => &[("x-queue-type", QueueArgument::Text("quorum"))],
            QueueType::Stream => &[("x-queue-type", QueueArgument::Text("stream"))],
        }
    }

    /// Whether the drain can run into it (its depth is read with a passive `queue.declare`).
    pub fn drainable(self) -> bool {
        !matches!(self, QueueType::Stream)
    }

    /// [`QueueType::arguments`] as lapin's table.
    pub fn lapin_arguments(self) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in self.arguments() {
            let value = match value {
                QueueArgument::Int(number) => AMQPValue::LongInt(*number),
                QueueArgument::Text(text) => {
                    AMQPValue::LongString(LongString::from(text.as_bytes()))
                }
            };
            table.insert((*name).into(), value);
        }
        table
    }
}

/// The relay's wire formats measured (`--formats`; the relay's `RELAY_WIRE_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireFormat {
    /// The original system's JSON body with `id`/`eventType` headers.
    Plain,
    /// Debezium's outbox event router envelope.
    Debezium,
}

impl WireFormat {
    /// The value of `RELAY_WIRE_FORMAT`.
    pub fn name(self) -> &'static str {
        match self {
            WireFormat::Plain => "plain",
            WireFormat::Debezium => "debezium",
        }
    }

    /// The same format in the `wire-format` crate (the relay's encoder).
    pub fn to_wire(self) -> wire_format::WireFormat {
        match self {
            WireFormat::Plain => wire_format::WireFormat::Plain,
            WireFormat::Debezium => wire_format::WireFormat::Debezium,
        }
    }
}

/// A database of its own with the order-service tables.
#[derive(Debug)]
pub struct BenchDb {
    database: TestDatabase,
    /// Connections with `search_path = orders`, as the order-service has them.
    pub orders: PgPool,
}

impl BenchDb {
    /// Creates the database and applies the order-service migrations; `connections` bounds the
    /// pool of [`BenchDb::orders`].
    pub async fn create(prefix: &str, connections: u32) -> Result<Self> {
        let database = TestDatabase::create(prefix)
            .await
            .context("creating a benchmark database")?;
        let options = database
            .options
            .clone()
            .options([("search_path", ORDER_SCHEMA)]);
        let orders = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options)
            .await
            .context("connecting to the benchmark database")?;
        order_service::database::migrate(&orders, ORDER_SCHEMA)
            .await
            .context("applying the order-service migrations")?;
        Ok(Self { database, orders })
    }

    pub fn name(&self) -> &str {
        &self.database.name
    }

    /// Connection string as the superuser (holds the password: never print it).
    pub fn url(&self) -> &str {
        &self.database.url
    }

    /// A pool without `search_path`, for administrative statements.
    pub fn admin(&self) -> &PgPool {
        &self.database.pool
    }

    /// Creates [`PUBLICATION`] for the outbox table.
    pub async fn create_publication(&self) -> Result<()> {
        sqlx::query(&format!(
            "CREATE PUBLICATION {PUBLICATION} FOR TABLE {OUTBOX_TABLE}"
        ))
        .execute(self.admin())
        .await
        .context("creating the publication")?;
        Ok(())
    }

    /// Creates a `pgoutput` slot now, so that it keeps every change committed from here on.
    pub async fn create_slot(&self, slot: &str) -> Result<()> {
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(slot)
            .execute(self.admin())
            .await
            .with_context(|| format!("creating replication slot {slot}"))?;
        Ok(())
    }

    /// Drops an inactive slot (dropping the database drops the rest).
    pub async fn drop_slot(&self, slot: &str) -> Result<()> {
        sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND NOT active",
        )
        .bind(slot)
        .execute(self.admin())
        .await
        .with_context(|| format!("dropping replication slot {slot}"))?;
        Ok(())
    }

    /// WAL bytes between the server's current position and what `slot` has confirmed.
    pub async fn slot_lag_bytes(&self, slot: &str) -> Result<Option<i64>> {
        let lag: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 \
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(slot)
        .fetch_optional(self.admin())
        .await?;
        Ok(lag.and_then(|(lag,)| lag))
    }

    /// Rows in the outbox table (the backlog of a polling relay).
    pub async fn outbox_rows(&self) -> Result<i64> {
        let (rows,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {OUTBOX_TABLE}"))
            .fetch_one(self.admin())
            .await?;
        Ok(rows)
    }

    /// Forces a checkpoint, so that none runs in the middle of the next measurement.
    pub async fn checkpoint(&self) -> Result<()> {
        sqlx::query("CHECKPOINT").execute(self.admin()).await?;
        Ok(())
    }

    /// The index the polling relay wants (it warns without one): its `ORDER BY "timestamp", id`
    /// then reads the batch from the index instead of sorting the whole table on every poll.
    /// Created only for the polling relay's runs, its best setting.
    pub async fn create_polling_index(&self) -> Result<()> {
        sqlx::query(&format!(
            "CREATE INDEX IF NOT EXISTS outbox_event_polling_order ON {OUTBOX_TABLE} (\"timestamp\", id)"
        ))
        .execute(self.admin())
        .await
        .context("creating the polling relay's index")?;
        Ok(())
    }

    /// Drops the database with its slots.
    pub async fn drop(self) -> Result<()> {
        self.orders.close().await;
        self.database.drop_database().await
    }
}

/// A RabbitMQ virtual host of its own, with the original topology declared.
#[derive(Debug)]
pub struct BenchVhost {
    vhost: TestVhost,
    connection: Connection,
    channel: Channel,
}

impl BenchVhost {
    /// Creates the vhost and declares `order.events` (durable fanout, as the relay declares it)
    /// bound to the durable queue `shipment.orders` as the original system declares it (no
    /// arguments: the broker's default classic queue).
    pub async fn create(prefix: &str) -> Result<Self> {
        Self::create_with(prefix, None).await
    }

    /// [`BenchVhost::create`] with `shipment.orders` declared as `queue_type`
    /// ([`QueueType::arguments`]); `None`: no arguments, as [`BenchVhost::create`].
    pub async fn create_with(prefix: &str, queue_type: Option<QueueType>) -> Result<Self> {
        let vhost = Self::bare(prefix).await?;
        let connection = Connection::connect(&vhost.amqp_url, ConnectionProperties::default())
            .await
            .context("connecting to RabbitMQ")?;
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("declaring the exchange")?;
        channel
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                queue_type.map_or_else(FieldTable::default, QueueType::lapin_arguments),
            )
            .await
            .with_context(|| {
                format!(
                    "declaring the queue ({})",
                    queue_type.map_or("no arguments", QueueType::description)
                )
            })?;
        channel
            .queue_bind(
                QUEUE.into(),
                EXCHANGE.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding the queue")?;
        Ok(Self {
            vhost,
            connection,
            channel,
        })
    }

    /// Creates an empty vhost (the shipment-service declares its own topology).
    pub async fn bare(prefix: &str) -> Result<TestVhost> {
        TestVhost::create(prefix)
            .await
            .context("creating a RabbitMQ virtual host")
    }

    /// AMQP URL of this vhost (guest credentials of the local broker).
    pub fn amqp_url(&self) -> &str {
        &self.vhost.amqp_url
    }

    /// Messages in `shipment.orders` right now, straight from the broker.
    pub async fn queue_depth(&self) -> Result<u32> {
        let queue = self
            .channel
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("reading the queue depth")?;
        Ok(queue.message_count())
    }

    /// One message of `shipment.orders` (`basic.get`, left unacknowledged: it goes back when
    /// the vhost is deleted), with its properties; `None` when the queue is empty.
    pub async fn peek_message(&self) -> Result<Option<(lapin::BasicProperties, Vec<u8>)>> {
        let message = self
            .channel
            .basic_get(QUEUE.into(), BasicGetOptions { no_ack: false })
            .await
            .context("reading one message back (basic.get)")?;
        Ok(message.map(|message| {
            (
                message.delivery.properties.clone(),
                message.delivery.data.clone(),
            )
        }))
    }

    /// Empties `shipment.orders`.
    pub async fn purge(&self) -> Result<()> {
        self.channel
            .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
            .await
            .context("purging the queue")?;
        Ok(())
    }

    /// Closes the connection and deletes the vhost.
    pub async fn delete(self) -> Result<()> {
        let _ = self.connection.close(200, "done".into()).await;
        self.vhost.delete().await
    }
}

/// A TCP port free right now on 127.0.0.1 (for a child process's HTTP listener).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(listener.local_addr()?.port())
}
