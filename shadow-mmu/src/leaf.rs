//! The pages a walk finds: one [`Leaf`], and the [`LeafRun`] in which the
//! walker reports consecutive ones, and the [`ShadowRun`] that a run
//! becomes once the policy has accepted every page in it.
//!
//! Runs keep the entries as the walker read them and decode as they are
//! iterated, so that a level-1 table goes from the walker through the
//! policy to the physical MMU without a per-page copy.

use crate::addr::{GpuVa, Iova, PageSize, VramOffset};
use crate::entry::{GuestPte, PTE_ADDRESS_MASK, PTE_SYSTEM, PTE_WRITABLE};
use crate::pte::{Permissions, PteTarget, ShadowPte};

/// How many entries at the start of `entries` (as stored, little-endian)
/// `refuse` accepts (maps to 0). Whole blocks are checked first with no
/// branch per entry, so that the common case (a whole table of good
/// entries) vectorizes: `refuse` should be plain bit arithmetic, no
/// comparisons (baseline x86-64 has no 64-bit vector compare).
#[inline]
pub(crate) fn accepted_prefix(entries: &[u64], refuse: impl Fn(u64) -> u64) -> usize {
    const BLOCK: usize = 16;
    let scalar = |block: &[u64]| {
        block
            .iter()
            .take_while(|&&raw| refuse(u64::from_le(raw)) == 0)
            .count()
    };
    let mut blocks = entries.chunks_exact(BLOCK);
    let mut count = 0;
    for block in &mut blocks {
        let mut refused = [0u64; BLOCK];
        for (refused, &raw) in refused.iter_mut().zip(block) {
            *refused = refuse(u64::from_le(raw));
        }
        if refused.iter().fold(0, |all, &one| all | one) != 0 {
            return count + scalar(block);
        }
        count += BLOCK;
    }
    count + scalar(blocks.remainder())
}

/// [`accepted_prefix`], and the [`RunBits`] of the accepted entries,
/// which the walker gathers so that the policy can accept a run whole
/// without a pass of its own. The entries are in L1 cache by then, and a
/// reduction with no early exit vectorizes where a fused loop does not.
#[inline]
pub(crate) fn accepted_run(entries: &[u64], refuse: impl Fn(u64) -> u64) -> (usize, RunBits) {
    let count = accepted_prefix(entries, refuse);
    (count, RunBits::of(&entries[..count]))
}

/// The OR and the AND of a run's entries (decoded): every entry has every
/// bit of `all` and no bit outside `any`, so `all`'s address is at most
/// the lowest address in the run and `any`'s at least the highest. Bounds
/// of a run stay bounds of any part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunBits {
    pub any: u64,
    pub all: u64,
}

impl RunBits {
    /// The bits of `entries` (as stored, little-endian), in a pass with
    /// no exit (which vectorizes).
    pub(crate) fn of(entries: &[u64]) -> Self {
        let (mut any, mut all) = (0, !0);
        for &raw in entries {
            any |= u64::from_le(raw);
            all &= u64::from_le(raw);
        }
        Self { any, all }
    }
}

/// A page the guest tables map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Leaf {
    /// First VA of the page (the whole page, even where the walked range
    /// covers only part of a 2 MiB page).
    pub va: GpuVa,
    /// The page size.
    pub size: PageSize,
    /// The first byte of the page.
    pub target: PteTarget,
    /// The effective permission: writable only if every entry on the path
    /// is.
    pub permissions: Permissions,
}

/// Consecutive entries of one table that all map pages of one size, with
/// the permission of the path above them.
#[derive(Clone, Copy, Debug)]
pub struct LeafRun<'a> {
    /// VA of the first entry's page.
    va: u64,
    size: PageSize,
    /// The entries as stored (little-endian), each one a page at its
    /// level: only the walker builds runs, from entries that decode as
    /// pages.
    entries: &'a [u64],
    /// Every entry on the path above is writable.
    writable: bool,
    /// Bounds on the entries (of a run this one was split from, perhaps).
    bits: RunBits,
}

impl<'a> LeafRun<'a> {
    pub(crate) fn new(va: u64, size: PageSize, entries: &'a [u64], writable: bool) -> Self {
        Self::with_bits(va, size, entries, writable, RunBits::of(entries))
    }

    /// [`LeafRun::new`] with the bits of `entries` already gathered.
    #[inline]
    pub(crate) fn with_bits(
        va: u64,
        size: PageSize,
        entries: &'a [u64],
        writable: bool,
        bits: RunBits,
    ) -> Self {
        Self {
            va,
            size,
            entries,
            writable,
            bits,
        }
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the run is empty (the walker never reports one that is).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The page size.
    pub fn size(&self) -> PageSize {
        self.size
    }

    /// First VA of the first page.
    pub fn va(&self) -> GpuVa {
        GpuVa(self.va)
    }

    /// Whether every entry on the path above the run is writable.
    pub(crate) fn path_writable(&self) -> bool {
        self.writable
    }

    /// The raw entries (as stored, little-endian).
    pub(crate) fn entries(&self) -> &'a [u64] {
        self.entries
    }

    /// Bounds on the entries' bits.
    pub(crate) fn bits(&self) -> RunBits {
        self.bits
    }

    /// The `index`th page.
    #[inline]
    fn leaf(&self, index: usize, raw: u64) -> Leaf {
        let (target, permissions) = GuestPte::page_parts(u64::from_le(raw));
        Leaf {
            va: GpuVa(self.va + index as u64 * self.size.bytes()),
            size: self.size,
            target,
            permissions: Permissions {
                writable: self.writable && permissions.writable,
            },
        }
    }

    /// The first page, if any.
    pub fn first(&self) -> Option<Leaf> {
        self.entries.first().map(|&raw| self.leaf(0, raw))
    }

    /// The first `n` pages and the rest (`n` at most the length).
    pub(crate) fn split_at(self, n: usize) -> (LeafRun<'a>, LeafRun<'a>) {
        let (head, tail) = self.entries.split_at(n);
        let tail_va = self.va + n as u64 * self.size.bytes();
        (
            LeafRun {
                entries: head,
                ..self
            },
            LeafRun {
                va: tail_va,
                entries: tail,
                ..self
            },
        )
    }

    /// The pages, in VA order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = Leaf> + 'a {
        let run = *self;
        self.entries
            .iter()
            .enumerate()
            .map(move |(index, &raw)| run.leaf(index, raw))
    }
}

/// A run of pages that the policy accepted, every one of them: what a
/// [`crate::PhysicalMmu`] may program in one go. Only the policy builds it.
#[derive(Clone, Copy, Debug)]
pub struct ShadowRun<'a> {
    run: LeafRun<'a>,
}

impl<'a> ShadowRun<'a> {
    /// Only `Validator::split` builds runs, after checking every page.
    pub(crate) fn new(run: LeafRun<'a>) -> Self {
        Self { run }
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.run.len()
    }

    /// Whether the run is empty (the builder never programs one that is).
    pub fn is_empty(&self) -> bool {
        self.run.is_empty()
    }

    /// The page size.
    pub fn size(&self) -> PageSize {
        self.run.size
    }

    /// First VA of the first page; page `n` is at `va + n × size`.
    pub fn va(&self) -> GpuVa {
        self.run.va()
    }

    /// Bounds on the entries' bits.
    pub(crate) fn bits(&self) -> RunBits {
        self.run.bits()
    }

    /// The first `n` pages and the rest (`n` at most the length): parts
    /// of an accepted run are accepted, and its bits stay bounds of them.
    pub(crate) fn split_at(self, n: usize) -> (ShadowRun<'a>, ShadowRun<'a>) {
        let (head, tail) = self.run.split_at(n);
        (ShadowRun { run: head }, ShadowRun { run: tail })
    }

    /// The page addresses (VRAM offsets or IOVAs), in VA order, and
    /// whether they are IOVAs: a run stays in one space.
    #[inline]
    pub(crate) fn addresses(&self) -> (bool, impl Iterator<Item = u64> + 'a) {
        let system = self
            .run
            .entries
            .first()
            .is_some_and(|&raw| u64::from_le(raw) & PTE_SYSTEM != 0);
        let addresses = self
            .run
            .entries
            .iter()
            .map(|&raw| u64::from_le(raw) & PTE_ADDRESS_MASK);
        (system, addresses)
    }

    /// Each page's VA and validated entry, in VA order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (GpuVa, ShadowPte)> + 'a {
        // The space is the run's, not each entry's, so that the loop a
        // backend runs over it has no branch per page and vectorizes.
        let (system, _) = self.addresses();
        let LeafRun {
            va,
            size,
            entries,
            writable,
            ..
        } = self.run;
        let step = size.bytes();
        // The VA as a running sum, which vectorizes as one add per lane
        // where `va + index × step` takes a shift and two adds.
        let mut next_va = va;
        entries.iter().map(move |&raw| {
            let va = next_va;
            next_va = next_va.wrapping_add(step);
            let raw = u64::from_le(raw);
            let address = raw & PTE_ADDRESS_MASK;
            let target = if system {
                PteTarget::System(Iova(address))
            } else {
                PteTarget::Vram(VramOffset(address))
            };
            let permissions = Permissions {
                writable: writable && raw & PTE_WRITABLE != 0,
            };
            (GpuVa(va), ShadowPte::new(target, size, permissions))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_prefix_finds_the_first_refusal_in_any_block() {
        let entries: Vec<u64> = (0..100).map(|n: u64| n.to_le()).collect();
        for bad in [0u64, 1, 15, 16, 17, 63, 64, 95, 99] {
            let count = accepted_prefix(&entries, |raw| u64::from(raw == bad));
            assert_eq!(count as u64, bad);
        }
        assert_eq!(accepted_prefix(&entries, |_| 0), 100);
        assert_eq!(accepted_prefix(&[], |_| 1), 0);
    }

    #[test]
    fn accepted_run_gathers_the_bits_of_the_accepted_entries_only() {
        let mut entries: Vec<u64> = (0..40).map(|n: u64| (n << 12 | 1).to_le()).collect();
        entries[33] = (1u64 << 40).to_le();
        let (count, bits) = accepted_run(&entries, |raw| (raw & 1) ^ 1);
        assert_eq!(count, 33);
        assert_eq!(bits, RunBits::of(&entries[..33]));
        assert_eq!((bits.any, bits.all), (0x3_f001, 1));
    }

    #[test]
    fn a_run_yields_its_pages_with_the_paths_permission() {
        let entries = [0x5003u64.to_le(), 0x6001u64.to_le()];
        let run = LeafRun::new(0x20_0000, PageSize::Size4KiB, &entries, false);
        let leaves: Vec<_> = run.iter().collect();
        assert_eq!(leaves[1].va, GpuVa(0x20_1000));
        assert_eq!(
            leaves[0].target,
            PteTarget::Vram(crate::addr::VramOffset(0x5000))
        );
        assert!(leaves.iter().all(|leaf| !leaf.permissions.writable));
        let (head, tail) = run.split_at(1);
        assert_eq!((head.len(), tail.va()), (1, GpuVa(0x20_1000)));
    }
}
