//! `shipment-service dlq list|replay|purge`: dead letters are listed without being consumed,
//! re-driven to the queue they came from with their message id, headers and body, and deleted
//! by filter; the rest stay, in order.

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::json;
use shipment_service::dlq::{self, Filter};
use test_support::{EVENTUALLY, wait_until};
use uuid::Uuid;

use crate::support::*;

fn with_id(id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(ShortString::from(id.to_owned()))
}

fn ids(letters: &[dlq::DeadLetter]) -> Vec<String> {
    letters
        .iter()
        .filter_map(|letter| letter.message_id.clone())
        .collect()
}

async fn work_queue_depth(app: &TestApp) -> u32 {
    app.publisher
        .channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_purged_by_filter() {
    let mut app = spawn_app().await;
    let [first, second, third] = [0, 1, 2].map(|_| Uuid::new_v4().to_string());
    app.publisher.publish(b"{not json", with_id(&first)).await;
    app.publisher
        .publish(b"{also not json", with_id(&second))
        .await;
    let unknown = json!({"eventType": "OrderShipped", "id": Uuid::new_v4()}).to_string();
    app.publisher
        .publish(unknown.as_bytes(), with_id(&third))
        .await;
    wait_until("three dead letters", EVENTUALLY, || async {
        (app.dead_letter_depth().await == 3).then_some(())
    })
    .await
    .unwrap();
    // Nothing consumes the work queue from here on: what is re-driven stays there to be read.
    app.stop().await;
    let config = config_for(&app.db, &app.vhost, &[]);

    let all = dlq::list(&config.broker, &Filter::default(), 100)
        .await
        .unwrap();
    assert_eq!(ids(&all), [first.clone(), second.clone(), third.clone()]);
    assert_eq!(all[0].reason.as_deref(), Some("malformed"));
    assert_eq!(all[2].reason.as_deref(), Some("unknown-event-type"));
    assert_eq!(all[0].original_queue, QUEUE);
    assert_eq!(app.dead_letter_depth().await, 3, "listing consumes nothing");
    let malformed = Filter {
        reason: Some("malformed".to_owned()),
        ids: Vec::new(),
    };
    let listed = dlq::list(&config.broker, &malformed, 100).await.unwrap();
    assert_eq!(ids(&listed), [first.clone(), second.clone()]);

    // Re-drive the second one: back in the work queue, same id, body and headers.
    let by_id = Filter {
        reason: None,
        ids: vec![second.clone()],
    };
    let replayed = dlq::replay(&config.broker, &by_id).await.unwrap();
    assert_eq!(ids(&replayed), vec![second.clone()]);
    assert_eq!(app.dead_letter_depth().await, 2);
    wait_until(
        "the re-driven message in the work queue",
        EVENTUALLY,
        || async { (work_queue_depth(&app).await == 1).then_some(()) },
    )
    .await
    .unwrap();
    let message = app
        .publisher
        .channel
        .basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the re-driven message");
    let delivery = &message.delivery;
    assert_eq!(delivery.data, b"{also not json");
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(second.clone())
    );
    let headers = delivery.properties.headers().clone().unwrap();
    assert_eq!(
        headers.inner().get("x-death-reason"),
        Some(&AMQPValue::LongString("malformed".into()))
    );
    assert_eq!(
        headers.inner().get("x-redriven"),
        Some(&AMQPValue::LongLongInt(1))
    );

    // Delete by reason; the other stays, in place.
    let unknown_type = Filter {
        reason: Some("unknown-event-type".to_owned()),
        ids: Vec::new(),
    };
    let deleted = dlq::purge(&config.broker, &unknown_type).await.unwrap();
    assert_eq!(ids(&deleted), vec![third.clone()]);
    let left = dlq::list(&config.broker, &Filter::default(), 100)
        .await
        .unwrap();
    assert_eq!(ids(&left), vec![first.clone()]);

    // The command line: a listing as JSON lines; a replay without a filter is refused.
    let binary = test_support::process::workspace_binary("shipment-service").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(&binary)
            .args(args)
            .env_clear()
            .env("AMQP_URL", &app.vhost.amqp_url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let listed = run(&["dlq", "list"]);
    assert!(listed.status.success(), "{listed:?}");
    let stdout = String::from_utf8(listed.stdout).unwrap();
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["message_id"], first.as_str());
    assert_eq!(line["reason"], "malformed");
    let refused = run(&["dlq", "replay"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--reason, --id or --all"), "{stderr}");
    assert_eq!(app.dead_letter_depth().await, 1);
    app.cleanup().await;
}
