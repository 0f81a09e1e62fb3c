//! The order model: requests parsed into checked values at the edge, and the order as stored
//! and answered.
//!
//! Request bodies are walked as `serde_json::Value` rather than derived, so that every error can
//! name the exact field (`lineItems[1].quantity`) and say what was expected. Once parsed, a
//! [`NewOrder`] or [`StatusChange`] only holds values the database accepts: the handlers and the
//! store never see invalid input.

use chrono::{DateTime, Utc};
use events::{LineStatus, OrderCreated, OrderEvent, OrderLineItem};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::ApiError;

/// At most this many lines in one order.
pub const MAX_LINE_ITEMS: usize = 1000;
/// At most this many characters in an item name.
pub const MAX_ITEM_CHARS: usize = 255;
/// `numeric(12,2)`: below 10^10 with at most two decimals.
const MAX_PRICE_EXCLUSIVE: i64 = 10_000_000_000;

/// A customer id: a positive 32-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerId(i32);

impl CustomerId {
    pub fn value(self) -> i32 {
        self.0
    }
}

/// A line quantity: a positive 32-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub fn value(self) -> i32 {
        self.0
    }
}

/// A line's total price: non-negative, at most two decimals, fits `numeric(12,2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(Decimal);

impl Price {
    pub fn value(self) -> Decimal {
        self.0
    }
}

/// An item name: 1 to [`MAX_ITEM_CHARS`] characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemName(String);

impl ItemName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A valid `POST /orders` request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub customer_id: CustomerId,
    pub order_date: DateTime<Utc>,
    pub line_items: Vec<NewOrderLine>,
}

/// One line of a [`NewOrder`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrderLine {
    pub item: ItemName,
    pub quantity: Quantity,
    pub total_price: Price,
}

/// A valid `PUT /orders/{orderId}/lines/{orderLineId}` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    pub new_status: LineStatus,
}

/// An order as this service writes it, and as `POST /orders` answers it:
/// `{id, customerId, orderDate, lineItems:[{id, item, quantity, totalPrice, status}]}`.
/// Read back, it is a [`StoredOrder`] (same JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Uuid,
    pub customer_id: i32,
    #[serde(with = "events::utc_millis")]
    pub order_date: DateTime<Utc>,
    pub line_items: Vec<OrderLine>,
}

/// One line of an [`Order`]: the line the `OrderCreated` event carries, answered in the same
/// JSON, so the two cannot drift apart.
pub type OrderLine = OrderLineItem;

/// An order as read back from the tables, as `GET` and `PUT` answer it: the shape of [`Order`].
///
/// The original system's `order_line` columns other than `id` are nullable, and rows it wrote
/// may hold NULLs. They are answered as JSON `null`, as the original did, rather than failing
/// the whole order: the rest of the order is still the client's to read, and a line without a
/// status cannot change (409). Orders this service writes never have them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredOrder {
    pub id: Uuid,
    pub customer_id: i32,
    #[serde(with = "events::utc_millis")]
    pub order_date: DateTime<Utc>,
    pub line_items: Vec<StoredLine>,
}

/// One line of a [`StoredOrder`]; `None` where the column is NULL.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredLine {
    pub id: Uuid,
    pub item: Option<String>,
    pub quantity: Option<i32>,
    #[serde(with = "rust_decimal::serde::float_option")]
    pub total_price: Option<Decimal>,
    pub status: Option<LineStatus>,
}

impl Order {
    /// The `OrderCreated` event announcing this order.
    pub fn created_event(&self) -> OrderEvent {
        OrderEvent::OrderCreated(OrderCreated {
            id: self.id,
            customer_id: self.customer_id,
            order_date: self.order_date,
            line_items: self.line_items.clone(),
        })
    }
}

impl NewOrder {
    /// Checks a `POST /orders` body. Unknown members are refused, so a misspelt field is not
    /// silently dropped.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let object = as_object(body, "")?;
        reject_unknown(object, "", &["customerId", "orderDate", "lineItems"])?;

        let customer_id = CustomerId(positive_i32(object, "", "customerId")?);
        let order_date = match required(object, "", "orderDate")? {
            Value::String(text) => events::utc_millis::parse(text).map_err(|reason| {
                ApiError::invalid_field("orderDate", format!("orderDate: {reason}"))
            })?,
            other => {
                return Err(wrong_type(
                    "orderDate",
                    "an ISO 8601 timestamp string",
                    other,
                ));
            }
        };
        let lines = match required(object, "", "lineItems")? {
            Value::Array(lines) => lines,
            other => return Err(wrong_type("lineItems", "an array of line items", other)),
        };
        if lines.is_empty() {
            return Err(ApiError::invalid_field(
                "lineItems",
                "lineItems must hold at least one line",
            ));
        }
        if lines.len() > MAX_LINE_ITEMS {
            return Err(ApiError::invalid_field(
                "lineItems",
                format!(
                    "lineItems holds {} lines; at most {MAX_LINE_ITEMS} are accepted",
                    lines.len()
                ),
            ));
        }
        let line_items = lines
            .iter()
            .enumerate()
            .map(|(index, line)| NewOrderLine::parse(line, &format!("lineItems[{index}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            customer_id,
            order_date,
            line_items,
        })
    }
}

impl NewOrderLine {
    fn parse(value: &Value, path: &str) -> Result<Self, ApiError> {
        let object = as_object(value, path)?;
        reject_unknown(object, path, &["item", "quantity", "totalPrice"])?;
        let item_path = join(path, "item");
        let item = match required(object, path, "item")? {
            Value::String(text) => ItemName::parse(text, &item_path)?,
            other => return Err(wrong_type(&item_path, "a string", other)),
        };
        let quantity = Quantity(positive_i32(object, path, "quantity")?);
        let price_path = join(path, "totalPrice");
        let total_price = match required(object, path, "totalPrice")? {
            Value::Number(number) => Price::parse(number, &price_path)?,
            other => return Err(wrong_type(&price_path, "a number", other)),
        };
        Ok(Self {
            item,
            quantity,
            total_price,
        })
    }
}

impl ItemName {
    fn parse(text: &str, path: &str) -> Result<Self, ApiError> {
        if text.trim().is_empty() {
            return Err(ApiError::invalid_field(
                path,
                format!("{path} must not be empty"),
            ));
        }
        let length = text.chars().count();
        if length > MAX_ITEM_CHARS {
            return Err(ApiError::invalid_field(
                path,
                format!("{path} has {length} characters; at most {MAX_ITEM_CHARS} are accepted"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                path,
                format!("{path} must not contain control characters"),
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

impl Price {
    fn parse(number: &serde_json::Number, path: &str) -> Result<Self, ApiError> {
        let out_of_range = || {
            ApiError::invalid_field(
                path,
                format!(
                    "{path} is {number}; expected a number from 0 to 9999999999.99 with at most two decimals"
                ),
            )
        };
        // serde_json prints the shortest text that reads back as the same number, so `39.98`
        // arrives here as "39.98" and is parsed exactly, without binary floating-point error.
        let text = number.to_string();
        let decimal = Decimal::from_str_exact(&text)
            .or_else(|_| Decimal::from_scientific(&text))
            .map_err(|_| out_of_range())?
            .normalize();
        if decimal.is_sign_negative() && !decimal.is_zero() {
            return Err(ApiError::invalid_field(
                path,
                format!("{path} is {number}; it must not be negative"),
            ));
        }
        if decimal.scale() > 2 || decimal >= Decimal::from(MAX_PRICE_EXCLUSIVE) {
            return Err(out_of_range());
        }
        let mut exact = decimal.abs();
        exact.rescale(2);
        Ok(Self(exact))
    }
}

impl StatusChange {
    /// Checks a `PUT /orders/{orderId}/lines/{orderLineId}` body: `{"newStatus": "CANCELLED"}`.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let object = as_object(body, "")?;
        reject_unknown(object, "", &["newStatus"])?;
        let new_status = match required(object, "", "newStatus")? {
            Value::String(text) => text.parse::<LineStatus>().map_err(|_| {
                ApiError::invalid_field(
                    "newStatus",
                    format!(
                        "newStatus {text:?} is unknown: expected ENTERED, CANCELLED or SHIPPED"
                    ),
                )
            })?,
            other => return Err(wrong_type("newStatus", "a status string", other)),
        };
        Ok(Self { new_status })
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn as_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ApiError> {
    value.as_object().ok_or_else(|| {
        let what = if path.is_empty() { "the body" } else { path };
        ApiError::InvalidField {
            field: if path.is_empty() {
                "$".to_owned()
            } else {
                path.to_owned()
            },
            message: format!("{what} must be a JSON object, got {}", type_name(value)),
        }
    })
}

fn reject_unknown(object: &Map<String, Value>, path: &str, known: &[&str]) -> Result<(), ApiError> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => {
            let field = join(path, key);
            Err(ApiError::invalid_field(
                field.clone(),
                format!(
                    "{field} is not a known field: expected {}",
                    known.join(", ")
                ),
            ))
        }
    }
}

fn required<'a>(
    object: &'a Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<&'a Value, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => {
            let field = join(path, name);
            Err(ApiError::invalid_field(
                field.clone(),
                format!("{field} is required"),
            ))
        }
        Some(value) => Ok(value),
    }
}

fn positive_i32(object: &Map<String, Value>, path: &str, name: &str) -> Result<i32, ApiError> {
    let field = join(path, name);
    let value = required(object, path, name)?;
    let expected = || {
        ApiError::invalid_field(
            field.clone(),
            format!("{field} must be an integer from 1 to 2147483647, got {value}"),
        )
    };
    match value {
        Value::Number(number) => number
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(expected),
        other => Err(wrong_type(&field, "an integer", other)),
    }
}

fn wrong_type(field: &str, expected: &str, found: &Value) -> ApiError {
    ApiError::invalid_field(
        field,
        format!("{field} must be {expected}, got {}", type_name(found)),
    )
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(result: Result<NewOrder, ApiError>) -> String {
        match result {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn order_with_line(line: Value) -> Value {
        json!({"customerId": 3, "orderDate": "2024-01-01T12:00:00", "lineItems": [line]})
    }

    #[test]
    fn the_sample_request_parses() {
        let body = json!({"customerId":3,"orderDate":"2024-01-01T12:00:00","lineItems":[{"item":"Debezium in Action","quantity":2,"totalPrice":39.98},{"item":"Debezium for Dummies","quantity":1,"totalPrice":29.99}]});
        let order = NewOrder::parse(&body).unwrap();
        assert_eq!(order.customer_id.value(), 3);
        assert_eq!(order.line_items.len(), 2);
        assert_eq!(
            order.line_items[0].total_price.value(),
            Decimal::new(3998, 2)
        );
        assert_eq!(order.line_items[1].quantity.value(), 1);
        assert_eq!(order.line_items[1].item.as_str(), "Debezium for Dummies");
    }

    #[test]
    fn prices_are_exact() {
        for (input, cents) in [
            (json!(39.98), 3998),
            (json!(0), 0),
            (json!(0.1), 10),
            (json!(-0.0), 0),
            (json!(40), 4000),
            (json!(9999999999.99), 999_999_999_999i64),
        ] {
            let order = NewOrder::parse(&order_with_line(
                json!({"item":"x","quantity":1,"totalPrice":input}),
            ))
            .unwrap();
            assert_eq!(
                order.line_items[0].total_price.value(),
                Decimal::new(cents, 2),
                "{input}"
            );
        }
        for bad in [
            json!(-0.01),
            json!(1.001),
            json!(10000000000.0),
            json!(1e300),
            json!(1e-7),
            json!("39.98"),
        ] {
            let field = field_of(NewOrder::parse(&order_with_line(
                json!({"item":"x","quantity":1,"totalPrice":bad}),
            )));
            assert_eq!(field, "lineItems[0].totalPrice", "{bad}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (json!([]), "$"),
            (
                json!({"orderDate":"2024-01-01T12:00:00","lineItems":[]}),
                "customerId",
            ),
            (
                json!({"customerId":0,"orderDate":"2024-01-01T12:00:00","lineItems":[]}),
                "customerId",
            ),
            (
                json!({"customerId":2147483648i64,"orderDate":"2024-01-01T12:00:00","lineItems":[]}),
                "customerId",
            ),
            (
                json!({"customerId":"3","orderDate":"2024-01-01T12:00:00","lineItems":[]}),
                "customerId",
            ),
            (
                json!({"customerId":3.5,"orderDate":"2024-01-01T12:00:00","lineItems":[]}),
                "customerId",
            ),
            (
                json!({"customerId":3,"orderDate":"yesterday","lineItems":[]}),
                "orderDate",
            ),
            (
                json!({"customerId":3,"orderDate":20240101,"lineItems":[]}),
                "orderDate",
            ),
            (
                json!({"customerId":3,"orderDate":"2024-01-01T12:00:00","lineItems":[]}),
                "lineItems",
            ),
            (
                json!({"customerId":3,"orderDate":"2024-01-01T12:00:00","lineItems":{}}),
                "lineItems",
            ),
            (
                json!({"customerId":3,"orderDate":"2024-01-01T12:00:00"}),
                "lineItems",
            ),
            (
                json!({"customerId":3,"orderDate":"2024-01-01T12:00:00","lineItems":[1]}),
                "lineItems[0]",
            ),
            (
                json!({"customerId":3,"orderDate":"2024-01-01T12:00:00","lineItems":[], "extra": 1}),
                "extra",
            ),
            (
                order_with_line(json!({"item":"","quantity":1,"totalPrice":1})),
                "lineItems[0].item",
            ),
            (
                order_with_line(json!({"item":"  ","quantity":1,"totalPrice":1})),
                "lineItems[0].item",
            ),
            (
                order_with_line(json!({"item":"a\u{0}b","quantity":1,"totalPrice":1})),
                "lineItems[0].item",
            ),
            (
                order_with_line(json!({"item":"x".repeat(256),"quantity":1,"totalPrice":1})),
                "lineItems[0].item",
            ),
            (
                order_with_line(json!({"item":7,"quantity":1,"totalPrice":1})),
                "lineItems[0].item",
            ),
            (
                order_with_line(json!({"item":"x","quantity":0,"totalPrice":1})),
                "lineItems[0].quantity",
            ),
            (
                order_with_line(json!({"item":"x","quantity":-1,"totalPrice":1})),
                "lineItems[0].quantity",
            ),
            (
                order_with_line(json!({"item":"x","quantity":null,"totalPrice":1})),
                "lineItems[0].quantity",
            ),
            (
                order_with_line(json!({"item":"x","quantity":1})),
                "lineItems[0].totalPrice",
            ),
            (
                order_with_line(json!({"item":"x","quantity":1,"totalPrice":1,"status":"SHIPPED"})),
                "lineItems[0].status",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(field_of(NewOrder::parse(&body)), expected, "{body}");
        }
        let long_but_fine = "é".repeat(MAX_ITEM_CHARS);
        assert!(
            NewOrder::parse(&order_with_line(
                json!({"item": long_but_fine, "quantity": 1, "totalPrice": 1})
            ))
            .is_ok()
        );
    }

    #[test]
    fn line_count_is_bounded() {
        let line = json!({"item":"x","quantity":1,"totalPrice":1});
        let body = |n: usize| json!({"customerId":3,"orderDate":"2024-01-01T12:00:00","lineItems": vec![line.clone(); n]});
        assert!(NewOrder::parse(&body(MAX_LINE_ITEMS)).is_ok());
        assert_eq!(
            field_of(NewOrder::parse(&body(MAX_LINE_ITEMS + 1))),
            "lineItems"
        );
    }

    #[test]
    fn status_changes() {
        assert_eq!(
            StatusChange::parse(&json!({"newStatus":"CANCELLED"}))
                .unwrap()
                .new_status,
            LineStatus::Cancelled
        );
        for bad in [
            json!({"newStatus":"cancelled"}),
            json!({"newStatus":"LOST"}),
            json!({"newStatus":1}),
            json!({}),
            json!({"newStatus":"SHIPPED","oldStatus":"ENTERED"}),
        ] {
            assert!(
                matches!(
                    StatusChange::parse(&bad),
                    Err(ApiError::InvalidField { .. })
                ),
                "{bad}"
            );
        }
    }
}
