//! Property tests (the decoder's fuzzing): arbitrary messages round-trip through
//! `encode` → `decode`; arbitrary bytes and mutated or truncated real messages never panic, and
//! never make the decoder allocate beyond the size of its input.
//!
//! Each property runs `PROPTEST_CASES` cases (default 20,000); `make chaos`-style long runs set
//! it higher.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixtures;

use bytes::Bytes;
use fixtures::captured_stream;
use pgoutput::{
    Begin, Column, Commit, Delete, Insert, LogicalMessage, LogicalReplicationMessage as Message,
    Lsn, Origin, Relation, Truncate, TupleData, TupleValue, TypeMessage, Update, decode, encode,
};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

/// Protocol strings: any text without NUL (the terminator).
fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn tuple_value() -> impl Strategy<Value = TupleValue> {
    prop_oneof![
        Just(TupleValue::Null),
        Just(TupleValue::UnchangedToast),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|v| TupleValue::Text(v.into())),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|v| TupleValue::Binary(v.into())),
    ]
}

fn tuple() -> impl Strategy<Value = TupleData> {
    proptest::collection::vec(tuple_value(), 0..8).prop_map(|columns| TupleData { columns })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_timestamp, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_timestamp,
                xid,
            })
        }),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_timestamp)| Message::Commit(Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_timestamp,
            })
        ),
        (lsn(), name()).prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (
            any::<u32>(),
            name(),
            name(),
            any::<u8>(),
            proptest::collection::vec(
                (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
                    |(is_key, name, type_oid, type_modifier)| Column {
                        is_key,
                        name,
                        type_oid,
                        type_modifier,
                    }
                ),
                0..6
            )
        )
            .prop_map(
                |(relation_id, namespace, name, replica_identity, columns)| {
                    Message::Relation(Relation {
                        relation_id,
                        namespace,
                        name,
                        replica_identity,
                        columns,
                    })
                }
            ),
        (any::<u32>(), name(), name()).prop_map(|(type_oid, namespace, name)| {
            Message::Type(TypeMessage {
                type_oid,
                namespace,
                name,
            })
        }),
        (any::<u32>(), tuple()).prop_map(|(relation_id, new_tuple)| Message::Insert(Insert {
            relation_id,
            new_tuple
        })),
        (any::<u32>(), 0..3u8, tuple(), tuple()).prop_map(
            |(relation_id, old_kind, old, new_tuple)| {
                Message::Update(Update {
                    relation_id,
                    key_tuple: (old_kind == 1).then(|| old.clone()),
                    old_tuple: (old_kind == 2).then_some(old),
                    new_tuple,
                })
            }
        ),
        (any::<u32>(), any::<bool>(), tuple()).prop_map(|(relation_id, is_key, old)| {
            Message::Delete(Delete {
                relation_id,
                key_tuple: is_key.then(|| old.clone()),
                old_tuple: (!is_key).then_some(old),
            })
        }),
        (any::<u8>(), proptest::collection::vec(any::<u32>(), 0..6)).prop_map(
            |(options, relation_ids)| Message::Truncate(Truncate {
                options,
                relation_ids
            })
        ),
        (
            any::<bool>(),
            lsn(),
            name(),
            proptest::collection::vec(any::<u8>(), 0..32)
        )
            .prop_map(|(transactional, lsn, prefix, content)| Message::Message(
                LogicalMessage {
                    transactional,
                    lsn,
                    prefix,
                    content: Bytes::from(content),
                }
            )),
    ]
}

/// Elements the decoder allocated room for: a bound that a length field cannot inflate.
fn allocated_elements(message: &Message) -> usize {
    let tuple = |t: &TupleData| t.columns.capacity();
    match message {
        Message::Relation(relation) => relation.columns.capacity(),
        Message::Insert(insert) => tuple(&insert.new_tuple),
        Message::Update(update) => {
            update.key_tuple.as_ref().map_or(0, tuple)
                + update.old_tuple.as_ref().map_or(0, tuple)
                + tuple(&update.new_tuple)
        }
        Message::Delete(delete) => {
            delete.key_tuple.as_ref().map_or(0, tuple) + delete.old_tuple.as_ref().map_or(0, tuple)
        }
        Message::Truncate(truncate) => truncate.relation_ids.capacity(),
        _ => 0,
    }
}

/// Checks one decode of untrusted bytes: no panic (the test would fail), a result consistent
/// with re-encoding, room allocated only in proportion to the input.
fn check_untrusted(data: &[u8]) -> Result<(), TestCaseError> {
    match decode(Bytes::copy_from_slice(data)) {
        Ok(message) => {
            prop_assert!(allocated_elements(&message) <= data.len());
            let again = decode(encode(&message)).unwrap();
            prop_assert_eq!(again, message);
        }
        Err(error) => prop_assert!(error.offset() <= data.len()),
    }
    Ok(())
}

/// A mutation of a captured message.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Set {
        at: usize,
        value: u8,
    },
    Insert {
        at: usize,
        value: u8,
    },
    Remove {
        at: usize,
    },
    /// Overwrite 4 bytes with a large or negative 32-bit length.
    Length {
        at: usize,
        value: i32,
    },
    Cut {
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (at, any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        (at, any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        at.prop_map(|at| Mutation::Remove { at }),
        (
            at,
            prop_oneof![
                Just(i32::MAX),
                Just(-1),
                Just(i32::MIN),
                Just(65_536),
                any::<i32>()
            ]
        )
            .prop_map(|(at, value)| Mutation::Length { at, value }),
        at.prop_map(|at| Mutation::Cut { at }),
    ]
}

fn apply(data: &mut Vec<u8>, mutation: &Mutation) {
    let len = data.len().max(1);
    match *mutation {
        Mutation::Flip { at, mask } => {
            if let Some(byte) = data.get_mut(at % len) {
                *byte ^= mask;
            }
        }
        Mutation::Set { at, value } => {
            if let Some(byte) = data.get_mut(at % len) {
                *byte = value;
            }
        }
        Mutation::Insert { at, value } => data.insert(at % (data.len() + 1), value),
        Mutation::Remove { at } => {
            if !data.is_empty() {
                data.remove(at % len);
            }
        }
        Mutation::Length { at, value } => {
            if data.len() >= 4 {
                let at = at % (data.len() - 3);
                data[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
        }
        Mutation::Cut { at } => data.truncate(at % len),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_round_trips(message in message()) {
        let bytes = encode(&message);
        prop_assert_eq!(decode(bytes).unwrap(), message);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        check_untrusted(&data)?;
    }

    #[test]
    fn arbitrary_bytes_with_a_valid_tag_never_panic(
        tag in proptest::sample::select(b"BCORYIUDTM".to_vec()),
        rest in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let mut data = vec![tag];
        data.extend_from_slice(&rest);
        check_untrusted(&data)?;
    }

    #[test]
    fn mutated_real_messages_never_panic(
        index in any::<proptest::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let stream = captured_stream();
        let mut data = stream[index.index(stream.len())].data.to_vec();
        for mutation in &mutations {
            apply(&mut data, mutation);
        }
        check_untrusted(&data)?;
    }
}

#[test]
fn every_truncation_of_every_real_message_is_reported_as_truncated() {
    let mut prefixes = 0;
    for captured in captured_stream() {
        for len in 0..captured.data.len() {
            let error = decode(captured.data.slice(..len)).unwrap_err();
            assert!(
                error.is_truncated(),
                "{} cut at {len}: {error}",
                captured.hex()
            );
            assert!(error.offset() <= len);
            prefixes += 1;
        }
    }
    assert!(prefixes > 5_000, "{prefixes}");
}
