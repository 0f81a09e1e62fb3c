//! A private PostgreSQL cluster and RabbitMQ node for one run, started by `scripts/infra.sh` in
//! a folder of their own on ports of their own, so the suite can stop and restart them without
//! disturbing the shared servers the other tests use.
//!
//! PostgreSQL is stopped by signalling its postmaster (found through `postmaster.pid` in our
//! folder) rather than by `infra.sh pg-down`: that command also stops the cluster in the
//! repository's fallback folder under /var/tmp, which may be the shared one.
//!
//! A run that dies without cleaning up leaves its folder behind with the id of its process;
//! the next run stops the servers and services of folders whose owner is gone and deletes them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use test_support::process::{file_tail, free_port};
use tokio::process::Command;

/// Prefix of the run folders, under /var/tmp (reachable by the `postgres` user).
const FOLDER_PREFIX: &str = "outbox-chaos-";
/// How long one `infra.sh` command may take (RabbitMQ alone can take 20 s on a busy machine).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a stopping server may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// How to stop PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgStop {
    /// SIGINT: roll back open transactions, checkpoint, exit.
    Fast,
    /// SIGQUIT: exit at once, like a crash; the restart runs crash recovery.
    Immediate,
}

impl PgStop {
    pub fn describe(self) -> &'static str {
        match self {
            PgStop::Fast => "fast shutdown",
            PgStop::Immediate => "immediate shutdown (crash recovery)",
        }
    }
}

/// How to restart RabbitMQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RabbitMqRestart {
    /// `rabbitmqctl stop_app` / `start_app`: the broker closes every connection, stops its
    /// queues and recovers them from disk, in a few seconds; the Erlang VM stays up.
    Application,
    /// `infra.sh rabbitmq-down` / `rabbitmq-up`: the whole node stops and boots again (20 s
    /// to over a minute on a busy machine).
    Node,
}

impl RabbitMqRestart {
    pub fn describe(self) -> &'static str {
        match self {
            RabbitMqRestart::Application => "application restart (stop_app/start_app)",
            RabbitMqRestart::Node => "node restart (rabbitmq-down/rabbitmq-up)",
        }
    }
}

/// The private servers of one run.
#[derive(Debug)]
pub struct PrivateInfra {
    pub dir: PathBuf,
    pub pg_port: u16,
    pub rabbitmq_port: u16,
    pub management_port: u16,
    /// With a 3-node RabbitMQ cluster instead of one node: its nodes' AMQP ports (each node's
    /// management port is + 10000, per infra.sh).
    pub cluster_ports: Vec<u16>,
    stopped: bool,
}

impl PrivateInfra {
    /// Creates the run folder, picks free ports and starts both servers.
    pub async fn start() -> Result<Self> {
        let dir = new_run_dir()?;
        let rabbitmq_port = free_rabbitmq_port()?;
        let infra = Self {
            pg_port: free_port(),
            management_port: free_port(),
            rabbitmq_port,
            cluster_ports: Vec::new(),
            dir,
            stopped: false,
        };
        // On failure the guard's drop stops whatever did start.
        infra.script(&["up"]).await?;
        infra.check_postgres_started()?;
        Ok(infra)
    }

    /// Like [`Self::start`], with a 3-node RabbitMQ cluster (`infra.sh cluster-up`) instead of
    /// one node.
    pub async fn start_cluster() -> Result<Self> {
        let dir = new_run_dir()?;
        let mut cluster_ports: Vec<u16> = Vec::new();
        while cluster_ports.len() < 3 {
            let port = free_rabbitmq_port()?;
            if !cluster_ports.contains(&port) {
                cluster_ports.push(port);
            }
        }
        let infra = Self {
            pg_port: free_port(),
            management_port: cluster_ports[0] + 10_000,
            rabbitmq_port: cluster_ports[0],
            cluster_ports,
            dir,
            stopped: false,
        };
        infra.script(&["pg-up"]).await?;
        infra.check_postgres_started()?;
        infra.script(&["cluster-up"]).await?;
        Ok(infra)
    }

    /// The AMQP URLs of every node of the cluster, comma-separated (the single node's URL
    /// without a cluster).
    pub fn cluster_amqp_url(&self) -> String {
        if self.cluster_ports.is_empty() {
            return self.amqp_url();
        }
        self.cluster_ports
            .iter()
            .map(|port| format!("amqp://guest:guest@127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs the cluster node listening on `port` (`infra.sh node-kill`).
    pub async fn kill_node(&self, port: u16) -> Result<()> {
        self.script(&["node-kill", &port.to_string()]).await
    }

    /// Starts the cluster node of `port` again; it rejoins the cluster by itself.
    pub async fn start_node(&self, port: u16) -> Result<()> {
        self.script(&["node-start", &port.to_string()]).await
    }

    fn check_postgres_started(&self) -> Result<()> {
        if !self.postmaster_pid_file().is_file() {
            bail!(
                "the private PostgreSQL did not start in {} (infra.sh may have used another folder)",
                self.dir.display()
            );
        }
        Ok(())
    }

    /// Admin connection string of the private cluster for `database`.
    pub fn pg_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/{database}",
            self.pg_port
        )
    }

    /// AMQP URL of the private node (default vhost).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}", self.rabbitmq_port)
    }

    /// Base URL of the private node's management API (credentials go separately).
    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management_port)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Copies the services' logs to a folder that outlives the run; says where.
    pub fn keep_logs(&self, label: &str) {
        let kept = std::env::temp_dir().join(format!(
            "outbox-{label}-logs-{}",
            test_support::unique_suffix()
        ));
        let copied = std::fs::create_dir_all(&kept).and_then(|()| {
            for entry in std::fs::read_dir(self.log_dir())? {
                let entry = entry?;
                std::fs::copy(entry.path(), kept.join(entry.file_name()))?;
            }
            Ok(())
        });
        if copied.is_ok() {
            eprintln!("[{label}] logs of the run kept in {}", kept.display());
        }
    }

    /// Stops PostgreSQL (`mode`), waits for it to exit, starts it again.
    pub async fn restart_postgres(&self, mode: PgStop) -> Result<()> {
        self.stop_postgres(mode).await?;
        self.script(&["pg-up"]).await
    }

    /// Restarts RabbitMQ (`mode`). Returns how long stopping and starting took.
    pub async fn restart_rabbitmq(&self, mode: RabbitMqRestart) -> Result<(Duration, Duration)> {
        let started = Instant::now();
        match mode {
            RabbitMqRestart::Node => self.stop_rabbitmq().await?,
            RabbitMqRestart::Application => {
                self.script(&["rabbitmqctl", "stop_app"]).await?;
                wait_port_closed(self.rabbitmq_port, "RabbitMQ").await?;
            }
        }
        let stopped = started.elapsed();
        match mode {
            RabbitMqRestart::Node => self.script(&["rabbitmq-up"]).await?,
            RabbitMqRestart::Application => {
                self.script(&["rabbitmqctl", "start_app"]).await?;
                wait_port_open(self.rabbitmq_port, "RabbitMQ").await?;
            }
        }
        Ok((stopped, started.elapsed() - stopped))
    }

    /// Raises RabbitMQ's disk alarm (a free-disk limit far above the free space): the broker
    /// blocks every publishing connection until [`Self::lower_disk_alarm`].
    pub async fn raise_disk_alarm(&self) -> Result<()> {
        self.script(&["rabbitmqctl", "set_disk_free_limit", "1000000GB"])
            .await
    }

    /// Puts the disk free limit back to RabbitMQ's default (50 MB): the alarm clears.
    pub async fn lower_disk_alarm(&self) -> Result<()> {
        self.script(&["rabbitmqctl", "set_disk_free_limit", "50MB"])
            .await
    }

    /// Stops both servers and deletes the run folder.
    pub async fn stop(mut self) -> Result<()> {
        let rabbitmq = if self.cluster_ports.is_empty() {
            self.stop_rabbitmq().await
        } else {
            self.script(&["cluster-down"]).await
        };
        let postgres = self.stop_postgres(PgStop::Fast).await;
        if rabbitmq.is_err() || postgres.is_err() {
            stop_servers_blocking(&self.dir);
        }
        self.stopped = true;
        let removed = std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("deleting {}", self.dir.display()));
        rabbitmq.context("stopping the private RabbitMQ")?;
        postgres.context("stopping the private PostgreSQL")?;
        removed
    }

    async fn stop_postgres(&self, mode: PgStop) -> Result<()> {
        let Some(pid) = server_pid(&self.postmaster_pid_file(), &self.dir) else {
            return Ok(());
        };
        let signal = match mode {
            PgStop::Fast => "-INT",
            PgStop::Immediate => "-QUIT",
        };
        send_signal(signal, pid)?;
        wait_for_exit(pid, "PostgreSQL").await?;
        wait_port_closed(self.pg_port, "PostgreSQL").await
    }

    async fn stop_rabbitmq(&self) -> Result<()> {
        let pid = server_pid(&self.rabbitmq_pid_file(), &self.dir);
        if pid.is_none() {
            return Ok(());
        }
        self.script(&["rabbitmq-down"]).await?;
        if let Some(pid) = pid {
            wait_for_exit(pid, "RabbitMQ").await?;
        }
        wait_port_closed(self.rabbitmq_port, "RabbitMQ").await
    }

    fn postmaster_pid_file(&self) -> PathBuf {
        self.dir.join("pg/data/postmaster.pid")
    }

    fn rabbitmq_pid_file(&self) -> PathBuf {
        self.dir.join("rabbitmq/rabbitmq.pid")
    }

    /// Runs `scripts/infra.sh <arguments>` against this run's folder and ports.
    async fn script(&self, arguments: &[&str]) -> Result<()> {
        let command = arguments.join(" ");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/infra.sh");
        let log_path = self.log_dir().join("infra.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut child = Command::new("bash")
            .arg(&script)
            .args(arguments)
            .env("OUTBOX_LOCAL_DIR", &self.dir)
            .env("PG_PORT", self.pg_port.to_string())
            .env("RABBITMQ_PORT", self.rabbitmq_port.to_string())
            .env("RABBITMQ_MANAGEMENT_PORT", self.management_port.to_string())
            .env(
                "RABBITMQ_CLUSTER_PORTS",
                self.cluster_ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", script.display()))?;
        let status = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait())
            .await
            .with_context(|| {
                format!("infra.sh {command} did not finish in {SCRIPT_TIMEOUT:?}")
            })??;
        if !status.success() {
            bail!(
                "infra.sh {command} failed ({status}):\n{}",
                file_tail(&log_path, 30)
            );
        }
        Ok(())
    }
}

impl Drop for PrivateInfra {
    /// A run that failed half-way still stops its servers (best effort, blocking).
    fn drop(&mut self) {
        if !self.stopped {
            stop_servers_blocking(&self.dir);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Cleans up abandoned runs, then creates this run's folder (with its logs folder and the
/// owner's pid).
fn new_run_dir() -> Result<PathBuf> {
    remove_abandoned_runs();
    let dir = runs_base().join(format!("{FOLDER_PREFIX}{}", test_support::unique_suffix()));
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    set_mode_755(&dir)?;
    std::fs::write(dir.join("owner.pid"), std::process::id().to_string())?;
    Ok(dir)
}

fn runs_base() -> PathBuf {
    let var_tmp = Path::new("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// The PostgreSQL server runs as `postgres` when we are root: it must reach the folder.
fn set_mode_755(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", dir.display()))
}

/// Stops the servers of run folders whose test process is gone, and deletes the folders.
fn remove_abandoned_runs() {
    let Ok(entries) = std::fs::read_dir(runs_base()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_run = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(FOLDER_PREFIX));
        if !is_run {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        if owner.is_some_and(is_alive) {
            continue;
        }
        eprintln!(
            "[chaos] cleaning up the abandoned run folder {}",
            dir.display()
        );
        stop_servers_blocking(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The environment variable that marks the service processes of a run (value: its folder), so
/// that the services of an abandoned run can be found and stopped too.
pub const RUN_MARKER: &str = "CHAOS_RUN_DIR";

/// SIGKILL to every process marked with `dir` (the services of an abandoned run).
fn kill_marked_processes(dir: &Path) {
    let marker = format!("{RUN_MARKER}={}", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environment) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let marked = environment
            .split(|&byte| byte == 0)
            .any(|variable| variable == marker.as_bytes());
        if marked && pid != std::process::id() {
            let _ = send_signal("-KILL", pid);
        }
    }
}

/// Kills the run's services, sends SIGTERM to its RabbitMQ and SIGINT to its PostgreSQL, then
/// waits for both servers to exit.
fn stop_servers_blocking(dir: &Path) {
    kill_marked_processes(dir);
    let mut servers = vec![
        (dir.join("rabbitmq/rabbitmq.pid"), "-TERM"),
        (dir.join("pg/data/postmaster.pid"), "-INT"),
    ];
    // The nodes of a cluster, one folder per port.
    if let Ok(nodes) = std::fs::read_dir(dir.join("rabbitmq-cluster")) {
        for node in nodes.flatten() {
            servers.push((node.path().join("rabbitmq.pid"), "-TERM"));
        }
    }
    let mut signalled = Vec::new();
    for (pid_file, signal) in servers {
        if let Some(pid) = server_pid(&pid_file, dir)
            && send_signal(signal, pid).is_ok()
        {
            signalled.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while signalled.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pid in `pid_file` (first line), if that process is alive and belongs to `dir` (its
/// command line names the folder): a stale file must never make us signal someone else.
fn server_pid(pid_file: &Path, dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let command_line = String::from_utf8_lossy(&command_line);
    let folder = dir.to_string_lossy();
    (is_alive(pid) && command_line.contains(folder.as_ref())).then_some(pid)
}

/// Whether `pid` runs (a zombie waiting for its reaper counts as exited).
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn send_signal(signal: &str, pid: u32) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill {signal} {pid} failed");
    }
    Ok(())
}

async fn wait_for_exit(pid: u32, what: &str) -> Result<()> {
    test_support::wait_until(
        &format!("{what} (pid {pid}) to exit"),
        STOP_TIMEOUT,
        || async { (!is_alive(pid)).then_some(()) },
    )
    .await
}

async fn wait_port_open(port: u16, what: &str) -> Result<()> {
    wait_port(port, what, true).await
}

async fn wait_port_closed(port: u16, what: &str) -> Result<()> {
    wait_port(port, what, false).await
}

/// Waits until `port` accepts connections (`open`) or refuses them.
async fn wait_port(port: u16, what: &str, open: bool) -> Result<()> {
    let to = if open { "open" } else { "close" };
    test_support::wait_until(
        &format!("{what}'s port {port} to {to}"),
        STOP_TIMEOUT,
        || async move {
            let accepted = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok();
            (accepted == open).then_some(())
        },
    )
    .await
}

/// A port for RabbitMQ whose Erlang distribution port (port + 20000) and cluster management
/// port (port + 10000, per infra.sh) are free too.
fn free_rabbitmq_port() -> Result<u16> {
    for _ in 0..200 {
        let port: u16 = rand::random_range(20_000..40_000);
        let amqp = std::net::TcpListener::bind(("127.0.0.1", port));
        let distribution = std::net::TcpListener::bind(("0.0.0.0", port + 20_000));
        let management = std::net::TcpListener::bind(("127.0.0.1", port + 10_000));
        if amqp.is_ok() && distribution.is_ok() && management.is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair for RabbitMQ (AMQP and distribution) found")
}
