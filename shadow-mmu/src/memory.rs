//! How the walker reads guest-owned memory.
//!
//! Guest page tables live where the guest put them: in its VRAM slice or in
//! guest RAM that the VMM mapped for the vGPU. The walker reads them through
//! these traits only, so it reaches exactly what the vGPU owns and nothing
//! else, and it stays testable with in-memory fakes. The daemon implements
//! [`GuestMemory`] over the vGPU's DMA windows (local mappings, or
//! `DMA_READ` requests to the client for windows that came without an fd)
//! and [`VramMemory`] over its VRAM slice.

use std::error::Error;

use thiserror::Error;

use crate::addr::{Iova, VramOffset};
use crate::pte::PteTarget;

/// A read of guest-owned memory that failed. The walker turns it into a
/// fault of the vGPU; it never reaches the physical MMU.
#[derive(Debug, Error)]
pub enum GuestMemoryError {
    /// Part of the range is not memory the vGPU owns (no DMA window covers
    /// the IOVA range, or the VRAM range runs past the slice).
    #[error("{len} bytes at {addr:#x} are not mapped for this vGPU")]
    NotMapped {
        /// First byte of the refused range, in its address space.
        addr: u64,
        /// Length of the refused range in bytes.
        len: u64,
    },
    /// The memory is mapped but reading it failed (e.g. the VMM refused a
    /// `DMA_READ` request).
    #[error("reading {len} bytes at {addr:#x} failed")]
    Access {
        /// First byte of the range, in its address space.
        addr: u64,
        /// Length of the range in bytes.
        len: u64,
        /// Why the backend could not read it.
        #[source]
        source: Box<dyn Error + Send + Sync + 'static>,
    },
}

/// Guest memory as the VMM mapped it for the vGPU, addressed by IOVA.
pub trait GuestMemory {
    /// Fills `buf` from guest memory starting at `addr`. On error `buf`'s
    /// contents are unspecified.
    fn read(&self, addr: Iova, buf: &mut [u8]) -> Result<(), GuestMemoryError>;
}

/// The vGPU's VRAM slice, addressed by offset into the slice.
pub trait VramMemory {
    /// Fills `buf` from the slice starting at `offset`. On error `buf`'s
    /// contents are unspecified.
    fn read(&self, offset: VramOffset, buf: &mut [u8]) -> Result<(), GuestMemoryError>;
}

/// Both places a page table can live, read by [`PteTarget`]: a directory
/// entry names its next-level table exactly as a leaf entry names a page,
/// so the walker follows both with one call.
#[derive(Debug)]
pub struct PageTableMemory<'a, G: ?Sized, V: ?Sized> {
    guest: &'a G,
    vram: &'a V,
}

impl<'a, G: GuestMemory + ?Sized, V: VramMemory + ?Sized> PageTableMemory<'a, G, V> {
    /// Combines a vGPU's guest memory and VRAM slice.
    pub fn new(guest: &'a G, vram: &'a V) -> Self {
        Self { guest, vram }
    }

    /// Fills `buf` from wherever `at` points.
    pub fn read(&self, at: PteTarget, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        match at {
            PteTarget::Vram(offset) => self.vram.read(offset, buf),
            PteTarget::System(iova) => self.guest.read(iova, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FlatMemory;

    #[test]
    fn page_table_memory_reads_the_space_the_target_names() {
        let guest = FlatMemory::from_bytes(vec![0x11; 16]);
        let vram = FlatMemory::from_bytes(vec![0x22; 16]);
        let memory = PageTableMemory::new(&guest, &vram);
        let mut buf = [0; 4];
        memory.read(PteTarget::System(Iova(4)), &mut buf).unwrap();
        assert_eq!(buf, [0x11; 4]);
        memory
            .read(PteTarget::Vram(VramOffset(4)), &mut buf)
            .unwrap();
        assert_eq!(buf, [0x22; 4]);
    }

    #[test]
    fn page_table_memory_passes_refusals_through() {
        let guest = FlatMemory::from_bytes(vec![0; 16]);
        let vram = FlatMemory::from_bytes(vec![0; 16]);
        let memory = PageTableMemory::new(&guest, &vram);
        let mut buf = [0; 8];
        let err = memory
            .read(PteTarget::Vram(VramOffset(12)), &mut buf)
            .unwrap_err();
        assert!(matches!(
            err,
            GuestMemoryError::NotMapped { addr: 12, len: 8 }
        ));
    }
}
