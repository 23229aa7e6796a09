//! What a guest can see of the device: config space and the BAR2
//! registers, read through [`VgpuDevice::read`] and kept for comparison.

use crate::VgpuDevice;
use crate::bar2::dispi::{DISPI_SLOTS, VGA_PORT_COUNT};
use crate::bar2::layout::*;
use crate::bar2::mmu::CHANNEL_FIELD;
use crate::edid::EDID_BLOCK_SIZE;
use crate::pci::config_space::STANDARD_CONFIG_SIZE;
use crate::region::RegionIndex;

/// Where a snapshot reads, as (region, offset, bytes): the standard header
/// of config space (extended space holds nothing), then the registers of
/// BAR2. The rest of BAR2, including the 24 bytes after each channel's
/// PT_ROOT, is reserved and reads 0 whatever the state, so leaving it out
/// loses nothing and saves most of the reads.
fn windows() -> impl Iterator<Item = (RegionIndex, u64, u64)> {
    let fixed = [
        (RegionIndex::CONFIG, 0, STANDARD_CONFIG_SIZE),
        (RegionIndex::BAR2, EDID_OFFSET, EDID_BLOCK_SIZE as u64),
        (RegionIndex::BAR2, VGA_PORTS_OFFSET, VGA_PORT_COUNT as u64),
        (RegionIndex::BAR2, DISPI_OFFSET, 2 * DISPI_SLOTS as u64),
        (RegionIndex::BAR2, QEXT_OFFSET, 8),
        (RegionIndex::BAR2, CONTROL_OFFSET, CONTROL_SIZE),
        (RegionIndex::BAR2, MSIX_TABLE_OFFSET, MSIX_TABLE_SIZE),
        (RegionIndex::BAR2, MSIX_PBA_OFFSET, MSIX_PBA_SIZE),
    ];
    let roots = (0..=CHANNEL_FIELD).map(|channel| (RegionIndex::BAR2, pt_root_offset(channel), 8));
    fixed.into_iter().chain(roots)
}

/// Every byte of config space and BAR2 that can hold state, as a guest
/// reads it: config space in one read, BAR2 eight bytes at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Snapshot(Vec<u8>);

impl Snapshot {
    pub fn take(device: &mut VgpuDevice) -> Snapshot {
        let mut bytes = Vec::with_capacity(2048);
        for (region, start, len) in windows() {
            let at = bytes.len();
            bytes.resize(at + len as usize, 0);
            let window = &mut bytes[at..];
            if region == RegionIndex::CONFIG {
                device
                    .read(region, start, window)
                    .expect("config space takes a whole read");
                continue;
            }
            for (offset, chunk) in (start..).step_by(8).zip(window.chunks_mut(8)) {
                device
                    .read(region, offset, chunk)
                    .expect("BAR2 takes aligned 8-byte reads");
            }
        }
        Snapshot(bytes)
    }

    /// The `len` bytes at `offset` of `region`.
    ///
    /// Panics if the snapshot does not hold them (a harness bug).
    pub fn bytes(&self, region: RegionIndex, offset: u64, len: usize) -> &[u8] {
        let mut at = 0;
        for (window_region, start, size) in windows() {
            let inside = offset
                .checked_sub(start)
                .filter(|&rel| window_region == region && rel + len as u64 <= size);
            if let Some(rel) = inside {
                return &self.0[at + rel as usize..][..len];
            }
            at += size as usize;
        }
        panic!("the snapshot does not hold {len} bytes at {offset:#x} of {region}");
    }

    /// The little-endian `u32` at `offset` of `region`.
    pub fn u32(&self, region: RegionIndex, offset: u64) -> u32 {
        let bytes = self.bytes(region, offset, 4);
        u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }

    /// The little-endian `u64` at `offset` of BAR2.
    pub fn bar2_u64(&self, offset: u64) -> u64 {
        let bytes = self.bytes(RegionIndex::BAR2, offset, 8);
        u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }

    /// Panics, naming the first byte that differs, unless `self` and
    /// `other` are the same.
    pub fn assert_same(&self, other: &Snapshot, what: &str) {
        // One comparison of the whole, not one per byte: the fuzzer traces
        // every comparison it sees.
        if self == other {
            return;
        }
        let Some(mut at) = self.0.iter().zip(&other.0).position(|(a, b)| a != b) else {
            return;
        };
        let (old, new) = (self.0[at], other.0[at]);
        for (region, start, len) in windows() {
            if at < len as usize {
                let offset = start + at as u64;
                panic!("{what} changed {region} at {offset:#x}: {old:#04x} became {new:#04x}");
            }
            at -= len as usize;
        }
    }
}
