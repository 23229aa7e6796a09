//! What a device access asks its owner to do.
//!
//! The device model never signals an eventfd or touches guest memory
//! itself: an access returns [`Effects`], and the owner (the daemon) raises
//! the vectors through its interrupt routing and performs the DMA, then
//! reports back with [`VgpuDevice::complete_dma`](crate::VgpuDevice::complete_dma).
//! Likewise the GPU MMU: the device holds the registers, the owner walks
//! the guest's tables and programs the physical MMU ([`MmuRequest`]), and
//! reports faults and translations back ([`Fault`], [`Translation`]).

/// Side effects of a device access, for the owner to apply.
///
/// Plain data, no allocation: it is returned on the trapped-access fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    /// Bitmap of interrupt vectors the device raises: bit `v` set means
    /// "raise vector `v`" (vector 0 is the device vector, 1 + n channel n).
    pub vectors: u64,
    /// A DMA copy the device queued. The owner runs the device's queue
    /// oldest first ([`VgpuDevice::next_dma`](crate::VgpuDevice::next_dma))
    /// and completes each with
    /// [`VgpuDevice::complete_dma`](crate::VgpuDevice::complete_dma).
    pub dma: Option<DmaRequest>,
    /// An MMU operation the owner must carry out (a translation is then
    /// completed with
    /// [`VgpuDevice::complete_translate`](crate::VgpuDevice::complete_translate)).
    pub mmu: Option<MmuRequest>,
    /// Bitmap of channels whose doorbell was rung (RING_PUT written while
    /// running): the owner validates their new commands.
    pub doorbells: u64,
    /// Bitmap of channels reset (CONTROL.RESET): the owner drops their
    /// queued work and waits out what runs before it reports anything
    /// more of them.
    pub channel_resets: u64,
    /// Which control pages are watched may have changed (USERD written, a
    /// channel enabled or reset): the owner looks again.
    pub control_pages: bool,
}

impl Effects {
    /// Nothing to do.
    pub const NONE: Effects = Effects {
        vectors: 0,
        dma: None,
        mmu: None,
        doorbells: 0,
        channel_resets: 0,
        control_pages: false,
    };

    /// Effects that raise exactly `vector`; vectors past 63 do not exist
    /// and raise nothing.
    pub fn vector(vector: u32) -> Effects {
        Effects {
            vectors: 1u64.checked_shl(vector).unwrap_or(0),
            ..Effects::NONE
        }
    }

    /// Effects that say the watched control pages may have changed.
    pub const CONTROL_PAGES: Effects = Effects {
        control_pages: true,
        ..Effects::NONE
    };

    /// Effects that ring the doorbell of `channel`.
    pub fn doorbell(channel: u32) -> Effects {
        Effects {
            doorbells: 1u64.checked_shl(channel).unwrap_or(0),
            ..Effects::NONE
        }
    }

    /// Effects that report the reset of `channel`.
    pub fn channel_reset(channel: u32) -> Effects {
        Effects {
            channel_resets: 1u64.checked_shl(channel).unwrap_or(0),
            ..Effects::NONE
        }
    }

    /// True when the owner has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.vectors == 0
            && self.dma.is_none()
            && self.mmu.is_none()
            && self.doorbells == 0
            && self.channel_resets == 0
            && !self.control_pages
    }

    /// Combines the effects of two accesses made in order: vectors are
    /// united, and a DMA or MMU request of `later` wins over one of `self`
    /// (a single access makes at most one of each, so this only matters for
    /// callers that batch several accesses before applying them).
    #[must_use]
    pub fn merge(self, later: Effects) -> Effects {
        Effects {
            vectors: self.vectors | later.vectors,
            dma: later.dma.or(self.dma),
            mmu: later.mmu.or(self.mmu),
            doorbells: self.doorbells | later.doorbells,
            channel_resets: self.channel_resets | later.channel_resets,
            control_pages: self.control_pages || later.control_pages,
        }
    }

    /// Iterates over the raised vectors, lowest first.
    pub fn raised_vectors(&self) -> impl Iterator<Item = u32> + use<> {
        let bits = self.vectors;
        (0..64u32).filter(move |v| bits & (1u64 << v) != 0)
    }
}

/// Which way a DMA self-test copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaDirection {
    /// Guest memory (IOVA) → VRAM slice (`DMA_CONTROL` = 1).
    ToVram,
    /// VRAM slice → guest memory (IOVA) (`DMA_CONTROL` = 2).
    FromVram,
}

/// A DMA copy the guest started, already checked by the device for length
/// (1 ..= 1 MiB) and VRAM range (inside the slice). The owner still has to
/// check the IOVA range against the DMA maps and their permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRequest {
    /// Direction of the copy.
    pub direction: DmaDirection,
    /// Guest I/O virtual address of the first byte.
    pub iova: u64,
    /// Byte offset of the first byte in the VRAM slice.
    pub vram_offset: u64,
    /// Number of bytes to copy, 1 ..= [`DMA_MAX_LENGTH`](crate::bar2::DMA_MAX_LENGTH).
    pub len: u32,
}

/// Why the owner could not perform a [`DmaRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaFault {
    /// Part of the IOVA range is not covered by a DMA map (error code 4).
    NotMapped,
    /// A copy to guest memory hit a read-only map (error code 5).
    ReadOnly,
    /// The VMM refused or failed a DMA_READ/DMA_WRITE request (error code 6).
    Failed,
}

/// A GPU MMU operation the guest asked for through the registers, already
/// checked by the device: the channel exists, and an invalidated range is
/// 4 KiB aligned, non-empty and inside the 48-bit address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmuRequest {
    /// The channel's PT_ROOT was written (the guest writes PT_ROOT_LO, then
    /// PT_ROOT_HI; the write of PT_ROOT_HI commits both halves). `root` is
    /// a page-table entry for the level-4 table (address bits 51:12,
    /// SYSTEM, VALID), as written: the owner checks it like any entry. It
    /// also invalidates everything of the channel.
    SetRoot {
        /// The channel, below CHANNELS.
        channel: u32,
        /// PT_ROOT_HI:PT_ROOT_LO.
        root: u64,
    },
    /// INV_CONTROL with RANGE: re-read the channel's translations of
    /// `[va, va + size)` from the guest's tables on their next use.
    Invalidate {
        /// The channel, below CHANNELS.
        channel: u32,
        /// First GPU VA of the range, 4 KiB aligned.
        va: u64,
        /// Bytes, a non-zero multiple of 4 KiB.
        size: u64,
    },
    /// INV_CONTROL with ALL: re-read every translation of the channel.
    InvalidateAll {
        /// The channel, below CHANNELS.
        channel: u32,
    },
    /// XLATE_CONTROL: translate `va` through the physical MMU as an engine
    /// of the channel would, then report with
    /// [`VgpuDevice::complete_translate`](crate::VgpuDevice::complete_translate).
    Translate {
        /// The channel, below CHANNELS.
        channel: u32,
        /// The GPU VA to translate.
        va: u64,
        /// Translate for a write access (else a read).
        write: bool,
    },
}

/// Why a GPU MMU access faulted: the reason field of FAULT_INFO and the
/// value of XLATE_STATUS.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// No valid entry maps the address.
    NotPresent = 1,
    /// An entry on the walk has a reserved bit set, or LARGE outside
    /// level 2.
    InvalidEntry = 2,
    /// A page or table lies (partly) outside the VRAM slice.
    OutsideVram = 3,
    /// A system page or table is not inside one DMA map.
    NotMapped = 4,
    /// A write to a read-only page, or to a page in a read-only DMA map.
    ReadOnly = 5,
    /// The walk read more tables than the daemon allows.
    WalkLimit = 6,
}

/// A GPU MMU fault the owner reports with
/// [`VgpuDevice::record_fault`](crate::VgpuDevice::record_fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fault {
    /// The channel whose access faulted (FAULT_INFO keeps bits 5:0).
    pub channel: u32,
    /// The faulting GPU VA.
    pub va: u64,
    /// The access was a write.
    pub write: bool,
    /// Why it faulted.
    pub reason: FaultReason,
}

/// A successful translation, reported with
/// [`VgpuDevice::complete_translate`](crate::VgpuDevice::complete_translate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The page's address plus the VA's offset in it (XLATE_RESULT).
    pub address: u64,
    /// `address` is a guest physical address (IOVA); otherwise an offset
    /// in the VRAM slice (XLATE_TARGET 1 or 0).
    pub system: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_unites_vectors_and_keeps_the_later_dma() {
        let dma = DmaRequest {
            direction: DmaDirection::ToVram,
            iova: 0x1000,
            vram_offset: 0,
            len: 16,
        };
        let first = Effects {
            vectors: 0b01,
            dma: Some(dma),
            ..Effects::NONE
        };
        let merged = first.merge(Effects::vector(1));
        assert_eq!(merged.vectors, 0b11);
        assert_eq!(merged.dma, Some(dma));
        assert!(!merged.is_empty());
        assert!(Effects::NONE.is_empty());
    }

    #[test]
    fn doorbells_and_channel_resets_unite_and_are_work() {
        let merged = Effects::doorbell(3).merge(Effects::doorbell(5));
        assert_eq!(merged.doorbells, 0b10_1000);
        assert!(!merged.is_empty());
        assert!(!Effects::channel_reset(0).is_empty());
        assert_eq!(Effects::doorbell(64), Effects::NONE);
    }

    #[test]
    fn merge_keeps_the_later_mmu_request() {
        let set_root = MmuRequest::SetRoot {
            channel: 0,
            root: 1,
        };
        let invalidate = MmuRequest::InvalidateAll { channel: 1 };
        let first = Effects {
            mmu: Some(set_root),
            ..Effects::NONE
        };
        assert!(!first.is_empty());
        assert_eq!(first.merge(Effects::vector(0)).mmu, Some(set_root));
        let later = Effects {
            mmu: Some(invalidate),
            ..Effects::NONE
        };
        assert_eq!(first.merge(later).mmu, Some(invalidate));
    }

    #[test]
    fn vector_past_63_raises_nothing() {
        assert!(Effects::vector(64).is_empty());
        assert_eq!(Effects::vector(63).vectors, 1 << 63);
    }

    #[test]
    fn raised_vectors_lists_set_bits() {
        let effects = Effects {
            vectors: 0b1001,
            ..Effects::NONE
        };
        assert_eq!(effects.raised_vectors().collect::<Vec<_>>(), vec![0, 3]);
    }
}
