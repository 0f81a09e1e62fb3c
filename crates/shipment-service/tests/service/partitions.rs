//! `SHIPMENT_PARTITIONS`: three instances on one database and vhost share four partition
//! queues, each partition owned by one of them; a stopped instance's partitions go to the
//! others; every event is applied once and, per order, in publish order. Each instance is
//! given two broker nodes, one of them down.

use std::collections::BTreeSet;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use shipment_service::Application;
use test_support::{EVENTUALLY, TestDatabase, TestVhost, wait_until};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::support::{EXCHANGE, Order, Publisher, config_for, plain_properties};

const PARTITIONS: u16 = 4;

struct Instance {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Instance {
    /// An instance given two broker nodes, the first one down: it connects to the other.
    async fn start(db: &TestDatabase, vhost: &TestVhost) -> Self {
        let closed = test_support::process::free_port();
        let (_, vhost_path) = vhost.amqp_url.rsplit_once('/').unwrap();
        let nodes = format!(
            "amqp://guest:guest@127.0.0.1:{closed}/{vhost_path},{}",
            vhost.amqp_url
        );
        let config = config_for(
            db,
            vhost,
            &[("SHIPMENT_PARTITIONS", "4"), ("AMQP_URL", &nodes)],
        );
        let app = Application::build(config).await.unwrap();
        let port = app.port();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            port,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `/health`'s partition report: (members seen, partitions owned).
    async fn partitions(&self) -> Option<(u64, BTreeSet<u16>)> {
        let url = format!("http://127.0.0.1:{}/health", self.port);
        let body: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
        let report = &body["partitions"];
        let owned = report["owned"]
            .as_array()?
            .iter()
            .filter_map(|partition| partition.as_u64())
            .map(|partition| partition as u16)
            .collect();
        Some((report["members"].as_u64()?, owned))
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// Waits until the running instances see each other and own every partition exactly once.
async fn wait_spread(instances: &[&Instance]) -> Vec<BTreeSet<u16>> {
    wait_until(
        "every partition owned by exactly one instance",
        EVENTUALLY,
        || async {
            let mut owned = Vec::new();
            for instance in instances {
                let (members, partitions) = instance.partitions().await?;
                if members != instances.len() as u64 {
                    return None;
                }
                owned.push(partitions);
            }
            let total: usize = owned.iter().map(BTreeSet::len).sum();
            let union: BTreeSet<u16> = owned.iter().flatten().copied().collect();
            (total == usize::from(PARTITIONS) && union.len() == usize::from(PARTITIONS))
                .then_some(owned)
        },
    )
    .await
    .unwrap()
}

/// Publishes, for each order, its creation and then the cancel of each line, routed by the
/// order id (as the relay does with `RELAY_ROUTING_KEY=key`). Returns the event ids per order,
/// in publish order.
async fn publish_orders(publisher: &Publisher, orders: &[Order]) -> Vec<Vec<Uuid>> {
    let mut published = Vec::new();
    for order in orders {
        let mut events = Vec::new();
        let mut payloads = vec![order.created()];
        payloads.extend((0..order.lines.len()).map(|line| order.line_updated(line, "CANCELLED")));
        for payload in payloads {
            let event_id = Uuid::new_v4();
            let properties: BasicProperties = plain_properties(event_id, &payload);
            publisher
                .channel
                .basic_publish(
                    EXCHANGE.into(),
                    order.id.to_string().as_str().into(),
                    BasicPublishOptions::default(),
                    payload.to_string().as_bytes(),
                    properties.with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            events.push(event_id);
        }
        published.push(events);
    }
    published
}

/// Waits until every event is consumed, then checks each order's events were applied once
/// and in publish order, and each order ended with every line cancelled.
async fn assert_applied_in_order(db: &TestDatabase, orders: &[Order], events: &[Vec<Uuid>]) {
    let all: Vec<Uuid> = events.iter().flatten().copied().collect();
    wait_until("every event consumed", EVENTUALLY, || async {
        let consumed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM shipments.consumed_message WHERE event_id = ANY($1)",
        )
        .bind(&all)
        .fetch_one(&db.pool)
        .await
        .ok()?;
        (consumed == all.len() as i64).then_some(())
    })
    .await
    .unwrap();
    for (order, ids) in orders.iter().zip(events) {
        let applied: Vec<Uuid> = sqlx::query_scalar(
            "SELECT event_id FROM shipments.consumed_message WHERE event_id = ANY($1) \
             ORDER BY applied_order",
        )
        .bind(ids)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            &applied, ids,
            "order {} applied out of publish order",
            order.id
        );
        let entered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM shipments.shipment_line l JOIN shipments.shipment s \
             ON s.id = l.shipment_id WHERE s.order_id = $1 AND l.status <> 'CANCELLED'",
        )
        .bind(order.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(entered, 0, "order {}", order.id);
    }
}

#[tokio::test]
async fn instances_share_the_partitions_and_take_over_a_stopped_ones() {
    test_support::init_tracing();
    let db = TestDatabase::create("partitions").await.unwrap();
    let vhost = TestVhost::create("partitions").await.unwrap();
    let mut first = Instance::start(&db, &vhost).await;
    let second = Instance::start(&db, &vhost).await;
    let third = Instance::start(&db, &vhost).await;
    let owned = wait_spread(&[&first, &second, &third]).await;
    assert!(
        owned.iter().all(|partitions| !partitions.is_empty()),
        "every instance applies a partition: {owned:?}"
    );

    let publisher = Publisher::connect(&vhost).await;
    let orders: Vec<Order> = (0..40).map(|_| Order::new(2)).collect();
    let events = publish_orders(&publisher, &orders).await;
    assert_applied_in_order(&db, &orders, &events).await;
    // The consistent-hash exchange spread the orders: every partition queue received some.
    for partition in 0..PARTITIONS {
        let queue = vhost
            .queue_json(&format!("shipment.orders.{partition}"))
            .await
            .unwrap();
        assert_eq!(queue["arguments"]["x-single-active-consumer"], true);
        assert_eq!(queue["arguments"]["x-queue-type"], "quorum");
        assert_eq!(queue["arguments"]["x-queue-leader-locator"], "balanced");
    }

    // One instance leaves: the two others take its partitions.
    first.stop().await;
    let owned = wait_spread(&[&second, &third]).await;
    assert!(
        owned.iter().all(|partitions| !partitions.is_empty()),
        "{owned:?}"
    );
    let more: Vec<Order> = (0..40).map(|_| Order::new(2)).collect();
    let more_events = publish_orders(&publisher, &more).await;
    assert_applied_in_order(&db, &more, &more_events).await;
    // Straight from the broker (the management API's counts lag behind).
    let dead_lettered = publisher
        .channel
        .queue_declare(
            "shipment.orders.dlq".into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(dead_lettered.message_count(), 0);

    publisher.close().await;
    for mut instance in [second, third] {
        instance.stop().await;
    }
    db.drop_database().await.unwrap();
    vhost.delete().await.unwrap();
}

#[test]
fn partitions_need_a_sane_count() {
    for bad in ["0", "257", "four"] {
        let vars = [("SHIPMENT_PARTITIONS", bad)];
        let error = shipment_service::Config::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
        .unwrap_err();
        assert_eq!(error.variable, "SHIPMENT_PARTITIONS", "{bad}");
    }
}
