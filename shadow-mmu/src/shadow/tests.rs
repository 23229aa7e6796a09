//! Tests of the shadow builder: one per rule an entry must pass before it
//! is programmed, invalidation, revocation and reset.

use super::*;
use crate::addr::GPU_VA_SPACE;
use crate::addr::VramOffset;
use crate::allowed::SystemWindow;
use crate::entry::{ENTRIES_PER_TABLE, GuestPte, PTE_VALID, PTE_WRITABLE};
use crate::fault_log::MAX_RANGES;
use crate::policy::PteRejection;
use crate::pte::{Permissions, PteTarget, ShadowPte};
use crate::testing::{FixedAllowed, FlatMemory, RecordingMmu, TableBuilder, TableSpace};

const MIB: u64 = 1 << 20;
const CTX: ContextId = ContextId(3);
const OTHER: ContextId = ContextId(4);
const RW: Permissions = Permissions { writable: true };
const RO: Permissions = Permissions { writable: false };
const SMALL: PageSize = PageSize::Size4KiB;
const LARGE: PageSize = PageSize::Size2MiB;

/// VRAM slice 8 MiB; windows: 2–6 MiB writable, 6–8 MiB read-only,
/// 8–10 MiB writable (adjacent to the read-only one).
fn allowed() -> FixedAllowed {
    FixedAllowed {
        vram_size: 8 * MIB,
        windows: vec![
            SystemWindow {
                iova: Iova(2 * MIB),
                size: 4 * MIB,
                writable: true,
            },
            SystemWindow {
                iova: Iova(6 * MIB),
                size: 2 * MIB,
                writable: false,
            },
            SystemWindow {
                iova: Iova(8 * MIB),
                size: 2 * MIB,
                writable: true,
            },
        ],
    }
}

fn builder() -> TableBuilder {
    TableBuilder::new(
        FlatMemory::new(MIB as usize),
        0x1_0000,
        FlatMemory::new(10 * MIB as usize),
        2 * MIB,
        TableSpace::Vram,
    )
}

fn vram(offset: u64) -> PteTarget {
    PteTarget::Vram(VramOffset(offset))
}

fn system(iova: u64) -> PteTarget {
    PteTarget::System(Iova(iova))
}

fn range(start: u64, len: u64) -> VaRange {
    VaRange::new(GpuVa(start), len).unwrap()
}

fn set_root(
    shadow: &mut ShadowMmu,
    ctx: ContextId,
    tables: &TableBuilder,
    mmu: &mut RecordingMmu,
) -> ShadowSummary {
    shadow
        .set_root(ctx, tables.root(), &tables.memory(), &allowed(), mmu)
        .unwrap()
}

fn invalidate(
    shadow: &mut ShadowMmu,
    range: VaRange,
    tables: &TableBuilder,
    mmu: &mut RecordingMmu,
) -> ShadowSummary {
    shadow
        .invalidate(CTX, range, &tables.memory(), &allowed(), mmu)
        .unwrap()
}

/// What `va` of `ctx` maps to in the physical MMU.
fn mapped(mmu: &RecordingMmu, ctx: ContextId, va: u64) -> Option<(PteTarget, Permissions)> {
    mmu.translate(ctx, GpuVa(va))
}

#[test]
fn set_root_maps_every_valid_page() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, vram(0x3000), true, TableSpace::Vram);
    tables.map(
        GpuVa(4 * MIB),
        LARGE,
        system(2 * MIB),
        true,
        TableSpace::Vram,
    );
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    let summary = set_root(&mut shadow, CTX, &tables, &mut mmu);
    assert_eq!(summary.mapped, 2);
    assert_eq!(summary.fault_count, 0);
    assert_eq!(summary.range, Some(VaRange::ALL));
    assert_eq!(mapped(&mmu, CTX, 0x123), Some((vram(0x3123), RW)));
    assert_eq!(mapped(&mmu, CTX, 5 * MIB), Some((system(3 * MIB), RW)));
    assert_eq!(mmu.len(), 2);
    assert_eq!(shadow.system_entries(), 1);
    assert_eq!(shadow.root(CTX), Some(tables.root()));
}

#[test]
fn a_vram_page_straddling_the_slice_end_is_not_mapped() {
    let mut tables = builder();
    tables.map(
        GpuVa(0),
        SMALL,
        vram(8 * MIB - 0x1000),
        false,
        TableSpace::Vram,
    );
    // A 2 MiB page at 7 MiB would run 1 MiB past the slice; at 6 MiB it
    // ends exactly at the slice end.
    let l2 = tables.table_for(GpuVa(0), Level::L2, TableSpace::Vram);
    tables.set_raw(l2, 1, (6 * MIB) | PTE_VALID | crate::entry::PTE_LARGE);
    tables.set_raw(l2, 2, (8 * MIB) | PTE_VALID | crate::entry::PTE_LARGE);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    let summary = set_root(&mut shadow, CTX, &tables, &mut mmu);
    assert_eq!(summary.mapped, 2);
    assert_eq!(mapped(&mmu, CTX, 0), Some((vram(8 * MIB - 0x1000), RO)));
    assert!(mapped(&mmu, CTX, 2 * MIB).is_some());
    assert_eq!(mapped(&mmu, CTX, 4 * MIB), None);
    assert!(matches!(
        summary.faults[..],
        [WalkFault {
            reason: FaultReason::Rejected(PteRejection::OutsideVram { .. }),
            ..
        }]
    ));
    assert_eq!(
        shadow.fault_code(CTX, GpuVa(5 * MIB)),
        Some(FaultCode::OutsideVram)
    );
}

#[test]
fn a_system_page_straddling_two_maps_is_not_mapped() {
    // Two adjacent windows, each holding half of a 2 MiB page: together
    // they cover it, but they are two host mappings.
    let split = FixedAllowed {
        vram_size: 8 * MIB,
        windows: vec![
            SystemWindow {
                iova: Iova(2 * MIB),
                size: MIB,
                writable: true,
            },
            SystemWindow {
                iova: Iova(3 * MIB),
                size: 3 * MIB,
                writable: true,
            },
        ],
    };
    let mut tables = builder();
    tables.map(
        GpuVa(2 * MIB),
        LARGE,
        system(2 * MIB),
        false,
        TableSpace::Vram,
    );
    tables.map(
        GpuVa(0),
        SMALL,
        system(3 * MIB - 0x1000),
        false,
        TableSpace::Vram,
    );
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    let summary = shadow
        .set_root(CTX, tables.root(), &tables.memory(), &split, &mut mmu)
        .unwrap();
    assert_eq!(mapped(&mmu, CTX, 2 * MIB), None);
    assert_eq!(
        mapped(&mmu, CTX, 0),
        Some((system(3 * MIB - 0x1000), RO)),
        "a 4 KiB page at the end of the first window is inside it"
    );
    assert!(matches!(
        summary.faults[..],
        [WalkFault {
            reason: FaultReason::Rejected(PteRejection::NotMapped { .. }),
            ..
        }]
    ));
}

#[test]
fn a_writable_page_over_a_read_only_map_is_not_mapped_but_a_read_only_one_is() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, system(6 * MIB), true, TableSpace::Vram);
    tables.map(
        GpuVa(0x1000),
        SMALL,
        system(6 * MIB + 0x1000),
        false,
        TableSpace::Vram,
    );
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    let summary = set_root(&mut shadow, CTX, &tables, &mut mmu);
    assert_eq!(mapped(&mmu, CTX, 0), None);
    assert_eq!(
        mapped(&mmu, CTX, 0x1000),
        Some((system(6 * MIB + 0x1000), RO))
    );
    assert_eq!(summary.faults.len(), 1);
    assert_eq!(summary.faults[0].reason.code(), FaultCode::ReadOnly);
    assert_eq!(shadow.fault_code(CTX, GpuVa(0)), Some(FaultCode::ReadOnly));
}

#[test]
fn a_writable_page_under_a_read_only_entry_is_mapped_read_only_even_over_a_read_only_map() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, system(6 * MIB), true, TableSpace::Vram);
    let l2 = tables.table_for(GpuVa(0), Level::L2, TableSpace::Vram);
    let raw = tables.entry(l2, 0);
    tables.set_raw(l2, 0, raw & !PTE_WRITABLE);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    let summary = set_root(&mut shadow, CTX, &tables, &mut mmu);
    assert_eq!(summary.fault_count, 0);
    assert_eq!(mapped(&mmu, CTX, 0), Some((system(6 * MIB), RO)));
}

#[test]
fn guest_changes_take_effect_only_after_an_invalidation() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, vram(0x1000), true, TableSpace::Vram);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, CTX, &tables, &mut mmu);
    tables.map(GpuVa(0), SMALL, vram(0x2000), true, TableSpace::Vram);
    assert_eq!(mapped(&mmu, CTX, 0), Some((vram(0x1000), RW)));
    invalidate(&mut shadow, range(0, 0x1000), &tables, &mut mmu);
    assert_eq!(mapped(&mmu, CTX, 0), Some((vram(0x2000), RW)));
}

#[test]
fn an_invalidation_re_walks_only_its_range() {
    let mut tables = builder();
    for chunk in 0..4 {
        tables.map(
            GpuVa(chunk * 2 * MIB),
            SMALL,
            vram(0x1000),
            true,
            TableSpace::Vram,
        );
    }
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, CTX, &tables, &mut mmu);
    // Change two chunks, invalidate only one of them.
    tables.map(GpuVa(2 * MIB), SMALL, vram(0x2000), true, TableSpace::Vram);
    tables.map(GpuVa(4 * MIB), SMALL, vram(0x2000), true, TableSpace::Vram);
    tables.vram.reset_tally();
    let summary = invalidate(&mut shadow, range(2 * MIB, 0x1000), &tables, &mut mmu);
    assert_eq!(summary.range, Some(range(2 * MIB, 2 * MIB)));
    assert_eq!(summary.mapped, 1);
    assert_eq!(mapped(&mmu, CTX, 2 * MIB), Some((vram(0x2000), RW)));
    assert_eq!(mapped(&mmu, CTX, 4 * MIB), Some((vram(0x1000), RW)));
    assert_eq!(mapped(&mmu, CTX, 0), Some((vram(0x1000), RW)));
    assert_eq!(mapped(&mmu, CTX, 6 * MIB), Some((vram(0x1000), RW)));
    // One read per level: an entry of each upper table, one level-1 table.
    assert_eq!(tables.vram.reads(), 4);
    assert_eq!(tables.vram.bytes_read(), 3 * 8 + 4096);
}

#[test]
fn an_invalidation_unmaps_pages_the_guest_removed() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, vram(0x1000), true, TableSpace::Vram);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, CTX, &tables, &mut mmu);
    let l1 = tables.table_for(GpuVa(0), Level::L1, TableSpace::Vram);
    tables.set(l1, 0, GuestPte::NotPresent);
    let summary = shadow
        .invalidate_all(CTX, &tables.memory(), &allowed(), &mut mmu)
        .unwrap();
    assert_eq!(summary.mapped, 0);
    assert!(summary.not_present > 0);
    assert!(mmu.is_empty());
}

#[test]
fn a_large_page_partly_in_the_range_is_replaced_whole() {
    let mut tables = builder();
    tables.map(GpuVa(2 * MIB), LARGE, vram(0), true, TableSpace::Vram);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, CTX, &tables, &mut mmu);
    tables.map(GpuVa(2 * MIB), LARGE, vram(2 * MIB), true, TableSpace::Vram);
    // A 4 KiB invalidation in the middle of the 2 MiB page.
    invalidate(&mut shadow, range(3 * MIB, 0x1000), &tables, &mut mmu);
    assert_eq!(mapped(&mmu, CTX, 2 * MIB), Some((vram(2 * MIB), RW)));
    assert_eq!(mmu.len(), 1);
}

#[test]
fn set_root_replaces_every_mapping_of_the_old_root() {
    let mut first = builder();
    first.map(GpuVa(0), SMALL, vram(0x1000), true, TableSpace::Vram);
    let mut second = TableBuilder::new(
        FlatMemory::new(MIB as usize),
        0x8_0000,
        FlatMemory::new(0),
        0,
        TableSpace::Vram,
    );
    second.map(GpuVa(MIB), SMALL, vram(0x2000), false, TableSpace::Vram);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, CTX, &first, &mut mmu);
    set_root(&mut shadow, CTX, &second, &mut mmu);
    assert_eq!(mapped(&mmu, CTX, 0), None);
    assert_eq!(mapped(&mmu, CTX, MIB), Some((vram(0x2000), RO)));
}

#[test]
fn contexts_are_shadowed_separately() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, vram(0x1000), true, TableSpace::Vram);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, CTX, &tables, &mut mmu);
    set_root(&mut shadow, OTHER, &tables, &mut mmu);
    tables.map(GpuVa(0), SMALL, vram(0x2000), true, TableSpace::Vram);
    invalidate(&mut shadow, VaRange::ALL, &tables, &mut mmu);
    assert_eq!(mapped(&mmu, CTX, 0), Some((vram(0x2000), RW)));
    assert_eq!(mapped(&mmu, OTHER, 0), Some((vram(0x1000), RW)));
}

#[test]
fn an_invalidation_of_a_context_without_a_root_does_nothing() {
    let tables = builder();
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    let summary = invalidate(&mut shadow, VaRange::ALL, &tables, &mut mmu);
    assert_eq!(summary.range, None);
    assert_eq!((mmu.unmaps, mmu.maps, mmu.invalidations), (0, 0, 0));
}

#[test]
fn every_re_shadow_flushes_the_contexts_tlb() {
    let tables = builder();
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, CTX, &tables, &mut mmu);
    invalidate(&mut shadow, range(0, 0x1000), &tables, &mut mmu);
    assert_eq!(mmu.invalidations, 2);
}

/// Three system pages in two windows, in two contexts, plus a VRAM page.
fn revocation_setup() -> (ShadowMmu, RecordingMmu) {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, system(2 * MIB), true, TableSpace::Vram);
    tables.map(
        GpuVa(0x1000),
        SMALL,
        system(3 * MIB),
        true,
        TableSpace::Vram,
    );
    tables.map(
        GpuVa(4 * MIB),
        LARGE,
        system(8 * MIB),
        true,
        TableSpace::Vram,
    );
    tables.map(GpuVa(0x2000), SMALL, vram(2 * MIB), true, TableSpace::Vram);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, CTX, &tables, &mut mmu);
    set_root(&mut shadow, OTHER, &tables, &mut mmu);
    assert_eq!(mmu.len(), 8);
    (shadow, mmu)
}

#[test]
fn revoke_removes_exactly_the_entries_into_the_range_in_every_context() {
    let (mut shadow, mut mmu) = revocation_setup();
    let invalidations = mmu.invalidations;
    let removed = shadow
        .revoke_system_range(Iova(3 * MIB), 7 * MIB, &mut mmu)
        .unwrap();
    assert_eq!(removed, 4);
    for ctx in [CTX, OTHER] {
        assert_eq!(mapped(&mmu, ctx, 0), Some((system(2 * MIB), RW)));
        assert_eq!(mapped(&mmu, ctx, 0x1000), None);
        assert_eq!(mapped(&mmu, ctx, 4 * MIB), None);
        assert_eq!(mapped(&mmu, ctx, 0x2000), Some((vram(2 * MIB), RW)));
        assert_eq!(
            shadow.fault_code(ctx, GpuVa(5 * MIB)),
            Some(FaultCode::NotMapped)
        );
    }
    assert_eq!(mmu.len(), 4);
    assert_eq!(shadow.system_entries(), 2);
    assert_eq!(mmu.invalidations, invalidations + 2);
}

#[test]
fn revoke_of_a_range_partly_over_a_page_removes_the_page() {
    let (mut shadow, mut mmu) = revocation_setup();
    let removed = shadow
        .revoke_system_range(Iova(9 * MIB), 1, &mut mmu)
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(mapped(&mmu, CTX, 4 * MIB), None);
}

#[test]
fn revoke_of_an_unused_range_touches_nothing() {
    let (mut shadow, mut mmu) = revocation_setup();
    let (unmaps, invalidations) = (mmu.unmaps, mmu.invalidations);
    let removed = shadow
        .revoke_system_range(Iova(64 * MIB), MIB, &mut mmu)
        .unwrap();
    assert_eq!(removed, 0);
    assert_eq!((mmu.unmaps, mmu.invalidations), (unmaps, invalidations));
}

#[test]
fn every_revoked_page_faults_as_not_mapped_however_many_there_are() {
    // More pages than the fault log holds ranges: adjacent revoked pages
    // are one range, so none of them reads as merely not present.
    const PAGES: u64 = 5000;
    let window = FixedAllowed {
        vram_size: 8 * MIB,
        windows: vec![SystemWindow {
            iova: Iova(32 * MIB),
            size: 32 * MIB,
            writable: true,
        }],
    };
    let mut tables = builder();
    for page in 0..PAGES {
        let at = page * 0x1000;
        tables.map(
            GpuVa(at),
            SMALL,
            system(32 * MIB + at),
            true,
            TableSpace::Vram,
        );
    }
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    shadow
        .set_root(CTX, tables.root(), &tables.memory(), &window, &mut mmu)
        .unwrap();
    assert_eq!(mmu.len(), PAGES as usize);
    let removed = shadow
        .revoke_system_range(Iova(32 * MIB), 32 * MIB, &mut mmu)
        .unwrap();
    assert_eq!(removed, PAGES as usize);
    for page in [0, 511, 512, 4095, 4096, PAGES - 1] {
        assert_eq!(
            shadow.fault_code(CTX, GpuVa(page * 0x1000)),
            Some(FaultCode::NotMapped),
            "page {page}"
        );
    }
    assert_eq!(shadow.fault_code(CTX, GpuVa(PAGES * 0x1000)), None);
}

#[test]
fn reset_unmaps_and_forgets_every_context() {
    let (mut shadow, mut mmu) = revocation_setup();
    shadow.reset(&mut mmu).unwrap();
    assert!(mmu.is_empty());
    assert_eq!(shadow.system_entries(), 0);
    assert_eq!(shadow.root(CTX), None);
    assert_eq!(shadow.root(OTHER), None);
}

#[test]
fn remove_context_leaves_the_others() {
    let (mut shadow, mut mmu) = revocation_setup();
    shadow.remove_context(CTX, &mut mmu).unwrap();
    assert_eq!(mapped(&mmu, CTX, 0), None);
    assert!(mapped(&mmu, OTHER, 0).is_some());
    assert_eq!(shadow.system_entries(), 3);
}

#[test]
fn the_summary_lists_the_first_faults_and_counts_them_all() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    let l1 = tables.table_for(GpuVa(0), Level::L1, TableSpace::Vram);
    for index in 0..100 {
        // Past the slice.
        tables.set_raw(l1, index, (16 * MIB + index as u64 * 0x1000) | PTE_VALID);
    }
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    let summary = set_root(&mut shadow, CTX, &tables, &mut mmu);
    assert_eq!(summary.fault_count, 100);
    assert_eq!(summary.faults.len(), MAX_REPORTED_FAULTS);
    assert_eq!(summary.faults[1].va, GpuVa(0x1000));
}

#[test]
fn a_walk_limit_is_reported_and_remembered() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    tables.map(GpuVa(1 << 39), SMALL, vram(0), true, TableSpace::Vram);
    let limits = WalkLimits {
        max_tables: 4,
        ..WalkLimits::default()
    };
    let (mut shadow, mut mmu) = (ShadowMmu::new(limits), RecordingMmu::new());
    let summary = set_root(&mut shadow, CTX, &tables, &mut mmu);
    assert_eq!(summary.mapped, 1);
    assert!(summary.walk.limited);
    assert_eq!(
        shadow.fault_code(CTX, GpuVa(1 << 39)),
        Some(FaultCode::WalkLimit)
    );
}

/// An MMU that fails its `n`th map call.
#[derive(Debug, Default)]
struct FailingMmu {
    inner: RecordingMmu,
    fail_at: u64,
    fail_read_back: bool,
}

impl PhysicalMmu for FailingMmu {
    fn map(
        &mut self,
        ctx: ContextId,
        va: GpuVa,
        size: PageSize,
        pte: &ShadowPte,
    ) -> Result<(), MmuError> {
        if self.inner.maps + 1 == self.fail_at {
            self.inner.maps += 1;
            return Err(MmuError::Backend("table full".into()));
        }
        self.inner.map(ctx, va, size, pte)
    }

    fn unmap(&mut self, ctx: ContextId, va: GpuVa, len: u64) -> Result<(), MmuError> {
        self.inner.unmap(ctx, va, len)
    }

    fn invalidate(&mut self, ctx: ContextId) {
        self.inner.invalidate(ctx);
    }

    fn mapped_pages(
        &self,
        ctx: ContextId,
        va: GpuVa,
        len: u64,
        each: &mut dyn FnMut(GpuVa, &ShadowPte),
    ) -> Result<(), MmuError> {
        if self.fail_read_back {
            return Err(MmuError::Backend("tables unreadable".into()));
        }
        self.inner.mapped_pages(ctx, va, len, each)
    }
}

#[test]
fn a_failing_map_is_reported_and_what_was_mapped_stays_revocable() {
    let mut tables = builder();
    for page in 0..4 {
        tables.map(
            GpuVa(page * 0x1000),
            SMALL,
            system(2 * MIB + page * 0x1000),
            true,
            TableSpace::Vram,
        );
    }
    let mut shadow = ShadowMmu::default();
    let mut mmu = FailingMmu {
        fail_at: 3,
        ..FailingMmu::default()
    };
    let err = shadow
        .set_root(CTX, tables.root(), &tables.memory(), &allowed(), &mut mmu)
        .unwrap_err();
    assert!(matches!(err, ShadowError::Mmu { ctx: CTX, .. }));
    assert_eq!(mmu.inner.len(), 2);
    assert_eq!(mmu.inner.invalidations, 1, "the TLB is flushed anyway");
    // The whole run is indexed before it is mapped, so the two pages the
    // MMU never took are indexed too: revoking them is harmless.
    assert_eq!(shadow.system_entries(), 4);
    shadow
        .revoke_system_range(Iova(0), u64::MAX, &mut mmu)
        .unwrap();
    assert!(mmu.inner.is_empty());
}

#[test]
fn a_chunk_the_mmu_cannot_read_back_is_revoked_whole() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, system(2 * MIB), true, TableSpace::Vram);
    tables.map(GpuVa(0x1000), SMALL, vram(0x1000), true, TableSpace::Vram);
    tables.map(GpuVa(2 * MIB), SMALL, vram(0x2000), true, TableSpace::Vram);
    let mut shadow = ShadowMmu::default();
    let mut mmu = FailingMmu {
        fail_read_back: true,
        ..FailingMmu::default()
    };
    shadow
        .set_root(CTX, tables.root(), &tables.memory(), &allowed(), &mut mmu)
        .unwrap();
    let removed = shadow
        .revoke_system_range(Iova(2 * MIB), 0x1000, &mut mmu)
        .unwrap();
    assert_eq!(removed, 1);
    // The VRAM page beside it goes too (more than needed, never less);
    // the next chunk, which maps no guest memory, stays.
    assert_eq!(mapped(&mmu.inner, CTX, 0), None);
    assert_eq!(mapped(&mmu.inner, CTX, 0x1000), None);
    assert_eq!(mapped(&mmu.inner, CTX, 2 * MIB), Some((vram(0x2000), RW)));
    assert_eq!(
        shadow.fault_code(CTX, GpuVa(0x1000)),
        Some(FaultCode::NotMapped)
    );
    assert_eq!(shadow.system_entries(), 0);
}

#[test]
fn an_invalidation_forgets_the_system_pages_it_replaced() {
    let mut tables = builder();
    tables.map(GpuVa(0), SMALL, system(2 * MIB), true, TableSpace::Vram);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, CTX, &tables, &mut mmu);
    tables.map(GpuVa(0), SMALL, vram(0x1000), true, TableSpace::Vram);
    invalidate(&mut shadow, range(0, 0x1000), &tables, &mut mmu);
    assert_eq!(shadow.system_entries(), 0);
    let removed = shadow
        .revoke_system_range(Iova(2 * MIB), 0x1000, &mut mmu)
        .unwrap();
    assert_eq!(removed, 0);
    assert_eq!(mapped(&mmu, CTX, 0), Some((vram(0x1000), RW)));
}

#[test]
fn invalidating_alternate_chunks_under_an_invalid_root_keeps_one_fault_range() {
    // The security review's attack: a root with a reserved bit faults over
    // the whole address space, and each invalidation of a 2 MiB chunk
    // splits that fault before the re-walk records the chunk again. It
    // used to add a range per invalidation, for ever.
    let tables = builder();
    let root = tables.root() | 1 << 52;
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    let summary = shadow
        .set_root(CTX, root, &tables.memory(), &allowed(), &mut mmu)
        .unwrap();
    assert_eq!(summary.fault_count, 1);
    for n in 0..20_000 {
        invalidate(
            &mut shadow,
            range(2 * n * 2 * MIB, 2 * MIB),
            &tables,
            &mut mmu,
        );
        assert_eq!(shadow.fault_ranges(CTX), 1);
    }
    for va in [0, 2 * MIB, 4 * MIB - 1, 80_000 * MIB, GPU_VA_SPACE - 1] {
        assert_eq!(
            shadow.fault_code(CTX, GpuVa(va)),
            Some(FaultCode::InvalidEntry)
        );
    }
}

#[test]
fn a_full_fault_log_stays_full_and_forgets_rather_than_misreports() {
    // One level-1 table whose even entries are invalid and odd ones not
    // present (256 faults that cannot join), under every entry of every
    // table above it: every 2 MiB chunk of the address space looks alike.
    let mut tables = builder();
    let l1 = tables.table_for(GpuVa(0), Level::L1, TableSpace::Vram);
    for index in (0..ENTRIES_PER_TABLE).step_by(2) {
        tables.set_raw(l1, index, 1 << 52 | PTE_VALID);
    }
    let mut child = l1;
    for level in [Level::L2, Level::L3, Level::L4] {
        let table = tables.table_for(GpuVa(0), level, TableSpace::Vram);
        let PteTarget::Vram(VramOffset(address)) = child else {
            unreachable!("the builder lays tables out in VRAM");
        };
        for index in 0..ENTRIES_PER_TABLE {
            tables.set_raw(table, index, address | PTE_VALID | PTE_WRITABLE);
        }
        child = table;
    }
    // The whole-space walk reads the upper tables' 3 × 512 entries and
    // then 4 level-1 tables, and faults the rest as a walk limit.
    let walked = 4;
    let limits = WalkLimits {
        max_entries: (3 + walked) * ENTRIES_PER_TABLE as u64 + 1,
        ..WalkLimits::default()
    };
    let (mut shadow, mut mmu) = (ShadowMmu::new(limits), RecordingMmu::new());
    let summary = set_root(&mut shadow, CTX, &tables, &mut mmu);
    assert!(summary.walk.limited);
    let expected = |va: u64| (va >> 12 & 1 == 0).then_some(FaultCode::InvalidEntry);
    // Alternate chunks past the walked ones, each splitting the walk
    // limit's range and recording 256 faults, fill the log and go on.
    for n in 0..1000 {
        let start = (walked + 1 + 2 * n) * 2 * MIB;
        invalidate(&mut shadow, range(start, 2 * MIB), &tables, &mut mmu);
        assert!(shadow.fault_ranges(CTX) <= MAX_RANGES);
        for va in (start..start + 2 * MIB).step_by(0x1000) {
            let code = shadow.fault_code(CTX, GpuVa(va));
            assert!(code.is_none() || code == expected(va), "{va:#x}: {code:?}");
        }
        let beyond = start + 2 * MIB;
        let code = shadow.fault_code(CTX, GpuVa(beyond));
        assert!(
            matches!(code, None | Some(FaultCode::WalkLimit)),
            "{code:?}"
        );
    }
    assert_eq!(shadow.fault_ranges(CTX), MAX_RANGES);
    // What the log held before it filled, it still holds.
    for va in (0..walked * 2 * MIB).step_by(0x1000) {
        assert_eq!(shadow.fault_code(CTX, GpuVa(va)), expected(va));
    }
}
