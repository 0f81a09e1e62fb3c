//! The pipeline: replication stream → decode → route → encode → publish → confirm → flush.
//!
//! One task drives everything with `select!` over the shutdown signal, the broker's confirms
//! (in publish order), the replication stream and a timer. It reads from the stream only
//! while the [`InFlightWindow`] has room, so memory is bounded whatever the transaction size,
//! and many confirms are in flight at once.
//!
//! Guarantees and how they are kept:
//! - **Nothing confirmed that the broker did not take.** The flush position reported to
//!   PostgreSQL is the end of the newest transaction whose events, and all before them, were
//!   acked and not returned (see `window`).
//! - **Returns and nacks stall, never drop.** A returned (no queue bound) or nacked event
//!   stops progress: the relay logs it, counts `outbox_relay_unroutable_total`, shows it in
//!   `/health`, waits with backoff (up to 5 s), and publishes that event again alone; once
//!   the broker takes it, every later in-flight event is published again in order (events of
//!   one aggregate keep commit order; duplicates carry the same `message_id`).
//! - **Unroutable rows stall, or go to the dead-letter exchange.** An outbox row the router
//!   cannot turn into a message (missing column, NULL routing value) is logged and counted.
//!   With `RELAY_DEAD_LETTER_EXCHANGE` it is published there (body: the row as JSON, header
//!   `x-outbox-relay-error`); without it, the relay stops reading at that row and reports
//!   the reason in `/health` until an operator fixes the row's cause and restarts it (the
//!   row is read again: the flush position never passed it).
//! - **Lost connections are survived.** A broker failure publishes the whole window again
//!   on a new connection; a replication failure lets the window drain, then reconnects from
//!   the flush position. Both with backoff.
//! - **A quiet outbox does not pin WAL.** While nothing is in flight and no transaction is
//!   open, keepalives advance the flush position to the server's WAL end.
//! - **Graceful shutdown.** Stop reading, wait for in-flight confirms (bounded by
//!   `RELAY_SHUTDOWN_TIMEOUT_SECS`), report the final flush position, close.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use pgoutput::{Insert, LogicalReplicationMessage, Lsn};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::broker::BrokerConnection;
use crate::config::Config;
use crate::message;
use crate::router::Router;
use crate::sink::{AmqpSink, Outcome, OutgoingMessage, PendingConfirm, SinkError};
use crate::source::{self, ReplicationStream, SourceEvent, StreamError};
use crate::telemetry::{
    CommitDelays, CommitTime, ExchangeCounters, ExchangeMetrics, IN_FLIGHT, LAG_BYTES,
    OLDEST_UNCONFIRMED_AGE, RECONNECTS, RelayStatus, UNROUTABLE, unix_micros_now,
};
use crate::window::InFlightWindow;

/// A publish whose confirm takes longer than this means a broken broker connection.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a standby relay tries to take the slot.
const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// An event in the window with its exchange's counters and its transaction's commit time.
#[derive(Debug)]
struct Queued {
    message: OutgoingMessage,
    counters: Arc<ExchangeCounters>,
    commit_time: CommitTime,
}

/// The running pipeline's state.
pub(crate) struct Pipeline {
    config: Arc<Config>,
    status: Arc<RelayStatus>,
    router: Router,
    exchange_metrics: ExchangeMetrics,
    commit_delays: CommitDelays,
    window: InFlightWindow<Queued>,
    confirms: FuturesOrdered<PendingConfirm>,
    broker: BrokerConnection,
    source: Option<ReplicationStream>,
    source_retry_at: Instant,
    source_backoff: Backoff,
    standby: bool,
    /// Replication sessions started so far (the first is not a reconnect).
    sessions: u64,
    in_transaction: bool,
    /// The open transaction's commit time (pgoutput sends it in Begin).
    commit_time: CommitTime,
    /// After a return/nack: publishing waits until then, then probes with one event.
    paused_until: Option<Instant>,
    probing: bool,
    return_backoff: Backoff,
    /// An unroutable row with no dead-letter exchange: reading stops here.
    stalled_on_row: Option<String>,
    shutdown_deadline: Option<Instant>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("in_flight", &self.window.events())
            .field("flushed", &self.window.flushed())
            .finish_non_exhaustive()
    }
}

async fn next_source_event(
    source: &mut Option<ReplicationStream>,
) -> Result<SourceEvent, StreamError> {
    match source {
        Some(stream) => stream.recv().await,
        None => std::future::pending().await,
    }
}

impl Pipeline {
    pub(crate) fn new(
        config: Arc<Config>,
        status: Arc<RelayStatus>,
        sink: AmqpSink,
        start: Lsn,
    ) -> Self {
        status.set_confirmed_lsn(start.0);
        let now = Instant::now();
        Self {
            router: Router::new(config.router.clone()),
            exchange_metrics: ExchangeMetrics::default(),
            commit_delays: CommitDelays::register(),
            window: InFlightWindow::new(config.window_events, config.window_bytes, start),
            confirms: FuturesOrdered::new(),
            broker: BrokerConnection::new(sink, &status),
            source: None,
            source_retry_at: now,
            source_backoff: Backoff::new(Duration::from_secs(5)),
            standby: false,
            sessions: 0,
            in_transaction: false,
            commit_time: CommitTime::from_unix_micros(0),
            paused_until: None,
            probing: false,
            return_backoff: Backoff::new(Duration::from_secs(5)),
            stalled_on_row: None,
            shutdown_deadline: None,
            config,
            status,
        }
    }

    /// Runs until `shutdown` resolves and the window has drained (or the shutdown timeout).
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send + '_>> = Box::pin(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.ensure_sink().await;
            if let Err(error) = self.publish_ready().await {
                self.broker_failed(error.to_string()).await;
            }
            if let Some(deadline) = self.shutdown_deadline {
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
            } else if self.source.is_none()
                && self.window.is_empty()
                && Instant::now() >= self.source_retry_at
            {
                tokio::select! {
                    biased;
                    () = &mut shutdown => self.begin_shutdown(),
                    () = self.connect_source() => {}
                }
                continue;
            }
            let can_read = self.source.is_some()
                && self.shutdown_deadline.is_none()
                && self.stalled_on_row.is_none()
                && self.window.has_room();
            tokio::select! {
                biased;
                () = &mut shutdown, if self.shutdown_deadline.is_none() => self.begin_shutdown(),
                // Before the busy branches so that a steady stream cannot starve it.
                _ = tick.tick() => self.on_tick().await,
                Some(outcome) = self.confirms.next(), if !self.confirms.is_empty() => {
                    self.on_confirm(outcome).await;
                }
                event = next_source_event(&mut self.source), if can_read => {
                    self.on_source_event(event);
                }
            }
        }
        self.finish().await;
    }

    fn begin_shutdown(&mut self) {
        tracing::info!(
            in_flight = self.window.events(),
            "shutting down: stopped reading, waiting for in-flight confirms"
        );
        self.shutdown_deadline = Some(Instant::now() + self.config.shutdown_timeout);
    }

    async fn finish(&mut self) {
        let flushed = self.window.flushed();
        if let Some(source) = self.source.take() {
            source
                .finish(
                    flushed,
                    self.config.status_interval + Duration::from_secs(2),
                )
                .await;
        }
        self.broker.close().await;
        self.status.set_streaming(false);
        self.status.set_broker_connected(false);
        tracing::info!(flushed = %flushed, "relay stopped");
    }

    /// Starts a replication session from the later of the slot's and our own position.
    async fn connect_source(&mut self) {
        let slot = &self.config.slot;
        let start = match source::slot_position(&self.config.postgres, slot).await {
            Ok(Some(position)) => {
                self.status.set_server_wal_end(position.server_wal.0);
                position.confirmed.max(self.window.flushed())
            }
            Ok(None) => {
                self.source_failed(StreamError::Setup(format!(
                    "replication slot {slot:?} no longer exists"
                )));
                return;
            }
            Err(error) => {
                self.source_failed(StreamError::Setup(error.to_string()));
                return;
            }
        };
        match ReplicationStream::start(
            &self.config.postgres,
            slot,
            &self.config.publication,
            start,
            self.config.status_interval,
        )
        .await
        {
            Ok(stream) => {
                if self.standby {
                    tracing::info!(slot = %slot, "took over the replication slot");
                }
                tracing::info!(slot = %slot, from = %start, "streaming");
                if self.sessions > 0 {
                    metrics::counter!(RECONNECTS, "server" => "postgresql").increment(1);
                }
                self.sessions += 1;
                self.standby = false;
                self.status.set_standby(false);
                self.status.set_streaming(true);
                self.status.set_last_error(None);
                self.source_backoff.reset();
                self.in_transaction = false;
                // Relation messages come again on a new session.
                self.router = Router::new(self.config.router.clone());
                if start > self.window.flushed() {
                    self.window.advance_idle(start);
                    self.status.set_confirmed_lsn(start.0);
                }
                self.source = Some(stream);
            }
            Err(error) => self.source_failed(error),
        }
    }

    fn source_failed(&mut self, error: StreamError) {
        self.source = None;
        self.in_transaction = false;
        self.status.set_streaming(false);
        if let StreamError::SlotBusy(slot) = &error {
            if !self.standby {
                tracing::info!(
                    slot = %slot,
                    "slot is held by another relay: standing by, retrying every second"
                );
            }
            self.standby = true;
            self.status.set_standby(true);
            self.source_retry_at = Instant::now() + STANDBY_RETRY;
            return;
        }
        let delay = self.source_backoff.next_delay();
        tracing::warn!(%error, retry_in = ?delay, "replication stream lost; reconnecting once in-flight events are confirmed");
        self.status.set_last_error(Some(error.to_string()));
        self.source_retry_at = Instant::now() + delay;
    }

    fn on_source_event(&mut self, event: Result<SourceEvent, StreamError>) {
        let event = match event {
            Ok(event) => event,
            Err(error) => return self.source_failed(error),
        };
        match event {
            SourceEvent::Begin { commit_time_micros } => {
                self.in_transaction = true;
                self.commit_time = CommitTime::from_postgres_micros(commit_time_micros);
            }
            SourceEvent::Message(LogicalReplicationMessage::Relation(relation)) => {
                self.router.on_relation(&relation);
            }
            SourceEvent::Message(LogicalReplicationMessage::Insert(insert)) => {
                self.on_insert(&insert);
            }
            // Updates, deletes (e.g. the outbox's delete-after-insert), truncates, types,
            // origins and logical messages carry no outbox event.
            SourceEvent::Message(_) | SourceEvent::Other => {}
            SourceEvent::Commit { end_lsn } => {
                self.in_transaction = false;
                if let Some(lsn) = self.window.push_commit(end_lsn) {
                    self.flushed(lsn);
                }
            }
            SourceEvent::KeepAlive { wal_end } => {
                self.status.set_server_wal_end(wal_end.0);
                if !self.in_transaction
                    && let Some(lsn) = self.window.advance_idle(wal_end)
                {
                    self.flushed(lsn);
                }
            }
        }
    }

    fn on_insert(&mut self, insert: &Insert) {
        let timestamp = self.commit_time.unix_seconds();
        let message = match message::for_row(&self.router, &self.config, insert, timestamp) {
            Ok(None) => return,
            Ok(Some(message)) => message,
            Err(reason) => return self.on_unroutable_row(insert, reason),
        };
        self.enqueue(message);
    }

    fn enqueue(&mut self, message: OutgoingMessage) {
        let counters = self.exchange_metrics.get(&message.exchange);
        counters.received.increment(1);
        let size = message.size();
        self.window.push_event(
            Queued {
                message,
                counters,
                commit_time: self.commit_time,
            },
            size,
            Instant::now().into_std(),
        );
    }

    fn on_unroutable_row(&mut self, insert: &Insert, reason: String) {
        metrics::counter!(UNROUTABLE, "reason" => "row").increment(1);
        self.status.add_unroutable();
        let table = self
            .router
            .routed_table(insert.relation_id)
            .unwrap_or("unknown table")
            .to_owned();
        match &self.config.dead_letter_exchange {
            Some(exchange) => {
                tracing::error!(%table, %reason, dead_letter_exchange = %exchange, "unroutable outbox row: dead-lettered");
                let message = message::dead_letter(&self.router, insert, exchange, &table, reason);
                self.enqueue(message);
            }
            None => {
                tracing::error!(
                    %table, %reason,
                    "unroutable outbox row: the relay stops here (nothing after it is \
                     published) until the cause is fixed and it restarts, or \
                     RELAY_DEAD_LETTER_EXCHANGE is set"
                );
                let stalled = format!("unroutable outbox row in {table}: {reason}");
                self.status.set_stalled(Some(stalled.clone()));
                self.stalled_on_row = Some(stalled);
            }
        }
    }

    fn flushed(&mut self, lsn: Lsn) {
        if let Some(source) = &self.source {
            source.confirm(lsn);
        }
        self.status.set_confirmed_lsn(lsn.0);
    }

    /// Reconnects to the broker when it is down and its backoff has passed.
    async fn ensure_sink(&mut self) {
        if self.broker.is_lost() {
            self.broker_failed("connection to RabbitMQ closed".to_owned())
                .await;
        }
        // While down, the loop's tick brings it back here.
        let _ = self.broker.reconnect(&self.config, &self.status).await;
    }

    /// Publishes every unpublished event the current mode allows.
    async fn publish_ready(&mut self) -> Result<(), SinkError> {
        let Some(sink) = self.broker.sink() else {
            return Ok(());
        };
        if let Some(until) = self.paused_until {
            if Instant::now() < until {
                return Ok(());
            }
            self.paused_until = None;
            self.probing = true;
        }
        loop {
            // While probing after a return/nack, one event at a time until one gets through.
            if self.probing && self.window.published() > 0 {
                return Ok(());
            }
            let now = Instant::now().into_std();
            let Some(queued) = self.window.next_to_publish(now) else {
                return Ok(());
            };
            let confirm = sink.publish(&queued.message).await?;
            self.commit_delays
                .published(queued.commit_time, unix_micros_now());
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
                self.commit_delays
                    .confirmed(event.message.commit_time, unix_micros_now());
                event.message.counters.confirmed.increment(1);
                self.status.add_confirmed();
                if let Some(lsn) = moved {
                    self.flushed(lsn);
                }
                if self.probing {
                    self.probing = false;
                    self.return_backoff.reset();
                    if self.stalled_on_row.is_none() {
                        self.status.set_stalled(None);
                    }
                    tracing::info!("the broker routes events again: resuming");
                }
            }
            Outcome::Returned {
                reply_code,
                reply_text,
            } => {
                self.on_refused("returned", format!("returned by the broker ({reply_code} {reply_text}): no queue is bound to its exchange"))
                    .await;
            }
            Outcome::Nacked => {
                self.on_refused("nacked", "nacked by the broker".to_owned())
                    .await;
            }
            Outcome::Failed(reason) => self.broker_failed(reason).await,
        }
    }

    /// A return or nack: stall, then publish the event again alone, then the rest in order.
    async fn on_refused(&mut self, reason_label: &'static str, reason: String) {
        metrics::counter!(UNROUTABLE, "reason" => reason_label).increment(1);
        self.status.add_unroutable();
        let (exchange, event_id) = self
            .window
            .oldest()
            .map(|queued| {
                (
                    queued.message.exchange.clone(),
                    queued.message.message_id.clone(),
                )
            })
            .unwrap_or_default();
        let delay = self.return_backoff.next_delay();
        let stalled = format!("event {event_id} to exchange {exchange:?} was {reason}; retrying");
        if !self.probing {
            tracing::error!(%exchange, %event_id, %reason, "event not delivered: stalling and retrying until the broker routes it");
        } else {
            tracing::debug!(%exchange, %event_id, retry_in = ?delay, "still not routable");
        }
        self.status.set_stalled(Some(stalled));
        // The later confirms are irrelevant: everything from the refused event on is
        // published again. Wait for them so they do not leak, briefly.
        let drained = tokio::time::timeout(CONFIRM_TIMEOUT, async {
            let mut broken = None;
            while let Some(outcome) = self.confirms.next().await {
                if let Outcome::Failed(reason) = outcome {
                    broken = Some(reason);
                }
            }
            broken
        })
        .await;
        self.confirms = FuturesOrdered::new();
        self.window.replay_all();
        self.probing = false;
        self.paused_until = Some(Instant::now() + delay);
        match drained {
            Ok(None) => {}
            Ok(Some(reason)) => self.broker_failed(reason).await,
            Err(_) => {
                self.broker_failed("confirms stopped arriving".to_owned())
                    .await
            }
        }
    }

    /// The broker connection is unusable: drop it, publish the whole window again later.
    async fn broker_failed(&mut self, reason: String) {
        self.confirms = FuturesOrdered::new();
        self.window.replay_all();
        self.probing = false;
        self.broker
            .fail(
                &self.status,
                &reason,
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
        metrics::gauge!(OLDEST_UNCONFIRMED_AGE).set(age);
        if let Some(source) = &self.source {
            self.status.set_server_wal_end(source.server_wal_end().0);
        }
        metrics::gauge!(LAG_BYTES).set(self.status.lag_bytes() as f64);
        if !self.confirms.is_empty()
            && self
                .window
                .oldest_published_at()
                .is_some_and(|at| at.elapsed() > CONFIRM_TIMEOUT)
        {
            self.broker_failed(format!("no confirm within {} s", CONFIRM_TIMEOUT.as_secs()))
                .await;
        }
    }
}
