//! The domain events exchanged between order-service and shipment-service.
//!
//! An event is serialized as one JSON object whose `eventType` field names its kind; this object
//! is the `payload` column of `orders.outbox_event` and the body of the message the relay
//! publishes in its `plain` wire format:
//!
//! - `OrderCreated`: `{eventType, id, customerId, orderDate, lineItems:[{id, item, quantity, totalPrice, status}]}`
//! - `OrderLineUpdated`: `{eventType, orderId, orderLineId, newStatus, oldStatus}`
//!
//! Timestamps are written as UTC with millisecond precision (`2024-01-01T12:00:00.000Z`), the
//! format of the system we replace.
//!
//! Ids are UUID version 4 by default ([`IdFormat`]): the original system's consumers accept no
//! other version.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The aggregate type of every order event: the relay routes it to exchange `order.events`.
pub const ORDER_AGGREGATE_TYPE: &str = "order";

/// Which kind of UUID a producer makes for new orders, lines and outbox events.
///
/// [`IdFormat::Uuid4`] (random) is the default: the original system's consumers validate every
/// id of an event as a version 4 UUID and reject any other. [`IdFormat::Uuid7`] (time-ordered)
/// keeps inserts at the right edge of the primary-key index and sorts by creation time, for
/// deployments whose consumers all accept it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum IdFormat {
    #[default]
    Uuid4,
    Uuid7,
}

impl IdFormat {
    /// A new id of this format.
    pub fn new_id(self) -> Uuid {
        match self {
            IdFormat::Uuid4 => Uuid::new_v4(),
            IdFormat::Uuid7 => Uuid::now_v7(),
        }
    }

    /// The spelling of the setting: `uuid4` or `uuid7`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdFormat::Uuid4 => "uuid4",
            IdFormat::Uuid7 => "uuid7",
        }
    }
}

impl fmt::Display for IdFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An id format that is neither `uuid4` nor `uuid7`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an id format: expected uuid4 or uuid7")]
pub struct UnknownIdFormat(pub String);

impl FromStr for IdFormat {
    type Err = UnknownIdFormat;

    /// `uuid4` or `uuid7`, in any case, surrounding blanks ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uuid4" => Ok(IdFormat::Uuid4),
            "uuid7" => Ok(IdFormat::Uuid7),
            _ => Err(UnknownIdFormat(s.to_owned())),
        }
    }
}

/// The status of one order line. Only `Entered` lines may change, to `Cancelled` or `Shipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineStatus {
    Entered,
    Cancelled,
    Shipped,
}

impl LineStatus {
    /// The spelling used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            LineStatus::Entered => "ENTERED",
            LineStatus::Cancelled => "CANCELLED",
            LineStatus::Shipped => "SHIPPED",
        }
    }

    /// Whether a line in this status may move to `next`. Setting the same status again is not a
    /// transition and is refused.
    pub fn can_become(self, next: LineStatus) -> bool {
        matches!(
            (self, next),
            (LineStatus::Entered, LineStatus::Cancelled)
                | (LineStatus::Entered, LineStatus::Shipped)
        )
    }
}

impl fmt::Display for LineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string that is none of `ENTERED`, `CANCELLED`, `SHIPPED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown line status {0:?}: expected ENTERED, CANCELLED or SHIPPED")]
pub struct UnknownLineStatus(pub String);

impl FromStr for LineStatus {
    type Err = UnknownLineStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ENTERED" => Ok(LineStatus::Entered),
            "CANCELLED" => Ok(LineStatus::Cancelled),
            "SHIPPED" => Ok(LineStatus::Shipped),
            other => Err(UnknownLineStatus(other.to_owned())),
        }
    }
}

/// One line of a created order, as carried by [`OrderCreated`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineItem {
    pub id: Uuid,
    pub item: String,
    pub quantity: i32,
    /// Serialized as a JSON number (`39.98`), as the original system does.
    #[serde(with = "rust_decimal::serde::float")]
    pub total_price: Decimal,
    pub status: LineStatus,
}

/// A new order with all of its lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub id: Uuid,
    pub customer_id: i32,
    #[serde(with = "utc_millis")]
    pub order_date: DateTime<Utc>,
    pub line_items: Vec<OrderLineItem>,
}

/// One order line changed status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineUpdated {
    pub order_id: Uuid,
    pub order_line_id: Uuid,
    pub new_status: LineStatus,
    pub old_status: LineStatus,
}

/// Every event of the order aggregate, tagged by `eventType`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "eventType")]
pub enum OrderEvent {
    OrderCreated(OrderCreated),
    OrderLineUpdated(OrderLineUpdated),
}

impl OrderEvent {
    /// The value of `eventType`, also the outbox `type` column.
    pub fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderCreated(_) => "OrderCreated",
            OrderEvent::OrderLineUpdated(_) => "OrderLineUpdated",
        }
    }

    /// The id of the order the event belongs to: the outbox `aggregate_id`.
    pub fn order_id(&self) -> Uuid {
        match self {
            OrderEvent::OrderCreated(created) => created.id,
            OrderEvent::OrderLineUpdated(updated) => updated.order_id,
        }
    }
}

/// What the outbox needs to know about an event to store it. Implemented by [`OrderEvent`]; any
/// other service can implement it for its own events.
pub trait DomainEvent: Serialize {
    /// Routes the event: `order` goes to exchange `order.events` with the default settings.
    fn aggregate_type(&self) -> &str;
    /// Identifies the aggregate instance; events of one aggregate keep their commit order.
    fn aggregate_id(&self) -> String;
    /// The event's kind, e.g. `OrderCreated`.
    fn event_type(&self) -> &str;
}

impl DomainEvent for OrderEvent {
    fn aggregate_type(&self) -> &str {
        ORDER_AGGREGATE_TYPE
    }

    fn aggregate_id(&self) -> String {
        self.order_id().to_string()
    }

    fn event_type(&self) -> &str {
        OrderEvent::event_type(self)
    }
}

/// Serde for `DateTime<Utc>` as `2024-01-01T12:00:00.000Z`. Reading accepts any RFC 3339 offset
/// and a timestamp without offset, taken as UTC.
pub mod utc_millis {
    use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// Parses an RFC 3339 timestamp, or one without offset (taken as UTC).
    pub fn parse(text: &str) -> Result<DateTime<Utc>, String> {
        if let Ok(with_offset) = DateTime::parse_from_rfc3339(text) {
            return Ok(with_offset.with_timezone(&Utc));
        }
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|naive| naive.and_utc())
            .map_err(|_| {
                format!("invalid timestamp {text:?}: expected ISO 8601 such as 2024-01-01T12:00:00 or 2024-01-01T12:00:00Z")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_created_has_the_original_shape() {
        let event = OrderEvent::OrderCreated(OrderCreated {
            id: Uuid::nil(),
            customer_id: 3,
            order_date: utc_millis::parse("2024-01-01T12:00:00").unwrap(),
            line_items: vec![OrderLineItem {
                id: Uuid::nil(),
                item: "Debezium in Action".into(),
                quantity: 2,
                total_price: Decimal::new(3998, 2),
                status: LineStatus::Entered,
            }],
        });
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            value,
            json!({
                "eventType": "OrderCreated",
                "id": "00000000-0000-0000-0000-000000000000",
                "customerId": 3,
                "orderDate": "2024-01-01T12:00:00.000Z",
                "lineItems": [{
                    "id": "00000000-0000-0000-0000-000000000000",
                    "item": "Debezium in Action",
                    "quantity": 2,
                    "totalPrice": 39.98,
                    "status": "ENTERED"
                }]
            })
        );
        let back: OrderEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn order_line_updated_round_trips() {
        let text = r#"{"eventType":"OrderLineUpdated","orderId":"0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5","orderLineId":"7c6d5e4f-3a2b-4c1d-9e8f-7a6b5c4d3e2f","newStatus":"CANCELLED","oldStatus":"ENTERED"}"#;
        let event: OrderEvent = serde_json::from_str(text).unwrap();
        assert_eq!(event.event_type(), "OrderLineUpdated");
        assert_eq!(event.aggregate_id(), "0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5");
        let again: OrderEvent =
            serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn timestamps_with_and_without_offset() {
        let plain = utc_millis::parse("2024-01-01T12:00:00").unwrap();
        let offset = utc_millis::parse("2024-01-01T14:00:00+02:00").unwrap();
        assert_eq!(plain, offset);
        assert!(utc_millis::parse("yesterday").is_err());
    }

    #[test]
    fn id_formats() {
        assert_eq!(IdFormat::default(), IdFormat::Uuid4);
        assert_eq!(IdFormat::Uuid4.new_id().get_version_num(), 4);
        assert_eq!(IdFormat::Uuid7.new_id().get_version_num(), 7);
        assert_eq!(" UUID7 ".parse::<IdFormat>().unwrap(), IdFormat::Uuid7);
        assert_eq!("uuid4".parse::<IdFormat>().unwrap(), IdFormat::Uuid4);
        for bad in ["", "v4", "uuid", "uuid1", "ulid"] {
            assert!(bad.parse::<IdFormat>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_entered_lines_change() {
        use LineStatus::*;
        assert!(Entered.can_become(Cancelled));
        assert!(Entered.can_become(Shipped));
        for (from, to) in [
            (Entered, Entered),
            (Cancelled, Entered),
            (Cancelled, Shipped),
            (Shipped, Cancelled),
            (Shipped, Shipped),
        ] {
            assert!(!from.can_become(to), "{from} -> {to}");
        }
        assert_eq!("SHIPPED".parse::<LineStatus>().unwrap(), Shipped);
        assert!("shipped".parse::<LineStatus>().is_err());
    }
}
