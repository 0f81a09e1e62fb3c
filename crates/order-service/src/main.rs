//! The order-service binary: configuration from the environment → build → serve until SIGTERM
//! or SIGINT.

use anyhow::Context;
use order_service::{Application, Config, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config =
        Config::from_vars(&service_kit::Vars::process()).context("invalid configuration")?;
    let shutdown = service_kit::shutdown_signal().context("cannot install the signal handlers")?;
    // Kept to the end of `main`: dropping it sends the last spans.
    let _traces =
        telemetry::init_tracing(&config.log_filter, config.database.debug, &config.traces)
            .context("cannot set up logging")?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        database = %config.database.describe(),
        schema = %config.database.schema,
        outbox_delete_after_insert = config.outbox_delete_after_insert,
        outbox_trace_column = config.outbox_trace_column.as_deref().unwrap_or("none"),
        traces_endpoint = config.traces.endpoint.as_deref().unwrap_or("none"),
        "starting order-service"
    );
    let application = Application::build(config).await;
    let application = application.context("order-service cannot start")?;
    let served = application.run_until_stopped(shutdown).await;
    served.context("order-service failed while serving")
}
