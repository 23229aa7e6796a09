//! Tests of the page cap an owner puts on each re-shadow
//! ([`ShadowMmu::set_max_pages`]): what counts, where the cut falls, and
//! what the rest of the range then reports.

use super::*;
use crate::addr::{GPU_VA_SPACE, VramOffset};
use crate::allowed::SystemWindow;
use crate::entry::PTE_VALID;
use crate::pte::PteTarget;
use crate::testing::{FixedAllowed, FlatMemory, RecordingMmu, TableBuilder, TableSpace};

const MIB: u64 = 1 << 20;
const CTX: ContextId = ContextId(1);
const SMALL: PageSize = PageSize::Size4KiB;
const LARGE: PageSize = PageSize::Size2MiB;

/// An 8 MiB slice and one writable window at 8 MiB.
fn allowed() -> FixedAllowed {
    FixedAllowed {
        vram_size: 8 * MIB,
        windows: vec![SystemWindow {
            iova: Iova(8 * MIB),
            size: 2 * MIB,
            writable: true,
        }],
    }
}

fn builder() -> TableBuilder {
    TableBuilder::new(
        FlatMemory::new(MIB as usize),
        0x1_0000,
        FlatMemory::new(0),
        0,
        TableSpace::Vram,
    )
}

fn vram(offset: u64) -> PteTarget {
    PteTarget::Vram(VramOffset(offset))
}

/// Maps `pages` 4 KiB VRAM pages from VA `va` on.
fn map_pages(tables: &mut TableBuilder, va: u64, pages: u64) {
    for page in 0..pages {
        let at = va + page * 0x1000;
        tables.map(
            GpuVa(at),
            SMALL,
            vram(page * 0x1000),
            true,
            TableSpace::Vram,
        );
    }
}

fn set_root(
    shadow: &mut ShadowMmu,
    tables: &TableBuilder,
    mmu: &mut RecordingMmu,
) -> ShadowSummary {
    shadow
        .set_root(CTX, tables.root(), &tables.memory(), &allowed(), mmu)
        .unwrap()
}

fn is_mapped(mmu: &RecordingMmu, va: u64) -> bool {
    mmu.translate(CTX, GpuVa(va)).is_some()
}

#[test]
fn a_re_shadow_maps_pages_in_va_order_up_to_the_cap_and_faults_the_rest() {
    let mut tables = builder();
    map_pages(&mut tables, 0, 10);
    map_pages(&mut tables, 4 * MIB, 1);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    shadow.set_max_pages(4);
    let summary = set_root(&mut shadow, &tables, &mut mmu);
    assert_eq!(summary.mapped, 4);
    assert!(summary.walk.limited);
    for page in 0..4 {
        assert!(is_mapped(&mmu, page * 0x1000), "page {page}");
    }
    assert_eq!(mmu.len(), 4);
    let cut = summary.faults.last().unwrap();
    assert!(matches!(cut.reason, FaultReason::PageBudget));
    assert_eq!((cut.va, cut.len), (GpuVa(0x4000), GPU_VA_SPACE - 0x4000));
    // From the first page past the cap to the end of the walked range,
    // mapped or not in the guest's tables.
    for va in [0x4000, 0x9000, 0xa000, 4 * MIB, GPU_VA_SPACE - 1] {
        assert_eq!(
            shadow.fault_code(CTX, GpuVa(va)),
            Some(FaultCode::WalkLimit),
            "{va:#x}"
        );
    }
}

#[test]
fn refused_and_absent_pages_do_not_count_against_the_cap() {
    let mut tables = builder();
    map_pages(&mut tables, 0, 4);
    let l1 = tables.table_for(GpuVa(0), Level::L1, TableSpace::Vram);
    // Page 0 lies past the slice; page 1 is not present.
    tables.set_raw(l1, 0, (8 * MIB) | PTE_VALID);
    tables.set_raw(l1, 1, 0);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    shadow.set_max_pages(2);
    let summary = set_root(&mut shadow, &tables, &mut mmu);
    assert_eq!(summary.mapped, 2);
    assert!(is_mapped(&mmu, 0x2000) && is_mapped(&mmu, 0x3000));
    assert_eq!(
        shadow.fault_code(CTX, GpuVa(0)),
        Some(FaultCode::OutsideVram)
    );
    assert_eq!(shadow.fault_code(CTX, GpuVa(0x1000)), None);
    assert!(!summary.walk.limited, "two pages fit a cap of two");
    assert_eq!(shadow.fault_code(CTX, GpuVa(0x4000)), None);
}

#[test]
fn a_large_page_counts_as_one() {
    let mut tables = builder();
    tables.map(GpuVa(2 * MIB), LARGE, vram(2 * MIB), true, TableSpace::Vram);
    map_pages(&mut tables, 4 * MIB, 2);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    shadow.set_max_pages(2);
    let summary = set_root(&mut shadow, &tables, &mut mmu);
    assert_eq!(summary.mapped, 2);
    assert!(is_mapped(&mmu, 3 * MIB) && is_mapped(&mmu, 4 * MIB));
    assert_eq!(
        shadow.fault_code(CTX, GpuVa(4 * MIB + 0x1000)),
        Some(FaultCode::WalkLimit)
    );
}

#[test]
fn a_cap_of_zero_maps_nothing_and_leaves_what_lies_before_the_first_page() {
    let mut tables = builder();
    map_pages(&mut tables, 4 * MIB, 1);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    shadow.set_max_pages(0);
    let summary = set_root(&mut shadow, &tables, &mut mmu);
    assert_eq!(summary.mapped, 0);
    assert!(mmu.is_empty());
    assert_eq!(shadow.fault_code(CTX, GpuVa(0)), None, "not present");
    assert_eq!(
        shadow.fault_code(CTX, GpuVa(4 * MIB)),
        Some(FaultCode::WalkLimit)
    );
}

#[test]
fn the_cap_applies_to_each_re_shadow_and_the_cut_ends_at_its_range() {
    let mut tables = builder();
    map_pages(&mut tables, 0, 3);
    map_pages(&mut tables, 2 * MIB, 3);
    let (mut shadow, mut mmu) = (ShadowMmu::default(), RecordingMmu::new());
    set_root(&mut shadow, &tables, &mut mmu);
    assert_eq!(mmu.len(), 6);
    shadow.set_max_pages(1);
    let range = VaRange::new(GpuVa(2 * MIB), 0x1000).unwrap();
    let summary = shadow
        .invalidate(CTX, range, &tables.memory(), &allowed(), &mut mmu)
        .unwrap();
    assert_eq!(summary.mapped, 1);
    assert_eq!(mmu.len(), 4, "the first 2 MiB keep their three pages");
    let cut = summary.faults.last().unwrap();
    assert_eq!(
        (cut.va, cut.len),
        (GpuVa(2 * MIB + 0x1000), 2 * MIB - 0x1000)
    );
    assert_eq!(shadow.fault_code(CTX, GpuVa(4 * MIB)), None);
    shadow.set_max_pages(u64::MAX);
    let summary = shadow
        .invalidate(CTX, range, &tables.memory(), &allowed(), &mut mmu)
        .unwrap();
    assert_eq!(summary.mapped, 3);
    assert_eq!(shadow.fault_code(CTX, GpuVa(2 * MIB + 0x1000)), None);
}
