//! Decoding of real pgoutput messages captured from PostgreSQL 15 by `tests/fixtures/capture.sh`
//! (see the SQL there): every message type, with the fields asserted, and each message encoded
//! back to the exact bytes PostgreSQL sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixtures;

use bytes::Bytes;
use fixtures::{CapturedMessage, captured_stream};
use pgoutput::{
    Begin, Column, Commit, Delete, Insert, LogicalMessage, LogicalReplicationMessage as Message,
    Lsn, Origin, Relation, Truncate, TupleData, TupleValue, TypeMessage, Update, decode, encode,
    unix_micros,
};

const ITEM: u32 = 16395;
const AUDIT: u32 = 16402;
const MOOD: u32 = 16390;

fn text(value: &str) -> TupleValue {
    TupleValue::Text(Bytes::copy_from_slice(value.as_bytes()))
}

fn tuple(values: Vec<TupleValue>) -> TupleData {
    TupleData { columns: values }
}

fn decoded() -> Vec<(CapturedMessage, Message)> {
    captured_stream()
        .into_iter()
        .map(|captured| {
            let message = decode(captured.data.clone())
                .unwrap_or_else(|error| panic!("{}: {error}", captured.hex()));
            (captured, message)
        })
        .collect()
}

#[test]
fn every_captured_message_decodes_and_encodes_back_to_the_same_bytes() {
    let stream = decoded();
    assert_eq!(stream.len(), 37);
    for (captured, message) in &stream {
        assert_eq!(encode(message), captured.data, "{message:?}");
    }
    let mut tags: Vec<u8> = stream.iter().map(|(_, message)| message.tag()).collect();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(
        tags,
        b"BCDIMORTUY".to_vec(),
        "every message type is captured"
    );
}

#[test]
fn transaction_boundaries() {
    let stream = decoded();
    let (row, Message::Begin(begin)) = &stream[0] else {
        panic!("first message is not Begin");
    };
    assert_eq!(
        begin,
        &Begin {
            final_lsn: "0/19738E8".parse().unwrap(),
            commit_timestamp: 0x0003_043D_734E_0A8E,
            xid: 743,
        }
    );
    assert_eq!(begin.xid, row.xid);
    let (row, Message::Commit(commit)) = &stream[4] else {
        panic!("fifth message is not Commit");
    };
    assert_eq!(
        commit,
        &Commit {
            flags: 0,
            commit_lsn: begin.final_lsn,
            end_lsn: "0/1973918".parse().unwrap(),
            commit_timestamp: begin.commit_timestamp,
        }
    );
    // The slot reports a transaction's messages at the position its commit ends.
    assert_eq!(commit.end_lsn, row.lsn);
    // Every transaction: Begin … Commit with matching LSNs and timestamps.
    let mut open: Option<&Begin> = None;
    for (row, message) in &stream {
        match message {
            Message::Begin(begin) => {
                assert!(open.is_none());
                assert_eq!(begin.xid, row.xid);
                open = Some(begin);
            }
            Message::Commit(commit) => {
                let begin = open.take().unwrap();
                assert_eq!(commit.commit_lsn, begin.final_lsn);
                assert_eq!(commit.commit_timestamp, begin.commit_timestamp);
                assert!(commit.end_lsn > commit.commit_lsn);
            }
            Message::Message(message) if !message.transactional => assert!(open.is_none()),
            _ => assert!(open.is_some(), "{message:?} outside a transaction"),
        }
    }
}

#[test]
fn relation_and_type_messages() {
    let stream = decoded();
    assert_eq!(
        stream[1].1,
        Message::Type(TypeMessage {
            type_oid: MOOD,
            namespace: "public".into(),
            name: "mood".into(),
        })
    );
    let column = |is_key, name: &str, type_oid, type_modifier| Column {
        is_key,
        name: name.into(),
        type_oid,
        type_modifier,
    };
    let Message::Relation(item) = &stream[2].1 else {
        panic!("not a Relation");
    };
    assert_eq!(
        item,
        &Relation {
            relation_id: ITEM,
            namespace: "public".into(),
            name: "item".into(),
            replica_identity: b'd',
            columns: vec![
                column(true, "id", 23, -1),
                column(false, "name", 25, -1),
                // varchar(20): atttypmod is the length plus 4.
                column(false, "note", 1043, 24),
                column(false, "mood", MOOD, -1),
                column(false, "doc", 25, -1),
            ],
        }
    );
    assert_eq!(item.column_index("doc"), Some(4));
    let Message::Relation(audit) = &stream[12].1 else {
        panic!("not a Relation");
    };
    assert_eq!(audit.relation_id, AUDIT);
    assert_eq!(audit.replica_identity, b'f');
    // With REPLICA IDENTITY FULL every column is part of the key.
    assert!(audit.columns.iter().all(|column| column.is_key));
}

#[test]
fn inserts_with_null_enum_and_toasted_values() {
    let stream = decoded();
    let Message::Insert(insert) = &stream[3].1 else {
        panic!("not an Insert");
    };
    assert_eq!(insert.relation_id, ITEM);
    let doc = "x".repeat(5000);
    assert_eq!(
        insert.new_tuple,
        tuple(vec![
            text("1"),
            text("alice"),
            TupleValue::Null,
            text("happy"),
            text(&doc)
        ])
    );
    assert_eq!(
        insert.new_tuple.get(1).and_then(TupleValue::as_text),
        Some("alice")
    );
    assert_eq!(
        stream[22].1,
        Message::Insert(Insert {
            relation_id: ITEM,
            new_tuple: tuple(vec![
                text("3"),
                text("carol"),
                TupleValue::Null,
                text("sad"),
                TupleValue::Null
            ]),
        })
    );
}

#[test]
fn updates_with_key_old_and_no_old_tuple() {
    let stream = decoded();
    // Key change: the old key, and the TOASTed doc not resent.
    assert_eq!(
        stream[6].1,
        Message::Update(Update {
            relation_id: ITEM,
            key_tuple: Some(tuple(vec![
                text("1"),
                TupleValue::Null,
                TupleValue::Null,
                TupleValue::Null,
                TupleValue::Null
            ])),
            old_tuple: None,
            new_tuple: tuple(vec![
                text("2"),
                text("alice"),
                TupleValue::Null,
                text("happy"),
                TupleValue::UnchangedToast
            ]),
        })
    );
    let Message::Update(plain) = &stream[9].1 else {
        panic!("not an Update");
    };
    assert_eq!((&plain.key_tuple, &plain.old_tuple), (&None, &None));
    assert_eq!(
        plain.new_tuple.get(2).and_then(TupleValue::as_text),
        Some("hi 'quoted' é")
    );
    assert_eq!(plain.new_tuple.get(4), Some(&TupleValue::UnchangedToast));
    assert_eq!(
        stream[14].1,
        Message::Update(Update {
            relation_id: AUDIT,
            key_tuple: None,
            old_tuple: Some(tuple(vec![text("7"), text("created")])),
            new_tuple: tuple(vec![text("7"), text("changed")]),
        })
    );
}

#[test]
fn deletes_with_old_and_key_tuples() {
    let stream = decoded();
    assert_eq!(
        stream[15].1,
        Message::Delete(Delete {
            relation_id: AUDIT,
            key_tuple: None,
            old_tuple: Some(tuple(vec![text("7"), text("changed")])),
        })
    );
    assert_eq!(
        stream[18].1,
        Message::Delete(Delete {
            relation_id: ITEM,
            key_tuple: Some(tuple(vec![
                text("2"),
                TupleValue::Null,
                TupleValue::Null,
                TupleValue::Null,
                TupleValue::Null
            ])),
            old_tuple: None,
        })
    );
}

#[test]
fn logical_messages_transactional_and_not() {
    let stream = decoded();
    assert_eq!(
        stream[21].1,
        Message::Message(LogicalMessage {
            transactional: true,
            lsn: "0/1973D80".parse().unwrap(),
            prefix: "outbox".into(),
            content: Bytes::from_static(b"hello"),
        })
    );
    let (row, message) = &stream[24];
    assert_eq!(row.xid, 0, "a non-transactional message has no transaction");
    assert_eq!(
        message,
        &Message::Message(LogicalMessage {
            transactional: false,
            lsn: "0/1973E78".parse().unwrap(),
            prefix: "relay".into(),
            content: Bytes::from_static(&[0x00, 0xFF, 0x10]),
        })
    );
}

#[test]
fn truncate_of_two_tables() {
    let stream = decoded();
    assert_eq!(
        stream[29].1,
        Message::Truncate(Truncate {
            options: Truncate::CASCADE | Truncate::RESTART_IDENTITY,
            relation_ids: vec![ITEM, AUDIT],
        })
    );
}

#[test]
fn origin_of_a_replayed_transaction() {
    let stream = decoded();
    let Message::Begin(begin) = &stream[31].1 else {
        panic!("not a Begin");
    };
    // pg_replication_origin_xact_setup set the commit time to 2024-01-01 12:00:00 UTC.
    assert_eq!(unix_micros(begin.commit_timestamp), 1_704_110_400_000_000);
    assert_eq!(
        stream[32].1,
        Message::Origin(Origin {
            commit_lsn: Lsn(0xAB_CDEF),
            name: "pgoutput_capture_origin_27057".into(),
        })
    );
}
