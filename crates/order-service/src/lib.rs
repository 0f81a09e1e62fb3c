//! order-service: the HTTP API over the order tables, announcing every state change through a
//! transactional outbox.
//!
//! # Layout
//!
//! - [`config`]: environment variables (`SERVER_PORT`, `DB_*`, `DATABASE_URL`, `ID_FORMAT`, ...), checked at
//!   start-up; [`ENV_VARS`] lists every one the binary reads.
//! - [`startup`]: [`Application::build`] (database, listener, router) and
//!   [`Application::run_until_stopped`].
//! - [`database`]: creates the database if missing, the pool (`search_path` = `DB_SCHEMA`,
//!   `TimeZone` = UTC) and the embedded migrations in `migrations/`, adopting a database the
//!   original system created.
//! - [`routes`]: the handlers; [`extract`]: body and path extractors with JSON rejections;
//!   [`error`]: the one [`ApiError`] type and its JSON body.
//! - [`domain`]: requests parsed into checked values, the [`Order`] written and answered, and
//!   the [`StoredOrder`] read back (nullable columns of the original system's rows as `None`).
//! - [`store`]: all SQL; each change and its outbox event in one transaction.
//! - [`telemetry`]: logs and the Prometheus metrics behind `GET /metrics`.

pub mod config;
pub mod database;
pub mod domain;
pub mod error;
pub mod extract;
pub mod routes;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use config::{Config, ConfigError, ENV_VARS, Secret};
pub use domain::{Order, StoredOrder};
pub use error::ApiError;
pub use startup::{Application, StartupError};
