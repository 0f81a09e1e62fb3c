//! The consumer side: both formats round-trip through `encode` → `decode`, the captured Debezium
//! messages decode to the right id, type and payload, bad bodies give clear errors, and arbitrary
//! input never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::outbox_headers as headers;
use proptest::prelude::*;
use serde_json::{Value, json};
use wire_format::{ReceiveError, WireFormat, decode, encode};

const PAYLOAD_JSONB: &str = r#"{"id": "0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5", "eventType": "OrderCreated", "lineItems": [{"id": "a1", "item": "Pen", "status": "ENTERED", "quantity": 2, "totalPrice": 39.98}], "orderDate": "2024-01-01T12:00:00.000Z", "customerId": 3}"#;

#[test]
fn both_formats_round_trip() {
    let expected_payload: Value = serde_json::from_str(PAYLOAD_JSONB).unwrap();
    for format in WireFormat::ALL {
        let message = encode(format, PAYLOAD_JSONB, &headers("e-1", "OrderCreated")).unwrap();
        let event = decode(&message.body, None, &message.headers).unwrap();
        assert_eq!(event.format, format);
        assert_eq!(event.event_id.as_deref(), Some("e-1"));
        assert_eq!(event.event_type.as_deref(), Some("OrderCreated"));
        assert_eq!(event.payload, expected_payload, "{format}");
    }
}

#[test]
fn unexpandable_debezium_payload_still_round_trips() {
    let payload = r#"{"mixed": [1, "x"], "eventType": "Odd"}"#;
    let message = encode(WireFormat::Debezium, payload, &[]).unwrap();
    assert!(message.debezium_fallback.is_some());
    let event = decode(&message.body, Some("m-1"), &[]).unwrap();
    assert_eq!(event.format, WireFormat::Debezium);
    assert_eq!(event.event_id.as_deref(), Some("m-1"));
    assert_eq!(event.event_type.as_deref(), Some("Odd"));
    assert_eq!(
        event.payload,
        json!({"mixed": [1, "x"], "eventType": "Odd"})
    );
}

#[test]
fn captured_debezium_messages_decode() {
    for (name, id, event_type) in [
        (
            "order-created.json",
            "4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60",
            "OrderCreated",
        ),
        (
            "order-line-updated.json",
            "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d",
            "OrderLineUpdated",
        ),
        (
            "extended-headers/order-created.json",
            "4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60",
            "OrderCreated",
        ),
    ] {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let sample: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let amqp_headers: Vec<(String, String)> = sample["properties"]["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let body = sample["body"].as_str().unwrap();
        let event = decode(body.as_bytes(), None, &amqp_headers).unwrap();
        assert_eq!(event.format, WireFormat::Debezium, "{name}");
        assert_eq!(event.event_id.as_deref(), Some(id), "{name}");
        assert_eq!(event.event_type.as_deref(), Some(event_type), "{name}");
        assert_eq!(event.payload, sample["source_row"]["payload"], "{name}");
    }
}

#[test]
fn message_id_wins_over_the_id_header_and_payload_gives_the_type() {
    let amqp_headers = vec![("id".to_owned(), "from-header".to_owned())];
    let event = decode(
        br#"{"eventType":"X"}"#,
        Some("from-property"),
        &amqp_headers,
    )
    .unwrap();
    assert_eq!(event.event_id.as_deref(), Some("from-property"));
    assert_eq!(event.event_type.as_deref(), Some("X"));
    let event = decode(br#"{"eventType":"X"}"#, Some(""), &amqp_headers).unwrap();
    assert_eq!(event.event_id.as_deref(), Some("from-header"));
    let event = decode(br#"{"other":1}"#, None, &[]).unwrap();
    assert_eq!(event.event_id, None);
    assert_eq!(event.event_type, None);
    assert_eq!(event.format, WireFormat::Plain);
}

#[test]
fn a_plain_object_with_more_keys_than_an_envelope_is_plain() {
    let event = decode(br#"{"schema":1,"payload":{},"x":2}"#, None, &[]).unwrap();
    assert_eq!(event.format, WireFormat::Plain);
    assert_eq!(event.payload, json!({"schema":1,"payload":{},"x":2}));
}

#[test]
fn bad_bodies_are_named_clearly() {
    let cases: [(&[u8], &str); 6] = [
        (
            b"not json",
            "the message body is not JSON: expected ident at line 1 column 2",
        ),
        (
            b"",
            "the message body is not JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            b"[1,2]",
            "the message body is a JSON array, expected an object",
        ),
        (
            br#"{"schema":{},"payload":null}"#,
            "the Debezium envelope has a null payload",
        ),
        (
            br#"{"schema":{},"payload":"{oops"}"#,
            "the Debezium envelope carries its payload as a string that is not JSON: key must be a string at line 1 column 2",
        ),
        (
            br#"{"schema":{},"payload":42}"#,
            "the Debezium envelope payload is a JSON number, expected an object",
        ),
    ];
    for (body, message) in cases {
        let error: ReceiveError = decode(body, None, &[]).unwrap_err();
        assert_eq!(error.to_string(), message);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
    ))]

    #[test]
    fn decode_never_panics_on_arbitrary_input(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        message_id in proptest::option::of(".{0,16}"),
        header_list in proptest::collection::vec(
            (prop_oneof![Just("id".to_owned()), Just("eventType".to_owned()), ".{0,8}"], ".{0,64}"),
            0..4,
        ),
    ) {
        let _ = decode(&body, message_id.as_deref(), &header_list);
    }

    #[test]
    fn decode_never_panics_on_json_like_input(
        body in r#"[{}\[\]":,0-9a-z \\-]{0,64}"#,
        header_value in r#"[{}\[\]":,0-9a-z \\-]{0,64}"#,
    ) {
        let amqp_headers = vec![("id".to_owned(), header_value.clone()), ("eventType".to_owned(), header_value)];
        let _ = decode(body.as_bytes(), None, &amqp_headers);
    }

    #[test]
    fn encode_never_panics_and_plain_output_is_the_same_json(text in r#"[{}\[\]":,0-9a-zE.\\ u-]{0,64}"#) {
        for format in WireFormat::ALL {
            if let Ok(message) = encode(format, &text, &[]) {
                let reparsed: Result<Value, _> = serde_json::from_slice(&message.body);
                prop_assert!(reparsed.is_ok(), "{format} produced invalid JSON for {text:?}");
                if format == WireFormat::Plain {
                    prop_assert_eq!(reparsed.ok(), serde_json::from_str::<Value>(&text).ok());
                }
            }
        }
    }

    #[test]
    fn generated_objects_round_trip_in_both_formats(payload in json_object()) {
        let text = serde_json::to_string(&payload).unwrap();
        for format in WireFormat::ALL {
            let message = encode(format, &text, &[]).unwrap();
            let event = decode(&message.body, Some("m"), &message.headers).unwrap();
            if format == WireFormat::Plain || message.debezium_fallback.is_some() {
                prop_assert!(same_json(&event.payload, &payload), "{format}: {} != {payload}", event.payload);
            } else {
                // Debezium drops null fields and empty arrays, and gives objects in an array the
                // union of their fields (null where absent); everything else survives.
                let (got, want) = (without_nulls(&event.payload), without_nulls(&payload));
                prop_assert!(same_json(&got, &want), "{format}: {got} != {want}");
            }
        }
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e9f64..1.0e9).prop_map(|f| json!(f)),
        "[a-zA-Z0-9 \"\\\\é\n]{0,8}".prop_map(Value::String),
    ]
}

fn json_object() -> impl Strategy<Value = Value> {
    let value = json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map("[a-zA-Z]{1,6}", value, 0..6)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// Drops object members that are null or empty arrays, at every depth.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Equal JSON, floats within a few ULPs: serde_json's default float parser (without the
/// `float_roundtrip` feature) may read a correct shortest representation one ULP off.
fn same_json(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(l), Value::Number(r)) if l.is_f64() || r.is_f64() => {
            let (l, r) = (
                l.as_f64().unwrap_or(f64::NAN),
                r.as_f64().unwrap_or(f64::NAN),
            );
            l == r || (l - r).abs() <= l.abs().max(r.abs()) * 4.0 * f64::EPSILON
        }
        (Value::Array(l), Value::Array(r)) => {
            l.len() == r.len() && l.iter().zip(r).all(|(l, r)| same_json(l, r))
        }
        (Value::Object(l), Value::Object(r)) => {
            l.len() == r.len()
                && l.iter()
                    .all(|(k, v)| r.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => left == right,
    }
}
