//! Decoder of PostgreSQL's `pgoutput` logical replication messages (protocol version 1): our
//! own, so that the relay depends on no external decoder for the data it must never lose.
//!
//! Give [`decode`] the payload of one XLogData message of the replication stream (or one row of
//! `pg_logical_slot_peek_binary_changes`); it returns a [`LogicalReplicationMessage`].
//! Tuple values are slices of the input [`bytes::Bytes`] (no copy). The decoder never panics
//! and never allocates on the word of a length field: a length beyond the remaining input is a
//! [`DecodeError::Truncated`], a wrong value a [`DecodeError::Invalid`], both with the offset.
//!
//! # Layout
//! - `lsn`: [`Lsn`], a WAL position, displayed and parsed as `16/B374D848`;
//! - `message`: the message types ([`Begin`], [`Relation`], [`Insert`], …);
//! - `decode`: [`decode`] and [`DecodeError`];
//! - `encode`: [`encode`], the inverse, for tests and fixtures.
//!
//! The tests decode real messages captured from PostgreSQL (`tests/fixtures/stream.hex`, made
//! by `tests/fixtures/capture.sh`) and fuzz the decoder with property tests.

mod decode;
mod encode;
mod lsn;
mod message;

pub use decode::{DecodeError, decode};
pub use encode::encode;
pub use lsn::{Lsn, ParseLsnError};
pub use message::{
    Begin, Column, Commit, Delete, Insert, LogicalMessage, LogicalReplicationMessage, Origin,
    POSTGRES_EPOCH_UNIX_MICROS, Relation, Truncate, TupleData, TupleValue, TypeMessage, Update,
    unix_micros,
};
