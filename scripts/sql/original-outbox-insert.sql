-- pgbench script: one OrderCreated outbox row per transaction, exactly as the original NodeJS
-- order-service writes it (v4 ids, "timestamp" without time zone in UTC, no line items).
\set customer random(1, 1000)
INSERT INTO orders.outbox_event (id, "timestamp", aggregate_id, aggregate_type, payload, "type")
SELECT event_id, clock_timestamp() AT TIME ZONE 'UTC', order_id, 'order',
       jsonb_build_object('id', order_id, 'eventType', 'OrderCreated', 'customerId', :customer,
                          'orderDate', to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                               'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
       'OrderCreated'
FROM (SELECT gen_random_uuid() AS event_id, gen_random_uuid() AS order_id) AS ids;
