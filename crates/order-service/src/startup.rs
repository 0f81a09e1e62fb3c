//! Building and running the service: [`Application::build`] prepares the database, binds the
//! listener and assembles the router; [`Application::run_until_stopped`] serves until the
//! shutdown future completes, then finishes in-flight requests and closes the pool.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::database::{self, DatabaseError};
use crate::routes::{self, AppState};
use crate::store::OrderStore;
use crate::telemetry::Metrics;

/// How often histogram samples are folded into buckets.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(
        "invalid outbox table for DB_SCHEMA {schema:?} or OUTBOX_TRACING_SPAN_CONTEXT_FIELD: {source}"
    )]
    Outbox {
        schema: String,
        #[source]
        source: outbox::OutboxError,
    },
    #[error("cannot listen on {address} (SERVER_HOST, SERVER_PORT): {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot look up the outbox trace column (OUTBOX_TRACING_SPAN_CONTEXT_FIELD): {0}")]
    TraceColumn(#[source] sqlx::Error),
    #[error("cannot set up the metrics registry: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
}

/// `column` if the outbox table has it. A configured column the table lacks (a name other than
/// the migration's) is warned about once and no context is stored: every insert would fail
/// otherwise.
async fn present_trace_column(
    pool: &PgPool,
    schema: &str,
    column: &str,
) -> Result<Option<String>, sqlx::Error> {
    let present: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = 'outbox_event' AND column_name = $2)",
    )
    .bind(schema)
    .bind(column)
    .fetch_one(pool)
    .await?;
    if !present {
        tracing::warn!(
            column,
            "the outbox table has no such column (OUTBOX_TRACING_SPAN_CONTEXT_FIELD): trace contexts are not stored"
        );
    }
    Ok(present.then(|| column.to_owned()))
}

/// A ready-to-run order-service: database migrated, port bound.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    pool: PgPool,
    state: AppState,
}

impl Application {
    /// Creates the database if needed, migrates it, binds `SERVER_HOST:SERVER_PORT` (port 0
    /// picks a free one) and builds the router.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let pool = database::connect_and_migrate(&config.database).await?;
        let trace_column = match config.outbox_trace_column.as_deref() {
            Some(column) => present_trace_column(&pool, &config.database.schema, column)
                .await
                .map_err(StartupError::TraceColumn)?,
            None => None,
        };
        let table = format!("{}.outbox_event", config.database.schema);
        let outbox = outbox::Outbox::new(&table)
            .map_err(|source| StartupError::Outbox {
                schema: config.database.schema.clone(),
                source,
            })?
            .delete_after_insert(config.outbox_delete_after_insert)
            .id_format(config.id_format)
            .trace_column(trace_column.as_deref())
            .map_err(|source| StartupError::Outbox {
                schema: config.database.schema.clone(),
                source,
            })?;
        let address = format!("{}:{}", config.server.host, config.server.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| StartupError::Bind {
                address: address.clone(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?;
        let state = AppState {
            store: OrderStore::new(pool.clone(), outbox, config.id_format),
            metrics: Metrics::new()?,
        };
        Ok(Self {
            listener,
            address,
            pool,
            state,
        })
    }

    /// The bound port (the real one when `SERVER_PORT=0`).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The service's connection pool (tests use it to simulate a database outage).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let metrics = self.state.metrics.clone();
        let upkeep = tokio::spawn(async move {
            let mut interval = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
            loop {
                interval.tick().await;
                metrics.run_upkeep();
            }
        });
        tracing::info!(address = %self.address, "order-service listening");
        let served = axum::serve(self.listener, routes::router(self.state))
            .with_graceful_shutdown(shutdown)
            .await;
        upkeep.abort();
        self.pool.close().await;
        tracing::info!("order-service stopped");
        served
    }
}
