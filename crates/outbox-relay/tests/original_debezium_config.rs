//! The relay binary started as the original system started Debezium Server: its
//! `application.properties` as it is (`resources/debezium/original/application.properties`)
//! and only its environment (`RABBITMQ_*`, `DATABASE_*`), plus the relay's HTTP port.
//!
//! The original file has no virtual host, and this test's broker is an isolated vhost: it is
//! passed as `DEBEZIUM_SINK_RABBITMQ_CONNECTION_VIRTUAL_HOST`, the environment override by
//! mapped key name that Debezium Server itself supports (an operator could do the same).
//! The database is made with the original DDL; slot and publication are Debezium's defaults
//! (`debezium`, `dbz_publication`), and the outbox rows are written as the original producer
//! writes them. What arrives on a queue bound to `order.events` must be byte-identical to
//! what Debezium publishes for such rows: body, `id` and `eventType` headers, and exactly
//! Debezium's properties.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{bind_queue, wait_streaming};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use sqlx::{Connection, PgConnection};
use test_support::process::{ServiceCommand, free_port};
use test_support::{EVENTUALLY, TestDatabase, TestVhost, unique_suffix, wait_until};

/// Debezium's default slot; cluster-wide, so the tests using it take turns (see
/// [`SlotTurn`]).
const DEBEZIUM_SLOT: &str = "debezium";

fn repository() -> PathBuf {
    common::manifest_dir().join("../..")
}

fn original_properties() -> PathBuf {
    repository().join("resources/debezium/original/application.properties")
}

/// `scheme://user:password@host:port[/...]` → (user, password, host, port), %-decoded.
fn url_parts(url: &str) -> (String, String, String, String) {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap();
    let decode = |text: &str| {
        let mut bytes = Vec::new();
        let mut index = 0;
        while index < text.len() {
            if text.as_bytes()[index] == b'%' {
                bytes.push(u8::from_str_radix(&text[index + 1..index + 3], 16).unwrap());
                index += 3;
            } else {
                bytes.push(text.as_bytes()[index]);
                index += 1;
            }
        }
        String::from_utf8(bytes).unwrap()
    };
    (
        decode(user),
        decode(password),
        host.to_owned(),
        port.to_owned(),
    )
}

/// The original Debezium Server container's environment, pointing at `database` and at the
/// test broker.
fn original_env(database: &str) -> HashMap<String, String> {
    let (pg_user, pg_password, pg_host, pg_port) = url_parts(&test_support::pg_admin_url());
    let (mq_user, mq_password, mq_host, mq_port) = url_parts(&test_support::amqp_base_url());
    [
        ("RABBITMQ_HOSTNAME", mq_host),
        ("RABBITMQ_PORT", mq_port),
        ("RABBITMQ_USER", mq_user),
        ("RABBITMQ_PASSWORD", mq_password),
        ("DATABASE_HOSTNAME", pg_host),
        ("DATABASE_PORT", pg_port),
        ("DATABASE_USER", pg_user),
        ("DATABASE_PASSWORD", pg_password),
        ("DATABASE_NAME", database.to_owned()),
        ("DATABASE_SCHEMA", "orders".to_owned()),
        ("DATABASE_OUTBOX_TABLE", "outbox_event".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Prefix of this file's test databases.
const DB_PREFIX: &str = "relay_original_dbz";

/// Holds a cluster-wide advisory lock while a test uses the slot named `debezium`, and waits
/// until no such slot is left (slot names are per cluster, not per database). A slot left
/// inactive on one of this file's databases by an earlier, failed run is dropped with its
/// database: holding the lock, no other run of this test uses it.
struct SlotTurn {
    _session: PgConnection,
}

impl SlotTurn {
    async fn take() -> Self {
        let mut session = PgConnection::connect(&test_support::pg_admin_url())
            .await
            .unwrap();
        sqlx::query("SELECT pg_advisory_lock(hashtext('outbox-relay tests: slot debezium'))")
            .execute(&mut session)
            .await
            .unwrap();
        wait_until(
            "no replication slot named debezium (another test's?)",
            Duration::from_secs(120),
            || async {
                let mut admin = PgConnection::connect(&test_support::pg_admin_url())
                    .await
                    .ok()?;
                let slot: Option<(String, bool)> = sqlx::query_as(
                    "SELECT database::text, active FROM pg_replication_slots WHERE slot_name = $1",
                )
                .bind(DEBEZIUM_SLOT)
                .fetch_optional(&mut admin)
                .await
                .ok()?;
                match slot {
                    None => Some(()),
                    Some((database, false)) if database.starts_with(&format!("t_{DB_PREFIX}_")) => {
                        test_support::drop_database_and_slots(&database)
                            .await
                            .ok()?;
                        None
                    }
                    Some(_) => None,
                }
            },
        )
        .await
        .unwrap();
        Self { _session: session }
    }
}

/// Debezium Server's properties: persistent, and the headers as long strings; nothing else.
fn debezium_properties(id_header: &str, event_type_header: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in [("id", id_header), ("eventType", event_type_header)] {
        headers.insert(
            name.into(),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// Debezium's `id` header for a uuid event id.
fn uuid_header(id: &str) -> String {
    format!(
        r#"{{"schema":{{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1}},"payload":"{id}"}}"#
    )
}

/// Debezium's `eventType` header.
fn type_header(event_type: &str) -> String {
    format!(r#"{{"schema":{{"type":"string","optional":false}},"payload":"{event_type}"}}"#)
}

/// One message as Debezium publishes it.
struct Expected {
    body: String,
    id_header: String,
    type_header: String,
}

/// The two rows of `resources/original/orderdb-rows.sql`, as Debezium publishes them: the body
/// is the JSON converter's envelope with the schema inferred from the payload (every field
/// optional, small integers int32), keys in jsonb's order (shorter first, then bytewise), the
/// shape of the captured messages in `crates/wire-format/tests/fixtures`.
fn original_rows_expected() -> Vec<Expected> {
    let created = envelope(
        &[
            ("string", "id"),
            ("string", "eventType"),
            ("string", "orderDate"),
            ("int32", "customerId"),
        ],
        concat!(
            r#"{"id":"6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2","eventType":"OrderCreated","#,
            r#""orderDate":"2019-01-31T12:13:01.000Z","customerId":123}"#
        ),
    );
    let line_updated = envelope(
        &[
            ("string", "orderId"),
            ("string", "newStatus"),
            ("string", "oldStatus"),
            ("string", "orderLineId"),
        ],
        concat!(
            r#"{"orderId":"6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2","newStatus":"CANCELLED","#,
            r#""oldStatus":"ENTERED","orderLineId":"1b8c4d5e-6f7a-4b2c-9d3e-4f5a6b7c8d9e"}"#
        ),
    );
    vec![
        Expected {
            body: created,
            id_header: uuid_header("2c9d5e6f-7a8b-4c3d-8e4f-5a6b7c8d9e0f"),
            type_header: type_header("OrderCreated"),
        },
        Expected {
            body: line_updated,
            id_header: uuid_header("3d0e6f7a-8b9c-4d4e-9f5a-6b7c8d9e0f1a"),
            type_header: type_header("OrderLineUpdated"),
        },
    ]
}

/// The JSON converter's envelope around `payload`: a schema listing each of `fields` (type,
/// name) as optional, in the payload's key order.
fn envelope(fields: &[(&str, &str)], payload: &str) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(kind, name)| format!(r#"{{"type":"{kind}","optional":true,"field":"{name}"}}"#))
        .collect();
    format!(
        r#"{{"schema":{{"type":"struct","fields":[{}],"optional":true,"name":"payload"}},"payload":{payload}}}"#,
        fields.join(",")
    )
}

/// The messages Debezium 3.6.3 published, captured from the broker, with their source rows.
fn captured_samples() -> Vec<serde_json::Value> {
    let fixtures = common::manifest_dir().join("../wire-format/tests/fixtures");
    ["order-created.json", "order-line-updated.json"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(fixtures.join(name)).unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn the_relay_runs_on_the_originals_file_and_environment() {
    test_support::init_tracing();
    let turn = SlotTurn::take().await;
    let db = TestDatabase::create(DB_PREFIX).await.unwrap();
    let ddl = std::fs::read_to_string(repository().join("resources/original/orderdb-schema.sql"))
        .unwrap();
    sqlx::raw_sql(&ddl).execute(&db.pool).await.unwrap();
    let vhost = TestVhost::create(DB_PREFIX).await.unwrap();
    let queue = bind_queue(&vhost.amqp_url, "order.events").await;

    let http_port = free_port();
    let mut env = original_env(&db.name);
    env.insert(
        "RELAY_DEBEZIUM_PROPERTIES".into(),
        original_properties().display().to_string(),
    );
    env.insert("RELAY_HTTP_PORT".into(), http_port.to_string());
    env.insert(
        "DEBEZIUM_SINK_RABBITMQ_CONNECTION_VIRTUAL_HOST".into(),
        vhost.name.clone(),
    );
    let log = std::env::temp_dir().join(format!("relay-original-{}.log", unique_suffix()));
    let mut relay = ServiceCommand::new("outbox-relay", env!("CARGO_BIN_EXE_outbox-relay"))
        .env_clear()
        .envs(&env)
        .http_port(http_port)
        .log_file(&log)
        .spawn()
        .unwrap();
    wait_streaming(&relay).await;

    // Debezium's slot and publication, made by the relay.
    let (plugin, database): (String, String) = sqlx::query_as(
        "SELECT plugin::text, database::text FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(DEBEZIUM_SLOT)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (plugin.as_str(), database.as_str()),
        ("pgoutput", db.name.as_str())
    );
    let (published,): (String,) = sqlx::query_as(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables \
         WHERE pubname = 'dbz_publication'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(published, "orders.outbox_event");

    // The original producer's rows (one transaction), then the rows behind the captures.
    let rows =
        std::fs::read_to_string(repository().join("resources/original/orderdb-rows.sql")).unwrap();
    sqlx::raw_sql(&rows).execute(&db.pool).await.unwrap();
    let mut expected = original_rows_expected();
    for sample in captured_samples() {
        let row = &sample["source_row"];
        sqlx::query(
            "INSERT INTO orders.outbox_event \
             (id, \"timestamp\", aggregate_id, aggregate_type, payload, \"type\") \
             VALUES ($1::uuid, $2::timestamp, $3, $4, $5::jsonb, $6)",
        )
        .bind(row["id"].as_str().unwrap())
        .bind(row["timestamp"].as_str().unwrap())
        .bind(row["aggregate_id"].as_str().unwrap())
        .bind(row["aggregate_type"].as_str().unwrap())
        .bind(row["payload"].to_string())
        .bind(row["type"].as_str().unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
        let headers = &sample["properties"]["headers"];
        expected.push(Expected {
            body: sample["body"].as_str().unwrap().to_owned(),
            id_header: headers["id"].as_str().unwrap().to_owned(),
            type_header: headers["eventType"].as_str().unwrap().to_owned(),
        });
    }

    let received = queue.take(expected.len(), EVENTUALLY).await;
    assert_eq!(received.len(), expected.len(), "{}", relay.log_tail(40));
    for (message, expected) in received.iter().zip(&expected) {
        assert_eq!(message.exchange, "order.events");
        assert_eq!(message.routing_key, "");
        assert_eq!(message.body_text(), expected.body);
        assert_eq!(
            message.properties,
            debezium_properties(&expected.id_header, &expected.type_header)
        );
    }
    assert!(
        queue.take(1, Duration::from_millis(300)).await.is_empty(),
        "no extra messages"
    );

    // The settings it cannot use are named once each, with why.
    let output = relay.output();
    for (key, why) in [
        (
            "debezium.source.offset.storage.file.filename",
            "the replication slot's confirmed position is the relay's position",
        ),
        ("debezium.source.topic.prefix", "ignored"),
        ("debezium.format.value", "RELAY_WIRE_FORMAT"),
        ("quarkus.log.console.json", "Quarkus"),
        (
            "debezium.transforms.outbox.table.expand.json.payload",
            "always expanded",
        ),
    ] {
        let lines: Vec<&str> = output
            .lines()
            .filter(|line| line.contains(&format!("setting={key}")))
            .collect();
        assert_eq!(lines.len(), 1, "one line for {key}:\n{output}");
        assert!(lines[0].contains(why), "{}", lines[0]);
    }

    common::stop_relay(&mut relay).await;
    queue.close().await;
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(DEBEZIUM_SLOT)
        .execute(&db.pool)
        .await
        .unwrap();
    db.drop_database().await.unwrap();
    vhost.delete().await.unwrap();
    drop(turn);
    let _ = std::fs::remove_file(log);
}

#[tokio::test]
async fn an_unset_variable_stops_the_binary_naming_it() {
    let mut env = original_env("orderdb");
    env.remove("DATABASE_PORT");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .env_clear()
        .envs(&env)
        .env("RELAY_DEBEZIUM_PROPERTIES", original_properties())
        .env("RELAY_HTTP_PORT", free_port().to_string())
        .output();
    let output = tokio::time::timeout(EVENTUALLY, output)
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success(), "it started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "debezium.source.database.port: ${DATABASE_PORT} is not set (no environment \
             variable DATABASE_PORT and no default)"
        ),
        "{stderr}"
    );
}
