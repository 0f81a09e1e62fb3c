-- The order tables and the outbox, in the schema named by DB_SCHEMA (the service sets
-- search_path to it, so names here are unqualified).

CREATE TABLE purchase_order (
    id          uuid PRIMARY KEY,
    customer_id integer NOT NULL,
    order_date  timestamptz NOT NULL
);

CREATE TABLE order_line (
    id          uuid PRIMARY KEY,
    order_id    uuid NOT NULL REFERENCES purchase_order (id),
    item        text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    total_price numeric(12, 2) NOT NULL CHECK (total_price >= 0),
    status      text NOT NULL CHECK (status IN ('ENTERED', 'CANCELLED', 'SHIPPED'))
);

-- GET /orders/{id} reads the lines of one order.
CREATE INDEX order_line_order_id_idx ON order_line (order_id);

-- The column names of the system we replace, so its Debezium outbox-router configuration works
-- unchanged. The outbox-relay streams inserts into this table from the WAL.
CREATE TABLE outbox_event (
    id             uuid PRIMARY KEY,
    aggregate_type varchar(255) NOT NULL,
    aggregate_id   varchar(255) NOT NULL,
    type           varchar(255) NOT NULL,
    payload        jsonb NOT NULL,
    "timestamp"    timestamptz NOT NULL
);

-- Inserts carry the whole new row in the WAL whatever the identity; DEFAULT (the primary key)
-- is stated so that nobody sets FULL by accident and bloats the WAL on deletes.
ALTER TABLE outbox_event REPLICA IDENTITY DEFAULT;
