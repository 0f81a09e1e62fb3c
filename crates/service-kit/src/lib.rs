//! What order-service, shipment-service and outbox-relay share at their edges: [`Secret`], a
//! setting that must never be printed, and [`shutdown_signal`], the SIGTERM/SIGINT future their
//! `main` runs until; [`migrate`], migrations that adopt a database the original system created.

pub mod migrate;

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
