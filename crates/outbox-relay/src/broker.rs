//! The broker connection both sources publish through, and its one reconnect step: drop a
//! failed connection, reconnect with backoff (100 ms doubling to 5 s), and report it
//! (`outbox_relay_reconnects_total{server="rabbitmq"}`, logs, `/health`'s `broker_connected`
//! and `last_error`). What a failure means for the events under way (the replication window
//! published again, the polling batch rolled back) stays with each source.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::sink::AmqpSink;
use crate::telemetry::{RECONNECTS, RelayStatus};

/// The longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing a (possibly dead) connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The sink while connected, and when to try again while not.
#[derive(Debug)]
pub(crate) struct BrokerConnection {
    sink: Option<AmqpSink>,
    retry_at: Instant,
    backoff: Backoff,
}

impl BrokerConnection {
    /// Starts from the connection made at start-up.
    pub(crate) fn new(sink: AmqpSink, status: &RelayStatus) -> Self {
        status.set_broker_connected(true);
        Self {
            sink: Some(sink),
            retry_at: Instant::now(),
            backoff: Backoff::new(MAX_BACKOFF),
        }
    }

    /// The sink, while connected.
    pub(crate) fn sink(&mut self) -> Option<&mut AmqpSink> {
        self.sink.as_mut()
    }

    /// Whether the connection held has closed under us (the caller then calls [`Self::fail`]).
    pub(crate) fn is_lost(&self) -> bool {
        self.sink.as_ref().is_some_and(|sink| !sink.is_connected())
    }

    /// Drops the connection and schedules a reconnect; returns the wait before it.
    /// `consequence` says what happens to the events under way, for the log.
    pub(crate) async fn fail(
        &mut self,
        status: &RelayStatus,
        reason: &str,
        consequence: &str,
        in_flight: usize,
    ) -> Duration {
        let delay = self.backoff.next_delay();
        tracing::warn!(%reason, in_flight, retry_in = ?delay, "RabbitMQ connection failed; {consequence}");
        status.set_broker_connected(false);
        status.set_last_error(Some(format!("RabbitMQ: {reason}")));
        if let Some(sink) = self.sink.take() {
            // Closing a dead connection can hang: bound it.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        }
        self.retry_at = Instant::now() + delay;
        delay
    }

    /// Reconnects when not connected and the backoff has passed. `None` when connected;
    /// otherwise how long until the next attempt.
    pub(crate) async fn reconnect(
        &mut self,
        config: &Config,
        status: &RelayStatus,
    ) -> Option<Duration> {
        if self.sink.is_some() {
            return None;
        }
        let now = Instant::now();
        if now < self.retry_at {
            return Some(self.retry_at - now);
        }
        let connect = AmqpSink::connect(&config.amqp, config.exchange_type);
        let reason = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(sink)) => {
                tracing::info!(broker = %config.amqp.display, "reconnected to RabbitMQ");
                metrics::counter!(RECONNECTS, "server" => "rabbitmq").increment(1);
                self.sink = Some(sink);
                self.backoff.reset();
                status.set_broker_connected(true);
                status.set_last_error(None);
                return None;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "connection attempt timed out".to_owned(),
        };
        let delay = self.backoff.next_delay();
        tracing::warn!(%reason, retry_in = ?delay, "RabbitMQ unavailable");
        status.set_last_error(Some(format!("RabbitMQ: {reason}")));
        self.retry_at = Instant::now() + delay;
        Some(delay)
    }

    /// Closes the connection politely (at shutdown).
    pub(crate) async fn close(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.close().await;
        }
    }
}
