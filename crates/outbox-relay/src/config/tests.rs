//! Unit tests of the configuration: defaults, precedence, the shared rules, the properties
//! file through the whole configuration. The properties parser's own cases are in
//! `properties`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod original_file;
mod properties;

use std::collections::HashMap;
use std::env::VarError;
use std::path::PathBuf;
use std::time::Duration;

use wire_format::WireFormat;

use super::build::build;
use super::*;
use crate::router::Placement;

fn cli() -> Cli {
    Cli::default()
}

/// An environment with no variables.
fn no_env(_: &str) -> Result<String, VarError> {
    Err(VarError::NotPresent)
}

/// An environment holding exactly `vars`.
fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<String, VarError> + use<> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    move |name| vars.get(name).cloned().ok_or(VarError::NotPresent)
}

/// The resolved value of `key` in a file of `text` with environment `vars`.
fn resolved(text: &str, vars: &[(&str, &str)], key: &str) -> Result<Option<String>, String> {
    DebeziumProperties::parse(text, &env_of(vars))
        .map(|p| p.get(key).map(str::to_owned))
        .map_err(|e| e.to_string())
}

#[test]
fn defaults_follow_the_original_system() {
    let config = Config::from_cli(cli()).unwrap();
    assert_eq!(config.postgres.database, "orderdb");
    assert_eq!(config.slot, "outbox_relay");
    assert_eq!(config.publication, "outbox_publication");
    assert_eq!(config.router.tables[0].to_string(), "orders.outbox_event");
    assert_eq!(config.wire_format, WireFormat::Plain);
    assert_eq!(config.http_port, 8080);
    assert_eq!(config.amqp.display, "amqp://guest:***@127.0.0.1:5672/%2F");
}

#[test]
fn database_url_replaces_the_parts() {
    let config = Config::from_cli(Cli {
        database_url: Some("postgres://relay:p%40ss@db.example:6543/shop?sslmode=disable".into()),
        ..cli()
    })
    .unwrap();
    assert_eq!(config.postgres.host, "db.example");
    assert_eq!(config.postgres.port, 6543);
    assert_eq!(config.postgres.user, "relay");
    assert_eq!(config.postgres.password.expose(), "p@ss");
    assert_eq!(config.postgres.database, "shop");
    assert!(!format!("{config:?}").contains("p@ss"));
}

/// A bad setting: the name its error must give, and how it changes the default flags.
type BadSetting = (&'static str, fn(&mut Cli));

/// The error of a configuration whose flags `set` changes from the defaults.
fn error_with(set: fn(&mut Cli)) -> String {
    let mut flags = cli();
    set(&mut flags);
    Config::from_cli(flags).unwrap_err().to_string()
}

#[test]
fn invalid_settings_are_named() {
    let cases: [BadSetting; 7] = [
        ("DB_PORT", |c| c.db_port = Some("fifty".into())),
        ("RELAY_SLOT", |c| c.slot = Some("Bad-Slot".into())),
        ("RELAY_WIRE_FORMAT", |c| c.wire_format = Some("xml".into())),
        ("RELAY_ROUTING_KEY", |c| {
            c.routing_key = Some("random".into())
        }),
        ("AMQP_URL", |c| c.amqp_url = Some("http://x".into())),
        ("AMQP_URL", |c| {
            c.amqp_url = Some("amqp://u:Pw-9f2@host:notaport/%2f".into())
        }),
        ("AMQP_URL", |c| {
            c.amqp_url = Some("amqp://u:Pw-9f2@host:99999/%2f".into())
        }),
    ];
    for (setting, set) in cases {
        let error = error_with(set);
        assert!(error.contains(setting), "{error}");
        assert!(!error.contains("Pw-9f2"), "the password leaked: {error}");
    }
}

#[test]
fn polling_settings_are_validated_and_named() {
    let config = Config::from_cli(cli()).unwrap();
    assert_eq!(config.source, SourceKind::Replication);
    assert_eq!(config.polling, PollingSettings::default());
    let config = Config::from_cli(Cli {
        source: Some("polling".into()),
        poll_interval_ms: Some("10".into()),
        poll_batch_size: Some("2000".into()),
        ..cli()
    })
    .unwrap();
    assert_eq!(config.source, SourceKind::Polling);
    assert_eq!(config.polling.interval, Duration::from_millis(10));
    assert_eq!(config.polling.batch_size, 2000);
    let cases: [BadSetting; 4] = [
        ("RELAY_SOURCE", |c| c.source = Some("trigger".into())),
        ("RELAY_POLL_BATCH_SIZE", |c| {
            c.poll_batch_size = Some("0".into())
        }),
        ("RELAY_POLL_BATCH_SIZE", |c| {
            c.poll_batch_size = Some("many".into())
        }),
        ("RELAY_POLL_INTERVAL_MS", |c| {
            c.poll_interval_ms = Some("0".into())
        }),
    ];
    for (setting, set) in cases {
        let error = error_with(set);
        assert!(error.contains(setting), "{error}");
    }
}

#[test]
fn amqp_url_password_is_redacted() {
    // The URL is redacted from its parsed form (service_kit::amqp), as the services' are.
    let config = Config::from_cli(Cli {
        amqp_url: Some("amqp://u:secret@h:5672/v".into()),
        ..cli()
    })
    .unwrap();
    assert_eq!(config.amqp.display, "amqp://u:***@h:5672/v");
    assert_eq!(config.amqp.url.expose(), "amqp://u:secret@h:5672/v");
    let config = Config::from_cli(Cli {
        amqp_url: Some("amqp://h:5672".into()),
        ..cli()
    })
    .unwrap();
    assert!(!config.amqp.display.contains("secret"));
    let config = Config::from_cli(Cli {
        rabbitmq_password: Some("s3cr:t".into()),
        rabbitmq_vhost: Some("my vhost".into()),
        ..cli()
    })
    .unwrap();
    assert_eq!(
        config.amqp.url.expose(),
        "amqp://guest:s3cr%3At@127.0.0.1:5672/my%20vhost"
    );
    assert!(!config.amqp.display.contains("s3cr"));
}

fn original_properties() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../resources/debezium/application.properties")
}

#[test]
fn the_original_systems_properties_file_configures_the_relay() {
    let config = Config::from_cli(Cli {
        debezium_properties: Some(original_properties()),
        ..cli()
    })
    .unwrap();
    assert_eq!(config.postgres.host, "127.0.0.1");
    assert_eq!(config.postgres.port, 5432);
    assert_eq!(config.postgres.user, "postgres");
    assert_eq!(config.postgres.database, "orderdb");
    assert_eq!(config.slot, "outbox_relay");
    assert_eq!(config.publication, "outbox_publication");
    assert_eq!(config.router, RouterConfig::default());
    assert_eq!(config.wire_format, WireFormat::Debezium);
    assert_eq!(config.amqp.display, "amqp://guest:***@127.0.0.1:5672/%2F");
}

#[test]
fn flags_and_env_override_the_properties_file() {
    let config = Config::from_cli(Cli {
        debezium_properties: Some(original_properties()),
        db_name: Some("otherdb".into()),
        route_by_field: Some("type".into()),
        wire_format: Some("plain".into()),
        ..cli()
    })
    .unwrap();
    assert_eq!(config.postgres.database, "otherdb");
    assert_eq!(config.router.route_by_field, "type");
    assert_eq!(config.wire_format, WireFormat::Plain);
}

#[test]
fn every_outbox_key_of_a_properties_file_is_read() {
    let properties = DebeziumProperties::parse(
        "debezium.transforms=unwrap,router\n\
         debezium.transforms.unwrap.type=io.debezium.transforms.ExtractNewRecordState\n\
         debezium.transforms.router.type=io.debezium.transforms.outbox.EventRouter\n\
         debezium.transforms.router.route.by.field=topic\n\
         debezium.transforms.router.route.topic.replacement=out.${routedByValue}\n\
         debezium.transforms.router.table.field.event.id=event_id\n\
         debezium.transforms.router.table.field.event.key=message_key\n\
         debezium.transforms.router.table.field.event.type=event_type\n\
         debezium.transforms.router.table.field.event.payload=body\n\
         debezium.transforms.router.table.fields.additional.placement=event_type:header:ce_type,id:header\n\
         debezium.source.table.include.list=public.outbox,app.events\n",
        &no_env,
    )
    .unwrap();
    let config = build(cli(), Some(&properties)).unwrap();
    let router = &config.router;
    assert_eq!(router.route_by_field, "topic");
    assert_eq!(router.route_topic_replacement, "out.${routedByValue}");
    assert_eq!(router.field_event_id, "event_id");
    assert_eq!(router.field_event_key, "message_key");
    assert_eq!(router.field_event_type, "event_type");
    assert_eq!(router.field_event_payload, "body");
    assert_eq!(
        router.additional_placement,
        vec![
            Placement {
                column: "event_type".into(),
                header: "ce_type".into()
            },
            Placement {
                column: "id".into(),
                header: "id".into()
            }
        ]
    );
    assert_eq!(
        router
            .tables
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["public.outbox", "app.events"]
    );
}

#[test]
fn a_bad_properties_value_names_its_key() {
    let properties =
        DebeziumProperties::parse("debezium.source.plugin.name=decoderbufs\n", &no_env).unwrap();
    let error = build(cli(), Some(&properties)).unwrap_err().to_string();
    assert!(error.contains("debezium.source.plugin.name"), "{error}");
    let properties = DebeziumProperties::parse(
        "debezium.transforms=outbox\n\
         debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
         debezium.transforms.outbox.table.fields.additional.placement=type:envelope:t\n",
        &no_env,
    )
    .unwrap();
    let error = build(cli(), Some(&properties)).unwrap_err().to_string();
    assert!(
        error.contains("debezium.transforms.outbox.table.fields.additional.placement"),
        "{error}"
    );
    let error = Config::from_cli(Cli {
        debezium_properties: Some(PathBuf::from("/nonexistent/application.properties")),
        ..cli()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("/nonexistent/application.properties"),
        "{error}"
    );
}

const PORT_KEY: &str = "debezium.source.database.port";

#[test]
fn the_routers_own_placeholder_stays_unescaped() {
    let file = "debezium.transforms=outbox\n\
                debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
                debezium.transforms.outbox.route.topic.replacement=${routedByValue}.events\n";
    let properties = DebeziumProperties::parse(file, &no_env).unwrap();
    assert_eq!(
        properties.outbox("route.topic.replacement").unwrap().1,
        "${routedByValue}.events"
    );
    let config = build(cli(), Some(&properties)).unwrap();
    assert_eq!(
        config.router.route_topic_replacement,
        "${routedByValue}.events"
    );
}

#[test]
fn the_environment_overrides_a_key_by_its_mapped_name() {
    let file = "debezium.source.database.port=5432\n";
    assert_eq!(
        resolved(file, &[("DEBEZIUM_SOURCE_DATABASE_PORT", "6000")], PORT_KEY).unwrap(),
        Some("6000".into())
    );
    // Also a key the file does not have, e.g. the original's missing vhost.
    let key = "debezium.sink.rabbitmq.connection.virtual.host";
    assert_eq!(
        resolved(
            file,
            &[("DEBEZIUM_SINK_RABBITMQ_CONNECTION_VIRTUAL_HOST", "t_1")],
            key
        )
        .unwrap(),
        Some("t_1".into())
    );
    // The override wins even over a placeholder that would fail.
    let file = "debezium.source.database.port=${DATABASE_PORT}\n";
    assert_eq!(
        resolved(file, &[("DEBEZIUM_SOURCE_DATABASE_PORT", "6000")], PORT_KEY).unwrap(),
        Some("6000".into())
    );
    let properties = DebeziumProperties::parse(
        "debezium.sink.rabbitmq.connection.virtual.host=/\n",
        &env_of(&[("DEBEZIUM_SINK_RABBITMQ_CONNECTION_VIRTUAL_HOST", "tenant a")]),
    )
    .unwrap();
    let config = build(cli(), Some(&properties)).unwrap();
    assert!(
        config.amqp.display.ends_with("/tenant%20a"),
        "{}",
        config.amqp.display
    );
}

#[test]
fn a_properties_file_brings_debeziums_slot_and_publication_defaults() {
    let properties = DebeziumProperties::parse("debezium.sink.type=rabbitmq\n", &no_env).unwrap();
    let config = build(cli(), Some(&properties)).unwrap();
    assert_eq!(config.slot, "debezium");
    assert_eq!(config.publication, "dbz_publication");
    let config = build(
        Cli {
            slot: Some("relay_slot".into()),
            publication: Some("relay_pub".into()),
            ..cli()
        },
        Some(&properties),
    )
    .unwrap();
    assert_eq!(config.slot, "relay_slot");
    assert_eq!(config.publication, "relay_pub");
    let properties = DebeziumProperties::parse(
        "debezium.source.slot.name=from_file\ndebezium.source.publication.name=pub_file\n",
        &no_env,
    )
    .unwrap();
    let config = build(cli(), Some(&properties)).unwrap();
    assert_eq!(
        (config.slot.as_str(), config.publication.as_str()),
        ("from_file", "pub_file")
    );
    let config = build(cli(), None).unwrap();
    assert_eq!(config.slot, "outbox_relay");
    assert_eq!(config.publication, "outbox_publication");
}

#[test]
fn schema_include_list_must_cover_the_tables() {
    let properties = DebeziumProperties::parse(
        "debezium.source.table.include.list=orders.outbox_event\n\
         debezium.source.schema.include.list=billing\n",
        &no_env,
    )
    .unwrap();
    let error = build(cli(), Some(&properties)).unwrap_err().to_string();
    assert!(
        error.contains("debezium.source.schema.include.list"),
        "{error}"
    );
    assert!(
        error.contains("debezium.source.table.include.list"),
        "{error}"
    );
    assert!(error.contains("orders.outbox_event"), "{error}");
    // RELAY_TABLES is checked against it too, and named.
    let error = build(
        Cli {
            tables: Some("public.outbox".into()),
            ..cli()
        },
        Some(&properties),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("RELAY_TABLES"), "{error}");
    let properties = DebeziumProperties::parse(
        "debezium.source.table.include.list=orders.outbox_event,billing.outbox\n\
         debezium.source.schema.include.list=billing, orders\n",
        &no_env,
    )
    .unwrap();
    build(cli(), Some(&properties)).unwrap();
}

#[test]
fn message_properties_follow_the_wire_format_unless_set() {
    let config = Config::from_cli(cli()).unwrap();
    assert_eq!(config.message_properties, MessageProperties::Full);
    let config = Config::from_cli(Cli {
        wire_format: Some("debezium".into()),
        ..cli()
    })
    .unwrap();
    assert_eq!(config.message_properties, MessageProperties::Debezium);
    let config = Config::from_cli(Cli {
        wire_format: Some("debezium".into()),
        message_properties: Some("full".into()),
        ..cli()
    })
    .unwrap();
    assert_eq!(config.message_properties, MessageProperties::Full);
    let config = Config::from_cli(Cli {
        message_properties: Some("debezium".into()),
        ..cli()
    })
    .unwrap();
    assert_eq!(config.message_properties, MessageProperties::Debezium);
    let error = Config::from_cli(Cli {
        message_properties: Some("some".into()),
        ..cli()
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("RELAY_MESSAGE_PROPERTIES"), "{error}");
    assert!(ENV_VARS.contains(&"RELAY_MESSAGE_PROPERTIES"));
}

#[test]
fn env_vars_are_the_flags_variables() {
    // The contract compose is checked against: every variable a flag reads, RUST_LOG included,
    // and nothing else.
    let mut expected = [
        service_kit::postgres::ENV_VARS,
        service_kit::amqp::ENV_VARS,
        service_kit::logging::ENV_VARS,
        service_kit::traces::ENV_VARS,
        &[
            "RELAY_TRACING_SPAN_CONTEXT_FIELD",
            "RELAY_SLOT",
            "RELAY_PUBLICATION",
            "RELAY_TABLES",
            "RELAY_WIRE_FORMAT",
            "RELAY_MESSAGE_PROPERTIES",
            "RELAY_ROUTING_KEY",
            "RELAY_ROUTE_BY_FIELD",
            "RELAY_ROUTE_TOPIC_REPLACEMENT",
            "RELAY_FIELD_EVENT_ID",
            "RELAY_FIELD_EVENT_KEY",
            "RELAY_FIELD_EVENT_TYPE",
            "RELAY_FIELD_EVENT_PAYLOAD",
            "RELAY_FIELDS_ADDITIONAL_PLACEMENT",
            "RELAY_EXCHANGE_TYPE",
            "RELAY_DEAD_LETTER_EXCHANGE",
            "RELAY_WINDOW_EVENTS",
            "RELAY_WINDOW_BYTES",
            "RELAY_DEBEZIUM_PROPERTIES",
            "RELAY_HTTP_HOST",
            "RELAY_HTTP_PORT",
            "RELAY_CONNECT_TIMEOUT_SECS",
            "RELAY_SHUTDOWN_TIMEOUT_SECS",
            "RELAY_STATUS_INTERVAL_MS",
            "RELAY_LOG_FORMAT",
            "RELAY_SOURCE",
            "RELAY_POLL_INTERVAL_MS",
            "RELAY_POLL_BATCH_SIZE",
        ],
    ]
    .concat();
    let mut actual = ENV_VARS.clone();
    expected.sort_unstable();
    actual.sort_unstable();
    assert_eq!(actual, expected);
}

#[test]
fn the_shared_rules_apply() {
    // Empty counts as unset.
    let config = Config::from_cli(Cli {
        db_host: Some(String::new()),
        http_port: Some(String::new()),
        ..cli()
    })
    .unwrap();
    assert_eq!(config.postgres.host, "127.0.0.1");
    assert_eq!(config.http_port, 8080);
    // A bad RUST_LOG stops the relay, named, instead of falling back to info.
    let error = Config::from_cli(Cli {
        log_filter: Some("info,[[[".into()),
        ..cli()
    })
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("RUST_LOG is invalid"), "{error}");
    assert_eq!(Config::from_cli(cli()).unwrap().log_filter.as_str(), "info");
    // Ranges are named.
    let error = Config::from_cli(Cli {
        db_port: Some("70000".into()),
        ..cli()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("DB_PORT") && error.contains("out of range"),
        "{error}"
    );
}

#[test]
fn the_database_url_keeps_its_query_string() {
    let config = Config::from_cli(Cli {
        database_url: Some(
            "postgres://relay:pw@db.example:6543/shop?sslmode=require&application_name=relay-a"
                .into(),
        ),
        ..cli()
    })
    .unwrap();
    assert!(config.postgres.requires_tls());
    assert!(matches!(
        config.postgres.ssl_mode,
        sqlx::postgres::PgSslMode::Require
    ));
    let options = config.postgres.connect_options("outbox-relay");
    assert_eq!(options.get_application_name(), Some("relay-a"));
}

#[test]
fn the_trace_context_column_comes_from_flag_file_or_default() {
    let default = build(cli(), None).unwrap();
    assert_eq!(
        default.router.tracing_span_context_field.as_deref(),
        Some("tracingspancontext")
    );
    let properties = DebeziumProperties::parse(
        "debezium.transforms=outbox\n\
         debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
         debezium.transforms.outbox.tracing.span.context.field=span_ctx\n",
        &no_env,
    )
    .unwrap();
    let from_file = build(cli(), Some(&properties)).unwrap();
    assert_eq!(
        from_file.router.tracing_span_context_field.as_deref(),
        Some("span_ctx")
    );
    let flag = build(
        Cli {
            tracing_span_context_field: Some("none".into()),
            ..cli()
        },
        Some(&properties),
    )
    .unwrap();
    assert_eq!(flag.router.tracing_span_context_field, None);
}
