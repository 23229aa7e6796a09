//! Addresses and indices of the MMU path, one newtype per address space so
//! that a GPU virtual address can never be used where a guest IOVA or a VRAM
//! offset is meant.

use std::fmt;

use thiserror::Error;

macro_rules! address_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// The address `bytes` further on, or `None` if that overflows.
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(addr) => Some(Self(addr)),
                    None => None,
                }
            }

            /// Whether the address is a multiple of `size`'s page size.
            pub const fn is_aligned(self, size: PageSize) -> bool {
                self.0 % size.bytes() == 0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_newtype!(
    /// A GPU virtual address: what the GPU's engines issue, translated by
    /// the GPU MMU through the page tables of one context.
    GpuVa
);
address_newtype!(
    /// An I/O virtual address: guest memory as the VMM mapped it for the
    /// vGPU with vfio-user `DMA_MAP`.
    Iova
);
address_newtype!(
    /// A byte offset into the vGPU's own VRAM slice (0 is the slice's first
    /// byte, not the physical GPU's).
    VramOffset
);

/// A hardware context of the physical GPU: one set of page tables. Each
/// channel of a vGPU runs in a context that only that vGPU's tables fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContextId(pub u32);

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "context {}", self.0)
    }
}

/// The page sizes one page-table entry can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by a last-level entry.
    Size4KiB,
    /// 2 MiB, mapped by a large-page entry one level up.
    Size2MiB,
}

impl PageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4KiB => 4 << 10,
            PageSize::Size2MiB => 2 << 20,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageSize::Size4KiB => f.write_str("4 KiB"),
            PageSize::Size2MiB => f.write_str("2 MiB"),
        }
    }
}

/// Width of a GPU virtual address: the page tables translate bits 47:0.
pub const GPU_VA_BITS: u32 = 48;

/// Size of the GPU virtual address space in bytes.
pub const GPU_VA_SPACE: u64 = 1 << GPU_VA_BITS;

/// A range of GPU virtual addresses that was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum VaRangeError {
    /// The start is not 4 KiB aligned.
    #[error("GPU VA {0} is not 4 KiB aligned")]
    Misaligned(GpuVa),
    /// The length is 0 or not a multiple of 4 KiB.
    #[error("{0:#x} bytes is not a non-zero multiple of 4 KiB")]
    BadLength(u64),
    /// The range runs past the 48-bit address space.
    #[error("{len:#x} bytes at GPU VA {start} run past the {GPU_VA_BITS}-bit address space")]
    OutOfRange {
        /// First address of the range.
        start: GpuVa,
        /// Length of the range in bytes.
        len: u64,
    },
}

/// A non-empty, 4 KiB-aligned range of GPU virtual addresses inside the
/// 48-bit address space: what an invalidation names (`INV_VA`, `INV_SIZE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VaRange {
    start: u64,
    end: u64,
}

impl VaRange {
    /// The whole address space.
    pub const ALL: VaRange = VaRange {
        start: 0,
        end: GPU_VA_SPACE,
    };

    /// The `len` bytes from `start`.
    pub fn new(start: GpuVa, len: u64) -> Result<Self, VaRangeError> {
        if !start.is_aligned(PageSize::Size4KiB) {
            return Err(VaRangeError::Misaligned(start));
        }
        if len == 0 || !len.is_multiple_of(PageSize::Size4KiB.bytes()) {
            return Err(VaRangeError::BadLength(len));
        }
        match start.0.checked_add(len) {
            Some(end) if end <= GPU_VA_SPACE => Ok(Self {
                start: start.0,
                end,
            }),
            _ => Err(VaRangeError::OutOfRange { start, len }),
        }
    }

    /// First address of the range.
    pub const fn start(&self) -> GpuVa {
        GpuVa(self.start)
    }

    /// One past the last address of the range.
    pub const fn end(&self) -> u64 {
        self.end
    }

    /// Length of the range in bytes (never 0).
    pub const fn size(&self) -> u64 {
        self.end - self.start
    }

    /// The smallest range of whole `size` pages that covers this one.
    pub const fn align_out(&self, size: PageSize) -> VaRange {
        let page = size.bytes();
        // Both bounds stay inside the address space, which is a whole
        // number of pages of either size.
        VaRange {
            start: self.start / page * page,
            end: self.end.div_ceil(page) * page,
        }
    }

    /// Whether `va` lies in the range.
    pub const fn contains(&self, va: GpuVa) -> bool {
        self.start <= va.0 && va.0 < self.end
    }
}

impl fmt::Display for VaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GPU VA {:#x}..{:#x}", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_4_kib_and_2_mib() {
        assert_eq!(PageSize::Size4KiB.bytes(), 4096);
        assert_eq!(PageSize::Size2MiB.bytes(), 2 * 1024 * 1024);
    }

    #[test]
    fn checked_add_refuses_overflow() {
        assert_eq!(Iova(u64::MAX - 1).checked_add(1), Some(Iova(u64::MAX)));
        assert_eq!(Iova(u64::MAX).checked_add(1), None);
    }

    #[test]
    fn alignment_follows_the_page_size() {
        assert!(GpuVa(0x20_0000).is_aligned(PageSize::Size2MiB));
        assert!(!GpuVa(0x1000).is_aligned(PageSize::Size2MiB));
        assert!(GpuVa(0x1000).is_aligned(PageSize::Size4KiB));
        assert!(!GpuVa(0x1001).is_aligned(PageSize::Size4KiB));
    }

    #[test]
    fn addresses_display_in_hex() {
        assert_eq!(VramOffset(0x1000).to_string(), "0x1000");
    }

    #[test]
    fn va_range_takes_aligned_ranges_inside_the_address_space() {
        let range = VaRange::new(GpuVa(0x1000), 0x2000).unwrap();
        assert_eq!(range.start(), GpuVa(0x1000));
        assert_eq!(range.end(), 0x3000);
        assert_eq!(range.size(), 0x2000);
        assert_eq!(VaRange::new(GpuVa(0), GPU_VA_SPACE), Ok(VaRange::ALL));
    }

    #[test]
    fn va_range_refuses_misaligned_empty_and_overlong_ranges() {
        assert_eq!(
            VaRange::new(GpuVa(0x1001), 0x1000),
            Err(VaRangeError::Misaligned(GpuVa(0x1001)))
        );
        assert_eq!(VaRange::new(GpuVa(0), 0), Err(VaRangeError::BadLength(0)));
        assert_eq!(
            VaRange::new(GpuVa(0), 0x1800),
            Err(VaRangeError::BadLength(0x1800))
        );
        assert!(matches!(
            VaRange::new(GpuVa(GPU_VA_SPACE - 0x1000), 0x2000),
            Err(VaRangeError::OutOfRange { .. })
        ));
        assert!(matches!(
            VaRange::new(GpuVa(0x1000), u64::MAX - 0xfff),
            Err(VaRangeError::OutOfRange { .. })
        ));
    }

    #[test]
    fn va_range_aligns_out_to_whole_pages() {
        let range = VaRange::new(GpuVa(0x20_1000), 0x1000).unwrap();
        let out = range.align_out(PageSize::Size2MiB);
        assert_eq!((out.start(), out.end()), (GpuVa(0x20_0000), 0x40_0000));
        let top = VaRange::new(GpuVa(GPU_VA_SPACE - 0x1000), 0x1000).unwrap();
        assert_eq!(top.align_out(PageSize::Size2MiB).end(), GPU_VA_SPACE);
    }
}
