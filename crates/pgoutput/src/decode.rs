//! Decoding of one pgoutput message from its bytes.
//!
//! The decoder trusts no length or count in the input: every one is checked against the bytes
//! that remain before anything is read or allocated, so a hostile or corrupted message costs at
//! most a few times its own size and never panics.

use bytes::Bytes;

use crate::Lsn;
use crate::message::{
    Begin, Column, Commit, Delete, Insert, LogicalMessage, LogicalReplicationMessage, Origin,
    Relation, Truncate, TupleData, TupleValue, TypeMessage, Update,
};

/// Why a message could not be decoded. Like mini-redis' `Incomplete` vs `Error`, it tells input
/// that ends too early from input that is wrong, and says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ends before a field it announces.
    #[error("pgoutput message truncated at byte {offset}: {what} needs {needed} more byte(s)")]
    Truncated {
        offset: usize,
        /// The field being read.
        what: &'static str,
        /// Bytes missing for it.
        needed: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("invalid pgoutput message at byte {offset}: {reason}")]
    Invalid { offset: usize, reason: String },
}

impl DecodeError {
    /// Byte offset in the message where decoding stopped.
    pub fn offset(&self) -> usize {
        match self {
            DecodeError::Truncated { offset, .. } | DecodeError::Invalid { offset, .. } => *offset,
        }
    }

    /// Whether the input ended too early (rather than holding a wrong value).
    pub fn is_truncated(&self) -> bool {
        matches!(self, DecodeError::Truncated { .. })
    }
}

/// Decodes one pgoutput message (the payload of one XLogData message), protocol version 1.
/// Tuple values are slices of `data`, not copies. Never panics; a length or count larger than
/// the remaining input is an error, never an allocation of that size.
pub fn decode(data: Bytes) -> Result<LogicalReplicationMessage, DecodeError> {
    let mut reader = Reader { data, pos: 0 };
    let tag = reader.u8("message type")?;
    let message = match tag {
        b'B' => LogicalReplicationMessage::Begin(Begin {
            final_lsn: reader.lsn("final LSN")?,
            commit_timestamp: reader.i64("commit timestamp")?,
            xid: reader.u32("xid")?,
        }),
        b'C' => LogicalReplicationMessage::Commit(Commit {
            flags: reader.u8("commit flags")?,
            commit_lsn: reader.lsn("commit LSN")?,
            end_lsn: reader.lsn("end LSN")?,
            commit_timestamp: reader.i64("commit timestamp")?,
        }),
        b'O' => LogicalReplicationMessage::Origin(Origin {
            commit_lsn: reader.lsn("origin commit LSN")?,
            name: reader.string("origin name")?,
        }),
        b'R' => LogicalReplicationMessage::Relation(reader.relation()?),
        b'Y' => LogicalReplicationMessage::Type(TypeMessage {
            type_oid: reader.u32("type OID")?,
            namespace: reader.string("type namespace")?,
            name: reader.string("type name")?,
        }),
        b'I' => {
            let relation_id = reader.u32("relation id")?;
            reader.expect_tag(b'N', "'N' before the new tuple")?;
            LogicalReplicationMessage::Insert(Insert {
                relation_id,
                new_tuple: reader.tuple()?,
            })
        }
        b'U' => LogicalReplicationMessage::Update(reader.update()?),
        b'D' => LogicalReplicationMessage::Delete(reader.delete()?),
        b'T' => LogicalReplicationMessage::Truncate(reader.truncate()?),
        b'M' => LogicalReplicationMessage::Message(reader.logical_message()?),
        other => {
            return Err(DecodeError::Invalid {
                offset: 0,
                reason: format!(
                    "unknown message type {} (protocol version 1 has B, C, O, R, Y, I, U, D, T, M)",
                    describe_byte(other)
                ),
            });
        }
    };
    let left = reader.remaining();
    if left > 0 {
        return Err(reader.invalid(format!(
            "{left} unexpected byte(s) after the end of the message"
        )));
    }
    Ok(message)
}

fn describe_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("'{}'", char::from(byte))
    } else {
        format!("0x{byte:02X}")
    }
}

struct Reader {
    data: Bytes,
    pos: usize,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn invalid(&self, reason: String) -> DecodeError {
        DecodeError::Invalid {
            offset: self.pos,
            reason,
        }
    }

    /// The next `len` bytes, or a `Truncated` error naming `what`.
    fn take(&mut self, len: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        let remaining = self.remaining();
        if len > remaining {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                what,
                needed: len - remaining,
            });
        }
        let start = self.pos;
        self.pos += len;
        Ok(&self.data[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn lsn(&mut self, what: &'static str) -> Result<Lsn, DecodeError> {
        Ok(Lsn(u64::from_be_bytes(self.array(what)?)))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = &self.data[start..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::Truncated {
                offset: self.data.len(),
                what,
                needed: 1,
            });
        };
        let text = std::str::from_utf8(&rest[..len]).map_err(|error| DecodeError::Invalid {
            offset: start + error.valid_up_to(),
            reason: format!("{what} is not valid UTF-8"),
        })?;
        let text = text.to_owned();
        self.pos += len + 1;
        Ok(text)
    }

    /// A length or count field that must not be negative.
    fn length(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let value = self.i32(what)?;
        usize::try_from(value).map_err(|_| DecodeError::Invalid {
            offset,
            reason: format!("{what} is negative ({value})"),
        })
    }

    /// A count of items that each take at least `min_item_size` bytes: checked against the
    /// remaining input, so that the caller may allocate for it.
    fn count(
        &mut self,
        value: usize,
        min_item_size: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let needed = value.saturating_mul(min_item_size);
        let remaining = self.remaining();
        if needed > remaining {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                what,
                needed: needed - remaining,
            });
        }
        Ok(value)
    }

    fn expect_tag(&mut self, expected: u8, what: &'static str) -> Result<(), DecodeError> {
        let offset = self.pos;
        let tag = self.u8(what)?;
        if tag != expected {
            return Err(DecodeError::Invalid {
                offset,
                reason: format!("expected {what}, found {}", describe_byte(tag)),
            });
        }
        Ok(())
    }

    fn relation(&mut self) -> Result<Relation, DecodeError> {
        let relation_id = self.u32("relation id")?;
        let namespace = self.string("relation namespace")?;
        let name = self.string("relation name")?;
        let replica_identity = self.u8("replica identity")?;
        let offset = self.pos;
        let declared = self.i16("column count")?;
        let declared = usize::try_from(declared).map_err(|_| DecodeError::Invalid {
            offset,
            reason: format!("column count is negative ({declared})"),
        })?;
        // flags, name terminator, type OID, type modifier
        let count = self.count(declared, 1 + 1 + 4 + 4, "relation columns")?;
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            // Bit 1 marks a key column; other bits are not defined yet and are ignored, so that
            // a future PostgreSQL adding one does not stop the stream.
            let flags = self.u8("column flags")?;
            columns.push(Column {
                is_key: flags & 1 != 0,
                name: self.string("column name")?,
                type_oid: self.u32("column type OID")?,
                type_modifier: self.i32("column type modifier")?,
            });
        }
        Ok(Relation {
            relation_id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn tuple(&mut self) -> Result<TupleData, DecodeError> {
        let offset = self.pos;
        let declared = self.i16("tuple column count")?;
        let declared = usize::try_from(declared).map_err(|_| DecodeError::Invalid {
            offset,
            reason: format!("tuple column count is negative ({declared})"),
        })?;
        let count = self.count(declared, 1, "tuple columns")?;
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let offset = self.pos;
            let value = match self.u8("column kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => TupleValue::Text(self.value_bytes()?),
                b'b' => TupleValue::Binary(self.value_bytes()?),
                other => {
                    return Err(DecodeError::Invalid {
                        offset,
                        reason: format!(
                            "unknown column kind {} (expected n, u, t or b)",
                            describe_byte(other)
                        ),
                    });
                }
            };
            columns.push(value);
        }
        Ok(TupleData { columns })
    }

    /// A length-prefixed column value, as a slice of the message.
    fn value_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.length("column value length")?;
        self.take(len, "column value")?;
        Ok(self.data.slice(self.pos - len..self.pos))
    }

    fn update(&mut self) -> Result<Update, DecodeError> {
        let relation_id = self.u32("relation id")?;
        let mut key_tuple = None;
        let mut old_tuple = None;
        let offset = self.pos;
        let mut tag = self.u8("'K', 'O' or 'N' after the relation id")?;
        if tag == b'K' || tag == b'O' {
            let tuple = self.tuple()?;
            if tag == b'K' {
                key_tuple = Some(tuple);
            } else {
                old_tuple = Some(tuple);
            }
            self.expect_tag(b'N', "'N' before the new tuple")?;
            tag = b'N';
        }
        if tag != b'N' {
            return Err(DecodeError::Invalid {
                offset,
                reason: format!("expected 'K', 'O' or 'N', found {}", describe_byte(tag)),
            });
        }
        Ok(Update {
            relation_id,
            key_tuple,
            old_tuple,
            new_tuple: self.tuple()?,
        })
    }

    fn delete(&mut self) -> Result<Delete, DecodeError> {
        let relation_id = self.u32("relation id")?;
        let offset = self.pos;
        let tag = self.u8("'K' or 'O' after the relation id")?;
        let tuple = match tag {
            b'K' | b'O' => self.tuple()?,
            other => {
                return Err(DecodeError::Invalid {
                    offset,
                    reason: format!("expected 'K' or 'O', found {}", describe_byte(other)),
                });
            }
        };
        let (key_tuple, old_tuple) = if tag == b'K' {
            (Some(tuple), None)
        } else {
            (None, Some(tuple))
        };
        Ok(Delete {
            relation_id,
            key_tuple,
            old_tuple,
        })
    }

    fn truncate(&mut self) -> Result<Truncate, DecodeError> {
        let declared = self.length("truncated relation count")?;
        let options = self.u8("truncate options")?;
        let count = self.count(declared, 4, "truncated relation ids")?;
        let mut relation_ids = Vec::with_capacity(count);
        for _ in 0..count {
            relation_ids.push(self.u32("truncated relation id")?);
        }
        Ok(Truncate {
            options,
            relation_ids,
        })
    }

    fn logical_message(&mut self) -> Result<LogicalMessage, DecodeError> {
        // Bit 1: transactional; other bits are not defined and are ignored.
        let flags = self.u8("message flags")?;
        let lsn = self.lsn("message LSN")?;
        let prefix = self.string("message prefix")?;
        let len = self.length("message content length")?;
        self.take(len, "message content")?;
        Ok(LogicalMessage {
            transactional: flags & 1 != 0,
            lsn,
            prefix,
            content: self.data.slice(self.pos - len..self.pos),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_input_is_truncated() {
        assert_eq!(
            decode(Bytes::new()).unwrap_err(),
            DecodeError::Truncated {
                offset: 0,
                what: "message type",
                needed: 1
            }
        );
    }

    #[test]
    fn unknown_type_is_invalid() {
        let error = decode(Bytes::from_static(b"S\0\0\0\x01")).unwrap_err();
        assert_eq!(error.offset(), 0);
        assert!(!error.is_truncated());
        assert!(
            error.to_string().contains("unknown message type 'S'"),
            "{error}"
        );
    }

    #[test]
    fn huge_lengths_are_errors_not_allocations() {
        // Insert with a text value claiming 2 GiB.
        let mut data = b"I\0\0\x40\x00N\0\x01t".to_vec();
        data.extend_from_slice(&i32::MAX.to_be_bytes());
        data.extend_from_slice(b"abc");
        let error = decode(Bytes::from(data)).unwrap_err();
        assert_eq!(
            error,
            DecodeError::Truncated {
                offset: 13,
                what: "column value",
                needed: i32::MAX as usize - 3
            }
        );
        // Truncate announcing 2^31-1 relations.
        let mut data = b"T".to_vec();
        data.extend_from_slice(&i32::MAX.to_be_bytes());
        data.push(0);
        let error = decode(Bytes::from(data)).unwrap_err();
        assert!(error.is_truncated(), "{error}");
        // A negative length is invalid content.
        let mut data = b"I\0\0\x40\x00N\0\x01t".to_vec();
        data.extend_from_slice(&(-5i32).to_be_bytes());
        let error = decode(Bytes::from(data)).unwrap_err();
        assert_eq!(error.offset(), 9);
        assert!(error.to_string().contains("negative (-5)"), "{error}");
    }

    #[test]
    fn trailing_bytes_are_invalid() {
        let error = decode(Bytes::from_static(b"O\0\0\0\0\0\0\0\x01name\0extra")).unwrap_err();
        assert_eq!(error.offset(), 14);
        assert!(
            error.to_string().contains("5 unexpected byte(s)"),
            "{error}"
        );
    }

    #[test]
    fn unterminated_string_is_truncated() {
        let error = decode(Bytes::from_static(b"O\0\0\0\0\0\0\0\x01name")).unwrap_err();
        assert_eq!(
            error,
            DecodeError::Truncated {
                offset: 13,
                what: "origin name",
                needed: 1
            }
        );
    }

    #[test]
    fn invalid_utf8_names_are_invalid() {
        let error = decode(Bytes::from_static(b"O\0\0\0\0\0\0\0\x01na\xffme\0")).unwrap_err();
        assert_eq!(error.offset(), 11);
        assert!(error.to_string().contains("origin name is not valid UTF-8"));
    }

    #[test]
    fn tuple_values_share_the_input_buffer() {
        let data = Bytes::from_static(b"I\0\0\x40\x00N\0\x02t\0\0\0\x05hellon");
        let LogicalReplicationMessage::Insert(insert) = decode(data.clone()).unwrap() else {
            panic!("not an insert");
        };
        assert_eq!(insert.relation_id, 0x4000);
        let TupleValue::Text(text) = &insert.new_tuple.columns[0] else {
            panic!("not text");
        };
        assert_eq!(&text[..], b"hello");
        // Same memory, not a copy.
        assert_eq!(text.as_ptr(), data[13..].as_ptr());
        assert_eq!(insert.new_tuple.columns[1], TupleValue::Null);
        assert_eq!(insert.new_tuple.columns[0].as_text(), Some("hello"));
    }
}
