-- Rows as the original shipment-service wrote them after consuming the OrderCreated event of
-- orderdb-rows.sql (the line update was consumed too: it changed nothing there).
INSERT INTO shipments.shipment (id, customer_id, order_date, order_id) VALUES
    ('4e1f7a8b-9c0d-4e5f-8a6b-7c8d9e0f1a2b', 123, '2019-01-31 12:13:01', '6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2');

INSERT INTO shipments.consumed_message (event_id, time_of_receiving) VALUES
    ('2c9d5e6f-7a8b-4c3d-8e4f-5a6b7c8d9e0f', '2019-01-31 12:13:02.010'),
    ('3d0e6f7a-8b9c-4d4e-9f5a-6b7c8d9e0f1a', '2019-01-31 12:20:45.020');
