//! shipment-service: consumes order events from RabbitMQ and applies each exactly once to its
//! own database, with an HTTP API over the shipments.
//!
//! # Layout
//! - [`config`]: environment variables ([`ENV_VARS`]), validated at start.
//! - [`db`]: creates database and schema, runs the embedded migrations (adopting the original
//!   system's tables when it finds them), opens the pool.
//! - [`broker`]: RabbitMQ connection, topology, dead-letter publishing.
//! - [`event`]: one AMQP message → a typed event, or the reason it is poison.
//! - [`apply`]: the effect of each event, exactly once; the event id is recorded in the same
//!   transaction (one per batch of already-delivered events, a batch of one when alone).
//! - [`consumer`]: the consume loop (a reader decoding batches while the applier applies the
//!   previous one in delivery order; one multiple ack per batch after its commit; retries,
//!   reconnects).
//! - [`partitions`]: with `SHIPMENT_PARTITIONS` > 1, the instances' membership (announced
//!   through RabbitMQ), the assignment of partitions and one consumer session per owned one.
//! - [`dlq`]: the dead-letter queue for an operator (`shipment-service dlq list|replay|purge`).
//! - [`queries`] and [`http`]: the read API, `/health`, `/metrics`.
//! - [`metrics`]: metric names and the Prometheus recorder.
//! - [`startup`]: [`Application::build`] and [`Application::run_until_stopped`].

pub mod apply;
pub mod broker;
pub mod config;
pub mod consumer;
pub mod db;
pub mod dlq;
pub mod event;
pub mod http;
pub mod metrics;
pub mod partitions;
pub mod queries;
pub mod startup;

pub use config::{Config, ConfigError, ENV_VARS};
pub use startup::{Application, BuildError};
