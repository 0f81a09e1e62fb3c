//! Encoding of messages to pgoutput's wire form: the inverse of [`crate::decode`], for tests,
//! fixtures and fault injection (the relay only decodes).
//!
//! Strings are written up to their first NUL byte, since the protocol ends them with one.

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::{LogicalReplicationMessage, TupleData, TupleValue};

/// Encodes one message as PostgreSQL's pgoutput (protocol version 1) would send it.
pub fn encode(message: &LogicalReplicationMessage) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_u8(message.tag());
    match message {
        LogicalReplicationMessage::Begin(begin) => {
            out.put_u64(begin.final_lsn.0);
            out.put_i64(begin.commit_timestamp);
            out.put_u32(begin.xid);
        }
        LogicalReplicationMessage::Commit(commit) => {
            out.put_u8(commit.flags);
            out.put_u64(commit.commit_lsn.0);
            out.put_u64(commit.end_lsn.0);
            out.put_i64(commit.commit_timestamp);
        }
        LogicalReplicationMessage::Origin(origin) => {
            out.put_u64(origin.commit_lsn.0);
            put_string(&mut out, &origin.name);
        }
        LogicalReplicationMessage::Relation(relation) => {
            out.put_u32(relation.relation_id);
            put_string(&mut out, &relation.namespace);
            put_string(&mut out, &relation.name);
            out.put_u8(relation.replica_identity);
            put_count16(&mut out, relation.columns.len());
            for column in relation.columns.iter().take(usize::from(u16::MAX >> 1)) {
                out.put_u8(u8::from(column.is_key));
                put_string(&mut out, &column.name);
                out.put_u32(column.type_oid);
                out.put_i32(column.type_modifier);
            }
        }
        LogicalReplicationMessage::Type(type_message) => {
            out.put_u32(type_message.type_oid);
            put_string(&mut out, &type_message.namespace);
            put_string(&mut out, &type_message.name);
        }
        LogicalReplicationMessage::Insert(insert) => {
            out.put_u32(insert.relation_id);
            out.put_u8(b'N');
            put_tuple(&mut out, &insert.new_tuple);
        }
        LogicalReplicationMessage::Update(update) => {
            out.put_u32(update.relation_id);
            if let Some(key) = &update.key_tuple {
                out.put_u8(b'K');
                put_tuple(&mut out, key);
            } else if let Some(old) = &update.old_tuple {
                out.put_u8(b'O');
                put_tuple(&mut out, old);
            }
            out.put_u8(b'N');
            put_tuple(&mut out, &update.new_tuple);
        }
        LogicalReplicationMessage::Delete(delete) => {
            out.put_u32(delete.relation_id);
            if let Some(old) = &delete.old_tuple {
                out.put_u8(b'O');
                put_tuple(&mut out, old);
            } else {
                out.put_u8(b'K');
                put_tuple(
                    &mut out,
                    delete.key_tuple.as_ref().unwrap_or(&TupleData::default()),
                );
            }
        }
        LogicalReplicationMessage::Truncate(truncate) => {
            let count = truncate.relation_ids.len().min(i32::MAX as usize);
            out.put_i32(i32::try_from(count).unwrap_or(i32::MAX));
            out.put_u8(truncate.options);
            for id in &truncate.relation_ids[..count] {
                out.put_u32(*id);
            }
        }
        LogicalReplicationMessage::Message(message) => {
            out.put_u8(u8::from(message.transactional));
            out.put_u64(message.lsn.0);
            put_string(&mut out, &message.prefix);
            put_len32(&mut out, message.content.len());
            out.put_slice(&message.content[..message.content.len().min(i32::MAX as usize)]);
        }
    }
    out.freeze()
}

fn put_string(out: &mut BytesMut, text: &str) {
    let bytes = text.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    out.put_slice(&bytes[..end]);
    out.put_u8(0);
}

/// An Int16 count; lists longer than the protocol allows are cut (see the callers).
fn put_count16(out: &mut BytesMut, count: usize) {
    out.put_i16(i16::try_from(count).unwrap_or(i16::MAX));
}

fn put_len32(out: &mut BytesMut, len: usize) {
    out.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
}

fn put_tuple(out: &mut BytesMut, tuple: &TupleData) {
    put_count16(out, tuple.columns.len());
    for value in tuple.columns.iter().take(usize::from(u16::MAX >> 1)) {
        match value {
            TupleValue::Null => out.put_u8(b'n'),
            TupleValue::UnchangedToast => out.put_u8(b'u'),
            TupleValue::Text(bytes) | TupleValue::Binary(bytes) => {
                out.put_u8(if matches!(value, TupleValue::Text(_)) {
                    b't'
                } else {
                    b'b'
                });
                put_len32(out, bytes.len());
                out.put_slice(&bytes[..bytes.len().min(i32::MAX as usize)]);
            }
        }
    }
}
