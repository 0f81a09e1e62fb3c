//! The effect of each event on the shipment tables, applied exactly once.
//!
//! The event id goes into `consumed_message` in the same transaction as the effect; a conflict
//! means the event was applied before, so it changes nothing ([`Outcome::Duplicate`]). The
//! caller acks only after the commit.
//!
//! Events already delivered are applied together ([`apply_batch`]; [`apply`] is a batch of one)
//! with a fixed number of statements per batch: lock the orders, record the ids, read the
//! orders' shipments and parked updates, work out every effect in memory in event order, write
//! the changes with `UNNEST` arrays, commit. One commit and a handful of round trips per batch
//! is what lets a backlog drain fast.
//!
//! Effects:
//! - `OrderCreated` → a `shipment` row and a `shipment_line` per order line, then any
//!   `pending_line_update` rows of that order applied in arrival order. Without `lineItems`
//!   (the original producer's shape) the shipment's lines are unknown (`lines_known = false`).
//! - `OrderLineUpdated` → the line takes the new status and the shipment's status is recomputed
//!   ([`ShipmentStatus::of_lines`]). If the order is not here yet, the update is parked in
//!   `pending_line_update` ([`Outcome::Parked`]): no lost update, no requeue loop.
//!   A line the shipment does not know is recorded with its new status (no item, no quantity)
//!   when the shipment's lines are unknown; when they are known (they came with the order), it
//!   contradicts the order and is rejected.
//! - A shipment whose lines are unknown stays PENDING: the lines it heard of may not be all of
//!   them, so their being cancelled or shipped says nothing about the rest
//!   ([`ShipmentStatus::of_shipment`]).
//!
//! Why the outcome does not depend on delivery order: a line changes at most once
//! (ENTERED → CANCELLED or SHIPPED, enforced by the order-service), updates that precede their
//! order are parked and replayed at creation, and duplicates are filtered by event id. Events of
//! one order are also serialized across service instances by a transaction-scoped advisory lock
//! on the order id.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use events::{LineStatus, OrderCreated, OrderLineUpdated};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::event::{EventKind, IncomingEvent};

/// What applying an event did (metric label `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The effect was applied and committed.
    Applied,
    /// The line already had the new status: recorded, nothing else changed.
    Unchanged,
    /// An update for an order not yet here: kept until the order arrives.
    Parked,
    /// The event id was consumed before: nothing changed.
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Parked => "parked",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event contradicts the stored state; retrying cannot help.
    #[error("{0}")]
    Rejected(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The status of a shipment, derived from its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentStatus {
    /// Something is left to ship: a line is ENTERED, or the order came without lines.
    Pending,
    /// Nothing left to ship and at least one line shipped.
    Shipped,
    /// Every line was cancelled.
    Cancelled,
}

impl ShipmentStatus {
    /// The rule: any ENTERED line (or no line) → PENDING; else any SHIPPED → SHIPPED; else
    /// (all CANCELLED) → CANCELLED.
    pub fn of_lines(lines: &[LineStatus]) -> Self {
        if lines.is_empty() || lines.contains(&LineStatus::Entered) {
            ShipmentStatus::Pending
        } else if lines.contains(&LineStatus::Shipped) {
            ShipmentStatus::Shipped
        } else {
            ShipmentStatus::Cancelled
        }
    }

    /// The status of a shipment: [`ShipmentStatus::of_lines`] when `lines_known`, else PENDING
    /// (the lines it heard of may not be all of its lines).
    pub fn of_shipment(lines_known: bool, lines: &[LineStatus]) -> Self {
        if lines_known {
            Self::of_lines(lines)
        } else {
            ShipmentStatus::Pending
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Pending => "PENDING",
            ShipmentStatus::Shipped => "SHIPPED",
            ShipmentStatus::Cancelled => "CANCELLED",
        }
    }
}

impl fmt::Display for ShipmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Applies `event` in one transaction; see the module documentation.
pub async fn apply(pool: &PgPool, event: &IncomingEvent) -> Result<Outcome, ApplyError> {
    let outcomes = apply_batch(pool, std::slice::from_ref(event)).await?;
    outcomes
        .into_iter()
        .next()
        .ok_or_else(|| ApplyError::Rejected("internal error: no outcome for the event".to_owned()))
}

/// Applies `events`, in order, in one transaction, with a fixed number of statements whatever
/// their count: lock the orders, record the ids, read the orders' state, work out every effect
/// in memory, write the changes set-wise, commit. If any event is rejected nothing is
/// committed; the caller then applies them one by one to isolate it.
pub async fn apply_batch(
    pool: &PgPool,
    events: &[IncomingEvent],
) -> Result<Vec<Outcome>, ApplyError> {
    let mut tx = pool.begin().await?;
    let outcomes = apply_in(&mut tx, events).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// The state of one order's shipment during a batch.
#[derive(Debug)]
struct ShipmentState {
    id: Uuid,
    /// Created by this batch (inserted at the end) rather than read from the table.
    is_new: bool,
    /// Whether `lines` are all the order's lines (its OrderCreated listed them).
    lines_known: bool,
    /// In position order; lines learnt from updates come after the order's own.
    lines: Vec<(Uuid, LineStatus)>,
    /// Lines of a stored shipment whose status this batch changed.
    changed_lines: Vec<Uuid>,
    /// Lines a stored shipment learnt of in this batch (to insert).
    recorded_lines: Vec<Uuid>,
}

impl ShipmentState {
    fn status(&self) -> ShipmentStatus {
        let current: Vec<LineStatus> = self.lines.iter().map(|(_, status)| *status).collect();
        ShipmentStatus::of_shipment(self.lines_known, &current)
    }

    /// Applies `update` to the lines and notes what a stored shipment must write.
    fn apply(&mut self, update: &OrderLineUpdated) -> Result<Outcome, String> {
        let change = transition(&mut self.lines, self.lines_known, update)?;
        if !self.is_new {
            match change {
                Change::Recorded => self.recorded_lines.push(update.order_line_id),
                // A line recorded earlier in this batch is inserted with its latest status.
                Change::Applied if !self.recorded_lines.contains(&update.order_line_id) => {
                    self.changed_lines.push(update.order_line_id)
                }
                Change::Applied | Change::Unchanged => {}
            }
        }
        Ok(match change {
            Change::Applied | Change::Recorded => Outcome::Applied,
            Change::Unchanged => Outcome::Unchanged,
        })
    }
}

/// A line update waiting for its order: stored (`stored`) or parked by this batch.
#[derive(Debug)]
struct ParkedUpdate {
    event_id: Uuid,
    update: OrderLineUpdated,
    stored: bool,
}

fn order_id_of(event: &IncomingEvent) -> Uuid {
    match &event.kind {
        EventKind::OrderCreated { order, .. } => order.id,
        EventKind::OrderLineUpdated(updated) => updated.order_id,
    }
}

async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    events: &[IncomingEvent],
) -> Result<Vec<Outcome>, ApplyError> {
    let mut order_ids: Vec<Uuid> = events.iter().map(order_id_of).collect();
    order_ids.sort_unstable();
    order_ids.dedup();
    // Serializes every writer of these orders across service instances; taken in key order so
    // that two instances' batches cannot deadlock on each other.
    let mut keys: Vec<i64> = order_ids.iter().map(|id| advisory_key(*id)).collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(key)) \
         FROM (SELECT key FROM UNNEST($1::bigint[]) AS key ORDER BY key) AS sorted",
    )
    .bind(&keys)
    .execute(&mut **tx)
    .await?;

    let event_ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    let first_seen: HashSet<Uuid> = sqlx::query_scalar(
        "INSERT INTO consumed_message (event_id, time_of_receiving) \
         SELECT id, now() FROM UNNEST($1::uuid[]) AS id ON CONFLICT (event_id) DO NOTHING \
         RETURNING event_id",
    )
    .bind(&event_ids)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();

    let mut shipments = load_shipments(tx, &order_ids).await?;
    let mut parked = load_parked(tx, &order_ids).await?;
    let stored_before: Vec<Uuid> = parked.values().flatten().map(|p| p.event_id).collect();

    let mut outcomes = Vec::with_capacity(events.len());
    let mut applied_ids: HashSet<Uuid> = HashSet::with_capacity(events.len());
    let mut new_shipments: Vec<&OrderCreated> = Vec::new();
    for event in events {
        // The first occurrence of a new id is applied; any repeat (here or before) is a duplicate.
        if !first_seen.contains(&event.id) || !applied_ids.insert(event.id) {
            outcomes.push(Outcome::Duplicate);
            continue;
        }
        let outcome = match &event.kind {
            EventKind::OrderCreated {
                order: created,
                lines_known,
            } => {
                if shipments.contains_key(&created.id) {
                    return Err(ApplyError::Rejected(format!(
                        "order {} already has a shipment (created by another event id)",
                        created.id
                    )));
                }
                let mut state = ShipmentState {
                    id: Uuid::now_v7(),
                    is_new: true,
                    lines_known: *lines_known,
                    lines: created
                        .line_items
                        .iter()
                        .map(|l| (l.id, l.status))
                        .collect(),
                    changed_lines: Vec::new(),
                    recorded_lines: Vec::new(),
                };
                if let Some(waiting) = parked.get_mut(&created.id) {
                    apply_parked(&mut state, waiting);
                }
                shipments.insert(created.id, state);
                new_shipments.push(created);
                Outcome::Applied
            }
            EventKind::OrderLineUpdated(update) => match shipments.get_mut(&update.order_id) {
                Some(state) => state.apply(update).map_err(ApplyError::Rejected)?,
                None => {
                    parked
                        .entry(update.order_id)
                        .or_default()
                        .push(ParkedUpdate {
                            event_id: event.id,
                            update: update.clone(),
                            stored: false,
                        });
                    Outcome::Parked
                }
            },
        };
        outcomes.push(outcome);
    }

    write_new_shipments(tx, &new_shipments, &shipments).await?;
    write_recorded_lines(tx, &shipments).await?;
    write_changed_lines(tx, &shipments).await?;
    write_parked(tx, &parked, &stored_before).await?;
    Ok(outcomes)
}

/// order_id, id, lines_known, line ids and statuses in position order.
type StoredShipment = (Uuid, Uuid, bool, Vec<Uuid>, Vec<String>);

/// The stored shipments of `order_ids`, with their lines in order.
async fn load_shipments(
    tx: &mut Transaction<'_, Postgres>,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, ShipmentState>, ApplyError> {
    let rows: Vec<StoredShipment> = sqlx::query_as(
        "SELECT s.order_id, s.id, s.lines_known, \
                coalesce(array_agg(l.order_line_id ORDER BY l.position) \
                         FILTER (WHERE l.order_line_id IS NOT NULL), '{}'), \
                coalesce(array_agg(l.status ORDER BY l.position) \
                         FILTER (WHERE l.order_line_id IS NOT NULL), '{}') \
         FROM shipment s LEFT JOIN shipment_line l ON l.shipment_id = s.id \
         WHERE s.order_id = ANY($1) GROUP BY s.order_id, s.id, s.lines_known",
    )
    .bind(order_ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut shipments = HashMap::with_capacity(rows.len());
    for (order_id, id, lines_known, line_ids, statuses) in rows {
        let lines = line_ids
            .into_iter()
            .zip(statuses.iter())
            .map(|(line_id, status)| Ok((line_id, parse_status(status)?)))
            .collect::<Result<Vec<_>, ApplyError>>()?;
        shipments.insert(
            order_id,
            ShipmentState {
                id,
                is_new: false,
                lines_known,
                lines,
                changed_lines: Vec::new(),
                recorded_lines: Vec::new(),
            },
        );
    }
    Ok(shipments)
}

/// The stored updates waiting for `order_ids`, oldest first.
async fn load_parked(
    tx: &mut Transaction<'_, Postgres>,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<ParkedUpdate>>, ApplyError> {
    let rows: Vec<(Uuid, Uuid, Uuid, String, String)> = sqlx::query_as(
        "SELECT event_id, order_id, order_line_id, old_status, new_status \
         FROM pending_line_update WHERE order_id = ANY($1) ORDER BY arrival",
    )
    .bind(order_ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut parked: HashMap<Uuid, Vec<ParkedUpdate>> = HashMap::new();
    for (event_id, order_id, order_line_id, old_status, new_status) in rows {
        parked.entry(order_id).or_default().push(ParkedUpdate {
            event_id,
            update: OrderLineUpdated {
                order_id,
                order_line_id,
                old_status: parse_status(&old_status)?,
                new_status: parse_status(&new_status)?,
            },
            stored: true,
        });
    }
    Ok(parked)
}

/// Applies the updates that waited for this order, oldest first, and drops them from `waiting`.
/// One that does not fit the order stays parked (its message was acked long ago): logged and
/// counted for an operator.
fn apply_parked(state: &mut ShipmentState, waiting: &mut Vec<ParkedUpdate>) {
    waiting.retain(|parked| match state.apply(&parked.update) {
        Ok(_) => false,
        Err(reason) => {
            tracing::error!(event_id = %parked.event_id, order_id = %parked.update.order_id, %reason,
                "parked line update cannot be applied; kept in pending_line_update");
            metrics::counter!(crate::metrics::ORPHANED_UPDATES).increment(1);
            true
        }
    });
}

async fn write_new_shipments(
    tx: &mut Transaction<'_, Postgres>,
    created: &[&OrderCreated],
    shipments: &HashMap<Uuid, ShipmentState>,
) -> Result<(), ApplyError> {
    if created.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(created.len());
    let mut statuses = Vec::with_capacity(created.len());
    let mut lines_known = Vec::with_capacity(created.len());
    let mut lines = NewLines::default();
    for order in created {
        let Some(state) = shipments.get(&order.id) else {
            continue;
        };
        ids.push(state.id);
        statuses.push(state.status().as_str());
        lines_known.push(state.lines_known);
        // The order's own lines first (same positions), then any learnt from parked updates.
        for (index, (line_id, status)) in state.lines.iter().enumerate() {
            let item = order.line_items.get(index);
            lines.push(
                state.id,
                *line_id,
                index,
                item.map(|item| item.item.as_str()),
                item.map(|item| item.quantity),
                *status,
            );
        }
    }
    let order_ids: Vec<Uuid> = created.iter().map(|order| order.id).collect();
    let customer_ids: Vec<i32> = created.iter().map(|order| order.customer_id).collect();
    let order_dates: Vec<chrono::DateTime<chrono::Utc>> =
        created.iter().map(|order| order.order_date).collect();
    // No conflict target: the original's table may lack the unique index on order_id (see the
    // migration); the advisory lock and the read in `apply_in` already exclude a second
    // shipment of an order, and a conflict on any unique index still counts as one.
    // `order_date` may be the original's `timestamp` column: PostgreSQL converts in the
    // session time zone, UTC.
    let inserted = sqlx::query(
        "INSERT INTO shipment (id, order_id, customer_id, order_date, status, lines_known) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::timestamptz[], $5::text[], $6::bool[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&order_ids)
    .bind(&customer_ids)
    .bind(&order_dates)
    .bind(&statuses)
    .bind(&lines_known)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted != ids.len() as u64 {
        return Err(ApplyError::Rejected(
            "an order already has a shipment (created by another event id)".to_owned(),
        ));
    }
    lines.insert(tx).await
}

/// Rows for `shipment_line`, as parallel arrays for one `UNNEST` insert.
#[derive(Debug, Default)]
struct NewLines<'a> {
    shipments: Vec<Uuid>,
    ids: Vec<Uuid>,
    positions: Vec<i32>,
    items: Vec<Option<&'a str>>,
    quantities: Vec<Option<i32>>,
    statuses: Vec<&'static str>,
}

impl<'a> NewLines<'a> {
    /// A line at `index` (from 0) of its shipment; item and quantity are unknown for a line
    /// learnt from an update.
    fn push(
        &mut self,
        shipment: Uuid,
        id: Uuid,
        index: usize,
        item: Option<&'a str>,
        quantity: Option<i32>,
        status: LineStatus,
    ) {
        self.shipments.push(shipment);
        self.ids.push(id);
        self.positions
            .push(i32::try_from(index + 1).unwrap_or(i32::MAX));
        self.items.push(item);
        self.quantities.push(quantity);
        self.statuses.push(status.as_str());
    }

    async fn insert(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), ApplyError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let inserted = sqlx::query(
            "INSERT INTO shipment_line (order_line_id, shipment_id, position, item, quantity, status) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::int[], $6::text[]) \
             ON CONFLICT (order_line_id) DO NOTHING",
        )
        .bind(&self.ids)
        .bind(&self.shipments)
        .bind(&self.positions)
        .bind(&self.items)
        .bind(&self.quantities)
        .bind(&self.statuses)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted != self.ids.len() as u64 {
            return Err(ApplyError::Rejected(format!(
                "{} order line ids already belong to another shipment",
                self.ids.len() as u64 - inserted
            )));
        }
        Ok(())
    }
}

/// Lines that stored shipments learnt of from updates in this batch.
async fn write_recorded_lines(
    tx: &mut Transaction<'_, Postgres>,
    shipments: &HashMap<Uuid, ShipmentState>,
) -> Result<(), ApplyError> {
    let mut lines = NewLines::default();
    for state in shipments
        .values()
        .filter(|state| !state.recorded_lines.is_empty())
    {
        for (index, (line_id, status)) in state.lines.iter().enumerate() {
            if state.recorded_lines.contains(line_id) {
                lines.push(state.id, *line_id, index, None, None, *status);
            }
        }
    }
    lines.insert(tx).await
}

/// Status changes of stored lines, and the status (and `updated_at`) of the stored shipments
/// whose lines changed or grew in this batch.
async fn write_changed_lines(
    tx: &mut Transaction<'_, Postgres>,
    shipments: &HashMap<Uuid, ShipmentState>,
) -> Result<(), ApplyError> {
    let mut line_ids = Vec::new();
    let mut line_statuses = Vec::new();
    let mut shipment_ids = Vec::new();
    let mut shipment_statuses = Vec::new();
    for state in shipments.values().filter(|state| {
        !state.is_new && (!state.changed_lines.is_empty() || !state.recorded_lines.is_empty())
    }) {
        for (line_id, status) in &state.lines {
            if state.changed_lines.contains(line_id) {
                line_ids.push(*line_id);
                line_statuses.push(status.as_str());
            }
        }
        shipment_ids.push(state.id);
        shipment_statuses.push(state.status().as_str());
    }
    if shipment_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH changed_lines AS ( \
             UPDATE shipment_line SET status = change.status \
             FROM UNNEST($1::uuid[], $2::text[]) AS change(id, status) \
             WHERE order_line_id = change.id) \
         UPDATE shipment SET status = change.status, updated_at = now() \
         FROM UNNEST($3::uuid[], $4::text[]) AS change(id, status) \
         WHERE shipment.id = change.id",
    )
    .bind(&line_ids)
    .bind(&line_statuses)
    .bind(&shipment_ids)
    .bind(&shipment_statuses)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stores updates parked by this batch and deletes the stored ones that were applied.
async fn write_parked(
    tx: &mut Transaction<'_, Postgres>,
    parked: &HashMap<Uuid, Vec<ParkedUpdate>>,
    stored_before: &[Uuid],
) -> Result<(), ApplyError> {
    let still_stored: HashSet<Uuid> = parked
        .values()
        .flatten()
        .filter(|update| update.stored)
        .map(|update| update.event_id)
        .collect();
    let applied: Vec<Uuid> = stored_before
        .iter()
        .filter(|id| !still_stored.contains(id))
        .copied()
        .collect();
    if !applied.is_empty() {
        sqlx::query("DELETE FROM pending_line_update WHERE event_id = ANY($1)")
            .bind(&applied)
            .execute(&mut **tx)
            .await?;
    }
    let new: Vec<&ParkedUpdate> = parked
        .values()
        .flatten()
        .filter(|update| !update.stored)
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let event_ids: Vec<Uuid> = new.iter().map(|p| p.event_id).collect();
    let order_ids: Vec<Uuid> = new.iter().map(|p| p.update.order_id).collect();
    let line_ids: Vec<Uuid> = new.iter().map(|p| p.update.order_line_id).collect();
    let old: Vec<&str> = new.iter().map(|p| p.update.old_status.as_str()).collect();
    let next: Vec<&str> = new.iter().map(|p| p.update.new_status.as_str()).collect();
    // In list order, which keeps each order's updates in event order (`arrival`).
    sqlx::query(
        "INSERT INTO pending_line_update (event_id, order_id, order_line_id, old_status, new_status) \
         SELECT event_id, order_id, order_line_id, old_status, new_status \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[]) \
              WITH ORDINALITY AS parked(event_id, order_id, order_line_id, old_status, new_status, n) \
         ORDER BY n",
    )
    .bind(&event_ids)
    .bind(&order_ids)
    .bind(&line_ids)
    .bind(&old)
    .bind(&next)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A lock key per order: the first 8 bytes of its UUID.
fn advisory_key(order_id: Uuid) -> i64 {
    let bytes = order_id.as_bytes();
    let mut key = [0u8; 8];
    key.copy_from_slice(&bytes[..8]);
    i64::from_be_bytes(key)
}

/// What an update did to a shipment's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The line moved to the new status.
    Applied,
    /// The line already had the new status.
    Unchanged,
    /// A line the shipment did not know of, added with the new status.
    Recorded,
}

/// Moves the line named by `update` to its new status in `lines`, or says why it cannot. A line
/// not in `lines` is added when `lines_known` is false (the order came without its lines), and
/// contradicts the order otherwise.
fn transition(
    lines: &mut Vec<(Uuid, LineStatus)>,
    lines_known: bool,
    update: &OrderLineUpdated,
) -> Result<Change, String> {
    let Some((_, current)) = lines.iter_mut().find(|(id, _)| *id == update.order_line_id) else {
        if lines_known {
            return Err(format!(
                "order {} has no line {}",
                update.order_id, update.order_line_id
            ));
        }
        lines.push((update.order_line_id, update.new_status));
        return Ok(Change::Recorded);
    };
    if *current == update.new_status {
        return Ok(Change::Unchanged);
    }
    if *current != update.old_status || !current.can_become(update.new_status) {
        return Err(format!(
            "line {} of order {} is {current}; the event moves it from {} to {}",
            update.order_line_id, update.order_id, update.old_status, update.new_status
        ));
    }
    *current = update.new_status;
    Ok(Change::Applied)
}

fn parse_status(text: &str) -> Result<LineStatus, ApplyError> {
    // The table's CHECK constraint makes this unreachable unless someone edits it by hand.
    LineStatus::from_str(text).map_err(|error| ApplyError::Rejected(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use LineStatus::*;

    #[test]
    fn status_rule() {
        assert_eq!(ShipmentStatus::of_lines(&[]), ShipmentStatus::Pending);
        assert_eq!(
            ShipmentStatus::of_lines(&[Entered, Cancelled]),
            ShipmentStatus::Pending
        );
        assert_eq!(
            ShipmentStatus::of_lines(&[Entered, Shipped]),
            ShipmentStatus::Pending
        );
        assert_eq!(
            ShipmentStatus::of_lines(&[Shipped, Cancelled]),
            ShipmentStatus::Shipped
        );
        assert_eq!(
            ShipmentStatus::of_lines(&[Cancelled, Cancelled]),
            ShipmentStatus::Cancelled
        );
    }

    #[test]
    fn transitions() {
        let line = Uuid::new_v4();
        let mut lines = vec![(line, Entered)];
        let update = |old, new| OrderLineUpdated {
            order_id: Uuid::nil(),
            order_line_id: line,
            old_status: old,
            new_status: new,
        };
        assert_eq!(
            transition(&mut lines, true, &update(Entered, Cancelled)),
            Ok(Change::Applied)
        );
        assert_eq!(lines[0].1, Cancelled);
        assert_eq!(
            transition(&mut lines, true, &update(Entered, Cancelled)),
            Ok(Change::Unchanged)
        );
        let conflict = transition(&mut lines, true, &update(Entered, Shipped)).unwrap_err();
        assert!(conflict.contains("is CANCELLED"), "{conflict}");
        let stranger = OrderLineUpdated {
            order_line_id: Uuid::new_v4(),
            ..update(Entered, Shipped)
        };
        assert!(
            transition(&mut lines, true, &stranger)
                .unwrap_err()
                .contains("has no line")
        );
        assert_eq!(lines.len(), 1);

        // Lines unknown (the original producer's OrderCreated): the stranger is recorded.
        assert_eq!(
            transition(&mut lines, false, &stranger),
            Ok(Change::Recorded)
        );
        assert_eq!(lines[1], (stranger.order_line_id, Shipped));
        assert_eq!(
            transition(&mut lines, false, &stranger),
            Ok(Change::Unchanged)
        );
        let conflict = OrderLineUpdated {
            new_status: Cancelled,
            ..stranger
        };
        assert!(transition(&mut lines, false, &conflict).is_err());
    }

    #[test]
    fn unknown_lines_keep_the_shipment_pending() {
        assert_eq!(
            ShipmentStatus::of_shipment(false, &[Cancelled, Cancelled]),
            ShipmentStatus::Pending
        );
        assert_eq!(
            ShipmentStatus::of_shipment(false, &[Shipped]),
            ShipmentStatus::Pending
        );
        assert_eq!(
            ShipmentStatus::of_shipment(true, &[Cancelled]),
            ShipmentStatus::Cancelled
        );
        assert_eq!(
            ShipmentStatus::of_shipment(true, &[Shipped]),
            ShipmentStatus::Shipped
        );
    }

    #[test]
    fn advisory_key_is_stable_per_order() {
        let order = Uuid::parse_str("0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5").unwrap();
        // The first 8 bytes, big-endian: a known value, so a changed derivation (which would let
        // two instances lock different keys for one order during a rolling upgrade) fails here.
        assert_eq!(advisory_key(order), 0x0f5c_7d1e_2a3b_4c5d);
        let high = Uuid::from_u128(0xff00_0000_0000_0001_0000_0000_0000_0000);
        assert_eq!(
            advisory_key(high),
            i64::from_be_bytes([0xff, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(advisory_key(high), -72_057_594_037_927_935);
        assert_eq!(advisory_key(Uuid::nil()), 0);
    }
}
