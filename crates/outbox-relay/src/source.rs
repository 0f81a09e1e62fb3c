//! Where outbox rows come from: the [`Source`] contract the pipeline reads through, the
//! source-neutral events it yields, and what the sources share (an ordinary PostgreSQL
//! connection, the start errors).
//!
//! Two sources implement it: [`crate::replication`] (logical replication: the WAL, commit
//! order, positions are LSNs) and [`crate::polling`] (`SELECT ... FOR UPDATE` batches of the
//! outbox table, positions are rows of a batch). The pipeline is the same for both.
//!
//! The trait is used generically (`Pipeline<S: Source, ..>`), not as `dyn Source`: its
//! methods are `async`, and the pipeline is built once per relay with the source the
//! configuration names, so static dispatch costs nothing and keeps the hot path free of a
//! boxed future per event.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use pgoutput::Lsn;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::config::PostgresSettings;
use crate::row::{Row, TableSchema};
use crate::telemetry::CommitTime;

/// A position in a source: everything at or below it may be acknowledged.
pub trait Position: Copy + Ord + fmt::Display + fmt::Debug + Send + Sync + 'static {
    /// The position as a WAL position, for `/health`'s `confirmed_lsn` and lag (replication).
    fn as_lsn(&self) -> Option<Lsn>;
}

impl Position for Lsn {
    fn as_lsn(&self) -> Option<Lsn> {
        Some(*self)
    }
}

/// What a source yields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent<P> {
    /// A table's columns, before its first row (and again when they change).
    Table(TableSchema),
    /// A transaction starts; its rows follow. `commit_time` is when it committed at the
    /// source (the AMQP timestamp and the commit-delay metrics), when known.
    Begin { commit_time: Option<CommitTime> },
    /// An inserted outbox row.
    Row(Row),
    /// The transaction ends: once every row before it is delivered, `position` may be acked.
    Commit { position: P },
    /// Nothing is under way at the source. `position`, when given, may be acked as soon as
    /// nothing is in flight (a quiet outbox must not pin WAL).
    Idle { position: Option<P> },
}

/// How [`Source::open`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened<P> {
    /// Reading, from `from` (at or after the position asked for).
    Streaming { from: P },
    /// Another relay holds the source (the slot is active, the advisory locks are taken):
    /// try again later.
    Standby,
}

/// Why a source session failed. The pipeline reconnects from its flush position.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("replication stream failed: {0}")]
    Transport(#[from] pgwire_replication::PgWireError),
    #[error("could not decode a pgoutput message: {0}")]
    Decode(#[from] pgoutput::DecodeError),
    #[error("PostgreSQL: {0}")]
    Sql(#[from] sqlx::Error),
    /// The slot was dropped while the relay ran.
    #[error(
        "replication slot {slot:?} no longer exists (dropped while the relay ran): the WAL \
         since the relay's last confirmed position may be gone. Stop the relays and run \
         `outbox-relay resync --recreate-slot --since <a time before the slot was dropped>` \
         (creates the slot, then re-publishes the rows still in the table from then), then \
         start the relay (docs/operations.md)"
    )]
    SlotMissing { slot: String },
    #[error(transparent)]
    SlotInvalidated(#[from] crate::replication::SlotInvalidated),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    PollingStart(#[from] crate::polling::PollingStartError),
    #[error("the source session ended")]
    Ended,
}

/// A source of outbox rows.
///
/// # Contract
/// - [`Source::open`] starts a session reading from the given position (the pipeline's flush
///   position: nothing after it was acked), or says another relay holds the source.
/// - [`Source::next`] yields events in the source's order; it is cancel-safe (the pipeline
///   awaits it in a `select!`). After an `Err` the session is over until the next `open`.
/// - [`Source::ack`] tells the source that every row at or below `position` is delivered:
///   replication confirms the LSN to PostgreSQL; polling deletes the delivered rows and
///   commits. Positions only grow; acking never waits.
/// - [`Source::rewind`] (only when [`Source::REREADS_CHANGED_ROWS`]): after an unroutable
///   row, make what was acked durable and read again from there (the pipeline spaces the
///   rewinds with backoff), so a row an operator fixed is read fixed.
/// - [`Source::close`] acks `position` and ends the session, within a bounded time.
pub trait Source: Send + 'static {
    type Position: Position;

    /// Whether reading again from an acked position can show a row changed since (polling:
    /// yes; the WAL never changes).
    const REREADS_CHANGED_ROWS: bool;

    fn open(
        &mut self,
        from: Self::Position,
    ) -> impl Future<Output = Result<Opened<Self::Position>, SourceError>> + Send;

    fn next(
        &mut self,
    ) -> impl Future<Output = Result<SourceEvent<Self::Position>, SourceError>> + Send;

    fn ack(&mut self, position: Self::Position);

    fn rewind(&mut self);

    /// Drops the session at once (after a failure); the next `open` starts a new one.
    fn disconnect(&mut self);

    fn close(&mut self, position: Self::Position) -> impl Future<Output = ()> + Send;

    /// The newest server WAL position seen, for the lag (replication only).
    fn server_position(&self) -> Option<Lsn> {
        None
    }

    /// The age in seconds of the oldest row waiting at the source, when it knows (polling).
    fn backlog_age(&self) -> f64 {
        0.0
    }
}

/// Why the relay cannot start against this database.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach PostgreSQL at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("PostgreSQL at {address} refused the connection: {reason}")]
    Refused { address: String, reason: String },
    #[error(
        "PostgreSQL wal_level is {0:?}, but logical replication needs wal_level = logical \
         (set it in postgresql.conf and restart the server)"
    )]
    WalLevel(String),
    #[error(
        "role {0:?} may not use replication: it needs the REPLICATION attribute \
         (ALTER ROLE {0} REPLICATION) or superuser"
    )]
    NoReplicationPrivilege(String),
    #[error("outbox table {0} does not exist in database {1:?}")]
    MissingTable(String, String),
    #[error(
        "role {role:?} may not create publication {publication:?} (insufficient privilege: \
         CREATE PUBLICATION ... FOR TABLE needs ownership of the tables). Have the table owner \
         run, in database {database:?}: {statement}; (scripts/provision-relay-role.sh does it)"
    )]
    PublicationPrivilege {
        role: String,
        publication: String,
        database: String,
        statement: String,
    },
    #[error("publication {publication:?} exists but does not publish table {table}")]
    PublicationMissesTable { publication: String, table: String },
    #[error(
        "replication slot {slot:?} exists with plugin {plugin:?} in database {database:?}; \
         the relay needs a pgoutput slot in database {expected_database:?}"
    )]
    ForeignSlot {
        slot: String,
        plugin: String,
        database: String,
        expected_database: String,
    },
    #[error(transparent)]
    SlotInvalidated(Box<crate::replication::SlotInvalidated>),
    #[error("{what} failed: {source}")]
    Sql {
        what: String,
        #[source]
        source: sqlx::Error,
    },
}

pub(crate) fn sql(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Sql { what, source }
}

/// Connects an ordinary session, retrying connection failures until `timeout`.
pub async fn connect(
    settings: &PostgresSettings,
    timeout: Duration,
) -> Result<PgConnection, StartError> {
    // The URL's query string and `sslmode` included.
    let options = settings
        .connect_options("outbox-relay")
        .disable_statement_logging();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options))
                .await;
        let reason = match attempt {
            Ok(Ok(connection)) => return Ok(connection),
            // The kit's one rule: a server that is starting or shutting down (57P0x, class
            // 08) or that nothing answers for is worth waiting for.
            Ok(Err(error)) if service_kit::postgres::is_unavailable(&error) => error.to_string(),
            // A server that answered otherwise (wrong password, no such database) will not
            // change its mind: fail at once.
            // A certificate that does not verify is such an answer too.
            Ok(Err(error)) => {
                return Err(StartError::Refused {
                    address: settings.display(),
                    reason: format!("{error}{}", service_kit::postgres::tls_hint(&error)),
                });
            }
            Err(_) => "connection attempt timed out".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Unreachable {
                address: settings.display(),
                reason,
            });
        }
        tracing::warn!(address = %settings.display(), %reason, "PostgreSQL not reachable yet; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Closes an ordinary session within 2 s (a dead server cannot hold a stop).
pub(crate) async fn close_bounded(connection: PgConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(2), connection.close()).await;
}
