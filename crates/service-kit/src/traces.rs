//! OpenTelemetry traces of the three binaries: settings, the tracer behind the `tracing`
//! layer ([`crate::logging::init_with_traces`]) and W3C trace-context propagation.
//!
//! Spans always get W3C ids (so a request's context can be stored in the outbox and continued
//! downstream); they are exported over OTLP/HTTP (JSON) only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (`/v1/traces` appended) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) is set. Without
//! one there is no exporter and no background thread. Export goes through the SDK's batch
//! processor: a bounded queue (spans dropped when full) on its own thread, so a slow or
//! unreachable collector never blocks or stops the service. The SDK also honours the standard
//! `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`/`TIMEOUT` variables.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::env::{ConfigError, Vars};

/// The variables [`TraceSettings::from_vars`] reads.
pub const ENV_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

/// Whether [`tracer`] set up an exporter in this process (see [`exporting`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans of this process go anywhere: a span that only a collector would see (one
/// that propagates nothing further) need not be made when this is false.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// How long the exit waits for the last spans to go out.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Where traces go, checked at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// `OTEL_SERVICE_NAME`, the binary's name when unset.
    pub service_name: String,
    /// The OTLP/HTTP traces URL; `None`: no export.
    pub endpoint: Option<String>,
}

impl TraceSettings {
    /// No export, service `service_name`.
    pub fn disabled(service_name: &str) -> Self {
        Self {
            service_name: service_name.to_owned(),
            endpoint: None,
        }
    }

    /// Reads the `OTEL_*` variables; `default_service_name` is the binary's name.
    pub fn from_vars(vars: &Vars<'_>, default_service_name: &str) -> Result<Self, ConfigError> {
        let service_name = vars.string_or("OTEL_SERVICE_NAME", default_service_name)?;
        let endpoint = match vars.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")? {
            Some(url) => Some(check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url)?),
            None => match vars.get("OTEL_EXPORTER_OTLP_ENDPOINT")? {
                Some(url) => Some(format!(
                    "{}/v1/traces",
                    check_url("OTEL_EXPORTER_OTLP_ENDPOINT", &url)?.trim_end_matches('/')
                )),
                None => None,
            },
        };
        Ok(Self {
            service_name: service_name.trim().to_owned(),
            endpoint,
        })
    }
}

/// An `http://host[:port][/path]` URL. `https` is refused at start rather than failing at
/// every export: the exporter is built without TLS (a collector is normally a local agent).
fn check_url(variable: &str, text: &str) -> Result<String, ConfigError> {
    let url = text.trim();
    let invalid = |reason: &str| ConfigError::new(variable, format!("{url:?}: {reason}"));
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(invalid(
            "https is not supported (the OTLP exporter is built without TLS): use http://",
        ));
    } else {
        return Err(invalid(
            "expected an http:// URL, e.g. http://127.0.0.1:4318",
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            if port.parse::<u16>().is_err() {
                return Err(invalid("the port is not a number from 0 to 65535"));
            }
            host
        }
        _ => authority,
    };
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("no host, or spaces in the URL"));
    }
    Ok(url.to_owned())
}

/// Why the tracer could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter for {endpoint}: {reason}")]
pub struct TraceInitError {
    endpoint: String,
    reason: String,
}

/// Keeps the tracer provider; dropping it sends the spans still queued (a few seconds at
/// most) and stops the exporter.
#[derive(Debug)]
pub struct TraceGuard {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl TraceGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.exporting
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if self.exporting {
            // Nothing to report to at exit: a collector that is gone loses the last spans.
            let _ = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

/// The tracer of `settings` (exporting or not) and its guard; installs the W3C propagator.
pub fn tracer(settings: &TraceSettings) -> Result<(SdkTracer, TraceGuard), TraceInitError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &settings.endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| TraceInitError {
                endpoint: endpoint.clone(),
                reason: error.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(settings.service_name.clone());
    EXPORTING.store(settings.endpoint.is_some(), Ordering::Relaxed);
    Ok((
        tracer,
        TraceGuard {
            provider,
            exporting: settings.endpoint.is_some(),
        },
    ))
}

struct HeaderLookup<'a, F>(F, std::marker::PhantomData<&'a str>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for HeaderLookup<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The remote parent carried by `traceparent`/`tracestate` headers (`lookup` gives a header's
/// value by lower-case name); `None` when there is none or it is invalid.
pub fn remote_context<'a>(
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Option<opentelemetry::Context> {
    let context =
        TraceContextPropagator::new().extract(&HeaderLookup(lookup, std::marker::PhantomData));
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of the remote parent in `lookup`'s headers, if there is one: the span
/// then continues that trace.
pub fn continue_remote<'a>(span: &tracing::Span, lookup: impl Fn(&str) -> Option<&'a str>) {
    if let Some(parent) = remote_context(lookup) {
        // Fails only when the OpenTelemetry layer is not installed (unit tests): nothing to
        // continue then.
        let _ = span.set_parent(parent);
    }
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// `span`'s W3C context as `(traceparent, tracestate)`; `None` when it has none (the
/// OpenTelemetry layer is not installed).
pub fn w3c_context(span: &tracing::Span) -> Option<(String, String)> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut MapInjector(&mut fields));
    let traceparent = fields.remove("traceparent")?;
    Some((traceparent, fields.remove("tracestate").unwrap_or_default()))
}

/// The trace id of `span` in hex, for logs; `None` without one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<TraceSettings, ConfigError> {
        crate::env::with(pairs, |vars| {
            TraceSettings::from_vars(&vars, "order-service")
        })
    }

    #[test]
    fn no_endpoint_no_export_and_the_binary_name() {
        assert_eq!(read(&[]).unwrap(), TraceSettings::disabled("order-service"));
        let settings = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            ("OTEL_SERVICE_NAME", "orders-eu"),
        ])
        .unwrap();
        assert_eq!(settings.service_name, "orders-eu");
        assert_eq!(
            settings.endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        let settings = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4318/custom",
            ),
        ])
        .unwrap();
        assert_eq!(
            settings.endpoint.as_deref(),
            Some("http://collector:4318/custom")
        );
    }

    #[test]
    fn a_bad_endpoint_names_its_variable() {
        for (variable, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://host:99999"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://ho st"),
        ] {
            let error = read(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{value}");
        }
    }

    #[test]
    fn remote_contexts_are_read_from_headers() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let headers = HashMap::from([("traceparent", parent), ("tracestate", "a=b")]);
        let context = remote_context(|name| headers.get(name).copied()).unwrap();
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(remote_context(|_| None).is_none());
        assert!(remote_context(|_| Some("00-garbage")).is_none());
    }

    #[test]
    fn without_an_endpoint_spans_get_ids_and_nothing_is_exported() {
        use tracing_subscriber::layer::SubscriberExt;
        let (tracer, guard) = tracer(&TraceSettings::disabled("test")).unwrap();
        assert!(!guard.exporting());
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            continue_remote(&span, |name| (name == "traceparent").then_some(parent));
            let (traceparent, _) = w3c_context(&span).unwrap();
            assert!(
                traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
                "{traceparent}"
            );
            assert_ne!(traceparent, parent, "a child span has its own id");
            assert_eq!(
                trace_id(&span).as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            let root = tracing::info_span!("new");
            assert!(w3c_context(&root).is_some());
        });
    }
}
