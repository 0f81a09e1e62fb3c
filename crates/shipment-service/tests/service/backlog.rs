//! Measures the consumer on a backlog: `cargo test -p shipment-service --release -- --ignored
//! backlog --nocapture` (BACKLOG_EVENTS, default 10,000: half OrderCreated with 2 lines, half
//! OrderLineUpdated; BACKLOG_PREFETCH, default 50).

use std::time::{Duration, Instant};

use test_support::wait_until;
use uuid::Uuid;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn backlog_of_events_is_consumed() {
    let events: usize = std::env::var("BACKLOG_EVENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000);
    let prefetch = std::env::var("BACKLOG_PREFETCH").unwrap_or_else(|_| "50".to_owned());
    // Build declares the topology; the consumer only runs once started below.
    let built = build_app(&[("RABBITMQ_PREFETCH", &prefetch)], |_| {}).await;
    let publisher = &built.publisher;
    let orders: Vec<Order> = (0..events / 2).map(|_| Order::new(2)).collect();
    let created = orders.iter().map(Order::created);
    let updated = orders
        .iter()
        .map(|order| order.line_updated(0, "CANCELLED"));
    for payload in created.chain(updated) {
        publisher
            .publish_no_wait(
                payload.to_string().as_bytes(),
                plain_properties(Uuid::new_v4(), &payload),
            )
            .await;
    }
    publisher.channel.wait_for_confirms().await.unwrap();

    let started = Instant::now();
    let app = built.start();
    let expected = (orders.len() * 2) as i64;
    wait_until(
        "the backlog to be applied",
        Duration::from_secs(600),
        || async { (app.count("consumed_message").await >= expected).then_some(()) },
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    println!(
        "backlog: {expected} events applied in {:.2} s = {:.0} events/s (prefetch {prefetch})",
        elapsed.as_secs_f64(),
        expected as f64 / elapsed.as_secs_f64()
    );
    for order in orders.iter().take(20) {
        assert_eq!(app.line_status(order.lines[0]).await.unwrap(), "CANCELLED");
    }
    app.cleanup().await;
}
