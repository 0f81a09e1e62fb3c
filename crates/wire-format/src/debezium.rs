//! The `debezium` wire format: what Debezium 3.6.3 publishes with the original system's settings
//! (outbox `EventRouter` with `table.expand.json.payload=true`, Kafka Connect `JsonConverter`
//! with schemas for the value and the headers).
//!
//! # Body
//! Debezium parses the payload text with Jackson, infers a Connect schema from it
//! (`io.debezium.transforms.outbox.JsonSchemaData`), converts the document to a `Struct` and the
//! `JsonConverter` writes `{"schema":…,"payload":…}`. This module reproduces each step:
//!
//! - fields in the payload's key order (jsonb storage order), every schema optional;
//! - integers that fit 32 bits → `int32`, that fit 64 bits → `int64`; numbers with a fraction or
//!   exponent → `double`, written like Java's `Double.toString` (`39.98`, `40.0`, `1.23456785E7`,
//!   `1.0E-4`; an overflow is Jackson's quoted `"Infinity"`);
//! - strings → `string`, re-escaped like Jackson (`\u001F`, and `\uD83D\uDE00` for characters
//!   beyond the Basic Multilingual Plane); booleans → `boolean`; a nested object → a `struct`
//!   named after its path (`payload.address`);
//! - an array → `array` of its element schema. An array of alike objects → a struct named after
//!   the path (`payload.lineItems`); objects with differing fields → the union of their fields,
//!   `null` where an object lacks one, in a struct marked `"optional":false` (Connect's
//!   `SchemaUtil.copySchemaBasics` drops `optional` when merging);
//! - a field whose value is `null` or an empty array has no schema, so Debezium leaves it out of
//!   both schema and payload (the default `table.json.payload.null.behavior=ignore`).
//!
//! When Debezium cannot expand a payload (a top-level array, an array mixing types such as
//! `[1, "a"]` or `[1, 2.5]`, an array of nulls, an integer beyond 64 bits, an empty key, a number
//! longer than Jackson's 1000-character limit, a null next to merged objects) it logs "JSON
//! expansion failed" and publishes the payload unexpanded: the jsonb text in an
//! `io.debezium.data.Json` string envelope. We do the same and say why
//! ([`DebeziumBody::fallback_reason`]).
//!
//! Checked against Debezium itself: `tests/fixtures/debezium-oracle.txt` holds 1,835 payloads
//! with the bodies Debezium 3.6.3's own classes made for them, all reproduced byte for byte.
//! Known differences: Debezium merges differing objects of one array in `HashSet` order, which
//! follows JVM identity hashes; we merge in order of first appearance (3 of 1,500 random payloads
//! differed in field order). Java 17's `Double.toString` prints some rare doubles with a
//! non-shortest digit string; we print the shortest (closest, ties to even), as Java 19+ does.
//!
//! # Headers
//! Each header is a `JsonConverter` envelope of a non-optional string, named
//! `io.debezium.data.Uuid` (version 1) for a uuid column.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::json::{self, JsonValue};

/// Jackson's default `StreamReadConstraints.maxNumberLength`.
const JACKSON_MAX_NUMBER_LENGTH: usize = 1000;

/// A Debezium message body and, when the payload could not be expanded, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DebeziumBody {
    pub(crate) body: Vec<u8>,
    pub(crate) fallback_reason: Option<String>,
}

/// Encodes the body for a payload that [`json::parse`] accepted. `payload_text` is the original
/// text (what the fallback envelope carries); `payload_field` names the top-level struct.
pub(crate) fn body(
    payload_field: &str,
    payload_text: &str,
    payload: &JsonValue<'_>,
) -> DebeziumBody {
    match expanded_body(payload_field, payload_text, payload) {
        Ok(body) => DebeziumBody {
            body,
            fallback_reason: None,
        },
        Err(Unexpandable(reason)) => {
            let mut body = Vec::with_capacity(payload_text.len() + 96);
            body.extend_from_slice(
                br#"{"schema":{"type":"string","optional":false,"name":"io.debezium.data.Json","version":1},"payload":"#,
            );
            write_java_string(payload_text, &mut body);
            body.push(b'}');
            DebeziumBody {
                body,
                fallback_reason: Some(reason),
            }
        }
    }
}

/// The `JsonConverter` envelope of a string header; `uuid` names it `io.debezium.data.Uuid`.
pub(crate) fn header_value(value: &str, uuid: bool) -> String {
    let mut out = Vec::with_capacity(value.len() + 96);
    if uuid {
        out.extend_from_slice(
            br#"{"schema":{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1},"payload":"#,
        );
    } else {
        out.extend_from_slice(br#"{"schema":{"type":"string","optional":false},"payload":"#);
    }
    write_java_string(value, &mut out);
    out.push(b'}');
    // Only valid UTF-8 was written: `value` is a str and the rest is ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// Why Debezium would not expand a payload.
#[derive(Debug)]
struct Unexpandable(String);

/// Our own guard: an expanded body beyond this goes out unexpanded. Expansion can multiply the
/// size (every object of an array gets every field of the others, `null` where absent); the
/// broker would refuse such a message anyway.
const MAX_EXPANDED_BODY: usize = 64 * 1024 * 1024;

fn expanded_body(
    payload_field: &str,
    payload_text: &str,
    payload: &JsonValue<'_>,
) -> Result<Vec<u8>, Unexpandable> {
    if !payload_text.starts_with(['{', '[']) {
        // Debezium's parseJsonPayload looks at the first character only.
        return Err(Unexpandable(
            "the payload text does not start with '{' or '['".to_owned(),
        ));
    }
    let members = match payload {
        JsonValue::Object(members) => members,
        other => {
            return Err(Unexpandable(format!(
                "the payload is a JSON {}, not an object",
                other.type_name()
            )));
        }
    };
    let schema = struct_schema(Some(payload_field), members)?;
    let mut body = Vec::with_capacity(payload_text.len() * 2 + 128);
    body.extend_from_slice(b"{\"schema\":");
    write_schema(&schema, None, &mut body);
    body.extend_from_slice(b",\"payload\":");
    write_value(payload, &schema, &mut body)?;
    body.push(b'}');
    Ok(body)
}

/// A Kafka Connect schema as `JsonSchemaData` infers it. All are optional but merged structs.
/// Field names borrow from the payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Schema<'a> {
    Int32,
    Int64,
    Float64,
    String,
    Boolean,
    Array(Box<Schema<'a>>),
    Struct {
        name: Option<String>,
        fields: Vec<(Cow<'a, str>, Schema<'a>)>,
        optional: bool,
    },
}

/// How Jackson reads a JSON number.
#[derive(Debug, Clone, Copy, PartialEq)]
enum JacksonNumber {
    Int(i32),
    Long(i64),
    /// Beyond 64 bits: Jackson's `BigIntegerNode`, which Debezium types `double` but cannot convert.
    BigInteger,
    Double(f64),
}

fn jackson_number(text: &str) -> Result<JacksonNumber, Unexpandable> {
    if text.len() > JACKSON_MAX_NUMBER_LENGTH {
        return Err(Unexpandable(format!(
            "a number of {} characters exceeds Jackson's limit of {JACKSON_MAX_NUMBER_LENGTH}",
            text.len()
        )));
    }
    if text.contains(['.', 'e', 'E']) {
        // Grammar-checked by the reader, so this parse only fails on what cannot happen.
        let value = text
            .parse::<f64>()
            .map_err(|_| Unexpandable(format!("unreadable number {text}")))?;
        return Ok(JacksonNumber::Double(value));
    }
    if let Ok(value) = text.parse::<i32>() {
        Ok(JacksonNumber::Int(value))
    } else if let Ok(value) = text.parse::<i64>() {
        Ok(JacksonNumber::Long(value))
    } else {
        Ok(JacksonNumber::BigInteger)
    }
}

fn number_schema<'a>(text: &str) -> Result<Schema<'a>, Unexpandable> {
    Ok(match jackson_number(text)? {
        JacksonNumber::Int(_) => Schema::Int32,
        JacksonNumber::Long(_) => Schema::Int64,
        JacksonNumber::BigInteger | JacksonNumber::Double(_) => Schema::Float64,
    })
}

/// `JsonSchemaData.toConnectSchema`: `None` for what has no schema (null, empty array). `key` is
/// the path that names a struct.
fn schema_of<'a>(
    key: Option<&str>,
    value: &JsonValue<'a>,
) -> Result<Option<Schema<'a>>, Unexpandable> {
    Ok(match value {
        JsonValue::Null => None,
        JsonValue::Bool(_) => Some(Schema::Boolean),
        JsonValue::String(_) => Some(Schema::String),
        JsonValue::Number(text) => Some(number_schema(text)?),
        JsonValue::Array(items) if items.is_empty() => None,
        JsonValue::Array(items) => Some(Schema::Array(Box::new(element_schema(key, items)?))),
        JsonValue::Object(members) => Some(struct_schema(key, members)?),
    })
}

fn struct_schema<'a>(
    key: Option<&str>,
    members: &[(Cow<'a, str>, JsonValue<'a>)],
) -> Result<Schema<'a>, Unexpandable> {
    // Keys are unique: the reader resolved repeated ones as Jackson does.
    let mut fields = Vec::with_capacity(members.len());
    for (name, member) in members {
        let schema = if matches!(member, JsonValue::Object(_) | JsonValue::Array(_)) {
            let path = match key {
                Some(key) if !key.trim().is_empty() => format!("{key}.{name}"),
                _ => name.clone().into_owned(),
            };
            schema_of(Some(&path), member)?
        } else {
            schema_of(None, member)?
        };
        let Some(schema) = schema else {
            continue;
        };
        if name.is_empty() {
            // Connect's SchemaBuilder refuses an empty field name.
            return Err(Unexpandable("an object has an empty key".to_owned()));
        }
        fields.push((name.clone(), schema));
    }
    Ok(Schema::Struct {
        name: key.map(str::to_owned),
        fields,
        optional: true,
    })
}

/// `toConnectSchemaWithCycles` with `getFirstArrayElement`: the element schema of a non-empty array.
fn element_schema<'a>(
    key: Option<&str>,
    items: &[JsonValue<'a>],
) -> Result<Schema<'a>, Unexpandable> {
    let mut reference: Option<&JsonValue<'a>> = None;
    let mut reference_number: Option<Schema<'a>> = None;
    for item in items {
        if matches!(item, JsonValue::Null) {
            continue;
        }
        let first = *reference.get_or_insert(item);
        if std::mem::discriminant(first) != std::mem::discriminant(item) {
            return Err(Unexpandable(format!(
                "an array mixes {} and {} elements",
                first.type_name(),
                item.type_name()
            )));
        }
        if let (JsonValue::Number(first_text), JsonValue::Number(text)) = (first, item) {
            let expected = match &reference_number {
                Some(schema) => schema.clone(),
                None => reference_number.insert(number_schema(first_text)?).clone(),
            };
            if number_schema(text)? != expected {
                return Err(Unexpandable(format!(
                    "an array mixes number types ({first_text} and {text})"
                )));
            }
        }
    }
    match reference {
        Some(JsonValue::Object(_)) => {
            // A HashSet of the elements' schemas, merged by `mergeSchema` when it holds more than
            // one: the first schema's fields, then each new one. Java's set order depends on
            // identity hashes; we merge in order of first appearance.
            let mut distinct: HashSet<Schema<'a>> = HashSet::new();
            let mut fields: Vec<(Cow<'a, str>, Schema<'a>)> = Vec::new();
            let mut known: HashSet<Cow<'a, str>> = HashSet::new();
            for item in items {
                let JsonValue::Object(members) = item else {
                    continue;
                };
                let schema = struct_schema(key, members)?;
                if distinct.contains(&schema) {
                    continue;
                }
                if let Schema::Struct {
                    fields: item_fields,
                    ..
                } = &schema
                {
                    for (field_name, field_schema) in item_fields {
                        if known.insert(field_name.clone()) {
                            fields.push((field_name.clone(), field_schema.clone()));
                        }
                    }
                }
                distinct.insert(schema);
            }
            Ok(Schema::Struct {
                name: key.map(str::to_owned),
                fields,
                // `SchemaUtil.copySchemaBasics` does not copy `optional`: a merged struct is
                // required, and a null element then fails validation.
                optional: distinct.len() < 2,
            })
        }
        Some(sample) => schema_of(None, sample)?.ok_or_else(|| {
            Unexpandable("an array whose elements have no schema (empty arrays)".to_owned())
        }),
        None => Err(Unexpandable("an array holds only nulls".to_owned())),
    }
}

/// `JsonConverter.asJsonSchema`, with `"field"` appended for a struct field.
fn write_schema(schema: &Schema<'_>, field: Option<&str>, out: &mut Vec<u8>) {
    match schema {
        Schema::Int32 => out.extend_from_slice(br#"{"type":"int32","optional":true"#),
        Schema::Int64 => out.extend_from_slice(br#"{"type":"int64","optional":true"#),
        Schema::Float64 => out.extend_from_slice(br#"{"type":"double","optional":true"#),
        Schema::String => out.extend_from_slice(br#"{"type":"string","optional":true"#),
        Schema::Boolean => out.extend_from_slice(br#"{"type":"boolean","optional":true"#),
        Schema::Array(items) => {
            out.extend_from_slice(br#"{"type":"array","items":"#);
            write_schema(items, None, out);
            out.extend_from_slice(br#","optional":true"#);
        }
        Schema::Struct {
            name,
            fields,
            optional,
        } => {
            out.extend_from_slice(br#"{"type":"struct","fields":["#);
            for (index, (field_name, field_schema)) in fields.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_schema(field_schema, Some(field_name), out);
            }
            out.extend_from_slice(if *optional {
                br#"],"optional":true"#
            } else {
                br#"],"optional":false"#
            });
            if let Some(name) = name {
                out.extend_from_slice(br#","name":"#);
                write_java_string(name, out);
            }
        }
    }
    if let Some(field) = field {
        out.extend_from_slice(br#","field":"#);
        write_java_string(field, out);
    }
    out.push(b'}');
}

/// `JsonSchemaData.toConnectData` then `JsonConverter.convertToJson`: writes `value` as the
/// Connect value of `schema`, failing where Connect's validation would.
fn write_value(
    value: &JsonValue<'_>,
    schema: &Schema<'_>,
    out: &mut Vec<u8>,
) -> Result<(), Unexpandable> {
    let mismatch = || {
        Unexpandable(format!(
            "a JSON {} does not fit the schema inferred for it from another element",
            value.type_name()
        ))
    };
    match (value, schema) {
        (
            JsonValue::Null,
            Schema::Struct {
                optional: false, ..
            },
        ) => {
            return Err(Unexpandable(
                "a null element in an array of objects with differing fields".to_owned(),
            ));
        }
        (JsonValue::Null, _) => out.extend_from_slice(b"null"),
        (JsonValue::Bool(true), Schema::Boolean) => out.extend_from_slice(b"true"),
        (JsonValue::Bool(false), Schema::Boolean) => out.extend_from_slice(b"false"),
        (JsonValue::String(raw), Schema::String) => write_java_string(&json::unescape(raw), out),
        (JsonValue::Number(text), _) => match (jackson_number(text)?, schema) {
            (JacksonNumber::Int(int), Schema::Int32) => write_display(int, out),
            (JacksonNumber::Long(long), Schema::Int64) => write_display(long, out),
            (JacksonNumber::Double(double), Schema::Float64) => write_java_double(double, out),
            (JacksonNumber::BigInteger, _) => {
                return Err(Unexpandable(format!(
                    "the integer {text} does not fit in 64 bits"
                )));
            }
            _ => return Err(mismatch()),
        },
        (JsonValue::Array(items), Schema::Array(item_schema)) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(item, item_schema, out)?;
            }
            out.push(b']');
        }
        (JsonValue::Object(members), Schema::Struct { fields, .. }) => {
            if out.len() > MAX_EXPANDED_BODY {
                return Err(Unexpandable(format!(
                    "the expanded body would exceed {} MiB",
                    MAX_EXPANDED_BODY >> 20
                )));
            }
            let lookup = MemberLookup::new(members);
            out.push(b'{');
            for (index, (field_name, field_schema)) in fields.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_java_string(field_name, out);
                out.push(b':');
                match lookup.get(field_name) {
                    Some(member) => write_value(member, field_schema, out)?,
                    None => out.extend_from_slice(b"null"),
                }
            }
            out.push(b'}');
        }
        _ => return Err(mismatch()),
    }
    Ok(())
}

fn write_display(value: impl std::fmt::Display, out: &mut Vec<u8>) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// Finds an object's member by name (keys are unique). The fields of a schema come mostly in the
/// member order, so a cursor makes the usual lookup one comparison; large objects are hashed.
struct MemberLookup<'v, 'a> {
    members: &'v [(Cow<'a, str>, JsonValue<'a>)],
    index: Option<HashMap<&'v str, usize>>,
    cursor: std::cell::Cell<usize>,
}

impl<'v, 'a> MemberLookup<'v, 'a> {
    const LINEAR_LIMIT: usize = 16;

    fn new(members: &'v [(Cow<'a, str>, JsonValue<'a>)]) -> Self {
        let index = (members.len() > Self::LINEAR_LIMIT).then(|| {
            members
                .iter()
                .enumerate()
                .map(|(position, (name, _))| (name.as_ref(), position))
                .collect()
        });
        MemberLookup {
            members,
            index,
            cursor: std::cell::Cell::new(0),
        }
    }

    fn get(&self, name: &str) -> Option<&'v JsonValue<'a>> {
        let position = match &self.index {
            Some(index) => index.get(name).copied(),
            None => {
                let start = self.cursor.get();
                let len = self.members.len();
                (0..len)
                    .map(|offset| (start + offset) % len)
                    .find(|&position| self.members[position].0 == name)
            }
        }?;
        self.cursor.set(position + 1);
        Some(&self.members[position].1)
    }
}

/// A JSON string as Jackson's UTF-8 generator writes it: `"` and `\` escaped, control characters
/// as `\b \t \n \f \r` or `\u00XX`, characters beyond the Basic Multilingual Plane as an
/// escaped surrogate pair (`😀` → `\uD83D\uDE00`), hex in upper case; everything else as is.
pub(crate) fn write_java_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut copied = 0;
    for (position, c) in text.char_indices() {
        let short_escape: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\u{8}' => b"\\b",
            '\t' => b"\\t",
            '\n' => b"\\n",
            '\u{c}' => b"\\f",
            '\r' => b"\\r",
            '\u{0}'..='\u{1f}' | '\u{10000}'.. => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[copied..position]);
        copied = position + c.len_utf8();
        if short_escape.is_empty() {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write_unicode_escape(*unit, out);
            }
        } else {
            out.extend_from_slice(short_escape);
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

fn write_unicode_escape(unit: u16, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xF)]);
    }
}

/// The digits Java chooses for a positive finite double, as Rust's `d.ddde±n`: the fewest
/// digits (at least two) that read back as the value, and among those the decimal closest to
/// it, ties to an even last digit. Rust's `{:e}` has the right length but may round a tie up.
fn java_digits(magnitude: f64) -> String {
    let shortest = format!("{magnitude:e}");
    let mantissa = shortest.split('e').next().unwrap_or_default();
    let digit_count = mantissa.bytes().filter(u8::is_ascii_digit).count().max(2);
    // Exact formatting rounds half to even.
    let closest = format!("{magnitude:.*e}", digit_count - 1);
    if closest.parse::<f64>().ok() == Some(magnitude) {
        closest
    } else {
        shortest
    }
}

/// A double as Java's `Double.toString` writes it (shortest digits that read back the same, at
/// least two of them):
/// plain notation with at least one fraction digit for 10⁻³ ≤ |x| < 10⁷, else `d.dddE±n`.
/// Infinities are Jackson's quoted `"Infinity"`; NaN cannot come from JSON.
pub(crate) fn write_java_double(value: f64, out: &mut Vec<u8>) {
    if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
        return;
    }
    if value.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
        return;
    }
    if value.is_sign_negative() {
        out.push(b'-');
    }
    let magnitude = value.abs();
    if magnitude == 0.0 {
        out.extend_from_slice(b"0.0");
        return;
    }
    // "d.ddde±n" or "de±n".
    let scientific = java_digits(magnitude);
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits }.as_bytes();
    if (-3..7).contains(&exponent) {
        if exponent >= 0 {
            let integer_len = usize::try_from(exponent).unwrap_or(0) + 1;
            for position in 0..integer_len {
                out.push(digits.get(position).copied().unwrap_or(b'0'));
            }
            out.push(b'.');
            if digits.len() > integer_len {
                out.extend_from_slice(&digits[integer_len..]);
            } else {
                out.push(b'0');
            }
        } else {
            out.extend_from_slice(b"0.");
            for _ in 0..(-exponent - 1) {
                out.push(b'0');
            }
            out.extend_from_slice(digits);
        }
    } else {
        out.push(digits[0]);
        out.push(b'.');
        if digits.len() > 1 {
            out.extend_from_slice(&digits[1..]);
        } else {
            out.push(b'0');
        }
        out.push(b'E');
        out.extend_from_slice(exponent.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn java_double(value: f64) -> String {
        let mut out = Vec::new();
        write_java_double(value, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn java_string(text: &str) -> String {
        let mut out = Vec::new();
        write_java_string(text, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn doubles_print_like_java() {
        for (value, expected) in [
            (39.98, "39.98"),
            (40.0, "40.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.5, "1.5"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (0.00012, "1.2E-4"),
            (9_999_999.0, "9999999.0"),
            (10_000_000.0, "1.0E7"),
            (12_345_678.5, "1.23456785E7"),
            (123.456, "123.456"),
            (-2.5e-10, "-2.5E-10"),
            (1e21, "1.0E21"),
            (f64::MAX, "1.7976931348623157E308"),
            (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
            (5e-324, "4.9E-324"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "\"Infinity\""),
            (f64::NEG_INFINITY, "\"-Infinity\""),
        ] {
            assert_eq!(java_double(value), expected, "{value:?}");
        }
    }

    #[test]
    fn strings_escape_like_jackson() {
        assert_eq!(java_string("plain"), "\"plain\"");
        assert_eq!(
            java_string("q\"b\\s/\u{8}\t\n\u{c}\r\u{1}\u{1f}\u{7f}é😀"),
            "\"q\\\"b\\\\s/\\b\\t\\n\\f\\r\\u0001\\u001F\u{7f}é\\uD83D\\uDE00\""
        );
    }

    #[test]
    fn header_envelopes_match_the_samples() {
        assert_eq!(
            header_value("OrderCreated", false),
            r#"{"schema":{"type":"string","optional":false},"payload":"OrderCreated"}"#
        );
        assert_eq!(
            header_value("4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60", true),
            r#"{"schema":{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1},"payload":"4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60"}"#
        );
    }
}
