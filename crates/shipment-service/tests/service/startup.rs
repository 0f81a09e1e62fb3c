//! Start-up: database creation, quorum queues, clear errors, graceful shutdown.

use std::time::Duration;

use shipment_service::Application;
use test_support::{TestDatabase, TestVhost};

use crate::support::*;

#[tokio::test]
async fn a_missing_database_is_created_and_migrated() {
    let db = TestDatabase::create("shipment").await.unwrap();
    let vhost = TestVhost::create("shipment").await.unwrap();
    let missing = format!("t_shipment_new_{}", test_support::unique_suffix());
    let url = db.url.replace(&db.name, &missing);
    let config = config_for(
        &db,
        &vhost,
        &[("DATABASE_URL", &url), ("DB_SCHEMA", "ship_custom")],
    );
    let app = Application::build(config).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ship_custom'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(tables >= 4, "{tables} tables");
    drop(app);
    test_support::drop_database_and_slots(&missing)
        .await
        .unwrap();
    db.drop_database().await.unwrap();
    vhost.delete().await.unwrap();
}

#[tokio::test]
async fn quorum_queues_by_default_with_the_brokers_delivery_limit() {
    let app = spawn_app().await;
    let queue = app.vhost.queue_json(QUEUE).await.unwrap();
    assert_eq!(queue["type"], "quorum", "{queue}");
    let arguments = &queue["arguments"];
    assert_eq!(arguments["x-delivery-limit"], 20, "{queue}");
    assert_eq!(arguments["x-dead-letter-exchange"], "shipment.orders.dlx");
    assert_eq!(arguments["x-dead-letter-strategy"], "at-least-once");
    let dlq = app.vhost.queue_json(DLQ).await.unwrap();
    assert_eq!(dlq["type"], "quorum", "{dlq}");
    let order = Order::new(1);
    app.create_order(&order).await;
    app.cleanup().await;
}

#[tokio::test]
async fn classic_queues_on_request_use_version_2() {
    let app = spawn_app_with(&[("RABBITMQ_QUEUE_TYPE", "classic")], |_| {}).await;
    for name in [QUEUE, DLQ] {
        let queue = app.vhost.queue_json(name).await.unwrap();
        assert_eq!(queue["type"], "classic", "{queue}");
        assert_eq!(queue["arguments"]["x-queue-version"], 2, "{queue}");
    }
    let order = Order::new(1);
    app.create_order(&order).await;
    app.cleanup().await;
}

/// A deployment whose queues are classic (an earlier release, the original system) keeps them:
/// the default asks for quorum, the broker refuses that declaration, and the service uses the
/// queues as they are instead of failing or deleting them.
#[tokio::test]
async fn a_queue_declared_otherwise_is_used_as_it_is() {
    let mut first = spawn_app_with(&[("RABBITMQ_QUEUE_TYPE", "classic")], |_| {}).await;
    first.stop().await;
    let order = Order::new(2);
    first.publisher.publish_event(&order.created()).await;

    let db = TestDatabase::create("shipment").await.unwrap();
    let second = build_app_on(db, first.vhost.clone(), &[], |_| {})
        .await
        .start();
    second.wait_for_shipment(order.id).await;
    for name in [QUEUE, DLQ] {
        let queue = second.vhost.queue_json(name).await.unwrap();
        assert_eq!(queue["type"], "classic", "{queue}");
    }
    second.cleanup().await;
    first.publisher.close().await;
    first.db.drop_database().await.unwrap();
}

/// The last guard against a poison loop is the broker's: a message returned to the quorum queue
/// more often than `RABBITMQ_DELIVERY_LIMIT` goes to the dead-letter queue, not away.
#[tokio::test]
async fn the_broker_dead_letters_a_message_past_the_delivery_limit() {
    let mut app = spawn_app_with(&[("RABBITMQ_DELIVERY_LIMIT", "2")], |_| {}).await;
    app.stop().await;
    let event_id = uuid::Uuid::now_v7();
    let order = Order::new(1);
    app.publisher
        .publish_plain(event_id, &order.created())
        .await;

    // A consumer that keeps handing the message back, as a process that crashes on it would.
    let channel = app.publisher.connection.create_channel().await.unwrap();
    let mut returns = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.dead_letter_depth().await == 0 {
        assert!(std::time::Instant::now() < deadline, "{returns} returns");
        let message = channel
            .basic_get(QUEUE.into(), lapin::options::BasicGetOptions::default())
            .await
            .unwrap();
        let Some(message) = message else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        message
            .delivery
            .nack(lapin::options::BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        returns += 1;
    }
    assert!(returns > 2, "dead-lettered after {returns} returns");
    let letters = take_dead_letters(&app, 1).await;
    assert_eq!(letters[0].message_id, Some(event_id.to_string()));
    assert_eq!(
        letters[0].header_text("x-first-death-reason").as_deref(),
        Some("delivery_limit"),
        "{:?}",
        letters[0].headers
    );
    channel.close(200, "done".into()).await.ok();
    app.cleanup().await;
}

#[tokio::test]
async fn a_wrong_password_fails_without_revealing_it() {
    let db = TestDatabase::create("shipment").await.unwrap();
    let vhost = TestVhost::create("shipment").await.unwrap();
    let url = db.url.replace(":postgres@", ":hunter2-wrong@");
    assert_ne!(url, db.url, "the test expects the default admin URL");
    let mut config = config_for(&db, &vhost, &[("DATABASE_URL", &url)]);
    config.startup_patience = Duration::from_secs(1);
    let error = format!(
        "{:#}",
        anyhow::Error::from(Application::build(config).await.unwrap_err())
    );
    assert!(error.contains("PostgreSQL"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    db.drop_database().await.unwrap();
    vhost.delete().await.unwrap();
}

#[tokio::test]
async fn shutdown_leaves_unhandled_messages_in_the_queue() {
    let mut app = spawn_app().await;
    let order = Order::new(1);
    app.create_order(&order).await;
    app.stop().await;

    // Published while stopped: stays in the queue for the next start.
    let later = Order::new(1);
    app.publisher.publish_event(&later.created()).await;
    test_support::wait_until(
        "the message to wait in the queue",
        Duration::from_secs(60),
        || async {
            let queue = app.vhost.queue_json(QUEUE).await.ok()?;
            (queue["messages_ready"].as_i64()? == 1).then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(app.shipment_count(later.id).await, 0);

    // A new instance picks it up.
    let config = config_for(&app.db, &app.vhost, &[]);
    let restarted = Application::build(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(restarted.run_until_stopped(async {
        let _ = stopped.await;
    }));
    app.wait_for_shipment(later.id).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    app.cleanup().await;
}
