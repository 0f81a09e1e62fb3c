//! How fast the relay's own sink (`AmqpSink`: its AMQP client, publisher confirms, `mandatory`) publishes
//! when nothing else is in the way: no WAL, no routing, no encoding. Put beside an independent
//! publisher's figure (the bench's ceiling 1b) it tells whether the gap between the relay's
//! drain and the broker's ceiling lies in the sink or before it.
//!
//! `cargo run --release -p outbox-relay --example sink_rate -- AMQP_URL [MESSAGES] [WINDOW]
//! [QUEUE_TYPE]`; the URL's vhost gets an exchange `sink_rate` and a queue `sink_rate.q`
//! (`classic`, declared as version 2, or `quorum`), purged before and after.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use outbox_relay::router::ExchangeType;
use outbox_relay::sink::{AmqpSink, MessageProperties, Outcome, OutgoingMessage};
use service_kit::amqp::AmqpSettings;

const EXCHANGE: &str = "sink_rate";
const QUEUE: &str = "sink_rate.q";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: sink_rate AMQP_URL [MESSAGES] [WINDOW] [QUEUE_TYPE]")?;
    let messages: usize = args.next().map_or(Ok(50_000), |n| n.parse())?;
    let window: usize = args.next().map_or(Ok(1024), |n| n.parse())?;
    let queue_type = args.next().unwrap_or_else(|| "classic".to_owned());
    let settings = AmqpSettings::from_url("AMQP_URL", &url)?;

    let admin = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await?;
    let channel = admin.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            lapin::ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let _ = channel
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.as_str().into()),
    );
    if queue_type == "classic" {
        arguments.insert("x-queue-version".into(), AMQPValue::LongInt(2));
    }
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    channel
        .queue_bind(
            QUEUE.into(),
            EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let mut sink = AmqpSink::connect(&settings, ExchangeType::Fanout).await?;
    let body: Arc<[u8]> = vec![b'x'; 400].into();
    // SINK_RATE_BARE=1: no headers, only `delivery_mode` (the independent ceiling's message).
    let bare = std::env::var("SINK_RATE_BARE").is_ok_and(|value| value == "1");
    let message = |index: usize| OutgoingMessage {
        exchange: EXCHANGE.to_owned(),
        routing_key: String::new(),
        message_id: index.to_string(),
        body: Arc::clone(&body),
        headers: if bare {
            Vec::new()
        } else {
            vec![
                ("id".to_owned(), index.to_string()),
                ("eventType".to_owned(), "OrderCreated".to_owned()),
            ]
        },
        timestamp: 0,
        properties: if bare {
            MessageProperties::Debezium
        } else {
            MessageProperties::Full
        },
        ordering_key: index as u64,
    };
    let started = Instant::now();
    let mut confirms = FuturesOrdered::new();
    let mut published = 0;
    let mut delivered = 0;
    while delivered < messages {
        while published < messages && confirms.len() < window {
            confirms.push_back(sink.publish(&message(published)).await?);
            published += 1;
        }
        sink.flush();
        match confirms.next().await {
            Some(Outcome::Delivered) => delivered += 1,
            Some(other) => bail!("message {delivered} was not delivered: {other:?}"),
            None => bail!("no confirm pending"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "sink_rate queue_type={queue_type} window={window} messages={messages} seconds={seconds:.2} msg_per_s={:.0}",
        messages as f64 / seconds
    );
    sink.close().await;
    let _ = channel
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await;
    let _ = admin.close(200, "done".into()).await;
    Ok(())
}
