//! Metrics: what the daemon and its vGPUs are doing, as the Prometheus
//! text exposition (format 0.0.4), served by `vgpuctl metrics` and, when
//! `metrics_listen` is set, over HTTP. `docs/metrics.md` lists every
//! metric and the endpoint's bounds.

mod http;
mod listen;
mod render;
mod snapshot;

pub use http::{
    HEADER_READ_TIMEOUT, MAX_CONNECTION_LIFETIME, MAX_CONNECTIONS, MAX_REQUEST_HEAD_BYTES,
    SHUTDOWN_GRACE, SnapshotFn, serve_http,
};
pub use listen::{MetricsError, check_listen};
pub use render::{CONTENT_TYPE, control_result, render};
pub use snapshot::{GpuMetrics, MetricsSnapshot};
