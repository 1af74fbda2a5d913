//! Metric names, the Prometheus recorder, and the helpers that record the
//! storage-level metrics (the `metrics` facade is used everywhere else).
//!
//! Invariant: the recorder is installed at most once per process; every
//! runtime in the process shares it.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once) and returns its handle, or `None`
/// if another recorder was installed first.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ];
            let batch = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("durasaga_flush_batch_size".into()),
                        &batch,
                    )
                })
                .ok()
                .and_then(|b| b.install_recorder().ok())
        })
        .as_ref()
}

/// Records one group-commit flush and how many waiters it served.
pub fn observe_flush(waiters: usize) {
    metrics::histogram!("durasaga_flush_batch_size").record(waiters as f64);
}
