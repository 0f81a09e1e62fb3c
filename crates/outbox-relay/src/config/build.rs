//! Flags and variables ([`Cli`]), the Debezium properties file and the defaults → [`Config`].
//! Each setting is picked once (flag/variable, else file, else default) and checked under the
//! shared rules ([`service_kit::env`]), its error naming where the value came from.

use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use service_kit::amqp::{self, AmqpParts};
use service_kit::env::parse_in;
use service_kit::logging::LogFilter;
use service_kit::postgres::{self, PgParts};
use service_kit::traces::TraceSettings;
use wire_format::WireFormat;

use super::{
    AmqpSettings, Cli, Config, ConfigError, ConfigNote, DebeziumProperties, MessageProperties,
    PollingSettings, PostgresSettings, Secret, SourceKind, invalid,
};
use crate::router::{ExchangeType, Placement, RouterConfig, RoutingKeySource, TableName};

/// The relay's own defaults, written once (the PostgreSQL and RabbitMQ connection defaults are
/// the kit's, shared with the two services). The flags' help texts repeat them for `--help`.
pub(super) mod defaults {
    pub const DATABASE: &str = "orderdb";
    pub const SLOT: &str = "outbox_relay";
    pub const PUBLICATION: &str = "outbox_publication";
    /// With a properties file: Debezium's own, so a relay taking over reuses them.
    pub const DEBEZIUM_SLOT: &str = "debezium";
    pub const DEBEZIUM_PUBLICATION: &str = "dbz_publication";
    pub const TABLES: &str = "orders.outbox_event";
    pub const ROUTE_BY_FIELD: &str = "aggregate_type";
    pub const ROUTE_TOPIC_REPLACEMENT: &str = "${routedByValue}.events";
    pub const FIELD_EVENT_ID: &str = "id";
    pub const FIELD_EVENT_KEY: &str = "aggregate_id";
    pub const FIELD_EVENT_TYPE: &str = "type";
    pub const FIELD_EVENT_PAYLOAD: &str = "payload";
    pub const FIELDS_ADDITIONAL_PLACEMENT: &str = "type:header:eventType";
    pub const TRACING_SPAN_CONTEXT_FIELD: &str = "tracingspancontext";
    pub const WINDOW_EVENTS: usize = 1024;
    pub const WINDOW_BYTES: usize = 16 * 1024 * 1024;
    pub const HTTP_HOST: &str = "127.0.0.1";
    pub const HTTP_PORT: u16 = 8080;
    pub const CONNECT_TIMEOUT_SECS: u64 = 10;
    pub const SHUTDOWN_TIMEOUT_SECS: u64 = 30;
    pub const STATUS_INTERVAL_MS: u64 = 1000;
    pub const POLL_INTERVAL_MS: u64 = 100;
    pub const POLL_BATCH_SIZE: usize = 500;
}

/// A setting's value and the name to blame if it is invalid.
struct Setting {
    value: String,
    name: String,
}

impl Setting {
    fn non_empty(&self) -> Result<String, ConfigError> {
        let value = self.value.trim();
        if value.is_empty() {
            return Err(invalid(&self.name, "must not be empty"));
        }
        Ok(value.to_owned())
    }

    fn number_in<T>(&self, range: RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        Ok(parse_in(&self.name, &self.value, range)?)
    }

    /// A value parsed by `parse`, whose message is the reason.
    fn parse_with<T, E: std::fmt::Display>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, ConfigError> {
        parse(&self.value).map_err(|reason| invalid(&self.name, reason.to_string()))
    }

    /// Identifiers spliced into SQL and replication commands: letters, digits, underscores.
    fn identifier(&self) -> Result<String, ConfigError> {
        let value = self.non_empty()?;
        let valid = value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !value.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(invalid(
                &self.name,
                format!(
                    "{value:?} must be 1-63 lowercase letters, digits or underscores, not starting with a digit"
                ),
            ));
        }
        Ok(value)
    }
}

/// A flag or variable's value; empty counts as unset (the shared rule).
fn given(value: Option<&String>) -> Option<&String> {
    value.filter(|value| !value.is_empty())
}

/// The flag/env value, else the properties-file value, else the default.
fn pick(
    cli: Option<&String>,
    env_name: &str,
    file: Option<(String, &str)>,
    default: &str,
) -> Setting {
    if let Some(value) = given(cli) {
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

/// The flag/env value, else the default (settings a properties file does not have).
fn flag(cli: Option<&String>, env_name: &str, default: impl ToString) -> Setting {
    pick(cli, env_name, None, &default.to_string())
}

pub(super) fn build(cli: Cli, file: Option<&DebeziumProperties>) -> Result<Config, ConfigError> {
    let file_source = |suffix: &str| file.and_then(|f| f.source(suffix));
    let file_outbox = |suffix: &str| file.and_then(|f| f.outbox(suffix));

    if let Some((key, plugin)) = file_source("plugin.name")
        && plugin != "pgoutput"
    {
        return Err(invalid(
            &key,
            format!("{plugin:?}: the relay reads only the built-in pgoutput plugin"),
        ));
    }

    let postgres = postgres_settings(&cli, file)?;
    let amqp = amqp_settings(&cli, file)?;

    let (slot_default, publication_default) = if file.is_some() {
        (defaults::DEBEZIUM_SLOT, defaults::DEBEZIUM_PUBLICATION)
    } else {
        (defaults::SLOT, defaults::PUBLICATION)
    };
    let slot = pick(
        cli.slot.as_ref(),
        "RELAY_SLOT",
        file_source("slot.name"),
        slot_default,
    )
    .identifier()?;
    let publication = pick(
        cli.publication.as_ref(),
        "RELAY_PUBLICATION",
        file_source("publication.name"),
        publication_default,
    )
    .identifier()?;
    let tables_setting = pick(
        cli.tables.as_ref(),
        "RELAY_TABLES",
        file_source("table.include.list"),
        defaults::TABLES,
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
    let wire_format: WireFormat = flag(cli.wire_format.as_ref(), "RELAY_WIRE_FORMAT", wire_default)
        .parse_with(|text| text.trim().parse::<WireFormat>())?;
    let message_properties = flag(
        cli.message_properties.as_ref(),
        "RELAY_MESSAGE_PROPERTIES",
        MessageProperties::default_for(wire_format).as_str(),
    )
    .parse_with(MessageProperties::parse)?;
    let routing_key = flag(cli.routing_key.as_ref(), "RELAY_ROUTING_KEY", "empty")
        .parse_with(RoutingKeySource::parse)?;

    let column = |cli_value: Option<&String>, env: &str, suffix: &str, default: &str| {
        pick(cli_value, env, file_outbox(suffix), default).non_empty()
    };
    let route_by_field = column(
        cli.route_by_field.as_ref(),
        "RELAY_ROUTE_BY_FIELD",
        "route.by.field",
        defaults::ROUTE_BY_FIELD,
    )?;
    let replacement_setting = pick(
        cli.route_topic_replacement.as_ref(),
        "RELAY_ROUTE_TOPIC_REPLACEMENT",
        file_outbox("route.topic.replacement"),
        defaults::ROUTE_TOPIC_REPLACEMENT,
    );
    let route_topic_replacement = replacement_setting.non_empty()?;
    let mut notes = file.map(|f| f.notes().to_vec()).unwrap_or_default();
    if !route_topic_replacement.contains("${routedByValue}") {
        notes.push(ConfigNote::warning(
            &replacement_setting.name,
            "route.topic.replacement has no ${routedByValue}: every event goes to one exchange",
        ));
    }
    let router = RouterConfig {
        tables,
        route_by_field,
        route_topic_replacement,
        field_event_id: column(
            cli.field_event_id.as_ref(),
            "RELAY_FIELD_EVENT_ID",
            "table.field.event.id",
            defaults::FIELD_EVENT_ID,
        )?,
        field_event_key: column(
            cli.field_event_key.as_ref(),
            "RELAY_FIELD_EVENT_KEY",
            "table.field.event.key",
            defaults::FIELD_EVENT_KEY,
        )?,
        field_event_type: column(
            cli.field_event_type.as_ref(),
            "RELAY_FIELD_EVENT_TYPE",
            "table.field.event.type",
            defaults::FIELD_EVENT_TYPE,
        )?,
        field_event_payload: column(
            cli.field_event_payload.as_ref(),
            "RELAY_FIELD_EVENT_PAYLOAD",
            "table.field.event.payload",
            defaults::FIELD_EVENT_PAYLOAD,
        )?,
        additional_placement: pick(
            cli.fields_additional_placement.as_ref(),
            "RELAY_FIELDS_ADDITIONAL_PLACEMENT",
            file_outbox("table.fields.additional.placement"),
            defaults::FIELDS_ADDITIONAL_PLACEMENT,
        )
        .parse_with(Placement::parse_list)?,
        tracing_span_context_field: {
            let setting = pick(
                cli.tracing_span_context_field.as_ref(),
                "RELAY_TRACING_SPAN_CONTEXT_FIELD",
                file_outbox("tracing.span.context.field"),
                defaults::TRACING_SPAN_CONTEXT_FIELD,
            );
            let name = setting.value.trim();
            (!name.is_empty() && !name.eq_ignore_ascii_case("none")).then(|| name.to_owned())
        },
        routing_key,
    };

    let exchange_type = flag(cli.exchange_type.as_ref(), "RELAY_EXCHANGE_TYPE", "fanout")
        .parse_with(ExchangeType::parse)?;
    let dead_letter_exchange = given(cli.dead_letter_exchange.as_ref())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty());

    let window_events = flag(
        cli.window_events.as_ref(),
        "RELAY_WINDOW_EVENTS",
        defaults::WINDOW_EVENTS,
    )
    .number_in(1..=usize::MAX)?;
    let window_bytes = flag(
        cli.window_bytes.as_ref(),
        "RELAY_WINDOW_BYTES",
        defaults::WINDOW_BYTES,
    )
    .number_in(1024..=usize::MAX)?;
    let http_host = flag(
        cli.http_host.as_ref(),
        "RELAY_HTTP_HOST",
        defaults::HTTP_HOST,
    )
    .non_empty()?;
    // 0 picks a free port.
    let http_port = flag(
        cli.http_port.as_ref(),
        "RELAY_HTTP_PORT",
        defaults::HTTP_PORT,
    )
    .number_in(0..=u16::MAX)?;
    let connect_timeout_secs = flag(
        cli.connect_timeout_secs.as_ref(),
        "RELAY_CONNECT_TIMEOUT_SECS",
        defaults::CONNECT_TIMEOUT_SECS,
    )
    .number_in(0..=86_400)?;
    let shutdown_timeout_secs = flag(
        cli.shutdown_timeout_secs.as_ref(),
        "RELAY_SHUTDOWN_TIMEOUT_SECS",
        defaults::SHUTDOWN_TIMEOUT_SECS,
    )
    .number_in(0..=86_400)?;
    // PostgreSQL expects a status at least every 10 s.
    let status_interval_ms = flag(
        cli.status_interval_ms.as_ref(),
        "RELAY_STATUS_INTERVAL_MS",
        defaults::STATUS_INTERVAL_MS,
    )
    .number_in(10..=10_000)?;
    let log_format = flag(cli.log_format.as_ref(), "RELAY_LOG_FORMAT", "text")
        .parse_with(|text| text.parse::<service_kit::logging::LogFormat>())?;
    let log_filter = LogFilter::parse(
        "RUST_LOG",
        &flag(cli.log_filter.as_ref(), "RUST_LOG", "info").value,
    )?;

    let source =
        flag(cli.source.as_ref(), "RELAY_SOURCE", "replication").parse_with(SourceKind::parse)?;
    let poll_interval_ms = flag(
        cli.poll_interval_ms.as_ref(),
        "RELAY_POLL_INTERVAL_MS",
        defaults::POLL_INTERVAL_MS,
    )
    .number_in(1..=60_000)?;
    let poll_batch_size = flag(
        cli.poll_batch_size.as_ref(),
        "RELAY_POLL_BATCH_SIZE",
        defaults::POLL_BATCH_SIZE,
    )
    .number_in(1..=100_000)?;

    Ok(Config {
        postgres,
        amqp,
        slot,
        publication,
        router,
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
        log_filter,
        traces: TraceSettings::disabled("outbox-relay"),
        source,
        polling: PollingSettings {
            interval: Duration::from_millis(poll_interval_ms),
            batch_size: poll_batch_size,
        },
        notes,
    })
}

/// `DATABASE_URL` (its query string kept), else each `DB_*` from flag/env, file or default.
fn postgres_settings(
    cli: &Cli,
    file: Option<&DebeziumProperties>,
) -> Result<PostgresSettings, ConfigError> {
    if let Some(url) = given(cli.database_url.as_ref()) {
        return Ok(PostgresSettings::from_url(
            "DATABASE_URL",
            url,
            defaults::DATABASE,
        )?);
    }
    let file_source = |suffix: &str| file.and_then(|f| f.source(suffix));
    let database = pick(
        cli.db_name.as_ref(),
        "DB_NAME",
        file_source("database.dbname"),
        defaults::DATABASE,
    );
    // TLS: the flags/variables, else Debezium's `database.sslmode` and `database.sslrootcert`
    // (a relay taking over Debezium's configuration must not connect in clear text where
    // Debezium used TLS).
    let ssl_mode = pick(
        cli.db_sslmode.as_ref(),
        "DB_SSLMODE",
        file_source("database.sslmode"),
        "",
    );
    let ssl_root_cert = pick(
        cli.db_sslrootcert.as_ref(),
        "DB_SSLROOTCERT",
        file_source("database.sslrootcert"),
        "",
    );
    let parts = PgParts {
        host: pick(
            cli.db_host.as_ref(),
            "DB_HOST",
            file_source("database.hostname"),
            postgres::DEFAULT_HOST,
        )
        .non_empty()?,
        port: pick(
            cli.db_port.as_ref(),
            "DB_PORT",
            file_source("database.port"),
            &postgres::DEFAULT_PORT.to_string(),
        )
        .number_in(1..=u16::MAX)?,
        user: pick(
            cli.db_user.as_ref(),
            "DB_USER",
            file_source("database.user"),
            postgres::DEFAULT_USER,
        )
        .non_empty()?,
        password: Secret::new(
            pick(
                cli.db_password.as_ref(),
                "DB_PASSWORD",
                file_source("database.password"),
                postgres::DEFAULT_PASSWORD,
            )
            .value,
        ),
        database: database.non_empty()?,
        ssl_mode: match ssl_mode.value.as_str() {
            "" => None,
            mode => Some(postgres::parse_ssl_mode(&ssl_mode.name, mode)?),
        },
        ssl_root_cert: (!ssl_root_cert.value.is_empty())
            .then(|| std::path::PathBuf::from(&ssl_root_cert.value)),
    };
    PostgresSettings::from_parts(parts).map_err(|error| {
        // The kit names the `DB_*` variable at fault; the value may come from the file.
        match error.variable.as_str() {
            "DB_NAME" => invalid(&database.name, error.reason),
            "DB_SSLROOTCERT" => invalid(&ssl_root_cert.name, error.reason),
            _ => error.into(),
        }
    })
}

/// `AMQP_URL`, else each `RABBITMQ_*` from flag/env, file or default.
fn amqp_settings(
    cli: &Cli,
    file: Option<&DebeziumProperties>,
) -> Result<AmqpSettings, ConfigError> {
    if let Some(url) = given(cli.amqp_url.as_ref()) {
        return Ok(AmqpSettings::from_url("AMQP_URL", url)?);
    }
    let file_sink = |suffix: &str| file.and_then(|f| f.sink(suffix));
    // A comma-separated host list names the nodes of a cluster.
    Ok(AmqpSettings::from_hosts(
        "RABBITMQ_HOST",
        AmqpParts {
            host: pick(
                cli.rabbitmq_host.as_ref(),
                "RABBITMQ_HOST",
                file_sink("connection.host"),
                amqp::DEFAULT_HOST,
            )
            .non_empty()?,
            port: pick(
                cli.rabbitmq_port.as_ref(),
                "RABBITMQ_PORT",
                file_sink("connection.port"),
                &amqp::DEFAULT_PORT.to_string(),
            )
            .number_in(1..=u16::MAX)?,
            user: pick(
                cli.rabbitmq_user.as_ref(),
                "RABBITMQ_USER",
                file_sink("connection.username"),
                amqp::DEFAULT_USER,
            )
            .value,
            password: Secret::new(
                pick(
                    cli.rabbitmq_password.as_ref(),
                    "RABBITMQ_PASSWORD",
                    file_sink("connection.password"),
                    amqp::DEFAULT_PASSWORD,
                )
                .value,
            ),
            vhost: pick(
                cli.rabbitmq_vhost.as_ref(),
                "RABBITMQ_VHOST",
                file_sink("connection.virtual.host"),
                amqp::DEFAULT_VHOST,
            )
            .value,
        },
    )?)
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
