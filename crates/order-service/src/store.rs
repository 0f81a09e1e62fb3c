//! The order tables: every SQL statement of the service, each state change together with its
//! outbox event in one transaction.
//!
//! Table names are unqualified: the pool's connections have `search_path` set to `DB_SCHEMA`.
//! All values are bound as parameters.
//!
//! Every statement works on our tables and on the original system's (adopted at start-up), whose
//! types differ: `timestamp` without time zone (UTC wall time; the session's `TimeZone` is UTC,
//! so PostgreSQL converts our `timestamptz` binds on assignment, and reads cast explicitly
//! because sqlx decodes strictly), `varchar(255)` text, and nullable line columns, read into
//! [`StoredOrder`]'s optional fields.

use chrono::{DateTime, Utc};
use events::{IdFormat, LineStatus, OrderEvent, OrderLineUpdated};
use outbox::{Outbox, TraceContext};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{NewOrder, Order, OrderLine, StoredLine, StoredOrder};
use crate::error::ApiError;

/// Reads and writes orders, publishing each change through the outbox.
#[derive(Debug, Clone)]
pub struct OrderStore {
    pool: PgPool,
    outbox: Outbox,
    id_format: IdFormat,
}

/// The outcome of a committed change: the order as it now is, and the event written with it.
#[derive(Debug, Clone)]
pub struct Committed<O> {
    pub order: O,
    pub event_type: &'static str,
}

impl OrderStore {
    /// `id_format` is for the ids of new orders and lines; the outbox has its own setting (the
    /// service gives both the same, `ID_FORMAT`).
    pub fn new(pool: PgPool, outbox: Outbox, id_format: IdFormat) -> Self {
        Self {
            pool,
            outbox,
            id_format,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts the order, its lines (status `ENTERED`) and its `OrderCreated` event in one
    /// transaction.
    /// `trace`: the request's trace context, stored with the event.
    pub async fn create(
        &self,
        new_order: &NewOrder,
        trace: Option<&TraceContext>,
    ) -> Result<Committed<Order>, ApiError> {
        let order = Order {
            id: self.id_format.new_id(),
            customer_id: new_order.customer_id.value(),
            // PostgreSQL keeps microseconds: answer what a later GET will read.
            order_date: truncate_to_micros(new_order.order_date),
            line_items: new_order
                .line_items
                .iter()
                .map(|line| OrderLine {
                    id: self.id_format.new_id(),
                    item: line.item.as_str().to_owned(),
                    quantity: line.quantity.value(),
                    total_price: line.total_price.value(),
                    status: LineStatus::Entered,
                })
                .collect(),
        };
        let event = order.created_event();
        let mut conn = self.pool.acquire().await?;
        write_new_order(&mut conn, &self.outbox, &order, &event, trace).await?;
        Ok(Committed {
            order,
            event_type: event.event_type(),
        })
    }

    /// The order with its lines, or `None`.
    pub async fn find(&self, order_id: Uuid) -> Result<Option<StoredOrder>, ApiError> {
        let mut conn = self.pool.acquire().await?;
        find_order(&mut conn, order_id).await
    }

    /// Moves one line to `new_status` and writes `OrderLineUpdated`, in one transaction.
    ///
    /// The line row is locked (`FOR UPDATE`) before its status is checked, so of two
    /// concurrent changes of an `ENTERED` line the second sees the first one's result and is
    /// refused: never two successes, never an event for a change that did not happen.
    pub async fn change_line_status(
        &self,
        order_id: Uuid,
        line_id: Uuid,
        new_status: LineStatus,
        trace: Option<&TraceContext>,
    ) -> Result<Committed<StoredOrder>, ApiError> {
        let mut tx = self.pool.begin().await?;
        // `status` is nullable in the original system's table.
        let current: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT status FROM order_line WHERE id = $1 AND order_id = $2 FOR UPDATE",
        )
        .bind(line_id)
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((current,)) = current else {
            let order_exists: Option<(i32,)> =
                sqlx::query_as("SELECT 1 FROM purchase_order WHERE id = $1")
                    .bind(order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(match order_exists {
                Some(_) => ApiError::LineNotFound { order_id, line_id },
                None => ApiError::OrderNotFound(order_id),
            });
        };
        let Some(current) = current else {
            return Err(ApiError::LineWithoutStatus {
                line_id,
                requested: new_status,
            });
        };
        let current = parse_status(&current)?;
        if !current.can_become(new_status) {
            return Err(ApiError::StatusConflict {
                line_id,
                current,
                requested: new_status,
            });
        }
        sqlx::query("UPDATE order_line SET status = $1 WHERE id = $2")
            .bind(new_status.as_str())
            .bind(line_id)
            .execute(&mut *tx)
            .await?;
        let event = OrderEvent::OrderLineUpdated(OrderLineUpdated {
            order_id,
            order_line_id: line_id,
            new_status,
            old_status: current,
        });
        self.outbox.enqueue_traced(&mut tx, &event, trace).await?;
        let order = find_order(&mut tx, order_id)
            .await?
            .ok_or(ApiError::OrderNotFound(order_id))?;
        tx.commit().await?;
        Ok(Committed {
            order,
            event_type: event.event_type(),
        })
    }
}

/// The order and its lines as data-modifying CTEs of the outbox's statement
/// ([`Outbox::statement_with`]): parameters from `$7` ([`Outbox::FIRST_CALLER_PARAMETER`]),
/// `$7` being the order id in both.
const NEW_ORDER_WRITES: &str = "\
    new_order AS (INSERT INTO purchase_order (id, customer_id, order_date) VALUES ($7, $8, $9)), \
    new_lines AS (\
        INSERT INTO order_line (id, order_id, item, quantity, total_price, status, position) \
        SELECT line.id, $7, line.item, line.quantity, line.total_price, line.status, \
               line.ordinality - 1 \
        FROM UNNEST($10::uuid[], $11::text[], $12::int4[], $13::numeric[], $14::text[]) \
             WITH ORDINALITY AS line(id, item, quantity, total_price, status, ordinality))";

/// Writes a new order, its lines and its `OrderCreated` event atomically; returns the event id.
///
/// One statement (the order and lines as CTEs of the outbox insert): atomic by itself, one
/// round trip instead of five (`BEGIN`, three inserts, `COMMIT`). Each round trip woke a task
/// on both sides, and those wake-ups were most of the service's CPU per request. An outbox that
/// deletes its rows after inserting them cannot be written in one statement: then a
/// transaction as before.
/// `trace`: the request's trace context, stored with the event (when the outbox has a column).
pub async fn write_new_order(
    conn: &mut PgConnection,
    outbox: &Outbox,
    order: &Order,
    event: &OrderEvent,
    trace: Option<&TraceContext>,
) -> Result<Uuid, outbox::OutboxError> {
    let Some(statement) = outbox.statement_with(NEW_ORDER_WRITES) else {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        insert_order(&mut tx, order).await?;
        let event_id = outbox.enqueue_traced(&mut tx, event, trace).await?;
        tx.commit().await?;
        return Ok(event_id);
    };
    let lines = LineColumns::of(order);
    let (query, event_id) = outbox.bind_event(sqlx::query(&statement), event, trace)?;
    let query = query
        .bind(order.id)
        .bind(order.customer_id)
        .bind(order.order_date);
    lines.bind_to(query).execute(&mut *conn).await?;
    Ok(event_id)
}

/// An order's lines as one array per column, for `UNNEST`.
struct LineColumns<'a> {
    ids: Vec<Uuid>,
    items: Vec<&'a str>,
    quantities: Vec<i32>,
    prices: Vec<rust_decimal::Decimal>,
    statuses: Vec<&'static str>,
}

impl<'a> LineColumns<'a> {
    fn of(order: &'a Order) -> Self {
        let count = order.line_items.len();
        let mut columns = Self {
            ids: Vec::with_capacity(count),
            items: Vec::with_capacity(count),
            quantities: Vec::with_capacity(count),
            prices: Vec::with_capacity(count),
            statuses: Vec::with_capacity(count),
        };
        for line in &order.line_items {
            columns.ids.push(line.id);
            columns.items.push(line.item.as_str());
            columns.quantities.push(line.quantity);
            columns.prices.push(line.total_price);
            columns.statuses.push(line.status.as_str());
        }
        columns
    }

    /// Binds the five arrays, in this order, as the query's next parameters.
    fn bind_to<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.ids)
            .bind(&self.items)
            .bind(&self.quantities)
            .bind(&self.prices)
            .bind(&self.statuses)
    }
}

/// Inserts the order row and all its lines (one statement for the lines, however many), each
/// line with its `position` in `line_items` (0 for the first), by which they are read back.
pub async fn insert_order(conn: &mut PgConnection, order: &Order) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO purchase_order (id, customer_id, order_date) VALUES ($1, $2, $3)")
        .bind(order.id)
        .bind(order.customer_id)
        .bind(order.order_date)
        .execute(&mut *conn)
        .await?;
    let lines = LineColumns::of(order);
    let query = sqlx::query(
        "INSERT INTO order_line (id, order_id, item, quantity, total_price, status, position) \
         SELECT line.id, $1, line.item, line.quantity, line.total_price, line.status, \
                line.ordinality - 1 \
         FROM UNNEST($2::uuid[], $3::text[], $4::int4[], $5::numeric[], $6::text[]) \
              WITH ORDINALITY AS line(id, item, quantity, total_price, status, ordinality)",
    )
    .bind(order.id);
    lines.bind_to(query).execute(&mut *conn).await?;
    Ok(())
}

/// Reads an order and its lines, in request order. Lines written without a position (by the
/// original system, or before positions were stored) come after the others, by id: the
/// original's ids are random, so their order is stable but not the request's.
pub async fn find_order(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<StoredOrder>, ApiError> {
    // `::timestamptz`: a no-op on our column; on the original's `timestamp` column, its UTC wall
    // time read in the session's zone (UTC).
    let header: Option<(Uuid, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, customer_id, order_date::timestamptz FROM purchase_order WHERE id = $1",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, customer_id, order_date)) = header else {
        return Ok(None);
    };
    type LineRow = (
        Uuid,
        Option<String>,
        Option<i32>,
        Option<Decimal>,
        Option<String>,
    );
    let rows: Vec<LineRow> = sqlx::query_as(
        "SELECT id, item, quantity, total_price, status FROM order_line \
         WHERE order_id = $1 ORDER BY position NULLS LAST, id",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    let line_items = rows
        .into_iter()
        .map(|(id, item, quantity, total_price, status)| {
            Ok(StoredLine {
                id,
                item,
                quantity,
                total_price,
                status: status.as_deref().map(parse_status).transpose()?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Some(StoredOrder {
        id,
        customer_id,
        order_date,
        line_items,
    }))
}

fn parse_status(text: &str) -> Result<LineStatus, ApiError> {
    // The table's CHECK constraint allows only the three statuses: anything else is a bug.
    text.parse()
        .map_err(|err| ApiError::Internal(anyhow::Error::new(err).context("order_line.status")))
}

fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = time.timestamp_subsec_nanos();
    time - chrono::Duration::nanoseconds(i64::from(nanos % 1000))
}
