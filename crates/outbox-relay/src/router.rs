//! The outbox event router: Debezium's `EventRouter` semantics in its vocabulary.
//!
//! An inserted outbox row becomes one message:
//! - exchange: `route.topic.replacement` with `${routedByValue}` replaced by the row's
//!   `route.by.field` column (defaults: `${routedByValue}.events` and `aggregate_type`, so
//!   `order` goes to exchange `order.events`);
//! - message id and `id` header: the `table.field.event.id` column;
//! - body: the `table.field.event.payload` column (jsonb text), encoded per wire format;
//! - headers: `table.fields.additional.placement` entries `column:header:name`;
//! - routing key: empty (fanout), the `table.field.event.key` column or the
//!   `table.field.event.type` column.
//!
//! Rows of tables that are not routed are ignored. A routed row the router cannot turn into a
//! message (a configured column missing from the table, or NULL where a value is needed) is an
//! [`Unroutable`] error: the pipeline never skips it silently (see `pipeline`).
//!
//! It reads source-neutral rows ([`crate::row`]): the same code routes a row from the WAL and
//! a polled row.

use std::collections::HashMap;
use std::fmt;

use wire_format::{Header, HeaderKind};

use crate::row::{Row, TableSchema, Value};

/// PostgreSQL's type OID of `uuid`: Debezium marks such headers `io.debezium.data.Uuid`.
const UUID_TYPE_OID: u32 = 2950;

/// A `schema.table` name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// Parses `schema.table` or `table` (schema `public`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 63
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !part.starts_with(|c: char| c.is_ascii_digit())
        };
        let (schema, table) = text.split_once('.').unwrap_or(("public", text));
        if !valid(schema) || !valid(table) {
            return Err(format!(
                "{text:?} is not a [schema.]table name of letters, digits and underscores"
            ));
        }
        Ok(Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
        })
    }

    /// `"schema"."table"`, for SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.table)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Where the routing key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingKeySource {
    /// `""`, as the original system's fanout exchange expects.
    #[default]
    Empty,
    /// The event key column (`table.field.event.key`).
    Key,
    /// The event type column (`table.field.event.type`).
    Type,
}

impl RoutingKeySource {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "empty" | "" => Ok(Self::Empty),
            "key" => Ok(Self::Key),
            "type" => Ok(Self::Type),
            other => Err(format!("{other:?}: expected empty, key or type")),
        }
    }
}

/// Type of the exchanges the relay declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExchangeType {
    #[default]
    Fanout,
    Direct,
    Topic,
    Headers,
}

impl ExchangeType {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "fanout" => Ok(Self::Fanout),
            "direct" => Ok(Self::Direct),
            "topic" => Ok(Self::Topic),
            "headers" => Ok(Self::Headers),
            other => Err(format!(
                "{other:?}: expected fanout, direct, topic or headers"
            )),
        }
    }
}

/// One `table.fields.additional.placement` entry: put `column` in header `header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub column: String,
    pub header: String,
}

impl Placement {
    /// Parses `column:header[:alias][,...]`. Debezium's other locations (`envelope`,
    /// `partition`) have no meaning for an AMQP message and are refused.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let mut placements = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
            let (column, location, alias) = match parts.as_slice() {
                [column, location] => (*column, *location, *column),
                [column, location, alias] => (*column, *location, *alias),
                _ => {
                    return Err(format!(
                        "{entry:?}: expected column:header or column:header:name"
                    ));
                }
            };
            if location != "header" {
                return Err(format!(
                    "{entry:?}: location {location:?} is not supported (only header)"
                ));
            }
            if column.is_empty() || alias.is_empty() {
                return Err(format!("{entry:?}: empty column or header name"));
            }
            placements.push(Self {
                column: column.to_owned(),
                header: alias.to_owned(),
            });
        }
        Ok(placements)
    }
}

/// The router's settings, named after Debezium's `transforms.outbox.*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Outbox tables (`table.include.list`).
    pub tables: Vec<TableName>,
    /// `route.by.field`.
    pub route_by_field: String,
    /// `route.topic.replacement`, with `${routedByValue}`.
    pub route_topic_replacement: String,
    /// `table.field.event.id`.
    pub field_event_id: String,
    /// `table.field.event.key`.
    pub field_event_key: String,
    /// `table.field.event.type`.
    pub field_event_type: String,
    /// `table.field.event.payload`.
    pub field_event_payload: String,
    /// `table.fields.additional.placement`.
    pub additional_placement: Vec<Placement>,
    /// Routing key source.
    pub routing_key: RoutingKeySource,
    /// `tracing.span.context.field`: the column with the event's W3C trace context (Java
    /// Properties text); `None`: not read. Optional in the table: the original system's has
    /// no such column, and its events go out without trace headers.
    pub tracing_span_context_field: Option<String>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            tables: vec![TableName {
                schema: "orders".into(),
                table: "outbox_event".into(),
            }],
            route_by_field: "aggregate_type".into(),
            route_topic_replacement: "${routedByValue}.events".into(),
            field_event_id: "id".into(),
            field_event_key: "aggregate_id".into(),
            field_event_type: "type".into(),
            field_event_payload: "payload".into(),
            additional_placement: vec![Placement {
                column: "type".into(),
                header: "eventType".into(),
            }],
            routing_key: RoutingKeySource::Empty,
            tracing_span_context_field: Some("tracingspancontext".into()),
        }
    }
}

/// Why a routed row could not become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("table {table} has no column {column:?} (configured as {setting})")]
    MissingColumn {
        table: String,
        column: String,
        setting: &'static str,
    },
    #[error("row of {table} has NULL in column {column:?} ({setting}), which routing needs")]
    NullValue {
        table: String,
        column: String,
        setting: &'static str,
    },
    #[error("row of {table} has a non-text value in column {column:?} ({setting})")]
    NotText {
        table: String,
        column: String,
        setting: &'static str,
    },
    #[error("row of table {relation_id}, whose schema (Relation message) was never received")]
    UnknownRelation { relation_id: u32 },
}

/// A routed outbox row, borrowing the row's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedEvent<'a> {
    pub exchange: String,
    pub routing_key: &'a str,
    pub event_id: &'a str,
    /// The `id` header first, then the additional placements (NULL columns left out).
    pub headers: Vec<Header<'a>>,
    pub payload: &'a str,
    /// The event key (`table.field.event.key`, the aggregate id) when the table has it.
    pub event_key: Option<&'a str>,
    /// The trace context column's text, when the table has the column and the row a value.
    pub trace_context: Option<&'a str>,
}

/// Column positions of a routed table, resolved once per table schema.
#[derive(Debug, Clone)]
struct RoutePlan {
    table: String,
    columns: Vec<String>,
    route_by: Result<usize, Unroutable>,
    event_id: Result<usize, Unroutable>,
    event_id_is_uuid: bool,
    payload: Result<usize, Unroutable>,
    routing_key: Option<Result<usize, Unroutable>>,
    /// `table.field.event.key`, if the table has it (for the relay's per-aggregate order).
    event_key: Option<usize>,
    /// `tracing.span.context.field`, if configured and the table has it.
    trace_context: Option<usize>,
    headers: Vec<(String, Result<usize, Unroutable>, HeaderKind)>,
}

/// Routes rows; keeps what it learned from the sources' table schemas.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    plans: HashMap<u32, Option<RoutePlan>>,
    exchange_template: ExchangeTemplate,
}

/// `route.topic.replacement` split once at `${routedByValue}`.
#[derive(Debug)]
enum ExchangeTemplate {
    Fixed(String),
    Around { prefix: String, suffix: String },
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        let exchange_template = match config
            .route_topic_replacement
            .split_once("${routedByValue}")
        {
            Some((prefix, suffix)) => ExchangeTemplate::Around {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            },
            None => ExchangeTemplate::Fixed(config.route_topic_replacement.clone()),
        };
        Self {
            plans: HashMap::new(),
            exchange_template,
            config,
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Learns (or relearns) a table's columns. A table that is not routed is remembered as
    /// ignored.
    pub fn on_table(&mut self, schema: &TableSchema) {
        let routed = self.config.tables.contains(&schema.name);
        let plan = routed.then(|| self.plan(schema));
        self.plans.insert(schema.id, plan);
    }

    fn plan(&self, relation: &TableSchema) -> RoutePlan {
        let table = relation.name.to_string();
        let find = |column: &str, setting: &'static str| {
            relation
                .column_index(column)
                .ok_or_else(|| Unroutable::MissingColumn {
                    table: table.clone(),
                    column: column.to_owned(),
                    setting,
                })
        };
        let event_id = find(&self.config.field_event_id, "table.field.event.id");
        let event_id_is_uuid = event_id
            .as_ref()
            .is_ok_and(|&i| relation.columns[i].type_oid == UUID_TYPE_OID);
        let routing_key = match self.config.routing_key {
            RoutingKeySource::Empty => None,
            RoutingKeySource::Key => {
                Some(find(&self.config.field_event_key, "table.field.event.key"))
            }
            RoutingKeySource::Type => Some(find(
                &self.config.field_event_type,
                "table.field.event.type",
            )),
        };
        let headers = self
            .config
            .additional_placement
            .iter()
            .map(|placement| {
                let index = find(&placement.column, "table.fields.additional.placement");
                let kind = match &index {
                    Ok(i) if relation.columns[*i].type_oid == UUID_TYPE_OID => HeaderKind::Uuid,
                    _ => HeaderKind::String,
                };
                (placement.header.clone(), index, kind)
            })
            .collect();
        RoutePlan {
            route_by: find(&self.config.route_by_field, "route.by.field"),
            event_id,
            event_id_is_uuid,
            payload: find(
                &self.config.field_event_payload,
                "table.field.event.payload",
            ),
            routing_key,
            event_key: relation.column_index(&self.config.field_event_key),
            trace_context: self
                .config
                .tracing_span_context_field
                .as_deref()
                .and_then(|column| relation.column_index(column)),
            headers,
            columns: relation.columns.iter().map(|c| c.name.clone()).collect(),
            table,
        }
    }

    /// The name of table `id`, if it is routed.
    pub fn routed_table(&self, id: u32) -> Option<&str> {
        self.plans
            .get(&id)
            .and_then(|plan| plan.as_ref())
            .map(|plan| plan.table.as_str())
    }

    /// Routes an inserted row: `Ok(None)` for a table that is not routed.
    pub fn route<'a>(&'a self, row: &'a Row) -> Result<Option<RoutedEvent<'a>>, Unroutable> {
        let plan = match self.plans.get(&row.table) {
            Some(Some(plan)) => plan,
            Some(None) => return Ok(None),
            None => {
                return Err(Unroutable::UnknownRelation {
                    relation_id: row.table,
                });
            }
        };
        let values = &row.values;
        let text = |index: &Result<usize, Unroutable>,
                    setting: &'static str|
         -> Result<Option<&'a str>, Unroutable> {
            let index = *index.as_ref().map_err(Clone::clone)?;
            let column = || plan.columns.get(index).cloned().unwrap_or_default();
            match values.get(index) {
                Some(Value::Null) | None => Ok(None),
                Some(value @ Value::Text(_)) => {
                    value
                        .as_text()
                        .map(Some)
                        .ok_or_else(|| Unroutable::NotText {
                            table: plan.table.clone(),
                            column: column(),
                            setting,
                        })
                }
                Some(_) => Err(Unroutable::NotText {
                    table: plan.table.clone(),
                    column: column(),
                    setting,
                }),
            }
        };
        let required = |index: &Result<usize, Unroutable>,
                        setting: &'static str|
         -> Result<&'a str, Unroutable> {
            text(index, setting)?.ok_or_else(|| Unroutable::NullValue {
                table: plan.table.clone(),
                column: index
                    .as_ref()
                    .ok()
                    .and_then(|i| plan.columns.get(*i).cloned())
                    .unwrap_or_default(),
                setting,
            })
        };
        let routed_by = required(&plan.route_by, "route.by.field")?;
        let event_id = required(&plan.event_id, "table.field.event.id")?;
        let payload = required(&plan.payload, "table.field.event.payload")?;
        let routing_key = match &plan.routing_key {
            None => "",
            Some(index) => {
                let setting = if self.config.routing_key == RoutingKeySource::Key {
                    "table.field.event.key"
                } else {
                    "table.field.event.type"
                };
                required(index, setting)?
            }
        };
        let mut headers = Vec::with_capacity(1 + plan.headers.len());
        headers.push(Header {
            name: "id",
            value: event_id,
            kind: if plan.event_id_is_uuid {
                HeaderKind::Uuid
            } else {
                HeaderKind::String
            },
        });
        for (name, index, kind) in &plan.headers {
            if let Some(value) = text(index, "table.fields.additional.placement")? {
                headers.push(Header {
                    name: name.as_str(),
                    value,
                    kind: *kind,
                });
            }
        }
        // Not required: a missing or NULL key only loses the per-aggregate hold-back.
        let event_key = plan
            .event_key
            .and_then(|index| text(&Ok(index), "table.field.event.key").ok().flatten());
        // Not required either: a non-text value only loses the trace headers.
        let trace_context = plan.trace_context.and_then(|index| {
            text(&Ok(index), "tracing.span.context.field")
                .ok()
                .flatten()
        });
        Ok(Some(RoutedEvent {
            exchange: self.exchange_for(routed_by),
            routing_key,
            event_id,
            headers,
            payload,
            event_key,
            trace_context,
        }))
    }

    /// The column names and text values of a row of a routed table, as a JSON object: the
    /// body of a dead-lettered row.
    pub fn row_as_json(&self, row: &Row) -> String {
        let columns = self
            .plans
            .get(&row.table)
            .and_then(|plan| plan.as_ref())
            .map(|plan| plan.columns.as_slice())
            .unwrap_or_default();
        let mut object = serde_json::Map::new();
        for (index, value) in row.values.iter().enumerate() {
            let name = columns
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("column{index}"));
            let value = match value {
                Value::Null => serde_json::Value::Null,
                other => other.as_text().map_or(serde_json::Value::Null, |t| {
                    serde_json::Value::String(t.to_owned())
                }),
            };
            object.insert(name, value);
        }
        serde_json::Value::Object(object).to_string()
    }

    fn exchange_for(&self, routed_by: &str) -> String {
        match &self.exchange_template {
            ExchangeTemplate::Fixed(name) => name.clone(),
            ExchangeTemplate::Around { prefix, suffix } => {
                let mut exchange =
                    String::with_capacity(prefix.len() + routed_by.len() + suffix.len());
                exchange.push_str(prefix);
                exchange.push_str(routed_by);
                exchange.push_str(suffix);
                exchange
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::row::ColumnSchema;
    use bytes::Bytes;

    fn relation(id: u32, namespace: &str, name: &str, columns: &[(&str, u32)]) -> TableSchema {
        TableSchema {
            id,
            name: TableName {
                schema: namespace.into(),
                table: name.into(),
            },
            columns: columns
                .iter()
                .map(|(name, oid)| ColumnSchema {
                    name: (*name).into(),
                    type_oid: *oid,
                })
                .collect(),
        }
    }

    fn outbox_relation() -> TableSchema {
        relation(
            16400,
            "orders",
            "outbox_event",
            &[
                ("id", 2950),
                ("aggregate_type", 1043),
                ("aggregate_id", 1043),
                ("type", 1043),
                ("payload", 3802),
                ("timestamp", 1184),
            ],
        )
    }

    fn insert(id: u32, values: &[Option<&str>]) -> Row {
        Row {
            table: id,
            values: values
                .iter()
                .map(|v| match v {
                    Some(text) => Value::Text(Bytes::copy_from_slice(text.as_bytes())),
                    None => Value::Null,
                })
                .collect(),
        }
    }

    fn order_row() -> Row {
        insert(
            16400,
            &[
                Some("4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60"),
                Some("order"),
                Some("agg-1"),
                Some("OrderCreated"),
                Some(r#"{"id": "agg-1"}"#),
                Some("2024-01-01 12:00:00+00"),
            ],
        )
    }

    /// The order row routed with `config`: exchange, routing key, event id, payload and
    /// headers (name, value, kind).
    fn route_order_row(config: RouterConfig) -> (String, String, String, String, Vec<String>) {
        let mut router = Router::new(config);
        router.on_table(&outbox_relation());
        let row = order_row();
        let event = router.route(&row).unwrap().unwrap();
        let headers = event
            .headers
            .iter()
            .map(|h| format!("{}={} ({:?})", h.name, h.value, h.kind))
            .collect();
        let fields = (event.routing_key, event.event_id, event.payload);
        let (key, id, payload) = fields;
        (
            event.exchange,
            key.into(),
            id.into(),
            payload.into(),
            headers,
        )
    }

    #[test]
    fn defaults_route_like_the_original_system() {
        let (exchange, key, id, payload, headers) = route_order_row(RouterConfig::default());
        assert_eq!(exchange, "order.events");
        assert_eq!(key, "");
        assert_eq!(id, "4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60");
        assert_eq!(payload, r#"{"id": "agg-1"}"#);
        assert_eq!(
            headers,
            [
                "id=4e8b1f0a-6c1d-4f7e-9a52-1d2c3b4a5f60 (Uuid)",
                "eventType=OrderCreated (String)"
            ]
        );
    }

    #[test]
    fn each_setting_changes_the_route() {
        let (exchange, key, id, payload, headers) = route_order_row(RouterConfig {
            route_by_field: "type".into(),
            route_topic_replacement: "outbox.${routedByValue}.x".into(),
            field_event_id: "aggregate_id".into(),
            field_event_key: "aggregate_type".into(),
            field_event_payload: "timestamp".into(),
            additional_placement: Placement::parse_list("aggregate_type:header:kind,type:header")
                .unwrap(),
            routing_key: RoutingKeySource::Key,
            ..RouterConfig::default()
        });
        assert_eq!(
            [exchange, key, id, payload],
            [
                "outbox.OrderCreated.x",
                "order",
                "agg-1",
                "2024-01-01 12:00:00+00"
            ]
        );
        assert_eq!(
            headers,
            [
                "id=agg-1 (String)",
                "kind=order (String)",
                "type=OrderCreated (String)"
            ]
        );
        let row = order_row();

        let mut by_type = Router::new(RouterConfig {
            routing_key: RoutingKeySource::Type,
            field_event_type: "aggregate_id".into(),
            route_topic_replacement: "all-events".into(),
            ..RouterConfig::default()
        });
        by_type.on_table(&outbox_relation());
        let event = by_type.route(&row).unwrap().unwrap();
        assert_eq!(event.routing_key, "agg-1");
        assert_eq!(event.exchange, "all-events");
    }

    #[test]
    fn other_tables_are_ignored() {
        let mut router = Router::new(RouterConfig::default());
        router.on_table(&relation(7, "orders", "order_line", &[("id", 2950)]));
        assert_eq!(router.route(&insert(7, &[Some("x")])).unwrap(), None);
        assert!(router.routed_table(7).is_none());
    }

    #[test]
    fn unroutable_rows_are_errors_not_skips() {
        let mut router = Router::new(RouterConfig::default());
        router.on_table(&outbox_relation());
        let row = insert(
            16400,
            &[Some("e1"), None, Some("a"), Some("T"), Some("{}"), None],
        );
        let error = router.route(&row).unwrap_err();
        assert!(
            matches!(error, Unroutable::NullValue { ref column, .. } if column == "aggregate_type")
        );
        assert!(error.to_string().contains("route.by.field"));
        // A NULL additional header is only left out.
        let row = insert(
            16400,
            &[Some("e1"), Some("order"), Some("a"), None, Some("{}"), None],
        );
        let event = router.route(&row).unwrap().unwrap();
        assert_eq!(event.headers.len(), 1);

        let mut missing = Router::new(RouterConfig {
            field_event_payload: "body".into(),
            ..RouterConfig::default()
        });
        missing.on_table(&outbox_relation());
        let error = missing.route(&order_row()).unwrap_err();
        assert!(matches!(error, Unroutable::MissingColumn { ref column, .. } if column == "body"));
        assert!(error.to_string().contains("table.field.event.payload"));

        let unknown = Router::new(RouterConfig::default());
        assert!(matches!(
            unknown.route(&order_row()),
            Err(Unroutable::UnknownRelation { relation_id: 16400 })
        ));
        let json = router.row_as_json(&row);
        assert!(json.contains(r#""aggregate_type":"order""#), "{json}");
    }

    #[test]
    fn placement_and_table_syntax() {
        assert_eq!(
            Placement::parse_list("type:header:eventType").unwrap(),
            vec![Placement {
                column: "type".into(),
                header: "eventType".into()
            }]
        );
        assert!(
            Placement::parse_list("type:envelope:eventType")
                .unwrap_err()
                .contains("envelope")
        );
        assert!(Placement::parse_list("type").is_err());
        assert_eq!(
            TableName::parse("outbox").unwrap().to_string(),
            "public.outbox"
        );
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("x;drop").is_err());
        assert!(RoutingKeySource::parse("nope").is_err());
        assert!(ExchangeType::parse("nope").is_err());
    }

    #[test]
    fn the_trace_context_column_is_optional() {
        const CONTEXT: &str =
            "traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n";
        // The outbox table with the column added last, as the migration adds it.
        let mut traced_table = outbox_relation();
        traced_table.columns.push(ColumnSchema {
            name: "tracingspancontext".into(),
            type_oid: 1043,
        });
        let mut router = Router::new(RouterConfig::default());
        router.on_table(&traced_table);
        let mut values = order_row().values;
        values.push(Value::Text(Bytes::from_static(CONTEXT.as_bytes())));
        let row = Row {
            table: 16400,
            values,
        };
        assert_eq!(
            router.route(&row).unwrap().unwrap().trace_context,
            Some(CONTEXT)
        );
        // NULL: no context, still routed.
        let mut values = order_row().values;
        values.push(Value::Null);
        let row = Row {
            table: 16400,
            values,
        };
        assert_eq!(router.route(&row).unwrap().unwrap().trace_context, None);
        // The original system's table has no such column: routed, no context.
        let (.., headers) = route_order_row(RouterConfig::default());
        assert_eq!(headers.len(), 2);
        let mut original = Router::new(RouterConfig::default());
        original.on_table(&outbox_relation());
        assert_eq!(
            original.route(&order_row()).unwrap().unwrap().trace_context,
            None
        );
        // Not read at all when switched off.
        let mut off = Router::new(RouterConfig {
            tracing_span_context_field: None,
            ..RouterConfig::default()
        });
        off.on_table(&traced_table);
        let mut values = order_row().values;
        values.push(Value::Text(Bytes::from_static(CONTEXT.as_bytes())));
        let row = Row {
            table: 16400,
            values,
        };
        assert_eq!(off.route(&row).unwrap().unwrap().trace_context, None);
    }
}
