//! Settings of the service, read from environment variables with the original system's names.
//!
//! Read under the rules shared by the three binaries ([`service_kit::env`]): every variable is
//! validated at start and an invalid value is a [`ConfigError`] naming the variable; an empty
//! variable counts as unset; a value that is not UTF-8 is an error. Passwords live in
//! [`Secret`] whose `Debug` prints `***`, so a logged `Config` never reveals them.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use lapin::uri::AMQPUri;
use service_kit::amqp::AmqpSettings;
use service_kit::env::Vars;
use service_kit::logging::LogFilter;
use service_kit::postgres::{DatabaseDefaults, DatabaseSettings};

pub use service_kit::{ConfigError, Secret};

/// Every environment variable the binary reads (docker-compose may set only these), found by
/// running the reader itself: no second list to keep in step.
pub static ENV_VARS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| service_kit::env::names_read(Config::from_vars));

/// The database defaults: the original system's, and our name in `pg_stat_activity` (unless
/// the URL sets one).
pub const DATABASE_DEFAULTS: DatabaseDefaults = DatabaseDefaults {
    application_name: "shipment-service",
    database: "shipmentdb",
    schema: "shipments",
    pool_size: 5,
};

/// The whole configuration of one service instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    /// `DATABASE_URL` (query string kept) or the `DB_*` parts (the database is created at
    /// start if missing); `DB_SCHEMA` (default `shipments`), `DB_DEBUG`, `DB_POOL_SIZE`
    /// (default 5).
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub consumer: ConsumerSettings,
    /// How long start-up waits for PostgreSQL and RabbitMQ to become reachable.
    pub startup_patience: Duration,
    /// `RUST_LOG`, `info` when unset; checked here.
    pub log_filter: LogFilter,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`.
    pub traces: service_kit::traces::TraceSettings,
}

/// Where the HTTP API listens.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
}

/// The type of the work queue and its dead-letter queue (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// RabbitMQ's recommended durable queue: replicated once clustered, with the broker's own
    /// delivery limit as the last guard against a poison loop. 1.9 × the classic ceiling here.
    #[default]
    Quorum,
    /// A classic queue, declared with `x-queue-version: 2` (its faster storage).
    Classic,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl FromStr for QueueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!(
                "{other:?} is not a queue type: expected quorum or classic"
            )),
        }
    }
}

/// The most `SHIPMENT_PARTITIONS`: each partition is a quorum queue (a Raft group on every
/// node) and a connection per instance that owns it; past this, add clusters, not partitions.
pub const MAX_PARTITIONS: u16 = 256;

/// The default of `RABBITMQ_DELIVERY_LIMIT`.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

/// How to reach RabbitMQ and which topology to declare. `Debug` shows no password.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `AMQP_URL` or the `RABBITMQ_*` parts.
    pub connection: AmqpSettings,
    /// Exchange the relay publishes order events to (durable fanout).
    pub exchange: String,
    /// Queue this service consumes.
    pub queue: String,
    /// `RABBITMQ_QUEUE_TYPE`, for the queues this service creates; a queue that already exists
    /// is used as it is.
    pub queue_type: QueueType,
    /// `RABBITMQ_DELIVERY_LIMIT`: deliveries of one message after which a quorum queue moves it
    /// to the dead-letter exchange. The service dead-letters a failing message itself after
    /// `SHIPMENT_MAX_ATTEMPTS`; this catches a message that never gets that far (one that
    /// crashes the process, say). Counts every return to the queue, a lost connection included,
    /// so it is far above the service's own attempts.
    pub delivery_limit: u32,
    /// `SHIPMENT_PARTITIONS`: 1 consumes `queue`; more consume `queue.0` … `queue.{N-1}`, fed
    /// by a consistent-hash exchange on the routing key (see [`crate::partitions`]).
    pub partitions: u16,
    /// The partition a session consumes (set by the partition supervisor), `None` for `queue`.
    pub partition: Option<u16>,
}

impl BrokerSettings {
    /// Builds settings from an AMQP URL (tests use this with their own vhost).
    pub fn from_url(url: &str, queue: &str, exchange: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            connection: AmqpSettings::from_url("AMQP_URL", url)?,
            exchange: exchange.to_owned(),
            queue: queue.to_owned(),
            queue_type: QueueType::default(),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            partitions: 1,
            partition: None,
        })
    }

    /// The queue a session consumes: the partition's, or the single work queue.
    pub fn consumed_queue(&self) -> String {
        match self.partition {
            Some(partition) => self.partition_queue(partition),
            None => self.queue.clone(),
        }
    }

    /// Partition `partition`'s queue: `shipment.orders.3`.
    pub fn partition_queue(&self, partition: u16) -> String {
        format!("{}.{partition}", self.queue)
    }

    /// The consistent-hash exchange that spreads the order events over the partition queues.
    pub fn hash_exchange(&self) -> String {
        format!("{}.hash", self.queue)
    }

    /// The fanout exchange the instances announce themselves on (see [`crate::partitions`]).
    pub fn members_exchange(&self) -> String {
        format!("{}.members", self.queue)
    }

    /// These settings for a session that consumes `partition`.
    pub fn for_partition(&self, partition: u16) -> Self {
        Self {
            partition: Some(partition),
            ..self.clone()
        }
    }

    /// The connection URI, password included: pass it to lapin only.
    pub fn uri(&self) -> &AMQPUri {
        self.connection.uri()
    }

    /// `amqp://user:***@host:port/vhost`, for logs.
    pub fn redacted_url(&self) -> String {
        self.connection.display.clone()
    }

    /// The exchange poison messages are published to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.queue)
    }

    /// The queue that keeps poison messages for an operator.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }
}

/// The default of `RABBITMQ_PREFETCH`: four batches, so that while one batch is applied the
/// next ones are already here (a window of one batch would cost a broker round trip per batch).
pub const DEFAULT_PREFETCH: u16 = 2_000;

/// The largest `SHIPMENT_BATCH_SIZE` default: on a backlog a batch this size spreads the commit's
/// WAL flush and the statements' round trips over enough events that they no longer count.
pub const DEFAULT_BATCH_SIZE: u16 = 500;

/// The largest `SHIPMENT_BATCH_SIZE` accepted. A batch takes one advisory lock per order, and
/// PostgreSQL's shared lock table holds `max_locks_per_transaction` (64) × `max_connections`
/// (100) locks by default for every session together: a bigger batch buys nothing measurable
/// and risks "out of shared memory" beside other sessions.
pub const MAX_BATCH_SIZE: u16 = 1_000;

/// `SHIPMENT_BATCH_SIZE` when unset: a quarter of the prefetch window (so the next batches are
/// buffered while one is applied), at most [`DEFAULT_BATCH_SIZE`], at least 1.
pub fn default_batch_size(prefetch: u16) -> u16 {
    (prefetch / 4).clamp(1, DEFAULT_BATCH_SIZE)
}

/// How messages are consumed and retried.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Deliveries the broker may send ahead of our acks.
    pub prefetch: u16,
    /// Most deliveries applied in one transaction (and acked with one `basic.ack`); at most
    /// `prefetch`.
    pub batch_size: u16,
    /// Attempts of a message whose handling keeps failing before it goes to the dead-letter queue.
    pub max_attempts: u32,
    /// First pause between attempts; doubled each time up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    /// Fault injection, only with the `failpoints` feature (tests).
    #[cfg(feature = "failpoints")]
    pub hooks: TestHooks,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            prefetch: DEFAULT_PREFETCH,
            batch_size: default_batch_size(DEFAULT_PREFETCH),
            max_attempts: 5,
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(10),
            #[cfg(feature = "failpoints")]
            hooks: TestHooks::default(),
        }
    }
}

/// Fault injection for tests (feature `failpoints`, off by default).
#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// Closes the AMQP connection right after committing this event and before acking it, once:
    /// simulates a crash between commit and ack.
    pub drop_connection_after_commit_of: Option<uuid::Uuid>,
}

impl Config {
    /// Reads settings through `lookup`, a map in tests (the binary reads the process
    /// environment: `from_vars(&Vars::process())`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        service_kit::env::from_lookup(lookup, Self::from_vars)
    }

    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let server = ServerSettings {
            host: match vars.get("SERVER_HOST")? {
                None => IpAddr::V4(Ipv4Addr::LOCALHOST),
                Some(host) if host.trim() == "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                Some(host) => host.trim().parse().map_err(|_| {
                    ConfigError::new(
                        "SERVER_HOST",
                        format!("{host:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"),
                    )
                })?,
            },
            port: vars.listen_port_or("SERVER_PORT", 3001)?,
        };
        let database = DatabaseSettings::from_vars(vars, DATABASE_DEFAULTS)?;
        let connection = AmqpSettings::from_vars(vars)?;
        // Settings lapin cannot honour fail now, naming AMQP_URL, not at the first connection.
        connection.lapin_tls()?;
        let broker = BrokerSettings {
            connection,
            exchange: amqp_name(
                "RABBITMQ_EXCHANGE",
                vars.string_or("RABBITMQ_EXCHANGE", "order.events")?,
            )?,
            queue: amqp_name(
                "RABBITMQ_ORDER_QUEUE",
                vars.string_or("RABBITMQ_ORDER_QUEUE", "shipment.orders")?,
            )?,
            queue_type: vars.parse_or("RABBITMQ_QUEUE_TYPE", QueueType::default())?,
            delivery_limit: vars.number_in(
                "RABBITMQ_DELIVERY_LIMIT",
                DEFAULT_DELIVERY_LIMIT,
                1..=1_000_000,
            )?,
            partitions: vars.number_in("SHIPMENT_PARTITIONS", 1, 1..=MAX_PARTITIONS)?,
            partition: None,
        };
        // 0 would mean unlimited deliveries in flight.
        let prefetch = vars.number_in("RABBITMQ_PREFETCH", DEFAULT_PREFETCH, 1..=u16::MAX)?;
        let batch_size = vars.number_in(
            "SHIPMENT_BATCH_SIZE",
            default_batch_size(prefetch),
            1..=MAX_BATCH_SIZE,
        )?;
        if batch_size > prefetch {
            // A batch is made of deliveries in the window: it could never fill.
            return Err(ConfigError::new(
                "SHIPMENT_BATCH_SIZE",
                format!(
                    "{batch_size} is more than RABBITMQ_PREFETCH ({prefetch}): a batch only holds \
                     deliveries of the prefetch window (2 to 4 batches is a good window)"
                ),
            ));
        }
        let max_attempts = vars.number_in("SHIPMENT_MAX_ATTEMPTS", 5, 1..=u32::MAX)?;
        Ok(Self {
            server,
            database,
            broker,
            consumer: ConsumerSettings {
                prefetch,
                batch_size,
                max_attempts,
                ..ConsumerSettings::default()
            },
            startup_patience: Duration::from_secs(60),
            log_filter: LogFilter::from_vars(vars)?,
            traces: service_kit::traces::TraceSettings::from_vars(vars, "shipment-service")?,
        })
    }
}

/// An exchange or queue name: a non-empty AMQP short string.
fn amqp_name(variable: &str, name: String) -> Result<String, ConfigError> {
    // Derived names append ".dlx", ".dlq", ".members" or a partition number; keep room for
    // them within 255 bytes.
    if name.len() > 240 || name.starts_with("amq.") {
        return Err(ConfigError::new(
            variable,
            format!("{name:?}: names must be at most 240 bytes and not start with \"amq.\""),
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_original_system() {
        let config = config(&[]).unwrap();
        assert_eq!(config.server.port, 3001);
        assert_eq!(config.server.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(config.database.connection.database, "shipmentdb");
        assert_eq!(config.database.schema, "shipments");
        assert_eq!(config.broker.queue, "shipment.orders");
        assert_eq!(config.broker.exchange, "order.events");
        assert_eq!(config.broker.queue_type, QueueType::Quorum);
        assert_eq!(config.broker.delivery_limit, 20);
        assert_eq!(config.broker.dead_letter_queue(), "shipment.orders.dlq");
        assert_eq!(config.consumer.prefetch, 2_000);
        assert_eq!(config.consumer.batch_size, 500);
        assert_eq!(config.consumer.max_attempts, 5);
        assert_eq!(config.broker.uri().vhost, "/");
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (variable, value) in [
            ("SERVER_PORT", "http"),
            ("SERVER_PORT", "70000"),
            ("SERVER_HOST", "not a host"),
            ("DB_PORT", "-1"),
            // Any name PostgreSQL takes is fine (it is quoted); one longer than 63 bytes is not.
            ("DB_NAME", &"d".repeat(64)),
            ("DB_SCHEMA", "1schema"),
            // search_path would fold it to "shipments", another schema than the one created.
            ("DB_SCHEMA", "Shipments"),
            ("DB_POOL_SIZE", "0"),
            ("DB_DEBUG", "maybe"),
            ("DATABASE_URL", "mysql://x"),
            ("RABBITMQ_PORT", "five"),
            ("AMQP_URL", "http://user:hunter2@x"),
            ("AMQP_URL", "amqp://user:hunter2%zz@x:5672/%2f"),
            ("AMQP_URL", "amqp://user:hunter2@x:5672/vhost%2"),
            ("RABBITMQ_QUEUE_TYPE", "stream"),
            ("RABBITMQ_DELIVERY_LIMIT", "0"),
            ("RABBITMQ_PREFETCH", "0"),
            ("RABBITMQ_PREFETCH", "100000"),
            ("SHIPMENT_BATCH_SIZE", "0"),
            ("SHIPMENT_BATCH_SIZE", "1001"),
            ("SHIPMENT_BATCH_SIZE", "ten"),
            // More than the default prefetch window (2,000) is refused by the range already;
            // more than a set window is refused below.
            ("SHIPMENT_MAX_ATTEMPTS", "0"),
            ("SHIPMENT_MAX_ATTEMPTS", "many"),
            ("RABBITMQ_ORDER_QUEUE", "amq.reserved"),
        ] {
            let error = config(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{variable}={value}: {error}");
            assert!(error.to_string().contains(variable), "{error}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn the_batch_size_follows_the_prefetch_window_unless_set() {
        let batch = |vars: &[(&str, &str)]| {
            let consumer = config(vars).unwrap().consumer;
            (consumer.prefetch, consumer.batch_size)
        };
        assert_eq!(batch(&[]), (2_000, 500));
        assert_eq!(batch(&[("RABBITMQ_PREFETCH", "50")]), (50, 12));
        assert_eq!(batch(&[("RABBITMQ_PREFETCH", "3")]), (3, 1));
        assert_eq!(batch(&[("RABBITMQ_PREFETCH", "60000")]), (60_000, 500));
        assert_eq!(
            batch(&[("RABBITMQ_PREFETCH", "400"), ("SHIPMENT_BATCH_SIZE", "400")]),
            (400, 400)
        );
        assert_eq!(batch(&[("SHIPMENT_BATCH_SIZE", "1000")]), (2_000, 1_000));
        // A batch bigger than the window could never fill: refused, naming the batch size.
        let error =
            config(&[("RABBITMQ_PREFETCH", "100"), ("SHIPMENT_BATCH_SIZE", "101")]).unwrap_err();
        assert_eq!(error.variable, "SHIPMENT_BATCH_SIZE");
        assert!(
            error.to_string().contains("RABBITMQ_PREFETCH (100)"),
            "{error}"
        );
    }

    #[test]
    fn database_url_replaces_the_parts_and_hides_the_password() {
        let config = config(&[
            (
                "DATABASE_URL",
                "postgres://app:s%40cret@db.example:6543/shipdb",
            ),
            ("DB_SCHEMA", "ship"),
        ])
        .unwrap();
        assert_eq!(
            config.database.describe(),
            "db.example:6543/shipdb as user app"
        );
        assert_eq!(config.database.connection.password.expose(), "s@cret");
        assert_eq!(config.database.schema, "ship");
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("s@cret") && !printed.contains("s%40cret"),
            "{printed}"
        );
    }

    #[test]
    fn amqp_parts_and_url() {
        let from_parts = config(&[
            ("RABBITMQ_HOST", "mq"),
            ("RABBITMQ_PORT", "5673"),
            ("RABBITMQ_USER", "svc"),
            ("RABBITMQ_PASSWORD", "hunter2"),
            ("RABBITMQ_VHOST", "prod"),
            ("RABBITMQ_QUEUE_TYPE", "classic"),
            ("RABBITMQ_DELIVERY_LIMIT", "7"),
        ])
        .unwrap();
        // One redacted form for the three binaries (service_kit::amqp): `user:***@`.
        assert_eq!(
            from_parts.broker.redacted_url(),
            "amqp://svc:***@mq:5673/prod"
        );
        assert_eq!(from_parts.broker.queue_type, QueueType::Classic);
        assert_eq!(from_parts.broker.delivery_limit, 7);
        assert!(!format!("{from_parts:?}").contains("hunter2"));
        let from_url = config(&[("AMQP_URL", "amqp://u:hunter2@h:1234/%2f")]).unwrap();
        assert_eq!(from_url.broker.uri().authority.userinfo.password, "hunter2");
        assert_eq!(from_url.broker.redacted_url(), "amqp://u:***@h:1234/%2F");
        assert!(!format!("{from_url:?}").contains("hunter2"));
    }

    #[test]
    fn the_shared_rules_apply() {
        for (text, expected) in [("on", true), ("OFF", false), ("yes", true), ("0", false)] {
            assert_eq!(
                config(&[("DB_DEBUG", text)]).unwrap().database.debug,
                expected,
                "{text}"
            );
        }
        // A variable that is not UTF-8 was silently unset: now an error naming it.
        let lookup = |name: &str| match name {
            "RABBITMQ_PASSWORD" => Err(std::env::VarError::NotUnicode("x".into())),
            _ => Err(std::env::VarError::NotPresent),
        };
        let error = Config::from_vars(&Vars::new(&lookup)).unwrap_err();
        assert_eq!(error.variable, "RABBITMQ_PASSWORD");
        // A bad RUST_LOG stops the service instead of falling back to info.
        let error = config(&[("RUST_LOG", "info,[[[")]).unwrap_err();
        assert_eq!(error.variable, "RUST_LOG");
        assert_eq!(config(&[]).unwrap().log_filter.as_str(), "info");
    }

    #[test]
    fn the_database_url_keeps_its_query_string() {
        let parsed = config(&[(
            "DATABASE_URL",
            "postgres://u:p%3Aw@h/db?sslmode=disable&application_name=ops",
        )])
        .unwrap();
        assert_eq!(parsed.database.connection.password.expose(), "p:w");
        let options = parsed.database.connect_options();
        assert_eq!(options.get_application_name(), Some("ops"));
        assert!(matches!(
            options.get_ssl_mode(),
            sqlx::postgres::PgSslMode::Disable
        ));
        let no_password = config(&[("DATABASE_URL", "postgres://u@h/db")]).unwrap();
        assert_eq!(no_password.database.connection.password.expose(), "");
        // A malformed %-escape in the password is an error naming the variable.
        let error = config(&[("DATABASE_URL", "postgres://u:a%2@h/db")]).unwrap_err();
        assert_eq!(error.variable, "DATABASE_URL");
    }
}
