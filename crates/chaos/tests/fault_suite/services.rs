//! The three real binaries as child processes: started with their environment, SIGKILLed and
//! restarted with the same environment, stopped with SIGTERM. Each writes to its own log file
//! (appended across restarts) whose tail is shown when the run fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// The workspace's binaries sit next to the test's `deps` folder: `<target>/<profile>/`.
fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("locating the test binary's folder")?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo build --workspace --bins` first (make test and make chaos do)",
            path.display()
        );
    }
    Ok(path)
}

/// One running binary; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    /// Port of its HTTP endpoint (`/health`, `/metrics`).
    pub port: u16,
    child: Child,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// How many times it was started.
    pub starts: u32,
}

impl Service {
    /// Starts `name` with `env` and waits until `/health` answers 200.
    pub async fn start(
        name: &'static str,
        port: u16,
        env: Vec<(String, String)>,
        log_dir: &Path,
        http: &reqwest::Client,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let child = spawn(name, &env, &log)?;
        let mut service = Self {
            name,
            port,
            child,
            log,
            env,
            starts: 1,
        };
        service.wait_healthy(http, Duration::from_secs(90)).await?;
        Ok(service)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL, like a crash: nothing is flushed, nothing is acknowledged.
    pub async fn sigkill(&mut self) -> Result<()> {
        self.child
            .start_kill()
            .with_context(|| format!("SIGKILL {}", self.name))?;
        self.child.wait().await?;
        Ok(())
    }

    /// Starts the binary again with the same environment (after [`Service::sigkill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.child = spawn(self.name, &self.env, &self.log)?;
        self.starts += 1;
        Ok(())
    }

    /// Waits until `/health` answers 200; fails if the process exits or `timeout` passes.
    pub async fn wait_healthy(&mut self, http: &reqwest::Client, timeout: Duration) -> Result<()> {
        let url = self.url("/health");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status}; its log ends with:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            let last_answer = match http.get(&url).timeout(Duration::from_secs(3)).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => format!(
                    "{}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ),
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "{} not healthy at {url} after {timeout:?} (last answer: {last_answer}); its log ends with:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self, http: &reqwest::Client) -> Result<String> {
        let response = http
            .get(self.url("/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("GET /metrics of {}", self.name))?;
        Ok(response.text().await?)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        crate::infra::tail(&self.log, lines)
    }

    /// SIGTERM, then up to 15 s for a graceful exit, then SIGKILL.
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        }
        let _ = self.child.kill().await;
    }
}

fn spawn(name: &str, env: &[(String, String)], log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Command::new(binary(name)?)
        .envs(
            env.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {name}"))
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
