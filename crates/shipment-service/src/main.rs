//! shipment-service binary: configuration from the environment → build → run until SIGTERM or
//! SIGINT.

use anyhow::Context;
use shipment_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colour codes only on a terminal: `make up` and compose send the logs to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = Config::from_env().context("configuration")?;
    let shutdown = service_kit::shutdown_signal().context("cannot install the signal handlers")?;
    let application = Application::build(config)
        .await
        .context("starting shipment-service")?;
    application
        .run_until_stopped(shutdown)
        .await
        .context("serving HTTP")
}
