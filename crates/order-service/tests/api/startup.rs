//! Start-up against the real server: the database is created when missing, `DB_SCHEMA` is
//! honoured, `OUTBOX_DELETE_AFTER_INSERT` keeps the table empty while the WAL keeps the insert,
//! and failures name what is wrong without ever showing the password.

use std::collections::HashMap;
use std::str::FromStr;

use order_service::{Application, Config};
use reqwest::StatusCode;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{Counts, sample_create_request, spawn_app_with};

fn config(vars: &[(&str, &str)]) -> Config {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Config::from_lookup(|name| vars.get(name).cloned()).unwrap()
}

fn admin_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&test_support::pg_admin_url()).unwrap()
}

/// The admin URL pointing at `database` instead.
fn url_for_database(database: &str) -> String {
    let admin = test_support::pg_admin_url();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{database}")
}

#[tokio::test]
async fn a_missing_database_is_created_and_migrated() {
    let name = format!("t_orders_created_{}", test_support::unique_suffix());
    let config = config(&[
        ("DATABASE_URL", &url_for_database(&name)),
        ("SERVER_PORT", "0"),
    ]);

    let application = Application::build(config).await.unwrap();

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'orders' ORDER BY 1",
    )
    .fetch_all(application.pool())
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "order_line",
            "outbox_event",
            "purchase_order"
        ]
    );
    let identity: String = sqlx::query_scalar(
        "SELECT relreplident::text FROM pg_class WHERE oid = 'orders.outbox_event'::regclass",
    )
    .fetch_one(application.pool())
    .await
    .unwrap();
    assert_eq!(identity, "d", "replica identity default");
    application.pool().close().await;
    drop(application);

    // Building again over the existing database is a no-op migration.
    let again = Application::build(config_for(&name)).await.unwrap();
    again.pool().close().await;
    drop(again);
    test_support::drop_database_and_slots(&name).await.unwrap();
}

fn config_for(database: &str) -> Config {
    config(&[
        ("DATABASE_URL", &url_for_database(database)),
        ("SERVER_PORT", "0"),
    ])
}

#[tokio::test]
async fn db_schema_is_honoured() {
    let app = spawn_app_with(&[("DB_SCHEMA", "sales")]).await;

    let response = app.post_order(&sample_create_request()).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        app.counts().await,
        Counts::new(1, 2, 1),
        "rows in schema sales"
    );
    let orders_schema: Option<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = 'orders'")
            .fetch_optional(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(orders_schema, None);
    app.stop().await;
}

#[tokio::test]
async fn delete_after_insert_leaves_the_table_empty_and_the_insert_in_the_wal() {
    let app = spawn_app_with(&[("OUTBOX_DELETE_AFTER_INSERT", "true")]).await;
    let slot = format!("t_wal_{}", test_support::unique_suffix());
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')")
        .bind(&slot)
        .execute(&app.db.pool)
        .await
        .unwrap();

    let response = app.post_order(&sample_create_request()).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let order: serde_json::Value = response.json().await.unwrap();
    assert_eq!(app.counts().await, Counts::new(1, 2, 0));
    let changes: Vec<String> =
        sqlx::query_scalar("SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)")
            .bind(&slot)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let order_id = order["id"].as_str().unwrap();
    let inserted = changes.iter().any(|change| {
        change.starts_with("table orders.outbox_event: INSERT:")
            && change.contains(&format!("aggregate_id[character varying]:'{order_id}'"))
            && change.contains("type[character varying]:'OrderCreated'")
    });
    assert!(inserted, "the insert is in the WAL: {changes:#?}");
    assert!(
        changes
            .iter()
            .any(|change| change.starts_with("table orders.outbox_event: DELETE:")),
        "{changes:#?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_password_fails_without_showing_it() {
    let password = "Wrong-Pa55word-7f3c";
    let admin = admin_options();
    let port = admin.get_port().to_string();
    let url = format!(
        "postgres://{}:{password}@{}:{port}/postgres",
        admin.get_username(),
        admin.get_host()
    );
    for vars in [
        vec![("DATABASE_URL", url.as_str())],
        vec![
            ("DB_HOST", admin.get_host()),
            ("DB_PORT", port.as_str()),
            ("DB_USER", admin.get_username()),
            ("DB_PASSWORD", password),
            ("DB_NAME", "postgres"),
        ],
    ] {
        let config = config(&vars);
        assert!(!format!("{config:?}").contains(password));

        let error = Application::build(config).await.unwrap_err();

        for text in [
            format!("{error}"),
            format!("{error:#}"),
            format!("{error:?}"),
        ] {
            assert!(!text.contains(password), "{text}");
            assert!(text.contains("password authentication failed"), "{text}");
        }
        assert!(
            error.to_string().contains(&format!(
                "{}:{port}/postgres as user {}",
                admin.get_host(),
                admin.get_username()
            )),
            "{error}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    // Port 1 is reserved (tcpmux) and nothing listens there.
    let error = Application::build(config(&[("DB_PORT", "1"), ("SERVER_PORT", "0")]))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("cannot connect to PostgreSQL at 127.0.0.1:1/orderdb as user postgres"),
        "{message}"
    );
    assert!(!message.contains("postgres:postgres"), "{message}");
}

#[tokio::test]
async fn a_taken_port_names_the_server_variables() {
    let name = format!("t_orders_port_{}", test_support::unique_suffix());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let config = config(&[
        ("DATABASE_URL", &url_for_database(&name)),
        ("SERVER_PORT", &port),
    ]);

    let error = Application::build(config).await.unwrap_err();

    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (SERVER_HOST, SERVER_PORT)"
        )),
        "{message}"
    );
    test_support::drop_database_and_slots(&name).await.unwrap();
}
