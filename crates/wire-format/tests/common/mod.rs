//! What the wire-format test files share: the outbox's two headers, as the relay passes them.

use wire_format::{Header, HeaderKind};

/// The headers the relay gives every outbox event: `id` (a UUID) and `eventType`.
pub fn outbox_headers<'a>(id: &'a str, event_type: &'a str) -> [Header<'a>; 2] {
    [
        Header {
            name: "id",
            value: id,
            kind: HeaderKind::Uuid,
        },
        Header {
            name: "eventType",
            value: event_type,
            kind: HeaderKind::String,
        },
    ]
}
