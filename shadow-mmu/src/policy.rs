//! The validation policy: the one rule between a guest page-table entry and
//! the physical MMU.
//!
//! An entry is accepted only if its whole page lies in memory the vGPU owns:
//! a VRAM entry inside the vGPU's slice, a system entry inside one DMA
//! window (never straddling two, even adjacent ones, because each window is
//! a separate host mapping), and a writable entry only in a writable window.
//! Anything else becomes a [`PteRejection`]: the entry is not programmed,
//! the access faults, and the guest is told.

use thiserror::Error;

use crate::addr::{Iova, PageSize, VramOffset};
use crate::allowed::{AllowedSet, SystemWindow};
use crate::entry::{PTE_ADDRESS_MASK, PTE_SYSTEM, PTE_WRITABLE};
use crate::leaf::{Leaf, LeafRun, ShadowRun, accepted_prefix};
use crate::pte::{Permissions, PteTarget, ShadowPte};

/// Why a guest page-table entry was not programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum PteRejection {
    /// The target is not aligned to the entry's page size.
    #[error("{target} is not aligned to a {size} page")]
    Misaligned {
        /// What the entry pointed at.
        target: PteTarget,
        /// The entry's page size.
        size: PageSize,
    },
    /// The page runs past the end of the vGPU's VRAM slice.
    #[error("{size} page at VRAM {offset} is outside the {slice_size:#x}-byte VRAM slice")]
    OutsideVram {
        /// First byte of the page.
        offset: VramOffset,
        /// The entry's page size.
        size: PageSize,
        /// Size of the vGPU's slice in bytes.
        slice_size: u64,
    },
    /// No single DMA window holds the whole page.
    #[error("{size} page at IOVA {iova} is not inside one DMA window")]
    NotMapped {
        /// First byte of the page.
        iova: Iova,
        /// The entry's page size.
        size: PageSize,
    },
    /// A writable entry points into a read-only DMA window.
    #[error("writable {size} page at IOVA {iova} is in a read-only DMA window")]
    ReadOnly {
        /// First byte of the page.
        iova: Iova,
        /// The entry's page size.
        size: PageSize,
    },
}

/// Checks one guest entry mapping a `size` page at `target` with
/// `permissions` against what the vGPU owns, and returns the entry that may
/// be programmed.
pub fn validate(
    target: PteTarget,
    size: PageSize,
    permissions: Permissions,
    allowed: &(impl AllowedSet + ?Sized),
) -> Result<ShadowPte, PteRejection> {
    Validator::new(allowed).check(target, size, permissions)
}

/// The policy for many entries in a row: [`validate`] with what it needs
/// from the allowed set looked up once, the slice size, and the DMA window
/// of the last system page (walks meet pages in VA order, and neighbouring
/// pages mostly share a window). The allowed set must not change while a
/// validator is in use, which its shared borrow makes the owner's rule.
#[derive(Debug)]
pub struct Validator<'a, A: ?Sized> {
    allowed: &'a A,
    vram_size: u64,
    window: Option<SystemWindow>,
}

impl<'a, A: AllowedSet + ?Sized> Validator<'a, A> {
    /// A validator against `allowed`.
    pub fn new(allowed: &'a A) -> Self {
        Self {
            allowed,
            vram_size: allowed.vram_size(),
            window: None,
        }
    }

    /// Exactly what [`validate`] says of the same entry.
    #[inline]
    pub fn check(
        &mut self,
        target: PteTarget,
        size: PageSize,
        permissions: Permissions,
    ) -> Result<ShadowPte, PteRejection> {
        let aligned = match target {
            PteTarget::Vram(offset) => offset.is_aligned(size),
            PteTarget::System(iova) => iova.is_aligned(size),
        };
        if !aligned {
            return Err(PteRejection::Misaligned { target, size });
        }
        match target {
            PteTarget::Vram(offset) => {
                let inside = offset
                    .checked_add(size.bytes())
                    .is_some_and(|end| end.0 <= self.vram_size);
                if !inside {
                    return Err(PteRejection::OutsideVram {
                        offset,
                        size,
                        slice_size: self.vram_size,
                    });
                }
            }
            PteTarget::System(iova) => {
                let window = match self.window {
                    // Windows never overlap, so the cached window holding
                    // the whole page is the one a lookup would find.
                    Some(window) if window.contains(iova, size.bytes()) => window,
                    _ => {
                        let window = self
                            .allowed
                            .system_window(iova)
                            .filter(|window| window.contains(iova, size.bytes()))
                            .ok_or(PteRejection::NotMapped { iova, size })?;
                        self.window = Some(window);
                        window
                    }
                };
                if permissions.writable && !window.writable {
                    return Err(PteRejection::ReadOnly { iova, size });
                }
            }
        }
        Ok(ShadowPte::new(target, size, permissions))
    }

    /// Splits `run` (not empty) into its longest prefix that the policy
    /// accepts whole, or its first page with the reason it is refused,
    /// and the rest of the run.
    ///
    /// Decides exactly what [`Validator::check`] decides page by page: the
    /// first page is checked in full, and the pages after it are accepted
    /// while they stay in the same space and inside the same bound (the
    /// slice, or the first page's window with its permission): at once
    /// when the OR and AND of its entries (gathered by the walker) show
    /// that every page does, else with one comparison per page.
    #[inline]
    pub fn split<'r>(&mut self, run: LeafRun<'r>) -> RunSplit<'r> {
        let Some(first) = run.first() else {
            return RunSplit::Accepted(ShadowRun::new(run), run);
        };
        if let Err(rejection) = self.check(first.target, first.size, first.permissions) {
            let (_, rest) = run.split_at(1);
            return RunSplit::Refused(first, rejection, rest);
        }
        let len = first.size.bytes();
        // The bounds the first page passed: pages at `low..=high`, in the
        // first page's space, writable or not.
        let (system, low, high, may_write) = match first.target {
            PteTarget::Vram(_) => (0, 0, self.vram_size - len, true),
            PteTarget::System(_) => match self.window {
                Some(window) => (
                    PTE_SYSTEM,
                    window.iova.0,
                    window.iova.0 + (window.size - len),
                    window.writable,
                ),
                // `check` caches the window of every system page it
                // accepts, so this is not reached; an empty bound keeps
                // the run to its first page if it were.
                None => (PTE_SYSTEM, 1, 0, false),
            },
        };
        // No address exceeds the mask, so clamping `high` to it changes
        // nothing and keeps both bounds below 2^63, where a wrapped
        // difference has its top bit set exactly when it is negative.
        let high = high.min(PTE_ADDRESS_MASK);
        let refused_writes = if run.path_writable() && !may_write {
            PTE_WRITABLE
        } else {
            0
        };
        // The common case, a table of pages in one space and bound, is
        // decided from the bits the walker gathered, without a pass.
        let bits = run.bits();
        let whole = (bits.any ^ bits.all) & PTE_SYSTEM == 0
            && bits.all & PTE_ADDRESS_MASK >= low
            && bits.any & PTE_ADDRESS_MASK <= high
            && bits.any & refused_writes == 0;
        let accepted = if whole {
            run.len()
        } else {
            1 + accepted_prefix(&run.entries()[1..], |raw| {
                let address = raw & PTE_ADDRESS_MASK;
                ((raw & PTE_SYSTEM) ^ system)
                    | (address.wrapping_sub(low) >> 63)
                    | (high.wrapping_sub(address) >> 63)
                    | (raw & refused_writes)
            })
        };
        let (head, rest) = run.split_at(accepted);
        RunSplit::Accepted(ShadowRun::new(head), rest)
    }
}

/// What [`Validator::split`] made of a run.
#[derive(Debug)]
pub enum RunSplit<'r> {
    /// The longest accepted prefix, and the rest of the run.
    Accepted(ShadowRun<'r>, LeafRun<'r>),
    /// The first page, refused, and the rest of the run.
    Refused(Leaf, PteRejection, LeafRun<'r>),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use crate::testing::FixedAllowed as Fixed;

    const RW: Permissions = Permissions { writable: true };
    const RO: Permissions = Permissions { writable: false };
    const SMALL: PageSize = PageSize::Size4KiB;
    const LARGE: PageSize = PageSize::Size2MiB;

    fn allowed() -> Fixed {
        Fixed {
            vram_size: 4 << 20,
            windows: vec![
                SystemWindow {
                    iova: Iova(0x10_0000),
                    size: 0x1_0000,
                    writable: false,
                },
                // Adjacent to the first, and writable.
                SystemWindow {
                    iova: Iova(0x11_0000),
                    size: 0x40_0000,
                    writable: true,
                },
            ],
        }
    }

    #[test]
    fn vram_entry_inside_the_slice_is_accepted() {
        let target = PteTarget::Vram(VramOffset((4 << 20) - 4096));
        let pte = validate(target, SMALL, RW, &allowed()).unwrap();
        assert_eq!(pte.target(), target);
        assert_eq!(pte.size(), SMALL);
        assert_eq!(pte.permissions(), RW);
    }

    #[test]
    fn vram_entry_past_the_slice_is_rejected() {
        let err = validate(PteTarget::Vram(VramOffset(4 << 20)), SMALL, RO, &allowed());
        assert!(matches!(err, Err(PteRejection::OutsideVram { .. })));
    }

    #[test]
    fn large_vram_page_running_past_the_slice_is_rejected() {
        let allowed = Fixed {
            vram_size: 3 << 20,
            windows: vec![],
        };
        let err = validate(PteTarget::Vram(VramOffset(2 << 20)), LARGE, RO, &allowed);
        assert!(matches!(err, Err(PteRejection::OutsideVram { .. })));
    }

    #[test]
    fn vram_entry_near_the_top_of_the_address_space_is_rejected() {
        let target = PteTarget::Vram(VramOffset(u64::MAX - 4095));
        let err = validate(target, SMALL, RO, &allowed());
        assert!(matches!(err, Err(PteRejection::OutsideVram { .. })));
    }

    #[test]
    fn misaligned_entry_is_rejected() {
        let target = PteTarget::Vram(VramOffset(0x1000));
        let err = validate(target, LARGE, RO, &allowed());
        assert_eq!(
            err,
            Err(PteRejection::Misaligned {
                target,
                size: LARGE
            })
        );
    }

    #[test]
    fn system_entry_inside_a_window_is_accepted() {
        let target = PteTarget::System(Iova(0x10_f000));
        assert!(validate(target, SMALL, RO, &allowed()).is_ok());
    }

    #[test]
    fn system_entry_outside_every_window_is_rejected() {
        let target = PteTarget::System(Iova(0x0f_f000));
        let err = validate(target, SMALL, RO, &allowed());
        assert!(matches!(err, Err(PteRejection::NotMapped { .. })));
    }

    #[test]
    fn system_entry_straddling_two_windows_is_rejected() {
        // The 2 MiB page covers both 1 MiB windows exactly, yet
        // adjacent windows are still two host mappings.
        let allowed = Fixed {
            vram_size: 0,
            windows: vec![
                SystemWindow {
                    iova: Iova(0x20_0000),
                    size: 0x10_0000,
                    writable: true,
                },
                SystemWindow {
                    iova: Iova(0x30_0000),
                    size: 0x10_0000,
                    writable: true,
                },
            ],
        };
        let target = PteTarget::System(Iova(0x20_0000));
        let err = validate(target, LARGE, RO, &allowed);
        assert!(matches!(err, Err(PteRejection::NotMapped { .. })));
    }

    #[test]
    fn writable_entry_in_a_read_only_window_is_rejected() {
        let target = PteTarget::System(Iova(0x10_0000));
        let err = validate(target, SMALL, RW, &allowed());
        assert!(matches!(err, Err(PteRejection::ReadOnly { .. })));
    }

    #[test]
    fn writable_entry_in_a_writable_window_is_accepted() {
        let target = PteTarget::System(Iova(0x20_0000));
        let pte = validate(target, LARGE, RW, &allowed()).unwrap();
        assert!(pte.permissions().writable);
    }

    fn any_allowed() -> impl Strategy<Value = Fixed> {
        // Windows are built from gaps and lengths in 4 KiB units so they
        // never overlap, but may touch.
        let window = (0u64..64, 1u64..1024, any::<bool>());
        (0u64..=8 << 20, prop::collection::vec(window, 0..6)).prop_map(|(vram_size, parts)| {
            let mut next = 0u64;
            let windows = parts
                .into_iter()
                .map(|(gap, pages, writable)| {
                    let iova = Iova(next + gap * 4096);
                    next = iova.0 + pages * 4096;
                    SystemWindow {
                        iova,
                        size: pages * 4096,
                        writable,
                    }
                })
                .collect();
            Fixed { vram_size, windows }
        })
    }

    fn any_target() -> impl Strategy<Value = PteTarget> {
        // Mostly near the allowed ranges, sometimes anywhere.
        let addr = prop_oneof![
            4 => (0u64..(16 << 20) / 4096).prop_map(|page| page * 4096),
            1 => any::<u64>(),
        ];
        (any::<bool>(), addr).prop_map(|(vram, addr)| {
            if vram {
                PteTarget::Vram(VramOffset(addr))
            } else {
                PteTarget::System(Iova(addr))
            }
        })
    }

    fn any_size() -> impl Strategy<Value = PageSize> {
        prop_oneof![Just(SMALL), Just(LARGE)]
    }

    proptest! {
        #[test]
        fn accepted_entries_lie_inside_the_allowed_set_and_owned_pages_are_accepted(
            allowed in any_allowed(),
            target in any_target(),
            size in any_size(),
            writable in any::<bool>(),
        ) {
            let permissions = Permissions { writable };
            let result = validate(target, size, permissions, &allowed);
            prop_assert_eq!(result.is_ok(), allowed.owns(target, size, permissions));
            if let Ok(pte) = result {
                prop_assert_eq!(pte.target(), target);
                prop_assert_eq!(pte.size(), size);
                prop_assert_eq!(pte.permissions(), permissions);
            }
        }
    }

    proptest! {
        #[test]
        fn a_validator_checking_many_entries_agrees_with_validate(
            allowed in any_allowed(),
            entries in prop::collection::vec((any_target(), any_size(), any::<bool>()), 1..32),
        ) {
            let mut validator = Validator::new(&allowed);
            for (target, size, writable) in entries {
                let permissions = Permissions { writable };
                prop_assert_eq!(
                    validator.check(target, size, permissions),
                    validate(target, size, permissions, &allowed)
                );
            }
        }
    }

    /// A level-1 page entry (as stored) for a page in the first 16 MiB of
    /// either space.
    fn any_page_entry() -> impl Strategy<Value = u64> {
        (0u64..4096, any::<bool>(), any::<bool>()).prop_map(|(page, system, writable)| {
            let mut raw = (page << 12) | crate::entry::PTE_VALID;
            if system {
                raw |= PTE_SYSTEM;
            }
            if writable {
                raw |= PTE_WRITABLE;
            }
            raw.to_le()
        })
    }

    proptest! {
        #[test]
        fn splitting_a_run_decides_each_page_as_validate_does(
            allowed in any_allowed(),
            entries in prop::collection::vec(any_page_entry(), 1..80),
            path_writable in any::<bool>(),
            first_page in 0u64..512,
        ) {
            let va = (5 << 30) + first_page * 4096;
            let mut run = LeafRun::new(va, SMALL, &entries, path_writable);
            let expected: Vec<_> = run
                .iter()
                .map(|leaf| (leaf.va, validate(leaf.target, leaf.size, leaf.permissions, &allowed)))
                .collect();
            let mut validator = Validator::new(&allowed);
            let mut decided = Vec::new();
            while !run.is_empty() {
                run = match validator.split(run) {
                    RunSplit::Accepted(accepted, rest) => {
                        prop_assert!(!accepted.is_empty());
                        decided.extend(accepted.iter().map(|(va, pte)| (va, Ok(pte))));
                        rest
                    }
                    RunSplit::Refused(leaf, rejection, rest) => {
                        decided.push((leaf.va, Err(rejection)));
                        rest
                    }
                };
            }
            prop_assert_eq!(decided, expected);
        }
    }

    #[test]
    fn a_run_stops_at_the_first_page_outside_the_slice() {
        let allowed = allowed();
        let entries: Vec<u64> = [0x1000u64, 0x2000, (4 << 20) - 0x1000, 4 << 20, 0x3000]
            .iter()
            .map(|&address| (address | crate::entry::PTE_VALID).to_le())
            .collect();
        let run = LeafRun::new(0, SMALL, &entries, true);
        let RunSplit::Accepted(accepted, rest) = Validator::new(&allowed).split(run) else {
            panic!("the first page is inside the slice");
        };
        assert_eq!(accepted.len(), 3);
        assert_eq!(rest.va(), crate::addr::GpuVa(0x3000));
        let RunSplit::Refused(leaf, rejection, rest) = Validator::new(&allowed).split(rest) else {
            panic!("the page at 4 MiB is past the slice");
        };
        assert_eq!(leaf.target, PteTarget::Vram(VramOffset(4 << 20)));
        assert!(matches!(rejection, PteRejection::OutsideVram { .. }));
        assert_eq!(rest.len(), 1);
    }
}
