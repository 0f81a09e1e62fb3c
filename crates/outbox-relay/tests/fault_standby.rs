//! Two relays on one slot: the second waits as a standby and takes over after the active one
//! is SIGKILLed; every event arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Collector, Fixture, RelayProcess, bind_queue, free_port, insert_series};
use test_support::{EVENTUALLY, wait_until};

const EVENTS: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_active_relay_dies() {
    let fixture = Fixture::new("relay_standby").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let collector = Collector::start(&queue).await;
    let mut active = RelayProcess::spawn(&fixture.env(free_port()));
    active.wait_streaming().await;
    let mut standby = RelayProcess::spawn(&fixture.env(free_port()));
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

    let pool = fixture.db.pool.clone();
    let writer = tokio::spawn(async move { insert_series(&pool, 0, EVENTS, 25).await });
    wait_until("events flowing", EVENTUALLY, || async {
        (collector.received() >= EVENTS / 3).then_some(())
    })
    .await
    .unwrap();
    active.kill9().await;
    let killed_at = Instant::now();
    standby.wait_streaming().await;
    let takeover = killed_at.elapsed();
    writer.await.unwrap();
    collector.wait_all(EVENTS, Duration::from_secs(120)).await;
    eprintln!(
        "standby: took over {:.2} s after SIGKILL; {EVENTS} events, {} received",
        takeover.as_secs_f64(),
        collector.received()
    );
    assert!(standby.terminate().await.success());
    collector.stop();
    queue.close().await;
    fixture.cleanup().await;
}
