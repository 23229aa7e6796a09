//! What a vGPU counts since it was created (metrics).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one vGPU. Relaxed atomics: each is a tally read on its own.
#[derive(Debug, Default)]
pub struct VgpuStats {
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
}

impl VgpuStats {
    /// Adds `n` to `counter`.
    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
