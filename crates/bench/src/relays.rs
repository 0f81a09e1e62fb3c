//! The relays under test, each run as a process of its own: our `outbox-relay` (the release
//! binary), its polling source when it has one, and the Debezium 3.6.3 peer
//! (`../shared/peers/debezium/run`). Peak RSS (`VmHWM`) and CPU seconds are read from
//! `/proc/<pid>`, the same way for all of them.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::infra::{BenchDb, PUBLICATION, WireFormat, free_port};

/// What Debezium does with the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DebeziumSink {
    /// Publishes to RabbitMQ with confirms (the peer's re-implementation of Debezium Server's
    /// sink).
    Rabbitmq,
    /// Runs the whole Debezium pipeline and reads every record, publishes nothing: the upper
    /// bound of any Debezium-based relay.
    None,
}

/// One relay under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// `outbox-relay`: logical replication.
    Ours,
    /// `outbox-relay --source polling`.
    Polling,
    /// The Debezium peer.
    Debezium { sink: DebeziumSink, poll_ms: u32 },
}

impl RelayKind {
    /// The name in the table and the report.
    pub fn label(&self) -> String {
        match self {
            RelayKind::Ours => "outbox-relay".to_owned(),
            RelayKind::Polling => "outbox-relay polling".to_owned(),
            RelayKind::Debezium {
                sink: DebeziumSink::Rabbitmq,
                poll_ms,
            } => format!("debezium (poll {poll_ms} ms)"),
            RelayKind::Debezium {
                sink: DebeziumSink::None,
                poll_ms,
            } => format!("debezium capture-only (poll {poll_ms} ms)"),
        }
    }

    /// Whether it reads a replication slot (polling reads the table).
    pub fn uses_slot(&self) -> bool {
        !matches!(self, RelayKind::Polling)
    }

    /// Whether it publishes to the broker.
    pub fn publishes(&self) -> bool {
        !matches!(
            self,
            RelayKind::Debezium {
                sink: DebeziumSink::None,
                ..
            }
        )
    }
}

/// Where the programs under test are, and where their logs go.
#[derive(Debug, Clone)]
pub struct Programs {
    pub relay: PathBuf,
    /// The Debezium peer's `run` script, when Debezium takes part.
    pub debezium_run: Option<PathBuf>,
    /// Whether `outbox-relay` has a polling source.
    pub polling: bool,
    pub logs: PathBuf,
}

/// Where a relay reads from and publishes to.
#[derive(Debug, Clone, Copy)]
pub struct RelayTarget<'a> {
    pub db: &'a BenchDb,
    pub amqp_url: &'a str,
    pub slot: &'a str,
    /// Our relay's `RELAY_WIRE_FORMAT` (`None`: its default, plain; Debezium has its own).
    pub wire_format: Option<WireFormat>,
    /// Our relay's `RELAY_ROUTING_KEY` (`None`: its default).
    pub routing_key: Option<&'a str>,
}

/// Peak memory and CPU time of a process so far.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    /// `VmHWM`: the peak resident set size, in MiB.
    pub peak_rss_mb: f64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
}

impl Usage {
    /// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
    pub fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let peak_kb: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .with_context(|| format!("no VmHWM in /proc/{pid}/status"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): state is field 3, utime 14,
        // stime 15.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .with_context(|| format!("unexpected /proc/{pid}/stat"))?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |index: usize| -> Result<f64> {
            fields
                .get(index)
                .and_then(|value| value.parse::<f64>().ok())
                .with_context(|| format!("unexpected /proc/{pid}/stat"))
        };
        let cpu_ticks = ticks(11)? + ticks(12)?;
        Ok(Self {
            peak_rss_mb: peak_kb / 1024.0,
            cpu_s: cpu_ticks / clock_ticks_per_second(),
        })
    }
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A relay process.
#[derive(Debug)]
pub struct RelayProcess {
    child: Child,
    pid: u32,
    pub label: String,
    pub spawned_at: Instant,
    http_port: Option<u16>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    offset_dir: Option<PathBuf>,
}

/// How a relay process ended.
#[derive(Debug)]
pub struct Finished {
    pub status: Option<ExitStatus>,
    /// Its standard output (Debezium prints its JSON summary there).
    pub stdout: String,
}

impl Finished {
    /// The last stdout line that parses as JSON (the Debezium peer's summary).
    pub fn summary(&self) -> Option<serde_json::Value> {
        self.stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line.trim()).ok())
    }
}

impl RelayProcess {
    /// Starts `kind` against `target`. `exit_after`: the Debezium peer stops by itself after
    /// that many events.
    pub async fn spawn(
        kind: RelayKind,
        programs: &Programs,
        target: RelayTarget<'_>,
        run_name: &str,
        exit_after: Option<usize>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&programs.logs)
            .with_context(|| format!("creating {}", programs.logs.display()))?;
        let stdout_path = programs.logs.join(format!("{run_name}.stdout"));
        let stderr_path = programs.logs.join(format!("{run_name}.stderr"));
        let stdout = std::fs::File::create(&stdout_path)
            .with_context(|| format!("creating {}", stdout_path.display()))?;
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut offset_dir = None;
        let mut http_port = None;
        let mut command = match kind {
            RelayKind::Ours | RelayKind::Polling => {
                if kind == RelayKind::Polling && !programs.polling {
                    bail!("outbox-relay has no polling source");
                }
                let port = free_port()?;
                http_port = Some(port);
                let mut command = Command::new(&programs.relay);
                command
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("DATABASE_URL", target.db.url())
                    .env("AMQP_URL", target.amqp_url)
                    .env("RELAY_HTTP_PORT", port.to_string())
                    .env("RUST_LOG", "warn");
                if let Some(format) = target.wire_format {
                    command.env("RELAY_WIRE_FORMAT", format.name());
                }
                if let Some(routing_key) = target.routing_key {
                    command.env("RELAY_ROUTING_KEY", routing_key);
                }
                if kind == RelayKind::Ours {
                    command
                        .env("RELAY_SLOT", target.slot)
                        .env("RELAY_PUBLICATION", PUBLICATION);
                }
                if kind == RelayKind::Polling {
                    // Its best settings: a 10 ms interval for latency (like Debezium's tuned
                    // poll), 2,000-row batches for throughput (drains of 30,000 rows, debug:
                    // 500 → 4,750/s, 2,000 → 8,080/s, 5,000 → 5,510/s).
                    command.args(["--source", "polling", "--poll-interval-ms", "10"]);
                    command.args(["--poll-batch-size", "2000"]);
                }
                command
            }
            RelayKind::Debezium { sink, poll_ms } => {
                let run = programs
                    .debezium_run
                    .as_ref()
                    .context("Debezium is not part of this run")?;
                let offsets = programs.logs.join(format!("{run_name}.offsets"));
                // A stale offset from an earlier, interrupted run would point into another
                // database's WAL: start clean.
                let _ = std::fs::remove_dir_all(&offsets);
                std::fs::create_dir_all(&offsets)
                    .with_context(|| format!("creating {}", offsets.display()))?;
                let options = target.db.admin().connect_options();
                let mut command = Command::new(run);
                command
                    .env("PGPASSWORD", password_of(target.db.url()))
                    .arg("--pg-host")
                    .arg(options.get_host())
                    .arg("--pg-port")
                    .arg(options.get_port().to_string())
                    .arg("--pg-user")
                    .arg(options.get_username())
                    .arg("--pg-dbname")
                    .arg(target.db.name())
                    .arg("--slot")
                    .arg(target.slot)
                    .arg("--publication")
                    .arg(PUBLICATION)
                    .arg("--offset-dir")
                    .arg(&offsets)
                    .arg("--amqp-url")
                    .arg(target.amqp_url)
                    .arg("--sink")
                    .arg(match sink {
                        DebeziumSink::Rabbitmq => "rabbitmq",
                        DebeziumSink::None => "none",
                    })
                    .arg("--poll-interval-ms")
                    .arg(poll_ms.to_string());
                if let Some(events) = exit_after {
                    command.arg("--exit-after").arg(events.to_string());
                }
                offset_dir = Some(offsets);
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", kind.label()))?;
        let pid = child
            .id()
            .with_context(|| format!("{} exited at once", kind.label()))?;
        Ok(Self {
            child,
            pid,
            label: kind.label(),
            spawned_at,
            http_port,
            stdout_path,
            stderr_path,
            offset_dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Peak RSS and CPU so far.
    pub fn usage(&self) -> Result<Usage> {
        Usage::of(self.pid)
    }

    /// Our relay's `/metrics` text (`None` for Debezium, or when it does not answer).
    pub async fn metrics_text(&self) -> Option<String> {
        let port = self.http_port?;
        let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?;
        response.text().await.ok()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until our relay's `/health` says it is streaming (for Debezium, which has no
    /// health endpoint, returns at once: the caller proves readiness with a warm-up event).
    pub async fn wait_streaming(&mut self, timeout: Duration) -> Result<()> {
        let Some(port) = self.http_port else {
            return Ok(());
        };
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/health");
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                bail!("{} exited at start: {}", self.label, self.stderr_tail());
            }
            if let Ok(response) = client.get(&url).send().await
                && let Ok(health) = response.json::<serde_json::Value>().await
                && health["streaming"].as_bool() == Some(true)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} was not streaming after {timeout:?}", self.label);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of its standard error, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// SIGTERM, then waits up to `timeout` (SIGKILL after that).
    pub async fn stop(mut self, timeout: Duration) -> Result<Finished> {
        if self.is_running() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(self.pid.to_string())
                .status();
        }
        self.wait(timeout).await
    }

    /// Waits up to `timeout` for the process to exit by itself (SIGKILL after that).
    pub async fn wait(mut self, timeout: Duration) -> Result<Finished> {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Some(status?),
            Err(_) => {
                tracing::warn!(relay = %self.label, "did not exit in time; killing it");
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                None
            }
        };
        let stdout = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
        if let Some(offsets) = &self.offset_dir {
            let _ = std::fs::remove_dir_all(offsets);
        }
        Ok(Finished { status, stdout })
    }
}

/// Whether `relay --help` mentions a polling source.
pub async fn relay_has_polling(relay: &Path) -> bool {
    match Command::new(relay).arg("--help").output().await {
        Ok(output) => String::from_utf8_lossy(&output.stdout).contains("polling"),
        Err(_) => false,
    }
}

/// Checks that the Debezium peer can run here (`run --help` sets up its venv on first use).
pub async fn debezium_available(run: &Path) -> Result<()> {
    if !run.exists() {
        bail!("{} does not exist", run.display());
    }
    let output = Command::new(run)
        .arg("--help")
        .output()
        .await
        .with_context(|| format!("running {} --help", run.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{} --help failed: {}",
            run.display(),
            stderr.lines().last().unwrap_or("")
        );
    }
    Ok(())
}

/// The password in a `postgres://user:password@host/...` URL, empty if none.
pub fn password_of(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password.to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn usage_of_this_process_is_read() {
        let usage = Usage::of(std::process::id()).unwrap();
        assert!(usage.peak_rss_mb > 0.0);
        assert!(usage.cpu_s >= 0.0);
    }

    #[test]
    fn password_is_taken_from_the_url() {
        assert_eq!(password_of("postgres://u:secret@h:5432/db"), "secret");
        assert_eq!(password_of("postgres://u@h/db"), "");
        assert_eq!(password_of("postgres://h/db"), "");
    }

    #[test]
    fn labels_name_the_relay_and_debezium_settings() {
        assert_eq!(RelayKind::Ours.label(), "outbox-relay");
        let debezium = RelayKind::Debezium {
            sink: DebeziumSink::None,
            poll_ms: 500,
        };
        assert!(debezium.label().contains("capture-only"));
        assert!(!debezium.publishes());
        assert!(!RelayKind::Polling.uses_slot());
    }
}
