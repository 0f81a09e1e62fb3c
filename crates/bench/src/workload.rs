//! What the producers write: the order-service's own transaction (order, its lines and its
//! `OrderCreated` outbox row, through `order_service::store::insert_order` and the `outbox`
//! library), the one-row outbox transactions of a drain backlog, and a fixed-rate producer.
//!
//! Every outbox row gets `"timestamp" = clock_timestamp()` from the outbox library; the steady
//! runs copy `(id, timestamp)` into an unlogged side table by trigger, so that latency can be
//! computed even for a relay that deletes the outbox rows it published (polling).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use events::LineStatus;
use order_service::Order;
use order_service::domain::OrderLine;
use outbox::Outbox;
use rust_decimal::Decimal;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::infra::{BenchDb, OUTBOX_TABLE};

/// An order like `resources/data/create-order-request.json`: two lines.
pub fn sample_order() -> Order {
    let line = |item: &str, quantity: i32, cents: i64| OrderLine {
        id: Uuid::now_v7(),
        item: item.to_owned(),
        quantity,
        total_price: Decimal::new(cents, 2),
        status: LineStatus::Entered,
    };
    Order {
        id: Uuid::now_v7(),
        customer_id: 3,
        order_date: Utc::now(),
        line_items: vec![
            line("Debezium in Action", 2, 3998),
            line("Debezium for Dummies", 1, 2999),
        ],
    }
}

/// The outbox writer the order-service builds for its default schema.
pub fn order_outbox() -> Result<Outbox> {
    Outbox::new(OUTBOX_TABLE).context("the outbox table name")
}

/// One `POST /orders` worth of SQL, straight to PostgreSQL, through the order-service's own
/// `store::write_new_order` (order, lines and outbox row in one statement; `pool` has
/// `search_path = orders`).
pub async fn order_transaction(pool: &PgPool, outbox: &Outbox) -> Result<Uuid> {
    let mut connection = pool.acquire().await?;
    order_transaction_on(&mut connection, outbox).await
}

/// [`order_transaction`] on a connection the caller holds.
pub async fn order_transaction_on(connection: &mut PgConnection, outbox: &Outbox) -> Result<Uuid> {
    let order = sample_order();
    let event = order.created_event();
    let event_id =
        order_service::store::write_new_order(connection, outbox, &order, &event, None).await?;
    Ok(event_id)
}

/// What a steady-state producer commits per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteadyProducer {
    /// One outbox row per transaction (as the Debezium peer's latency tool, with pgbench): the
    /// database work per event is small, so the latency is the relay's, not CPU contention's.
    OutboxRow,
    /// The order-service's whole transaction (order, lines, outbox row): on 2 cores at
    /// 1,000/s this alone takes most of the CPU.
    Order,
}

/// One `OrderCreated` outbox row as a transaction of its own: a single `INSERT` outside a
/// transaction block (`synchronous_commit` on), one round trip, as the Debezium peer's pgbench
/// script. An explicit `BEGIN`/`COMMIT` would put a client round trip between the row's
/// `clock_timestamp()` and its commit, and the measured latency would include it.
pub async fn outbox_row_transaction(
    connection: &mut PgConnection,
    outbox: &Outbox,
) -> Result<Uuid> {
    let event_id = outbox
        .enqueue_on(connection, &sample_order().created_event())
        .await?;
    Ok(event_id)
}

/// Commits `events` outbox rows, one per transaction, from `clients` connections with
/// `synchronous_commit = off` (the Debezium peer's drain backlog: pgbench, 4 clients).
pub async fn commit_backlog(db: &BenchDb, events: usize, clients: usize) -> Result<()> {
    let options = db
        .orders
        .connect_options()
        .as_ref()
        .clone()
        .options([("synchronous_commit", "off")]);
    let pool = PgPoolOptions::new()
        .max_connections(clients as u32)
        .connect_with(options)
        .await
        .context("connecting the backlog writers")?;
    let outbox = order_outbox()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let pool = pool.clone();
        let outbox = outbox.clone();
        let next = Arc::clone(&next);
        writers.push(tokio::spawn(async move {
            let mut connection = pool.acquire().await?;
            while next.fetch_add(1, Ordering::Relaxed) < events {
                let event = sample_order().created_event();
                // Outside a transaction block: the INSERT is a transaction of its own.
                outbox.enqueue_on(&mut connection, &event).await?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await.context("a backlog writer panicked")??;
    }
    pool.close().await;
    Ok(())
}

/// Installs the trigger copying each outbox row's `(id, "timestamp")` into the unlogged
/// `public.bench_event_time` (no WAL, so the relays do not see it).
pub async fn install_event_time_log(db: &BenchDb) -> Result<()> {
    for statement in [
        "CREATE UNLOGGED TABLE public.bench_event_time (id uuid NOT NULL, ts timestamptz NOT NULL)",
        "CREATE FUNCTION public.bench_log_event_time() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO public.bench_event_time VALUES (NEW.id, NEW.\"timestamp\"); \
         RETURN NULL; END $$",
        "CREATE TRIGGER bench_event_time AFTER INSERT ON orders.outbox_event \
         FOR EACH ROW EXECUTE FUNCTION public.bench_log_event_time()",
    ] {
        sqlx::query(statement)
            .execute(db.admin())
            .await
            .context("installing the event-time log")?;
    }
    Ok(())
}

/// Every logged event with its commit-time stamp, in microseconds since the Unix epoch.
pub async fn logged_event_times(db: &BenchDb) -> Result<Vec<(Uuid, i64)>> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, (extract(epoch FROM ts) * 1000000)::int8 FROM public.bench_event_time",
    )
    .fetch_all(db.admin())
    .await
    .context("reading the event-time log")?;
    Ok(rows)
}

/// Transactions per second of [`order_transaction`] with `concurrency` workers for `seconds`
/// (after a short warm-up that is not counted).
pub async fn producer_throughput(db: &BenchDb, concurrency: usize, seconds: f64) -> Result<f64> {
    let options = db.orders.connect_options().as_ref().clone();
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .min_connections(concurrency as u32)
        .connect_with(options)
        .await
        .context("connecting the producers")?;
    let outbox = order_outbox()?;
    let warm_up = Duration::from_secs_f64((seconds / 5.0).min(0.5));
    let start = Instant::now();
    let count_from = start + warm_up;
    let end = count_from + Duration::from_secs_f64(seconds);
    let counted = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let pool = pool.clone();
        let outbox = outbox.clone();
        let counted = Arc::clone(&counted);
        workers.push(tokio::spawn(async move {
            loop {
                order_transaction(&pool, &outbox).await?;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if now >= count_from {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await.context("a producer panicked")??;
    }
    pool.close().await;
    Ok(counted.load(Ordering::Relaxed) as f64 / seconds)
}

/// What a fixed-rate producer did.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub committed: u64,
    pub failed: u64,
    /// Wall clock at the start and the end of the load, microseconds since the Unix epoch.
    pub started_unix_micros: i64,
    pub ended_unix_micros: i64,
    pub achieved_rate: f64,
}

/// Commits [`order_transaction`]s at `rate` per second for `seconds`: transaction `i` starts
/// at `start + i / rate` (or at once when the producer is behind), from enough workers that
/// one slow commit does not hold the others back.
pub async fn produce_at_rate(
    pool: &PgPool,
    producer: SteadyProducer,
    rate: f64,
    seconds: f64,
) -> Result<Produced> {
    let outbox = order_outbox()?;
    let total = (rate * seconds).round().max(1.0) as u64;
    let workers = ((rate / 100.0).ceil() as usize).clamp(4, 32);
    let next = Arc::new(AtomicU64::new(0));
    let committed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started_unix_micros = unix_micros_now();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let pool = pool.clone();
        let outbox = outbox.clone();
        let (next, committed, failed) = (
            Arc::clone(&next),
            Arc::clone(&committed),
            Arc::clone(&failed),
        );
        tasks.push(tokio::spawn(async move {
            // A connection per worker, held for the run: no pool hand-off (and its liveness
            // ping) per event.
            let mut connection = match pool.acquire().await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "a steady-state producer cannot connect");
                    return;
                }
            };
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / rate))
                    .await;
                let result = match producer {
                    SteadyProducer::Order => order_transaction_on(&mut connection, &outbox).await,
                    SteadyProducer::OutboxRow => {
                        outbox_row_transaction(&mut connection, &outbox).await
                    }
                };
                match result {
                    Ok(_) => committed.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        tracing::warn!(%error, "a steady-state transaction failed");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for task in tasks {
        task.await.context("a producer panicked")?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let committed = committed.load(Ordering::Relaxed);
    Ok(Produced {
        committed,
        failed: failed.load(Ordering::Relaxed),
        started_unix_micros,
        ended_unix_micros: unix_micros_now(),
        achieved_rate: committed as f64 / elapsed,
    })
}

/// Inserts one event in a transaction of its own (warm-up: proves the relay is streaming).
pub async fn one_event(db: &BenchDb) -> Result<Uuid> {
    let mut connection = db.orders.acquire().await?;
    let mut tx = connection.begin().await?;
    let id = order_outbox()?
        .enqueue_on(&mut tx, &sample_order().created_event())
        .await?;
    tx.commit().await?;
    Ok(id)
}

/// Now, in microseconds since the Unix epoch.
pub fn unix_micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as i64)
}
