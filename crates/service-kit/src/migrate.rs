//! Schema migrations that adopt a database the original system created.
//!
//! People move to our services on the databases their NodeJS services made: the tables of our
//! first migration (the baseline) already exist there, without sqlx's record of it, so running
//! it would fail on `CREATE TABLE`. [`migrate_adopting`] recognises that case and runs every
//! migration but the baseline; the migrations after it are written to bring both kinds of
//! database (ours and the original's) to what the service needs, with idempotent additions only
//! (`ADD COLUMN IF NOT EXISTS`, `CREATE ... IF NOT EXISTS`), never a rewrite of existing rows.
//!
//! The decision is made again at every start and needs no state of its own:
//! - the baseline is recorded in `_sqlx_migrations` → a database we created: run everything;
//! - the baseline is not recorded and its marker table is missing → a fresh database: run
//!   everything;
//! - the baseline is not recorded and its marker table exists → the original's database: run
//!   everything but the baseline.

use std::borrow::Cow;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// The migration that creates the tables the original system also has, and one of them to
/// look for. The table name is resolved through the pool's `search_path`.
#[derive(Debug, Clone, Copy)]
pub struct Baseline<'a> {
    pub version: i64,
    pub marker_table: &'a str,
}

/// Which kind of database [`migrate_adopting`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaOrigin {
    /// Created by our migrations (now or before).
    Ours,
    /// Created by the original system: adopted, its rows kept.
    Original,
}

/// Applies `migrator` to `pool`, skipping the baseline on a database the original system
/// created (see the module documentation).
pub async fn migrate_adopting(
    pool: &PgPool,
    migrator: &Migrator,
    baseline: Baseline<'_>,
) -> Result<SchemaOrigin, MigrateError> {
    let origin = detect_origin(pool, baseline).await?;
    match origin {
        SchemaOrigin::Ours => migrator.run(pool).await?,
        SchemaOrigin::Original => {
            // sqlx has no public way to leave one migration out; its fields are public (and
            // pinned by Cargo.lock), so the same migrator minus the baseline is built here.
            let without_baseline = Migrator {
                migrations: Cow::Owned(
                    migrator
                        .iter()
                        .filter(|migration| migration.version != baseline.version)
                        .cloned()
                        .collect(),
                ),
                ignore_missing: migrator.ignore_missing,
                locking: migrator.locking,
                no_tx: migrator.no_tx,
            };
            without_baseline.run(pool).await?;
        }
    }
    Ok(origin)
}

/// Applies only the migrations up to and including `version`: the schema an earlier release
/// of the service left behind (the upgrade tests start from it).
pub async fn migrate_up_to(
    pool: &PgPool,
    migrator: &Migrator,
    version: i64,
) -> Result<(), MigrateError> {
    Migrator {
        migrations: Cow::Owned(
            migrator
                .iter()
                .filter(|migration| migration.version <= version)
                .cloned()
                .collect(),
        ),
        ignore_missing: migrator.ignore_missing,
        locking: migrator.locking,
        no_tx: migrator.no_tx,
    }
    .run(pool)
    .await
}

async fn detect_origin(
    pool: &PgPool,
    baseline: Baseline<'_>,
) -> Result<SchemaOrigin, MigrateError> {
    let (has_history, has_marker): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('_sqlx_migrations') IS NOT NULL, to_regclass($1) IS NOT NULL",
    )
    .bind(baseline.marker_table)
    .fetch_one(pool)
    .await?;
    if !has_marker {
        return Ok(SchemaOrigin::Ours);
    }
    let baseline_recorded = has_history
        && sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $1 AND success)",
        )
        .bind(baseline.version)
        .fetch_one(pool)
        .await?;
    Ok(if baseline_recorded {
        SchemaOrigin::Ours
    } else {
        SchemaOrigin::Original
    })
}
