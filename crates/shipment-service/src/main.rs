//! shipment-service binary: configuration from the environment → logs → build → run until
//! SIGTERM or SIGINT.

use anyhow::Context;
use service_kit::logging::{self, LogFormat};
use shipment_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config =
        Config::from_vars(&service_kit::Vars::process()).context("invalid configuration")?;
    logging::init(&config.log_filter, &[], LogFormat::Text).context("cannot set up logging")?;
    let shutdown = service_kit::shutdown_signal().context("cannot install the signal handlers")?;
    let application = Application::build(config)
        .await
        .context("starting shipment-service")?;
    application
        .run_until_stopped(shutdown)
        .await
        .context("serving HTTP")
}
