//! Configuration from environment variables, with the names of the system we replace.
//!
//! Every value is checked once, at start-up: a bad one fails with a [`ConfigError`] naming the
//! variable. An empty variable counts as unset. The database password is held in a [`Secret`]
//! whose `Debug` and `Display` print `***`, so the configuration can be logged whole.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use events::{IdFormat, UnknownIdFormat};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

/// Every environment variable the binary reads (docker-compose may set only these).
pub const ENV_VARS: &[&str] = &[
    "SERVER_HOST",
    "SERVER_PORT",
    "DB_HOST",
    "DB_PORT",
    "DB_USER",
    "DB_PASSWORD",
    "DB_NAME",
    "DB_SCHEMA",
    "DB_DEBUG",
    "DB_POOL_SIZE",
    "DATABASE_URL",
    "OUTBOX_DELETE_AFTER_INSERT",
    "ID_FORMAT",
    "RUST_LOG",
];

/// The variables that `DATABASE_URL` replaces.
const CONNECTION_VARS: &[&str] = &["DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME"];

/// A configuration value that is wrong, naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable} is invalid: {reason}")]
    Invalid {
        variable: &'static str,
        reason: String,
    },
    #[error("{variable} is not valid UTF-8")]
    NotUnicode { variable: &'static str },
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        reason: reason.into(),
    }
}

pub use service_kit::Secret;

/// A parsed `DATABASE_URL`. It holds the password, so `Debug` prints `***`.
#[derive(Clone)]
pub struct DatabaseUrl(PgConnectOptions);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseUrl(***)")
    }
}

/// The whole configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    /// `OUTBOX_DELETE_AFTER_INSERT`: delete each outbox row in its own transaction right after
    /// inserting it (the relay reads the insert from the WAL; the table stays empty).
    pub outbox_delete_after_insert: bool,
    /// `ID_FORMAT`: `uuid4` (default, what the original system's consumers accept) or `uuid7`
    /// (time-ordered), for new orders, lines and outbox events.
    pub id_format: IdFormat,
    /// `RUST_LOG`: the tracing filter, `info` when unset.
    pub log_filter: String,
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

/// How to reach PostgreSQL and where the tables live.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    /// The database; created at start-up when it does not exist.
    pub name: String,
    /// `DATABASE_URL`, when set: replaces host, port, user, password and name.
    pub url: Option<DatabaseUrl>,
    /// `DB_SCHEMA`: the schema of the tables, created when missing. Lower-case identifier.
    pub schema: String,
    /// `DB_DEBUG`: log every SQL statement with its duration at INFO level.
    pub debug: bool,
    /// `DB_POOL_SIZE`: maximum connections in the pool, default 10.
    pub pool_size: u32,
}

impl DatabaseConfig {
    /// Connection options for the configured database, with the schema as `search_path`, the
    /// session time zone UTC and statement logging as `DB_DEBUG` asks.
    ///
    /// UTC matters on a database the original system created: its `timestamp` columns (without
    /// time zone) hold UTC wall time, and PostgreSQL converts to and from them with the
    /// session's zone.
    pub fn connect_options(&self) -> PgConnectOptions {
        let base = match &self.url {
            Some(url) => url.0.clone(),
            None => PgConnectOptions::new()
                .host(&self.host)
                .port(self.port)
                .username(&self.user)
                .password(self.password.expose())
                .database(&self.name),
        };
        let options = base
            .application_name("order-service")
            .options([("search_path", self.schema.as_str()), ("TimeZone", "UTC")]);
        if self.debug {
            options
                .log_statements(tracing::log::LevelFilter::Info)
                .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1))
        } else {
            options
                .log_statements(tracing::log::LevelFilter::Debug)
                .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1))
        }
    }

    /// `host:port/database as user`, for messages: never the password.
    pub fn describe(&self) -> String {
        format!(
            "{}:{}/{} as user {}",
            self.host, self.port, self.name, self.user
        )
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut values = HashMap::new();
        for &variable in ENV_VARS {
            match std::env::var(variable) {
                Ok(value) => {
                    values.insert(variable, value);
                }
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(ConfigError::NotUnicode { variable });
                }
            }
        }
        Self::from_lookup(|name| values.get(name).cloned())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let mut warnings = Vec::new();

        let server = ServerConfig {
            host: get("SERVER_HOST").unwrap_or_else(|| "127.0.0.1".to_owned()),
            port: parse_or("SERVER_PORT", get("SERVER_PORT"), 3000)?,
        };
        if server.host.trim().is_empty() || server.host.contains(char::is_whitespace) {
            return Err(invalid(
                "SERVER_HOST",
                "expected an IP address or host name",
            ));
        }

        let schema = get("DB_SCHEMA").unwrap_or_else(|| "orders".to_owned());
        check_schema(&schema)?;
        let pool_size: u32 = parse_or("DB_POOL_SIZE", get("DB_POOL_SIZE"), 10)?;
        if !(1..=1000).contains(&pool_size) {
            return Err(invalid(
                "DB_POOL_SIZE",
                format!("{pool_size} is out of range: expected 1 to 1000"),
            ));
        }

        let mut database = DatabaseConfig {
            host: get("DB_HOST").unwrap_or_else(|| "127.0.0.1".to_owned()),
            port: parse_or("DB_PORT", get("DB_PORT"), 5432)?,
            user: get("DB_USER").unwrap_or_else(|| "postgres".to_owned()),
            password: Secret::new(get("DB_PASSWORD").unwrap_or_else(|| "postgres".to_owned())),
            name: get("DB_NAME").unwrap_or_else(|| "orderdb".to_owned()),
            url: None,
            schema,
            debug: parse_bool("DB_DEBUG", get("DB_DEBUG"), false)?,
            pool_size,
        };
        if database.port == 0 {
            return Err(invalid("DB_PORT", "0 is not a valid port"));
        }
        if let Some(url) = get("DATABASE_URL") {
            let ignored: Vec<&str> = CONNECTION_VARS
                .iter()
                .copied()
                .filter(|name| get(name).is_some())
                .collect();
            if !ignored.is_empty() {
                warnings.push(format!(
                    "DATABASE_URL is set, so {} {} ignored",
                    ignored.join(", "),
                    if ignored.len() == 1 { "is" } else { "are" }
                ));
            }
            let options = parse_database_url(&url)?;
            database.host = options.get_host().to_owned();
            database.port = options.get_port();
            database.user = options.get_username().to_owned();
            database.name = options
                .get_database()
                .map(str::to_owned)
                .unwrap_or_else(|| database.user.clone());
            database.password = Secret::new("");
            database.url = Some(DatabaseUrl(options));
        }
        check_database_name(&database.name)?;

        Ok(Self {
            server,
            database,
            outbox_delete_after_insert: parse_bool(
                "OUTBOX_DELETE_AFTER_INSERT",
                get("OUTBOX_DELETE_AFTER_INSERT"),
                false,
            )?,
            id_format: match get("ID_FORMAT") {
                None => IdFormat::default(),
                Some(text) => text
                    .parse()
                    .map_err(|err: UnknownIdFormat| invalid("ID_FORMAT", err.to_string()))?,
            },
            log_filter: get("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
            warnings,
        })
    }
}

fn parse_or<T: FromStr>(
    variable: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match value {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|err| invalid(variable, format!("{text:?} is not valid here: {err}"))),
    }
}

fn parse_bool(
    variable: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(
            variable,
            format!("{text:?} is not a boolean: expected true or false"),
        )),
    }
}

/// Parses `DATABASE_URL` without ever echoing it: it may hold a password.
fn parse_database_url(url: &str) -> Result<PgConnectOptions, ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            "DATABASE_URL",
            "expected a URL starting with postgres:// or postgresql://",
        ));
    }
    PgConnectOptions::from_str(url).map_err(|err| {
        let reason = match err {
            // The driver's message may quote the URL: say only what is wrong in general.
            sqlx::Error::Configuration(source) => redact(&source.to_string(), url),
            other => redact(&other.to_string(), url),
        };
        invalid(
            "DATABASE_URL",
            format!("not a valid PostgreSQL URL: {reason}"),
        )
    })
}

/// Replaces the URL and its password, if a message quotes them.
fn redact(message: &str, url: &str) -> String {
    let mut cleaned = message.replace(url, "<DATABASE_URL>");
    if let Some(password) = url_password(url).filter(|password| !password.is_empty()) {
        cleaned = cleaned.replace(password, "***");
    }
    cleaned
}

fn url_password(url: &str) -> Option<&str> {
    let after_scheme = url.split_once("://")?.1;
    let credentials = after_scheme.split('@').next()?;
    if !after_scheme.contains('@') {
        return None;
    }
    credentials.split_once(':').map(|(_, password)| password)
}

fn check_schema(schema: &str) -> Result<(), ConfigError> {
    let valid = schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "DB_SCHEMA",
            format!(
                "{schema:?} is not a schema name: expected at most 63 lower-case letters, digits and underscores, not starting with a digit"
            ),
        ))
    }
}

fn check_database_name(name: &str) -> Result<(), ConfigError> {
    let variable = "DB_NAME";
    if name.len() > 63 || name.contains('\0') || name.trim().is_empty() {
        return Err(invalid(
            variable,
            format!("{name:?} is not a database name: expected 1 to 63 bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
    fn defaults_are_those_of_the_original() {
        let config = config(&[]).unwrap();
        assert_eq!(config.server.host, "127.0.0.1");
        assert_eq!(config.server.port, 3000);
        assert_eq!(config.database.host, "127.0.0.1");
        assert_eq!(config.database.port, 5432);
        assert_eq!(config.database.user, "postgres");
        assert_eq!(config.database.password.expose(), "postgres");
        assert_eq!(config.database.name, "orderdb");
        assert_eq!(config.database.schema, "orders");
        assert!(!config.database.debug);
        assert!(!config.outbox_delete_after_insert);
        assert_eq!(config.id_format, IdFormat::Uuid4);
        assert_eq!(config.log_filter, "info");
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
        assert_eq!(config.log_filter, "debug");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = config(&[("SERVER_PORT", ""), ("DB_NAME", "")]).unwrap();
        assert_eq!(config.server.port, 3000);
        assert_eq!(config.database.name, "orderdb");
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
    fn every_variable_read_is_listed() {
        let read = std::cell::RefCell::new(Vec::new());
        Config::from_lookup(|name| {
            read.borrow_mut().push(name.to_owned());
            None
        })
        .unwrap();
        for name in read.into_inner() {
            assert!(
                ENV_VARS.contains(&name.as_str()),
                "{name} is not in ENV_VARS"
            );
        }
    }
}
