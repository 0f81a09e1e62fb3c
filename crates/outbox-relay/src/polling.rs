//! The polling source (`--source polling`): the common alternative to change-data-capture,
//! for databases where logical replication is not allowed (no `wal_level = logical`, no
//! REPLICATION role, a managed service that forbids slots).
//!
//! One worker loop polls each outbox table in turn, one transaction per batch:
//!
//! ```sql
//! BEGIN;
//! SELECT <every column>::text, ctid, ... FROM <table>
//!   ORDER BY "timestamp", <event id> LIMIT <batch> FOR UPDATE NOWAIT;
//! -- route and encode every row, publish all with confirms, await every confirm
//! DELETE FROM <table> WHERE ctid = ANY(<the published rows>);
//! COMMIT;
//! ```
//!
//! Rows are routed and encoded by the same [`Router`] and `wire_format` code as the replication
//! source: the table's columns are read from `pg_attribute` into a synthetic pgoutput
//! `Relation`, and each row becomes a pgoutput `Insert` with text values (the `::text` cast
//! gives the same type output function pgoutput uses), so a row yields the same message body
//! and headers from either source. The AMQP `timestamp` is the row's `timestamp` column (the
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
//! Rows are deleted in the transaction that read them, only after the broker confirmed every
//! message of the batch. A returned message (no queue bound), a nack, a broker failure or a
//! PostgreSQL failure rolls the batch back: the rows stay and are retried after a backoff (up
//! to 5 s; after a return or nack one row at a time until the broker takes it, like the
//! replication pipeline's probe). A crash between the confirms and the commit publishes the
//! batch again at the next poll (at-least-once, same `message_id`). An unroutable row goes to
//! `RELAY_DEAD_LETTER_EXCHANGE` when set (then it is deleted); without it the table stalls at
//! that row: the rows before it are relayed, nothing after it, `/health` says why, and the row
//! is read again with backoff, so fixing it (or deleting it) resumes without a restart.
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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use pgoutput::{Column, Insert, Relation, TupleData, TupleValue};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::broker::BrokerConnection;
use crate::config::Config;
use crate::message;
use crate::router::{Router, TableName};
use crate::sink::{AmqpSink, Outcome, OutgoingMessage};
use crate::source::{self, StartError};
use crate::telemetry::{
    CommitDelays, CommitTime, ExchangeCounters, ExchangeMetrics, IN_FLIGHT, OLDEST_UNCONFIRMED_AGE,
    POLLING_BACKLOG_ROWS, RECONNECTS, RelayStatus, UNROUTABLE, unix_micros_now,
};

/// The column the polling source orders by when the table has it.
const TIMESTAMP_COLUMN: &str = "timestamp";
/// `timestamp` and `timestamptz`: the types whose value becomes the AMQP timestamp.
const TIMESTAMP_TYPE_OIDS: [u32; 2] = [1114, 1184];
/// A publish whose confirm takes longer than this means a broken broker connection.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a standby relay tries to take the tables' locks.
const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// How often the backlog gauges are sampled.
const BACKLOG_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest pause between retries after a failure or a refused batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What the polling source knows about one outbox table, read from the catalog.
#[derive(Debug, Clone)]
struct TableShape {
    /// The table as pgoutput would describe it; its id is the table's OID.
    relation: Relation,
    /// Whether the select list ends with the `timestamp` column as Unix microseconds.
    has_epoch: bool,
    /// Whether an index leads with the first ORDER BY column.
    order_indexed: bool,
    select_sql: String,
    delete_sql: String,
    backlog_sql: String,
}

/// Reads `table`'s columns and builds its statements.
async fn describe(
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
    let columns: Vec<Column> = rows
        .iter()
        .map(|(name, type_oid, type_modifier, _)| Column {
            is_key: name == id_column,
            name: name.clone(),
            type_oid: u32::try_from(*type_oid).unwrap_or(0),
            type_modifier: *type_modifier,
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
        relation: Relation {
            relation_id: u32::try_from(oid).unwrap_or(0),
            namespace: table.schema.clone(),
            name: table.table.clone(),
            replica_identity: b'd',
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
    let _ = connection.close().await;
    Ok(())
}

/// One configured outbox table and its polling state.
#[derive(Debug)]
struct PolledTable {
    name: TableName,
    display: String,
    /// Hashed server-side into the advisory lock key.
    lock_name: String,
    /// Read from the catalog on every new session.
    shape: Option<TableShape>,
    /// After a refused batch or an unroutable row: no poll before then.
    retry_at: Instant,
    backoff: Backoff,
    /// After a return or nack: one row per batch until the broker takes one.
    probing: bool,
    /// Why the table does not advance, if it does not.
    stalled: Option<String>,
    /// The last poll found a row locked by another session (logged once per wait).
    waiting_for_lock: bool,
}

/// A row read from an outbox table.
struct PolledRow {
    insert: Insert,
    ctid: String,
    /// The row's `timestamp` column, when the table has one and it is not NULL.
    stamped: Option<CommitTime>,
}

fn read_row(shape: &TableShape, row: &PgRow) -> Result<PolledRow, sqlx::Error> {
    let count = shape.relation.columns.len();
    let mut columns = Vec::with_capacity(count);
    for index in 0..count {
        let value: Option<String> = row.try_get(index)?;
        columns.push(value.map_or(TupleValue::Null, |text| TupleValue::Text(Bytes::from(text))));
    }
    let ctid: String = row.try_get(count)?;
    let epoch_micros: Option<i64> = if shape.has_epoch {
        row.try_get(count + 1)?
    } else {
        None
    };
    Ok(PolledRow {
        insert: Insert {
            relation_id: shape.relation.relation_id,
            new_tuple: TupleData { columns },
        },
        ctid,
        stamped: epoch_micros.map(CommitTime::from_unix_micros),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A row of the batch under way, routed and encoded.
struct BatchEvent {
    message: OutgoingMessage,
    counters: Arc<ExchangeCounters>,
    stamped: Option<CommitTime>,
}

/// Why a batch was abandoned (rolled back).
#[derive(Debug)]
enum BatchError {
    /// The PostgreSQL session is unusable: reconnect.
    Postgres(String),
    /// The broker connection is unusable: reconnect.
    Broker(String),
}

fn postgres_error(error: sqlx::Error) -> BatchError {
    BatchError::Postgres(error.to_string())
}

/// Whether a `NOWAIT` lock found a row locked by another session (SQLSTATE 55P03).
fn is_lock_not_available(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == "55P03")
}

/// The polling worker.
pub(crate) struct Poller {
    config: Arc<Config>,
    status: Arc<RelayStatus>,
    router: Router,
    exchange_metrics: ExchangeMetrics,
    commit_delays: CommitDelays,
    tables: Vec<PolledTable>,
    connection: Option<PgConnection>,
    /// Holding every table's advisory lock.
    active: bool,
    standby: bool,
    /// PostgreSQL sessions opened so far (the first is not a reconnect).
    sessions: u64,
    postgres_retry_at: Instant,
    postgres_backoff: Backoff,
    broker: BrokerConnection,
    backlog_sampled_at: Option<Instant>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("active", &self.active)
            .field("standby", &self.standby)
            .finish_non_exhaustive()
    }
}

impl Poller {
    pub(crate) fn new(config: Arc<Config>, status: Arc<RelayStatus>, sink: AmqpSink) -> Self {
        let now = Instant::now();
        let tables = config
            .router
            .tables
            .iter()
            .map(|name| PolledTable {
                name: name.clone(),
                display: name.to_string(),
                lock_name: format!("outbox-relay polling {name}"),
                shape: None,
                retry_at: now,
                backoff: Backoff::new(MAX_BACKOFF),
                probing: false,
                stalled: None,
                waiting_for_lock: false,
            })
            .collect();
        Self {
            router: Router::new(config.router.clone()),
            exchange_metrics: ExchangeMetrics::default(),
            commit_delays: CommitDelays::register(),
            tables,
            connection: None,
            active: false,
            standby: false,
            sessions: 0,
            postgres_retry_at: now,
            postgres_backoff: Backoff::new(MAX_BACKOFF),
            broker: BrokerConnection::new(sink, &status),
            backlog_sampled_at: None,
            config,
            status,
        }
    }

    /// Polls until `shutdown` resolves. A batch under way then gets up to
    /// `RELAY_SHUTDOWN_TIMEOUT_SECS` to finish; one cut short rolls back (its rows stay).
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send + '_>> = Box::pin(shutdown);
        let shutdown_timeout = self.config.shutdown_timeout;
        loop {
            let next_round = {
                let step = self.step();
                tokio::pin!(step);
                tokio::select! {
                    biased;
                    () = &mut shutdown => {
                        tracing::info!("shutting down: finishing the batch under way");
                        if tokio::time::timeout(shutdown_timeout, &mut step).await.is_err() {
                            tracing::warn!("shutdown timeout: the batch under way is rolled back (its rows stay)");
                        }
                        None
                    }
                    wait = &mut step => Some(wait),
                }
            };
            let Some(wait) = next_round else { break };
            if !wait.is_zero() {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        self.finish().await;
    }

    async fn finish(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Closing the session releases the advisory locks for a standby.
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.close()).await;
        }
        self.broker.close().await;
        self.status.set_streaming(false);
        self.status.set_broker_connected(false);
        tracing::info!("relay stopped");
    }

    /// One round: (re)connect as needed, then one batch per table. Returns how long to wait
    /// before the next round.
    async fn step(&mut self) -> Duration {
        if self.connection.is_none()
            && let Some(wait) = self.open_session().await
        {
            return wait;
        }
        if self
            .backlog_sampled_at
            .is_none_or(|at| at.elapsed() >= BACKLOG_SAMPLE_INTERVAL)
            && let Err(error) = self.sample_backlog().await
        {
            return self.postgres_failed(error.to_string()).await;
        }
        if !self.active {
            match self.take_locks().await {
                Ok(true) => {}
                Ok(false) => return STANDBY_RETRY,
                Err(error) => return self.postgres_failed(error.to_string()).await,
            }
        }
        if let Some(wait) = self.ensure_sink().await {
            return wait;
        }
        let mut wait = self.config.polling.interval;
        for index in 0..self.tables.len() {
            let now = Instant::now();
            let retry_at = self.tables[index].retry_at;
            if retry_at > now {
                wait = wait.min(retry_at - now);
                continue;
            }
            match self.poll_table(index).await {
                Ok(true) => wait = Duration::ZERO,
                Ok(false) => {}
                Err(BatchError::Postgres(reason)) => return self.postgres_failed(reason).await,
                Err(BatchError::Broker(reason)) => return self.broker_failed(reason).await,
            }
        }
        wait
    }

    /// Connects and reads the tables' shapes; `Some(wait)` when not connected.
    async fn open_session(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if now < self.postgres_retry_at {
            return Some(self.postgres_retry_at - now);
        }
        let settings = &self.config.postgres;
        let mut connection = match source::connect(settings, Duration::ZERO).await {
            Ok(connection) => connection,
            Err(error) => return Some(self.postgres_failed(error.to_string()).await),
        };
        // Columns may have changed while we were away: a fresh Relation for each table.
        let mut router = Router::new(self.config.router.clone());
        for table in &mut self.tables {
            match describe(
                &mut connection,
                &table.name,
                &self.config.router.field_event_id,
                &settings.database,
            )
            .await
            {
                Ok(shape) => {
                    router.on_relation(&shape.relation);
                    table.shape = Some(shape);
                }
                Err(error) => {
                    let _ = connection.close().await;
                    return Some(self.postgres_failed(error.to_string()).await);
                }
            }
        }
        self.router = router;
        if self.sessions > 0 {
            metrics::counter!(RECONNECTS, "server" => "postgresql").increment(1);
            tracing::info!(database = %settings.display(), "reconnected to PostgreSQL");
        }
        self.sessions += 1;
        self.connection = Some(connection);
        self.active = false;
        None
    }

    /// Tries to take every table's advisory lock; `Ok(false)` when another relay holds one.
    async fn take_locks(&mut self) -> Result<bool, sqlx::Error> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(false);
        };
        let mut all = true;
        for table in &self.tables {
            let (taken,): (bool,) =
                sqlx::query_as("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(&table.lock_name)
                    .fetch_one(&mut *connection)
                    .await?;
            all &= taken;
            if !taken {
                break;
            }
        }
        if all {
            if self.standby {
                tracing::info!("took over polling: the other relay's locks are released");
            }
            tracing::info!(
                tables = %self.tables.iter().map(|t| t.display.as_str()).collect::<Vec<_>>().join(","),
                "polling"
            );
            self.active = true;
            self.standby = false;
            self.status.set_standby(false);
            self.status.set_streaming(true);
            self.status.set_last_error(None);
            self.postgres_backoff.reset();
            return Ok(true);
        }
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut *connection)
            .await?;
        if !self.standby {
            tracing::info!(
                "another relay polls these tables (advisory lock held): standing by, \
                 retrying every second"
            );
        }
        self.standby = true;
        self.status.set_standby(true);
        self.status.set_streaming(false);
        Ok(false)
    }

    /// Drops the session (its locks go with it) and schedules a reconnect.
    async fn postgres_failed(&mut self, reason: String) -> Duration {
        let delay = self.postgres_backoff.next_delay();
        tracing::warn!(%reason, retry_in = ?delay, "PostgreSQL session lost; the batch under way is rolled back");
        self.status
            .set_last_error(Some(format!("PostgreSQL: {reason}")));
        self.status.set_streaming(false);
        self.status.set_in_flight(0);
        if let Some(connection) = self.connection.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.close()).await;
        }
        self.active = false;
        self.postgres_retry_at = Instant::now() + delay;
        delay
    }

    /// Reconnects to the broker when it is down; `Some(wait)` when not connected.
    async fn ensure_sink(&mut self) -> Option<Duration> {
        if self.broker.is_lost() {
            return Some(
                self.broker_failed("connection to RabbitMQ closed".to_owned())
                    .await,
            );
        }
        self.broker.reconnect(&self.config, &self.status).await
    }

    /// Drops the broker connection and schedules a reconnect.
    async fn broker_failed(&mut self, reason: String) -> Duration {
        let in_flight = self.status.in_flight();
        self.status.set_in_flight(0);
        self.broker
            .fail(
                &self.status,
                &reason,
                "the batch under way is rolled back and published again",
                in_flight,
            )
            .await
    }

    /// Sets the backlog gauges: rows per table and the oldest row's age.
    async fn sample_backlog(&mut self) -> Result<(), sqlx::Error> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        let mut oldest_age: f64 = 0.0;
        for table in &self.tables {
            let Some(shape) = &table.shape else { continue };
            let (rows, age): (i64, f64) = sqlx::query_as(&shape.backlog_sql)
                .fetch_one(&mut *connection)
                .await?;
            metrics::gauge!(POLLING_BACKLOG_ROWS, "table" => table.display.clone())
                .set(rows as f64);
            oldest_age = oldest_age.max(age);
        }
        metrics::gauge!(OLDEST_UNCONFIRMED_AGE).set(oldest_age);
        self.backlog_sampled_at = Some(Instant::now());
        Ok(())
    }

    /// Reads, publishes and deletes one batch of table `index`; `Ok(true)` when the batch was
    /// full (poll again at once).
    async fn poll_table(&mut self, index: usize) -> Result<bool, BatchError> {
        let Self {
            config,
            status,
            router,
            exchange_metrics,
            commit_delays,
            tables,
            connection,
            broker,
            ..
        } = self;
        let table = &mut tables[index];
        let (Some(connection), Some(shape)) = (connection.as_mut(), table.shape.as_ref()) else {
            return Err(BatchError::Postgres("no session".to_owned()));
        };
        let Some(sink) = broker.sink() else {
            return Err(BatchError::Broker("not connected".to_owned()));
        };
        let limit = if table.probing {
            1
        } else {
            config.polling.batch_size
        };

        let batch_started = Instant::now();
        let mut transaction = connection.begin().await.map_err(postgres_error)?;
        let selected = sqlx::query(&shape.select_sql)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *transaction)
            .await;
        let rows = match selected {
            Ok(rows) => rows,
            Err(error) if is_lock_not_available(&error) => {
                transaction.rollback().await.map_err(postgres_error)?;
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
                return Ok(false);
            }
            Err(error) => return Err(postgres_error(error)),
        };
        if std::mem::take(&mut table.waiting_for_lock) && table.stalled.is_none() && !table.probing
        {
            table.backoff.reset();
        }
        if rows.is_empty() {
            transaction.rollback().await.map_err(postgres_error)?;
            // Whatever blocked the table (a bad row, a refused event) is gone.
            if table.stalled.take().is_some() || table.probing {
                table.probing = false;
                table.backoff.reset();
                refresh_stalled(status, tables);
            }
            return Ok(false);
        }

        let mut messages: Vec<BatchEvent> = Vec::with_capacity(rows.len());
        let mut ctids = Vec::with_capacity(rows.len());
        let mut stalled_on_row = None;
        for row in &rows {
            let polled = read_row(shape, row).map_err(postgres_error)?;
            let timestamp = polled
                .stamped
                .map_or_else(unix_now, CommitTime::unix_seconds);
            let message = match message::for_row(router, config, &polled.insert, timestamp) {
                Ok(Some(message)) => message,
                Ok(None) => {
                    stalled_on_row = Some("the table is not routed".to_owned());
                    break;
                }
                Err(reason) => {
                    let Some(exchange) = &config.dead_letter_exchange else {
                        stalled_on_row = Some(reason);
                        break;
                    };
                    metrics::counter!(UNROUTABLE, "reason" => "row").increment(1);
                    status.add_unroutable();
                    tracing::error!(table = %table.display, %reason, dead_letter_exchange = %exchange, "unroutable outbox row: dead-lettered");
                    message::dead_letter(router, &polled.insert, exchange, &table.display, reason)
                }
            };
            let counters = exchange_metrics.get(&message.exchange);
            messages.push(BatchEvent {
                message,
                counters,
                stamped: polled.stamped,
            });
            ctids.push(polled.ctid);
        }

        // Publish the whole batch, pipelined, then wait for every confirm.
        status.set_in_flight(messages.len() as u64);
        metrics::gauge!(IN_FLIGHT).set(messages.len() as f64);
        let published_at = Instant::now();
        let mut confirms = Vec::with_capacity(messages.len());
        for event in &messages {
            event.counters.received.increment(1);
            let confirm = sink
                .publish(&event.message)
                .await
                .map_err(|error| BatchError::Broker(error.to_string()))?;
            if let Some(stamped) = event.stamped {
                commit_delays.published(stamped, unix_micros_now());
            }
            event.counters.published.increment(1);
            status.add_published();
            // Each confirm's own arrival time, for the commit-to-confirm delay.
            confirms.push(confirm.map(|outcome| (outcome, unix_micros_now())));
        }
        let outcomes = tokio::time::timeout(CONFIRM_TIMEOUT, futures::future::join_all(confirms))
            .await
            .map_err(|_| {
                BatchError::Broker(format!("no confirm within {} s", CONFIRM_TIMEOUT.as_secs()))
            })?;
        let confirm_seconds = published_at.elapsed().as_secs_f64();
        let read_seconds = published_at.duration_since(batch_started).as_secs_f64();
        status.set_in_flight(0);
        metrics::gauge!(IN_FLIGHT).set(0.0);
        let mut refused = None;
        for (event, (outcome, confirmed_at)) in messages.iter().zip(outcomes) {
            let message = &event.message;
            match outcome {
                Outcome::Delivered => {
                    commit_delays.confirm_took(confirm_seconds);
                    if let Some(stamped) = event.stamped {
                        commit_delays.confirmed(stamped, confirmed_at);
                    }
                    event.counters.confirmed.increment(1);
                    status.add_confirmed();
                }
                Outcome::Failed(reason) => return Err(BatchError::Broker(reason)),
                Outcome::Returned {
                    reply_code,
                    reply_text,
                } => {
                    refused.get_or_insert_with(|| {
                        (
                            "returned",
                            format!(
                                "returned by the broker ({reply_code} {reply_text}): no queue \
                                 is bound to its exchange"
                            ),
                            message,
                        )
                    });
                }
                Outcome::Nacked => {
                    refused.get_or_insert_with(|| {
                        ("nacked", "nacked by the broker".to_owned(), message)
                    });
                }
            }
        }
        if let Some((label, reason, message)) = refused {
            transaction.rollback().await.map_err(postgres_error)?;
            metrics::counter!(UNROUTABLE, "reason" => label).increment(1);
            status.add_unroutable();
            let stalled = format!(
                "event {} to exchange {:?} was {reason}; retrying (its rows stay in {})",
                message.message_id, message.exchange, table.display
            );
            if table.stalled.is_none() {
                tracing::error!(exchange = %message.exchange, event_id = %message.message_id, %reason, "event not delivered: the batch is rolled back and retried until the broker routes it");
            }
            table.stalled = Some(stalled);
            table.probing = true;
            table.retry_at = Instant::now() + table.backoff.next_delay();
            refresh_stalled(status, tables);
            return Ok(false);
        }

        if !ctids.is_empty() {
            let deleted = sqlx::query(&shape.delete_sql)
                .bind(&ctids)
                .execute(&mut *transaction)
                .await
                .map_err(postgres_error)?
                .rows_affected();
            if deleted != ctids.len() as u64 {
                tracing::warn!(table = %table.display, deleted, published = ctids.len(), "deleted fewer rows than published");
            }
        }
        transaction.commit().await.map_err(postgres_error)?;
        tracing::debug!(
            table = %table.display,
            rows = rows.len(),
            read_seconds,
            publish_confirm_seconds = confirm_seconds,
            total_seconds = batch_started.elapsed().as_secs_f64(),
            "batch relayed"
        );

        if let Some(reason) = stalled_on_row {
            let stalled = format!("unroutable outbox row in {}: {reason}", table.display);
            if table.stalled.as_deref() != Some(stalled.as_str()) {
                metrics::counter!(UNROUTABLE, "reason" => "row").increment(1);
                status.add_unroutable();
                tracing::error!(
                    table = %table.display, %reason,
                    "unroutable outbox row: the table stalls here (nothing after it is \
                     published) until the row is fixed or deleted, or \
                     RELAY_DEAD_LETTER_EXCHANGE is set"
                );
            }
            table.stalled = Some(stalled);
            table.probing = false;
            table.retry_at = Instant::now() + table.backoff.next_delay();
            refresh_stalled(status, tables);
            return Ok(false);
        }
        if table.stalled.take().is_some() || table.probing {
            tracing::info!(table = %table.display, "the table's events get through again: resuming");
            table.probing = false;
            table.backoff.reset();
            refresh_stalled(status, tables);
            // The probe was one row: poll the rest at once.
            return Ok(true);
        }
        Ok(rows.len() >= limit)
    }
}

/// `/health`'s `stalled`: the first stalled table's reason.
fn refresh_stalled(status: &RelayStatus, tables: &[PolledTable]) {
    status.set_stalled(tables.iter().find_map(|table| table.stalled.clone()));
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
}
