//! The order routes: create an order, read it, change the status of one of its lines.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::domain::{NewOrder, Order, StatusChange, StoredOrder};
use crate::error::ApiError;
use crate::extract::{JsonBody, OrderLinePath, OrderPath};
use crate::routes::AppState;
use crate::telemetry;

/// `POST /orders`: 201 with the new order; its `OrderCreated` event is committed with it.
pub async fn create_order(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let new_order = NewOrder::parse(&body)?;
    let trace = telemetry::current_trace_context();
    let committed = state.store.create(&new_order, trace.as_ref()).await?;
    state.metrics.record_event_written(committed.event_type);
    tracing::info!(order_id = %committed.order.id, lines = committed.order.line_items.len(), "order created");
    Ok((StatusCode::CREATED, Json(committed.order)))
}

/// `GET /orders/{orderId}`: the order, or 404 naming `orderId`.
pub async fn get_order(
    State(state): State<AppState>,
    path: OrderPath,
) -> Result<Json<StoredOrder>, ApiError> {
    state
        .store
        .find(path.order_id)
        .await?
        .map(Json)
        .ok_or(ApiError::OrderNotFound(path.order_id))
}

/// `PUT /orders/{orderId}/lines/{orderLineId}` with `{"newStatus": ...}`: 200 with the whole
/// order; 409 when the line may not move to that status (then no event is written).
pub async fn update_order_line(
    State(state): State<AppState>,
    path: OrderLinePath,
    JsonBody(body): JsonBody,
) -> Result<Json<StoredOrder>, ApiError> {
    let change = StatusChange::parse(&body)?;
    let trace = telemetry::current_trace_context();
    let committed = state
        .store
        .change_line_status(
            path.order_id,
            path.line_id,
            change.new_status,
            trace.as_ref(),
        )
        .await?;
    state.metrics.record_event_written(committed.event_type);
    tracing::info!(order_id = %path.order_id, line_id = %path.line_id, new_status = %change.new_status, "order line updated");
    Ok(Json(committed.order))
}
