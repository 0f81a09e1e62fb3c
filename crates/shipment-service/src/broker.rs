//! The RabbitMQ side: one connection with a consuming channel and a publishing channel, the
//! topology declared idempotently on every (re)connect, and the dead-letter publisher.
//!
//! Topology: durable fanout exchange `order.events` → durable queue `shipment.orders`; durable
//! fanout exchange `shipment.orders.dlx` → durable queue `shipment.orders.dlq`. Both queues are
//! quorum queues by default (`RABBITMQ_QUEUE_TYPE=classic`: classic, version 2); the quorum
//! work queue dead-letters a message delivered more than `RABBITMQ_DELIVERY_LIMIT` times. A
//! queue that already exists with other arguments is used as it is, with a warning.
//!
//! With `SHIPMENT_PARTITIONS` = N > 1 the work queue is N queues `shipment.orders.0` …
//! `.{N-1}`, each with a single active consumer, bound with weight 1 to the consistent-hash
//! exchange `shipment.orders.hash` (plugin `rabbitmq_consistent_hash_exchange`), itself bound
//! to `order.events`: the events of one order (one routing key) always land in the same
//! partition. `order.events` stays the fanout other consumers bind to.
//!
//! Poison messages are published by this service to the dead-letter exchange with publisher
//! confirms, then acked: never a requeue loop, never a drop.

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use service_kit::amqp::NodeFailure;

use crate::config::{BrokerSettings, QueueType};
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
    /// The broker's certificate did not verify (or the TLS peers could not agree).
    #[error(
        "TLS with RabbitMQ at {url} failed: {source} (check amqps:// and its cacertfile: the \
         server's certificate must chain to it and name the URL's host)"
    )]
    Tls {
        url: String,
        #[source]
        source: lapin::Error,
    },
    /// The `amqps://` settings lapin cannot use (also checked when the configuration is read).
    #[error("AMQP_URL is invalid: {0}")]
    TlsSettings(String),
    #[error("connecting to RabbitMQ at {url} timed out after {after:?}")]
    ConnectTimeout {
        url: String,
        after: std::time::Duration,
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
    #[error("the connection to RabbitMQ is closed")]
    ConnectionClosed,
    #[error(
        "SHIPMENT_PARTITIONS > 1 needs RabbitMQ's consistent-hash exchange: run \
         `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` on every node (the broker \
         said: {0})"
    )]
    PluginMissing(String),
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
            BrokerError::PluginMissing(_)
            | BrokerError::Tls { .. }
            | BrokerError::TlsSettings(_) => true,
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
    /// The consumer's channel, held for the session's life (its consumer is `consumer`).
    _consume_channel: Channel,
    pub consumer: lapin::Consumer,
}

impl BrokerSession {
    /// Connects, declares the topology, sets the prefetch window and starts consuming.
    pub async fn open(settings: &BrokerSettings, prefetch: u16) -> Result<Self, BrokerError> {
        let connection = connect(settings).await?;
        let channel_error = |operation| move |source| BrokerError::Channel { operation, source };
        let publisher = declare_topology(&connection, settings).await?;
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
                settings.consumed_queue().as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(channel_error("basic.consume"))?;
        Ok(Self {
            connection,
            publisher,
            _consume_channel: consume_channel,
            consumer,
        })
    }

    /// Closes the connection; unacked deliveries go back to the queue.
    ///
    /// No `basic.cancel` first: with a single active consumer (a partition), RabbitMQ 3.10
    /// activates the next consumer on the cancel while the cancelled one still holds its
    /// unacked deliveries, so the next one would apply later events before those come back (an
    /// order's cancel before its creation, seen in the cluster fault run). Closing returns the
    /// deliveries and activates the next consumer in one step, the returned ones first.
    pub async fn close(self) {
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
        headers.insert("x-original-queue".into(), text(&settings.consumed_queue()));
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

/// Connects to the first RabbitMQ node that accepts (several with a cluster).
pub async fn connect(settings: &BrokerSettings) -> Result<Connection, BrokerError> {
    let name = match settings.partition {
        Some(partition) => format!("shipment-service partition {partition}"),
        None => "shipment-service".to_owned(),
    };
    // For `amqps://`: the `cacertfile` CA and client certificate (empty for `amqp://`).
    let tls = settings
        .connection
        .lapin_tls()
        .map_err(|error| BrokerError::TlsSettings(error.reason))?;
    let runtime = lapin::runtime::default_runtime().map_err(|source| BrokerError::Connect {
        url: settings.connection.display.clone(),
        source,
    })?;
    settings
        .connection
        .connect_any(|uri| {
            Connection::connect_uri_with_config(
                uri,
                ConnectionProperties::default().with_connection_name(name.as_str().into()),
                tls.clone(),
                runtime.clone(),
            )
        })
        .await
        .map(|(connection, _)| connection)
        .map_err(|failed| match failed.failure {
            NodeFailure::Refused(source) => match source.kind() {
                lapin::ErrorKind::IOError(io) if service_kit::amqp::is_tls_rejection(io) => {
                    BrokerError::Tls {
                        url: failed.address,
                        source,
                    }
                }
                _ => BrokerError::Connect {
                    url: failed.address,
                    source,
                },
            },
            NodeFailure::TimedOut(after) => BrokerError::ConnectTimeout {
                url: failed.address,
                after,
            },
        })
}

/// Connects, declares the whole topology and disconnects (start-up with partitions: the
/// partition sessions come later, as the instance is given partitions).
pub async fn declare_only(settings: &BrokerSettings) -> Result<(), BrokerError> {
    let connection = connect(settings).await?;
    let declared = declare_topology(&connection, settings).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "declared".into())).await;
    declared.map(|_| ())
}

/// Declares exchanges, queues and bindings; returns the channel to go on with (a declaration
/// the broker refuses closes the channel it was made on).
async fn declare_topology(
    connection: &Connection,
    settings: &BrokerSettings,
) -> Result<Channel, BrokerError> {
    let mut channel = open_channel(connection).await?;
    let dead_letter_exchange = settings.dead_letter_exchange();
    for exchange in [settings.exchange.as_str(), dead_letter_exchange.as_str()] {
        declare_exchange(&channel, exchange, ExchangeKind::Fanout).await?;
    }
    let work_queue_arguments = || {
        queue_arguments(
            settings.queue_type,
            Some((settings.delivery_limit, &dead_letter_exchange)),
        )
    };
    channel = declare_bound_queue(
        connection,
        channel,
        settings,
        &settings.dead_letter_queue(),
        (&dead_letter_exchange, ""),
        queue_arguments(settings.queue_type, None),
    )
    .await?;
    if settings.partitions <= 1 {
        return declare_bound_queue(
            connection,
            channel,
            settings,
            &settings.queue,
            (&settings.exchange, ""),
            work_queue_arguments(),
        )
        .await;
    }
    // Partitioned: order.events → the consistent-hash exchange → one queue per partition.
    let hash_exchange = settings.hash_exchange();
    declare_exchange(
        &channel,
        &hash_exchange,
        ExchangeKind::Custom("x-consistent-hash".to_owned()),
    )
    .await?;
    channel
        .exchange_bind(
            hash_exchange.as_str().into(),
            settings.exchange.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| BrokerError::Declare {
            what: format!("binding {} → {hash_exchange}", settings.exchange),
            source,
        })?;
    for partition in 0..settings.partitions {
        let mut arguments = work_queue_arguments();
        // One consumer applies a partition at a time, whoever else is registered: the order of
        // an order's events holds across instances.
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        if settings.queue_type == QueueType::Quorum {
            // Leaders spread over the cluster's nodes rather than all on the declaring one:
            // the partitions' work (and a node loss) is shared.
            arguments.insert(
                "x-queue-leader-locator".into(),
                AMQPValue::LongString("balanced".into()),
            );
        }
        // The binding key of a consistent-hash exchange is the partition's weight.
        channel = declare_bound_queue(
            connection,
            channel,
            settings,
            &settings.partition_queue(partition),
            (&hash_exchange, "1"),
            arguments,
        )
        .await?;
    }
    Ok(channel)
}

/// Declares a durable exchange of `kind`. An unknown kind is the consistent-hash plugin missing.
async fn declare_exchange(
    channel: &Channel,
    exchange: &str,
    kind: ExchangeKind,
) -> Result<(), BrokerError> {
    let type_name = match &kind {
        ExchangeKind::Custom(name) => name.clone(),
        other => format!("{other:?}").to_lowercase(),
    };
    let described = format!("exchange {exchange} (durable {type_name})");
    channel
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
        .map_err(|source| {
            let text = source.to_string();
            if text.contains("invalid exchange type") {
                BrokerError::PluginMissing(text)
            } else {
                BrokerError::Declare {
                    what: described,
                    source,
                }
            }
        })
}

/// Declares `queue` ([`declare_queue`]) and binds it to `exchange` with `routing_key`; returns
/// the channel to go on with.
async fn declare_bound_queue(
    connection: &Connection,
    channel: Channel,
    settings: &BrokerSettings,
    queue: &str,
    (exchange, routing_key): (&str, &str),
    arguments: FieldTable,
) -> Result<Channel, BrokerError> {
    let channel = declare_queue(connection, channel, queue, settings.queue_type, arguments).await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| BrokerError::Declare {
            what: format!("binding {exchange} → {queue}"),
            source,
        })?;
    Ok(channel)
}

/// The arguments of a queue we create. A quorum work queue (`delivery_guard` set) moves a
/// message delivered more than the limit to the dead-letter exchange, at least once (the
/// broker keeps it until the dead-letter queue has it, which needs `reject-publish`); a
/// classic queue uses version 2 storage.
fn queue_arguments(queue_type: QueueType, delivery_guard: Option<(u32, &str)>) -> FieldTable {
    let mut arguments = FieldTable::default();
    let text = |value: &str| AMQPValue::LongString(value.into());
    arguments.insert("x-queue-type".into(), text(queue_type.as_str()));
    match queue_type {
        QueueType::Classic => {
            arguments.insert("x-queue-version".into(), AMQPValue::LongInt(2));
        }
        QueueType::Quorum => {
            if let Some((limit, dead_letter_exchange)) = delivery_guard {
                let limit = i64::from(limit);
                arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
                arguments.insert("x-dead-letter-exchange".into(), text(dead_letter_exchange));
                arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
                arguments.insert("x-overflow".into(), text("reject-publish"));
            }
        }
    }
    arguments
}

/// Declares `queue` durable with `arguments`. When it already exists with other arguments (a
/// classic queue an earlier release or the original system made, say), it is used as it is,
/// with a warning: never a failed start, never a deleted queue. Returns the channel to go on
/// with.
async fn declare_queue(
    connection: &Connection,
    channel: Channel,
    queue: &str,
    wanted: QueueType,
    arguments: FieldTable,
) -> Result<Channel, BrokerError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let refusal = match channel
        .queue_declare(queue.into(), durable, arguments.clone())
        .await
    {
        Ok(_) => return Ok(channel),
        Err(error) if is_precondition_failed(&error) => error,
        Err(source) => {
            return Err(BrokerError::Declare {
                what: format!("queue {queue} (durable, {})", wanted.as_str()),
                source,
            });
        }
    };
    // The refusal closed that channel. The queue exists: learn its arguments by declaring
    // again with each one the broker names as different set to what it says it is.
    let mut existing = arguments;
    let mut differences = vec![refusal.to_string()];
    for _ in 0..MAX_ARGUMENT_PROBES {
        let Some(difference) = differences
            .last()
            .and_then(|text| ArgumentDifference::parse(text))
        else {
            break;
        };
        difference.apply_to(&mut existing);
        let channel = open_channel(connection).await?;
        match channel
            .queue_declare(queue.into(), durable, existing.clone())
            .await
        {
            Ok(_) => {
                warn_existing_queue(queue, wanted, Some(&existing), &differences);
                return Ok(channel);
            }
            Err(error) if is_precondition_failed(&error) => differences.push(error.to_string()),
            Err(source) => {
                return Err(BrokerError::Declare {
                    what: format!("queue {queue} (as it exists)"),
                    source,
                });
            }
        }
    }
    // Arguments we could not read back: a passive declare still proves the queue is there.
    let channel = open_channel(connection).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map_err(|source| BrokerError::Declare {
            what: format!("queue {queue} (as it exists)"),
            source,
        })?;
    warn_existing_queue(queue, wanted, None, &differences);
    Ok(channel)
}

/// How many differing arguments are read back from the broker's refusals, at most.
const MAX_ARGUMENT_PROBES: usize = 12;

fn warn_existing_queue(
    queue: &str,
    wanted: QueueType,
    existing: Option<&FieldTable>,
    broker_said: &[String],
) {
    let existing_type = match existing {
        Some(arguments) => match arguments.inner().get("x-queue-type") {
            Some(AMQPValue::LongString(text)) => String::from_utf8_lossy(text.as_bytes()).into(),
            Some(AMQPValue::ShortString(text)) => text.as_str().to_owned(),
            // Declared without a type: the server's default, classic.
            _ => "classic".to_owned(),
        },
        None => "unknown".to_owned(),
    };
    tracing::warn!(
        queue,
        existing_type,
        wanted_type = wanted.as_str(),
        broker_said = broker_said.join("; "),
        "the queue exists as a {existing_type} queue with other arguments than this service \
         declares: using it as it is (RABBITMQ_QUEUE_TYPE and RABBITMQ_DELIVERY_LIMIT apply to \
         queues it creates; see the README on moving a queue to another type)"
    );
}

/// One argument the broker says differs, from its refusal: `inequivalent arg 'K' for queue …:
/// received … but current is none` or `… current is the value 'V' of type 'T'`.
#[derive(Debug, PartialEq)]
struct ArgumentDifference {
    name: String,
    /// None: the existing queue does not have it.
    current: Option<AMQPValue>,
}

impl ArgumentDifference {
    fn parse(refusal: &str) -> Option<Self> {
        let (_, rest) = refusal.split_once("inequivalent arg '")?;
        let (name, rest) = rest.split_once('\'')?;
        let (_, current) = rest.rsplit_once("but current is ")?;
        if current.trim() == "none" {
            return Some(Self {
                name: name.to_owned(),
                current: None,
            });
        }
        // The queue type is worded without a type: `received 'quorum' but current is 'classic'`.
        if let Some(text) = current
            .trim_end()
            .strip_prefix('\'')
            .and_then(|text| text.strip_suffix('\''))
        {
            return Some(Self {
                name: name.to_owned(),
                current: Some(AMQPValue::LongString(text.into())),
            });
        }
        let value = current.strip_prefix("the value '")?;
        let (value, kind) = value.rsplit_once("' of type '")?;
        let kind = kind.trim_end().trim_end_matches('\'');
        let current = match kind {
            "longstr" => AMQPValue::LongString(value.into()),
            "signedint" => AMQPValue::LongInt(value.parse().ok()?),
            "long" => AMQPValue::LongLongInt(value.parse().ok()?),
            "short" => AMQPValue::ShortInt(value.parse().ok()?),
            "unsignedint" => AMQPValue::LongUInt(value.parse().ok()?),
            "bool" => AMQPValue::Boolean(value.parse().ok()?),
            _ => return None,
        };
        Some(Self {
            name: name.to_owned(),
            current: Some(current),
        })
    }

    fn apply_to(self, arguments: &mut FieldTable) {
        let mut table = arguments.inner().clone();
        match self.current {
            Some(value) => {
                table.insert(self.name.into(), value);
            }
            None => {
                table.remove(&ShortString::from(self.name));
            }
        }
        *arguments = FieldTable::from(table);
    }
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(error)
            if matches!(
                error.kind(),
                lapin::protocol::AMQPErrorKind::Soft(
                    lapin::protocol::AMQPSoftError::PRECONDITIONFAILED
                )
            )
    )
}

async fn open_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    connection
        .create_channel()
        .await
        .map_err(|source| BrokerError::Channel {
            operation: "channel.open",
            source,
        })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Refusals as RabbitMQ 3.10 words them (seen in the start-up tests).
    const PREFIX: &str =
        "protocol error: AMQP soft error: PRECONDITION-FAILED: PRECONDITION_FAILED";

    #[test]
    fn a_refusal_names_the_argument_and_its_current_value() {
        let missing = format!(
            "{PREFIX} - inequivalent arg 'x-dead-letter-exchange' for queue 'shipment.orders' in \
             vhost 'v': received the value 'shipment.orders.dlx' of type 'longstr' but current is none"
        );
        assert_eq!(
            ArgumentDifference::parse(&missing),
            Some(ArgumentDifference {
                name: "x-dead-letter-exchange".into(),
                current: None
            })
        );
        let version = format!(
            "{PREFIX} - inequivalent arg 'x-queue-version' for queue 'q' in vhost 'v': received \
             none but current is the value '2' of type 'signedint'"
        );
        assert_eq!(
            ArgumentDifference::parse(&version).unwrap().current,
            Some(AMQPValue::LongInt(2))
        );
        // A value with quotes of its own.
        let name = format!(
            "{PREFIX} - inequivalent arg 'x-queue-type' for queue 'q' in vhost 'v': received the \
             value 'quorum' of type 'longstr' but current is the value 'it's' of type 'longstr'"
        );
        assert_eq!(
            ArgumentDifference::parse(&name).unwrap().current,
            Some(AMQPValue::LongString("it's".into()))
        );
        let queue_type = format!(
            "{PREFIX} - inequivalent arg 'x-queue-type' for queue 'q' in vhost 'v': received \
             'quorum' but current is 'classic'"
        );
        assert_eq!(
            ArgumentDifference::parse(&queue_type).unwrap().current,
            Some(AMQPValue::LongString("classic".into()))
        );
        assert_eq!(ArgumentDifference::parse("NOT_FOUND - no queue 'q'"), None);
        let table = format!(
            "{PREFIX} - inequivalent arg 'x-a' for queue 'q' in vhost 'v': received none but current is the value '[]' of type 'array'"
        );
        assert_eq!(ArgumentDifference::parse(&table), None);
    }

    #[test]
    fn differences_are_applied_to_the_arguments() {
        let mut arguments = queue_arguments(QueueType::Quorum, Some((20, "dlx")));
        ArgumentDifference {
            name: "x-dead-letter-exchange".into(),
            current: None,
        }
        .apply_to(&mut arguments);
        ArgumentDifference {
            name: "x-queue-type".into(),
            current: Some(AMQPValue::LongString("classic".into())),
        }
        .apply_to(&mut arguments);
        let inner = arguments.inner();
        assert!(!inner.contains_key("x-dead-letter-exchange"));
        assert_eq!(
            inner.get("x-queue-type"),
            Some(&AMQPValue::LongString("classic".into()))
        );
        assert_eq!(
            inner.get("x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(20))
        );
    }
}
