-- Runs on our databases and on one the original NodeJS service created (see
-- 20261201000000_adopt_original_and_line_position.sql): idempotent, adds only.

-- The W3C trace context of each event (Java Properties text, `traceparent=...` lines), under
-- the name of Debezium's outbox setting `tracing.span.context.field` default, so a Debezium
-- outbox router with tracing reads it unchanged. Nullable and without a default: adding it
-- rewrites no row, and rows without a context (the original's, or written with
-- OUTBOX_TRACING_SPAN_CONTEXT_FIELD=none) keep NULL. Debezium's own examples use
-- varchar(255); text holds a long tracestate too. A service configured with another column
-- name adds that column itself.
ALTER TABLE outbox_event ADD COLUMN IF NOT EXISTS tracingspancontext text;
