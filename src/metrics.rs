//! Metric names and the few helpers that record them (the `metrics` facade;
//! the Prometheus exporter is installed by `serve`).

/// Records one group-commit flush and how many waiters it served.
pub fn observe_flush(waiters: usize) {
    metrics::histogram!("durasaga_flush_batch_size").record(waiters as f64);
}
