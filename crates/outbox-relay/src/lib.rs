//! outbox-relay: change-data-capture from PostgreSQL's WAL to RabbitMQ, losing nothing.
//!
//! The relay streams the outbox table(s) out of the write-ahead log by logical replication
//! (built-in `pgoutput` plugin), routes each inserted row with Debezium's outbox event router
//! semantics, and publishes it to RabbitMQ with publisher confirms. It reports a position to
//! PostgreSQL only after the broker confirmed every event at or below it, so a crash of the
//! relay, the broker or the database loses nothing (events may come twice, with the same
//! `message_id`).
//!
//! Where logical replication is not allowed, `--source polling` (`polling`) reads the
//! outbox table instead (`SELECT ... FOR UPDATE NOWAIT`, publish, confirm, `DELETE`), through
//! the same pipeline, router, wire formats, sink, `/health` and metrics, with the trade-offs
//! its module documents (timestamp order rather than commit order, latency of a poll
//! interval).
//!
//! # Layout
//! - [`config`]: flags, environment variables and the Debezium properties file → [`Config`].
//! - `source`: the `Source` contract (open, next, ack, rewind, close; standby as an outcome)
//!   and its source-neutral events; the shared PostgreSQL connection and start errors.
//! - `replication`: the replication source: start checks, publication and slot, sessions
//!   from the flush LSN, pgoutput → neutral rows, ack = confirm the LSN.
//! - `polling`: the polling source: start checks, advisory locks, a worker per session
//!   reading batches of rows, ack = DELETE the delivered rows + COMMIT.
//! - `row`: the source-neutral row and table schema both sources yield.
//! - [`router`]: row → exchange, routing key, message id, headers, payload.
//! - `message`: a routed row → the AMQP message (or its dead-letter form).
//! - [`sink`]: the `Sink` contract (at-least-once; a nack or a return is never success) and
//!   the RabbitMQ sink: confirms, `mandatory`, exchange declaration.
//! - `broker`: the sink's connection and its reconnect step with backoff.
//! - [`window`]: in-flight events and the flush position derived from their confirms.
//! - `pipeline`: the one event loop over any source and sink, with its state as enums
//!   (reading, publishing, lifecycle): retries, reconnects, standby, stalls, shutdown.
//! - [`http`] and [`telemetry`]: `/health`, `/metrics`, logs.
//! - [`resync`]: `outbox-relay resync`, re-publishing rows still in the table (a time range,
//!   or from an event on) through the same pipeline; with `--recreate-slot`, the way back
//!   from a slot PostgreSQL invalidated.
//!
//! # Entry points
//! [`run`] runs a relay until a shutdown future resolves (the binary passes SIGTERM/SIGINT);
//! [`Relay::start`] starts one in the background and returns a [`RunningRelay`] handle with
//! its HTTP address and status, for tests and the benchmark.
//!
//! # High availability
//! Two or more relays may run with the same slot. PostgreSQL lets one session hold a slot:
//! the first relay streams; the others find the slot "active", report `standby: true` in
//! `/health` (503, not ready) and try again every second. When the active relay dies its
//! connection closes, PostgreSQL releases the slot, and a standby takes it within about a
//! second, resuming from the slot's confirmed position. Events the dead relay published but
//! had not yet confirmed to PostgreSQL are published again (same `message_id`).
//! The polling source does the same with a PostgreSQL advisory lock per table (see
//! `polling`).

pub mod amqp;
mod backoff;
mod broker;
pub mod config;
pub mod http;
mod message;
mod pipeline;
#[cfg(test)]
mod pipeline_tests;
mod polling;
mod replication;
pub mod resync;
pub mod router;
mod row;
pub mod sink;
mod source;
pub mod telemetry;
pub mod window;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError, ENV_VARS, SourceKind};
pub use polling::PollingStartError;
pub use source::StartError;
pub use telemetry::{HealthReport, RelayStatus};

use crate::pipeline::{Pipeline, Settings};
use crate::polling::{PollPosition, PollingSource};
use crate::replication::ReplicationSource;
use crate::sink::{AmqpConnector, AmqpSink, Connector, SinkError};

/// Why the relay could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    PollingStart(#[from] PollingStartError),
    #[error(transparent)]
    Broker(SinkError),
    #[error("cannot listen for HTTP on {address}: {source}")]
    Http {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("relay task failed: {0}")]
    Task(String),
}

/// Starts relays.
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// Checks the servers, prepares publication and slot (replication source) or checks the
    /// tables (polling source), connects to the broker, binds the HTTP listener, and starts
    /// relaying in the background.
    pub async fn start(config: Config) -> Result<RunningRelay, RelayError> {
        let config = Arc::new(config);
        let status = Arc::new(RelayStatus::default());
        let _ = telemetry::prometheus_handle();

        // The replication source's starting position; none for the polling source.
        let start = match config.source {
            SourceKind::Replication => {
                let mut connection =
                    source::connect(&config.postgres, config.connect_timeout).await?;
                let start = replication::prepare(
                    &mut connection,
                    &config.postgres,
                    &config.router.tables,
                    &config.publication,
                    &config.slot,
                )
                .await?;
                drop(connection);
                tracing::info!(
                    database = %config.postgres.display(),
                    slot = %config.slot,
                    publication = %config.publication,
                    confirmed = %start,
                    "PostgreSQL ready"
                );
                Some(start)
            }
            SourceKind::Polling => {
                polling::prepare(&config).await?;
                tracing::info!(
                    database = %config.postgres.display(),
                    batch_size = config.polling.batch_size,
                    interval = ?config.polling.interval,
                    "PostgreSQL ready (polling source)"
                );
                None
            }
        };

        let mut connector = AmqpConnector {
            settings: config.amqp.clone(),
            exchange_type: config.exchange_type,
        };
        let sink = connect_broker(&config, &mut connector)
            .await
            .map_err(RelayError::Broker)?;
        tracing::info!(broker = %config.amqp.display, "RabbitMQ connected");

        let address = format!("{}:{}", config.http_host, config.http_port);
        let listener = http::bind(&config.http_host, config.http_port)
            .await
            .map_err(|source| RelayError::Http {
                address: address.clone(),
                source,
            })?;
        let http_addr = http::local_addr(&listener).map_err(|source| RelayError::Http {
            address: address.clone(),
            source,
        })?;
        tracing::info!(%http_addr, "serving /health and /metrics");

        let stop_pipeline = CancellationToken::new();
        let stop_http = CancellationToken::new();
        let http_task = {
            let status = Arc::clone(&status);
            let stop = stop_http.clone();
            tokio::spawn(async move {
                if let Err(error) =
                    http::serve(listener, status, async move { stop.cancelled().await }).await
                {
                    tracing::error!(%error, "HTTP server failed");
                }
            })
        };
        let pipeline_task = {
            let stop = stop_pipeline.clone();
            let shutdown = async move { stop.cancelled().await };
            let settings = Settings::from_config(&config);
            let status = Arc::clone(&status);
            // One pipeline; the source is the configuration's choice.
            match start {
                Some(start) => {
                    let source = ReplicationSource::new(Arc::clone(&config));
                    let pipeline = Pipeline::new(settings, status, source, connector, sink, start);
                    tokio::spawn(pipeline.run(shutdown))
                }
                None => {
                    let source = PollingSource::new(Arc::clone(&config));
                    let start = PollPosition::default();
                    let pipeline = Pipeline::new(settings, status, source, connector, sink, start);
                    tokio::spawn(pipeline.run(shutdown))
                }
            }
        };
        Ok(RunningRelay {
            http_addr,
            status,
            stop_pipeline,
            stop_http,
            pipeline_task,
            http_task,
        })
    }
}

/// Connects to the broker, retrying until the configuration's connect timeout (start-up of the
/// relay and of a resync).
pub(crate) async fn connect_broker(
    config: &Config,
    connector: &mut AmqpConnector,
) -> Result<AmqpSink, SinkError> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), connector.connect()).await;
        let error = match attempt {
            Ok(Ok(sink)) => return Ok(sink),
            // A certificate that does not verify will not verify on the next attempt either.
            Ok(Err(error)) if is_permanent_tls_failure(&error) => {
                return Err(error);
            }
            Ok(Err(error)) => error,
            Err(_) => SinkError::Timeout {
                address: config.amqp.display.clone(),
            },
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        tracing::warn!(%error, "RabbitMQ not reachable yet; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn is_permanent_tls_failure(error: &SinkError) -> bool {
    matches!(
        error,
        SinkError::Connect {
            source: amqp::ConnectError::Tls(tls),
            ..
        } if tls.is_permanent()
    )
}

/// A relay running in the background.
#[derive(Debug)]
pub struct RunningRelay {
    http_addr: SocketAddr,
    status: Arc<RelayStatus>,
    stop_pipeline: CancellationToken,
    stop_http: CancellationToken,
    pipeline_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
}

impl RunningRelay {
    /// Where `/health` and `/metrics` are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The HTTP port (useful with port 0).
    pub fn http_port(&self) -> u16 {
        self.http_addr.port()
    }

    /// The live status (what `/health` reports).
    pub fn status(&self) -> &Arc<RelayStatus> {
        &self.status
    }

    /// Graceful shutdown: stop reading, wait for in-flight confirms, report the final
    /// position, close connections.
    pub async fn shutdown(self) -> Result<(), RelayError> {
        self.stop_pipeline.cancel();
        let result = self.pipeline_task.await;
        self.stop_http.cancel();
        let _ = self.http_task.await;
        result.map_err(|error| RelayError::Task(error.to_string()))
    }

    /// Stops at once, like a crash: nothing is drained or reported.
    pub fn abort(self) {
        self.pipeline_task.abort();
        self.http_task.abort();
    }
}

/// Runs a relay until `shutdown` resolves, then shuts it down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
    let relay = Relay::start(config).await?;
    shutdown.await;
    relay.shutdown().await
}
