//! MMU faults: why a translation failed.

use std::fmt;

use shadow_mmu::{ContextId, GpuVa};
use thiserror::Error;

use super::access::Access;

/// Why the physical MMU refused an access. Only the reasons that exist at
/// this level: the shadow MMU turns entries that are invalid, point outside
/// what the vGPU owns, or were cut by the walk limit into absent pages, and
/// reports those reasons itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmuFaultReason {
    /// No page is mapped at the address (FAULT_INFO reason 1).
    NotPresent,
    /// A write to a page mapped read-only (FAULT_INFO reason 5).
    ReadOnly,
    /// The context does not exist: destroyed, or never created. This is a
    /// host bug rather than a guest one; the guest sees "not present",
    /// since nothing is mapped in a context that does not exist.
    UnknownContext,
}

impl fmt::Display for MmuFaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MmuFaultReason::NotPresent => "no page is mapped there",
            MmuFaultReason::ReadOnly => "the page is read-only",
            MmuFaultReason::UnknownContext => "the context does not exist",
        })
    }
}

/// An access the physical MMU refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
#[error("{access} at GPU VA {va} in {ctx} faulted: {reason}")]
pub struct MmuFault {
    /// The context the access was made in.
    pub ctx: ContextId,
    /// The faulting address.
    pub va: GpuVa,
    /// The kind of access.
    pub access: Access,
    /// Why it faulted.
    pub reason: MmuFaultReason,
}
