//! A broker restart mid-stream, on a private RabbitMQ node (the shared one is left alone):
//! the relay reconnects, publishes its unconfirmed events again, and nothing is lost; with
//! the replication source and with the polling source (one reconnect step serves both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{
    Collector, Fixture, bind_queue, insert_series, spawn_relay, stop_relay, wait_streaming,
};
use test_support::process::free_port;
use test_support::{EVENTUALLY, unique_suffix};

const EVENTS: usize = 10_000;

/// One private node at a time: the tests of this file pick their ports the same way.
static ONE_NODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A private RabbitMQ node started with `scripts/infra.sh`; stopped when dropped.
struct PrivateNode {
    dir: PathBuf,
    port: u16,
    management_port: u16,
}

impl PrivateNode {
    fn script() -> PathBuf {
        common::manifest_dir().join("../../scripts/infra.sh")
    }

    fn run(&self, command: &str) {
        let status = Command::new("bash")
            .arg(Self::script())
            .arg(command)
            .env("OUTBOX_LOCAL_DIR", &self.dir)
            .env("RABBITMQ_PORT", self.port.to_string())
            .env("RABBITMQ_MANAGEMENT_PORT", self.management_port.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "infra.sh {command} failed");
    }

    fn start() -> Self {
        // A port in 5600-5699 nobody listens on (its distribution port is port + 20000).
        let port = (5600..5700)
            .cycle()
            .skip(std::process::id() as usize % 100)
            .take(100)
            .find(|port| {
                [*port, port + 10_000, port + 20_000]
                    .iter()
                    .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            })
            .unwrap();
        let dir = std::env::temp_dir().join(format!("relay-rabbit-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let node = Self {
            dir,
            port,
            management_port: port + 10_000,
        };
        node.run("rabbitmq-up");
        node
    }

    fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2F", self.port)
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        self.run("rabbitmq-down");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing() {
    broker_restart_with(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing_with_the_polling_source() {
    broker_restart_with(&[
        ("RELAY_SOURCE", "polling"),
        ("RELAY_POLL_INTERVAL_MS", "10"),
        ("RELAY_POLL_BATCH_SIZE", "200"),
    ])
    .await;
}

/// Relays `EVENTS` through a broker restart, with `settings` added to the relay's environment.
async fn broker_restart_with(settings: &[(&str, &str)]) {
    let _node_lock = ONE_NODE_AT_A_TIME.lock().await;
    let node = PrivateNode::start();
    let fixture = Fixture::new("relay_broker").await;
    let queue = bind_queue(&node.amqp_url(), "order.events").await;
    let mut env = fixture.env(free_port());
    env.insert("AMQP_URL".into(), node.amqp_url());
    for (name, value) in settings {
        env.insert((*name).into(), (*value).into());
    }
    let mut relay = spawn_relay(&env);
    wait_streaming(&relay).await;

    let pool = fixture.db.pool.clone();
    let writer = tokio::spawn(async move {
        for chunk in 0..10 {
            insert_series(&pool, chunk * EVENTS / 10, EVENTS / 10, 20).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    relay
        .wait_health(
            "events confirmed before the restart",
            EVENTUALLY,
            |_, body| body["events_confirmed"].as_u64().unwrap_or(0) >= 1000,
        )
        .await
        .unwrap();
    let queue_name = queue.queue.clone();
    queue.close().await;

    node.run("rabbitmq-down");
    relay
        .wait_health(
            "relay notices the broker is gone",
            EVENTUALLY,
            |code, body| code == 503 && body["broker_connected"] == false,
        )
        .await
        .unwrap();
    node.run("rabbitmq-up");
    writer.await.unwrap();

    relay
        .wait_health("relay reconnected", Duration::from_secs(60), |_, body| {
            body["broker_connected"] == true
        })
        .await
        .unwrap();
    let queue = common::open_queue(&node.amqp_url(), &queue_name).await;
    let collector = Collector::start(&queue).await;
    collector.wait_all(EVENTS, Duration::from_secs(120)).await;
    eprintln!(
        "broker restart {settings:?}: {EVENTS} events, 1 broker restart, {} messages received",
        collector.received()
    );
    collector.stop();
    stop_relay(&mut relay).await;
    queue.close().await;
    fixture.cleanup().await;
    drop(node);
}
