//! The polling source (`--source polling`): the common alternative to change-data-capture,
//! for databases where logical replication is not allowed (no `wal_level = logical`, no
//! REPLICATION role, a managed service that forbids slots).
//!
//! [`PollingSource`] is a [`Source`] for the one pipeline: a worker task per session (it owns
//! the PostgreSQL connection, so the pipeline's `select!` never cancels a query half-way)
//! polls each outbox table in turn, one transaction per batch:
//!
//! ```sql
//! BEGIN;
//! SELECT <every column>::text, ctid, ... FROM <table>
//!   ORDER BY "timestamp", <event id> LIMIT <batch> FOR UPDATE NOWAIT;
//! -- each row goes to the pipeline as its own transaction; the worker waits for the acks
//! DELETE FROM <table> WHERE ctid = ANY(<the acked rows>);
//! COMMIT;
//! ```
//!
//! A position is a row of a batch ([`PollPosition`]); acking the batch's last row deletes the
//! batch and commits. Rows are routed and encoded by the same router and `wire_format` code
//! as the replication source: the table's columns are read from `pg_attribute` into a
//! table schema and each row's values are text (the `::text` cast gives the same type output
//! function pgoutput uses), so a row yields the same message body and headers from either
//! source. The AMQP `timestamp` is the row's `timestamp` column (the
//! replication source uses the commit time), or the poll time without one. That column is
//! also the event's "commit time" for `outbox_relay_commit_to_{publish,confirm}_seconds`
//! (the producer sets it inside its transaction); a table without one records neither.
//!
//! A full batch polls again at once; a shorter one waits `RELAY_POLL_INTERVAL_MS`.
//! The published rows are deleted by `ctid` (stable while the batch holds their row locks),
//! which needs no index and works whatever the event id's type, even NULL ids of
//! dead-lettered rows.
//!
//! # Never lose, never drop
//! Rows are deleted in the transaction that read them, only after the broker confirmed them
//! (and every row before them). A returned message (no queue bound) or a nack stalls the
//! pipeline as for the replication source: the batch stays open, its rows locked and in the
//! table, and the refused event is published again with backoff until the broker takes it.
//! A PostgreSQL failure rolls the batch back (the rows stay; published ones are published
//! again). A crash between the confirms and the commit publishes the batch again at the next
//! poll (at-least-once, same `message_id`). An unroutable row goes to
//! `RELAY_DEAD_LETTER_EXCHANGE` when set (then it is deleted); without it the table stalls at
//! that row: the rows before it are relayed and deleted, nothing after it, `/health` says
//! why, and the pipeline rewinds the source to read the row again with backoff, so fixing it
//! (or deleting it) resumes without a restart.
//!
//! # One active poller
//! At start (and after every reconnect) the relay takes `pg_try_advisory_lock(
//! hashtextextended('outbox-relay polling <schema>.<table>', 0))` for each of its tables on its
//! own session and polls only while it holds all of them. A second relay on the same table
//! stands by (`/health`: `standby: true`, 503) and retries every second; when the active
//! relay's session ends, PostgreSQL releases its locks and the standby takes over. One
//! poller per table keeps the per-aggregate order that concurrent pollers would break.
//!
//! The select locks its rows `NOWAIT`, not `SKIP LOCKED`: with one poller, the only other
//! lockers of outbox rows are other sessions updating or deleting them (an operator fixing
//! a row), and skipping such a row would publish the rows after it first, breaking the
//! table's order and the stall at an unroutable row. When a row is locked the poll fails at
//! once (`lock_not_available`), rolls back and retries that table with backoff (up to 5 s)
//! until the lock is released; other tables go on.
//!
//! # Trade-offs against the replication source
//! - Order is `timestamp` order, not commit order: two concurrent transactions can commit in
//!   the other order than their timestamps, and a row whose transaction commits late can come
//!   after a later-stamped row that was already relayed. Events of one aggregate keep their
//!   order when the producer serializes its transactions per aggregate and stamps rows after
//!   taking the aggregate's lock (the order-service does: `clock_timestamp()` after the
//!   order row's update).
//! - The producer must NOT delete its rows (order-service `OUTBOX_DELETE_AFTER_INSERT` must
//!   be false, the default): the relay deletes them once published.
//! - Each batch holds its rows' locks until the broker confirmed the batch.
//! - Latency is at least one poll interval when idle (up to `RELAY_POLL_INTERVAL_MS`).
//! - Every relayed row becomes a dead tuple: the table relies on autovacuum, and each poll
//!   scans the table unless an index leads with the order column (`CREATE INDEX ON
//!   <table> ("timestamp", id)`; the relay warns at start without one).
//! - The operator sees lag as `outbox_relay_polling_backlog_rows{table}` (`count(*)`, sampled
//!   about once a second: cheap for an outbox that is drained continuously) and
//!   `outbox_relay_oldest_unconfirmed_event_age_seconds` (the oldest row's age).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::router::TableName;
use crate::row::{ColumnSchema, Row, TableSchema, Value};
use crate::source::{
    self, Opened, Position, Source, SourceError, SourceEvent, StartError, close_bounded,
};
use crate::telemetry::{CommitTime, POLLING_BACKLOG_ROWS};

/// The column the polling source orders by when the table has it.
pub(crate) const TIMESTAMP_COLUMN: &str = "timestamp";
/// `timestamp` and `timestamptz`: the types whose value becomes the AMQP timestamp.
const TIMESTAMP_TYPE_OIDS: [u32; 2] = [1114, 1184];
/// How often the backlog gauges are sampled.
const BACKLOG_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest pause between polls of a table whose next row is locked.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the worker may take to commit what was acked and end at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the polling source cannot start against this database.
#[derive(Debug, thiserror::Error)]
pub enum PollingStartError {
    /// Connecting failed (unreachable server, refused credentials).
    #[error(transparent)]
    Connect(#[from] StartError),
    #[error("outbox table {table} does not exist in database {database:?}")]
    MissingTable { table: String, database: String },
    #[error(
        "role {role:?} lacks the {privilege} privilege on {object}, which the polling source \
         needs to {why}"
    )]
    MissingPrivilege {
        role: String,
        privilege: &'static str,
        object: String,
        why: &'static str,
    },
    #[error(
        "outbox table {table} has no column {column:?} (RELAY_FIELD_EVENT_ID), which the \
         polling source orders by"
    )]
    MissingIdColumn { table: String, column: String },
    #[error("{what} failed: {source}")]
    Sql {
        what: String,
        #[source]
        source: sqlx::Error,
    },
}

fn sql(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> PollingStartError {
    let what = what.into();
    move |source| PollingStartError::Sql { what, source }
}

/// `"name"`, with embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What the polling source knows about one outbox table, read from the catalog.
#[derive(Debug, Clone)]
pub(crate) struct TableShape {
    /// The table's columns; its id is the table's OID.
    pub(crate) schema: TableSchema,
    /// Whether the select list ends with the `timestamp` column as Unix microseconds.
    pub(crate) has_epoch: bool,
    /// Whether an index leads with the first ORDER BY column.
    order_indexed: bool,
    select_sql: String,
    delete_sql: String,
    backlog_sql: String,
}

/// Reads `table`'s columns and builds its statements.
pub(crate) async fn describe(
    connection: &mut PgConnection,
    table: &TableName,
    id_column: &str,
    database: &str,
) -> Result<TableShape, PollingStartError> {
    let quoted = table.quoted();
    let (oid,): (Option<i64>,) = sqlx::query_as("SELECT to_regclass($1)::oid::int8")
        .bind(&quoted)
        .fetch_one(&mut *connection)
        .await
        .map_err(sql(format!("looking up table {table}")))?;
    let oid = oid.ok_or_else(|| PollingStartError::MissingTable {
        table: table.to_string(),
        database: database.to_owned(),
    })?;
    let rows: Vec<(String, i64, i32, i16)> = sqlx::query_as(
        "SELECT attname::text, atttypid::int8, atttypmod, attnum FROM pg_attribute \
         WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped \
           AND attgenerated = '' \
         ORDER BY attnum",
    )
    .bind(oid)
    .fetch_all(&mut *connection)
    .await
    .map_err(sql(format!("reading the columns of {table}")))?;
    let columns: Vec<ColumnSchema> = rows
        .iter()
        .map(|(name, type_oid, _, _)| ColumnSchema {
            name: name.clone(),
            type_oid: u32::try_from(*type_oid).unwrap_or(0),
        })
        .collect();
    let attnum_of = |name: &str| {
        rows.iter()
            .find(|(column, ..)| column == name)
            .map(|(.., attnum)| *attnum)
    };
    let id_attnum = attnum_of(id_column).ok_or_else(|| PollingStartError::MissingIdColumn {
        table: table.to_string(),
        column: id_column.to_owned(),
    })?;
    let timestamp = columns.iter().find(|c| c.name == TIMESTAMP_COLUMN);
    let has_epoch = timestamp.is_some_and(|c| TIMESTAMP_TYPE_OIDS.contains(&c.type_oid));
    let first_order_attnum = attnum_of(TIMESTAMP_COLUMN).unwrap_or(id_attnum);
    let (order_indexed,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1::int8::oid AND indkey[0] = $2)",
    )
    .bind(oid)
    .bind(first_order_attnum)
    .fetch_one(&mut *connection)
    .await
    .map_err(sql(format!("reading the indexes of {table}")))?;

    let mut select_list: Vec<String> = columns
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.name)))
        .collect();
    select_list.push("ctid::text".to_owned());
    let ts = quote_ident(TIMESTAMP_COLUMN);
    if has_epoch {
        select_list.push(format!("(extract(epoch FROM {ts}) * 1000000)::int8"));
    }
    let order_by = if timestamp.is_some() {
        format!("{ts}, {}", quote_ident(id_column))
    } else {
        quote_ident(id_column)
    };
    let select_sql = format!(
        "SELECT {} FROM {quoted} ORDER BY {order_by} LIMIT $1 FOR UPDATE NOWAIT",
        select_list.join(", ")
    );
    let delete_sql = format!("DELETE FROM {quoted} WHERE ctid = ANY($1::tid[])");
    let oldest_age = if has_epoch {
        format!("COALESCE(extract(epoch FROM now() - min({ts}))::float8, 0)")
    } else {
        "0::float8".to_owned()
    };
    let backlog_sql = format!("SELECT count(*), {oldest_age} FROM {quoted}");
    Ok(TableShape {
        schema: TableSchema {
            id: u32::try_from(oid).unwrap_or(0),
            name: table.clone(),
            columns,
        },
        has_epoch,
        order_indexed,
        select_sql,
        delete_sql,
        backlog_sql,
    })
}

/// Start checks of the polling source: the server answers, each table exists, the role may
/// read, lock and delete its rows, and it has the event id column. No replication
/// requirements (`wal_level`, REPLICATION, publication, slot) apply.
pub async fn prepare(config: &Config) -> Result<(), PollingStartError> {
    let settings = &config.postgres;
    let mut connection = source::connect(settings, config.connect_timeout).await?;
    for table in &config.router.tables {
        let shape = describe(
            &mut connection,
            table,
            &config.router.field_event_id,
            &settings.database,
        )
        .await?;
        let quoted = table.quoted();
        let (schema_usage, select, update, delete): (bool, bool, bool, bool) = sqlx::query_as(
            "SELECT has_schema_privilege($2, 'USAGE'), has_table_privilege($1, 'SELECT'), \
                    has_any_column_privilege($1, 'UPDATE'), has_table_privilege($1, 'DELETE')",
        )
        .bind(&quoted)
        .bind(&table.schema)
        .fetch_one(&mut connection)
        .await
        .map_err(sql(format!("reading the privileges on {table}")))?;
        let missing = |privilege, object: String, why| PollingStartError::MissingPrivilege {
            role: settings.user.clone(),
            privilege,
            object,
            why,
        };
        if !schema_usage {
            return Err(missing(
                "USAGE",
                format!("schema {}", table.schema),
                "reach the outbox table",
            ));
        }
        for (granted, privilege, why) in [
            (select, "SELECT", "read the outbox rows"),
            (
                update,
                "UPDATE",
                "lock the rows it publishes (SELECT ... FOR UPDATE)",
            ),
            (delete, "DELETE", "delete the rows the broker confirmed"),
        ] {
            if !granted {
                return Err(missing(privilege, format!("table {table}"), why));
            }
        }
        if !shape.order_indexed {
            tracing::warn!(
                %table,
                "no index leads with the polling order column: every poll scans the whole \
                 table (CREATE INDEX ON {quoted} (\"timestamp\", id) avoids it)"
            );
        }
    }
    close_bounded(connection).await;
    Ok(())
}

/// A polled row's place: batch `batch` (numbered from the relay's start), row `row` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PollPosition {
    pub batch: u64,
    pub row: u32,
}

impl fmt::Display for PollPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch {} row {}", self.batch, self.row)
    }
}

impl Position for PollPosition {
    fn as_lsn(&self) -> Option<pgoutput::Lsn> {
        None
    }
}

/// One configured outbox table and its polling state.
#[derive(Debug)]
struct PolledTable {
    display: String,
    shape: TableShape,
    /// After finding a row locked by another session: no poll before then.
    retry_at: Instant,
    backoff: Backoff,
    /// The last poll found a row locked by another session (logged once per wait).
    waiting_for_lock: bool,
}

/// A row read from an outbox table.
struct PolledRow {
    row: Row,
    ctid: String,
    /// The row's `timestamp` column, when the table has one and it is not NULL.
    stamped: Option<CommitTime>,
}

fn read_row(shape: &TableShape, row: &PgRow) -> Result<PolledRow, sqlx::Error> {
    let count = shape.schema.columns.len();
    let mut values = Vec::with_capacity(count);
    for index in 0..count {
        let value: Option<String> = row.try_get(index)?;
        values.push(value.map_or(Value::Null, |text| Value::Text(Bytes::from(text))));
    }
    let ctid: String = row.try_get(count)?;
    let epoch_micros: Option<i64> = if shape.has_epoch {
        row.try_get(count + 1)?
    } else {
        None
    };
    Ok(PolledRow {
        row: Row {
            table: shape.schema.id,
            values,
        },
        ctid,
        stamped: epoch_micros.map(CommitTime::from_unix_micros),
    })
}

/// Whether a `NOWAIT` lock found a row locked by another session (SQLSTATE 55P03).
fn is_lock_not_available(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == "55P03")
}

/// An event from the worker, with the rewind epoch it was read in.
type Tagged = (u64, Result<SourceEvent<PollPosition>, SourceError>);

/// What the pipeline tells the worker besides acks.
#[derive(Debug)]
enum Command {
    /// Commit what was acked, forget the rest of the batch and poll again; tag what follows
    /// with `epoch`.
    Rewind { epoch: u64 },
    /// Commit what was acked and end.
    Close,
}

/// One session: the worker task and its channels.
#[derive(Debug)]
struct Session {
    events: mpsc::Receiver<Tagged>,
    acks: watch::Sender<PollPosition>,
    commands: mpsc::UnboundedSender<Command>,
    worker: JoinHandle<()>,
}

/// The polling [`Source`].
pub(crate) struct PollingSource {
    config: Arc<Config>,
    session: Option<Session>,
    /// Events read before the last rewind are dropped.
    epoch: u64,
    /// The oldest row's age in seconds (f64 bits), sampled by the worker.
    backlog_age: Arc<AtomicU64>,
}

impl fmt::Debug for PollingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollingSource")
            .field("session", &self.session.is_some())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl PollingSource {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        Self {
            config,
            session: None,
            epoch: 0,
            backlog_age: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Tries to take every table's advisory lock; `false` when another relay holds one.
async fn take_locks(connection: &mut PgConnection, tables: &[TableName]) -> sqlx::Result<bool> {
    for table in tables {
        let (taken,): (bool,) =
            sqlx::query_as("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(format!("outbox-relay polling {table}"))
                .fetch_one(&mut *connection)
                .await?;
        if !taken {
            return Ok(false);
        }
    }
    Ok(true)
}

impl Source for PollingSource {
    type Position = PollPosition;
    const REREADS_CHANGED_ROWS: bool = true;

    async fn open(&mut self, from: PollPosition) -> Result<Opened<PollPosition>, SourceError> {
        self.disconnect();
        let config = &self.config;
        let mut connection = source::connect(&config.postgres, Duration::ZERO).await?;
        if !take_locks(&mut connection, &config.router.tables).await? {
            // Closing the session releases the locks taken.
            close_bounded(connection).await;
            return Ok(Opened::Standby);
        }
        let mut tables = Vec::with_capacity(config.router.tables.len());
        for name in &config.router.tables {
            let shape = describe(
                &mut connection,
                name,
                &config.router.field_event_id,
                &config.postgres.database,
            )
            .await?;
            tables.push(PolledTable {
                display: name.to_string(),
                shape,
                retry_at: Instant::now(),
                backoff: Backoff::new(MAX_BACKOFF),
                waiting_for_lock: false,
            });
        }
        let (events_tx, events) = mpsc::channel(1024);
        let (acks, acks_rx) = watch::channel(from);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let worker = Worker {
            connection,
            tables,
            batch_size: config.polling.batch_size,
            interval: config.polling.interval,
            events: events_tx,
            acks: acks_rx,
            commands: commands_rx,
            epoch: self.epoch,
            batch: from.batch,
            backlog_age: Arc::clone(&self.backlog_age),
            backlog_sampled_at: None,
        };
        self.session = Some(Session {
            events,
            acks,
            commands,
            worker: tokio::spawn(worker.run()),
        });
        Ok(Opened::Streaming { from })
    }

    async fn next(&mut self) -> Result<SourceEvent<PollPosition>, SourceError> {
        let Some(session) = self.session.as_mut() else {
            return Err(SourceError::Ended);
        };
        loop {
            match session.events.recv().await {
                Some((epoch, event)) if epoch == self.epoch => return event,
                // Read before a rewind: read again after it.
                Some(_) => {}
                None => return Err(SourceError::Ended),
            }
        }
    }

    fn ack(&mut self, position: PollPosition) {
        if let Some(session) = &self.session {
            session.acks.send_replace(position);
        }
    }

    fn rewind(&mut self) {
        self.epoch += 1;
        if let Some(session) = &self.session {
            let _ = session.commands.send(Command::Rewind { epoch: self.epoch });
        }
    }

    fn disconnect(&mut self) {
        if let Some(session) = self.session.take() {
            // Dropping the connection rolls the batch back and releases the locks.
            session.worker.abort();
        }
    }

    async fn close(&mut self, position: PollPosition) {
        let Some(Session {
            events,
            acks,
            commands,
            worker,
        }) = self.session.take()
        else {
            return;
        };
        acks.send_replace(position);
        let _ = commands.send(Command::Close);
        // A worker blocked handing over rows sees the closed channel and commits.
        drop(events);
        let abort = worker.abort_handle();
        if tokio::time::timeout(CLOSE_TIMEOUT, worker).await.is_err() {
            tracing::warn!("the polling worker did not end in time: its batch is rolled back");
            abort.abort();
        }
    }

    fn backlog_age(&self) -> f64 {
        f64::from_bits(self.backlog_age.load(Ordering::Relaxed))
    }
}

/// How a batch's wait for its acks ended.
enum BatchEnd {
    /// Every row acked.
    Acked,
    /// The pipeline rewound: commit the acked rows, poll again.
    Rewound,
    /// Shutdown: commit the acked rows and end.
    Close,
}

/// The task that owns a polling session's connection.
struct Worker {
    connection: PgConnection,
    tables: Vec<PolledTable>,
    batch_size: usize,
    interval: Duration,
    events: mpsc::Sender<Tagged>,
    acks: watch::Receiver<PollPosition>,
    commands: mpsc::UnboundedReceiver<Command>,
    epoch: u64,
    batch: u64,
    backlog_age: Arc<AtomicU64>,
    backlog_sampled_at: Option<Instant>,
}

/// The worker ends: the pipeline dropped the session or asked it to close.
struct Stop;

impl Worker {
    async fn run(mut self) {
        match self.poll_forever().await {
            Ok(Stop) => {}
            Err(error) => {
                let _ = self.events.send((self.epoch, Err(error))).await;
            }
        }
        close_bounded(self.connection).await;
    }

    async fn send(&self, event: SourceEvent<PollPosition>) -> Result<(), Stop> {
        send(&self.events, self.epoch, event).await
    }

    async fn poll_forever(&mut self) -> Result<Stop, SourceError> {
        for index in 0..self.tables.len() {
            let schema = self.tables[index].shape.schema.clone();
            if self.send(SourceEvent::Table(schema)).await.is_err() {
                return Ok(Stop);
            }
        }
        loop {
            if self
                .backlog_sampled_at
                .is_none_or(|at| at.elapsed() >= BACKLOG_SAMPLE_INTERVAL)
            {
                self.sample_backlog().await?;
            }
            let mut wait = self.interval;
            let mut found = false;
            for index in 0..self.tables.len() {
                let now = Instant::now();
                let retry_at = self.tables[index].retry_at;
                if retry_at > now {
                    wait = wait.min(retry_at - now);
                    continue;
                }
                match self.poll_table(index).await? {
                    Polled::Stop => return Ok(Stop),
                    Polled::Rows { full } => {
                        found = true;
                        if full {
                            wait = Duration::ZERO;
                        }
                    }
                    // The stalled row's table is read again at the next round: the other
                    // tables get their turn in between.
                    Polled::Rewound => found = true,
                    Polled::Empty => {}
                }
            }
            if !found
                && self
                    .send(SourceEvent::Idle { position: None })
                    .await
                    .is_err()
            {
                return Ok(Stop);
            }
            if !wait.is_zero() && self.pause(wait).await.is_err() {
                return Ok(Stop);
            }
        }
    }

    /// Waits `wait`, or less when the pipeline closes the session.
    async fn pause(&mut self, wait: Duration) -> Result<(), Stop> {
        let deadline = Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(()),
                command = self.commands.recv() => match command {
                    Some(Command::Rewind { epoch }) => self.epoch = epoch,
                    Some(Command::Close) | None => return Err(Stop),
                },
            }
        }
    }

    /// Sets the backlog gauges: rows per table and the oldest row's age.
    async fn sample_backlog(&mut self) -> Result<(), SourceError> {
        let mut oldest_age: f64 = 0.0;
        for table in &self.tables {
            let (rows, age): (i64, f64) = sqlx::query_as(&table.shape.backlog_sql)
                .fetch_one(&mut self.connection)
                .await?;
            metrics::gauge!(POLLING_BACKLOG_ROWS, "table" => table.display.clone())
                .set(rows as f64);
            oldest_age = oldest_age.max(age);
        }
        self.backlog_age
            .store(oldest_age.to_bits(), Ordering::Relaxed);
        self.backlog_sampled_at = Some(Instant::now());
        Ok(())
    }

    /// Reads one batch of table `index`, hands its rows to the pipeline, waits for their
    /// acks, deletes the acked rows and commits.
    async fn poll_table(&mut self, index: usize) -> Result<Polled, SourceError> {
        let limit = self.batch_size;
        let table = &mut self.tables[index];
        let mut transaction = self.connection.begin().await?;
        let selected = sqlx::query(&table.shape.select_sql)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *transaction)
            .await;
        let rows = match selected {
            Ok(rows) => rows,
            Err(error) if is_lock_not_available(&error) => {
                transaction.rollback().await?;
                let delay = table.backoff.next_delay();
                if !table.waiting_for_lock {
                    tracing::info!(
                        table = %table.display, retry_in = ?delay,
                        "a row to relay next is locked by another session (an UPDATE or \
                         DELETE under way?): waiting for it, to keep the table's order"
                    );
                }
                table.waiting_for_lock = true;
                table.retry_at = Instant::now() + delay;
                return Ok(Polled::Empty);
            }
            Err(error) => return Err(error.into()),
        };
        if std::mem::take(&mut table.waiting_for_lock) {
            table.backoff.reset();
        }
        if rows.is_empty() {
            transaction.rollback().await?;
            return Ok(Polled::Empty);
        }
        let mut polled = Vec::with_capacity(rows.len());
        for row in &rows {
            polled.push(read_row(&table.shape, row)?);
        }
        let table_name = table.display.clone();
        self.batch += 1;
        let batch = self.batch;
        let mut ctids = Vec::with_capacity(polled.len());
        let mut last = PollPosition { batch, row: 0 };
        let mut closed = false;
        for (row, polled) in (0u32..).zip(polled) {
            last = PollPosition { batch, row };
            ctids.push(polled.ctid);
            // Each row is a transaction of its own: its ack may delete it.
            let events = &self.events;
            let epoch = self.epoch;
            let sent = async {
                send(
                    events,
                    epoch,
                    SourceEvent::Begin {
                        commit_time: polled.stamped,
                    },
                )
                .await?;
                send(events, epoch, SourceEvent::Row(polled.row)).await?;
                send(events, epoch, SourceEvent::Commit { position: last }).await
            };
            if sent.await.is_err() {
                // The pipeline is closing: commit what it acked.
                closed = true;
                break;
            }
        }
        let end = if closed {
            BatchEnd::Close
        } else {
            wait_for_acks(&mut self.acks, &mut self.commands, &mut self.epoch, last).await
        };
        let acked = *self.acks.borrow();
        let delete = if acked.batch == batch {
            let count = usize::try_from(acked.row).map_or(ctids.len(), |row| row + 1);
            &ctids[..count.min(ctids.len())]
        } else if acked.batch > batch {
            &ctids[..]
        } else {
            &ctids[..0]
        };
        if !delete.is_empty() {
            let sql = &self.tables[index].shape.delete_sql;
            let deleted = sqlx::query(sql)
                .bind(delete)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
            if deleted != delete.len() as u64 {
                tracing::warn!(table = %table_name, deleted, published = delete.len(), "deleted fewer rows than published");
            }
        }
        transaction.commit().await?;
        tracing::debug!(table = %table_name, rows = ctids.len(), deleted = delete.len(), "batch relayed");
        Ok(match end {
            BatchEnd::Acked => Polled::Rows {
                full: ctids.len() >= limit,
            },
            BatchEnd::Rewound => Polled::Rewound,
            BatchEnd::Close => Polled::Stop,
        })
    }
}

async fn send(
    events: &mpsc::Sender<Tagged>,
    epoch: u64,
    event: SourceEvent<PollPosition>,
) -> Result<(), Stop> {
    events.send((epoch, Ok(event))).await.map_err(|_| Stop)
}

/// Waits until `last` is acked, or a rewind or close.
async fn wait_for_acks(
    acks: &mut watch::Receiver<PollPosition>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    current_epoch: &mut u64,
    last: PollPosition,
) -> BatchEnd {
    loop {
        if *acks.borrow_and_update() >= last {
            return BatchEnd::Acked;
        }
        tokio::select! {
            changed = acks.changed() => {
                if changed.is_err() {
                    return BatchEnd::Close;
                }
            }
            command = commands.recv() => match command {
                Some(Command::Rewind { epoch }) => {
                    *current_epoch = epoch;
                    return BatchEnd::Rewound;
                }
                Some(Command::Close) | None => return BatchEnd::Close,
            },
        }
    }
}

/// How one poll of a table went.
enum Polled {
    Empty,
    Rows { full: bool },
    Rewound,
    Stop,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("timestamp"), "\"timestamp\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn positions_order_by_batch_then_row() {
        let at = |batch, row| PollPosition { batch, row };
        assert!(at(1, 9) < at(2, 0));
        assert!(at(2, 0) < at(2, 1));
        assert_eq!(at(3, 4).to_string(), "batch 3 row 4");
        assert_eq!(at(3, 4).as_lsn(), None);
    }
}
