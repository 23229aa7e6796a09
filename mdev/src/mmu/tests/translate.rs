//! Contexts, mapping, translation and the TLB.

use std::error::Error;

use shadow_mmu::{ContextId, GpuVa, Iova, MmuError, PageSize, PhysicalMmu, VramOffset};

use super::{system_pte, vram_pte, vram_pte_2m};
use crate::mmu::{
    Access, MmuFault, MmuFaultReason, PhysicalAddress, PrivilegedAccess, SimMmu, SimMmuError,
    TLB_ENTRIES,
};

const CTX: ContextId = ContextId(3);
const SMALL: PageSize = PageSize::Size4KiB;
const LARGE: PageSize = PageSize::Size2MiB;

fn mmu() -> SimMmu {
    let mut mmu = SimMmu::new();
    mmu.create_context(CTX).unwrap();
    mmu
}

fn read(mmu: &mut SimMmu, va: u64) -> Result<PhysicalAddress, MmuFault> {
    mmu.translate(CTX, GpuVa(va), Access::Read)
}

fn reason(result: Result<PhysicalAddress, MmuFault>) -> MmuFaultReason {
    result.unwrap_err().reason
}

#[test]
fn a_4k_page_translates_with_the_offset_inside_it() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0x7000), SMALL, &vram_pte(0x3000, false))
        .unwrap();
    assert_eq!(
        read(&mut mmu, 0x7abc),
        Ok(PhysicalAddress::Vram(VramOffset(0x3abc)))
    );
    assert_eq!(reason(read(&mut mmu, 0x8000)), MmuFaultReason::NotPresent);
    assert_eq!(reason(read(&mut mmu, 0x6fff)), MmuFaultReason::NotPresent);
}

#[test]
fn a_2m_page_translates_across_its_whole_range() {
    let mut mmu = mmu();
    mmu.map(
        CTX,
        GpuVa(0x4000_0000),
        LARGE,
        &vram_pte_2m(0x60_0000, true),
    )
    .unwrap();
    assert_eq!(
        read(&mut mmu, 0x4000_0000),
        Ok(PhysicalAddress::Vram(VramOffset(0x60_0000)))
    );
    assert_eq!(
        mmu.translate(CTX, GpuVa(0x401f_ffff), Access::Write),
        Ok(PhysicalAddress::Vram(VramOffset(0x7f_ffff)))
    );
    assert_eq!(
        reason(read(&mut mmu, 0x4020_0000)),
        MmuFaultReason::NotPresent
    );
}

#[test]
fn system_pages_translate_to_iovas() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0x1000), SMALL, &system_pte(0x8_0000_0000, false))
        .unwrap();
    assert_eq!(
        read(&mut mmu, 0x1010),
        Ok(PhysicalAddress::System(Iova(0x8_0000_0010)))
    );
}

#[test]
fn unmapped_pages_fault_once_the_tlb_is_invalidated() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0x20_0000), LARGE, &vram_pte_2m(0, false))
        .unwrap();
    mmu.map(CTX, GpuVa(0x1000), SMALL, &vram_pte(0, false))
        .unwrap();
    mmu.unmap(CTX, GpuVa(0), 0x40_0000).unwrap();
    mmu.invalidate(CTX);
    assert_eq!(reason(read(&mut mmu, 0x1000)), MmuFaultReason::NotPresent);
    assert_eq!(
        reason(read(&mut mmu, 0x30_0000)),
        MmuFaultReason::NotPresent
    );
    assert_eq!(mmu.page_count(CTX), 0);
}

#[test]
fn a_stale_translation_survives_unmap_until_invalidate() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0x5000), SMALL, &vram_pte(0x9000, true))
        .unwrap();
    let before = read(&mut mmu, 0x5008).unwrap();
    mmu.unmap(CTX, GpuVa(0x5000), 0x1000).unwrap();
    assert_eq!(
        mmu.mapping(CTX, GpuVa(0x5000)),
        None,
        "gone from the tables"
    );
    assert_eq!(read(&mut mmu, 0x5008), Ok(before), "still in the TLB");
    mmu.invalidate(CTX);
    assert_eq!(reason(read(&mut mmu, 0x5008)), MmuFaultReason::NotPresent);
}

#[test]
fn a_remapped_page_keeps_its_old_target_until_invalidate() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0x5000), SMALL, &vram_pte(0x9000, true))
        .unwrap();
    read(&mut mmu, 0x5000).unwrap();
    mmu.map(CTX, GpuVa(0x5000), SMALL, &vram_pte(0xa000, false))
        .unwrap();
    assert_eq!(
        mmu.translate(CTX, GpuVa(0x5000), Access::Write),
        Ok(PhysicalAddress::Vram(VramOffset(0x9000))),
        "old target and old permissions"
    );
    mmu.invalidate(CTX);
    assert_eq!(
        read(&mut mmu, 0x5000),
        Ok(PhysicalAddress::Vram(VramOffset(0xa000)))
    );
}

#[test]
fn a_page_not_yet_used_is_seen_without_invalidation() {
    let mut mmu = mmu();
    assert_eq!(reason(read(&mut mmu, 0x5000)), MmuFaultReason::NotPresent);
    mmu.map(CTX, GpuVa(0x5000), SMALL, &vram_pte(0, false))
        .unwrap();
    assert!(read(&mut mmu, 0x5000).is_ok(), "faults are not cached");
}

#[test]
fn evicted_translations_are_walked_again() {
    let mut mmu = mmu();
    for page in 0..=TLB_ENTRIES as u64 {
        mmu.map(CTX, GpuVa(page * 0x1000), SMALL, &vram_pte(0, false))
            .unwrap();
        read(&mut mmu, page * 0x1000).unwrap();
    }
    mmu.unmap(CTX, GpuVa(0), 0x1000).unwrap();
    assert_eq!(
        reason(read(&mut mmu, 0)),
        MmuFaultReason::NotPresent,
        "page 0 was evicted, so the unmap is seen"
    );
}

#[test]
fn invalidation_is_per_context() {
    let other = ContextId(4);
    let mut mmu = mmu();
    mmu.create_context(other).unwrap();
    for ctx in [CTX, other] {
        mmu.map(ctx, GpuVa(0x1000), SMALL, &vram_pte(0, false))
            .unwrap();
        mmu.translate(ctx, GpuVa(0x1000), Access::Read).unwrap();
        mmu.unmap(ctx, GpuVa(0x1000), 0x1000).unwrap();
    }
    mmu.invalidate(CTX);
    assert!(read(&mut mmu, 0x1000).is_err());
    assert!(
        mmu.translate(other, GpuVa(0x1000), Access::Read).is_ok(),
        "the other context's TLB is untouched"
    );
}

#[test]
fn a_write_to_a_read_only_page_faults_and_a_read_does_not() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0x2000), SMALL, &vram_pte(0, false))
        .unwrap();
    let fault = mmu
        .translate(CTX, GpuVa(0x2040), Access::Write)
        .unwrap_err();
    assert_eq!(
        fault,
        MmuFault {
            ctx: CTX,
            va: GpuVa(0x2040),
            access: Access::Write,
            reason: MmuFaultReason::ReadOnly,
        }
    );
    assert!(read(&mut mmu, 0x2040).is_ok());
}

#[test]
fn contexts_do_not_see_each_other_s_pages() {
    let other = ContextId(9);
    let mut mmu = mmu();
    mmu.create_context(other).unwrap();
    mmu.map(CTX, GpuVa(0x1000), SMALL, &vram_pte(0, true))
        .unwrap();
    let fault = mmu.translate(other, GpuVa(0x1000), Access::Read);
    assert_eq!(reason(fault), MmuFaultReason::NotPresent);
}

#[test]
fn unknown_contexts_are_refused() {
    let ghost = ContextId(77);
    let mut mmu = mmu();
    let pte = vram_pte(0, false);
    assert!(matches!(
        mmu.map(ghost, GpuVa(0), SMALL, &pte),
        Err(MmuError::UnknownContext(ContextId(77)))
    ));
    assert!(matches!(
        mmu.unmap(ghost, GpuVa(0), 0x1000),
        Err(MmuError::UnknownContext(_))
    ));
    assert!(matches!(mmu.reset(ghost), Err(MmuError::UnknownContext(_))));
    assert!(matches!(
        mmu.destroy_context(ghost),
        Err(MmuError::UnknownContext(_))
    ));
    mmu.invalidate(ghost);
    let fault = mmu.translate(ghost, GpuVa(0), Access::Read);
    assert_eq!(reason(fault), MmuFaultReason::UnknownContext);
}

#[test]
fn a_destroyed_context_is_unknown_and_its_pages_are_gone() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0), SMALL, &vram_pte(0, false)).unwrap();
    read(&mut mmu, 0).unwrap();
    mmu.destroy_context(CTX).unwrap();
    assert!(!mmu.has_context(CTX));
    assert_eq!(reason(read(&mut mmu, 0)), MmuFaultReason::UnknownContext);
    mmu.create_context(CTX).unwrap();
    assert_eq!(reason(read(&mut mmu, 0)), MmuFaultReason::NotPresent);
}

#[test]
fn creating_an_existing_context_is_refused() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0), SMALL, &vram_pte(0, false)).unwrap();
    let err = mmu.create_context(CTX).unwrap_err();
    let MmuError::Backend(source) = &err else {
        panic!("unexpected {err:?}");
    };
    assert!(matches!(
        source.downcast_ref::<SimMmuError>(),
        Some(SimMmuError::ContextExists(CTX))
    ));
    assert_eq!(mmu.page_count(CTX), 1, "the existing context is kept");
}

#[test]
fn reset_empties_the_tables_and_the_tlb() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0), SMALL, &vram_pte(0, false)).unwrap();
    read(&mut mmu, 0).unwrap();
    mmu.reset(CTX).unwrap();
    assert!(mmu.has_context(CTX));
    assert_eq!(reason(read(&mut mmu, 0)), MmuFaultReason::NotPresent);
}

#[test]
fn misaligned_and_out_of_range_maps_are_refused() {
    let mut mmu = mmu();
    assert!(matches!(
        mmu.map(CTX, GpuVa(0x1000), LARGE, &vram_pte_2m(0, false)),
        Err(MmuError::Misaligned { .. })
    ));
    assert!(matches!(
        mmu.map(CTX, GpuVa(0x1800), SMALL, &vram_pte(0, false)),
        Err(MmuError::Misaligned { .. })
    ));
    assert!(matches!(
        mmu.map(CTX, GpuVa(1 << 48), SMALL, &vram_pte(0, false)),
        Err(MmuError::OutOfRange { .. })
    ));
    assert!(matches!(
        mmu.unmap(CTX, GpuVa((1 << 48) - 0x1000), 0x2000),
        Err(MmuError::OutOfRange { .. })
    ));
    assert!(matches!(
        mmu.unmap(CTX, GpuVa(u64::MAX), 2),
        Err(MmuError::OutOfRange { .. })
    ));
    mmu.map(
        CTX,
        GpuVa((1 << 48) - 0x20_0000),
        LARGE,
        &vram_pte_2m(0, false),
    )
    .unwrap();
    assert_eq!(mmu.page_count(CTX), 1, "the last page of the space");
}

#[test]
fn a_map_whose_size_is_not_the_entry_s_is_refused() {
    let mut mmu = mmu();
    let err = mmu
        .map(CTX, GpuVa(0), LARGE, &vram_pte(0, false))
        .unwrap_err();
    let source = err.source().unwrap();
    assert!(matches!(
        source.downcast_ref::<SimMmuError>(),
        Some(SimMmuError::PageSizeMismatch { .. })
    ));
    assert_eq!(mmu.page_count(CTX), 0);
}

#[test]
fn mapping_reports_the_page_without_filling_the_tlb() {
    let mut mmu = mmu();
    let pte = vram_pte_2m(0x20_0000, true);
    mmu.map(CTX, GpuVa(0x60_0000), LARGE, &pte).unwrap();
    let mapping = mmu.mapping(CTX, GpuVa(0x61_2345)).unwrap();
    assert_eq!((mapping.va, mapping.pte), (GpuVa(0x60_0000), pte));
    mmu.unmap(CTX, GpuVa(0x60_0000), 0x20_0000).unwrap();
    assert_eq!(
        reason(read(&mut mmu, 0x61_2345)),
        MmuFaultReason::NotPresent,
        "the lookup cached nothing"
    );
}

#[test]
fn physical_addresses_are_used_as_they_are_without_any_context() {
    // No context exists, so every virtual access would fault.
    let mmu = SimMmu::new();
    let address = PhysicalAddress::Vram(VramOffset(0x1234));
    assert_eq!(
        mmu.translate_physical(&PrivilegedAccess::grant(), address),
        address
    );
}

#[test]
fn mapped_pages_reads_back_the_pages_starting_in_a_range_from_the_tables() {
    let mut mmu = mmu();
    mmu.map(CTX, GpuVa(0x1000), SMALL, &system_pte(0x9000, false))
        .unwrap();
    mmu.map(CTX, GpuVa(0x20_0000), LARGE, &vram_pte_2m(0, true))
        .unwrap();
    mmu.map(CTX, GpuVa(0x40_0000), SMALL, &vram_pte(0x3000, false))
        .unwrap();
    // Unmapped but not invalidated: still in the TLB, gone from the tables.
    read(&mut mmu, 0x40_0000).unwrap();
    mmu.unmap(CTX, GpuVa(0x40_0000), 0x1000).unwrap();
    let mut seen = Vec::new();
    mmu.mapped_pages(CTX, GpuVa(0), 0x60_0000, &mut |va, pte| {
        seen.push((va, pte.size()))
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![(GpuVa(0x1000), SMALL), (GpuVa(0x20_0000), LARGE)]
    );
    seen.clear();
    mmu.mapped_pages(CTX, GpuVa(0x2000), 0x1f_e000, &mut |va, pte| {
        seen.push((va, pte.size()))
    })
    .unwrap();
    assert!(seen.is_empty(), "only pages that start in the range");
    let err = mmu
        .mapped_pages(ContextId(9), GpuVa(0), 0x1000, &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(err, MmuError::UnknownContext(ContextId(9))));
}
