//! PostgreSQL for the three binaries: the connection settings (`DATABASE_URL`, its query string
//! kept, or the `DB_*` parts), the database and schema created at start when missing, and the
//! one rule for "the database is unavailable" (as opposed to "this statement failed").
//!
//! Settings are printed as `host:port/database as user name`, never with the password.
//!
//! TLS: `sslmode` (`disable`, `prefer` the default, `require`, `verify-ca`, `verify-full`, as
//! libpq) and `sslrootcert`/`sslcert`/`sslkey` come from the URL's query string, or from
//! `DB_SSLMODE`/`DB_SSLROOTCERT` with the parts. They are kept as fields (not only inside the
//! driver's options) because the relay's replication connection is not made by sqlx and must
//! honour the same settings. Certificate files are read once at start, so a missing or
//! unreadable one fails with the setting's name instead of at the first connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
pub use sqlx::postgres::PgSslMode;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::Secret;
use crate::env::{ConfigError, Vars};
use crate::migrate::{Baseline, SchemaOrigin, migrate_adopting};

/// The `DB_*` defaults shared by the binaries (those of the original system).
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 5432;
pub const DEFAULT_USER: &str = "postgres";
pub const DEFAULT_PASSWORD: &str = "postgres";

/// Every variable [`PgSettings::from_vars`] reads.
pub const ENV_VARS: &[&str] = &[
    "DATABASE_URL",
    "DB_HOST",
    "DB_PORT",
    "DB_USER",
    "DB_PASSWORD",
    "DB_NAME",
    "DB_SSLMODE",
    "DB_SSLROOTCERT",
];
/// The variables `DATABASE_URL` replaces: all the others.
pub const PART_VARS: &[&str] = ENV_VARS.split_at(1).1;

/// SQLSTATE `invalid_catalog_name`: the database does not exist.
const UNDEFINED_DATABASE: &str = "3D000";
/// SQLSTATE `duplicate_database`: someone else created it first.
const DUPLICATE_DATABASE: &str = "42P04";
/// SQLSTATE `unique_violation`, which a concurrent `CREATE SCHEMA IF NOT EXISTS` may raise.
const UNIQUE_VIOLATION: &str = "23505";

/// The parts of a connection when there is no URL.
#[derive(Debug, Clone)]
pub struct PgParts {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
    /// `None`: `prefer`, as libpq.
    pub ssl_mode: Option<PgSslMode>,
    /// CA certificate(s) (PEM) the server's certificate must chain to (`verify-ca`,
    /// `verify-full`); `None`: the WebPKI (Mozilla) roots.
    pub ssl_root_cert: Option<PathBuf>,
}

/// Where PostgreSQL is and who we are there. `Debug` and [`PgSettings::display`] never show the
/// password.
#[derive(Clone)]
pub struct PgSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
    /// `sslmode` of the URL (or `PGSSLMODE`, else `prefer`): every connection honours it,
    /// the replication one included.
    pub ssl_mode: PgSslMode,
    /// `sslrootcert` of the URL or `DB_SSLROOTCERT`: checked readable at start.
    pub ssl_root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey` of the URL: a client certificate, both or neither.
    pub ssl_client_cert: Option<(PathBuf, PathBuf)>,
    /// What else the URL said (`options`, `application_name`, `sslrootcert`...), as sqlx reads it.
    base: PgConnectOptions,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("target", &self.display())
            .field("password", &self.password)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .finish_non_exhaustive()
    }
}

impl PgSettings {
    /// `DATABASE_URL` when set (the `DB_*` parts are then ignored), else the parts with their
    /// defaults; `default_database` when neither names one.
    pub fn from_vars(vars: &Vars<'_>, default_database: &str) -> Result<Self, ConfigError> {
        if let Some(url) = vars.get("DATABASE_URL")? {
            return Self::from_url("DATABASE_URL", &url, default_database);
        }
        Self::from_parts(PgParts {
            host: vars.string_or("DB_HOST", DEFAULT_HOST)?,
            port: vars.port_or("DB_PORT", DEFAULT_PORT)?,
            user: vars.string_or("DB_USER", DEFAULT_USER)?,
            password: Secret::new(vars.string_or("DB_PASSWORD", DEFAULT_PASSWORD)?),
            database: vars.string_or("DB_NAME", default_database)?,
            ssl_mode: vars
                .get("DB_SSLMODE")?
                .map(|mode| parse_ssl_mode("DB_SSLMODE", &mode))
                .transpose()?,
            ssl_root_cert: vars.get("DB_SSLROOTCERT")?.map(PathBuf::from),
        })
    }

    /// The `DB_*` parts that a set `DATABASE_URL` makes ignored, for a warning.
    pub fn ignored_parts(vars: &Vars<'_>) -> Result<Vec<&'static str>, ConfigError> {
        if vars.get("DATABASE_URL")?.is_none() {
            return Ok(Vec::new());
        }
        let mut ignored = Vec::new();
        for &name in PART_VARS {
            if vars.get(name)?.is_some() {
                ignored.push(name);
            }
        }
        Ok(ignored)
    }

    /// Errors name the `DB_*` variable at fault.
    pub fn from_parts(parts: PgParts) -> Result<Self, ConfigError> {
        check_database_name("DB_NAME", &parts.database)?;
        if let Some(path) = &parts.ssl_root_cert {
            check_readable("DB_SSLROOTCERT", "the root certificate file", path)?;
        }
        let base = PgConnectOptions::new();
        Ok(Self {
            ssl_mode: parts.ssl_mode.unwrap_or(PgSslMode::Prefer),
            ssl_root_cert: parts.ssl_root_cert,
            ssl_client_cert: None,
            host: parts.host,
            port: parts.port,
            user: parts.user,
            password: parts.password,
            database: parts.database,
            base,
        })
    }

    /// Parses `postgres[ql]://user:password@host:port/database?query` without ever echoing it
    /// (it may hold a password); errors name `variable`. The query string is kept.
    pub fn from_url(
        variable: &str,
        url: &str,
        default_database: &str,
    ) -> Result<Self, ConfigError> {
        let url = url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                variable,
                "expected a URL starting with postgres:// or postgresql://",
            ));
        }
        let password = url_password(url)
            .map_err(|reason| ConfigError::new(variable, reason))?
            .unwrap_or_default();
        let base = PgConnectOptions::from_str(url).map_err(|error| {
            // The driver's message may quote the URL: say only what is wrong in general.
            ConfigError::new(
                variable,
                format!(
                    "not a valid PostgreSQL URL (postgres://user:password@host:port/database?options): {}",
                    redact(&error.to_string(), url, &password)
                ),
            )
        })?;
        let database = base.get_database().unwrap_or(default_database).to_owned();
        check_database_name(variable, &database)?;
        let tls_file = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
            let Some(path) = query_value(url, key)
                .map_err(|reason| ConfigError::new(variable, format!("{key} {reason}")))?
            else {
                return Ok(None);
            };
            let path = PathBuf::from(path);
            check_readable(variable, key, &path)?;
            Ok(Some(path))
        };
        let ssl_root_cert = tls_file("sslrootcert")?;
        let ssl_client_cert = crate::env::both_or_neither(
            variable,
            ("sslcert", tls_file("sslcert")?),
            ("sslkey", tls_file("sslkey")?),
        )?;
        Ok(Self {
            host: base.get_host().to_owned(),
            port: base.get_port(),
            user: base.get_username().to_owned(),
            password: Secret::new(password),
            database,
            ssl_mode: base.get_ssl_mode(),
            ssl_root_cert,
            ssl_client_cert,
            base,
        })
    }

    /// Options for the configured database; `application_name` is `name` unless the URL set one.
    pub fn connect_options(&self, application_name: &str) -> PgConnectOptions {
        self.connect_options_for(&self.database, application_name)
    }

    /// Options for another database of the same server (`postgres`, to create ours).
    pub fn connect_options_for(&self, database: &str, application_name: &str) -> PgConnectOptions {
        let options = self
            .base
            .clone()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(self.password.expose())
            .database(database)
            .ssl_mode(self.ssl_mode);
        // Set again from the fields: with the `DB_*` parts the base has none of them.
        let options = match &self.ssl_root_cert {
            Some(path) => options.ssl_root_cert(path),
            None => options,
        };
        let options = match &self.ssl_client_cert {
            Some((cert, key)) => options.ssl_client_cert(cert).ssl_client_key(key),
            None => options,
        };
        if self.base.get_application_name().is_some() {
            options
        } else {
            options.application_name(application_name)
        }
    }

    /// Options for the sessions of a service whose tables live in `schema`: `search_path` =
    /// `schema`, `TimeZone` UTC, every statement logged at INFO with `debug` (`DB_DEBUG`), else
    /// at DEBUG, and slow ones (over a second) at WARN.
    ///
    /// UTC matters on a database the original system created: its `timestamp` columns (without
    /// time zone) hold UTC wall time, as its NodeJS services wrote it, and PostgreSQL converts
    /// to and from them in the session's zone. Explicit, whatever the server's default.
    pub fn session_options(
        &self,
        application_name: &str,
        schema: &str,
        debug: bool,
    ) -> PgConnectOptions {
        use sqlx::ConnectOptions;
        use tracing::log::LevelFilter;
        let statements = if debug {
            LevelFilter::Info
        } else {
            LevelFilter::Debug
        };
        self.connect_options(application_name)
            .options([("search_path", schema), ("TimeZone", "UTC")])
            .log_statements(statements)
            .log_slow_statements(LevelFilter::Warn, std::time::Duration::from_secs(1))
    }

    /// `host:port/database as user name`: for messages, never the password.
    pub fn display(&self) -> String {
        format!(
            "{}:{}/{} as user {}",
            self.host, self.port, self.database, self.user
        )
    }

    /// Whether connections must use TLS (`require`, `verify-ca`, `verify-full`).
    pub fn requires_tls(&self) -> bool {
        matches!(
            self.ssl_mode,
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        )
    }
}

/// The database a service keeps its tables in: where it is (`DATABASE_URL` or the `DB_*` parts),
/// the schema of its tables (`DB_SCHEMA`), statement logging (`DB_DEBUG`) and the pool's size
/// (`DB_POOL_SIZE`). One reading of these for both services.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub connection: PgSettings,
    /// Created when missing; its tables are reached through `search_path`.
    pub schema: String,
    /// Log every statement with its duration at INFO.
    pub debug: bool,
    /// The most connections the pool opens.
    pub pool_size: u32,
    /// What our sessions show in `pg_stat_activity` unless the URL names one.
    pub application_name: &'static str,
}

/// A service's defaults for [`DatabaseSettings::from_vars`].
#[derive(Debug, Clone, Copy)]
pub struct DatabaseDefaults {
    pub application_name: &'static str,
    pub database: &'static str,
    pub schema: &'static str,
    pub pool_size: u32,
}

impl DatabaseSettings {
    pub fn from_vars(vars: &Vars<'_>, defaults: DatabaseDefaults) -> Result<Self, ConfigError> {
        let schema = vars.string_or("DB_SCHEMA", defaults.schema)?;
        check_schema("DB_SCHEMA", &schema)?;
        Ok(Self {
            connection: PgSettings::from_vars(vars, defaults.database)?,
            schema,
            debug: vars.bool_or("DB_DEBUG", false)?,
            pool_size: vars.number_in("DB_POOL_SIZE", defaults.pool_size, 1..=1000)?,
            application_name: defaults.application_name,
        })
    }

    /// The pool's sessions: `search_path` = the schema, `TimeZone` UTC (the original's
    /// `timestamp` columns hold UTC wall time), statements logged as `DB_DEBUG` asks.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connection
            .session_options(self.application_name, &self.schema, self.debug)
    }

    /// `host:port/database as user name`: for messages, never the password.
    pub fn describe(&self) -> String {
        self.connection.display()
    }
}

/// A schema name: lower-case, because `search_path` folds an unquoted name to lower case while
/// the schema is created under its exact (quoted) name; both must name the same schema.
pub fn check_schema(variable: &str, schema: &str) -> Result<(), ConfigError> {
    let valid = schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            variable,
            format!(
                "{schema:?} is not a schema name: expected at most 63 lower-case letters, digits \
                 and underscores, not starting with a digit"
            ),
        ))
    }
}

/// `sslmode` as libpq spells it (`allow` is taken too, as sqlx does).
pub fn parse_ssl_mode(variable: &str, text: &str) -> Result<PgSslMode, ConfigError> {
    PgSslMode::from_str(text.trim()).map_err(|_| {
        ConfigError::new(
            variable,
            format!(
                "{text:?} is not an sslmode: expected disable, prefer, require, verify-ca or \
                 verify-full"
            ),
        )
    })
}

/// A certificate or key file must be readable now: a typo fails at start, naming the setting,
/// rather than as a TLS error at every connection attempt.
fn check_readable(variable: &str, what: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path).map(drop).map_err(|error| {
        ConfigError::new(
            variable,
            format!("{what} {} cannot be read: {error}", path.display()),
        )
    })
}

/// The percent-decoded value of `key` in the URL's query string (`+` is a space, as in forms).
fn query_value(url: &str, key: &str) -> Result<Option<String>, &'static str> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == key {
            return percent_decode(&value.replace('+', " ")).map(Some);
        }
    }
    Ok(None)
}

/// The hint a failed connection's message ends with when TLS was the cause.
pub fn tls_hint(error: &sqlx::Error) -> &'static str {
    match error {
        error if is_tls_failure(error) => {
            " (TLS failed: check sslmode and sslrootcert in DATABASE_URL, or DB_SSLMODE and \
             DB_SSLROOTCERT; verify-ca/verify-full need the CA that signed the server's \
             certificate, and verify-full a host name the certificate names)"
        }
        _ => "",
    }
}

/// Whether the TLS session failed: sqlx says so itself (a server without TLS under `require`), or
/// passes rustls's error on inside an I/O error (a certificate that does not verify).
pub fn is_tls_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}

/// A database name as PostgreSQL takes it: 1 to 63 bytes, no NUL.
fn check_database_name(variable: &str, name: &str) -> Result<(), ConfigError> {
    if name.len() > 63 || name.contains('\0') || name.trim().is_empty() {
        return Err(ConfigError::new(
            variable,
            format!("{name:?} is not a database name: expected 1 to 63 bytes"),
        ));
    }
    Ok(())
}

/// The percent-decoded password of `scheme://user:password@host...`, if it has one.
fn url_password(url: &str) -> Result<Option<String>, &'static str> {
    let Some((_, rest)) = url.split_once("://") else {
        return Ok(None);
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Ok(None);
    };
    match userinfo.split_once(':') {
        Some((_, password)) => percent_decode(password).map(Some),
        None => Ok(None),
    }
}

/// Decodes `%XX` escapes; a malformed one is an error (the drivers would pass it on as text).
pub fn percent_decode(text: &str) -> Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let value = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or("has an invalid %-escape (a % must be followed by two hex digits)")?;
            out.push(value);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once %-decoded")
}

/// Replaces the URL and its password, if a message quotes them.
fn redact(message: &str, url: &str, password: &str) -> String {
    let mut cleaned = message.replace(url, "<url>");
    if !password.is_empty() {
        cleaned = cleaned.replace(password, "***");
    }
    if let Some(raw) = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, raw)| raw)
        .filter(|raw| !raw.is_empty())
    {
        cleaned = cleaned.replace(raw, "***");
    }
    cleaned
}

/// Whether `error` says the database cannot be reached right now (so waiting and retrying is
/// right), as opposed to this statement or these credentials failing: I/O errors, pool
/// timeouts, a closed pool, SQLSTATE class 08 (connection exception) and 57P01/57P02/57P03
/// (admin shutdown, crash shutdown, cannot connect now). A TLS error is not: a certificate that
/// does not verify, or a server without TLS under `sslmode=require`, will not change by waiting.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    if is_tls_failure(error) {
        return false;
    }
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_sqlstate(&code)),
        _ => false,
    }
}

/// SQLSTATEs that mean "unavailable": class 08 and 57P01-57P03.
pub fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// The SQLSTATE of a database error.
pub fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
}

/// Why the database could not be prepared at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot connect to PostgreSQL at {target}: {source}{hint}", hint = tls_hint(.source))]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "database {name:?} does not exist and cannot be created (connected to database \"postgres\" at {target}): {source}"
    )]
    CreateDatabase {
        name: String,
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create schema {schema:?}: {source}")]
    CreateSchema {
        schema: String,
        #[source]
        source: sqlx::Error,
    },
}

impl SetupError {
    /// Whether waiting may help (the server is not reachable yet).
    pub fn is_unavailable(&self) -> bool {
        match self {
            SetupError::Connect { source, .. } => is_unavailable(source),
            _ => false,
        }
    }
}

/// What a service's database needs at start (see [`prepare`]).
#[derive(Debug)]
pub struct Prepare<'a> {
    pub database: &'a DatabaseSettings,
    /// Up to [`DatabaseSettings::pool_size`] connections, and how long a statement may wait
    /// for one.
    pub acquire_timeout: Duration,
    pub migrator: &'a Migrator,
    pub baseline: Baseline<'a>,
}

/// Why a service's database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot apply the migrations: {0}")]
    Migrate(#[from] MigrateError),
}

impl DatabaseError {
    /// Whether waiting may help (the server is not reachable yet).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DatabaseError::Setup(setup) if setup.is_unavailable())
    }
}

/// A service's database at start: created when missing ([`ensure_database`]), the pool
/// connected, the schema created, the migrations applied, adopting a database the original
/// system created ([`migrate_adopting`]: its rows are kept, only what is missing is added).
pub async fn prepare(step: Prepare<'_>) -> Result<(PgPool, SchemaOrigin), DatabaseError> {
    let database = step.database;
    ensure_database(&database.connection, database.application_name).await?;
    let pool = PgPoolOptions::new()
        .max_connections(database.pool_size)
        .acquire_timeout(step.acquire_timeout)
        .connect_with(database.connect_options())
        .await
        .map_err(|source| SetupError::Connect {
            target: database.describe(),
            source,
        })?;
    let origin = migrate_into(&pool, &database.schema, step.migrator, step.baseline).await?;
    Ok((pool, origin))
}

/// Creates `schema` when missing and applies `migrator` into it (the pool's `search_path` is
/// that schema), adopting a database the original system created.
pub async fn migrate_into(
    pool: &PgPool,
    schema: &str,
    migrator: &Migrator,
    baseline: Baseline<'_>,
) -> Result<SchemaOrigin, DatabaseError> {
    create_schema(pool, schema).await?;
    let origin = migrate_adopting(pool, migrator, baseline).await?;
    if origin == SchemaOrigin::Original {
        tracing::info!(
            schema,
            "adopted the original system's tables: every row kept, only missing columns and indexes added"
        );
    }
    Ok(origin)
}

/// Connects once and, when the database does not exist, creates it through the `postgres`
/// database of the same server (another instance creating it at the same moment is fine).
/// Lets `make up` and docker start a service against a bare server.
pub async fn ensure_database(
    settings: &PgSettings,
    application_name: &str,
) -> Result<(), SetupError> {
    match PgConnection::connect_with(&settings.connect_options(application_name)).await {
        Ok(connection) => {
            let _ = connection.close().await;
            return Ok(());
        }
        Err(error) if sqlstate(&error).as_deref() == Some(UNDEFINED_DATABASE) => {}
        Err(source) => {
            return Err(SetupError::Connect {
                target: settings.display(),
                source,
            });
        }
    }
    let create_error = |source| SetupError::CreateDatabase {
        name: settings.database.clone(),
        target: format!(
            "{}:{} as user {}",
            settings.host, settings.port, settings.user
        ),
        source,
    };
    let mut admin =
        PgConnection::connect_with(&settings.connect_options_for("postgres", application_name))
            .await
            .map_err(create_error)?;
    let quoted = format!("\"{}\"", settings.database.replace('"', "\"\""));
    let created = sqlx::query(&format!("CREATE DATABASE {quoted}"))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    match created {
        Ok(_) => {
            tracing::info!(database = %settings.database, "created the database");
            Ok(())
        }
        Err(error) if sqlstate(&error).as_deref() == Some(DUPLICATE_DATABASE) => Ok(()),
        Err(error) => Err(create_error(error)),
    }
}

/// `CREATE SCHEMA IF NOT EXISTS`, tolerating a concurrent creation.
pub async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), SetupError> {
    let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
    match sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
        .execute(pool)
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if sqlstate(&error).as_deref() == Some(UNIQUE_VIOLATION) => Ok(()),
        Err(source) => Err(SetupError::CreateSchema {
            schema: schema.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<PgSettings, ConfigError> {
        crate::env::with(vars, |vars| PgSettings::from_vars(&vars, "appdb"))
    }

    #[test]
    fn the_parts_have_the_original_defaults() {
        let pg = settings(&[]).unwrap();
        assert_eq!(pg.display(), "127.0.0.1:5432/appdb as user postgres");
        assert_eq!(pg.password.expose(), "postgres");
    }

    #[test]
    fn the_url_keeps_its_query_string() {
        let pg = settings(&[(
            "DATABASE_URL",
            "postgresql://app:p%40ss@db.example:6543/shop?sslmode=require&application_name=ops&options=-c%20statement_timeout%3D5s",
        )])
        .unwrap();
        assert_eq!(pg.display(), "db.example:6543/shop as user app");
        assert_eq!(pg.password.expose(), "p@ss");
        assert!(matches!(pg.ssl_mode, PgSslMode::Require));
        assert!(pg.requires_tls());
        let options = pg.connect_options("svc");
        assert_eq!(options.get_application_name(), Some("ops"));
        assert_eq!(options.get_options(), Some("-c statement_timeout=5s"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
        let plain = settings(&[("DATABASE_URL", "postgres://u@h/d?sslmode=disable")]).unwrap();
        assert!(matches!(plain.ssl_mode, PgSslMode::Disable));
        assert_eq!(
            plain.connect_options("svc").get_application_name(),
            Some("svc")
        );
        // No database in the URL: the service's default.
        let no_db = settings(&[("DATABASE_URL", "postgres://u:pw@h:1")]).unwrap();
        assert_eq!(no_db.database, "appdb");
    }

    #[test]
    fn tls_settings_come_from_the_url_or_the_parts_and_files_must_be_readable() {
        // Any readable file stands for a certificate here: only readability is checked.
        let readable = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let url = settings(&[(
            "DATABASE_URL",
            &format!("postgres://u:pw@h/d?sslmode=verify-full&sslrootcert={readable}"),
        )])
        .unwrap();
        assert!(matches!(url.ssl_mode, PgSslMode::VerifyFull));
        assert_eq!(url.ssl_root_cert.as_deref(), Some(Path::new(readable)));
        let parts = settings(&[("DB_SSLMODE", "verify-ca"), ("DB_SSLROOTCERT", readable)]).unwrap();
        assert!(matches!(parts.ssl_mode, PgSslMode::VerifyCa));
        assert_eq!(parts.ssl_root_cert.as_deref(), Some(Path::new(readable)));
        assert!(matches!(
            parts.connect_options("svc").get_ssl_mode(),
            PgSslMode::VerifyCa
        ));
        assert!(matches!(settings(&[]).unwrap().ssl_mode, PgSslMode::Prefer));

        let missing = "/nonexistent/ca.pem";
        let error = settings(&[(
            "DATABASE_URL",
            &format!("postgres://u:pw@h/d?sslmode=verify-full&sslrootcert={missing}"),
        )])
        .unwrap_err();
        assert_eq!(error.variable, "DATABASE_URL");
        assert!(error.to_string().contains("sslrootcert"), "{error}");
        assert!(error.to_string().contains(missing), "{error}");
        let error = settings(&[("DB_SSLROOTCERT", missing)]).unwrap_err();
        assert_eq!(error.variable, "DB_SSLROOTCERT");
        let error = settings(&[("DB_SSLMODE", "verify_full")]).unwrap_err();
        assert_eq!(error.variable, "DB_SSLMODE");
        let error = settings(&[(
            "DATABASE_URL",
            &format!("postgres://u:pw@h/d?sslcert={readable}"),
        )])
        .unwrap_err();
        assert!(error.to_string().contains("sslkey"), "{error}");
    }

    #[test]
    fn bad_urls_name_the_variable_and_never_the_password() {
        for url in [
            "mysql://u:Pw-91x@h/db",
            "postgres://u:Pw-91x@h:notaport/db",
            "postgres://u:Pw-91x%zz@h/db",
        ] {
            let error = settings(&[("DATABASE_URL", url)]).unwrap_err();
            assert_eq!(error.variable, "DATABASE_URL", "{url}: {error}");
            assert!(!error.to_string().contains("Pw-91x"), "{error}");
        }
        let printed = format!(
            "{:?}",
            settings(&[("DATABASE_URL", "postgres://u:Pw-91x@h/db")]).unwrap()
        );
        assert!(!printed.contains("Pw-91x"), "{printed}");
    }

    #[test]
    fn a_tls_failure_is_not_waited_for_and_gets_a_hint() {
        let bad_certificate = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert!(is_tls_failure(&bad_certificate));
        assert!(!is_unavailable(&bad_certificate));
        assert!(tls_hint(&bad_certificate).contains("sslrootcert"));
        let no_tls = sqlx::Error::Tls("server does not support TLS".into());
        assert!(!is_unavailable(&no_tls));
        let refused = sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(is_unavailable(&refused));
        assert_eq!(tls_hint(&refused), "");
    }

    #[test]
    fn unavailable_sqlstates() {
        let cases = [
            ("57P01", true),
            ("57P02", true),
            ("57P03", true),
            ("08006", true),
            ("08001", true),
            ("23505", false),
            ("40001", false),
            ("42P01", false),
            ("57014", false),
            ("3D000", false),
        ];
        for (code, unavailable) in cases {
            assert_eq!(is_unavailable_sqlstate(code), unavailable, "{code}");
        }
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::other("x"))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
    }
}
