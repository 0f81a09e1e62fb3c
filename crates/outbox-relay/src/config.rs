//! Settings of the relay: command-line flags and environment variables ([`Cli`], clap),
//! optionally a Debezium Server `application.properties` file (read as Debezium Server reads it,
//! see [`DebeziumProperties`]), merged and validated into [`Config`].
//!
//! Values are read under the rules the three binaries share ([`service_kit::env`]): an empty
//! value counts as unset, a variable that is not UTF-8 is an error naming it, numbers are
//! checked against their range; `DATABASE_URL` keeps its query string (`sslmode`...), `RUST_LOG`
//! is checked at start.
//!
//! Precedence: a flag or environment variable wins over the properties file, which wins over
//! the built-in default. Every invalid value fails at start with a [`ConfigError`] naming the
//! setting (its environment variable, or the properties key it came from). What the relay
//! notices but does not fail on (a properties key it ignores, and why) is kept in
//! [`Config::notes`] and logged once logging is set up ([`Config::log_notes`]).
//!
//! - `cli`: the flags and their variables; [`ENV_VARS`] is derived from them.
//! - `build`: flags + file + defaults → [`Config`].
//! - `debezium_properties`: the Debezium Server properties file.

mod build;
mod cli;
mod debezium_properties;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use service_kit::env::Vars;
use service_kit::logging::LogFilter;
use service_kit::traces::TraceSettings;
use wire_format::WireFormat;

pub use self::cli::{Cli, Command, ResyncArgs};
pub use self::debezium_properties::{DebeziumProperties, EnvLookup, process_env};
use crate::router::{ExchangeType, RouterConfig};
pub use crate::sink::MessageProperties;
pub use service_kit::Secret;
pub use service_kit::amqp::AmqpSettings;
pub use service_kit::logging::LogFormat;
/// Where PostgreSQL is and who the relay is there, with the URL's `sslmode` (`ssl_mode`) and
/// the rest of its query string (`connect_options`).
pub use service_kit::postgres::PgSettings as PostgresSettings;

/// Every environment variable the binary reads (the docker-compose contract test checks it):
/// the `env` of each [`Cli`] argument, so there is no second list to keep in step, and the
/// OpenTelemetry variables (`service_kit::traces`).
pub static ENV_VARS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    static COMMAND: LazyLock<clap::Command> = LazyLock::new(Cli::command);
    COMMAND
        .get_arguments()
        .filter_map(|argument| argument.get_env()?.to_str())
        .chain(service_kit::traces::ENV_VARS.iter().copied())
        .collect()
});

/// An invalid setting, named as the user wrote it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting} is invalid: {reason}")]
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

impl From<service_kit::ConfigError> for ConfigError {
    fn from(error: service_kit::ConfigError) -> Self {
        ConfigError::Invalid {
            setting: error.variable,
            reason: error.reason,
        }
    }
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
            interval: Duration::from_millis(build::defaults::POLL_INTERVAL_MS),
            batch_size: build::defaults::POLL_BATCH_SIZE,
        }
    }
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
    /// `RUST_LOG`, checked at start; `info` when unset.
    pub log_filter: LogFilter,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`
    /// (not flags: the OpenTelemetry variables).
    pub traces: TraceSettings,
    /// Where events come from.
    pub source: SourceKind,
    pub polling: PollingSettings,
    /// Settings noticed but not failed on (ignored properties keys and why), for the log.
    pub notes: Vec<ConfigNote>,
}

impl Config {
    /// Parses the process's flags and environment. A variable that is not UTF-8 fails here,
    /// named (clap would report it without its name).
    pub fn from_env_and_args() -> Result<Self, ConfigError> {
        Ok(Self::command_line()?.0)
    }

    /// [`Config::from_env_and_args`], with the command asked for (none: run the relay).
    pub fn command_line() -> Result<(Self, Option<Command>), ConfigError> {
        service_kit::env::check_unicode(&Vars::process(), ENV_VARS.iter().copied())?;
        let mut cli = Cli::parse();
        let command = cli.command.take();
        Ok((Self::from_cli(cli)?, command))
    }

    /// Merges flags/env with the Debezium properties file (if any) and the defaults; the
    /// file's placeholders and overrides come from the process's environment.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        Self::from_cli_with_env(cli, &process_env)
    }

    /// [`Config::from_cli`] with the properties file resolved against `env`.
    pub fn from_cli_with_env(cli: Cli, env: EnvLookup<'_>) -> Result<Self, ConfigError> {
        let properties = match cli
            .debezium_properties
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            Some(path) => Some(DebeziumProperties::read(path, env)?),
            None => None,
        };
        let mut config = build::build(cli, properties.as_ref())?;
        config.traces = TraceSettings::from_vars(&Vars::new(env), "outbox-relay")?;
        Ok(config)
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
