//! The consume loop: deliveries applied in delivery order, in batches, on one channel.
//!
//! Two tasks per broker session, so that waiting on the broker and waiting on PostgreSQL
//! overlap instead of adding up:
//! - the reader takes deliveries from the channel, decodes them ([`crate::event::parse`]) and
//!   hands them over in batches of up to `SHIPMENT_BATCH_SIZE`: the first delivery when it
//!   comes, then whatever else is already buffered, never waiting for more (a lone message is
//!   handled at once). At most one decoded batch waits for the applier;
//! - the applier (this loop) dead-letters the poison messages of a batch, applies the others
//!   in order in one transaction ([`crate::apply::apply_batch`]) and after its commit acks
//!   them all with one `basic.ack multiple=true` up to the batch's last delivery tag.
//!
//! The prefetch window (`RABBITMQ_PREFETCH`, a few batches) is what keeps the next batch
//! buffered while one is applied: with a window of one batch the broker would send the next
//! only after our ack, a round trip per batch. Memory is bounded by that window: the broker
//! sends no more than it holds unacked.
//!
//! Exactly once and order: a batch is applied in delivery order in one transaction with its
//! event ids (see [`crate::apply`]); batches are applied one after the other; nothing is acked
//! before its commit. A multiple ack covers exactly this batch's deliveries: every lower tag of
//! the channel was handled (committed and acked, or dead-lettered and acked) before.
//!
//! A bad event never takes its neighbours down: a poison message (undecodable) is
//! dead-lettered on its own and the rest of its batch applied without it. An event the
//! database state rejects rolls its batch back; the events before it are applied as a batch,
//! then the rejected one alone (dead-lettered with its reason), then the rest. A rejection not
//! tied to one event (a conflict found by the database) or any other database error halves the
//! batch until the culprit is alone and handled as a single message with its own retries.
//!
//! Failures of a single message:
//! - the database is unreachable ([`service_kit::postgres::is_unavailable`]) → wait with backoff and retry the same message (or batch), without limit
//!   and without counting: the message is not at fault;
//! - any other database error → retried with backoff, and after `SHIPMENT_MAX_ATTEMPTS` attempts
//!   the message goes to the dead-letter queue (`x-death-reason: max-attempts`);
//! - the broker connection is lost → unacked deliveries return to the queue; reconnect with
//!   backoff, redeclare, resume. A redelivered event that was committed is a duplicate.
//!
//! Traces: each event's transaction runs in an `apply event` span whose parent is the
//! message's `traceparent`/`tracestate` (the producer's trace continues); a batch opens one
//! such span per event for its one transaction (only when spans are exported: otherwise no
//! one would see them). The `event handled` debug line has the `trace_id` either way.
//!
//! Shutdown finishes the batch in hand (commit and ack) and then closes the connection;
//! nothing uncommitted is acked, and the deliveries the reader held return to the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use service_kit::Backoff;
use service_kit::postgres::is_unavailable;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{self, ApplyError, Outcome};
use crate::broker::{BrokerError, BrokerSession, string_headers};
use crate::config::{BrokerSettings, ConsumerSettings};
use crate::event::{self, IncomingEvent, Poison, PoisonReason};
use crate::metrics as names;
use crate::partitions::PartitionReport;

/// Reachability seen by the consumer, reported by `/health` and as gauges.
#[derive(Debug, Default)]
pub struct Health {
    pub broker_connected: AtomicBool,
    /// Why RabbitMQ blocks the connection (a memory or disk alarm), while it does.
    broker_blocked: std::sync::Mutex<Option<String>>,
    /// With partitions: which ones this instance applies (`None` with a single queue).
    partitions: std::sync::Mutex<Option<PartitionReport>>,
}

impl Health {
    pub fn set_broker_connected(&self, connected: bool) {
        self.broker_connected.store(connected, Ordering::Relaxed);
        metrics::gauge!(names::BROKER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    }

    /// Records RabbitMQ's `connection.blocked` reason (None on `unblocked`), logs the change
    /// and sets `shipment_broker_blocked`.
    pub fn set_broker_blocked(&self, reason: Option<String>) {
        let Ok(mut current) = self.broker_blocked.lock() else {
            return;
        };
        if *current == reason {
            return;
        }
        match &reason {
            Some(reason) => {
                tracing::warn!(%reason, "RabbitMQ blocked the connection (a resource alarm): consuming goes on; dead-letter publishes wait until it lifts")
            }
            None if current.is_some() => tracing::info!("RabbitMQ unblocked the connection"),
            None => {}
        }
        metrics::gauge!(names::BROKER_BLOCKED).set(if reason.is_some() { 1.0 } else { 0.0 });
        *current = reason;
    }

    pub fn broker_blocked(&self) -> Option<String> {
        self.broker_blocked
            .lock()
            .ok()
            .and_then(|reason| reason.clone())
    }

    pub fn set_partitions(&self, report: PartitionReport) {
        if let Ok(mut partitions) = self.partitions.lock() {
            *partitions = Some(report);
        }
    }

    pub fn partitions(&self) -> Option<PartitionReport> {
        self.partitions
            .lock()
            .ok()
            .and_then(|report| report.clone())
    }
}

/// Why the consume loop left a session.
enum Stop {
    Shutdown,
    Lost(BrokerError),
}

/// Consumes the order queue until `shutdown` is cancelled.
#[derive(Debug)]
pub struct Consumer {
    pool: PgPool,
    broker: BrokerSettings,
    settings: ConsumerSettings,
    health: Arc<Health>,
    /// Whether this consumer's connection is the one `/health` reports (not so for a
    /// partition's: the membership connection is).
    reports_connection: bool,
    /// Whether a partition's consumer already warned of events not routed by order id.
    warned_routing: AtomicBool,
    /// Whether the crash-after-commit failpoint already fired (it fires once).
    #[cfg(feature = "failpoints")]
    hook_fired: AtomicBool,
}

impl Consumer {
    pub fn new(
        pool: PgPool,
        broker: BrokerSettings,
        settings: ConsumerSettings,
        health: Arc<Health>,
    ) -> Self {
        Self {
            pool,
            broker,
            settings,
            health,
            reports_connection: true,
            warned_routing: AtomicBool::new(false),
            #[cfg(feature = "failpoints")]
            hook_fired: AtomicBool::new(false),
        }
    }

    /// The consumer of one partition (`broker.partition` set), for [`crate::partitions`].
    pub fn for_partition(pool: PgPool, broker: BrokerSettings, settings: ConsumerSettings) -> Self {
        Self {
            reports_connection: false,
            ..Self::new(pool, broker, settings, Arc::new(Health::default()))
        }
    }

    /// Runs with `session` (opened at start-up) or opens one, reconnecting whenever the broker
    /// goes away.
    pub async fn run(self, session: Option<BrokerSession>, shutdown: CancellationToken) {
        let mut session = session;
        let mut opened_before = session.is_some();
        // Capped low: a broker back from a restart should be used within seconds.
        let mut backoff = Backoff::starting_at(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let current = match session.take() {
                Some(open) => open,
                None => {
                    let opened = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        opened = BrokerSession::open(&self.broker, self.settings.prefetch) => opened,
                    };
                    match opened {
                        Ok(open) => {
                            let queue = self.broker.consumed_queue();
                            if opened_before {
                                tracing::info!(url = %self.broker.redacted_url(), queue, "reconnected to RabbitMQ");
                            } else {
                                tracing::info!(queue, "consuming");
                                opened_before = true;
                            }
                            open
                        }
                        Err(error) => {
                            let pause = backoff.next_delay();
                            tracing::warn!(%error, retry_in = ?pause, "RabbitMQ unavailable");
                            if sleep_or_shutdown(pause, &shutdown).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            self.set_broker_connected(true);
            backoff.reset();
            let stop = self.consume(&current, &shutdown).await;
            self.set_broker_connected(false);
            if self.reports_connection {
                self.health.set_broker_blocked(None);
            }
            match stop {
                Stop::Shutdown => {
                    current.close().await;
                    tracing::info!("consumer stopped");
                    return;
                }
                Stop::Lost(error) => {
                    tracing::warn!(%error, "lost the RabbitMQ session; unacked messages return to the queue");
                    current.abandon("reconnecting").await;
                    if sleep_or_shutdown(backoff.next_delay(), &shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    fn set_broker_connected(&self, connected: bool) {
        if self.reports_connection {
            self.health.set_broker_connected(connected);
        }
    }

    async fn consume(&self, session: &BrokerSession, shutdown: &CancellationToken) -> Stop {
        // One decoded batch waits while another is applied; more would only hold deliveries
        // the broker counts against the window anyway.
        let (sender, mut batches) = mpsc::channel(1);
        let _alarms = self
            .reports_connection
            .then(|| watch_alarms(&session.connection, &self.health));
        let _reader = AbortOnDrop(tokio::spawn(read_batches(
            session.consumer.clone(),
            usize::from(self.settings.batch_size.max(1)),
            sender,
        )));
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Stop::Shutdown,
                next = batches.recv() => next,
                () = connection_gone(&session.connection) => {
                    return Stop::Lost(BrokerError::ConnectionClosed);
                }
            };
            let batch = match next {
                Some(Ok(batch)) => batch,
                Some(Err(error)) => return Stop::Lost(error),
                None => return Stop::Lost(BrokerError::ConsumerEnded),
            };
            // Dropping the batch half-way is safe: an open transaction rolls back, and nothing
            // uncommitted was acked (a commit that did land is a duplicate on redelivery).
            let handled = tokio::select! {
                handled = self.handle_batch(session, batch, shutdown) => handled,
                () = connection_gone(&session.connection) => {
                    Err(Stop::Lost(BrokerError::ConnectionClosed))
                }
            };
            if let Err(stop) = handled {
                return stop;
            }
        }
    }

    /// Dead-letters the batch's poison messages, then applies the others in order.
    async fn handle_batch(
        &self,
        session: &BrokerSession,
        batch: Vec<Received>,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for Received { delivery, event } in batch {
            match event {
                Ok(event) => {
                    self.check_routing(&delivery, &event);
                    deliveries.push(delivery);
                    events.push(event);
                }
                // Acked on its own once the dead-letter queue has it; the later multiple ack
                // of its neighbours passes over its tag, which is no longer outstanding.
                Err(poison) => self.dead_letter(session, &delivery, &poison, 1).await?,
            }
        }
        self.apply_run(session, &deliveries, &events, shutdown)
            .await
    }

    /// With partitions, an order's events stay in order only if they all hash to one partition,
    /// that is if the routing key is the order id: warns once per session when it is not.
    fn check_routing(&self, delivery: &Delivery, event: &IncomingEvent) {
        let Some(partition) = self.broker.partition else {
            return;
        };
        let routing_key = delivery.routing_key.as_str();
        if routing_key != event.order_id().to_string()
            && !self.warned_routing.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                partition,
                routing_key,
                order_id = %event.order_id(),
                "an event is routed by another key than its order id: with SHIPMENT_PARTITIONS \
                 the publisher must route by order id (the relay: RELAY_ROUTING_KEY=key), or \
                 the events of one order may land in different partitions and be applied out \
                 of order"
            );
        }
    }

    /// Applies `events` (decoded from `deliveries`, same order) in as few transactions as the
    /// events allow: all at once, or split around a rejected or failing one (see the module
    /// documentation).
    async fn apply_run(
        &self,
        session: &BrokerSession,
        deliveries: &[Delivery],
        events: &[IncomingEvent],
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let len = events.len();
        // The run still to apply is events[start..]; the next attempt covers start..end.
        let mut start = 0;
        let mut end = len;
        // An event known to be rejected in its batch's state: handled alone when reached.
        let mut rejected: Option<usize> = None;
        let mut backoff =
            Backoff::starting_at(self.settings.retry_backoff, self.settings.max_retry_backoff);
        while start < len {
            if end - start == 1 || rejected == Some(start) {
                self.handle_event(session, &deliveries[start], &events[start], shutdown)
                    .await?;
                start += 1;
                end = len;
                continue;
            }
            let started = Instant::now();
            // Open for the whole transaction, closed after the ack or the rollback.
            let spans: Vec<tracing::Span> = events[start..end].iter().map(event_span).collect();
            let applied = apply::apply_batch(&self.pool, &events[start..end]).await;
            for (index, span) in spans.iter().enumerate() {
                let outcome = match &applied {
                    Ok(outcomes) => outcomes.get(index).map_or("applied", |o| o.as_str()),
                    Err(_) => "rolled back",
                };
                span.record("outcome", outcome);
            }
            match applied {
                Ok(outcomes) => {
                    self.finish_batch(
                        session,
                        &deliveries[start..end],
                        &events[start..end],
                        outcomes,
                        started,
                    )
                    .await?;
                    backoff.reset();
                    start = end;
                    end = len;
                }
                Err(ApplyError::RejectedAt { index, reason }) => {
                    tracing::debug!(%reason, index, size = end - start, "batch rolled back; applying the events before the rejected one");
                    rejected = Some(start + index);
                    end = start + index.max(1);
                }
                Err(ApplyError::Database(error)) if is_unavailable(&error) => {
                    metrics::gauge!(names::DATABASE_UP).set(0.0);
                    let pause = backoff.next_delay();
                    tracing::warn!(%error, size = end - start, retry_in = ?pause, "PostgreSQL unreachable; retrying the batch");
                    if sleep_or_shutdown(pause, shutdown).await {
                        // Not committed, so not acked: the broker redelivers after we close.
                        return Err(Stop::Shutdown);
                    }
                }
                Err(error) => {
                    // Which event is at fault is unknown: halve until it is alone, where the
                    // single-message path retries it and in the end dead-letters it.
                    tracing::debug!(%error, size = end - start, "batch rolled back; splitting it");
                    end = start + (end - start) / 2;
                }
            }
        }
        Ok(())
    }

    /// After a batch's commit: the test hook, one ack for all of it, the metrics.
    async fn finish_batch(
        &self,
        session: &BrokerSession,
        deliveries: &[Delivery],
        events: &[IncomingEvent],
        outcomes: Vec<Outcome>,
        started: Instant,
    ) -> Result<(), Stop> {
        metrics::gauge!(names::DATABASE_UP).set(1.0);
        tracing::trace!(
            size = events.len(),
            micros = started.elapsed().as_micros() as u64,
            "batch committed"
        );
        for event in events {
            self.maybe_crash_after_commit(session, event.id).await?;
        }
        if let Some(last) = deliveries.last() {
            ack(last, true).await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        for ((delivery, event), outcome) in deliveries.iter().zip(events).zip(outcomes) {
            if outcome != Outcome::Duplicate {
                record_event_delay(delivery);
            }
            tracing::debug!(event_id = %event.id, event_type = event.kind.type_name(), outcome = outcome.as_str(), trace_id = trace_id(event), "event handled");
            self.count_handled(event.kind.type_name(), outcome, elapsed);
        }
        Ok(())
    }

    fn count_handled(&self, event_type: &'static str, outcome: Outcome, seconds: f64) {
        metrics::counter!(names::MESSAGES_CONSUMED, "event_type" => event_type, "outcome" => outcome.as_str()).increment(1);
        if outcome == Outcome::Duplicate {
            metrics::counter!(names::DUPLICATES).increment(1);
        }
        metrics::histogram!(names::PROCESSING_SECONDS, "event_type" => event_type).record(seconds);
    }

    /// Handles one decoded delivery to the end, alone in its transaction: acked after commit
    /// or after dead-lettering, or left unacked when the session is lost or the service stops.
    async fn handle_event(
        &self,
        session: &BrokerSession,
        delivery: &Delivery,
        event: &IncomingEvent,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let event_type = event.kind.type_name();
        let mut attempts = 0u32;
        let mut backoff =
            Backoff::starting_at(self.settings.retry_backoff, self.settings.max_retry_backoff);
        loop {
            let span = event_span(event);
            let applied = apply::apply(&self.pool, event)
                .instrument(span.clone())
                .await;
            span.record(
                "outcome",
                applied
                    .as_ref()
                    .map_or("rolled back", |outcome| outcome.as_str()),
            );
            let error = match applied {
                Ok(outcome) => {
                    metrics::gauge!(names::DATABASE_UP).set(1.0);
                    if outcome != Outcome::Duplicate {
                        record_event_delay(delivery);
                    }
                    self.maybe_crash_after_commit(session, event.id).await?;
                    ack(delivery, false).await?;
                    self.count_handled(event_type, outcome, started.elapsed().as_secs_f64());
                    tracing::debug!(event_id = %event.id, event_type, outcome = outcome.as_str(), trace_id = trace_id(event), "event handled");
                    return Ok(());
                }
                Err(ApplyError::Rejected(reason) | ApplyError::RejectedAt { reason, .. }) => {
                    let poison = Poison {
                        reason: PoisonReason::Rejected,
                        detail: reason,
                        event_type: Some(event_type.to_owned()),
                    };
                    return self
                        .dead_letter(session, delivery, &poison, attempts + 1)
                        .await;
                }
                Err(ApplyError::Database(error)) => error,
            };
            let pause = backoff.next_delay();
            if is_unavailable(&error) {
                metrics::gauge!(names::DATABASE_UP).set(0.0);
                tracing::warn!(event_id = %event.id, %error, retry_in = ?pause, "PostgreSQL unreachable; retrying the message");
            } else {
                attempts += 1;
                if attempts >= self.settings.max_attempts {
                    let poison = Poison {
                        reason: PoisonReason::MaxAttempts,
                        detail: format!("failed {attempts} times; last error: {error}"),
                        event_type: Some(event_type.to_owned()),
                    };
                    return self.dead_letter(session, delivery, &poison, attempts).await;
                }
                metrics::counter!(names::HANDLER_RETRIES).increment(1);
                tracing::warn!(event_id = %event.id, attempt = attempts, %error, retry_in = ?pause, "applying the event failed; retrying");
            }
            if sleep_or_shutdown(pause, shutdown).await {
                // Not committed, so not acked: the broker redelivers it after we close.
                return Err(Stop::Shutdown);
            }
        }
    }

    async fn dead_letter(
        &self,
        session: &BrokerSession,
        delivery: &Delivery,
        poison: &Poison,
        attempts: u32,
    ) -> Result<(), Stop> {
        tracing::error!(
            reason = poison.reason.as_str(),
            error = %poison.detail,
            attempts,
            message_id = ?delivery.properties.message_id(),
            "poison message goes to the dead-letter queue {}",
            self.broker.dead_letter_queue()
        );
        session
            .dead_letter(&self.broker, delivery, poison, attempts)
            .await
            .map_err(Stop::Lost)?;
        ack(delivery, false).await?;
        let event_type = poison
            .event_type
            .clone()
            .unwrap_or_else(|| "unknown".to_owned());
        metrics::counter!(names::DEAD_LETTERED, "reason" => poison.reason.as_str()).increment(1);
        metrics::counter!(names::MESSAGES_CONSUMED, "event_type" => event_type, "outcome" => "dead_lettered").increment(1);
        Ok(())
    }

    /// The `failpoints` feature's crash between commit and ack: closes the connection once,
    /// right after committing the chosen event.
    #[cfg(feature = "failpoints")]
    async fn maybe_crash_after_commit(
        &self,
        session: &BrokerSession,
        event_id: uuid::Uuid,
    ) -> Result<(), Stop> {
        if self.settings.hooks.drop_connection_after_commit_of == Some(event_id)
            && !self.hook_fired.swap(true, Ordering::SeqCst)
        {
            tracing::warn!(%event_id, "test hook: dropping the connection between commit and ack");
            let _ = session.connection.close(320, "test hook".into()).await;
            return Err(Stop::Lost(BrokerError::DroppedByTestHook));
        }
        Ok(())
    }

    /// Without the `failpoints` feature there is nothing to check.
    #[cfg(not(feature = "failpoints"))]
    async fn maybe_crash_after_commit(
        &self,
        _session: &BrokerSession,
        _event_id: uuid::Uuid,
    ) -> Result<(), Stop> {
        Ok(())
    }
}

/// A delivery and what it decoded to.
struct Received {
    delivery: Delivery,
    event: Result<IncomingEvent, Poison>,
}

/// A batch of deliveries in delivery order, or why the session's deliveries ended.
type Feed = Result<Vec<Received>, BrokerError>;

/// The reader task: batches of decoded deliveries to `batches` until the consumer ends or the
/// applier is gone. Decoding here lets it run while the applier waits on PostgreSQL.
async fn read_batches(
    mut deliveries: lapin::Consumer,
    batch_size: usize,
    batches: mpsc::Sender<Feed>,
) {
    loop {
        let first = match deliveries.next().await {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                let _ = batches.send(Err(consume_error(error))).await;
                return;
            }
            None => {
                let _ = batches.send(Err(BrokerError::ConsumerEnded)).await;
                return;
            }
        };
        let mut batch = vec![received(first)];
        // Take what is already buffered, without waiting.
        while batch.len() < batch_size {
            match deliveries.next().now_or_never() {
                Some(Some(Ok(delivery))) => batch.push(received(delivery)),
                // The channel is gone: its deliveries cannot be acked and return to the queue,
                // so the batch in hand is dropped, not applied.
                Some(Some(Err(error))) => {
                    let _ = batches.send(Err(consume_error(error))).await;
                    return;
                }
                Some(None) => {
                    let _ = batches.send(Err(BrokerError::ConsumerEnded)).await;
                    return;
                }
                None => break,
            }
        }
        if batches.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}

fn received(delivery: Delivery) -> Received {
    let event = parse(&delivery);
    Received { delivery, event }
}

/// Stops the reader task when the session's consume loop ends, however it ends.
pub(crate) struct AbortOnDrop(JoinHandle<()>);

/// Follows `connection`'s `connection.blocked`/`unblocked` into `health` until dropped.
pub(crate) fn watch_alarms(connection: &lapin::Connection, health: &Arc<Health>) -> AbortOnDrop {
    let mut events = connection.events_listener();
    let health = Arc::clone(health);
    AbortOnDrop(tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                lapin::Event::ConnectionBlocked(reason) => health.set_broker_blocked(Some(reason)),
                lapin::Event::ConnectionUnblocked => health.set_broker_blocked(None),
                _ => {}
            }
        }
    }))
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A delivery's body, message id and string headers → the event, or why it is poison.
fn parse(delivery: &Delivery) -> Result<IncomingEvent, Poison> {
    let headers = string_headers(delivery.properties.headers().as_ref());
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str());
    event::parse(&delivery.data, message_id, &headers)
}

fn consume_error(source: lapin::Error) -> BrokerError {
    BrokerError::Channel {
        operation: "consume",
        source,
    }
}

/// Acks `delivery`, and with `multiple` every outstanding delivery of the channel before it.
/// The span of one event's consumer transaction: a child of the producer's span when the
/// message carries a trace context (same trace id), else the root of a new trace. None when
/// spans are not exported: nothing downstream continues it, so it would only cost time.
fn event_span(event: &IncomingEvent) -> tracing::Span {
    if !service_kit::traces::exporting() {
        return tracing::Span::none();
    }
    let event_type = event.kind.type_name();
    let span = tracing::info_span!(
        "apply event",
        otel.name = format!("{event_type} process"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        event_id = %event.id,
        event_type,
        outcome = tracing::field::Empty,
    );
    if let Some(trace) = &event.trace {
        service_kit::traces::continue_remote(&span, |name| match name {
            "traceparent" => Some(trace.traceparent()),
            "tracestate" => Some(trace.tracestate()).filter(|state| !state.is_empty()),
            _ => None,
        });
    }
    span
}

/// The producer's trace id, for the log line of an applied event ("" without one).
fn trace_id(event: &IncomingEvent) -> &str {
    event
        .trace
        .as_ref()
        .map_or("", wire_format::TraceContext::trace_id)
}

async fn ack(delivery: &Delivery, multiple: bool) -> Result<(), Stop> {
    delivery
        .ack(BasicAckOptions { multiple })
        .await
        .map(|_| ())
        .map_err(|source| {
            Stop::Lost(BrokerError::Channel {
                operation: "basic.ack",
                source,
            })
        })
}

/// The delay from the event's AMQP timestamp (seconds since the epoch, set by the relay) to now.
fn record_event_delay(delivery: &Delivery) {
    let Some(timestamp) = *delivery.properties.timestamp() else {
        return;
    };
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return;
    };
    let delay = now.as_secs_f64() - timestamp as f64;
    metrics::histogram!(names::EVENT_DELAY_SECONDS).record(delay.max(0.0));
}

/// Returns once `connection` is no longer connected. lapin does not always wake a consumer
/// stream or an ack when the socket dies (seen after a broker restart in the fault suite: the
/// service waited forever); polling its status makes the session end and reconnect anyway.
async fn connection_gone(connection: &lapin::Connection) {
    loop {
        tokio::time::sleep(CONNECTION_CHECK).await;
        if !connection.status().connected() {
            return;
        }
    }
}

/// How often [`connection_gone`] looks.
const CONNECTION_CHECK: Duration = Duration::from_millis(500);

/// Sleeps `pause`; returns true if shutdown was requested meanwhile.
async fn sleep_or_shutdown(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(pause) => false,
    }
}
