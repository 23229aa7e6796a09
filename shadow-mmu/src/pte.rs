//! Page-table entries: what a guest entry points at, and the validated
//! entry that alone may be programmed into the physical MMU.

use std::fmt;

use crate::addr::{Iova, PageSize, VramOffset};

/// Where a page-table entry points: into the vGPU's own VRAM slice, or into
/// guest memory (system memory, reached through a DMA window).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PteTarget {
    /// An offset into the vGPU's VRAM slice.
    Vram(VramOffset),
    /// A guest I/O virtual address.
    System(Iova),
}

impl fmt::Display for PteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PteTarget::Vram(offset) => write!(f, "VRAM {offset}"),
            PteTarget::System(iova) => write!(f, "IOVA {iova}"),
        }
    }
}

/// The access an entry grants. Reads are always allowed: an entry that
/// grants nothing is simply not present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Permissions {
    /// The GPU may write through the entry.
    pub writable: bool,
}

/// A page-table entry that passed the policy ([`crate::validate`]): its
/// whole page lies in memory the vGPU owns, with the permissions it grants.
///
/// It has no public constructor, so a [`crate::PhysicalMmu`] can only ever
/// be handed entries that the policy accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShadowPte {
    target: PteTarget,
    size: PageSize,
    permissions: Permissions,
}

impl ShadowPte {
    /// Only the policy builds entries, after checking them.
    pub(crate) fn new(target: PteTarget, size: PageSize, permissions: Permissions) -> Self {
        Self {
            target,
            size,
            permissions,
        }
    }

    /// The first byte of the mapped page.
    pub fn target(&self) -> PteTarget {
        self.target
    }

    /// The size of the mapped page.
    pub fn size(&self) -> PageSize {
        self.size
    }

    /// The access the entry grants.
    pub fn permissions(&self) -> Permissions {
        self.permissions
    }
}
