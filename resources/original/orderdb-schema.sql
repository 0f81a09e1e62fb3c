-- The original system's order database, as its NodeJS order-service created it (facts from
-- issue 12). Used by the tests that start our services on the original's databases, and by
-- anyone who wants to try the migration path by hand:
--   psql -d orderdb -f resources/original/orderdb-schema.sql -f resources/original/orderdb-rows.sql
CREATE SCHEMA IF NOT EXISTS orders;

CREATE TABLE orders.purchase_order (
    id          uuid PRIMARY KEY,
    customer_id integer NOT NULL,
    order_date  timestamp NOT NULL
);

CREATE TABLE orders.order_line (
    id          uuid PRIMARY KEY,
    quantity    integer,
    total_price decimal(12, 2),
    order_id    uuid REFERENCES orders.purchase_order (id),
    item        varchar(255),
    status      varchar(255) CHECK (status IN ('ENTERED', 'CANCELLED', 'SHIPPED'))
);

CREATE TABLE orders.outbox_event (
    id             uuid PRIMARY KEY,
    "timestamp"    timestamp,
    aggregate_id   varchar(255),
    aggregate_type varchar(255),
    payload        jsonb,
    "type"         varchar(255)
);
ALTER TABLE orders.outbox_event REPLICA IDENTITY FULL;
