//! End-to-end tests live in `tests/`: `whole_system.rs` runs the three real binaries as separate
//! processes against the real servers; `deployment_files.rs` checks docker-compose.yml and the
//! Dockerfile without a Docker engine.
