//! The replication source: PostgreSQL logical replication of the outbox table(s).
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
//! [`ReplicationSource`] is the [`Source`] over it: each session (the `pgwire-replication`
//! crate is the transport; decoding pgoutput is ours, in the `pgoutput` crate) starts at the
//! later of the slot's and the pipeline's position, turns pgoutput messages into
//! source-neutral events (a Relation into a table schema, an Insert into a row that keeps the
//! message's bytes), and acks by reporting the flush LSN to the server.
//!
//! High availability: PostgreSQL lets one session hold a slot. A second relay on the same
//! slot gets SQLSTATE 55006 `object_in_use` ("replication slot ... is active"): the source
//! answers [`Opened::Standby`] and the pipeline retries every second, so it takes over about
//! a second after the active relay's connection ends.

use std::time::Duration;

use std::sync::Arc;

use pgoutput::{LogicalReplicationMessage, Lsn};
use pgwire_replication::{
    PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent, SslMode, TlsConfig,
};
use sqlx::PgConnection;

use crate::config::{Config, PostgresSettings};
use crate::router::TableName;
use crate::row::{Row, TableSchema};
use crate::source::{
    Opened, Source, SourceError, SourceEvent, StartError, close_bounded, connect, sql,
};
use crate::telemetry::CommitTime;

/// SQLSTATE `insufficient_privilege`.
const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// SQLSTATE `object_in_use`: the slot is active for another session.
const OBJECT_IN_USE: &str = "55006";

/// The replication connection's TLS, from the same settings as the relay's SQL connections
/// (`sslmode`, `sslrootcert`, `sslcert`/`sslkey`), with libpq's meaning: `prefer` tries TLS and
/// falls back to clear text when the server has none, `require` insists on TLS without
/// checking the certificate, `verify-ca` checks that it chains to the root certificate,
/// `verify-full` also that it names the host. `allow` (clear text first, TLS if the server
/// insists) is taken as `prefer`: pgwire-replication cannot fall forward, and trying TLS first
/// reaches every server `allow` reaches, with no more checking.
pub fn tls_config(settings: &PostgresSettings) -> TlsConfig {
    use sqlx::postgres::PgSslMode;
    let root = settings.ssl_root_cert.clone();
    let config = match settings.ssl_mode {
        PgSslMode::Disable => TlsConfig::disabled(),
        PgSslMode::Allow | PgSslMode::Prefer => TlsConfig {
            mode: SslMode::Prefer,
            ..TlsConfig::default()
        },
        PgSslMode::Require => TlsConfig::require(),
        PgSslMode::VerifyCa => TlsConfig::verify_ca(root),
        // pgwire-replication refuses verify-full to an IP address unless the name to verify is
        // given: the address is that name (rustls then checks the certificate's IP SANs, as
        // libpq does).
        PgSslMode::VerifyFull if settings.host.parse::<std::net::IpAddr>().is_ok() => {
            TlsConfig::verify_full(root).with_sni_hostname(settings.host.clone())
        }
        PgSslMode::VerifyFull => TlsConfig::verify_full(root),
    };
    match &settings.ssl_client_cert {
        Some((cert, key)) if config.mode != SslMode::Disable => {
            config.with_client_cert(cert.clone(), key.clone())
        }
        _ => config,
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
        // plugin, database, confirmed_flush_lsn, wal_status
        type SlotRow = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let existing: Option<SlotRow> = sqlx::query_as(
            "SELECT plugin::text, database::text, confirmed_flush_lsn::text, wal_status \
                 FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(slot)
        .fetch_optional(&mut *connection)
        .await
        .map_err(sql("looking up the replication slot"))?;
        if let Some((plugin, database, confirmed, wal_status)) = existing {
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
            check_wal_status(slot, wal_status.as_deref(), confirmed)
                .map_err(|invalidated| StartError::SlotInvalidated(Box::new(invalidated)))?;
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

/// A slot PostgreSQL invalidated: it held more WAL than `max_slot_wal_keep_size` allows, so
/// the WAL after `confirmed` was removed and cannot be streamed any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "replication slot {slot:?} was invalidated by PostgreSQL (wal_status = lost): it held more \
     WAL than max_slot_wal_keep_size allows, and the WAL after its confirmed position {confirmed} \
     is gone, so events committed since then cannot be streamed. To recover: stop every relay \
     on this slot, then run `outbox-relay resync --recreate-slot --since <a time before the \
     relay fell behind>`: it drops and re-creates the slot first, then re-publishes the \
     outbox rows still in the table from that time with their ids (consumers deduplicate); \
     start the relay after it and it streams from the new slot with no gap. See \
     docs/operations.md, \"Invalidated slot\"."
)]
pub struct SlotInvalidated {
    pub slot: String,
    pub confirmed: Lsn,
}

/// Gauge `outbox_relay_slot_invalidated`.
pub const SLOT_INVALIDATED: &str = "outbox_relay_slot_invalidated";

/// Fails for a `lost` slot; warns (once per call) for one PostgreSQL is about to invalidate.
fn check_wal_status(
    slot: &str,
    wal_status: Option<&str>,
    confirmed: Lsn,
) -> Result<(), SlotInvalidated> {
    match wal_status {
        Some("lost") => {
            metrics::gauge!(SLOT_INVALIDATED).set(1.0);
            Err(SlotInvalidated {
                slot: slot.to_owned(),
                confirmed,
            })
        }
        Some("unreserved") => {
            metrics::gauge!(SLOT_INVALIDATED).set(0.0);
            tracing::warn!(
                slot,
                "replication slot holds more WAL than max_slot_wal_keep_size: PostgreSQL \
                 invalidates it at its next checkpoint unless the relay catches up first"
            );
            Ok(())
        }
        _ => {
            metrics::gauge!(SLOT_INVALIDATED).set(0.0);
            Ok(())
        }
    }
}

/// Reads the slot's confirmed position (used before each new replication session); fails
/// with [`SourceError::SlotInvalidated`] for a slot PostgreSQL invalidated.
pub async fn slot_position(
    settings: &PostgresSettings,
    slot: &str,
) -> Result<Option<SlotPosition>, SourceError> {
    let mut connection = connect(settings, Duration::ZERO).await?;
    let row: Option<(Option<String>, String, Option<String>)> = sqlx::query_as(
        "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text, wal_status \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut connection)
    .await
    .map_err(sql("reading the slot position"))?;
    close_bounded(connection).await;
    let Some((confirmed, server_wal, wal_status)) = row else {
        return Ok(None);
    };
    let confirmed = confirmed.and_then(|text| text.parse::<Lsn>().ok());
    check_wal_status(slot, wal_status.as_deref(), confirmed.unwrap_or(Lsn(0)))?;
    Ok(confirmed.and_then(|confirmed| {
        Some(SlotPosition {
            confirmed,
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
    ) -> Result<Option<Self>, SourceError> {
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
        .with_tls(tls_config(settings))
        .with_start_lsn(start)
        .with_status_interval(status_interval)
        .with_wakeup_interval(Duration::from_secs(10))
        // The relay's own window bounds memory; this channel only smooths reads.
        .with_buffer_size(512)
        .with_application_name("outbox-relay");
        let mut client = ReplicationClient::connect(config).await?;
        match client.wait_started().await {
            Ok(()) => Ok(Some(Self { client })),
            // "replication slot ... is active for PID ...": another relay streams.
            Err(PgWireError::Server(message)) if sqlstate(&message) == Some(OBJECT_IN_USE) => {
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The next event, or `None` for one the relay does not act on.
    pub async fn recv(&mut self) -> Result<Option<SourceEvent<Lsn>>, SourceError> {
        let event = self.client.recv().await?.ok_or(SourceError::Ended)?;
        Ok(match event {
            ReplicationEvent::Begin {
                commit_time_micros, ..
            } => Some(SourceEvent::Begin {
                commit_time: Some(CommitTime::from_postgres_micros(commit_time_micros)),
            }),
            ReplicationEvent::Commit { end_lsn, .. } => Some(SourceEvent::Commit {
                position: Lsn(end_lsn.as_u64()),
            }),
            ReplicationEvent::XLogData { data, .. } => match pgoutput::decode(data)? {
                LogicalReplicationMessage::Relation(relation) => {
                    Some(SourceEvent::Table(TableSchema::from_relation(&relation)))
                }
                LogicalReplicationMessage::Insert(insert) => {
                    Some(SourceEvent::Row(Row::from_insert(insert)))
                }
                // Updates, deletes (e.g. the outbox's delete-after-insert), truncates, types,
                // origins and logical messages carry no outbox event.
                _ => None,
            },
            ReplicationEvent::KeepAlive { wal_end, .. } => Some(SourceEvent::Idle {
                position: Some(Lsn(wal_end.as_u64())),
            }),
            _ => None,
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
        // A dead server cannot hold a stop.
        match tokio::time::timeout(Duration::from_secs(2), self.client.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "replication session ended with an error"),
            Err(_) => tracing::debug!("ending the replication session timed out"),
        }
    }
}

/// The SQLSTATE of a server error as pgwire-replication renders it (`... (SQLSTATE 55006)`):
/// the code field, not the message text (which the server may translate).
fn sqlstate(message: &str) -> Option<&str> {
    let (_, rest) = message.rsplit_once("(SQLSTATE ")?;
    let code = rest.strip_suffix(')')?;
    (code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(code)
}

/// The replication [`Source`]: a new session per `open`, from the later of the slot's
/// confirmed position and the pipeline's own.
pub(crate) struct ReplicationSource {
    config: Arc<Config>,
    stream: Option<ReplicationStream>,
    /// The server's WAL end read with the slot's position, until the stream reports one.
    server_wal: Option<Lsn>,
}

impl std::fmt::Debug for ReplicationSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationSource")
            .field("streaming", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

impl ReplicationSource {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        Self {
            config,
            stream: None,
            server_wal: None,
        }
    }
}

impl Source for ReplicationSource {
    type Position = Lsn;
    const REREADS_CHANGED_ROWS: bool = false;

    async fn open(&mut self, from: Lsn) -> Result<Opened<Lsn>, SourceError> {
        self.stream = None;
        let slot = &self.config.slot;
        let start = match slot_position(&self.config.postgres, slot).await? {
            Some(position) => {
                self.server_wal = Some(position.server_wal);
                position.confirmed.max(from)
            }
            None => {
                return Err(SourceError::SlotMissing { slot: slot.clone() });
            }
        };
        let stream = ReplicationStream::start(
            &self.config.postgres,
            slot,
            &self.config.publication,
            start,
            self.config.status_interval,
        )
        .await?;
        Ok(match stream {
            Some(stream) => {
                self.stream = Some(stream);
                Opened::Streaming { from: start }
            }
            None => Opened::Standby,
        })
    }

    async fn next(&mut self) -> Result<SourceEvent<Lsn>, SourceError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(SourceError::Ended);
        };
        loop {
            if let Some(event) = stream.recv().await? {
                return Ok(event);
            }
        }
    }

    fn ack(&mut self, position: Lsn) {
        if let Some(stream) = &self.stream {
            stream.confirm(position);
        }
    }

    fn rewind(&mut self) {}

    fn disconnect(&mut self) {
        self.stream = None;
    }

    async fn close(&mut self, position: Lsn) {
        if let Some(stream) = self.stream.take() {
            stream
                .finish(
                    position,
                    self.config.status_interval + Duration::from_secs(2),
                )
                .await;
        }
    }

    fn server_position(&self) -> Option<Lsn> {
        self.stream
            .as_ref()
            .map(ReplicationStream::server_wal_end)
            .filter(|lsn| *lsn > Lsn::ZERO)
            .or(self.server_wal)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_replication_connection_takes_the_sql_connections_tls_settings() {
        // Any readable file stands for the certificates: the settings check only that.
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let settings = |host: &str, query: &str| {
            PostgresSettings::from_url(
                "DATABASE_URL",
                &format!("postgres://relay:secret@{host}:5432/orderdb{query}"),
                "orderdb",
            )
            .unwrap()
        };
        let mode = |query: &str| tls_config(&settings("db.example", query)).mode;
        // libpq's default is prefer: TLS when the server offers it, else clear text.
        assert_eq!(mode(""), SslMode::Prefer);
        assert_eq!(mode("?sslmode=allow"), SslMode::Prefer);
        assert_eq!(mode("?sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("?sslmode=require"), SslMode::Require);

        let verify_ca = tls_config(&settings(
            "db.example",
            &format!("?sslmode=verify-ca&sslrootcert={file}"),
        ));
        assert_eq!(verify_ca, TlsConfig::verify_ca(Some(file.into())));
        let by_name = tls_config(&settings(
            "db.example",
            &format!("?sslmode=verify-full&sslrootcert={file}&sslcert={file}&sslkey={file}"),
        ));
        assert_eq!(
            by_name,
            TlsConfig::verify_full(Some(file.into())).with_client_cert(file, file)
        );
        // By address, the address is what the certificate must name.
        let by_address = tls_config(&settings("127.0.0.1", "?sslmode=verify-full"));
        assert_eq!(by_address.mode, SslMode::VerifyFull);
        assert_eq!(by_address.sni_hostname.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn a_busy_slot_is_told_by_its_sqlstate() {
        let busy = "replication slot \"outbox_relay\" is active for PID 4242 (SQLSTATE 55006)";
        assert_eq!(sqlstate(busy), Some(OBJECT_IN_USE));
        // A translated message keeps the code.
        let translated = "le slot de réplication est actif (SQLSTATE 55006)";
        assert_eq!(sqlstate(translated), Some(OBJECT_IN_USE));
        assert_eq!(sqlstate("is active for PID 1 but no code"), None);
        assert_eq!(sqlstate("other error (SQLSTATE 42501)"), Some("42501"));
    }
}
