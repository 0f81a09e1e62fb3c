//! The one error type of the HTTP API and its JSON rendering.
//!
//! Every failure a handler or extractor can meet becomes an [`ApiError`]; its single
//! `IntoResponse` impl writes `{"statusCode": <status>, "error": <code>, "message": <text>,
//! "field"?: <name>}` with the matching status. `statusCode` is the HTTP status as a number, the
//! member the original system's (NestJS) error bodies have, for its clients. Bad input is 400 (or 404/409/413/415), never 5xx. Server-side failures are
//! logged here with their cause and answered without internal detail.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use events::LineStatus;
use serde::Serialize;
use uuid::Uuid;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// A field is missing, of the wrong type or out of range; `field` is its JSON path.
    #[error("{message}")]
    InvalidField { field: String, message: String },
    /// A path segment that must be a UUID is not one.
    #[error("{name} must be a UUID, got {value:?}")]
    InvalidPathId { name: &'static str, value: String },
    #[error("Content-Type must be application/json{}", found.as_ref().map(|f| format!(", got {f:?}")).unwrap_or_else(|| ", and it is missing".to_owned()))]
    UnsupportedMediaType { found: Option<String> },
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    UnreadableBody(String),
    #[error("order {0} does not exist")]
    OrderNotFound(Uuid),
    #[error("order {order_id} has no line {line_id}")]
    LineNotFound { order_id: Uuid, line_id: Uuid },
    #[error(
        "order line {line_id} is {current}, so it cannot become {requested}: only ENTERED lines change, to CANCELLED or SHIPPED"
    )]
    StatusConflict {
        line_id: Uuid,
        current: LineStatus,
        requested: LineStatus,
    },
    /// The line has no status (NULL, in a row the original system wrote): it cannot change.
    #[error(
        "order line {line_id} has no status, so it cannot become {requested}: only ENTERED lines change, to CANCELLED or SHIPPED"
    )]
    LineWithoutStatus {
        line_id: Uuid,
        requested: LineStatus,
    },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// PostgreSQL cannot be reached right now; the client may retry.
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A field error; `field` is the JSON path, e.g. `lineItems[1].quantity`.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::InvalidField { .. }
            | Self::InvalidPathId { .. }
            | Self::UnreadableBody(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::OrderNotFound(_) | Self::LineNotFound { .. } | Self::RouteNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::StatusConflict { .. } | Self::LineWithoutStatus { .. } => StatusCode::CONFLICT,
            Self::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code, the `error` member of the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidField { .. } => "invalid_field",
            Self::InvalidPathId { .. } => "invalid_path_parameter",
            Self::UnreadableBody(_) => "unreadable_body",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::OrderNotFound(_) => "order_not_found",
            Self::LineNotFound { .. } => "order_line_not_found",
            Self::StatusConflict { .. } | Self::LineWithoutStatus { .. } => "status_conflict",
            Self::RouteNotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::DatabaseUnavailable(_) => "database_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The request field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidField { field, .. } => Some(field),
            Self::InvalidPathId { name, .. } => Some(name),
            Self::OrderNotFound(_) => Some("orderId"),
            Self::LineNotFound { .. } => Some("orderLineId"),
            Self::StatusConflict { .. } | Self::LineWithoutStatus { .. } => Some("newStatus"),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        // The server going away or not yet accepting work: the client may retry (503).
        if service_kit::postgres::is_unavailable(&error) {
            Self::DatabaseUnavailable(error)
        } else {
            Self::Internal(anyhow::Error::new(error))
        }
    }
}

impl From<outbox::OutboxError> for ApiError {
    fn from(error: outbox::OutboxError) -> Self {
        match error {
            outbox::OutboxError::Database(source) => source.into(),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

/// The JSON error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The HTTP status, as the original system's error bodies carry it.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    pub error: &'a str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed")
            }
            Self::DatabaseUnavailable(cause) => {
                tracing::warn!(error = %cause, "request failed: database unavailable")
            }
            _ => tracing::debug!(status = status.as_u16(), error = %self, "request rejected"),
        }
        let body = ErrorBody {
            status_code: status.as_u16(),
            error: self.code(),
            message: self.to_string(),
            field: self.field(),
        };
        (status, Json(body)).into_response()
    }
}
