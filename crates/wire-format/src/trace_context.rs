//! The W3C trace context of an event, as it crosses the outbox.
//!
//! The producer stores it in an outbox column (Debezium's `tracingspancontext`) as Java
//! Properties text, the format Debezium's outbox tracing reads (`Properties.load`) and the
//! Java producers write (`Properties.store`): one `key=value` line per propagation field,
//! `traceparent` and, when not empty, `tracestate`; `#` comment lines (the date `store`
//! writes) ignored. The relay parses it back and sends the fields as the message headers
//! `traceparent` and `tracestate`, which the consumer continues.

use std::fmt::Write as _;

/// Header (and Properties key) of the W3C `traceparent` field.
pub const TRACEPARENT: &str = "traceparent";
/// Header (and Properties key) of the W3C `tracestate` field.
pub const TRACESTATE: &str = "tracestate";

/// A W3C trace context: a checked `traceparent` and the vendor `tracestate` (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: String,
}

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not all zero)")]
pub struct InvalidTraceparent(pub String);

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceContext {
    /// Checks `traceparent` (version 00 layout; a later version is accepted when it starts
    /// with the same fields, as the W3C spec asks) and keeps `tracestate` trimmed.
    pub fn new(traceparent: &str, tracestate: &str) -> Result<Self, InvalidTraceparent> {
        let traceparent = traceparent.trim();
        let invalid = || InvalidTraceparent(traceparent.to_owned());
        let mut parts = traceparent.splitn(5, '-');
        let (Some(version), Some(trace_id), Some(span_id), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let rest = parts.next();
        let flags_ok = flags.len() == 2 && is_lower_hex(flags);
        if version.len() != 2
            || !is_lower_hex(version)
            || version == "ff"
            || (version == "00" && rest.is_some())
            || trace_id.len() != 32
            || !is_lower_hex(trace_id)
            || trace_id.bytes().all(|b| b == b'0')
            || span_id.len() != 16
            || !is_lower_hex(span_id)
            || span_id.bytes().all(|b| b == b'0')
            || !flags_ok
        {
            return Err(invalid());
        }
        Ok(Self {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.trim().to_owned(),
        })
    }

    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// Empty when there is none.
    pub fn tracestate(&self) -> &str {
        &self.tracestate
    }

    /// The 32 hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }

    /// The headers to put on a message: `traceparent`, then `tracestate` if not empty.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![(TRACEPARENT.to_owned(), self.traceparent.clone())];
        if !self.tracestate.is_empty() {
            headers.push((TRACESTATE.to_owned(), self.tracestate.clone()));
        }
        headers
    }

    /// Java Properties text, as `Properties.store` writes it without the date comment:
    /// `traceparent=...` and, when not empty, `tracestate=...`, `=`, `:`, `#`, `!` and `\`
    /// escaped with a backslash.
    pub fn to_properties(&self) -> String {
        let mut text = String::with_capacity(80 + self.tracestate.len());
        text.push_str(TRACEPARENT);
        text.push('=');
        escape_into(&mut text, &self.traceparent);
        text.push('\n');
        if !self.tracestate.is_empty() {
            text.push_str(TRACESTATE);
            text.push('=');
            escape_into(&mut text, &self.tracestate);
            text.push('\n');
        }
        text
    }

    /// Reads the context from Properties text. `None` when there is no valid `traceparent`:
    /// a context that cannot be continued is left out, never an error (the event still flows).
    pub fn from_properties(text: &str) -> Option<Self> {
        let mut traceparent = None;
        let mut tracestate = String::new();
        for (key, value) in properties(text) {
            match key.as_str() {
                TRACEPARENT => traceparent = Some(value),
                TRACESTATE => tracestate = value,
                _ => {}
            }
        }
        Self::new(&traceparent?, &tracestate).ok()
    }
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '=' | ':' | '#' | '!' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
            c => out.push(c),
        }
    }
}

/// The `key=value` pairs of Properties text: the subset of `Properties.load` that trace
/// contexts use (comment and blank lines, `=`, `:` or whitespace separators, backslash
/// escapes and line continuations).
fn properties(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut logical = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start_matches([' ', '\t', '\x0c']);
        if logical.is_empty() && (line.is_empty() || line.starts_with(['#', '!'])) {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        let trailing = line.chars().rev().take_while(|&c| c == '\\').count();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            if lines.clone().next().is_some() {
                continue;
            }
        } else {
            logical.push_str(line);
        }
        pairs.push(split_pair(&logical));
        logical.clear();
    }
    pairs
}

fn split_pair(line: &str) -> (String, String) {
    let mut key = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    unescape_one(next, &mut chars, &mut key);
                }
            }
            '=' | ':' => break,
            ' ' | '\t' | '\x0c' => {
                while chars
                    .peek()
                    .is_some_and(|c| matches!(c, ' ' | '\t' | '\x0c'))
                {
                    chars.next();
                }
                if chars.peek().is_some_and(|c| matches!(c, '=' | ':')) {
                    chars.next();
                }
                break;
            }
            c => key.push(c),
        }
    }
    while chars
        .peek()
        .is_some_and(|c| matches!(c, ' ' | '\t' | '\x0c'))
    {
        chars.next();
    }
    let mut value = String::new();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                unescape_one(next, &mut chars, &mut value);
            }
        } else {
            value.push(c);
        }
    }
    (key, value)
}

fn unescape_one(
    escaped: char,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut String,
) {
    match escaped {
        'n' => out.push('\n'),
        'r' => out.push('\r'),
        't' => out.push('\t'),
        'f' => out.push('\x0c'),
        'u' => {
            let hex: String = chars.by_ref().take(4).collect();
            let Ok(unit) = u16::from_str_radix(&hex, 16) else {
                return;
            };
            // A surrogate pair arrives as two escapes: join it with the next one.
            if (0xD800..0xDC00).contains(&unit) {
                let mut lookahead = chars.clone();
                if lookahead.next() == Some('\\') && lookahead.next() == Some('u') {
                    let low: String = lookahead.by_ref().take(4).collect();
                    if let Ok(low) = u16::from_str_radix(&low, 16)
                        && let Some(Ok(c)) = char::decode_utf16([unit, low]).next()
                    {
                        out.push(c);
                        *chars = lookahead;
                    }
                }
            } else if let Some(c) = char::from_u32(u32::from(unit)) {
                out.push(c);
            }
        }
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn reads_what_java_properties_store_writes() {
        // `Properties.store(writer, null)`: a date comment, `=` and `:` in values escaped.
        let text = format!(
            "#Wed Dec 02 12:00:00 UTC 2026\ntracestate=rojo\\=00f067aa0ba902b7,congo\\=t61rcWkgMzE\ntraceparent={PARENT}\n"
        );
        let context = TraceContext::from_properties(&text).unwrap();
        assert_eq!(context.traceparent(), PARENT);
        assert_eq!(
            context.tracestate(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
        assert_eq!(context.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            TraceContext::from_properties(&context.to_properties()),
            Some(context)
        );
    }

    #[test]
    fn separators_and_continuations_as_properties_load() {
        let context =
            TraceContext::from_properties(&format!("  traceparent : {PARENT}\r\n")).unwrap();
        assert_eq!(context.traceparent(), PARENT);
        let split = format!("traceparent={}\\\n    {}", &PARENT[..20], &PARENT[20..]);
        assert_eq!(
            TraceContext::from_properties(&split).unwrap().traceparent(),
            PARENT
        );
        assert_eq!(
            TraceContext::new(PARENT, "").unwrap().to_properties(),
            format!("traceparent={PARENT}\n")
        );
    }

    #[test]
    fn no_valid_traceparent_no_context() {
        for text in [
            "",
            "# only a comment",
            "tracestate=a\\=b",
            "traceparent=00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "traceparent=00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "traceparent=00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "traceparent=ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "traceparent=garbage",
        ] {
            assert_eq!(TraceContext::from_properties(text), None, "{text:?}");
        }
        // A future version may append fields.
        assert!(
            TraceContext::new(
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more",
                ""
            )
            .is_ok()
        );
    }

    #[test]
    fn headers_leave_out_an_empty_tracestate() {
        let headers = TraceContext::new(PARENT, " ").unwrap().headers();
        assert_eq!(headers, vec![("traceparent".to_owned(), PARENT.to_owned())]);
        let headers = TraceContext::new(PARENT, "a=b").unwrap().headers();
        assert_eq!(headers[1], ("tracestate".to_owned(), "a=b".to_owned()));
    }

    proptest! {
        #[test]
        fn properties_round_trip(
            trace_id in "[0-9a-f]{31}[1-9a-f]",
            span_id in "[1-9a-f][0-9a-f]{15}",
            flags in "[0-9a-f]{2}",
            state in "[ -~\u{a0}-\u{10ffff}]{0,40}",
        ) {
            let context = TraceContext::new(&format!("00-{trace_id}-{span_id}-{flags}"), &state).unwrap();
            let text = context.to_properties();
            prop_assert_eq!(TraceContext::from_properties(&text), Some(context));
        }

        #[test]
        fn any_text_parses_without_panicking(text in "(?s).{0,200}") {
            let _ = TraceContext::from_properties(&text);
        }
    }
}
