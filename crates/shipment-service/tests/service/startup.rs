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
async fn quorum_queues_on_request() {
    let app = spawn_app_with(&[("RABBITMQ_QUEUE_TYPE", "quorum")], |_| {}).await;
    let queue = app.vhost.queue_json(QUEUE).await.unwrap();
    assert_eq!(queue["type"], "quorum", "{queue}");
    let dlq = app.vhost.queue_json(DLQ).await.unwrap();
    assert_eq!(dlq["type"], "quorum", "{dlq}");
    let order = Order::new(1);
    app.create_order(&order).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_queue_declared_otherwise_is_a_clear_start_error() {
    let first = spawn_app().await;
    let db = TestDatabase::create("shipment").await.unwrap();
    // Same vhost, the queue exists as classic; asking for quorum cannot work.
    let config = config_for(&db, &first.vhost, &[("RABBITMQ_QUEUE_TYPE", "quorum")]);
    let error = Application::build(config).await.unwrap_err().to_string();
    assert!(error.contains("shipment.orders"), "{error}");
    db.drop_database().await.unwrap();
    first.cleanup().await;
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
