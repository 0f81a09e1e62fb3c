//! Wiring: [`Application::build`] prepares the database, connects to RabbitMQ (declaring the
//! topology) and binds the HTTP listener; [`Application::run_until_stopped`] serves HTTP and
//! consumes until the shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use service_kit::Backoff;
use service_kit::backoff::retry_until;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerError, BrokerSession};
use crate::config::Config;
use crate::consumer::{Consumer, Health};
use crate::db::{self, DatabaseError};
use crate::http::{self, AppState};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("cannot listen on {address} (SERVER_HOST/SERVER_PORT): {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A built service, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    port: u16,
    pool: PgPool,
    session: BrokerSession,
    consumer: Consumer,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, BuildError> {
        let metrics = crate::metrics::install();
        crate::metrics::describe();
        let pool = db::prepare(&config.database, config.startup_patience).await?;
        let session = open_broker(&config, config.startup_patience).await?;
        tracing::info!(
            url = %config.broker.redacted_url(),
            queue = %config.broker.queue,
            dead_letter_queue = %config.broker.dead_letter_queue(),
            "RabbitMQ topology declared"
        );
        let address = SocketAddr::new(config.server.host, config.server.port);
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| BuildError::Bind { address, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| BuildError::Bind { address, source })?
            .port();
        let health = Arc::new(Health::default());
        let consumer = Consumer::new(
            pool.clone(),
            config.broker.clone(),
            config.consumer.clone(),
            health.clone(),
        );
        Ok(Self {
            listener,
            port,
            pool: pool.clone(),
            session,
            consumer,
            state: AppState {
                pool,
                health,
                metrics,
            },
        })
    }

    /// The HTTP port (the one picked when SERVER_PORT is 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves HTTP and consumes until `shutdown` completes, then finishes the message in hand
    /// and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let token = CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let consumer = tokio::spawn(self.consumer.run(self.session, token.clone()));
        tracing::info!(port = self.port, "shipment-service listening");
        let served = axum::serve(self.listener, http::router(self.state))
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .await;
        // The server may also stop on its own error: stop consuming too.
        token.cancel();
        if let Err(error) = consumer.await {
            tracing::error!(%error, "the consumer task failed");
        }
        served
    }

    /// The database pool (tests read the tables through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn open_broker(config: &Config, patience: Duration) -> Result<BrokerSession, BrokerError> {
    retry_until(
        "RabbitMQ",
        patience,
        Backoff::starting_at(Duration::from_millis(200), Duration::from_secs(5)),
        |error: &BrokerError| !error.is_permanent(),
        || BrokerSession::open(&config.broker, config.consumer.prefetch),
    )
    .await
}
