//! The command line: every setting as a flag that also reads its environment variable. What
//! the variables are is said here once; [`super::ENV_VARS`] is derived from it.

use std::path::PathBuf;

use clap::Parser;

/// Command-line flags; each also reads the environment variable named after it.
#[derive(Debug, Default, Parser)]
#[command(
    name = "outbox-relay",
    version,
    about = "Relays outbox rows from PostgreSQL to RabbitMQ with publisher confirms: streamed \
             from the WAL (pgoutput, the default) or, with --source polling, polled from the table"
)]
pub struct Cli {
    /// PostgreSQL connection URL; replaces the DB_* settings.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL host [default: 127.0.0.1].
    #[arg(long, env = "DB_HOST")]
    pub db_host: Option<String>,
    /// PostgreSQL port [default: 5432].
    #[arg(long, env = "DB_PORT")]
    pub db_port: Option<String>,
    /// PostgreSQL user; needs the REPLICATION attribute (replication source) or SELECT,
    /// UPDATE and DELETE on the outbox tables (polling source) [default: postgres].
    #[arg(long, env = "DB_USER")]
    pub db_user: Option<String>,
    /// PostgreSQL password [default: postgres].
    #[arg(long, env = "DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,
    /// Database holding the outbox table [default: orderdb].
    #[arg(long, env = "DB_NAME")]
    pub db_name: Option<String>,
    /// TLS with PostgreSQL, every connection (replication included): disable | prefer |
    /// require | verify-ca | verify-full, as libpq's sslmode [default: prefer].
    #[arg(long, env = "DB_SSLMODE")]
    pub db_sslmode: Option<String>,
    /// CA certificate(s), PEM, the server's certificate must chain to (verify-ca,
    /// verify-full) [default: the WebPKI roots].
    #[arg(long, env = "DB_SSLROOTCERT")]
    pub db_sslrootcert: Option<String>,

    /// AMQP URL (amqp://user:password@host:port/vhost, or amqps:// with RabbitMQ's TLS query
    /// parameters cacertfile, certfile, keyfile, server_name_indication); replaces the
    /// RABBITMQ_* settings.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// RabbitMQ host [default: 127.0.0.1].
    #[arg(long, env = "RABBITMQ_HOST")]
    pub rabbitmq_host: Option<String>,
    /// RabbitMQ port [default: 5672].
    #[arg(long, env = "RABBITMQ_PORT")]
    pub rabbitmq_port: Option<String>,
    /// RabbitMQ user [default: guest].
    #[arg(long, env = "RABBITMQ_USER")]
    pub rabbitmq_user: Option<String>,
    /// RabbitMQ password [default: guest].
    #[arg(long, env = "RABBITMQ_PASSWORD", hide_env_values = true)]
    pub rabbitmq_password: Option<String>,
    /// RabbitMQ virtual host [default: /].
    #[arg(long, env = "RABBITMQ_VHOST")]
    pub rabbitmq_vhost: Option<String>,

    /// Logical replication slot [default: outbox_relay].
    #[arg(long, env = "RELAY_SLOT")]
    pub slot: Option<String>,
    /// Publication covering the outbox table(s) [default: outbox_publication].
    #[arg(long, env = "RELAY_PUBLICATION")]
    pub publication: Option<String>,
    /// Outbox tables, comma separated [default: orders.outbox_event].
    #[arg(long, env = "RELAY_TABLES")]
    pub tables: Option<String>,
    /// Message format on the broker: plain | debezium [default: plain, or debezium with a
    /// Debezium properties file].
    #[arg(long, env = "RELAY_WIRE_FORMAT")]
    pub wire_format: Option<String>,
    /// AMQP properties of each message: debezium (delivery_mode 2 and headers only, exactly
    /// what Debezium Server sets) | full (also content_type application/json, message_id = the
    /// event id, timestamp = the commit time) [default: full with the plain wire format,
    /// debezium with the debezium wire format].
    #[arg(long, env = "RELAY_MESSAGE_PROPERTIES")]
    pub message_properties: Option<String>,
    /// Routing key: empty | key | type [default: empty].
    #[arg(long, env = "RELAY_ROUTING_KEY")]
    pub routing_key: Option<String>,
    /// Column whose value names the destination (route.by.field) [default: aggregate_type].
    #[arg(long, env = "RELAY_ROUTE_BY_FIELD")]
    pub route_by_field: Option<String>,
    /// Exchange name template (route.topic.replacement) [default: ${routedByValue}.events].
    #[arg(long, env = "RELAY_ROUTE_TOPIC_REPLACEMENT")]
    pub route_topic_replacement: Option<String>,
    /// Event id column (table.field.event.id) [default: id].
    #[arg(long, env = "RELAY_FIELD_EVENT_ID")]
    pub field_event_id: Option<String>,
    /// Event key column (table.field.event.key) [default: aggregate_id].
    #[arg(long, env = "RELAY_FIELD_EVENT_KEY")]
    pub field_event_key: Option<String>,
    /// Event type column (table.field.event.type) [default: type].
    #[arg(long, env = "RELAY_FIELD_EVENT_TYPE")]
    pub field_event_type: Option<String>,
    /// Payload column (table.field.event.payload) [default: payload].
    #[arg(long, env = "RELAY_FIELD_EVENT_PAYLOAD")]
    pub field_event_payload: Option<String>,
    /// Extra columns as headers, `column:header:name[,...]`
    /// (table.fields.additional.placement) [default: type:header:eventType].
    #[arg(long, env = "RELAY_FIELDS_ADDITIONAL_PLACEMENT")]
    pub fields_additional_placement: Option<String>,
    /// Column holding each event's W3C trace context, sent as the traceparent and tracestate
    /// headers (tracing.span.context.field); a table without it sends none; none: never read
    /// [default: tracingspancontext].
    #[arg(long, env = "RELAY_TRACING_SPAN_CONTEXT_FIELD")]
    pub tracing_span_context_field: Option<String>,
    /// Type of the exchanges the relay declares: fanout | direct | topic | headers
    /// [default: fanout].
    #[arg(long, env = "RELAY_EXCHANGE_TYPE")]
    pub exchange_type: Option<String>,
    /// Exchange for outbox rows that cannot be routed (missing or null column); without it
    /// the relay stalls on such a row.
    #[arg(long, env = "RELAY_DEAD_LETTER_EXCHANGE")]
    pub dead_letter_exchange: Option<String>,
    /// Most events in flight (published, not yet confirmed) [default: 1024].
    #[arg(long, env = "RELAY_WINDOW_EVENTS")]
    pub window_events: Option<String>,
    /// Most message bytes in flight [default: 16777216].
    #[arg(long, env = "RELAY_WINDOW_BYTES")]
    pub window_bytes: Option<String>,
    /// Debezium Server application.properties to read the database, slot, publication, table,
    /// RabbitMQ connection and outbox router settings from; `${VAR}` / `${VAR:default}` are
    /// expanded from the environment, and DEBEZIUM_* variables override keys, as Debezium
    /// Server does. Its slot and publication defaults are Debezium's: debezium and
    /// dbz_publication.
    #[arg(long, env = "RELAY_DEBEZIUM_PROPERTIES")]
    pub debezium_properties: Option<PathBuf>,
    /// Address of /health and /metrics [default: 127.0.0.1].
    #[arg(long, env = "RELAY_HTTP_HOST")]
    pub http_host: Option<String>,
    /// Port of /health and /metrics; 0 picks a free one [default: 8080].
    #[arg(long, env = "RELAY_HTTP_PORT")]
    pub http_port: Option<String>,
    /// How long to keep trying to reach each server at start before failing [default: 10].
    #[arg(long, env = "RELAY_CONNECT_TIMEOUT_SECS")]
    pub connect_timeout_secs: Option<String>,
    /// How long a graceful shutdown waits for in-flight confirms [default: 30].
    #[arg(long, env = "RELAY_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<String>,
    /// Most time between a confirmed position and its status update to PostgreSQL
    /// [default: 1000].
    #[arg(long, env = "RELAY_STATUS_INTERVAL_MS")]
    pub status_interval_ms: Option<String>,
    /// Log format: text | json [default: text].
    #[arg(long, env = "RELAY_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, tracing's `RUST_LOG` syntax (e.g. info,outbox_relay=debug); a bad one stops
    /// the relay [default: info].
    #[arg(long, env = "RUST_LOG")]
    pub log_filter: Option<String>,

    /// Where events come from: replication (logical replication of the WAL) | polling
    /// (SELECT ... FOR UPDATE NOWAIT, publish, DELETE; for databases where logical
    /// replication is not allowed) [default: replication].
    #[arg(long, env = "RELAY_SOURCE")]
    pub source: Option<String>,
    /// Polling source: pause after a poll that found fewer rows than a batch
    /// [default: 100].
    #[arg(long, env = "RELAY_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<String>,
    /// Polling source: most rows read, published and deleted per transaction [default: 500].
    #[arg(long, env = "RELAY_POLL_BATCH_SIZE")]
    pub poll_batch_size: Option<String>,

    /// Without a command the relay runs until stopped.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-off commands, run with the relay's settings.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Re-publishes the outbox rows still in the table(s) for a time range, or from an event
    /// on, with their event ids as message ids (consumers deduplicate), then exits. With
    /// --recreate-slot it first drops a slot PostgreSQL invalidated and creates it anew, so a
    /// relay started afterwards streams every later event: no gap.
    Resync(ResyncArgs),
}

/// Flags of `outbox-relay resync`.
#[derive(Debug, Clone, clap::Args)]
pub struct ResyncArgs {
    /// Rows whose `timestamp` column is at or after this time (RFC 3339, e.g.
    /// 2026-12-02T09:30:00Z).
    #[arg(
        long,
        required_unless_present = "from_event",
        conflicts_with = "from_event"
    )]
    pub since: Option<String>,
    /// From this event on: rows stamped at or after its `timestamp`, the event included.
    #[arg(long)]
    pub from_event: Option<String>,
    /// Only rows stamped before this time (RFC 3339) [default: no end].
    #[arg(long)]
    pub until: Option<String>,
    /// Drop the replication slot first if PostgreSQL invalidated it, and create it (anew)
    /// before reading the table, so streaming resumes after the resync with no gap. Refused
    /// while a relay holds the slot, and for a slot that is still valid.
    #[arg(long)]
    pub recreate_slot: bool,
    /// Count the rows in the range and print the first and last; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
}
