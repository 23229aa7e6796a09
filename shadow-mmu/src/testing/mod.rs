//! Test doubles for the seams, for this crate's tests, its benchmark and
//! fuzz target, and for anyone testing code built on it:
//!
//! - [`FlatMemory`]: a byte array that serves as guest memory (IOVA = index)
//!   or VRAM (offset = index), with a tally of the reads it served;
//! - [`FixedAllowed`]: a VRAM slice size and a list of DMA windows, with an
//!   independent [`FixedAllowed::owns`] check;
//! - [`RecordingMmu`]: a [`PhysicalMmu`] that keeps its entries in a
//!   `BTreeMap` and translates through them, strict about the calls it
//!   accepts (whole pages only, no overlapping maps) so that builder bugs
//!   show up as errors;
//! - [`TableBuilder`]: guest page tables laid out in those memories;
//! - [`reference`](mod@reference): a reference model that translates one
//!   VA straight from the tables;
//! - [`fuzz_page_tables`]: the harness of the `page_table_walker` fuzz
//!   target.

mod fuzz;
pub mod reference;
mod tables;

pub use fuzz::{
    FuzzOutcome, TABLES as FUZZ_TABLES, check_contained, check_reference, fuzz_page_tables,
};
pub use tables::{TableBuilder, TableSpace};

use std::cell::Cell;
use std::collections::BTreeMap;

use crate::addr::{ContextId, GPU_VA_SPACE, GpuVa, Iova, PageSize, VramOffset};
use crate::allowed::{AllowedSet, SystemWindow};
use crate::entry::GuestPte;
use crate::memory::{GuestMemory, GuestMemoryError, VramMemory};
use crate::mmu::{MmuError, PhysicalMmu};
use crate::pte::{Permissions, PteTarget, ShadowPte};

/// A flat byte array standing in for guest memory or VRAM, address 0 at
/// index 0. Reads past the end are refused as not mapped.
#[derive(Debug, Default)]
pub struct FlatMemory {
    bytes: Vec<u8>,
    reads: Cell<u64>,
    bytes_read: Cell<u64>,
}

impl FlatMemory {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        Self::from_bytes(vec![0; len])
    }

    /// The given bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            reads: Cell::new(0),
            bytes_read: Cell::new(0),
        }
    }

    /// The whole array.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the little-endian `value` at `addr`; returns false (and
    /// writes nothing) if it does not fit.
    pub fn write_u64(&mut self, addr: u64, value: u64) -> bool {
        let Some(slot) = usize::try_from(addr)
            .ok()
            .and_then(|start| self.bytes.get_mut(start..start.checked_add(8)?))
        else {
            return false;
        };
        slot.copy_from_slice(&value.to_le_bytes());
        true
    }

    /// Writes `pte` as entry `index` of the table at `table`.
    ///
    /// Panics if the entry does not encode or fit: test set-up only.
    pub fn write_entry(&mut self, table: u64, index: usize, pte: GuestPte) {
        let raw = pte.encode().expect("test entry encodes");
        assert!(
            self.write_u64(table + index as u64 * 8, raw),
            "test table fits"
        );
    }

    /// Read calls served (and refused) so far.
    pub fn reads(&self) -> u64 {
        self.reads.get()
    }

    /// Bytes of the read calls served (and refused) so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.get()
    }

    /// Zeroes the read tally.
    pub fn reset_tally(&self) {
        self.reads.set(0);
        self.bytes_read.set(0);
    }

    fn read_at(&self, addr: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.reads.set(self.reads.get() + 1);
        self.bytes_read
            .set(self.bytes_read.get() + buf.len() as u64);
        let bytes = usize::try_from(addr)
            .ok()
            .and_then(|start| self.bytes.get(start..start.checked_add(buf.len())?))
            .ok_or(GuestMemoryError::NotMapped {
                addr,
                len: buf.len() as u64,
            })?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

impl GuestMemory for FlatMemory {
    fn read(&self, addr: Iova, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.read_at(addr.0, buf)
    }
}

impl VramMemory for FlatMemory {
    fn read(&self, offset: VramOffset, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.read_at(offset.0, buf)
    }
}

/// A fixed allowed set: a slice size and non-overlapping windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FixedAllowed {
    /// Size of the VRAM slice in bytes.
    pub vram_size: u64,
    /// The DMA windows, which must not overlap.
    pub windows: Vec<SystemWindow>,
}

impl FixedAllowed {
    /// Whether the whole `size` page at `target` is owned with
    /// `permissions`, decided from the fields directly (not through
    /// [`crate::validate`], so that tests can check the one against the
    /// other).
    pub fn owns(&self, target: PteTarget, size: PageSize, permissions: Permissions) -> bool {
        let len = size.bytes();
        match target {
            PteTarget::Vram(offset) => {
                offset.0 % len == 0
                    && offset
                        .0
                        .checked_add(len)
                        .is_some_and(|end| end <= self.vram_size)
            }
            PteTarget::System(iova) => {
                iova.0 % len == 0
                    && self.windows.iter().any(|window| {
                        iova.0 >= window.iova.0
                            && iova
                                .0
                                .checked_add(len)
                                .zip(window.iova.0.checked_add(window.size))
                                .is_some_and(|(end, window_end)| end <= window_end)
                            && (window.writable || !permissions.writable)
                    })
            }
        }
    }
}

impl AllowedSet for FixedAllowed {
    fn vram_size(&self) -> u64 {
        self.vram_size
    }

    fn system_window(&self, iova: Iova) -> Option<SystemWindow> {
        self.windows
            .iter()
            .copied()
            .find(|window| window.contains(iova, 1))
    }
}

/// A [`PhysicalMmu`] that records its entries and translates through them.
#[derive(Debug, Default)]
pub struct RecordingMmu {
    entries: BTreeMap<(ContextId, u64), ShadowPte>,
    /// Calls to `map` so far.
    pub maps: u64,
    /// Calls to `unmap` so far.
    pub unmaps: u64,
    /// Calls to `invalidate` so far.
    pub invalidations: u64,
}

impl RecordingMmu {
    /// An MMU with no entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry, in (context, VA) order.
    pub fn entries(&self) -> impl Iterator<Item = (ContextId, GpuVa, &ShadowPte)> {
        self.entries
            .iter()
            .map(|(&(ctx, va), pte)| (ctx, GpuVa(va), pte))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry whose page holds `va` in `ctx`, with the page's VA.
    pub fn entry(&self, ctx: ContextId, va: GpuVa) -> Option<(GpuVa, &ShadowPte)> {
        let (&(found_ctx, start), pte) = self.entries.range(..=(ctx, va.0)).next_back()?;
        (found_ctx == ctx && va.0 - start < pte.size().bytes()).then_some((GpuVa(start), pte))
    }

    /// What `va` in `ctx` translates to: the address it reaches and the
    /// permission the page grants.
    pub fn translate(&self, ctx: ContextId, va: GpuVa) -> Option<(PteTarget, Permissions)> {
        let (start, pte) = self.entry(ctx, va)?;
        let within = va.0 - start.0;
        let target = match pte.target() {
            PteTarget::Vram(offset) => PteTarget::Vram(VramOffset(offset.0 + within)),
            PteTarget::System(iova) => PteTarget::System(Iova(iova.0 + within)),
        };
        Some((target, pte.permissions()))
    }

    /// Entries of `ctx` overlapping `[start, end)`.
    fn overlapping(&self, ctx: ContextId, start: u64, end: u64) -> Vec<(u64, PageSize)> {
        // A page starts at most 2 MiB before `start` and still overlaps it.
        let from = start.saturating_sub(PageSize::Size2MiB.bytes() - 1);
        self.entries
            .range((ctx, from)..(ctx, end))
            .filter(|&(&(_, va), pte)| va + pte.size().bytes() > start)
            .map(|(&(_, va), pte)| (va, pte.size()))
            .collect()
    }
}

fn backend(message: &str) -> MmuError {
    MmuError::Backend(message.into())
}

impl PhysicalMmu for RecordingMmu {
    fn map(
        &mut self,
        ctx: ContextId,
        va: GpuVa,
        size: PageSize,
        pte: &ShadowPte,
    ) -> Result<(), MmuError> {
        self.maps += 1;
        if !va.is_aligned(size) {
            return Err(MmuError::Misaligned { va, size });
        }
        let end = va.0 + size.bytes();
        if end > GPU_VA_SPACE {
            return Err(MmuError::OutOfRange {
                va,
                len: size.bytes(),
            });
        }
        if size != pte.size() {
            return Err(backend("page size differs from the entry's"));
        }
        let clash = self
            .overlapping(ctx, va.0, end)
            .into_iter()
            .any(|existing| existing != (va.0, size));
        if clash {
            return Err(backend("map overlaps a different mapping"));
        }
        self.entries.insert((ctx, va.0), *pte);
        Ok(())
    }

    fn unmap(&mut self, ctx: ContextId, va: GpuVa, len: u64) -> Result<(), MmuError> {
        self.unmaps += 1;
        if !va.is_aligned(PageSize::Size4KiB) || !len.is_multiple_of(PageSize::Size4KiB.bytes()) {
            return Err(MmuError::Misaligned {
                va,
                size: PageSize::Size4KiB,
            });
        }
        let end =
            va.0.checked_add(len)
                .filter(|&end| end <= GPU_VA_SPACE)
                .ok_or(MmuError::OutOfRange { va, len })?;
        let doomed = self.overlapping(ctx, va.0, end);
        if doomed
            .iter()
            .any(|&(start, size)| start < va.0 || start + size.bytes() > end)
        {
            return Err(backend("unmap splits a page"));
        }
        for (start, _) in doomed {
            self.entries.remove(&(ctx, start));
        }
        Ok(())
    }

    fn invalidate(&mut self, _ctx: ContextId) {
        self.invalidations += 1;
    }

    fn mapped_pages(
        &self,
        ctx: ContextId,
        va: GpuVa,
        len: u64,
        each: &mut dyn FnMut(GpuVa, &ShadowPte),
    ) -> Result<(), MmuError> {
        let end = va.0.saturating_add(len);
        for (&(_, start), pte) in self.entries.range((ctx, va.0)..(ctx, end)) {
            each(GpuVa(start), pte);
        }
        Ok(())
    }
}
