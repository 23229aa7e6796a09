//! What an engine access is and where it lands.

use std::fmt;

use shadow_mmu::{Iova, PteTarget, VramOffset};

/// The kind of memory access an engine makes through the MMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A read: allowed by every present page.
    Read,
    /// A write: allowed only by writable pages.
    Write,
}

impl Access {
    /// Whether this is a write.
    pub fn is_write(self) -> bool {
        self == Access::Write
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Read => f.write_str("read"),
            Access::Write => f.write_str("write"),
        }
    }
}

/// Where a translated access lands: a byte in the vGPU's VRAM slice, or a
/// byte of guest memory, addressed as the VMM mapped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PhysicalAddress {
    /// A VRAM address: an offset in the context's partition as its tables
    /// hold it ([`SimMmu::translate`](super::SimMmu::translate)), a
    /// physical VRAM address once the partition's base is applied
    /// ([`PartitionMmu::translate`](super::PartitionMmu::translate)).
    Vram(VramOffset),
    /// A guest I/O virtual address, reached through the vGPU's DMA windows.
    System(Iova),
}

impl PhysicalAddress {
    /// The address `bytes` further on in the same address space, or `None`
    /// if that overflows.
    pub fn checked_add(self, bytes: u64) -> Option<Self> {
        match self {
            PhysicalAddress::Vram(offset) => offset.checked_add(bytes).map(PhysicalAddress::Vram),
            PhysicalAddress::System(iova) => iova.checked_add(bytes).map(PhysicalAddress::System),
        }
    }
}

impl From<PteTarget> for PhysicalAddress {
    fn from(target: PteTarget) -> Self {
        match target {
            PteTarget::Vram(offset) => PhysicalAddress::Vram(offset),
            PteTarget::System(iova) => PhysicalAddress::System(iova),
        }
    }
}

impl fmt::Display for PhysicalAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhysicalAddress::Vram(offset) => write!(f, "VRAM {offset}"),
            PhysicalAddress::System(iova) => write!(f, "IOVA {iova}"),
        }
    }
}

/// The right to address memory physically, bypassing the MMU.
///
/// Real GPUs have physical addressing forms, used by their kernel drivers
/// for page tables and context images; the simulated GPU has them too
/// (DESIGN.md, "The isolation contract": the privileged forms make the
/// validator real). An access that bypasses the MMU carries this token,
/// and only this crate can make one: the engines that execute the daemon's
/// own privileged commands. Everything that starts from guest input —
/// register writes, command streams, page tables — reaches the GPU through
/// the daemon, the validator and the shadow MMU, none of which can hold a
/// `PrivilegedAccess`, so guest input can never address memory physically.
#[derive(Debug)]
pub struct PrivilegedAccess {
    _private: (),
}

impl PrivilegedAccess {
    /// Grants physical addressing to an engine of this crate.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the engines that issue privileged accesses land later"
        )
    )]
    pub(crate) fn grant() -> Self {
        PrivilegedAccess { _private: () }
    }
}
