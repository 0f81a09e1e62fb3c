//! A transaction that fails after the business rows were written leaves neither them nor an
//! outbox row. The failure is real: a trigger makes PostgreSQL refuse the outbox insert, which
//! the service runs after inserting the order and its lines (or updating the line).

use reqwest::StatusCode;

use crate::helpers::{Counts, TestApp, assert_api_error, ids, sample_create_request, spawn_app};

async fn make_outbox_inserts_fail(app: &TestApp) {
    for statement in [
        "CREATE FUNCTION orders.refuse_outbox_insert() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'outbox insert refused by the test'; END $$",
        "CREATE TRIGGER refuse_outbox_insert BEFORE INSERT ON orders.outbox_event \
         FOR EACH ROW EXECUTE FUNCTION orders.refuse_outbox_insert()",
    ] {
        sqlx::query(statement).execute(&app.db.pool).await.unwrap();
    }
}

async fn let_outbox_inserts_succeed(app: &TestApp) {
    sqlx::query("DROP TRIGGER refuse_outbox_insert ON orders.outbox_event")
        .execute(&app.db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_outbox_insert_rolls_back_the_order() {
    let app = spawn_app().await;
    make_outbox_inserts_fail(&app).await;

    let response = app.post_order(&sample_create_request()).await;

    assert_api_error(response, "internal_error", None).await;
    assert_eq!(
        app.counts().await,
        Counts::new(0, 0, 0),
        "neither business rows nor an event"
    );

    let_outbox_inserts_succeed(&app).await;
    let response = app.post_order(&sample_create_request()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.counts().await, Counts::new(1, 2, 1));
    app.stop().await;
}

#[tokio::test]
async fn a_failed_outbox_insert_rolls_back_the_status_change() {
    let app = spawn_app().await;
    let (order_id, line_ids) = ids(&app.create_sample_order().await);
    make_outbox_inserts_fail(&app).await;

    let response = app.put_status(&order_id, &line_ids[0], "SHIPPED").await;

    assert_api_error(response, "internal_error", None).await;
    assert_eq!(app.line_status(&line_ids[0]).await, "ENTERED");
    assert_eq!(app.counts().await.events, 1, "only the OrderCreated event");

    // The line is still ENTERED, so the change can happen once the outbox works again.
    let_outbox_inserts_succeed(&app).await;
    let response = app.put_status(&order_id, &line_ids[0], "SHIPPED").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.line_status(&line_ids[0]).await, "SHIPPED");
    assert_eq!(app.counts().await.events, 2);
    app.stop().await;
}
