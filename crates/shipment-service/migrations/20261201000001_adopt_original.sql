-- Brings either kind of shipment database to what the service needs (issue 12):
-- - ours, made by 20261127000001: every statement below is a no-op or a widening;
-- - the original NodeJS service's (consumed_message, shipment(id, customer_id, order_date
--   timestamp NULL, order_id)): the baseline is skipped (service_kit::migrate) and this adds
--   the missing columns and tables.
-- Additions only: no existing row is rewritten or dropped, no column type changes (the
-- original's `timestamp` columns stay; the pool's session TimeZone is UTC, see db.rs).
-- Idempotent, so it also holds where an operator already added some of it by hand.

-- Whether the shipment's set of lines is known: true when its OrderCreated carried lineItems.
-- When it did not (the original producer never sends them), a shipment stays PENDING however
-- many of the lines it heard of are cancelled or shipped. Existing rows get a fast default
-- (no rewrite) that depends on who made them: our shipments came with their lines (true),
-- the original's without (false). The table is the original's exactly when it has no status
-- column yet, so this runs before status is added.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'shipment'
          AND column_name = 'lines_known'
    ) THEN
        IF EXISTS (
            SELECT 1 FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'shipment'
              AND column_name = 'status'
        ) THEN
            ALTER TABLE shipment ADD COLUMN lines_known boolean NOT NULL DEFAULT true;
        ELSE
            ALTER TABLE shipment ADD COLUMN lines_known boolean NOT NULL DEFAULT false;
        END IF;
    END IF;
END
$$;
-- A row inserted without saying (the original service, after a roll back) has unknown lines.
ALTER TABLE shipment ALTER COLUMN lines_known SET DEFAULT false;

-- The original's shipments never had a status and their lines are unknown: PENDING, the
-- status our rule gives a shipment whose lines are unknown. A constant default: no rewrite.
-- The default also serves the original service's own INSERTs after a roll back.
ALTER TABLE shipment
    ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'SHIPPED', 'CANCELLED'));
ALTER TABLE shipment ALTER COLUMN status SET DEFAULT 'PENDING';

-- When the original made a shipment is not known: its rows keep NULL here rather than the
-- time of this migration. Rows inserted from now on get now() (ours set it explicitly too).
ALTER TABLE shipment ADD COLUMN IF NOT EXISTS created_at timestamptz;
ALTER TABLE shipment ALTER COLUMN created_at SET DEFAULT now();
ALTER TABLE shipment ADD COLUMN IF NOT EXISTS updated_at timestamptz;
ALTER TABLE shipment ALTER COLUMN updated_at SET DEFAULT now();

CREATE TABLE IF NOT EXISTS shipment_line (
    order_line_id uuid PRIMARY KEY,
    shipment_id uuid NOT NULL REFERENCES shipment (id) ON DELETE CASCADE,
    position integer NOT NULL,
    item text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    status text NOT NULL CHECK (status IN ('ENTERED', 'CANCELLED', 'SHIPPED'))
);
CREATE INDEX IF NOT EXISTS shipment_line_shipment_id ON shipment_line (shipment_id, position);
-- A line known only from an OrderLineUpdated (the original producer's OrderCreated has no
-- lineItems) has no item and no quantity.
ALTER TABLE shipment_line ALTER COLUMN item DROP NOT NULL;
ALTER TABLE shipment_line ALTER COLUMN quantity DROP NOT NULL;

CREATE TABLE IF NOT EXISTS pending_line_update (
    event_id uuid PRIMARY KEY,
    arrival bigint GENERATED ALWAYS AS IDENTITY,
    order_id uuid NOT NULL,
    order_line_id uuid NOT NULL,
    old_status text NOT NULL,
    new_status text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS pending_line_update_order_id ON pending_line_update (order_id, arrival);

-- One shipment per order. Ours has this unique index (the UNIQUE constraint's); the original
-- has none, and its table might hold two shipments of one order, on which CREATE UNIQUE INDEX
-- would fail and stop the service. The code does not need the index (an advisory lock per
-- order and a read of the order's shipment come before every insert), so it is created only
-- when the data allows, and otherwise left to the operator, with a warning in the log.
DO $$
BEGIN
    IF to_regclass('shipment_order_id_key') IS NULL THEN
        IF EXISTS (SELECT 1 FROM shipment GROUP BY order_id HAVING count(*) > 1) THEN
            RAISE WARNING 'shipment has several rows for one order_id: unique index shipment_order_id_key not created';
        ELSE
            CREATE UNIQUE INDEX shipment_order_id_key ON shipment (order_id);
        END IF;
    END IF;
END
$$;
