-- Rows as the original order-service writes them: v4 ids, timestamps without time zone (UTC
-- wall time), the outbox payloads of its two events (OrderCreated has no line items).
-- One order with two lines, the second cancelled.
INSERT INTO orders.purchase_order (id, customer_id, order_date) VALUES
    ('6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2', 123, '2019-01-31 12:13:01');

INSERT INTO orders.order_line (id, quantity, total_price, order_id, item, status) VALUES
    ('0a7b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d', 2, 39.98, '6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2', 'Debezium in Action', 'ENTERED'),
    ('1b8c4d5e-6f7a-4b2c-9d3e-4f5a6b7c8d9e', 1, 29.99, '6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2', 'Debezium for Dummies', 'CANCELLED');

INSERT INTO orders.outbox_event (id, "timestamp", aggregate_id, aggregate_type, payload, "type") VALUES
    ('2c9d5e6f-7a8b-4c3d-8e4f-5a6b7c8d9e0f', '2019-01-31 12:13:01.123',
     '6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2', 'order',
     '{"id": "6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2", "eventType": "OrderCreated", "orderDate": "2019-01-31T12:13:01.000Z", "customerId": 123}',
     'OrderCreated'),
    ('3d0e6f7a-8b9c-4d4e-9f5a-6b7c8d9e0f1a', '2019-01-31 12:20:44.456',
     '6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2', 'order',
     '{"orderId": "6f1c2a3e-8b4d-4f5a-9c6b-7d8e9fa0b1c2", "orderLineId": "1b8c4d5e-6f7a-4b2c-9d3e-4f5a6b7c8d9e", "oldStatus": "ENTERED", "newStatus": "CANCELLED"}',
     'OrderLineUpdated');
