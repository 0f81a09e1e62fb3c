//! Transactional outbox writer.
//!
//! A service that changes its database and must announce the change calls
//! [`Outbox::enqueue`] inside the same sqlx transaction: the event row commits with the business
//! rows or not at all. The outbox-relay then reads the committed row from PostgreSQL's
//! write-ahead log and publishes it.
//!
//! The table has the columns of the system we replace, so a Debezium outbox-router
//! configuration works against it unchanged:
//!
//! ```sql
//! CREATE TABLE orders.outbox_event (
//!     id             uuid PRIMARY KEY,
//!     aggregate_type varchar(255) NOT NULL,
//!     aggregate_id   varchar(255) NOT NULL,
//!     type           varchar(255) NOT NULL,
//!     payload        jsonb NOT NULL,
//!     "timestamp"    timestamptz NOT NULL
//! );
//! ```
//!
//! The original system's own table has the same columns with `"timestamp" timestamp` (without
//! time zone) and no `NOT NULL`s; the row is written the same way there. `"timestamp"` is
//! `clock_timestamp()`, which PostgreSQL converts with the session's `TimeZone` when the column
//! has no time zone: a pool with `TimeZone=UTC` (sqlx's default) writes UTC wall time, as the
//! original did.
//!
//! Event ids are UUID version 4 by default, as the original's consumers require;
//! [`Outbox::id_format`] picks version 7 instead.
//!
//! With [`Outbox::trace_column`] the W3C trace context of the change (its `traceparent` and
//! `tracestate`) is stored in that column as Java Properties text, Debezium's
//! `tracingspancontext` format ([`TraceContext`]), for the relay to send as message headers.
//! The column is nullable and optional: see the order-service migration that adds it.
//!
//! With [`Outbox::delete_after_insert`] the row is deleted in the same transaction right after
//! it is inserted: the insert is still in the WAL for the relay, and the table stays empty, so
//! nothing needs to clean it up.
//!
//! # Example
//!
//! ```no_run
//! use events::{OrderEvent, OrderLineUpdated, LineStatus};
//! use outbox::Outbox;
//!
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let outbox = Outbox::new("orders.outbox_event")?;
//! let mut tx = pool.begin().await?;
//! // ... update the business rows with `&mut *tx` ...
//! let event = OrderEvent::OrderLineUpdated(OrderLineUpdated {
//!     order_id: uuid::Uuid::new_v4(),
//!     order_line_id: uuid::Uuid::new_v4(),
//!     new_status: LineStatus::Cancelled,
//!     old_status: LineStatus::Entered,
//! });
//! let event_id = outbox.enqueue(&mut tx, &event).await?;
//! tx.commit().await?;
//! # let _ = event_id;
//! # Ok(())
//! # }
//! ```

use events::DomainEvent;
pub use events::IdFormat;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;
pub use wire_format::TraceContext;

/// Why an event could not be written to the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(
        "invalid outbox table name {0:?}: expected [schema.]table made of letters, digits and underscores"
    )]
    InvalidTableName(String),
    #[error(
        "invalid trace context column name {0:?}: expected letters, digits and underscores, not starting with a digit"
    )]
    InvalidColumnName(String),
    #[error("could not serialize the {event_type} event: {source}")]
    Serialize {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not write the event to the outbox table: {0}")]
    Database(#[from] sqlx::Error),
}

/// Writes events to one outbox table. Cheap to clone; build it once at start-up.
#[derive(Debug, Clone)]
pub struct Outbox {
    quoted_table: String,
    insert_sql: String,
    /// The trace context column, quoted, if there is one.
    trace_column: Option<String>,
    delete_sql: Option<String>,
    id_format: IdFormat,
}

impl Outbox {
    /// An outbox writing to `table` (`schema.table` or `table`). The name is checked here, once,
    /// because it is spliced into SQL (identifiers cannot be bound as parameters).
    pub fn new(table: &str) -> Result<Self, OutboxError> {
        let parts: Vec<&str> = table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|part| valid_identifier(part)) {
            return Err(OutboxError::InvalidTableName(table.to_owned()));
        }
        let quoted = parts
            .iter()
            .map(|part| format!("\"{part}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Self {
            insert_sql: insert_sql(&quoted, None),
            trace_column: None,
            delete_sql: None,
            id_format: IdFormat::default(),
            quoted_table: quoted,
        })
    }

    /// Stores each event's trace context (see [`Outbox::enqueue_traced`]) in `column`; `None`
    /// (the default) stores none. The name is checked here, as the table's.
    pub fn trace_column(mut self, column: Option<&str>) -> Result<Self, OutboxError> {
        let quoted = match column {
            None => None,
            Some(name) if valid_identifier(name) => Some(format!("\"{name}\"")),
            Some(name) => return Err(OutboxError::InvalidColumnName(name.to_owned())),
        };
        self.insert_sql = insert_sql(&self.quoted_table, quoted.as_deref());
        self.trace_column = quoted;
        Ok(self)
    }

    /// Deletes each row in the same transaction right after inserting it. The relay still sees
    /// the insert in the WAL; the table never grows.
    pub fn delete_after_insert(mut self, delete: bool) -> Self {
        self.delete_sql =
            delete.then(|| format!("DELETE FROM {} WHERE id = $1", self.quoted_table));
        self
    }

    /// Which UUID version the event ids are: [`IdFormat::Uuid4`] unless set here.
    pub fn id_format(mut self, id_format: IdFormat) -> Self {
        self.id_format = id_format;
        self
    }

    /// Writes `event` inside `tx` and returns the new event id (see [`Outbox::id_format`]). The
    /// event becomes visible to the relay only when `tx` commits.
    pub async fn enqueue<E: DomainEvent>(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &E,
    ) -> Result<Uuid, OutboxError> {
        self.enqueue_traced_on(tx, event, None).await
    }

    /// [`Outbox::enqueue`] with the trace context of the change, stored when the outbox has a
    /// [`Outbox::trace_column`].
    pub async fn enqueue_traced<E: DomainEvent>(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &E,
        trace: Option<&TraceContext>,
    ) -> Result<Uuid, OutboxError> {
        self.enqueue_traced_on(tx, event, trace).await
    }

    /// The SQL of one statement that runs the caller's `writes` (data-modifying CTEs, e.g.
    /// `new_order AS (INSERT INTO … VALUES ($7, $8))`, comma-separated, whose parameters start
    /// at [`Outbox::FIRST_CALLER_PARAMETER`]) and inserts the event (parameters `$1`–`$6`,
    /// bound by [`Outbox::bind_event`]).
    ///
    /// A statement is atomic on its own: the business rows and the event commit together
    /// without `BEGIN`/`COMMIT`, in one round trip instead of one per statement plus two.
    /// Foreign keys between the writes are checked at the end of the statement, so a child
    /// row may reference a parent inserted by an earlier CTE. `None` with
    /// [`Outbox::delete_after_insert`]: a statement cannot delete the row it inserts, so such
    /// an outbox needs [`Outbox::enqueue`] in a transaction.
    pub fn statement_with(&self, writes: &str) -> Option<String> {
        if self.delete_sql.is_some() {
            return None;
        }
        Some(format!("WITH {writes} {}", self.insert_sql))
    }

    /// Binds `event` and its trace context as parameters `$1`–`$6` of a
    /// [`Outbox::statement_with`] query, before the caller binds its own (`$7` on); returns the
    /// query and the new event id.
    pub fn bind_event<'q, E: DomainEvent>(
        &self,
        query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
        event: &'q E,
        trace: Option<&TraceContext>,
    ) -> Result<
        (
            sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
            Uuid,
        ),
        OutboxError,
    > {
        let payload = serde_json::to_value(event).map_err(|source| OutboxError::Serialize {
            event_type: event.event_type().to_owned(),
            source,
        })?;
        let id = self.id_format.new_id();
        let query = query
            .bind(id)
            .bind(event.aggregate_type())
            .bind(event.aggregate_id())
            .bind(event.event_type())
            .bind(payload)
            .bind(self.trace_text(trace));
        Ok((query, id))
    }

    /// Like [`Outbox::enqueue`], on a connection the caller has already put in a transaction.
    pub async fn enqueue_on<E: DomainEvent>(
        &self,
        conn: &mut PgConnection,
        event: &E,
    ) -> Result<Uuid, OutboxError> {
        self.enqueue_traced_on(conn, event, None).await
    }

    /// [`Outbox::enqueue_traced`] on a connection the caller has already put in a transaction.
    pub async fn enqueue_traced_on<E: DomainEvent>(
        &self,
        conn: &mut PgConnection,
        event: &E,
        trace: Option<&TraceContext>,
    ) -> Result<Uuid, OutboxError> {
        let payload = serde_json::to_value(event).map_err(|source| OutboxError::Serialize {
            event_type: event.event_type().to_owned(),
            source,
        })?;
        let id = self.id_format.new_id();
        sqlx::query(&self.insert_sql)
            .bind(id)
            .bind(event.aggregate_type())
            .bind(event.aggregate_id())
            .bind(event.event_type())
            .bind(payload)
            .bind(self.trace_text(trace))
            .execute(&mut *conn)
            .await?;
        if let Some(delete_sql) = &self.delete_sql {
            sqlx::query(delete_sql).bind(id).execute(&mut *conn).await?;
        }
        Ok(id)
    }

    /// The first parameter number of the caller's writes in [`Outbox::statement_with`].
    pub const FIRST_CALLER_PARAMETER: usize = 7;

    /// Parameter `$6`: the Properties text, or NULL without a context or a column. Always
    /// bound (as text), so the caller's parameters start at `$7` either way.
    fn trace_text(&self, trace: Option<&TraceContext>) -> Option<String> {
        self.trace_column.as_ref()?;
        trace.map(TraceContext::to_properties)
    }
}

fn valid_identifier(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 63
        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !part.starts_with(|c: char| c.is_ascii_digit())
}

/// The insert of one event; `$6` is the trace context, unused without a column (PostgreSQL
/// takes the declared type of an unreferenced parameter).
fn insert_sql(quoted_table: &str, trace_column: Option<&str>) -> String {
    match trace_column {
        Some(column) => format!(
            "INSERT INTO {quoted_table} (id, aggregate_type, aggregate_id, type, payload, \"timestamp\", {column}) \
             VALUES ($1, $2, $3, $4, $5, clock_timestamp(), $6)"
        ),
        None => format!(
            "INSERT INTO {quoted_table} (id, aggregate_type, aggregate_id, type, payload, \"timestamp\") \
             VALUES ($1, $2, $3, $4, $5, clock_timestamp())"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert!(Outbox::new("orders.outbox_event").is_ok());
        assert!(Outbox::new("outbox_event").is_ok());
        for bad in [
            "",
            "a.b.c",
            "orders.outbox; drop table x",
            "orders.",
            "1abc",
            "a\"b",
        ] {
            assert!(
                matches!(Outbox::new(bad), Err(OutboxError::InvalidTableName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn delete_after_insert_targets_the_same_table() {
        let outbox = Outbox::new("orders.outbox_event")
            .unwrap()
            .delete_after_insert(true);
        assert_eq!(
            outbox.delete_sql.as_deref(),
            Some("DELETE FROM \"orders\".\"outbox_event\" WHERE id = $1")
        );
        let plain = Outbox::new("orders.outbox_event").unwrap();
        assert!(plain.delete_sql.is_none());
    }
}
