//! The sink connection the pipeline publishes through, and its one reconnect step: drop a
//! failed connection, reconnect with backoff (100 ms doubling to 5 s), and report it
//! (`outbox_relay_reconnects_total{server="rabbitmq"}`, logs, `/health`'s `broker_connected`
//! and `last_error`). What a failure means for the events under way (published again) stays
//! with the pipeline.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::sink::{Connector, Sink};
use crate::telemetry::{RECONNECTS, RelayStatus};

/// The longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing a (possibly dead) connection may take, whatever the sink promises.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The sink while connected, and when to try again while not.
pub(crate) struct BrokerConnection<C: Connector> {
    connector: C,
    sink: Option<C::Sink>,
    retry_at: Instant,
    backoff: Backoff,
}

impl<C: Connector> std::fmt::Debug for BrokerConnection<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("connected", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: Connector> BrokerConnection<C> {
    /// Starts from the connection made at start-up.
    pub(crate) fn new(connector: C, sink: C::Sink, status: &RelayStatus) -> Self {
        status.set_broker_connected(true);
        Self {
            connector,
            sink: Some(sink),
            retry_at: Instant::now(),
            backoff: Backoff::new(MAX_BACKOFF),
        }
    }

    /// The sink, while connected.
    pub(crate) fn sink(&mut self) -> Option<&mut C::Sink> {
        self.sink.as_mut()
    }

    /// When the next reconnect attempt is due, while not connected.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.sink.is_none().then_some(self.retry_at)
    }

    /// Whether the connection held has closed under us (the caller then calls [`Self::fail`]).
    pub(crate) fn is_lost(&self) -> bool {
        self.sink.as_ref().is_some_and(|sink| !sink.is_connected())
    }

    /// Drops the connection and schedules a reconnect. `consequence` says what happens to
    /// the events under way, for the log.
    pub(crate) async fn fail(
        &mut self,
        status: &RelayStatus,
        reason: &str,
        consequence: &str,
        in_flight: usize,
    ) {
        let delay = self.backoff.next_delay();
        tracing::warn!(%reason, in_flight, retry_in = ?delay, "RabbitMQ connection failed; {consequence}");
        status.set_broker_connected(false);
        status.set_last_error(Some(format!("RabbitMQ: {reason}")));
        if let Some(sink) = self.sink.take() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        }
        self.retry_at = Instant::now() + delay;
    }

    /// Reconnects when not connected and the backoff has passed.
    pub(crate) async fn reconnect(&mut self, status: &RelayStatus) {
        if self.sink.is_some() || Instant::now() < self.retry_at {
            return;
        }
        let reason = match tokio::time::timeout(CONNECT_TIMEOUT, self.connector.connect()).await {
            Ok(Ok(sink)) => {
                tracing::info!(broker = %self.connector.address(), "reconnected to RabbitMQ");
                metrics::counter!(RECONNECTS, "server" => "rabbitmq").increment(1);
                self.sink = Some(sink);
                self.backoff.reset();
                status.set_broker_connected(true);
                status.set_last_error(None);
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "connection attempt timed out".to_owned(),
        };
        let delay = self.backoff.next_delay();
        tracing::warn!(%reason, retry_in = ?delay, "RabbitMQ unavailable");
        status.set_last_error(Some(format!("RabbitMQ: {reason}")));
        self.retry_at = Instant::now() + delay;
    }

    /// Closes the connection and opens a new one at once (no backoff, still connected as far
    /// as health goes): for a refusal that may belong to the channel rather than the broker.
    pub(crate) async fn renew(&mut self) {
        if let Some(sink) = self.sink.take() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        }
        self.retry_at = Instant::now();
    }

    /// Closes the connection politely (at shutdown), within a bounded time.
    pub(crate) async fn close(&mut self) {
        if let Some(sink) = self.sink.take() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        }
    }
}
