//! What the relay tells operators: the live [`RelayStatus`] behind `/health`, the Prometheus
//! metrics behind `/metrics`, and log set-up.
//!
//! Metrics (all prefixed `outbox_relay_`):
//! - `events_received_total{exchange}`, `events_published_total{exchange}`,
//!   `events_confirmed_total{exchange}`: counters along the pipeline;
//! - `publish_confirm_seconds`: histogram of publish-to-confirm latency;
//! - `commit_to_publish_seconds`, `commit_to_confirm_seconds`: histograms of how far behind
//!   the source each event is when the relay hands it to the broker, and when the broker
//!   confirms it (see [`CommitDelays`]);
//! - `confirmed_lsn`: the flush position (as a number), `lag_bytes`: server WAL end minus it;
//! - `oldest_unconfirmed_event_age_seconds`, `in_flight_events`;
//! - `reconnects_total{server}` (`postgresql` | `rabbitmq`);
//! - `unroutable_total{reason}` (`returned` | `nacked` | `row`), `stalled` (0/1),
//!   `standby` (0/1);
//! - `broker_blocked` (0/1): RabbitMQ blocks the publisher's connection (a memory or disk
//!   alarm); `/health` says why and is not ready meanwhile;
//! - `slot_invalidated` (0/1, replication source): PostgreSQL invalidated the slot
//!   (`max_slot_wal_keep_size`); `/health`'s `last_error` says what to run;
//! - polling source only: `polling_backlog_rows{table}`, the rows in each outbox table
//!   (`count(*)`, sampled about once a second). With that source `confirmed_lsn` and
//!   `lag_bytes` stay 0, and `oldest_unconfirmed_event_age_seconds` is the age of the oldest
//!   row still in the tables (by their `timestamp` column).
//!
//! The Prometheus recorder is process-global: [`prometheus_handle`] installs it once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{Counter, Histogram, counter, histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use pgoutput::Lsn;
use serde::Serialize;

use service_kit::logging::{LogFilter, LogFormat, LogInitError};
use service_kit::traces::{TraceGuard, TraceSettings};

pub const EVENTS_RECEIVED: &str = "outbox_relay_events_received_total";
pub const EVENTS_PUBLISHED: &str = "outbox_relay_events_published_total";
pub const EVENTS_CONFIRMED: &str = "outbox_relay_events_confirmed_total";
pub const PUBLISH_CONFIRM_SECONDS: &str = "outbox_relay_publish_confirm_seconds";
pub const COMMIT_TO_PUBLISH_SECONDS: &str = "outbox_relay_commit_to_publish_seconds";
pub const COMMIT_TO_CONFIRM_SECONDS: &str = "outbox_relay_commit_to_confirm_seconds";
pub const CONFIRMED_LSN: &str = "outbox_relay_confirmed_lsn";
pub const LAG_BYTES: &str = "outbox_relay_lag_bytes";
pub const OLDEST_UNCONFIRMED_AGE: &str = "outbox_relay_oldest_unconfirmed_event_age_seconds";
pub const IN_FLIGHT: &str = "outbox_relay_in_flight_events";
pub const RECONNECTS: &str = "outbox_relay_reconnects_total";
pub const UNROUTABLE: &str = "outbox_relay_unroutable_total";
pub const STALLED: &str = "outbox_relay_stalled";
pub const STANDBY: &str = "outbox_relay_standby";
/// 1 while RabbitMQ blocks the relay's connection (a memory or disk alarm), else 0.
pub const BROKER_BLOCKED: &str = "outbox_relay_broker_blocked";
pub const POLLING_BACKLOG_ROWS: &str = "outbox_relay_polling_backlog_rows";

/// Buckets of the commit-delay histograms: fine below 100 ms, where the benchmark reads its
/// p50 and p99, coarse up to a minute for alerting.
const COMMIT_DELAY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide Prometheus handle, installing the recorder on first use
/// (`service_kit::prometheus`). `None` if it could not be installed (then `/metrics` says so).
pub fn prometheus_handle() -> Option<PrometheusHandle> {
    service_kit::prometheus::install_global(&[
        (
            PUBLISH_CONFIRM_SECONDS,
            service_kit::prometheus::LATENCY_BUCKETS,
        ),
        (COMMIT_TO_PUBLISH_SECONDS, COMMIT_DELAY_BUCKETS),
        (COMMIT_TO_CONFIRM_SECONDS, COMMIT_DELAY_BUCKETS),
    ])
}

/// Per-exchange counters, looked up once per exchange rather than per event.
#[derive(Debug, Clone)]
pub struct ExchangeCounters {
    pub received: Counter,
    pub published: Counter,
    pub confirmed: Counter,
}

/// Cache of [`ExchangeCounters`] by exchange name.
#[derive(Debug, Default)]
pub struct ExchangeMetrics {
    by_exchange: HashMap<String, Arc<ExchangeCounters>>,
}

impl ExchangeMetrics {
    pub fn get(&mut self, exchange: &str) -> Arc<ExchangeCounters> {
        if let Some(counters) = self.by_exchange.get(exchange) {
            return Arc::clone(counters);
        }
        let label = exchange.to_owned();
        let counters = Arc::new(ExchangeCounters {
            received: counter!(EVENTS_RECEIVED, "exchange" => label.clone()),
            published: counter!(EVENTS_PUBLISHED, "exchange" => label.clone()),
            confirmed: counter!(EVENTS_CONFIRMED, "exchange" => label.clone()),
        });
        self.by_exchange.insert(label, Arc::clone(&counters));
        counters
    }
}

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800 * 1_000_000;

/// When an event was committed at the source, by the database host's wall clock, in
/// microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitTime(i64);

impl CommitTime {
    pub(crate) fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// From a pgoutput commit timestamp (microseconds since 2000-01-01).
    pub(crate) fn from_postgres_micros(micros: i64) -> Self {
        Self(micros.saturating_add(PG_EPOCH_UNIX_MICROS))
    }

    /// Whole seconds since the Unix epoch (the AMQP timestamp); 0 before it.
    pub(crate) fn unix_seconds(self) -> u64 {
        u64::try_from(self.0.div_euclid(1_000_000)).unwrap_or(0)
    }
}

/// The wall clock now, in microseconds since the Unix epoch.
pub(crate) fn unix_micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
        })
}

/// Seconds from `commit` to `now_micros`; 0 when the clocks of the two hosts disagree so
/// much that the commit looks later than now.
fn delay_seconds(commit: CommitTime, now_micros: i64) -> f64 {
    now_micros.saturating_sub(commit.0).max(0) as f64 / 1_000_000.0
}

/// How far behind the source, in time, the relay is: for each event, the delay from its
/// source commit to the moment the relay hands it to the broker (`commit_to_publish_seconds`:
/// its frames queued on the channel, recorded at every publish including replays) and to the
/// broker's confirm of it (`commit_to_confirm_seconds`: recorded with each count of
/// `events_confirmed_total`). The replication source uses the transaction's commit time; the
/// polling source the row's `timestamp` column, and records nothing for a row without one.
/// "Now" is this host's wall clock: a commit that looks later than now (clock skew between
/// hosts) records 0. Also the publish-to-confirm time (`publish_confirm_seconds`). The
/// handles are registered once, not looked up by name per event.
#[derive(Debug, Clone)]
pub(crate) struct CommitDelays {
    to_publish: Histogram,
    to_confirm: Histogram,
    publish_to_confirm: Histogram,
}

impl CommitDelays {
    pub(crate) fn register() -> Self {
        Self {
            to_publish: histogram!(COMMIT_TO_PUBLISH_SECONDS),
            to_confirm: histogram!(COMMIT_TO_CONFIRM_SECONDS),
            publish_to_confirm: histogram!(PUBLISH_CONFIRM_SECONDS),
        }
    }

    /// The broker took `seconds` from the publish to its confirm.
    pub(crate) fn confirm_took(&self, seconds: f64) {
        self.publish_to_confirm.record(seconds);
    }

    pub(crate) fn published(&self, commit: CommitTime, now_micros: i64) {
        self.to_publish.record(delay_seconds(commit, now_micros));
    }

    pub(crate) fn confirmed(&self, commit: CommitTime, now_micros: i64) {
        self.to_confirm.record(delay_seconds(commit, now_micros));
    }
}

/// The live state of one relay, shared by the pipeline and the HTTP server.
#[derive(Debug, Default)]
pub struct RelayStatus {
    streaming: AtomicBool,
    standby: AtomicBool,
    broker_connected: AtomicBool,
    confirmed_lsn: AtomicU64,
    server_wal_end: AtomicU64,
    in_flight: AtomicU64,
    published: AtomicU64,
    confirmed: AtomicU64,
    unroutable: AtomicU64,
    stalled: Mutex<Option<String>>,
    broker_blocked: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
}

/// The `/health` body.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct HealthReport {
    /// Streaming and broker connected and not stalled.
    pub ready: bool,
    pub streaming: bool,
    pub standby: bool,
    pub broker_connected: bool,
    /// Why the relay does not advance (an unroutable event or row), if it does not.
    pub stalled: Option<String>,
    /// Why RabbitMQ holds the relay's publishes back (`connection.blocked`: a memory or disk
    /// alarm), while it does; not ready meanwhile. Events wait in the bounded window.
    #[serde(default)]
    pub broker_blocked: Option<String>,
    pub last_confirmed_lsn: String,
    pub lag_bytes: u64,
    pub in_flight_events: u64,
    pub events_published: u64,
    pub events_confirmed: u64,
    pub unroutable_events: u64,
    pub last_error: Option<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RelayStatus {
    pub fn set_streaming(&self, streaming: bool) {
        self.streaming.store(streaming, Ordering::Relaxed);
    }

    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
        metrics::gauge!(STANDBY).set(if standby { 1.0 } else { 0.0 });
    }

    pub fn set_broker_connected(&self, connected: bool) {
        self.broker_connected.store(connected, Ordering::Relaxed);
    }

    pub fn set_confirmed_lsn(&self, lsn: Lsn) {
        self.confirmed_lsn.store(lsn.0, Ordering::Relaxed);
        metrics::gauge!(CONFIRMED_LSN).set(lsn.0 as f64);
    }

    pub fn set_server_wal_end(&self, lsn: Lsn) {
        self.server_wal_end.fetch_max(lsn.0, Ordering::Relaxed);
    }

    pub fn set_in_flight(&self, events: u64) {
        self.in_flight.store(events, Ordering::Relaxed);
    }

    /// Events published and not yet confirmed, as last set.
    pub fn in_flight(&self) -> usize {
        usize::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    pub fn add_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_confirmed(&self) {
        self.confirmed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_unroutable(&self) {
        self.unroutable.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_stalled(&self, reason: Option<String>) {
        metrics::gauge!(STALLED).set(if reason.is_some() { 1.0 } else { 0.0 });
        *lock(&self.stalled) = reason;
    }

    /// Sets the broker's block reason (None when not blocked) and
    /// `outbox_relay_broker_blocked`.
    pub fn set_broker_blocked(&self, reason: Option<String>) {
        metrics::gauge!(BROKER_BLOCKED).set(if reason.is_some() { 1.0 } else { 0.0 });
        *lock(&self.broker_blocked) = reason;
    }

    pub fn set_last_error(&self, error: Option<String>) {
        *lock(&self.last_error) = error;
    }

    pub fn lag_bytes(&self) -> u64 {
        self.server_wal_end
            .load(Ordering::Relaxed)
            .saturating_sub(self.confirmed_lsn.load(Ordering::Relaxed))
    }

    /// A snapshot for `/health`.
    pub fn report(&self) -> HealthReport {
        let streaming = self.streaming.load(Ordering::Relaxed);
        let broker_connected = self.broker_connected.load(Ordering::Relaxed);
        let stalled = lock(&self.stalled).clone();
        let broker_blocked = lock(&self.broker_blocked).clone();
        HealthReport {
            ready: streaming && broker_connected && stalled.is_none() && broker_blocked.is_none(),
            streaming,
            standby: self.standby.load(Ordering::Relaxed),
            broker_connected,
            stalled,
            broker_blocked,
            last_confirmed_lsn: pgoutput::Lsn(self.confirmed_lsn.load(Ordering::Relaxed))
                .to_string(),
            lag_bytes: self.lag_bytes(),
            in_flight_events: self.in_flight.load(Ordering::Relaxed),
            events_published: self.published.load(Ordering::Relaxed),
            events_confirmed: self.confirmed.load(Ordering::Relaxed),
            unroutable_events: self.unroutable.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
        }
    }
}

/// Installs the global tracing subscriber (`service_kit::logging`): the `RUST_LOG` filter,
/// checked with the configuration, and the OpenTelemetry layer of `traces`. Keep the guard
/// until exit.
pub fn init_logging(
    filter: &LogFilter,
    format: LogFormat,
    traces: &TraceSettings,
) -> Result<TraceGuard, LogInitError> {
    service_kit::logging::init_with_traces(filter, &[], format, traces)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn postgres_commit_times_count_from_2000() {
        // 2026-01-01T00:00:00.250Z as pgoutput sends it.
        let commit = CommitTime::from_postgres_micros(820_540_800_250_000);
        assert_eq!(commit, CommitTime::from_unix_micros(1_767_225_600_250_000));
        assert_eq!(commit.unix_seconds(), 1_767_225_600);
        assert_eq!(CommitTime::from_unix_micros(-1).unix_seconds(), 0);
    }

    #[test]
    fn commit_delays_are_seconds_and_never_negative() {
        let commit = CommitTime::from_unix_micros(1_767_225_600_000_000);
        assert_eq!(delay_seconds(commit, 1_767_225_600_001_500), 0.0015);
        assert_eq!(delay_seconds(commit, 1_767_225_602_000_000), 2.0);
        // The database host's clock ahead of ours.
        assert_eq!(delay_seconds(commit, 1_767_225_599_000_000), 0.0);
        // Microseconds, not seconds or milliseconds: after 2020 in microseconds.
        assert!(unix_micros_now() > 1_577_836_800_000_000);
    }
}
