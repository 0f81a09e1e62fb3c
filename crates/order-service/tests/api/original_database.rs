//! Start-up on the databases people already have: one the original NodeJS service created
//! (`resources/original/orderdb-schema.sql` and its rows), and one our own first migration
//! created before later migrations existed. Both are adopted without changing a row, again at
//! every start, and the README flows work on them.

use order_service::database::{BASELINE, MIGRATOR};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::TestDatabase;
use uuid::Uuid;

use crate::helpers::{Counts, assert_api_error, ids, sample_cancel_request, spawn_app_on};

const ORIGINAL_SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../resources/original/orderdb-schema.sql"
);
const ORIGINAL_ROWS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../resources/original/orderdb-rows.sql"
);

/// The original's order, its lines (ENTERED, CANCELLED) and its two outbox rows.
const ORIGINAL_ORDER: &str = "6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2";
const ORIGINAL_ENTERED_LINE: &str = "0a7b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d";
const ORIGINAL_IDS: [&str; 5] = [
    ORIGINAL_ORDER,
    ORIGINAL_ENTERED_LINE,
    "1b8c4d5e-6f7a-4b2c-9d3e-4f5a6b7c8d9e",
    "2c9d5e6f-7a8b-4c3d-8e4f-5a6b7c8d9e0f",
    "3d0e6f7a-8b9c-4d4e-9f5a-6b7c8d9e0f1a",
];

/// A database made as the original system made it: its DDL, then its rows. Its default time
/// zone is far from UTC, so a session that did not set UTC would shift every timestamp.
async fn original_database() -> TestDatabase {
    let db = TestDatabase::create("orders_original").await.unwrap();
    for file in [ORIGINAL_SCHEMA, ORIGINAL_ROWS] {
        let sql = std::fs::read_to_string(file).unwrap();
        sqlx::raw_sql(&sql).execute(&db.pool).await.unwrap();
    }
    sqlx::query(&format!(
        "ALTER DATABASE \"{}\" SET timezone = 'Asia/Tokyo'",
        db.name
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    db
}

/// The original's rows, every column it has, as JSON text (timestamps without time zone print
/// as stored, whatever the session).
async fn original_rows(pool: &PgPool) -> Vec<String> {
    let ids: Vec<Uuid> = ORIGINAL_IDS
        .iter()
        .map(|id| Uuid::parse_str(id).unwrap())
        .collect();
    sqlx::query_scalar(
        "SELECT to_jsonb(o)::text FROM (SELECT id, customer_id, order_date \
             FROM orders.purchase_order WHERE id = ANY($1)) o \
         UNION ALL \
         SELECT to_jsonb(l)::text FROM (SELECT id, quantity, total_price, order_id, item, status \
             FROM orders.order_line WHERE id = ANY($1) ORDER BY id) l \
         UNION ALL \
         SELECT to_jsonb(e)::text FROM (SELECT id, \"timestamp\", aggregate_id, aggregate_type, \
             payload, \"type\" FROM orders.outbox_event WHERE id = ANY($1) ORDER BY id) e",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// `table.column type nullable` of every column in schema `orders` but sqlx's own table.
async fn columns(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('%s.%s %s %s', table_name, column_name, data_type, is_nullable) \
         FROM information_schema.columns \
         WHERE table_schema = 'orders' AND table_name <> '_sqlx_migrations' \
         ORDER BY table_name, column_name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn applied_migrations(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM orders._sqlx_migrations WHERE success ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The migrations after the baseline, which both kinds of database get.
fn later_migrations() -> Vec<i64> {
    MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .filter(|version| *version != BASELINE.version)
        .collect()
}

fn original_order_answer(entered_line_status: &str) -> Value {
    json!({
        "id": ORIGINAL_ORDER,
        "customerId": 123,
        "orderDate": "2019-01-31T12:13:01.000Z",
        "lineItems": [
            {"id": ORIGINAL_ENTERED_LINE, "item": "Debezium in Action", "quantity": 2, "totalPrice": 39.98, "status": entered_line_status},
            {"id": "1b8c4d5e-6f7a-4b2c-9d3e-4f5a6b7c8d9e", "item": "Debezium for Dummies", "quantity": 1, "totalPrice": 29.99, "status": "CANCELLED"}
        ]
    })
}

#[tokio::test]
async fn the_original_database_is_adopted_with_every_row_kept() {
    let db = original_database().await;
    let rows_before = original_rows(&db.pool).await;
    let columns_before = columns(&db.pool).await;
    assert_eq!(rows_before.len(), 5, "the fixture's rows: {rows_before:#?}");

    let app = spawn_app_on(db, &[]).await;

    // Started: nothing of the original changed, two nullable columns and an index added.
    assert_eq!(original_rows(&app.db.pool).await, rows_before);
    assert_eq!(app.counts().await, Counts::new(1, 2, 2));
    let mut expected_columns = columns_before.clone();
    expected_columns.push("order_line.position integer YES".to_owned());
    expected_columns.push("outbox_event.tracingspancontext text YES".to_owned());
    expected_columns.sort();
    assert_eq!(columns(&app.db.pool).await, expected_columns);
    assert_eq!(applied_migrations(&app.db.pool).await, later_migrations());
    let (identity, indexed): (String, bool) = sqlx::query_as(
        "SELECT (SELECT relreplident::text FROM pg_class \
                 WHERE oid = 'orders.outbox_event'::regclass), \
                to_regclass('orders.order_line_order_id_idx') IS NOT NULL",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        identity, "f",
        "the original's REPLICA IDENTITY FULL is left as it is"
    );
    assert!(indexed, "order_line(order_id) indexed");

    // The original's order reads back with its lines, its UTC wall time as UTC.
    let response = app.get_order(ORIGINAL_ORDER).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        original_order_answer("ENTERED")
    );

    // The README flows.
    let created = app.create_sample_order().await;
    let (order_id, line_ids) = ids(&created);
    assert_eq!(created["orderDate"], "2024-01-01T12:00:00.000Z");
    let fetched: Value = app.get_order(&order_id).await.json().await.unwrap();
    assert_eq!(fetched, created);
    let stored_date: String =
        sqlx::query_scalar("SELECT order_date::text FROM orders.purchase_order WHERE id = $1")
            .bind(Uuid::parse_str(&order_id).unwrap())
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        stored_date, "2024-01-01 12:00:00",
        "UTC wall time, as the original wrote"
    );
    let response = app
        .put_line(&order_id, &line_ids[0], &sample_cancel_request())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["lineItems"][0]["status"], "CANCELLED");
    assert_eq!(updated["lineItems"][1]["status"], "ENTERED");
    assert_eq!(app.line_status(&line_ids[0]).await, "CANCELLED");

    // Their events are in the original's outbox table, as the original wrote its own.
    let events: Vec<(String, String, String, Value, bool)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, \"type\", payload, \
                abs(extract(epoch FROM \"timestamp\" - (now() AT TIME ZONE 'UTC'))) < 3600 \
         FROM orders.outbox_event WHERE aggregate_id = $1 ORDER BY \"timestamp\"",
    )
    .bind(&order_id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 2, "{events:#?}");
    for ((aggregate_type, aggregate_id, event_type, _, utc), expected_type) in
        events.iter().zip(["OrderCreated", "OrderLineUpdated"])
    {
        assert_eq!(
            (
                aggregate_type.as_str(),
                aggregate_id.as_str(),
                event_type.as_str()
            ),
            ("order", order_id.as_str(), expected_type)
        );
        assert!(*utc, "\"timestamp\" is UTC wall time");
    }
    assert_eq!(events[0].3["id"], order_id.as_str());
    assert_eq!(
        events[1].3,
        json!({"eventType": "OrderLineUpdated", "orderId": order_id, "orderLineId": line_ids[0],
                "oldStatus": "ENTERED", "newStatus": "CANCELLED"})
    );
    assert_eq!(app.counts().await, Counts::new(2, 4, 4));
    assert_eq!(original_rows(&app.db.pool).await, rows_before);

    // The original's own lines change through the API too.
    let response = app
        .put_line(
            ORIGINAL_ORDER,
            ORIGINAL_ENTERED_LINE,
            &json!({"newStatus": "SHIPPED"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        original_order_answer("SHIPPED")
    );

    // A second start on the same database: nothing to do, nothing changed.
    let counts = app.counts().await;
    let db = app.stop_keeping_database().await;
    let app = spawn_app_on(db, &[]).await;
    assert_eq!(app.counts().await, counts);
    assert_eq!(applied_migrations(&app.db.pool).await, later_migrations());
    assert_eq!(columns(&app.db.pool).await, expected_columns);
    let response = app.get_order(ORIGINAL_ORDER).await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        original_order_answer("SHIPPED")
    );
    let fetched: Value = app.get_order(&order_id).await.json().await.unwrap();
    assert_eq!(fetched, updated);
    app.stop().await;
}

#[tokio::test]
async fn original_lines_with_nulls_are_answered_as_null_and_cannot_change() {
    let db = original_database().await;
    let order_id = Uuid::new_v4();
    let line_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO orders.purchase_order (id, customer_id, order_date) \
         VALUES ($1, 7, '2019-02-01 08:00:00')",
    )
    .bind(order_id)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO orders.order_line (id, order_id) VALUES ($1, $2)")
        .bind(line_id)
        .bind(order_id)
        .execute(&db.pool)
        .await
        .unwrap();
    let app = spawn_app_on(db, &[]).await;

    let response = app.get_order(&order_id.to_string()).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({
            "id": order_id,
            "customerId": 7,
            "orderDate": "2019-02-01T08:00:00.000Z",
            "lineItems": [
                {"id": line_id, "item": null, "quantity": null, "totalPrice": null, "status": null}
            ]
        })
    );
    let before = app.counts().await;
    let response = app
        .put_line(
            &order_id.to_string(),
            &line_id.to_string(),
            &sample_cancel_request(),
        )
        .await;
    let body = assert_api_error(response, "status_conflict", Some("newStatus")).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("order line {line_id} has no status")),
        "{body}"
    );
    assert_eq!(app.counts().await, before, "no event for a refused change");
    app.stop().await;
}

#[tokio::test]
async fn a_database_our_first_migration_created_is_brought_up_to_date() {
    // The state a database of ours was in before the later migrations existed: only the
    // baseline applied, and an order written as the service wrote it then (v7 ids in request
    // order, no position).
    let db = TestDatabase::create("orders_baseline").await.unwrap();
    sqlx::query("CREATE SCHEMA orders")
        .execute(&db.pool)
        .await
        .unwrap();
    let pool = PgPool::connect_with(db.options.clone().options([("search_path", "orders")]))
        .await
        .unwrap();
    service_kit::migrate::migrate_up_to(&pool, &MIGRATOR, BASELINE.version)
        .await
        .unwrap();
    let old_order = Uuid::now_v7();
    let old_lines: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO purchase_order (id, customer_id, order_date) \
         VALUES ($1, 5, '2025-03-04 05:06:07+00')",
    )
    .bind(old_order)
    .execute(&pool)
    .await
    .unwrap();
    for (index, line) in old_lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO order_line (id, order_id, item, quantity, total_price, status) \
             VALUES ($1, $2, $3, 1, 1.50, 'ENTERED')",
        )
        .bind(line)
        .bind(old_order)
        .bind(format!("old {index}"))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    assert_eq!(applied_migrations(&db.pool).await, [BASELINE.version]);

    let app = spawn_app_on(db, &[]).await;

    let mut all = vec![BASELINE.version];
    all.extend(later_migrations());
    assert_eq!(applied_migrations(&app.db.pool).await, all);
    let response = app.get_order(&old_order.to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let old: Value = response.json().await.unwrap();
    assert_eq!(old["orderDate"], "2025-03-04T05:06:07.000Z");
    let (_, read_lines) = ids(&old);
    let expected: Vec<String> = old_lines.iter().map(Uuid::to_string).collect();
    assert_eq!(
        read_lines, expected,
        "old lines still in request (id) order"
    );
    for (index, line) in old["lineItems"].as_array().unwrap().iter().enumerate() {
        assert_eq!(line["item"], format!("old {index}"));
    }
    let created = app.create_sample_order().await;
    let (order_id, line_ids) = ids(&created);
    assert_eq!(
        app.put_line(&order_id, &line_ids[1], &sample_cancel_request())
            .await
            .status(),
        StatusCode::OK
    );

    // And again: idempotent.
    let counts = app.counts().await;
    let db = app.stop_keeping_database().await;
    let app = spawn_app_on(db, &[]).await;
    assert_eq!(applied_migrations(&app.db.pool).await, all);
    assert_eq!(app.counts().await, counts);
    let again: Value = app
        .get_order(&old_order.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, old);
    let fetched: Value = app.get_order(&order_id).await.json().await.unwrap();
    assert_eq!(fetched["lineItems"][0]["item"], "Debezium in Action");
    assert_eq!(fetched["lineItems"][1]["status"], "CANCELLED");
    app.stop().await;
}
