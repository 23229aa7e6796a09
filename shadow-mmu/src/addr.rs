//! Addresses and indices of the MMU path, one newtype per address space so
//! that a GPU virtual address can never be used where a guest IOVA or a VRAM
//! offset is meant.

use std::fmt;

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
}
