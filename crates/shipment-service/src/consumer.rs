//! The consume loop: one delivery at a time, in delivery order, on one channel.
//!
//! Per delivery: decode ([`crate::event::parse`]); poison → dead-letter queue, then ack. Else
//! apply in one transaction ([`crate::apply::apply`]), commit, then ack. Processing is
//! sequential (the prefetch window still pipelines deliveries from the broker), so events are
//! applied in the order the queue holds them; the effects do not depend on that order anyway
//! (see [`crate::apply`]).
//!
//! Batching: when more deliveries are already buffered (a backlog), up to `prefetch` of them
//! are applied in order in one transaction ([`crate::apply::apply_batch`]) and acked after its
//! commit. If any of them is poison or fails, the batch is rolled back and its deliveries are
//! handled one by one as above, so a bad message never takes good ones down with it. Waiting for
//! more deliveries never happens: a lone message is handled at once.
//!
//! Failures:
//! - the database is unreachable ([`service_kit::postgres::is_unavailable`]) → wait with backoff and retry the same message, without limit
//!   and without counting: the message is not at fault;
//! - any other database error → retried with backoff, and after `SHIPMENT_MAX_ATTEMPTS` attempts
//!   the message goes to the dead-letter queue (`x-death-reason: max-attempts`);
//! - the broker connection is lost → unacked deliveries return to the queue; reconnect with
//!   backoff, redeclare, resume. A redelivered event that was committed is a duplicate.
//!
//! Shutdown finishes the message in hand (commit and ack) and then closes the connection;
//! nothing uncommitted is acked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use service_kit::Backoff;
use service_kit::postgres::is_unavailable;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, ApplyError, Outcome};
use crate::broker::{BrokerError, BrokerSession, string_headers};
use crate::config::{BrokerSettings, ConsumerSettings};
use crate::event::{self, IncomingEvent, Poison, PoisonReason};
use crate::metrics as names;

/// Reachability seen by the consumer, reported by `/health` and as gauges.
#[derive(Debug, Default)]
pub struct Health {
    pub broker_connected: AtomicBool,
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
            #[cfg(feature = "failpoints")]
            hook_fired: AtomicBool::new(false),
        }
    }

    /// Runs with `session` (opened at start-up), reconnecting whenever the broker goes away.
    pub async fn run(self, session: BrokerSession, shutdown: CancellationToken) {
        let mut session = Some(session);
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
                            tracing::info!(url = %self.broker.redacted_url(), "reconnected to RabbitMQ");
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
        self.health
            .broker_connected
            .store(connected, Ordering::Relaxed);
        metrics::gauge!(names::BROKER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    }

    async fn consume(&self, session: &BrokerSession, shutdown: &CancellationToken) -> Stop {
        let mut deliveries = session.consumer.clone();
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Stop::Shutdown,
                next = deliveries.next() => next,
            };
            let mut batch = match next {
                Some(Ok(delivery)) => vec![delivery],
                Some(Err(error)) => return Stop::Lost(consume_error(error)),
                None => return Stop::Lost(BrokerError::ConsumerEnded),
            };
            // Take what is already buffered, without waiting.
            while batch.len() < usize::from(self.settings.prefetch) {
                match deliveries.next().now_or_never() {
                    Some(Some(Ok(delivery))) => batch.push(delivery),
                    // Unacked deliveries return to the queue when the channel goes.
                    Some(Some(Err(error))) => return Stop::Lost(consume_error(error)),
                    Some(None) => return Stop::Lost(BrokerError::ConsumerEnded),
                    None => break,
                }
            }
            let handled = if batch.len() == 1 {
                match batch.pop() {
                    Some(delivery) => self.handle(session, delivery, shutdown).await,
                    None => Ok(()),
                }
            } else {
                self.handle_batch(session, batch, shutdown).await
            };
            if let Err(stop) = handled {
                return stop;
            }
        }
    }

    /// Applies several deliveries in one transaction, or one by one if any is poison or fails.
    async fn handle_batch(
        &self,
        session: &BrokerSession,
        batch: Vec<Delivery>,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let parsed: Option<Vec<IncomingEvent>> =
            batch.iter().map(|delivery| parse(delivery).ok()).collect();
        let applied = match &parsed {
            Some(events) => match apply::apply_batch(&self.pool, events).await {
                Ok(outcomes) => Some(outcomes),
                Err(error) => {
                    tracing::debug!(%error, size = events.len(), "batch rolled back; handling its messages one by one");
                    None
                }
            },
            None => {
                tracing::debug!(
                    size = batch.len(),
                    "batch holds a poison message; handling its messages one by one"
                );
                None
            }
        };
        let (Some(events), Some(outcomes)) = (parsed, applied) else {
            for delivery in batch {
                self.handle(session, delivery, shutdown).await?;
            }
            return Ok(());
        };
        metrics::gauge!(names::DATABASE_UP).set(1.0);
        tracing::trace!(
            size = events.len(),
            micros = started.elapsed().as_micros() as u64,
            "batch committed"
        );
        for event in &events {
            self.maybe_crash_after_commit(session, event.id).await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        for ((delivery, event), outcome) in batch.iter().zip(&events).zip(outcomes) {
            if outcome != Outcome::Duplicate {
                record_event_delay(delivery);
            }
            ack(delivery).await?;
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

    /// Handles one delivery to the end: acked after commit or after dead-lettering, or left
    /// unacked when the session is lost or the service stops.
    async fn handle(
        &self,
        session: &BrokerSession,
        delivery: Delivery,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let event = match parse(&delivery) {
            Ok(event) => event,
            Err(poison) => return self.dead_letter(session, &delivery, &poison, 1).await,
        };
        let event_type = event.kind.type_name();
        let mut attempts = 0u32;
        let mut backoff =
            Backoff::starting_at(self.settings.retry_backoff, self.settings.max_retry_backoff);
        loop {
            let error = match apply::apply(&self.pool, &event).await {
                Ok(outcome) => {
                    metrics::gauge!(names::DATABASE_UP).set(1.0);
                    if outcome != Outcome::Duplicate {
                        record_event_delay(&delivery);
                    }
                    self.maybe_crash_after_commit(session, event.id).await?;
                    ack(&delivery).await?;
                    self.count_handled(event_type, outcome, started.elapsed().as_secs_f64());
                    tracing::debug!(event_id = %event.id, event_type, outcome = outcome.as_str(), "event handled");
                    return Ok(());
                }
                Err(ApplyError::Rejected(reason)) => {
                    let poison = Poison {
                        reason: PoisonReason::Rejected,
                        detail: reason,
                        event_type: Some(event_type.to_owned()),
                    };
                    return self
                        .dead_letter(session, &delivery, &poison, attempts + 1)
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
                    return self
                        .dead_letter(session, &delivery, &poison, attempts)
                        .await;
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
        ack(delivery).await?;
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

async fn ack(delivery: &Delivery) -> Result<(), Stop> {
    delivery
        .ack(BasicAckOptions::default())
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

/// Sleeps `pause`; returns true if shutdown was requested meanwhile.
async fn sleep_or_shutdown(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(pause) => false,
    }
}
