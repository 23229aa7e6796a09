//! Which shadow entries point into guest memory, so that `DMA_UNMAP` can
//! revoke them before it is answered.
//!
//! The index is kept per 2 MiB chunk of GPU VA, one 32-bit cell per 4 KiB
//! page holding the page frame the page maps (a 2 MiB page fills cell 0 of
//! its chunk, and its chunk is marked large). Pages whose frame does not
//! fit a cell (IOVAs from 16 TiB up) are kept in a map of their own, so
//! the index is exact for every address the entry format can hold while
//! the common case writes 2 KiB per table rather than 4.
//!
//! Recording a page is O(1) amortised (the last chunk is remembered, since
//! walks report pages in VA order); clearing a VA range is O(log n) per
//! chunk; revoking an IOVA range scans every chunk, O(C × 512) for C chunks
//! (2 MiB of VA holding at least one system page each). A scan rather than
//! a reverse map keyed by IOVA because `DMA_UNMAP` is rare (QEMU maps guest
//! RAM once) while recording sits on the re-shadowing path, where a second
//! ordered map per page would cost more than the whole walk. VRAM pages are
//! not indexed: the slice never shrinks under a vGPU.
//!
//! A re-shadow forgets its range and records what the walk finds there,
//! most often the same chunks again. So [`SystemIndex::retire`] keeps the
//! range's chunks, emptied, for the walk to reuse without a map update, and
//! [`SystemIndex::release_retired`] frees those the walk did not refill.

use std::collections::BTreeMap;

use crate::addr::{ContextId, GpuVa, Iova, PageSize, VaRange};
use crate::entry::{ENTRIES_PER_TABLE, PTE_ADDRESS_MASK};
use crate::leaf::ShadowRun;
use crate::pte::PteTarget;

const CHUNK_SHIFT: u32 = 21;
const PAGE_SHIFT: u32 = 12;

/// A chunk: one context's 2 MiB of GPU VA (its number).
type ChunkKey = (ContextId, u64);

/// A page: one context's VA.
type PageKey = (ContextId, u64);

/// One indexed system page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SystemPage {
    pub ctx: ContextId,
    pub va: GpuVa,
    pub size: PageSize,
}

/// The cell of the page at `iova`: its frame plus one (0 is an empty
/// cell), or `None` if that does not fit 32 bits.
fn cell_of(iova: u64) -> Option<u32> {
    u32::try_from(iova >> PAGE_SHIFT)
        .ok()
        .and_then(|frame| frame.checked_add(1))
}

/// The IOVA of the page in a non-empty cell.
fn iova_of(cell: u32) -> u64 {
    u64::from(cell - 1) << PAGE_SHIFT
}

/// Whether `[page, page + size)` overlaps `[start, end)`.
fn overlaps(page: u64, size: PageSize, start: u64, end: u64) -> bool {
    page < end && start < page.saturating_add(size.bytes())
}

/// What a slot knows besides its cells.
#[derive(Clone, Copy, Debug, Default)]
struct SlotState {
    /// Non-empty cells.
    live: u16,
    /// Cell 0 holds a 2 MiB page (then it is the only cell in use).
    large: bool,
    /// Retired by a re-shadow and not refilled yet: its cells are stale
    /// and count for nothing.
    retired: bool,
}

#[derive(Debug, Default)]
pub(crate) struct SystemIndex {
    chunks: BTreeMap<ChunkKey, usize>,
    /// Slot `s` holds cells `s * 512 .. (s + 1) * 512`.
    cells: Vec<u32>,
    slots: Vec<SlotState>,
    free: Vec<usize>,
    /// Chunks retired by the re-shadow in progress, in key order.
    retired: Vec<(ChunkKey, usize)>,
    /// The first of `retired` that the walk has not passed yet: it
    /// records in VA order, so the chunk it needs next is found here
    /// without a map lookup.
    refill: usize,
    /// Pages whose IOVA does not fit a cell, by (context, VA).
    far: BTreeMap<PageKey, (Iova, PageSize)>,
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
    pub fn record(&mut self, ctx: ContextId, va: GpuVa, iova: Iova, size: PageSize) {
        let Some(cell) = cell_of(iova.0) else {
            // A page has one record: drop the one in a cell, if any.
            self.remove_near(ctx, va);
            if self.far.insert((ctx, va.0), (iova, size)).is_none() {
                self.pages += 1;
            }
            return;
        };
        self.remove_far(ctx, va.0, va.0 + 1);
        let slot = self.slot(ctx, va.0 >> CHUNK_SHIFT, true);
        let index = ((va.0 >> PAGE_SHIFT) as usize) % ENTRIES_PER_TABLE;
        if index == 0 {
            self.slots[slot].large = size == PageSize::Size2MiB;
        }
        let old = std::mem::replace(&mut self.cells[slot * ENTRIES_PER_TABLE + index], cell);
        self.count(slot, u16::from(old == 0));
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
        // The OR of the run's entries bounds its highest address.
        let fits = cell_of(run.bits().any & PTE_ADDRESS_MASK).is_some();
        if last >> CHUNK_SHIFT != chunk || run.size() == PageSize::Size2MiB || !fits {
            // Not one table of small pages with small addresses: page by
            // page, exact if slower.
            for (va, pte) in run.iter() {
                if let PteTarget::System(iova) = pte.target() {
                    self.record(ctx, va, iova, run.size());
                }
            }
            return;
        }
        let cell = |address: u64| (address >> PAGE_SHIFT) as u32 + 1;
        self.remove_far(ctx, first, last + 1);
        if run.len() == ENTRIES_PER_TABLE {
            // A whole level-1 table (what every build and re-shadow of
            // 4 KiB pages records): every cell is written, so the slot
            // needs no emptying first and every cell is new.
            let slot = self.slot(ctx, chunk, false);
            if self.slots[slot].live != 0 {
                self.pages -= usize::from(self.slots[slot].live);
            }
            let cells = &mut self.cells[slot * ENTRIES_PER_TABLE..(slot + 1) * ENTRIES_PER_TABLE];
            for (to, address) in cells.iter_mut().zip(addresses) {
                *to = cell(address);
            }
            self.slots[slot].large = false;
            self.slots[slot].live = 0;
            self.count(slot, ENTRIES_PER_TABLE as u16);
            return;
        }
        let slot = self.slot(ctx, chunk, true);
        let first_index = ((first >> PAGE_SHIFT) as usize) % ENTRIES_PER_TABLE;
        if first_index == 0 {
            self.slots[slot].large = false;
        }
        let start = slot * ENTRIES_PER_TABLE + first_index;
        let mut added = 0;
        for (to, address) in self.cells[start..start + run.len()]
            .iter_mut()
            .zip(addresses)
        {
            added += u16::from(*to == 0);
            *to = cell(address);
        }
        self.count(slot, added);
    }

    fn count(&mut self, slot: usize, added: u16) {
        self.slots[slot].live += added;
        self.pages += usize::from(added);
    }

    /// The slot of `ctx`'s chunk, allocated if new, with its cells empty
    /// if `emptied` (a caller that writes every cell passes false). A
    /// retired slot is taken back into use.
    #[inline]
    fn slot(&mut self, ctx: ContextId, chunk: u64, emptied: bool) -> usize {
        let key = (ctx, chunk);
        let slot = match self.last {
            Some((last, slot)) if last == key => slot,
            _ => {
                let slot = match self.next_retired(key) {
                    Some(slot) => slot,
                    None => match self.chunks.get(&key) {
                        Some(&slot) => slot,
                        None => self.allocate(key),
                    },
                };
                self.last = Some((key, slot));
                slot
            }
        };
        let state = &mut self.slots[slot];
        if state.retired {
            *state = SlotState::default();
            if emptied {
                self.cells[slot * ENTRIES_PER_TABLE..(slot + 1) * ENTRIES_PER_TABLE].fill(0);
            }
        }
        slot
    }

    /// The slot of `key` if it is the next retired chunk the walk reaches.
    #[inline]
    fn next_retired(&mut self, key: ChunkKey) -> Option<usize> {
        while let Some(&(next, slot)) = self.retired.get(self.refill) {
            if next > key {
                return None;
            }
            self.refill += 1;
            if next == key {
                return Some(slot);
            }
        }
        None
    }

    /// A slot for the new chunk `key`, marked retired so that [`Self::slot`]
    /// empties it if its caller needs that (freed slots keep their cells).
    fn allocate(&mut self, key: ChunkKey) -> usize {
        let slot = self.free.pop().unwrap_or_else(|| {
            let slot = self.slots.len();
            self.slots.push(SlotState::default());
            self.cells.resize((slot + 1) * ENTRIES_PER_TABLE, 0);
            slot
        });
        self.slots[slot] = SlotState {
            retired: true,
            ..SlotState::default()
        };
        self.chunks.insert(key, slot);
        slot
    }

    fn release(&mut self, key: ChunkKey, slot: usize) {
        self.chunks.remove(&key);
        self.pages -= usize::from(self.slots[slot].live);
        self.slots[slot] = SlotState::default();
        self.free.push(slot);
        if self.last.is_some_and(|(last, _)| last == key) {
            self.last = None;
        }
    }

    /// Forgets every page of `ctx` in `range`, which must be 2 MiB aligned
    /// (the shadow builder only clears whole chunks).
    pub fn clear(&mut self, ctx: ContextId, range: VaRange) {
        self.release_retired();
        let (first, end) = Self::chunks_of(range);
        // One lookup per chunk rather than a list of them: a re-shadow
        // clears one chunk, and should not allocate to do it.
        while let Some((&key, &slot)) = self.chunks.range((ctx, first)..(ctx, end)).next() {
            self.release(key, slot);
        }
        self.remove_far(ctx, range.start().0, range.end());
    }

    /// [`Self::clear`] for a re-shadow of `range`: its chunks are emptied
    /// but kept for the walk to refill; [`Self::release_retired`] must
    /// follow once the walk is done.
    pub fn retire(&mut self, ctx: ContextId, range: VaRange) {
        self.release_retired();
        let (first, end) = Self::chunks_of(range);
        if end - first == 1 {
            // One search where a range takes two: a re-shadow of 2 MiB.
            if let Some(&slot) = self.chunks.get(&(ctx, first)) {
                self.retired.push(((ctx, first), slot));
            }
        } else {
            self.retired.extend(
                self.chunks
                    .range((ctx, first)..(ctx, end))
                    .map(|(&k, &s)| (k, s)),
            );
        }
        for &(_, slot) in &self.retired {
            let state = &mut self.slots[slot];
            self.pages -= usize::from(state.live);
            *state = SlotState {
                retired: true,
                ..SlotState::default()
            };
        }
        self.remove_far(ctx, range.start().0, range.end());
    }

    /// Frees the retired chunks that the walk did not refill.
    pub fn release_retired(&mut self) {
        // By index, to keep the list's allocation for the next re-shadow.
        for at in 0..self.retired.len() {
            let (key, slot) = self.retired[at];
            if self.slots[slot].retired {
                self.release(key, slot);
            }
        }
        self.retired.clear();
        self.refill = 0;
    }

    fn chunks_of(range: VaRange) -> (u64, u64) {
        (
            range.start().0 >> CHUNK_SHIFT,
            range.end().div_ceil(1 << CHUNK_SHIFT),
        )
    }

    /// Forgets the far pages of `ctx` from VA `start` to `end`.
    fn remove_far(&mut self, ctx: ContextId, start: u64, end: u64) {
        if self.far.is_empty() {
            return;
        }
        while let Some((&key, _)) = self.far.range((ctx, start)..(ctx, end)).next() {
            self.far.remove(&key);
            self.pages -= 1;
        }
    }

    /// Forgets the page at `va` in `ctx`.
    pub fn remove(&mut self, ctx: ContextId, va: GpuVa) {
        self.remove_far(ctx, va.0, va.0 + 1);
        self.remove_near(ctx, va);
    }

    /// Forgets the page at `va` in `ctx` if a cell holds it.
    fn remove_near(&mut self, ctx: ContextId, va: GpuVa) {
        let key = (ctx, va.0 >> CHUNK_SHIFT);
        let Some(&slot) = self.chunks.get(&key) else {
            return;
        };
        if self.slots[slot].retired {
            return;
        }
        let index = ((va.0 >> PAGE_SHIFT) as usize) % ENTRIES_PER_TABLE;
        let cell = &mut self.cells[slot * ENTRIES_PER_TABLE + index];
        if *cell != 0 {
            *cell = 0;
            self.slots[slot].live -= 1;
            self.pages -= 1;
            if self.slots[slot].live == 0 {
                self.release(key, slot);
            }
        }
    }

    /// Every indexed page that overlaps the `len` bytes at `iova`, by
    /// context and VA.
    pub fn overlapping(&self, iova: Iova, len: u64) -> Vec<SystemPage> {
        let (start, end) = (iova.0, iova.0.saturating_add(len));
        let mut found = Vec::new();
        for (&(ctx, chunk), &slot) in &self.chunks {
            let state = self.slots[slot];
            if state.retired {
                continue;
            }
            let cells = &self.cells[slot * ENTRIES_PER_TABLE..(slot + 1) * ENTRIES_PER_TABLE];
            for (index, &cell) in cells.iter().enumerate() {
                if cell == 0 {
                    continue;
                }
                let size = if index == 0 && state.large {
                    PageSize::Size2MiB
                } else {
                    PageSize::Size4KiB
                };
                if overlaps(iova_of(cell), size, start, end) {
                    found.push(SystemPage {
                        ctx,
                        va: GpuVa((chunk << CHUNK_SHIFT) | ((index as u64) << PAGE_SHIFT)),
                        size,
                    });
                }
            }
        }
        for (&(ctx, va), &(page, size)) in &self.far {
            if overlaps(page.0, size, start, end) {
                found.push(SystemPage {
                    ctx,
                    va: GpuVa(va),
                    size,
                });
            }
        }
        found.sort_by_key(|page| (page.ctx, page.va));
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
        assert_eq!(index.slots.len(), 1, "the freed slot is reused");
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
        assert_eq!(index.slots.len(), 1, "the freed slot is reused");
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

    #[test]
    fn pages_past_16_tib_are_indexed_and_found() {
        let far = 1u64 << 50;
        let system = crate::entry::PTE_VALID | crate::entry::PTE_SYSTEM;
        let entries: Vec<u64> = (0..ENTRIES_PER_TABLE as u64)
            .map(|n| ((far + (n << 12)) | system).to_le())
            .collect();
        let mut index = SystemIndex::default();
        let whole = LeafRun::new(0x20_0000, SMALL, &entries, true);
        index.record_run(CTX, &ShadowRun::new(whole));
        assert_eq!(index.len(), ENTRIES_PER_TABLE);
        assert_eq!(
            index.overlapping(Iova(far + 0x5000), 1),
            vec![SystemPage {
                ctx: CTX,
                va: GpuVa(0x20_5000),
                size: SMALL
            }]
        );
        index.remove(CTX, GpuVa(0x20_5000));
        assert_eq!(index.len(), ENTRIES_PER_TABLE - 1);
        assert_eq!(index.overlapping(Iova(far + 0x5000), 1), vec![]);
        index.clear(CTX, range(0, 0x40_0000));
        assert_eq!(index.len(), 0);
        assert_eq!(index.overlapping(Iova(0), u64::MAX), vec![]);
    }

    #[test]
    fn a_large_page_keeps_its_size_when_small_pages_join_its_chunk() {
        let mut index = SystemIndex::default();
        let large = PageSize::Size2MiB;
        index.record(CTX, GpuVa(0x40_0000), Iova(0x80_0000), large);
        let system = crate::entry::PTE_VALID | crate::entry::PTE_SYSTEM;
        let entries = [(0x5000 | system).to_le()];
        let run = LeafRun::new(0x40_3000, SMALL, &entries, true);
        index.record_run(CTX, &ShadowRun::new(run));
        // The last byte of the 2 MiB page is still found.
        let hits = index.overlapping(Iova(0x9f_f000), 0x1000);
        assert_eq!(
            hits,
            vec![SystemPage {
                ctx: CTX,
                va: GpuVa(0x40_0000),
                size: large
            }]
        );
    }

    #[test]
    fn a_retired_chunk_refilled_by_the_walk_holds_only_the_new_pages() {
        let system = crate::entry::PTE_VALID | crate::entry::PTE_SYSTEM;
        let entries: Vec<u64> = (0..ENTRIES_PER_TABLE as u64)
            .map(|n| ((0x100_0000 + (n << 12)) | system).to_le())
            .collect();
        let mut index = SystemIndex::default();
        let whole = LeafRun::new(0x20_0000, SMALL, &entries, true);
        index.record_run(CTX, &ShadowRun::new(whole));
        index.retire(CTX, range(0x20_0000, 0x20_0000));
        assert_eq!(index.len(), 0, "retired pages count for nothing");
        // The walk finds one page where there were 512.
        let one = LeafRun::new(0x20_7000, SMALL, &entries[9..10], true);
        index.record_run(CTX, &ShadowRun::new(one));
        index.release_retired();
        assert_eq!(index.len(), 1);
        assert_eq!(index.chunks.len(), 1);
        assert_eq!(
            index.overlapping(Iova(0), u64::MAX),
            vec![SystemPage {
                ctx: CTX,
                va: GpuVa(0x20_7000),
                size: SMALL
            }]
        );
    }

    #[test]
    fn a_retired_chunk_the_walk_does_not_refill_is_released() {
        let mut index = SystemIndex::default();
        index.record(CTX, GpuVa(0x1000), Iova(0x5000), SMALL);
        index.retire(CTX, range(0, 0x20_0000));
        index.release_retired();
        assert_eq!(index.len(), 0);
        assert!(index.chunks.is_empty());
        assert_eq!(index.free, vec![0]);
        assert_eq!(index.overlapping(Iova(0), u64::MAX), vec![]);
    }

    /// What the index must agree with: every page by (context, VA).
    type Model = BTreeMap<(ContextId, u64), (u64, PageSize)>;

    #[derive(Clone, Debug)]
    enum Op {
        /// A run of `len` small pages from `va` (clipped to its chunk) at
        /// consecutive-by-`stride` frames from `iova`.
        Run {
            ctx: u8,
            va: u64,
            len: usize,
            iova: u64,
            stride: u64,
        },
        Large {
            ctx: u8,
            va: u64,
            iova: u64,
        },
        Reshadow {
            ctx: u8,
            chunk: u64,
            chunks: u64,
            refill: bool,
        },
        Clear {
            ctx: u8,
            chunk: u64,
            chunks: u64,
        },
        Remove {
            ctx: u8,
            va: u64,
        },
    }

    fn iova() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![
            (0u64..1 << 20).prop_map(|frame| frame << 12),
            // Around the last frame a cell holds, and far past it.
            ((1u64 << 32) - 4..(1u64 << 32) + 4).prop_map(|frame| frame << 12),
            (1u64 << 39..1 << 40).prop_map(|frame| frame << 12),
        ]
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let va = (0u64..8 * 512).prop_map(|page| page << 12);
        prop_oneof![
            (0u8..2, va.clone(), 1usize..=512, iova(), 0u64..3).prop_map(
                |(ctx, va, len, iova, stride)| Op::Run {
                    ctx,
                    va,
                    len,
                    iova,
                    stride
                }
            ),
            (0u8..2, 0u64..8, iova()).prop_map(|(ctx, chunk, iova)| Op::Large {
                ctx,
                va: chunk << CHUNK_SHIFT,
                iova: iova & !0x1f_ffff,
            }),
            (0u8..2, 0u64..8, 1u64..4, any::<bool>()).prop_map(|(ctx, chunk, chunks, refill)| {
                Op::Reshadow {
                    ctx,
                    chunk,
                    chunks,
                    refill,
                }
            }),
            (0u8..2, 0u64..8, 1u64..4).prop_map(|(ctx, chunk, chunks)| Op::Clear {
                ctx,
                chunk,
                chunks
            }),
            (0u8..2, va).prop_map(|(ctx, va)| Op::Remove { ctx, va }),
        ]
    }

    fn record_run(
        index: &mut SystemIndex,
        model: &mut Model,
        ctx: ContextId,
        pages: &[(u64, u64)],
    ) {
        let system = crate::entry::PTE_VALID | crate::entry::PTE_SYSTEM;
        let entries: Vec<u64> = pages
            .iter()
            .map(|&(_, iova)| (iova | system).to_le())
            .collect();
        let run = LeafRun::new(pages[0].0, SMALL, &entries, true);
        index.record_run(ctx, &ShadowRun::new(run));
        for &(va, iova) in pages {
            model.insert((ctx, va), (iova, SMALL));
        }
    }

    fn apply(index: &mut SystemIndex, model: &mut Model, op: &Op) {
        let chunk_range = |ctx: u8, chunk: u64, chunks: u64| {
            let range = range(chunk << CHUNK_SHIFT, chunks << CHUNK_SHIFT);
            (ContextId(u32::from(ctx)), range)
        };
        match *op {
            Op::Run {
                ctx,
                va,
                len,
                iova,
                stride,
            } => {
                let chunk_end = (va | 0x1f_ffff) + 1;
                let len = len.min(((chunk_end - va) >> 12) as usize);
                let pages: Vec<(u64, u64)> = (0..len as u64)
                    .map(|n| (va + (n << 12), iova + ((n * stride) << 12)))
                    .collect();
                record_run(index, model, ContextId(u32::from(ctx)), &pages);
            }
            Op::Large { ctx, va, iova } => {
                let ctx = ContextId(u32::from(ctx));
                // A 2 MiB page replaces its chunk's small pages, as a
                // re-shadow does (it clears before recording).
                index.clear(ctx, range(va, 0x20_0000));
                model.retain(|&(c, v), _| c != ctx || v >> CHUNK_SHIFT != va >> CHUNK_SHIFT);
                index.record(ctx, GpuVa(va), Iova(iova), PageSize::Size2MiB);
                model.insert((ctx, va), (iova, PageSize::Size2MiB));
            }
            Op::Reshadow {
                ctx,
                chunk,
                chunks,
                refill,
            } => {
                let (ctx, range) = chunk_range(ctx, chunk, chunks);
                index.retire(ctx, range);
                model.retain(|&(c, v), _| c != ctx || !(range.start().0..range.end()).contains(&v));
                if refill {
                    // Refill the first chunk with a whole table.
                    let pages: Vec<(u64, u64)> = (0..ENTRIES_PER_TABLE as u64)
                        .map(|n| (range.start().0 + (n << 12), (n * 7) << 12))
                        .collect();
                    record_run(index, model, ctx, &pages);
                }
                index.release_retired();
            }
            Op::Clear { ctx, chunk, chunks } => {
                let (ctx, range) = chunk_range(ctx, chunk, chunks);
                index.clear(ctx, range);
                model.retain(|&(c, v), _| c != ctx || !(range.start().0..range.end()).contains(&v));
            }
            Op::Remove { ctx, va } => {
                let ctx = ContextId(u32::from(ctx));
                index.remove(ctx, GpuVa(va));
                model.remove(&(ctx, va));
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        #[test]
        fn the_index_finds_exactly_the_pages_a_model_holds(
            ops in proptest::collection::vec(op(), 1..24),
            probe in iova(),
            probe_len in 1u64..1 << 22,
        ) {
            let mut index = SystemIndex::default();
            let mut model = Model::new();
            for op in &ops {
                apply(&mut index, &mut model, op);
                proptest::prop_assert_eq!(index.len(), model.len());
            }
            let expected: Vec<SystemPage> = model
                .iter()
                .filter(|&(_, &(iova, size))| overlaps(iova, size, probe, probe.saturating_add(probe_len)))
                .map(|(&(ctx, va), &(_, size))| SystemPage { ctx, va: GpuVa(va), size })
                .collect();
            proptest::prop_assert_eq!(index.overlapping(Iova(probe), probe_len), expected);
            let all: Vec<SystemPage> = model
                .iter()
                .map(|(&(ctx, va), &(_, size))| SystemPage { ctx, va: GpuVa(va), size })
                .collect();
            proptest::prop_assert_eq!(index.overlapping(Iova(0), u64::MAX), all);
        }
    }
}
