//! The physical ceilings the pipeline is held against: (1a) transactions per second of the
//! order-service's own SQL, (1b) persistent messages per second RabbitMQ confirms to an
//! independent publisher (amqprs), per queue type, (1c) rows per second PostgreSQL streams from
//! a slot.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicPublishArguments, ConfirmSelectArguments, ExchangeDeclareArguments, QueueBindArguments,
    QueueDeclareArguments,
};
use amqprs::connection::{Connection as AmqprsConnection, OpenConnectionArguments};
use amqprs::{
    Ack, BasicProperties as AmqprsProperties, Cancel, CloseChannel, DELIVERY_MODE_PERSISTENT,
    FieldTable as AmqprsFieldTable, FieldValue, Nack, Return,
};
use anyhow::{Context, Result, bail};
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use serde::Serialize;

use tokio::sync::Notify;

use crate::infra::{BenchDb, BenchVhost, EXCHANGE, PUBLICATION, QUEUE, QueueArgument, QueueType};
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

/// Size of the broker ceiling's message bodies.
pub const BROKER_BODY_BYTES: usize = 400;

/// What one broker-ceiling measurement measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BrokerRun {
    pub queue_type: QueueType,
    pub messages: usize,
    pub messages_per_s: f64,
    pub message_bytes: usize,
    /// Messages the queue reported at the end (`None`: not readable, as for a stream).
    pub queued: Option<u32>,
}

/// (1b): an independent client (amqprs, not the relay's lapin code path) publishes `messages`
/// persistent (`delivery_mode` 2), `mandatory` messages of [`BROKER_BODY_BYTES`] to
/// `order.events` (durable fanout) → `shipment.orders` declared as `queue_type`, in a vhost of
/// its own, with publisher confirms and at most `window` unconfirmed at once. A nack, a
/// return or a missing message fails the measurement.
pub async fn broker_ceiling(
    queue_type: QueueType,
    messages: usize,
    window: usize,
) -> Result<BrokerRun> {
    let vhost = BenchVhost::bare("bench_broker").await?;
    let result = independent_publish(&vhost.amqp_url, queue_type, messages, window).await;
    vhost
        .delete()
        .await
        .context("deleting the broker ceiling's vhost")?;
    let run = result?;
    if let Some(queued) = run.queued
        && queued as usize != messages
    {
        bail!("the broker ceiling queue holds {queued} messages, {messages} were confirmed");
    }
    Ok(run)
}

/// The publisher confirms of one channel, as amqprs's callback hands them over.
#[derive(Default)]
struct Confirms {
    state: Mutex<ConfirmState>,
    changed: Notify,
}

#[derive(Default)]
struct ConfirmState {
    /// Delivery tags published and not yet confirmed.
    outstanding: BTreeSet<u64>,
    nacked: u64,
    returned: u64,
    /// Why the broker closed the channel, if it did.
    closed: Option<String>,
}

impl Confirms {
    fn lock(&self) -> MutexGuard<'_, ConfirmState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the confirmed tags (`multiple`: every tag up to `tag`); returns how many.
    fn settle(&self, tag: u64, multiple: bool, nack: bool) {
        let mut state = self.lock();
        let settled = if multiple {
            let rest = state.outstanding.split_off(&(tag + 1));
            let settled = state.outstanding.len() as u64;
            state.outstanding = rest;
            settled
        } else {
            u64::from(state.outstanding.remove(&tag))
        };
        if nack {
            state.nacked += settled;
        }
        drop(state);
        self.changed.notify_one();
    }

    fn check(&self) -> Result<()> {
        let state = self.lock();
        if let Some(reason) = &state.closed {
            bail!("the broker closed the channel: {reason}");
        }
        if state.nacked > 0 || state.returned > 0 {
            bail!(
                "the broker did not take every message: {} nacked, {} returned as unroutable",
                state.nacked,
                state.returned
            );
        }
        Ok(())
    }
}

/// amqprs's channel callback, written out (the trait is `#[async_trait]`): records confirms,
/// returns and a close in [`Confirms`].
struct ConfirmCallback(Arc<Confirms>);

type CallbackFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl ChannelCallback for ConfirmCallback {
    fn close<'life0, 'life1, 'async_trait>(
        &'life0 mut self,
        _channel: &'life1 amqprs::channel::Channel,
        close: CloseChannel,
    ) -> CallbackFuture<'async_trait, std::result::Result<(), amqprs::error::Error>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.0.lock().closed = Some(close.to_string());
            self.0.changed.notify_one();
            Ok(())
        })
    }

    fn cancel<'life0, 'life1, 'async_trait>(
        &'life0 mut self,
        _channel: &'life1 amqprs::channel::Channel,
        _cancel: Cancel,
    ) -> CallbackFuture<'async_trait, std::result::Result<(), amqprs::error::Error>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async { Ok(()) })
    }

    fn flow<'life0, 'life1, 'async_trait>(
        &'life0 mut self,
        _channel: &'life1 amqprs::channel::Channel,
        _active: bool,
    ) -> CallbackFuture<'async_trait, std::result::Result<bool, amqprs::error::Error>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async { Ok(true) })
    }

    fn publish_ack<'life0, 'life1, 'async_trait>(
        &'life0 mut self,
        _channel: &'life1 amqprs::channel::Channel,
        ack: Ack,
    ) -> CallbackFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { self.0.settle(ack.delivery_tag(), ack.mutiple(), false) })
    }

    fn publish_nack<'life0, 'life1, 'async_trait>(
        &'life0 mut self,
        _channel: &'life1 amqprs::channel::Channel,
        nack: Nack,
    ) -> CallbackFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { self.0.settle(nack.delivery_tag(), nack.multiple(), true) })
    }

    fn publish_return<'life0, 'life1, 'async_trait>(
        &'life0 mut self,
        _channel: &'life1 amqprs::channel::Channel,
        _ret: Return,
        _basic_properties: amqprs::BasicProperties,
        _content: Vec<u8>,
    ) -> CallbackFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.0.lock().returned += 1;
            self.0.changed.notify_one();
        })
    }
}

/// How long the publisher waits for a confirm before it gives up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// A 400-byte body: the relay's `OrderCreated` JSON (392 bytes) padded with spaces.
fn ceiling_body() -> Result<Vec<u8>> {
    let event = sample_order().created_event();
    let mut body = serde_json::to_vec(&event).context("serializing the sample event")?;
    if body.len() < BROKER_BODY_BYTES {
        body.resize(BROKER_BODY_BYTES, b' ');
    }
    Ok(body)
}

/// Connection arguments of an `amqp://user:password@host:port/vhost` URL.
fn open_arguments(url: &str) -> Result<OpenConnectionArguments> {
    let parsed = reqwest::Url::parse(url).context("parsing the AMQP URL")?;
    let host = parsed.host_str().context("the AMQP URL has no host")?;
    let user = match parsed.username() {
        "" => "guest".to_owned(),
        user => percent_decode(user),
    };
    let password = percent_decode(parsed.password().unwrap_or("guest"));
    let vhost = percent_decode(parsed.path().trim_start_matches('/'));
    let vhost = if vhost.is_empty() {
        "/".to_owned()
    } else {
        vhost
    };
    let mut arguments =
        OpenConnectionArguments::new(host, parsed.port().unwrap_or(5672), &user, &password);
    arguments
        .virtual_host(&vhost)
        .connection_name("bench-broker-ceiling");
    Ok(arguments.finish())
}

/// `%XX` escapes decoded (a URL's user, password and vhost).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(hex) = text.get(index + 1..index + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn independent_publish(
    url: &str,
    queue_type: QueueType,
    messages: usize,
    window: usize,
) -> Result<BrokerRun> {
    let connection = AmqprsConnection::open(&open_arguments(url)?)
        .await
        .context("amqprs: connecting to RabbitMQ")?;
    let result = publish_on(&connection, queue_type, messages, window).await;
    let _ = connection.close().await;
    result
}

async fn publish_on(
    connection: &AmqprsConnection,
    queue_type: QueueType,
    messages: usize,
    window: usize,
) -> Result<BrokerRun> {
    let channel = connection
        .open_channel(None)
        .await
        .context("amqprs: opening a channel")?;
    let confirms = Arc::new(Confirms::default());
    channel
        .register_callback(ConfirmCallback(confirms.clone()))
        .await
        .context("amqprs: registering the channel callback")?;
    channel
        .exchange_declare(
            ExchangeDeclareArguments::new(EXCHANGE, "fanout")
                .durable(true)
                .finish(),
        )
        .await
        .context("amqprs: declaring the exchange")?;
    let mut arguments = AmqprsFieldTable::new();
    for (name, value) in queue_type.arguments() {
        let value = match value {
            QueueArgument::Int(number) => FieldValue::I(*number),
            QueueArgument::Text(text) => FieldValue::from(*text),
        };
        let name = (*name)
            .try_into()
            .context("a queue argument's name is too long")?;
        arguments.insert(name, value);
    }
    channel
        .queue_declare(
            QueueDeclareArguments::new(QUEUE)
                .durable(true)
                .arguments(arguments)
                .finish(),
        )
        .await
        .with_context(|| format!("amqprs: declaring a {} queue", queue_type.description()))?;
    channel
        .queue_bind(QueueBindArguments::new(QUEUE, EXCHANGE, "").finish())
        .await
        .context("amqprs: binding the queue")?;
    channel
        .confirm_select(ConfirmSelectArguments::new(false))
        .await
        .context("amqprs: selecting publisher confirms")?;

    let body = ceiling_body()?;
    let properties = AmqprsProperties::default()
        .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
        .with_content_type("application/json")
        .finish();
    let publish = BasicPublishArguments::new(EXCHANGE, "")
        .mandatory(true)
        .finish();
    let start = Instant::now();
    for tag in 1..=messages as u64 {
        // Wait for room in the window; the tag is recorded before the publish, so that its
        // confirm cannot come first.
        loop {
            let changed = confirms.changed.notified();
            confirms.check()?;
            {
                let mut state = confirms.lock();
                if state.outstanding.len() < window {
                    state.outstanding.insert(tag);
                    break;
                }
            }
            tokio::time::timeout(CONFIRM_TIMEOUT, changed)
                .await
                .with_context(|| format!("no confirm for {CONFIRM_TIMEOUT:?}"))?;
        }
        let mut properties = properties.clone();
        properties.with_message_id(&tag.to_string());
        channel
            .basic_publish(properties, body.clone(), publish.clone())
            .await
            .context("amqprs: publishing")?;
    }
    loop {
        let changed = confirms.changed.notified();
        confirms.check()?;
        if confirms.lock().outstanding.is_empty() {
            break;
        }
        tokio::time::timeout(CONFIRM_TIMEOUT, changed)
            .await
            .with_context(|| format!("no confirm for {CONFIRM_TIMEOUT:?}"))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    confirms.check()?;
    // A stream reports no depth to a passive declare: it is not checked.
    let queued = if queue_type == QueueType::Stream {
        None
    } else {
        let (_, count, _) = channel
            .queue_declare(QueueDeclareArguments::new(QUEUE).passive(true).finish())
            .await
            .context("amqprs: reading the queue depth")?
            .context("amqprs: no reply to the passive declare")?;
        Some(count)
    };
    let _ = channel.close().await;
    Ok(BrokerRun {
        queue_type,
        messages,
        messages_per_s: messages as f64 / seconds,
        message_bytes: body.len(),
        queued,
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
