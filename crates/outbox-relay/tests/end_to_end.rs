//! End to end, in-process: rows inserted in several transactions come out of a bound queue in
//! commit order, with the right exchange, message id, headers and body, in both wire formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Fixture, Row, bind_queue, current_wal_lsn, insert_transaction, metrics_text};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use outbox_relay::Relay;
use outbox_relay::config::Cli;
use test_support::EVENTUALLY;

#[tokio::test]
async fn plain_events_arrive_in_commit_order_with_their_metadata() {
    let fixture = Fixture::new("relay_e2e_plain").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let relay = Relay::start(fixture.config()).await.unwrap();

    let a = Row::orders("agg-a", "OrderCreated", 0..3);
    let b = Row::orders("agg-b", "OrderLineUpdated", 3..5);
    insert_transaction(&fixture.db.pool, &a).await;
    // Rows of another table in the same database are not outbox events.
    sqlx::query("INSERT INTO orders.other_table (note) VALUES ('not an event')")
        .execute(&fixture.db.pool)
        .await
        .unwrap();
    insert_transaction(&fixture.db.pool, &b).await;
    // Insert-then-delete in one transaction (the outbox crate's delete_after_insert mode).
    let c = Row::order("agg-a", "OrderCancelled", 5);
    let mut tx = fixture.db.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO orders.outbox_event (id, aggregate_type, aggregate_id, type, payload, \"timestamp\") \
         VALUES ($1, 'order', 'agg-a', 'OrderCancelled', $2::jsonb, now())",
    )
    .bind(c.id)
    .bind(&c.payload)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("DELETE FROM orders.outbox_event WHERE id = $1")
        .bind(c.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let written_up_to = current_wal_lsn(&fixture.db.pool).await;

    let expected: Vec<Row> = a.iter().chain(&b).chain([&c]).cloned().collect();
    let received = queue.take(expected.len(), EVENTUALLY).await;
    assert_eq!(received.len(), expected.len(), "all events arrive");
    for (message, row) in received.iter().zip(&expected) {
        assert_eq!(message.exchange, "order.events");
        assert_eq!(message.routing_key, "");
        assert_eq!(message.message_id(), Some(row.id.to_string()));
        assert_eq!(message.header("id"), Some(row.id.to_string()));
        assert_eq!(message.header("eventType"), Some(row.event_type.clone()));
        assert_eq!(
            message
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.to_string()),
            Some("application/json".to_owned())
        );
        assert_eq!(*message.properties.delivery_mode(), Some(2));
        assert!(
            message
                .properties
                .timestamp()
                .is_some_and(|t| t > 1_700_000_000)
        );
        // jsonb output made compact, keys in jsonb storage order (shorter first).
        let n = message.body_json()["n"].as_u64().unwrap();
        assert_eq!(
            message.body_text(),
            format!(
                r#"{{"n":{n},"orderId":"{}"}}"#,
                if n < 3 || n == 5 { "agg-a" } else { "agg-b" }
            )
        );
    }
    assert!(
        queue.take(1, Duration::from_millis(300)).await.is_empty(),
        "no extra messages"
    );

    // The slot's position passes everything once confirmed.
    fixture
        .wait_slot_past("slot confirmed past the inserts", written_up_to)
        .await;

    let health: serde_json::Value = reqwest::get(format!("http://{}/health", relay.http_addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ready"], true, "{health}");
    assert_eq!(health["events_confirmed"], 6, "{health}");
    let metrics = metrics_text(relay.http_addr()).await;
    assert!(
        metrics.contains(r#"outbox_relay_events_confirmed_total{exchange="order.events"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("outbox_relay_publish_confirm_seconds_bucket"),
        "{metrics}"
    );

    relay.shutdown().await.unwrap();
    fixture.cleanup().await;
}

/// The captured Debezium messages' source rows, inserted for real, come out byte-identical.
#[tokio::test]
async fn debezium_format_reproduces_the_captured_messages() {
    let fixture = Fixture::new("relay_e2e_dbz").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let relay = Relay::start(
        outbox_relay::Config::from_cli(Cli {
            wire_format: Some("debezium".into()),
            ..fixture.cli()
        })
        .unwrap(),
    )
    .await
    .unwrap();

    let fixtures = common::manifest_dir().join("../wire-format/tests/fixtures");
    let mut samples = Vec::new();
    for name in ["order-created.json", "order-line-updated.json"] {
        let text = std::fs::read_to_string(fixtures.join(name)).unwrap();
        samples.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
    }
    for sample in &samples {
        let row = &sample["source_row"];
        sqlx::query(
            "INSERT INTO orders.outbox_event (id, aggregate_type, aggregate_id, type, payload, \"timestamp\") \
             VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6::timestamptz)",
        )
        .bind(row["id"].as_str().unwrap())
        .bind(row["aggregate_type"].as_str().unwrap())
        .bind(row["aggregate_id"].as_str().unwrap())
        .bind(row["type"].as_str().unwrap())
        .bind(row["payload"].to_string())
        .bind(row["timestamp"].as_str().unwrap())
        .execute(&fixture.db.pool)
        .await
        .unwrap();
    }

    let received = queue.take(samples.len(), EVENTUALLY).await;
    assert_eq!(received.len(), samples.len());
    for (message, sample) in received.iter().zip(&samples) {
        assert_eq!(message.exchange, sample["exchange"].as_str().unwrap());
        assert_eq!(message.routing_key, sample["routing_key"].as_str().unwrap());
        assert_eq!(message.body_text(), sample["body"].as_str().unwrap());
        let headers = &sample["properties"]["headers"];
        assert_eq!(message.header("id").as_deref(), headers["id"].as_str());
        assert_eq!(
            message.header("eventType").as_deref(),
            headers["eventType"].as_str()
        );
        // Exactly Debezium's properties: delivery_mode 2 and the two headers, nothing else
        // (no content_type, message_id or timestamp).
        assert_eq!(
            message.properties,
            debezium_properties(&[
                ("id", headers["id"].as_str().unwrap()),
                ("eventType", headers["eventType"].as_str().unwrap()),
            ]),
        );
        // A consumer of the original system decodes it.
        let headers: Vec<(String, String)> = ["id", "eventType"]
            .iter()
            .map(|name| ((*name).to_owned(), message.header(name).unwrap()))
            .collect();
        let event = wire_format::decode(&message.body, None, &headers).unwrap();
        assert_eq!(
            event.event_id.as_deref(),
            sample["source_row"]["id"].as_str()
        );
    }

    relay.shutdown().await.unwrap();
    fixture.cleanup().await;
}

/// The AMQP properties Debezium Server sets: persistent delivery and the headers as long
/// strings.
fn debezium_properties(headers: &[(&str, &str)]) -> BasicProperties {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(
            (*name).into(),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(table)
}

/// Graceful shutdown reports the final position; a restart resumes after it, without
/// publishing anything twice.
#[tokio::test]
async fn restart_after_graceful_shutdown_resumes_without_duplicates() {
    let fixture = Fixture::new("relay_e2e_restart").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let relay = Relay::start(fixture.config()).await.unwrap();
    let first = Row::orders("agg-r", "Numbered", 0..20);
    insert_transaction(&fixture.db.pool, &first).await;
    assert_eq!(queue.take(20, EVENTUALLY).await.len(), 20);
    relay.shutdown().await.unwrap();

    let second = Row::orders("agg-r", "Numbered", 20..30);
    insert_transaction(&fixture.db.pool, &second).await;
    let relay = Relay::start(fixture.config()).await.unwrap();
    let received = queue.take(10, EVENTUALLY).await;
    let numbers: Vec<u64> = received
        .iter()
        .map(|m| m.body_json()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (20..30).collect::<Vec<u64>>());
    assert!(queue.take(1, Duration::from_millis(500)).await.is_empty());
    relay.shutdown().await.unwrap();
    fixture.cleanup().await;
}
