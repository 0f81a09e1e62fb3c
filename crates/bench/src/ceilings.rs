//! The physical ceilings the pipeline is held against: (1a) transactions per second of the
//! order-service's own SQL, (1b) persistent messages per second RabbitMQ confirms, (1c) rows
//! per second PostgreSQL streams from a slot.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use serde::Serialize;

use crate::infra::{BenchDb, BenchVhost, EXCHANGE, PUBLICATION};
use crate::relays::password_of;
use crate::workload::{producer_throughput, sample_order};

/// The producer ceiling of one repetition: every concurrency level tried, and the best.
#[derive(Debug, Clone, Serialize)]
pub struct ProducerSweep {
    pub levels: Vec<(usize, f64)>,
    pub best_concurrency: usize,
    pub best_tps: f64,
}

/// (1a): [`producer_throughput`] at each level; the best is the ceiling.
pub async fn producer_ceiling(levels: &[usize], seconds: f64) -> Result<ProducerSweep> {
    let db = BenchDb::create("bench_producer", 4).await?;
    let mut measured = Vec::with_capacity(levels.len());
    let result = async {
        for &concurrency in levels {
            let tps = producer_throughput(&db, concurrency, seconds).await?;
            tracing::info!(concurrency, tps = tps.round(), "producer ceiling level");
            measured.push((concurrency, tps));
        }
        anyhow::Ok(())
    }
    .await;
    db.drop().await?;
    result?;
    let (best_concurrency, best_tps) = measured
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .context("no producer level was measured")?;
    Ok(ProducerSweep {
        levels: measured,
        best_concurrency,
        best_tps,
    })
}

/// The body and headers the relay publishes for one `OrderCreated` (plain wire format).
pub fn sample_message() -> Result<(Vec<u8>, BasicProperties)> {
    let event = sample_order().created_event();
    let body = serde_json::to_vec(&event).context("serializing the sample event")?;
    let id = uuid::Uuid::now_v7().to_string();
    let mut headers = FieldTable::default();
    headers.insert(
        "id".into(),
        AMQPValue::LongString(LongString::from(id.as_bytes())),
    );
    headers.insert(
        "eventType".into(),
        AMQPValue::LongString(LongString::from(&b"OrderCreated"[..])),
    );
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(id.as_str().into())
        .with_timestamp(0)
        .with_headers(headers);
    Ok((body, properties))
}

/// What the broker ceiling measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BrokerRun {
    pub messages_per_s: f64,
    pub message_bytes: usize,
}

/// (1b): `messages` persistent messages of the relay's size to `order.events` → a durable
/// queue, mandatory, with publisher confirms, at most `window` unconfirmed at once.
pub async fn broker_ceiling(messages: usize, window: usize) -> Result<BrokerRun> {
    let vhost = BenchVhost::create("bench_broker").await?;
    let result = publish_with_confirms(vhost.amqp_url(), messages, window).await;
    let depth = vhost.queue_depth().await;
    vhost.delete().await?;
    let run = result?;
    let depth = depth?;
    if depth as usize != messages {
        bail!("the broker ceiling queue holds {depth} messages, {messages} were confirmed");
    }
    Ok(run)
}

async fn publish_with_confirms(url: &str, messages: usize, window: usize) -> Result<BrokerRun> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let (body, properties) = sample_message()?;
    // Each publish is run to its first await (its frames are then queued, in order) and
    // awaited later with its confirm: awaiting every write before the next publish would
    // measure lapin's thread hand-off, not the broker. The relay publishes the same way.
    type Publish = Pin<Box<dyn Future<Output = Result<Confirmation>> + Send>>;
    let mut pending: VecDeque<Publish> = VecDeque::with_capacity(window);
    let check = |confirmation: Confirmation| match confirmation {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("the broker did not accept a message: {other:?}"),
    };
    let start = Instant::now();
    for _ in 0..messages {
        if pending.len() >= window
            && let Some(confirm) = pending.pop_front()
        {
            check(confirm.await?)?;
        }
        let (channel, body, properties) = (channel.clone(), body.clone(), properties.clone());
        let mut publish: Publish = Box::pin(async move {
            let confirm = channel
                .basic_publish(
                    EXCHANGE.into(),
                    "".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &body,
                    properties,
                )
                .await?;
            Ok(confirm.await?)
        });
        if let Poll::Ready(result) = futures::poll!(publish.as_mut()) {
            publish = Box::pin(std::future::ready(result));
        }
        pending.push_back(publish);
    }
    while let Some(confirm) = pending.pop_front() {
        check(confirm.await?)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = connection.close(200, "done".into()).await;
    Ok(BrokerRun {
        messages_per_s: messages as f64 / seconds,
        message_bytes: body.len(),
    })
}

/// (1c): streams `slot` (which holds `rows` outbox inserts) and returns inserts per second,
/// from the start of the session to the last insert. Only the message tag is looked at: this
/// is what PostgreSQL can send, not what a decoder can take.
pub async fn wal_read_rows_per_s(db: &BenchDb, slot: &str, rows: usize) -> Result<f64> {
    let options = db.admin().connect_options();
    let password = password_of(db.url());
    let config = ReplicationConfig::new(
        options.get_host().to_owned(),
        options.get_username().to_owned(),
        password,
        db.name().to_owned(),
        slot.to_owned(),
        PUBLICATION.to_owned(),
    )
    .with_port(options.get_port())
    .with_tls(TlsConfig::disabled())
    .with_buffer_size(8192)
    .with_wakeup_interval(Duration::from_secs(10))
    .with_application_name("bench-wal-read");
    let start = Instant::now();
    let mut client = ReplicationClient::connect(config)
        .await
        .context("starting replication for the WAL read ceiling")?;
    let deadline = start + Duration::from_secs(600);
    let mut inserts = 0usize;
    while inserts < rows {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(remaining, client.recv())
            .await
            .context("the WAL read ceiling timed out")?
            .context("the replication stream failed")?;
        match event {
            Some(ReplicationEvent::XLogData { data, .. }) if data.first() == Some(&b'I') => {
                inserts += 1;
            }
            Some(_) => {}
            None => bail!("the replication stream ended after {inserts} of {rows} rows"),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = client.shutdown().await;
    Ok(rows as f64 / seconds)
}
