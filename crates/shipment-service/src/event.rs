//! Turns one AMQP message into a typed event, or into the reason it is poison.
//!
//! Both wire formats of the relay are understood (plain payload body, Debezium envelope) through
//! `wire_format::decode`. Anything that can never be applied — not JSON, no event id, an unknown
//! `eventType`, missing or ill-typed fields — is a [`Poison`] with a reason an operator can read.
//!
//! Both producers' shapes are accepted: ours sends `OrderCreated` with `lineItems`, the original
//! NodeJS producer without (`{id, eventType, orderDate, customerId}`). An absent (or `null`)
//! `lineItems` means the order's lines are unknown, which is not the same as `lineItems: []`,
//! an order known to have no lines (`lines_known` of [`EventKind::OrderCreated`]).

use std::fmt;

use events::{OrderCreated, OrderLineUpdated};
use uuid::Uuid;
use wire_format::{TraceContext, WireFormat};

/// An order event ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    /// The event id: AMQP `message_id`, else the `id` header.
    pub id: Uuid,
    pub kind: EventKind,
    pub format: WireFormat,
    /// The producer's W3C trace context (`traceparent`/`tracestate` headers), if valid.
    pub trace: Option<TraceContext>,
}

impl IncomingEvent {
    /// The order the event is about (the relay's routing key with `RELAY_ROUTING_KEY=key`).
    pub fn order_id(&self) -> Uuid {
        match &self.kind {
            EventKind::OrderCreated { order, .. } => order.id,
            EventKind::OrderLineUpdated(update) => update.order_id,
        }
    }
}

/// The events this service applies.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    OrderCreated {
        /// The order; its `line_items` are empty when `lines_known` is false.
        order: OrderCreated,
        /// Whether the payload listed the order's lines (`lineItems`, possibly empty). The
        /// original producer never does: the shipment then learns lines from line updates.
        lines_known: bool,
    },
    OrderLineUpdated(OrderLineUpdated),
}

impl EventKind {
    /// The `eventType` spelling, used as a metric label.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::OrderCreated { .. } => "OrderCreated",
            EventKind::OrderLineUpdated(_) => "OrderLineUpdated",
        }
    }
}

/// Why a message goes to the dead-letter queue (header `x-death-reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonReason {
    /// Not JSON, not an object, or a broken Debezium envelope.
    Malformed,
    /// Neither `message_id` nor an `id` header holds a UUID.
    MissingEventId,
    /// `eventType` absent or not one this service knows.
    UnknownEventType,
    /// A known event type with missing or ill-typed fields.
    InvalidPayload,
    /// Well-formed, but contradicts what is stored (e.g. a line the order does not have).
    Rejected,
    /// Handling failed `SHIPMENT_MAX_ATTEMPTS` times.
    MaxAttempts,
}

impl PoisonReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PoisonReason::Malformed => "malformed",
            PoisonReason::MissingEventId => "missing-event-id",
            PoisonReason::UnknownEventType => "unknown-event-type",
            PoisonReason::InvalidPayload => "invalid-payload",
            PoisonReason::Rejected => "rejected",
            PoisonReason::MaxAttempts => "max-attempts",
        }
    }
}

impl fmt::Display for PoisonReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that can never be applied, with the reason and a readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Poison {
    pub reason: PoisonReason,
    pub detail: String,
    /// The `eventType`, when it could be read (metric label).
    pub event_type: Option<String>,
}

impl Poison {
    pub fn new(reason: PoisonReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            event_type: None,
        }
    }

    fn of_type(mut self, event_type: &str) -> Self {
        self.event_type = Some(event_type.to_owned());
        self
    }
}

/// Upper bound on lines per order: the order-service refuses more than 1000.
const MAX_LINES: usize = 10_000;

/// Decodes a message body with its `message_id` and string headers.
pub fn parse(
    body: &[u8],
    message_id: Option<&str>,
    headers: &[(String, String)],
) -> Result<IncomingEvent, Poison> {
    let received = wire_format::decode(body, message_id, headers)
        .map_err(|error| Poison::new(PoisonReason::Malformed, error.to_string()))?;
    let event_type = received.event_type.as_deref().ok_or_else(|| {
        Poison::new(
            PoisonReason::UnknownEventType,
            "no eventType header and no eventType field in the payload",
        )
    })?;
    let id = match received.event_id.as_deref() {
        None => {
            return Err(Poison::new(
                PoisonReason::MissingEventId,
                "no message_id property and no id header",
            )
            .of_type(event_type));
        }
        Some(text) => Uuid::parse_str(text.trim()).map_err(|_| {
            Poison::new(
                PoisonReason::MissingEventId,
                format!("event id {text:?} is not a UUID"),
            )
            .of_type(event_type)
        })?,
    };
    let mut payload = received.payload;
    let kind = match event_type {
        "OrderCreated" => {
            // The original producer (and the captured Debezium sample) sends no lineItems: the
            // lines are unknown, to be learnt from line updates.
            let mut lines_known = true;
            if let Some(object) = payload.as_object_mut() {
                let line_items = object.entry("lineItems").or_insert(serde_json::Value::Null);
                if line_items.is_null() {
                    lines_known = false;
                    *line_items = serde_json::Value::Array(Vec::new());
                }
            }
            let created: OrderCreated = serde_json::from_value(payload).map_err(|error| {
                Poison::new(
                    PoisonReason::InvalidPayload,
                    format!("OrderCreated payload: {error}"),
                )
                .of_type(event_type)
            })?;
            validate_created(&created).map_err(|detail| {
                Poison::new(PoisonReason::InvalidPayload, detail).of_type(event_type)
            })?;
            EventKind::OrderCreated {
                order: created,
                lines_known,
            }
        }
        "OrderLineUpdated" => {
            let updated: OrderLineUpdated = serde_json::from_value(payload).map_err(|error| {
                Poison::new(
                    PoisonReason::InvalidPayload,
                    format!("OrderLineUpdated payload: {error}"),
                )
                .of_type(event_type)
            })?;
            if !updated.old_status.can_become(updated.new_status) {
                return Err(Poison::new(
                    PoisonReason::InvalidPayload,
                    format!(
                        "OrderLineUpdated payload: a line cannot go from {} to {}",
                        updated.old_status, updated.new_status
                    ),
                )
                .of_type(event_type));
            }
            EventKind::OrderLineUpdated(updated)
        }
        other => {
            return Err(Poison::new(
                PoisonReason::UnknownEventType,
                format!("unknown eventType {other:?}: expected OrderCreated or OrderLineUpdated"),
            )
            .of_type(other));
        }
    };
    Ok(IncomingEvent {
        id,
        kind,
        format: received.format,
        trace: trace_context(headers),
    })
}

/// The `traceparent`/`tracestate` headers. Bare W3C values (our relay, both formats); a value
/// in Debezium's JSON header envelope (`{"schema":…,"payload":"00-…"}`) is unwrapped. A missing
/// or invalid one is no context, never a poison message.
fn trace_context(headers: &[(String, String)]) -> Option<TraceContext> {
    let header = |name: &str| {
        let value = headers.iter().find(|(key, _)| key == name)?.1.trim();
        if value.starts_with('{') {
            let envelope: serde_json::Value = serde_json::from_str(value).ok()?;
            return envelope.get("payload")?.as_str().map(str::to_owned);
        }
        Some(value.to_owned())
    };
    let traceparent = header(wire_format::trace_context::TRACEPARENT)?;
    let tracestate = header(wire_format::trace_context::TRACESTATE).unwrap_or_default();
    TraceContext::new(&traceparent, &tracestate).ok()
}

fn validate_created(created: &OrderCreated) -> Result<(), String> {
    if created.line_items.len() > MAX_LINES {
        return Err(format!(
            "OrderCreated payload: {} lineItems, at most {MAX_LINES}",
            created.line_items.len()
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(created.line_items.len());
    for (index, line) in created.line_items.iter().enumerate() {
        if line.quantity <= 0 {
            return Err(format!(
                "OrderCreated payload: lineItems[{index}].quantity is {}, must be positive",
                line.quantity
            ));
        }
        if line.item.trim().is_empty() {
            return Err(format!(
                "OrderCreated payload: lineItems[{index}].item is empty"
            ));
        }
        if !seen.insert(line.id) {
            return Err(format!(
                "OrderCreated payload: lineItems[{index}].id {} appears twice",
                line.id
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = "0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5";
    const LINE: &str = "7c6d5e4f-3a2b-4c1d-9e8f-7a6b5c4d3e2f";
    const EVENT: &str = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d";

    fn created_body() -> String {
        format!(
            r#"{{"eventType":"OrderCreated","id":"{ORDER}","customerId":3,"orderDate":"2024-01-01T12:00:00.000Z","lineItems":[{{"id":"{LINE}","item":"Debezium in Action","quantity":2,"totalPrice":39.98,"status":"ENTERED"}}]}}"#
        )
    }

    #[test]
    fn plain_order_created() {
        let event = parse(created_body().as_bytes(), Some(EVENT), &[]).unwrap();
        assert_eq!(event.id.to_string(), EVENT);
        let EventKind::OrderCreated {
            order: created,
            lines_known,
        } = event.kind
        else {
            panic!("not OrderCreated")
        };
        assert_eq!(created.customer_id, 3);
        assert_eq!(created.line_items.len(), 1);
        assert!(lines_known);
    }

    #[test]
    fn absent_line_items_are_unknown_lines_and_empty_ones_are_none() {
        let original = format!(
            r#"{{"id":"{ORDER}","eventType":"OrderCreated","orderDate":"2019-01-31T12:13:01.000Z","customerId":123}}"#
        );
        let explicit_null = original.replace("\"customerId\"", r#""lineItems":null,"customerId""#);
        let empty = original.replace("\"customerId\"", r#""lineItems":[],"customerId""#);
        for (body, known) in [(original, false), (explicit_null, false), (empty, true)] {
            let event = parse(body.as_bytes(), Some(EVENT), &[]).unwrap();
            let EventKind::OrderCreated { order, lines_known } = event.kind else {
                panic!("not OrderCreated: {body}")
            };
            assert_eq!(lines_known, known, "{body}");
            assert!(order.line_items.is_empty());
            assert_eq!(order.customer_id, 123);
        }
        // lineItems of the wrong type is still poison, not "unknown".
        let wrong = created_body().replace(r#""lineItems":["#, r#""lineItems":"none","x":["#);
        assert_eq!(
            parse(wrong.as_bytes(), Some(EVENT), &[])
                .unwrap_err()
                .reason,
            PoisonReason::InvalidPayload
        );
    }

    #[test]
    fn the_original_line_update_shape() {
        let body = format!(
            r#"{{"orderId":"{ORDER}","orderLineId":"{LINE}","oldStatus":"ENTERED","newStatus":"CANCELLED"}}"#
        );
        let headers = vec![("eventType".to_owned(), "OrderLineUpdated".to_owned())];
        let event = parse(body.as_bytes(), Some(EVENT), &headers).unwrap();
        let EventKind::OrderLineUpdated(update) = event.kind else {
            panic!("not OrderLineUpdated")
        };
        assert_eq!(update.order_line_id.to_string(), LINE);
    }

    #[test]
    fn id_header_when_no_message_id() {
        let headers = vec![("id".to_owned(), EVENT.to_owned())];
        let event = parse(created_body().as_bytes(), None, &headers).unwrap();
        assert_eq!(event.id.to_string(), EVENT);
    }

    #[test]
    fn each_poison_kind() {
        let cases: Vec<(Vec<u8>, Option<&str>, PoisonReason, &str)> = vec![
            (b"{not json".to_vec(), Some(EVENT), PoisonReason::Malformed, ""),
            (created_body().into_bytes(), None, PoisonReason::MissingEventId, "message_id"),
            (created_body().into_bytes(), Some("42"), PoisonReason::MissingEventId, "\"42\""),
            (
                br#"{"eventType":"OrderShipped","id":"x"}"#.to_vec(),
                Some(EVENT),
                PoisonReason::UnknownEventType,
                "OrderShipped",
            ),
            (
                br#"{"id":"x"}"#.to_vec(),
                Some(EVENT),
                PoisonReason::UnknownEventType,
                "eventType",
            ),
            (
                format!(r#"{{"eventType":"OrderCreated","id":"{ORDER}","orderDate":"2024-01-01T12:00:00Z"}}"#).into_bytes(),
                Some(EVENT),
                PoisonReason::InvalidPayload,
                "customerId",
            ),
            (
                format!(r#"{{"eventType":"OrderCreated","id":"{ORDER}","customerId":"three","orderDate":"2024-01-01T12:00:00Z"}}"#).into_bytes(),
                Some(EVENT),
                PoisonReason::InvalidPayload,
                "invalid type",
            ),
            (
                created_body().replace("\"quantity\":2", "\"quantity\":0").into_bytes(),
                Some(EVENT),
                PoisonReason::InvalidPayload,
                "quantity",
            ),
            (
                format!(r#"{{"eventType":"OrderLineUpdated","orderId":"{ORDER}","orderLineId":"{LINE}","newStatus":"ENTERED","oldStatus":"CANCELLED"}}"#).into_bytes(),
                Some(EVENT),
                PoisonReason::InvalidPayload,
                "cannot go",
            ),
            (
                format!(r#"{{"eventType":"OrderLineUpdated","orderId":"{ORDER}","orderLineId":"{LINE}","newStatus":"LOST","oldStatus":"ENTERED"}}"#).into_bytes(),
                Some(EVENT),
                PoisonReason::InvalidPayload,
                "LOST",
            ),
        ];
        for (body, message_id, reason, mention) in cases {
            let poison = parse(&body, message_id, &[]).unwrap_err();
            assert_eq!(poison.reason, reason, "{poison}");
            assert!(poison.detail.contains(mention), "{poison} lacks {mention}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300), id in proptest::option::of(".{0,40}")) {
            let _ = parse(&body, id.as_deref(), &[]);
        }
    }

    #[test]
    fn the_trace_context_comes_from_bare_or_debezium_wrapped_headers() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let bare = vec![
            ("traceparent".to_owned(), parent.to_owned()),
            ("tracestate".to_owned(), "a=b".to_owned()),
        ];
        let context = trace_context(&bare).unwrap();
        assert_eq!(context.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(context.tracestate(), "a=b");
        let wrapped = vec![(
            "traceparent".to_owned(),
            format!(r#"{{"schema":{{"type":"string","optional":false}},"payload":"{parent}"}}"#),
        )];
        assert_eq!(trace_context(&wrapped).unwrap().traceparent(), parent);
        assert_eq!(trace_context(&[]), None);
        let bad = vec![("traceparent".to_owned(), "00-nope".to_owned())];
        assert_eq!(trace_context(&bad), None);
    }
}
