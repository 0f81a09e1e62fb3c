//! What order-service, shipment-service and outbox-relay share at their edges: one
//! configuration and start-up kit, so that the three binaries read their settings under the
//! same rules and start the same way.
//!
//! # Layout
//! - [`env`]: environment variables under the shared rules (empty = unset, one boolean syntax,
//!   non-UTF-8 and out-of-range values are errors naming the variable) → [`ConfigError`].
//! - [`postgres`]: `DATABASE_URL` (query string kept, `sslmode` honoured) or `DB_*` →
//!   [`postgres::PgSettings`]; database and schema created at start; the one "database
//!   unavailable" rule ([`postgres::is_unavailable`]).
//! - [`amqp`]: `AMQP_URL` or `RABBITMQ_*` → [`amqp::AmqpSettings`], printed without password.
//! - [`logging`]: `RUST_LOG` checked at start, text or JSON output.
//! - [`traces`]: OpenTelemetry: `OTEL_*` settings, the OTLP exporter (only with an endpoint),
//!   W3C `traceparent`/`tracestate` propagation.
//! - [`prometheus`]: the Prometheus recorder and its buckets.
//! - [`backoff`]: [`Backoff`] and [`backoff::retry_until`] for start-up waits.
//! - [`migrate`]: migrations that adopt a database the original system created.
//! - here: [`Secret`], a setting that must never be printed, and [`shutdown_signal`], the
//!   SIGTERM/SIGINT future each `main` runs until.

pub mod amqp;
pub mod backoff;
pub mod env;
pub mod logging;
pub mod migrate;
pub mod postgres;
pub mod prometheus;
pub mod traces;

pub use backoff::Backoff;
pub use env::{ConfigError, Vars};

use std::fmt;
use std::future::Future;

/// A value that must never be printed (passwords, URLs with passwords): `Debug` shows
/// `Secret(***)` and `Display` shows `***`, so a logged configuration leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (the connection).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Installs the SIGTERM and SIGINT handlers now (so a failure shows at start, not at the first
/// signal) and returns a future that resolves on the first of them.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.to_string(), "***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[tokio::test]
    async fn the_shutdown_future_resolves_on_sigterm() {
        let shutdown = shutdown_signal().unwrap_or_else(|error| panic!("{error}"));
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(30), shutdown)
            .await
            .unwrap_or_else(|_| panic!("SIGTERM did not resolve the shutdown future"));
    }
}
