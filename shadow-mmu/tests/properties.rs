//! Property tests of the whole shadow path: random guest page-table
//! forests in fake memory, valid and hostile (pages and tables outside the
//! slice or the windows, writable pages over read-only windows, pages
//! straddling two windows or the slice end, cycles, shared subtrees,
//! fan-out through raw pointer writes), shadowed into the recording MMU.
//!
//! Whatever the tables hold, every programmed entry lies inside the
//! allowed set with the allowed permission and agrees with the reference
//! model; where no walk limit cut the walk short, every sampled VA
//! translates exactly as the reference model reads it from the tables.

mod forest;

use forest::*;
use proptest::prelude::*;
use shadow_mmu::testing::reference;
use shadow_mmu::testing::{RecordingMmu, check_contained, check_reference};
use shadow_mmu::{GpuVa, PageSize, PteTarget, ShadowMmu, VaRange, WalkLimits};

/// A change the guest makes before invalidating.
#[derive(Clone, Debug)]
enum Change {
    Map(Mapping),
    /// Removes the nth original mapping.
    Unmap(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        mapping(true).prop_map(Change::Map),
        any::<usize>().prop_map(Change::Unmap),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn valid_tables_translate_exactly_as_the_reference_model(
        placement in valid_placement(),
        mappings in prop::collection::vec(mapping(false), 1..24),
        read_only in prop::collection::vec(any::<usize>(), 0..4),
        offset in 0u64..4096,
    ) {
        let tables = forest(placement, &mappings, &read_only);
        let allowed = allowed();
        let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
        let summary = shadow
            .set_root(CTX, tables.root(), &tables.memory(), &allowed, &mut mmu)
            .unwrap();
        prop_assert_eq!(summary.fault_count, 0, "{:?}", summary.faults);
        prop_assert!(!mmu.is_empty());
        check_contained(&mmu, &allowed);
        check_reference(&shadow, &mmu, &tables.vram, &tables.system, &allowed);
        let mut vas = sample_vas(offset);
        vas.extend(mappings.iter().map(|m| GpuVa(m.va.0 + offset)));
        agrees_at(&vas, tables.root(), &tables, &allowed, &mmu)?;
    }

    #[test]
    fn hostile_tables_never_map_outside_the_allowed_set(
        placement in any_placement(),
        mappings in prop::collection::vec(mapping(true), 0..24),
        writes in writes(48),
        cycles in prop::collection::vec(cycle(), 0..3),
        root in root(),
        max_tables in prop_oneof![3 => Just(4096u32), 1 => 1u32..8],
        offset in 0u64..4096,
    ) {
        let mut tables = forest(placement, &mappings, &[]);
        if !mappings.is_empty() {
            for (pick, level, ancestor) in &cycles {
                loop_back(&mut tables, pick.get(&mappings), *level, *ancestor);
            }
        }
        apply(&mut tables, &writes);
        let root = root.raw(&tables);
        let allowed = allowed();
        let limits = WalkLimits { max_tables, ..WalkLimits::default() };
        let (mut shadow, mut mmu) = (ShadowMmu::new(limits), RecordingMmu::new());
        let summary = shadow
            .set_root(CTX, root, &tables.memory(), &allowed, &mut mmu)
            .unwrap();
        check_contained(&mmu, &allowed);
        check_reference(&shadow, &mmu, &tables.vram, &tables.system, &allowed);
        if !summary.walk.limited {
            let mut vas = sample_vas(offset);
            vas.extend(mappings.iter().map(|m| GpuVa(m.va.0 + offset)));
            agrees_at(&vas, root, &tables, &allowed, &mmu)?;
        }
    }

    #[test]
    fn revoking_a_window_removes_exactly_the_entries_into_it(
        placement in any_placement(),
        mappings in prop::collection::vec(mapping(true), 0..24),
        writes in writes(16),
        window in 0usize..3,
    ) {
        let mut tables = forest(placement, &mappings, &[]);
        apply(&mut tables, &writes);
        let mut allowed = allowed();
        let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
        shadow
            .set_root(CTX, tables.root(), &tables.memory(), &allowed, &mut mmu)
            .unwrap();
        let before: Vec<_> = mmu.entries().map(|(_, va, pte)| (va, *pte)).collect();
        let removed = allowed.windows.remove(window);
        let end = removed.iova.0 + removed.size;
        let into = |target: PteTarget, size: PageSize| match target {
            PteTarget::System(iova) => iova.0 < end && removed.iova.0 < iova.0 + size.bytes(),
            PteTarget::Vram(_) => false,
        };
        let count = shadow
            .revoke_system_range(removed.iova, removed.size, &mut mmu)
            .unwrap();
        let expected: Vec<_> = before
            .iter()
            .copied()
            .filter(|(_, pte)| !into(pte.target(), pte.size()))
            .collect();
        let after: Vec<_> = mmu.entries().map(|(_, va, pte)| (va, *pte)).collect();
        prop_assert_eq!(count, before.len() - expected.len());
        prop_assert_eq!(after, expected);
        check_contained(&mmu, &allowed);
    }

    #[test]
    fn an_invalidation_re_shadows_its_range_and_leaves_the_rest(
        mappings in prop::collection::vec(mapping(false), 1..16),
        changes in prop::collection::vec(change(), 1..8),
        writes in writes(4),
        near in any::<prop::sample::Index>(),
        back in 0u64..1024,
        pages in 1u64..2048,
        offset in 0u64..4096,
    ) {
        let mut tables = forest(valid_placement_fixed(), &mappings, &[]);
        let allowed = allowed();
        let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
        shadow
            .set_root(CTX, tables.root(), &tables.memory(), &allowed, &mut mmu)
            .unwrap();
        let mut vas = sample_vas(offset);
        vas.extend(mappings.iter().map(|m| GpuVa(m.va.0 + offset)));
        let mut changed = Vec::new();
        for change in &changes {
            match change {
                Change::Map(m) => {
                    tables.map(m.va, m.size, m.target, m.writable, m.space);
                    changed.push(m.va);
                }
                Change::Unmap(n) => {
                    let m = &mappings[n % mappings.len()];
                    unmap(&mut tables, m);
                    changed.push(m.va);
                }
            }
        }
        apply(&mut tables, &writes);
        vas.extend(changed.iter().map(|va| GpuVa(va.0 + offset)));
        let before: Vec<_> = vas.iter().map(|&va| mmu_translation(&mmu, va)).collect();

        // A range that starts a little before one of the changes.
        let start = near.get(&changed).0.saturating_sub(back * 4096);
        let len = (pages * 4096).min(shadow_mmu::GPU_VA_SPACE - start);
        let range = VaRange::new(GpuVa(start), len).unwrap();
        let summary = shadow
            .invalidate(CTX, range, &tables.memory(), &allowed, &mut mmu)
            .unwrap();
        let walked = summary.range.unwrap();
        check_contained(&mmu, &allowed);
        for (&va, old) in vas.iter().zip(before) {
            let now = mmu_translation(&mmu, va);
            if walked.contains(va) {
                let expected = reference::translate(
                    tables.root(), va, &tables.vram, &tables.system, &allowed,
                );
                prop_assert_eq!(now, expected, "re-walked {}", va);
            } else {
                prop_assert_eq!(now, old, "untouched {}", va);
            }
        }
    }
}
