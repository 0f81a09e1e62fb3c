//! Structural checks of docker-compose.yml and the Dockerfile. No Docker engine runs where the tests
//! run, so these check what can be checked without one: the file parses, every build context and
//! Dockerfile exists, every environment variable a service sets is one its binary reads, ports agree,
//! the order database has logical replication on, ports are published on loopback only, and the relay
//! runs as the least-privilege role that the one-shot `relay-setup` provisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn compose() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    serde_norway::from_str(&text).expect("docker-compose.yml parses as YAML")
}

fn binary_env_vars(binary: &str) -> &'static [&'static str] {
    match binary {
        "order-service" => order_service::ENV_VARS.as_slice(),
        "shipment-service" => shipment_service::ENV_VARS.as_slice(),
        "outbox-relay" => outbox_relay::ENV_VARS.as_slice(),
        other => panic!("compose runs unknown binary {other}"),
    }
}

fn env_of(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let text = item.as_str().unwrap();
                let (k, v) = text.split_once('=').unwrap_or((text, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("environment must be a map or a list, got {other}"),
    }
}

fn container_ports(service: &Value) -> BTreeSet<String> {
    service["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| {
            port.as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn every_service_of_the_system_is_there() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    for name in [
        "order-db",
        "shipment-db",
        "rabbitmq",
        "order-service",
        "shipment-service",
        "outbox-relay",
    ] {
        assert!(
            services.contains_key(name),
            "docker-compose.yml lacks service {name}"
        );
        assert!(
            services[name]["healthcheck"].is_object(),
            "{name} has no healthcheck"
        );
    }
    let rabbitmq_image = services["rabbitmq"]["image"].as_str().unwrap();
    assert!(
        rabbitmq_image.contains("management"),
        "RabbitMQ should come with its management UI"
    );
    assert!(container_ports(&services["rabbitmq"]).contains("15672"));
}

#[test]
fn order_database_runs_with_logical_replication() {
    let compose = compose();
    let command = compose["services"]["order-db"]["command"].to_string();
    assert!(
        command.contains("wal_level=logical"),
        "order-db command: {command}"
    );
}

#[test]
fn build_contexts_and_dockerfiles_exist_and_build_the_binaries() {
    let compose = compose();
    let root = repo_root();
    for (name, service) in compose["services"].as_object().unwrap() {
        let Some(build) = service.get("build") else {
            continue;
        };
        let (context, dockerfile) = match build {
            Value::String(context) => (context.clone(), "Dockerfile".to_owned()),
            Value::Object(map) => (
                map["context"].as_str().unwrap().to_owned(),
                map.get("dockerfile")
                    .and_then(Value::as_str)
                    .unwrap_or("Dockerfile")
                    .to_owned(),
            ),
            other => panic!("{name}: unexpected build {other}"),
        };
        let context = root.join(context);
        assert!(
            context.is_dir(),
            "{name}: build context {} missing",
            context.display()
        );
        let dockerfile_path = context.join(&dockerfile);
        let dockerfile_text = std::fs::read_to_string(&dockerfile_path)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", dockerfile_path.display()));
        let binary = service["command"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no command"));
        assert!(
            dockerfile_text.contains(&format!("target/release/{binary}")),
            "{name}: the Dockerfile does not build {binary}"
        );
        assert!(
            root.join("crates")
                .join(binary)
                .join("Cargo.toml")
                .is_file(),
            "{name}: no crate {binary}"
        );
    }
}

#[test]
fn every_variable_a_service_sets_is_read_by_its_binary() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    for (name, service) in services {
        if service.get("build").is_none() {
            continue;
        }
        let binary = service["command"][0].as_str().unwrap();
        let known = binary_env_vars(binary);
        for (variable, _) in env_of(service) {
            assert!(
                known.contains(&variable.as_str()),
                "{name} sets {variable}, which {binary} does not read"
            );
        }
    }
}

#[test]
fn ports_hosts_and_dependencies_agree() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    for (name, service) in services {
        for dependency in service["depends_on"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
        {
            assert!(
                services.contains_key(dependency),
                "{name} depends on unknown {dependency}"
            );
        }
        if service.get("build").is_none() {
            continue;
        }
        let env: std::collections::BTreeMap<_, _> = env_of(service).into_iter().collect();
        for host_variable in ["DB_HOST", "RABBITMQ_HOST"] {
            if let Some(host) = env.get(host_variable) {
                assert!(
                    services.contains_key(host),
                    "{name}: {host_variable}={host} is no service"
                );
                let depends = service["depends_on"]
                    .as_object()
                    .map(|m| m.contains_key(host))
                    .unwrap_or(false);
                assert!(depends, "{name} uses {host} but does not depend on it");
            }
        }
        let listen_port = env
            .get("SERVER_PORT")
            .or_else(|| env.get("RELAY_HTTP_PORT"))
            .unwrap_or_else(|| panic!("{name} sets no SERVER_PORT/RELAY_HTTP_PORT"));
        assert!(
            container_ports(service).contains(listen_port),
            "{name}: port {listen_port} not published"
        );
        let health = service["healthcheck"]["test"].to_string();
        assert!(
            health.contains(&format!(":{listen_port}/health")),
            "{name}: healthcheck {health} misses port {listen_port}"
        );
        let bind = env
            .get("SERVER_HOST")
            .or_else(|| env.get("RELAY_HTTP_HOST"));
        assert_eq!(
            bind.map(String::as_str),
            Some("0.0.0.0"),
            "{name} must listen on all interfaces in a container"
        );
    }
}

#[test]
fn ports_are_published_on_loopback_only() {
    let compose = compose();
    for (name, service) in compose["services"].as_object().unwrap() {
        for port in service["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} on every interface of the host; use 127.0.0.1:{port}"
            );
        }
    }
}

#[test]
fn the_relay_runs_as_the_least_privilege_role_that_relay_setup_provisions() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let setup = services
        .get("relay-setup")
        .expect("docker-compose.yml has the one-shot relay-setup service");
    let relay = &services["outbox-relay"];
    let setup_env: std::collections::BTreeMap<_, _> = env_of(setup).into_iter().collect();
    let relay_env: std::collections::BTreeMap<_, _> = env_of(relay).into_iter().collect();

    // relay-setup runs the repository's provisioning script, mounted from ./scripts.
    assert_eq!(
        setup["command"].to_string(),
        r#"["bash","/scripts/provision-relay-role.sh"]"#
    );
    assert!(
        setup["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|volume| volume
                .as_str()
                .is_some_and(|v| v.starts_with("./scripts:/scripts"))),
        "relay-setup mounts ./scripts at /scripts"
    );
    let script = repo_root().join("scripts/provision-relay-role.sh");
    let script_text = std::fs::read_to_string(&script).unwrap();
    assert!(script_text.contains("sql/relay-role.sql"));
    assert!(repo_root().join("scripts/sql/relay-role.sql").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is executable", script.display());
    }

    // It provisions the database the relay streams from, after order-service created the tables.
    assert_eq!(setup_env.get("DB_HOST"), relay_env.get("DB_HOST"));
    assert_eq!(setup_env.get("DB_NAME"), relay_env.get("DB_NAME"));
    assert_eq!(
        setup["depends_on"]["order-service"]["condition"], "service_healthy",
        "the outbox table exists once order-service is healthy"
    );
    // The relay connects as that role, not as the superuser, once the setup succeeded.
    assert_eq!(relay_env.get("DB_USER"), setup_env.get("RELAY_DB_USER"));
    assert_eq!(
        relay_env.get("DB_PASSWORD"),
        setup_env.get("RELAY_DB_PASSWORD")
    );
    assert_ne!(
        relay_env.get("DB_USER").map(String::as_str),
        Some("postgres")
    );
    assert_eq!(
        relay["depends_on"]["relay-setup"]["condition"],
        "service_completed_successfully"
    );

    // The script's publication is the one the relay uses (neither sets RELAY_PUBLICATION here).
    assert!(!relay_env.contains_key("RELAY_PUBLICATION"));
    let relay_default = outbox_relay::Config::from_cli(outbox_relay::config::Cli::default())
        .unwrap()
        .publication;
    assert!(
        script_text.contains(&format!("RELAY_PUBLICATION:-{relay_default}}}")),
        "the script's default publication is the relay's default, {relay_default}"
    );
}

/// The README's configuration section of each binary names every variable the binary reads (the
/// lists are derived from the readers, so a new variable shows up here until it is documented).
#[test]
fn every_variable_a_binary_reads_is_in_its_readme_section() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let configuration = readme
        .split("\n## Configuration")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Configuration section");
    for binary in ["order-service", "shipment-service", "outbox-relay"] {
        let section = configuration
            .split(&format!("\n### {binary} "))
            .nth(1)
            .and_then(|rest| rest.split("\n### ").next())
            .unwrap_or_else(|| panic!("README documents {binary}'s configuration"));
        let vars = binary_env_vars(binary);
        assert!(vars.len() >= 10, "{binary} reads {vars:?}");
        for name in vars {
            assert!(
                section.contains(&format!("`{name}`")),
                "{binary} reads {name}, which its README section does not document"
            );
        }
    }
}
