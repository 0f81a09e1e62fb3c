//! `GET /health`: 200 `{"status":"UP","database":"UP","health":true}` when PostgreSQL answers,
//! else 503 with `"DOWN"`, `"health": false` and the reason. `health` is the original system's
//! answer (`{"health": true}`), kept for its probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::routes::AppState;

/// How long the database may take to answer the health query.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let check = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(state.store.pool());
    let problem = match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, check).await {
        Ok(Ok(_)) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some(format!(
            "no answer within {} s",
            DATABASE_CHECK_TIMEOUT.as_secs()
        )),
    };
    match problem {
        None => (
            StatusCode::OK,
            Json(json!({"status": "UP", "database": "UP", "health": true})),
        ),
        Some(reason) => {
            tracing::warn!(%reason, "health check: database down");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"status": "DOWN", "database": "DOWN", "health": false, "message": reason}),
                ),
            )
        }
    }
}
