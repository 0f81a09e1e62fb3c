//! Reaching PostgreSQL at start-up: create the database if it is missing, connect the pool with
//! `search_path` = `DB_SCHEMA` and `TimeZone` = UTC, create the schema and apply the embedded
//! migrations.
//!
//! A database the original system created is adopted: its tables are those of our first
//! migration (the baseline) without sqlx's record of it, so the baseline is skipped there and
//! the later migrations, written to be idempotent, add what the service needs without touching
//! a row (`service_kit::migrate`).
//!
//! Creating the database lets `make up` (and docker) start the service against a bare server.
//! Errors describe the target as `host:port/database as user`, never with the password.

use std::time::Duration;

use service_kit::migrate::{Baseline, SchemaOrigin, migrate_adopting};
use service_kit::postgres::{self, SetupError};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

/// The migrations in `crates/order-service/migrations`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Our first migration, which creates the tables the original system also has;
/// `purchase_order` tells the original's database apart from a fresh one.
pub const BASELINE: Baseline<'static> = Baseline {
    version: 20260101000000,
    marker_table: "purchase_order",
};

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// Connecting, creating the database or the schema (`service_kit::postgres`).
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot apply the migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Connects the pool, creating the database first if needed, then brings the schema up to date.
pub async fn connect_and_migrate(config: &DatabaseConfig) -> Result<PgPool, DatabaseError> {
    postgres::ensure_database(&config.connection, config.application_name()).await?;
    let pool = PgPoolOptions::new()
        .max_connections(config.pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(config.connect_options())
        .await
        .map_err(|source| SetupError::Connect {
            target: config.describe(),
            source,
        })?;
    migrate(&pool, &config.schema).await?;
    Ok(pool)
}

/// Creates the schema (`DB_SCHEMA`, already checked to be a plain identifier) and applies the
/// migrations into it; they use unqualified names, resolved through `search_path`. On the
/// original system's database the baseline is skipped (see the module documentation).
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<(), DatabaseError> {
    postgres::create_schema(pool, schema).await?;
    if migrate_adopting(pool, &MIGRATOR, BASELINE).await? == SchemaOrigin::Original {
        tracing::info!(
            schema,
            "adopted the original system's tables: every row kept, only missing columns and indexes added"
        );
    }
    Ok(())
}
