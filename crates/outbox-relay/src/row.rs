//! Source-neutral rows: what every source yields and the router reads.
//!
//! A source announces each table it reads with a [`TableSchema`] (its columns by name, in
//! value order) before the first [`Row`] of it; a row carries its table's id and one
//! [`Value`] per column. Values are text (the type's output function, as pgoutput and a
//! `::text` cast both give) or NULL, so a row yields the same message from either source.
//!
//! The replication source builds a row by moving the decoded pgoutput tuple's values: the
//! text values stay slices of the received message (no copy), and [`Value`] has the same
//! layout as `pgoutput::TupleValue`, so the vector is reused in place (no allocation).

use bytes::Bytes;
use pgoutput::{Insert, Relation, TupleValue};

use crate::router::TableName;

/// One column of a table as a source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    pub name: String,
    /// PostgreSQL's type OID (the router marks `uuid` headers as Debezium does).
    pub type_oid: u32,
}

/// A table a source reads: rows refer to it by `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// The table's OID (both sources use it).
    pub id: u32,
    pub name: TableName,
    /// Columns in value order.
    pub columns: Vec<ColumnSchema>,
}

impl TableSchema {
    /// From a pgoutput Relation message.
    pub fn from_relation(relation: &Relation) -> Self {
        Self {
            id: relation.relation_id,
            name: TableName {
                schema: relation.namespace.clone(),
                table: relation.name.clone(),
            },
            columns: relation
                .columns
                .iter()
                .map(|column| ColumnSchema {
                    name: column.name.clone(),
                    type_oid: column.type_oid,
                })
                .collect(),
        }
    }

    /// The position of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }
}

/// One column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// The value in its type's text output format.
    Text(Bytes),
    /// A value the relay cannot read as text (a binary value, an unchanged TOAST value).
    Other(Bytes),
}

impl Value {
    /// The text of a [`Value::Text`] that is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(bytes) => std::str::from_utf8(bytes).ok(),
            Value::Null | Value::Other(_) => None,
        }
    }
}

impl From<TupleValue> for Value {
    fn from(value: TupleValue) -> Self {
        match value {
            TupleValue::Null => Value::Null,
            TupleValue::Text(bytes) => Value::Text(bytes),
            TupleValue::Binary(bytes) => Value::Other(bytes),
            TupleValue::UnchangedToast => Value::Other(Bytes::new()),
        }
    }
}

/// An inserted row of a table a source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The [`TableSchema::id`] of its table.
    pub table: u32,
    pub values: Vec<Value>,
}

impl Row {
    /// From a decoded pgoutput Insert, reusing its vector and value bytes.
    pub fn from_insert(insert: Insert) -> Self {
        Self {
            table: insert.relation_id,
            values: insert
                .new_tuple
                .columns
                .into_iter()
                .map(Value::from)
                .collect(),
        }
    }

    /// The value of column `name` of this row, given its table.
    pub fn get<'a>(&'a self, schema: &TableSchema, name: &str) -> Option<&'a Value> {
        self.values.get(schema.column_index(name)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use pgoutput::TupleData;

    #[test]
    fn a_row_from_an_insert_keeps_its_allocation_and_bytes() {
        // Same size and alignment: `collect` reuses the tuple's vector in place.
        assert_eq!(
            std::mem::size_of::<Value>(),
            std::mem::size_of::<TupleValue>()
        );
        assert_eq!(
            std::mem::align_of::<Value>(),
            std::mem::align_of::<TupleValue>()
        );
        let message = Bytes::from_static(b"order-1");
        let columns = vec![TupleValue::Text(message.slice(0..5)), TupleValue::Null];
        let pointer = columns.as_ptr() as usize;
        let row = Row::from_insert(Insert {
            relation_id: 7,
            new_tuple: TupleData { columns },
        });
        assert_eq!(row.values.as_ptr() as usize, pointer, "vector reused");
        let Value::Text(text) = &row.values[0] else {
            panic!("text expected")
        };
        assert_eq!(text.as_ptr(), message.as_ptr(), "bytes not copied");
        assert_eq!(row.values[0].as_text(), Some("order"));
        assert_eq!(row.values[1], Value::Null);
        let schema = TableSchema {
            id: 7,
            name: TableName::parse("orders.outbox_event").unwrap(),
            columns: vec![
                ColumnSchema {
                    name: "aggregate_type".into(),
                    type_oid: 1043,
                },
                ColumnSchema {
                    name: "type".into(),
                    type_oid: 1043,
                },
            ],
        };
        assert_eq!(
            row.get(&schema, "aggregate_type").and_then(Value::as_text),
            Some("order")
        );
        assert_eq!(row.get(&schema, "type"), Some(&Value::Null));
        assert_eq!(row.get(&schema, "nope"), None);
    }
}
