-- The original system's shipment database, as its NodeJS shipment-service created it (facts
-- from issue 12).
CREATE SCHEMA IF NOT EXISTS shipments;

CREATE TABLE shipments.consumed_message (
    event_id          uuid PRIMARY KEY,
    time_of_receiving timestamp NULL
);

CREATE TABLE shipments.shipment (
    id          uuid PRIMARY KEY,
    customer_id integer NOT NULL,
    order_date  timestamp NULL,
    order_id    uuid NOT NULL
);
