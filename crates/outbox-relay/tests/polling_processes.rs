//! The polling source as a real process: SIGKILL mid-stream loses nothing; two relays on one
//! table, one active and one standby that takes over; bad settings fail at start naming the
//! setting; `--help` documents the source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Collector, Fixture, RelayProcess, bind_queue, free_port, insert_series};
use test_support::{EVENTUALLY, wait_until};

fn polling_env(fixture: &Fixture) -> HashMap<String, String> {
    let mut env = fixture.env(free_port());
    env.insert("RELAY_SOURCE".into(), "polling".into());
    env.insert("RELAY_POLL_INTERVAL_MS".into(), "10".into());
    env.insert("RELAY_POLL_BATCH_SIZE".into(), "200".into());
    env
}

async fn outbox_rows(fixture: &Fixture) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders.outbox_event")
        .fetch_one(&fixture.db.pool)
        .await
        .unwrap();
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    const EVENTS: usize = 10_000;
    const CRASHES: usize = 3;
    let fixture = Fixture::new("relay_poll_kill").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let collector = Collector::start(&queue).await;
    let env = polling_env(&fixture);
    let mut relay = RelayProcess::spawn(&env);
    relay.wait_streaming().await;

    let pool = fixture.db.pool.clone();
    let writer = tokio::spawn(async move { insert_series(&pool, 0, EVENTS, 50).await });
    for crash in 1..=CRASHES {
        let target = crash * EVENTS / (CRASHES + 1);
        wait_until(
            "events flowing before the crash",
            Duration::from_secs(120),
            || async { (collector.received() >= target).then_some(()) },
        )
        .await
        .unwrap();
        relay.kill9().await;
        relay = RelayProcess::spawn(&env);
    }
    writer.await.unwrap();
    collector.wait_all(EVENTS, Duration::from_secs(180)).await;
    wait_until("outbox table emptied", EVENTUALLY, || async {
        (outbox_rows(&fixture).await == 0).then_some(())
    })
    .await
    .unwrap();
    let received = collector.received();
    eprintln!(
        "polling sigkill: {EVENTS} events, {CRASHES} crashes, {received} messages received \
         ({} duplicates)",
        received - EVENTS
    );
    let status = relay.terminate().await;
    assert!(status.success(), "graceful exit after SIGTERM: {status}");
    collector.stop();
    queue.close().await;
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_active_relay_dies() {
    const EVENTS: usize = 4_000;
    let fixture = Fixture::new("relay_poll_standby").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let collector = Collector::start(&queue).await;
    let mut active = RelayProcess::spawn(&polling_env(&fixture));
    active.wait_streaming().await;
    let mut standby = RelayProcess::spawn(&polling_env(&fixture));
    let (code, health) = wait_until("second relay stands by", EVENTUALLY, || async {
        standby
            .health()
            .await
            .filter(|(_, body)| body["standby"] == true)
    })
    .await
    .unwrap();
    assert_eq!(code, 503, "a standby is not ready: {health}");
    assert_eq!(health["streaming"], false);
    let (code, health) = active.health().await.unwrap();
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["standby"], false);

    let pool = fixture.db.pool.clone();
    let writer = tokio::spawn(async move { insert_series(&pool, 0, EVENTS, 25).await });
    wait_until("events flowing", EVENTUALLY, || async {
        (collector.received() >= EVENTS / 3).then_some(())
    })
    .await
    .unwrap();
    // The standby published nothing while the active relay lived.
    let (_, health) = standby.health().await.unwrap();
    assert_eq!(health["events_published"], 0, "{health}");
    active.kill9().await;
    let killed_at = Instant::now();
    standby.wait_streaming().await;
    let takeover = killed_at.elapsed();
    writer.await.unwrap();
    collector.wait_all(EVENTS, Duration::from_secs(120)).await;
    let (_, health) = standby.health().await.unwrap();
    assert!(health["events_published"].as_u64().unwrap() > 0, "{health}");
    eprintln!(
        "polling standby: took over {:.2} s after SIGKILL; {EVENTS} events, {} received",
        takeover.as_secs_f64(),
        collector.received()
    );
    assert!(standby.terminate().await.success());
    collector.stop();
    queue.close().await;
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
