//! Concurrent changes of one line: exactly one succeeds, the others get 409, and exactly one
//! `OrderLineUpdated` event is written, for the change that happened.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Barrier;

use crate::helpers::{ids, spawn_app};

const PARALLEL_UPDATES: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_updates_of_one_line_exactly_one_succeeds() {
    let app = Arc::new(spawn_app().await);
    for round in 0..3 {
        let (order_id, line_ids) = ids(&app.create_sample_order().await);
        let line_id = line_ids[0].clone();
        let barrier = Arc::new(Barrier::new(PARALLEL_UPDATES));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..PARALLEL_UPDATES {
            let (app, barrier) = (app.clone(), barrier.clone());
            let (order_id, line_id) = (order_id.clone(), line_id.clone());
            let new_status = if i % 2 == 0 { "CANCELLED" } else { "SHIPPED" };
            tasks.spawn(async move {
                barrier.wait().await;
                let response = app
                    .put_line(&order_id, &line_id, &json!({"newStatus": new_status}))
                    .await;
                (response.status(), new_status)
            });
        }
        let results = tasks.join_all().await;

        let winners: Vec<&str> = results
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .map(|(_, new_status)| *new_status)
            .collect();
        let conflicts = results
            .iter()
            .filter(|(status, _)| *status == StatusCode::CONFLICT)
            .count();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert_eq!(
            conflicts,
            PARALLEL_UPDATES - 1,
            "round {round}: {results:?}"
        );
        assert_eq!(app.line_status(&line_id).await, winners[0]);
        let updates: Vec<_> = app
            .outbox_rows()
            .await
            .into_iter()
            .filter(|row| row.event_type == "OrderLineUpdated" && row.aggregate_id == order_id)
            .collect();
        assert_eq!(updates.len(), 1, "round {round}");
        assert_eq!(updates[0].payload["newStatus"], winners[0]);
        assert_eq!(updates[0].payload["oldStatus"], "ENTERED");
    }
    let app = Arc::into_inner(app).unwrap();
    app.stop().await;
}
