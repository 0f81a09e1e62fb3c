//! The source: PostgreSQL logical replication of the outbox table(s).
//!
//! [`prepare`] runs once at start on an ordinary connection and fails with a clear
//! [`StartError`] for each unmet requirement: the server is reachable, `wal_level` is
//! `logical`, the role may replicate, the outbox tables exist. It then creates, if absent,
//! the publication (`FOR TABLE` the outbox tables only) and the logical slot (`pgoutput`),
//! and returns the slot's `confirmed_flush_lsn`: there is no offset file, the slot is the
//! checkpoint. Creating the publication needs ownership of the tables, so under a
//! least-privilege role (scripts/provision-relay-role.sh) the owner creates it beforehand and a
//! missing one fails with [`StartError::PublicationPrivilege`], naming the statement to run.
//!
//! [`ReplicationStream`] is one replication session (the `pgwire-replication` crate is the
//! transport; decoding pgoutput is ours, in the `pgoutput` crate). It starts at the given
//! position, yields [`SourceEvent`]s, and reports the flush position to the server.
//!
//! High availability: PostgreSQL lets one session hold a slot. A second relay on the same
//! slot gets "replication slot ... is active" ([`StreamError::SlotBusy`]); the pipeline then
//! waits as a standby and retries every second, so it takes over about a second after the
//! active relay's connection ends.

use std::time::Duration;

use bytes::Bytes;
use pgoutput::{LogicalReplicationMessage, Lsn};
use pgwire_replication::{
    PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::config::PostgresSettings;
use crate::router::TableName;

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
    #[error("{what} failed: {source}")]
    Sql {
        what: String,
        #[source]
        source: sqlx::Error,
    },
}

/// SQLSTATE `insufficient_privilege`.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

fn sql(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Sql { what, source }
}

/// Connects an ordinary session, retrying connection failures until `timeout`.
pub async fn connect(
    settings: &PostgresSettings,
    timeout: Duration,
) -> Result<PgConnection, StartError> {
    let options = PgConnectOptions::new()
        .host(&settings.host)
        .port(settings.port)
        .username(&settings.user)
        .password(settings.password.expose())
        .database(&settings.database)
        .application_name("outbox-relay")
        .disable_statement_logging();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options))
                .await;
        let reason = match attempt {
            Ok(Ok(connection)) => return Ok(connection),
            // A server that answered (wrong password, no such database) will not change its
            // mind: fail at once.
            Ok(Err(sqlx::Error::Database(error))) => {
                return Err(StartError::Refused {
                    address: settings.display(),
                    reason: error.to_string(),
                });
            }
            Ok(Err(error)) => error.to_string(),
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

/// Checks the server and creates publication and slot; returns the slot's confirmed position.
pub async fn prepare(
    connection: &mut PgConnection,
    settings: &PostgresSettings,
    tables: &[TableName],
    publication: &str,
    slot: &str,
) -> Result<Lsn, StartError> {
    let (wal_level,): (String,) = sqlx::query_as("SHOW wal_level")
        .fetch_one(&mut *connection)
        .await
        .map_err(sql("reading wal_level"))?;
    if wal_level != "logical" {
        return Err(StartError::WalLevel(wal_level));
    }

    let (may_replicate,): (bool,) = sqlx::query_as(
        "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *connection)
    .await
    .map_err(sql("reading the role's attributes"))?;
    if !may_replicate {
        return Err(StartError::NoReplicationPrivilege(settings.user.clone()));
    }

    for table in tables {
        let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
            .bind(table.quoted())
            .fetch_one(&mut *connection)
            .await
            .map_err(sql(format!("looking up table {table}")))?;
        if !exists {
            return Err(StartError::MissingTable(
                table.to_string(),
                settings.database.clone(),
            ));
        }
    }

    ensure_publication(connection, settings, tables, publication).await?;
    ensure_slot(connection, settings, slot).await
}

async fn ensure_publication(
    connection: &mut PgConnection,
    settings: &PostgresSettings,
    tables: &[TableName],
    publication: &str,
) -> Result<(), StartError> {
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_publication WHERE pubname = $1")
        .bind(publication)
        .fetch_optional(&mut *connection)
        .await
        .map_err(sql("looking up the publication"))?;
    if exists.is_none() {
        let list = tables
            .iter()
            .map(TableName::quoted)
            .collect::<Vec<_>>()
            .join(", ");
        // The name was validated as a plain identifier by the configuration.
        let create = format!("CREATE PUBLICATION \"{publication}\" FOR TABLE {list}");
        match sqlx::query(&create).execute(&mut *connection).await {
            Ok(_) => tracing::info!(publication, tables = %list, "created publication"),
            // Another relay created it at the same moment.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42710") => {}
            // A least-privilege role (the recommended set-up) does not own the tables: say
            // what the owner must run instead of a bare "must be owner of table".
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some(INSUFFICIENT_PRIVILEGE) =>
            {
                return Err(StartError::PublicationPrivilege {
                    role: settings.user.clone(),
                    publication: publication.to_owned(),
                    database: settings.database.clone(),
                    statement: create,
                });
            }
            Err(error) => return Err(sql(format!("creating publication {publication:?}"))(error)),
        }
    }
    let published: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
    )
    .bind(publication)
    .fetch_all(&mut *connection)
    .await
    .map_err(sql("reading the publication's tables"))?;
    for table in tables {
        if !published
            .iter()
            .any(|(schema, name)| *schema == table.schema && *name == table.table)
        {
            return Err(StartError::PublicationMissesTable {
                publication: publication.to_owned(),
                table: table.to_string(),
            });
        }
    }
    Ok(())
}

async fn ensure_slot(
    connection: &mut PgConnection,
    settings: &PostgresSettings,
    slot: &str,
) -> Result<Lsn, StartError> {
    for _ in 0..2 {
        let existing: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT plugin::text, database::text, confirmed_flush_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(slot)
        .fetch_optional(&mut *connection)
        .await
        .map_err(sql("looking up the replication slot"))?;
        if let Some((plugin, database, confirmed)) = existing {
            let plugin = plugin.unwrap_or_default();
            let database = database.unwrap_or_default();
            if plugin != "pgoutput" || database != settings.database {
                return Err(StartError::ForeignSlot {
                    slot: slot.to_owned(),
                    plugin,
                    database,
                    expected_database: settings.database.clone(),
                });
            }
            let confirmed = confirmed
                .as_deref()
                .and_then(|text| text.parse::<Lsn>().ok())
                .unwrap_or(Lsn(0));
            return Ok(confirmed);
        }
        match sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(slot)
            .execute(&mut *connection)
            .await
        {
            Ok(_) => tracing::info!(slot, "created logical replication slot"),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42710") => {}
            Err(error) => {
                return Err(sql(format!("creating replication slot {slot:?}"))(error));
            }
        }
    }
    Err(StartError::Sql {
        what: format!("replication slot {slot:?} vanished right after creation"),
        source: sqlx::Error::RowNotFound,
    })
}

/// Reads the slot's confirmed position (used before each new replication session).
pub async fn slot_position(
    settings: &PostgresSettings,
    slot: &str,
) -> Result<Option<SlotPosition>, StartError> {
    let mut connection = connect(settings, Duration::ZERO).await?;
    let row: Option<(Option<String>, String)> = sqlx::query_as(
        "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut connection)
    .await
    .map_err(sql("reading the slot position"))?;
    let _ = connection.close().await;
    Ok(row.and_then(|(confirmed, server_wal)| {
        Some(SlotPosition {
            confirmed: confirmed?.parse().ok()?,
            server_wal: server_wal.parse().ok()?,
        })
    }))
}

/// Where a slot stands: its confirmed position, and the server's WAL end at the same moment
/// (so the lag is known before the first keepalive, e.g. while a relay catches up).
#[derive(Debug, Clone, Copy)]
pub struct SlotPosition {
    pub confirmed: Lsn,
    pub server_wal: Lsn,
}

/// What the replication stream delivers, decoded.
#[derive(Debug)]
pub enum SourceEvent {
    Begin {
        /// Microseconds since 2000-01-01.
        commit_time_micros: i64,
    },
    Message(LogicalReplicationMessage),
    Commit {
        end_lsn: Lsn,
    },
    KeepAlive {
        wal_end: Lsn,
    },
    /// Something the relay does not act on (a logical decoding message).
    Other,
}

/// Errors of a replication session.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("replication slot {0:?} is held by another session (another relay is active)")]
    SlotBusy(String),
    #[error("replication stream failed: {0}")]
    Transport(#[from] PgWireError),
    #[error("could not decode a pgoutput message: {0}")]
    Decode(String),
    #[error("cannot prepare the replication session: {0}")]
    Setup(String),
    #[error("replication stream ended")]
    Ended,
}

/// One replication session.
pub struct ReplicationStream {
    client: ReplicationClient,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream").finish_non_exhaustive()
    }
}

impl ReplicationStream {
    /// Starts streaming `slot` from `start` (the server skips transactions that committed
    /// before it); returns once the server accepted and the slot is held.
    pub async fn start(
        settings: &PostgresSettings,
        slot: &str,
        publication: &str,
        start: Lsn,
        status_interval: Duration,
    ) -> Result<Self, StreamError> {
        let start = pgwire_replication::Lsn::from_u64(start.0);
        let config = ReplicationConfig::new(
            settings.host.clone(),
            settings.user.clone(),
            settings.password.expose().to_owned(),
            settings.database.clone(),
            slot.to_owned(),
            publication.to_owned(),
        )
        .with_port(settings.port)
        .with_tls(TlsConfig::disabled())
        .with_start_lsn(start)
        .with_status_interval(status_interval)
        .with_wakeup_interval(Duration::from_secs(10))
        // The relay's own window bounds memory; this channel only smooths reads.
        .with_buffer_size(512)
        .with_application_name("outbox-relay");
        let mut client = ReplicationClient::connect(config).await?;
        match client.wait_started().await {
            Ok(()) => Ok(Self { client }),
            // SQLSTATE 55006 object_in_use: "replication slot ... is active for PID ...".
            Err(PgWireError::Server(message))
                if message.contains("55006") || message.contains("is active for PID") =>
            {
                Err(StreamError::SlotBusy(slot.to_owned()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The next event.
    pub async fn recv(&mut self) -> Result<SourceEvent, StreamError> {
        let event = self.client.recv().await?.ok_or(StreamError::Ended)?;
        Ok(match event {
            ReplicationEvent::Begin {
                commit_time_micros, ..
            } => SourceEvent::Begin { commit_time_micros },
            ReplicationEvent::Commit { end_lsn, .. } => SourceEvent::Commit {
                end_lsn: Lsn(end_lsn.as_u64()),
            },
            ReplicationEvent::XLogData { data, .. } => SourceEvent::Message(decode(data)?),
            ReplicationEvent::KeepAlive { wal_end, .. } => SourceEvent::KeepAlive {
                wal_end: Lsn(wal_end.as_u64()),
            },
            _ => SourceEvent::Other,
        })
    }

    /// Reports that everything up to `lsn` is delivered (sent within the status interval).
    pub fn confirm(&self, lsn: Lsn) {
        self.client
            .update_applied_lsn(pgwire_replication::Lsn::from_u64(lsn.0));
    }

    /// The position last reported to the server.
    pub fn reported(&self) -> Lsn {
        Lsn(self.client.metrics().last_applied_lsn().as_u64())
    }

    /// The newest server WAL end seen.
    pub fn server_wal_end(&self) -> Lsn {
        Lsn(self.client.metrics().last_wal_end().as_u64())
    }

    /// Sends `lsn` (waiting up to `timeout` for the status update to go out), then ends the
    /// session.
    pub async fn finish(mut self, lsn: Lsn, timeout: Duration) {
        self.confirm(lsn);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.reported() < lsn && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(error) = self.client.shutdown().await {
            tracing::debug!(%error, "replication session ended with an error");
        }
    }
}

fn decode(data: Bytes) -> Result<LogicalReplicationMessage, StreamError> {
    pgoutput::decode(data).map_err(|error| StreamError::Decode(error.to_string()))
}
