//! The audit after the load stopped and the system drained, read from the databases (the
//! order-service's tables are the truth) and the broker:
//!
//! - every order the API acknowledged is committed, and every acknowledged cancel too;
//! - every committed order has exactly one shipment, and no shipment exists for an order that
//!   was never committed;
//! - every line of every shipment has the status of its committed order line, so every
//!   committed update was applied and, per order, in commit order (a cancel applied before
//!   its order's creation, then overwritten, would leave the line ENTERED); the shipment's
//!   status follows its lines;
//! - per order, the events were applied (`consumed_message.applied_order`) in their commit
//!   order (the outbox rows' `timestamp`: the load sends an order's cancel only after its
//!   create was answered);
//! - every committed outbox event was consumed (recorded in `consumed_message`), and nothing
//!   else was; no update is left parked; nothing was dead-lettered; the queue is empty.

use std::collections::{HashMap, HashSet};
use std::fmt;

use anyhow::{Context, Result};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::LoadOutcome;

/// The queue the shipment-service consumes, and its dead-letter queue.
pub const ORDER_QUEUE: &str = "shipment.orders";
pub const DEAD_LETTER_QUEUE: &str = "shipment.orders.dlq";

/// Counts and findings of one audit.
#[derive(Debug, Default)]
pub struct Audit {
    pub orders: usize,
    pub order_lines: usize,
    pub events: usize,
    pub order_created_events: usize,
    pub line_updated_events: usize,
    pub shipments: usize,
    pub cancelled_lines: usize,
    /// Orders the API answered 201 for that are not in the orders database.
    pub acknowledged_orders_missing: usize,
    /// Cancels the API answered 200 for whose line is not CANCELLED in the orders database.
    pub acknowledged_cancels_missing: usize,
    pub orders_without_shipment: usize,
    pub shipments_without_order: usize,
    /// Shipments beyond the first of an order.
    pub extra_shipments: usize,
    /// Committed order lines with no shipment line (their order has a shipment).
    pub lines_missing: usize,
    /// Shipment lines with no committed order line.
    pub lines_unknown: usize,
    /// Shipment lines whose status differs from the committed one.
    pub lines_not_in_committed_state: usize,
    /// Shipments whose status does not follow from their lines.
    pub shipment_status_wrong: usize,
    /// Committed outbox events never consumed.
    pub events_lost: usize,
    /// Consumed event ids that no committed outbox event has.
    pub events_unknown: usize,
    /// Orders whose events were applied in another order than they were committed.
    pub applied_out_of_order: usize,
    pub parked_updates_left: i64,
    pub dead_lettered: u32,
    pub queue_left: u32,
    /// A few examples of each finding, for the failure message.
    pub examples: Vec<String>,
}

impl Audit {
    /// Events applied more than once: a second shipment for an order, or a redelivery the
    /// consumer refused (dead-lettered) instead of recognising it.
    pub fn applied_twice(&self) -> usize {
        self.extra_shipments + self.dead_lettered as usize
    }

    /// Every violated guarantee, in words; empty when the run lost and duplicated nothing.
    /// The per-order apply order is reported and asserted apart (`applied_out_of_order`):
    /// only the long runs require it (see the cluster suite).
    pub fn problems(&self) -> Vec<String> {
        let checks = [
            (
                self.acknowledged_orders_missing,
                "orders acknowledged (201) but not committed",
            ),
            (
                self.acknowledged_cancels_missing,
                "cancels acknowledged (200) but not committed",
            ),
            (
                self.orders_without_shipment,
                "committed orders without a shipment",
            ),
            (
                self.shipments_without_order,
                "shipments for orders never committed",
            ),
            (self.extra_shipments, "shipments beyond one per order"),
            (
                self.lines_missing,
                "committed order lines missing from their shipment",
            ),
            (
                self.lines_unknown,
                "shipment lines for order lines never committed",
            ),
            (
                self.lines_not_in_committed_state,
                "shipment lines not in their committed state (update lost or applied out of order)",
            ),
            (
                self.shipment_status_wrong,
                "shipments whose status does not follow their lines",
            ),
            (self.events_lost, "committed events never consumed (lost)"),
            (
                self.events_unknown,
                "consumed events that were never committed",
            ),
            (
                usize::try_from(self.parked_updates_left).unwrap_or(usize::MAX),
                "line updates still parked",
            ),
            (self.dead_lettered as usize, "messages dead-lettered"),
            (self.queue_left as usize, "messages left in the queue"),
        ];
        checks
            .into_iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, what)| format!("{count} {what}"))
            .collect()
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < 20 {
            self.examples.push(text);
        }
    }
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  database: {} orders ({} lines, {} cancelled), {} events ({} OrderCreated, {} OrderLineUpdated), {} shipments",
            self.orders,
            self.order_lines,
            self.cancelled_lines,
            self.events,
            self.order_created_events,
            self.line_updated_events,
            self.shipments
        )?;
        write!(
            f,
            "  events lost: {}; applied twice: {}; applied out of order: {}; dead-lettered: {}; parked updates left: {}",
            self.events_lost,
            self.applied_twice(),
            self.applied_out_of_order,
            self.dead_lettered,
            self.parked_updates_left
        )
    }
}

/// A small pool on a private database (the suite's own reads).
pub async fn connect(url: &str) -> Result<PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect(url)
        .await
        .context("connecting to the private PostgreSQL")
}

/// Rows in `table`, `None` while the database does not answer.
pub async fn count(pool: &PgPool, table: &str) -> Option<i64> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .ok()
}

/// Reads both databases and the broker and checks every guarantee; `work_queues` are the
/// queues the shipment-service consumes (one, or its partitions).
pub async fn run(
    orders_db: &PgPool,
    shipments_db: &PgPool,
    amqp_url: &str,
    work_queues: &[String],
    load: &LoadOutcome,
) -> Result<Audit> {
    let mut audit = Audit::default();

    let orders: HashSet<Uuid> = sqlx::query_scalar("SELECT id FROM orders.purchase_order")
        .fetch_all(orders_db)
        .await
        .context("reading the committed orders")?
        .into_iter()
        .collect();
    let order_lines: HashMap<Uuid, (Uuid, String)> = sqlx::query_as::<_, (Uuid, Uuid, String)>(
        "SELECT id, order_id, status FROM orders.order_line",
    )
    .fetch_all(orders_db)
    .await
    .context("reading the committed order lines")?
    .into_iter()
    .map(|(id, order_id, status)| (id, (order_id, status)))
    .collect();
    let events: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, type FROM orders.outbox_event")
        .fetch_all(orders_db)
        .await
        .context("reading the committed outbox events")?;

    let shipments: Vec<(Uuid, Uuid, String)> =
        sqlx::query_as("SELECT id, order_id, status FROM shipments.shipment")
            .fetch_all(shipments_db)
            .await
            .context("reading the shipments")?;
    let shipment_lines: Vec<(Uuid, Uuid, String)> =
        sqlx::query_as("SELECT order_line_id, shipment_id, status FROM shipments.shipment_line")
            .fetch_all(shipments_db)
            .await
            .context("reading the shipment lines")?;
    let consumed: HashSet<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM shipments.consumed_message")
            .fetch_all(shipments_db)
            .await
            .context("reading the consumed event ids")?
            .into_iter()
            .collect();
    audit.parked_updates_left =
        sqlx::query_scalar("SELECT count(*) FROM shipments.pending_line_update")
            .fetch_one(shipments_db)
            .await
            .context("counting the parked line updates")?;

    audit.orders = orders.len();
    audit.order_lines = order_lines.len();
    audit.cancelled_lines = order_lines
        .values()
        .filter(|(_, status)| status == "CANCELLED")
        .count();
    audit.events = events.len();
    audit.order_created_events = events
        .iter()
        .filter(|(_, kind)| kind == "OrderCreated")
        .count();
    audit.line_updated_events = events
        .iter()
        .filter(|(_, kind)| kind == "OrderLineUpdated")
        .count();
    audit.shipments = shipments.len();

    // What the API acknowledged is committed.
    for order_id in &load.acknowledged_orders {
        if !orders.contains(order_id) {
            audit.acknowledged_orders_missing += 1;
            audit.example(format!(
                "order {order_id} was acknowledged but is not committed"
            ));
        }
    }
    for line_id in &load.acknowledged_cancels {
        let status = order_lines.get(line_id).map(|(_, status)| status.as_str());
        if status != Some("CANCELLED") {
            audit.acknowledged_cancels_missing += 1;
            audit.example(format!(
                "cancel of line {line_id} was acknowledged but the line is {status:?}"
            ));
        }
    }

    // One shipment per committed order, none for anything else.
    let mut shipment_of_order: HashMap<Uuid, Uuid> = HashMap::new();
    let mut order_of_shipment: HashMap<Uuid, Uuid> = HashMap::new();
    let mut shipment_status: HashMap<Uuid, String> = HashMap::new();
    for (shipment_id, order_id, status) in &shipments {
        if shipment_of_order.insert(*order_id, *shipment_id).is_some() {
            audit.extra_shipments += 1;
            audit.example(format!("order {order_id} has more than one shipment"));
        }
        if !orders.contains(order_id) {
            audit.shipments_without_order += 1;
            audit.example(format!(
                "shipment {shipment_id} is for order {order_id}, never committed"
            ));
        }
        order_of_shipment.insert(*shipment_id, *order_id);
        shipment_status.insert(*shipment_id, status.clone());
    }
    for order_id in &orders {
        if !shipment_of_order.contains_key(order_id) {
            audit.orders_without_shipment += 1;
            audit.example(format!("committed order {order_id} has no shipment"));
        }
    }

    // Every line in its committed state; each shipment's status follows its lines.
    let mut statuses_of_shipment: HashMap<Uuid, Vec<String>> = HashMap::new();
    let mut seen_lines: HashSet<Uuid> = HashSet::new();
    for (line_id, shipment_id, status) in &shipment_lines {
        seen_lines.insert(*line_id);
        statuses_of_shipment
            .entry(*shipment_id)
            .or_default()
            .push(status.clone());
        match order_lines.get(line_id) {
            None => {
                audit.lines_unknown += 1;
                audit.example(format!(
                    "shipment line {line_id} has no committed order line"
                ));
            }
            Some((order_id, committed)) => {
                if order_of_shipment.get(shipment_id) != Some(order_id) {
                    audit.lines_unknown += 1;
                    audit.example(format!(
                        "shipment line {line_id} sits in another order's shipment"
                    ));
                } else if committed != status {
                    audit.lines_not_in_committed_state += 1;
                    audit.example(format!(
                        "line {line_id} of order {order_id} is {status} in its shipment, {committed} in the order"
                    ));
                }
            }
        }
    }
    for (line_id, (order_id, _)) in &order_lines {
        if shipment_of_order.contains_key(order_id) && !seen_lines.contains(line_id) {
            audit.lines_missing += 1;
            audit.example(format!(
                "line {line_id} of order {order_id} is missing from its shipment"
            ));
        }
    }
    for (shipment_id, status) in &shipment_status {
        let lines = statuses_of_shipment
            .get(shipment_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let expected = expected_shipment_status(lines);
        if status != expected {
            audit.shipment_status_wrong += 1;
            audit.example(format!(
                "shipment {shipment_id} is {status}, its lines say {expected}"
            ));
        }
    }

    // Every committed event consumed, nothing else.
    let committed_ids: HashSet<Uuid> = events.iter().map(|(id, _)| *id).collect();
    for (event_id, kind) in &events {
        if !consumed.contains(event_id) {
            audit.events_lost += 1;
            audit.example(format!(
                "{kind} event {event_id} was committed but never consumed"
            ));
        }
    }
    for event_id in &consumed {
        if !committed_ids.contains(event_id) {
            audit.events_unknown += 1;
            audit.example(format!("event {event_id} was consumed but never committed"));
        }
    }

    // Per order, the applied order follows the commit order.
    let committed_order: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT aggregate_id, id FROM orders.outbox_event ORDER BY aggregate_id, \"timestamp\"",
    )
    .fetch_all(orders_db)
    .await
    .context("reading the commit order of the events")?;
    let applied_at: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, Option<i64>)>(
        "SELECT event_id, applied_order FROM shipments.consumed_message",
    )
    .fetch_all(shipments_db)
    .await
    .context("reading the order events were applied in")?
    .into_iter()
    .filter_map(|(id, order)| Some((id, order?)))
    .collect();
    let mut previous: Option<(&str, i64)> = None;
    let mut flagged: HashSet<&str> = HashSet::new();
    for (aggregate, event_id) in &committed_order {
        let Some(&applied) = applied_at.get(event_id) else {
            continue;
        };
        if let Some((last_aggregate, last_applied)) = previous
            && last_aggregate == aggregate
            && applied < last_applied
            && flagged.insert(aggregate)
        {
            audit.applied_out_of_order += 1;
            audit.example(format!(
                "order {aggregate}: event {event_id} was applied before an event committed earlier"
            ));
        }
        previous = Some((aggregate, applied));
    }

    audit.queue_left = 0;
    for queue in work_queues {
        audit.queue_left += queue_depth(amqp_url, queue).await?;
    }
    audit.dead_lettered = queue_depth(amqp_url, DEAD_LETTER_QUEUE).await?;
    Ok(audit)
}

/// The shipment-service's rule: any ENTERED line (or none) → PENDING; else any SHIPPED →
/// SHIPPED; else CANCELLED.
fn expected_shipment_status(lines: &[String]) -> &'static str {
    if lines.is_empty() || lines.iter().any(|status| status == "ENTERED") {
        "PENDING"
    } else if lines.iter().any(|status| status == "SHIPPED") {
        "SHIPPED"
    } else {
        "CANCELLED"
    }
}

/// Messages ready in `queue` right now (passive declare), straight from the broker.
pub async fn queue_depth(amqp_url: &str, queue: &str) -> Result<u32> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .context("connecting to the private RabbitMQ")?;
    let channel = connection.create_channel().await?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("reading the depth of {queue}"));
    let _ = connection.close(200, "audit done".into()).await;
    Ok(declared?.message_count())
}

/// Breaks the drained state on purpose, the way a lost event and an update applied out of
/// order would, and audits again: the audit must see both (a control that it can fail).
/// Order A loses its shipment and the record of its OrderCreated; a cancelled line of order B
/// goes back to ENTERED in its shipment, and B's cancel moves before its create in the
/// applied order.
pub async fn tamper_and_audit_again(
    orders_db: &PgPool,
    shipments_db: &PgPool,
    amqp_url: &str,
    work_queues: &[String],
    load: &LoadOutcome,
) -> Result<Audit> {
    let (line_id, order_b): (Uuid, Uuid) = sqlx::query_as(
        "SELECT id, order_id FROM orders.order_line WHERE status = 'CANCELLED' LIMIT 1",
    )
    .fetch_one(orders_db)
    .await
    .context("finding a cancelled line")?;
    let (order_a, created_event): (Uuid, Uuid) = sqlx::query_as(
        "SELECT o.id, e.id FROM orders.purchase_order o \
         JOIN orders.outbox_event e ON e.aggregate_id = o.id::text AND e.type = 'OrderCreated' \
         WHERE o.id <> $1 LIMIT 1",
    )
    .bind(order_b)
    .fetch_one(orders_db)
    .await
    .context("finding an order and its OrderCreated event")?;
    let mut tx = shipments_db.begin().await?;
    sqlx::query("DELETE FROM shipments.shipment WHERE order_id = $1")
        .bind(order_a)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM shipments.consumed_message WHERE event_id = $1")
        .bind(created_event)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE shipments.shipment_line SET status = 'ENTERED' WHERE order_line_id = $1")
        .bind(line_id)
        .execute(&mut *tx)
        .await?;
    // Order B's cancel goes before its create in the applied order.
    let cancel_event: Uuid = sqlx::query_scalar(
        "SELECT id FROM orders.outbox_event WHERE aggregate_id = $1 AND type = 'OrderLineUpdated' \
         LIMIT 1",
    )
    .bind(order_b.to_string())
    .fetch_one(orders_db)
    .await
    .context("finding the cancel event of the order")?;
    sqlx::query("UPDATE shipments.consumed_message SET applied_order = -1 WHERE event_id = $1")
        .bind(cancel_event)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    run(orders_db, shipments_db, amqp_url, work_queues, load).await
}
