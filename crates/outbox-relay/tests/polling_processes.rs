//! The polling source as a real process: SIGKILL mid-stream loses nothing; two relays on one
//! table, one active and one standby that takes over; bad settings fail at start naming the
//! setting; `--help` documents the source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Fixture, StandbyPair, sigkill_mid_stream, wait_table_empty};
use test_support::process::free_port;

fn polling_env(fixture: &Fixture) -> HashMap<String, String> {
    let mut env = fixture.env(free_port());
    env.insert("RELAY_SOURCE".into(), "polling".into());
    env.insert("RELAY_POLL_INTERVAL_MS".into(), "10".into());
    env.insert("RELAY_POLL_BATCH_SIZE".into(), "200".into());
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    const EVENTS: usize = 10_000;
    const CRASHES: usize = 3;
    let fixture = Fixture::new("relay_poll_kill").await;
    let run = sigkill_mid_stream(&fixture, &polling_env(&fixture), EVENTS, CRASHES).await;
    wait_table_empty(&fixture.db.pool).await;
    run.finish("polling sigkill").await;
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_active_relay_dies() {
    const EVENTS: usize = 4_000;
    let fixture = Fixture::new("relay_poll_standby").await;
    let mut pair = StandbyPair::start(&fixture, || polling_env(&fixture)).await;
    let (code, health) = pair.active.health().await.unwrap();
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["standby"], false);

    let writer = pair.write_events(&fixture, EVENTS, 25).await;
    // The standby published nothing while the active relay lived.
    let (_, health) = pair.standby.health().await.unwrap();
    assert_eq!(health["events_published"], 0, "{health}");
    let takeover = pair.kill_active(writer, EVENTS).await;
    let (_, health) = pair.standby.health().await.unwrap();
    assert!(health["events_published"].as_u64().unwrap() > 0, "{health}");
    pair.finish("polling standby", EVENTS, takeover).await;
    fixture.cleanup().await;
}

/// Runs the binary with `args` and no environment; returns (success, stdout, stderr).
async fn run_binary(args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
            .env_clear()
            .args(args)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_polling_settings_fail_at_start_naming_the_setting() {
    for (args, setting) in [
        (
            &["--source", "polling", "--poll-batch-size", "0"][..],
            "RELAY_POLL_BATCH_SIZE",
        ),
        (
            &["--source", "polling", "--poll-interval-ms", "soon"][..],
            "RELAY_POLL_INTERVAL_MS",
        ),
        (&["--source", "trigger"][..], "RELAY_SOURCE"),
    ] {
        let (success, _, stderr) = run_binary(args).await;
        assert!(!success, "{args:?} must fail");
        assert!(stderr.contains(setting), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn help_documents_the_polling_source() {
    let (success, stdout, _) = run_binary(&["--help"]).await;
    assert!(success);
    for expected in [
        "--source",
        "polling",
        "--poll-interval-ms",
        "--poll-batch-size",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
}
