//! The order-service binary: configuration from the environment → build → serve until SIGTERM
//! or SIGINT.

use anyhow::Context;
use order_service::{Application, Config, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config =
        Config::from_vars(&service_kit::Vars::process()).context("invalid configuration")?;
    let shutdown = service_kit::shutdown_signal().context("cannot install the signal handlers")?;
    telemetry::init_tracing(&config.log_filter, config.database.debug)
        .context("cannot set up logging")?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        database = %config.database.describe(),
        schema = %config.database.schema,
        outbox_delete_after_insert = config.outbox_delete_after_insert,
        "starting order-service"
    );
    let application = Application::build(config).await;
    let application = application.context("order-service cannot start")?;
    let served = application.run_until_stopped(shutdown).await;
    served.context("order-service failed while serving")
}
