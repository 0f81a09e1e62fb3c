//! The RabbitMQ side: one connection with a consuming channel and a publishing channel, the
//! topology declared idempotently on every (re)connect, and the dead-letter publisher.
//!
//! Topology: durable fanout exchange `order.events` → durable queue `shipment.orders`
//! (`x-queue-type` classic or quorum); durable fanout exchange `shipment.orders.dlx` → durable
//! queue `shipment.orders.dlq`. Poison messages are published by this service to the
//! dead-letter exchange with publisher confirms, then acked: never a requeue loop, never a drop.

use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use crate::config::BrokerSettings;
use crate::event::Poison;

/// How long closing a connection may take before it is dropped anyway.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// A broker operation failed; the session is abandoned and reopened.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("cannot declare {what}: {source}")]
    Declare {
        what: String,
        #[source]
        source: lapin::Error,
    },
    #[error("{operation} failed: {source}")]
    Channel {
        operation: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker refused the dead-lettered message ({0})")]
    DeadLetterRefused(&'static str),
    #[error("the broker cancelled our consumer or closed the channel")]
    ConsumerEnded,
    /// Only with the `failpoints` feature (tests).
    #[cfg(feature = "failpoints")]
    #[error("connection dropped by a test hook")]
    DroppedByTestHook,
}

impl BrokerError {
    /// Whether reconnecting cannot help: the broker refused our declarations (e.g. a queue
    /// that exists with other arguments) or our credentials.
    pub fn is_permanent(&self) -> bool {
        match self {
            BrokerError::Declare { source, .. } => matches!(
                source.kind(),
                lapin::ErrorKind::ProtocolError(error)
                    if matches!(
                        error.kind(),
                        lapin::protocol::AMQPErrorKind::Soft(
                            lapin::protocol::AMQPSoftError::PRECONDITIONFAILED
                                | lapin::protocol::AMQPSoftError::ACCESSREFUSED
                        )
                    )
            ),
            BrokerError::Connect { source, .. } => matches!(
                source.kind(),
                lapin::ErrorKind::ProtocolError(error)
                    if matches!(
                        error.kind(),
                        lapin::protocol::AMQPErrorKind::Hard(
                            lapin::protocol::AMQPHardError::NOTALLOWED
                        ) | lapin::protocol::AMQPErrorKind::Soft(
                            lapin::protocol::AMQPSoftError::ACCESSREFUSED
                        )
                    )
            ),
            _ => false,
        }
    }
}

/// An open connection, its two channels and the consumer of the order queue.
#[derive(Debug)]
pub struct BrokerSession {
    pub connection: Connection,
    /// Confirm-mode channel for dead-letter publishes.
    publisher: Channel,
    consume_channel: Channel,
    pub consumer: lapin::Consumer,
}

impl BrokerSession {
    /// Connects, declares the topology, sets the prefetch window and starts consuming.
    pub async fn open(settings: &BrokerSettings, prefetch: u16) -> Result<Self, BrokerError> {
        let connection = Connection::connect_uri(
            settings.uri().clone(),
            ConnectionProperties::default().with_connection_name("shipment-service".into()),
        )
        .await
        .map_err(|source| BrokerError::Connect {
            url: settings.redacted_url(),
            source,
        })?;
        let channel_error = |operation| move |source| BrokerError::Channel { operation, source };
        let publisher = connection
            .create_channel()
            .await
            .map_err(channel_error("channel.open"))?;
        declare_topology(&publisher, settings).await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(channel_error("confirm.select"))?;
        let consume_channel = connection
            .create_channel()
            .await
            .map_err(channel_error("channel.open"))?;
        consume_channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(channel_error("basic.qos"))?;
        let consumer = consume_channel
            .basic_consume(
                settings.queue.as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(channel_error("basic.consume"))?;
        Ok(Self {
            connection,
            publisher,
            consume_channel,
            consumer,
        })
    }

    /// Stops consuming and closes the connection; unacked deliveries go back to the queue.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT,
            self.consume_channel
                .basic_cancel(self.consumer.tag(), BasicCancelOptions::default()),
        )
        .await;
        self.abandon("shutdown").await;
    }

    /// Closes the connection after it failed. Bounded: on a connection whose I/O already died,
    /// lapin's close can wait forever for a close-ok that never comes, and the consumer would
    /// never reconnect (seen in the fault suite after a broker restart).
    pub async fn abandon(&self, reason: &str) {
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close(200, reason.into())).await;
    }

    /// Publishes `delivery`'s body and properties to the dead-letter exchange with the reason
    /// (`x-death-reason`, `x-error`) and the attempt count (`x-attempts`), and waits for the
    /// broker's confirm. The caller acks the original only after this returns `Ok`.
    pub async fn dead_letter(
        &self,
        settings: &BrokerSettings,
        delivery: &lapin::message::Delivery,
        poison: &Poison,
        attempts: u32,
    ) -> Result<(), BrokerError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let text = |value: &str| AMQPValue::LongString(LongString::from(value.as_bytes()));
        headers.insert("x-death-reason".into(), text(poison.reason.as_str()));
        headers.insert("x-error".into(), text(&poison.detail));
        headers.insert(
            "x-attempts".into(),
            AMQPValue::LongInt(i32::try_from(attempts).unwrap_or(i32::MAX)),
        );
        headers.insert("x-original-queue".into(), text(&settings.queue));
        headers.insert(
            "x-original-exchange".into(),
            text(delivery.exchange.as_str()),
        );
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let confirm = self
            .publisher
            .basic_publish(
                settings.dead_letter_exchange().into(),
                settings.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &delivery.data,
                properties,
            )
            .await
            .map_err(|source| BrokerError::Channel {
                operation: "basic.publish to the dead-letter exchange",
                source,
            })?
            .await
            .map_err(|source| BrokerError::Channel {
                operation: "confirm of the dead-letter publish",
                source,
            })?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(BrokerError::DeadLetterRefused(
                "unroutable: is the dead-letter queue bound?",
            )),
            Confirmation::Nack(_) => Err(BrokerError::DeadLetterRefused("nack")),
            Confirmation::NotRequested => Err(BrokerError::DeadLetterRefused(
                "publisher confirms not enabled",
            )),
        }
    }
}

async fn declare_topology(channel: &Channel, settings: &BrokerSettings) -> Result<(), BrokerError> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut queue_arguments = FieldTable::default();
    queue_arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(settings.queue_type.as_str().into()),
    );
    let declare_error = |what: String| move |source| BrokerError::Declare { what, source };
    let dead_letter_exchange = settings.dead_letter_exchange();
    let dead_letter_queue = settings.dead_letter_queue();
    channel
        .exchange_declare(
            settings.exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(declare_error(format!(
            "exchange {} (durable fanout)",
            settings.exchange
        )))?;
    channel
        .exchange_declare(
            dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(declare_error(format!(
            "exchange {dead_letter_exchange} (durable fanout)"
        )))?;
    channel
        .queue_declare(
            dead_letter_queue.as_str().into(),
            durable_queue,
            queue_arguments.clone(),
        )
        .await
        .map_err(declare_error(format!(
            "queue {dead_letter_queue} (durable, {})",
            settings.queue_type.as_str()
        )))?;
    channel
        .queue_bind(
            dead_letter_queue.as_str().into(),
            dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(declare_error(format!(
            "binding {dead_letter_exchange} → {dead_letter_queue}"
        )))?;
    channel
        .queue_declare(
            settings.queue.as_str().into(),
            durable_queue,
            queue_arguments,
        )
        .await
        .map_err(declare_error(format!(
            "queue {} (durable, {})",
            settings.queue,
            settings.queue_type.as_str()
        )))?;
    channel
        .queue_bind(
            settings.queue.as_str().into(),
            settings.exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(declare_error(format!(
            "binding {} → {}",
            settings.exchange, settings.queue
        )))?;
    Ok(())
}

/// The headers whose values are strings, as `wire_format::decode` takes them.
pub fn string_headers(headers: Option<&FieldTable>) -> Vec<(String, String)> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    headers
        .inner()
        .iter()
        .filter_map(|(name, value)| {
            let text = match value {
                AMQPValue::LongString(text) => {
                    String::from_utf8_lossy(text.as_bytes()).into_owned()
                }
                AMQPValue::ShortString(text) => text.as_str().to_owned(),
                _ => return None,
            };
            Some((name.as_str().to_owned(), text))
        })
        .collect()
}
