//! The operations endpoint: `GET /health` (JSON; 200 when ready, 503 otherwise) and
//! `GET /metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::telemetry::{RelayStatus, prometheus_handle};

/// Binds the listener (port 0 picks a free one); serving starts with [`serve`].
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((host, port)).await
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    status: Arc<RelayStatus>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(status);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The address a listener is bound to.
pub fn local_addr(listener: &TcpListener) -> std::io::Result<SocketAddr> {
    listener.local_addr()
}

async fn health(State(status): State<Arc<RelayStatus>>) -> Response {
    let report = status.report();
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report)).into_response()
}

async fn metrics() -> Response {
    match prometheus_handle() {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics unavailable: another metrics recorder is installed in this process\n",
        )
            .into_response(),
    }
}
