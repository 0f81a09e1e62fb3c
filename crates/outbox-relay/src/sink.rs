//! Where events go: the [`Sink`] contract the pipeline publishes through, and its RabbitMQ
//! implementation ([`AmqpSink`]: one connection, one channel in publisher-confirm mode, over
//! the relay's own AMQP client, [`crate::amqp`]).
//!
//! Delivery contract (see [`Sink`]): a message counts as delivered only when the broker acked
//! it AND did not return it. Every publish is `mandatory`, so a message no queue would
//! receive comes back as a `basic.return` before its ack; that and a nack are reported as [`Outcome::Returned`] / [`Outcome::Nacked`], never as delivered.
//! The pipeline is at-least-once: after a failure it publishes again, with the same
//! `message_id`, so consumers must tolerate duplicates.
//!
//! Before the first publish to an exchange on a connection, the sink declares it (durable,
//! of the configured type), idempotently, so a publish never hits a missing exchange.
//! Binding queues is not the relay's business.
//!
//! The AMQP properties of a message are Debezium Server's (`delivery_mode` 2 and `headers`,
//! nothing else) or ours, which add `content_type`, `message_id` and `timestamp`
//! ([`MessageProperties`]).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::amqp::{ConnectError, Properties, Publisher};
use crate::config::AmqpSettings;
use crate::router::ExchangeType;
use service_kit::amqp::NodeFailure;

/// Which AMQP properties a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageProperties {
    /// Exactly what Debezium Server sets: `delivery_mode` 2 (persistent) and `headers`.
    Debezium,
    /// Debezium's, plus `content_type` `application/json`, `message_id` (the event id, the
    /// same on every redelivery) and `timestamp` (the commit time, seconds).
    Full,
}

impl MessageProperties {
    /// `debezium` with the debezium wire format (a drop-in for Debezium Server), else `full`.
    pub fn default_for(format: wire_format::WireFormat) -> Self {
        match format {
            wire_format::WireFormat::Debezium => Self::Debezium,
            wire_format::WireFormat::Plain => Self::Full,
        }
    }

    /// Parses `debezium` or `full`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "debezium" => Ok(Self::Debezium),
            "full" => Ok(Self::Full),
            other => Err(format!("{other:?}: expected debezium or full")),
        }
    }

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debezium => "debezium",
            Self::Full => "full",
        }
    }
}

/// A message ready to publish; kept in the window until confirmed.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub exchange: String,
    pub routing_key: String,
    /// The event id (logs; the AMQP `message_id` with [`MessageProperties::Full`]).
    pub message_id: String,
    /// Shared with the pending publish: a publish (and a replay) costs no copy of the body.
    pub body: Arc<[u8]>,
    pub headers: Vec<(String, String)>,
    /// Seconds since the Unix epoch (the transaction's commit time).
    pub timestamp: u64,
    /// Which of the above become AMQP properties.
    pub properties: MessageProperties,
    /// A hash of the event's aggregate (event key), or of its id when it has none: the window
    /// keeps one event per aggregate in flight ([`crate::window::InFlightWindow`]).
    pub ordering_key: u64,
}

/// [`OutgoingMessage::ordering_key`] of `key` (FNV-1a: stable, no allocation).
pub fn ordering_key(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl OutgoingMessage {
    /// Approximate memory held by the message, for the window's byte budget.
    pub fn size(&self) -> usize {
        self.exchange.len()
            + self.routing_key.len()
            + self.message_id.len()
            + self.body.len()
            + self
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>()
            + 128
    }
}

/// Errors of the broker connection.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot connect to RabbitMQ at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: ConnectError,
    },
    #[error("connecting to RabbitMQ at {address} timed out")]
    Timeout { address: String },
    #[error("cannot declare exchange {exchange:?} (type {kind}): {reason}")]
    Declare {
        exchange: String,
        kind: &'static str,
        reason: String,
    },
    #[error("publishing to exchange {exchange:?} failed: {reason}")]
    Publish { exchange: String, reason: String },
}

/// What the broker said about one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acked and routed to at least one queue.
    Delivered,
    /// Returned as unroutable (basic.return), e.g. no queue bound.
    Returned { reply_code: u16, reply_text: String },
    /// Negatively acknowledged by the broker.
    Nacked,
    /// The channel or connection failed before the confirm arrived.
    Failed(String),
}

/// Where the pipeline publishes events.
///
/// # Delivery contract
/// - [`Sink::publish`] hands one message over and returns its confirm, a future resolving to
///   the broker's [`Outcome`]. Confirms resolve in publish order, and the sink keeps the
///   broker's order the call order (events of one aggregate stay in commit order).
/// - Only [`Outcome::Delivered`] is success: the broker took the message AND routed it to at
///   least one queue. A nack ([`Outcome::Nacked`]), a return ([`Outcome::Returned`]) and a
///   failure ([`Outcome::Failed`]) are never success; the pipeline keeps the event and
///   publishes it again, and never reports a source position past it.
/// - At-least-once: after any failure the pipeline publishes again, with the same
///   `message_id`, messages the broker may already hold, so consumers must tolerate
///   duplicates.
/// - `publish` returns `Err` when the connection refuses at once; the pipeline then
///   reconnects through its [`Connector`] and publishes every unconfirmed event again.
/// - [`Sink::close`] is bounded: a dead connection cannot hold a stop.
pub trait Sink: Send + 'static {
    /// The confirm of one publish.
    type Confirm: Future<Output = Outcome> + Send + 'static;

    /// Publishes one message; returns its pending confirm.
    fn publish(
        &mut self,
        message: &OutgoingMessage,
    ) -> impl Future<Output = Result<Self::Confirm, SinkError>> + Send;

    /// Sends the messages published since the last flush, if the sink batches them (the
    /// pipeline calls it after each run of publishes). Never waits.
    fn flush(&mut self) {}

    /// Whether the connection is usable (a lost one is replaced by the pipeline).
    fn is_connected(&self) -> bool;

    /// Why the broker holds publishes back (RabbitMQ's `connection.blocked` under a memory or
    /// disk alarm), while it does. A blocked connection is not a broken one: confirms are
    /// late, not lost.
    fn blocked(&self) -> Option<String> {
        None
    }

    /// Closes the connection politely, within a bounded time.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Makes new sink connections (at start and after a failure).
pub trait Connector: Send + 'static {
    type Sink: Sink;

    /// One connection attempt.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Sink, SinkError>> + Send;

    /// Where it connects, for logs.
    fn address(&self) -> &str;
}

/// Connects [`AmqpSink`]s with the relay's broker settings.
#[derive(Debug, Clone)]
pub struct AmqpConnector {
    pub settings: AmqpSettings,
    pub exchange_type: ExchangeType,
}

impl Connector for AmqpConnector {
    type Sink = AmqpSink;

    async fn connect(&mut self) -> Result<AmqpSink, SinkError> {
        AmqpSink::connect(&self.settings, self.exchange_type).await
    }

    fn address(&self) -> &str {
        &self.settings.display
    }
}

/// How long closing a (possibly dead) connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The confirm of one publish, resolving to its [`Outcome`].
pub type PendingConfirm = crate::amqp::ConfirmFuture;

/// A connected publisher (our own AMQP client, [`crate::amqp`]).
pub struct AmqpSink {
    publisher: Publisher,
    declared: HashSet<String>,
    exchange_type: ExchangeType,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink")
            .field("declared", &self.declared)
            .finish_non_exhaustive()
    }
}

fn exchange_kind(kind: ExchangeType) -> &'static str {
    match kind {
        ExchangeType::Fanout => "fanout",
        ExchangeType::Direct => "direct",
        ExchangeType::Topic => "topic",
        ExchangeType::Headers => "headers",
    }
}

impl AmqpSink {
    /// Connects and opens a channel in confirm mode.
    pub async fn connect(
        settings: &AmqpSettings,
        exchange_type: ExchangeType,
    ) -> Result<Self, SinkError> {
        // With several nodes (a cluster), the first that accepts.
        let tls = settings.tls();
        let (publisher, address) = settings
            .connect_any(|uri| async move { Publisher::connect(&uri, tls, "outbox-relay").await })
            .await
            .map_err(|failed| match failed.failure {
                NodeFailure::Refused(source) => SinkError::Connect {
                    address: failed.address,
                    source,
                },
                NodeFailure::TimedOut(_) => SinkError::Timeout {
                    address: failed.address,
                },
            })?;
        if settings.node_count() > 1 {
            tracing::info!(node = %address, "publishing through RabbitMQ node");
        }
        Ok(Self {
            publisher,
            declared: HashSet::new(),
            exchange_type,
        })
    }

    /// Whether the connection is usable.
    pub fn is_connected(&self) -> bool {
        self.publisher.failure().is_none()
    }

    /// Declares `exchange` unless already done on this connection.
    pub async fn ensure_exchange(&mut self, exchange: &str) -> Result<(), SinkError> {
        if exchange.is_empty() || self.declared.contains(exchange) {
            return Ok(());
        }
        let kind = exchange_kind(self.exchange_type);
        self.publisher
            .declare_exchange(exchange, kind)
            .await
            .map_err(|reason| SinkError::Declare {
                exchange: exchange.to_owned(),
                kind,
                reason,
            })?;
        self.declared.insert(exchange.to_owned());
        Ok(())
    }

    /// Encodes one message (persistent, mandatory) and returns its pending confirm. The
    /// frames go to the broker at the next [`Self::flush`]: one socket write per batch.
    pub async fn publish(
        &mut self,
        message: &OutgoingMessage,
    ) -> Result<PendingConfirm, SinkError> {
        self.ensure_exchange(&message.exchange).await?;
        let full = message.properties == MessageProperties::Full;
        let properties = Properties {
            content_type: full.then_some("application/json"),
            headers: &message.headers,
            delivery_mode: Some(2),
            message_id: full.then_some(message.message_id.as_str()),
            timestamp: full.then_some(message.timestamp),
        };
        self.publisher
            .publish(
                &message.exchange,
                &message.routing_key,
                properties,
                &message.body,
            )
            .map_err(|reason| SinkError::Publish {
                exchange: message.exchange.clone(),
                reason,
            })
    }

    /// Sends what [`Self::publish`] encoded.
    pub fn flush(&mut self) {
        self.publisher.flush();
    }

    /// Closes the connection politely; gives up after 2 s (closing a dead connection can
    /// wait forever for the broker's close-ok).
    pub async fn close(self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.publisher.close())
            .await
            .is_err()
        {
            tracing::debug!("closing the RabbitMQ connection timed out");
        }
    }
}

impl Sink for AmqpSink {
    type Confirm = PendingConfirm;

    fn publish(
        &mut self,
        message: &OutgoingMessage,
    ) -> impl Future<Output = Result<PendingConfirm, SinkError>> + Send {
        AmqpSink::publish(self, message)
    }

    fn flush(&mut self) {
        AmqpSink::flush(self);
    }

    fn is_connected(&self) -> bool {
        AmqpSink::is_connected(self)
    }

    fn blocked(&self) -> Option<String> {
        self.publisher.blocked()
    }

    fn close(self) -> impl Future<Output = ()> + Send {
        AmqpSink::close(self)
    }
}
