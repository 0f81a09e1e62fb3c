//! The PostgreSQL side at start-up: creates the database and schema if missing, runs the embedded
//! migrations, and opens the pool every query uses (its `search_path` is `DB_SCHEMA`, its
//! `TimeZone` UTC).
//!
//! The database may be one the original NodeJS service created: its tables exist without our
//! migration history. [`service_kit::migrate::migrate_adopting`] recognises it by its
//! `consumed_message` table, skips our baseline migration and runs the later ones, which add
//! what our code needs to the original's tables (see `migrations/`).

use std::time::Duration;

use service_kit::Backoff;
use service_kit::backoff::retry_until;
use service_kit::migrate::Baseline;
use service_kit::postgres::{self, DatabaseSettings, Prepare};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use service_kit::postgres::DatabaseError;

/// The embedded migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Our first migration, whose tables the original system's database already has.
const BASELINE: Baseline<'static> = Baseline {
    version: 20261127000001,
    marker_table: "consumed_message",
};

/// Creates database and schema when missing, migrates, and returns the pool. Waits up to
/// `patience` for a server that is not reachable yet (containers starting together).
pub async fn prepare(
    settings: &DatabaseSettings,
    patience: Duration,
) -> Result<PgPool, DatabaseError> {
    let (pool, _) = retry_until(
        "PostgreSQL",
        patience,
        Backoff::starting_at(Duration::from_millis(200), Duration::from_secs(5)),
        DatabaseError::is_unavailable,
        || {
            postgres::prepare(Prepare {
                database: settings,
                // Short, so that an unreachable database surfaces as an error the consumer
                // retries.
                acquire_timeout: Duration::from_secs(5),
                migrator: &MIGRATOR,
                baseline: BASELINE,
            })
        },
    )
    .await?;
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
