//! One context's TLB: a small cache of translations that, as in hardware,
//! is only emptied by an explicit invalidation.
//!
//! Changing the page tables does not touch the TLB: a page unmapped or
//! remapped after it was used keeps translating the old way until the
//! context is invalidated. That is the behaviour a daemon must cope with on
//! real GPUs (after revoking a DMA window it has to unmap *and* invalidate
//! before it replies), so the simulation has it too rather than hiding the
//! bug. Faults are not cached: a page mapped after a fault is seen on the
//! next access.

use shadow_mmu::ShadowPte;

/// Translations cached per context. Small, like a real GPU's per-engine
/// micro-TLB, so that tests see both hits and evictions.
pub const TLB_ENTRIES: usize = 16;

/// A page the TLB holds: its first VA and the entry it was filled from.
type Cached = (u64, ShadowPte);

/// The cached translations of one context, replaced round-robin.
#[derive(Clone, Debug, Default)]
pub(super) struct Tlb {
    slots: [Option<Cached>; TLB_ENTRIES],
    next: usize,
}

impl Tlb {
    /// The cached page containing `va`, if any.
    pub fn lookup(&self, va: u64) -> Option<Cached> {
        self.slots
            .iter()
            .flatten()
            .copied()
            .find(|&(base, pte)| va >= base && va - base < pte.size().bytes())
    }

    /// Caches the page at `base`. Cached pages it overlaps (stale ones of
    /// another size) are dropped, so that a lookup never has two answers.
    pub fn fill(&mut self, base: u64, pte: ShadowPte) {
        let end = base + pte.size().bytes();
        for slot in &mut self.slots {
            if slot.is_some_and(|(other, other_pte)| {
                other < end && base < other + other_pte.size().bytes()
            }) {
                *slot = None;
            }
        }
        self.slots[self.next] = Some((base, pte));
        self.next = (self.next + 1) % TLB_ENTRIES;
    }

    /// Drops every cached translation.
    pub fn flush(&mut self) {
        *self = Tlb::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmu::tests::{vram_pte, vram_pte_2m};

    #[test]
    fn filled_pages_are_found_until_flushed() {
        let mut tlb = Tlb::default();
        tlb.fill(0x20_0000, vram_pte_2m(0, false));
        assert_eq!(tlb.lookup(0x3f_f000).map(|(base, _)| base), Some(0x20_0000));
        assert_eq!(tlb.lookup(0x40_0000), None);
        tlb.flush();
        assert_eq!(tlb.lookup(0x20_0000), None);
    }

    #[test]
    fn the_oldest_entry_is_evicted_when_full() {
        let mut tlb = Tlb::default();
        for page in 0..=TLB_ENTRIES as u64 {
            tlb.fill(page * 0x1000, vram_pte(0, false));
        }
        assert_eq!(tlb.lookup(0), None);
        assert!(tlb.lookup(0x1000).is_some());
        assert!(tlb.lookup(TLB_ENTRIES as u64 * 0x1000).is_some());
    }

    #[test]
    fn filling_a_page_drops_cached_pages_it_overlaps() {
        let mut tlb = Tlb::default();
        tlb.fill(0x20_1000, vram_pte(0x7000, false));
        tlb.fill(0x20_0000, vram_pte_2m(0, true));
        let (base, pte) = tlb.lookup(0x20_1000).unwrap();
        assert_eq!((base, pte.permissions().writable), (0x20_0000, true));
    }
}
