//! `Outbox::enqueue` against the real PostgreSQL: the event commits with the business rows or
//! not at all, `delete_after_insert` leaves the table empty while the WAL keeps the insert, and
//! any service's own event type can be written, and event ids follow the id format (v4 by
//! default, v7 on request), also in a table with the original system's column types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use events::{DomainEvent, LineStatus, OrderEvent, OrderLineUpdated};
use outbox::{IdFormat, Outbox, OutboxError};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use test_support::TestDatabase;
use uuid::Uuid;

/// The outbox table as order-service creates it, plus a stand-in business table.
async fn database_with_outbox() -> TestDatabase {
    let db = TestDatabase::create("outbox").await.unwrap();
    for statement in [
        "CREATE SCHEMA orders",
        "CREATE TABLE orders.outbox_event (
            id uuid PRIMARY KEY,
            aggregate_type varchar(255) NOT NULL,
            aggregate_id varchar(255) NOT NULL,
            type varchar(255) NOT NULL,
            payload jsonb NOT NULL,
            \"timestamp\" timestamptz NOT NULL)",
        "CREATE TABLE orders.business_row (id uuid PRIMARY KEY)",
    ] {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }
    db
}

fn line_updated() -> OrderEvent {
    OrderEvent::OrderLineUpdated(OrderLineUpdated {
        order_id: Uuid::new_v4(),
        order_line_id: Uuid::new_v4(),
        new_status: LineStatus::Cancelled,
        old_status: LineStatus::Entered,
    })
}

/// A transaction that has written one business row, for the event to join.
async fn begin_with_a_business_row(pool: &PgPool) -> Transaction<'_, Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders.business_row (id) VALUES ($1)")
        .bind(Uuid::new_v4())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM orders.{table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_event_commits_with_the_business_rows() {
    let db = database_with_outbox().await;
    let outbox = Outbox::new("orders.outbox_event").unwrap();
    let event = line_updated();

    let mut tx = begin_with_a_business_row(&db.pool).await;
    let event_id = outbox.enqueue(&mut tx, &event).await.unwrap();
    // Not visible to others before the commit.
    assert_eq!(count(&db.pool, "outbox_event").await, 0);
    tx.commit().await.unwrap();

    assert_eq!(count(&db.pool, "business_row").await, 1);
    let (id, aggregate_type, aggregate_id, event_type, payload): (
        Uuid,
        String,
        String,
        String,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT id, aggregate_type, aggregate_id, type, payload FROM orders.outbox_event \
         WHERE \"timestamp\" IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(id, event_id);
    assert_eq!(
        id.get_version_num(),
        4,
        "v4 by default, as the original's consumers require"
    );
    assert_eq!(aggregate_type, "order");
    assert_eq!(aggregate_id, event.order_id().to_string());
    assert_eq!(event_type, "OrderLineUpdated");
    assert_eq!(payload, serde_json::to_value(&event).unwrap());
    assert_eq!(payload["eventType"], "OrderLineUpdated");
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_no_row() {
    let db = database_with_outbox().await;
    let outbox = Outbox::new("orders.outbox_event").unwrap();

    let mut tx = begin_with_a_business_row(&db.pool).await;
    outbox.enqueue(&mut tx, &line_updated()).await.unwrap();
    tx.rollback().await.unwrap();

    // A transaction dropped without commit rolls back too.
    let mut tx = db.pool.begin().await.unwrap();
    outbox.enqueue(&mut tx, &line_updated()).await.unwrap();
    drop(tx);

    assert_eq!(count(&db.pool, "business_row").await, 0);
    assert_eq!(count(&db.pool, "outbox_event").await, 0);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn delete_after_insert_leaves_the_table_empty_and_the_insert_in_the_wal() {
    let db = database_with_outbox().await;
    let slot = format!("t_outbox_{}", test_support::unique_suffix());
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')")
        .bind(&slot)
        .execute(&db.pool)
        .await
        .unwrap();
    let outbox = Outbox::new("orders.outbox_event")
        .unwrap()
        .delete_after_insert(true);

    let mut tx = begin_with_a_business_row(&db.pool).await;
    let event_id = outbox.enqueue(&mut tx, &line_updated()).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(count(&db.pool, "business_row").await, 1);
    assert_eq!(count(&db.pool, "outbox_event").await, 0);
    let changes: Vec<String> =
        sqlx::query_scalar("SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)")
            .bind(&slot)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let insert = changes
        .iter()
        .position(|c| {
            c.starts_with("table orders.outbox_event: INSERT:")
                && c.contains(&format!("id[uuid]:'{event_id}'"))
        })
        .unwrap_or_else(|| panic!("no insert in {changes:#?}"));
    let delete = changes
        .iter()
        .position(|c| c.starts_with("table orders.outbox_event: DELETE:"))
        .unwrap_or_else(|| panic!("no delete in {changes:#?}"));
    assert!(insert < delete);
    db.drop_database().await.unwrap();
}

/// Another service's event: the outbox needs only `DomainEvent`.
#[derive(Debug, Serialize)]
struct ParcelWeighed {
    parcel: u32,
    grams: u32,
}

impl DomainEvent for ParcelWeighed {
    fn aggregate_type(&self) -> &str {
        "parcel"
    }
    fn aggregate_id(&self) -> String {
        self.parcel.to_string()
    }
    fn event_type(&self) -> &str {
        "ParcelWeighed"
    }
}

#[tokio::test]
async fn any_domain_event_and_an_unqualified_table_name_work() {
    let db = database_with_outbox().await;
    let outbox = Outbox::new("outbox_event").unwrap();

    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET search_path TO orders")
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    outbox
        .enqueue(
            &mut tx,
            &ParcelWeighed {
                parcel: 7,
                grams: 1200,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(conn);

    let (aggregate_type, aggregate_id, payload): (String, String, serde_json::Value) =
        sqlx::query_as("SELECT aggregate_type, aggregate_id, payload FROM orders.outbox_event")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(aggregate_type, "parcel");
    assert_eq!(aggregate_id, "7");
    assert_eq!(payload, serde_json::json!({"parcel": 7, "grams": 1200}));
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_missing_table_is_a_database_error_and_the_caller_rolls_back() {
    let db = database_with_outbox().await;
    let outbox = Outbox::new("orders.no_such_table").unwrap();

    let mut tx = begin_with_a_business_row(&db.pool).await;
    let error = outbox.enqueue(&mut tx, &line_updated()).await.unwrap_err();
    assert!(matches!(error, OutboxError::Database(_)), "{error:?}");
    assert!(error.to_string().contains("no_such_table"), "{error}");
    // The failed statement aborted the transaction: committing it cannot keep the business row.
    let _ = tx.commit().await;
    assert_eq!(count(&db.pool, "business_row").await, 0);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn event_ids_follow_the_id_format() {
    let db = database_with_outbox().await;
    for (format, version) in [
        (IdFormat::Uuid4, 4),
        (IdFormat::Uuid7, 7),
        (IdFormat::default(), 4),
    ] {
        let outbox = Outbox::new("orders.outbox_event")
            .unwrap()
            .id_format(format);
        let mut tx = db.pool.begin().await.unwrap();
        let event_id = outbox.enqueue(&mut tx, &line_updated()).await.unwrap();
        tx.commit().await.unwrap();
        let stored: Uuid = sqlx::query_scalar("SELECT id FROM orders.outbox_event WHERE id = $1")
            .bind(event_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(stored.get_version_num(), version, "{format}");
    }
    db.drop_database().await.unwrap();
}

/// The original system's outbox table: `"timestamp"` without time zone, every column nullable.
#[tokio::test]
async fn the_original_outbox_table_gets_utc_wall_time() {
    let db = TestDatabase::create("outbox").await.unwrap();
    for statement in [
        "CREATE SCHEMA orders",
        "CREATE TABLE orders.outbox_event (
            id uuid PRIMARY KEY,
            \"timestamp\" timestamp,
            aggregate_id varchar(255),
            aggregate_type varchar(255),
            payload jsonb,
            \"type\" varchar(255))",
        // A database default far from UTC: the pool's session time zone must win.
        &format!("ALTER DATABASE \"{}\" SET timezone = 'Asia/Tokyo'", db.name),
    ] {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }
    let pool = sqlx::PgPool::connect_with(db.options.clone().options([("TimeZone", "UTC")]))
        .await
        .unwrap();
    let outbox = Outbox::new("orders.outbox_event").unwrap();
    let event = line_updated();

    let mut tx = pool.begin().await.unwrap();
    let event_id = outbox.enqueue(&mut tx, &event).await.unwrap();
    tx.commit().await.unwrap();

    // `now() AT TIME ZONE 'UTC'` is UTC wall time whatever the session's zone: the stored value
    // is within a generous margin of it, and nine hours away from Tokyo's.
    let (is_utc, payload): (bool, serde_json::Value) = sqlx::query_as(
        "SELECT abs(extract(epoch FROM \"timestamp\" - (now() AT TIME ZONE 'UTC'))) < 3600, payload \
         FROM orders.outbox_event WHERE id = $1",
    )
    .bind(event_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(is_utc, "the timestamp is UTC wall time");
    assert_eq!(payload, serde_json::to_value(&event).unwrap());
    pool.close().await;
    db.drop_database().await.unwrap();
}

/// One statement: the business rows (CTEs, parameters from `$7`) and the event commit together,
/// and a failing business write leaves no event behind.
#[tokio::test]
async fn one_statement_writes_the_rows_and_the_event_or_nothing() {
    let db = database_with_outbox().await;
    sqlx::query(
        "CREATE TABLE orders.business_child (id uuid PRIMARY KEY, \
         parent uuid NOT NULL REFERENCES orders.business_row (id))",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let outbox = Outbox::new("orders.outbox_event").unwrap();
    let writes = "parent AS (INSERT INTO orders.business_row (id) VALUES ($7)), \
                  child AS (INSERT INTO orders.business_child (id, parent) VALUES ($8, $9))";
    let statement = outbox.statement_with(writes).unwrap();

    // A child referencing the parent of the same statement: the foreign key holds.
    let parent = Uuid::new_v4();
    let event = line_updated();
    let (query, event_id) = outbox
        .bind_event(sqlx::query(&statement), &event, None)
        .unwrap();
    query
        .bind(parent)
        .bind(Uuid::new_v4())
        .bind(parent)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(count(&db.pool, "business_row").await, 1);
    assert_eq!(count(&db.pool, "business_child").await, 1);
    let stored: Uuid = sqlx::query_scalar("SELECT id FROM orders.outbox_event")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, event_id);

    // A child whose parent does not exist: the statement fails, and neither the parent it
    // inserted nor the event remain.
    let event = line_updated();
    let (query, _) = outbox
        .bind_event(sqlx::query(&statement), &event, None)
        .unwrap();
    let error = query
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("foreign key"), "{error}");
    assert_eq!(count(&db.pool, "business_row").await, 1);
    assert_eq!(count(&db.pool, "outbox_event").await, 1);

    // An outbox that deletes its rows cannot be written in one statement.
    let deleting = Outbox::new("orders.outbox_event")
        .unwrap()
        .delete_after_insert(true);
    assert!(deleting.statement_with(writes).is_none());
    db.drop_database().await.unwrap();
}

/// With a trace column the context is stored as Properties text, by both ways of writing; a
/// change without one stores NULL; the column name is checked.
#[tokio::test]
async fn the_trace_context_is_stored_in_its_column() {
    let db = database_with_outbox().await;
    sqlx::query("ALTER TABLE orders.outbox_event ADD COLUMN tracingspancontext varchar(255)")
        .execute(&db.pool)
        .await
        .unwrap();
    let outbox = Outbox::new("orders.outbox_event")
        .unwrap()
        .trace_column(Some("tracingspancontext"))
        .unwrap();
    let trace = outbox::TraceContext::new(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "vendor=x",
    )
    .unwrap();
    let mut tx = begin_with_a_business_row(&db.pool).await;
    let traced = outbox
        .enqueue_traced(&mut tx, &line_updated(), Some(&trace))
        .await
        .unwrap();
    let untraced = outbox.enqueue(&mut tx, &line_updated()).await.unwrap();
    tx.commit().await.unwrap();
    let statement = outbox
        .statement_with("parent AS (INSERT INTO orders.business_row (id) VALUES ($7))")
        .unwrap();
    let event = line_updated();
    let (query, in_statement) = outbox
        .bind_event(sqlx::query(&statement), &event, Some(&trace))
        .unwrap();
    query.bind(Uuid::new_v4()).execute(&db.pool).await.unwrap();
    let stored = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT tracingspancontext FROM orders.outbox_event WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let expected = "traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n\
                    tracestate=vendor\\=x\n";
    assert_eq!(stored(traced).await.as_deref(), Some(expected));
    assert_eq!(stored(in_statement).await.as_deref(), Some(expected));
    assert_eq!(stored(untraced).await, None);

    // Without a column the context is not written, and the table needs none.
    let plain = Outbox::new("orders.outbox_event").unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let id = plain
        .enqueue_traced(&mut tx, &line_updated(), Some(&trace))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stored(id).await, None);
    let (query, _) = plain
        .bind_event(sqlx::query(&statement), &event, Some(&trace))
        .unwrap();
    query.bind(Uuid::new_v4()).execute(&db.pool).await.unwrap();

    for bad in ["", "a b", "x\"; drop", "1col"] {
        assert!(matches!(
            Outbox::new("orders.outbox_event")
                .unwrap()
                .trace_column(Some(bad)),
            Err(OutboxError::InvalidColumnName(_))
        ));
    }
    db.drop_database().await.unwrap();
}
