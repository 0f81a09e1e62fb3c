//! Where events go: the [`Sink`] contract the pipeline publishes through, and its RabbitMQ
//! implementation ([`AmqpSink`]: one connection, one channel in publisher-confirm mode).
//!
//! Delivery contract (see [`Sink`]): a message counts as delivered only when the broker acked
//! it AND did not return it. Every publish is `mandatory`, so a message no queue would
//! receive comes back as a `basic.return` (lapin: `Confirmation::Ack(Some(returned))`); that
//! and a nack are reported as [`Outcome::Returned`] / [`Outcome::Nacked`], never as delivered.
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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::config::AmqpSettings;
use crate::router::ExchangeType;

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
        source: lapin::Error,
    },
    #[error("connecting to RabbitMQ at {address} timed out")]
    Timeout { address: String },
    #[error("cannot declare exchange {exchange:?} (type {kind}): {source}")]
    Declare {
        exchange: String,
        kind: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("publishing to exchange {exchange:?} failed: {reason}")]
    Publish { exchange: String, reason: String },
    #[error("RabbitMQ channel setup failed: {0}")]
    Channel(#[source] lapin::Error),
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

    /// Whether the connection is usable (a lost one is replaced by the pipeline).
    fn is_connected(&self) -> bool;

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

/// The confirm of one publish, resolving to its [`Outcome`]: first the hand-over of its frames
/// to the connection's writer, then the broker's ack, nack or return.
pub struct PendingConfirm {
    inner: Pin<Box<dyn Future<Output = Outcome> + Send>>,
}

impl std::fmt::Debug for PendingConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConfirm").finish_non_exhaustive()
    }
}

impl Future for PendingConfirm {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        self.inner.as_mut().poll(cx)
    }
}

fn outcome_of(confirmation: Result<Confirmation, lapin::Error>) -> Outcome {
    match confirmation {
        Ok(Confirmation::Ack(None)) => Outcome::Delivered,
        Ok(Confirmation::Ack(Some(returned))) => Outcome::Returned {
            reply_code: returned.reply_code,
            reply_text: returned.reply_text.to_string(),
        },
        Ok(Confirmation::Nack(_)) => Outcome::Nacked,
        Ok(Confirmation::NotRequested) => Outcome::Failed("channel is not in confirm mode".into()),
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

/// A connected publisher.
pub struct AmqpSink {
    connection: Connection,
    channel: Channel,
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

fn exchange_kind(kind: ExchangeType) -> (lapin::ExchangeKind, &'static str) {
    match kind {
        ExchangeType::Fanout => (lapin::ExchangeKind::Fanout, "fanout"),
        ExchangeType::Direct => (lapin::ExchangeKind::Direct, "direct"),
        ExchangeType::Topic => (lapin::ExchangeKind::Topic, "topic"),
        ExchangeType::Headers => (lapin::ExchangeKind::Headers, "headers"),
    }
}

impl AmqpSink {
    /// Connects and opens a channel in confirm mode.
    pub async fn connect(
        settings: &AmqpSettings,
        exchange_type: ExchangeType,
    ) -> Result<Self, SinkError> {
        let properties =
            ConnectionProperties::default().with_connection_name("outbox-relay".into());
        let connection = Connection::connect(settings.url.expose(), properties)
            .await
            .map_err(|source| SinkError::Connect {
                address: settings.display.clone(),
                source,
            })?;
        let channel = connection
            .create_channel()
            .await
            .map_err(SinkError::Channel)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(SinkError::Channel)?;
        Ok(Self {
            connection,
            channel,
            declared: HashSet::new(),
            exchange_type,
        })
    }

    /// Whether connection and channel are usable.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Declares `exchange` unless already done on this connection.
    pub async fn ensure_exchange(&mut self, exchange: &str) -> Result<(), SinkError> {
        if exchange.is_empty() || self.declared.contains(exchange) {
            return Ok(());
        }
        let (kind, kind_name) = exchange_kind(self.exchange_type);
        self.channel
            .exchange_declare(
                exchange.into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|source| SinkError::Declare {
                exchange: exchange.to_owned(),
                kind: kind_name,
                source,
            })?;
        self.declared.insert(exchange.to_owned());
        Ok(())
    }

    /// Publishes one message (persistent, mandatory) and returns its pending confirm.
    ///
    /// Returns as soon as the message's frames are queued on the channel, in call order:
    /// lapin's `basic_publish` queues the frames synchronously and then waits for its I/O
    /// thread to write them. Awaiting that write here, per message, would cost a thread
    /// hand-off per event and cap the rate far below the broker's; the write is awaited
    /// inside the returned confirm instead, so many publishes share one socket write.
    pub async fn publish(
        &mut self,
        message: &OutgoingMessage,
    ) -> Result<PendingConfirm, SinkError> {
        self.ensure_exchange(&message.exchange).await?;
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(
                name.as_str().into(),
                AMQPValue::LongString(LongString::from(value.as_bytes())),
            );
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        let properties = match message.properties {
            MessageProperties::Debezium => properties,
            MessageProperties::Full => properties
                .with_content_type("application/json".into())
                .with_message_id(message.message_id.as_str().into())
                .with_timestamp(message.timestamp),
        };
        let channel = self.channel.clone();
        let exchange = message.exchange.as_str().into();
        let routing_key = message.routing_key.as_str().into();
        let body = Arc::clone(&message.body);
        let mut publish: Pin<Box<dyn Future<Output = Outcome> + Send>> = Box::pin(async move {
            let written = channel
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &body,
                    properties,
                )
                .await;
            match written {
                Ok(confirm) => outcome_of(confirm.await),
                Err(error) => Outcome::Failed(error.to_string()),
            }
        });
        // Run it to its first await now: that queues the frames (and takes the delivery tag)
        // in the order of the calls, which keeps the broker's order the window's order.
        match futures::poll!(publish.as_mut()) {
            Poll::Pending => {}
            // A closed channel refuses at once: the caller reconnects.
            Poll::Ready(Outcome::Failed(reason)) => {
                return Err(SinkError::Publish {
                    exchange: message.exchange.clone(),
                    reason,
                });
            }
            Poll::Ready(outcome) => publish = Box::pin(std::future::ready(outcome)),
        }
        Ok(PendingConfirm { inner: publish })
    }

    /// Closes the connection politely; gives up after 2 s (closing a dead connection can
    /// wait forever for the broker's close-ok).
    pub async fn close(self) {
        let close = async {
            let _ = self.channel.close(200, "relay stopping".into()).await;
            let _ = self.connection.close(200, "relay stopping".into()).await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, close).await.is_err() {
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

    fn is_connected(&self) -> bool {
        AmqpSink::is_connected(self)
    }

    fn close(self) -> impl Future<Output = ()> + Send {
        AmqpSink::close(self)
    }
}
