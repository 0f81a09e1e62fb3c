//! A 100,000-row transaction streams through the bounded window: every event arrives and the
//! relay's peak resident memory stays small.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    Collector, Fixture, bind_queue, insert_series, spawn_relay, stop_relay, wait_streaming,
};
use test_support::process::free_port;

const EVENTS: usize = 100_000;
/// Generous cap on the relay's peak RSS; the window holds at most 1024 events by default.
const PEAK_RSS_CAP_KIB: u64 = 150 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_transaction_streams_in_bounded_memory() {
    let fixture = Fixture::new("relay_bigtx").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let collector = Collector::start(&queue).await;
    let mut relay = spawn_relay(&fixture.env(free_port()));
    wait_streaming(&relay).await;

    insert_series(&fixture.db.pool, 0, EVENTS, EVENTS).await;
    collector.wait_all(EVENTS, Duration::from_secs(300)).await;
    let peak_kib = relay.peak_rss_kib().unwrap();
    eprintln!(
        "big transaction: {EVENTS} events in one transaction, {} received, relay peak RSS {:.1} MiB",
        collector.received(),
        peak_kib as f64 / 1024.0
    );
    assert!(
        peak_kib < PEAK_RSS_CAP_KIB,
        "peak RSS {peak_kib} KiB exceeds {PEAK_RSS_CAP_KIB} KiB"
    );
    stop_relay(&mut relay).await;
    collector.stop();
    queue.close().await;
    fixture.cleanup().await;
}
