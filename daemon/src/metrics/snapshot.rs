//! The figures one scrape reports, read from the registry in one go.

use std::time::Duration;

use crate::control::protocol::VgpuStatsEntry;

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Time since the daemon started.
    pub uptime: Duration,
    /// File descriptors the daemon has open.
    pub open_fds: u64,
    /// Control connections open now.
    pub control_connections: u64,
    /// Control requests answered since start-up, by command name
    /// (unknown commands count under "unknown").
    pub control_requests: Vec<(String, u64)>,
    /// Control requests that failed since start-up, by error kind.
    pub control_errors: Vec<(String, u64)>,
    pub gpus: Vec<GpuMetrics>,
    /// Every running vGPU.
    pub vgpus: Vec<VgpuStatsEntry>,
}

/// One physical GPU.
#[derive(Debug, Clone, Default)]
pub struct GpuMetrics {
    pub id: String,
    pub backend: String,
    pub vram_bytes: u64,
    pub vram_free_bytes: u64,
    /// Running vGPUs on it.
    pub vgpus: u64,
    /// Of those, with a client attached.
    pub vgpus_attached: u64,
}
