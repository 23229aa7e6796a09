//! Metrics: what the daemon and its vGPUs are doing, as the Prometheus
//! text exposition (format 0.0.4), served by `vgpuctl metrics` and, when
//! `metrics_listen` is set, over HTTP. `docs/metrics.md` lists every
//! metric and the endpoint's bounds.

mod render;
mod snapshot;

pub use render::{CONTENT_TYPE, control_result, render};
pub use snapshot::{GpuMetrics, MetricsSnapshot};
