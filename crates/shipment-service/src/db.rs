//! The PostgreSQL side at start-up: creates the database and schema if missing, runs the embedded
//! migrations, and opens the pool every query uses (its `search_path` is `DB_SCHEMA`, its
//! `TimeZone` UTC).
//!
//! The database may be one the original NodeJS service created: its tables exist without our
//! migration history. [`service_kit::migrate::migrate_adopting`] recognises it by its
//! `consumed_message` table, skips our baseline migration and runs the later ones, which add
//! what our code needs to the original's tables (see `migrations/`).

use std::time::{Duration, Instant};

use service_kit::migrate::{Baseline, SchemaOrigin, migrate_adopting};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::DatabaseSettings;

/// The embedded migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Our first migration, whose tables the original system's database already has.
const BASELINE: Baseline<'static> = Baseline {
    version: 20261127000001,
    marker_table: "consumed_message",
};

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to PostgreSQL at {address} (database {database}): {source}")]
    Connect {
        address: String,
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create database {database}: {source}")]
    CreateDatabase {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create schema {schema}: {source}")]
    CreateSchema {
        schema: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates database and schema when missing, migrates, and returns the pool. Waits up to
/// `patience` for a server that is not reachable yet (containers starting together).
pub async fn prepare(
    settings: &DatabaseSettings,
    patience: Duration,
) -> Result<PgPool, DatabaseError> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(200);
    loop {
        match try_prepare(settings).await {
            Err(error) if is_unreachable(&error) && Instant::now() + pause < deadline => {
                tracing::warn!(%error, retry_in = ?pause, "PostgreSQL not reachable yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            result => return result,
        }
    }
}

fn is_unreachable(error: &DatabaseError) -> bool {
    match error {
        DatabaseError::Connect { source, .. } => {
            matches!(source, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
                || source
                    .as_database_error()
                    .and_then(|db| db.code())
                    .is_some_and(|code| code == "57P03") // the server is starting up
        }
        _ => false,
    }
}

async fn try_prepare(settings: &DatabaseSettings) -> Result<PgPool, DatabaseError> {
    let connect_error = |source| DatabaseError::Connect {
        address: format!("{}:{}", settings.host, settings.port),
        database: settings.name.clone(),
        source,
    };
    match PgConnection::connect_with(&settings.connect_options()).await {
        Ok(connection) => {
            let _ = connection.close().await;
        }
        Err(error) if sqlstate(&error).as_deref() == Some("3D000") => {
            create_database(settings).await?
        }
        Err(error) => return Err(connect_error(error)),
    }
    // TimeZone UTC: the original's columns are `timestamp` (without time zone) holding UTC wall
    // time, as its NodeJS services wrote it; our timestamptz values are converted to and from
    // them in the session time zone. Explicit, whatever the server's or database's default.
    let options: PgConnectOptions = settings.connect_options().options([
        ("search_path", settings.schema.as_str()),
        ("TimeZone", "UTC"),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(5)
        // Short, so that an unreachable database surfaces as an error the consumer retries.
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(connect_error)?;
    sqlx::query(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{}\"",
        settings.schema
    ))
    .execute(&pool)
    .await
    .map_err(|source| DatabaseError::CreateSchema {
        schema: settings.schema.clone(),
        source,
    })?;
    if migrate_adopting(&pool, &MIGRATOR, BASELINE).await? == SchemaOrigin::Original {
        tracing::info!(schema = %settings.schema, "adopted the original system's shipment tables; their rows are kept");
    }
    warn_without_unique_order_id(&pool).await;
    Ok(pool)
}

/// The migrations create the unique index on `shipment.order_id` only when the original's rows
/// allow it; the service works without it, but an operator should know.
async fn warn_without_unique_order_id(pool: &PgPool) {
    let present: Result<bool, _> =
        sqlx::query_scalar("SELECT to_regclass('shipment_order_id_key') IS NOT NULL")
            .fetch_one(pool)
            .await;
    if let Ok(false) = present {
        tracing::warn!(
            "shipment has several rows for one order_id (from the original system), so the unique \
             index on order_id is missing; remove the duplicates and run \
             CREATE UNIQUE INDEX shipment_order_id_key ON shipment (order_id)"
        );
    }
}

async fn create_database(settings: &DatabaseSettings) -> Result<(), DatabaseError> {
    let create_error = |source| DatabaseError::CreateDatabase {
        database: settings.name.clone(),
        source,
    };
    let mut admin = PgConnection::connect_with(&settings.connect_options_for("postgres"))
        .await
        .map_err(create_error)?;
    // The name was validated as an identifier at configuration time.
    let result = sqlx::query(&format!("CREATE DATABASE \"{}\"", settings.name))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    match result {
        Ok(_) => {
            tracing::info!(database = %settings.name, "created the database");
            Ok(())
        }
        // Another instance created it at the same moment.
        Err(error) if sqlstate(&error).as_deref() == Some("42P04") => Ok(()),
        Err(error) => Err(create_error(error)),
    }
}

/// The SQLSTATE of a database error.
pub fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
}
