//! `bench`: measures the outbox pipeline against its physical ceilings and against Debezium,
//! in one run on one machine (issue 7). `make bench` builds the release binaries and runs it.
//!
//! # Layout
//! - [`cli`]: flags and the sizes in effect ([`cli::Settings`]; `--quick` for a smoke run).
//! - [`infra`]: a database and a RabbitMQ vhost of its own per measurement, dropped after.
//! - [`workload`]: the order-service transaction, the drain backlog, the fixed-rate producer.
//! - [`ceilings`]: (1a) producer, (1b) broker, (1c) WAL read.
//! - [`relays`]: the relays under test as processes (ours, its polling source, Debezium);
//!   peak RSS and CPU from `/proc`.
//! - [`drain`], [`steady`], [`http_load`], [`consumer`]: items 2, 3 (with 4 and 7), 5 and 6.
//! - [`pipeline`]: the whole system as deployed, orders through `POST /orders` at fixed rates,
//!   commit → applied latency (issue 14).
//! - [`stats`]: median [min–max], percentiles; [`report`]: the JSON, the table, the targets.
//!
//! Each section that fails is recorded under "not measured" and the run goes on.

pub mod ceilings;
pub mod cli;
pub mod consumer;
pub mod drain;
pub mod http_load;
pub mod infra;
pub mod pipeline;
pub mod relays;
pub mod report;
pub mod stats;
pub mod steady;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::ceilings::CeilingMessage;
use crate::cli::{Args, Section};
use crate::drain::DrainCase;
use crate::infra::{QueueType, WireFormat};
use crate::relays::{DebeziumSink, Programs, RelayKind};
use crate::report::{Ceilings, Machine, Report};
use crate::stats::Summary;
use crate::workload::SteadyProducer;

/// Debezium's default `poll.interval.ms`, used for its drains (as in the peer's own drain).
const DEBEZIUM_DEFAULT_POLL_MS: u32 = 500;

/// Runs every selected section and returns the report (also written to
/// `<out-dir>/report.json`).
pub async fn run(args: Args, command: String) -> Result<Report> {
    let settings = args.settings()?;
    let out_dir = args.out_dir.clone();
    let logs = out_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut missing = Vec::new();

    let relay = match &args.relay_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("outbox-relay"),
    };
    let needs_relay = settings.runs(Section::Drain) || settings.runs(Section::Steady);
    if needs_relay && !relay.exists() {
        anyhow::bail!(
            "{} does not exist: build it first (`cargo build --release -p outbox-relay`) or pass --relay-bin",
            relay.display()
        );
    }
    let polling = settings.polling && relays::relay_has_polling(&relay).await;
    if settings.polling && needs_relay && !polling {
        missing
            .push("polling relay (item 7): outbox-relay has no `--source polling` yet".to_owned());
    }
    let debezium_run = args.debezium_dir.join("run");
    let debezium = if settings.debezium && needs_relay {
        match relays::debezium_available(&debezium_run).await {
            Ok(()) => Some(debezium_run),
            Err(error) => {
                missing.push(format!("Debezium (item 4): cannot run the peer: {error:#}"));
                None
            }
        }
    } else {
        if needs_relay {
            missing.push("Debezium (item 4): skipped (--no-debezium)".to_owned());
        }
        None
    };
    let programs = Programs {
        relay,
        debezium_run: debezium.clone(),
        polling,
        logs,
    };

    let debezium_drain = RelayKind::Debezium {
        sink: DebeziumSink::Rabbitmq,
        poll_ms: DEBEZIUM_DEFAULT_POLL_MS,
    };
    let debezium_none = RelayKind::Debezium {
        sink: DebeziumSink::None,
        poll_ms: DEBEZIUM_DEFAULT_POLL_MS,
    };
    let debezium_steady = RelayKind::Debezium {
        sink: DebeziumSink::Rabbitmq,
        poll_ms: settings.debezium_poll_ms,
    };

    let mut collected = Collected {
        command,
        settings: settings.clone(),
        out_dir: out_dir.clone(),
        machine: machine().await,
        labels: [
            RelayKind::Ours.label(),
            debezium_drain.label(),
            debezium_none.label(),
            debezium_steady.label(),
        ],
        ceilings: Ceilings::default(),
        drain_repetitions: Vec::new(),
        steady_runs: Vec::new(),
        http_runs: Vec::new(),
        consumer_runs: Vec::new(),
        scaling_runs: Vec::new(),
        partitioned_drain: None,
        pipeline: None,
        section_seconds: Vec::new(),
        missing: Vec::new(),
    };
    let ceilings = &mut collected.ceilings;

    if settings.runs(Section::Ceilings) {
        let section_started = Instant::now();
        let mut best_tps = Vec::new();
        let mut best_level = None;
        for repetition in 0..settings.repetitions {
            // The first repetition sweeps every level; the others repeat the best one.
            let levels = match best_level {
                None => settings.producer_concurrency.clone(),
                Some(level) => vec![level],
            };
            match ceilings::producer_ceiling(&levels, settings.producer_seconds).await {
                Ok(sweep) => {
                    best_level.get_or_insert(sweep.best_concurrency);
                    best_tps.push(sweep.best_tps);
                    ceilings.producer_sweeps.push(sweep);
                }
                Err(error) => {
                    missing.push(format!(
                        "producer ceiling (1a), repetition {repetition}: {error:#}"
                    ));
                }
            }
        }
        ceilings.producer_tps = Summary::of(&best_tps);
        ceilings.producer_best_concurrency = best_level;
        for repetition in 0..settings.repetitions {
            // Queue types and messages interleaved within each repetition, so that drift hits
            // them alike.
            for &queue_type in &settings.queue_types {
                for message in ceiling_messages(&settings, queue_type) {
                    measure_broker_ceiling(
                        ceilings,
                        &settings,
                        queue_type,
                        message,
                        repetition,
                        &mut missing,
                    )
                    .await;
                }
            }
        }
        collected.time_section("ceilings", section_started);
    }

    collected.checkpoint(&missing, "ceilings").await;

    if settings.runs(Section::Drain) {
        let section_started = Instant::now();
        for repetition in 0..settings.drain_repetitions {
            // The drain's ratios need the broker ceiling of each queue type from this run: when
            // the ceilings section did not run, it is measured here, once per repetition.
            if !settings.runs(Section::Ceilings) {
                for queue_type in settings.drain_queue_types() {
                    for message in ceiling_messages(&settings, queue_type) {
                        measure_broker_ceiling(
                            &mut collected.ceilings,
                            &settings,
                            queue_type,
                            message,
                            repetition,
                            &mut missing,
                        )
                        .await;
                    }
                }
            }
            let cases = drain_cases(
                &settings,
                repetition,
                debezium
                    .is_some()
                    .then_some([debezium_drain, debezium_none]),
                polling,
            );
            match drain::drain_repetition(settings.drain_events, &cases, &programs, repetition)
                .await
            {
                Ok(result) => {
                    for (relay, error) in &result.failures {
                        missing.push(format!(
                            "drain of {relay}, repetition {repetition}: {error}"
                        ));
                    }
                    collected.drain_repetitions.push(result);
                }
                Err(error) => {
                    missing.push(format!("drain, repetition {repetition}: {error:#}"));
                }
            }
        }
        // Issue 15: the relay into the partitioned topology (routing by order id).
        if settings.drain_queue_types().contains(&QueueType::Quorum) {
            match drain::partitioned_drain(settings.drain_events, &programs).await {
                Ok(run) => {
                    tracing::info!(
                        events_per_s = run.events_per_s.round(),
                        per_partition = ?run.per_partition,
                        "partitioned drain"
                    );
                    collected.partitioned_drain = Some(run);
                }
                Err(error) => missing.push(format!("partitioned drain: {error:#}")),
            }
        }
        collected.ceilings.wal_read_rows_per_s = Summary::of(
            &collected
                .drain_repetitions
                .iter()
                .map(|r| r.wal_read_rows_per_s)
                .collect::<Vec<_>>(),
        );
        collected.time_section("drain", section_started);
    }

    collected.checkpoint(&missing, "drain").await;

    if settings.runs(Section::Steady) {
        let section_started = Instant::now();
        // The plot pools every steady-*.csv in the directory: none from an earlier run.
        remove_earlier_latency_files(&out_dir);
        let mut rates = vec![settings.steady_rate];
        match (args.high_rate, collected.ceilings.producer_tps) {
            (Some(rate), _) => rates.push(rate),
            (None, Some(ceiling)) => {
                rates.push((ceiling.median * settings.ceiling_fraction).round());
            }
            (None, None) => missing.push(format!(
                "steady state at {:.0}% of the producer ceiling: the ceiling (1a) was not measured",
                settings.ceiling_fraction * 100.0
            )),
        }
        let mut relays = vec![RelayKind::Ours];
        if debezium.is_some() {
            relays.push(debezium_steady);
        }
        if polling {
            relays.push(RelayKind::Polling);
        }
        for repetition in 0..settings.steady_repetitions {
            let mut debezium_kept_up_at_low_rate = None;
            for (rate, kind, producer) in steady_plan(&rates, &relays, repetition) {
                let skip_debezium = matches!(kind, RelayKind::Debezium { .. })
                    && rate != settings.steady_rate
                    && debezium_kept_up_at_low_rate == Some(false);
                if skip_debezium {
                    tracing::info!(
                        rate,
                        "Debezium did not keep up at the low rate: not run at the higher one"
                    );
                    continue;
                }
                let producer_name = match producer {
                    SteadyProducer::OutboxRow => "",
                    SteadyProducer::Order => "-order-tx",
                };
                let run_name = format!(
                    "steady-{rate:.0}-{repetition}-{}{producer_name}",
                    kind.label().replace([' ', '(', ')'], "_")
                );
                let spec = steady::SteadySpec {
                    kind,
                    producer,
                    rate,
                    seconds: settings.steady_seconds,
                    run_name: &run_name,
                    csv_dir: &out_dir,
                };
                match steady::steady_run(&spec, &programs).await {
                    Ok(run) => {
                        tracing::info!(
                            relay = %run.relay,
                            rate,
                            p99_ms = run.latency_ms.map(|l| l.p99),
                            keeps_up = run.keeps_up,
                            "steady run"
                        );
                        if matches!(kind, RelayKind::Debezium { .. })
                            && rate == settings.steady_rate
                        {
                            debezium_kept_up_at_low_rate = Some(run.keeps_up);
                        }
                        collected.steady_runs.push(run);
                        collected.checkpoint(&missing, "steady").await;
                    }
                    Err(error) => missing.push(format!(
                        "steady {rate:.0}/s with {}, repetition {repetition}: {error:#}",
                        kind.label()
                    )),
                }
            }
        }
        collected.time_section("steady", section_started);
    }

    if settings.runs(Section::Http) {
        let section_started = Instant::now();
        for repetition in 0..settings.repetitions {
            match http_load::http_repetition(&settings.http_concurrency, settings.http_seconds)
                .await
            {
                Ok(runs) => collected.http_runs.push(runs),
                Err(error) => missing.push(format!("HTTP, repetition {repetition}: {error:#}")),
            }
        }
        collected.time_section("HTTP", section_started);
    }

    collected.checkpoint(&missing, "HTTP").await;

    if settings.runs(Section::Consumer) {
        let section_started = Instant::now();
        for repetition in 0..settings.consumer_repetitions {
            match consumer::consumer_repetition(settings.consumer_events).await {
                Ok(run) => {
                    tracing::info!(
                        service = run.service_events_per_s.round(),
                        direct = run.direct_sql_events_per_s.round(),
                        "consumer backlog"
                    );
                    collected.consumer_runs.push(run);
                }
                Err(error) => {
                    missing.push(format!("consumer, repetition {repetition}: {error:#}"));
                }
            }
        }
        // Issue 15: the same backlog through 1, 2 and 3 instances sharing 4 partitions.
        for instances in 1..=3 {
            match consumer::scaling_run(settings.consumer_events, instances).await {
                Ok(run) => {
                    tracing::info!(
                        instances,
                        events_per_s = run.events_per_s.round(),
                        "partitioned consumer"
                    );
                    collected.scaling_runs.push(run);
                }
                Err(error) => {
                    missing.push(format!(
                        "partitioned consumer, {instances} instances: {error:#}"
                    ));
                }
            }
        }
        collected.time_section("consumer", section_started);
    }

    collected.checkpoint(&missing, "consumer").await;

    if settings.runs(Section::Pipeline) {
        let section_started = Instant::now();
        match run_pipeline(&settings, &collected.http_runs, &programs).await {
            Ok(result) => collected.pipeline = Some(result),
            Err(error) => missing.push(format!("pipeline: {error:#}")),
        }
        collected.time_section("pipeline", section_started);
    }

    if settings.runs(Section::Steady) {
        match plot_latency(&out_dir).await {
            Ok(pictures) => tracing::info!(%pictures, "latency plots drawn"),
            Err(reason) => missing.push(format!(
                "latency plot PNG: {reason}; the per-event latencies are in the steady-*.csv \
                 files next to report.json"
            )),
        }
    }

    collected.missing = missing;
    let report = collected.report().await;
    write_report(&report, &collected.out_dir)?;
    Ok(report)
}

/// The pipeline section: its rates are fractions of the HTTP ceiling, which is
/// `--pipeline-http-ceiling`, else this run's HTTP section's best median requests/s, else
/// measured here (64 clients for 3 s, the HTTP section's best level on this machine).
async fn run_pipeline(
    settings: &cli::Settings,
    http_runs: &[Vec<http_load::HttpRun>],
    programs: &Programs,
) -> Result<pipeline::PipelineResult> {
    let binaries = pipeline::Binaries::next_to_this(&programs.relay, &programs.logs)?;
    let best_http = |runs: &[Vec<http_load::HttpRun>]| {
        report::summarize_http(runs)
            .iter()
            .filter_map(|h| h.requests_per_s.map(|s| s.median))
            .reduce(f64::max)
    };
    let (http_ceiling, source) = match (settings.pipeline_http_ceiling, best_http(http_runs)) {
        (Some(ceiling), _) => (ceiling, "--pipeline-http-ceiling".to_owned()),
        (None, Some(best)) => (
            best,
            "this run's HTTP section (best median requests/s)".to_owned(),
        ),
        (None, None) => {
            let runs = http_load::http_repetition(&[64], 3.0)
                .await
                .context("measuring the HTTP ceiling for the pipeline")?;
            let best = best_http(&[runs]).context("the HTTP ceiling was not measured")?;
            (
                best,
                "measured by the pipeline section (64 clients, 3 s; the HTTP section did not run)"
                    .to_owned(),
            )
        }
    };
    tracing::info!(http_ceiling = http_ceiling.round(), %source, "pipeline: HTTP ceiling");
    pipeline::pipeline(
        pipeline::PipelineSpec {
            http_ceiling,
            seconds: settings.pipeline_seconds,
            search_seconds: settings.pipeline_search_seconds,
        },
        source,
        &binaries,
    )
    .await
}

/// The messages (1b) publishes into `queue_type`: the bare reference, and the relay's own
/// message in each format of `--formats` for the queue types our relay drains into (a stream
/// gets the bare reference only: no drain is held against it).
fn ceiling_messages(settings: &cli::Settings, queue_type: QueueType) -> Vec<CeilingMessage> {
    let mut messages = vec![CeilingMessage::Bare];
    if queue_type.drainable() {
        messages.extend(settings.formats.iter().map(|&f| CeilingMessage::Relay(f)));
    }
    messages
}

/// (1b) for `queue_type` and `message`, once; a failure is noted in `missing`.
async fn measure_broker_ceiling(
    ceilings: &mut Ceilings,
    settings: &cli::Settings,
    queue_type: QueueType,
    message: CeilingMessage,
    repetition: usize,
    missing: &mut Vec<String>,
) {
    match ceilings::broker_ceiling(
        queue_type,
        message,
        settings.broker_messages,
        settings.broker_window,
    )
    .await
    {
        Ok(run) => {
            tracing::info!(
                queue_type = queue_type.name(),
                message = message.name(),
                bytes = run.message_bytes,
                messages_per_s = run.messages_per_s.round(),
                "broker ceiling"
            );
            ceilings.broker_runs.push(run);
            ceilings.summarize_broker();
        }
        Err(error) => missing.push(format!(
            "broker ceiling (1b), {}, {} message, repetition {repetition}: {error:#}",
            queue_type.description(),
            message.name()
        )),
    }
}

/// The drains of one repetition, in order: our relay into each queue type in each format (in
/// reverse order in odd repetitions, so that no case always runs first or last), then
/// Debezium (to RabbitMQ and capture-only) and the polling relay (last: it deletes the rows)
/// into the first queue type.
fn drain_cases(
    settings: &cli::Settings,
    repetition: usize,
    debezium: Option<[RelayKind; 2]>,
    polling: bool,
) -> Vec<DrainCase> {
    let queue_types = settings.drain_queue_types();
    let mut cases: Vec<DrainCase> = queue_types
        .iter()
        .flat_map(|&queue_type| {
            settings.formats.iter().map(move |&format| DrainCase {
                kind: RelayKind::Ours,
                queue_type,
                wire_format: Some(format),
            })
        })
        .collect();
    if repetition % 2 == 1 {
        cases.reverse();
    }
    let first_queue = queue_types.first().copied().unwrap_or(QueueType::Classic);
    for kind in debezium.into_iter().flatten() {
        cases.push(DrainCase {
            kind,
            queue_type: first_queue,
            wire_format: None,
        });
    }
    if polling {
        cases.push(DrainCase {
            kind: RelayKind::Polling,
            queue_type: first_queue,
            wire_format: Some(WireFormat::Plain),
        });
    }
    cases
}

/// The steady-state runs of one repetition, in order: at every rate our relay and Debezium;
/// the polling relay at the first (low) rate only, since its latency is bounded below by its
/// poll interval at any rate; in the first repetition, our relay once more at the low rate
/// with the order-service's whole transaction as the producer.
fn steady_plan(
    rates: &[f64],
    relays: &[RelayKind],
    repetition: usize,
) -> Vec<(f64, RelayKind, SteadyProducer)> {
    let mut runs = Vec::new();
    for (index, &rate) in rates.iter().enumerate() {
        for &kind in relays {
            if kind == RelayKind::Polling && index > 0 {
                continue;
            }
            runs.push((rate, kind, SteadyProducer::OutboxRow));
        }
    }
    if repetition == 0
        && let Some(&low_rate) = rates.first()
    {
        runs.push((low_rate, RelayKind::Ours, SteadyProducer::Order));
    }
    runs
}

/// What has been measured so far; [`Collected::checkpoint`] writes it as a report after each
/// section, so an interrupted run still leaves its figures behind.
struct Collected {
    command: String,
    settings: cli::Settings,
    out_dir: PathBuf,
    machine: Machine,
    labels: [String; 4],
    ceilings: Ceilings,
    drain_repetitions: Vec<drain::DrainRepetition>,
    steady_runs: Vec<steady::SteadyRun>,
    http_runs: Vec<Vec<http_load::HttpRun>>,
    consumer_runs: Vec<consumer::ConsumerRun>,
    scaling_runs: Vec<consumer::ScalingRun>,
    partitioned_drain: Option<drain::PartitionedDrain>,
    pipeline: Option<pipeline::PipelineResult>,
    /// Wall-clock seconds each section took, in order.
    section_seconds: Vec<(String, f64)>,
    missing: Vec<String>,
}

impl Collected {
    fn time_section(&mut self, section: &str, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(section, seconds = seconds.round(), "section done");
        self.section_seconds.push((section.to_owned(), seconds));
    }

    async fn report(&self) -> Report {
        let now = machine().await;
        let mut report = Report {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            command: self.command.clone(),
            machine: Machine {
                load_after: now.load_before,
                ..self.machine.clone()
            },
            ceilings: self.ceilings.clone(),
            drain: report::summarize_drains(&self.drain_repetitions),
            drain_vs_ceiling: Vec::new(),
            drain_repetitions: self.drain_repetitions.clone(),
            steady: report::summarize_steady(&self.steady_runs),
            steady_runs: self.steady_runs.clone(),
            http: report::summarize_http(&self.http_runs),
            http_runs: self.http_runs.clone(),
            consumer_service_events_per_s: Summary::of(
                &self
                    .consumer_runs
                    .iter()
                    .map(|r| r.service_events_per_s)
                    .collect::<Vec<_>>(),
            ),
            consumer_direct_sql_events_per_s: Summary::of(
                &self
                    .consumer_runs
                    .iter()
                    .map(|r| r.direct_sql_events_per_s)
                    .collect::<Vec<_>>(),
            ),
            consumer_runs: self.consumer_runs.clone(),
            scaling_runs: self.scaling_runs.clone(),
            partitioned_drain: self.partitioned_drain.clone(),
            pipeline: self.pipeline.clone(),
            section_seconds: self.section_seconds.clone(),
            ratios_vs_debezium: Vec::new(),
            targets: Vec::new(),
            missing: self.missing.clone(),
            latency_csv_dir: self.out_dir.display().to_string(),
            settings: self.settings.clone(),
        };
        let [ours, debezium, debezium_none, debezium_steady] = &self.labels;
        report.evaluate(ours, debezium, debezium_none, debezium_steady);
        report
    }

    /// Writes the report so far (`report.json`, marked partial by `section`).
    async fn checkpoint(&self, missing: &[String], section: &str) {
        let mut report = self.report().await;
        report.missing = missing.to_vec();
        report.missing.push(format!(
            "(partial report: written after the {section} section)"
        ));
        if let Err(error) = write_report(&report, &self.out_dir) {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot write the partial report"
            );
        }
    }
}

fn write_report(report: &Report, out_dir: &Path) -> Result<PathBuf> {
    let path = out_dir.join("report.json");
    let json = serde_json::to_string_pretty(report).context("serializing the report")?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What this machine is, and how loaded it is now.
async fn machine() -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(
            || "unknown".to_owned(),
            |(_, model)| model.trim().to_owned(),
        );
    let memory_mb = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024);
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        memory_mb,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        postgresql: postgres_version()
            .await
            .unwrap_or_else(|_| "unknown".to_owned()),
        rabbitmq: rabbitmq_version()
            .await
            .unwrap_or_else(|_| "unknown".to_owned()),
        load_before: read("/proc/loadavg").trim().to_owned(),
        load_after: String::new(),
    }
}

async fn postgres_version() -> Result<String> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(&test_support::pg_admin_url()).await?;
    let (version,): (String,) = sqlx::query_as("SHOW server_version")
        .fetch_one(&mut connection)
        .await?;
    let _ = connection.close().await;
    Ok(format!("PostgreSQL {version}"))
}

async fn rabbitmq_version() -> Result<String> {
    let api = reqwest::Url::parse(&test_support::rabbitmq_api_url())?;
    let user = if api.username().is_empty() {
        "guest".to_owned()
    } else {
        api.username().to_owned()
    };
    let password = api.password().unwrap_or("guest").to_owned();
    let mut base = api.clone();
    let _ = base.set_username("");
    let _ = base.set_password(None);
    let overview: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/overview",
            base.as_str().trim_end_matches('/')
        ))
        .basic_auth(user, Some(password))
        .send()
        .await?
        .json()
        .await?;
    Ok(overview["rabbitmq_version"]
        .as_str()
        .unwrap_or("unknown")
        .to_owned())
}

/// Draws `latency-<rate>.png` from the steady-state CSVs with `scripts/plot-latency.py`, run by
/// `$BENCH_PYTHON` (`make bench` points it at a virtualenv with matplotlib) or `python3`.
async fn plot_latency(out_dir: &Path) -> std::result::Result<String, String> {
    let script = Path::new("scripts/plot-latency.py");
    if !script.exists() {
        return Err(format!(
            "{} not found (run from the repository root)",
            script.display()
        ));
    }
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(out_dir)
        .output()
        .await
        .map_err(|error| format!("cannot run {python}: {error}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("no output");
        return Err(format!("{python} {} failed: {last}", script.display()));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(", "))
}

/// Removes the per-event CSVs and plots an earlier run left in `out_dir`.
fn remove_earlier_latency_files(out_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let earlier = (name.starts_with("steady-") && name.ends_with(".csv"))
            || (name.starts_with("latency-") && name.ends_with(".png"));
        if earlier && let Err(error) = std::fs::remove_file(entry.path()) {
            tracing::warn!(file = %name, %error, "cannot remove an earlier run's file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_runs_every_queue_type_and_format_then_the_peers_polling_last() {
        use clap::Parser;
        let settings = Args::parse_from(["bench"])
            .settings()
            .unwrap_or_else(|e| panic!("{e}"));
        let debezium = RelayKind::Debezium {
            sink: relays::DebeziumSink::Rabbitmq,
            poll_ms: 500,
        };
        let first = drain_cases(&settings, 0, Some([debezium, debezium]), true);
        let ours: Vec<(QueueType, Option<WireFormat>)> = first
            .iter()
            .filter(|case| case.kind == RelayKind::Ours)
            .map(|case| (case.queue_type, case.wire_format))
            .collect();
        assert_eq!(
            ours,
            vec![
                (QueueType::Classic, Some(WireFormat::Plain)),
                (QueueType::Classic, Some(WireFormat::Debezium)),
                (QueueType::Quorum, Some(WireFormat::Plain)),
                (QueueType::Quorum, Some(WireFormat::Debezium)),
            ]
        );
        assert_eq!(first.len(), 7);
        assert_eq!(first.last().map(|case| case.kind), Some(RelayKind::Polling));
        assert!(
            first[4..]
                .iter()
                .all(|case| case.queue_type == QueueType::Classic)
        );
        let second = drain_cases(&settings, 1, None, false);
        assert_eq!(
            second
                .first()
                .map(|case| (case.queue_type, case.wire_format)),
            Some((QueueType::Quorum, Some(WireFormat::Debezium)))
        );
    }

    #[test]
    fn the_steady_plan_runs_polling_at_the_low_rate_and_the_order_tx_once() {
        let relays = [RelayKind::Ours, RelayKind::Polling];
        let first = steady_plan(&[1000.0, 1118.0], &relays, 0);
        let polling_rates: Vec<f64> = first
            .iter()
            .filter(|(_, kind, _)| *kind == RelayKind::Polling)
            .map(|(rate, _, _)| *rate)
            .collect();
        assert_eq!(polling_rates, vec![1000.0]);
        let ours_rates: Vec<f64> = first
            .iter()
            .filter(|(_, kind, producer)| {
                *kind == RelayKind::Ours && *producer == SteadyProducer::OutboxRow
            })
            .map(|(rate, _, _)| *rate)
            .collect();
        assert_eq!(ours_rates, vec![1000.0, 1118.0]);
        let order_tx = |plan: &[(f64, RelayKind, SteadyProducer)]| {
            plan.iter()
                .filter(|(_, _, producer)| *producer == SteadyProducer::Order)
                .count()
        };
        assert_eq!(order_tx(&first), 1);
        assert_eq!(order_tx(&steady_plan(&[1000.0, 1118.0], &relays, 1)), 0);
    }
}
