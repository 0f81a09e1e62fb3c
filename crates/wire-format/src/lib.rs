//! The two message formats the relay publishes on RabbitMQ and the shipment-service reads.
//!
//! - [`WireFormat::Plain`] (default): the body is the outbox payload JSON, compact, keys in the
//!   order the database gives them; headers `id` and `eventType` carry bare values.
//! - [`WireFormat::Debezium`]: byte for byte what Debezium 3.6.3 publishes with the original
//!   system's configuration (outbox event router, `table.expand.json.payload=true`, JSON
//!   converter with schemas), so a consumer written for that system works unchanged. The rules,
//!   and where they go back to Debezium's own code, are in the `debezium` module's docs.
//!
//! # Layout
//! - [`encode`] / [`encode_with`] (producer side, used by the relay);
//! - [`decode`] (consumer side, used by the shipment-service): detects the format and extracts
//!   event id, event type and payload;
//! - [`trace_context`]: the W3C trace context of an event, in the outbox column (Java
//!   Properties text, as Debezium) and in the `traceparent`/`tracestate` headers;
//! - `json`: an order-preserving JSON reader and compactor; `debezium`: schema inference and
//!   Jackson-exact number and string output, checked against Debezium's own classes
//!   (`tests/fixtures/debezium-oracle.txt`).

mod debezium;
mod json;
mod receive;
pub mod trace_context;

use std::fmt;
use std::str::FromStr;

pub use receive::{ReceiveError, ReceivedEvent, decode};
pub use trace_context::TraceContext;

/// How events are laid out on the broker.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// The payload JSON as written; bare header values.
    #[default]
    Plain,
    /// Debezium's JSON-with-schema envelopes for body and headers.
    Debezium,
}

impl WireFormat {
    /// Every format, by its configuration name.
    pub const ALL: [WireFormat; 2] = [WireFormat::Plain, WireFormat::Debezium];

    /// The configuration name: `plain` or `debezium`.
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::Plain => "plain",
            WireFormat::Debezium => "debezium",
        }
    }
}

impl fmt::Display for WireFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A wire format name that is neither `plain` nor `debezium`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown wire format {0:?}: valid values are \"plain\" and \"debezium\"")]
pub struct UnknownWireFormat(pub String);

impl FromStr for WireFormat {
    type Err = UnknownWireFormat;

    /// Accepts `plain` and `debezium`, in any letter case, surrounding spaces ignored.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let name = text.trim();
        WireFormat::ALL
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownWireFormat(text.to_owned()))
    }
}

/// The type of the outbox column a header comes from, which Debezium writes into the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderKind {
    /// A text column (`varchar`, `text`).
    String,
    /// A `uuid` column: Debezium names its schema `io.debezium.data.Uuid`.
    Uuid,
}

/// One header to put on a message, e.g. `id` (a uuid) or `eventType` (a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub kind: HeaderKind,
}

/// A message ready to publish. Header values go out as AMQP long strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// Debezium format only: why the payload could not be expanded, when Debezium would publish
    /// it unexpanded as a string (see the crate docs). Worth a warning in the logs; the message
    /// is still what Debezium would send.
    pub debezium_fallback: Option<String>,
}

/// Settings of the encoder beyond the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions<'a> {
    /// Debezium format: the outbox payload column (`table.field.event.payload`), which Debezium
    /// uses as the name of the body's top-level struct. Default `payload`.
    pub payload_field: &'a str,
}

impl Default for EncodeOptions<'_> {
    fn default() -> Self {
        EncodeOptions {
            payload_field: "payload",
        }
    }
}

/// Why a payload could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload text is not JSON (jsonb output always is: this points at a bug upstream).
    #[error("the outbox payload is not valid JSON: {reason} at byte {offset}")]
    InvalidJson { offset: usize, reason: &'static str },
}

/// Encodes one outbox event. `payload_json` is the payload column as PostgreSQL's jsonb text
/// output gives it (keys in storage order, `{"id": "x", "eventType": "OrderCreated"}` with
/// spaces). Uses the default [`EncodeOptions`].
pub fn encode(
    format: WireFormat,
    payload_json: &str,
    headers: &[Header<'_>],
) -> Result<EncodedMessage, EncodeError> {
    encode_with(format, &EncodeOptions::default(), payload_json, headers)
}

/// [`encode`] with explicit options.
pub fn encode_with(
    format: WireFormat,
    options: &EncodeOptions<'_>,
    payload_json: &str,
    headers: &[Header<'_>],
) -> Result<EncodedMessage, EncodeError> {
    let invalid = |error: json::SyntaxError| EncodeError::InvalidJson {
        offset: error.offset,
        reason: error.reason,
    };
    match format {
        WireFormat::Plain => {
            let body = json::compact(payload_json).map_err(invalid)?;
            Ok(EncodedMessage {
                body,
                headers: headers
                    .iter()
                    .map(|header| (header.name.to_owned(), header.value.to_owned()))
                    .collect(),
                debezium_fallback: None,
            })
        }
        WireFormat::Debezium => {
            let payload = json::parse(payload_json).map_err(invalid)?;
            let encoded = debezium::body(options.payload_field, payload_json, &payload);
            Ok(EncodedMessage {
                body: encoded.body,
                headers: headers
                    .iter()
                    .map(|header| {
                        let value =
                            debezium::header_value(header.value, header.kind == HeaderKind::Uuid);
                        (header.name.to_owned(), value)
                    })
                    .collect(),
                debezium_fallback: encoded.fallback_reason,
            })
        }
    }
}
