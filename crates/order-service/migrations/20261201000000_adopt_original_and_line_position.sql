-- Runs on two kinds of database: one our baseline (20260101000000) created, and one the original
-- NodeJS service created (the baseline is skipped there: service_kit::migrate). So every
-- statement is idempotent and only adds: no rewrite of existing rows, no constraint that a row
-- the original wrote could violate.

-- The position of a line in its order's request. Ids are random (UUID v4) by default, so reading
-- lines `ORDER BY id` no longer returns them in request order. Nullable, no default: adding it
-- rewrites nothing, and lines written before (by us or by the original) keep NULL and are read
-- after the positioned ones, by id.
ALTER TABLE order_line ADD COLUMN IF NOT EXISTS position integer;

-- GET /orders/{id} reads the lines of one order. Our baseline created this index; the original
-- had none (on a large table this build blocks writes to order_line while it runs).
CREATE INDEX IF NOT EXISTS order_line_order_id_idx ON order_line (order_id);
