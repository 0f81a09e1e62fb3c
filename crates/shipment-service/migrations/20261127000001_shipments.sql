-- Tables of shipment-service. Unqualified names: the pool's search_path is DB_SCHEMA.

-- Every event applied (or parked) here, recorded in the same transaction as its effect:
-- a second delivery of the same event id conflicts and changes nothing.
CREATE TABLE consumed_message (
    event_id uuid PRIMARY KEY,
    time_of_receiving timestamptz NOT NULL DEFAULT now()
);

-- One shipment per order. status: PENDING while a line is ENTERED (or the order has no lines),
-- SHIPPED when no line is ENTERED and at least one is SHIPPED, CANCELLED when every line is.
CREATE TABLE shipment (
    id uuid PRIMARY KEY,
    order_id uuid NOT NULL UNIQUE,
    customer_id integer NOT NULL,
    order_date timestamptz NOT NULL,
    status text NOT NULL CHECK (status IN ('PENDING', 'SHIPPED', 'CANCELLED')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shipment_line (
    order_line_id uuid PRIMARY KEY,
    shipment_id uuid NOT NULL REFERENCES shipment (id) ON DELETE CASCADE,
    position integer NOT NULL,
    item text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    status text NOT NULL CHECK (status IN ('ENTERED', 'CANCELLED', 'SHIPPED'))
);
CREATE INDEX shipment_line_shipment_id ON shipment_line (shipment_id, position);

-- An OrderLineUpdated that arrived before its OrderCreated: kept here and applied, in arrival
-- order, inside the transaction that creates the shipment.
CREATE TABLE pending_line_update (
    event_id uuid PRIMARY KEY,
    arrival bigint GENERATED ALWAYS AS IDENTITY,
    order_id uuid NOT NULL,
    order_line_id uuid NOT NULL,
    old_status text NOT NULL,
    new_status text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_line_update_order_id ON pending_line_update (order_id, arrival);
