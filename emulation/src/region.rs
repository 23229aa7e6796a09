//! The nine VFIO PCI regions of the device and the checks every access
//! passes before it reaches a register.

use std::fmt;
use std::ops::BitOr;

use crate::errno::EINVAL;

/// Number of regions a VFIO PCI device has (BAR0–BAR5, ROM, config, VGA).
pub const REGION_COUNT: u32 = 9;

/// Size of the PCI configuration space region, extended space included.
pub const CONFIG_SPACE_SIZE: u64 = 4096;

/// A VFIO PCI region index, validated to be one of the nine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionIndex(u32);

impl RegionIndex {
    /// BAR0: the VRAM aperture (served by the owner, not the device model).
    pub const BAR0: RegionIndex = RegionIndex(0);
    /// BAR1: unused.
    pub const BAR1: RegionIndex = RegionIndex(1);
    /// BAR2: the trapped register file.
    pub const BAR2: RegionIndex = RegionIndex(2);
    /// BAR3: unused.
    pub const BAR3: RegionIndex = RegionIndex(3);
    /// BAR4: unused.
    pub const BAR4: RegionIndex = RegionIndex(4);
    /// BAR5: unused.
    pub const BAR5: RegionIndex = RegionIndex(5);
    /// Expansion ROM: none.
    pub const ROM: RegionIndex = RegionIndex(6);
    /// PCI configuration space.
    pub const CONFIG: RegionIndex = RegionIndex(7);
    /// Legacy VGA ranges: none.
    pub const VGA: RegionIndex = RegionIndex(8);

    /// All regions, in index order.
    pub const ALL: [RegionIndex; REGION_COUNT as usize] = [
        Self::BAR0,
        Self::BAR1,
        Self::BAR2,
        Self::BAR3,
        Self::BAR4,
        Self::BAR5,
        Self::ROM,
        Self::CONFIG,
        Self::VGA,
    ];

    /// The raw VFIO index.
    pub fn raw(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for RegionIndex {
    type Error = AccessError;

    fn try_from(index: u32) -> Result<Self, AccessError> {
        if index < REGION_COUNT {
            Ok(RegionIndex(index))
        } else {
            Err(AccessError::NoSuchRegion(index))
        }
    }
}

impl fmt::Display for RegionIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0..=5 => write!(f, "BAR{}", self.0),
            6 => f.write_str("ROM"),
            7 => f.write_str("config"),
            _ => f.write_str("VGA"),
        }
    }
}

/// Region flags, bit-compatible with `VFIO_REGION_INFO_FLAG_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct RegionFlags(u32);

impl RegionFlags {
    /// No access.
    pub const NONE: RegionFlags = RegionFlags(0);
    /// `VFIO_REGION_INFO_FLAG_READ`.
    pub const READ: RegionFlags = RegionFlags(1);
    /// `VFIO_REGION_INFO_FLAG_WRITE`.
    pub const WRITE: RegionFlags = RegionFlags(2);
    /// `VFIO_REGION_INFO_FLAG_MMAP`.
    pub const MMAP: RegionFlags = RegionFlags(4);

    /// The raw flag bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// True when every flag of `other` is set in `self`.
    pub fn contains(self, other: RegionFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for RegionFlags {
    type Output = RegionFlags;

    fn bitor(self, rhs: RegionFlags) -> RegionFlags {
        RegionFlags(self.0 | rhs.0)
    }
}

/// What `VFIO_USER_DEVICE_GET_REGION_INFO` reports for a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Size in bytes; 0 for an absent region.
    pub size: u64,
    /// Access flags.
    pub flags: RegionFlags,
    /// True when the owner offers one sparse-mmap area covering the whole
    /// region (only BAR0, the VRAM aperture).
    pub mmap_whole: bool,
}

impl RegionInfo {
    /// An absent region.
    pub const ABSENT: RegionInfo = RegionInfo {
        size: 0,
        flags: RegionFlags::NONE,
        mmap_whole: false,
    };
}

/// Why a region access was refused. The region's state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The index names no VFIO PCI region.
    #[error("region index {0} is not one of the {REGION_COUNT} VFIO PCI regions")]
    NoSuchRegion(u32),
    /// The region exists but the device model does not serve it (BAR0: the
    /// owner serves VRAM from the slice).
    #[error("region {0} is not emulated by the device model")]
    NotEmulated(RegionIndex),
    /// The region has size 0.
    #[error("region {0} is absent")]
    EmptyRegion(RegionIndex),
    /// The access length is one the region does not take.
    #[error("{len}-byte access is not supported by region {region}")]
    BadLength {
        /// The region accessed.
        region: RegionIndex,
        /// The refused length in bytes.
        len: usize,
    },
    /// The access starts or ends outside the region.
    #[error("access of {len} bytes at {offset:#x} is outside region {region} ({size:#x} bytes)")]
    OutOfRange {
        /// The region accessed.
        region: RegionIndex,
        /// Offset of the first byte.
        offset: u64,
        /// Length in bytes.
        len: usize,
        /// The region's size.
        size: u64,
    },
    /// The access is not naturally aligned (BAR2).
    #[error("{len}-byte access at {offset:#x} of region {region} is not naturally aligned")]
    Misaligned {
        /// The region accessed.
        region: RegionIndex,
        /// Offset of the first byte.
        offset: u64,
        /// Length in bytes.
        len: usize,
    },
}

impl AccessError {
    /// The errno a VMM should receive: every refusal is `EINVAL`.
    pub fn errno(&self) -> i32 {
        EINVAL
    }
}

/// Checks that `len` bytes at `offset` lie inside a region of `size` bytes,
/// without overflowing for any input.
pub(crate) fn check_range(
    region: RegionIndex,
    offset: u64,
    len: usize,
    size: u64,
) -> Result<(), AccessError> {
    let out_of_range = AccessError::OutOfRange {
        region,
        offset,
        len,
        size,
    };
    let len64 = u64::try_from(len).map_err(|_| out_of_range)?;
    match offset.checked_add(len64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(out_of_range),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_index_accepts_the_nine_vfio_indices_only() {
        for raw in 0..REGION_COUNT {
            assert_eq!(RegionIndex::try_from(raw).unwrap().raw(), raw);
        }
        assert_eq!(RegionIndex::try_from(9), Err(AccessError::NoSuchRegion(9)));
        assert_eq!(RegionIndex::ALL[7], RegionIndex::CONFIG);
    }

    #[test]
    fn region_flags_match_vfio_bits() {
        let flags = RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP;
        assert_eq!(flags.bits(), 7);
        assert!(flags.contains(RegionFlags::MMAP));
        assert!(!RegionFlags::READ.contains(RegionFlags::WRITE));
    }

    #[test]
    fn range_check_survives_offsets_near_u64_max() {
        let region = RegionIndex::BAR2;
        assert!(check_range(region, u64::MAX, 1, 0x4000).is_err());
        assert!(check_range(region, u64::MAX - 3, 8, u64::MAX).is_err());
        assert!(check_range(region, 0x3ff8, 8, 0x4000).is_ok());
        assert!(check_range(region, 0x3ffc, 8, 0x4000).is_err());
    }
}
