//! The commit-delay histograms (`outbox_relay_commit_to_publish_seconds`,
//! `outbox_relay_commit_to_confirm_seconds`) through real relays: one confirm recorded per
//! event by the replication source (commit time) and by the polling source (the row's
//! `timestamp`), none by the polling source for a table without a `timestamp` column.
//!
//! One test in its own file: the Prometheus recorder is process-global, so the counts read
//! here are this test's alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, Row, bind_queue, insert_transaction, metrics_text};
use outbox_relay::config::Cli;
use outbox_relay::{Config, Relay, RunningRelay};
use test_support::{EVENTUALLY, wait_until};

const CONFIRM_COUNT: &str = "outbox_relay_commit_to_confirm_seconds_count";
const CONFIRM_SUM: &str = "outbox_relay_commit_to_confirm_seconds_sum";
const PUBLISH_COUNT: &str = "outbox_relay_commit_to_publish_seconds_count";
const PUBLISH_SUM: &str = "outbox_relay_commit_to_publish_seconds_sum";
/// A delay of a day or more would be an epoch or unit error, not a slow relay.
const DAY_SECONDS: f64 = 86_400.0;

/// The value of an unlabelled sample, 0 when the metric has none yet.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

async fn wait_confirmed(relay: &RunningRelay, events: u64) {
    wait_until("events confirmed", EVENTUALLY, || async {
        (relay.status().report().events_confirmed == events).then_some(())
    })
    .await
    .unwrap();
}

/// Asserts the histograms after `confirmed` events with a commit time in all.
fn assert_recorded(metrics: &str, confirmed: u64) {
    let count = sample(metrics, CONFIRM_COUNT);
    let sum = sample(metrics, CONFIRM_SUM);
    assert_eq!(
        count, confirmed as f64,
        "one confirm delay per event\n{metrics}"
    );
    assert!(
        sum >= 0.0 && sum < count * DAY_SECONDS,
        "sum {sum}\n{metrics}"
    );
    // Every confirmed event was published at least once (more after a replay).
    let published = sample(metrics, PUBLISH_COUNT);
    assert!(published >= confirmed as f64, "{metrics}");
    let published_sum = sample(metrics, PUBLISH_SUM);
    assert!(published_sum >= 0.0 && published_sum < published * DAY_SECONDS);
    assert!(
        metrics.contains(r#"outbox_relay_commit_to_confirm_seconds_bucket{le="0.0075"}"#),
        "the fine buckets\n{metrics}"
    );
}

#[tokio::test]
async fn each_confirmed_event_records_its_delay_from_commit_with_both_sources() {
    const EVENTS: u64 = 24;
    let fixture = Fixture::new("relay_commit_delay").await;
    let pool = &fixture.db.pool;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;

    // Replication: the transactions' commit times.
    let relay = Relay::start(fixture.config()).await.unwrap();
    for transaction in 0..4 {
        let rows: Vec<Row> = (0..6)
            .map(|n| Row::order("agg", "Numbered", transaction * 6 + n))
            .collect();
        insert_transaction(pool, &rows).await;
    }
    wait_confirmed(&relay, EVENTS).await;
    assert_recorded(&metrics_text(relay.http_addr()).await, EVENTS);
    relay.shutdown().await.unwrap();

    // Polling: the same rows (replication leaves them), by their `timestamp` column.
    let polling_cli = || Cli {
        source: Some("polling".into()),
        poll_interval_ms: Some("10".into()),
        ..fixture.cli()
    };
    let relay = Relay::start(Config::from_cli(polling_cli()).unwrap())
        .await
        .unwrap();
    wait_confirmed(&relay, EVENTS).await;
    let metrics = metrics_text(relay.http_addr()).await;
    assert_recorded(&metrics, 2 * EVENTS);
    let published_before = sample(&metrics, PUBLISH_COUNT);
    relay.shutdown().await.unwrap();
    let received = queue.take(2 * EVENTS as usize, EVENTUALLY).await;
    assert_eq!(received.len(), 2 * EVENTS as usize);

    // Polling a table without a `timestamp` column: nothing to measure from, nothing recorded.
    sqlx::query("ALTER TABLE orders.outbox_event DROP COLUMN \"timestamp\"")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO orders.outbox_event (id, aggregate_type, aggregate_id, type, payload) \
         SELECT gen_random_uuid(), 'order', 'agg', 'Numbered', jsonb_build_object('n', i) \
         FROM generate_series(1, 5) AS i",
    )
    .execute(pool)
    .await
    .unwrap();
    let relay = Relay::start(Config::from_cli(polling_cli()).unwrap())
        .await
        .unwrap();
    wait_confirmed(&relay, 5).await;
    let metrics = metrics_text(relay.http_addr()).await;
    assert_eq!(
        sample(&metrics, CONFIRM_COUNT),
        (2 * EVENTS) as f64,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, PUBLISH_COUNT),
        published_before,
        "{metrics}"
    );
    relay.shutdown().await.unwrap();

    queue.close().await;
    fixture.cleanup().await;
}
