//! The HTTP API: `GET /shipments` (paged, `?orderId=`), `GET /shipments/{id}`, `GET /health`,
//! `GET /metrics`. Every error is JSON `{error, message, field?, statusCode}` built in one place
//! ([`ApiError`]).
//!
//! Clients of the original (NestJS) service read `statusCode` from its error bodies
//! `{statusCode, message, error}` and `health` from its `{"health": true}`: both keys are added
//! to ours. Its `error` (the reason phrase) clashes with ours (a code such as `not_found`), so
//! ours keeps its meaning.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::consumer::Health;
use crate::queries;

/// Page size when `size` is not given, and the largest accepted.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub health: Arc<Health>,
    pub metrics: Option<PrometheusHandle>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/shipments", get(list_shipments))
        .route("/shipments/{id}", get(get_shipment))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// An HTTP error; its response is `{error, message, field?, statusCode}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidParameter { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    /// The HTTP status again, as the original's NestJS bodies have it.
    #[serde(rename = "statusCode")]
    status_code: u16,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, field) = match &self {
            ApiError::InvalidParameter { field, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                Some(field.as_str()),
            ),
            ApiError::NotFound(_) | ApiError::RouteNotFound => {
                (StatusCode::NOT_FOUND, "not_found", None)
            }
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::Database(error) => {
                tracing::error!(%error, "request failed on the database");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    None,
                )
            }
        };
        let message = match &self {
            ApiError::Database(_) => "the database is not available; try again".to_owned(),
            other => other.to_string(),
        };
        let body = ErrorBody {
            error,
            message,
            field,
            status_code: status.as_u16(),
        };
        (status, Json(body)).into_response()
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParameter {
        field: field.to_owned(),
        message: message.into(),
    }
}

async fn list_shipments(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<queries::ShipmentPage>, ApiError> {
    let Query(pairs) = query.map_err(|rejection| invalid("query", rejection.body_text()))?;
    let mut page = 0u32;
    let mut size = DEFAULT_PAGE_SIZE;
    let mut order_id = None;
    for (name, value) in pairs {
        match name.as_str() {
            "page" => {
                page = value.parse().map_err(|_| {
                    invalid(
                        "page",
                        format!("page must be a whole number from 0, got {value:?}"),
                    )
                })?;
            }
            "size" => {
                size = value
                    .parse()
                    .ok()
                    .filter(|size| (1..=MAX_PAGE_SIZE).contains(size))
                    .ok_or_else(|| {
                        invalid(
                            "size",
                            format!("size must be a whole number from 1 to {MAX_PAGE_SIZE}, got {value:?}"),
                        )
                    })?;
            }
            "orderId" => {
                order_id = Some(Uuid::parse_str(&value).map_err(|_| {
                    invalid("orderId", format!("orderId must be a UUID, got {value:?}"))
                })?);
            }
            other => {
                return Err(invalid(
                    other,
                    format!("unknown parameter {other:?}: expected page, size or orderId"),
                ));
            }
        }
    }
    Ok(Json(
        queries::list(&state.pool, order_id, page, size).await?,
    ))
}

async fn get_shipment(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<queries::ShipmentView>, ApiError> {
    let Path(id) = path.map_err(|rejection| invalid("id", rejection.body_text()))?;
    let id = Uuid::parse_str(&id)
        .map_err(|_| invalid("id", format!("shipment id must be a UUID, got {id:?}")))?;
    queries::find(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("shipment {id} not found")))
}

#[derive(Serialize)]
struct HealthBody {
    /// The original's answer: true only when healthy.
    health: bool,
    status: &'static str,
    database: &'static str,
    broker: &'static str,
    /// Why RabbitMQ blocks the connection (a memory or disk alarm), while it does. Consuming
    /// goes on meanwhile (it frees the broker), so the service stays healthy; only
    /// dead-letter publishes wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_blocked: Option<String>,
    /// With `SHIPMENT_PARTITIONS` > 1: this instance's id, the members it sees, the partitions
    /// it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<crate::partitions::PartitionReport>,
}

async fn health(State(state): State<AppState>) -> Response {
    let database_up = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await
    .is_ok_and(|result| result.is_ok());
    let broker_up = state.health.broker_connected.load(Ordering::Relaxed);
    let word = |up: bool| if up { "UP" } else { "DOWN" };
    let status = if database_up && broker_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthBody {
        health: database_up && broker_up,
        status: word(database_up && broker_up),
        database: word(database_up),
        broker: word(broker_up),
        broker_blocked: state.health.broker_blocked(),
        partitions: state.health.partitions(),
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
