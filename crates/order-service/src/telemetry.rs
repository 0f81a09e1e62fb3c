//! Logs, traces and metrics.
//!
//! Logs go through `tracing` (filter from `RUST_LOG`; `DB_DEBUG=true` adds every SQL statement
//! with its duration at INFO). Each request runs in a span that continues the caller's W3C
//! trace (`traceparent`/`tracestate`) or starts one; its context is stored with the outbox
//! event ([`current_trace_context`]). Metrics use the `metrics` crate's recorder API with a Prometheus
//! recorder owned by each [`Application`](crate::Application), not the process-global one: several
//! apps in one test process each count only their own traffic. `GET /metrics` renders:
//!
//! - `http_requests_total{method, route, status}`: requests by route template and status;
//! - `http_request_duration_seconds{method, route}`: latency histogram;
//! - `outbox_events_written_total{event_type}`: events committed to the outbox;
//! - `db_pool_connections` / `db_pool_idle_connections`: the connection pool at scrape time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
use service_kit::logging::{LogFilter, LogFormat};
use service_kit::traces::{TraceGuard, TraceSettings};
use sqlx::PgPool;

/// Installs the global tracing subscriber (for the binary; tests use `test_support::init_tracing`):
/// the checked `RUST_LOG` filter, plus every SQL statement at INFO with `DB_DEBUG`, and the
/// OpenTelemetry layer (`traces`). Keep the guard until exit.
pub fn init_tracing(
    filter: &LogFilter,
    sql_debug: bool,
    traces: &TraceSettings,
) -> Result<TraceGuard, service_kit::logging::LogInitError> {
    let extra: &[&str] = if sql_debug {
        &["sqlx::query=info"]
    } else {
        &[]
    };
    service_kit::logging::init_with_traces(filter, extra, LogFormat::Text, traces)
}

/// The span of one HTTP request, at INFO so the OpenTelemetry layer sees it under the default
/// filter. It continues the caller's trace when the request has a valid `traceparent`
/// (and `tracestate`); otherwise it starts a new trace.
pub fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = %route,
        uri = %request.uri(),
    );
    let headers = request.headers();
    service_kit::traces::continue_remote(&span, |name| {
        headers.get(name).and_then(|value| value.to_str().ok())
    });
    span
}

/// The W3C context of the current span (the request's), for the outbox row; `None` without
/// the OpenTelemetry layer (in-process tests).
pub fn current_trace_context() -> Option<outbox::TraceContext> {
    let (traceparent, tracestate) = service_kit::traces::w3c_context(&tracing::Span::current())?;
    outbox::TraceContext::new(&traceparent, &tracestate).ok()
}

/// Latency buckets in seconds: 0.5 ms to 10 s, as the other binaries'.
const LATENCY_BUCKETS: &[f64] = service_kit::prometheus::LATENCY_BUCKETS;

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// The service's metrics registry.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Result<Self, metrics_exporter_prometheus::BuildError> {
        let recorder = service_kit::prometheus::builder(&[(
            "http_request_duration_seconds",
            LATENCY_BUCKETS,
        )])?
        .build_recorder();
        let handle = recorder.handle();
        let metrics = Self {
            recorder: Arc::new(recorder),
            handle,
        };
        metrics.describe();
        Ok(metrics)
    }

    fn describe(&self) {
        use metrics::{SharedString, Unit};
        let describe = |name: &'static str, unit: Option<Unit>, text: &'static str| {
            self.recorder
                .describe_counter(name.into(), unit, SharedString::const_str(text));
        };
        describe(
            "http_requests_total",
            None,
            "HTTP requests by method, route template and status",
        );
        describe(
            "outbox_events_written_total",
            None,
            "Domain events committed to the outbox table, by type",
        );
        self.recorder.describe_histogram(
            "http_request_duration_seconds".into(),
            Some(Unit::Seconds),
            SharedString::const_str("HTTP request latency by method and route template"),
        );
        self.recorder.describe_gauge(
            "db_pool_connections".into(),
            None,
            SharedString::const_str("Open database connections"),
        );
        self.recorder.describe_gauge(
            "db_pool_idle_connections".into(),
            None,
            SharedString::const_str("Idle database connections"),
        );
    }

    /// Counts one finished request.
    pub fn record_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let route_labels = [
            Label::new("method", method.to_owned()),
            Label::new("route", route.to_owned()),
        ];
        let mut labels = route_labels.to_vec();
        labels.push(Label::new("status", status.to_string()));
        self.recorder
            .register_counter(&Key::from_parts("http_requests_total", labels), &METADATA)
            .increment(1);
        self.recorder
            .register_histogram(
                &Key::from_parts("http_request_duration_seconds", route_labels.to_vec()),
                &METADATA,
            )
            .record(elapsed.as_secs_f64());
    }

    /// Counts one event committed to the outbox.
    pub fn record_event_written(&self, event_type: &'static str) {
        self.recorder
            .register_counter(
                &Key::from_parts(
                    "outbox_events_written_total",
                    vec![Label::new("event_type", event_type)],
                ),
                &METADATA,
            )
            .increment(1);
    }

    /// The Prometheus text exposition, with the pool gauges taken now.
    pub fn render(&self, pool: &PgPool) -> String {
        let gauge = |name: &'static str, value: f64| {
            self.recorder
                .register_gauge(&Key::from_name(name), &METADATA)
                .set(value);
        };
        gauge("db_pool_connections", f64::from(pool.size()));
        gauge("db_pool_idle_connections", pool.num_idle() as f64);
        self.handle.render()
    }

    /// Drains histogram samples into their buckets; run periodically so memory stays flat
    /// between scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// Middleware: counts every request under its route template (`/orders/{orderId}`), never the
/// raw path, so label cardinality stays bounded.
pub async fn track_requests(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    metrics.record_request(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Standard methods by name, anything else as `other`: a client cannot grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
