//! Which shadow entries point into guest memory, so that `DMA_UNMAP` can
//! revoke them before it is answered.
//!
//! The index is kept per 2 MiB chunk of GPU VA, one slot per 4 KiB page
//! holding the IOVA the page maps (a 2 MiB page fills slot 0 of its chunk).
//! Recording a page is O(1) amortised (the last chunk is remembered, since
//! walks report pages in VA order); clearing a VA range is O(log n) per
//! chunk; revoking an IOVA range scans every chunk, O(C × 512) for C chunks
//! (2 MiB of VA holding at least one system page each). A scan rather than
//! a reverse map keyed by IOVA because `DMA_UNMAP` is rare (QEMU maps guest
//! RAM once) while recording sits on the re-shadowing path, where a second
//! ordered map per page would cost more than the whole walk. VRAM pages are
//! not indexed: the slice never shrinks under a vGPU.

use std::collections::BTreeMap;

use crate::addr::{ContextId, GpuVa, Iova, PageSize, VaRange};
use crate::entry::ENTRIES_PER_TABLE;
use crate::leaf::ShadowRun;
use crate::pte::PteTarget;

const PRESENT: u64 = 1 << 0;
const LARGE: u64 = 1 << 1;
const PAGE_MASK: u64 = !0xfff;
const CHUNK_SHIFT: u32 = 21;

/// A chunk: one context's 2 MiB of GPU VA.
type ChunkKey = (ContextId, u64);

/// One indexed system page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SystemPage {
    pub ctx: ContextId,
    pub va: GpuVa,
    pub size: PageSize,
}

#[derive(Debug, Default)]
pub(crate) struct SystemIndex {
    chunks: BTreeMap<ChunkKey, usize>,
    /// Slot `s` holds entries `s * 512 .. (s + 1) * 512`: 0 for none, else
    /// the page's IOVA with PRESENT (and LARGE for a 2 MiB page).
    slots: Vec<u64>,
    /// Live entries per slot, to free a slot when it empties.
    live: Vec<u16>,
    free: Vec<usize>,
    /// The chunk the last record went to.
    last: Option<(ChunkKey, usize)>,
    pages: usize,
}

impl SystemIndex {
    /// Number of indexed pages.
    pub fn len(&self) -> usize {
        self.pages
    }

    /// Notes that `va` in `ctx` now maps the `size` page at `iova`.
    #[cfg(test)]
    pub fn record(&mut self, ctx: ContextId, va: GpuVa, iova: Iova, size: PageSize) {
        let slot = self.slot(ctx, va.0 >> CHUNK_SHIFT);
        self.write(slot, va, iova, size);
    }

    /// Notes every system page of `run`. A run comes from one table, so
    /// its pages share one chunk (a 2 MiB page is a run of one): the chunk
    /// is looked up once and its cells written in one loop.
    #[inline]
    pub fn record_run(&mut self, ctx: ContextId, run: &ShadowRun<'_>) {
        let (system, addresses) = run.addresses();
        if !system || run.is_empty() {
            return;
        }
        let first = run.va().0;
        let last = first + (run.len() as u64 - 1) * run.size().bytes();
        let chunk = first >> CHUNK_SHIFT;
        if last >> CHUNK_SHIFT != chunk {
            // Not from one table; exact, if slower.
            for (va, pte) in run.iter() {
                if let PteTarget::System(iova) = pte.target() {
                    let slot = self.slot(ctx, va.0 >> CHUNK_SHIFT);
                    self.write(slot, va, iova, run.size());
                }
            }
            return;
        }
        let flags = match run.size() {
            PageSize::Size4KiB => PRESENT,
            PageSize::Size2MiB => PRESENT | LARGE,
        };
        let key = (ctx, chunk);
        if run.len() == ENTRIES_PER_TABLE && self.lookup(key).is_none() {
            // A whole level-1 table into a new chunk (what every build and
            // re-shadow of 4 KiB pages does): every cell is written, so the
            // slot needs no zeroing first and every cell is new.
            let slot = self.allocate(key, false);
            self.last = Some((key, slot));
            let cells = &mut self.slots[slot * ENTRIES_PER_TABLE..(slot + 1) * ENTRIES_PER_TABLE];
            for (cell, address) in cells.iter_mut().zip(addresses) {
                *cell = address | flags;
            }
            self.count(slot, ENTRIES_PER_TABLE as u16);
            return;
        }
        let slot = self.slot(ctx, chunk);
        let start = slot * ENTRIES_PER_TABLE + ((first >> 12) as usize) % ENTRIES_PER_TABLE;
        let mut added = 0;
        // Consecutive 4 KiB pages take consecutive cells; a 2 MiB page
        // is alone in its run.
        for (cell, address) in self.slots[start..start + run.len()]
            .iter_mut()
            .zip(addresses)
        {
            added += u16::from(*cell == 0);
            *cell = address | flags;
        }
        self.count(slot, added);
    }

    /// Writes the cell of the page at `va` in `slot`.
    fn write(&mut self, slot: usize, va: GpuVa, iova: Iova, size: PageSize) {
        let index = ((va.0 >> 12) as usize) % ENTRIES_PER_TABLE;
        let flags = match size {
            PageSize::Size4KiB => PRESENT,
            PageSize::Size2MiB => PRESENT | LARGE,
        };
        let cell = &mut self.slots[slot * ENTRIES_PER_TABLE + index];
        let added = u16::from(*cell == 0);
        *cell = (iova.0 & PAGE_MASK) | flags;
        self.count(slot, added);
    }

    fn count(&mut self, slot: usize, added: u16) {
        self.live[slot] += added;
        self.pages += usize::from(added);
    }

    /// The slot of a chunk, if it has one.
    #[inline]
    fn lookup(&self, key: ChunkKey) -> Option<usize> {
        match self.last {
            Some((last, slot)) if last == key => Some(slot),
            _ => self.chunks.get(&key).copied(),
        }
    }

    /// The slot of `ctx`'s chunk, allocated if new.
    #[inline]
    fn slot(&mut self, ctx: ContextId, chunk: u64) -> usize {
        let key = (ctx, chunk);
        match self.last {
            Some((last, slot)) if last == key => slot,
            _ => {
                let slot = match self.chunks.get(&key) {
                    Some(&slot) => slot,
                    None => self.allocate(key, true),
                };
                self.last = Some((key, slot));
                slot
            }
        }
    }

    /// A slot for the new chunk `key`, its cells zeroed unless the caller
    /// writes every one of them (`zeroed` false).
    fn allocate(&mut self, key: ChunkKey, zeroed: bool) -> usize {
        let slot = match self.free.pop() {
            Some(slot) => {
                // Freed slots keep their cells until reused.
                if zeroed {
                    self.slots[slot * ENTRIES_PER_TABLE..(slot + 1) * ENTRIES_PER_TABLE].fill(0);
                }
                slot
            }
            None => {
                let slot = self.live.len();
                self.live.push(0);
                self.slots.resize((slot + 1) * ENTRIES_PER_TABLE, 0);
                slot
            }
        };
        self.chunks.insert(key, slot);
        slot
    }

    fn release(&mut self, key: ChunkKey, slot: usize) {
        self.chunks.remove(&key);
        self.pages -= usize::from(self.live[slot]);
        self.live[slot] = 0;
        self.free.push(slot);
        if self.last.is_some_and(|(last, _)| last == key) {
            self.last = None;
        }
    }

    /// Forgets every page of `ctx` in `range`, which must be 2 MiB aligned
    /// (the shadow builder only clears whole chunks).
    pub fn clear(&mut self, ctx: ContextId, range: VaRange) {
        let first = range.start().0 >> CHUNK_SHIFT;
        let end = range.end().div_ceil(1 << CHUNK_SHIFT);
        // One lookup per chunk rather than a list of them: a re-shadow
        // clears one chunk, and should not allocate to do it.
        while let Some((&key, &slot)) = self.chunks.range((ctx, first)..(ctx, end)).next() {
            self.release(key, slot);
        }
    }

    /// Forgets the page at `va` in `ctx`.
    pub fn remove(&mut self, ctx: ContextId, va: GpuVa) {
        let key = (ctx, va.0 >> CHUNK_SHIFT);
        let Some(&slot) = self.chunks.get(&key) else {
            return;
        };
        let index = ((va.0 >> 12) as usize) % ENTRIES_PER_TABLE;
        let cell = &mut self.slots[slot * ENTRIES_PER_TABLE + index];
        if *cell != 0 {
            *cell = 0;
            self.live[slot] -= 1;
            self.pages -= 1;
            if self.live[slot] == 0 {
                self.release(key, slot);
            }
        }
    }

    /// Every indexed page that overlaps the `len` bytes at `iova`.
    pub fn overlapping(&self, iova: Iova, len: u64) -> Vec<SystemPage> {
        let end = iova.0.saturating_add(len);
        let mut found = Vec::new();
        for (&(ctx, chunk), &slot) in &self.chunks {
            let cells = &self.slots[slot * ENTRIES_PER_TABLE..(slot + 1) * ENTRIES_PER_TABLE];
            for (index, &cell) in cells.iter().enumerate() {
                if cell == 0 {
                    continue;
                }
                let size = if cell & LARGE != 0 {
                    PageSize::Size2MiB
                } else {
                    PageSize::Size4KiB
                };
                let page = cell & PAGE_MASK;
                if page < end && iova.0 < page.saturating_add(size.bytes()) {
                    found.push(SystemPage {
                        ctx,
                        va: GpuVa((chunk << CHUNK_SHIFT) | ((index as u64) << 12)),
                        size,
                    });
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf::LeafRun;

    const CTX: ContextId = ContextId(1);
    const SMALL: PageSize = PageSize::Size4KiB;

    fn range(start: u64, len: u64) -> VaRange {
        VaRange::new(GpuVa(start), len).unwrap()
    }

    #[test]
    fn overlapping_finds_pages_whose_target_touches_the_range() {
        let mut index = SystemIndex::default();
        index.record(CTX, GpuVa(0x1000), Iova(0x10_0000), SMALL);
        index.record(CTX, GpuVa(0x2000), Iova(0x10_1000), SMALL);
        index.record(
            ContextId(2),
            GpuVa(0x40_0000),
            Iova(0x20_0000),
            PageSize::Size2MiB,
        );
        let hits = index.overlapping(Iova(0x10_1800), 0x10_0000);
        assert_eq!(
            hits,
            vec![
                SystemPage {
                    ctx: CTX,
                    va: GpuVa(0x2000),
                    size: SMALL
                },
                SystemPage {
                    ctx: ContextId(2),
                    va: GpuVa(0x40_0000),
                    size: PageSize::Size2MiB
                },
            ]
        );
    }

    #[test]
    fn clear_forgets_only_the_context_and_range_given() {
        let mut index = SystemIndex::default();
        index.record(CTX, GpuVa(0x1000), Iova(0), SMALL);
        index.record(CTX, GpuVa(0x20_0000), Iova(0), SMALL);
        index.record(ContextId(2), GpuVa(0x1000), Iova(0), SMALL);
        index.clear(CTX, range(0, 0x20_0000));
        assert_eq!(index.len(), 2);
        let hits = index.overlapping(Iova(0), 0x1000);
        assert_eq!(hits.len(), 2);
        assert!(!hits.contains(&SystemPage {
            ctx: CTX,
            va: GpuVa(0x1000),
            size: SMALL
        }));
    }

    #[test]
    fn removing_the_last_page_of_a_chunk_frees_it_for_reuse() {
        let mut index = SystemIndex::default();
        index.record(CTX, GpuVa(0x1000), Iova(0x5000), SMALL);
        index.remove(CTX, GpuVa(0x1000));
        assert_eq!(index.len(), 0);
        assert!(index.chunks.is_empty());
        index.record(CTX, GpuVa(0x80_0000), Iova(0x6000), SMALL);
        assert_eq!(index.live.len(), 1, "the freed slot is reused");
        assert_eq!(index.overlapping(Iova(0x5000), 0x1000), vec![]);
    }

    #[test]
    fn a_run_across_a_chunk_boundary_is_indexed_page_by_page() {
        let system = crate::entry::PTE_VALID | crate::entry::PTE_SYSTEM;
        let entries = [(0x5000 | system).to_le(), (0x6000 | system).to_le()];
        let run = LeafRun::new(0x1f_f000, SMALL, &entries, true);
        let mut index = SystemIndex::default();
        index.record_run(CTX, &ShadowRun::new(run));
        assert_eq!(index.len(), 2);
        assert_eq!(index.chunks.len(), 2);
        let hits = index.overlapping(Iova(0x6000), 0x1000);
        assert_eq!(
            hits,
            vec![SystemPage {
                ctx: CTX,
                va: GpuVa(0x20_0000),
                size: SMALL
            }]
        );
    }

    #[test]
    fn a_slot_freed_by_a_whole_table_holds_no_stale_pages_when_reused() {
        let system = crate::entry::PTE_VALID | crate::entry::PTE_SYSTEM;
        let entries: Vec<u64> = (0..ENTRIES_PER_TABLE as u64)
            .map(|n| ((0x100_0000 + (n << 12)) | system).to_le())
            .collect();
        let mut index = SystemIndex::default();
        let whole = LeafRun::new(0x20_0000, SMALL, &entries, true);
        index.record_run(CTX, &ShadowRun::new(whole));
        assert_eq!(index.len(), ENTRIES_PER_TABLE);
        assert_eq!(index.overlapping(Iova(0x110_0000), 0x1000).len(), 1);
        index.clear(CTX, range(0x20_0000, 0x20_0000));
        // The freed slot, reused by a run of one page and by a whole
        // table: only what each records is there.
        let one = LeafRun::new(0x40_0000, SMALL, &entries[3..4], true);
        index.record_run(CTX, &ShadowRun::new(one));
        assert_eq!(index.live.len(), 1, "the freed slot is reused");
        assert_eq!(index.len(), 1);
        assert_eq!(index.overlapping(Iova(0x100_0000), 0x20_0000).len(), 1);
        index.clear(CTX, range(0x40_0000, 0x20_0000));
        let whole = LeafRun::new(0x60_0000, SMALL, &entries, true);
        index.record_run(CTX, &ShadowRun::new(whole));
        assert_eq!(index.len(), ENTRIES_PER_TABLE);
        assert_eq!(
            index.overlapping(Iova(0x100_3000), 0x1000),
            vec![SystemPage {
                ctx: CTX,
                va: GpuVa(0x60_3000),
                size: SMALL
            }]
        );
    }

    #[test]
    fn a_vram_run_is_not_indexed() {
        let entries = [(0x5000 | crate::entry::PTE_VALID).to_le()];
        let run = LeafRun::new(0, SMALL, &entries, true);
        let mut index = SystemIndex::default();
        index.record_run(CTX, &ShadowRun::new(run));
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn recording_a_page_twice_counts_it_once() {
        let mut index = SystemIndex::default();
        index.record(CTX, GpuVa(0x1000), Iova(0x5000), SMALL);
        index.record(CTX, GpuVa(0x1000), Iova(0x7000), SMALL);
        assert_eq!(index.len(), 1);
        assert_eq!(index.overlapping(Iova(0x5000), 0x1000), vec![]);
    }
}
