//! Pipeline (issue 14): the whole system as deployed. order-service, outbox-relay and
//! shipment-service run as their release binaries, each a process of its own, against the
//! local PostgreSQL (a database each for the order-service and the shipment-service) and
//! RabbitMQ (a vhost of their own). Orders go through `POST /orders` at a fixed rate, open loop:
//! request *i* is sent at *start + i/rate* (at once when every client task is busy), from
//! enough concurrent client tasks; a request counts when its 201 arrives.
//!
//! Per order, latency = applied − committed:
//! - committed: the outbox row's `"timestamp"` (`clock_timestamp()` at the row's `INSERT`, in
//!   the order-service's transaction, just before its `COMMIT`), read from the order database;
//! - applied: `clock_timestamp()` when the shipment-service's transaction that creates the
//!   order's `shipment` row commits. The service records `now()` (its transaction's *start*) in
//!   `consumed_message.time_of_receiving`, which is early by the whole batch; so the bench adds
//!   a deferred constraint trigger (`AFTER INSERT ON shipment ... DEFERRABLE INITIALLY
//!   DEFERRED`), which runs at the transaction's `COMMIT`, and writes `(order_id,
//!   clock_timestamp())` into an unlogged side table (`public.bench_applied`) of the shipment
//!   database. Both clocks are the same PostgreSQL server's.
//!
//! A rate is *sustained* when the achieved request rate is at least 95 % of it, no request
//! failed, every created order was applied, and p99 commit → applied is under 1 s. The rates:
//! 50 % and 90 % of the HTTP ceiling (`--pipeline-seconds` each), then a short search for the
//! highest sustained rate (`--pipeline-search-seconds` each, [`search_steps`]): up from 90 % in
//! steps of 10 % of the ceiling while the rate is sustained (to 150 %), or down in steps of 10 %
//! (from 80 % if 50 % was sustained, else from 40 %) until one is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use test_support::process::{ServiceCommand, ServiceProcess};
use test_support::{TestDatabase, TestVhost};
use uuid::Uuid;

use crate::http_load::CREATE_ORDER;
use crate::infra::free_port;
use crate::relays::Usage;
use crate::stats::Percentiles;
use crate::workload::unix_micros_now;

/// A rate is sustained only if p99 commit → applied stays under this.
pub const SUSTAINED_P99_MS: f64 = 1000.0;
/// ... and at least this share of the target request rate was achieved.
const ACHIEVED_SHARE: f64 = 0.95;
/// The goal at 90 % of the HTTP ceiling.
pub const GOAL_P99_MS: f64 = 50.0;
/// The fractions of the HTTP ceiling run for `--pipeline-seconds` each.
pub const FIXED_FRACTIONS: [f64; 2] = [0.5, 0.9];
/// How long a binary may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long applying may make no progress after the load before the run gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The shipment-service's schema (its `DB_SCHEMA` default).
const SHIPMENT_SCHEMA: &str = "shipments";
/// The slot and publication of the relay.
const SLOT: &str = "bench_pipeline";

/// Where the three binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub order_service: PathBuf,
    pub relay: PathBuf,
    pub shipment_service: PathBuf,
    pub logs: PathBuf,
}

impl Binaries {
    /// The release binaries next to this one; fails, saying how to build them, if one is missing.
    pub fn next_to_this(relay: &Path, logs: &Path) -> Result<Self> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let binaries = Self {
            order_service: exe.with_file_name("order-service"),
            relay: relay.to_owned(),
            shipment_service: exe.with_file_name("shipment-service"),
            logs: logs.to_owned(),
        };
        for path in [
            &binaries.order_service,
            &binaries.relay,
            &binaries.shipment_service,
        ] {
            if !path.is_file() {
                bail!(
                    "{} does not exist: build the three services first (`cargo build --release \
                     -p order-service -p outbox-relay -p shipment-service`)",
                    path.display()
                );
            }
        }
        Ok(binaries)
    }
}

/// One process's peak memory and CPU over a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    pub process: String,
    pub peak_rss_mb: f64,
    pub cpu_s: f64,
}

/// One rate.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRun {
    /// `fixed` (`--pipeline-seconds`) or `search` (`--pipeline-search-seconds`).
    pub phase: String,
    /// The target as a fraction of the HTTP ceiling.
    pub fraction: f64,
    pub target_rate: f64,
    pub seconds: f64,
    pub sent: u64,
    pub created: u64,
    pub errors: u64,
    /// Orders created (201) per second, from the first request to the last answer.
    pub achieved_rate: f64,
    /// Orders of the load applied by the shipment-service.
    pub applied: u64,
    /// Applied orders per second, from the start of the load to the last one applied.
    pub applied_rate: f64,
    /// Commit → applied per order, ms.
    pub latency_ms: Option<Percentiles>,
    /// Last applied − end of the load, ms.
    pub catch_up_ms: Option<f64>,
    pub sustained: bool,
    pub usage: Vec<ProcessUsage>,
}

/// The whole section.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineResult {
    pub http_ceiling: f64,
    /// Where the ceiling came from: this run's HTTP section, `--pipeline-http-ceiling`, or a
    /// quick measurement by the pipeline section.
    pub http_ceiling_source: String,
    pub runs: Vec<PipelineRun>,
    /// The highest target rate sustained (p99 under 1 s), and its fraction of the ceiling.
    pub highest_sustained: Option<(f64, f64)>,
}

impl PipelineResult {
    /// The fixed-length run at `fraction` of the ceiling.
    pub fn fixed(&self, fraction: f64) -> Option<&PipelineRun> {
        self.runs
            .iter()
            .find(|run| run.phase == "fixed" && (run.fraction - fraction).abs() < 1e-6)
    }
}

/// The settings of the section.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSpec {
    pub http_ceiling: f64,
    pub seconds: f64,
    pub search_seconds: f64,
}

/// Runs 50 % and 90 % of the ceiling, then the search.
pub async fn pipeline(
    spec: PipelineSpec,
    source: String,
    binaries: &Binaries,
) -> Result<PipelineResult> {
    let mut runs: Vec<PipelineRun> = Vec::new();
    for fraction in FIXED_FRACTIONS {
        runs.push(run_at(spec, fraction, "fixed", spec.seconds, binaries).await?);
    }
    let sustained_at = |percent: u32| {
        runs.iter().any(|run| {
            run.phase == "fixed"
                && (run.fraction * 100.0).round() as u32 == percent
                && run.sustained
        })
    };
    let (upwards, steps) = search_steps(sustained_at(50), sustained_at(90));
    for percent in steps {
        let run = run_at(
            spec,
            f64::from(percent) / 100.0,
            "search",
            spec.search_seconds,
            binaries,
        )
        .await?;
        let sustained = run.sustained;
        runs.push(run);
        // Upwards: stop at the first rate not sustained; downwards: at the first sustained.
        if sustained != upwards {
            break;
        }
    }
    let highest_sustained = runs
        .iter()
        .filter(|run| run.sustained)
        .map(|run| (run.target_rate, run.fraction))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    Ok(PipelineResult {
        http_ceiling: spec.http_ceiling,
        http_ceiling_source: source,
        runs,
        highest_sustained,
    })
}

/// The search after the fixed runs, in percent of the HTTP ceiling, and whether it goes up:
/// up from 90 % in steps of 10 (to 150 %) when 90 % was sustained; else down from 80 % to 60 %
/// when 50 % was sustained; else down from 40 % to 10 %.
pub fn search_steps(sustained_at_50: bool, sustained_at_90: bool) -> (bool, Vec<u32>) {
    if sustained_at_90 {
        (true, (100..=150).step_by(10).collect())
    } else if sustained_at_50 {
        (false, vec![80, 70, 60])
    } else {
        (false, vec![40, 30, 20, 10])
    }
}

async fn run_at(
    spec: PipelineSpec,
    fraction: f64,
    phase: &str,
    seconds: f64,
    binaries: &Binaries,
) -> Result<PipelineRun> {
    let rate = (spec.http_ceiling * fraction).round().max(1.0);
    tracing::info!(rate, fraction, seconds, phase, "pipeline run");
    let run = one_run(rate, seconds, binaries).await?;
    tracing::info!(
        rate,
        achieved = run.achieved_rate.round(),
        applied_rate = run.applied_rate.round(),
        p50_ms = run.latency_ms.map(|l| l.p50),
        p99_ms = run.latency_ms.map(|l| l.p99),
        errors = run.errors,
        sustained = run.sustained,
        "pipeline run done"
    );
    Ok(PipelineRun {
        phase: phase.to_owned(),
        fraction,
        ..run
    })
}

/// The resources of one run; everything dropped by [`System::tear_down`].
struct System {
    orders: TestDatabase,
    shipments: TestDatabase,
    vhost: TestVhost,
    /// shipment-service, order-service, relay, in start order.
    services: Vec<ServiceProcess>,
    order_url: String,
}

/// One rate on a system of its own.
async fn one_run(rate: f64, seconds: f64, binaries: &Binaries) -> Result<PipelineRun> {
    let orders = TestDatabase::create("bench_pipe_orders")
        .await
        .context("creating the order database")?;
    let shipments = match TestDatabase::create("bench_pipe_shipments").await {
        Ok(db) => db,
        Err(error) => {
            orders.drop_database().await?;
            return Err(error.context("creating the shipment database"));
        }
    };
    let vhost = match TestVhost::create("bench_pipeline").await {
        Ok(vhost) => vhost,
        Err(error) => {
            orders.drop_database().await?;
            shipments.drop_database().await?;
            return Err(error.context("creating the vhost"));
        }
    };
    let mut system = System {
        orders,
        shipments,
        vhost,
        services: Vec::new(),
        order_url: String::new(),
    };
    let run_name = format!("pipeline-{rate:.0}");
    let result = async {
        start(&mut system, binaries, &run_name).await?;
        measure(&mut system, rate, seconds).await
    }
    .await;
    let torn_down = system.tear_down().await;
    let run = result?;
    torn_down?;
    Ok(run)
}

/// Starts shipment-service (then installs the applied-time trigger in its schema),
/// order-service (its migrations create the outbox table the relay's publication needs), and
/// the relay; each with exactly its own settings (the defaults otherwise, as deployed).
async fn start(system: &mut System, binaries: &Binaries, run_name: &str) -> Result<()> {
    std::fs::create_dir_all(&binaries.logs)
        .with_context(|| format!("creating {}", binaries.logs.display()))?;
    let command = |name: &str, program: &Path, port: u16| {
        let log = binaries.logs.join(format!("{run_name}-{name}.log"));
        let _ = std::fs::remove_file(&log);
        ServiceCommand::new(name, program)
            .env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned()),
            )
            .env("RUST_LOG", "warn")
            .http_port(port)
            .log_file(log)
    };
    let port = free_port()?;
    let shipment = command("shipment-service", &binaries.shipment_service, port)
        .env("DATABASE_URL", system.shipments.url.clone())
        .env("AMQP_URL", system.vhost.amqp_url.clone())
        .env("SERVER_PORT", port.to_string())
        .start(START_TIMEOUT)
        .await?;
    system.services.push(shipment);
    install_applied_log(&system.shipments).await?;

    let port = free_port()?;
    let order = command("order-service", &binaries.order_service, port)
        .env("DATABASE_URL", system.orders.url.clone())
        .env("SERVER_PORT", port.to_string())
        .start(START_TIMEOUT)
        .await?;
    system.order_url = format!("http://127.0.0.1:{port}/orders");
    system.services.push(order);

    let port = free_port()?;
    let relay = command("outbox-relay", &binaries.relay, port)
        .env("DATABASE_URL", system.orders.url.clone())
        .env("AMQP_URL", system.vhost.amqp_url.clone())
        .env("RELAY_SLOT", SLOT)
        .env("RELAY_PUBLICATION", SLOT)
        .env("RELAY_HTTP_PORT", port.to_string())
        .start(START_TIMEOUT)
        .await?;
    system.services.push(relay);
    Ok(())
}

/// The deferred constraint trigger noting when each `shipment` row's transaction commits.
async fn install_applied_log(shipments: &TestDatabase) -> Result<()> {
    for statement in [
        "CREATE UNLOGGED TABLE public.bench_applied \
         (order_id uuid NOT NULL, applied_at timestamptz NOT NULL)"
            .to_owned(),
        "CREATE FUNCTION public.bench_log_applied() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO public.bench_applied VALUES (NEW.order_id, clock_timestamp()); \
         RETURN NULL; END $$"
            .to_owned(),
        format!(
            "CREATE CONSTRAINT TRIGGER bench_applied AFTER INSERT ON {SHIPMENT_SCHEMA}.shipment \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.bench_log_applied()"
        ),
    ] {
        sqlx::query(&statement)
            .execute(&shipments.pool)
            .await
            .context("installing the applied-time trigger in the shipment database")?;
    }
    Ok(())
}

impl System {
    /// Stops the services (relay first, then order-service, then shipment-service), drops
    /// both databases (the relay's slot and publication with the order database) and the vhost.
    async fn tear_down(mut self) -> Result<()> {
        let mut failures = Vec::new();
        for service in self.services.iter_mut().rev() {
            if let Err(error) = service.terminate(Duration::from_secs(20)).await {
                failures.push(format!("{}: {error:#}", service.name()));
            }
        }
        drop(self.services);
        if let Err(error) = self.orders.drop_database().await {
            failures.push(format!("dropping the order database: {error:#}"));
        }
        if let Err(error) = self.shipments.drop_database().await {
            failures.push(format!("dropping the shipment database: {error:#}"));
        }
        if let Err(error) = self.vhost.delete().await {
            failures.push(format!("deleting the vhost: {error:#}"));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("cleaning up the pipeline run: {}", failures.join("; "))
        }
    }

    async fn applied_count(&self) -> Result<i64> {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM public.bench_applied")
            .fetch_one(&self.shipments.pool)
            .await
            .context("counting applied orders")?;
        Ok(count)
    }

    fn usage(&self) -> Vec<ProcessUsage> {
        self.services
            .iter()
            .filter_map(|service| {
                let usage = Usage::of(service.pid()?).ok()?;
                Some(ProcessUsage {
                    process: service.name().to_owned(),
                    peak_rss_mb: usage.peak_rss_mb,
                    cpu_s: usage.cpu_s,
                })
            })
            .collect()
    }
}

/// Warm-up, the load, the wait for the last order to be applied, the latencies.
async fn measure(system: &mut System, rate: f64, seconds: f64) -> Result<PipelineRun> {
    // Enough client tasks that the load stays open loop while each answer takes up to 250 ms
    // (a closed pool of tasks would otherwise cap the rate at tasks / latency).
    let workers = ((rate / 4.0).ceil() as usize).clamp(64, 1024);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;

    // Warm-up: orders until one is applied, proving every stage runs; then a pause.
    let deadline = Instant::now() + START_TIMEOUT;
    while system.applied_count().await? == 0 {
        if Instant::now() > deadline {
            bail!("no warm-up order was applied within {START_TIMEOUT:?}");
        }
        post_order(&client, &system.order_url)
            .await
            .context("the warm-up order")?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warm_up_applied = system.applied_count().await?;
    let cpu_before = system.usage();

    let load_started_micros = unix_micros_now();
    let load = open_loop(&client, &system.order_url, rate, seconds, workers).await?;
    let load_ended_micros = unix_micros_now();

    // Wait for the shipment-service to apply every created order.
    let expected = warm_up_applied + load.created as i64;
    let mut last = system.applied_count().await?;
    let mut last_change = Instant::now();
    while last < expected && last_change.elapsed() < STALL_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let count = system.applied_count().await?;
        if count != last {
            last = count;
            last_change = Instant::now();
        }
    }
    let usage_after = system.usage();

    let committed: HashMap<Uuid, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT aggregate_id, (extract(epoch FROM \"timestamp\") * 1000000)::int8 \
         FROM orders.outbox_event WHERE type = 'OrderCreated'",
    )
    .fetch_all(&system.orders.pool)
    .await
    .context("reading the outbox rows' commit times")?
    .into_iter()
    .filter_map(|(id, at)| Some((Uuid::parse_str(&id).ok()?, at)))
    .collect();
    let applied: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT order_id, (extract(epoch FROM applied_at) * 1000000)::int8 \
         FROM public.bench_applied",
    )
    .fetch_all(&system.shipments.pool)
    .await
    .context("reading the applied times")?;

    let mut latencies = Vec::with_capacity(applied.len());
    let mut last_applied = None::<i64>;
    for (order, applied_at) in &applied {
        let Some(&committed_at) = committed.get(order) else {
            continue;
        };
        if committed_at < load_started_micros {
            continue; // warm-up
        }
        latencies.push((applied_at - committed_at) as f64 / 1000.0);
        last_applied = Some(last_applied.map_or(*applied_at, |last: i64| last.max(*applied_at)));
    }
    let applied_count = latencies.len() as u64;
    let latency_ms = Percentiles::of(&mut latencies);
    let applied_rate = last_applied.map_or(0.0, |last| {
        applied_count as f64 / ((last - load_started_micros) as f64 / 1e6).max(1e-9)
    });
    let sustained = load.achieved_rate >= ACHIEVED_SHARE * rate
        && load.errors == 0
        && applied_count == load.created
        && latency_ms.is_some_and(|l| l.p99 < SUSTAINED_P99_MS);
    let usage = usage_after
        .into_iter()
        .map(|after| {
            let before = cpu_before
                .iter()
                .find(|before| before.process == after.process)
                .map_or(0.0, |before| before.cpu_s);
            ProcessUsage {
                cpu_s: after.cpu_s - before,
                ..after
            }
        })
        .collect();
    Ok(PipelineRun {
        phase: String::new(),
        fraction: 0.0,
        target_rate: rate,
        seconds,
        sent: load.sent,
        created: load.created,
        errors: load.errors,
        achieved_rate: load.achieved_rate,
        applied: applied_count,
        applied_rate,
        latency_ms,
        catch_up_ms: last_applied.map(|last| (last - load_ended_micros) as f64 / 1000.0),
        sustained,
        usage,
    })
}

async fn post_order(client: &reqwest::Client, url: &str) -> Result<()> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(CREATE_ORDER)
        .send()
        .await
        .context("POST /orders")?;
    let status = response.status();
    let body = response.bytes().await.context("reading the answer")?;
    if status != reqwest::StatusCode::CREATED {
        bail!(
            "POST /orders answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// What the open-loop load did.
struct Load {
    sent: u64,
    created: u64,
    errors: u64,
    achieved_rate: f64,
}

/// `POST /orders` at `rate` for `seconds`: request `i` at `start + i / rate` (at once when
/// the worker that takes it is late), from `workers` concurrent tasks.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: f64,
    seconds: f64,
    workers: usize,
) -> Result<Load> {
    let total = (rate * seconds).round().max(1.0) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let client = client.clone();
        let url = url.to_owned();
        let (next, created, errors) =
            (Arc::clone(&next), Arc::clone(&created), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / rate))
                    .await;
                match post_order(&client, &url).await {
                    Ok(()) => created.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        if errors.load(Ordering::Relaxed) < 3 {
                            tracing::warn!(error = format!("{error:#}"), "a pipeline order failed");
                        }
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for task in tasks {
        task.await.context("an HTTP client task panicked")?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let created = created.load(Ordering::Relaxed);
    Ok(Load {
        sent: total,
        created,
        errors: errors.load(Ordering::Relaxed),
        achieved_rate: created as f64 / elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_goes_up_from_90_or_down_past_the_fixed_rates() {
        assert_eq!(
            search_steps(true, true),
            (true, vec![100, 110, 120, 130, 140, 150])
        );
        assert_eq!(search_steps(true, false), (false, vec![80, 70, 60]));
        assert_eq!(search_steps(false, false), (false, vec![40, 30, 20, 10]));
    }
}
