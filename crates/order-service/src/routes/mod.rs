//! The HTTP routes and the router that wires them with their middleware.
//!
//! - [`orders`]: `POST /orders`, `GET /orders/{orderId}`, `PUT /orders/{orderId}/lines/{orderLineId}`
//! - [`health`]: `GET /health`, which checks the database
//! - [`metrics`]: `GET /metrics`, the Prometheus text exposition
//!
//! Unknown routes and methods answer the JSON error body too.

pub mod health;
pub mod metrics;
pub mod orders;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post, put};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;
use crate::store::OrderStore;
use crate::telemetry::{self, Metrics};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: OrderStore,
    pub metrics: Metrics,
}

/// The complete router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(orders::create_order))
        .route("/orders/{orderId}", get(orders::get_order))
        .route(
            "/orders/{orderId}/lines/{orderLineId}",
            put(orders::update_order_line),
        )
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            telemetry::track_requests,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(telemetry::request_span))
        .with_state(state)
}

async fn route_not_found(request: Request) -> ApiError {
    ApiError::RouteNotFound {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}
