//! What a device access asks its owner to do.
//!
//! The device model never signals an eventfd or touches guest memory
//! itself: an access returns [`Effects`], and the owner (the daemon) raises
//! the vectors through its interrupt routing and performs the DMA, then
//! reports back with [`VgpuDevice::complete_dma`](crate::VgpuDevice::complete_dma).

/// Side effects of a device access, for the owner to apply.
///
/// Plain data, no allocation: it is returned on the trapped-access fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    /// Bitmap of interrupt vectors the device raises: bit `v` set means
    /// "raise vector `v`" (vector 0 is the device vector, 1 + n channel n).
    pub vectors: u64,
    /// A DMA copy the owner must perform, then complete with
    /// [`VgpuDevice::complete_dma`](crate::VgpuDevice::complete_dma).
    pub dma: Option<DmaRequest>,
}

impl Effects {
    /// Nothing to do.
    pub const NONE: Effects = Effects {
        vectors: 0,
        dma: None,
    };

    /// Effects that raise exactly `vector`; vectors past 63 do not exist
    /// and raise nothing.
    pub fn vector(vector: u32) -> Effects {
        Effects {
            vectors: 1u64.checked_shl(vector).unwrap_or(0),
            dma: None,
        }
    }

    /// True when the owner has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.vectors == 0 && self.dma.is_none()
    }

    /// Combines the effects of two accesses made in order: vectors are
    /// united, and a DMA request of `later` wins over one of `self` (a single
    /// access can start at most one DMA, so this only matters for callers
    /// that batch several accesses before applying them).
    #[must_use]
    pub fn merge(self, later: Effects) -> Effects {
        Effects {
            vectors: self.vectors | later.vectors,
            dma: later.dma.or(self.dma),
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
        };
        let merged = first.merge(Effects::vector(1));
        assert_eq!(merged.vectors, 0b11);
        assert_eq!(merged.dma, Some(dma));
        assert!(!merged.is_empty());
        assert!(Effects::NONE.is_empty());
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
            dma: None,
        };
        assert_eq!(effects.raised_vectors().collect::<Vec<_>>(), vec![0, 3]);
    }
}
