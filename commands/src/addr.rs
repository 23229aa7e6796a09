//! GPU virtual addresses as commands name them.
//!
//! A command's address fields are 64 bits wide on the wire, but the GPU MMU
//! translates only bits 47:0. [`GpuVa`] holds only addresses below 2^48, so
//! a decoded command can never carry one the MMU would have to truncate.

use std::fmt;

/// Width of a GPU virtual address: the page tables translate bits 47:0.
pub const GPU_VA_BITS: u32 = 48;

/// Size of the GPU virtual address space in bytes.
pub const GPU_VA_SPACE: u64 = 1 << GPU_VA_BITS;

/// A GPU virtual address inside the 48-bit space: what the engines issue,
/// translated by the GPU MMU of the channel's context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuVa(u64);

impl GpuVa {
    /// The address `va`, or `None` if it is at or above 2^48.
    pub const fn new(va: u64) -> Option<Self> {
        if va < GPU_VA_SPACE {
            Some(Self(va))
        } else {
            None
        }
    }

    /// The address `va` keeps below 2^48 (bits 63:48 dropped), for
    /// addresses the crate has already checked.
    pub(crate) const fn wrapping(va: u64) -> Self {
        Self(va & (GPU_VA_SPACE - 1))
    }

    /// The address as a number (always below 2^48).
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Whether the address is a multiple of `align` bytes (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }

    /// Whether the `bytes` bytes from this address all lie below 2^48.
    pub const fn fits(self, bytes: u64) -> bool {
        bytes <= GPU_VA_SPACE - self.0
    }

    /// The address `bytes` further on, or `None` if that leaves the
    /// 48-bit space.
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(va) => Self::new(va),
            None => None,
        }
    }
}

impl fmt::Display for GpuVa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl From<GpuVa> for u64 {
    fn from(va: GpuVa) -> u64 {
        va.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_below_2_pow_48_exist() {
        assert_eq!(
            GpuVa::new(GPU_VA_SPACE - 1).map(GpuVa::get),
            Some((1 << 48) - 1)
        );
        assert_eq!(GpuVa::new(GPU_VA_SPACE), None);
        assert_eq!(GpuVa::new(u64::MAX), None);
    }

    #[test]
    fn fits_counts_the_last_byte() {
        let va = GpuVa::new(GPU_VA_SPACE - 16).unwrap();
        assert!(va.fits(16));
        assert!(!va.fits(17));
        assert!(GpuVa::new(0).unwrap().fits(GPU_VA_SPACE));
        assert!(!GpuVa::new(1).unwrap().fits(u64::MAX));
    }

    #[test]
    fn checked_add_stays_in_the_space() {
        let va = GpuVa::new(GPU_VA_SPACE - 4).unwrap();
        assert_eq!(va.checked_add(3).map(GpuVa::get), Some(GPU_VA_SPACE - 1));
        assert_eq!(va.checked_add(4), None);
        assert_eq!(va.checked_add(u64::MAX), None);
    }

    #[test]
    fn alignment_and_display() {
        let va = GpuVa::new(0x1000).unwrap();
        assert!(va.is_aligned(4096));
        assert!(!GpuVa::new(0x1004).unwrap().is_aligned(8));
        assert_eq!(va.to_string(), "0x1000");
    }
}
