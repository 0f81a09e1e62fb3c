//! One outbox row → the AMQP message to publish, shared by both sources (replication and
//! polling) so that a row yields the same message whichever source read it.

use pgoutput::Insert;

use crate::config::Config;
use crate::router::Router;
use crate::sink::{MessageProperties, OutgoingMessage};

/// Routes and encodes one row. `Ok(None)`: the row's table is not routed (not an outbox
/// table); `Err`: why the row cannot be turned into a message (missing column, NULL routing
/// value, a payload the wire format cannot encode).
pub(crate) fn for_row(
    router: &Router,
    config: &Config,
    insert: &Insert,
    timestamp: u64,
) -> Result<Option<OutgoingMessage>, String> {
    let routed = match router.route(insert) {
        Ok(None) => return Ok(None),
        Ok(Some(routed)) => routed,
        Err(error) => return Err(error.to_string()),
    };
    let options = wire_format::EncodeOptions {
        payload_field: &config.router.field_event_payload,
    };
    let encoded = wire_format::encode_with(
        config.wire_format,
        &options,
        routed.payload,
        &routed.headers,
    )
    .map_err(|error| {
        format!(
            "payload of event {} cannot be encoded as {}: {error}",
            routed.event_id, config.wire_format
        )
    })?;
    if let Some(reason) = &encoded.debezium_fallback {
        tracing::warn!(event_id = %routed.event_id, %reason, "payload published unexpanded, as Debezium would");
    }
    Ok(Some(OutgoingMessage {
        routing_key: routed.routing_key.to_owned(),
        message_id: routed.event_id.to_owned(),
        body: encoded.body.into(),
        headers: encoded.headers,
        timestamp,
        exchange: routed.exchange,
        properties: config.message_properties,
    }))
}

/// The dead-letter message of an unroutable row: the row as JSON, the reason and the table in
/// headers. Our own message, not a Debezium one: it keeps the full properties (content type).
pub(crate) fn dead_letter(
    router: &Router,
    insert: &Insert,
    exchange: &str,
    table: &str,
    reason: String,
) -> OutgoingMessage {
    OutgoingMessage {
        exchange: exchange.to_owned(),
        routing_key: String::new(),
        message_id: String::new(),
        body: router.row_as_json(insert).into_bytes().into(),
        headers: vec![
            ("x-outbox-relay-error".to_owned(), reason),
            ("x-outbox-relay-table".to_owned(), table.to_owned()),
        ],
        timestamp: 0,
        properties: MessageProperties::Full,
    }
}
