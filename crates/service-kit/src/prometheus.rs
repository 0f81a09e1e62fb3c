//! The Prometheus recorder: histogram buckets per metric, and the process-global recorder
//! installed once (the relay and shipment-service; order-service keeps a recorder per
//! application, built from the same [`builder`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds, 0.5 ms to 10 s: request, processing and publish-to-confirm
/// times of the three binaries.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram's name and its bucket bounds.
pub type Buckets<'a> = (&'a str, &'a [f64]);

/// A Prometheus builder with `buckets` set.
pub fn builder(buckets: &[Buckets<'_>]) -> Result<PrometheusBuilder, BuildError> {
    buckets
        .iter()
        .try_fold(PrometheusBuilder::new(), |builder, (name, bounds)| {
            builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), bounds)
        })
}

/// The process-global recorder's handle, installing it with `buckets` on the first call; later
/// calls (several applications in one test process) share it. `None` when the recorder could
/// not be installed (another one was first); `/metrics` then says so.
pub fn install_global(buckets: &[Buckets<'_>]) -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match builder(buckets).and_then(PrometheusBuilder::install_recorder) {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "cannot install the Prometheus recorder; /metrics stays empty");
                None
            }
        })
        .clone()
}
