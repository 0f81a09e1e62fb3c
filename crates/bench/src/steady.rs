//! Steady state (issue 7, item 3): a producer commits at a fixed rate while a relay runs; an
//! independent consumer notes the arrival time of every event. Latency = arrival − the event's
//! `"timestamp"` (`clock_timestamp()` in the transaction, so it includes the commit itself), per
//! event; p50, p99, p99.9, max. The producer commits one outbox row per transaction, as the
//! Debezium peer's latency tool does, so the figure is the relay's and not the CPU contention of
//! a saturated machine; one more run at the low rate commits the order-service's whole
//! transaction instead (relay label suffixed `+ order tx`).
//!
//! "Keeps up" means: every event arrived, and the last one arrived within a second of the
//! producer's last commit. The slot lag (WAL bytes not yet confirmed; for the polling relay,
//! rows still in the outbox table) is sampled every 500 ms and reported too.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::infra::{BenchDb, BenchVhost, QUEUE};
use crate::relays::{Programs, RelayKind, RelayProcess, RelayTarget};
use crate::stats::{BucketQuantiles, Percentiles};
use crate::workload::{
    SteadyProducer, install_event_time_log, logged_event_times, one_event, produce_at_rate,
    unix_micros_now,
};

/// outbox-relay's histogram of commit-to-publish seconds (`outbox_relay::telemetry`).
const RELAY_COMMIT_TO_PUBLISH: &str = "outbox_relay_commit_to_publish_seconds";
/// The slot of the relay under test.
const SLOT: &str = "bench_steady";
/// Longest wait for a relay to deliver the warm-up event (Debezium's JVM start).
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long arrivals may stop before the run gives up on the missing events.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The last event must arrive within this of the last commit for the relay to keep up.
const KEEPS_UP_WITHIN_MS: f64 = 1000.0;

/// One steady-state run.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyRun {
    pub relay: String,
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub committed: u64,
    pub failed_commits: u64,
    pub received: usize,
    pub duplicates: usize,
    pub latency_ms: Option<Percentiles>,
    /// Last arrival − last commit, ms.
    pub catch_up_ms: Option<f64>,
    pub keeps_up: bool,
    /// Largest sampled slot lag in bytes (rows for the polling relay), over the whole run and
    /// over its first and second half.
    pub max_lag: i64,
    pub max_lag_first_half: i64,
    pub max_lag_second_half: i64,
    pub lag_unit: &'static str,
    pub peak_rss_mb: f64,
    pub cpu_s: f64,
    /// Our relay's own view (its `/metrics` at the end of the run): commit to publish, i.e.
    /// the part of the latency spent before the event reached RabbitMQ.
    pub relay_commit_to_publish: Option<BucketQuantiles>,
}

/// What one steady-state run measures.
#[derive(Debug, Clone)]
pub struct SteadySpec<'a> {
    pub kind: RelayKind,
    pub producer: SteadyProducer,
    /// Events per second.
    pub rate: f64,
    /// Seconds of load.
    pub seconds: f64,
    /// Names the latency CSV (`<csv_dir>/<run_name>.csv`) and the relay's logs.
    pub run_name: &'a str,
    pub csv_dir: &'a Path,
}

/// One run, on a database and a vhost of its own.
pub async fn steady_run(spec: &SteadySpec<'_>, programs: &Programs) -> Result<SteadyRun> {
    let connections = ((spec.rate / 100.0).ceil() as u32).clamp(4, 32) + 2;
    let db = BenchDb::create("bench_steady", connections).await?;
    let vhost = match BenchVhost::create("bench_steady").await {
        Ok(vhost) => vhost,
        Err(error) => {
            db.drop().await?;
            return Err(error);
        }
    };
    let result = run_on(&db, &vhost, spec, programs).await;
    vhost.delete().await?;
    db.drop().await?;
    result
}

async fn run_on(
    db: &BenchDb,
    vhost: &BenchVhost,
    spec: &SteadySpec<'_>,
    programs: &Programs,
) -> Result<SteadyRun> {
    let SteadySpec {
        kind,
        producer,
        rate,
        seconds: _,
        run_name,
        csv_dir,
    } = *spec;
    db.create_publication().await?;
    install_event_time_log(db).await?;
    if kind.uses_slot() {
        db.create_slot(SLOT).await?;
    } else {
        db.create_polling_index().await?;
    }
    let consumer = LatencyConsumer::start(vhost.amqp_url()).await?;
    let mut process = RelayProcess::spawn(
        kind,
        programs,
        RelayTarget {
            db,
            amqp_url: vhost.amqp_url(),
            slot: SLOT,
            wire_format: None,
            routing_key: None,
        },
        run_name,
        None,
    )
    .await?;
    let outcome = measure(db, &consumer, &mut process, spec).await;
    let relay_commit_to_publish = process
        .metrics_text()
        .await
        .and_then(|text| BucketQuantiles::from_prometheus(&text, RELAY_COMMIT_TO_PUBLISH));
    let usage = process.usage();
    let finished = process.stop(Duration::from_secs(60)).await;
    let arrivals = consumer.stop().await;
    let (produced, lags) = outcome?;
    finished?;
    let usage = usage?;

    let times: HashMap<Uuid, i64> = logged_event_times(db).await?.into_iter().collect();
    let mut seen = HashSet::with_capacity(arrivals.len());
    let mut latencies = Vec::with_capacity(arrivals.len());
    let mut duplicates = 0;
    let mut last_arrival = None::<i64>;
    let mut csv = std::fs::File::create(csv_dir.join(format!("{run_name}.csv")))
        .context("creating the latency CSV")?;
    writeln!(csv, "event_id,committed_unix_us,arrived_unix_us,latency_ms")?;
    for (id, arrived) in &arrivals {
        let Some(&committed) = times.get(id) else {
            continue;
        };
        if committed < produced.started_unix_micros {
            continue; // warm-up
        }
        if !seen.insert(*id) {
            duplicates += 1;
            continue;
        }
        let latency_ms = (arrived - committed) as f64 / 1000.0;
        writeln!(csv, "{id},{committed},{arrived},{latency_ms:.3}")?;
        latencies.push(latency_ms);
        last_arrival = Some(last_arrival.map_or(*arrived, |last: i64| last.max(*arrived)));
    }
    let received = latencies.len();
    let catch_up_ms = last_arrival.map(|last| (last - produced.ended_unix_micros) as f64 / 1000.0);
    let keeps_up = received as u64 == produced.committed
        && catch_up_ms.is_some_and(|ms| ms <= KEEPS_UP_WITHIN_MS);
    let half = produced.started_unix_micros
        + (produced.ended_unix_micros - produced.started_unix_micros) / 2;
    let max_of = |filter: &dyn Fn(i64) -> bool| {
        lags.iter()
            .filter(|(at, _)| filter(*at))
            .map(|(_, lag)| *lag)
            .max()
            .unwrap_or(0)
    };
    Ok(SteadyRun {
        relay: match producer {
            SteadyProducer::OutboxRow => kind.label(),
            SteadyProducer::Order => format!("{} + order tx", kind.label()),
        },
        target_rate: rate,
        achieved_rate: produced.achieved_rate,
        committed: produced.committed,
        failed_commits: produced.failed,
        received,
        duplicates,
        latency_ms: Percentiles::of(&mut latencies),
        catch_up_ms,
        keeps_up,
        max_lag: max_of(&|_| true),
        max_lag_first_half: max_of(&|at| at < half),
        max_lag_second_half: max_of(&|at| at >= half),
        lag_unit: if kind.uses_slot() { "bytes" } else { "rows" },
        peak_rss_mb: usage.peak_rss_mb,
        cpu_s: usage.cpu_s,
        relay_commit_to_publish,
    })
}

/// Warm-up, load, then wait for the stragglers; returns what was produced and the lag samples
/// `(unix µs, lag)`.
async fn measure(
    db: &BenchDb,
    consumer: &LatencyConsumer,
    process: &mut RelayProcess,
    spec: &SteadySpec<'_>,
) -> Result<(crate::workload::Produced, Vec<(i64, i64)>)> {
    process.wait_streaming(WARM_UP_TIMEOUT).await?;
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    while consumer.count().await == 0 {
        if !process.is_running() {
            bail!("{} exited: {}", process.label, process.stderr_tail());
        }
        if Instant::now() > deadline {
            bail!(
                "{} delivered no warm-up event in {WARM_UP_TIMEOUT:?}",
                process.label
            );
        }
        one_event(db).await?;
        let wait_until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < wait_until && consumer.count().await == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // As the Debezium peer's latency script: a pause after the warm-up event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warm_up_arrivals = consumer.count().await;

    let stop_sampling = CancellationToken::new();
    let sampler = {
        let stop = stop_sampling.clone();
        let admin = db.admin().clone();
        let uses_slot = spec.kind.uses_slot();
        tokio::spawn(async move { sample_lag(admin, uses_slot, stop).await })
    };
    let produced = produce_at_rate(&db.orders, spec.producer, spec.rate, spec.seconds).await;
    let expected = produced.as_ref().map_or(0, |p| p.committed as usize) + warm_up_arrivals;
    let mut last_count = consumer.count().await;
    let mut last_change = Instant::now();
    while last_count < expected && last_change.elapsed() < STALL_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let count = consumer.count().await;
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
    }
    stop_sampling.cancel();
    let lags = sampler.await.context("the lag sampler panicked")?;
    Ok((produced?, lags))
}

async fn sample_lag(
    admin: sqlx::PgPool,
    uses_slot: bool,
    stop: CancellationToken,
) -> Vec<(i64, i64)> {
    let mut samples = Vec::new();
    while !stop.is_cancelled() {
        let lag: Result<Option<i64>, sqlx::Error> = if uses_slot {
            sqlx::query_as::<_, (Option<i64>,)>(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 \
                 FROM pg_replication_slots WHERE slot_name = $1",
            )
            .bind(SLOT)
            .fetch_optional(&admin)
            .await
            .map(|row| row.and_then(|(lag,)| lag))
        } else {
            sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM orders.outbox_event")
                .fetch_one(&admin)
                .await
                .map(|(rows,)| Some(rows))
        };
        if let Ok(Some(lag)) = lag {
            samples.push((unix_micros_now(), lag));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    samples
}

/// An independent consumer of `shipment.orders` (auto-ack) recording `(event id, arrival µs)`.
struct LatencyConsumer {
    connection: Connection,
    arrivals: Arc<Mutex<Vec<(Uuid, i64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LatencyConsumer {
    async fn start(amqp_url: &str) -> Result<Self> {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .context("connecting the latency consumer")?;
        let channel = connection.create_channel().await?;
        let mut consumer = channel
            .basic_consume(
                QUEUE.into(),
                "bench-latency".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("consuming shipment.orders")?;
        let arrivals = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
        let task = {
            let arrivals = Arc::clone(&arrivals);
            tokio::spawn(async move {
                while let Some(Ok(delivery)) = consumer.next().await {
                    let arrived = unix_micros_now();
                    if let Some(id) = event_id(&delivery.properties) {
                        arrivals.lock().await.push((id, arrived));
                    }
                }
            })
        };
        Ok(Self {
            connection,
            arrivals,
            task,
        })
    }

    async fn count(&self) -> usize {
        self.arrivals.lock().await.len()
    }

    async fn stop(self) -> Vec<(Uuid, i64)> {
        let _ = self.connection.close(200, "done".into()).await;
        self.task.abort();
        let _ = self.task.await;
        std::mem::take(&mut *self.arrivals.lock().await)
    }
}

/// The event id: `message_id`, else the `id` header (bare, or Debezium's JSON envelope).
fn event_id(properties: &BasicProperties) -> Option<Uuid> {
    if let Some(id) = properties.message_id()
        && let Ok(id) = Uuid::parse_str(id.as_str())
    {
        return Some(id);
    }
    let headers = properties.headers().as_ref()?;
    let value = headers
        .inner()
        .iter()
        .find_map(|(key, value)| (key.as_str() == "id").then_some(value))?;
    let text = match value {
        AMQPValue::LongString(text) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        AMQPValue::ShortString(text) => text.as_str().to_owned(),
        _ => return None,
    };
    id_from_header(&text)
}

fn id_from_header(text: &str) -> Option<Uuid> {
    let text = text.trim();
    if text.starts_with('{') {
        let envelope: serde_json::Value = serde_json::from_str(text).ok()?;
        return Uuid::parse_str(envelope["payload"].as_str()?).ok();
    }
    Uuid::parse_str(text).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_read_from_plain_and_debezium_headers() {
        let id = "4e8b1f0a-8d9c-4c47-9d1e-1f2a3b4c5d6e";
        assert_eq!(id_from_header(id).unwrap().to_string(), id);
        let envelope = format!(
            r#"{{"schema":{{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1}},"payload":"{id}"}}"#
        );
        assert_eq!(id_from_header(&envelope).unwrap().to_string(), id);
        assert!(id_from_header("not-an-id").is_none());
    }
}
