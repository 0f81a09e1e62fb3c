//! Integration tests of shipment-service against the real PostgreSQL and RabbitMQ: each test has
//! its own database and vhost (see `support`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backlog;
mod consuming;
mod http_api;
mod poison;
mod startup;
mod support;
