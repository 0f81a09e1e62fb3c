//! SIGKILL of the relay process mid-stream, several times, then a restart: every committed
//! event arrives (at least once; duplicates carry the same message id).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, sigkill_mid_stream};
use test_support::process::free_port;

const EVENTS: usize = 20_000;
const CRASHES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let fixture = Fixture::new("relay_kill").await;
    let env = fixture.env(free_port());
    let run = sigkill_mid_stream(&fixture, &env, EVENTS, CRASHES).await;
    run.finish("sigkill").await;
    fixture.cleanup().await;
}
