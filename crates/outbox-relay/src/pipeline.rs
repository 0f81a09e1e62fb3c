//! The pipeline: source → route → encode → publish → confirm → ack, for every source.
//!
//! One task drives everything with `select!` over the shutdown signal, a timer, the sink's
//! confirms (in publish order) and the [`Source`]. It reads from the source only while the
//! [`InFlightWindow`] has room, so memory is bounded whatever the transaction size, and many
//! confirms are in flight at once. Its state is three small enums: [`Reading`] (is the
//! source read, and if not why), [`Publishing`] (flowing, or paused and probing after the
//! broker refused an event) and [`Lifecycle`] (running, or draining for a shutdown).
//!
//! Guarantees and how they are kept:
//! - **Nothing acked that the broker did not take.** The position acked to the source is the
//!   end of the newest transaction whose events, and all before them, were confirmed as
//!   delivered (see `window`). A nack or a return is never delivered (see [`Sink`]).
//! - **Returns and nacks stall, never drop.** A returned (no queue bound) or nacked event
//!   stops progress: the relay logs it, counts `outbox_relay_unroutable_total`, shows it in
//!   `/health`, waits with backoff (up to 5 s), and publishes that event again alone; once
//!   the broker takes it, every later in-flight event is published again in order (events of
//!   one aggregate keep commit order; duplicates carry the same `message_id`).
//! - **Unroutable rows stall, or go to the dead-letter exchange.** An outbox row the router
//!   cannot turn into a message (missing column, NULL routing value) is logged and counted.
//!   With `RELAY_DEAD_LETTER_EXCHANGE` it is published there (body: the row as JSON, header
//!   `x-outbox-relay-error`); without it, the relay stops reading at that row and reports
//!   the reason in `/health`. The events before it are delivered and acked. A source that
//!   can show a fixed row (polling) is then rewound and read again with backoff, so fixing
//!   or deleting the row resumes; the WAL cannot change, so the replication source stays
//!   stalled until an operator fixes the cause and restarts it (the row is read again: the
//!   flush position never passed it).
//! - **Lost connections are survived.** A sink failure publishes the whole window again on a
//!   new connection; a source failure lets the window drain, then reopens the source from the
//!   flush position. Both with backoff.
//! - **Standby.** A source held by another relay answers [`Opened::Standby`]; the pipeline
//!   reports it and tries again every second.
//! - **A quiet outbox does not pin WAL.** While nothing is in flight and no transaction is
//!   open, idle positions (keepalives) are acked.
//! - **Bounded shutdown.** Stop reading, wait for in-flight confirms (up to
//!   `RELAY_SHUTDOWN_TIMEOUT_SECS`), ack the final position, close both connections (each
//!   bounded). Every wait of the loop (reading, confirms, a source's open, a sink's
//!   reconnect, the pause after a refusal, a standby's retry) watches the shutdown signal;
//!   only a publish itself is awaited whole (it queues frames, or declares an exchange once
//!   per connection).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::broker::BrokerConnection;
use crate::config::Config;
use crate::message::{self, Encoding, MessageError};
use crate::router::{Router, RouterConfig};
use crate::row::Row;
use crate::sink::{Connector, Outcome, OutgoingMessage, Sink, SinkError};
use crate::source::{Opened, Position, Source, SourceError, SourceEvent};
use crate::telemetry::{
    CommitDelays, CommitTime, ExchangeCounters, ExchangeMetrics, IN_FLIGHT, LAG_BYTES,
    OLDEST_UNCONFIRMED_AGE, RECONNECTS, RelayStatus, UNROUTABLE, unix_micros_now,
};
use crate::window::InFlightWindow;

/// A publish whose confirm takes longer than this means a broken broker connection.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a standby relay tries to take the source.
const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between retries (source reconnects, refused events, stalled rows).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often gauges are refreshed and stuck confirms looked for.
const TICK: Duration = Duration::from_millis(250);

/// What the pipeline needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub router: RouterConfig,
    pub encoding: Encoding,
    pub dead_letter_exchange: Option<String>,
    pub window_events: usize,
    pub window_bytes: usize,
    pub shutdown_timeout: Duration,
}

impl Settings {
    pub(crate) fn from_config(config: &Config) -> Self {
        Self {
            router: config.router.clone(),
            encoding: Encoding::from_config(config),
            dead_letter_exchange: config.dead_letter_exchange.clone(),
            window_events: config.window_events,
            window_bytes: config.window_bytes,
            shutdown_timeout: config.shutdown_timeout,
        }
    }
}

/// An event in the window with its table, its exchange's counters and its transaction's
/// commit time.
#[derive(Debug)]
struct Queued {
    message: OutgoingMessage,
    table: u32,
    counters: Arc<ExchangeCounters>,
    commit_time: Option<CommitTime>,
}

/// Whether the source is read, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// No session: open one at `at`, once the window has drained.
    Reconnecting {
        at: Instant,
    },
    /// Another relay holds the source: try again at `at`.
    Standby {
        at: Instant,
    },
    Streaming,
    /// An unroutable row and no dead-letter exchange: nothing after it is read. A source
    /// that can show a fixed row is read again from it at `retry_at`.
    Stalled {
        reason: String,
        retry_at: Option<Instant>,
    },
}

/// Whether events are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publishing {
    Flowing,
    /// After a return or nack: nothing is published before `until`.
    Paused {
        until: Instant,
    },
    /// Then the refused event alone, until the broker takes it.
    Probing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Running,
    /// Shutting down: no more reading; in-flight confirms awaited until `deadline`.
    Draining {
        deadline: Instant,
    },
}

/// The running pipeline.
pub(crate) struct Pipeline<S: Source, C: Connector> {
    settings: Settings,
    status: Arc<RelayStatus>,
    router: Router,
    exchange_metrics: ExchangeMetrics,
    commit_delays: CommitDelays,
    window: InFlightWindow<Queued, S::Position>,
    confirms: FuturesOrdered<<C::Sink as Sink>::Confirm>,
    broker: BrokerConnection<C>,
    source: S,
    reading: Reading,
    publishing: Publishing,
    lifecycle: Lifecycle,
    /// Source sessions opened so far (the first is not a reconnect).
    sessions: u64,
    in_transaction: bool,
    /// The open transaction's commit time, when the source knows it.
    commit_time: Option<CommitTime>,
    /// The stalled row's table and reason while reported (logged and counted once).
    row_stall: Option<(u32, String)>,
    /// When the broker connection was last seen blocked by a resource alarm: confirms are
    /// late then, not lost, so the confirm timeout counts from CONFIRM_TIMEOUT after it.
    blocked_seen: Option<Instant>,
    source_backoff: Backoff,
    refused_backoff: Backoff,
    row_backoff: Backoff,
}

impl<S: Source, C: Connector> std::fmt::Debug for Pipeline<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("reading", &self.reading)
            .field("publishing", &self.publishing)
            .field("in_flight", &self.window.events())
            .field("flushed", &self.window.flushed())
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch now: the AMQP timestamp of an event without a commit time.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl<S: Source, C: Connector> Pipeline<S, C> {
    pub(crate) fn new(
        settings: Settings,
        status: Arc<RelayStatus>,
        source: S,
        connector: C,
        sink: C::Sink,
        start: S::Position,
    ) -> Self {
        if let Some(lsn) = start.as_lsn() {
            status.set_confirmed_lsn(lsn);
        }
        Self {
            router: Router::new(settings.router.clone()),
            exchange_metrics: ExchangeMetrics::default(),
            commit_delays: CommitDelays::register(),
            window: InFlightWindow::new(settings.window_events, settings.window_bytes, start),
            confirms: FuturesOrdered::new(),
            broker: BrokerConnection::new(connector, sink, &status),
            source,
            reading: Reading::Reconnecting { at: Instant::now() },
            publishing: Publishing::Flowing,
            lifecycle: Lifecycle::Running,
            sessions: 0,
            in_transaction: false,
            commit_time: None,
            row_stall: None,
            blocked_seen: None,
            source_backoff: Backoff::new(MAX_BACKOFF),
            refused_backoff: Backoff::new(MAX_BACKOFF),
            row_backoff: Backoff::new(MAX_BACKOFF),
            settings,
            status,
        }
    }

    /// Runs until `shutdown` resolves and the window has drained (or the shutdown timeout).
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send + '_>> = Box::pin(shutdown);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let running = self.lifecycle == Lifecycle::Running;
            if self.broker.is_lost() {
                self.broker_failed("connection to RabbitMQ closed").await;
            }
            if self
                .broker
                .retry_at()
                .is_some_and(|at| at <= Instant::now())
            {
                tokio::select! {
                    biased;
                    () = &mut shutdown, if running => self.begin_shutdown(),
                    () = self.broker.reconnect(&self.status) => {}
                }
            }
            if let Err(error) = self.publish_ready().await {
                self.broker_failed(&error.to_string()).await;
            }
            if let Lifecycle::Draining { deadline } = self.lifecycle {
                if self.window.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        in_flight = self.window.events(),
                        "shutdown timeout: stopping with events unconfirmed (they will be \
                         published again at the next start)"
                    );
                    break;
                }
            } else if let Some(from) = self.due_to_open() {
                tokio::select! {
                    biased;
                    () = &mut shutdown => self.begin_shutdown(),
                    opened = self.source.open(from) => self.on_opened(opened),
                }
                continue;
            } else {
                self.rewind_if_stalled();
            }
            let can_read = self.reading == Reading::Streaming
                && self.lifecycle == Lifecycle::Running
                && self.window.has_room();
            tokio::select! {
                biased;
                () = &mut shutdown, if self.lifecycle == Lifecycle::Running => {
                    self.begin_shutdown();
                }
                // Before the busy branches so that a steady stream cannot starve it.
                _ = tick.tick() => self.on_tick().await,
                Some(outcome) = self.confirms.next(), if !self.confirms.is_empty() => {
                    self.on_confirm(outcome).await;
                }
                event = self.source.next(), if can_read => self.on_source_event(event),
            }
        }
        self.finish().await;
    }

    /// The position to open the source from, when a (re)connect is due: not before the
    /// window drained, so a new session starts from the flush position.
    fn due_to_open(&self) -> Option<S::Position> {
        let at = match self.reading {
            Reading::Reconnecting { at } | Reading::Standby { at } => at,
            Reading::Streaming | Reading::Stalled { .. } => return None,
        };
        (self.window.is_empty() && Instant::now() >= at).then(|| self.window.flushed())
    }

    /// A source that can show a fixed row reads again from the stalled row, once everything
    /// before it is delivered and acked.
    fn rewind_if_stalled(&mut self) {
        if let Reading::Stalled {
            retry_at: Some(at), ..
        } = self.reading
            && self.window.is_empty()
            && Instant::now() >= at
        {
            tracing::debug!("reading the stalled row again");
            self.source.rewind();
            self.in_transaction = false;
            self.reading = Reading::Streaming;
        }
    }

    fn begin_shutdown(&mut self) {
        tracing::info!(
            in_flight = self.window.events(),
            "shutting down: stopped reading, waiting for in-flight confirms"
        );
        self.lifecycle = Lifecycle::Draining {
            deadline: Instant::now() + self.settings.shutdown_timeout,
        };
    }

    async fn finish(&mut self) {
        let flushed = self.window.flushed();
        self.source.close(flushed).await;
        self.broker.close().await;
        self.status.set_streaming(false);
        self.status.set_broker_connected(false);
        tracing::info!(flushed = %flushed, "relay stopped");
    }

    fn on_opened(&mut self, opened: Result<Opened<S::Position>, SourceError>) {
        match opened {
            Ok(Opened::Streaming { from }) => {
                if matches!(self.reading, Reading::Standby { .. }) {
                    tracing::info!("took over the source from the other relay");
                }
                tracing::info!(%from, "streaming");
                if self.sessions > 0 {
                    metrics::counter!(RECONNECTS, "server" => "postgresql").increment(1);
                }
                self.sessions += 1;
                self.status.set_standby(false);
                self.status.set_streaming(true);
                self.status.set_last_error(None);
                self.source_backoff.reset();
                self.in_transaction = false;
                // Table schemas come again on a new session.
                self.router = Router::new(self.settings.router.clone());
                if let Some(position) = self.window.advance_idle(from) {
                    self.report_flushed(position);
                }
                self.reading = Reading::Streaming;
            }
            Ok(Opened::Standby) => {
                if !matches!(self.reading, Reading::Standby { .. }) {
                    tracing::info!(
                        "the source is held by another relay: standing by, retrying every second"
                    );
                }
                self.status.set_standby(true);
                self.status.set_streaming(false);
                self.reading = Reading::Standby {
                    at: Instant::now() + STANDBY_RETRY,
                };
            }
            Err(error) => self.source_failed(error),
        }
    }

    fn source_failed(&mut self, error: SourceError) {
        self.source.disconnect();
        self.in_transaction = false;
        self.status.set_streaming(false);
        let delay = self.source_backoff.next_delay();
        tracing::warn!(%error, retry_in = ?delay, "source lost; reconnecting once in-flight events are confirmed");
        self.status.set_last_error(Some(error.to_string()));
        self.reading = Reading::Reconnecting {
            at: Instant::now() + delay,
        };
    }

    fn on_source_event(&mut self, event: Result<SourceEvent<S::Position>, SourceError>) {
        let event = match event {
            Ok(event) => event,
            Err(error) => return self.source_failed(error),
        };
        match event {
            SourceEvent::Table(schema) => self.router.on_table(&schema),
            SourceEvent::Begin { commit_time } => {
                self.in_transaction = true;
                self.commit_time = commit_time;
            }
            SourceEvent::Row(row) => self.on_row(&row),
            SourceEvent::Commit { position } => {
                self.in_transaction = false;
                if let Some(position) = self.window.push_commit(position) {
                    self.flushed(position);
                }
            }
            SourceEvent::Idle { position } => {
                if let Some(lsn) = position.and_then(|p| p.as_lsn()) {
                    self.status.set_server_wal_end(lsn);
                }
                if !self.in_transaction
                    && let Some(position) = position.and_then(|p| self.window.advance_idle(p))
                {
                    self.flushed(position);
                }
                // Nothing left to read: a stalled row was deleted.
                if self.reading == Reading::Streaming {
                    self.clear_row_stall(None);
                }
            }
        }
    }

    fn on_row(&mut self, row: &Row) {
        let timestamp = self
            .commit_time
            .map_or_else(unix_now, CommitTime::unix_seconds);
        match message::for_row(&self.router, &self.settings.encoding, row, timestamp) {
            Ok(None) => {}
            Ok(Some(message)) => self.enqueue(message, row.table),
            Err(reason) => self.on_unroutable_row(row, &reason),
        }
    }

    fn enqueue(&mut self, message: OutgoingMessage, table: u32) {
        let counters = self.exchange_metrics.get(&message.exchange);
        counters.received.increment(1);
        let size = message.size();
        let key = message.ordering_key;
        self.window.push_keyed_event(
            Queued {
                message,
                table,
                counters,
                commit_time: self.commit_time,
            },
            size,
            key,
            Instant::now().into_std(),
        );
    }

    fn on_unroutable_row(&mut self, row: &Row, reason: &MessageError) {
        let table = self
            .router
            .routed_table(row.table)
            .unwrap_or("unknown table")
            .to_owned();
        if let Some(exchange) = &self.settings.dead_letter_exchange {
            metrics::counter!(UNROUTABLE, "reason" => "row").increment(1);
            self.status.add_unroutable();
            tracing::error!(%table, %reason, dead_letter_exchange = %exchange, "unroutable outbox row: dead-lettered");
            let message = message::dead_letter(&self.router, row, exchange, &table, reason);
            self.enqueue(message, row.table);
            return;
        }
        let stalled = format!("unroutable outbox row in {table}: {reason}");
        if self
            .row_stall
            .as_ref()
            .is_none_or(|(_, reported)| *reported != stalled)
        {
            metrics::counter!(UNROUTABLE, "reason" => "row").increment(1);
            self.status.add_unroutable();
            tracing::error!(
                %table, %reason,
                "unroutable outbox row: the relay stops here (nothing after it is published) \
                 until the row or its cause is fixed, or RELAY_DEAD_LETTER_EXCHANGE is set"
            );
        }
        self.status.set_stalled(Some(stalled.clone()));
        self.row_stall = Some((row.table, stalled.clone()));
        let retry_at =
            S::REREADS_CHANGED_ROWS.then(|| Instant::now() + self.row_backoff.next_delay());
        self.reading = Reading::Stalled {
            reason: stalled,
            retry_at,
        };
    }

    /// Events of the stalled row's table (any table: `None`) get through: the row was fixed
    /// or deleted. (Other tables of a re-reading source flow between the stalled row's
    /// retries: their events say nothing about it.)
    fn clear_row_stall(&mut self, table: Option<u32>) {
        let fixed = self
            .row_stall
            .as_ref()
            .is_some_and(|(stalled, _)| table.is_none_or(|table| table == *stalled));
        if fixed {
            self.row_stall = None;
            tracing::info!("the stalled row is fixed or gone: resuming");
            self.row_backoff.reset();
            if self.publishing == Publishing::Flowing {
                self.status.set_stalled(None);
            }
        }
    }

    /// The flush position moved: ack it to the source.
    fn flushed(&mut self, position: S::Position) {
        self.source.ack(position);
        self.report_flushed(position);
    }

    fn report_flushed(&self, position: S::Position) {
        if let Some(lsn) = position.as_lsn() {
            self.status.set_confirmed_lsn(lsn);
        }
    }

    /// Publishes every unpublished event the current mode allows, then flushes the sink (one
    /// write for the whole run of publishes).
    async fn publish_ready(&mut self) -> Result<(), SinkError> {
        let published = self.publish_each_ready().await;
        if let Some(sink) = self.broker.sink() {
            sink.flush();
        }
        published
    }

    async fn publish_each_ready(&mut self) -> Result<(), SinkError> {
        let Some(sink) = self.broker.sink() else {
            return Ok(());
        };
        if let Publishing::Paused { until } = self.publishing {
            if Instant::now() < until {
                return Ok(());
            }
            self.publishing = Publishing::Probing;
        }
        loop {
            // While probing after a return/nack, one event at a time until one gets through.
            if self.publishing == Publishing::Probing && self.window.published() > 0 {
                return Ok(());
            }
            let now = Instant::now().into_std();
            let Some(queued) = self.window.next_to_publish(now) else {
                return Ok(());
            };
            let confirm = sink.publish(&queued.message).await?;
            if let Some(commit_time) = queued.commit_time {
                self.commit_delays.published(commit_time, unix_micros_now());
            }
            queued.counters.published.increment(1);
            self.status.add_published();
            self.confirms.push_back(confirm);
        }
    }

    async fn on_confirm(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => {
                let Some((event, moved)) = self.window.confirm_oldest() else {
                    return;
                };
                if let Some(published_at) = event.published_at {
                    self.commit_delays
                        .confirm_took(published_at.elapsed().as_secs_f64());
                }
                if let Some(commit_time) = event.message.commit_time {
                    self.commit_delays.confirmed(commit_time, unix_micros_now());
                }
                event.message.counters.confirmed.increment(1);
                self.status.add_confirmed();
                if let Some(position) = moved {
                    self.flushed(position);
                }
                if self.publishing == Publishing::Probing {
                    self.publishing = Publishing::Flowing;
                    self.refused_backoff.reset();
                    self.status
                        .set_stalled(self.row_stall.as_ref().map(|(_, reason)| reason.clone()));
                    tracing::info!("the broker routes events again: resuming");
                }
                if self.reading == Reading::Streaming {
                    self.clear_row_stall(Some(event.message.table));
                }
            }
            Outcome::Returned {
                reply_code,
                reply_text,
            } => self.on_refused(
                "returned",
                &format!(
                    "returned by the broker ({reply_code} {reply_text}): no queue is bound to \
                     its exchange"
                ),
            ),
            Outcome::Nacked => {
                self.on_refused("nacked", "nacked by the broker");
                // A nack can be the state of this channel rather than of the queue: on RabbitMQ
                // 3.10, a channel that published to a quorum queue while its leader was dying
                // goes on refusing it after a new leader is elected (seen in the cluster fault
                // run: minutes of nacks, while a new channel publishes at once). The retry goes
                // out on a new connection; a queue that really refuses (full) refuses it again.
                self.broker.renew().await;
            }
            Outcome::Failed(reason) => self.broker_failed(&reason).await,
        }
    }

    /// A return or nack: pause, then publish the event again alone, then the rest in order.
    /// The confirms still outstanding are dropped: everything from the refused event on is
    /// published again anyway, so nothing here waits.
    fn on_refused(&mut self, label: &'static str, reason: &str) {
        metrics::counter!(UNROUTABLE, "reason" => label).increment(1);
        self.status.add_unroutable();
        let (exchange, event_id) = self
            .window
            .oldest()
            .map(|queued| {
                (
                    queued.message.exchange.as_str(),
                    queued.message.message_id.as_str(),
                )
            })
            .unwrap_or_default();
        let delay = self.refused_backoff.next_delay();
        if self.publishing == Publishing::Probing {
            tracing::debug!(%exchange, %event_id, retry_in = ?delay, "still not routable");
        } else {
            tracing::error!(%exchange, %event_id, %reason, "event not delivered: stalling and retrying until the broker routes it");
        }
        self.status.set_stalled(Some(format!(
            "event {event_id} to exchange {exchange:?} was {reason}; retrying"
        )));
        self.confirms = FuturesOrdered::new();
        self.window.replay_all();
        self.publishing = Publishing::Paused {
            until: Instant::now() + delay,
        };
    }

    /// The sink connection is unusable: drop it, publish the whole window again later.
    async fn broker_failed(&mut self, reason: &str) {
        self.confirms = FuturesOrdered::new();
        self.window.replay_all();
        if self.publishing == Publishing::Probing {
            // The probe's answer is lost with the connection: probe again.
            self.publishing = Publishing::Paused {
                until: Instant::now(),
            };
        }
        self.broker
            .fail(
                &self.status,
                reason,
                "will reconnect and publish in-flight events again",
                self.window.events(),
            )
            .await;
    }

    async fn on_tick(&mut self) {
        let in_flight = self.window.events();
        self.status.set_in_flight(in_flight as u64);
        metrics::gauge!(IN_FLIGHT).set(in_flight as f64);
        let age = self
            .window
            .oldest_received_at()
            .map_or(0.0, |at| at.elapsed().as_secs_f64());
        metrics::gauge!(OLDEST_UNCONFIRMED_AGE).set(age.max(self.source.backlog_age()));
        if let Some(lsn) = self.source.server_position() {
            self.status.set_server_wal_end(lsn);
        }
        metrics::gauge!(LAG_BYTES).set(self.status.lag_bytes() as f64);
        let blocked = self.broker.sink().and_then(|sink| sink.blocked());
        if blocked.is_some() {
            self.blocked_seen = Some(Instant::now());
        }
        self.status.set_broker_blocked(blocked);
        let alarm_recently = self
            .blocked_seen
            .is_some_and(|at| at.elapsed() <= CONFIRM_TIMEOUT);
        if !self.confirms.is_empty()
            && !alarm_recently
            && self
                .window
                .oldest_published_at()
                .is_some_and(|at| at.elapsed() > CONFIRM_TIMEOUT)
        {
            self.broker_failed(&format!(
                "no confirm within {} s",
                CONFIRM_TIMEOUT.as_secs()
            ))
            .await;
        }
    }
}
