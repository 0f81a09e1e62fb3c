-- The order in which events were applied, across batches, partitions and instances: an audit
-- (or an operator) can check that the events of one order were applied in their commit order.
-- Added without a rewrite: existing rows keep NULL, new rows draw from the sequence.
CREATE SEQUENCE IF NOT EXISTS consumed_message_applied_order;
ALTER TABLE consumed_message ADD COLUMN IF NOT EXISTS applied_order bigint;
ALTER TABLE consumed_message
    ALTER COLUMN applied_order SET DEFAULT nextval('consumed_message_applied_order');
