//! The fault suite of issue 6 lives in `tests/fault_suite/`: it starts a private PostgreSQL
//! cluster and a private RabbitMQ node, runs the three real binaries against them under a
//! producer load, injects faults (SIGKILL and restart of the relay and the shipment-service,
//! restarts of RabbitMQ and PostgreSQL, an unbound queue), lets the system drain and audits the
//! databases: nothing lost, nothing applied twice.
//!
//! `make test` runs the short version; `make chaos` runs the long one and prints its counts.
