//! Where shadow entries into guest memory may be, so that `DMA_UNMAP` can
//! revoke them before it is answered.
//!
//! The index keeps, per 2 MiB chunk of one context's GPU VA, how many
//! system pages the builder mapped there and bounds on their IOVAs: the
//! AND of the entries' addresses bounds the lowest page from below and
//! the OR bounds the highest from above, and the walker gathers both for
//! its own checks anyway, so recording a level-1 table costs O(1) however
//! its pages are laid out. Revocation takes the chunks whose bounds touch
//! the unmapped range and reads their pages back from the physical MMU
//! ([`crate::PhysicalMmu::mapped_pages`]), so what it removes is what the
//! GPU would translate. Bounds only ever over-approximate: a chunk they
//! name may hold nothing in the range, never the other way round. VRAM
//! pages are not indexed: the slice never shrinks under a vGPU.
//!
//! A re-shadow forgets its range and records what the walk finds there,
//! most often the same chunks again. So [`SystemIndex::retire`] keeps the
//! range's chunks, emptied, for the walk to refill without a map update,
//! and [`SystemIndex::release_retired`] frees those the walk did not
//! refill.
//!
//! Outside a re-shadow every chunk holds at least one page, so the index
//! never has more chunks than pages recorded: the system shadow entries,
//! plus, after a map the physical MMU failed, the rest of that run. The
//! slots keep their high-water mark, at most the chunks before a re-walk
//! plus those it adds.

use std::collections::BTreeMap;

use crate::addr::{ContextId, GpuVa, Iova, VaRange};
use crate::entry::PTE_ADDRESS_MASK;
use crate::leaf::ShadowRun;
use crate::pte::PteTarget;

const CHUNK_SHIFT: u32 = 21;

/// Bytes of GPU VA in one chunk.
pub(crate) const CHUNK_BYTES: u64 = 1 << CHUNK_SHIFT;

/// Bits of a chunk number: 48-bit VAs in 2 MiB chunks.
const CHUNK_NUMBER_BITS: u32 = 48 - CHUNK_SHIFT;

/// A chunk, one context's 2 MiB of GPU VA: the context above the chunk
/// number, in one integer, so that the map compares one word per step (a
/// re-shadow of 2 MiB looks its chunk up once, and a tuple key made that
/// lookup a tenth of the re-shadow).
type ChunkKey = u64;

/// The key of `chunk` in `ctx`; `chunk` may be one past the last chunk
/// (2^27), which gives the next context's first key, an exclusive bound.
fn chunk_key(ctx: ContextId, chunk: u64) -> ChunkKey {
    (u64::from(ctx.0) << CHUNK_NUMBER_BITS) + chunk
}

fn chunk_of_key(key: ChunkKey) -> (ContextId, u64) {
    // The context was a u32 before the shift.
    let ctx = ContextId((key >> CHUNK_NUMBER_BITS) as u32);
    (ctx, key & ((1 << CHUNK_NUMBER_BITS) - 1))
}

/// A chunk that may hold system pages overlapping a revoked range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub ctx: ContextId,
    /// The chunk's first VA.
    pub va: GpuVa,
}

/// What the index knows of one chunk.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    /// System pages recorded.
    pages: u32,
    /// Every page recorded starts at or above this IOVA...
    low: u64,
    /// ...and ends at or below this one.
    high: u64,
    /// Retired by a re-shadow and not refilled yet: it counts for nothing.
    retired: bool,
}

impl Chunk {
    const EMPTY: Chunk = Chunk {
        pages: 0,
        low: u64::MAX,
        high: 0,
        retired: false,
    };

    fn add(&mut self, pages: u32, low: u64, high: u64) {
        self.pages += pages;
        self.low = self.low.min(low);
        self.high = self.high.max(high);
    }
}

#[derive(Debug, Default)]
pub(crate) struct SystemIndex {
    chunks: BTreeMap<ChunkKey, usize>,
    slots: Vec<Chunk>,
    free: Vec<usize>,
    /// Chunks retired by the re-shadow in progress, in key order.
    retired: Vec<(ChunkKey, usize)>,
    /// The first of `retired` that the walk has not passed yet: it
    /// records in VA order, so the chunk it needs next is found here
    /// without a map lookup.
    refill: usize,
    /// The chunk the last record went to.
    last: Option<(ChunkKey, usize)>,
    pages: usize,
}

impl SystemIndex {
    /// Number of indexed pages.
    pub fn len(&self) -> usize {
        self.pages
    }

    /// Notes every system page of `run`, which the builder is about to map
    /// where nothing of its is indexed (the range was retired or cleared).
    #[inline]
    pub fn record_run(&mut self, ctx: ContextId, run: &ShadowRun<'_>) {
        let (system, _) = run.addresses();
        if !system || run.is_empty() {
            return;
        }
        let first = run.va().0;
        let size = run.size().bytes();
        let last = first + (run.len() as u64 - 1) * size;
        let chunk = first >> CHUNK_SHIFT;
        if last >> CHUNK_SHIFT != chunk {
            // Not from one table: page by page, exact if slower.
            for (va, pte) in run.iter() {
                if let PteTarget::System(iova) = pte.target() {
                    let slot = self.slot(ctx, va.0 >> CHUNK_SHIFT);
                    self.add(slot, 1, iova.0, iova.0.saturating_add(size));
                }
            }
            return;
        }
        let bits = run.bits();
        let low = bits.all & PTE_ADDRESS_MASK;
        let high = (bits.any & PTE_ADDRESS_MASK).saturating_add(size);
        let slot = self.slot(ctx, chunk);
        // A level-1 table holds at most 512 pages.
        self.add(slot, run.len() as u32, low, high);
    }

    fn add(&mut self, slot: usize, pages: u32, low: u64, high: u64) {
        self.slots[slot].add(pages, low, high);
        self.pages += pages as usize;
    }

    /// The slot of `ctx`'s chunk, allocated if new; a retired slot is
    /// taken back into use, empty.
    #[inline]
    fn slot(&mut self, ctx: ContextId, chunk: u64) -> usize {
        let key = chunk_key(ctx, chunk);
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
        if self.slots[slot].retired {
            self.slots[slot] = Chunk::EMPTY;
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

    fn allocate(&mut self, key: ChunkKey) -> usize {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Chunk::EMPTY);
            self.slots.len() - 1
        });
        self.slots[slot] = Chunk::EMPTY;
        self.chunks.insert(key, slot);
        slot
    }

    fn release(&mut self, key: ChunkKey, slot: usize) {
        self.chunks.remove(&key);
        self.pages -= self.slots[slot].pages as usize;
        self.slots[slot] = Chunk::EMPTY;
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
        let keys = chunk_key(ctx, first)..chunk_key(ctx, end);
        while let Some((&key, &slot)) = self.chunks.range(keys.clone()).next() {
            self.release(key, slot);
        }
    }

    /// [`Self::clear`] for a re-shadow of `range`: its chunks are emptied
    /// but kept for the walk to refill; [`Self::release_retired`] must
    /// follow once the walk is done.
    pub fn retire(&mut self, ctx: ContextId, range: VaRange) {
        self.release_retired();
        let (first, end) = Self::chunks_of(range);
        if end - first == 1 {
            // One search where a range takes two: a re-shadow of 2 MiB.
            let key = chunk_key(ctx, first);
            if let Some(&slot) = self.chunks.get(&key) {
                self.retired.push((key, slot));
            }
        } else {
            self.retired.extend(
                self.chunks
                    .range(chunk_key(ctx, first)..chunk_key(ctx, end))
                    .map(|(&k, &s)| (k, s)),
            );
        }
        for &(_, slot) in &self.retired {
            self.pages -= self.slots[slot].pages as usize;
            self.slots[slot] = Chunk {
                retired: true,
                ..Chunk::EMPTY
            };
        }
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
            range.end().div_ceil(CHUNK_BYTES),
        )
    }

    /// The chunks whose pages may overlap the `len` bytes at `iova`, by
    /// context and VA.
    pub fn candidates(&self, iova: Iova, len: u64) -> Vec<Candidate> {
        let (start, end) = (iova.0, iova.0.saturating_add(len));
        self.chunks
            .iter()
            .filter(|&(_, &slot)| {
                let chunk = self.slots[slot];
                !chunk.retired && chunk.pages > 0 && chunk.low < end && start < chunk.high
            })
            .map(|(&key, _)| {
                let (ctx, chunk) = chunk_of_key(key);
                Candidate {
                    ctx,
                    va: GpuVa(chunk << CHUNK_SHIFT),
                }
            })
            .collect()
    }

    /// Notes that `removed` of the pages of the chunk at `va` in `ctx`
    /// were unmapped; the chunk is forgotten when none is left. Its bounds
    /// stay as they were, which still bound what remains.
    pub fn unmapped(&mut self, ctx: ContextId, va: GpuVa, removed: usize) {
        let key = chunk_key(ctx, va.0 >> CHUNK_SHIFT);
        let Some(&slot) = self.chunks.get(&key) else {
            return;
        };
        let chunk = &mut self.slots[slot];
        let removed = (removed as u32).min(chunk.pages);
        chunk.pages -= removed;
        self.pages -= removed as usize;
        if chunk.pages == 0 {
            self.release(key, slot);
        }
    }

    /// The pages indexed in the chunk at `va` in `ctx`.
    pub fn chunk_pages(&self, ctx: ContextId, va: GpuVa) -> usize {
        self.chunks
            .get(&chunk_key(ctx, va.0 >> CHUNK_SHIFT))
            .map_or(0, |&slot| self.slots[slot].pages as usize)
    }

    /// Forgets the chunk at `va` in `ctx` whole (it was unmapped whole).
    pub fn forget_chunk(&mut self, ctx: ContextId, va: GpuVa) {
        let key = chunk_key(ctx, va.0 >> CHUNK_SHIFT);
        if let Some(&slot) = self.chunks.get(&key) {
            self.release(key, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PageSize;
    use crate::entry::{ENTRIES_PER_TABLE, PTE_SYSTEM, PTE_VALID};
    use crate::leaf::LeafRun;

    const CTX: ContextId = ContextId(1);
    const SMALL: PageSize = PageSize::Size4KiB;
    const LARGE: PageSize = PageSize::Size2MiB;
    const SYSTEM: u64 = PTE_VALID | PTE_SYSTEM;

    fn range(start: u64, len: u64) -> VaRange {
        VaRange::new(GpuVa(start), len).unwrap()
    }

    /// Records the pages at consecutive VAs from `va` with the IOVAs given.
    fn record(index: &mut SystemIndex, ctx: ContextId, va: u64, size: PageSize, iovas: &[u64]) {
        let entries: Vec<u64> = iovas.iter().map(|&iova| (iova | SYSTEM).to_le()).collect();
        let run = LeafRun::new(va, size, &entries, true);
        index.record_run(ctx, &ShadowRun::new(run));
    }

    fn candidate(ctx: ContextId, va: u64) -> Candidate {
        Candidate { ctx, va: GpuVa(va) }
    }

    #[test]
    fn a_chunk_is_a_candidate_when_its_bounds_touch_the_range() {
        let mut index = SystemIndex::default();
        record(&mut index, CTX, 0x1000, SMALL, &[0x10_0000, 0x10_1000]);
        record(&mut index, ContextId(2), 0x40_0000, LARGE, &[0x20_0000]);
        assert_eq!(index.len(), 3);
        assert_eq!(
            index.candidates(Iova(0x10_1800), 0x10_0000),
            vec![candidate(CTX, 0), candidate(ContextId(2), 0x40_0000)]
        );
        // Just past the last page of the first chunk, and up to the
        // second's first byte.
        assert_eq!(index.candidates(Iova(0x10_2000), 0x1000), vec![]);
        assert_eq!(
            index.candidates(Iova(0x3f_ffff), 1),
            vec![candidate(ContextId(2), 0x40_0000)]
        );
        assert_eq!(index.candidates(Iova(0x40_0000), 0x1000), vec![]);
    }

    #[test]
    fn bounds_cover_every_page_of_a_scattered_table() {
        let iovas: Vec<u64> = (0..ENTRIES_PER_TABLE as u64)
            .map(|n| ((n * 7919) % 4096) << 12)
            .collect();
        let mut index = SystemIndex::default();
        record(&mut index, CTX, 0x20_0000, SMALL, &iovas);
        for &iova in &iovas {
            assert_eq!(
                index.candidates(Iova(iova + 0xfff), 1),
                vec![candidate(CTX, 0x20_0000)]
            );
        }
    }

    #[test]
    fn clear_forgets_only_the_context_and_range_given() {
        let mut index = SystemIndex::default();
        record(&mut index, CTX, 0x1000, SMALL, &[0]);
        record(&mut index, CTX, 0x20_0000, SMALL, &[0]);
        record(&mut index, ContextId(2), 0x1000, SMALL, &[0]);
        index.clear(CTX, range(0, 0x20_0000));
        assert_eq!(index.len(), 2);
        assert_eq!(
            index.candidates(Iova(0), 0x1000),
            vec![candidate(CTX, 0x20_0000), candidate(ContextId(2), 0)]
        );
    }

    #[test]
    fn a_run_across_a_chunk_boundary_is_indexed_in_each_chunk() {
        let mut index = SystemIndex::default();
        record(&mut index, CTX, 0x1f_f000, SMALL, &[0x5000, 0x9000]);
        assert_eq!(index.len(), 2);
        assert_eq!(index.chunks.len(), 2);
        assert_eq!(
            index.candidates(Iova(0x9000), 0x1000),
            vec![candidate(CTX, 0x20_0000)]
        );
        assert_eq!(
            index.candidates(Iova(0x5000), 0x1000),
            vec![candidate(CTX, 0)]
        );
    }

    #[test]
    fn clearing_a_whole_address_space_stops_at_its_context() {
        let mut index = SystemIndex::default();
        for ctx in [
            ContextId(0),
            ContextId(1),
            ContextId(2),
            ContextId(u32::MAX),
        ] {
            record(&mut index, ctx, 0x1000, SMALL, &[0]);
            record(&mut index, ctx, (1 << 48) - 0x1000, SMALL, &[0]);
        }
        for ctx in [ContextId(1), ContextId(2), ContextId(u32::MAX)] {
            index.clear(ctx, VaRange::ALL);
        }
        assert_eq!(
            index.candidates(Iova(0), 1),
            vec![
                candidate(ContextId(0), 0),
                candidate(ContextId(0), (1 << 48) - 0x20_0000)
            ]
        );
        index.retire(ContextId(0), VaRange::ALL);
        index.release_retired();
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn a_vram_run_is_not_indexed() {
        let entries = [(0x5000 | PTE_VALID).to_le()];
        let run = LeafRun::new(0, SMALL, &entries, true);
        let mut index = SystemIndex::default();
        index.record_run(CTX, &ShadowRun::new(run));
        assert_eq!(index.len(), 0);
        assert_eq!(index.candidates(Iova(0), u64::MAX), vec![]);
    }

    #[test]
    fn pages_near_the_top_of_the_address_space_are_bounded() {
        let top = PTE_ADDRESS_MASK & !0x1f_ffff;
        let mut index = SystemIndex::default();
        record(&mut index, CTX, 0, LARGE, &[top]);
        assert_eq!(
            index.candidates(Iova(PTE_ADDRESS_MASK), 1),
            vec![candidate(CTX, 0)]
        );
    }

    #[test]
    fn unmapping_the_last_page_of_a_chunk_forgets_it_and_frees_its_slot() {
        let mut index = SystemIndex::default();
        record(&mut index, CTX, 0x1000, SMALL, &[0x5000, 0x6000]);
        index.unmapped(CTX, GpuVa(0), 1);
        assert_eq!(index.len(), 1);
        assert_eq!(index.candidates(Iova(0x6000), 1).len(), 1);
        index.unmapped(CTX, GpuVa(0), 1);
        assert_eq!(index.len(), 0);
        assert!(index.chunks.is_empty());
        record(&mut index, CTX, 0x80_0000, SMALL, &[0x7000]);
        assert_eq!(index.slots.len(), 1, "the freed slot is reused");
        assert_eq!(index.candidates(Iova(0x5000), 0x1000), vec![]);
    }

    #[test]
    fn a_retired_chunk_refilled_by_the_walk_holds_only_the_new_bounds() {
        let mut index = SystemIndex::default();
        record(&mut index, CTX, 0x20_0000, SMALL, &[0x100_0000, 0x200_0000]);
        index.retire(CTX, range(0x20_0000, 0x20_0000));
        assert_eq!(index.len(), 0, "retired pages count for nothing");
        assert_eq!(index.candidates(Iova(0), u64::MAX), vec![]);
        // The walk finds one page where there were two.
        record(&mut index, CTX, 0x20_7000, SMALL, &[0x300_0000]);
        index.release_retired();
        assert_eq!(index.len(), 1);
        assert_eq!(index.chunks.len(), 1);
        assert_eq!(index.candidates(Iova(0x100_0000), 0x100_1000), vec![]);
        assert_eq!(
            index.candidates(Iova(0x300_0000), 1),
            vec![candidate(CTX, 0x20_0000)]
        );
    }

    #[test]
    fn a_retired_chunk_the_walk_does_not_refill_is_released() {
        let mut index = SystemIndex::default();
        record(&mut index, CTX, 0x1000, SMALL, &[0x5000]);
        record(&mut index, CTX, 0x40_0000, SMALL, &[0x5000]);
        index.retire(CTX, range(0, 0x60_0000));
        record(&mut index, CTX, 0x40_0000, SMALL, &[0x6000]);
        index.release_retired();
        assert_eq!(index.len(), 1);
        assert_eq!(index.chunks.len(), 1);
        assert_eq!(index.free, vec![0]);
        assert_eq!(
            index.candidates(Iova(0), u64::MAX),
            vec![candidate(CTX, 0x40_0000)]
        );
    }

    #[test]
    fn forgetting_a_chunk_drops_its_pages() {
        let mut index = SystemIndex::default();
        record(&mut index, CTX, 0x1000, SMALL, &[0x5000, 0x6000, 0x7000]);
        index.forget_chunk(CTX, GpuVa(0));
        assert_eq!(index.len(), 0);
        assert_eq!(index.candidates(Iova(0), u64::MAX), vec![]);
    }

    /// A page the model holds: context, VA, IOVA, size.
    type Page = (ContextId, u64, u64, PageSize);

    fn iova() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![
            (0u64..1 << 20).prop_map(|frame| frame << 12),
            (1u64 << 39..1 << 40).prop_map(|frame| frame << 12),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Whatever is recorded, retired and refilled, every page still
        /// indexed lies in a candidate chunk for any range it overlaps.
        #[test]
        fn every_recorded_page_is_in_a_candidate_for_ranges_it_overlaps(
            tables in proptest::collection::vec(
                (0u8..2, 0u64..8, proptest::collection::vec(iova(), 1..40), proptest::bool::ANY),
                1..12,
            ),
            retire in proptest::option::of((0u8..2, 0u64..8, 1u64..4)),
            probe_len in 1u64..1 << 14,
        ) {
            let mut index = SystemIndex::default();
            let mut model: Vec<Page> = Vec::new();
            for (ctx, chunk, iovas, large) in &tables {
                let ctx = ContextId(u32::from(*ctx));
                let va = chunk << CHUNK_SHIFT;
                // A re-shadow of the chunk: what was there goes first.
                index.retire(ctx, range(va, CHUNK_BYTES));
                model.retain(|&(c, v, _, _)| c != ctx || v >> CHUNK_SHIFT != *chunk);
                if *large {
                    let iova = iovas[0] & !(LARGE.bytes() - 1);
                    record(&mut index, ctx, va, LARGE, &[iova]);
                    model.push((ctx, va, iova, LARGE));
                } else {
                    record(&mut index, ctx, va, SMALL, iovas);
                    for (n, &iova) in iovas.iter().enumerate() {
                        model.push((ctx, va + ((n as u64) << 12), iova, SMALL));
                    }
                }
                index.release_retired();
            }
            if let Some((ctx, chunk, chunks)) = retire {
                let ctx = ContextId(u32::from(ctx));
                let retired = range(chunk << CHUNK_SHIFT, chunks << CHUNK_SHIFT);
                index.retire(ctx, retired);
                index.release_retired();
                model.retain(|&(c, v, _, _)| {
                    c != ctx || !(retired.start().0..retired.end()).contains(&v)
                });
            }
            proptest::prop_assert_eq!(index.len(), model.len());
            for &(ctx, va, iova, size) in &model {
                let chunk = candidate(ctx, va & !(CHUNK_BYTES - 1));
                // A range starting inside the page, and one ending in it.
                let inside = index.candidates(Iova(iova + size.bytes() - 1), probe_len);
                proptest::prop_assert!(inside.contains(&chunk));
                let ending = index.candidates(Iova(iova.saturating_sub(probe_len - 1)), probe_len);
                proptest::prop_assert!(ending.contains(&chunk));
            }
        }
    }
}
