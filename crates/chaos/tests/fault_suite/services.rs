//! The three real binaries as child processes ([`test_support::process`]): started with their
//! environment, SIGKILLed and restarted with the same environment, stopped with SIGTERM. Each
//! writes to its own log file (appended across restarts) whose tail is shown when the run fails.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use test_support::process::{ServiceCommand, ServiceProcess, free_port};

use crate::infra::{PrivateInfra, RUN_MARKER};

/// How long a service may take to start and answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a service may take to exit after SIGTERM before it is SIGKILLed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Starts workspace binary `name` with `env` (its HTTP endpoint on `port`), its output appended
/// to `<log_dir>/<name>.log`, and waits until `/health` answers 200.
pub async fn start(
    name: &str,
    port: u16,
    env: Vec<(String, String)>,
    log_dir: &Path,
) -> Result<ServiceProcess> {
    ServiceCommand::workspace(name)?
        .http_port(port)
        .envs(env)
        .env(
            "RUST_LOG",
            std::env::var("CHAOS_RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .log_file(log_dir.join(format!("{name}.log")))
        .start(START_TIMEOUT)
        .await
}

/// Starts workspace binary `name` on a free HTTP port (given to it as `port_var`) with `vars`
/// and the run's marker (which tells this run's processes from any other's).
pub async fn start_in_run(
    infra: &PrivateInfra,
    name: &str,
    port_var: &str,
    vars: Vec<(&str, String)>,
) -> Result<ServiceProcess> {
    let port = free_port();
    let env = vars
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .chain([
            (port_var.to_owned(), port.to_string()),
            (RUN_MARKER.to_owned(), infra.dir.display().to_string()),
        ])
        .collect();
    start(name, port, env, &infra.log_dir()).await
}

/// SIGTERM, then up to 15 s for a graceful exit, then SIGKILL.
pub async fn terminate(mut service: ServiceProcess) {
    let _ = service.terminate(SHUTDOWN_GRACE).await;
}

/// The sum of every series of `name` in a Prometheus text, optionally only those whose labels
/// contain `label` (e.g. `outcome="parked"`).
pub fn metric_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| label.is_none_or(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_sums_add_matching_series_only() {
        let text = "# HELP x\nshipment_duplicates_total 3\n\
                    shipment_messages_consumed_total{event_type=\"A\",outcome=\"parked\"} 2\n\
                    shipment_messages_consumed_total{event_type=\"B\",outcome=\"parked\"} 5\n\
                    shipment_messages_consumed_total{event_type=\"B\",outcome=\"applied\"} 7\n\
                    shipment_duplicates_total_other 100\n";
        assert_eq!(metric_sum(text, "shipment_duplicates_total", None), 3.0);
        assert_eq!(
            metric_sum(
                text,
                "shipment_messages_consumed_total",
                Some("outcome=\"parked\"")
            ),
            7.0
        );
        assert_eq!(
            metric_sum(text, "shipment_messages_consumed_total", None),
            14.0
        );
    }
}
