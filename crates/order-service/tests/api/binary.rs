//! The real binary: configuration errors name the variable and exit non-zero; a configured
//! binary serves, logs SQL with durations when `DB_DEBUG=true`, never logs the password, and
//! stops cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use test_support::{EVENTUALLY, TestDatabase, wait_until};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_order-service");

/// The binary with an empty environment plus `vars`.
fn command(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn invalid_settings_stop_the_binary_naming_the_variable() {
    for (variable, value) in [
        ("SERVER_PORT", "http"),
        ("DB_PORT", "-5"),
        ("DB_DEBUG", "sometimes"),
        ("DB_SCHEMA", "Bad Schema"),
        ("OUTBOX_DELETE_AFTER_INSERT", "2"),
        ("RUST_LOG", "info,[[["),
    ] {
        let output = command(&[(variable, value)]).output().await.unwrap();
        assert!(!output.status.success(), "{variable}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
}

#[tokio::test]
async fn the_binary_serves_logs_sql_and_stops_on_sigterm() {
    let db = TestDatabase::create("orders_bin").await.unwrap();
    let options = &db.options;
    let port = options.get_port().to_string();
    // The test server's password is a known one; the log must not contain it anywhere a
    // connection string would put it.
    let password_marker = format!(":{}@", "postgres");
    let mut child = command(&[
        ("SERVER_PORT", "0"),
        ("DB_HOST", options.get_host()),
        ("DB_PORT", &port),
        ("DB_USER", options.get_username()),
        ("DB_NAME", &db.name),
        ("DB_DEBUG", "true"),
        ("RUST_LOG", "info"),
    ])
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_sender, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = lines_sender.send(line);
        }
    });
    let mut log = Vec::new();
    let address = wait_until("the listening log line", EVENTUALLY, || {
        let received: Vec<String> = std::iter::from_fn(|| lines.try_recv().ok()).collect();
        log.extend(received);
        let address = log
            .iter()
            .find(|line| line.contains("order-service listening"))
            .and_then(|line| line.split("address=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned());
        async move { address }
    })
    .await
    .unwrap();

    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{address}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    let created = client
        .post(format!("http://{address}/orders"))
        .json(&crate::helpers::sample_create_request())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    // The reader task ends at EOF; collect what is left.
    wait_until("the end of the log", EVENTUALLY, || {
        let mut done = false;
        loop {
            match lines.try_recv() {
                Ok(line) => log.push(line),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    done = true;
                    break;
                }
            }
        }
        async move { done.then_some(()) }
    })
    .await
    .unwrap();

    let log = log.join("\n");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("order-service stopped"), "{log}");
    assert!(
        log.lines()
            .any(|line| line.contains("INSERT INTO purchase_order") && line.contains("elapsed")),
        "DB_DEBUG logs each statement with its duration: {log}"
    );
    assert!(!log.contains(&password_marker), "{log}");
    assert!(!log.to_lowercase().contains("password="), "{log}");
    db.drop_database().await.unwrap();
}
