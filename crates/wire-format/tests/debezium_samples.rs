//! The `debezium` format against messages captured from real Debezium 3.6.3 (copied from
//! `shared/peers/debezium/sample-messages/` into `tests/fixtures/`), and how the order-service's
//! real events are encoded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::outbox_headers;
use serde_json::Value;
use wire_format::{EncodeOptions, EncodedMessage, WireFormat, encode, encode_with};

struct Sample {
    body: String,
    headers: Vec<(String, String)>,
    event_id: String,
    event_type: String,
}

fn sample(name: &str) -> Sample {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let sample: Value = serde_json::from_str(&text).unwrap();
    let headers = sample["properties"]["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned()))
        .collect();
    Sample {
        body: sample["body"].as_str().unwrap().to_owned(),
        headers,
        event_id: sample["source_row"]["id"].as_str().unwrap().to_owned(),
        event_type: sample["source_row"]["type"].as_str().unwrap().to_owned(),
    }
}

/// [`debezium`] with a placeholder id and event type, for tests about the payload alone.
fn encode_payload(payload: &str) -> EncodedMessage {
    debezium(payload, "i", "t")
}

fn debezium(payload: &str, id: &str, event_type: &str) -> EncodedMessage {
    encode(
        WireFormat::Debezium,
        payload,
        &outbox_headers(id, event_type),
    )
    .unwrap()
}

/// AMQP header tables have no meaningful order (the sample files list them sorted by name).
fn sorted(mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.sort();
    headers
}

fn body_text(message: &EncodedMessage) -> &str {
    std::str::from_utf8(&message.body).unwrap()
}

/// The samples' `source_row.payload` as PostgreSQL's jsonb text output gives it (captured with
/// `SELECT payload::text`): keys in storage order, a space after `:` and `,`.
const ORDER_CREATED_JSONB: &str = r#"{"id": "0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5", "eventType": "OrderCreated", "orderDate": "2024-01-01T12:00:00.000Z", "customerId": 3}"#;
const ORDER_LINE_UPDATED_JSONB: &str = r#"{"orderId": "0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5", "eventType": "OrderLineUpdated", "newStatus": "CANCELLED", "oldStatus": "ENTERED", "orderLineId": "7c6d5e4f-3a2b-4c1d-9e8f-7a6b5c4d3e2f"}"#;

/// Encodes `payload` as sample `name`'s event in the `debezium` format and asserts the body
/// and the headers are the sample's, byte for byte.
fn assert_reproduces(name: &str, payload: &str) -> EncodedMessage {
    let expected = sample(name);
    let message = debezium(payload, &expected.event_id, &expected.event_type);
    assert_eq!(body_text(&message), expected.body, "{name}");
    assert_eq!(
        sorted(message.headers.clone()),
        sorted(expected.headers),
        "{name}"
    );
    message
}

#[test]
fn order_created_sample_is_reproduced_byte_for_byte() {
    let message = assert_reproduces("order-created.json", ORDER_CREATED_JSONB);
    assert_eq!(message.debezium_fallback, None);
}

#[test]
fn order_line_updated_sample_is_reproduced_byte_for_byte() {
    assert_reproduces("order-line-updated.json", ORDER_LINE_UPDATED_JSONB);
}

#[test]
fn extended_header_samples_have_the_same_body_and_outbox_headers() {
    for (name, payload) in [
        ("order-created.json", ORDER_CREATED_JSONB),
        ("order-line-updated.json", ORDER_LINE_UPDATED_JSONB),
    ] {
        let expected = sample(&format!("extended-headers/{name}"));
        let message = debezium(payload, &expected.event_id, &expected.event_type);
        assert_eq!(body_text(&message), expected.body);
        for (header, value) in &message.headers {
            let (_, sample_value) = expected
                .headers
                .iter()
                .find(|(name, _)| name == header)
                .unwrap();
            assert_eq!(value, sample_value, "{name}: header {header}");
        }
    }
}

/// The order-service's `OrderCreated` as stored in jsonb: a `lineItems` array of objects and a
/// decimal `totalPrice` (a JSON number, so jsonb keeps its digits: `40.0`, `12345678.5`).
const ORDER_CREATED_WITH_LINES_JSONB: &str = r#"{"id": "0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5", "eventType": "OrderCreated", "lineItems": [{"id": "a1b2c3d4-0000-4000-8000-000000000001", "item": "Debezium in Action", "status": "ENTERED", "quantity": 2, "totalPrice": 39.98}, {"id": "a1b2c3d4-0000-4000-8000-000000000002", "item": "Rust \"Book\" é", "status": "ENTERED", "quantity": 1, "totalPrice": 12345678.5}, {"id": "a1b2c3d4-0000-4000-8000-000000000003", "item": "Pen", "status": "ENTERED", "quantity": 10, "totalPrice": 40.0}], "orderDate": "2024-01-01T12:00:00.000Z", "customerId": 3}"#;

#[test]
fn order_created_with_line_items_becomes_an_array_of_structs() {
    let message = debezium(
        ORDER_CREATED_WITH_LINES_JSONB,
        "4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60",
        "OrderCreated",
    );
    let line_schema = r#"{"type":"array","items":{"type":"struct","fields":[{"type":"string","optional":true,"field":"id"},{"type":"string","optional":true,"field":"item"},{"type":"string","optional":true,"field":"status"},{"type":"int32","optional":true,"field":"quantity"},{"type":"double","optional":true,"field":"totalPrice"}],"optional":true,"name":"payload.lineItems"},"optional":true,"field":"lineItems"}"#;
    let expected = format!(
        concat!(
            r#"{{"schema":{{"type":"struct","fields":[{{"type":"string","optional":true,"field":"id"}},"#,
            r#"{{"type":"string","optional":true,"field":"eventType"}},{line_schema},"#,
            r#"{{"type":"string","optional":true,"field":"orderDate"}},{{"type":"int32","optional":true,"field":"customerId"}}],"#,
            r#""optional":true,"name":"payload"}},"payload":{{"id":"0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5","eventType":"OrderCreated","#,
            r#""lineItems":[{{"id":"a1b2c3d4-0000-4000-8000-000000000001","item":"Debezium in Action","status":"ENTERED","quantity":2,"totalPrice":39.98}},"#,
            r#"{{"id":"a1b2c3d4-0000-4000-8000-000000000002","item":"Rust \"Book\" é","status":"ENTERED","quantity":1,"totalPrice":1.23456785E7}},"#,
            r#"{{"id":"a1b2c3d4-0000-4000-8000-000000000003","item":"Pen","status":"ENTERED","quantity":10,"totalPrice":40.0}}],"#,
            r#""orderDate":"2024-01-01T12:00:00.000Z","customerId":3}}}}"#
        ),
        line_schema = line_schema
    );
    assert_eq!(body_text(&message), expected);
    assert_eq!(message.debezium_fallback, None);
}

#[test]
fn plain_format_is_the_compact_payload_with_bare_headers() {
    let message = encode(
        WireFormat::Plain,
        ORDER_CREATED_WITH_LINES_JSONB,
        &outbox_headers("4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60", "OrderCreated"),
    )
    .unwrap();
    let expected: String = ORDER_CREATED_WITH_LINES_JSONB
        .replace("\": ", "\":")
        .replace(", \"", ",\"")
        .replace(", {", ",{");
    assert_eq!(body_text(&message), expected);
    assert_eq!(
        message.headers,
        vec![
            (
                "id".to_owned(),
                "4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60".to_owned()
            ),
            ("eventType".to_owned(), "OrderCreated".to_owned()),
        ]
    );
}

#[test]
fn number_types_follow_jackson() {
    let message = encode_payload(
        r#"{"a": 2147483647, "b": 2147483648, "c": -9223372036854775808, "d": 1.50, "e": 0.0001, "f": 1e2, "g": -0}"#,
    );
    assert_eq!(
        body_text(&message),
        concat!(
            r#"{"schema":{"type":"struct","fields":["#,
            r#"{"type":"int32","optional":true,"field":"a"},{"type":"int64","optional":true,"field":"b"},"#,
            r#"{"type":"int64","optional":true,"field":"c"},{"type":"double","optional":true,"field":"d"},"#,
            r#"{"type":"double","optional":true,"field":"e"},{"type":"double","optional":true,"field":"f"},"#,
            r#"{"type":"int32","optional":true,"field":"g"}],"optional":true,"name":"payload"},"#,
            r#""payload":{"a":2147483647,"b":2147483648,"c":-9223372036854775808,"d":1.5,"e":1.0E-4,"f":100.0,"g":0}}"#
        )
    );
}

#[test]
fn nulls_and_empty_arrays_are_left_out_and_nested_objects_are_named_by_path() {
    let message = encode_payload(
        r#"{"n": null, "ok": true, "tags": ["x", null], "empty": [], "address": {"zip": null, "city": "Bern", "geo": {"lat": 46.9}}}"#,
    );
    assert_eq!(
        body_text(&message),
        concat!(
            r#"{"schema":{"type":"struct","fields":["#,
            r#"{"type":"boolean","optional":true,"field":"ok"},"#,
            r#"{"type":"array","items":{"type":"string","optional":true},"optional":true,"field":"tags"},"#,
            r#"{"type":"struct","fields":[{"type":"string","optional":true,"field":"city"},"#,
            r#"{"type":"struct","fields":[{"type":"double","optional":true,"field":"lat"}],"optional":true,"name":"payload.address.geo","field":"geo"}],"#,
            r#""optional":true,"name":"payload.address","field":"address"}],"optional":true,"name":"payload"},"#,
            r#""payload":{"ok":true,"tags":["x",null],"address":{"city":"Bern","geo":{"lat":46.9}}}}"#
        )
    );
}

#[test]
fn objects_of_an_array_get_the_union_of_their_fields() {
    // Differing objects: a merged struct, which Debezium marks required ("optional":false).
    let message = encode_payload(r#"{"lines": [{"a": 1}, {"a": 2, "b": "x"}]}"#);
    assert_eq!(
        body_text(&message),
        concat!(
            r#"{"schema":{"type":"struct","fields":[{"type":"array","items":{"type":"struct","fields":["#,
            r#"{"type":"int32","optional":true,"field":"a"},{"type":"string","optional":true,"field":"b"}],"#,
            r#""optional":false,"name":"payload.lines"},"optional":true,"field":"lines"}],"optional":true,"name":"payload"},"#,
            r#""payload":{"lines":[{"a":1,"b":null},{"a":2,"b":"x"}]}}"#
        )
    );
    // Alike objects keep an optional struct, so a null element is fine…
    let message = encode_payload(r#"{"lines": [{"a": 1}, null, {"a": 2}]}"#);
    assert!(
        body_text(&message).ends_with(r#""payload":{"lines":[{"a":1},null,{"a":2}]}}"#),
        "{}",
        body_text(&message)
    );
    // …but next to a required merged struct it fails Connect's validation: unexpanded.
    let message = encode_payload(r#"{"lines": [{"a": 1}, null, {"a": 2, "b": "x"}]}"#);
    assert!(body_text(&message).contains("io.debezium.data.Json"));
    assert!(message.debezium_fallback.unwrap().contains("null element"));
}

#[test]
fn strings_are_re_escaped_like_jackson() {
    let message = debezium(r#"{"s": "tab\there \u00e9 \u001f \/ \"q\""}"#, "i\"d", "t");
    assert!(
        body_text(&message).ends_with(r#""payload":{"s":"tab\there é \u001F / \"q\""}}"#),
        "{}",
        body_text(&message)
    );
    assert_eq!(
        message.headers[0].1,
        r#"{"schema":{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1},"payload":"i\"d"}"#
    );
}

#[test]
fn payloads_debezium_cannot_expand_go_out_as_a_json_string() {
    for (payload, reason) in [
        (r#"[1, 2]"#, "array"),
        (r#"{"a": [1, "x"]}"#, "mixes"),
        (r#"{"a": [1, 2.5]}"#, "number types"),
        (r#"{"a": [null]}"#, "only nulls"),
        (r#"{"a": 123456789012345678901234}"#, "64 bits"),
        (r#"{"": 1}"#, "empty key"),
        (r#"{"a": [{"x": 1}, {"x": "s"}]}"#, "does not fit"),
    ] {
        let message = encode_payload(payload);
        let mut escaped = String::new();
        for c in payload.chars() {
            if c == '"' {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        assert_eq!(
            body_text(&message),
            format!(
                r#"{{"schema":{{"type":"string","optional":false,"name":"io.debezium.data.Json","version":1}},"payload":"{escaped}"}}"#
            ),
            "{payload}"
        );
        let why = message.debezium_fallback.unwrap();
        assert!(why.contains(reason), "{payload}: {why}");
    }
}

#[test]
fn empty_object_and_custom_payload_field() {
    let message = encode_with(
        WireFormat::Debezium,
        &EncodeOptions {
            payload_field: "data",
        },
        "{}",
        &[],
    )
    .unwrap();
    assert_eq!(
        body_text(&message),
        r#"{"schema":{"type":"struct","fields":[],"optional":true,"name":"data"},"payload":{}}"#
    );
    assert!(message.headers.is_empty());
}

#[test]
fn invalid_json_is_an_error_in_both_formats() {
    for format in WireFormat::ALL {
        let error = encode(format, r#"{"a": }"#, &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the outbox payload is not valid JSON: unexpected character, expected a value at byte 6"
        );
    }
}

#[test]
fn wire_format_names() {
    assert_eq!("plain".parse(), Ok(WireFormat::Plain));
    assert_eq!(" Debezium ".parse(), Ok(WireFormat::Debezium));
    assert_eq!(WireFormat::default(), WireFormat::Plain);
    assert_eq!(WireFormat::Debezium.to_string(), "debezium");
    let error = "avro".parse::<WireFormat>().unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"unknown wire format "avro": valid values are "plain" and "debezium""#
    );
}

#[test]
fn deep_nesting_is_handled_up_to_the_limit_and_refused_beyond() {
    let nested_objects = |depth: usize| {
        let mut text = String::new();
        for _ in 0..depth - 1 {
            text.push_str(r#"{"a": "#);
        }
        text.push_str(r#"{"a": [1]}"#);
        text.push_str(&"}".repeat(depth - 1));
        text
    };
    // The outer object plus 511 nested ones plus the array: 513 levels.
    let too_deep = nested_objects(512);
    for format in WireFormat::ALL {
        assert!(encode(format, &too_deep, &[]).is_err());
    }
    let deepest = nested_objects(511);
    for format in WireFormat::ALL {
        let message = encode(format, &deepest, &[]).unwrap();
        let schema_names = body_text(&message).matches("\"name\":\"payload.a").count();
        if format == WireFormat::Debezium {
            assert_eq!(schema_names, 510);
        }
    }
}

#[test]
fn many_keys_and_duplicate_keys() {
    let members: Vec<String> = (0..20_000).map(|i| format!(r#""k{i}": {i}"#)).collect();
    let payload = format!("{{{}}}", members.join(", "));
    let message = encode_payload(&payload);
    assert!(body_text(&message).ends_with(r#""k19998":19998,"k19999":19999}}"#));
    // Jackson keeps a duplicated key at its first place with its last value.
    let message = encode_payload(r#"{"a": 1, "b": 2, "a": "x"}"#);
    assert_eq!(
        body_text(&message),
        r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":true,"field":"a"},{"type":"int32","optional":true,"field":"b"}],"optional":true,"name":"payload"},"payload":{"a":"x","b":2}}"#
    );
}

#[test]
fn header_values_are_escaped_like_kafka_connect_json_converter() {
    // Expected output produced by Kafka Connect 4.3's JsonConverter.fromConnectHeader (the
    // version bundled with Debezium 3.6.3) for the same value.
    let value = "a\"b\\c/\u{1}\t\u{7f} é 😀 \u{2028}";
    let message = encode(WireFormat::Debezium, "{}", &outbox_headers(value, value)).unwrap();
    assert_eq!(
        message.headers[0].1,
        "{\"schema\":{\"type\":\"string\",\"optional\":false,\"name\":\"io.debezium.data.Uuid\",\"version\":1},\"payload\":\"a\\\"b\\\\c/\\u0001\\t\u{7f} é \\uD83D\\uDE00 \u{2028}\"}"
    );
    assert_eq!(
        message.headers[1].1,
        "{\"schema\":{\"type\":\"string\",\"optional\":false},\"payload\":\"a\\\"b\\\\c/\\u0001\\t\u{7f} é \\uD83D\\uDE00 \u{2028}\"}"
    );
}
