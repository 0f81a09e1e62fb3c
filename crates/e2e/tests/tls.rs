//! TLS everywhere, against real servers with TLS on: a private PostgreSQL (ssl=on) and a private
//! RabbitMQ node with an amqps listener, started by `scripts/infra.sh` with certificates this
//! test makes (a local CA, a server certificate for `localhost` and `127.0.0.1`, and a second,
//! unrelated CA for the negative cases), with the `openssl` command.
//!
//! 1. The three binaries with `sslmode=verify-full&sslrootcert=<ca>` and `amqps://` with
//!    `cacertfile=<ca>`: an order created over HTTP reaches shipment-service. That needs the
//!    relay's SQL and replication connections, its AMQP publisher and both services over TLS.
//! 2. The servers say the connections are TLS: `pg_stat_ssl` for every client backend and the
//!    relay's walsender, the management API's `ssl` for every AMQP connection.
//! 3. Wrong settings fail at start, with a message naming the setting: verify-full with the
//!    unrelated CA (relay, order-service), an unreadable `cacertfile` (shipment-service), and
//!    `sslmode=require` against a server without TLS (the shared one, when it has none).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::{
    Environment, create_order, log_dir, repo_file, start_binary, stop_all, wait_for_shipment_lines,
};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use test_support::process::{ServiceCommand, ServiceProcess, free_port};
use test_support::{unique_suffix, wait_until};

/// Generous: the servers share two cores with other builds.
const EVENTUALLY: Duration = Duration::from_secs(60);
const SLOT: &str = "tls_relay";

/// The private servers and the certificates of one run; stopped (and the folder removed) on
/// drop, also when the test fails half-way.
#[derive(Debug)]
struct TlsInfra {
    dir: PathBuf,
    pg_port: u16,
    amqp_port: u16,
    amqps_port: u16,
    management_port: u16,
}

impl TlsInfra {
    async fn start() -> Result<Self> {
        remove_abandoned_runs();
        // Under /var/tmp: the PostgreSQL server runs as `postgres` and must reach the folder.
        let dir = Path::new(RUNS_BASE).join(format!("{RUN_PREFIX}{}", unique_suffix()));
        std::fs::create_dir_all(dir.join("certs"))?;
        set_mode(&dir, 0o755)?;
        set_mode(&dir.join("certs"), 0o755)?;
        let infra = Self {
            pg_port: free_port(),
            amqp_port: free_rabbitmq_port()?,
            amqps_port: free_port(),
            management_port: free_port(),
            dir,
        };
        // What a later run needs to stop these servers if this process dies without its drop
        // (the servers run in sessions of their own and outlive it).
        std::fs::write(
            infra.dir.join("owner"),
            format!(
                "{} {} {} {}",
                std::process::id(),
                infra.pg_port,
                infra.amqp_port,
                infra.management_port
            ),
        )?;
        make_certificates(&infra.certs()).await?;
        infra.script("pg-up").await?;
        infra.script("rabbitmq-up").await?;
        let port = infra.amqps_port;
        wait_until("the amqps listener", EVENTUALLY, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await?;
        Ok(infra)
    }

    fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    fn ca(&self) -> String {
        self.certs().join("ca.crt").display().to_string()
    }

    fn other_ca(&self) -> String {
        self.certs().join("other-ca.crt").display().to_string()
    }

    /// The private server's URL for `database` with `sslmode` and `sslrootcert`.
    fn pg_url(&self, database: &str, sslmode: &str, root: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/{database}?sslmode={sslmode}&sslrootcert={root}",
            self.pg_port
        )
    }

    /// By name (`localhost`): the certificate's DNS name is what is verified.
    fn amqps_url(&self, cacertfile: &str) -> String {
        format!(
            "amqps://guest:guest@localhost:{}/%2f?cacertfile={cacertfile}",
            self.amqps_port
        )
    }

    fn env(&self, command: &mut tokio::process::Command) {
        command
            .env("OUTBOX_LOCAL_DIR", &self.dir)
            .env("PG_PORT", self.pg_port.to_string())
            .env("RABBITMQ_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_MANAGEMENT_PORT", self.management_port.to_string())
            .env("PG_TLS_DIR", self.certs())
            .env("RABBITMQ_TLS_DIR", self.certs())
            .env("RABBITMQ_TLS_PORT", self.amqps_port.to_string());
    }

    async fn script(&self, argument: &str) -> Result<()> {
        let mut command = tokio::process::Command::new("bash");
        command
            .arg(e2e::repo_root().join("scripts/infra.sh"))
            .arg(argument)
            .stdin(Stdio::null());
        self.env(&mut command);
        let output = command.output().await?;
        ensure!(
            output.status.success(),
            "infra.sh {argument} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

impl Drop for TlsInfra {
    fn drop(&mut self) {
        stop_servers(
            &self.dir,
            self.pg_port,
            self.amqp_port,
            self.management_port,
        );
    }
}

const RUNS_BASE: &str = "/var/tmp";
const RUN_PREFIX: &str = "outbox-tls-";

/// `infra.sh down` for a run's folder (blocking: also from `drop`), then removes the folder.
fn stop_servers(dir: &Path, pg_port: u16, amqp_port: u16, management_port: u16) {
    let _ = std::process::Command::new("bash")
        .arg(e2e::repo_root().join("scripts/infra.sh"))
        .arg("down")
        .env("OUTBOX_LOCAL_DIR", dir)
        .env("PG_PORT", pg_port.to_string())
        .env("RABBITMQ_PORT", amqp_port.to_string())
        .env("RABBITMQ_MANAGEMENT_PORT", management_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(dir);
}

/// Stops the servers of runs whose test process is gone (killed, or interrupted with Ctrl-C).
fn remove_abandoned_runs() {
    let Ok(entries) = std::fs::read_dir(RUNS_BASE) else {
        return;
    };
    for entry in entries.flatten() {
        let is_run = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(RUN_PREFIX));
        if !is_run {
            continue;
        }
        let dir = entry.path();
        let owner: Vec<u32> = std::fs::read_to_string(dir.join("owner"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|field| field.parse().ok())
            .collect();
        let [pid, pg, amqp, management] = owner[..] else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let port = |value: u32| u16::try_from(value).unwrap_or_default();
        eprintln!(
            "[tls] stopping the servers of an abandoned run in {}",
            dir.display()
        );
        stop_servers(&dir, port(pg), port(amqp), port(management));
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// An AMQP port whose management (+ 10000) and Erlang distribution (+ 20000) ports are free
/// too, as infra.sh derives them.
fn free_rabbitmq_port() -> Result<u16> {
    for _ in 0..200 {
        let port = free_port();
        if !(20_000..40_000).contains(&port) {
            continue;
        }
        let distribution = std::net::TcpListener::bind(("0.0.0.0", port + 20_000));
        let management = std::net::TcpListener::bind(("127.0.0.1", port + 10_000));
        if distribution.is_ok() && management.is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port for RabbitMQ with its distribution port found")
}

async fn openssl(dir: &Path, arguments: &[&str]) -> Result<()> {
    let output = tokio::process::Command::new("openssl")
        .args(arguments)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running openssl")?;
    ensure!(
        output.status.success(),
        "openssl {}: {}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// `ca.crt`, `server.crt`/`server.key` (signed by it, for `localhost` and `127.0.0.1`) and
/// `other-ca.crt`, a CA that signed nothing here. EC P-256 keys: quick to make.
async fn make_certificates(dir: &Path) -> Result<()> {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, subject) in [
        ("ca", "/CN=outbox test CA"),
        ("other-ca", "/CN=unrelated CA"),
    ] {
        let (key_file, cert_file) = (format!("{name}.key"), format!("{name}.crt"));
        let mut arguments = vec!["req", "-x509"];
        arguments.extend(key);
        arguments.extend([
            "-keyout",
            &key_file,
            "-out",
            &cert_file,
            "-days",
            "2",
            "-subj",
            subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &arguments).await?;
    }
    let mut request = vec!["req"];
    request.extend(key);
    request.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &request).await?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    )
    .await?;
    // RabbitMQ (run by this user) reads them where they are; infra.sh copies PostgreSQL's.
    for file in ["ca.crt", "other-ca.crt", "server.crt", "server.key"] {
        set_mode(&dir.join(file), 0o644)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_is_tls_and_wrong_settings_fail_at_start() -> Result<()> {
    test_support::init_tracing();
    let started = Instant::now();
    let infra = TlsInfra::start().await?;
    eprintln!("[tls] servers up after {:?}", started.elapsed());
    let logs = log_dir()?;
    let result = run(&infra, &logs).await;
    // The slot goes with the server, but is dropped explicitly all the same.
    if let Ok(mut admin) = admin(&infra, "orderdb").await {
        let _ = sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND NOT active",
        )
        .bind(SLOT)
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
    }
    drop(infra);
    eprintln!("[tls] done after {:?}", started.elapsed());
    result
}

/// A verified TLS session as the superuser, as the services connect.
async fn admin(infra: &TlsInfra, database: &str) -> Result<PgConnection> {
    let url = infra.pg_url(database, "verify-full", &infra.ca());
    Ok(PgConnection::connect(&url).await?)
}

async fn run(infra: &TlsInfra, logs: &Path) -> Result<()> {
    negative_cases(infra, logs).await?;

    let ca = infra.ca();
    let (order_port, shipment_port, relay_port) = (free_port(), free_port(), free_port());
    let orders_url = infra.pg_url("orderdb", "verify-full", &ca);
    let shipments_url = infra.pg_url("shipmentdb", "verify-full", &ca);
    let amqps = infra.amqps_url(&ca);
    let mut services: Vec<ServiceProcess> = Vec::new();
    let result = async {
        services.push(
            start_binary(
                "shipment-service",
                shipment_port,
                [
                    ("DATABASE_URL", shipments_url.clone()),
                    ("AMQP_URL", amqps.clone()),
                    ("SERVER_PORT", shipment_port.to_string()),
                ],
                Environment::Inherited,
                logs,
            )
            .await?,
        );
        services.push(
            start_binary(
                "order-service",
                order_port,
                [
                    ("DATABASE_URL", orders_url.clone()),
                    ("SERVER_PORT", order_port.to_string()),
                ],
                Environment::Inherited,
                logs,
            )
            .await?,
        );
        services.push(
            start_binary(
                "outbox-relay",
                relay_port,
                [
                    ("DATABASE_URL", orders_url.clone()),
                    ("AMQP_URL", amqps.clone()),
                    ("RELAY_SLOT", SLOT.to_owned()),
                    ("RELAY_PUBLICATION", "tls_publication".to_owned()),
                    ("RELAY_HTTP_PORT", relay_port.to_string()),
                ],
                Environment::Inherited,
                logs,
            )
            .await?,
        );
        flows_over_tls(infra, order_port).await?;
        // Now that the database, publication and slot exist, the relay gets as far as the
        // broker: an amqps certificate from the unrelated CA stops it there.
        fails_at_start(
            "outbox-relay",
            vec![
                ("DATABASE_URL", orders_url.clone()),
                ("AMQP_URL", infra.amqps_url(&infra.other_ca())),
                ("RELAY_SLOT", SLOT.to_owned()),
                ("RELAY_PUBLICATION", "tls_publication".to_owned()),
            ],
            logs,
            &[
                "TLS handshake with the broker failed",
                "UnknownIssuer",
                "cacertfile",
            ],
        )
        .await?;
        fails_at_start(
            "shipment-service",
            vec![
                ("DATABASE_URL", shipments_url.clone()),
                ("AMQP_URL", infra.amqps_url(&infra.other_ca())),
            ],
            logs,
            &["TLS with RabbitMQ", "UnknownIssuer", "cacertfile"],
        )
        .await
    }
    .await;
    stop_all(&mut services, result.is_err()).await;
    result
}

/// (1) and (2): an order reaches shipment-service, and the servers say every connection is TLS.
async fn flows_over_tls(infra: &TlsInfra, order_port: u16) -> Result<()> {
    let client = reqwest::Client::new();
    let sample = repo_file("resources/data/create-order-request.json")?;
    let order = create_order(&client, &format!("http://127.0.0.1:{order_port}"), &sample).await?;
    let order_id = order["id"].as_str().context("order id")?.to_owned();

    let shipments =
        PgPool::connect(&infra.pg_url("shipmentdb", "verify-full", &infra.ca())).await?;
    let arrived = wait_for_shipment_lines(&shipments, &order_id, 2).await;
    shipments.close().await;
    arrived?;

    // PostgreSQL: every session over TCP (the services' pools, the relay's SQL session and its
    // walsender, this test's own) is TLS.
    let mut admin = admin(infra, "postgres").await?;
    let sessions: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT coalesce(a.application_name, ''), a.backend_type, s.ssl \
         FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
         WHERE a.client_addr IS NOT NULL",
    )
    .fetch_all(&mut admin)
    .await?;
    let _ = admin.close().await;
    eprintln!("[tls] PostgreSQL sessions (application, backend type, ssl): {sessions:?}");
    for (application, backend, ssl) in &sessions {
        ensure!(*ssl, "{application} ({backend}) is connected without TLS");
    }
    for application in ["order-service", "shipment-service", "outbox-relay"] {
        ensure!(
            sessions.iter().any(|(name, _, _)| name == application),
            "no session of {application} in pg_stat_activity: {sessions:?}"
        );
    }
    ensure!(
        sessions
            .iter()
            .any(|(name, backend, ssl)| name == "outbox-relay" && backend == "walsender" && *ssl),
        "the relay's replication connection (walsender) is not there over TLS: {sessions:?}"
    );

    // RabbitMQ: the relay's and shipment-service's connections came in on the amqps listener.
    let api = format!("http://127.0.0.1:{}/api/connections", infra.management_port);
    let connections: Vec<Value> = wait_until("both AMQP connections", EVENTUALLY, || {
        let client = client.clone();
        let api = api.clone();
        async move {
            let list: Vec<Value> = client
                .get(&api)
                .basic_auth("guest", Some("guest"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let named = |prefix: &str| {
                list.iter().any(|connection| {
                    connection["client_properties"]["connection_name"]
                        .as_str()
                        .is_some_and(|name| name.starts_with(prefix))
                })
            };
            (named("outbox-relay") && named("shipment-service")).then_some(list)
        }
    })
    .await?;
    for connection in &connections {
        ensure!(
            connection["ssl"] == Value::Bool(true) && connection["port"] == infra.amqps_port,
            "an AMQP connection without TLS: {connection}"
        );
    }
    eprintln!(
        "[tls] {} AMQP connections, all ssl=true on port {}",
        connections.len(),
        infra.amqps_port
    );
    Ok(())
}

/// Starts `name` with `env` and expects it to exit within a minute, failing, with a log that
/// contains every one of `says`.
async fn fails_at_start(
    name: &str,
    env: Vec<(&str, String)>,
    logs: &Path,
    says: &[&str],
) -> Result<()> {
    let log = logs.join(format!("{name}-{}.log", unique_suffix()));
    let port = free_port();
    let mut process = ServiceCommand::workspace(name)?
        .log_file(&log)
        .env("RUST_LOG", "info")
        .env("SERVER_PORT", port.to_string())
        .env("RELAY_HTTP_PORT", port.to_string())
        .envs(env)
        .spawn()?;
    let status = process
        .exit_within(EVENTUALLY)
        .await?
        .with_context(|| format!("{name} kept running: {}", process.log_tail(20)))?;
    let output = std::fs::read_to_string(&log)?;
    ensure!(!status.success(), "{name} exited successfully: {output}");
    for text in says {
        ensure!(
            output.contains(text),
            "{name}'s message does not say {text:?}:\n{output}"
        );
    }
    ensure!(!output.contains("panicked"), "{name} panicked:\n{output}");
    Ok(())
}

/// (3): wrong TLS settings stop the binaries at start with a message naming the setting.
async fn negative_cases(infra: &TlsInfra, logs: &Path) -> Result<()> {
    let wrong_ca = infra.pg_url("orderdb", "verify-full", &infra.other_ca());
    let amqps = infra.amqps_url(&infra.ca());
    fails_at_start(
        "outbox-relay",
        vec![
            ("DATABASE_URL", wrong_ca.clone()),
            ("AMQP_URL", amqps.clone()),
            ("RELAY_SLOT", SLOT.to_owned()),
        ],
        logs,
        &["TLS failed", "sslrootcert", "UnknownIssuer"],
    )
    .await?;
    fails_at_start(
        "order-service",
        vec![("DATABASE_URL", wrong_ca)],
        logs,
        &["TLS failed", "sslrootcert"],
    )
    .await?;
    fails_at_start(
        "shipment-service",
        vec![
            (
                "DATABASE_URL",
                infra.pg_url("shipmentdb", "verify-full", &infra.ca()),
            ),
            ("AMQP_URL", infra.amqps_url("/nonexistent/ca.pem")),
        ],
        logs,
        &["AMQP_URL", "cacertfile /nonexistent/ca.pem cannot be read"],
    )
    .await?;
    fails_at_start(
        "order-service",
        vec![(
            "DATABASE_URL",
            infra.pg_url("orderdb", "verify-full", "/nonexistent/root.crt"),
        )],
        logs,
        &[
            "DATABASE_URL",
            "sslrootcert /nonexistent/root.crt cannot be read",
        ],
    )
    .await?;

    // sslmode=require where the server has no TLS: the shared server, if it has none.
    let shared = test_support::pg_admin_url();
    let mut session = PgConnection::connect(&shared).await?;
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut session)
        .await?;
    let _ = session.close().await;
    if ssl == "off" {
        let (base, _) = shared
            .rsplit_once('/')
            .context("TEST_PG_URL has no database")?;
        fails_at_start(
            "outbox-relay",
            vec![
                ("DATABASE_URL", format!("{base}/orderdb?sslmode=require")),
                ("AMQP_URL", amqps),
                ("RELAY_SLOT", SLOT.to_owned()),
            ],
            logs,
            &["does not support TLS", "TLS failed"],
        )
        .await?;
    } else {
        eprintln!("[tls] the shared PostgreSQL has TLS on: the sslmode=require case is skipped");
    }
    Ok(())
}
