//! Property-based bad input: random JSON bodies (arbitrary shapes, and the sample request with
//! one member replaced by an arbitrary value) and random path ids never cause a 5xx, and a
//! refused request writes nothing while an accepted one writes exactly its rows and one event.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;
use serde_json::{Map, Value};

use crate::helpers::{Counts, TestApp, sample_create_request, spawn_app};

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        prop_oneof![
            Just("ENTERED"),
            Just("SHIPPED"),
            Just("2024-01-01T12:00:00"),
            Just("2024-13-01T12:00:00Z")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("customerId".to_owned()),
                    Just("orderDate".to_owned()),
                    Just("lineItems".to_owned()),
                    Just("item".to_owned()),
                    Just("quantity".to_owned()),
                    Just("totalPrice".to_owned()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The sample request with the member at one of its JSON pointers replaced.
fn mutated_sample() -> impl Strategy<Value = Value> {
    let pointers = [
        "/customerId",
        "/orderDate",
        "/lineItems",
        "/lineItems/0",
        "/lineItems/1/item",
        "/lineItems/0/quantity",
        "/lineItems/1/totalPrice",
    ];
    (prop::sample::select(pointers.to_vec()), json_value()).prop_map(|(pointer, value)| {
        let mut body = sample_create_request();
        if let Some(slot) = body.pointer_mut(pointer) {
            *slot = value;
        }
        body
    })
}

async fn check_create(app: &TestApp, body: &Value) -> Result<(), TestCaseError> {
    let before = app.counts().await;
    let response = app.post_order(body).await;
    let status = response.status();
    prop_assert!(!status.is_server_error(), "{status} for {body}");
    let answer: Value = response.json().await.expect("a JSON answer");
    let after = app.counts().await;
    if status == StatusCode::CREATED {
        let lines = answer["lineItems"].as_array().map_or(0, Vec::len) as i64;
        prop_assert_eq!(
            after,
            Counts {
                orders: before.orders + 1,
                lines: before.lines + lines,
                events: before.events + 1
            }
        );
    } else {
        prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", body);
        prop_assert!(answer["error"].is_string() && answer["message"].is_string());
        prop_assert_eq!(after, before, "a refused request wrote something: {}", body);
    }
    Ok(())
}

#[test]
fn random_bodies_and_path_ids_never_cause_a_5xx_or_a_partial_write() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(spawn_app());
    let config = Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    };

    TestRunner::new(config.clone())
        .run(&prop_oneof![json_value(), mutated_sample()], |body| {
            runtime.block_on(check_create(&app, &body))
        })
        .unwrap();

    TestRunner::new(config)
        .run(&any::<String>(), |segment| {
            runtime.block_on(async {
                let encoded: String = segment.bytes().map(|byte| format!("%{byte:02X}")).collect();
                let response = app.get(&format!("/orders/{encoded}")).await;
                let status = response.status();
                prop_assert!(
                    matches!(status, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND),
                    "{} for {:?}",
                    status,
                    segment
                );
                Ok(())
            })
        })
        .unwrap();

    runtime.block_on(app.stop());
}
