//! `outbox-relay resync`: re-publishes outbox rows still in the table, for a time range or
//! from a given event on, then exits.
//!
//! Two recovery paths need it (docs/operations.md):
//! - **A consumer lost data** (restored from an old backup): re-publish from before the
//!   backup. The relay keeps streaming meanwhile; consumers drop what they already have by
//!   `message_id`.
//! - **PostgreSQL invalidated the slot** (`max_slot_wal_keep_size`): the WAL after the slot's
//!   position is gone. With `--recreate-slot` the resync first drops the invalidated slot
//!   and creates it anew, and only then reads the table: every transaction that committed
//!   before the new slot's consistent point is visible to the read, every later one is in
//!   the slot. A relay started afterwards streams from the slot: nothing falls in between
//!   (rows in both are published twice, with the same `message_id`).
//!
//! The rows go through the relay's own pipeline, router, wire format and sink, so a
//! re-published event is the same message the relay sent the first time: same `message_id`
//! (the event id), headers, body and routing. Rows are read in `("timestamp", <event id>)`
//! order, one table after another, by one query per table streamed from the server (memory
//! is bounded by the pipeline's window, not by the range). The AMQP timestamp is the row's
//! `timestamp` column (the first publish used the commit time; they differ by the length of
//! the producer's transaction). If PostgreSQL fails mid-way the read starts again from the
//! range's beginning (more duplicates, nothing missed).
//!
//! A row the router cannot route goes to `RELAY_DEAD_LETTER_EXCHANGE` as when streaming;
//! without one the resync stops with the row's reason instead of waiting for a fix.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pgoutput::Lsn;
use sqlx::{PgConnection, Row as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, ResyncArgs, SourceKind};
use crate::pipeline::{Pipeline, Settings};
use crate::polling::{self, PollingStartError, TIMESTAMP_COLUMN, TableShape, quote_ident};
use crate::row::{Row, Value};
use crate::sink::{AmqpConnector, SinkError};
use crate::source::{self, Opened, Position, Source, SourceError, SourceEvent, StartError};
use crate::telemetry::{CommitTime, RelayStatus};

/// Why a resync could not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("{flag} is invalid: {reason}")]
    InvalidFlag { flag: &'static str, reason: String },
    #[error(
        "outbox table {table} has no \"timestamp\" column of a timestamp type: resync selects \
         rows by it"
    )]
    NoTimestamp { table: String },
    #[error("event {id} is not in {tables} (deleted, or never written there?)")]
    UnknownEvent { id: String, tables: String },
    #[error(
        "replication slot {slot:?} is held by a running relay (PID {pid} on the server): stop \
         every relay on it before --recreate-slot"
    )]
    SlotActive { slot: String, pid: i32 },
    #[error(
        "replication slot {slot:?} is valid (wal_status {status}): --recreate-slot only \
         replaces a slot PostgreSQL invalidated. Without the flag, resync re-publishes while \
         the relay goes on streaming from its slot"
    )]
    SlotValid { slot: String, status: String },
    #[error("--recreate-slot is for the replication source, and RELAY_SOURCE is polling")]
    NoSlot,
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Table(#[from] PollingStartError),
    #[error("{what} failed: {source}")]
    Sql {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Broker(#[from] SinkError),
    #[error(
        "stopped at a row the relay cannot route ({reason}); set RELAY_DEAD_LETTER_EXCHANGE to \
         park such rows, or fix the row, and run the resync again"
    )]
    Stalled { reason: String },
    #[error(
        "stopped before RabbitMQ confirmed every event ({confirmed} of {read} read): run the \
         resync again (re-publishing is harmless: same message ids)"
    )]
    Incomplete { confirmed: u64, read: u64 },
}

fn sql(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> ResyncError {
    let what = what.into();
    move |source| ResyncError::Sql { what, source }
}

/// The rows to re-publish: stamped at or after `since`, and before `until` when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

fn parse_time(flag: &'static str, text: &str) -> Result<DateTime<Utc>, ResyncError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| ResyncError::InvalidFlag {
            flag,
            reason: format!(
                "{text:?} is not an RFC 3339 time such as 2026-12-02T09:30:00Z ({error})"
            ),
        })
}

/// What a resync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncReport {
    pub range: TimeRange,
    /// Rows in the range when the resync started.
    pub rows: u64,
    /// Events RabbitMQ confirmed (0 for a dry run).
    pub published: u64,
    /// The first and last row in the range, `(timestamp, event id)`.
    pub first: Option<(String, String)>,
    pub last: Option<(String, String)>,
    /// The new slot's position, when `--recreate-slot` made one.
    pub recreated_slot: Option<Lsn>,
    pub dry_run: bool,
}

impl fmt::Display for ResyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let until = self
            .range
            .until
            .map_or_else(|| "now".to_owned(), |until| until.to_rfc3339());
        if let Some(lsn) = self.recreated_slot {
            writeln!(f, "replication slot created anew at {lsn}")?;
        }
        if self.dry_run {
            write!(
                f,
                "dry run: {} rows from {} to {until}",
                self.rows,
                self.range.since.to_rfc3339()
            )?;
        } else {
            write!(
                f,
                "re-published {} events ({} rows from {} to {until})",
                self.published,
                self.rows,
                self.range.since.to_rfc3339()
            )?;
        }
        if let (Some((first_at, first_id)), Some((last_at, last_id))) = (&self.first, &self.last) {
            write!(
                f,
                "; first {first_id} at {first_at}, last {last_id} at {last_at}"
            )?;
        }
        Ok(())
    }
}

/// Runs a resync with the relay's settings until done, or until `shutdown` resolves (then
/// it fails with [`ResyncError::Incomplete`] after the events under way are confirmed).
pub async fn run(
    config: Config,
    args: &ResyncArgs,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<ResyncReport, ResyncError> {
    let until = args
        .until
        .as_deref()
        .map(|text| parse_time("--until", text))
        .transpose()?;
    let mut connection = connect_utc(&config.postgres, config.connect_timeout).await?;

    // The slot first: every row the table read below misses is then in the slot.
    let recreated_slot = if args.recreate_slot {
        Some(recreate_slot(&mut connection, &config).await?)
    } else {
        if config.source == SourceKind::Replication {
            warn_if_invalidated(&mut connection, &config.slot).await;
        }
        None
    };

    let mut shapes = Vec::with_capacity(config.router.tables.len());
    for table in &config.router.tables {
        let shape = polling::describe(
            &mut connection,
            table,
            &config.router.field_event_id,
            &config.postgres.database,
        )
        .await?;
        if !shape.has_epoch {
            return Err(ResyncError::NoTimestamp {
                table: table.to_string(),
            });
        }
        shapes.push(shape);
    }
    let since = match (&args.since, &args.from_event) {
        (Some(since), _) => parse_time("--since", since)?,
        (None, Some(id)) => event_time(&mut connection, &shapes, &config, id).await?,
        (None, None) => {
            return Err(ResyncError::InvalidFlag {
                flag: "--since",
                reason: "give --since or --from-event".to_owned(),
            });
        }
    };
    let range = TimeRange { since, until };
    let queries: Vec<TableQuery> = shapes
        .into_iter()
        .map(|shape| TableQuery::new(shape, &config.router.field_event_id, range))
        .collect();
    let mut rows = 0;
    let mut first = None;
    let mut last = None;
    for query in &queries {
        let (count, table_first, table_last) = query.extent(&mut connection).await?;
        rows += count;
        first = first.or(table_first);
        last = table_last.or(last);
    }
    source::close_bounded(connection).await;
    tracing::info!(rows, since = %range.since, until = ?range.until, "rows to re-publish");

    let mut report = ResyncReport {
        range,
        rows,
        published: 0,
        first,
        last,
        recreated_slot,
        dry_run: args.dry_run,
    };
    if args.dry_run || rows == 0 {
        return Ok(report);
    }
    report.published = publish(config, queries, shutdown).await?;
    Ok(report)
}

/// An ordinary session (retrying until `timeout`) in UTC: a `timestamp` column without time zone
/// holds UTC wall time, as the producers write it, and the range is compared in UTC.
async fn connect_utc(
    settings: &crate::config::PostgresSettings,
    timeout: Duration,
) -> Result<PgConnection, StartError> {
    let mut connection = source::connect(settings, timeout).await?;
    sqlx::query("SET TimeZone = 'UTC'")
        .execute(&mut connection)
        .await
        .map_err(source::sql("setting the session's time zone"))?;
    Ok(connection)
}

/// Drops the slot if PostgreSQL invalidated it, refuses if it is valid or held, then creates
/// it (and the publication, if missing) through the relay's own start-up path.
async fn recreate_slot(connection: &mut PgConnection, config: &Config) -> Result<Lsn, ResyncError> {
    if config.source != SourceKind::Replication {
        return Err(ResyncError::NoSlot);
    }
    let slot = &config.slot;
    let existing: Option<(Option<String>, bool, Option<i32>)> = sqlx::query_as(
        "SELECT wal_status, active, active_pid FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *connection)
    .await
    .map_err(sql("looking up the replication slot"))?;
    match existing {
        Some((_, true, pid)) => {
            return Err(ResyncError::SlotActive {
                slot: slot.clone(),
                pid: pid.unwrap_or(0),
            });
        }
        Some((Some(status), false, _)) if status == "lost" => {
            sqlx::query("SELECT pg_drop_replication_slot($1)")
                .bind(slot)
                .execute(&mut *connection)
                .await
                .map_err(sql(format!("dropping the invalidated slot {slot:?}")))?;
            tracing::info!(slot, "dropped the invalidated replication slot");
        }
        Some((status, false, _)) => {
            return Err(ResyncError::SlotValid {
                slot: slot.clone(),
                status: status.unwrap_or_else(|| "unknown".to_owned()),
            });
        }
        None => tracing::info!(slot, "the replication slot does not exist: creating it"),
    }
    let position = crate::replication::prepare(
        connection,
        &config.postgres,
        &config.router.tables,
        &config.publication,
        slot,
    )
    .await?;
    tracing::info!(slot, %position, "replication slot created: a relay started after this resync streams from here");
    Ok(position)
}

async fn warn_if_invalidated(connection: &mut PgConnection, slot: &str) {
    let status: Option<(Option<String>,)> =
        sqlx::query_as("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(&mut *connection)
            .await
            .unwrap_or(None);
    if let Some((Some(status),)) = status
        && status == "lost"
    {
        tracing::warn!(
            slot,
            "the replication slot is invalidated: this resync re-publishes, but no relay can \
             stream again until the slot is re-created (--recreate-slot)"
        );
    }
}

/// The `timestamp` of event `id`, in the first table that has it.
async fn event_time(
    connection: &mut PgConnection,
    shapes: &[TableShape],
    config: &Config,
    id: &str,
) -> Result<DateTime<Utc>, ResyncError> {
    let id_column = quote_ident(&config.router.field_event_id);
    let ts = quote_ident(TIMESTAMP_COLUMN);
    for shape in shapes {
        let query = format!(
            "SELECT ({ts})::timestamptz FROM {} WHERE {id_column}::text = $1 LIMIT 1",
            shape.schema.name.quoted()
        );
        let found: Option<(Option<DateTime<Utc>>,)> = sqlx::query_as(&query)
            .bind(id.trim())
            .fetch_optional(&mut *connection)
            .await
            .map_err(sql(format!(
                "looking up event {id} in {}",
                shape.schema.name
            )))?;
        if let Some((Some(time),)) = found {
            return Ok(time);
        }
    }
    Err(ResyncError::UnknownEvent {
        id: id.to_owned(),
        tables: config
            .router
            .tables
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// One table's rows in the range, in order.
#[derive(Debug, Clone)]
struct TableQuery {
    shape: TableShape,
    select: String,
    /// The count and the first row; the last row.
    first: String,
    last: String,
    range: TimeRange,
}

impl TableQuery {
    fn new(shape: TableShape, id_column: &str, range: TimeRange) -> Self {
        let quoted = shape.schema.name.quoted();
        let ts = quote_ident(TIMESTAMP_COLUMN);
        let id = quote_ident(id_column);
        let mut columns: Vec<String> = shape
            .schema
            .columns
            .iter()
            .map(|column| format!("{}::text", quote_ident(&column.name)))
            .collect();
        columns.push(format!("(extract(epoch FROM {ts}) * 1000000)::int8"));
        // `$2` NULL means no end.
        let filter = format!(
            "{ts} >= $1::text::timestamptz AND ($2::text IS NULL OR {ts} < $2::text::timestamptz)"
        );
        let select = format!(
            "SELECT {} FROM {quoted} WHERE {filter} ORDER BY {ts}, {id}",
            columns.join(", ")
        );
        let extent = |order: &str| {
            format!(
                "SELECT count(*) OVER (), {ts}::timestamptz::text, {id}::text FROM {quoted} \
                 WHERE {filter} ORDER BY {order} LIMIT 1"
            )
        };
        Self {
            first: extent(&format!("{ts}, {id}")),
            last: extent(&format!("{ts} DESC, {id} DESC")),
            shape,
            select,
            range,
        }
    }

    fn bounds(&self) -> (String, Option<String>) {
        (
            self.range.since.to_rfc3339(),
            self.range.until.map(|until| until.to_rfc3339()),
        )
    }

    /// How many rows, and the first and last `(timestamp, id)`.
    async fn extent(
        &self,
        connection: &mut PgConnection,
    ) -> Result<(u64, Option<(String, String)>, Option<(String, String)>), ResyncError> {
        let (since, until) = self.bounds();
        let what = || format!("counting the rows of {}", self.shape.schema.name);
        let first: Option<(i64, Option<String>, Option<String>)> = sqlx::query_as(&self.first)
            .bind(&since)
            .bind(&until)
            .fetch_optional(&mut *connection)
            .await
            .map_err(sql(what()))?;
        let Some((count, first_at, first_id)) = first else {
            return Ok((0, None, None));
        };
        let last: Option<(i64, Option<String>, Option<String>)> = sqlx::query_as(&self.last)
            .bind(&since)
            .bind(&until)
            .fetch_optional(&mut *connection)
            .await
            .map_err(sql(what()))?;
        let pair = |at: Option<String>, id: Option<String>| Some((at?, id.unwrap_or_default()));
        Ok((
            u64::try_from(count).unwrap_or(0),
            pair(first_at, first_id),
            last.and_then(|(_, at, id)| pair(at, id)),
        ))
    }
}

/// Publishes every row of `queries` through the pipeline; returns how many RabbitMQ confirmed.
async fn publish(
    config: Config,
    queries: Vec<TableQuery>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<u64, ResyncError> {
    let status = Arc::new(RelayStatus::default());
    let mut connector = AmqpConnector {
        settings: config.amqp.clone(),
        exchange_type: config.exchange_type,
    };
    let sink = crate::connect_broker(&config, &mut connector).await?;
    let progress = Arc::new(Progress::default());
    let (read_all, mut read_all_seen) = watch::channel(false);
    let finished = read_all_seen.clone();
    let source = ResyncSource {
        postgres: config.postgres.clone(),
        queries: Arc::new(queries),
        session: None,
        progress: Arc::clone(&progress),
        read_all,
    };
    let settings = Settings::from_config(&config);
    let pipeline = Pipeline::new(
        settings,
        Arc::clone(&status),
        source,
        connector,
        sink,
        ResyncPosition(0),
    );
    let stalled: Arc<Mutex<Option<String>>> = Arc::default();
    let stop = {
        let status = Arc::clone(&status);
        let stalled = Arc::clone(&stalled);
        async move {
            let watch_stall = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if let Some(reason) = status.report().stalled {
                        *stalled
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
                        return;
                    }
                }
            };
            tokio::select! {
                _ = read_all_seen.wait_for(|done| *done) => {}
                () = watch_stall => {}
                () = shutdown => {}
            }
        }
    };
    pipeline.run(stop).await;

    let read = progress.read.load(Ordering::Relaxed);
    let flushed = progress.flushed.load(Ordering::Relaxed);
    let confirmed = status.report().events_confirmed;
    if let Some(reason) = stalled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        return Err(ResyncError::Stalled { reason });
    }
    if !*finished.borrow() || flushed < read {
        return Err(ResyncError::Incomplete { confirmed, read });
    }
    Ok(confirmed)
}

/// A row's place in the resync: rows are numbered in the order read, across re-reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct ResyncPosition(u64);

impl fmt::Display for ResyncPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row {}", self.0)
    }
}

impl Position for ResyncPosition {
    fn as_lsn(&self) -> Option<Lsn> {
        None
    }
}

/// How far the resync got, shared by the source and the driver.
#[derive(Debug, Default)]
struct Progress {
    /// The last row number handed out.
    read: AtomicU64,
    /// The last row number every row up to which RabbitMQ confirmed.
    flushed: AtomicU64,
}

type Item = Result<SourceEvent<ResyncPosition>, SourceError>;

/// The table read as a [`Source`]: a worker task per session streams the rows.
struct ResyncSource {
    postgres: crate::config::PostgresSettings,
    queries: Arc<Vec<TableQuery>>,
    session: Option<(mpsc::Receiver<Item>, JoinHandle<()>)>,
    progress: Arc<Progress>,
    /// Set once every row of the range was read (in the session that read them).
    read_all: watch::Sender<bool>,
}

impl fmt::Debug for ResyncSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResyncSource")
            .field("session", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl Source for ResyncSource {
    type Position = ResyncPosition;
    const REREADS_CHANGED_ROWS: bool = false;

    async fn open(&mut self, from: ResyncPosition) -> Result<Opened<ResyncPosition>, SourceError> {
        self.disconnect();
        let connection = connect_utc(&self.postgres, Duration::ZERO).await?;
        if from.0 > 0 {
            tracing::warn!(confirmed_up_to = %from, "reading the range again from its beginning (duplicates follow)");
        }
        let (sender, receiver) = mpsc::channel(256);
        let worker = tokio::spawn(read_rows(
            connection,
            Arc::clone(&self.queries),
            Arc::clone(&self.progress),
            sender,
        ));
        self.session = Some((receiver, worker));
        Ok(Opened::Streaming { from })
    }

    async fn next(&mut self) -> Item {
        let Some((receiver, _)) = self.session.as_mut() else {
            return Err(SourceError::Ended);
        };
        match receiver.recv().await {
            Some(item) => item,
            None => {
                // Everything was read: the driver stops the pipeline, which drains the window.
                self.read_all.send_replace(true);
                std::future::pending().await
            }
        }
    }

    fn ack(&mut self, position: ResyncPosition) {
        self.progress
            .flushed
            .fetch_max(position.0, Ordering::Relaxed);
    }

    fn rewind(&mut self) {}

    fn disconnect(&mut self) {
        if let Some((_, worker)) = self.session.take() {
            worker.abort();
        }
    }

    async fn close(&mut self, position: ResyncPosition) {
        self.ack(position);
        self.disconnect();
    }
}

/// Streams each table's rows in the range to the pipeline, a transaction per row.
async fn read_rows(
    mut connection: PgConnection,
    queries: Arc<Vec<TableQuery>>,
    progress: Arc<Progress>,
    events: mpsc::Sender<Item>,
) {
    for query in queries.iter() {
        if events
            .send(Ok(SourceEvent::Table(query.shape.schema.clone())))
            .await
            .is_err()
        {
            return;
        }
        let (since, until) = query.bounds();
        let mut rows = sqlx::query(&query.select)
            .bind(since)
            .bind(until)
            .fetch(&mut connection);
        let count = query.shape.schema.columns.len();
        while let Some(row) = rows.next().await {
            let decoded = row.and_then(|row| {
                let mut values = Vec::with_capacity(count);
                for index in 0..count {
                    let value: Option<String> = row.try_get(index)?;
                    values.push(value.map_or(Value::Null, |text| Value::Text(Bytes::from(text))));
                }
                let micros: Option<i64> = row.try_get(count)?;
                Ok((values, micros))
            });
            let (values, micros) = match decoded {
                Ok(decoded) => decoded,
                Err(error) => {
                    let _ = events.send(Err(SourceError::Sql(error))).await;
                    return;
                }
            };
            let position = ResyncPosition(progress.read.fetch_add(1, Ordering::Relaxed) + 1);
            let transaction = [
                SourceEvent::Begin {
                    commit_time: micros.map(CommitTime::from_unix_micros),
                },
                SourceEvent::Row(Row {
                    table: query.shape.schema.id,
                    values,
                }),
                SourceEvent::Commit { position },
            ];
            for event in transaction {
                if events.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn times_are_rfc3339_and_a_bad_one_names_its_flag() {
        let time = parse_time("--since", "2026-12-02T10:30:00+01:00").unwrap();
        assert_eq!(time.to_rfc3339(), "2026-12-02T09:30:00+00:00");
        let error = parse_time("--until", "yesterday").unwrap_err().to_string();
        assert!(error.starts_with("--until is invalid"), "{error}");
        assert!(error.contains("RFC 3339"), "{error}");
    }

    #[test]
    fn positions_grow_across_rereads() {
        assert!(ResyncPosition(2) > ResyncPosition(1));
        assert_eq!(ResyncPosition(7).as_lsn(), None);
        assert_eq!(ResyncPosition(7).to_string(), "row 7");
    }
}
