//! A Debezium Server `application.properties`, read as Debezium Server (Quarkus, SmallRye
//! Config) reads it, so the original system's file works unchanged:
//!
//! 1. Java properties syntax (`key=value`, `key: value`, comments, continuations, escapes).
//! 2. Environment overrides: a variable named after a key (exactly, or mapped the MicroProfile
//!    way: every non-alphanumeric character to `_`, then upper case, so
//!    `DEBEZIUM_SOURCE_DATABASE_PORT` for `debezium.source.database.port`) wins over the file,
//!    as the environment's config source has the higher ordinal.
//! 3. Expansion: `${NAME}` and `${NAME:default}` (default possibly empty or itself holding
//!    placeholders; names may be composed, `${a${b}}`). NAME is looked up in the environment
//!    (exactly, then mapped), then among the file's keys; looked-up values are expanded in
//!    turn, to a bounded depth, and a loop is an error. `\$` is a literal `$` (so the file's
//!    `\\${routedByValue}` is the router's literal placeholder), an unterminated `${` stays
//!    as written, and an empty value counts as unset. `${routedByValue}` with no value is the
//!    outbox router's own placeholder and stays as written.
//! 4. A verdict on every key: read by the relay, or ignored with the reason, which the binary
//!    logs once per key ([`ConfigNote`]). Values of ignored keys are never expanded or logged.
//!
//! The environment comes in as an [`EnvLookup`], so tests need not touch the process's.

use std::collections::{HashMap, HashSet};
use std::env::VarError;
use std::fmt;
use std::path::Path;

use super::{ConfigError, ConfigNote, invalid};

/// Reads one environment variable, with `std::env::var`'s contract (the production lookup
/// is [`process_env`]).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// The process's environment.
pub fn process_env(name: &str) -> Result<String, VarError> {
    std::env::var(name)
}

/// How deep placeholders may nest (values referring to values...): SmallRye's bound.
const MAX_DEPTH: usize = 32;

/// The outbox router's own placeholder in `route.topic.replacement`.
const ROUTED_BY_VALUE: &str = "routedByValue";

const OUTBOX_ROUTER_TYPE: &str = "io.debezium.transforms.outbox.EventRouter";

/// Keys below `debezium.source.` the relay reads.
const SOURCE_KEYS: &[&str] = &[
    "database.hostname",
    "database.port",
    "database.user",
    "database.password",
    "database.dbname",
    "database.sslmode",
    "database.sslrootcert",
    "slot.name",
    "publication.name",
    "table.include.list",
    "schema.include.list",
    "plugin.name",
];

/// Keys below `debezium.sink.rabbitmq.` the relay reads.
const SINK_KEYS: &[&str] = &[
    "connection.host",
    "connection.port",
    "connection.username",
    "connection.password",
    "connection.virtual.host",
];

/// Keys below the outbox transform's prefix the relay reads.
const OUTBOX_KEYS: &[&str] = &[
    "type",
    "route.by.field",
    "route.topic.replacement",
    "table.field.event.id",
    "table.field.event.key",
    "table.field.event.type",
    "table.field.event.payload",
    "table.fields.additional.placement",
    "table.expand.json.payload",
    "tracing.span.context.field",
];

/// The settings of a Debezium Server `application.properties` the relay reads, resolved.
#[derive(Clone, Default)]
pub struct DebeziumProperties {
    /// Resolved values (environment override or expanded file value) of the keys the relay
    /// reads; empty values left out.
    entries: HashMap<String, String>,
    /// Prefix of the outbox EventRouter transform's keys, e.g. `debezium.transforms.outbox.`.
    outbox_prefix: Option<String>,
    /// The file's keys the relay does not use, with why, in file order.
    notes: Vec<ConfigNote>,
}

// Values include passwords: never print them.
impl fmt::Debug for DebeziumProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        f.debug_struct("DebeziumProperties")
            .field("keys", &keys)
            .field("outbox_prefix", &self.outbox_prefix)
            .finish_non_exhaustive()
    }
}

impl DebeziumProperties {
    /// Reads and resolves the file at `path`.
    pub fn read(path: &Path, env: EnvLookup<'_>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::PropertiesFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, env)
    }

    /// Parses the Java properties text and resolves the keys the relay reads against `env`.
    pub fn parse(text: &str, env: EnvLookup<'_>) -> Result<Self, ConfigError> {
        let raw = RawProperties::parse(text);
        let resolver = Resolver { raw: &raw, env };
        let mut entries = HashMap::new();
        let mut used: HashSet<String> = HashSet::new();
        let mut resolve = |key: String, entries: &mut HashMap<String, String>| {
            let value = resolver.value(&key)?;
            if let Some(value) = &value {
                entries.insert(key.clone(), value.clone());
            }
            used.insert(key);
            Ok::<_, ConfigError>(value)
        };

        // The transforms first: which one is the outbox router decides which keys are read.
        let mut outbox_prefix = None;
        let mut transforms = Vec::new();
        if let Some(list) = resolve("debezium.transforms".to_owned(), &mut entries)? {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let type_key = format!("debezium.transforms.{name}.type");
                let kind = resolve(type_key, &mut entries)?;
                if kind.as_deref().map(str::trim) == Some(OUTBOX_ROUTER_TYPE) {
                    if outbox_prefix.is_some() {
                        return Err(invalid(
                            "debezium.transforms",
                            format!("more than one {OUTBOX_ROUTER_TYPE} transform"),
                        ));
                    }
                    outbox_prefix = Some(format!("debezium.transforms.{name}."));
                }
                transforms.push(name.to_owned());
            }
        }
        for suffix in SOURCE_KEYS {
            resolve(format!("debezium.source.{suffix}"), &mut entries)?;
        }
        for suffix in SINK_KEYS {
            resolve(format!("debezium.sink.rabbitmq.{suffix}"), &mut entries)?;
        }
        if let Some(prefix) = &outbox_prefix {
            for suffix in OUTBOX_KEYS {
                resolve(format!("{prefix}{suffix}"), &mut entries)?;
            }
        }

        // Only the outbox router's `type` is read; the other transforms' get their note.
        for name in &transforms {
            let prefix = format!("debezium.transforms.{name}.");
            if outbox_prefix.as_deref() != Some(prefix.as_str()) {
                used.remove(&format!("{prefix}type"));
            }
        }
        let expand_key = outbox_prefix
            .as_ref()
            .map(|prefix| format!("{prefix}table.expand.json.payload"));
        let mut notes = Vec::new();
        if let Some(key) = &expand_key
            && let Some(note) = expand_json_payload(key, entries.get(key).map(String::as_str))?
        {
            notes.push(note);
        }
        for key in &raw.order {
            if used.contains(key) {
                continue;
            }
            let reason = match ignore_reason(key) {
                Some(reason) => reason.to_owned(),
                None => match other_transform(key, &transforms, outbox_prefix.as_deref()) {
                    Some(name) => format!(
                        "transform {name:?} is not applied: outbox-relay applies only the outbox \
                         EventRouter"
                    ),
                    None => "not used by outbox-relay".to_owned(),
                },
            };
            notes.push(ConfigNote::ignored(key, reason));
        }

        Ok(Self {
            entries,
            outbox_prefix,
            notes,
        })
    }

    /// A resolved value by its full key (None when unset or empty).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The file's keys the relay does not use, with why, in file order.
    pub fn notes(&self) -> &[ConfigNote] {
        &self.notes
    }

    /// A value of the outbox EventRouter transform, by its key below the transform
    /// (e.g. `route.by.field`); returns the full key for error messages too.
    pub(super) fn outbox(&self, suffix: &str) -> Option<(String, &str)> {
        let prefix = self.outbox_prefix.as_deref()?;
        let key = format!("{prefix}{suffix}");
        self.get(&key).map(|value| (key, value))
    }

    pub(super) fn source(&self, suffix: &str) -> Option<(String, &str)> {
        let key = format!("debezium.source.{suffix}");
        self.get(&key).map(|value| (key, value))
    }

    pub(super) fn sink(&self, suffix: &str) -> Option<(String, &str)> {
        let key = format!("debezium.sink.rabbitmq.{suffix}");
        self.get(&key).map(|value| (key, value))
    }
}

/// `table.expand.json.payload`: true is what the relay does anyway, false it cannot do, and
/// unset (Debezium's default, false) is worth a warning.
fn expand_json_payload(key: &str, value: Option<&str>) -> Result<Option<ConfigNote>, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("true") => Ok(Some(ConfigNote::ignored(
            key,
            "the payload is always expanded: the debezium wire format turns the payload JSON \
             into a struct with an inferred schema, as Debezium does with true (a payload \
             Debezium could not expand goes out as its JSON text, as with Debezium); the plain \
             format's body is the payload JSON itself",
        ))),
        None => Ok(Some(ConfigNote::warning(
            key,
            "is not set: Debezium's default (false) publishes the payload as one JSON string; \
             outbox-relay always expands it, as Debezium does with true",
        ))),
        Some("false") => Err(invalid(
            key,
            "false is not supported: outbox-relay always expands the payload JSON, as Debezium \
             does with true (set it to true)",
        )),
        Some(_) => Err(invalid(key, "expected true or false")),
    }
}

/// Why a key the relay does not read is ignored; None for a key it knows nothing about.
fn ignore_reason(key: &str) -> Option<&'static str> {
    let source = key.strip_prefix("debezium.source.");
    let reason = match source {
        Some(k) if k.starts_with("offset.storage") => {
            "the replication slot's confirmed position is the relay's position: it keeps no \
             offsets file"
        }
        Some("offset.flush.interval.ms") => {
            "the relay confirms a position to PostgreSQL as soon as the broker confirmed every \
             event up to it (RELAY_STATUS_INTERVAL_MS paces the status updates)"
        }
        Some("topic.prefix") => {
            "it prefixes Kafka topic names; the exchange is named by route.topic.replacement"
        }
        Some("tombstones.on.delete") => {
            "the outbox router publishes inserted rows only: a delete publishes nothing"
        }
        Some("snapshot.mode") => {
            "the relay takes no snapshot: it streams from the replication slot's position (as \
             no_data)"
        }
        Some("connector.class") => "outbox-relay is its own PostgreSQL connector",
        Some("publication.autocreate.mode") => {
            "outbox-relay creates a missing publication FOR TABLE the outbox tables (as \
             filtered)"
        }
        Some(k) if k.starts_with("heartbeat.") => {
            "no heartbeat is needed: while no event is in flight the relay confirms the \
             server's latest position, so a quiet outbox does not hold WAL"
        }
        Some(k)
            if k.starts_with("key.converter")
                || k.starts_with("value.converter")
                || k.starts_with("header.converter") =>
        {
            "the message encoding is RELAY_WIRE_FORMAT (debezium by default with a properties \
             file: Debezium's JSON with schemas)"
        }
        Some("max.batch.size" | "max.queue.size" | "poll.interval.ms") => {
            "the events in flight are bounded by RELAY_WINDOW_EVENTS and RELAY_WINDOW_BYTES"
        }
        _ if key.starts_with("debezium.format.") => {
            "the message encoding is RELAY_WIRE_FORMAT (debezium by default with a properties \
             file: Debezium's JSON with schemas)"
        }
        _ if key.starts_with("debezium.transforms.")
            && (key.ends_with(".tracing.operation.name")
                || key.ends_with(".tracing.with.context.field.only")) =>
        {
            "the relay creates no span of its own: the trace context column goes out as the \
             traceparent and tracestate headers unchanged, and an event without one without them"
        }
        _ if key == "debezium.sink.type" => "outbox-relay publishes to RabbitMQ only",
        _ if key == "debezium.sink.rabbitmq.ackTimeout" => {
            "the relay waits for every publisher confirm, bounds the unconfirmed events with \
             RELAY_WINDOW_EVENTS and RELAY_WINDOW_BYTES, and publishes again after a failure"
        }
        _ if key.starts_with("quarkus.") => {
            "a Quarkus setting: outbox-relay logs per RUST_LOG and RELAY_LOG_FORMAT"
        }
        _ => return None,
    };
    Some(reason)
}

/// The name of the (non-outbox) transform `key` belongs to, if any.
fn other_transform<'a>(
    key: &str,
    transforms: &'a [String],
    outbox_prefix: Option<&str>,
) -> Option<&'a str> {
    let rest = key.strip_prefix("debezium.transforms.")?;
    transforms
        .iter()
        .find(|name| {
            rest.strip_prefix(name.as_str())
                .is_some_and(|after| after.starts_with('.'))
                && outbox_prefix != Some(&format!("debezium.transforms.{name}."))
        })
        .map(String::as_str)
}

/// The file's entries before expansion, and their order.
struct RawProperties {
    values: HashMap<String, String>,
    /// Each key once, where it first appears (a later duplicate wins, as in Java).
    order: Vec<String>,
}

impl RawProperties {
    /// Parses the Java properties format (`key=value`, `key: value`, `#`/`!` comments,
    /// backslash line continuations and escapes).
    fn parse(text: &str) -> Self {
        let mut raw = Self {
            values: HashMap::new(),
            order: Vec::new(),
        };
        let mut logical = String::new();
        for raw_line in text.lines() {
            let line = raw_line.trim_start();
            if logical.is_empty() && (line.is_empty() || line.starts_with(['#', '!'])) {
                continue;
            }
            // An odd number of trailing backslashes continues the line.
            let trailing = line.chars().rev().take_while(|c| *c == '\\').count();
            if trailing % 2 == 1 {
                logical.push_str(&line[..line.len() - 1]);
                continue;
            }
            logical.push_str(line);
            raw.insert(&logical);
            logical.clear();
        }
        if !logical.is_empty() {
            raw.insert(&logical);
        }
        raw
    }

    fn insert(&mut self, logical: &str) {
        let (key, value) = split_property(logical);
        let key = unescape(&key);
        let value = unescape(value.trim_start());
        if self.values.insert(key.clone(), value).is_none() {
            self.order.push(key);
        }
    }
}

fn split_property(line: &str) -> (String, &str) {
    let mut key = String::new();
    let mut chars = line.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => {
                key.push('\\');
                if let Some((_, escaped)) = chars.next() {
                    key.push(escaped);
                }
            }
            '=' | ':' => return (key.trim_end().to_owned(), &line[index + 1..]),
            c if c.is_whitespace() => {
                let rest = line[index..].trim_start();
                let rest = rest
                    .strip_prefix(['=', ':'])
                    .map_or(rest, |after| after.trim_start());
                return (key, rest);
            }
            c => key.push(c),
        }
    }
    (key, "")
}

/// Java's unescaping: `\t \n \r \f`, `\uXXXX`, and `\x` → `x` for any other `x` (so `\\` is
/// one backslash). A malformed `\u` keeps its text.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) if hex.len() == 4 => {
                        out.push(decoded);
                        for _ in 0..4 {
                            chars.next();
                        }
                    }
                    _ => out.push('u'),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out.trim_end().to_owned()
}

/// The environment variable names SmallRye tries for a property name, in order: exactly, with
/// every non-alphanumeric character as `_`, then that upper-cased.
fn env_names(name: &str) -> Vec<String> {
    let mapped: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let upper = mapped.to_ascii_uppercase();
    let mut names = vec![name.to_owned()];
    for candidate in [mapped, upper] {
        if !names.contains(&candidate) {
            names.push(candidate);
        }
    }
    names
}

/// Resolves values as SmallRye Config does, against the environment and the file.
struct Resolver<'a> {
    raw: &'a RawProperties,
    env: EnvLookup<'a>,
}

/// Where a value being expanded came from, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Key(&'a str),
    Env(&'a str),
}

impl Origin<'_> {
    fn setting(self) -> String {
        match self {
            Origin::Key(key) => key.to_owned(),
            Origin::Env(name) => format!("environment variable {name}"),
        }
    }
}

/// A value with its placeholders expanded.
type Expanded = Result<String, ConfigError>;

/// What is being resolved: the names on the way (a name met again is a loop) and how deeply
/// expansions nest.
struct Trail {
    names: Vec<String>,
    depth: usize,
}

impl Resolver<'_> {
    /// The value of `key`: an environment override, else the file's, expanded. None when
    /// unset or empty.
    fn value(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let mut trail = Trail {
            names: vec![key.to_owned()],
            depth: 0,
        };
        self.lookup_value(key, &mut trail)
    }

    /// One environment variable; empty counts as unset, non-UTF-8 is an error naming it.
    fn env_var(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match (self.env)(name) {
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(VarError::NotPresent) => Ok(None),
            Err(VarError::NotUnicode(_)) => Err(invalid(name, "is not valid UTF-8")),
        }
    }

    /// `name` looked up in the environment (exactly, then mapped), then among the file's keys;
    /// the value found is expanded.
    fn lookup_value(&self, name: &str, trail: &mut Trail) -> Result<Option<String>, ConfigError> {
        for candidate in env_names(name) {
            if let Some(value) = self.env_var(&candidate)? {
                let expanded = self.expand(&value, Origin::Env(&candidate), trail)?;
                return Ok(Some(expanded).filter(|v| !v.is_empty()));
            }
        }
        match self.raw.values.get(name) {
            Some(raw) => {
                let expanded = self.expand(raw, Origin::Key(name), trail)?;
                Ok(Some(expanded).filter(|v| !v.is_empty()))
            }
            None => Ok(None),
        }
    }

    /// Expands the placeholders of `text` (which came from `origin`).
    fn expand(&self, text: &str, origin: Origin<'_>, trail: &mut Trail) -> Expanded {
        if trail.depth >= MAX_DEPTH {
            return Err(invalid(
                &origin.setting(),
                format!("placeholders nest more than {MAX_DEPTH} levels deep"),
            ));
        }
        // Not restored on an error: the whole lookup ends with it.
        trail.depth += 1;
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut literal_from = 0;
        let mut index = 0;
        while index < bytes.len() {
            match (bytes[index], bytes.get(index + 1)) {
                (b'\\', Some(b'$')) => {
                    out.push_str(&text[literal_from..index]);
                    out.push('$');
                    index += 2;
                    literal_from = index;
                }
                (b'$', Some(b'{')) => match closing_brace(bytes, index + 2) {
                    Some(close) => {
                        out.push_str(&text[literal_from..index]);
                        let body = &text[index + 2..close];
                        out.push_str(&self.placeholder(body, origin, trail)?);
                        index = close + 1;
                        literal_from = index;
                    }
                    // Unterminated: stays as written (SmallRye's lenient syntax).
                    None => index += 2,
                },
                _ => index += 1,
            }
        }
        out.push_str(&text[literal_from..]);
        trail.depth -= 1;
        Ok(out)
    }

    /// The value of one `${body}`.
    fn placeholder(&self, body: &str, origin: Origin<'_>, trail: &mut Trail) -> Expanded {
        let (name_text, default) = match top_level_colon(body.as_bytes()) {
            Some(colon) => (&body[..colon], Some(&body[colon + 1..])),
            None => (body, None),
        };
        let name = self.expand(name_text, origin, trail)?;
        if let Some(position) = trail.names.iter().position(|seen| *seen == name) {
            let mut chain = trail.names[position..].to_vec();
            chain.push(name.clone());
            return Err(invalid(
                &origin.setting(),
                format!(
                    "${{{name}}} refers back to itself ({}): a placeholder loop",
                    chain.join(" → ")
                ),
            ));
        }
        trail.names.push(name.clone());
        let found = self.lookup_value(&name, trail);
        trail.names.pop();
        if let Some(value) = found? {
            return Ok(value);
        }
        if let Some(default) = default {
            return self.expand(default, origin, trail);
        }
        if name == ROUTED_BY_VALUE {
            return Ok(format!("${{{ROUTED_BY_VALUE}}}"));
        }
        Err(ConfigError::Unset {
            setting: origin.setting(),
            variable: name.clone(),
            alternatives: unset_alternatives(&name),
        })
    }
}

/// What else was tried for an unset placeholder, for its error message.
fn unset_alternatives(name: &str) -> String {
    let names = env_names(name);
    let mut text = names[1..]
        .iter()
        .map(|n| format!(" or {n}"))
        .collect::<String>();
    if name.contains('.') {
        text.push_str(&format!(", no key {name} in the file,"));
    }
    text
}

/// Index of the `}` that closes a placeholder whose body starts at `start`: nested `${...}`
/// are skipped whole, `\$` is not an opening.
fn closing_brace(bytes: &[u8], start: usize) -> Option<usize> {
    find_outside_placeholders(bytes, start, b'}')
}

/// The first `:` of a placeholder body outside nested placeholders (the default's separator).
fn top_level_colon(bytes: &[u8]) -> Option<usize> {
    find_outside_placeholders(bytes, 0, b':')
}

/// The first `wanted` byte from `start` that is not inside a nested `${...}`.
fn find_outside_placeholders(bytes: &[u8], start: usize, wanted: u8) -> Option<usize> {
    let mut nested = 0usize;
    let mut index = start;
    while index < bytes.len() {
        match (bytes[index], bytes.get(index + 1)) {
            (b'\\', Some(b'$')) => index += 1,
            (b'$', Some(b'{')) => {
                nested += 1;
                index += 1;
            }
            (byte, _) if byte == wanted && nested == 0 => return Some(index),
            (b'}', _) => nested = nested.saturating_sub(1),
            _ => {}
        }
        index += 1;
    }
    None
}
