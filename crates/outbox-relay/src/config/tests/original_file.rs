//! The original system's Debezium Server file with its environment, through the whole
//! configuration.

use super::*;

fn the_originals_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../resources/debezium/original/application.properties")
}

const ORIGINAL_ENV: &[(&str, &str)] = &[
    ("RABBITMQ_HOSTNAME", "broker.internal"),
    ("RABBITMQ_PORT", "5673"),
    ("RABBITMQ_USER", "rabbit"),
    ("RABBITMQ_PASSWORD", "Rb-pw-7731"),
    ("DATABASE_HOSTNAME", "db.internal"),
    ("DATABASE_PORT", "5433"),
    ("DATABASE_USER", "dbz"),
    ("DATABASE_PASSWORD", "Db-pw-4419"),
    ("DATABASE_NAME", "orderdb"),
    ("DATABASE_SCHEMA", "orders"),
    ("DATABASE_OUTBOX_TABLE", "outbox_event"),
];

/// The configuration from the original's file with its environment.
fn the_originals_config() -> Config {
    Config::from_cli_with_env(
        Cli {
            debezium_properties: Some(the_originals_file()),
            ..cli()
        },
        &env_of(ORIGINAL_ENV),
    )
    .unwrap()
}

#[test]
fn the_originals_file_with_its_environment_configures_the_relay() {
    let config = the_originals_config();
    let postgres = &config.postgres;
    assert_eq!(
        (
            postgres.host.as_str(),
            postgres.port,
            postgres.user.as_str()
        ),
        ("db.internal", 5433, "dbz")
    );
    assert_eq!(
        (postgres.password.expose(), postgres.database.as_str()),
        ("Db-pw-4419", "orderdb")
    );
    assert_eq!(
        config.amqp.url.expose(),
        "amqp://rabbit:Rb-pw-7731@broker.internal:5673/%2F"
    );
    assert_eq!(config.slot, "debezium");
    assert_eq!(config.publication, "dbz_publication");
    // `\\${routedByValue}.events`, table.include.list from two variables, the router's
    // other columns at Debezium's defaults: exactly our default router.
    assert_eq!(config.router, RouterConfig::default());
    assert_eq!(config.wire_format, WireFormat::Debezium);
    assert_eq!(config.message_properties, MessageProperties::Debezium);
    assert!(
        config.notes.iter().all(|note| !note.warning),
        "{:?}",
        config.notes
    );
}

#[test]
fn every_ignored_key_gets_one_note_with_its_reason_and_no_value() {
    let config = the_originals_config();
    let note = |key: &str| -> String {
        let found: Vec<&ConfigNote> = config.notes.iter().filter(|n| n.setting == key).collect();
        assert_eq!(found.len(), 1, "one note for {key}: {:?}", config.notes);
        found[0].message.clone()
    };
    assert!(
        note("debezium.source.offset.storage.file.filename")
            .contains("the replication slot's confirmed position is the relay's position")
    );
    assert!(note("debezium.source.offset.flush.interval.ms").starts_with("ignored: "));
    assert!(note("debezium.source.topic.prefix").contains("route.topic.replacement"));
    assert!(note("debezium.source.tombstones.on.delete").contains("a delete publishes nothing"));
    assert!(note("debezium.format.key").contains("RELAY_WIRE_FORMAT"));
    assert!(note("debezium.format.value").contains("RELAY_WIRE_FORMAT"));
    assert!(note("debezium.source.connector.class").contains("its own PostgreSQL connector"));
    assert!(note("debezium.sink.type").contains("RabbitMQ only"));
    assert!(note("debezium.sink.rabbitmq.ackTimeout").contains("publisher confirm"));
    assert!(note("quarkus.log.console.json").contains("Quarkus"));
    assert!(
        note("debezium.transforms.outbox.table.expand.json.payload").contains("always expanded")
    );
    // Keys the relay reads get no note.
    for read in [
        "debezium.source.database.port",
        "debezium.source.database.password",
        "debezium.sink.rabbitmq.connection.password",
        "debezium.source.schema.include.list",
        "debezium.transforms.outbox.route.topic.replacement",
        "debezium.source.plugin.name",
    ] {
        assert!(
            config.notes.iter().all(|n| n.setting != read),
            "{read} is read"
        );
    }
    assert_eq!(config.notes.len(), 11, "{:?}", config.notes);
    let all = format!("{:?}", config.notes);
    for secret in ["Db-pw-4419", "Rb-pw-7731"] {
        assert!(!all.contains(secret), "a password in the notes: {all}");
    }
    assert!(!format!("{config:?}").contains("Db-pw-4419"));

    // Unknown keys and other transforms are named too, without expanding their values.
    let properties = DebeziumProperties::parse(
        "debezium.source.database.tcpKeepAlive=${UNSET_KEEPALIVE}\n\
         debezium.transforms=unwrap,outbox\n\
         debezium.transforms.unwrap.type=io.debezium.transforms.ExtractNewRecordState\n\
         debezium.transforms.unwrap.drop.tombstones=false\n\
         debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
         debezium.transforms.outbox.route.topic.regex=(?<routedByValue>.*)\n\
         debezium.transforms.outbox.table.expand.json.payload=true\n",
        &no_env,
    )
    .unwrap();
    let notes: Vec<(&str, &str)> = properties
        .notes()
        .iter()
        .map(|n| (n.setting.as_str(), n.message.as_str()))
        .collect();
    assert!(
        notes.contains(&(
            "debezium.source.database.tcpKeepAlive",
            "ignored: not used by outbox-relay"
        )),
        "{notes:?}"
    );
    assert!(
        notes.contains(&(
            "debezium.transforms.outbox.route.topic.regex",
            "ignored: not used by outbox-relay"
        )),
        "{notes:?}"
    );
    for key in [
        "debezium.transforms.unwrap.type",
        "debezium.transforms.unwrap.drop.tombstones",
    ] {
        assert!(
            notes.iter().any(|(setting, message)| *setting == key
                && message.contains("transform \"unwrap\" is not applied")),
            "{key}: {notes:?}"
        );
    }
}

#[test]
fn debeziums_tls_settings_are_the_relays() {
    let readable = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let with = |extra: &[(&str, &str)]| {
        let mut env = ORIGINAL_ENV.to_vec();
        env.extend_from_slice(extra);
        Config::from_cli_with_env(
            Cli {
                debezium_properties: Some(the_originals_file()),
                ..cli()
            },
            &env_of(&env),
        )
    };
    // Debezium's own keys (here through their environment names): a relay taking over its
    // configuration keeps its TLS.
    let config = with(&[
        ("DEBEZIUM_SOURCE_DATABASE_SSLMODE", "verify-full"),
        ("DEBEZIUM_SOURCE_DATABASE_SSLROOTCERT", readable),
    ])
    .unwrap();
    assert!(matches!(
        config.postgres.ssl_mode,
        sqlx::postgres::PgSslMode::VerifyFull
    ));
    assert_eq!(
        config.postgres.ssl_root_cert.as_deref(),
        Some(std::path::Path::new(readable))
    );
    let error = with(&[(
        "DEBEZIUM_SOURCE_DATABASE_SSLROOTCERT",
        "/nonexistent/root.crt",
    )])
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("debezium.source.database.sslrootcert")
            && error.contains("/nonexistent/root.crt"),
        "{error}"
    );
    let error = with(&[("DEBEZIUM_SOURCE_DATABASE_SSLMODE", "verify")])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("debezium.source.database.sslmode"),
        "{error}"
    );
    // The relay's own flag (or `DB_SSLMODE`) wins over the file.
    let config = Config::from_cli_with_env(
        Cli {
            debezium_properties: Some(the_originals_file()),
            db_sslmode: Some("disable".into()),
            ..cli()
        },
        &env_of(
            &[
                ORIGINAL_ENV,
                &[("DEBEZIUM_SOURCE_DATABASE_SSLMODE", "verify-full")],
            ]
            .concat(),
        ),
    )
    .unwrap();
    assert!(matches!(
        config.postgres.ssl_mode,
        sqlx::postgres::PgSslMode::Disable
    ));
}
