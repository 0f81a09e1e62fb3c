//! Two relays on one slot: the second waits as a standby and takes over after the active one
//! is SIGKILLed; every event arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, StandbyPair};
use test_support::process::free_port;

const EVENTS: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_active_relay_dies() {
    let fixture = Fixture::new("relay_standby").await;
    let mut pair = StandbyPair::start(&fixture, || fixture.env(free_port())).await;
    let writer = pair.write_events(&fixture, EVENTS, 25).await;
    let takeover = pair.kill_active(writer, EVENTS).await;
    pair.finish("standby", EVENTS, takeover).await;
    fixture.cleanup().await;
}
