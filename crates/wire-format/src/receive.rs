//! Consumer side: reads a message in either wire format and extracts what a consumer needs (event
//! id, event type, payload), so that the shipment-service accepts messages from our relay in both
//! formats and from the original Debezium system alike.

use serde_json::{Map, Value};

use crate::WireFormat;

/// An event read from a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The AMQP `message_id` if set, else the `id` header.
    pub event_id: Option<String>,
    /// The `eventType` header, else the payload's `eventType` field.
    pub event_type: Option<String>,
    /// The event payload, always a JSON object.
    pub payload: Value,
    /// The format the body was in.
    pub format: WireFormat,
}

/// Why a message cannot be read. The text goes into the dead-letter reason header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error("the message body is not JSON: {reason}")]
    NotJson { reason: String },
    #[error("the {location} is a JSON {found}, expected an object")]
    NotAnObject {
        /// `message body` or `Debezium envelope payload`.
        location: &'static str,
        found: &'static str,
    },
    #[error("the Debezium envelope has a null payload")]
    EnvelopeWithoutPayload,
    #[error("the Debezium envelope carries its payload as a string that is not JSON: {reason}")]
    EnvelopePayloadNotJson { reason: String },
}

/// Reads one message. `headers` are the AMQP headers whose values are strings (long or short
/// strings, as UTF-8).
///
/// A body that is an object with exactly the keys `schema` and `payload` is a Debezium envelope;
/// any other object is a plain payload. A Debezium envelope whose payload is a string (Debezium's
/// `io.debezium.data.Json`, sent when it could not expand the payload) is parsed. A header value
/// that is a JSON object with exactly `schema` and `payload` is unwrapped to its payload.
pub fn decode(
    body: &[u8],
    message_id: Option<&str>,
    headers: &[(String, String)],
) -> Result<ReceivedEvent, ReceiveError> {
    let body: Value = serde_json::from_slice(body).map_err(|error| ReceiveError::NotJson {
        reason: error.to_string(),
    })?;
    let (payload, format) = match body {
        Value::Object(mut envelope) if is_envelope(&envelope) => {
            let payload = envelope.remove("payload").unwrap_or(Value::Null);
            (envelope_payload(payload)?, WireFormat::Debezium)
        }
        Value::Object(object) => (Value::Object(object), WireFormat::Plain),
        other => {
            return Err(ReceiveError::NotAnObject {
                location: "message body",
                found: type_name(&other),
            });
        }
    };
    let event_id = message_id
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .or_else(|| header(headers, "id"));
    let event_type = header(headers, "eventType").or_else(|| {
        payload
            .get("eventType")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    Ok(ReceivedEvent {
        event_id,
        event_type,
        payload,
        format,
    })
}

fn is_envelope(object: &Map<String, Value>) -> bool {
    object.len() == 2 && object.contains_key("schema") && object.contains_key("payload")
}

fn envelope_payload(payload: Value) -> Result<Value, ReceiveError> {
    let payload = match payload {
        Value::Null => return Err(ReceiveError::EnvelopeWithoutPayload),
        Value::String(text) => {
            serde_json::from_str(&text).map_err(|error| ReceiveError::EnvelopePayloadNotJson {
                reason: error.to_string(),
            })?
        }
        other => other,
    };
    match payload {
        Value::Object(_) => Ok(payload),
        other => Err(ReceiveError::NotAnObject {
            location: "Debezium envelope payload",
            found: type_name(&other),
        }),
    }
}

/// The first header called `name`, unwrapped from a JSON converter envelope if it is one. A null
/// envelope payload counts as absent.
fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    let (_, value) = headers.iter().find(|(header, _)| header == name)?;
    if !value.trim_start().starts_with('{') {
        return Some(value.clone());
    }
    match serde_json::from_str::<Value>(value) {
        Ok(Value::Object(mut envelope)) if is_envelope(&envelope) => {
            match envelope.remove("payload") {
                Some(Value::String(text)) => Some(text),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            }
        }
        _ => Some(value.clone()),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
