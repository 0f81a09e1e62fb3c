//! The Debezium properties parser: Java syntax, placeholders, escapes, loops, overrides.

use super::*;

#[test]
fn properties_parser_handles_java_syntax() {
    let properties = DebeziumProperties::parse(
        "# comment\n! other comment\n debezium.source.slot.name = 1\n\
         debezium.source.publication.name:2\ndebezium.source.database.user 3\n\
         debezium.source.database.dbname=x,\\\n   y\n\
         debezium.source.database.hostname=\\\\${v}\\:z\\u0041\n\
         debezium.source.database.password=\n",
        &no_env,
    )
    .unwrap();
    assert_eq!(properties.get("debezium.source.slot.name"), Some("1"));
    assert_eq!(
        properties.get("debezium.source.publication.name"),
        Some("2")
    );
    assert_eq!(properties.get("debezium.source.database.user"), Some("3"));
    assert_eq!(
        properties.get("debezium.source.database.dbname"),
        Some("x,y")
    );
    assert_eq!(
        properties.get("debezium.source.database.hostname"),
        Some("${v}:zA")
    );
    assert_eq!(properties.get("debezium.source.database.password"), None);
}

#[test]
fn placeholders_take_the_environment_or_their_default() {
    let file = "debezium.source.database.port=${DATABASE_PORT}\n";
    assert_eq!(
        resolved(file, &[("DATABASE_PORT", "6543")], PORT_KEY).unwrap(),
        Some("6543".into())
    );
    let file = "debezium.source.database.port=${DATABASE_PORT:5433}\n";
    assert_eq!(resolved(file, &[], PORT_KEY).unwrap(), Some("5433".into()));
    assert_eq!(
        resolved(file, &[("DATABASE_PORT", "6543")], PORT_KEY).unwrap(),
        Some("6543".into()),
        "the variable wins over the default"
    );
    // An empty variable counts as unset, as in SmallRye.
    assert_eq!(
        resolved(file, &[("DATABASE_PORT", "")], PORT_KEY).unwrap(),
        Some("5433".into())
    );
    // Text around and several placeholders in one value; a lone `$` stays.
    let file = "debezium.source.database.hostname=db-${ZONE}.${DOMAIN:example.org}$x\n";
    assert_eq!(
        resolved(file, &[("ZONE", "eu")], "debezium.source.database.hostname").unwrap(),
        Some("db-eu.example.org$x".into())
    );
}

#[test]
fn an_empty_default_is_a_value() {
    let file = "debezium.source.table.include.list=orders.outbox_event${SUFFIX:}\n";
    assert_eq!(
        resolved(file, &[], "debezium.source.table.include.list").unwrap(),
        Some("orders.outbox_event".into())
    );
    // A value that expands to nothing counts as unset: the relay's default applies.
    let file = "debezium.source.slot.name=${SLOT:}\n";
    assert_eq!(
        resolved(file, &[], "debezium.source.slot.name").unwrap(),
        None
    );
}

#[test]
fn defaults_and_names_nest() {
    let file = "debezium.source.database.hostname=${DATABASE_HOSTNAME:${FALLBACK_HOST:db}}\n";
    let key = "debezium.source.database.hostname";
    assert_eq!(resolved(file, &[], key).unwrap(), Some("db".into()));
    assert_eq!(
        resolved(file, &[("FALLBACK_HOST", "fallback")], key).unwrap(),
        Some("fallback".into())
    );
    assert_eq!(
        resolved(
            file,
            &[("DATABASE_HOSTNAME", "h"), ("FALLBACK_HOST", "f")],
            key
        )
        .unwrap(),
        Some("h".into())
    );
    // A composed name: the inner placeholder first.
    let file = "debezium.source.database.hostname=${HOST_${STAGE}}\n";
    assert_eq!(
        resolved(file, &[("STAGE", "PROD"), ("HOST_PROD", "prod-db")], key).unwrap(),
        Some("prod-db".into())
    );
    // The value of a variable is expanded in turn.
    let file = "debezium.source.database.hostname=${A}\n";
    assert_eq!(
        resolved(file, &[("A", "${B}.internal"), ("B", "db")], key).unwrap(),
        Some("db.internal".into())
    );
}

#[test]
fn placeholders_fall_back_to_keys_of_the_same_file() {
    let file = "db.host=db.example\n\
                debezium.source.database.hostname=${db.host}\n\
                debezium.source.database.port=${db.port:5432}\n";
    let key = "debezium.source.database.hostname";
    assert_eq!(resolved(file, &[], key).unwrap(), Some("db.example".into()));
    assert_eq!(resolved(file, &[], PORT_KEY).unwrap(), Some("5432".into()));
    // The environment comes first (higher ordinal), by its mapped name too.
    assert_eq!(
        resolved(file, &[("DB_HOST", "from-env")], key).unwrap(),
        Some("from-env".into())
    );
    assert_eq!(
        resolved(file, &[("db.host", "exact")], key).unwrap(),
        Some("exact".into())
    );
}

#[test]
fn an_escaped_dollar_is_literal() {
    // The original file's line, as written in the file: `\\${routedByValue}.events`.
    let file = "debezium.transforms=outbox\n\
                debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
                debezium.transforms.outbox.route.topic.replacement=\\\\${routedByValue}.events\n\
                debezium.source.database.hostname=a\\\\${HOST}b\n";
    let properties = DebeziumProperties::parse(file, &env_of(&[("HOST", "x")])).unwrap();
    assert_eq!(
        properties.outbox("route.topic.replacement").unwrap().1,
        "${routedByValue}.events"
    );
    assert_eq!(
        properties.get("debezium.source.database.hostname"),
        Some("a${HOST}b"),
        "escaped even when the variable is set"
    );
    // One backslash in the file is Java's escape of `$`: the placeholder is expanded.
    let file = "debezium.source.database.hostname=\\${HOST}\n";
    assert_eq!(
        resolved(file, &[("HOST", "x")], "debezium.source.database.hostname").unwrap(),
        Some("x".into())
    );
    // An unterminated placeholder stays as written.
    let file = "debezium.source.database.hostname=a${HOST\n";
    assert_eq!(
        resolved(file, &[("HOST", "x")], "debezium.source.database.hostname").unwrap(),
        Some("a${HOST".into())
    );
}

#[test]
fn a_missing_variable_names_the_variable_and_the_key() {
    let error = resolved(
        "debezium.source.database.port=${DATABASE_PORT}\n",
        &[],
        PORT_KEY,
    )
    .unwrap_err();
    assert_eq!(
        error,
        "debezium.source.database.port: ${DATABASE_PORT} is not set (no environment \
         variable DATABASE_PORT and no default)"
    );
    // A dotted name was also looked up by its mapped names and as a key.
    let error = resolved("debezium.source.database.port=${db.port}\n", &[], PORT_KEY).unwrap_err();
    assert_eq!(
        error,
        "debezium.source.database.port: ${db.port} is not set (no environment variable \
         db.port or db_port or DB_PORT, no key db.port in the file, and no default)"
    );
    // Through the whole configuration, and in a nested default.
    let properties = DebeziumProperties::parse(
        "debezium.sink.rabbitmq.connection.host=${RABBITMQ_HOSTNAME:${BROKER}}\n",
        &no_env,
    );
    let error = properties.unwrap_err().to_string();
    assert!(
        error.contains("debezium.sink.rabbitmq.connection.host"),
        "{error}"
    );
    assert!(error.contains("${BROKER} is not set"), "{error}");
}

#[test]
fn a_placeholder_loop_is_an_error_not_a_hang() {
    let error = resolved(
        "debezium.source.database.port=${debezium.source.database.port}\n",
        &[],
        PORT_KEY,
    )
    .unwrap_err();
    assert!(error.contains("placeholder loop"), "{error}");
    assert!(error.contains("debezium.source.database.port"), "{error}");
    let error = resolved(
        "a=${b}\nb=${a}\ndebezium.source.database.port=${a}\n",
        &[],
        PORT_KEY,
    )
    .unwrap_err();
    assert!(error.contains("placeholder loop"), "{error}");
    assert!(error.contains("a → b → a"), "{error}");
    // A loop through environment variables too.
    let error = resolved(
        "debezium.source.database.port=${X}\n",
        &[("X", "${Y}"), ("Y", "${X}")],
        PORT_KEY,
    )
    .unwrap_err();
    assert!(error.contains("placeholder loop"), "{error}");
    assert!(error.contains("environment variable Y"), "{error}");
    // A long chain stops at the depth bound.
    let mut file: String = (0..40).map(|i| format!("k{i}=${{k{}}}\n", i + 1)).collect();
    file.push_str("k40=5432\ndebezium.source.database.port=${k0}\n");
    let error = resolved(&file, &[], PORT_KEY).unwrap_err();
    assert!(error.contains("nest more than 32 levels"), "{error}");
}

#[test]
fn a_non_utf8_variable_is_an_error_naming_it() {
    let env = |name: &str| match name {
        "DATABASE_PORT" => Err(VarError::NotUnicode(std::ffi::OsString::from("x"))),
        _ => Err(VarError::NotPresent),
    };
    let error = DebeziumProperties::parse("debezium.source.database.port=${DATABASE_PORT}\n", &env)
        .unwrap_err()
        .to_string();
    assert!(error.contains("DATABASE_PORT"), "{error}");
    assert!(error.contains("not valid UTF-8"), "{error}");
}

#[test]
fn expand_json_payload_false_is_refused_and_unset_is_a_warning() {
    let router = "debezium.transforms=outbox\n\
                  debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n";
    let error = DebeziumProperties::parse(
        &format!("{router}debezium.transforms.outbox.table.expand.json.payload=false\n"),
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("debezium.transforms.outbox.table.expand.json.payload"),
        "{error}"
    );
    assert!(error.contains("false is not supported"), "{error}");
    let properties = DebeziumProperties::parse(router, &no_env).unwrap();
    let warning = properties
        .notes()
        .iter()
        .find(|n| n.setting == "debezium.transforms.outbox.table.expand.json.payload")
        .unwrap();
    assert!(warning.warning);
    assert!(warning.message.contains("always expands"), "{warning:?}");
}
