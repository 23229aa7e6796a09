//! What a vGPU counts since it was created (metrics).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one vGPU. Relaxed atomics: each is a tally read on its own.
#[derive(Debug, Default)]
pub struct VgpuStats {
    /// Emulated register reads (config space and BARs).
    pub register_reads: AtomicU64,
    /// Emulated register writes.
    pub register_writes: AtomicU64,
    /// DMA windows the client holds now (a gauge).
    pub dma_maps: AtomicU64,
    /// Bytes of guest memory in them (a gauge).
    pub dma_bytes: AtomicU64,
    /// Client messages refused.
    pub refusals: AtomicU64,
    /// GPU MMU accesses that faulted.
    pub mmu_faults: AtomicU64,
    /// Guest page-table entries the shadow MMU refused to program.
    pub refused_ptes: AtomicU64,
    /// Interrupts signalled to a trigger.
    pub interrupts: AtomicU64,
    /// Interrupts merged into ones the client had not consumed yet (its
    /// trigger was full).
    pub interrupts_coalesced: AtomicU64,
    /// Ring spans validated and queued for the engines.
    pub submissions: AtomicU64,
    /// Commands in them.
    pub commands: AtomicU64,
    /// Ring spans the validator refused (each stopped its channel).
    pub refused_submissions: AtomicU64,
    /// Engine time of past attachments: running, ns.
    pub engine_run_ns: AtomicU64,
    /// Waiting while it had work, ns.
    pub engine_wait_ns: AtomicU64,
    /// Without work, ns.
    pub engine_idle_ns: AtomicU64,
}

/// A vGPU's engine time (docs/scheduling.md, "Counters").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineTime {
    /// Its work ran, ns.
    pub run_ns: u64,
    /// It had work and waited for another vGPU (or, under a share policy,
    /// for its credit: it had had its share), ns.
    pub wait_ns: u64,
    /// It had no work, ns.
    pub idle_ns: u64,
}

impl VgpuStats {
    /// Adds `n` to `counter`.
    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds an attachment's final engine time.
    pub fn add_engine_time(&self, stats: &crate::SchedStats) {
        Self::count(&self.engine_run_ns, stats.run_ns);
        Self::count(&self.engine_wait_ns, stats.wait_ns);
        Self::count(&self.engine_idle_ns, stats.idle_ns);
    }

    /// Sets the DMA gauges to what `windows` holds.
    pub(crate) fn set_dma(&self, windows: &crate::DmaWindows) {
        self.dma_maps.store(windows.len() as u64, Ordering::Relaxed);
        self.dma_bytes
            .store(windows.window_bytes(), Ordering::Relaxed);
    }

    /// The value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
