//! What DMA windows may cost the daemon: a process-wide budget sized from
//! the system's limits, and each vGPU's allowance carved out of it.
//!
//! Every fd-backed window is a mapping of the daemon's, and the kernel
//! allows a process only `vm.max_map_count` mappings (65530 by default)
//! and one address space. Left to a single client, pipelined small
//! DMA_MAPs used up the mappings every other vGPU (and the daemon's own
//! thread stacks) needed, and a few maps of a huge sparse file used up the
//! address space. So each vGPU gets a fixed allowance of windows and of
//! mapped bytes when it is created, reserved from the process-wide budget
//! for as long as it exists: what one client does within its allowance
//! cannot take anything from another vGPU, and a vGPU that would not fit
//! is refused when it is created, with what is short.

use std::fmt;
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::bytesize::ByteSize;
use crate::sync::lock;

/// Mappings the daemon keeps for itself whatever the vGPUs hold: its
/// binary and libraries, the heap, the tokio runtime and control threads.
pub const BASE_RESERVED_MAPPINGS: u64 = 2048;
/// Mappings each vGPU costs besides its windows: its session thread's stack
/// and guard, its VRAM apertures (two while one is renewed), the session's
/// large buffers.
pub const MAPPINGS_PER_VGPU: u64 = 32;
/// Address space the daemon keeps for itself.
pub const BASE_RESERVED_BYTES: u64 = 64 << 30;
/// The user address space of an x86-64 process with 4-level page tables.
pub const USER_ADDRESS_SPACE: u64 = 1 << 47;
/// Where the kernel's mapping limit is read.
pub const MAX_MAP_COUNT_PATH: &str = "/proc/sys/vm/max_map_count";

/// What one vGPU's client may make the daemon hold in DMA windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DmaAllowance {
    /// Windows (DMA_MAPs in place at once), with or without an fd.
    pub windows: u64,
    /// Bytes of fd-backed windows mapped at once.
    pub mapped_bytes: u64,
}

impl DmaAllowance {
    /// No limit: for tests of the windows themselves.
    pub const UNLIMITED: DmaAllowance = DmaAllowance {
        windows: u64::MAX,
        mapped_bytes: u64::MAX,
    };
}

impl fmt::Display for DmaAllowance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} DMA windows and {} mapped",
            self.windows,
            ByteSize(self.mapped_bytes)
        )
    }
}

/// A vGPU that does not fit in what is left of the budget.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BudgetError {
    /// Not enough mappings are left.
    #[error(
        "not enough mappings for another vGPU's DMA windows: it needs {needed} ({windows} windows + {MAPPINGS_PER_VGPU} of its own), {left} of the {total} left for vGPUs are free (vm.max_map_count allows {max_map_count})"
    )]
    Mappings {
        /// Windows asked for.
        windows: u64,
        /// Mappings the vGPU would take.
        needed: u64,
        /// Mappings still free for vGPUs.
        left: u64,
        /// Mappings for vGPUs in all.
        total: u64,
        /// The kernel's limit the budget came from.
        max_map_count: u64,
    },
    /// Not enough address space is left.
    #[error(
        "not enough address space for another vGPU's DMA windows: it needs {needed}, {left} of the {total} left for vGPUs are free"
    )]
    AddressSpace {
        /// Bytes the vGPU would take.
        needed: ByteSize,
        /// Bytes still free.
        left: ByteSize,
        /// Bytes for vGPUs in all.
        total: ByteSize,
    },
}

/// The system limits a budget is sized from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemLimits {
    /// `vm.max_map_count`.
    pub max_map_count: u64,
    /// The address space the process may use (`RLIMIT_AS`, or the whole
    /// user address space when unlimited).
    pub address_space: u64,
}

impl SystemLimits {
    /// Reads the limits of this machine and process. A limit that cannot be
    /// read takes the kernel's default (65530 mappings) or the whole user
    /// address space.
    pub fn read() -> Self {
        let max_map_count = std::fs::read_to_string(MAX_MAP_COUNT_PATH)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(65530);
        let address_space = rustix::process::getrlimit(rustix::process::Resource::As)
            .current
            .map_or(USER_ADDRESS_SPACE, |limit| limit.min(USER_ADDRESS_SPACE));
        Self {
            max_map_count,
            address_space,
        }
    }
}

/// The process-wide budget for every vGPU's DMA windows. Share it with
/// `Arc`; allowances carved from it come back when their [`DmaGrant`]
/// drops.
#[derive(Debug)]
pub struct DmaBudget {
    limits: SystemLimits,
    /// Mappings and bytes for vGPUs in all.
    total: (u64, u64),
    /// Taken by live grants. A leaf lock.
    used: Mutex<(u64, u64)>,
}

impl DmaBudget {
    /// A budget of what `limits` leave once the daemon's own share is set
    /// aside.
    pub fn new(limits: SystemLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            total: (
                limits.max_map_count.saturating_sub(BASE_RESERVED_MAPPINGS),
                limits.address_space.saturating_sub(BASE_RESERVED_BYTES),
            ),
            used: Mutex::new((0, 0)),
        })
    }

    /// Reserves `allowance` for one vGPU whose VRAM apertures take
    /// `vram_bytes` of address space each (two at once while one is
    /// renewed), or says what is short.
    pub fn carve(
        self: &Arc<Self>,
        allowance: DmaAllowance,
        vram_bytes: u64,
    ) -> Result<DmaGrant, BudgetError> {
        let mappings = allowance.windows.saturating_add(MAPPINGS_PER_VGPU);
        let bytes = allowance
            .mapped_bytes
            .saturating_add(vram_bytes.saturating_mul(2));
        let mut used = lock(&self.used);
        let (total_maps, total_bytes) = self.total;
        let maps_left = total_maps.saturating_sub(used.0);
        if mappings > maps_left {
            return Err(BudgetError::Mappings {
                windows: allowance.windows,
                needed: mappings,
                left: maps_left,
                total: total_maps,
                max_map_count: self.limits.max_map_count,
            });
        }
        let bytes_left = total_bytes.saturating_sub(used.1);
        if bytes > bytes_left {
            return Err(BudgetError::AddressSpace {
                needed: ByteSize(bytes),
                left: ByteSize(bytes_left),
                total: ByteSize(total_bytes),
            });
        }
        used.0 += mappings;
        used.1 += bytes;
        Ok(DmaGrant {
            budget: Arc::clone(self),
            allowance,
            taken: (mappings, bytes),
        })
    }

    /// The limits the budget was sized from.
    pub fn limits(&self) -> SystemLimits {
        self.limits
    }
}

/// One vGPU's allowance, reserved from a [`DmaBudget`] until dropped.
#[derive(Debug)]
pub struct DmaGrant {
    budget: Arc<DmaBudget>,
    allowance: DmaAllowance,
    taken: (u64, u64),
}

impl DmaGrant {
    /// What the vGPU's client may hold.
    pub fn allowance(&self) -> DmaAllowance {
        self.allowance
    }
}

impl Drop for DmaGrant {
    fn drop(&mut self) {
        let mut used = lock(&self.budget.used);
        used.0 -= self.taken.0;
        used.1 -= self.taken.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn budget(max_map_count: u64, address_space: u64) -> Arc<DmaBudget> {
        DmaBudget::new(SystemLimits {
            max_map_count,
            address_space,
        })
    }

    fn allowance(windows: u64, mapped_bytes: u64) -> DmaAllowance {
        DmaAllowance {
            windows,
            mapped_bytes,
        }
    }

    #[test]
    fn grants_are_carved_until_the_mappings_run_out() {
        // 2048 for the daemon, then (1000 + 32) per vGPU: two fit in 4200.
        let budget = budget(2048 + 2 * 1032 + 100, u64::MAX);
        let a = budget.carve(allowance(1000, GIB), 0).unwrap();
        let _b = budget.carve(allowance(1000, GIB), 0).unwrap();
        let err = budget.carve(allowance(1000, GIB), 0).unwrap_err();
        assert_eq!(
            err,
            BudgetError::Mappings {
                windows: 1000,
                needed: 1032,
                left: 100,
                total: 2 * 1032 + 100,
                max_map_count: 2048 + 2 * 1032 + 100,
            }
        );
        assert!(err.to_string().contains("vm.max_map_count allows 4212"));
        drop(a);
        let again = budget.carve(allowance(1000, GIB), 0).unwrap();
        assert_eq!(again.allowance(), allowance(1000, GIB));
    }

    #[test]
    fn address_space_counts_windows_and_two_vram_apertures() {
        let budget = budget(u64::MAX, BASE_RESERVED_BYTES + 10 * GIB);
        let _a = budget.carve(allowance(1, 4 * GIB), GIB).unwrap();
        let err = budget.carve(allowance(1, 3 * GIB), GIB).unwrap_err();
        assert_eq!(
            err,
            BudgetError::AddressSpace {
                needed: ByteSize(5 * GIB),
                left: ByteSize(4 * GIB),
                total: ByteSize(10 * GIB),
            }
        );
        assert!(budget.carve(allowance(1, 2 * GIB), GIB).is_ok());
    }

    #[test]
    fn limits_below_the_daemon_reserve_leave_nothing() {
        let budget = budget(1000, GIB);
        assert!(matches!(
            budget.carve(allowance(0, 0), 0),
            Err(BudgetError::Mappings { total: 0, .. })
        ));
    }

    #[test]
    fn this_machine_has_limits() {
        let limits = SystemLimits::read();
        assert!(limits.max_map_count > 0);
        assert!(limits.address_space > 0 && limits.address_space <= USER_ADDRESS_SPACE);
    }
}
