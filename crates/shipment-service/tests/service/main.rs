//! Integration tests of shipment-service against the real PostgreSQL and RabbitMQ: each test has
//! its own database and vhost (see `support`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adoption;
mod backlog;
mod batches;
mod consuming;
mod dlq;
mod http_api;
mod original_events;
mod partitions;
mod poison;
mod startup;
mod support;
