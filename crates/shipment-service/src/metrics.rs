//! Prometheus metrics: names, the process-global recorder, and the text served at `/metrics`.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `shipment_messages_consumed_total` | `event_type`, `outcome` | messages handled: applied, unchanged, parked, duplicate, dead_lettered |
//! | `shipment_duplicates_total` | | redelivered or duplicated events that changed nothing |
//! | `shipment_dead_lettered_total` | `reason` | messages published to the dead-letter queue |
//! | `shipment_handler_retries_total` | | failed attempts that were retried |
//! | `shipment_processing_seconds` | `event_type` | from delivery to ack |
//! | `shipment_event_delay_seconds` | | from the event's AMQP timestamp (whole seconds) to its commit here |
//! | `shipment_orphaned_line_updates_total` | | parked updates that did not fit their order |
//! | `shipment_broker_connected` / `shipment_database_up` | | 1 when reachable |
//! | `shipment_broker_blocked` | | 1 while RabbitMQ blocks the connection (a memory or disk alarm) |
//! | `shipment_partitions_owned` | | partitions this instance applies (`SHIPMENT_PARTITIONS` > 1) |
//! | `shipment_partition_members` | | instances this one sees alive |
//! | `shipment_partition_handovers_total` | `direction` | partitions taken or released |

use metrics_exporter_prometheus::PrometheusHandle;

pub const MESSAGES_CONSUMED: &str = "shipment_messages_consumed_total";
pub const DUPLICATES: &str = "shipment_duplicates_total";
pub const DEAD_LETTERED: &str = "shipment_dead_lettered_total";
pub const HANDLER_RETRIES: &str = "shipment_handler_retries_total";
pub const PROCESSING_SECONDS: &str = "shipment_processing_seconds";
pub const EVENT_DELAY_SECONDS: &str = "shipment_event_delay_seconds";
pub const ORPHANED_UPDATES: &str = "shipment_orphaned_line_updates_total";
pub const BROKER_CONNECTED: &str = "shipment_broker_connected";
pub const BROKER_BLOCKED: &str = "shipment_broker_blocked";
pub const DATABASE_UP: &str = "shipment_database_up";
pub const PARTITIONS_OWNED: &str = "shipment_partitions_owned";
pub const MEMBERS: &str = "shipment_partition_members";
pub const PARTITION_HANDOVERS: &str = "shipment_partition_handovers_total";

const PROCESSING_BUCKETS: &[f64] = service_kit::prometheus::LATENCY_BUCKETS;
const DELAY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];

/// Installs the process-global recorder once (`service_kit::prometheus`); later calls (several
/// apps in one test process) share it. `None` if it could not be installed.
pub fn install() -> Option<PrometheusHandle> {
    service_kit::prometheus::install_global(&[
        (PROCESSING_SECONDS, PROCESSING_BUCKETS),
        (EVENT_DELAY_SECONDS, DELAY_BUCKETS),
    ])
}

/// Declares every metric so that `/metrics` lists it from the start (alerts need the series).
pub fn describe() {
    metrics::describe_counter!(
        MESSAGES_CONSUMED,
        "Messages handled, by event type and outcome"
    );
    metrics::describe_counter!(DUPLICATES, "Events delivered again that changed nothing");
    metrics::describe_counter!(
        DEAD_LETTERED,
        "Messages published to the dead-letter queue, by reason"
    );
    metrics::describe_counter!(HANDLER_RETRIES, "Failed attempts that were retried");
    metrics::describe_histogram!(
        PROCESSING_SECONDS,
        metrics::Unit::Seconds,
        "Time from delivery to ack"
    );
    metrics::describe_histogram!(
        EVENT_DELAY_SECONDS,
        metrics::Unit::Seconds,
        "Time from the event's AMQP timestamp to its commit here"
    );
    metrics::describe_counter!(
        ORPHANED_UPDATES,
        "Parked line updates that did not match a line of their order"
    );
    metrics::describe_gauge!(BROKER_CONNECTED, "1 while connected to RabbitMQ");
    metrics::describe_gauge!(
        BROKER_BLOCKED,
        "1 while RabbitMQ blocks the connection (a memory or disk alarm)"
    );
    // Present from the start, so an alert on it has a series before the first alarm.
    metrics::gauge!(BROKER_BLOCKED).set(0.0);
    metrics::describe_gauge!(DATABASE_UP, "1 while PostgreSQL answers");
    metrics::describe_gauge!(
        PARTITIONS_OWNED,
        "Partition queues this instance applies (SHIPMENT_PARTITIONS > 1)"
    );
    metrics::describe_gauge!(MEMBERS, "shipment-service instances this one sees alive");
    metrics::describe_counter!(
        PARTITION_HANDOVERS,
        "Partitions taken over or given up, by direction"
    );
    metrics::counter!(DUPLICATES).increment(0);
    metrics::counter!(HANDLER_RETRIES).increment(0);
    metrics::counter!(ORPHANED_UPDATES).increment(0);
}
