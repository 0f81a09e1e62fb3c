//! The effect of each event on the shipment tables, applied exactly once.
//!
//! The event id goes into `consumed_message` in the same transaction as the effect; a conflict
//! means the event was applied before, so it changes nothing ([`Outcome::Duplicate`]). The
//! caller acks only after the commit.
//!
//! Events already delivered are applied together ([`apply_batch`]; [`apply`] is a batch of one)
//! with a fixed number of statements per batch, whatever its size: lock the orders, record the
//! ids, read the orders' shipments and parked updates, work out every effect in memory in event
//! order, write every change in one statement of `UNNEST` arrays, commit. One commit (one WAL
//! flush) and seven round trips per batch (BEGIN and COMMIT included) is what lets a backlog
//! drain fast: the cost per event is then the rows and index entries it writes, not the round
//! trips or the flush.
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
    /// Event `index` of the batch contradicts the stored state (or the batch's earlier events):
    /// the events before it are fine on their own, so the caller can apply them as a batch and
    /// only the rejected one alone. Nothing of the batch was committed.
    #[error("event {index} of the batch: {reason}")]
    RejectedAt { index: usize, reason: String },
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
    let outcomes = match apply_batch(pool, std::slice::from_ref(event)).await {
        Ok(outcomes) => outcomes,
        Err(ApplyError::RejectedAt { reason, .. }) => return Err(ApplyError::Rejected(reason)),
        Err(error) => return Err(error),
    };
    outcomes
        .into_iter()
        .next()
        .ok_or_else(|| ApplyError::Rejected("internal error: no outcome for the event".to_owned()))
}

/// Applies `events`, in order, in one transaction, with a fixed number of statements whatever
/// their count: lock the orders, record the ids, read the orders' state, work out every effect
/// in memory, write the changes set-wise, commit. If any event is rejected nothing is
/// committed: [`ApplyError::RejectedAt`] names it when the rejection is tied to one event
/// (a conflict found only by the database, [`ApplyError::Rejected`], is not).
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
        // In delivery order, so that `applied_order` (its default) follows it.
        "INSERT INTO consumed_message (event_id, time_of_receiving) \
         SELECT id, now() FROM UNNEST($1::uuid[]) WITH ORDINALITY AS delivered (id, position) \
         ORDER BY position ON CONFLICT (event_id) DO NOTHING \
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
    for (index, event) in events.iter().enumerate() {
        let rejected = |reason: String| ApplyError::RejectedAt { index, reason };
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
                    return Err(rejected(format!(
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
                Some(state) => state.apply(update).map_err(rejected)?,
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

    let mut writes = Writes::default();
    writes.new_shipments(&new_shipments, &shipments);
    writes.recorded_lines(&shipments);
    writes.changed_lines(&shipments);
    writes.parked(&parked, &stored_before);
    writes.execute(tx).await?;
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

/// Every row a batch writes, as parallel arrays for the one statement of [`Writes::execute`].
#[derive(Debug, Default)]
struct Writes<'a> {
    shipment_ids: Vec<Uuid>,
    shipment_orders: Vec<Uuid>,
    shipment_customers: Vec<i32>,
    shipment_dates: Vec<chrono::DateTime<chrono::Utc>>,
    shipment_statuses: Vec<&'static str>,
    shipment_lines_known: Vec<bool>,
    lines: NewLines<'a>,
    changed_line_ids: Vec<Uuid>,
    changed_line_statuses: Vec<&'static str>,
    changed_shipment_ids: Vec<Uuid>,
    changed_shipment_statuses: Vec<&'static str>,
    applied_parked: Vec<Uuid>,
    parked_events: Vec<Uuid>,
    parked_orders: Vec<Uuid>,
    parked_lines: Vec<Uuid>,
    parked_old: Vec<&'static str>,
    parked_new: Vec<&'static str>,
}

impl<'a> Writes<'a> {
    /// The shipments created by this batch, with their lines: the order's own first (same
    /// positions), then any learnt from parked updates.
    fn new_shipments(
        &mut self,
        created: &[&'a OrderCreated],
        shipments: &HashMap<Uuid, ShipmentState>,
    ) {
        for order in created {
            let Some(state) = shipments.get(&order.id) else {
                continue;
            };
            self.shipment_ids.push(state.id);
            self.shipment_orders.push(order.id);
            self.shipment_customers.push(order.customer_id);
            self.shipment_dates.push(order.order_date);
            self.shipment_statuses.push(state.status().as_str());
            self.shipment_lines_known.push(state.lines_known);
            for (index, (line_id, status)) in state.lines.iter().enumerate() {
                let item = order.line_items.get(index);
                self.lines.push(
                    state.id,
                    true,
                    *line_id,
                    index,
                    item.map(|item| (item.item.as_str(), item.quantity)),
                    *status,
                );
            }
        }
    }

    /// Lines that stored shipments learnt of from updates in this batch.
    fn recorded_lines(&mut self, shipments: &HashMap<Uuid, ShipmentState>) {
        for state in shipments
            .values()
            .filter(|state| !state.recorded_lines.is_empty())
        {
            for (index, (line_id, status)) in state.lines.iter().enumerate() {
                if state.recorded_lines.contains(line_id) {
                    self.lines
                        .push(state.id, false, *line_id, index, None, *status);
                }
            }
        }
    }

    /// Status changes of stored lines, and the status (and `updated_at`) of the stored
    /// shipments whose lines changed or grew in this batch.
    fn changed_lines(&mut self, shipments: &HashMap<Uuid, ShipmentState>) {
        for state in shipments.values().filter(|state| {
            !state.is_new && (!state.changed_lines.is_empty() || !state.recorded_lines.is_empty())
        }) {
            for (line_id, status) in &state.lines {
                if state.changed_lines.contains(line_id) {
                    self.changed_line_ids.push(*line_id);
                    self.changed_line_statuses.push(status.as_str());
                }
            }
            self.changed_shipment_ids.push(state.id);
            self.changed_shipment_statuses.push(state.status().as_str());
        }
    }

    /// Updates parked by this batch (to store) and the stored ones it applied (to delete).
    fn parked(&mut self, parked: &HashMap<Uuid, Vec<ParkedUpdate>>, stored_before: &[Uuid]) {
        let still_stored: HashSet<Uuid> = parked
            .values()
            .flatten()
            .filter(|update| update.stored)
            .map(|update| update.event_id)
            .collect();
        self.applied_parked = stored_before
            .iter()
            .filter(|id| !still_stored.contains(id))
            .copied()
            .collect();
        // In each order's list order, which keeps its updates in event order (`arrival`).
        for new in parked.values().flatten().filter(|update| !update.stored) {
            self.parked_events.push(new.event_id);
            self.parked_orders.push(new.update.order_id);
            self.parked_lines.push(new.update.order_line_id);
            self.parked_old.push(new.update.old_status.as_str());
            self.parked_new.push(new.update.new_status.as_str());
        }
    }

    /// Writes everything in one statement (one round trip whatever the batch holds); the
    /// parts touch disjoint rows (new shipments and lines, stored lines and shipments, parked
    /// updates), so their running side by side in one snapshot is the same as one after the
    /// other. The foreign key of a new line to its new shipment is checked at the end of the
    /// statement, when the shipment is there.
    async fn execute(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), ApplyError> {
        // No conflict target on shipment: the original's table may lack the unique index on
        // order_id (see the migration); the advisory lock and the read in `apply_in` already
        // exclude a second shipment of an order, and a conflict on any unique index still
        // counts as one. The lines of a shipment that was not inserted are left out, so such
        // a conflict is a short count (a rejection), not a foreign-key error. `order_date`
        // may be the original's `timestamp` column: PostgreSQL converts in the session time
        // zone, UTC.
        let (shipments, lines): (i64, i64) = sqlx::query_as(
            "WITH new_shipment AS ( \
                 INSERT INTO shipment (id, order_id, customer_id, order_date, status, lines_known) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::timestamptz[], \
                                      $5::text[], $6::bool[]) \
                 ON CONFLICT DO NOTHING RETURNING id), \
             new_line AS ( \
                 INSERT INTO shipment_line (order_line_id, shipment_id, position, item, quantity, status) \
                 SELECT line.order_line_id, line.shipment_id, line.position, line.item, \
                        line.quantity, line.status \
                 FROM UNNEST($7::uuid[], $8::uuid[], $9::int[], $10::text[], $11::int[], \
                             $12::text[], $13::bool[]) \
                      AS line(order_line_id, shipment_id, position, item, quantity, status, of_new) \
                 WHERE NOT line.of_new OR line.shipment_id IN (SELECT id FROM new_shipment) \
                 ON CONFLICT (order_line_id) DO NOTHING RETURNING 1), \
             changed_line AS ( \
                 UPDATE shipment_line SET status = change.status \
                 FROM UNNEST($14::uuid[], $15::text[]) AS change(id, status) \
                 WHERE order_line_id = change.id), \
             changed_shipment AS ( \
                 UPDATE shipment SET status = change.status, updated_at = now() \
                 FROM UNNEST($16::uuid[], $17::text[]) AS change(id, status) \
                 WHERE shipment.id = change.id), \
             applied_parked AS ( \
                 DELETE FROM pending_line_update WHERE event_id = ANY($18::uuid[])), \
             new_parked AS ( \
                 INSERT INTO pending_line_update (event_id, order_id, order_line_id, old_status, new_status) \
                 SELECT event_id, order_id, order_line_id, old_status, new_status \
                 FROM UNNEST($19::uuid[], $20::uuid[], $21::uuid[], $22::text[], $23::text[]) \
                      WITH ORDINALITY AS parked(event_id, order_id, order_line_id, old_status, new_status, n) \
                 ORDER BY n) \
             SELECT (SELECT count(*) FROM new_shipment), (SELECT count(*) FROM new_line)",
        )
        .bind(&self.shipment_ids)
        .bind(&self.shipment_orders)
        .bind(&self.shipment_customers)
        .bind(&self.shipment_dates)
        .bind(&self.shipment_statuses)
        .bind(&self.shipment_lines_known)
        .bind(&self.lines.ids)
        .bind(&self.lines.shipments)
        .bind(&self.lines.positions)
        .bind(&self.lines.items)
        .bind(&self.lines.quantities)
        .bind(&self.lines.statuses)
        .bind(&self.lines.of_new)
        .bind(&self.changed_line_ids)
        .bind(&self.changed_line_statuses)
        .bind(&self.changed_shipment_ids)
        .bind(&self.changed_shipment_statuses)
        .bind(&self.applied_parked)
        .bind(&self.parked_events)
        .bind(&self.parked_orders)
        .bind(&self.parked_lines)
        .bind(&self.parked_old)
        .bind(&self.parked_new)
        .fetch_one(&mut **tx)
        .await?;
        if shipments != self.shipment_ids.len() as i64 {
            return Err(ApplyError::Rejected(
                "an order already has a shipment (created by another event id)".to_owned(),
            ));
        }
        if lines != self.lines.ids.len() as i64 {
            return Err(ApplyError::Rejected(format!(
                "{} order line ids already belong to another shipment",
                self.lines.ids.len() as i64 - lines
            )));
        }
        Ok(())
    }
}

/// Rows for `shipment_line`, as parallel arrays for one `UNNEST` insert.
#[derive(Debug, Default)]
struct NewLines<'a> {
    shipments: Vec<Uuid>,
    /// Whether the line's shipment is created by this batch (inserted in the same statement).
    of_new: Vec<bool>,
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
        of_new: bool,
        id: Uuid,
        index: usize,
        item_and_quantity: Option<(&'a str, i32)>,
        status: LineStatus,
    ) {
        let (item, quantity) = item_and_quantity.unzip();
        self.shipments.push(shipment);
        self.of_new.push(of_new);
        self.ids.push(id);
        self.positions
            .push(i32::try_from(index + 1).unwrap_or(i32::MAX));
        self.items.push(item);
        self.quantities.push(quantity);
        self.statuses.push(status.as_str());
    }
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
