//! The relay's own AMQP client (through `AmqpSink`) against a real RabbitMQ, each test in a
//! vhost of its own: what the broker says about each publish (ack, nack, return) reaches the
//! right confirm, messages arrive byte for byte with their properties, bodies larger than a
//! frame are split, and the broker's refusals are errors that say what it said. lapin is the
//! independent client that sets up queues and reads messages back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use outbox_relay::router::ExchangeType;
use outbox_relay::sink::{AmqpSink, MessageProperties, Outcome, OutgoingMessage, SinkError};
use service_kit::amqp::AmqpSettings;
use test_support::TestVhost;

const EXCHANGE: &str = "client.events";

fn message(routing_key: &str, body: Vec<u8>, properties: MessageProperties) -> OutgoingMessage {
    OutgoingMessage {
        exchange: EXCHANGE.to_owned(),
        routing_key: routing_key.to_owned(),
        message_id: format!("id-{routing_key}"),
        body: Arc::from(body),
        headers: vec![
            ("id".to_owned(), format!("id-{routing_key}")),
            ("eventType".to_owned(), "OrderCreated".to_owned()),
        ],
        timestamp: 1_767_225_600,
        properties,
        ordering_key: 0,
    }
}

/// A vhost of its own with `EXCHANGE` declared as `kind`, and lapin's connection to it.
async fn vhost_with_exchange(
    prefix: &str,
    kind: ExchangeKind,
) -> (TestVhost, Connection, lapin::Channel) {
    let vhost = TestVhost::create(prefix).await.unwrap();
    let admin = Connection::connect(&vhost.amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = admin.create_channel().await.unwrap();
    channel
        .exchange_declare(
            EXCHANGE.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (vhost, admin, channel)
}

async fn declare_queue(channel: &lapin::Channel, queue: &str, arguments: FieldTable) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.into(),
            EXCHANGE.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

async fn confirm(pending: outbox_relay::sink::PendingConfirm) -> Outcome {
    tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("no confirm within 30 s")
}

#[tokio::test]
async fn acks_nacks_and_returns_reach_the_publish_they_belong_to() {
    let (vhost, admin, channel) = vhost_with_exchange("amqp_client", ExchangeKind::Direct).await;
    // Holds one message and refuses (nacks) the next.
    let mut bounded = FieldTable::default();
    bounded.insert("x-max-length".into(), AMQPValue::LongInt(1));
    bounded.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    declare_queue(&channel, "bounded", bounded).await;
    declare_queue(&channel, "wide", FieldTable::default()).await;

    let settings = AmqpSettings::from_url("AMQP_URL", &vhost.amqp_url).unwrap();
    let mut sink = AmqpSink::connect(&settings, ExchangeType::Direct)
        .await
        .unwrap();
    // 300 KB: split over frames of the negotiated frame_max (128 KiB).
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let plan = [
        ("bounded", b"{\"n\":1}".to_vec(), MessageProperties::Full),
        ("bounded", b"{\"n\":2}".to_vec(), MessageProperties::Full),
        ("nowhere", b"{\"n\":3}".to_vec(), MessageProperties::Full),
        ("wide", big.clone(), MessageProperties::Full),
        ("wide", b"{\"n\":5}".to_vec(), MessageProperties::Debezium),
    ];
    let mut confirms = Vec::new();
    for (routing_key, body, properties) in &plan {
        let outgoing = message(routing_key, body.clone(), *properties);
        confirms.push(sink.publish(&outgoing).await.unwrap());
    }
    sink.flush();
    let mut outcomes = Vec::new();
    for pending in confirms {
        outcomes.push(confirm(pending).await);
    }
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert_eq!(outcomes[1], Outcome::Nacked, "the full queue refused it");
    assert_eq!(
        outcomes[2],
        Outcome::Returned {
            reply_code: 312,
            reply_text: "NO_ROUTE".to_owned()
        }
    );
    assert_eq!(outcomes[3], Outcome::Delivered);
    assert_eq!(outcomes[4], Outcome::Delivered);
    assert!(sink.is_connected());

    let get = |queue: &'static str| {
        let channel = channel.clone();
        async move {
            channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .expect("a message")
                .delivery
        }
    };
    let first = get("bounded").await;
    assert_eq!(first.data, b"{\"n\":1}");
    let properties = &first.properties;
    assert_eq!(properties.delivery_mode(), &Some(2));
    assert_eq!(
        properties.content_type().as_ref().map(|t| t.as_str()),
        Some("application/json")
    );
    assert_eq!(
        properties.message_id().as_ref().map(|t| t.as_str()),
        Some("id-bounded")
    );
    assert_eq!(properties.timestamp(), &Some(1_767_225_600));
    let headers = properties.headers().as_ref().unwrap();
    assert_eq!(
        headers.inner().get("eventType"),
        Some(&AMQPValue::LongString("OrderCreated".into()))
    );

    let large = get("wide").await;
    assert_eq!(large.data.len(), big.len());
    assert!(large.data == big, "the 300 KB body came back altered");
    let debezium = get("wide").await;
    assert_eq!(debezium.data, b"{\"n\":5}");
    assert_eq!(debezium.properties.delivery_mode(), &Some(2));
    assert_eq!(debezium.properties.content_type(), &None);
    assert_eq!(debezium.properties.message_id(), &None);
    assert_eq!(debezium.properties.timestamp(), &None);
    assert_eq!(
        debezium
            .properties
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .len(),
        2
    );

    sink.close().await;
    let _ = admin.close(200, "done".into()).await;
    vhost.delete().await.unwrap();
}

#[tokio::test]
async fn the_brokers_refusals_are_errors_that_say_what_it_said() {
    // The exchange exists as a topic exchange; the sink declares a fanout.
    let (vhost, admin, _channel) =
        vhost_with_exchange("amqp_client_refusal", ExchangeKind::Topic).await;
    let settings = AmqpSettings::from_url("AMQP_URL", &vhost.amqp_url).unwrap();
    let mut sink = AmqpSink::connect(&settings, ExchangeType::Fanout)
        .await
        .unwrap();
    let refused = sink
        .publish(&message("k", b"{}".to_vec(), MessageProperties::Full))
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(matches!(refused, SinkError::Declare { .. }), "{text}");
    assert!(text.contains("PRECONDITION_FAILED"), "{text}");
    assert!(text.contains(EXCHANGE), "{text}");
    assert!(!sink.is_connected(), "a closed channel ends the sink");
    let again = sink
        .publish(&message("k", b"{}".to_vec(), MessageProperties::Full))
        .await;
    assert!(again.is_err());

    let (_, host_and_vhost) = vhost
        .amqp_url
        .split_once('@')
        .expect("the test vhost URL has credentials");
    let wrong_password = format!("amqp://nobody-here:wrong@{host_and_vhost}");
    let settings = AmqpSettings::from_url("AMQP_URL", &wrong_password).unwrap();
    let error = AmqpSink::connect(&settings, ExchangeType::Fanout)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("ACCESS_REFUSED"), "{error}");
    assert!(!error.contains("wrong"), "{error}");

    let tls = vhost.amqp_url.replacen("amqp://", "amqps://", 1);
    let settings = AmqpSettings::from_url("AMQP_URL", &tls).unwrap();
    let error = AmqpSink::connect(&settings, ExchangeType::Fanout)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("amqps://"), "{error}");

    let _ = admin.close(200, "done".into()).await;
    vhost.delete().await.unwrap();
}

#[tokio::test]
async fn with_several_nodes_the_sink_uses_one_that_accepts() {
    let (vhost, admin, channel) =
        vhost_with_exchange("amqp_client_nodes", ExchangeKind::Direct).await;
    declare_queue(&channel, "wide", FieldTable::default()).await;
    // A node that is down (nothing listens on that port), then the real one, then down again:
    // whichever node this process starts with, a connection goes to the live one.
    let closed = test_support::process::free_port();
    let (_, host_and_vhost) = vhost.amqp_url.split_once('@').unwrap();
    let (_, vhost_path) = host_and_vhost.split_once('/').unwrap();
    let down = format!("amqp://guest:guest@127.0.0.1:{closed}/{vhost_path}");
    let cluster = format!("{down},{},{down}", vhost.amqp_url);
    let settings = AmqpSettings::from_url("AMQP_URL", &cluster).unwrap();
    assert_eq!(settings.node_count(), 3);
    for _ in 0..3 {
        let mut sink = AmqpSink::connect(&settings, ExchangeType::Direct)
            .await
            .unwrap();
        let pending = sink
            .publish(&message("wide", b"{}".to_vec(), MessageProperties::Full))
            .await
            .unwrap();
        sink.flush();
        assert_eq!(confirm(pending).await, Outcome::Delivered);
        sink.close().await;
    }
    // All down: the error names the last node tried, without its password.
    let all_down = format!("{down},{down}");
    let settings = AmqpSettings::from_url("AMQP_URL", &all_down).unwrap();
    let error = AmqpSink::connect(&settings, ExchangeType::Direct)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&format!("127.0.0.1:{closed}")), "{error}");
    assert!(!error.contains("guest:guest"), "{error}");
    let _ = admin.close(200, "done".into()).await;
    vhost.delete().await.unwrap();
}
