//! Integration tests of order-service against the real PostgreSQL: one test binary, one module
//! per concern. Each test spawns its own app on port 0 over its own database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod atomicity;
mod bad_input;
mod binary;
mod concurrency;
mod create_order;
mod fuzz;
mod helpers;
mod observability;
mod original_contract;
mod original_database;
mod startup;
mod update_line;
