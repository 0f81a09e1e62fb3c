//! Configuration from environment variables, with the names of the system we replace.
//!
//! Read under the rules shared by the three binaries ([`service_kit::env`]): every value is
//! checked once, at start-up, and a bad one fails with a [`ConfigError`] naming the variable; an
//! empty variable counts as unset; a value that is not UTF-8 is an error. The database password
//! is held in a [`Secret`] whose `Debug` and `Display` print `***`, so the configuration can be
//! logged whole.

use std::sync::LazyLock;

use events::{IdFormat, UnknownIdFormat};
use service_kit::env::Vars;
use service_kit::logging::LogFilter;
use service_kit::postgres::{DatabaseDefaults, DatabaseSettings, PgSettings};
use service_kit::traces::TraceSettings;

pub use service_kit::{ConfigError, Secret};

/// Every environment variable the binary reads (docker-compose may set only these), found by
/// running the reader itself: no second list to keep in step.
pub static ENV_VARS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| service_kit::env::names_read(Config::from_vars));

/// The database defaults: the original system's, and our name in `pg_stat_activity` (unless
/// the URL sets one).
const DATABASE_DEFAULTS: DatabaseDefaults = DatabaseDefaults {
    application_name: "order-service",
    database: "orderdb",
    schema: "orders",
    pool_size: 10,
};

/// The whole configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// `DATABASE_URL` (query string kept) or `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_PASSWORD`,
    /// `DB_NAME` (created at start-up when it does not exist); `DB_SCHEMA` (default `orders`),
    /// `DB_DEBUG`, `DB_POOL_SIZE` (default 10).
    pub database: DatabaseSettings,
    /// `OUTBOX_DELETE_AFTER_INSERT`: delete each outbox row in its own transaction right after
    /// inserting it (the relay reads the insert from the WAL; the table stays empty).
    pub outbox_delete_after_insert: bool,
    /// `ID_FORMAT`: `uuid4` (default, what the original system's consumers accept) or `uuid7`
    /// (time-ordered), for new orders, lines and outbox events.
    pub id_format: IdFormat,
    /// `OUTBOX_TRACING_SPAN_CONTEXT_FIELD`: the outbox column that receives each event's W3C
    /// trace context (Debezium's `tracing.span.context.field`), default `tracingspancontext`;
    /// `none` stores none.
    pub outbox_trace_column: Option<String>,
    /// `RUST_LOG`: the tracing filter, `info` when unset; checked here.
    pub log_filter: LogFilter,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`.
    pub traces: TraceSettings,
    /// Settings that are valid but surprising, to log once logging is set up.
    pub warnings: Vec<String>,
}

/// Where the HTTP API listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `SERVER_HOST`, default `127.0.0.1` (docker sets `0.0.0.0`).
    pub host: String,
    /// `SERVER_PORT`, default 3000; 0 picks a free port (tests).
    pub port: u16,
}

impl Config {
    /// Reads settings through `lookup`, a map in tests (the binary reads the process
    /// environment: `from_vars(&Vars::process())`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        service_kit::env::from_lookup(lookup, Self::from_vars)
    }

    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        let server = ServerConfig {
            host: vars.string_or("SERVER_HOST", "127.0.0.1")?,
            port: vars.listen_port_or("SERVER_PORT", 3000)?,
        };
        if server.host.trim().is_empty() || server.host.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "SERVER_HOST",
                "expected an IP address or host name",
            ));
        }

        let ignored = PgSettings::ignored_parts(vars)?;
        if !ignored.is_empty() {
            warnings.push(format!(
                "DATABASE_URL is set, so {} {} ignored",
                ignored.join(", "),
                if ignored.len() == 1 { "is" } else { "are" }
            ));
        }
        let database = DatabaseSettings::from_vars(vars, DATABASE_DEFAULTS)?;

        Ok(Self {
            server,
            database,
            outbox_delete_after_insert: vars.bool_or("OUTBOX_DELETE_AFTER_INSERT", false)?,
            id_format: match vars.get("ID_FORMAT")? {
                None => IdFormat::default(),
                Some(text) => text.parse().map_err(|err: UnknownIdFormat| {
                    ConfigError::new("ID_FORMAT", err.to_string())
                })?,
            },
            outbox_trace_column: trace_column(vars)?,
            log_filter: LogFilter::from_vars(vars)?,
            traces: TraceSettings::from_vars(vars, "order-service")?,
            warnings,
        })
    }
}

/// `OUTBOX_TRACING_SPAN_CONTEXT_FIELD`, checked as an identifier (it is spliced into SQL).
fn trace_column(vars: &Vars<'_>) -> Result<Option<String>, ConfigError> {
    const VARIABLE: &str = "OUTBOX_TRACING_SPAN_CONTEXT_FIELD";
    let name = vars.string_or(VARIABLE, "tracingspancontext")?;
    let name = name.trim();
    if name.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let valid = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(ConfigError::new(
            VARIABLE,
            format!("{name:?} is not a column name (letters, digits, _) or none"),
        ));
    }
    Ok(Some(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    fn error_of(vars: &[(&str, &str)]) -> String {
        config(vars).unwrap_err().to_string()
    }

    #[test]
    fn the_trace_column_is_an_identifier_or_none() {
        assert_eq!(
            config(&[]).unwrap().outbox_trace_column.as_deref(),
            Some("tracingspancontext")
        );
        let named = config(&[("OUTBOX_TRACING_SPAN_CONTEXT_FIELD", "span_ctx")]).unwrap();
        assert_eq!(named.outbox_trace_column.as_deref(), Some("span_ctx"));
        let off = config(&[("OUTBOX_TRACING_SPAN_CONTEXT_FIELD", "None")]).unwrap();
        assert_eq!(off.outbox_trace_column, None);
        for bad in ["1abc", "a b", "x\"y", "a.b"] {
            let error = error_of(&[("OUTBOX_TRACING_SPAN_CONTEXT_FIELD", bad)]);
            assert!(
                error.starts_with("OUTBOX_TRACING_SPAN_CONTEXT_FIELD is invalid"),
                "{error}"
            );
        }
        let error = error_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")]);
        assert!(
            error.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT is invalid"),
            "{error}"
        );
        assert_eq!(config(&[]).unwrap().traces.service_name, "order-service");
    }

    #[test]
    fn defaults_are_those_of_the_original() {
        let config = config(&[]).unwrap();
        assert_eq!(config.server.host, "127.0.0.1");
        assert_eq!(config.server.port, 3000);
        assert_eq!(config.database.connection.host, "127.0.0.1");
        assert_eq!(config.database.connection.port, 5432);
        assert_eq!(config.database.connection.user, "postgres");
        assert_eq!(config.database.connection.password.expose(), "postgres");
        assert_eq!(config.database.connection.database, "orderdb");
        assert_eq!(config.database.schema, "orders");
        assert!(!config.database.debug);
        assert!(!config.outbox_delete_after_insert);
        assert_eq!(config.id_format, IdFormat::Uuid4);
        assert_eq!(config.log_filter.as_str(), "info");
    }

    #[test]
    fn values_are_read() {
        let config = config(&[
            ("SERVER_HOST", "0.0.0.0"),
            ("SERVER_PORT", "8081"),
            ("DB_HOST", "db"),
            ("DB_PORT", "6543"),
            ("DB_USER", "app"),
            ("DB_PASSWORD", "pw"),
            ("DB_NAME", "shop"),
            ("DB_SCHEMA", "sales_2"),
            ("DB_DEBUG", "TRUE"),
            ("DB_POOL_SIZE", "4"),
            ("OUTBOX_DELETE_AFTER_INSERT", "yes"),
            ("ID_FORMAT", "uuid7"),
            ("RUST_LOG", "debug"),
        ])
        .unwrap();
        assert_eq!(config.server.host, "0.0.0.0");
        assert_eq!(config.server.port, 8081);
        assert_eq!(config.database.describe(), "db:6543/shop as user app");
        assert_eq!(config.database.schema, "sales_2");
        assert!(config.database.debug);
        assert_eq!(config.database.pool_size, 4);
        assert!(config.outbox_delete_after_insert);
        assert_eq!(config.id_format, IdFormat::Uuid7);
        assert_eq!(config.log_filter.as_str(), "debug");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = config(&[("SERVER_PORT", ""), ("DB_NAME", "")]).unwrap();
        assert_eq!(config.server.port, 3000);
        assert_eq!(config.database.connection.database, "orderdb");
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (variable, value) in [
            ("SERVER_PORT", "http"),
            ("SERVER_PORT", "70000"),
            ("SERVER_PORT", "-1"),
            ("SERVER_HOST", "my host"),
            ("DB_PORT", "x"),
            ("DB_PORT", "0"),
            ("DB_DEBUG", "maybe"),
            ("DB_SCHEMA", "Orders"),
            ("DB_SCHEMA", "orders; drop table x"),
            ("DB_SCHEMA", "1orders"),
            ("DB_POOL_SIZE", "0"),
            ("DB_POOL_SIZE", "many"),
            ("DB_NAME", "   "),
            ("OUTBOX_DELETE_AFTER_INSERT", "sometimes"),
            ("ID_FORMAT", "uuid1"),
            ("ID_FORMAT", "v4"),
            ("DATABASE_URL", "mysql://u:p@h/db"),
            ("RUST_LOG", "info,[[["),
        ] {
            let message = error_of(&[(variable, value)]);
            assert!(
                message.starts_with(&format!("{variable} is invalid")),
                "{variable}={value}: {message}"
            );
        }
    }

    #[test]
    fn id_format_names_the_accepted_values() {
        assert_eq!(
            error_of(&[("ID_FORMAT", "uuid1")]),
            "ID_FORMAT is invalid: \"uuid1\" is not an id format: expected uuid4 or uuid7"
        );
        assert_eq!(
            config(&[("ID_FORMAT", " UUID4 ")]).unwrap().id_format,
            IdFormat::Uuid4
        );
    }

    #[test]
    fn sessions_use_the_schema_and_utc() {
        let options = config(&[("DB_SCHEMA", "sales")])
            .unwrap()
            .database
            .connect_options();
        assert_eq!(
            options.get_options(),
            Some("-c search_path=sales -c TimeZone=UTC")
        );
    }

    #[test]
    fn database_url_replaces_the_connection_variables() {
        let config = config(&[
            ("DATABASE_URL", "postgres://app:s3cr3t-pw@dbhost:6000/shop"),
            ("DB_HOST", "ignored"),
            ("DB_SCHEMA", "sales"),
        ])
        .unwrap();
        assert_eq!(config.database.describe(), "dbhost:6000/shop as user app");
        assert_eq!(config.database.schema, "sales");
        assert_eq!(
            config.warnings,
            vec!["DATABASE_URL is set, so DB_HOST is ignored".to_owned()]
        );
        let options = config.database.connect_options();
        assert_eq!(options.get_host(), "dbhost");
        assert_eq!(options.get_database(), Some("shop"));
    }

    #[test]
    fn secrets_never_print() {
        let config = config(&[
            ("DB_PASSWORD", "hunter2-password"),
            ("DATABASE_URL", "postgres://app:url-password@h:1/db"),
        ])
        .unwrap();
        let printed = format!("{config:?} {}", config.database.describe());
        assert!(!printed.contains("hunter2-password"), "{printed}");
        assert!(!printed.contains("url-password"), "{printed}");
        assert!(printed.contains("***"));

        let message = error_of(&[("DATABASE_URL", "postgres://app:url-password@h:notaport/db")]);
        assert!(message.starts_with("DATABASE_URL is invalid"), "{message}");
        assert!(!message.contains("url-password"), "{message}");
    }

    #[test]
    fn the_shared_rules_apply() {
        // Booleans in every spelling the kit accepts.
        for (text, expected) in [("on", true), ("OFF", false), ("1", true), ("no", false)] {
            let config =
                config(&[("DB_DEBUG", text), ("OUTBOX_DELETE_AFTER_INSERT", text)]).unwrap();
            assert_eq!(config.database.debug, expected, "{text}");
            assert_eq!(config.outbox_delete_after_insert, expected, "{text}");
        }
        // A variable that is not UTF-8 is an error naming it, not an unset one.
        let lookup = |name: &str| match name {
            "DB_HOST" => Err(std::env::VarError::NotUnicode("x".into())),
            _ => Err(std::env::VarError::NotPresent),
        };
        let error = Config::from_vars(&Vars::new(&lookup)).unwrap_err();
        assert_eq!(error.variable, "DB_HOST");
        assert!(error.to_string().contains("not valid UTF-8"), "{error}");
    }

    #[test]
    fn the_database_url_keeps_its_query_string() {
        let config = config(&[(
            "DATABASE_URL",
            "postgres://app:pw@dbhost:6000/shop?sslmode=disable&application_name=ops",
        )])
        .unwrap();
        assert!(matches!(
            config.database.connection.ssl_mode,
            sqlx::postgres::PgSslMode::Disable
        ));
        let options = config.database.connect_options();
        assert_eq!(options.get_application_name(), Some("ops"));
        assert!(matches!(
            options.get_ssl_mode(),
            sqlx::postgres::PgSslMode::Disable
        ));
    }
}
