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

use crate::broker::{self, BrokerError, BrokerSession};
use crate::config::{BrokerSettings, Config, ConsumerSettings};
use crate::consumer::{Consumer, Health};
use crate::db::{self, DatabaseError};
use crate::http::{self, AppState};
use crate::partitions;

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
    consumption: Consumption,
    state: AppState,
}

/// What consumes: one queue, or the partitions shared with the other instances.
#[derive(Debug)]
enum Consumption {
    Single {
        session: Box<BrokerSession>,
        consumer: Box<Consumer>,
    },
    Partitioned {
        broker: BrokerSettings,
        settings: ConsumerSettings,
    },
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, BuildError> {
        let metrics = crate::metrics::install();
        crate::metrics::describe();
        let pool = db::prepare(&config.database, config.startup_patience).await?;
        let session = open_broker(&config, config.startup_patience).await?;
        if config.broker.partitions > 1 {
            tracing::info!(
                url = %config.broker.redacted_url(),
                partitions = config.broker.partitions,
                queues = %format!("{}.0 … {}.{}", config.broker.queue, config.broker.queue, config.broker.partitions - 1),
                hash_exchange = %config.broker.hash_exchange(),
                dead_letter_queue = %config.broker.dead_letter_queue(),
                "RabbitMQ topology declared (partitioned: publish with the order id as routing key)"
            );
        } else {
            tracing::info!(
                url = %config.broker.redacted_url(),
                queue = %config.broker.queue,
                dead_letter_queue = %config.broker.dead_letter_queue(),
                "RabbitMQ topology declared"
            );
        }
        let address = SocketAddr::new(config.server.host, config.server.port);
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| BuildError::Bind { address, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| BuildError::Bind { address, source })?
            .port();
        let health = Arc::new(Health::default());
        let consumption = match session {
            Some(session) => Consumption::Single {
                session: Box::new(session),
                consumer: Box::new(Consumer::new(
                    pool.clone(),
                    config.broker.clone(),
                    config.consumer.clone(),
                    health.clone(),
                )),
            },
            None => Consumption::Partitioned {
                broker: config.broker.clone(),
                settings: config.consumer.clone(),
            },
        };
        Ok(Self {
            listener,
            port,
            pool: pool.clone(),
            consumption,
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
        let consumer = match self.consumption {
            Consumption::Single { session, consumer } => {
                tokio::spawn(consumer.run(Some(*session), token.clone()))
            }
            Consumption::Partitioned { broker, settings } => tokio::spawn(partitions::run(
                self.pool.clone(),
                broker,
                settings,
                self.state.health.clone(),
                token.clone(),
            )),
        };
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

/// Declares the topology, waiting up to `patience` for the broker. With one queue, returns
/// the session consuming it; with partitions, none (sessions open as partitions are assigned).
async fn open_broker(
    config: &Config,
    patience: Duration,
) -> Result<Option<BrokerSession>, BrokerError> {
    let backoff = Backoff::starting_at(Duration::from_millis(200), Duration::from_secs(5));
    let retryable = |error: &BrokerError| !error.is_permanent();
    if config.broker.partitions > 1 {
        retry_until("RabbitMQ", patience, backoff, retryable, || {
            broker::declare_only(&config.broker)
        })
        .await?;
        return Ok(None);
    }
    retry_until("RabbitMQ", patience, backoff, retryable, || {
        BrokerSession::open(&config.broker, config.consumer.prefetch)
    })
    .await
    .map(Some)
}
