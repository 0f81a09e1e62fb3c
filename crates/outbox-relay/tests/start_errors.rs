//! Start errors: each unmet requirement fails at start with a message naming the problem.
//! (`wal_level` other than `logical` needs a second cluster and is not tested here; the check
//! is one query in `source::prepare`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Fixture, start_error};
use outbox_relay::config::Cli;
use test_support::process::free_port;

#[tokio::test]
async fn role_without_replication_privilege_is_refused() {
    let fixture = Fixture::new("relay_err_role").await;
    let role = format!("r_{}", test_support::unique_suffix());
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'pw' NOREPLICATION"),
        format!("GRANT USAGE ON SCHEMA orders TO {role}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA orders TO {role}"),
    ] {
        sqlx::query(&statement)
            .execute(&fixture.db.pool)
            .await
            .unwrap();
    }
    let message = start_error(Cli {
        database_url: Some(fixture.url_as(&role, "pw")),
        ..fixture.cli()
    })
    .await;
    assert!(message.contains(&role), "{message}");
    assert!(message.contains("REPLICATION"), "{message}");
    assert!(
        !message.contains("pw@"),
        "no password in messages: {message}"
    );

    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(&fixture.db.pool)
        .await
        .unwrap();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&fixture.db.pool)
        .await
        .unwrap();
    fixture.cleanup().await;
}

#[tokio::test]
async fn missing_outbox_table_is_named() {
    let fixture = Fixture::new("relay_err_table").await;
    let message = start_error(Cli {
        tables: Some("orders.no_such_outbox".into()),
        ..fixture.cli()
    })
    .await;
    assert!(message.contains("orders.no_such_outbox"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    fixture.cleanup().await;
}

#[tokio::test]
async fn existing_publication_without_the_table_is_refused() {
    let fixture = Fixture::new("relay_err_pub").await;
    sqlx::query(&format!(
        "CREATE PUBLICATION {} FOR TABLE orders.other_table",
        fixture.publication
    ))
    .execute(&fixture.db.pool)
    .await
    .unwrap();
    let message = start_error(fixture.cli()).await;
    assert!(message.contains(&fixture.publication), "{message}");
    assert!(message.contains("orders.outbox_event"), "{message}");
    fixture.cleanup().await;
}

#[tokio::test]
async fn unreachable_or_refusing_servers_are_named() {
    let fixture = Fixture::new("relay_err_down").await;
    let closed_port = free_port();
    let message = start_error(Cli {
        database_url: Some(format!(
            "postgres://postgres:secret@127.0.0.1:{closed_port}/orderdb"
        )),
        connect_timeout_secs: Some("1".into()),
        ..fixture.cli()
    })
    .await;
    assert!(message.contains("cannot reach PostgreSQL"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{closed_port}")),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");

    let message = start_error(Cli {
        database_url: Some(fixture.url_as("postgres", "wrong-secret")),
        ..fixture.cli()
    })
    .await;
    assert!(message.contains("refused the connection"), "{message}");
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(!message.contains("wrong-secret"), "{message}");

    let message = start_error(Cli {
        amqp_url: Some(format!("amqp://guest:secret@127.0.0.1:{closed_port}/%2F")),
        connect_timeout_secs: Some("1".into()),
        ..fixture.cli()
    })
    .await;
    assert!(message.contains("RabbitMQ"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{closed_port}")),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    fixture.cleanup().await;
}

#[tokio::test]
async fn binary_exits_non_zero_naming_an_invalid_setting() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .env_clear()
        .env("RELAY_WINDOW_EVENTS", "lots")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RELAY_WINDOW_EVENTS"), "{stderr}");
    assert!(stderr.contains("lots"), "{stderr}");
}
