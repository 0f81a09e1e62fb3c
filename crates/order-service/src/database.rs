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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::DatabaseConfig;

/// The migrations in `crates/order-service/migrations`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Our first migration, which creates the tables the original system also has;
/// `purchase_order` tells the original's database apart from a fresh one.
pub const BASELINE: Baseline<'static> = Baseline {
    version: 20260101000000,
    marker_table: "purchase_order",
};

/// SQLSTATE `invalid_catalog_name`: the database does not exist.
const UNDEFINED_DATABASE: &str = "3D000";
/// SQLSTATE `duplicate_database`: someone else created it first.
const DUPLICATE_DATABASE: &str = "42P04";
/// SQLSTATE `unique_violation`, which a concurrent `CREATE SCHEMA IF NOT EXISTS` may raise.
const UNIQUE_VIOLATION: &str = "23505";

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "database {name:?} does not exist and cannot be created (connected to database \"postgres\" at {target}): {source}"
    )]
    CreateDatabase {
        name: String,
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create schema {schema:?}: {source}")]
    CreateSchema {
        schema: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply the migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Connects the pool, creating the database first if needed, then brings the schema up to date.
pub async fn connect_and_migrate(config: &DatabaseConfig) -> Result<PgPool, DatabaseError> {
    let options = config.connect_options();
    ensure_database_exists(config, &options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(config.pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|source| DatabaseError::Connect {
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
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(pool)
        .await;
    match created {
        Ok(_) => {}
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some(UNIQUE_VIOLATION) => {}
        Err(source) => {
            return Err(DatabaseError::CreateSchema {
                schema: schema.to_owned(),
                source,
            });
        }
    }
    if migrate_adopting(pool, &MIGRATOR, BASELINE).await? == SchemaOrigin::Original {
        tracing::info!(
            schema,
            "adopted the original system's tables: every row kept, only missing columns and indexes added"
        );
    }
    Ok(())
}

async fn ensure_database_exists(
    config: &DatabaseConfig,
    options: &PgConnectOptions,
) -> Result<(), DatabaseError> {
    let connect_error = |source| DatabaseError::Connect {
        target: config.describe(),
        source,
    };
    match PgConnection::connect_with(options).await {
        Ok(connection) => {
            let _ = connection.close().await;
            return Ok(());
        }
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some(UNDEFINED_DATABASE) => {}
        Err(other) => return Err(connect_error(other)),
    }
    let create_error = |source| DatabaseError::CreateDatabase {
        name: config.name.clone(),
        target: format!("{}:{} as user {}", config.host, config.port, config.user),
        source,
    };
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .map_err(create_error)?;
    let quoted = format!("\"{}\"", config.name.replace('"', "\"\""));
    match sqlx::query(&format!("CREATE DATABASE {quoted}"))
        .execute(&mut admin)
        .await
    {
        Ok(_) => tracing::info!(database = %config.name, "created the database"),
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some(DUPLICATE_DATABASE) => {}
        Err(other) => return Err(create_error(other)),
    }
    let _ = admin.close().await;
    Ok(())
}
