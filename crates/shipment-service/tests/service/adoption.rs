//! Starting on databases made before this version: the original NodeJS system's shipmentdb
//! (its DDL and rows from `resources/original`) and one made by our first migration only.
//! Every existing row stays as it was, and the README flows work afterwards.

use serde_json::json;
use shipment_service::Application;
use sqlx::PgPool;
use test_support::{TestDatabase, TestVhost};
use uuid::Uuid;
use wire_format::WireFormat;

use crate::support::*;

/// The original's shipment and its consumed events (shipmentdb-rows.sql).
const ORIGINAL_SHIPMENT: &str = "4e1f7a8b-9c0d-4e5f-8a6b-7c8d9e0f1a2b";
const ORIGINAL_ORDER: &str = "6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2";
const ORIGINAL_CREATED_EVENT: &str = "2c9d5e6f-7a8b-4c3d-8e4f-5a6b7c8d9e0f";

/// The original's columns of every row, as text (what "unchanged" is checked against).
async fn original_rows(pool: &PgPool) -> (Vec<String>, Vec<String>) {
    let shipments = sqlx::query_scalar(
        "SELECT concat_ws('|', id, customer_id, order_date, order_id) \
         FROM shipments.shipment WHERE id = $1 ORDER BY id",
    )
    .bind(Uuid::parse_str(ORIGINAL_SHIPMENT).unwrap())
    .fetch_all(pool)
    .await
    .unwrap();
    let consumed = sqlx::query_scalar(
        "SELECT concat_ws('|', event_id, time_of_receiving) FROM shipments.consumed_message \
         WHERE event_id IN ('2c9d5e6f-7a8b-4c3d-8e4f-5a6b7c8d9e0f', '3d0e6f7a-8b9c-4d4e-9f5a-6b7c8d9e0f1a') \
         ORDER BY event_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (shipments, consumed)
}

async fn migrations_recorded(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT version FROM shipments._sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Builds and starts the service on `db`, runs `check`, stops it; the database is kept.
async fn run_once<F, Fut>(db: TestDatabase, vhost: TestVhost, check: F) -> (TestDatabase, TestVhost)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let mut app = check(build_app_on(db, vhost, &[], |_| {}).await.start()).await;
    app.stop().await;
    app.publisher.close().await;
    (app.db, app.vhost)
}

/// [`run_once`] a last time, then drops the database and vhost.
async fn run_last<F, Fut>(db: TestDatabase, vhost: TestVhost, check: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let (db, vhost) = run_once(db, vhost, check).await;
    db.drop_database().await.unwrap();
    vhost.delete().await.unwrap();
}

/// The README flows: our producer's order with lines and a cancelled line, and the original
/// producer's order and line update.
async fn readme_flows_work(app: &TestApp) {
    let ours = Order::new(2);
    app.create_order(&ours).await;
    app.publisher
        .publish_events(&[
            ours.line_updated(0, "CANCELLED"),
            ours.line_updated(1, "CANCELLED"),
        ])
        .await;
    let original = OriginalOrder::new(1);
    app.publisher
        .publish_created(WireFormat::Debezium, Uuid::new_v4(), &original.created())
        .await;
    let cancel = original.line_updated(0, "CANCELLED");
    app.publisher
        .publish_update(WireFormat::Debezium, Uuid::new_v4(), &cancel)
        .await;
    app.sync().await;
    assert_eq!(app.line_status(ours.lines[0]).await.unwrap(), "CANCELLED");
    assert_eq!(app.shipment_status(ours.id).await.unwrap(), "CANCELLED");
    assert_eq!(
        app.line_status(original.lines[0]).await.unwrap(),
        "CANCELLED"
    );
    assert_eq!(app.shipment_status(original.id).await.unwrap(), "PENDING");
    // Stored as UTC wall time in the original's `timestamp` column, read back the same.
    let (_, page) = app
        .get(&format!("/shipments?orderId={}", original.id))
        .await;
    assert_eq!(page["items"][0]["orderDate"], "2024-01-01T12:00:00.000Z");
    assert_eq!(app.dead_letter_depth().await, 0);
}

#[tokio::test]
async fn the_original_database_is_adopted_with_its_rows_and_the_flows_work() {
    let db = original_shipment_db().await;
    // A server-side time zone that is not UTC: the service must still read and write the
    // original's `timestamp` columns as UTC wall time.
    sqlx::query(&format!(
        "ALTER DATABASE \"{}\" SET timezone = 'Asia/Tokyo'",
        db.name
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let before = original_rows(&db.pool).await;
    assert_eq!(before.0.len(), 1);
    assert_eq!(before.1.len(), 2);
    let vhost = TestVhost::create("shipment").await.unwrap();
    let before = &before;

    let (db, vhost) = run_once(db, vhost, |app| async move {
        assert_eq!(
            &original_rows(app.pool()).await,
            before,
            "the original's rows changed"
        );
        assert_eq!(
            migrations_recorded(app.pool()).await,
            vec![20261201000001, 20261202000001]
        );
        let order_id = Uuid::parse_str(ORIGINAL_ORDER).unwrap();
        assert_eq!(app.shipment_status(order_id).await.unwrap(), "PENDING");

        // The original's shipment through the HTTP API: no lines, PENDING.
        let (status, shipment) = app.get(&format!("/shipments/{ORIGINAL_SHIPMENT}")).await;
        assert_eq!(status, 200, "{shipment}");
        assert_eq!(
            shipment,
            json!({
                "id": ORIGINAL_SHIPMENT,
                "orderId": ORIGINAL_ORDER,
                "customerId": 123,
                "orderDate": "2019-01-31T12:13:01.000Z",
                "status": "PENDING",
                "lines": [],
            })
        );
        let (status, page) = app.get("/shipments").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 1);

        // An event the original already consumed, delivered again: a duplicate.
        let again = OriginalOrder {
            id: order_id,
            lines: vec![],
        };
        app.publisher
            .publish_created(
                WireFormat::Debezium,
                Uuid::parse_str(ORIGINAL_CREATED_EVENT).unwrap(),
                &again.created(),
            )
            .await;
        // A line update for the original's shipment: the line is recorded, still PENDING.
        let line = Uuid::new_v4();
        let update = OriginalOrder {
            id: order_id,
            lines: vec![line],
        };
        app.publisher
            .publish_update(
                WireFormat::Plain,
                Uuid::new_v4(),
                &update.line_updated(0, "SHIPPED"),
            )
            .await;
        app.sync().await;
        assert_eq!(app.shipment_count(order_id).await, 1);
        assert_eq!(app.line_status(line).await.unwrap(), "SHIPPED");
        assert_eq!(app.shipment_status(order_id).await.unwrap(), "PENDING");

        readme_flows_work(&app).await;
        // Our receive time goes into the original's nullable `timestamp` column.
        let missing_time: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM shipments.consumed_message WHERE time_of_receiving IS NULL",
        )
        .fetch_one(app.pool())
        .await
        .unwrap();
        assert_eq!(missing_time, 0);
        let (_, page) = app.get("/shipments?size=100").await;
        assert_eq!(page["total"], 5, "{page}");
        app
    })
    .await;

    // A second start on the same database: nothing to migrate, everything still there.
    run_last(db, vhost, |app| async move {
        assert_eq!(&original_rows(app.pool()).await, before);
        assert_eq!(
            migrations_recorded(app.pool()).await,
            vec![20261201000001, 20261202000001]
        );
        assert_eq!(app.count("shipment").await, 5);
        readme_flows_work(&app).await;
        app
    })
    .await;
}

#[tokio::test]
async fn an_original_database_with_two_shipments_of_one_order_still_starts() {
    // CREATE UNIQUE INDEX on order_id would fail here: the service starts without it.
    let db = original_shipment_db().await;
    sqlx::query(
        "INSERT INTO shipments.shipment (id, customer_id, order_date, order_id) \
         VALUES ('5e1f7a8b-9c0d-4e5f-8a6b-7c8d9e0f1a2b', 123, NULL, $1)",
    )
    .bind(Uuid::parse_str(ORIGINAL_ORDER).unwrap())
    .execute(&db.pool)
    .await
    .unwrap();
    let vhost = TestVhost::create("shipment").await.unwrap();
    let app = build_app_on(db, vhost, &[], |_| {}).await.start();
    assert_eq!(app.count("shipment").await, 2);
    let index: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('shipments.shipment_order_id_key')::text")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(index, None);
    // A null order_date (allowed by the original's table) reads as null.
    let (status, shipment) = app
        .get("/shipments/5e1f7a8b-9c0d-4e5f-8a6b-7c8d9e0f1a2b")
        .await;
    assert_eq!(status, 200, "{shipment}");
    assert_eq!(shipment["orderDate"], serde_json::Value::Null);
    let (status, page) = app
        .get(&format!("/shipments?orderId={ORIGINAL_ORDER}"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 2);
    // New orders are still made once each.
    let order = Order::new(1);
    let event_id = Uuid::new_v4();
    app.publisher
        .publish_plain(event_id, &order.created())
        .await;
    app.publisher
        .publish_plain(event_id, &order.created())
        .await;
    app.sync().await;
    assert_eq!(app.shipment_count(order.id).await, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_database_of_our_first_release_is_migrated_and_restarted() {
    // Our first migration only, with a shipment made then: its lines came with its order.
    let db = TestDatabase::create("shipment").await.unwrap();
    sqlx::query("CREATE SCHEMA shipments")
        .execute(&db.pool)
        .await
        .unwrap();
    let options = db.options.clone().options([("search_path", "shipments")]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    service_kit::migrate::migrate_up_to(&pool, &shipment_service::db::MIGRATOR, 20261127000001)
        .await
        .unwrap();
    pool.close().await;
    let old = Order::new(1);
    let shipment_id = Uuid::new_v4();
    sqlx::raw_sql(&format!(
        "INSERT INTO shipments.shipment (id, order_id, customer_id, order_date, status) \
         VALUES ('{shipment_id}', '{}', 3, '2024-01-01T12:00:00Z', 'PENDING'); \
         INSERT INTO shipments.shipment_line (order_line_id, shipment_id, position, item, quantity, status) \
         VALUES ('{}', '{shipment_id}', 1, 'Book 0', 1, 'ENTERED');",
        old.id, old.lines[0]
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let vhost = TestVhost::create("shipment").await.unwrap();
    let old = &old;

    let (db, vhost) = run_once(db, vhost, |app| async move {
        assert_eq!(
            migrations_recorded(app.pool()).await,
            vec![20261127000001, 20261201000001, 20261202000001]
        );
        // Its lines are known: cancelling the only one cancels the shipment.
        app.publisher
            .publish_event(&old.line_updated(0, "CANCELLED"))
            .await;
        app.sync().await;
        assert_eq!(app.shipment_status(old.id).await.unwrap(), "CANCELLED");
        let (status, shipment) = app.get(&format!("/shipments/{shipment_id}")).await;
        assert_eq!(status, 200, "{shipment}");
        assert_eq!(shipment["orderDate"], "2024-01-01T12:00:00.000Z");
        assert_eq!(shipment["lines"][0]["item"], "Book 0");
        readme_flows_work(&app).await;
        app
    })
    .await;
    run_last(db, vhost, |app| async move {
        assert_eq!(
            migrations_recorded(app.pool()).await,
            vec![20261127000001, 20261201000001, 20261202000001]
        );
        assert_eq!(app.shipment_status(old.id).await.unwrap(), "CANCELLED");
        readme_flows_work(&app).await;
        app
    })
    .await;
}

#[tokio::test]
async fn a_fresh_database_is_migrated_once_and_restarts() {
    let db = TestDatabase::create("shipment").await.unwrap();
    let vhost = TestVhost::create("shipment").await.unwrap();
    let (db, vhost) = run_once(db, vhost, |app| async move {
        readme_flows_work(&app).await;
        app
    })
    .await;
    let config = config_for(&db, &vhost, &[]);
    let app = Application::build(config).await.unwrap();
    assert_eq!(
        migrations_recorded(app.pool()).await,
        vec![20261127000001, 20261201000001, 20261202000001]
    );
    let known: Vec<bool> =
        sqlx::query_scalar("SELECT lines_known FROM shipments.shipment ORDER BY lines_known")
            .fetch_all(app.pool())
            .await
            .unwrap();
    // Our producer's orders (with lines) and the original producer's (without).
    assert!(known.contains(&true) && known.contains(&false), "{known:?}");
    drop(app);
    db.drop_database().await.unwrap();
    vhost.delete().await.unwrap();
}
