//! The workspace's binaries as child processes, for the tests that run them as their users do
//! (end-to-end, fault and chaos tests).
//!
//! - [`workspace_binary`]: where `cargo build --workspace --bins` put a binary;
//! - [`free_port`]: a loopback port nobody listens on, for a binary's HTTP endpoint;
//! - [`ServiceCommand`] / [`ServiceProcess`]: spawn a binary with its environment, wait for its
//!   `/health`, read `/health` and `/metrics`, SIGKILL and restart it, stop it with SIGTERM. A
//!   process is killed when its [`ServiceProcess`] is dropped, so a failed test leaves none behind.
//!
//! Signals are sent with the `kill` command (no libc binding in the workspace).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::wait_until;

/// How many log lines an error message shows.
const LOG_LINES_IN_ERRORS: usize = 40;

/// A workspace binary: it sits in the profile folder, next to the `deps` folder this test binary
/// runs from (`<target>/<profile>/deps/..`). Fails, saying how to build it, when it is missing.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("locating the test binary's profile folder")?;
    let path = profile_dir.join(name);
    ensure!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (make test and make chaos do)",
        path.display()
    );
    Ok(path)
}

/// A free TCP port on loopback (bound, then released for the process under test to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a free port on 127.0.0.1")
        .port()
}

/// The last `lines` lines of a text file (empty if it cannot be read).
pub fn file_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where a process's stdout and stderr go.
#[derive(Debug, Clone)]
enum Output {
    Discard,
    Inherit,
    /// Appended to this file (across restarts).
    File(PathBuf),
}

/// How to start one binary: program, environment, output, HTTP port. Kept by the running
/// [`ServiceProcess`] so that [`ServiceProcess::restart`] starts it the same way.
#[derive(Debug, Clone)]
pub struct ServiceCommand {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    clear_env: bool,
    output: Output,
    http_port: Option<u16>,
}

impl ServiceCommand {
    /// `program`, called `name` in messages; inherits this process's environment and discards
    /// its output until told otherwise.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            clear_env: false,
            output: Output::Discard,
            http_port: None,
        }
    }

    /// Workspace binary `name`, located by [`workspace_binary`].
    pub fn workspace(name: &str) -> Result<Self> {
        Ok(Self::new(name, workspace_binary(name)?))
    }

    /// The port of its HTTP endpoint (`/health`, `/metrics`); the caller also passes it in the
    /// binary's own setting.
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env.extend(
            vars.into_iter()
                .map(|(key, value)| (key.into(), value.into())),
        );
        self
    }

    /// Starts from an empty environment: the binary sees exactly the variables given here.
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Appends stdout and stderr to `path` (kept across restarts; its tail is shown in errors).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.output = Output::File(path.into());
        self
    }

    /// Lets stdout and stderr through to the test's own output.
    pub fn inherit_output(mut self) -> Self {
        self.output = Output::Inherit;
        self
    }

    pub fn spawn(self) -> Result<ServiceProcess> {
        let child = self.spawn_child()?;
        Ok(ServiceProcess {
            command: self,
            child,
            http: reqwest::Client::new(),
            starts: 1,
        })
    }

    /// Spawns, then waits up to `timeout` until `/health` answers 200.
    pub async fn start(self, timeout: Duration) -> Result<ServiceProcess> {
        let mut process = self.spawn()?;
        process.wait_healthy(timeout).await?;
        Ok(process)
    }

    fn spawn_child(&self) -> Result<Child> {
        let mut command = Command::new(&self.program);
        if self.clear_env {
            command.env_clear();
        }
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match &self.output {
            Output::Discard => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
            Output::Inherit => {}
            Output::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the log file {}", path.display()))?;
                command.stdout(file.try_clone()?).stderr(file);
            }
        }
        command
            .spawn()
            .with_context(|| format!("spawning {} ({})", self.name, self.program.display()))
    }
}

/// One running binary; SIGKILLed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    command: ServiceCommand,
    child: Child,
    http: reqwest::Client,
    starts: u32,
}

impl ServiceProcess {
    pub fn name(&self) -> &str {
        &self.command.name
    }

    /// How many times it was started (1 + restarts).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The operating system's id of the running process (None once it was waited for).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `http://127.0.0.1:<http port><path>`; the port is 0 when none was given.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}{path}",
            self.command.http_port.unwrap_or(0)
        )
    }

    /// Everything in its log file so far (empty when its output is not captured).
    pub fn output(&self) -> String {
        match &self.command.output {
            Output::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
            Output::Discard | Output::Inherit => String::new(),
        }
    }

    /// The last `lines` lines of its log file.
    pub fn log_tail(&self, lines: usize) -> String {
        match &self.command.output {
            Output::File(path) => file_tail(path, lines),
            Output::Discard | Output::Inherit => String::new(),
        }
    }

    /// What an error about this process shows of its output.
    fn log_excerpt(&self) -> String {
        match &self.command.output {
            Output::File(_) => {
                format!("its log ends with:\n{}", self.log_tail(LOG_LINES_IN_ERRORS))
            }
            Output::Discard => "its output was not captured".to_owned(),
            Output::Inherit => "its output is above".to_owned(),
        }
    }

    /// Waits until `/health` answers 200; fails, with the end of its log, if the process exits
    /// or `timeout` passes.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let url = self.url("/health");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status}; {}",
                    self.name(),
                    self.log_excerpt()
                );
            }
            let last_answer = match self
                .http
                .get(&url)
                .timeout(Duration::from_secs(3))
                .send()
                .await
            {
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
                    "{} not healthy at {url} after {timeout:?} (last answer: {last_answer}); {}",
                    self.name(),
                    self.log_excerpt()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/health` right now: its status code and JSON body (None if it does not answer JSON).
    pub async fn health(&self) -> Option<(u16, Value)> {
        let response = self
            .http
            .get(self.url("/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// Polls `/health` until `accept(status, body)` holds; returns that answer. `what` names the
    /// condition in the timeout error.
    pub async fn wait_health(
        &self,
        what: &str,
        timeout: Duration,
        accept: impl Fn(u16, &Value) -> bool,
    ) -> Result<(u16, Value)> {
        wait_until(what, timeout, || async {
            self.health()
                .await
                .filter(|(status, body)| accept(*status, body))
        })
        .await
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let response = self
            .http
            .get(self.url("/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("GET /metrics of {}", self.name()))?;
        Ok(response.text().await?)
    }

    /// Peak resident memory (VmHWM) in KiB, while the process lives.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
    }

    /// SIGKILL, like a crash: nothing is flushed, nothing is acknowledged. Waits for the exit.
    pub async fn kill9(&mut self) -> Result<()> {
        self.child
            .start_kill()
            .with_context(|| format!("SIGKILL {}", self.name()))?;
        self.child.wait().await?;
        Ok(())
    }

    /// Starts the binary again the same way (after [`ServiceProcess::kill9`]).
    pub fn restart(&mut self) -> Result<()> {
        self.child = self.command.spawn_child()?;
        self.starts += 1;
        Ok(())
    }

    /// SIGTERM, then up to `grace` for a graceful exit, whose status it returns. Past `grace` it
    /// SIGKILLs the process and fails.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let pid = self.pid().context("the process has no id")?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .context("running `kill -TERM`")?;
        ensure!(sent.success(), "kill -TERM {pid} ({}) failed", self.name());
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "{} did not exit within {grace:?} of SIGTERM; SIGKILLed",
                    self.name()
                )
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself and returns its status; SIGKILLs
    /// it and returns None if it did not.
    pub async fn exit_within(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => {
                self.child.kill().await?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EVENTUALLY;

    /// `/bin/sh -c script`, its output in a fresh log file.
    fn shell(script: &str) -> (ServiceCommand, PathBuf) {
        let log = std::env::temp_dir().join(format!("test-support-{}.log", crate::unique_suffix()));
        let command = ServiceCommand::new("sh", "/bin/sh")
            .arg("-c")
            .arg(script)
            .log_file(&log);
        (command, log)
    }

    #[test]
    fn a_missing_workspace_binary_says_how_to_build_it() {
        let error = workspace_binary("no-such-binary").unwrap_err().to_string();
        assert!(error.contains("no-such-binary is missing"), "{error}");
        assert!(error.contains("cargo build --workspace --bins"), "{error}");
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[tokio::test]
    async fn after_env_clear_the_binary_sees_exactly_the_variables_given() {
        let (command, log) = shell("echo \"A=$A HOME=${HOME:-unset}\"");
        let mut process = command.env_clear().env("A", "1").spawn().unwrap();
        let status = process.exit_within(EVENTUALLY).await.unwrap();
        assert!(status.is_some_and(|status| status.success()));
        assert_eq!(process.output().trim(), "A=1 HOME=unset");
        std::fs::remove_file(log).unwrap();
    }

    #[tokio::test]
    async fn kill9_then_restart_runs_it_again_appending_to_its_log() {
        let (command, log) =
            shell("trap 'echo stopping; exit 0' TERM; echo started; while :; do sleep 0.1; done");
        let mut process = command.spawn().unwrap();
        let started = |process: &ServiceProcess, times: usize| {
            (process.output().matches("started").count() == times).then_some(())
        };
        wait_until("first start", EVENTUALLY, || async { started(&process, 1) })
            .await
            .unwrap();
        process.kill9().await.unwrap();
        process.restart().unwrap();
        wait_until("second start", EVENTUALLY, || async {
            started(&process, 2)
        })
        .await
        .unwrap();
        assert_eq!(process.starts(), 2);
        let status = process.terminate(EVENTUALLY).await.unwrap();
        assert!(status.success(), "the TERM trap exits 0: {status}");
        assert!(
            process.output().ends_with("stopping\n"),
            "{}",
            process.output()
        );
        std::fs::remove_file(log).unwrap();
    }

    #[tokio::test]
    async fn terminate_fails_and_kills_a_process_that_ignores_sigterm() {
        let (command, log) = shell("trap '' TERM; echo started; while :; do sleep 0.1; done");
        let mut process = command.spawn().unwrap();
        wait_until("start", EVENTUALLY, || async {
            process.output().contains("started").then_some(())
        })
        .await
        .unwrap();
        let error = process
            .terminate(Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("did not exit within"), "{error}");
        assert!(process.exit_within(EVENTUALLY).await.unwrap().is_some());
        std::fs::remove_file(log).unwrap();
    }

    #[tokio::test]
    async fn wait_healthy_names_an_early_exit_and_shows_the_log() {
        let (command, log) = shell("echo boom; exit 3");
        let mut process = command.http_port(free_port()).spawn().unwrap();
        let error = process
            .wait_healthy(EVENTUALLY)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("sh exited with exit status: 3"), "{error}");
        assert!(error.contains("its log ends with:\nboom"), "{error}");
        std::fs::remove_file(log).unwrap();
    }

    #[tokio::test]
    async fn wait_healthy_gives_up_after_its_timeout_with_the_last_answer() {
        let (command, log) = shell("exec sleep 30");
        let port = free_port();
        let mut process = command.http_port(port).spawn().unwrap();
        let error = process
            .wait_healthy(Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("sh not healthy at http://127.0.0.1:{port}/health")),
            "{error}"
        );
        assert!(error.contains("last answer:"), "{error}");
        std::fs::remove_file(log).unwrap();
    }
}
