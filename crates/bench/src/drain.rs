//! Drain (issue 7, item 2) and the WAL read ceiling (1c): a backlog of one-row outbox
//! transactions is committed while no relay runs (their slots already exist), then each relay
//! in turn is started and timed until the broker holds the whole backlog.
//!
//! Our relay drains the backlog once per queue type and wire format ([`DrainCase`]; issue 14),
//! each from a slot of its own into a vhost of its own whose `shipment.orders` is declared with
//! the arguments of the broker ceiling of that queue type ([`QueueType::arguments`]); the other
//! relays drain into the first queue type.
//!
//! Method, the same for every relay that publishes: the depth of `shipment.orders` is read
//! from the broker every 10 ms (passive `queue.declare`); the drain lasts from the first
//! message in the queue to the last, like the Debezium peer's own `seconds` (first batch at the
//! sink → last batch confirmed). Start-up (process start → first message) is reported apart.
//! Debezium's capture-only mode publishes nothing: its own summary gives its figures.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::ceilings::{MessageShape, wal_read_rows_per_s};
use crate::infra::{BenchDb, BenchVhost, QueueType, WireFormat};
use crate::relays::{DebeziumSink, Programs, RelayKind, RelayProcess, RelayTarget, Usage};
use crate::workload::commit_backlog;

/// The pgbench clients of the Debezium peer's backlog.
const BACKLOG_CLIENTS: usize = 4;
/// How long a relay may take to start (Debezium's JVM needs a few seconds on 2 cores).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the queue may stay unchanged during a drain before the run is declared failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One drain of a repetition: a relay, the queue type of `shipment.orders`, and (for our
/// relay) its wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainCase {
    pub kind: RelayKind,
    pub queue_type: QueueType,
    /// `RELAY_WIRE_FORMAT` of our relay; `None` for Debezium (its own format).
    pub wire_format: Option<WireFormat>,
}

impl DrainCase {
    /// The slot it reads (created before the backlog), empty for the polling relay.
    fn slot(&self) -> String {
        match self.kind {
            RelayKind::Ours => format!(
                "bench_ours_{}_{}",
                self.queue_type.name(),
                self.wire_format.unwrap_or(WireFormat::Plain).name()
            ),
            RelayKind::Polling => String::new(),
            RelayKind::Debezium {
                sink: DebeziumSink::Rabbitmq,
                ..
            } => "bench_dbz_rmq".to_owned(),
            RelayKind::Debezium {
                sink: DebeziumSink::None,
                ..
            } => "bench_dbz_none".to_owned(),
        }
    }

    /// The relay, queue type and format, for logs and file names.
    pub fn label(&self) -> String {
        let format = self
            .wire_format
            .map_or_else(String::new, |format| format!(", {}", format.name()));
        format!("{} [{}{format}]", self.kind.label(), self.queue_type.name())
    }
}

/// One relay's drain.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRun {
    pub relay: String,
    pub queue_type: QueueType,
    pub wire_format: Option<WireFormat>,
    pub events: usize,
    /// First message in the queue → last.
    pub seconds: f64,
    pub events_per_s: f64,
    /// Process start → first message in the queue.
    pub startup_s: f64,
    /// Peak RSS of the process, MiB.
    pub peak_rss_mb: f64,
    /// CPU seconds of the process, start-up included.
    pub cpu_s: f64,
    /// CPU seconds between the first and the last message, when both could be sampled.
    pub cpu_drain_s: Option<f64>,
    /// Messages in the queue at the end (more than `events` means duplicates).
    pub queued: u32,
    /// The Debezium peer's own summary line.
    pub debezium_summary: Option<serde_json::Value>,
    /// Our relay: one message it published, read back from the queue after the drain, to be
    /// compared with the broker ceiling's message of the same format.
    pub relay_message: Option<MessageShape>,
}

/// One repetition: the drains of every relay plus the WAL read ceiling on the same backlog.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRepetition {
    pub backlog_insert_s: f64,
    pub wal_read_rows_per_s: f64,
    pub runs: Vec<DrainRun>,
    /// Relays that failed in this repetition, with the reason.
    pub failures: Vec<(String, String)>,
}

const WAL_READ_SLOT: &str = "bench_wal_read";

/// Runs one repetition with `cases` (polling, which deletes rows, must come last).
pub async fn drain_repetition(
    events: usize,
    cases: &[DrainCase],
    programs: &Programs,
    repetition: usize,
) -> Result<DrainRepetition> {
    let db = BenchDb::create("bench_drain", 4).await?;
    let result = run_on(&db, events, cases, programs, repetition).await;
    db.drop().await?;
    result
}

async fn run_on(
    db: &BenchDb,
    events: usize,
    cases: &[DrainCase],
    programs: &Programs,
    repetition: usize,
) -> Result<DrainRepetition> {
    if let Some(position) = cases
        .iter()
        .position(|case| case.kind == RelayKind::Polling)
    {
        anyhow::ensure!(
            position + 1 == cases.len(),
            "the polling relay deletes the rows: it must drain last"
        );
    }
    db.create_publication().await?;
    db.create_slot(WAL_READ_SLOT).await?;
    for case in cases.iter().filter(|case| case.kind.uses_slot()) {
        db.create_slot(&case.slot()).await?;
    }
    let started = Instant::now();
    commit_backlog(db, events, BACKLOG_CLIENTS).await?;
    let backlog_insert_s = started.elapsed().as_secs_f64();
    tracing::info!(
        events,
        seconds = backlog_insert_s,
        "drain backlog committed"
    );
    db.checkpoint().await?;

    let wal_read = wal_read_rows_per_s(db, WAL_READ_SLOT, events).await?;
    db.drop_slot(WAL_READ_SLOT).await?;
    tracing::info!(rows_per_s = wal_read.round(), "WAL read ceiling");

    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        let kind = case.kind;
        let vhost = BenchVhost::create_with("bench_drain", Some(case.queue_type)).await?;
        let run_name = format!(
            "drain-{repetition}-{}",
            case.label().replace([' ', '(', ')', '[', ']', ','], "_")
        );
        let slot = case.slot();
        let target = RelayTarget {
            db,
            amqp_url: vhost.amqp_url(),
            slot: &slot,
            wire_format: case.wire_format,
            routing_key: None,
        };
        if kind == RelayKind::Polling {
            db.create_polling_index().await?;
        }
        let outcome = drain_one(*case, programs, target, &vhost, events, &run_name).await;
        vhost.delete().await?;
        // Its slot has done its work: free the WAL it holds for the drains after it.
        if kind.uses_slot()
            && let Err(error) = db.drop_slot(&slot).await
        {
            tracing::warn!(
                slot,
                error = format!("{error:#}"),
                "cannot drop a drained slot"
            );
        }
        match outcome {
            Ok(run) => {
                tracing::info!(relay = %case.label(), events_per_s = run.events_per_s.round(), "drained");
                runs.push(run);
            }
            Err(error) => {
                tracing::error!(relay = %case.label(), error = format!("{error:#}"), "drain failed");
                failures.push((case.label(), format!("{error:#}")));
            }
        }
    }
    Ok(DrainRepetition {
        backlog_insert_s,
        wal_read_rows_per_s: wal_read,
        runs,
        failures,
    })
}

async fn drain_one(
    case: DrainCase,
    programs: &Programs,
    target: RelayTarget<'_>,
    vhost: &BenchVhost,
    events: usize,
    run_name: &str,
) -> Result<DrainRun> {
    let kind = case.kind;
    let is_debezium = matches!(kind, RelayKind::Debezium { .. });
    let mut process = RelayProcess::spawn(
        kind,
        programs,
        target,
        run_name,
        is_debezium.then_some(events),
    )
    .await?;
    if !kind.publishes() {
        let finished = process.wait(Duration::from_secs(900)).await?;
        let summary = finished
            .summary()
            .context("Debezium printed no summary line")?;
        return debezium_only_run(case, events, summary);
    }
    let progress = watch_queue(vhost, events, &mut process).await;
    let end_usage = process.usage().ok();
    let finished = if is_debezium {
        process.wait(Duration::from_secs(120)).await?
    } else {
        process.stop(Duration::from_secs(60)).await?
    };
    let progress = progress?;
    let relay_message = if kind == RelayKind::Ours {
        match vhost.peek_message().await {
            Ok(message) => {
                message.map(|(properties, body)| MessageShape::of_lapin(&properties, &body))
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot read a drained message back"
                );
                None
            }
        }
    } else {
        None
    };
    let summary = finished.summary();
    let seconds = progress
        .last_at
        .duration_since(progress.first_at)
        .as_secs_f64();
    let (peak_rss_mb, cpu_s) = match (&summary, end_usage) {
        // Debezium exits right after its last confirm: its own VmHWM is the reliable one.
        (Some(summary), _) if is_debezium => (
            summary["max_rss_mb"].as_f64().unwrap_or(f64::NAN),
            summary["cpu_s"].as_f64().unwrap_or(f64::NAN),
        ),
        (_, Some(usage)) => (usage.peak_rss_mb, usage.cpu_s),
        _ => bail!("could not read the memory and CPU of {}", kind.label()),
    };
    let cpu_drain_s = match (progress.usage_at_first, end_usage) {
        (Some(first), Some(end)) => Some(end.cpu_s - first.cpu_s),
        _ => None,
    };
    Ok(DrainRun {
        relay: kind.label(),
        queue_type: case.queue_type,
        wire_format: case.wire_format,
        events,
        seconds,
        events_per_s: events as f64 / seconds.max(1e-9),
        startup_s: progress
            .first_at
            .duration_since(progress.spawned_at)
            .as_secs_f64(),
        peak_rss_mb,
        cpu_s,
        cpu_drain_s,
        queued: progress.queued,
        debezium_summary: summary,
        relay_message,
    })
}

fn debezium_only_run(
    case: DrainCase,
    events: usize,
    summary: serde_json::Value,
) -> Result<DrainRun> {
    if let Some(error) = summary["error"].as_str() {
        bail!("Debezium failed: {error}");
    }
    let number = |key: &str| summary[key].as_f64().unwrap_or(f64::NAN);
    Ok(DrainRun {
        relay: case.kind.label(),
        queue_type: case.queue_type,
        wire_format: case.wire_format,
        events,
        seconds: number("seconds"),
        events_per_s: number("events_per_s"),
        startup_s: number("startup_s"),
        peak_rss_mb: number("max_rss_mb"),
        cpu_s: number("cpu_s"),
        cpu_drain_s: None,
        queued: 0,
        debezium_summary: Some(summary),
        relay_message: None,
    })
}

struct QueueProgress {
    spawned_at: Instant,
    first_at: Instant,
    last_at: Instant,
    queued: u32,
    usage_at_first: Option<Usage>,
}

/// Polls the queue depth every 10 ms until it holds `events` messages.
async fn watch_queue(
    vhost: &BenchVhost,
    events: usize,
    process: &mut RelayProcess,
) -> Result<QueueProgress> {
    let spawned_at = process.spawned_at;
    let mut first: Option<(Instant, Option<Usage>)> = None;
    let mut last_change = Instant::now();
    let mut last_depth = 0u32;
    loop {
        let depth = vhost.queue_depth().await?;
        let now = Instant::now();
        if depth > 0 && first.is_none() {
            first = Some((now, process.usage().ok()));
        }
        if depth as usize >= events {
            let (first_at, usage_at_first) = first.unwrap_or((now, None));
            return Ok(QueueProgress {
                spawned_at,
                first_at,
                last_at: now,
                queued: depth,
                usage_at_first,
            });
        }
        if depth != last_depth {
            last_depth = depth;
            last_change = now;
        }
        let patience = if first.is_some() {
            STALL_TIMEOUT
        } else {
            START_TIMEOUT
        };
        if now.duration_since(last_change) > patience {
            bail!(
                "{} stalled at {depth} of {events} messages: {}",
                process.label,
                process.stderr_tail()
            );
        }
        if !process.is_running() {
            // One more look: it may have finished between the read and the check.
            let depth = vhost.queue_depth().await?;
            if depth as usize >= events {
                continue;
            }
            bail!(
                "{} exited with {depth} of {events} messages queued: {}",
                process.label,
                process.stderr_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The relay's drain into the partitioned topology of issue 15: `order.events` → consistent
/// hash → [`PARTITIONS`] quorum queues (declared by shipment-service's own code), the relay
/// routing by order id (`RELAY_ROUTING_KEY=key`), plain format.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionedDrain {
    pub events: usize,
    pub partitions: u16,
    pub events_per_s: f64,
    /// Messages in each partition queue at the end: how evenly the orders hash.
    pub per_partition: Vec<u32>,
    pub relay_cpu_s: Option<f64>,
}

const PARTITIONS: u16 = 4;

pub async fn partitioned_drain(events: usize, programs: &Programs) -> Result<PartitionedDrain> {
    let db = BenchDb::create("bench_pdrain", 4).await?;
    let result = partitioned_drain_on(&db, events, programs).await;
    db.drop().await?;
    result
}

async fn partitioned_drain_on(
    db: &BenchDb,
    events: usize,
    programs: &Programs,
) -> Result<PartitionedDrain> {
    const SLOT: &str = "bench_partitioned";
    db.create_publication().await?;
    db.create_slot(SLOT).await?;
    commit_backlog(db, events, BACKLOG_CLIENTS).await?;
    db.checkpoint().await?;
    let vhost = BenchVhost::bare("bench_pdrain").await?;
    let outcome = async {
        let mut broker = shipment_service::config::BrokerSettings::from_url(
            &vhost.amqp_url,
            "shipment.orders",
            "order.events",
        )?;
        broker.partitions = PARTITIONS;
        shipment_service::broker::declare_only(&broker)
            .await
            .context("declaring the partitioned topology")?;
        let queues: Vec<String> = (0..PARTITIONS)
            .map(|partition| broker.partition_queue(partition))
            .collect();
        let target = RelayTarget {
            db,
            amqp_url: &vhost.amqp_url,
            slot: SLOT,
            wire_format: Some(WireFormat::Plain),
            routing_key: Some("key"),
        };
        let mut process =
            RelayProcess::spawn(RelayKind::Ours, programs, target, "drain-partitioned", None)
                .await?;
        let watched = watch_queues(&vhost.amqp_url, &queues, events, &mut process).await;
        let end_usage = process.usage().ok();
        process.stop(Duration::from_secs(60)).await?;
        let (first_at, last_at, per_partition, usage_at_first) = watched?;
        let seconds = last_at.duration_since(first_at).as_secs_f64();
        anyhow::Ok(PartitionedDrain {
            events,
            partitions: PARTITIONS,
            events_per_s: events as f64 / seconds.max(1e-9),
            per_partition,
            relay_cpu_s: match (usage_at_first, end_usage) {
                (Some(first), Some(end)) => Some(end.cpu_s - first.cpu_s),
                _ => None,
            },
        })
    }
    .await;
    vhost.delete().await?;
    if let Err(error) = db.drop_slot(SLOT).await {
        tracing::warn!(
            error = format!("{error:#}"),
            "cannot drop the partitioned drain's slot"
        );
    }
    outcome
}

/// Polls the depth of `queues` every 10 ms until together they hold `events` messages.
async fn watch_queues(
    amqp_url: &str,
    queues: &[String],
    events: usize,
    process: &mut RelayProcess,
) -> Result<(Instant, Instant, Vec<u32>, Option<Usage>)> {
    let connection =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut first: Option<(Instant, Option<Usage>)> = None;
    let mut last_change = Instant::now();
    let mut last_total = 0usize;
    let result = loop {
        let mut depths = Vec::with_capacity(queues.len());
        for queue in queues {
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..lapin::options::QueueDeclareOptions::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .context("reading a partition's depth")?;
            depths.push(declared.message_count());
        }
        let total: usize = depths.iter().map(|depth| *depth as usize).sum();
        let now = Instant::now();
        if total > 0 && first.is_none() {
            first = Some((now, process.usage().ok()));
        }
        if total >= events {
            let (first_at, usage) = first.unwrap_or((now, None));
            break Ok((first_at, now, depths, usage));
        }
        if total != last_total {
            last_total = total;
            last_change = now;
        }
        if now.duration_since(last_change) > STALL_TIMEOUT.max(START_TIMEOUT) {
            break Err(anyhow::anyhow!(
                "the relay stalled at {total} of {events} messages: {}",
                process.stderr_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = connection.close(200, "done".into()).await;
    result
}
