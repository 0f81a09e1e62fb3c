//! Settings of the relay: command-line flags and environment variables (clap), optionally a
//! Debezium Server `application.properties` file (read as Debezium Server reads it, see
//! [`DebeziumProperties`]), merged and validated into [`Config`].
//!
//! Precedence: a flag or environment variable wins over the properties file, which wins over
//! the built-in default. Every invalid value fails at start with a [`ConfigError`] naming the
//! setting (its environment variable, or the properties key it came from). What the relay
//! notices but does not fail on (a properties key it ignores, and why) is kept in
//! [`Config::notes`] and logged once logging is set up ([`Config::log_notes`]).

mod debezium_properties;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use wire_format::WireFormat;

pub use self::debezium_properties::{DebeziumProperties, EnvLookup, process_env};
use crate::router::{ExchangeType, Placement, RouterConfig, RoutingKeySource, TableName};
pub use crate::sink::MessageProperties;

/// Every environment variable the binary reads (the docker-compose contract test checks it).
pub const ENV_VARS: &[&str] = &[
    "DATABASE_URL",
    "DB_HOST",
    "DB_PORT",
    "DB_USER",
    "DB_PASSWORD",
    "DB_NAME",
    "AMQP_URL",
    "RABBITMQ_HOST",
    "RABBITMQ_PORT",
    "RABBITMQ_USER",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_VHOST",
    "RELAY_SLOT",
    "RELAY_PUBLICATION",
    "RELAY_TABLES",
    "RELAY_WIRE_FORMAT",
    "RELAY_MESSAGE_PROPERTIES",
    "RELAY_ROUTING_KEY",
    "RELAY_ROUTE_BY_FIELD",
    "RELAY_ROUTE_TOPIC_REPLACEMENT",
    "RELAY_FIELD_EVENT_ID",
    "RELAY_FIELD_EVENT_KEY",
    "RELAY_FIELD_EVENT_TYPE",
    "RELAY_FIELD_EVENT_PAYLOAD",
    "RELAY_FIELDS_ADDITIONAL_PLACEMENT",
    "RELAY_EXCHANGE_TYPE",
    "RELAY_DEAD_LETTER_EXCHANGE",
    "RELAY_WINDOW_EVENTS",
    "RELAY_WINDOW_BYTES",
    "RELAY_DEBEZIUM_PROPERTIES",
    "RELAY_HTTP_HOST",
    "RELAY_HTTP_PORT",
    "RELAY_CONNECT_TIMEOUT_SECS",
    "RELAY_SHUTDOWN_TIMEOUT_SECS",
    "RELAY_STATUS_INTERVAL_MS",
    "RELAY_LOG_FORMAT",
    "RELAY_SOURCE",
    "RELAY_POLL_INTERVAL_MS",
    "RELAY_POLL_BATCH_SIZE",
    "RUST_LOG",
];

pub use service_kit::Secret;

/// An invalid setting, named as the user wrote it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
    #[error("cannot read the Debezium properties file {path}: {source}")]
    PropertiesFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `${variable}` placeholder with no value and no default, in `setting`.
    #[error(
        "{setting}: ${{{variable}}} is not set (no environment variable {variable}{alternatives} \
         and no default)"
    )]
    Unset {
        setting: String,
        variable: String,
        /// The other names tried, e.g. ` or A_B, no key a.b in the file,`.
        alternatives: String,
    },
}

/// Something the relay noticed about its settings without failing: a properties key it
/// ignores, and why. Logged at start, one line each; never holds a setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigNote {
    /// The key or variable it is about.
    pub setting: String,
    pub message: String,
    /// A warning (the relay behaves differently from what the setting asks) or information.
    pub warning: bool,
}

impl ConfigNote {
    /// A setting the relay does not use, and why.
    pub fn ignored(setting: &str, reason: impl fmt::Display) -> Self {
        Self {
            setting: setting.to_owned(),
            message: format!("ignored: {reason}"),
            warning: false,
        }
    }

    pub fn warning(setting: &str, message: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            message: message.into(),
            warning: true,
        }
    }
}

fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_owned(),
        reason: reason.into(),
    }
}

/// Command-line flags; each also reads the environment variable named after it.
#[derive(Debug, Default, Parser)]
#[command(
    name = "outbox-relay",
    version,
    about = "Relays outbox rows from PostgreSQL to RabbitMQ with publisher confirms: streamed \
             from the WAL (pgoutput, the default) or, with --source polling, polled from the table"
)]
pub struct Cli {
    /// PostgreSQL connection URL; replaces the DB_* settings.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL host [default: 127.0.0.1].
    #[arg(long, env = "DB_HOST")]
    pub db_host: Option<String>,
    /// PostgreSQL port [default: 5432].
    #[arg(long, env = "DB_PORT")]
    pub db_port: Option<String>,
    /// PostgreSQL user; needs the REPLICATION attribute (replication source) or SELECT,
    /// UPDATE and DELETE on the outbox tables (polling source) [default: postgres].
    #[arg(long, env = "DB_USER")]
    pub db_user: Option<String>,
    /// PostgreSQL password [default: postgres].
    #[arg(long, env = "DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,
    /// Database holding the outbox table [default: orderdb].
    #[arg(long, env = "DB_NAME")]
    pub db_name: Option<String>,

    /// AMQP URL (amqp://user:password@host:port/vhost); replaces the RABBITMQ_* settings.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// RabbitMQ host [default: 127.0.0.1].
    #[arg(long, env = "RABBITMQ_HOST")]
    pub rabbitmq_host: Option<String>,
    /// RabbitMQ port [default: 5672].
    #[arg(long, env = "RABBITMQ_PORT")]
    pub rabbitmq_port: Option<String>,
    /// RabbitMQ user [default: guest].
    #[arg(long, env = "RABBITMQ_USER")]
    pub rabbitmq_user: Option<String>,
    /// RabbitMQ password [default: guest].
    #[arg(long, env = "RABBITMQ_PASSWORD", hide_env_values = true)]
    pub rabbitmq_password: Option<String>,
    /// RabbitMQ virtual host [default: /].
    #[arg(long, env = "RABBITMQ_VHOST")]
    pub rabbitmq_vhost: Option<String>,

    /// Logical replication slot [default: outbox_relay].
    #[arg(long, env = "RELAY_SLOT")]
    pub slot: Option<String>,
    /// Publication covering the outbox table(s) [default: outbox_publication].
    #[arg(long, env = "RELAY_PUBLICATION")]
    pub publication: Option<String>,
    /// Outbox tables, comma separated [default: orders.outbox_event].
    #[arg(long, env = "RELAY_TABLES")]
    pub tables: Option<String>,
    /// Message format on the broker: plain | debezium [default: plain, or debezium with a
    /// Debezium properties file].
    #[arg(long, env = "RELAY_WIRE_FORMAT")]
    pub wire_format: Option<String>,
    /// AMQP properties of each message: debezium (delivery_mode 2 and headers only, exactly
    /// what Debezium Server sets) | full (also content_type application/json, message_id = the
    /// event id, timestamp = the commit time) [default: full with the plain wire format,
    /// debezium with the debezium wire format].
    #[arg(long, env = "RELAY_MESSAGE_PROPERTIES")]
    pub message_properties: Option<String>,
    /// Routing key: empty | key | type [default: empty].
    #[arg(long, env = "RELAY_ROUTING_KEY")]
    pub routing_key: Option<String>,
    /// Column whose value names the destination (route.by.field) [default: aggregate_type].
    #[arg(long, env = "RELAY_ROUTE_BY_FIELD")]
    pub route_by_field: Option<String>,
    /// Exchange name template (route.topic.replacement) [default: ${routedByValue}.events].
    #[arg(long, env = "RELAY_ROUTE_TOPIC_REPLACEMENT")]
    pub route_topic_replacement: Option<String>,
    /// Event id column (table.field.event.id) [default: id].
    #[arg(long, env = "RELAY_FIELD_EVENT_ID")]
    pub field_event_id: Option<String>,
    /// Event key column (table.field.event.key) [default: aggregate_id].
    #[arg(long, env = "RELAY_FIELD_EVENT_KEY")]
    pub field_event_key: Option<String>,
    /// Event type column (table.field.event.type) [default: type].
    #[arg(long, env = "RELAY_FIELD_EVENT_TYPE")]
    pub field_event_type: Option<String>,
    /// Payload column (table.field.event.payload) [default: payload].
    #[arg(long, env = "RELAY_FIELD_EVENT_PAYLOAD")]
    pub field_event_payload: Option<String>,
    /// Extra columns as headers, `column:header:name[,...]`
    /// (table.fields.additional.placement) [default: type:header:eventType].
    #[arg(long, env = "RELAY_FIELDS_ADDITIONAL_PLACEMENT")]
    pub fields_additional_placement: Option<String>,
    /// Type of the exchanges the relay declares: fanout | direct | topic | headers
    /// [default: fanout].
    #[arg(long, env = "RELAY_EXCHANGE_TYPE")]
    pub exchange_type: Option<String>,
    /// Exchange for outbox rows that cannot be routed (missing or null column); without it
    /// the relay stalls on such a row.
    #[arg(long, env = "RELAY_DEAD_LETTER_EXCHANGE")]
    pub dead_letter_exchange: Option<String>,
    /// Most events in flight (published, not yet confirmed) [default: 1024].
    #[arg(long, env = "RELAY_WINDOW_EVENTS")]
    pub window_events: Option<String>,
    /// Most message bytes in flight [default: 16777216].
    #[arg(long, env = "RELAY_WINDOW_BYTES")]
    pub window_bytes: Option<String>,
    /// Debezium Server application.properties to read the database, slot, publication, table,
    /// RabbitMQ connection and outbox router settings from; `${VAR}` / `${VAR:default}` are
    /// expanded from the environment, and DEBEZIUM_* variables override keys, as Debezium
    /// Server does. Its slot and publication defaults are Debezium's: debezium and
    /// dbz_publication.
    #[arg(long, env = "RELAY_DEBEZIUM_PROPERTIES")]
    pub debezium_properties: Option<PathBuf>,
    /// Address of /health and /metrics [default: 127.0.0.1].
    #[arg(long, env = "RELAY_HTTP_HOST")]
    pub http_host: Option<String>,
    /// Port of /health and /metrics; 0 picks a free one [default: 8080].
    #[arg(long, env = "RELAY_HTTP_PORT")]
    pub http_port: Option<String>,
    /// How long to keep trying to reach each server at start before failing [default: 10].
    #[arg(long, env = "RELAY_CONNECT_TIMEOUT_SECS")]
    pub connect_timeout_secs: Option<String>,
    /// How long a graceful shutdown waits for in-flight confirms [default: 30].
    #[arg(long, env = "RELAY_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<String>,
    /// Most time between a confirmed position and its status update to PostgreSQL
    /// [default: 1000].
    #[arg(long, env = "RELAY_STATUS_INTERVAL_MS")]
    pub status_interval_ms: Option<String>,
    /// Log format: text | json [default: text].
    #[arg(long, env = "RELAY_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Where events come from: replication (logical replication of the WAL) | polling
    /// (SELECT ... FOR UPDATE NOWAIT, publish, DELETE; for databases where logical
    /// replication is not allowed) [default: replication].
    #[arg(long, env = "RELAY_SOURCE")]
    pub source: Option<String>,
    /// Polling source: pause after a poll that found fewer rows than a batch
    /// [default: 100].
    #[arg(long, env = "RELAY_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<String>,
    /// Polling source: most rows read, published and deleted per transaction [default: 500].
    #[arg(long, env = "RELAY_POLL_BATCH_SIZE")]
    pub poll_batch_size: Option<String>,
}

/// Where the relay reads outbox events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceKind {
    /// Logical replication of the WAL (pgoutput): commit order, no load on the table.
    #[default]
    Replication,
    /// Polling the outbox table and deleting what the broker confirmed.
    Polling,
}

impl SourceKind {
    /// Parses `replication` or `polling`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "replication" => Ok(Self::Replication),
            "polling" => Ok(Self::Polling),
            other => Err(format!("{other:?}: expected replication or polling")),
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Replication => "replication",
            Self::Polling => "polling",
        })
    }
}

/// Settings of the polling source (ignored by the replication source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollingSettings {
    /// Pause after a poll that found fewer rows than a batch.
    pub interval: Duration,
    /// Most rows per batch (one transaction).
    pub batch_size: usize,
}

impl Default for PollingSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            batch_size: 500,
        }
    }
}

/// Where PostgreSQL is and who the relay is there.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
}

impl PostgresSettings {
    /// `user@host:port/database`, safe to log.
    pub fn display(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

/// Where RabbitMQ is.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// The full URL, with the password.
    pub url: Secret,
    /// The URL without its password, safe to log.
    pub display: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The validated settings of one relay.
#[derive(Debug, Clone)]
pub struct Config {
    pub postgres: PostgresSettings,
    pub amqp: AmqpSettings,
    pub slot: String,
    pub publication: String,
    pub router: RouterConfig,
    pub wire_format: WireFormat,
    /// The AMQP properties set on each message.
    pub message_properties: MessageProperties,
    pub exchange_type: ExchangeType,
    pub dead_letter_exchange: Option<String>,
    pub window_events: usize,
    pub window_bytes: usize,
    pub http_host: String,
    pub http_port: u16,
    pub connect_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub status_interval: Duration,
    pub log_format: LogFormat,
    /// Where events come from.
    pub source: SourceKind,
    pub polling: PollingSettings,
    /// Settings noticed but not failed on (ignored properties keys and why), for the log.
    pub notes: Vec<ConfigNote>,
}

impl Config {
    /// Parses the process's flags and environment.
    pub fn from_env_and_args() -> Result<Self, ConfigError> {
        Self::from_cli(Cli::parse())
    }

    /// Merges flags/env with the Debezium properties file (if any) and the defaults; the
    /// file's placeholders and overrides come from the process's environment.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        Self::from_cli_with_env(cli, &process_env)
    }

    /// [`Config::from_cli`] with the properties file resolved against `env`.
    pub fn from_cli_with_env(cli: Cli, env: EnvLookup<'_>) -> Result<Self, ConfigError> {
        let properties = match &cli.debezium_properties {
            Some(path) => Some(DebeziumProperties::read(path, env)?),
            None => None,
        };
        build(cli, properties.as_ref())
    }

    /// Logs the [`Config::notes`], one line each (call once logging is set up).
    pub fn log_notes(&self) {
        for note in &self.notes {
            if note.warning {
                tracing::warn!(setting = %note.setting, "{}", note.message);
            } else {
                tracing::info!(setting = %note.setting, "{}", note.message);
            }
        }
    }
}

/// A setting's value and the name to blame if it is invalid.
struct Setting {
    value: String,
    name: String,
}

/// The flag/env value, else the properties-file value, else the default.
fn pick(
    cli: Option<&String>,
    env_name: &str,
    file: Option<(String, &str)>,
    default: &str,
) -> Setting {
    if let Some(value) = cli {
        return Setting {
            value: value.clone(),
            name: env_name.to_owned(),
        };
    }
    if let Some((key, value)) = file {
        return Setting {
            value: value.to_owned(),
            name: key,
        };
    }
    Setting {
        value: default.to_owned(),
        name: env_name.to_owned(),
    }
}

fn parse_number<T: std::str::FromStr>(setting: &Setting, what: &str) -> Result<T, ConfigError> {
    setting
        .value
        .trim()
        .parse()
        .map_err(|_| invalid(&setting.name, format!("{:?} is not {what}", setting.value)))
}

fn non_empty(setting: Setting) -> Result<String, ConfigError> {
    let value = setting.value.trim();
    if value.is_empty() {
        return Err(invalid(&setting.name, "must not be empty"));
    }
    Ok(value.to_owned())
}

/// Identifiers spliced into SQL and replication commands: letters, digits, underscores.
fn identifier(setting: Setting) -> Result<String, ConfigError> {
    let value = non_empty(setting.clone_name())?;
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !value.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(invalid(
            &setting.name,
            format!(
                "{value:?} must be 1-63 lowercase letters, digits or underscores, not starting with a digit"
            ),
        ));
    }
    Ok(value)
}

impl Setting {
    fn clone_name(&self) -> Setting {
        Setting {
            value: self.value.clone(),
            name: self.name.clone(),
        }
    }
}

fn build(cli: Cli, file: Option<&DebeziumProperties>) -> Result<Config, ConfigError> {
    let file_source = |suffix: &str| file.and_then(|f| f.source(suffix));
    let file_outbox = |suffix: &str| file.and_then(|f| f.outbox(suffix));
    let file_sink = |suffix: &str| file.and_then(|f| f.sink(suffix));

    if let Some((key, plugin)) = file_source("plugin.name")
        && plugin != "pgoutput"
    {
        return Err(invalid(
            &key,
            format!("{plugin:?}: the relay reads only the built-in pgoutput plugin"),
        ));
    }

    let postgres = match &cli.database_url {
        Some(url) => parse_postgres_url(url)?,
        None => {
            let port = pick(
                cli.db_port.as_ref(),
                "DB_PORT",
                file_source("database.port"),
                "5432",
            );
            PostgresSettings {
                host: non_empty(pick(
                    cli.db_host.as_ref(),
                    "DB_HOST",
                    file_source("database.hostname"),
                    "127.0.0.1",
                ))?,
                port: parse_number(&port, "a port number")?,
                user: non_empty(pick(
                    cli.db_user.as_ref(),
                    "DB_USER",
                    file_source("database.user"),
                    "postgres",
                ))?,
                password: Secret::new(
                    pick(
                        cli.db_password.as_ref(),
                        "DB_PASSWORD",
                        file_source("database.password"),
                        "postgres",
                    )
                    .value,
                ),
                database: non_empty(pick(
                    cli.db_name.as_ref(),
                    "DB_NAME",
                    file_source("database.dbname"),
                    "orderdb",
                ))?,
            }
        }
    };

    let amqp = match &cli.amqp_url {
        Some(url) => {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(invalid("AMQP_URL", "must start with amqp:// or amqps://"));
            }
            // Caught here rather than at the first connect; the parser's own message may quote
            // the URL, password included, so only a generic reason is given.
            if url.parse::<lapin::uri::AMQPUri>().is_err() {
                return Err(invalid(
                    "AMQP_URL",
                    "is not a valid AMQP URL (expected amqp://user:password@host:port/vhost)",
                ));
            }
            AmqpSettings {
                url: Secret::new(url.clone()),
                display: redact_url_password(url),
            }
        }
        None => {
            let host = non_empty(pick(
                cli.rabbitmq_host.as_ref(),
                "RABBITMQ_HOST",
                file_sink("connection.host"),
                "127.0.0.1",
            ))?;
            let port_setting = pick(
                cli.rabbitmq_port.as_ref(),
                "RABBITMQ_PORT",
                file_sink("connection.port"),
                "5672",
            );
            let port: u16 = parse_number(&port_setting, "a port number")?;
            let user = pick(
                cli.rabbitmq_user.as_ref(),
                "RABBITMQ_USER",
                file_sink("connection.username"),
                "guest",
            )
            .value;
            let password = pick(
                cli.rabbitmq_password.as_ref(),
                "RABBITMQ_PASSWORD",
                file_sink("connection.password"),
                "guest",
            )
            .value;
            let vhost = pick(
                cli.rabbitmq_vhost.as_ref(),
                "RABBITMQ_VHOST",
                file_sink("connection.virtual.host"),
                "/",
            )
            .value;
            let user = percent_encode(&user);
            let vhost = percent_encode(&vhost);
            AmqpSettings {
                url: Secret::new(format!(
                    "amqp://{user}:{}@{host}:{port}/{vhost}",
                    percent_encode(&password)
                )),
                display: format!("amqp://{user}:***@{host}:{port}/{vhost}"),
            }
        }
    };

    // With a properties file, Debezium's own defaults: a relay taking over from Debezium
    // reuses its slot and publication.
    let (slot_default, publication_default) = if file.is_some() {
        ("debezium", "dbz_publication")
    } else {
        ("outbox_relay", "outbox_publication")
    };
    let slot = identifier(pick(
        cli.slot.as_ref(),
        "RELAY_SLOT",
        file_source("slot.name"),
        slot_default,
    ))?;
    let publication = identifier(pick(
        cli.publication.as_ref(),
        "RELAY_PUBLICATION",
        file_source("publication.name"),
        publication_default,
    ))?;
    let tables_setting = pick(
        cli.tables.as_ref(),
        "RELAY_TABLES",
        file_source("table.include.list"),
        "orders.outbox_event",
    );
    let mut tables = Vec::new();
    for part in tables_setting
        .value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        tables
            .push(TableName::parse(part).map_err(|reason| invalid(&tables_setting.name, reason))?);
    }
    if tables.is_empty() {
        return Err(invalid(&tables_setting.name, "names no table"));
    }
    if let Some((schema_key, schemas)) = file_source("schema.include.list") {
        check_schemas(&tables, &tables_setting.name, &schema_key, schemas)?;
    }

    let wire_default = if file.is_some() { "debezium" } else { "plain" };
    let wire_setting = pick(
        cli.wire_format.as_ref(),
        "RELAY_WIRE_FORMAT",
        None,
        wire_default,
    );
    let wire_format: WireFormat = wire_setting
        .value
        .trim()
        .parse()
        .map_err(|error| invalid(&wire_setting.name, format!("{error}")))?;
    let properties_setting = pick(
        cli.message_properties.as_ref(),
        "RELAY_MESSAGE_PROPERTIES",
        None,
        MessageProperties::default_for(wire_format).as_str(),
    );
    let message_properties = MessageProperties::parse(&properties_setting.value)
        .map_err(|reason| invalid(&properties_setting.name, reason))?;

    let routing_setting = pick(cli.routing_key.as_ref(), "RELAY_ROUTING_KEY", None, "empty");
    let routing_key = RoutingKeySource::parse(&routing_setting.value)
        .map_err(|reason| invalid(&routing_setting.name, reason))?;

    let column = |cli_value: Option<&String>, env: &str, suffix: &str, default: &str| {
        non_empty(pick(cli_value, env, file_outbox(suffix), default))
    };
    let route_by_field = column(
        cli.route_by_field.as_ref(),
        "RELAY_ROUTE_BY_FIELD",
        "route.by.field",
        "aggregate_type",
    )?;
    let replacement_setting = pick(
        cli.route_topic_replacement.as_ref(),
        "RELAY_ROUTE_TOPIC_REPLACEMENT",
        file_outbox("route.topic.replacement"),
        "${routedByValue}.events",
    );
    let route_topic_replacement = non_empty(replacement_setting.clone_name())?;
    let mut notes = file.map(|f| f.notes().to_vec()).unwrap_or_default();
    if !route_topic_replacement.contains("${routedByValue}") {
        notes.push(ConfigNote::warning(
            &replacement_setting.name,
            "route.topic.replacement has no ${routedByValue}: every event goes to one exchange",
        ));
    }
    let field_event_id = column(
        cli.field_event_id.as_ref(),
        "RELAY_FIELD_EVENT_ID",
        "table.field.event.id",
        "id",
    )?;
    let field_event_key = column(
        cli.field_event_key.as_ref(),
        "RELAY_FIELD_EVENT_KEY",
        "table.field.event.key",
        "aggregate_id",
    )?;
    let field_event_type = column(
        cli.field_event_type.as_ref(),
        "RELAY_FIELD_EVENT_TYPE",
        "table.field.event.type",
        "type",
    )?;
    let field_event_payload = column(
        cli.field_event_payload.as_ref(),
        "RELAY_FIELD_EVENT_PAYLOAD",
        "table.field.event.payload",
        "payload",
    )?;
    let placement_setting = pick(
        cli.fields_additional_placement.as_ref(),
        "RELAY_FIELDS_ADDITIONAL_PLACEMENT",
        file_outbox("table.fields.additional.placement"),
        "type:header:eventType",
    );
    let additional_placement = Placement::parse_list(&placement_setting.value)
        .map_err(|reason| invalid(&placement_setting.name, reason))?;

    let exchange_setting = pick(
        cli.exchange_type.as_ref(),
        "RELAY_EXCHANGE_TYPE",
        None,
        "fanout",
    );
    let exchange_type = ExchangeType::parse(&exchange_setting.value)
        .map_err(|reason| invalid(&exchange_setting.name, reason))?;

    let dead_letter_exchange = match &cli.dead_letter_exchange {
        Some(name) if name.trim().is_empty() => None,
        Some(name) => Some(name.trim().to_owned()),
        None => None,
    };

    let number = |value: Option<&String>, env: &str, default: &str| pick(value, env, None, default);
    let window_events: usize = parse_number(
        &number(cli.window_events.as_ref(), "RELAY_WINDOW_EVENTS", "1024"),
        "a number of events",
    )?;
    if window_events == 0 {
        return Err(invalid("RELAY_WINDOW_EVENTS", "must be at least 1"));
    }
    let window_bytes: usize = parse_number(
        &number(cli.window_bytes.as_ref(), "RELAY_WINDOW_BYTES", "16777216"),
        "a number of bytes",
    )?;
    if window_bytes < 1024 {
        return Err(invalid("RELAY_WINDOW_BYTES", "must be at least 1024"));
    }
    let http_host = non_empty(number(
        cli.http_host.as_ref(),
        "RELAY_HTTP_HOST",
        "127.0.0.1",
    ))?;
    let http_port: u16 = parse_number(
        &number(cli.http_port.as_ref(), "RELAY_HTTP_PORT", "8080"),
        "a port number",
    )?;
    let connect_timeout_secs: u64 = parse_number(
        &number(
            cli.connect_timeout_secs.as_ref(),
            "RELAY_CONNECT_TIMEOUT_SECS",
            "10",
        ),
        "a number of seconds",
    )?;
    let shutdown_timeout_secs: u64 = parse_number(
        &number(
            cli.shutdown_timeout_secs.as_ref(),
            "RELAY_SHUTDOWN_TIMEOUT_SECS",
            "30",
        ),
        "a number of seconds",
    )?;
    let status_interval_ms: u64 = parse_number(
        &number(
            cli.status_interval_ms.as_ref(),
            "RELAY_STATUS_INTERVAL_MS",
            "1000",
        ),
        "a number of milliseconds",
    )?;
    if !(10..=10_000).contains(&status_interval_ms) {
        return Err(invalid(
            "RELAY_STATUS_INTERVAL_MS",
            "must be between 10 and 10000 (PostgreSQL expects a status at least every 10 s)",
        ));
    }
    let log_format = match number(cli.log_format.as_ref(), "RELAY_LOG_FORMAT", "text")
        .value
        .trim()
    {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "RELAY_LOG_FORMAT",
                format!("{other:?}: expected text or json"),
            ));
        }
    };

    let source_setting = number(cli.source.as_ref(), "RELAY_SOURCE", "replication");
    let source = SourceKind::parse(&source_setting.value)
        .map_err(|reason| invalid(&source_setting.name, reason))?;
    let poll_interval_ms: u64 = parse_number(
        &number(
            cli.poll_interval_ms.as_ref(),
            "RELAY_POLL_INTERVAL_MS",
            "100",
        ),
        "a number of milliseconds",
    )?;
    if !(1..=60_000).contains(&poll_interval_ms) {
        return Err(invalid(
            "RELAY_POLL_INTERVAL_MS",
            "must be between 1 and 60000",
        ));
    }
    let poll_batch_size: usize = parse_number(
        &number(cli.poll_batch_size.as_ref(), "RELAY_POLL_BATCH_SIZE", "500"),
        "a number of rows",
    )?;
    if !(1..=100_000).contains(&poll_batch_size) {
        return Err(invalid(
            "RELAY_POLL_BATCH_SIZE",
            "must be between 1 and 100000",
        ));
    }

    Ok(Config {
        postgres,
        amqp,
        slot,
        publication,
        router: RouterConfig {
            tables,
            route_by_field,
            route_topic_replacement,
            field_event_id,
            field_event_key,
            field_event_type,
            field_event_payload,
            additional_placement,
            routing_key,
        },
        wire_format,
        message_properties,
        exchange_type,
        dead_letter_exchange,
        window_events,
        window_bytes,
        http_host,
        http_port,
        connect_timeout: Duration::from_secs(connect_timeout_secs),
        shutdown_timeout: Duration::from_secs(shutdown_timeout_secs),
        status_interval: Duration::from_millis(status_interval_ms),
        log_format,
        source,
        polling: PollingSettings {
            interval: Duration::from_millis(poll_interval_ms),
            batch_size: poll_batch_size,
        },
        notes,
    })
}

/// `schema.include.list` must cover every outbox table: Debezium would not capture a table
/// outside it. Entries are compared as names (Debezium reads them as regular expressions;
/// names are what such files hold).
fn check_schemas(
    tables: &[TableName],
    tables_name: &str,
    schema_key: &str,
    schemas: &str,
) -> Result<(), ConfigError> {
    let listed: Vec<&str> = schemas
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    match tables.iter().find(|t| !listed.contains(&t.schema.as_str())) {
        Some(outside) => Err(invalid(
            schema_key,
            format!(
                "{schemas:?} does not include schema {:?} of table {outside} (from \
                 {tables_name}): Debezium would not capture it",
                outside.schema
            ),
        )),
        None => Ok(()),
    }
}

/// Parses `postgres[ql]://[user[:password]@]host[:port][/database][?options]`.
fn parse_postgres_url(url: &str) -> Result<PostgresSettings, ConfigError> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| {
            invalid(
                "DATABASE_URL",
                "must start with postgres:// or postgresql://",
            )
        })?;
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (percent_decode(user)?, percent_decode(password)?),
            None => (percent_decode(info)?, String::new()),
        },
        None => ("postgres".to_owned(), String::new()),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            let port = port.parse().map_err(|_| {
                invalid(
                    "DATABASE_URL",
                    format!("port {port:?} is not a port number"),
                )
            })?;
            (host, port)
        }
        _ => (hostport, 5432),
    };
    if host.is_empty() {
        return Err(invalid("DATABASE_URL", "has no host"));
    }
    let database = percent_decode(database)?;
    Ok(PostgresSettings {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        user,
        password: Secret::new(password),
        database: if database.is_empty() {
            "orderdb".to_owned()
        } else {
            database
        },
    })
}

fn percent_decode(text: &str) -> Result<String, ConfigError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text
                .get(index + 1..index + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("DATABASE_URL", "has an invalid %-escape"))?;
            out.push(hex);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("DATABASE_URL", "is not UTF-8 once decoded"))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `scheme://user:***@host...` for a URL with a password; unchanged otherwise.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashMap;
    use std::env::VarError;

    use super::*;

    fn cli() -> Cli {
        Cli::default()
    }

    /// An environment with no variables.
    fn no_env(_: &str) -> Result<String, VarError> {
        Err(VarError::NotPresent)
    }

    /// An environment holding exactly `vars`.
    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<String, VarError> + use<> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        move |name| vars.get(name).cloned().ok_or(VarError::NotPresent)
    }

    /// The resolved value of `key` in a file of `text` with environment `vars`.
    fn resolved(text: &str, vars: &[(&str, &str)], key: &str) -> Result<Option<String>, String> {
        DebeziumProperties::parse(text, &env_of(vars))
            .map(|p| p.get(key).map(str::to_owned))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_original_system() {
        let config = Config::from_cli(cli()).unwrap();
        assert_eq!(config.postgres.database, "orderdb");
        assert_eq!(config.slot, "outbox_relay");
        assert_eq!(config.publication, "outbox_publication");
        assert_eq!(config.router.tables[0].to_string(), "orders.outbox_event");
        assert_eq!(config.wire_format, WireFormat::Plain);
        assert_eq!(config.http_port, 8080);
        assert_eq!(config.amqp.display, "amqp://guest:***@127.0.0.1:5672/%2F");
    }

    #[test]
    fn database_url_replaces_the_parts() {
        let config = Config::from_cli(Cli {
            database_url: Some(
                "postgres://relay:p%40ss@db.example:6543/shop?sslmode=disable".into(),
            ),
            ..cli()
        })
        .unwrap();
        assert_eq!(config.postgres.host, "db.example");
        assert_eq!(config.postgres.port, 6543);
        assert_eq!(config.postgres.user, "relay");
        assert_eq!(config.postgres.password.expose(), "p@ss");
        assert_eq!(config.postgres.database, "shop");
        assert!(!format!("{config:?}").contains("p@ss"));
    }

    #[test]
    fn invalid_settings_are_named() {
        let error = Config::from_cli(Cli {
            db_port: Some("fifty".into()),
            ..cli()
        })
        .unwrap_err();
        assert!(error.to_string().contains("DB_PORT"), "{error}");
        let error = Config::from_cli(Cli {
            slot: Some("Bad-Slot".into()),
            ..cli()
        })
        .unwrap_err();
        assert!(error.to_string().contains("RELAY_SLOT"), "{error}");
        let error = Config::from_cli(Cli {
            wire_format: Some("xml".into()),
            ..cli()
        })
        .unwrap_err();
        assert!(error.to_string().contains("RELAY_WIRE_FORMAT"), "{error}");
        let error = Config::from_cli(Cli {
            routing_key: Some("random".into()),
            ..cli()
        })
        .unwrap_err();
        assert!(error.to_string().contains("RELAY_ROUTING_KEY"), "{error}");
        let error = Config::from_cli(Cli {
            amqp_url: Some("http://x".into()),
            ..cli()
        })
        .unwrap_err();
        assert!(error.to_string().contains("AMQP_URL"), "{error}");
        for bad in [
            "amqp://u:Pw-9f2@host:notaport/%2f",
            "amqp://u:Pw-9f2@host:99999/%2f",
        ] {
            let error = Config::from_cli(Cli {
                amqp_url: Some(bad.into()),
                ..cli()
            })
            .unwrap_err()
            .to_string();
            assert!(error.contains("AMQP_URL"), "{error}");
            assert!(!error.contains("Pw-9f2"), "the password leaked: {error}");
        }
    }

    #[test]
    fn polling_settings_are_validated_and_named() {
        let config = Config::from_cli(cli()).unwrap();
        assert_eq!(config.source, SourceKind::Replication);
        assert_eq!(config.polling, PollingSettings::default());
        let config = Config::from_cli(Cli {
            source: Some("polling".into()),
            poll_interval_ms: Some("10".into()),
            poll_batch_size: Some("2000".into()),
            ..cli()
        })
        .unwrap();
        assert_eq!(config.source, SourceKind::Polling);
        assert_eq!(config.polling.interval, Duration::from_millis(10));
        assert_eq!(config.polling.batch_size, 2000);
        for (bad, setting) in [
            (
                Cli {
                    source: Some("trigger".into()),
                    ..cli()
                },
                "RELAY_SOURCE",
            ),
            (
                Cli {
                    poll_batch_size: Some("0".into()),
                    ..cli()
                },
                "RELAY_POLL_BATCH_SIZE",
            ),
            (
                Cli {
                    poll_batch_size: Some("many".into()),
                    ..cli()
                },
                "RELAY_POLL_BATCH_SIZE",
            ),
            (
                Cli {
                    poll_interval_ms: Some("0".into()),
                    ..cli()
                },
                "RELAY_POLL_INTERVAL_MS",
            ),
        ] {
            let error = Config::from_cli(bad).unwrap_err().to_string();
            assert!(error.contains(setting), "{error}");
        }
    }

    #[test]
    fn amqp_url_password_is_redacted() {
        assert_eq!(
            redact_url_password("amqp://u:secret@h:5672/v"),
            "amqp://u:***@h:5672/v"
        );
        assert_eq!(redact_url_password("amqp://h:5672"), "amqp://h:5672");
        let config = Config::from_cli(Cli {
            rabbitmq_password: Some("s3cr:t".into()),
            rabbitmq_vhost: Some("my vhost".into()),
            ..cli()
        })
        .unwrap();
        assert_eq!(
            config.amqp.url.expose(),
            "amqp://guest:s3cr%3At@127.0.0.1:5672/my%20vhost"
        );
        assert!(!config.amqp.display.contains("s3cr"));
    }

    #[test]
    fn properties_parser_handles_java_syntax() {
        let properties = DebeziumProperties::parse(
            "# comment\n! other comment\n debezium.source.slot.name = 1\n\
             debezium.source.publication.name:2\ndebezium.source.database.user 3\n\
             debezium.source.database.dbname=x,\\\n   y\n\
             debezium.source.database.hostname=\\\\${v}\\:z\\u0041\n\
             debezium.source.database.password=\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(properties.get("debezium.source.slot.name"), Some("1"));
        assert_eq!(
            properties.get("debezium.source.publication.name"),
            Some("2")
        );
        assert_eq!(properties.get("debezium.source.database.user"), Some("3"));
        assert_eq!(
            properties.get("debezium.source.database.dbname"),
            Some("x,y")
        );
        assert_eq!(
            properties.get("debezium.source.database.hostname"),
            Some("${v}:zA")
        );
        assert_eq!(properties.get("debezium.source.database.password"), None);
    }

    fn original_properties() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../resources/debezium/application.properties")
    }

    #[test]
    fn the_original_systems_properties_file_configures_the_relay() {
        let config = Config::from_cli(Cli {
            debezium_properties: Some(original_properties()),
            ..cli()
        })
        .unwrap();
        assert_eq!(config.postgres.host, "127.0.0.1");
        assert_eq!(config.postgres.port, 5432);
        assert_eq!(config.postgres.user, "postgres");
        assert_eq!(config.postgres.database, "orderdb");
        assert_eq!(config.slot, "outbox_relay");
        assert_eq!(config.publication, "outbox_publication");
        assert_eq!(config.router, RouterConfig::default());
        assert_eq!(config.wire_format, WireFormat::Debezium);
        assert_eq!(config.amqp.display, "amqp://guest:***@127.0.0.1:5672/%2F");
    }

    #[test]
    fn flags_and_env_override_the_properties_file() {
        let config = Config::from_cli(Cli {
            debezium_properties: Some(original_properties()),
            db_name: Some("otherdb".into()),
            route_by_field: Some("type".into()),
            wire_format: Some("plain".into()),
            ..cli()
        })
        .unwrap();
        assert_eq!(config.postgres.database, "otherdb");
        assert_eq!(config.router.route_by_field, "type");
        assert_eq!(config.wire_format, WireFormat::Plain);
    }

    #[test]
    fn every_outbox_key_of_a_properties_file_is_read() {
        let properties = DebeziumProperties::parse(
            "debezium.transforms=unwrap,router\n\
             debezium.transforms.unwrap.type=io.debezium.transforms.ExtractNewRecordState\n\
             debezium.transforms.router.type=io.debezium.transforms.outbox.EventRouter\n\
             debezium.transforms.router.route.by.field=topic\n\
             debezium.transforms.router.route.topic.replacement=out.${routedByValue}\n\
             debezium.transforms.router.table.field.event.id=event_id\n\
             debezium.transforms.router.table.field.event.key=message_key\n\
             debezium.transforms.router.table.field.event.type=event_type\n\
             debezium.transforms.router.table.field.event.payload=body\n\
             debezium.transforms.router.table.fields.additional.placement=event_type:header:ce_type,id:header\n\
             debezium.source.table.include.list=public.outbox,app.events\n",
            &no_env,
        )
        .unwrap();
        let config = build(cli(), Some(&properties)).unwrap();
        let router = &config.router;
        assert_eq!(router.route_by_field, "topic");
        assert_eq!(router.route_topic_replacement, "out.${routedByValue}");
        assert_eq!(router.field_event_id, "event_id");
        assert_eq!(router.field_event_key, "message_key");
        assert_eq!(router.field_event_type, "event_type");
        assert_eq!(router.field_event_payload, "body");
        assert_eq!(
            router.additional_placement,
            vec![
                Placement {
                    column: "event_type".into(),
                    header: "ce_type".into()
                },
                Placement {
                    column: "id".into(),
                    header: "id".into()
                }
            ]
        );
        assert_eq!(
            router
                .tables
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["public.outbox", "app.events"]
        );
    }

    #[test]
    fn a_bad_properties_value_names_its_key() {
        let properties =
            DebeziumProperties::parse("debezium.source.plugin.name=decoderbufs\n", &no_env)
                .unwrap();
        let error = build(cli(), Some(&properties)).unwrap_err().to_string();
        assert!(error.contains("debezium.source.plugin.name"), "{error}");
        let properties = DebeziumProperties::parse(
            "debezium.transforms=outbox\n\
             debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
             debezium.transforms.outbox.table.fields.additional.placement=type:envelope:t\n",
            &no_env,
        )
        .unwrap();
        let error = build(cli(), Some(&properties)).unwrap_err().to_string();
        assert!(
            error.contains("debezium.transforms.outbox.table.fields.additional.placement"),
            "{error}"
        );
        let error = Config::from_cli(Cli {
            debezium_properties: Some(PathBuf::from("/nonexistent/application.properties")),
            ..cli()
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("/nonexistent/application.properties"),
            "{error}"
        );
    }

    const PORT_KEY: &str = "debezium.source.database.port";

    #[test]
    fn placeholders_take_the_environment_or_their_default() {
        let file = "debezium.source.database.port=${DATABASE_PORT}\n";
        assert_eq!(
            resolved(file, &[("DATABASE_PORT", "6543")], PORT_KEY).unwrap(),
            Some("6543".into())
        );
        let file = "debezium.source.database.port=${DATABASE_PORT:5433}\n";
        assert_eq!(resolved(file, &[], PORT_KEY).unwrap(), Some("5433".into()));
        assert_eq!(
            resolved(file, &[("DATABASE_PORT", "6543")], PORT_KEY).unwrap(),
            Some("6543".into()),
            "the variable wins over the default"
        );
        // An empty variable counts as unset, as in SmallRye.
        assert_eq!(
            resolved(file, &[("DATABASE_PORT", "")], PORT_KEY).unwrap(),
            Some("5433".into())
        );
        // Text around and several placeholders in one value; a lone `$` stays.
        let file = "debezium.source.database.hostname=db-${ZONE}.${DOMAIN:example.org}$x\n";
        assert_eq!(
            resolved(file, &[("ZONE", "eu")], "debezium.source.database.hostname").unwrap(),
            Some("db-eu.example.org$x".into())
        );
    }

    #[test]
    fn an_empty_default_is_a_value() {
        let file = "debezium.source.table.include.list=orders.outbox_event${SUFFIX:}\n";
        assert_eq!(
            resolved(file, &[], "debezium.source.table.include.list").unwrap(),
            Some("orders.outbox_event".into())
        );
        // A value that expands to nothing counts as unset: the relay's default applies.
        let file = "debezium.source.slot.name=${SLOT:}\n";
        assert_eq!(
            resolved(file, &[], "debezium.source.slot.name").unwrap(),
            None
        );
    }

    #[test]
    fn defaults_and_names_nest() {
        let file = "debezium.source.database.hostname=${DATABASE_HOSTNAME:${FALLBACK_HOST:db}}\n";
        let key = "debezium.source.database.hostname";
        assert_eq!(resolved(file, &[], key).unwrap(), Some("db".into()));
        assert_eq!(
            resolved(file, &[("FALLBACK_HOST", "fallback")], key).unwrap(),
            Some("fallback".into())
        );
        assert_eq!(
            resolved(
                file,
                &[("DATABASE_HOSTNAME", "h"), ("FALLBACK_HOST", "f")],
                key
            )
            .unwrap(),
            Some("h".into())
        );
        // A composed name: the inner placeholder first.
        let file = "debezium.source.database.hostname=${HOST_${STAGE}}\n";
        assert_eq!(
            resolved(file, &[("STAGE", "PROD"), ("HOST_PROD", "prod-db")], key).unwrap(),
            Some("prod-db".into())
        );
        // The value of a variable is expanded in turn.
        let file = "debezium.source.database.hostname=${A}\n";
        assert_eq!(
            resolved(file, &[("A", "${B}.internal"), ("B", "db")], key).unwrap(),
            Some("db.internal".into())
        );
    }

    #[test]
    fn placeholders_fall_back_to_keys_of_the_same_file() {
        let file = "db.host=db.example\n\
                    debezium.source.database.hostname=${db.host}\n\
                    debezium.source.database.port=${db.port:5432}\n";
        let key = "debezium.source.database.hostname";
        assert_eq!(resolved(file, &[], key).unwrap(), Some("db.example".into()));
        assert_eq!(resolved(file, &[], PORT_KEY).unwrap(), Some("5432".into()));
        // The environment comes first (higher ordinal), by its mapped name too.
        assert_eq!(
            resolved(file, &[("DB_HOST", "from-env")], key).unwrap(),
            Some("from-env".into())
        );
        assert_eq!(
            resolved(file, &[("db.host", "exact")], key).unwrap(),
            Some("exact".into())
        );
    }

    #[test]
    fn an_escaped_dollar_is_literal() {
        // The original file's line, as written in the file: `\\${routedByValue}.events`.
        let file = "debezium.transforms=outbox\n\
                    debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
                    debezium.transforms.outbox.route.topic.replacement=\\\\${routedByValue}.events\n\
                    debezium.source.database.hostname=a\\\\${HOST}b\n";
        let properties = DebeziumProperties::parse(file, &env_of(&[("HOST", "x")])).unwrap();
        assert_eq!(
            properties.outbox("route.topic.replacement").unwrap().1,
            "${routedByValue}.events"
        );
        assert_eq!(
            properties.get("debezium.source.database.hostname"),
            Some("a${HOST}b"),
            "escaped even when the variable is set"
        );
        // One backslash in the file is Java's escape of `$`: the placeholder is expanded.
        let file = "debezium.source.database.hostname=\\${HOST}\n";
        assert_eq!(
            resolved(file, &[("HOST", "x")], "debezium.source.database.hostname").unwrap(),
            Some("x".into())
        );
        // An unterminated placeholder stays as written.
        let file = "debezium.source.database.hostname=a${HOST\n";
        assert_eq!(
            resolved(file, &[("HOST", "x")], "debezium.source.database.hostname").unwrap(),
            Some("a${HOST".into())
        );
    }

    #[test]
    fn the_routers_own_placeholder_stays_unescaped() {
        let file = "debezium.transforms=outbox\n\
                    debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
                    debezium.transforms.outbox.route.topic.replacement=${routedByValue}.events\n";
        let properties = DebeziumProperties::parse(file, &no_env).unwrap();
        assert_eq!(
            properties.outbox("route.topic.replacement").unwrap().1,
            "${routedByValue}.events"
        );
        let config = build(cli(), Some(&properties)).unwrap();
        assert_eq!(
            config.router.route_topic_replacement,
            "${routedByValue}.events"
        );
    }

    #[test]
    fn a_missing_variable_names_the_variable_and_the_key() {
        let error = resolved(
            "debezium.source.database.port=${DATABASE_PORT}\n",
            &[],
            PORT_KEY,
        )
        .unwrap_err();
        assert_eq!(
            error,
            "debezium.source.database.port: ${DATABASE_PORT} is not set (no environment \
             variable DATABASE_PORT and no default)"
        );
        // A dotted name was also looked up by its mapped names and as a key.
        let error =
            resolved("debezium.source.database.port=${db.port}\n", &[], PORT_KEY).unwrap_err();
        assert_eq!(
            error,
            "debezium.source.database.port: ${db.port} is not set (no environment variable \
             db.port or db_port or DB_PORT, no key db.port in the file, and no default)"
        );
        // Through the whole configuration, and in a nested default.
        let properties = DebeziumProperties::parse(
            "debezium.sink.rabbitmq.connection.host=${RABBITMQ_HOSTNAME:${BROKER}}\n",
            &no_env,
        );
        let error = properties.unwrap_err().to_string();
        assert!(
            error.contains("debezium.sink.rabbitmq.connection.host"),
            "{error}"
        );
        assert!(error.contains("${BROKER} is not set"), "{error}");
    }

    #[test]
    fn a_placeholder_loop_is_an_error_not_a_hang() {
        let error = resolved(
            "debezium.source.database.port=${debezium.source.database.port}\n",
            &[],
            PORT_KEY,
        )
        .unwrap_err();
        assert!(error.contains("placeholder loop"), "{error}");
        assert!(error.contains("debezium.source.database.port"), "{error}");
        let error = resolved(
            "a=${b}\nb=${a}\ndebezium.source.database.port=${a}\n",
            &[],
            PORT_KEY,
        )
        .unwrap_err();
        assert!(error.contains("placeholder loop"), "{error}");
        assert!(error.contains("a → b → a"), "{error}");
        // A loop through environment variables too.
        let error = resolved(
            "debezium.source.database.port=${X}\n",
            &[("X", "${Y}"), ("Y", "${X}")],
            PORT_KEY,
        )
        .unwrap_err();
        assert!(error.contains("placeholder loop"), "{error}");
        assert!(error.contains("environment variable Y"), "{error}");
        // A long chain stops at the depth bound.
        let mut file: String = (0..40).map(|i| format!("k{i}=${{k{}}}\n", i + 1)).collect();
        file.push_str("k40=5432\ndebezium.source.database.port=${k0}\n");
        let error = resolved(&file, &[], PORT_KEY).unwrap_err();
        assert!(error.contains("nest more than 32 levels"), "{error}");
    }

    #[test]
    fn a_non_utf8_variable_is_an_error_naming_it() {
        let env = |name: &str| match name {
            "DATABASE_PORT" => Err(VarError::NotUnicode(std::ffi::OsString::from("x"))),
            _ => Err(VarError::NotPresent),
        };
        let error =
            DebeziumProperties::parse("debezium.source.database.port=${DATABASE_PORT}\n", &env)
                .unwrap_err()
                .to_string();
        assert!(error.contains("DATABASE_PORT"), "{error}");
        assert!(error.contains("not valid UTF-8"), "{error}");
    }

    #[test]
    fn the_environment_overrides_a_key_by_its_mapped_name() {
        let file = "debezium.source.database.port=5432\n";
        assert_eq!(
            resolved(file, &[("DEBEZIUM_SOURCE_DATABASE_PORT", "6000")], PORT_KEY).unwrap(),
            Some("6000".into())
        );
        // Also a key the file does not have, e.g. the original's missing vhost.
        let key = "debezium.sink.rabbitmq.connection.virtual.host";
        assert_eq!(
            resolved(
                file,
                &[("DEBEZIUM_SINK_RABBITMQ_CONNECTION_VIRTUAL_HOST", "t_1")],
                key
            )
            .unwrap(),
            Some("t_1".into())
        );
        // The override wins even over a placeholder that would fail.
        let file = "debezium.source.database.port=${DATABASE_PORT}\n";
        assert_eq!(
            resolved(file, &[("DEBEZIUM_SOURCE_DATABASE_PORT", "6000")], PORT_KEY).unwrap(),
            Some("6000".into())
        );
        let properties = DebeziumProperties::parse(
            "debezium.sink.rabbitmq.connection.virtual.host=/\n",
            &env_of(&[("DEBEZIUM_SINK_RABBITMQ_CONNECTION_VIRTUAL_HOST", "tenant a")]),
        )
        .unwrap();
        let config = build(cli(), Some(&properties)).unwrap();
        assert!(
            config.amqp.display.ends_with("/tenant%20a"),
            "{}",
            config.amqp.display
        );
    }

    #[test]
    fn a_properties_file_brings_debeziums_slot_and_publication_defaults() {
        let properties =
            DebeziumProperties::parse("debezium.sink.type=rabbitmq\n", &no_env).unwrap();
        let config = build(cli(), Some(&properties)).unwrap();
        assert_eq!(config.slot, "debezium");
        assert_eq!(config.publication, "dbz_publication");
        let config = build(
            Cli {
                slot: Some("relay_slot".into()),
                publication: Some("relay_pub".into()),
                ..cli()
            },
            Some(&properties),
        )
        .unwrap();
        assert_eq!(config.slot, "relay_slot");
        assert_eq!(config.publication, "relay_pub");
        let properties = DebeziumProperties::parse(
            "debezium.source.slot.name=from_file\ndebezium.source.publication.name=pub_file\n",
            &no_env,
        )
        .unwrap();
        let config = build(cli(), Some(&properties)).unwrap();
        assert_eq!(
            (config.slot.as_str(), config.publication.as_str()),
            ("from_file", "pub_file")
        );
        let config = build(cli(), None).unwrap();
        assert_eq!(config.slot, "outbox_relay");
        assert_eq!(config.publication, "outbox_publication");
    }

    fn the_originals_file() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../resources/debezium/original/application.properties")
    }

    const ORIGINAL_ENV: &[(&str, &str)] = &[
        ("RABBITMQ_HOSTNAME", "broker.internal"),
        ("RABBITMQ_PORT", "5673"),
        ("RABBITMQ_USER", "rabbit"),
        ("RABBITMQ_PASSWORD", "Rb-pw-7731"),
        ("DATABASE_HOSTNAME", "db.internal"),
        ("DATABASE_PORT", "5433"),
        ("DATABASE_USER", "dbz"),
        ("DATABASE_PASSWORD", "Db-pw-4419"),
        ("DATABASE_NAME", "orderdb"),
        ("DATABASE_SCHEMA", "orders"),
        ("DATABASE_OUTBOX_TABLE", "outbox_event"),
    ];

    #[test]
    fn the_originals_file_with_its_environment_configures_the_relay() {
        let config = Config::from_cli_with_env(
            Cli {
                debezium_properties: Some(the_originals_file()),
                ..cli()
            },
            &env_of(ORIGINAL_ENV),
        )
        .unwrap();
        assert_eq!(config.postgres.host, "db.internal");
        assert_eq!(config.postgres.port, 5433);
        assert_eq!(config.postgres.user, "dbz");
        assert_eq!(config.postgres.password.expose(), "Db-pw-4419");
        assert_eq!(config.postgres.database, "orderdb");
        assert_eq!(
            config.amqp.url.expose(),
            "amqp://rabbit:Rb-pw-7731@broker.internal:5673/%2F"
        );
        assert_eq!(config.slot, "debezium");
        assert_eq!(config.publication, "dbz_publication");
        // `\\${routedByValue}.events`, table.include.list from two variables, the router's
        // other columns at Debezium's defaults: exactly our default router.
        assert_eq!(config.router, RouterConfig::default());
        assert_eq!(config.wire_format, WireFormat::Debezium);
        assert_eq!(config.message_properties, MessageProperties::Debezium);
        assert!(
            config.notes.iter().all(|note| !note.warning),
            "{:?}",
            config.notes
        );
    }

    #[test]
    fn every_ignored_key_gets_one_note_with_its_reason_and_no_value() {
        let config = Config::from_cli_with_env(
            Cli {
                debezium_properties: Some(the_originals_file()),
                ..cli()
            },
            &env_of(ORIGINAL_ENV),
        )
        .unwrap();
        let note = |key: &str| -> String {
            let found: Vec<&ConfigNote> =
                config.notes.iter().filter(|n| n.setting == key).collect();
            assert_eq!(found.len(), 1, "one note for {key}: {:?}", config.notes);
            found[0].message.clone()
        };
        assert!(
            note("debezium.source.offset.storage.file.filename")
                .contains("the replication slot's confirmed position is the relay's position")
        );
        assert!(note("debezium.source.offset.flush.interval.ms").starts_with("ignored: "));
        assert!(note("debezium.source.topic.prefix").contains("route.topic.replacement"));
        assert!(
            note("debezium.source.tombstones.on.delete").contains("a delete publishes nothing")
        );
        assert!(note("debezium.format.key").contains("RELAY_WIRE_FORMAT"));
        assert!(note("debezium.format.value").contains("RELAY_WIRE_FORMAT"));
        assert!(note("debezium.source.connector.class").contains("its own PostgreSQL connector"));
        assert!(note("debezium.sink.type").contains("RabbitMQ only"));
        assert!(note("debezium.sink.rabbitmq.ackTimeout").contains("publisher confirm"));
        assert!(note("quarkus.log.console.json").contains("Quarkus"));
        assert!(
            note("debezium.transforms.outbox.table.expand.json.payload")
                .contains("always expanded")
        );
        // Keys the relay reads get no note.
        for read in [
            "debezium.source.database.port",
            "debezium.source.database.password",
            "debezium.sink.rabbitmq.connection.password",
            "debezium.source.schema.include.list",
            "debezium.transforms.outbox.route.topic.replacement",
            "debezium.source.plugin.name",
        ] {
            assert!(
                config.notes.iter().all(|n| n.setting != read),
                "{read} is read"
            );
        }
        assert_eq!(config.notes.len(), 11, "{:?}", config.notes);
        let all = format!("{:?}", config.notes);
        for secret in ["Db-pw-4419", "Rb-pw-7731"] {
            assert!(!all.contains(secret), "a password in the notes: {all}");
        }
        assert!(!format!("{config:?}").contains("Db-pw-4419"));

        // Unknown keys and other transforms are named too, without expanding their values.
        let properties = DebeziumProperties::parse(
            "debezium.source.database.sslmode=${UNSET_SSL}\n\
             debezium.transforms=unwrap,outbox\n\
             debezium.transforms.unwrap.type=io.debezium.transforms.ExtractNewRecordState\n\
             debezium.transforms.unwrap.drop.tombstones=false\n\
             debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
             debezium.transforms.outbox.route.topic.regex=(?<routedByValue>.*)\n\
             debezium.transforms.outbox.table.expand.json.payload=true\n",
            &no_env,
        )
        .unwrap();
        let notes: Vec<(&str, &str)> = properties
            .notes()
            .iter()
            .map(|n| (n.setting.as_str(), n.message.as_str()))
            .collect();
        assert!(
            notes.contains(&(
                "debezium.source.database.sslmode",
                "ignored: not used by outbox-relay"
            )),
            "{notes:?}"
        );
        assert!(
            notes.contains(&(
                "debezium.transforms.outbox.route.topic.regex",
                "ignored: not used by outbox-relay"
            )),
            "{notes:?}"
        );
        for key in [
            "debezium.transforms.unwrap.type",
            "debezium.transforms.unwrap.drop.tombstones",
        ] {
            assert!(
                notes.iter().any(|(setting, message)| *setting == key
                    && message.contains("transform \"unwrap\" is not applied")),
                "{key}: {notes:?}"
            );
        }
    }

    #[test]
    fn expand_json_payload_false_is_refused_and_unset_is_a_warning() {
        let router = "debezium.transforms=outbox\n\
                      debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n";
        let error = DebeziumProperties::parse(
            &format!("{router}debezium.transforms.outbox.table.expand.json.payload=false\n"),
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("debezium.transforms.outbox.table.expand.json.payload"),
            "{error}"
        );
        assert!(error.contains("false is not supported"), "{error}");
        let properties = DebeziumProperties::parse(router, &no_env).unwrap();
        let warning = properties
            .notes()
            .iter()
            .find(|n| n.setting == "debezium.transforms.outbox.table.expand.json.payload")
            .unwrap();
        assert!(warning.warning);
        assert!(warning.message.contains("always expands"), "{warning:?}");
    }

    #[test]
    fn schema_include_list_must_cover_the_tables() {
        let properties = DebeziumProperties::parse(
            "debezium.source.table.include.list=orders.outbox_event\n\
             debezium.source.schema.include.list=billing\n",
            &no_env,
        )
        .unwrap();
        let error = build(cli(), Some(&properties)).unwrap_err().to_string();
        assert!(
            error.contains("debezium.source.schema.include.list"),
            "{error}"
        );
        assert!(
            error.contains("debezium.source.table.include.list"),
            "{error}"
        );
        assert!(error.contains("orders.outbox_event"), "{error}");
        // RELAY_TABLES is checked against it too, and named.
        let error = build(
            Cli {
                tables: Some("public.outbox".into()),
                ..cli()
            },
            Some(&properties),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("RELAY_TABLES"), "{error}");
        let properties = DebeziumProperties::parse(
            "debezium.source.table.include.list=orders.outbox_event,billing.outbox\n\
             debezium.source.schema.include.list=billing, orders\n",
            &no_env,
        )
        .unwrap();
        build(cli(), Some(&properties)).unwrap();
    }

    #[test]
    fn message_properties_follow_the_wire_format_unless_set() {
        let config = Config::from_cli(cli()).unwrap();
        assert_eq!(config.message_properties, MessageProperties::Full);
        let config = Config::from_cli(Cli {
            wire_format: Some("debezium".into()),
            ..cli()
        })
        .unwrap();
        assert_eq!(config.message_properties, MessageProperties::Debezium);
        let config = Config::from_cli(Cli {
            wire_format: Some("debezium".into()),
            message_properties: Some("full".into()),
            ..cli()
        })
        .unwrap();
        assert_eq!(config.message_properties, MessageProperties::Full);
        let config = Config::from_cli(Cli {
            message_properties: Some("debezium".into()),
            ..cli()
        })
        .unwrap();
        assert_eq!(config.message_properties, MessageProperties::Debezium);
        let error = Config::from_cli(Cli {
            message_properties: Some("some".into()),
            ..cli()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("RELAY_MESSAGE_PROPERTIES"), "{error}");
        assert!(ENV_VARS.contains(&"RELAY_MESSAGE_PROPERTIES"));
    }
}
