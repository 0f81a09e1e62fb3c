//! A small JSON reader that keeps what `serde_json`'s default map loses: the order of keys and
//! the exact text of numbers and strings.
//!
//! PostgreSQL's jsonb text output lists keys in storage order (shorter keys first, then
//! bytewise), and Debezium keeps that order in the messages it publishes, so both wire formats
//! must preserve it. Strings keep their raw (still escaped) text so that the plain format can
//! copy them unchanged; [`unescape`] decodes them when the Debezium format re-escapes them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// Deepest nesting of arrays and objects accepted. The reader is recursive: the limit keeps the
/// stack small (well under 1 MiB) whatever the input.
pub(crate) const MAX_DEPTH: usize = 512;

/// One JSON value, borrowing its text from the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonValue<'a> {
    Null,
    Bool(bool),
    /// The number exactly as written (validated against the JSON grammar).
    Number(&'a str),
    /// The text between the quotes, escapes not yet decoded (validated).
    String(&'a str),
    Array(Vec<JsonValue<'a>>),
    /// Members in document order, keys decoded. A key given twice is kept once, at its first
    /// place with its last value, as Jackson's `readTree` does.
    Object(Vec<(Cow<'a, str>, JsonValue<'a>)>),
}

impl JsonValue<'_> {
    /// The JSON type, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            JsonValue::Null => "null",
            JsonValue::Bool(_) => "boolean",
            JsonValue::Number(_) => "number",
            JsonValue::String(_) => "string",
            JsonValue::Array(_) => "array",
            JsonValue::Object(_) => "object",
        }
    }
}

/// Why a text is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Byte offset in the input where the problem was found.
    pub(crate) offset: usize,
    pub(crate) reason: &'static str,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

/// Parses one JSON document (surrounding whitespace allowed, nothing else after it).
pub(crate) fn parse(text: &str) -> Result<JsonValue<'_>, SyntaxError> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    reader.skip_whitespace();
    let value = reader.value(0)?;
    reader.skip_whitespace();
    if reader.pos != reader.bytes.len() {
        return Err(reader.error("unexpected text after the JSON value"));
    }
    Ok(value)
}

/// Validates `text` as one JSON document and copies it without insignificant whitespace,
/// keeping key order and the exact text of numbers and strings (escapes included).
pub(crate) fn compact(text: &str) -> Result<Vec<u8>, SyntaxError> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::with_capacity(text.len());
    reader.skip_whitespace();
    reader.copy_value(0, &mut out)?;
    reader.skip_whitespace();
    if reader.pos != reader.bytes.len() {
        return Err(reader.error("unexpected text after the JSON value"));
    }
    Ok(out)
}

/// Decodes the escapes of a raw string that [`parse`] validated.
pub(crate) fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut decoded = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            decoded.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => decoded.push('\u{8}'),
            Some('f') => decoded.push('\u{c}'),
            Some('n') => decoded.push('\n'),
            Some('r') => decoded.push('\r'),
            Some('t') => decoded.push('\t'),
            Some('u') => {
                let first = hex4(&mut chars);
                let code = if (0xD800..0xDC00).contains(&first) {
                    // parse() guaranteed a low surrogate escape follows.
                    chars.next();
                    chars.next();
                    let low = hex4(&mut chars);
                    0x10000 + ((first - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    first
                };
                decoded.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => decoded.push(other), // `"`, `\\` and `/` stand for themselves
            None => {}
        }
    }
    Cow::Owned(decoded)
}

fn hex4(chars: &mut std::str::Chars<'_>) -> u32 {
    let mut code = 0;
    for _ in 0..4 {
        let digit = chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0);
        code = code * 16 + digit;
    }
    code
}

/// Keeps an object's keys unique while it is read: a repeated key replaces the earlier value in
/// place. Hashed once the object is large, so that many keys stay linear.
#[derive(Default)]
struct UniqueKeys<'a> {
    index: Option<HashMap<Cow<'a, str>, usize>>,
}

impl<'a> UniqueKeys<'a> {
    const LINEAR_LIMIT: usize = 16;

    fn insert(
        &mut self,
        members: &mut Vec<(Cow<'a, str>, JsonValue<'a>)>,
        key: Cow<'a, str>,
        value: JsonValue<'a>,
    ) {
        if self.index.is_none() && members.len() >= Self::LINEAR_LIMIT {
            self.index = Some(
                members
                    .iter()
                    .enumerate()
                    .map(|(position, (name, _))| (name.clone(), position))
                    .collect(),
            );
        }
        let existing = match &self.index {
            Some(index) => index.get(&key).copied(),
            None => members.iter().position(|(name, _)| *name == key),
        };
        match existing {
            Some(position) => members[position].1 = value,
            None => {
                if let Some(index) = &mut self.index {
                    index.insert(key.clone(), members.len());
                }
                members.push((key, value));
            }
        }
    }
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, reason: &'static str) -> SyntaxError {
        SyntaxError {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<JsonValue<'a>, SyntaxError> {
        match self.peek() {
            None => Err(self.error("unexpected end of input, expected a value")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(JsonValue::String),
            Some(b'-' | b'0'..=b'9') => self.number().map(JsonValue::Number),
            Some(b't') => self.literal("true", JsonValue::Bool(true)),
            Some(b'f') => self.literal("false", JsonValue::Bool(false)),
            Some(b'n') => self.literal("null", JsonValue::Null),
            Some(_) => Err(self.error("unexpected character, expected a value")),
        }
    }

    fn literal(
        &mut self,
        word: &'static str,
        value: JsonValue<'a>,
    ) -> Result<JsonValue<'a>, SyntaxError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("invalid literal, expected true, false or null"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<JsonValue<'a>, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1; // '{'
        let mut members = Vec::new();
        let mut keys = UniqueKeys::default();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(JsonValue::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = unescape(self.string()?);
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':' after an object key"));
            }
            self.pos += 1;
            self.skip_whitespace();
            let member = self.value(depth)?;
            keys.insert(&mut members, key, member);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(JsonValue::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }

    /// Validates one value and appends it to `out` without whitespace.
    fn copy_value(&mut self, depth: usize, out: &mut Vec<u8>) -> Result<(), SyntaxError> {
        let (open, close) = match self.peek() {
            Some(b'{') => (b'{', b'}'),
            Some(b'[') => (b'[', b']'),
            _ => {
                let start = self.pos;
                self.value(depth)?; // a scalar: no allocation
                out.extend_from_slice(&self.bytes[start..self.pos]);
                return Ok(());
            }
        };
        if depth + 1 > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1;
        out.push(open);
        self.skip_whitespace();
        if self.peek() == Some(close) {
            self.pos += 1;
            out.push(close);
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            if open == b'{' {
                if self.peek() != Some(b'"') {
                    return Err(self.error("expected a string key"));
                }
                let key = self.string()?;
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":");
                self.skip_whitespace();
                if self.peek() != Some(b':') {
                    return Err(self.error("expected ':' after an object key"));
                }
                self.pos += 1;
                self.skip_whitespace();
            }
            self.copy_value(depth + 1, out)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    out.push(b',');
                }
                Some(byte) if byte == close => {
                    self.pos += 1;
                    out.push(close);
                    return Ok(());
                }
                _ if open == b'{' => return Err(self.error("expected ',' or '}' in an object")),
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<JsonValue<'a>, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(JsonValue::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(JsonValue::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    /// Validates a string starting at the opening quote; returns the text between the quotes.
    fn string(&mut self) -> Result<&'a str, SyntaxError> {
        self.pos += 1; // opening quote
        let start = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    let raw = &self.text[start..self.pos];
                    self.pos += 1;
                    return Ok(raw);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            let code = self.hex_escape()?;
                            if (0xDC00..0xE000).contains(&code) {
                                return Err(self.error("lone low surrogate in a \\u escape"));
                            }
                            if (0xD800..0xDC00).contains(&code) {
                                if !self.bytes[self.pos..].starts_with(b"\\u") {
                                    return Err(self.error("lone high surrogate in a \\u escape"));
                                }
                                self.pos += 2;
                                let low = self.hex_escape()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(
                                        self.error("high surrogate not followed by a low one")
                                    );
                                }
                            }
                        }
                        _ => return Err(self.error("invalid escape in a string")),
                    }
                }
                Some(0x00..=0x1F) => {
                    return Err(self.error("control character inside a string"));
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn hex_escape(&mut self) -> Result<u32, SyntaxError> {
        let mut code = 0u32;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or_else(|| self.error("expected four hex digits after \\u"))?;
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }

    fn number(&mut self) -> Result<&'a str, SyntaxError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit after the decimal point"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit in the exponent"));
            }
            self.digits();
        }
        Ok(&self.text[start..self.pos])
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn compact_text(text: &str) -> String {
        String::from_utf8(compact(text).unwrap()).unwrap()
    }

    #[test]
    fn compacts_keeping_order_numbers_and_escapes() {
        assert_eq!(
            compact_text(r#" {"id": "x", "b": [1, 2.50, -0e3, {"\u00e9\n": null}], "a": true} "#),
            r#"{"id":"x","b":[1,2.50,-0e3,{"\u00e9\n":null}],"a":true}"#
        );
    }

    #[test]
    fn rejects_invalid_json_with_offset() {
        for (text, offset) in [
            ("", 0),
            ("{", 1),
            ("{\"a\" 1}", 5),
            ("[1,]", 3),
            ("01", 1),
            ("1.", 2),
            ("\"\\x\"", 2),
            ("\"\\ud800\"", 7),
            ("\"\\udc00\"", 7),
            ("nul", 0),
            ("{} x", 3),
            ("\"a\tb\"", 2),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.offset, offset, "{text:?}: {error}");
            assert_eq!(compact(text).unwrap_err(), error, "{text:?}");
        }
    }

    #[test]
    fn repeated_keys_keep_the_first_place_and_the_last_value() {
        let JsonValue::Object(members) = parse(r#"{"a": 1, "b": 2, "\u0061": 3}"#).unwrap() else {
            panic!("not an object");
        };
        assert_eq!(
            members,
            vec![
                (Cow::Borrowed("a"), JsonValue::Number("3")),
                (Cow::Borrowed("b"), JsonValue::Number("2"))
            ]
        );
        let many: Vec<String> = (0..40).map(|i| format!(r#""k{}": {i}"#, i % 20)).collect();
        let text = format!("{{{}}}", many.join(","));
        let JsonValue::Object(members) = parse(&text).unwrap() else {
            panic!("not an object");
        };
        assert_eq!(members.len(), 20);
        assert_eq!(members[3], (Cow::Borrowed("k3"), JsonValue::Number("23")));
    }

    #[test]
    fn unescapes_all_escape_forms() {
        let JsonValue::String(raw) = parse(r#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#).unwrap()
        else {
            panic!("not a string");
        };
        assert_eq!(unescape(raw), "a\"\\/\u{8}\u{c}\n\r\té😀");
    }

    #[test]
    fn limits_nesting_depth() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        assert_eq!(compact(&ok).unwrap(), ok.as_bytes());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep).unwrap_err().reason, "nested too deeply");
        assert_eq!(compact(&deep).unwrap_err().reason, "nested too deeply");
    }
}
