//! Metrics: what the daemon and its vGPUs are doing, as the Prometheus
//! text exposition (format 0.0.4), served by `vgpuctl metrics` and, when
//! `metrics_listen` is set, over HTTP. `docs/operations.md` lists every
//! metric.

mod snapshot;

pub use snapshot::{GpuMetrics, MetricsSnapshot};
