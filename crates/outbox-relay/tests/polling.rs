//! The polling source (`--source polling`), in-process against the real servers: timestamp
//! order, messages identical to the replication source's in both wire formats, an emptied
//! table; rows kept while no queue is bound; unroutable rows with and without a dead-letter
//! exchange; a stalled table next to a flowing one; a row locked by another session; an
//! aborted relay; start checks; a 10,000-row drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    Collector, Fixture, Received, add_destination_column, assert_dead_lettered, bind_queue,
    insert_series, metrics_text, outbox_rows, routed_by_destination, start_error,
    wait_relay_streaming, wait_stall_cleared, wait_stalled, wait_table_empty,
};
use lapin::BasicProperties;
use outbox_relay::config::Cli;
use outbox_relay::{Config, Relay};
use sqlx::PgPool;
use test_support::{EVENTUALLY, wait_until};

fn polling_cli(fixture: &Fixture) -> Cli {
    Cli {
        source: Some("polling".into()),
        poll_interval_ms: Some("10".into()),
        ..fixture.cli()
    }
}

fn polling_config(fixture: &Fixture) -> Config {
    Config::from_cli(polling_cli(fixture)).unwrap()
}

/// Inserts event `n` of `aggregate` in its own transaction, stamped `n` ms after a fixed time
/// (so the stamp order is chosen by the test, not by the insertion order).
async fn insert_stamped(pool: &PgPool, aggregate: &str, n: i64, stamp_ms: i64) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders.outbox_event \
         (id, aggregate_type, aggregate_id, type, payload, \"timestamp\") \
         VALUES ($1, 'order', $2, 'Numbered', jsonb_build_object('n', $3::int8, 'orderId', $2::text), \
                 '2026-01-01T00:00:00Z'::timestamptz + $4::int8 * interval '1 millisecond')",
    )
    .bind(id)
    .bind(aggregate)
    .bind(n)
    .bind(stamp_ms)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// The event id: the `message_id` property (full properties) or else the `id` header (the
/// debezium format's only properties are Debezium's).
fn event_id(message: &Received) -> String {
    let headers: Vec<(String, String)> = message
        .header("id")
        .map(|id| vec![("id".to_owned(), id)])
        .unwrap_or_default();
    wire_format::decode(&message.body, message.message_id().as_deref(), &headers)
        .unwrap()
        .event_id
        .unwrap()
}

fn numbers(received: &[Received]) -> Vec<u64> {
    received
        .iter()
        .map(|m| m.body_json()["n"].as_u64().unwrap())
        .collect()
}

/// The numbers in order of first arrival (duplicates after a retry dropped).
fn first_arrivals(received: &[Received]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    numbers(received)
        .into_iter()
        .filter(|n| seen.insert(*n))
        .collect()
}

/// The same rows through the replication source, then through the polling source: the
/// polling source publishes them in `timestamp` order (not insertion order), and each message
/// has the replication source's exchange, routing key, message id, headers and body.
async fn same_messages_as_the_replication_source(wire_format: &str) {
    let fixture = Fixture::new("relay_poll_same").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let replication = Relay::start(
        Config::from_cli(Cli {
            wire_format: Some(wire_format.into()),
            ..fixture.cli()
        })
        .unwrap(),
    )
    .await
    .unwrap();
    // Inserted in this order; stamped so that timestamp order is n order.
    let inserts = [
        (3, "agg-a"),
        (0, "agg-a"),
        (5, "agg-b"),
        (1, "agg-b"),
        (4, "agg-a"),
        (2, "agg-c"),
    ];
    let mut ids = vec![String::new(); inserts.len()];
    for (n, aggregate) in inserts {
        ids[n as usize] = insert_stamped(&fixture.db.pool, aggregate, n, n * 10)
            .await
            .to_string();
    }
    let message_ids =
        |received: &[Received]| -> Vec<String> { received.iter().map(event_id).collect() };
    let from_replication = queue.take(inserts.len(), EVENTUALLY).await;
    let commit_order: Vec<String> = inserts
        .iter()
        .map(|(n, _)| ids[*n as usize].clone())
        .collect();
    assert_eq!(message_ids(&from_replication), commit_order);
    replication.shutdown().await.unwrap();
    assert_eq!(
        outbox_rows(&fixture.db.pool).await,
        6,
        "replication leaves the rows"
    );

    let polling = Relay::start(
        Config::from_cli(Cli {
            wire_format: Some(wire_format.into()),
            ..polling_cli(&fixture)
        })
        .unwrap(),
    )
    .await
    .unwrap();
    let from_polling = queue.take(inserts.len(), EVENTUALLY).await;
    assert_eq!(message_ids(&from_polling), ids, "timestamp order");
    let by_id: HashMap<String, &Received> =
        from_replication.iter().map(|m| (event_id(m), m)).collect();
    for message in &from_polling {
        let twin = by_id[&event_id(message)];
        assert_eq!(message.exchange, twin.exchange);
        assert_eq!(message.routing_key, twin.routing_key);
        assert_eq!(message.body, twin.body, "{}", message.body_text());
        assert_eq!(message.properties.headers(), twin.properties.headers());
        assert_eq!(
            message.properties.content_type(),
            twin.properties.content_type()
        );
        assert_eq!(*message.properties.delivery_mode(), Some(2));
        if wire_format == "debezium" {
            // Exactly Debezium's properties: delivery_mode and headers, nothing else.
            let debezium = BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(twin.properties.headers().clone().unwrap());
            assert_eq!(message.properties, debezium);
            assert_eq!(twin.properties, debezium);
        } else {
            assert_eq!(message.message_id(), Some(event_id(message)));
            // The row's timestamp (2026-01-01), where the replication source gives commit time.
            assert_eq!(*message.properties.timestamp(), Some(1_767_225_600));
        }
    }
    wait_table_empty(&fixture.db.pool).await;
    assert!(
        queue.take(1, Duration::from_millis(300)).await.is_empty(),
        "no extra messages"
    );
    let health = polling.status().report();
    assert!(
        health.ready && health.streaming && !health.standby,
        "{health:?}"
    );
    assert_eq!(health.events_confirmed, 6);

    polling.shutdown().await.unwrap();
    queue.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn plain_messages_equal_the_replication_sources_in_timestamp_order() {
    same_messages_as_the_replication_source("plain").await;
}

#[tokio::test]
async fn debezium_messages_equal_the_replication_sources_in_timestamp_order() {
    same_messages_as_the_replication_source("debezium").await;
}

#[tokio::test]
async fn rows_stay_while_no_queue_is_bound_and_all_arrive_once_bound() {
    let fixture = Fixture::new("relay_poll_unbound").await;
    let relay = Relay::start(polling_config(&fixture)).await.unwrap();
    for n in 0..30 {
        insert_stamped(&fixture.db.pool, "agg", n, n).await;
    }
    let report = wait_stalled(&relay).await;
    assert!(!report.ready, "{report:?}");
    assert!(report.unroutable_events >= 1, "{report:?}");
    assert!(
        report.stalled.as_deref().unwrap().contains("order.events"),
        "{report:?}"
    );
    // A while later: still stalled, and every row is still in the table.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(relay.status().report().stalled.is_some());
    assert_eq!(outbox_rows(&fixture.db.pool).await, 30);
    let metrics = metrics_text(relay.http_addr()).await;
    assert!(
        metrics.contains(r#"outbox_relay_unroutable_total{reason="returned"}"#),
        "{metrics}"
    );
    // (The recorder is shared by the tests of this process: the value is not ours alone.)
    assert!(
        metrics.contains(r#"outbox_relay_polling_backlog_rows{table="orders.outbox_event"}"#),
        "{metrics}"
    );

    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let received = queue
        .take_until(EVENTUALLY, |received| first_arrivals(received).len() == 30)
        .await;
    assert_eq!(first_arrivals(&received), (0..30).collect::<Vec<u64>>());
    wait_table_empty(&fixture.db.pool).await;
    wait_stall_cleared(&relay).await;

    relay.shutdown().await.unwrap();
    queue.close().await;
    fixture.cleanup().await;
}

/// Inserts event `n` with a routing column that may be NULL.
async fn insert_with_destination(pool: &PgPool, n: i64, destination: Option<&str>) -> uuid::Uuid {
    let id = insert_stamped(pool, "agg", n, n).await;
    sqlx::query("UPDATE orders.outbox_event SET destination = $2 WHERE id = $1")
        .bind(id)
        .bind(destination)
        .execute(pool)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn an_unroutable_row_stalls_the_table_until_it_is_fixed() {
    let fixture = Fixture::new("relay_poll_row_stall").await;
    let pool = &fixture.db.pool;
    add_destination_column(pool).await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    // Rows exist before the relay starts, so they are all in its first batch.
    let first = insert_with_destination(pool, 0, Some("order.events")).await;
    let bad = insert_with_destination(pool, 1, None).await;
    let after = insert_with_destination(pool, 2, Some("order.events")).await;
    let relay = Relay::start(routed_by_destination(polling_cli(&fixture), None))
        .await
        .unwrap();

    let received = queue.take(1, EVENTUALLY).await;
    assert_eq!(received[0].message_id(), Some(first.to_string()));
    let report = wait_stalled(&relay).await;
    let reason = report.stalled.clone().unwrap();
    assert!(
        reason.contains("destination") && reason.contains("route.by.field"),
        "{reason}"
    );
    assert!(!report.ready);
    // Nothing after the row is published, and the row and the one after stay.
    assert!(queue.take(1, Duration::from_millis(700)).await.is_empty());
    let (left,): (Vec<uuid::Uuid>,) =
        sqlx::query_as("SELECT array_agg(id ORDER BY \"timestamp\") FROM orders.outbox_event")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(left, vec![bad, after]);
    assert_eq!(relay.status().report().unroutable_events, 1, "counted once");

    // The operator fixes the row: the relay resumes without a restart.
    sqlx::query("UPDATE orders.outbox_event SET destination = 'order.events' WHERE id = $1")
        .bind(bad)
        .execute(pool)
        .await
        .unwrap();
    let received = queue.take(2, EVENTUALLY).await;
    let ids: Vec<_> = received.iter().map(|m| m.message_id().unwrap()).collect();
    assert_eq!(ids, vec![bad.to_string(), after.to_string()]);
    wait_table_empty(pool).await;
    wait_stall_cleared(&relay).await;

    relay.shutdown().await.unwrap();
    queue.close().await;
    fixture.cleanup().await;
}

/// Two outbox tables: an unroutable row stalls its own table only; the other table's rows
/// are relayed between the stalled row's retries, and the stall is counted once.
#[tokio::test]
async fn a_stalled_table_does_not_hold_back_another_table() {
    let fixture = Fixture::new("relay_poll_two_tables").await;
    let pool = &fixture.db.pool;
    add_destination_column(pool).await;
    sqlx::query("CREATE TABLE orders.outbox_event_b (LIKE orders.outbox_event INCLUDING ALL)")
        .execute(pool)
        .await
        .unwrap();
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    insert_with_destination(pool, 0, None).await;
    let cli = Cli {
        tables: Some("orders.outbox_event,orders.outbox_event_b".into()),
        ..polling_cli(&fixture)
    };
    let relay = Relay::start(routed_by_destination(cli, None))
        .await
        .unwrap();
    wait_stalled(&relay).await;

    let mut expected = Vec::new();
    for n in 1..=3_i64 {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO orders.outbox_event_b \
             (id, aggregate_type, aggregate_id, type, payload, \"timestamp\", destination) \
             VALUES ($1, 'order', 'agg-b', 'Numbered', jsonb_build_object('n', $2::int8), \
                     now(), 'order.events')",
        )
        .bind(id)
        .bind(n)
        .execute(pool)
        .await
        .unwrap();
        expected.push(id.to_string());
    }
    let received = queue.take(3, EVENTUALLY).await;
    let ids: Vec<_> = received.iter().map(|m| m.message_id().unwrap()).collect();
    assert_eq!(ids, expected);
    wait_until("table b emptied", EVENTUALLY, || async {
        let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders.outbox_event_b")
            .fetch_one(pool)
            .await
            .unwrap();
        (rows == 0).then_some(())
    })
    .await
    .unwrap();
    let report = relay.status().report();
    assert!(report.stalled.is_some(), "{report:?}");
    assert_eq!(report.unroutable_events, 1, "counted once");
    assert_eq!(outbox_rows(pool).await, 1, "the unroutable row stays");

    relay.shutdown().await.unwrap();
    queue.close().await;
    fixture.cleanup().await;
}

/// A row locked by another session (an operator's open transaction here) holds back the rows
/// after it: the relay waits for the lock instead of skipping the row, so the table's order
/// holds. (`SKIP LOCKED` published the next row first: the cause of a rare failure of the
/// test above, whose fixing UPDATE sometimes held the lock while the relay polled.)
#[tokio::test]
async fn a_row_locked_by_another_session_holds_back_the_rows_after_it() {
    let fixture = Fixture::new("relay_poll_locked_row").await;
    let pool = &fixture.db.pool;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let locked = insert_stamped(pool, "agg", 0, 0).await;
    let after = insert_stamped(pool, "agg", 1, 1).await;
    let mut operator = pool.begin().await.unwrap();
    sqlx::query("UPDATE orders.outbox_event SET type = 'Amended' WHERE id = $1")
        .bind(locked)
        .execute(&mut *operator)
        .await
        .unwrap();

    let relay = Relay::start(polling_config(&fixture)).await.unwrap();
    wait_relay_streaming(&relay, "relay polling").await;
    // It polls every 10 ms, backing off to 100, 200, 400 ms: several polls meet the lock.
    assert!(
        queue.take(1, Duration::from_millis(700)).await.is_empty(),
        "nothing is published past the locked row"
    );
    assert_eq!(outbox_rows(pool).await, 2);

    operator.commit().await.unwrap();
    let received = queue.take(2, EVENTUALLY).await;
    let ids: Vec<_> = received.iter().map(|m| m.message_id().unwrap()).collect();
    assert_eq!(ids, vec![locked.to_string(), after.to_string()]);
    assert_eq!(received[0].header("eventType").as_deref(), Some("Amended"));
    wait_table_empty(pool).await;
    assert!(relay.status().report().ready);

    relay.shutdown().await.unwrap();
    queue.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn an_unroutable_row_goes_to_the_dead_letter_exchange_and_is_deleted() {
    let fixture = Fixture::new("relay_poll_row_dlx").await;
    let pool = &fixture.db.pool;
    add_destination_column(pool).await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let dead_letters = bind_queue(&fixture.vhost.amqp_url, "outbox.dead-letter").await;
    let first = insert_with_destination(pool, 0, Some("order.events")).await;
    let bad = insert_with_destination(pool, 1, None).await;
    let after = insert_with_destination(pool, 2, Some("order.events")).await;
    let relay = Relay::start(routed_by_destination(
        polling_cli(&fixture),
        Some("outbox.dead-letter"),
    ))
    .await
    .unwrap();

    let routed = queue.take(2, EVENTUALLY).await;
    let ids: Vec<_> = routed.iter().map(|m| m.message_id().unwrap()).collect();
    assert_eq!(ids, vec![first.to_string(), after.to_string()]);
    assert_dead_lettered(&dead_letters, &bad.to_string()).await;
    wait_table_empty(pool).await;
    let report = relay.status().report();
    assert!(report.stalled.is_none(), "{report:?}");
    assert_eq!(report.unroutable_events, 1);

    relay.shutdown().await.unwrap();
    queue.close().await;
    dead_letters.close().await;
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_relay_loses_nothing_after_a_restart() {
    const EVENTS: usize = 3_000;
    let fixture = Fixture::new("relay_poll_abort").await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let collector = Collector::start(&queue).await;
    let config = Config::from_cli(Cli {
        poll_batch_size: Some("100".into()),
        ..polling_cli(&fixture)
    })
    .unwrap();
    let relay = Relay::start(config.clone()).await.unwrap();
    let pool = fixture.db.pool.clone();
    let writer = tokio::spawn(async move { insert_series(&pool, 0, EVENTS, 50).await });
    wait_until("events flowing", EVENTUALLY, || async {
        (collector.received() >= EVENTS / 4).then_some(())
    })
    .await
    .unwrap();
    relay.abort();
    let relay = Relay::start(config).await.unwrap();
    writer.await.unwrap();
    collector.wait_all(EVENTS, Duration::from_secs(120)).await;
    wait_table_empty(&fixture.db.pool).await;
    eprintln!(
        "polling abort: {EVENTS} events, {} messages received",
        collector.received()
    );
    relay.shutdown().await.unwrap();
    collector.stop();
    queue.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn start_checks_name_the_table_and_the_missing_privilege() {
    let fixture = Fixture::new("relay_poll_checks").await;
    let missing = start_error(Cli {
        tables: Some("orders.no_such_table".into()),
        ..polling_cli(&fixture)
    })
    .await;
    assert!(missing.contains("orders.no_such_table"), "{missing}");
    assert!(missing.contains("does not exist"), "{missing}");

    let no_id = start_error(Cli {
        field_event_id: Some("event_id".into()),
        ..polling_cli(&fixture)
    })
    .await;
    assert!(
        no_id.contains("event_id") && no_id.contains("RELAY_FIELD_EVENT_ID"),
        "{no_id}"
    );

    // A role without REPLICATION is fine for polling; it needs SELECT, UPDATE and DELETE.
    let role = format!("r_{}", test_support::unique_suffix());
    let admin = &fixture.db.pool;
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'pw' NOREPLICATION"),
        format!("GRANT USAGE ON SCHEMA orders TO {role}"),
        format!("GRANT SELECT, UPDATE ON orders.outbox_event TO {role}"),
    ] {
        sqlx::query(&statement).execute(admin).await.unwrap();
    }
    let as_role = || Cli {
        database_url: Some(fixture.url_as(&role, "pw")),
        ..polling_cli(&fixture)
    };
    let no_delete = start_error(as_role()).await;
    assert!(
        no_delete.contains("DELETE") && no_delete.contains("orders.outbox_event"),
        "{no_delete}"
    );
    assert!(no_delete.contains(&role), "{no_delete}");
    assert!(
        !no_delete.contains("pw@"),
        "no password in messages: {no_delete}"
    );
    for statement in [
        format!("REVOKE UPDATE ON orders.outbox_event FROM {role}"),
        format!("GRANT DELETE ON orders.outbox_event TO {role}"),
    ] {
        sqlx::query(&statement).execute(admin).await.unwrap();
    }
    let no_update = start_error(as_role()).await;
    assert!(
        no_update.contains("UPDATE") && no_update.contains("FOR UPDATE"),
        "{no_update}"
    );
    sqlx::query(&format!("GRANT UPDATE ON orders.outbox_event TO {role}"))
        .execute(admin)
        .await
        .unwrap();
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let relay = Relay::start(Config::from_cli(as_role()).unwrap())
        .await
        .unwrap();
    insert_stamped(admin, "agg", 0, 0).await;
    assert_eq!(queue.take(1, EVENTUALLY).await.len(), 1);
    wait_table_empty(admin).await;
    relay.shutdown().await.unwrap();

    queue.close().await;
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(&statement).execute(admin).await.unwrap();
    }
    fixture.cleanup().await;
}

/// A drain of 10,000 rows committed before the relay starts (debug build: the rate is
/// printed, not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_a_backlog_of_ten_thousand_rows() {
    const EVENTS: usize = 10_000;
    let fixture = Fixture::new("relay_poll_drain").await;
    insert_series(&fixture.db.pool, 0, EVENTS, 1_000).await;
    let queue = bind_queue(&fixture.vhost.amqp_url, "order.events").await;
    let collector = Collector::start(&queue).await;
    let started = Instant::now();
    let relay = Relay::start(polling_config(&fixture)).await.unwrap();
    collector.wait_all(EVENTS, Duration::from_secs(180)).await;
    let elapsed = started.elapsed();
    wait_table_empty(&fixture.db.pool).await;
    eprintln!(
        "polling drain: {EVENTS} rows in {:.2} s = {:.0} events/s (batch 500), {} received",
        elapsed.as_secs_f64(),
        EVENTS as f64 / elapsed.as_secs_f64(),
        collector.received()
    );
    relay.shutdown().await.unwrap();
    collector.stop();
    queue.close().await;
    fixture.cleanup().await;
}
