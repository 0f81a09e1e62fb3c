//! Settings of the service, read from environment variables with the original system's names.
//!
//! Read under the rules shared by the three binaries ([`service_kit::env`]): every variable is
//! validated at start and an invalid value is a [`ConfigError`] naming the variable; an empty
//! variable counts as unset; a value that is not UTF-8 is an error. Passwords live in
//! [`Secret`] whose `Debug` prints `***`, so a logged `Config` never reveals them.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use lapin::uri::AMQPUri;
use service_kit::amqp::AmqpSettings;
use service_kit::env::Vars;
use service_kit::logging::LogFilter;
use service_kit::postgres::PgSettings;
use sqlx::postgres::PgConnectOptions;

pub use service_kit::{ConfigError, Secret};

/// Every environment variable the binary reads (docker-compose may set only these): its own
/// and those of the kit's PostgreSQL, RabbitMQ and log settings.
pub const ENV_VARS: &[&str] = &service_kit::env::concat::<22>(&[
    &[
        "SERVER_PORT",
        "SERVER_HOST",
        "DB_SCHEMA",
        "DB_DEBUG",
        "RABBITMQ_ORDER_QUEUE",
        "RABBITMQ_EXCHANGE",
        "RABBITMQ_QUEUE_TYPE",
        "RABBITMQ_PREFETCH",
        "SHIPMENT_MAX_ATTEMPTS",
    ],
    service_kit::postgres::ENV_VARS,
    service_kit::amqp::ENV_VARS,
    service_kit::logging::ENV_VARS,
]);

/// The application name our sessions show in `pg_stat_activity` (unless the URL sets one).
pub const APPLICATION_NAME: &str = "shipment-service";

/// The whole configuration of one service instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub consumer: ConsumerSettings,
    /// How long start-up waits for PostgreSQL and RabbitMQ to become reachable.
    pub startup_patience: Duration,
    /// `RUST_LOG`, `info` when unset; checked here.
    pub log_filter: LogFilter,
}

/// Where the HTTP API listens.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
}

/// How to reach PostgreSQL and which schema to use.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL` (query string kept) or the `DB_*` parts; the database is created at start
    /// if missing.
    pub connection: PgSettings,
    /// The schema of every table (set as `search_path`), created at start if missing.
    pub schema: String,
    /// Log every SQL statement with its duration.
    pub debug: bool,
}

/// Classic or quorum queue (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
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
                "{other:?} is not a queue type: expected classic or quorum"
            )),
        }
    }
}

/// How to reach RabbitMQ and which topology to declare. `Debug` shows no password.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `AMQP_URL` or the `RABBITMQ_*` parts.
    pub connection: AmqpSettings,
    /// Exchange the relay publishes order events to (durable fanout).
    pub exchange: String,
    /// Queue this service consumes.
    pub queue: String,
    pub queue_type: QueueType,
}

impl BrokerSettings {
    /// Builds settings from an AMQP URL (tests use this with their own vhost).
    pub fn from_url(url: &str, queue: &str, exchange: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            connection: AmqpSettings::from_url("AMQP_URL", url)?,
            exchange: exchange.to_owned(),
            queue: queue.to_owned(),
            queue_type: QueueType::Classic,
        })
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

/// How messages are consumed and retried.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Deliveries the broker may send ahead of our acks.
    pub prefetch: u16,
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
            prefetch: 50,
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

impl DatabaseSettings {
    /// The pool's sessions: `search_path` = `DB_SCHEMA`, `TimeZone` UTC (the original's
    /// `timestamp` columns hold UTC wall time), statements logged as `DB_DEBUG` asks.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connection
            .session_options(APPLICATION_NAME, &self.schema, self.debug)
    }
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
        let connection = PgSettings::from_vars(vars, "shipmentdb")?;
        // Created with a quoted identifier: restricted to a safe set.
        let name_source = if vars.get("DATABASE_URL")?.is_some() {
            "DATABASE_URL"
        } else {
            "DB_NAME"
        };
        identifier(name_source, &connection.database)?;
        let schema = vars.string_or("DB_SCHEMA", "shipments")?;
        identifier("DB_SCHEMA", &schema)?;
        let database = DatabaseSettings {
            connection,
            schema,
            debug: vars.bool_or("DB_DEBUG", false)?,
        };
        let broker = BrokerSettings {
            connection: AmqpSettings::from_vars(vars)?,
            exchange: amqp_name(
                "RABBITMQ_EXCHANGE",
                vars.string_or("RABBITMQ_EXCHANGE", "order.events")?,
            )?,
            queue: amqp_name(
                "RABBITMQ_ORDER_QUEUE",
                vars.string_or("RABBITMQ_ORDER_QUEUE", "shipment.orders")?,
            )?,
            queue_type: vars.parse_or("RABBITMQ_QUEUE_TYPE", QueueType::Classic)?,
        };
        // 0 would mean unlimited deliveries in flight.
        let prefetch = vars.number_in("RABBITMQ_PREFETCH", 50, 1..=u16::MAX)?;
        let max_attempts = vars.number_in("SHIPMENT_MAX_ATTEMPTS", 5, 1..=u32::MAX)?;
        Ok(Self {
            server,
            database,
            broker,
            consumer: ConsumerSettings {
                prefetch,
                max_attempts,
                ..ConsumerSettings::default()
            },
            startup_patience: Duration::from_secs(60),
            log_filter: LogFilter::from_vars(vars)?,
        })
    }
}

/// A database or schema name: created with a quoted identifier, so restricted to a safe set.
fn identifier(variable: &str, name: &str) -> Result<(), ConfigError> {
    let valid_start = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_');
    let valid_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_start || !valid_rest || name.len() > 63 {
        return Err(ConfigError::new(
            variable,
            format!(
                "{name:?} is not a valid name: use letters, digits, '_' or '-', start with a letter or '_', at most 63 characters"
            ),
        ));
    }
    Ok(())
}

/// An exchange or queue name: a non-empty AMQP short string.
fn amqp_name(variable: &str, name: String) -> Result<String, ConfigError> {
    // The dead-letter names append ".dlx"/".dlq"; keep room for them within 255 bytes.
    if name.len() > 250 || name.starts_with("amq.") {
        return Err(ConfigError::new(
            variable,
            format!("{name:?}: names must be at most 250 bytes and not start with \"amq.\""),
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
        assert_eq!(config.broker.queue_type, QueueType::Classic);
        assert_eq!(config.broker.dead_letter_queue(), "shipment.orders.dlq");
        assert_eq!(config.consumer.prefetch, 50);
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
            ("DB_NAME", "bad\"name"),
            ("DB_SCHEMA", "1schema"),
            ("DB_DEBUG", "maybe"),
            ("DATABASE_URL", "mysql://x"),
            ("RABBITMQ_PORT", "five"),
            ("AMQP_URL", "http://user:hunter2@x"),
            ("AMQP_URL", "amqp://user:hunter2%zz@x:5672/%2f"),
            ("AMQP_URL", "amqp://user:hunter2@x:5672/vhost%2"),
            ("RABBITMQ_QUEUE_TYPE", "stream"),
            ("RABBITMQ_PREFETCH", "0"),
            ("RABBITMQ_PREFETCH", "100000"),
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
    fn database_url_replaces_the_parts_and_hides_the_password() {
        let config = config(&[
            (
                "DATABASE_URL",
                "postgres://app:s%40cret@db.example:6543/shipdb",
            ),
            ("DB_SCHEMA", "ship"),
        ])
        .unwrap();
        assert_eq!(config.database.connection.host, "db.example");
        assert_eq!(config.database.connection.port, 6543);
        assert_eq!(config.database.connection.user, "app");
        assert_eq!(config.database.connection.password.expose(), "s@cret");
        assert_eq!(config.database.connection.database, "shipdb");
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
            ("RABBITMQ_QUEUE_TYPE", "quorum"),
        ])
        .unwrap();
        // One redacted form for the three binaries (service_kit::amqp): `user:***@`.
        assert_eq!(
            from_parts.broker.redacted_url(),
            "amqp://svc:***@mq:5673/prod"
        );
        assert_eq!(from_parts.broker.queue_type, QueueType::Quorum);
        assert!(!format!("{from_parts:?}").contains("hunter2"));
        let from_url = config(&[("AMQP_URL", "amqp://u:hunter2@h:1234/%2f")]).unwrap();
        assert_eq!(from_url.broker.uri().authority.userinfo.password, "hunter2");
        assert_eq!(from_url.broker.redacted_url(), "amqp://u:***@h:1234/%2F");
        assert!(!format!("{from_url:?}").contains("hunter2"));
    }

    #[test]
    fn every_variable_read_is_listed() {
        let read = std::cell::RefCell::new(Vec::new());
        let _ = Config::from_lookup(|name| {
            read.borrow_mut().push(name.to_owned());
            None
        });
        let _ = Config::from_lookup(|name| {
            read.borrow_mut().push(name.to_owned());
            (name == "DATABASE_URL" || name == "AMQP_URL").then(|| match name {
                "DATABASE_URL" => "postgres://u:p@h/db".to_owned(),
                _ => "amqp://u:p@h/v".to_owned(),
            })
        });
        for name in read.into_inner() {
            assert!(ENV_VARS.contains(&name.as_str()), "{name} not in ENV_VARS");
        }
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
