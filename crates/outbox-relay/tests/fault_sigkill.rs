//! SIGKILL of the relay process mid-stream, several times, then a restart: every committed
//! event arrives (at least once; duplicates carry the same message id).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Collector, Fixture, RelayProcess, bind_queue, free_port, insert_series};
use test_support::wait_until;

const EVENTS: usize = 20_000;
const CRASHES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let fixture = Fixture::new("relay_kill").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let collector = Collector::start(&queue).await;
    let env = fixture.env(free_port());
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
    let received = collector.received();
    eprintln!(
        "sigkill: {EVENTS} events, {CRASHES} crashes, {received} messages received ({} duplicates)",
        received - EVENTS
    );
    let status = relay.terminate().await;
    assert!(status.success(), "graceful exit after SIGTERM: {status}");
    collector.stop();
    queue.close().await;
    fixture.cleanup().await;
}
