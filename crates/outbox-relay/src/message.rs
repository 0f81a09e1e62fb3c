//! One outbox row → the AMQP message to publish, whichever source read it (a row yields the
//! same message from the WAL and from a poll). The row's trace context, if any, becomes the
//! `traceparent` and `tracestate` headers.

use wire_format::WireFormat;

use crate::config::Config;
use crate::router::{Router, Unroutable};
use crate::row::Row;
use crate::sink::{MessageProperties, OutgoingMessage};

/// How rows are encoded: the part of the configuration the pipeline needs per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoding {
    pub wire_format: WireFormat,
    /// `table.field.event.payload`: the column whose JSON the `debezium` format expands.
    pub payload_field: String,
    pub properties: MessageProperties,
}

impl Encoding {
    pub(crate) fn from_config(config: &Config) -> Self {
        Self {
            wire_format: config.wire_format,
            payload_field: config.router.field_event_payload.clone(),
            properties: config.message_properties,
        }
    }
}

/// Why a routed row cannot become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MessageError {
    /// A configured column is missing, NULL where a value is needed, or not text.
    #[error(transparent)]
    Unroutable(#[from] Unroutable),
    /// The wire format refuses the payload.
    #[error("payload of event {event_id} cannot be encoded as {format}: {reason}")]
    Encode {
        event_id: String,
        format: WireFormat,
        reason: String,
    },
}

/// Routes and encodes one row. `Ok(None)`: the row's table is not routed (not an outbox
/// table); `Err`: why the row cannot be turned into a message.
pub(crate) fn for_row(
    router: &Router,
    encoding: &Encoding,
    row: &Row,
    timestamp: u64,
) -> Result<Option<OutgoingMessage>, MessageError> {
    let Some(routed) = router.route(row)? else {
        return Ok(None);
    };
    let options = wire_format::EncodeOptions {
        payload_field: &encoding.payload_field,
    };
    let encoded = wire_format::encode_with(
        encoding.wire_format,
        &options,
        routed.payload,
        &routed.headers,
    )
    .map_err(|error| MessageError::Encode {
        event_id: routed.event_id.to_owned(),
        format: encoding.wire_format,
        reason: error.to_string(),
    })?;
    let mut headers = encoded.headers;
    if let Some(text) = routed.trace_context {
        // Bare W3C values in both formats: tracing tools read them so, and a context that
        // cannot be read costs only the trace headers, never the event.
        match wire_format::TraceContext::from_properties(text) {
            Some(context) => headers.extend(context.headers()),
            None => {
                tracing::debug!(event_id = %routed.event_id, "trace context column has no valid traceparent: no trace headers");
            }
        }
    }
    if let Some(reason) = &encoded.debezium_fallback {
        tracing::warn!(event_id = %routed.event_id, %reason, "payload published unexpanded, as Debezium would");
    }
    Ok(Some(OutgoingMessage {
        ordering_key: crate::sink::ordering_key(routed.event_key.unwrap_or(routed.event_id)),
        routing_key: routed.routing_key.to_owned(),
        message_id: routed.event_id.to_owned(),
        body: encoded.body.into(),
        headers,
        timestamp,
        exchange: routed.exchange,
        properties: encoding.properties,
    }))
}

/// The dead-letter message of an unroutable row: the row as JSON, the reason and the table in
/// headers. Our own message, not a Debezium one: it keeps the full properties (content type).
pub(crate) fn dead_letter(
    router: &Router,
    row: &Row,
    exchange: &str,
    table: &str,
    reason: &MessageError,
) -> OutgoingMessage {
    OutgoingMessage {
        exchange: exchange.to_owned(),
        routing_key: String::new(),
        message_id: String::new(),
        body: router.row_as_json(row).into_bytes().into(),
        headers: vec![
            ("x-outbox-relay-error".to_owned(), reason.to_string()),
            ("x-outbox-relay-table".to_owned(), table.to_owned()),
        ],
        timestamp: 0,
        properties: MessageProperties::Full,
        ordering_key: crate::sink::ordering_key(table),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use bytes::Bytes;

    use super::*;
    use crate::router::{RouterConfig, TableName};
    use crate::row::{ColumnSchema, TableSchema, Value};

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn traced_router() -> Router {
        let columns = [
            ("id", 2950),
            ("aggregate_type", 1043),
            ("aggregate_id", 1043),
            ("type", 1043),
            ("payload", 3802),
            ("tracingspancontext", 25),
        ];
        let mut router = Router::new(RouterConfig::default());
        router.on_table(&TableSchema {
            id: 1,
            name: TableName::parse("orders.outbox_event").unwrap(),
            columns: columns
                .iter()
                .map(|(name, type_oid)| ColumnSchema {
                    name: (*name).to_owned(),
                    type_oid: *type_oid,
                })
                .collect(),
        });
        router
    }

    fn row(context: Option<&'static str>) -> Row {
        let text = |value: &'static str| Value::Text(Bytes::from_static(value.as_bytes()));
        Row {
            table: 1,
            values: vec![
                text("4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60"),
                text("order"),
                text("agg-1"),
                text("OrderCreated"),
                text(r#"{"id": "agg-1"}"#),
                context.map_or(Value::Null, text),
            ],
        }
    }

    fn trace_headers(format: WireFormat, context: Option<&'static str>) -> Vec<(String, String)> {
        let encoding = Encoding {
            wire_format: format,
            payload_field: "payload".into(),
            properties: crate::sink::MessageProperties::Full,
        };
        let message = for_row(&traced_router(), &encoding, &row(context), 0)
            .unwrap()
            .unwrap();
        message
            .headers
            .into_iter()
            .filter(|(name, _)| name.starts_with("trace"))
            .collect()
    }

    #[test]
    fn the_trace_context_becomes_bare_headers_in_both_formats() {
        let stored = "#Wed Dec 02 12:00:00 UTC 2026\ntraceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\ntracestate=a\\=b\n";
        for format in WireFormat::ALL {
            assert_eq!(
                trace_headers(format, Some(stored)),
                vec![
                    ("traceparent".to_owned(), PARENT.to_owned()),
                    ("tracestate".to_owned(), "a=b".to_owned()),
                ],
                "{format}"
            );
            // NULL or unreadable: the event still goes out, without trace headers.
            assert!(trace_headers(format, None).is_empty());
            assert!(trace_headers(format, Some("traceparent=junk")).is_empty());
        }
    }
}
