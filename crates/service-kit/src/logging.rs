//! Log set-up for the three binaries: the `RUST_LOG` filter (default `info`), checked when the
//! configuration is read so that a bad one stops the binary naming `RUST_LOG`, and the output
//! format, text or JSON. Colour codes only on a terminal: `make up` and compose send the logs to
//! files. With [`init_with_traces`], also the OpenTelemetry layer (`crate::traces`).

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

use crate::env::{ConfigError, Vars};
use crate::traces::{TraceGuard, TraceSettings};

/// The variable [`LogFilter::from_vars`] reads.
pub const ENV_VARS: &[&str] = &["RUST_LOG"];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?}: expected text or json")),
        }
    }
}

/// A `RUST_LOG` filter that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl LogFilter {
    /// Checks `text` as a tracing filter; the error names `variable`.
    pub fn parse(variable: &str, text: &str) -> Result<Self, ConfigError> {
        EnvFilter::try_new(text).map_err(|error| {
            ConfigError::new(
                variable,
                format!("{text:?} is not a log filter (e.g. info,sqlx=warn): {error}"),
            )
        })?;
        Ok(Self(text.to_owned()))
    }

    /// `RUST_LOG`, `info` when unset.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        Self::parse("RUST_LOG", &vars.string_or("RUST_LOG", "info")?)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for LogFilter {
    fn default() -> Self {
        Self("info".to_owned())
    }
}

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("log directive {0:?}: {1}")]
    Directive(String, String),
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Installs the global subscriber: `filter`, then `extra` directives (each a binary's own, e.g.
/// `sqlx::query=info` for `DB_DEBUG`), in `format`. No OpenTelemetry layer: spans have no
/// W3C ids (see [`init_with_traces`]).
pub fn init(filter: &LogFilter, extra: &[&str], format: LogFormat) -> Result<(), LogInitError> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter(filter, extra)?)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|error| LogInitError::Install(error.to_string()))
}

/// [`init`] plus the OpenTelemetry layer of `traces` (`crate::traces`): every span that
/// passes the filter gets W3C ids and, with an endpoint, is exported. Keep the guard until
/// exit: dropping it sends the last spans.
pub fn init_with_traces(
    filter: &LogFilter,
    extra: &[&str],
    format: LogFormat,
    traces: &TraceSettings,
) -> Result<TraceGuard, LogInitError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let (tracer, guard) =
        crate::traces::tracer(traces).map_err(|error| LogInitError::Install(error.to_string()))?;
    let registry = tracing_subscriber::registry()
        .with(env_filter(filter, extra)?)
        .with(tracing_opentelemetry::layer().with_tracer(tracer));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_ansi(ansi))
            .try_init(),
    }
    .map_err(|error| LogInitError::Install(error.to_string()))?;
    Ok(guard)
}

fn env_filter(filter: &LogFilter, extra: &[&str]) -> Result<EnvFilter, LogInitError> {
    let mut env_filter = EnvFilter::try_new(filter.as_str())
        .map_err(|error| LogInitError::Directive(filter.0.clone(), error.to_string()))?;
    for directive in extra {
        env_filter = env_filter.add_directive(directive.parse().map_err(
            |error: tracing_subscriber::filter::ParseError| {
                LogInitError::Directive((*directive).to_owned(), error.to_string())
            },
        )?);
    }
    Ok(env_filter)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_bad_filter_names_the_variable() {
        let error = LogFilter::parse("RUST_LOG", "info,[[[").unwrap_err();
        assert_eq!(error.variable, "RUST_LOG");
        assert!(
            error.to_string().starts_with("RUST_LOG is invalid"),
            "{error}"
        );
        assert_eq!(
            LogFilter::parse("RUST_LOG", "info,sqlx=warn")
                .unwrap()
                .as_str(),
            "info,sqlx=warn"
        );
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
