//! One context's page tables.
//!
//! A GPU keeps a four-level radix tree per context; the simulation keeps
//! what such a tree means instead: a map from each mapped page's first VA
//! to its entry, 4 KiB and 2 MiB pages side by side. A lookup is the last
//! page starting at or below the address, if the address falls inside it.
//!
//! Pages never overlap. Mapping a page first removes every page it
//! overlaps, whole, which is what writing the radix tree does: a 2 MiB
//! entry replaces the level-1 table of 4 KiB pages beneath it, and a 4 KiB
//! page inside a 2 MiB one needs a level-1 table in place of the large
//! entry, so the rest of the large page goes too. The tables only ever hold
//! [`ShadowPte`]s, so only entries that the policy validated are mapped.

use std::collections::BTreeMap;

use shadow_mmu::ShadowPte;

/// The pages of one context, by first VA. The caller keeps every page
/// aligned to its size and inside the address space.
#[derive(Clone, Debug, Default)]
pub(super) struct PageTable {
    pages: BTreeMap<u64, ShadowPte>,
}

impl PageTable {
    /// Maps the page at `va` (aligned to `pte.size()`), replacing every
    /// page it overlaps.
    pub fn map(&mut self, va: u64, pte: ShadowPte) {
        self.unmap(va, va + pte.size().bytes());
        self.pages.insert(va, pte);
    }

    /// Removes every page that overlaps `[start, end)`, whole: a 2 MiB page
    /// only partly in the range goes too, because a translation into a
    /// revoked range must never survive, and what remains of the large page
    /// would need 4 KiB entries the shadow MMU never programmed.
    pub fn unmap(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Pages do not overlap, so only the last one starting below
        // `start` can reach into the range.
        let before = self
            .pages
            .range(..start)
            .next_back()
            .filter(|(va, pte)| *va + pte.size().bytes() > start)
            .map(|(va, _)| *va);
        let inside: Vec<u64> = self.pages.range(start..end).map(|(va, _)| *va).collect();
        for va in before.into_iter().chain(inside) {
            self.pages.remove(&va);
        }
    }

    /// The pages that start in `[start, end)`, by first VA.
    pub fn starting_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, ShadowPte)> + '_ {
        self.pages
            .range(start..end.max(start))
            .map(|(&va, &pte)| (va, pte))
    }

    /// The page containing `va`, with its first VA.
    pub fn lookup(&self, va: u64) -> Option<(u64, ShadowPte)> {
        let (&base, &pte) = self.pages.range(..=va).next_back()?;
        (va - base < pte.size().bytes()).then_some((base, pte))
    }

    /// Number of mapped pages.
    /// Pages that start in `start..end`.
    pub fn count_in(&self, start: u64, end: u64) -> usize {
        if start >= end {
            return 0;
        }
        self.pages.range(start..end).count()
    }

    pub fn len(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(test)]
mod tests {
    use shadow_mmu::PageSize;

    use super::*;
    use crate::mmu::tests::{vram_pte, vram_pte_2m};

    const MIB: u64 = 1 << 20;

    #[test]
    fn lookup_finds_the_page_containing_the_address() {
        let mut table = PageTable::default();
        table.map(0x20_0000, vram_pte_2m(0, false));
        table.map(0x40_1000, vram_pte(0x3000, false));
        assert_eq!(table.lookup(0x3f_ffff).map(|(va, _)| va), Some(0x20_0000));
        assert_eq!(table.lookup(0x40_0fff), None);
        assert_eq!(table.lookup(0x40_1abc).map(|(va, _)| va), Some(0x40_1000));
        assert_eq!(table.lookup(0x40_2000), None);
        assert_eq!(table.lookup(0x1f_ffff), None);
    }

    #[test]
    fn a_large_page_replaces_the_small_pages_beneath_it() {
        let mut table = PageTable::default();
        table.map(2 * MIB, vram_pte(0, false));
        table.map(3 * MIB, vram_pte(0x1000, false));
        table.map(4 * MIB, vram_pte(0x2000, false));
        table.map(2 * MIB, vram_pte_2m(2 * MIB, true));
        assert_eq!(table.len(), 2);
        let (_, pte) = table.lookup(3 * MIB).unwrap();
        assert_eq!(pte.size(), PageSize::Size2MiB);
        assert!(table.lookup(4 * MIB).is_some(), "outside the large page");
    }

    #[test]
    fn a_small_page_inside_a_large_one_replaces_it() {
        let mut table = PageTable::default();
        table.map(2 * MIB, vram_pte_2m(0, false));
        table.map(3 * MIB, vram_pte(0x5000, true));
        assert_eq!(table.len(), 1);
        assert_eq!(table.lookup(2 * MIB), None);
        assert_eq!(table.lookup(3 * MIB).unwrap().1.size(), PageSize::Size4KiB);
    }

    #[test]
    fn unmap_removes_partly_covered_large_pages_whole() {
        let mut table = PageTable::default();
        table.map(2 * MIB, vram_pte_2m(0, false));
        table.map(4 * MIB, vram_pte(0, false));
        table.unmap(3 * MIB, 3 * MIB + 0x1000);
        assert_eq!(table.lookup(2 * MIB), None);
        assert!(table.lookup(4 * MIB).is_some());
        table.unmap(4 * MIB + 0x1000, 5 * MIB);
        assert!(table.lookup(4 * MIB).is_some(), "range ends before it");
        table.unmap(0, u64::MAX);
        assert_eq!(table.len(), 0);
    }
}
