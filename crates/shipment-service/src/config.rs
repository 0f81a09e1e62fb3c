//! Settings of the service, read from environment variables with the original system's names.
//!
//! Every variable is validated at start; an invalid value is a [`ConfigError`] naming the
//! variable. Passwords live in [`Secret`] whose `Debug` prints `***`, so a logged `Config` never
//! reveals them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPScheme, AMQPUri, AMQPUserInfo};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

/// Every environment variable the binary reads (docker-compose may set only these).
pub const ENV_VARS: &[&str] = &[
    "SERVER_PORT",
    "SERVER_HOST",
    "DB_HOST",
    "DB_PORT",
    "DB_USER",
    "DB_PASSWORD",
    "DB_NAME",
    "DB_SCHEMA",
    "DB_DEBUG",
    "DATABASE_URL",
    "RABBITMQ_HOST",
    "RABBITMQ_PORT",
    "RABBITMQ_USER",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_VHOST",
    "AMQP_URL",
    "RABBITMQ_ORDER_QUEUE",
    "RABBITMQ_EXCHANGE",
    "RABBITMQ_QUEUE_TYPE",
    "RABBITMQ_PREFETCH",
    "SHIPMENT_MAX_ATTEMPTS",
    "RUST_LOG",
];

/// A setting that cannot be used; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            reason: reason.into(),
        }
    }
}

pub use service_kit::Secret;

/// The whole configuration of one service instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub consumer: ConsumerSettings,
    /// How long start-up waits for PostgreSQL and RabbitMQ to become reachable.
    pub startup_patience: Duration,
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
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    /// The database; created at start if missing.
    pub name: String,
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

/// How to reach RabbitMQ and which topology to declare.
#[derive(Clone)]
pub struct BrokerSettings {
    uri: AMQPUri,
    /// Exchange the relay publishes order events to (durable fanout).
    pub exchange: String,
    /// Queue this service consumes.
    pub queue: String,
    pub queue_type: QueueType,
}

impl BrokerSettings {
    /// Builds settings from an AMQP URL (tests use this with their own vhost).
    pub fn from_url(url: &str, queue: &str, exchange: &str) -> Result<Self, ConfigError> {
        let uri = parse_amqp_url(url)?;
        Ok(Self {
            uri,
            exchange: exchange.to_owned(),
            queue: queue.to_owned(),
            queue_type: QueueType::Classic,
        })
    }

    /// The connection URI, password included: pass it to lapin only.
    pub fn uri(&self) -> &AMQPUri {
        &self.uri
    }

    /// `amqp://user@host:port/vhost`, without the password, for logs.
    pub fn redacted_url(&self) -> String {
        format!(
            "{}://{}@{}:{}/{}",
            self.uri.scheme,
            self.uri.authority.userinfo.username,
            self.uri.authority.host,
            self.uri.authority.port,
            self.uri.vhost.replace('%', "%25").replace('/', "%2f")
        )
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

impl fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("url", &self.redacted_url())
            .field("exchange", &self.exchange)
            .field("queue", &self.queue)
            .field("queue_type", &self.queue_type)
            .finish()
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
    /// Test hooks; always `Default` in production.
    #[doc(hidden)]
    pub hooks: TestHooks,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            prefetch: 50,
            max_attempts: 5,
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(10),
            hooks: TestHooks::default(),
        }
    }
}

/// Fault injection for tests.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// Closes the AMQP connection right after committing this event and before acking it, once:
    /// simulates a crash between commit and ack.
    pub drop_connection_after_commit_of: Option<uuid::Uuid>,
}

impl DatabaseSettings {
    /// Connection options for database `name`.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connect_options_for(&self.name)
    }

    /// Connection options for another database of the same server (`postgres`, to create ours).
    pub fn connect_options_for(&self, database: &str) -> PgConnectOptions {
        let options = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(self.password.expose())
            .database(database)
            .application_name("shipment-service");
        if self.debug {
            // sqlx takes a `log::LevelFilter`; parsing names it without a direct `log` dependency.
            match "info".parse() {
                Ok(level) => options.log_statements(level),
                Err(_) => options,
            }
        } else {
            options.disable_statement_logging()
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|value| !value.is_empty());
        let server = ServerSettings {
            host: match get("SERVER_HOST") {
                None => IpAddr::V4(Ipv4Addr::LOCALHOST),
                Some(host) if host == "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                Some(host) => host.parse().map_err(|_| {
                    ConfigError::new(
                        "SERVER_HOST",
                        format!("{host:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"),
                    )
                })?,
            },
            port: parse_or("SERVER_PORT", get("SERVER_PORT"), 3001u16)?,
        };
        let database = match get("DATABASE_URL") {
            Some(url) => database_from_url(&url, get("DB_SCHEMA"), get("DB_DEBUG"))?,
            None => DatabaseSettings {
                host: get("DB_HOST").unwrap_or_else(|| "127.0.0.1".to_owned()),
                port: parse_or("DB_PORT", get("DB_PORT"), 5432u16)?,
                user: get("DB_USER").unwrap_or_else(|| "postgres".to_owned()),
                password: Secret::new(get("DB_PASSWORD").unwrap_or_else(|| "postgres".to_owned())),
                name: identifier("DB_NAME", get("DB_NAME"), "shipmentdb")?,
                schema: identifier("DB_SCHEMA", get("DB_SCHEMA"), "shipments")?,
                debug: parse_bool("DB_DEBUG", get("DB_DEBUG"))?,
            },
        };
        let uri = match get("AMQP_URL") {
            Some(url) => parse_amqp_url(&url)?,
            None => AMQPUri {
                scheme: AMQPScheme::AMQP,
                authority: AMQPAuthority {
                    userinfo: AMQPUserInfo {
                        username: get("RABBITMQ_USER").unwrap_or_else(|| "guest".to_owned()),
                        password: get("RABBITMQ_PASSWORD").unwrap_or_else(|| "guest".to_owned()),
                    },
                    host: get("RABBITMQ_HOST").unwrap_or_else(|| "127.0.0.1".to_owned()),
                    port: parse_or("RABBITMQ_PORT", get("RABBITMQ_PORT"), 5672u16)?,
                },
                vhost: get("RABBITMQ_VHOST").unwrap_or_else(|| "/".to_owned()),
                query: Default::default(),
            },
        };
        let broker = BrokerSettings {
            uri,
            exchange: amqp_name(
                "RABBITMQ_EXCHANGE",
                get("RABBITMQ_EXCHANGE"),
                "order.events",
            )?,
            queue: amqp_name(
                "RABBITMQ_ORDER_QUEUE",
                get("RABBITMQ_ORDER_QUEUE"),
                "shipment.orders",
            )?,
            queue_type: parse_or(
                "RABBITMQ_QUEUE_TYPE",
                get("RABBITMQ_QUEUE_TYPE"),
                QueueType::Classic,
            )?,
        };
        let prefetch: u16 = parse_or("RABBITMQ_PREFETCH", get("RABBITMQ_PREFETCH"), 50u16)?;
        if prefetch == 0 {
            return Err(ConfigError::new(
                "RABBITMQ_PREFETCH",
                "0 would mean unlimited deliveries in flight: use 1 to 65535",
            ));
        }
        let max_attempts: u32 =
            parse_or("SHIPMENT_MAX_ATTEMPTS", get("SHIPMENT_MAX_ATTEMPTS"), 5u32)?;
        if max_attempts == 0 {
            return Err(ConfigError::new(
                "SHIPMENT_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
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
        })
    }
}

fn parse_or<T>(variable: &'static str, value: Option<String>, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match value {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|error| ConfigError::new(variable, format!("{text:?}: {error}"))),
    }
}

fn parse_bool(variable: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(ConfigError::new(
            variable,
            format!("{other:?} is not a boolean: expected true or false"),
        )),
    }
}

/// A database or schema name: created with a quoted identifier, so restricted to a safe set.
fn identifier(
    variable: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let name = value.unwrap_or_else(|| default.to_owned());
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
    Ok(name)
}

/// An exchange or queue name: a non-empty AMQP short string.
fn amqp_name(
    variable: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let name = value.unwrap_or_else(|| default.to_owned());
    // The dead-letter names append ".dlx"/".dlq"; keep room for them within 255 bytes.
    if name.len() > 250 || name.starts_with("amq.") {
        return Err(ConfigError::new(
            variable,
            format!("{name:?}: names must be at most 250 bytes and not start with \"amq.\""),
        ));
    }
    Ok(name)
}

fn parse_amqp_url(url: &str) -> Result<AMQPUri, ConfigError> {
    // The AMQP URI parser passes a malformed %-escape through as text, which would then fail
    // later as a wrong password or an unknown vhost.
    if !percent_escapes_are_valid(url) {
        return Err(ConfigError::new(
            "AMQP_URL",
            "has an invalid %-escape (a % must be followed by two hex digits)",
        ));
    }
    // The parser's message may quote the URL, password included: keep only a generic reason.
    url.parse::<AMQPUri>().map_err(|_| {
        ConfigError::new(
            "AMQP_URL",
            "not a valid AMQP URL (expected amqp://user:password@host:port/vhost)",
        )
    })
}

fn percent_escapes_are_valid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(index, &byte)| {
        byte != b'%'
            || bytes
                .get(index + 1..index + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

fn database_from_url(
    url: &str,
    schema: Option<String>,
    debug: Option<String>,
) -> Result<DatabaseSettings, ConfigError> {
    let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let parsed = if scheme_ok { url.parse().ok() } else { None };
    let options: PgConnectOptions = parsed.ok_or_else(|| {
        ConfigError::new(
            "DATABASE_URL",
            "not a valid PostgreSQL URL (expected postgres://user:password@host:port/database)",
        )
    })?;
    let password = password_of_url(url);
    Ok(DatabaseSettings {
        host: options.get_host().to_owned(),
        port: options.get_port(),
        user: options.get_username().to_owned(),
        password: Secret::new(password),
        name: identifier(
            "DATABASE_URL",
            options.get_database().map(str::to_owned),
            "shipmentdb",
        )?,
        schema: identifier("DB_SCHEMA", schema, "shipments")?,
        debug: parse_bool("DB_DEBUG", debug)?,
    })
}

/// The percent-decoded password of a `postgres://user:password@host/db` URL, or empty.
fn password_of_url(url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return String::new();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return String::new();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return String::new();
    };
    percent_decode(password)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
            if let Some(value) = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                decoded.push(value);
                index += 3;
                continue;
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
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
        assert_eq!(config.database.name, "shipmentdb");
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
        assert_eq!(config.database.host, "db.example");
        assert_eq!(config.database.port, 6543);
        assert_eq!(config.database.user, "app");
        assert_eq!(config.database.password.expose(), "s@cret");
        assert_eq!(config.database.name, "shipdb");
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
        assert_eq!(from_parts.broker.redacted_url(), "amqp://svc@mq:5673/prod");
        assert_eq!(from_parts.broker.queue_type, QueueType::Quorum);
        assert!(!format!("{from_parts:?}").contains("hunter2"));
        let from_url = config(&[("AMQP_URL", "amqp://u:hunter2@h:1234/%2f")]).unwrap();
        assert_eq!(from_url.broker.uri().authority.userinfo.password, "hunter2");
        assert_eq!(from_url.broker.redacted_url(), "amqp://u@h:1234/%2f");
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
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%2"), "a@b%2");
        assert_eq!(password_of_url("postgres://u:p%3Aw@h/db"), "p:w");
        assert_eq!(password_of_url("postgres://u@h/db"), "");
    }
}
