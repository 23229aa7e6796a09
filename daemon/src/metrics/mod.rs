//! Metrics: what the daemon and its vGPUs are doing, as the Prometheus
//! text exposition (format 0.0.4), served by `vgpuctl metrics` and, when
//! `metrics_listen` is set, over HTTP. `docs/operations.md` lists every
//! metric.

mod snapshot;

pub use snapshot::{GpuMetrics, MetricsSnapshot};

/// TEMPORARY until the exposition lands: the `metrics` command's result.
pub fn result(snapshot: &MetricsSnapshot) -> crate::control::protocol::MetricsResult {
    crate::control::protocol::MetricsResult {
        content_type: "text/plain; version=0.0.4; charset=utf-8".into(),
        text: format!("# {} vGPUs\n", snapshot.vgpus.len()),
    }
}
