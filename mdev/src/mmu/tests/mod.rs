//! Tests of the simulated MMU: translation and the TLB through the
//! [`PhysicalMmu`](shadow_mmu::PhysicalMmu) interface, and engine memory
//! accesses over real VRAM slices and DMA windows.

use shadow_mmu::{
    AllowedSet, Iova, PageSize, Permissions, PteTarget, ShadowPte, SystemWindow, VramOffset,
    validate,
};

mod engine;
mod translate;

/// Owns a 1 GiB VRAM slice and one writable window over the low 128 TiB of
/// IOVA space: the tests of the MMU itself want entries, not a policy.
struct OwnsEverything;

impl AllowedSet for OwnsEverything {
    fn vram_size(&self) -> u64 {
        1 << 30
    }

    fn system_window(&self, iova: Iova) -> Option<SystemWindow> {
        let window = SystemWindow {
            iova: Iova(0),
            size: 1 << 47,
            writable: true,
        };
        window.contains(iova, 1).then_some(window)
    }
}

fn pte(target: PteTarget, size: PageSize, writable: bool) -> ShadowPte {
    validate(target, size, Permissions { writable }, &OwnsEverything).unwrap()
}

/// A 4 KiB page at `offset` in VRAM.
pub(crate) fn vram_pte(offset: u64, writable: bool) -> ShadowPte {
    pte(
        PteTarget::Vram(VramOffset(offset)),
        PageSize::Size4KiB,
        writable,
    )
}

/// A 2 MiB page at `offset` in VRAM.
pub(crate) fn vram_pte_2m(offset: u64, writable: bool) -> ShadowPte {
    pte(
        PteTarget::Vram(VramOffset(offset)),
        PageSize::Size2MiB,
        writable,
    )
}

/// A 4 KiB page of guest memory at `iova`.
pub(crate) fn system_pte(iova: u64, writable: bool) -> ShadowPte {
    pte(PteTarget::System(Iova(iova)), PageSize::Size4KiB, writable)
}
