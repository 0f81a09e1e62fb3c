//! The dead-letter queue for an operator: `shipment-service dlq list|replay|purge` (issue 16).
//!
//! Each command walks `shipment.orders.dlq` with `basic.get`, holding what it read unacked, and
//! picks messages by filter (the `x-death-reason` header and/or message ids). `replay` publishes
//! a picked message back to the queue it was dead-lettered from (`x-original-queue`, set by this
//! service; `x-first-death-queue`, set by the broker's delivery limit; else the work queue),
//! byte for byte with its properties, message id and headers (plus `x-redriven`, how often it
//! was re-driven), waits for the broker's confirm, and only then acks it in the dead-letter
//! queue. `purge` acks (deletes) the picked ones. Whatever is not picked returns to the
//! dead-letter queue in its order when the channel closes. A failure midway loses nothing: a
//! message is removed only after the broker confirmed its copy.

use std::time::Duration;

use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Confirmation};
use serde::Serialize;

use crate::broker::{self, BrokerError, string_headers};
use crate::config::BrokerSettings;

/// Which dead letters a command acts on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `x-death-reason` (e.g. `malformed`, `rejected`, `max-attempts`).
    pub reason: Option<String>,
    /// AMQP message ids (or the `id` header); any of them.
    pub ids: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.reason.is_none() && self.ids.is_empty()
    }

    fn matches(&self, letter: &DeadLetter) -> bool {
        let reason_ok = self
            .reason
            .as_ref()
            .is_none_or(|reason| letter.reason.as_deref() == Some(reason.as_str()));
        let id_ok = self.ids.is_empty()
            || letter
                .message_id
                .as_ref()
                .is_some_and(|id| self.ids.contains(id));
        reason_ok && id_ok
    }
}

/// What `list` shows of one dead letter.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<i64>,
    /// Where `replay` sends it.
    pub original_queue: String,
    pub redriven: i64,
    pub body_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("{operation} failed: {source}")]
    Channel {
        operation: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker refused the re-driven message {message_id:?} ({why})")]
    Refused {
        message_id: Option<String>,
        why: &'static str,
    },
}

/// What to do with a picked message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Show,
    Replay,
    Delete,
}

/// The dead letters matching `filter`, at most `limit`; the queue is left as it was.
pub async fn list(
    settings: &BrokerSettings,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<DeadLetter>, DlqError> {
    walk(settings, filter, Action::Show, limit).await
}

/// Moves the matching dead letters back to their queue; returns them.
pub async fn replay(
    settings: &BrokerSettings,
    filter: &Filter,
) -> Result<Vec<DeadLetter>, DlqError> {
    walk(settings, filter, Action::Replay, usize::MAX).await
}

/// Deletes the matching dead letters; returns them.
pub async fn purge(
    settings: &BrokerSettings,
    filter: &Filter,
) -> Result<Vec<DeadLetter>, DlqError> {
    walk(settings, filter, Action::Delete, usize::MAX).await
}

async fn walk(
    settings: &BrokerSettings,
    filter: &Filter,
    action: Action,
    limit: usize,
) -> Result<Vec<DeadLetter>, DlqError> {
    let connection = broker::connect(settings).await?;
    let result = async {
        let channel = connection
            .create_channel()
            .await
            .map_err(channel_error("channel.open"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(channel_error("confirm.select"))?;
        let queue = settings.dead_letter_queue();
        let depth_before = depth(&connection, &queue).await?;
        let mut picked = Vec::new();
        while picked.len() < limit {
            let Some(message) = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(channel_error("basic.get"))?
            else {
                break;
            };
            let letter = describe(&message, settings);
            if !filter.matches(&letter) {
                continue;
            }
            match action {
                Action::Show => {}
                Action::Replay => redrive(&channel, &message, &letter).await?,
                Action::Delete => {}
            }
            if action != Action::Show {
                message
                    .delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(channel_error("basic.ack"))?;
            }
            picked.push(letter);
        }
        // Closing returns every message read and not acked to the queue, in its order; the
        // broker does it after the close: wait (a while) until they are back, so that the next
        // command sees them.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            channel.close(200, "dead letters walked".into()),
        )
        .await;
        let removed = if action == Action::Show {
            0
        } else {
            picked.len()
        };
        let expected = depth_before.saturating_sub(u32::try_from(removed).unwrap_or(u32::MAX));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while depth(&connection, &queue).await? < expected && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(picked)
    }
    .await;
    let _ =
        tokio::time::timeout(Duration::from_secs(5), connection.close(200, "done".into())).await;
    result
}

/// Messages ready in `queue` (a passive declare, on a channel of its own).
async fn depth(connection: &lapin::Connection, queue: &str) -> Result<u32, DlqError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(channel_error("channel.open"))?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(channel_error("queue.declare (passive)"))?;
    let _ = channel.close(200, "counted".into()).await;
    Ok(declared.message_count())
}

fn channel_error(operation: &'static str) -> impl Fn(lapin::Error) -> DlqError {
    move |source| DlqError::Channel { operation, source }
}

fn describe(message: &BasicGetMessage, settings: &BrokerSettings) -> DeadLetter {
    let properties = &message.delivery.properties;
    let headers = string_headers(properties.headers().as_ref());
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let number = |name: &str| {
        properties
            .headers()
            .as_ref()
            .and_then(|table| table.inner().get(name))
            .and_then(integer)
    };
    let message_id = properties
        .message_id()
        .as_ref()
        .map(ShortString::to_string)
        .or_else(|| header("id"));
    DeadLetter {
        message_id,
        event_type: header("eventType"),
        reason: header("x-death-reason").or_else(|| header("x-first-death-reason")),
        error: header("x-error"),
        attempts: number("x-attempts"),
        original_queue: header("x-original-queue")
            .or_else(|| header("x-first-death-queue"))
            .unwrap_or_else(|| settings.consumed_queue()),
        redriven: number("x-redriven").unwrap_or(0),
        body_bytes: message.delivery.data.len(),
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Publishes the message to its queue (default exchange), same body and properties, with
/// `x-redriven` counted up, and waits for the confirm.
async fn redrive(
    channel: &Channel,
    message: &BasicGetMessage,
    letter: &DeadLetter,
) -> Result<(), DlqError> {
    let mut headers: FieldTable = message
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    headers.insert(
        "x-redriven".into(),
        AMQPValue::LongLongInt(letter.redriven + 1),
    );
    let properties = message.delivery.properties.clone().with_headers(headers);
    let confirm = channel
        .basic_publish(
            "".into(),
            letter.original_queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &message.delivery.data,
            properties,
        )
        .await
        .map_err(channel_error("basic.publish"))?
        .await
        .map_err(channel_error("publisher confirm"))?;
    let refused = |why| DlqError::Refused {
        message_id: letter.message_id.clone(),
        why,
    };
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(refused("no such queue")),
        Confirmation::Nack(_) => Err(refused("nack")),
        Confirmation::NotRequested => Err(refused("confirms not enabled")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(id: &str, reason: &str) -> DeadLetter {
        DeadLetter {
            message_id: Some(id.to_owned()),
            event_type: None,
            reason: Some(reason.to_owned()),
            error: None,
            attempts: None,
            original_queue: "shipment.orders".to_owned(),
            redriven: 0,
            body_bytes: 2,
        }
    }

    #[test]
    fn filters_take_reason_and_ids_together() {
        let all = Filter::default();
        assert!(all.is_empty() && all.matches(&letter("a", "malformed")));
        let by_reason = Filter {
            reason: Some("rejected".to_owned()),
            ids: Vec::new(),
        };
        assert!(by_reason.matches(&letter("a", "rejected")));
        assert!(!by_reason.matches(&letter("a", "malformed")));
        let both = Filter {
            reason: Some("rejected".to_owned()),
            ids: vec!["b".to_owned(), "c".to_owned()],
        };
        assert!(both.matches(&letter("c", "rejected")));
        assert!(!both.matches(&letter("a", "rejected")));
        assert!(!both.matches(&letter("c", "malformed")));
    }
}
