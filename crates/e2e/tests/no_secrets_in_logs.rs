//! No password, nor a connection string with one, appears in any log line or error of the three
//! binaries. Each runs with distinctive passwords (a PostgreSQL role for the services, the relay's
//! least-privilege role, a RabbitMQ user) at `RUST_LOG=debug`, through the normal flow (an order
//! becomes a shipment) and through the error paths: a wrong database password, an unreachable
//! broker, and malformed `DATABASE_URL` / `AMQP_URL` values. Every captured output line, and the
//! `/health` and `/metrics` bodies, is searched for each password; each error output must also say
//! what failed (the variable, the user or the address), so the test fails for the right reasons.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use sqlx::{Connection, PgConnection};
use test_support::process::{ServiceCommand, ServiceProcess, free_port};
use test_support::{EVENTUALLY, ManagementApi, TestDatabase, TestVhost, unique_suffix, wait_until};

/// The relay's provisioning, as `scripts/provision-relay-role.sh` runs it.
const PROVISIONING_SQL: &str = include_str!("../../../scripts/sql/relay-role.sql");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Something the test read from a binary: a log file or an HTTP body.
struct Captured {
    what: String,
    text: String,
}

/// How long a binary may take to exit after SIGTERM (its shutdown logs count too).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Workspace binary `name` with exactly `env` (nothing inherited) at `RUST_LOG=debug`, its
/// stdout and stderr in `log`.
fn debug_command(name: &str, env: &[(&str, String)], log: PathBuf) -> Result<ServiceCommand> {
    Ok(ServiceCommand::workspace(name)?
        .env_clear()
        .envs(env.iter().cloned())
        .env("RUST_LOG", "debug")
        .log_file(log))
}

/// SIGTERM, then everything the process wrote.
async fn terminate(mut process: ServiceProcess) -> String {
    let _ = process.terminate(SHUTDOWN_GRACE).await;
    process.output()
}

/// The servers' resources for one run, with a distinctive password for each credential.
struct World {
    orders_db: TestDatabase,
    shipments_db: TestDatabase,
    vhost: TestVhost,
    pg_host: String,
    pg_port: u16,
    app_role: String,
    app_password: String,
    relay_role: String,
    relay_password: String,
    amqp_user: String,
    amqp_password: String,
    /// Given where a password is wrong; must not leak either.
    wrong_password: String,
    publication: String,
    log_dir: PathBuf,
}

impl World {
    async fn create() -> Result<Self> {
        let orders_db = TestDatabase::create("nosecret_orders").await?;
        let shipments_db = TestDatabase::create("nosecret_shipments").await?;
        let vhost = TestVhost::create("nosecret").await?;
        let suffix = unique_suffix();
        let log_dir = std::env::temp_dir().join(format!("outbox-nosecret-{suffix}"));
        std::fs::create_dir_all(&log_dir)?;
        let world = Self {
            pg_host: orders_db.options.get_host().to_owned(),
            pg_port: orders_db.options.get_port(),
            orders_db,
            shipments_db,
            vhost,
            app_role: format!("t_app_{suffix}"),
            app_password: format!("S3cret-app-{}", unique_suffix()),
            relay_role: format!("t_relay_{suffix}"),
            relay_password: format!("S3cret-relay-{}", unique_suffix()),
            amqp_user: format!("t_user_{suffix}"),
            amqp_password: format!("S3cret-amqp-{}", unique_suffix()),
            wrong_password: format!("S3cret-wrong-{}", unique_suffix()),
            publication: format!("pub_{suffix}"),
            log_dir,
        };
        // The services' role owns their databases (so their migrations may create schemas).
        let pool = &world.orders_db.pool;
        sqlx::query(&format!(
            "CREATE ROLE \"{}\" LOGIN PASSWORD '{}'",
            world.app_role, world.app_password
        ))
        .execute(pool)
        .await?;
        for db in [&world.orders_db, &world.shipments_db] {
            sqlx::query(&format!(
                "ALTER DATABASE \"{}\" OWNER TO \"{}\"",
                db.name, world.app_role
            ))
            .execute(pool)
            .await?;
        }
        let api = ManagementApi::from_env()?;
        api.put(
            &format!("/api/users/{}", world.amqp_user),
            Some(serde_json::json!({"password": world.amqp_password, "tags": ""})),
        )
        .await?;
        api.put(
            &format!("/api/permissions/{}/{}", world.vhost.name, world.amqp_user),
            Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await?;
        Ok(world)
    }

    /// Every secret the binaries were given.
    fn secrets(&self) -> [&str; 4] {
        [
            &self.app_password,
            &self.relay_password,
            &self.amqp_password,
            &self.wrong_password,
        ]
    }

    fn log(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    fn pg_url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@{}:{}/{database}",
            self.pg_host, self.pg_port
        )
    }

    fn amqp_url(&self, password: &str, port: u16) -> String {
        format!(
            "amqp://{}:{password}@127.0.0.1:{port}/{}",
            self.amqp_user, self.vhost.name
        )
    }

    /// The relay's role and publication, created as the admin like the provisioning script.
    async fn provision_relay(&self) -> Result<()> {
        let mut admin = PgConnection::connect_with(&self.orders_db.options).await?;
        sqlx::query(
            "SELECT set_config('outbox_relay.role', $1, false), \
                    set_config('outbox_relay.password', $2, false), \
                    set_config('outbox_relay.publication', $3, false), \
                    set_config('outbox_relay.tables', 'orders.outbox_event', false)",
        )
        .bind(&self.relay_role)
        .bind(&self.relay_password)
        .bind(&self.publication)
        .execute(&mut admin)
        .await?;
        sqlx::raw_sql(PROVISIONING_SQL).execute(&mut admin).await?;
        admin.close().await?;
        Ok(())
    }

    fn order_env(&self, password: &str, port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("DB_HOST", self.pg_host.clone()),
            ("DB_PORT", self.pg_port.to_string()),
            ("DB_USER", self.app_role.clone()),
            ("DB_PASSWORD", password.to_owned()),
            ("DB_NAME", self.orders_db.name.clone()),
            ("DB_DEBUG", "true".into()),
            ("SERVER_PORT", port.to_string()),
        ]
    }

    fn shipment_env(
        &self,
        database_url: String,
        amqp_url: String,
        port: u16,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", database_url),
            ("AMQP_URL", amqp_url),
            ("DB_DEBUG", "true".into()),
            ("SERVER_PORT", port.to_string()),
        ]
    }

    fn relay_env(
        &self,
        db_password: &str,
        amqp_port: u16,
        port: u16,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("DB_HOST", self.pg_host.clone()),
            ("DB_PORT", self.pg_port.to_string()),
            ("DB_USER", self.relay_role.clone()),
            ("DB_PASSWORD", db_password.to_owned()),
            ("DB_NAME", self.orders_db.name.clone()),
            ("RABBITMQ_HOST", "127.0.0.1".into()),
            ("RABBITMQ_PORT", amqp_port.to_string()),
            ("RABBITMQ_USER", self.amqp_user.clone()),
            ("RABBITMQ_PASSWORD", self.amqp_password.clone()),
            ("RABBITMQ_VHOST", self.vhost.name.clone()),
            ("RELAY_SLOT", format!("slot_{}", unique_suffix())),
            ("RELAY_PUBLICATION", self.publication.clone()),
            ("RELAY_HTTP_PORT", port.to_string()),
            ("RELAY_CONNECT_TIMEOUT_SECS", "2".into()),
        ]
    }

    async fn remove(self) -> Result<()> {
        self.orders_db.drop_database().await?;
        self.shipments_db.drop_database().await?;
        let mut admin = PgConnection::connect(&test_support::pg_admin_url()).await?;
        for role in [&self.relay_role, &self.app_role] {
            sqlx::query(&format!("DROP ROLE IF EXISTS \"{role}\""))
                .execute(&mut admin)
                .await?;
        }
        admin.close().await?;
        ManagementApi::from_env()?
            .delete(&format!("/api/users/{}", self.amqp_user))
            .await?;
        self.vhost.delete().await?;
        let _ = std::fs::remove_dir_all(&self.log_dir);
        Ok(())
    }
}

/// The test broker's AMQP port (`TEST_AMQP_URL`, default 5672).
fn amqp_port() -> u16 {
    reqwest::Url::parse(&test_support::amqp_base_url())
        .ok()
        .and_then(|url| url.port())
        .unwrap_or(5672)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_any_log_line_error_or_http_body() -> Result<()> {
    test_support::init_tracing();
    let world = World::create().await?;
    let outcome = run(&world).await;
    world.remove().await?;
    outcome
}

async fn run(world: &World) -> Result<()> {
    let mut captured = normal_flow(world).await?;
    captured.extend(error_paths(world).await?);

    let mut leaks = Vec::new();
    for item in &captured {
        for (number, line) in item.text.lines().enumerate() {
            for secret in world.secrets() {
                if line.contains(secret) || line.contains(&format!(":{secret}@")) {
                    leaks.push(format!("{} line {}: {line}", item.what, number + 1));
                }
            }
        }
    }
    ensure!(
        leaks.is_empty(),
        "{} line(s) show a password:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    Ok(())
}

/// An order flows to a shipment; returns every service's log and HTTP bodies.
async fn normal_flow(world: &World) -> Result<Vec<Captured>> {
    let (order_port, shipment_port, relay_port) = (free_port(), free_port(), free_port());
    let shipment = debug_command(
        "shipment-service",
        &world.shipment_env(
            world.pg_url(
                &world.app_role,
                &world.app_password,
                &world.shipments_db.name,
            ),
            world.amqp_url(&world.amqp_password, amqp_port()),
            shipment_port,
        ),
        world.log("normal-shipment-service"),
    )?
    .http_port(shipment_port)
    .start(EVENTUALLY)
    .await?;
    let order = debug_command(
        "order-service",
        &world.order_env(&world.app_password, order_port),
        world.log("normal-order-service"),
    )?
    .http_port(order_port)
    .start(EVENTUALLY)
    .await?;
    world.provision_relay().await?;
    let relay = debug_command(
        "outbox-relay",
        &world.relay_env(&world.relay_password, amqp_port(), relay_port),
        world.log("normal-outbox-relay"),
    )?
    .http_port(relay_port)
    .start(EVENTUALLY)
    .await?;

    let sample =
        std::fs::read_to_string(repo_root().join("resources/data/create-order-request.json"))?;
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{order_port}/orders"))
        .header("content-type", "application/json")
        .body(sample)
        .send()
        .await?;
    ensure!(
        response.status() == reqwest::StatusCode::CREATED,
        "POST /orders: {}",
        response.status()
    );
    let order_id = response.json::<serde_json::Value>().await?["id"]
        .as_str()
        .context("order id")?
        .to_owned();
    let pool = &world.shipments_db.pool;
    wait_until("the order's shipment", EVENTUALLY, || async {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM shipments.shipment WHERE order_id::text = $1")
                .bind(&order_id)
                .fetch_one(pool)
                .await
                .unwrap_or(0);
        (count == 1).then_some(())
    })
    .await?;

    let mut captured = Vec::new();
    for (name, port) in [
        ("order-service", order_port),
        ("shipment-service", shipment_port),
        ("outbox-relay", relay_port),
    ] {
        for path in ["/health", "/metrics"] {
            let text = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
                .await?
                .text()
                .await?;
            ensure!(!text.is_empty(), "{name} {path} is empty");
            captured.push(Captured {
                what: format!("{name} {path}"),
                text,
            });
        }
    }
    let relay_log = terminate(relay).await;
    let order_log = terminate(order).await;
    let shipment_log = terminate(shipment).await;
    // The logs are worth searching: debug lines, and the relay names its role and database.
    for (name, log) in [
        ("outbox-relay", &relay_log),
        ("order-service", &order_log),
        ("shipment-service", &shipment_log),
    ] {
        ensure!(log.contains("DEBUG"), "{name} logged no debug line:\n{log}");
    }
    ensure!(
        // service-kit prints its settings as `host:port/database as user <role>`.
        relay_log.contains(&format!("as user {}", world.relay_role)),
        "the relay's log names its role:\n{relay_log}"
    );
    for (name, text) in [
        ("outbox-relay (normal run)", relay_log),
        ("order-service (normal run)", order_log),
        ("shipment-service (normal run)", shipment_log),
    ] {
        captured.push(Captured {
            what: name.to_owned(),
            text,
        });
    }
    Ok(captured)
}

/// One failing start: the binary, its settings, and what its output must mention (one of).
struct FailingStart {
    what: String,
    binary: &'static str,
    env: Vec<(&'static str, String)>,
    mentions: Vec<String>,
    /// Fails by itself (else it retries and is stopped once its output mentions the problem).
    exits: bool,
}

/// Malformed connection strings, each carrying `password`.
fn malformed_urls(scheme: &str, user: &str, password: &str, rest: &str) -> Vec<String> {
    vec![
        format!("{scheme}://{user}:{password}@127.0.0.1:notaport/{rest}"),
        format!("{scheme}//{user}:{password}@127.0.0.1/{rest}"),
        format!("http://{user}:{password}@127.0.0.1/{rest}"),
        format!("{scheme}://{user}:{password}%zz@127.0.0.1/{rest}"),
        format!("{scheme}://{user}:{password}@127.0.0.1:99999/{rest}"),
        format!("{scheme}://{user}:{password}@[::1/{rest}"),
    ]
}

async fn error_paths(world: &World) -> Result<Vec<Captured>> {
    let closed_port = free_port();
    let good_amqp = world.amqp_url(&world.amqp_password, amqp_port());
    let good_shipments_url = world.pg_url(
        &world.app_role,
        &world.app_password,
        &world.shipments_db.name,
    );
    let mut cases = vec![
        FailingStart {
            what: "order-service, wrong DB_PASSWORD".into(),
            binary: "order-service",
            env: world.order_env(&world.wrong_password, free_port()),
            mentions: vec![world.app_role.clone()],
            exits: true,
        },
        FailingStart {
            what: "shipment-service, wrong password in DATABASE_URL".into(),
            binary: "shipment-service",
            env: world.shipment_env(
                world.pg_url(
                    &world.app_role,
                    &world.wrong_password,
                    &world.shipments_db.name,
                ),
                good_amqp.clone(),
                free_port(),
            ),
            mentions: vec![world.app_role.clone()],
            exits: true,
        },
        FailingStart {
            what: "outbox-relay, wrong DB_PASSWORD".into(),
            binary: "outbox-relay",
            env: world.relay_env(&world.wrong_password, amqp_port(), free_port()),
            mentions: vec![world.relay_role.clone()],
            exits: true,
        },
        FailingStart {
            what: "outbox-relay, broker unreachable".into(),
            binary: "outbox-relay",
            env: world.relay_env(&world.relay_password, closed_port, free_port()),
            mentions: vec![format!("127.0.0.1:{closed_port}")],
            exits: true,
        },
        FailingStart {
            what: "shipment-service, broker unreachable".into(),
            binary: "shipment-service",
            env: world.shipment_env(
                good_shipments_url.clone(),
                world.amqp_url(&world.amqp_password, closed_port),
                free_port(),
            ),
            mentions: vec![format!("127.0.0.1:{closed_port}")],
            exits: false,
        },
    ];
    for url in malformed_urls(
        "postgres",
        &world.app_role,
        &world.app_password,
        &world.orders_db.name,
    ) {
        for binary in ["order-service", "shipment-service", "outbox-relay"] {
            let mut env = match binary {
                "order-service" => world.order_env(&world.app_password, free_port()),
                "shipment-service" => {
                    world.shipment_env(url.clone(), good_amqp.clone(), free_port())
                }
                _ => world.relay_env(&world.relay_password, amqp_port(), free_port()),
            };
            env.retain(|(name, _)| *name != "DATABASE_URL");
            env.push(("DATABASE_URL", url.clone()));
            cases.push(FailingStart {
                what: format!("{binary}, DATABASE_URL {url}"),
                binary,
                env,
                // A malformed value is named; one the parser let through fails to connect,
                // naming the user.
                mentions: vec!["DATABASE_URL".into(), world.app_role.clone()],
                exits: true,
            });
        }
    }
    for url in malformed_urls(
        "amqp",
        &world.amqp_user,
        &world.amqp_password,
        &world.vhost.name,
    ) {
        for binary in ["shipment-service", "outbox-relay"] {
            let mut env = if binary == "shipment-service" {
                world.shipment_env(good_shipments_url.clone(), url.clone(), free_port())
            } else {
                world.relay_env(&world.relay_password, amqp_port(), free_port())
            };
            env.retain(|(name, _)| *name != "AMQP_URL");
            env.push(("AMQP_URL", url.clone()));
            cases.push(FailingStart {
                what: format!("{binary}, AMQP_URL {url}"),
                binary,
                env,
                mentions: vec!["AMQP_URL".into(), world.amqp_user.clone()],
                exits: true,
            });
        }
    }

    let mut running = tokio::task::JoinSet::new();
    for (index, case) in cases.into_iter().enumerate() {
        let log = world.log(&format!("error-{index}"));
        running.spawn(async move {
            let mut process = debug_command(case.binary, &case.env, log)?.spawn()?;
            let output = if case.exits {
                let status = process.exit_within(EVENTUALLY).await?;
                let output = process.output();
                match status {
                    Some(status) if !status.success() => {}
                    other => bail!(
                        "{}: expected a failed start, got {other:?}:\n{output}",
                        case.what
                    ),
                }
                output
            } else {
                let _ = wait_until("the retry warning", EVENTUALLY, || async {
                    let output = process.output();
                    case.mentions
                        .iter()
                        .any(|m| output.contains(m))
                        .then_some(())
                })
                .await;
                terminate(process).await
            };
            ensure!(
                case.mentions.iter().any(|m| output.contains(m)),
                "{}: the output should mention one of {:?}:\n{output}",
                case.what,
                case.mentions
            );
            Ok(Captured {
                what: case.what,
                text: output,
            })
        });
    }
    let mut captured = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = running.join_next().await {
        match joined? {
            Ok(item) => captured.push(item),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    ensure!(
        failures.is_empty(),
        "{} error path(s) misbehaved:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    Ok(captured)
}
