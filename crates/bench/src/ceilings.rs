//! The physical ceilings the pipeline is held against: (1a) transactions per second of the
//! order-service's own SQL, (1b) persistent messages per second RabbitMQ confirms to an
//! independent publisher (amqprs), per queue type and per message ([`CeilingMessage`]: the
//! relay's own message in each wire format, and the bare 400-byte reference), (1c) rows per
//! second PostgreSQL streams from a slot.

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

use crate::infra::{
    BenchDb, BenchVhost, EXCHANGE, PUBLICATION, QUEUE, QueueArgument, QueueType, WireFormat,
};
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

/// Size of the bare broker ceiling's message bodies.
pub const BROKER_BODY_BYTES: usize = 400;

/// What the broker ceiling publishes (issue 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CeilingMessage {
    /// The issue's original definition: [`BROKER_BODY_BYTES`]-byte bodies with `delivery_mode`
    /// and `content_type` only, no headers. A reference line: the relay never sends it.
    Bare,
    /// Exactly what the relay publishes for the bench's sample event in this wire format:
    /// the same body bytes, AMQP properties and headers ([`RelayMessage`]).
    Relay(WireFormat),
}

impl CeilingMessage {
    /// `bare`, `plain` or `debezium`.
    pub fn name(self) -> &'static str {
        match self {
            CeilingMessage::Bare => "bare",
            CeilingMessage::Relay(format) => format.name(),
        }
    }
}

/// Which AMQP properties the relay sets (`MessageProperties` in `outbox-relay`'s sink, the
/// default of each wire format): `full` for `plain`, `debezium` for `debezium`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayProperties {
    /// `delivery_mode` 2, `headers`, `content_type` `application/json`, `message_id` (the event
    /// id) and `timestamp` (the commit time, seconds).
    Full,
    /// What Debezium Server sets: `delivery_mode` 2 and `headers` only.
    Debezium,
}

/// The outbox-relay's message for the sample `OrderCreated` event in one wire format, built
/// with the relay's own encoder (`wire_format::encode_with`) from the payload exactly as the
/// relay reads it (PostgreSQL's `jsonb` text output, which pgoutput sends) and the headers its
/// router sends by default: `id` (the event id, from a `uuid` column) and `eventType` (from
/// the `type` column, `RELAY_FIELDS_ADDITIONAL_PLACEMENT` `type:header:eventType`).
#[derive(Debug, Clone)]
pub struct RelayMessage {
    pub format: WireFormat,
    pub body: Vec<u8>,
    pub properties: RelayProperties,
    event_type: String,
}

/// The relay's default `table.field.event.payload`.
const PAYLOAD_FIELD: &str = "payload";

impl RelayMessage {
    /// The relay's message for the sample event in `format`. Asks PostgreSQL for the payload's
    /// `jsonb` text (key order and spacing are PostgreSQL's, and the relay encodes that text).
    pub async fn sample(format: WireFormat) -> Result<Self> {
        use sqlx::Connection as _;
        let event = sample_order().created_event();
        let payload = serde_json::to_value(&event).context("serializing the sample event")?;
        let mut connection = sqlx::PgConnection::connect(&test_support::pg_admin_url())
            .await
            .context("connecting to PostgreSQL for the sample payload's jsonb text")?;
        let (payload_json,): (String,) = sqlx::query_as("SELECT $1::jsonb::text")
            .bind(&payload)
            .fetch_one(&mut connection)
            .await
            .context("reading the sample payload's jsonb text")?;
        let _ = connection.close().await;
        Self::from_payload(format, &payload_json, event.event_type())
    }

    /// [`RelayMessage::sample`] from the payload's `jsonb` text.
    pub fn from_payload(format: WireFormat, payload_json: &str, event_type: &str) -> Result<Self> {
        let id = uuid::Uuid::new_v4().to_string();
        let encoded = wire_format::encode_with(
            format.to_wire(),
            &wire_format::EncodeOptions {
                payload_field: PAYLOAD_FIELD,
            },
            payload_json,
            &Self::routed_headers(&id, event_type),
        )
        .with_context(|| format!("encoding the sample event as {}", format.name()))?;
        Ok(Self {
            format,
            body: encoded.body,
            properties: match format {
                WireFormat::Plain => RelayProperties::Full,
                WireFormat::Debezium => RelayProperties::Debezium,
            },
            event_type: event_type.to_owned(),
        })
    }

    /// The router's headers with its default settings: `id` first, then `eventType`.
    fn routed_headers<'a>(event_id: &'a str, event_type: &'a str) -> [wire_format::Header<'a>; 2] {
        [
            wire_format::Header {
                name: "id",
                value: event_id,
                kind: wire_format::HeaderKind::Uuid,
            },
            wire_format::Header {
                name: "eventType",
                value: event_type,
                kind: wire_format::HeaderKind::String,
            },
        ]
    }

    /// The headers of the message of event `event_id`, as the relay encodes them (in the
    /// `debezium` format each value is a JSON envelope). The payload does not enter the headers,
    /// so an empty object stands for it.
    pub fn headers(&self, event_id: &str) -> Result<Vec<(String, String)>> {
        let encoded = wire_format::encode_with(
            self.format.to_wire(),
            &wire_format::EncodeOptions {
                payload_field: PAYLOAD_FIELD,
            },
            "{}",
            &Self::routed_headers(event_id, &self.event_type),
        )
        .context("encoding the sample headers")?;
        Ok(encoded.headers)
    }

    /// The amqprs properties of the message of event `event_id` committed at `timestamp`
    /// (seconds): header values as AMQP long strings, as the relay's sink sends them.
    pub fn amqprs_properties(&self, event_id: &str, timestamp: u64) -> Result<AmqprsProperties> {
        let mut headers = AmqprsFieldTable::new();
        for (name, value) in self.headers(event_id)? {
            let name = name
                .as_str()
                .try_into()
                .context("a header name is too long")?;
            let value = amqprs::LongStr::try_from(value).context("a header value is too long")?;
            headers.insert(name, FieldValue::S(value));
        }
        let mut properties = AmqprsProperties::default();
        properties
            .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
            .with_headers(headers);
        if self.properties == RelayProperties::Full {
            properties
                .with_content_type("application/json")
                .with_message_id(event_id)
                .with_timestamp(timestamp);
        }
        Ok(properties.finish())
    }

    /// What the ceiling sends, for the comparison with a message the relay published.
    pub fn shape(&self) -> Result<MessageShape> {
        let id = uuid::Uuid::new_v4().to_string();
        let properties = self.amqprs_properties(&id, 0)?;
        let mut set = Vec::new();
        if properties.delivery_mode().is_some() {
            set.push("delivery_mode");
        }
        if properties.content_type().is_some() {
            set.push("content_type");
        }
        if properties.message_id().is_some() {
            set.push("message_id");
        }
        if properties.timestamp().is_some() {
            set.push("timestamp");
        }
        if properties.headers().is_some() {
            set.push("headers");
        }
        let mut header_names: Vec<String> = self
            .headers(&id)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        header_names.sort();
        Ok(MessageShape {
            body_bytes: self.body.len(),
            properties: set.into_iter().map(str::to_owned).collect(),
            header_names,
        })
    }
}

/// The outline of one AMQP message: body length, which properties are set, header names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageShape {
    pub body_bytes: usize,
    /// Set properties among `delivery_mode`, `content_type`, `message_id`, `timestamp`,
    /// `headers`, in that order.
    pub properties: Vec<String>,
    /// Sorted.
    pub header_names: Vec<String>,
}

impl MessageShape {
    /// The shape of a message read back from the broker with lapin (without the
    /// `x-delivery-count` header a quorum queue adds on delivery).
    pub fn of_lapin(properties: &lapin::BasicProperties, body: &[u8]) -> Self {
        let mut set = Vec::new();
        if properties.delivery_mode().is_some() {
            set.push("delivery_mode");
        }
        if properties.content_type().is_some() {
            set.push("content_type");
        }
        if properties.message_id().is_some() {
            set.push("message_id");
        }
        if properties.timestamp().is_some() {
            set.push("timestamp");
        }
        if properties.headers().is_some() {
            set.push("headers");
        }
        let mut header_names: Vec<String> = properties
            .headers()
            .as_ref()
            .map(|headers| {
                headers
                    .inner()
                    .keys()
                    .map(|name| name.as_str())
                    // A quorum queue adds this on delivery: not the relay's.
                    .filter(|name| *name != "x-delivery-count")
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        header_names.sort();
        Self {
            body_bytes: body.len(),
            properties: set.into_iter().map(str::to_owned).collect(),
            header_names,
        }
    }

    /// `None` when `other` (the relay's) matches this one (the ceiling's): same property set,
    /// same header names, body lengths within 2 % (the sample orders' timestamps and prices
    /// are the same shape, but a timestamp's fraction can be shorter by a digit or two);
    /// otherwise what differs.
    pub fn difference(&self, other: &MessageShape) -> Option<String> {
        let mut differences = Vec::new();
        let (ours, theirs) = (self.body_bytes as f64, other.body_bytes as f64);
        if (ours - theirs).abs() > 0.02 * ours.max(theirs) {
            differences.push(format!(
                "body {} B in the ceiling, {} B from the relay",
                self.body_bytes, other.body_bytes
            ));
        }
        if self.properties != other.properties {
            differences.push(format!(
                "properties {:?} in the ceiling, {:?} from the relay",
                self.properties, other.properties
            ));
        }
        if self.header_names != other.header_names {
            differences.push(format!(
                "headers {:?} in the ceiling, {:?} from the relay",
                self.header_names, other.header_names
            ));
        }
        (!differences.is_empty()).then(|| differences.join("; "))
    }
}

/// What one broker-ceiling measurement measured.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerRun {
    pub queue_type: QueueType,
    pub message: CeilingMessage,
    pub messages: usize,
    pub messages_per_s: f64,
    pub message_bytes: usize,
    /// Messages the queue reported at the end (`None`: not readable, as for a stream).
    pub queued: Option<u32>,
    /// For the relay's message: its outline (body length, properties, header names), to be
    /// compared with a message the relay published in the drain.
    pub shape: Option<MessageShape>,
}

/// (1b): an independent client (amqprs, not the relay's lapin code path) publishes `messages`
/// persistent (`delivery_mode` 2), `mandatory` messages of kind `message` to `order.events`
/// (durable fanout) → `shipment.orders` declared as `queue_type`, in a vhost of its own, with
/// publisher confirms and at most `window` unconfirmed at once. A nack, a return or a missing
/// message fails the measurement.
pub async fn broker_ceiling(
    queue_type: QueueType,
    message: CeilingMessage,
    messages: usize,
    window: usize,
) -> Result<BrokerRun> {
    let prepared = prepare_messages(message, messages).await?;
    let vhost = BenchVhost::bare("bench_broker").await?;
    let result = independent_publish(&vhost.amqp_url, queue_type, &prepared, window).await;
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

/// The messages of one measurement, built before the clock starts: one body, and the
/// properties of each message (a fresh event id per message, as the relay's `message_id` and
/// `id` header differ per event).
struct Prepared {
    message: CeilingMessage,
    body: Vec<u8>,
    properties: Vec<AmqprsProperties>,
    shape: Option<MessageShape>,
}

async fn prepare_messages(message: CeilingMessage, messages: usize) -> Result<Prepared> {
    match message {
        CeilingMessage::Bare => {
            let body = ceiling_body()?;
            let base = AmqprsProperties::default()
                .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
                .with_content_type("application/json")
                .finish();
            let properties = (1..=messages as u64)
                .map(|tag| {
                    let mut properties = base.clone();
                    properties.with_message_id(&tag.to_string());
                    properties
                })
                .collect();
            Ok(Prepared {
                message,
                body,
                properties,
                shape: None,
            })
        }
        CeilingMessage::Relay(format) => {
            let sample = RelayMessage::sample(format).await?;
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let properties = (0..messages)
                .map(|_| sample.amqprs_properties(&uuid::Uuid::new_v4().to_string(), now))
                .collect::<Result<Vec<_>>>()?;
            Ok(Prepared {
                message,
                shape: Some(sample.shape()?),
                body: sample.body,
                properties,
            })
        }
    }
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

/// The bare ceiling's 400-byte body: the `OrderCreated` JSON (392 bytes) padded with spaces.
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
    prepared: &Prepared,
    window: usize,
) -> Result<BrokerRun> {
    let connection = AmqprsConnection::open(&open_arguments(url)?)
        .await
        .context("amqprs: connecting to RabbitMQ")?;
    let result = publish_on(&connection, queue_type, prepared, window).await;
    let _ = connection.close().await;
    result
}

async fn publish_on(
    connection: &AmqprsConnection,
    queue_type: QueueType,
    prepared: &Prepared,
    window: usize,
) -> Result<BrokerRun> {
    let messages = prepared.properties.len();
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

    let body = &prepared.body;
    let publish = BasicPublishArguments::new(EXCHANGE, "")
        .mandatory(true)
        .finish();
    let start = Instant::now();
    for (tag, properties) in (1..).zip(&prepared.properties) {
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
        channel
            .basic_publish(properties.clone(), body.clone(), publish.clone())
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
        message: prepared.message,
        messages,
        messages_per_s: messages as f64 / seconds,
        message_bytes: body.len(),
        queued,
        shape: prepared.shape.clone(),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PAYLOAD: &str =
        r#"{"id": "3b1c", "lineItems": [{"item": "x", "quantity": 2}], "customerId": 3}"#;

    #[test]
    fn the_plain_message_is_the_compact_payload_with_the_full_properties() {
        let message =
            RelayMessage::from_payload(WireFormat::Plain, PAYLOAD, "OrderCreated").unwrap();
        assert_eq!(
            String::from_utf8(message.body.clone()).unwrap(),
            r#"{"id":"3b1c","lineItems":[{"item":"x","quantity":2}],"customerId":3}"#
        );
        let id = uuid::Uuid::new_v4().to_string();
        let properties = message.amqprs_properties(&id, 1_700_000_000).unwrap();
        assert_eq!(properties.delivery_mode(), Some(DELIVERY_MODE_PERSISTENT));
        assert_eq!(properties.message_id(), Some(&id));
        assert_eq!(properties.timestamp(), Some(1_700_000_000));
        assert_eq!(
            properties.content_type().map(String::as_str),
            Some("application/json")
        );
        let headers = message.headers(&id).unwrap();
        assert_eq!(
            headers,
            vec![
                ("id".to_owned(), id.clone()),
                ("eventType".to_owned(), "OrderCreated".to_owned())
            ]
        );
        let shape = message.shape().unwrap();
        assert_eq!(
            shape.properties,
            [
                "delivery_mode",
                "content_type",
                "message_id",
                "timestamp",
                "headers"
            ]
        );
        assert_eq!(shape.header_names, ["eventType", "id"]);
    }

    #[test]
    fn the_debezium_message_has_envelopes_and_only_delivery_mode_and_headers() {
        let message =
            RelayMessage::from_payload(WireFormat::Debezium, PAYLOAD, "OrderCreated").unwrap();
        let body = String::from_utf8(message.body.clone()).unwrap();
        assert!(body.starts_with(r#"{"schema":"#), "{body}");
        let id = uuid::Uuid::new_v4().to_string();
        let headers = message.headers(&id).unwrap();
        assert!(
            headers[0].1.contains("io.debezium.data.Uuid"),
            "{headers:?}"
        );
        assert!(headers[0].1.contains(&id));
        let properties = message.amqprs_properties(&id, 1).unwrap();
        assert!(properties.message_id().is_none() && properties.content_type().is_none());
        let shape = message.shape().unwrap();
        assert_eq!(shape.properties, ["delivery_mode", "headers"]);
        let mut relay = shape.clone();
        assert_eq!(shape.difference(&relay), None);
        relay.body_bytes += 1;
        assert_eq!(
            shape.difference(&relay),
            None,
            "a byte or two is the sample's timestamp"
        );
        relay.header_names.pop();
        assert!(shape.difference(&relay).unwrap().contains("headers"));
    }
}
