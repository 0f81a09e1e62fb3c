//! Read queries behind the HTTP API: shipments with their lines.
//!
//! They also read the rows the original system wrote: its `order_date` is a nullable
//! `timestamp` (UTC wall time; the session time zone is UTC, so `::timestamptz` reads it right
//! and is a no-op on our timestamptz column); its shipments have no lines, and lines learnt
//! from its updates have no item or quantity.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A shipment as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentView {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: i32,
    /// Null only for a shipment the original system stored without one.
    #[serde(serialize_with = "optional_utc_millis")]
    pub order_date: Option<DateTime<Utc>>,
    pub status: String,
    pub lines: Vec<ShipmentLineView>,
}

/// One line of a shipment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentLineView {
    pub order_line_id: Uuid,
    /// Null for a line known only from an `OrderLineUpdated` (its order came without lines).
    pub item: Option<String>,
    pub quantity: Option<i32>,
    pub status: String,
}

fn optional_utc_millis<S: serde::Serializer>(
    value: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => events::utc_millis::serialize(value, serializer),
        None => serializer.serialize_none(),
    }
}

/// One page of shipments, oldest first, with the total count for the filter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentPage {
    pub items: Vec<ShipmentView>,
    pub page: u32,
    pub size: u32,
    pub total: i64,
}

type ShipmentRow = (Uuid, Uuid, i32, Option<DateTime<Utc>>, String);
/// shipment_id, order_line_id, item, quantity, status.
type LineRow = (Uuid, Uuid, Option<String>, Option<i32>, String);

/// Page `page` (from 0) of `size` shipments, optionally only the one of `order_id`.
pub async fn list(
    pool: &PgPool,
    order_id: Option<Uuid>,
    page: u32,
    size: u32,
) -> Result<ShipmentPage, sqlx::Error> {
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM shipment WHERE $1::uuid IS NULL OR order_id = $1")
            .bind(order_id)
            .fetch_one(pool)
            .await?;
    let rows: Vec<ShipmentRow> = sqlx::query_as(
        "SELECT id, order_id, customer_id, order_date::timestamptz, status FROM shipment \
         WHERE $1::uuid IS NULL OR order_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
    )
    .bind(order_id)
    .bind(i64::from(size))
    .bind(i64::from(page) * i64::from(size))
    .fetch_all(pool)
    .await?;
    let items = with_lines(pool, rows).await?;
    Ok(ShipmentPage {
        items,
        page,
        size,
        total,
    })
}

/// The shipment `id` with its lines, if it exists.
pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<ShipmentView>, sqlx::Error> {
    let row: Option<ShipmentRow> = sqlx::query_as(
        "SELECT id, order_id, customer_id, order_date::timestamptz, status FROM shipment \
         WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(with_lines(pool, row.into_iter().collect())
        .await?
        .into_iter()
        .next())
}

async fn with_lines(
    pool: &PgPool,
    rows: Vec<ShipmentRow>,
) -> Result<Vec<ShipmentView>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|row| row.0).collect();
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT shipment_id, order_line_id, item, quantity, status FROM shipment_line \
         WHERE shipment_id = ANY($1) ORDER BY shipment_id, position",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut views: Vec<ShipmentView> = rows
        .into_iter()
        .map(
            |(id, order_id, customer_id, order_date, status)| ShipmentView {
                id,
                order_id,
                customer_id,
                order_date,
                status,
                lines: Vec::new(),
            },
        )
        .collect();
    for (shipment_id, order_line_id, item, quantity, status) in lines {
        if let Some(view) = views.iter_mut().find(|view| view.id == shipment_id) {
            view.lines.push(ShipmentLineView {
                order_line_id,
                item,
                quantity,
                status,
            });
        }
    }
    Ok(views)
}
