//! The fault suite (issue 6): the three real binaries on a private PostgreSQL cluster and a
//! private RabbitMQ node, under a producer load through the HTTP API, while faults hit them:
//! the relay SIGKILLed at random moments and restarted, the shipment-service SIGKILLed while
//! it consumes and restarted, RabbitMQ restarted, PostgreSQL restarted, `shipment.orders`
//! unbound from `order.events` for a few seconds, and RabbitMQ's disk alarm raised (a free-disk
//! limit above the free space: the broker blocks every publisher) for a few seconds, or 40 s in
//! the long run (past the relay's confirm timeout, which a blocked connection must not trip:
//! the relay reports the block in `/health` and `outbox_relay_broker_blocked`, keeps its
//! connection and resumes). Then the load stops, the system drains, and
//! the audit ([`audit`]) checks from the databases that nothing was lost and nothing applied
//! twice, and the run prints its counts.
//!
//! `short_run` is part of `make test`; `long_run` (ignored) is `make chaos`. `CHAOS_SEED=<n>`
//! repeats a run's fault order and timings; `CHAOS_KEEP_LOGS=1` keeps the services' logs of a
//! passing run too (a failing run always keeps them); `CHAOS_RUST_LOG` sets the services'
//! log filter (default `info`).
//!
//! # Layout
//! - [`infra`]: the private servers, started and restarted through `scripts/infra.sh`.
//! - [`services`]: the binaries as child processes; `/health` and `/metrics`.
//! - [`load`]: the producer.
//! - [`audit`]: the checks after the drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
// Also used by the cluster suite (`tests/cluster_suite`), which starts a cluster through it.
#[allow(dead_code)]
mod infra;
mod load;
mod services;

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use test_support::process::ServiceProcess;
use tokio_util::sync::CancellationToken;

use crate::audit::{Audit, ORDER_QUEUE};
use crate::audit::{connect, count};
use crate::infra::{PgStop, PrivateInfra, RabbitMqRestart};
use crate::load::{LoadOutcome, LoadSettings};
use crate::services::metric_sum;

/// How long a service may take to become healthy again after a fault.
const RECOVERY: Duration = Duration::from_secs(120);
/// How long the system may take to deliver everything after the load stopped.
const DRAIN: Duration = Duration::from_secs(240);
/// The exchange the relay publishes to.
const EXCHANGE: &str = "order.events";

/// What one run does.
#[derive(Debug, Clone)]
struct Plan {
    name: &'static str,
    relay_kills: u32,
    postgres_stop: PgStop,
    rabbitmq_restart: RabbitMqRestart,
    unbind_for: Duration,
    /// How long the disk alarm blocks publishers (the long run: past the relay's 30 s
    /// confirm timeout, which an alarm must not trip).
    alarm_for: Duration,
    /// Random pause before each fault, in milliseconds (load keeps running).
    pause_before_fault_ms: (u64, u64),
    /// Load after the last fault, before it stops.
    load_after_faults: Duration,
    load: LoadSettings,
}

impl Plan {
    /// `make test`: three relay kills and one of every other fault, about a minute of load;
    /// RabbitMQ restarts its application only (a node boot alone can take a minute here).
    fn short() -> Self {
        Self {
            name: "short",
            relay_kills: 3,
            postgres_stop: PgStop::Fast,
            rabbitmq_restart: RabbitMqRestart::Application,
            unbind_for: Duration::from_secs(3),
            alarm_for: Duration::from_secs(4),
            pause_before_fault_ms: (1_000, 3_000),
            load_after_faults: Duration::from_secs(3),
            load: LoadSettings {
                orders_per_second: 250,
                max_orders: 60_000,
                cancel_probability: 0.3,
                concurrency: 64,
            },
        }
    }

    /// `make chaos`: ten relay kills, the whole RabbitMQ node restarted, PostgreSQL crashed
    /// rather than stopped, longer pauses.
    fn long() -> Self {
        Self {
            name: "long",
            relay_kills: 10,
            postgres_stop: PgStop::Immediate,
            rabbitmq_restart: RabbitMqRestart::Node,
            unbind_for: Duration::from_secs(5),
            alarm_for: Duration::from_secs(40),
            pause_before_fault_ms: (3_000, 8_000),
            load_after_faults: Duration::from_secs(5),
            load: LoadSettings {
                orders_per_second: 250,
                max_orders: 300_000,
                cancel_probability: 0.3,
                concurrency: 64,
            },
        }
    }

    /// The faults in a random order.
    fn faults(&self, rng: &mut StdRng) -> Vec<Fault> {
        let mut faults = vec![
            Fault::KillShipmentService,
            Fault::RestartRabbitMq,
            Fault::RestartPostgres,
            Fault::UnbindQueue,
            Fault::BrokerAlarm,
        ];
        faults.extend((0..self.relay_kills).map(|_| Fault::KillRelay));
        faults.shuffle(rng);
        faults
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillRelay,
    KillShipmentService,
    RestartRabbitMq,
    RestartPostgres,
    UnbindQueue,
    BrokerAlarm,
}

/// Counters of the services' `/metrics`, summed over every process of a service (each is read
/// just before its process is killed, and at the end).
#[derive(Debug, Default)]
struct Tally {
    duplicates: f64,
    parked: f64,
    unchanged: f64,
    relay_returned: f64,
    relay_reconnects: f64,
    relay_published: f64,
}

impl Tally {
    fn add_shipment_service(&mut self, text: &str) {
        self.duplicates += metric_sum(text, "shipment_duplicates_total", None);
        let consumed = "shipment_messages_consumed_total";
        self.parked += metric_sum(text, consumed, Some("outcome=\"parked\""));
        self.unchanged += metric_sum(text, consumed, Some("outcome=\"unchanged\""));
    }

    fn add_relay(&mut self, text: &str) {
        self.relay_returned += metric_sum(text, "outbox_relay_unroutable_total", None);
        self.relay_reconnects += metric_sum(text, "outbox_relay_reconnects_total", None);
        self.relay_published += metric_sum(text, "outbox_relay_events_published_total", None);
    }
}

/// Everything a run measured.
#[derive(Debug)]
struct Report {
    plan: Plan,
    seed: u64,
    load: LoadOutcome,
    faults: Vec<String>,
    tally: Tally,
    drain: Duration,
    audit: Audit,
    /// The audit of the same state after [`audit::tamper_and_audit_again`] broke it.
    control: Audit,
}

impl Report {
    fn survived(&self, prefix: &str) -> usize {
        self.faults.iter().filter(|f| f.starts_with(prefix)).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = &self.load;
        writeln!(
            f,
            "fault suite ({} run, CHAOS_SEED={})",
            self.plan.name, self.seed
        )?;
        writeln!(
            f,
            "  load: {} orders acknowledged of {} started in {:.1} s ({:.0}/s); {} line cancels acknowledged of {}; {} slots skipped while the service hung",
            load.acknowledged_orders.len(),
            load.creates_started,
            load.elapsed.as_secs_f64(),
            load.acknowledged_rate(),
            load.acknowledged_cancels.len(),
            load.cancels_started,
            load.skipped
        )?;
        writeln!(
            f,
            "  refused creates: {:?}; refused cancels: {:?}",
            load.create_failures, load.cancel_failures
        )?;
        writeln!(
            f,
            "  faults survived: relay SIGKILL x{}, shipment-service SIGKILL x{}, RabbitMQ restart x{} ({}), PostgreSQL restart x{} ({}), queue unbound x{} ({:?})",
            self.survived("relay"),
            self.survived("shipment-service"),
            self.survived("RabbitMQ"),
            self.plan.rabbitmq_restart.describe(),
            self.survived("PostgreSQL"),
            self.plan.postgres_stop.describe(),
            self.survived("unbound"),
            self.plan.unbind_for
        )?;
        for fault in &self.faults {
            writeln!(f, "    - {fault}")?;
        }
        writeln!(
            f,
            "  duplicates absorbed by the shipment-service: {} (updates that came before their order: {}, updates that changed nothing: {})",
            self.tally.duplicates, self.tally.parked, self.tally.unchanged
        )?;
        writeln!(
            f,
            "  relay: {} publish attempts for {} events (the rest published again after kills and reconnects), {} returned as unroutable, {} reconnects",
            self.tally.relay_published,
            self.audit.events,
            self.tally.relay_returned,
            self.tally.relay_reconnects
        )?;
        writeln!(
            f,
            "  drained {:.1} s after the load stopped",
            self.drain.as_secs_f64()
        )?;
        writeln!(f, "{}", self.audit)?;
        write!(
            f,
            "  control (one shipment deleted and one line reset on purpose afterwards): the audit then found {}",
            self.control.problems().join("; ")
        )
    }
}

/// The three services and what the run learns from them.
struct System {
    http: reqwest::Client,
    order_service: ServiceProcess,
    shipment_service: ServiceProcess,
    relay: ServiceProcess,
    tally: Tally,
    rng: StdRng,
}

impl System {
    async fn start(infra: &PrivateInfra, rng: StdRng) -> Result<Self> {
        let http = reqwest::Client::new();
        let order_service = services::start_in_run(
            infra,
            "order-service",
            "SERVER_PORT",
            vec![
                ("DATABASE_URL", infra.pg_url("orderdb")),
                ("DB_POOL_SIZE", "20".to_owned()),
            ],
        )
        .await?;
        let shipment_service = services::start_in_run(
            infra,
            "shipment-service",
            "SERVER_PORT",
            vec![
                ("DATABASE_URL", infra.pg_url("shipmentdb")),
                ("AMQP_URL", infra.amqp_url()),
            ],
        )
        .await?;
        let relay = services::start_in_run(
            infra,
            "outbox-relay",
            "RELAY_HTTP_PORT",
            vec![
                ("DATABASE_URL", infra.pg_url("orderdb")),
                ("AMQP_URL", infra.amqp_url()),
                ("RELAY_SLOT", "chaos_relay".to_owned()),
                ("RELAY_PUBLICATION", "chaos_outbox".to_owned()),
            ],
        )
        .await?;
        Ok(Self {
            http,
            order_service,
            shipment_service,
            relay,
            tally: Tally::default(),
            rng,
        })
    }

    /// Applies one fault and waits until the system is healthy again; says what it did.
    async fn inject(&mut self, fault: Fault, infra: &PrivateInfra, plan: &Plan) -> Result<String> {
        match fault {
            Fault::KillRelay => {
                if let Ok(text) = self.relay.metrics().await {
                    self.tally.add_relay(&text);
                }
                self.relay.kill9().await?;
                let down = Duration::from_millis(self.rng.random_range(0..1_500));
                tokio::time::sleep(down).await;
                self.relay.restart()?;
                self.relay.wait_healthy(RECOVERY).await?;
                Ok(format!(
                    "relay SIGKILLed, restarted after {} ms",
                    down.as_millis()
                ))
            }
            Fault::KillShipmentService => {
                let consuming = self.wait_consuming().await;
                if let Ok(text) = self.shipment_service.metrics().await {
                    self.tally.add_shipment_service(&text);
                }
                self.shipment_service.kill9().await?;
                let down = Duration::from_millis(self.rng.random_range(0..1_000));
                tokio::time::sleep(down).await;
                self.shipment_service.restart()?;
                self.shipment_service.wait_healthy(RECOVERY).await?;
                Ok(format!(
                    "shipment-service SIGKILLed {}, restarted after {} ms",
                    if consuming {
                        "while consuming"
                    } else {
                        "(no consumption seen in 10 s before)"
                    },
                    down.as_millis()
                ))
            }
            Fault::RestartRabbitMq => {
                let started = Instant::now();
                let (stopped, up) = infra.restart_rabbitmq(plan.rabbitmq_restart).await?;
                self.shipment_service.wait_healthy(RECOVERY).await?;
                self.relay.wait_healthy(RECOVERY).await?;
                Ok(format!(
                    "RabbitMQ {}: stopped in {:.1} s, started in {:.1} s; everything healthy again after {:.1} s",
                    plan.rabbitmq_restart.describe(),
                    stopped.as_secs_f64(),
                    up.as_secs_f64(),
                    started.elapsed().as_secs_f64()
                ))
            }
            Fault::RestartPostgres => {
                let started = Instant::now();
                infra.restart_postgres(plan.postgres_stop).await?;
                self.order_service.wait_healthy(RECOVERY).await?;
                self.shipment_service.wait_healthy(RECOVERY).await?;
                self.relay.wait_healthy(RECOVERY).await?;
                Ok(format!(
                    "PostgreSQL {} and started; everything healthy again after {:.1} s",
                    plan.postgres_stop.describe(),
                    started.elapsed().as_secs_f64()
                ))
            }
            Fault::BrokerAlarm => {
                let started = Instant::now();
                infra.raise_disk_alarm().await?;
                // The relay publishes under load, so RabbitMQ blocks it at its next publish.
                let (_, blocked) = self
                    .relay
                    .wait_health(
                        "the relay to report the broker's block",
                        RECOVERY,
                        |_, body| body["broker_blocked"].is_string(),
                    )
                    .await?;
                let reported_after = started.elapsed();
                let reason = blocked["broker_blocked"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let metrics = self.relay.metrics().await?;
                ensure!(
                    metric_sum(&metrics, "outbox_relay_broker_blocked", None) == 1.0,
                    "the relay's /health says blocked but outbox_relay_broker_blocked is not 1"
                );
                let rabbitmq_reconnects = |text: &str| {
                    metric_sum(
                        text,
                        "outbox_relay_reconnects_total",
                        Some("server=\"rabbitmq\""),
                    )
                };
                let reconnects_when_blocked = rabbitmq_reconnects(&metrics);
                tokio::time::sleep(plan.alarm_for).await;
                // Bounded meanwhile: the relay holds at most its window (1,024 by default)
                // and leaves the rest in the WAL.
                let (_, during) = self
                    .relay
                    .wait_health(
                        "the relay's health during the alarm",
                        RECOVERY,
                        |_, body| body["broker_blocked"].is_string(),
                    )
                    .await?;
                let in_flight = during["in_flight_events"].as_u64().unwrap_or(u64::MAX);
                ensure!(
                    in_flight <= 1024,
                    "{in_flight} events in flight while blocked: more than the window"
                );
                // Blocked, not broken: the relay kept its connection (no reconnect, no
                // publishing everything again) however long the alarm lasted.
                let reconnects_after = rabbitmq_reconnects(&self.relay.metrics().await?);
                let lowered = Instant::now();
                infra.lower_disk_alarm().await?;
                self.relay.wait_healthy(RECOVERY).await?;
                ensure!(
                    reconnects_after == reconnects_when_blocked,
                    "the relay reconnected to RabbitMQ during the alarm ({reconnects_when_blocked} → {reconnects_after})"
                );
                Ok(format!(
                    "disk alarm for {:.1} s: relay reported blocked ({reason}) {:.1} s after it was raised, kept its connection, {in_flight} events in flight at the end; healthy again {:.1} s after it was lowered",
                    lowered.duration_since(started).as_secs_f64(),
                    reported_after.as_secs_f64(),
                    lowered.elapsed().as_secs_f64()
                ))
            }
            Fault::UnbindQueue => {
                let management = Management::new(infra);
                management.unbind(&self.http).await?;
                tokio::time::sleep(plan.unbind_for).await;
                management.bind(&self.http).await?;
                Ok(format!(
                    "unbound {ORDER_QUEUE} from {EXCHANGE} for {:?}, then bound again",
                    plan.unbind_for
                ))
            }
        }
    }

    /// Waits (up to 10 s) until the shipment-service's consumed counter moves, so the kill
    /// lands while it has deliveries in hand. Says whether it saw it move.
    async fn wait_consuming(&self) -> bool {
        let consumed = |text: &str| metric_sum(text, "shipment_messages_consumed_total", None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut before = None;
        while Instant::now() < deadline {
            if let Ok(text) = self.shipment_service.metrics().await {
                let now = consumed(&text);
                if before.is_some_and(|before| now > before) {
                    return true;
                }
                before = Some(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Final reads of the counters of the processes still running.
    async fn read_final_counters(&mut self) -> Result<()> {
        let text = self.shipment_service.metrics().await?;
        self.tally.add_shipment_service(&text);
        let text = self.relay.metrics().await?;
        self.tally.add_relay(&text);
        Ok(())
    }

    fn print_logs(&self) {
        for service in [&self.order_service, &self.shipment_service, &self.relay] {
            eprintln!(
                "--- {} (started {} times), last lines ---\n{}",
                service.name(),
                service.starts(),
                service.log_tail(40)
            );
        }
    }

    async fn terminate(self) {
        services::terminate(self.relay).await;
        services::terminate(self.shipment_service).await;
        services::terminate(self.order_service).await;
    }
}

/// The private node's management API, for binding and unbinding the order queue.
struct Management {
    base: String,
}

impl Management {
    fn new(infra: &PrivateInfra) -> Self {
        Self {
            base: infra.management_url(),
        }
    }

    async fn bindings(&self, http: &reqwest::Client) -> Result<Vec<String>> {
        let response = http
            .get(format!(
                "{}/api/exchanges/%2F/{EXCHANGE}/bindings/source",
                self.base
            ))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .context("listing the bindings of the exchange")?;
        if !response.status().is_success() {
            bail!("listing bindings: HTTP {}", response.status());
        }
        let bindings: serde_json::Value = response.json().await?;
        Ok(bindings
            .as_array()
            .into_iter()
            .flatten()
            .filter(|binding| binding["destination"] == ORDER_QUEUE)
            .filter_map(|binding| binding["properties_key"].as_str().map(str::to_owned))
            .collect())
    }

    async fn unbind(&self, http: &reqwest::Client) -> Result<()> {
        let keys = self.bindings(http).await?;
        if keys.is_empty() {
            bail!("{ORDER_QUEUE} is not bound to {EXCHANGE}: nothing to unbind");
        }
        for key in keys {
            let response = http
                .delete(format!(
                    "{}/api/bindings/%2F/e/{EXCHANGE}/q/{ORDER_QUEUE}/{key}",
                    self.base
                ))
                .basic_auth("guest", Some("guest"))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("deleting binding {key}: HTTP {}", response.status());
            }
        }
        if !self.bindings(http).await?.is_empty() {
            bail!("{ORDER_QUEUE} is still bound after the unbind");
        }
        Ok(())
    }

    async fn bind(&self, http: &reqwest::Client) -> Result<()> {
        let response = http
            .post(format!(
                "{}/api/bindings/%2F/e/{EXCHANGE}/q/{ORDER_QUEUE}",
                self.base
            ))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"routing_key": "", "arguments": {}}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("binding {ORDER_QUEUE} again: HTTP {}", response.status());
        }
        if self.bindings(http).await?.is_empty() {
            bail!("{ORDER_QUEUE} is not bound after the bind");
        }
        Ok(())
    }
}

/// Waits until every committed event was consumed, the queue is empty and the relay has
/// nothing in flight, twice in a row. Returns how long it took, or an error after [`DRAIN`]
/// (the audit then says what is missing).
async fn wait_drained(
    system: &System,
    orders_db: &PgPool,
    shipments_db: &PgPool,
    amqp_url: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let mut calm_polls = 0;
    let mut last = String::new();
    while started.elapsed() < DRAIN {
        let events = count(orders_db, "orders.outbox_event").await;
        let consumed = count(shipments_db, "shipments.consumed_message").await;
        let queued = audit::queue_depth(amqp_url, ORDER_QUEUE).await.ok();
        let in_flight = system
            .relay
            .metrics()
            .await
            .ok()
            .map(|text| metric_sum(&text, "outbox_relay_in_flight_events", None));
        last = format!(
            "events {events:?}, consumed {consumed:?}, queued {queued:?}, relay in flight {in_flight:?}"
        );
        let calm = matches!((events, consumed), (Some(e), Some(c)) if c >= e)
            && queued == Some(0)
            && in_flight == Some(0.0);
        calm_polls = if calm { calm_polls + 1 } else { 0 };
        if calm_polls >= 2 {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the system did not drain within {DRAIN:?}; last poll: {last}")
}

/// Runs `plan` end to end on private servers and returns what it measured.
async fn run(plan: Plan) -> Result<Report> {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .context("CHAOS_SEED must be an integer")?,
        Err(_) => rand::random(),
    };
    eprintln!("[chaos] {} run, CHAOS_SEED={seed}", plan.name);
    let infra = PrivateInfra::start().await?;
    eprintln!(
        "[chaos] private servers up in {} (PostgreSQL {}, RabbitMQ {}, management {})",
        infra.dir.display(),
        infra.pg_port,
        infra.rabbitmq_port,
        infra.management_port
    );
    let result = drive(&infra, plan, seed).await;
    let keep_logs = std::env::var_os("CHAOS_KEEP_LOGS").is_some()
        || match &result {
            Ok(report) => !report.audit.problems().is_empty(),
            Err(_) => true,
        };
    if keep_logs {
        infra.keep_logs("chaos");
    }
    let stopped = infra.stop().await;
    let report = result?;
    stopped?;
    Ok(report)
}

async fn drive(infra: &PrivateInfra, plan: Plan, seed: u64) -> Result<Report> {
    let mut rng = StdRng::seed_from_u64(seed);
    let faults = plan.faults(&mut rng);
    let mut system = System::start(infra, StdRng::seed_from_u64(seed ^ 0x5eed)).await?;
    let outcome = run_faults_under_load(&mut system, infra, &plan, &faults, seed, rng).await;
    if outcome.is_err() {
        system.print_logs();
    }
    let (load, fault_notes, drain, audit, control) = match outcome {
        Ok(parts) => parts,
        Err(error) => {
            system.terminate().await;
            return Err(error);
        }
    };
    let tally = std::mem::take(&mut system.tally);
    let report = Report {
        plan,
        seed,
        load,
        faults: fault_notes,
        tally,
        drain,
        audit,
        control,
    };
    if !report.audit.problems().is_empty() {
        system.print_logs();
    }
    system.terminate().await;
    Ok(report)
}

async fn run_faults_under_load(
    system: &mut System,
    infra: &PrivateInfra,
    plan: &Plan,
    faults: &[Fault],
    seed: u64,
    mut rng: StdRng,
) -> Result<(LoadOutcome, Vec<String>, Duration, Audit, Audit)> {
    let orders_db = connect(&infra.pg_url("orderdb")).await?;
    let shipments_db = connect(&infra.pg_url("shipmentdb")).await?;

    let stop_load = CancellationToken::new();
    let _stop_load_on_error = stop_load.clone().drop_guard();
    let load = tokio::spawn(load::run(
        system.order_service.url(""),
        plan.load.clone(),
        seed,
        stop_load.clone(),
    ));

    // The pipeline works before anything breaks.
    test_support::wait_until("the first shipment", RECOVERY, || async {
        count(&shipments_db, "shipments.shipment")
            .await
            .filter(|&shipments| shipments > 0)
    })
    .await?;

    let mut notes = Vec::with_capacity(faults.len());
    for (index, &fault) in faults.iter().enumerate() {
        let (low, high) = plan.pause_before_fault_ms;
        tokio::time::sleep(Duration::from_millis(rng.random_range(low..=high))).await;
        if load.is_finished() {
            eprintln!(
                "[chaos] warning: the order budget was spent before fault {}",
                index + 1
            );
        }
        let note = system
            .inject(fault, infra, plan)
            .await
            .with_context(|| format!("fault {} of {} ({fault:?})", index + 1, faults.len()))?;
        eprintln!("[chaos] fault {}/{}: {note}", index + 1, faults.len());
        notes.push(note);
    }
    tokio::time::sleep(plan.load_after_faults).await;
    stop_load.cancel();
    let load = load.await.context("the load task failed")?;
    eprintln!(
        "[chaos] load stopped: {} orders acknowledged; draining",
        load.acknowledged_orders.len()
    );

    let amqp_url = infra.amqp_url();
    let drain = match wait_drained(system, &orders_db, &shipments_db, &amqp_url).await {
        Ok(took) => took,
        Err(error) => {
            eprintln!("[chaos] {error:#}");
            DRAIN
        }
    };
    system.read_final_counters().await?;
    let work_queues = [ORDER_QUEUE.to_owned()];
    let audit = audit::run(&orders_db, &shipments_db, &amqp_url, &work_queues, &load).await?;
    let control =
        audit::tamper_and_audit_again(&orders_db, &shipments_db, &amqp_url, &work_queues, &load)
            .await?;
    orders_db.close().await;
    shipments_db.close().await;
    Ok((load, notes, drain, audit, control))
}

/// Checks a finished run: at least one fault of each kind survived, real load, and the audit
/// found nothing lost and nothing applied twice.
fn check(report: &Report) {
    println!("{report}");
    if report.audit.applied_out_of_order > 0 {
        eprintln!(
            "[chaos] warning: {} order(s) applied out of commit order:\n  {}",
            report.audit.applied_out_of_order,
            report.audit.examples.join("\n  ")
        );
    }
    let problems = report.audit.problems();
    assert!(
        problems.is_empty(),
        "the audit failed: {}\nexamples:\n  {}\n{report}",
        problems.join("; "),
        report.audit.examples.join("\n  ")
    );
    assert_eq!(report.audit.events_lost, 0, "events lost");
    assert_eq!(report.audit.applied_twice(), 0, "events applied twice");
    assert!(
        report.load.acknowledged_orders.len() > 100,
        "the load acknowledged too few orders to mean anything: {report}"
    );
    assert_eq!(
        report.survived("relay"),
        report.plan.relay_kills as usize,
        "every relay kill was survived"
    );
    assert_eq!(report.faults.len(), report.plan.relay_kills as usize + 5);
    // The audit is not blind: the state broken on purpose afterwards fails it.
    let control = &report.control;
    assert_eq!(control.orders_without_shipment, 1, "control: {control}");
    assert_eq!(control.events_lost, 1, "control: {control}");
    assert_eq!(
        control.lines_not_in_committed_state, 1,
        "control: {control}"
    );
    assert_eq!(control.applied_out_of_order, 1, "control: {control}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_run() -> Result<()> {
    let report = run(Plan::short()).await?;
    check(&report);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the long fault suite takes several minutes: run it with `make chaos`"]
async fn long_run() -> Result<()> {
    let report = run(Plan::long()).await?;
    check(&report);
    Ok(())
}
