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

use service_kit::migrate::Baseline;
use service_kit::postgres::{self, DatabaseSettings, Prepare};
use sqlx::PgPool;

pub use service_kit::postgres::DatabaseError;

/// The migrations in `crates/order-service/migrations`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Our first migration, which creates the tables the original system also has;
/// `purchase_order` tells the original's database apart from a fresh one.
pub const BASELINE: Baseline<'static> = Baseline {
    version: 20260101000000,
    marker_table: "purchase_order",
};

/// Connects the pool, creating the database first if needed, then creates the schema
/// (`DB_SCHEMA`) and applies the migrations into it; they use unqualified names, resolved
/// through `search_path`. On the original system's database the baseline is skipped (see the
/// module documentation).
pub async fn connect_and_migrate(config: &DatabaseSettings) -> Result<PgPool, DatabaseError> {
    let (pool, _) = postgres::prepare(Prepare {
        database: config,
        acquire_timeout: Duration::from_secs(5),
        migrator: &MIGRATOR,
        baseline: BASELINE,
    })
    .await?;
    Ok(pool)
}

/// Creates the schema and applies the migrations on an existing pool (the benchmark prepares
/// its database this way).
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<(), DatabaseError> {
    postgres::migrate_into(pool, schema, &MIGRATOR, BASELINE).await?;
    Ok(())
}
