//! outbox-relay (placeholder until its issue lands).
