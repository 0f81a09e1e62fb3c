//! The messages of pgoutput's logical replication protocol, version 1, as Rust values.
//!
//! Field names follow PostgreSQL's "Logical Replication Message Formats" documentation.
//! Timestamps are microseconds since the PostgreSQL epoch (2000-01-01 00:00:00 UTC).

use bytes::Bytes;

use crate::Lsn;

/// Microseconds from the Unix epoch to the PostgreSQL epoch (2000-01-01 00:00:00 UTC).
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Converts a PostgreSQL timestamp (µs since 2000-01-01) to µs since 1970-01-01.
pub fn unix_micros(postgres_micros: i64) -> i64 {
    postgres_micros.saturating_add(POSTGRES_EPOCH_UNIX_MICROS)
}

/// One pgoutput message: the payload of one XLogData message of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalReplicationMessage {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalMessage),
}

impl LogicalReplicationMessage {
    /// The message's type byte on the wire (`B`, `C`, `O`, `R`, `Y`, `I`, `U`, `D`, `T`, `M`).
    pub fn tag(&self) -> u8 {
        match self {
            LogicalReplicationMessage::Begin(_) => b'B',
            LogicalReplicationMessage::Commit(_) => b'C',
            LogicalReplicationMessage::Origin(_) => b'O',
            LogicalReplicationMessage::Relation(_) => b'R',
            LogicalReplicationMessage::Type(_) => b'Y',
            LogicalReplicationMessage::Insert(_) => b'I',
            LogicalReplicationMessage::Update(_) => b'U',
            LogicalReplicationMessage::Delete(_) => b'D',
            LogicalReplicationMessage::Truncate(_) => b'T',
            LogicalReplicationMessage::Message(_) => b'M',
        }
    }
}

/// Start of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time, µs since 2000-01-01 (see [`unix_micros`]).
    pub commit_timestamp: i64,
    pub xid: u32,
}

/// End of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Unused by PostgreSQL (0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record: the position to confirm once the transaction is handled.
    pub end_lsn: Lsn,
    /// Commit time, µs since 2000-01-01.
    pub commit_timestamp: i64,
}

/// The transaction came from another node (replication origin set in the writing session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The commit LSN on the origin server.
    pub commit_lsn: Lsn,
    pub name: String,
}

/// Describes a table; sent before the first change to it in a session and after its schema changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The table's OID, which changes refer to.
    pub relation_id: u32,
    /// Schema name; empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `relreplident`: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// Columns in tuple order (generated columns are not sent).
    pub columns: Vec<Column>,
}

impl Relation {
    /// The position of the column called `name` in this relation's tuples.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity key.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`, e.g. 259 for `varchar(255)`; -1 when none.
    pub type_modifier: i32,
}

/// Describes a non-built-in data type used by a column (e.g. an enum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    pub type_oid: u32,
    /// Schema name; empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
}

/// A row was inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub relation_id: u32,
    pub new_tuple: TupleData,
}

/// A row was updated. At most one of `key_tuple` (the replica identity key changed) and
/// `old_tuple` (`REPLICA IDENTITY FULL`) is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub relation_id: u32,
    pub key_tuple: Option<TupleData>,
    pub old_tuple: Option<TupleData>,
    pub new_tuple: TupleData,
}

/// A row was deleted. Exactly one of `key_tuple` and `old_tuple` (`REPLICA IDENTITY FULL`) is
/// present in what PostgreSQL sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub relation_id: u32,
    pub key_tuple: Option<TupleData>,
    pub old_tuple: Option<TupleData>,
}

/// Tables were truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Bit 1: `CASCADE`; bit 2: `RESTART IDENTITY`.
    pub options: u8,
    pub relation_ids: Vec<u32>,
}

impl Truncate {
    pub const CASCADE: u8 = 1;
    pub const RESTART_IDENTITY: u8 = 2;
}

/// A message written with `pg_logical_emit_message` (sent with the `messages` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Written inside the transaction (else emitted immediately).
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

/// The column values of one row, in the order of the relation's columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    pub columns: Vec<TupleValue>,
}

impl TupleData {
    /// The value of column `index`, if the tuple has it.
    pub fn get(&self, index: usize) -> Option<&TupleValue> {
        self.columns.get(index)
    }
}

/// One column value. Text and binary values are slices of the received message (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    Null,
    /// A TOASTed value that did not change; PostgreSQL does not resend it.
    UnchangedToast,
    /// The value in the type's text output format.
    Text(Bytes),
    /// The value in the type's binary format (only with the `binary` option).
    Binary(Bytes),
}

impl TupleValue {
    /// The text of a [`TupleValue::Text`] that is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            TupleValue::Text(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// The raw bytes of a text or binary value.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            TupleValue::Text(bytes) | TupleValue::Binary(bytes) => Some(bytes),
            TupleValue::Null | TupleValue::UnchangedToast => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, TupleValue::Null)
    }
}
