//! Tests of the walker: one per rule of the walk (levels, permissions,
//! bounds, cycles, shared tables, what is read).

use std::ops::ControlFlow;

use super::*;
use crate::addr::GPU_VA_SPACE;
use crate::allowed::SystemWindow;
use crate::entry::{EntryError, PTE_LARGE, PTE_SYSTEM, PTE_VALID, PTE_WRITABLE};
use crate::fault::FaultCode;
use crate::leaf::Leaf;
use crate::policy::PteRejection;
use crate::testing::{FixedAllowed, FlatMemory, TableBuilder, TableSpace};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const RW: Permissions = Permissions { writable: true };
const RO: Permissions = Permissions { writable: false };
const SMALL: PageSize = PageSize::Size4KiB;
const LARGE: PageSize = PageSize::Size2MiB;
/// VRAM tables start here; the slice is 8 MiB, its backing 1 MiB.
const VRAM_TABLES: u64 = 0x1_0000;
/// Guest-memory tables start here, inside the writable window.
const SYSTEM_TABLES: u64 = 0x20_0000;

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
        ],
    }
}

fn builder(root: TableSpace) -> TableBuilder {
    TableBuilder::new(
        FlatMemory::new(MIB as usize),
        VRAM_TABLES,
        FlatMemory::new(8 * MIB as usize),
        SYSTEM_TABLES,
        root,
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

#[derive(Debug, Default)]
struct Walked {
    leaves: Vec<Leaf>,
    faults: Vec<WalkFault>,
    stats: WalkStats,
}

fn walk_with(
    tables: &TableBuilder,
    root: u64,
    range: VaRange,
    allowed: &FixedAllowed,
    limits: WalkLimits,
) -> Walked {
    let mut walked = Walked::default();
    let mut walker = Walker::new(limits);
    walked.stats = walker.walk(root, range, &tables.memory(), allowed, |item| {
        match item {
            WalkItem::Leaves(run) => walked.leaves.extend(run.iter()),
            WalkItem::Fault(fault) => walked.faults.push(fault),
        }
        ControlFlow::Continue(())
    });
    walked
}

fn walk(tables: &TableBuilder, range: VaRange) -> Walked {
    walk_with(
        tables,
        tables.root(),
        range,
        &allowed(),
        WalkLimits::default(),
    )
}

/// The faults other than "not present".
fn real_faults(walked: &Walked) -> Vec<&WalkFault> {
    walked
        .faults
        .iter()
        .filter(|fault| !matches!(fault.reason, FaultReason::NotPresent))
        .collect()
}

#[test]
fn a_4_kib_page_is_found_through_four_levels() {
    let mut tables = builder(TableSpace::Vram);
    let va = GpuVa(3 * GIB + 5 * MIB + 0x7000);
    tables.map(va, SMALL, vram(0x40_0000), true, TableSpace::Vram);
    let walked = walk(&tables, VaRange::ALL);
    assert_eq!(
        walked.leaves,
        vec![Leaf {
            va,
            size: SMALL,
            target: vram(0x40_0000),
            permissions: RW,
        }]
    );
    assert!(real_faults(&walked).is_empty());
    assert_eq!(walked.stats.tables_read, 4);
}

#[test]
fn a_large_level_2_entry_is_a_2_mib_page() {
    let mut tables = builder(TableSpace::System);
    tables.map(
        GpuVa(4 * MIB),
        LARGE,
        system(2 * MIB),
        false,
        TableSpace::System,
    );
    let walked = walk(&tables, VaRange::ALL);
    assert_eq!(
        walked.leaves,
        vec![Leaf {
            va: GpuVa(4 * MIB),
            size: LARGE,
            target: system(2 * MIB),
            permissions: RO,
        }]
    );
    assert_eq!(walked.stats.tables_read, 3);
}

#[test]
fn a_read_only_intermediate_entry_makes_every_page_below_it_read_only() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    tables.map(GpuVa(GIB), SMALL, vram(0x1000), true, TableSpace::Vram);
    // Clear WRITABLE in the level-3 entry over the first GiB only.
    let l3 = tables.table_for(GpuVa(0), Level::L3, TableSpace::Vram);
    let raw = tables.entry(l3, 0);
    tables.set_raw(l3, 0, raw & !PTE_WRITABLE);
    let walked = walk(&tables, VaRange::ALL);
    let permissions: Vec<_> = walked.leaves.iter().map(|l| l.permissions).collect();
    assert_eq!(permissions, vec![RO, RW]);
}

#[test]
fn the_roots_writable_bit_is_not_part_of_the_path() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    let root = tables.root();
    assert_eq!(root & PTE_WRITABLE, 0);
    let walked = walk_with(
        &tables,
        root,
        VaRange::ALL,
        &allowed(),
        WalkLimits::default(),
    );
    assert_eq!(walked.leaves[0].permissions, RW);
}

#[test]
fn a_root_without_valid_faults_the_whole_range_as_not_present() {
    let tables = builder(TableSpace::Vram);
    let walked = walk_with(
        &tables,
        tables.root() & !PTE_VALID,
        range(2 * MIB, 4 * MIB),
        &allowed(),
        WalkLimits::default(),
    );
    assert!(walked.leaves.is_empty());
    assert_eq!(walked.faults.len(), 1);
    let fault = &walked.faults[0];
    assert!(matches!(fault.reason, FaultReason::NotPresent));
    assert_eq!(
        (fault.va, fault.len, fault.level),
        (GpuVa(2 * MIB), 4 * MIB, Level::Root)
    );
    assert_eq!(walked.stats.tables_read, 0);
}

#[test]
fn a_root_with_large_set_is_invalid() {
    let tables = builder(TableSpace::Vram);
    let walked = walk_with(
        &tables,
        tables.root() | PTE_LARGE,
        VaRange::ALL,
        &allowed(),
        WalkLimits::default(),
    );
    assert!(matches!(
        walked.faults[..],
        [WalkFault {
            reason: FaultReason::InvalidEntry(EntryError::LargeOutsideLevel2 { .. }),
            ..
        }]
    ));
}

#[test]
fn an_entry_with_reserved_bits_faults_its_whole_span() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(GIB), SMALL, vram(0), true, TableSpace::Vram);
    let l3 = tables.table_for(GpuVa(GIB), Level::L3, TableSpace::Vram);
    let raw = tables.entry(l3, 1);
    tables.set_raw(l3, 1, raw | 1 << 60);
    let walked = walk(&tables, VaRange::ALL);
    assert!(walked.leaves.is_empty());
    let faults = real_faults(&walked);
    assert_eq!(faults.len(), 1);
    assert_eq!((faults[0].va, faults[0].len), (GpuVa(GIB), GIB));
    assert_eq!(faults[0].reason.code(), FaultCode::InvalidEntry);
}

#[test]
fn faults_are_clipped_to_the_walked_range() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(GIB), SMALL, vram(0), true, TableSpace::Vram);
    let l3 = tables.table_for(GpuVa(GIB), Level::L3, TableSpace::Vram);
    let raw = tables.entry(l3, 1);
    tables.set_raw(l3, 1, raw | 1 << 60);
    let walked = walk(&tables, range(GIB + 4 * MIB, 2 * MIB));
    let faults = real_faults(&walked);
    assert_eq!(
        (faults[0].va, faults[0].len),
        (GpuVa(GIB + 4 * MIB), 2 * MIB)
    );
}

#[test]
fn large_at_level_1_is_invalid() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    let l1 = tables.table_for(GpuVa(0), Level::L1, TableSpace::Vram);
    tables.set_raw(l1, 0, PTE_VALID | PTE_LARGE);
    let walked = walk(&tables, VaRange::ALL);
    assert!(walked.leaves.is_empty());
    assert!(matches!(
        real_faults(&walked)[..],
        [WalkFault {
            level: Level::L1,
            reason: FaultReason::InvalidEntry(EntryError::LargeOutsideLevel2 { .. }),
            ..
        }]
    ));
}

#[test]
fn a_misaligned_large_page_is_invalid() {
    let mut tables = builder(TableSpace::Vram);
    let l2 = tables.table_for(GpuVa(0), Level::L2, TableSpace::Vram);
    tables.set_raw(l2, 0, 0x1000 | PTE_VALID | PTE_LARGE);
    let walked = walk(&tables, VaRange::ALL);
    assert!(matches!(
        real_faults(&walked)[..],
        [WalkFault {
            level: Level::L2,
            len: 0x20_0000,
            reason: FaultReason::InvalidEntry(EntryError::MisalignedLarge { .. }),
            ..
        }]
    ));
}

#[test]
fn a_table_outside_the_vram_slice_faults_at_the_entry_naming_it() {
    let mut tables = builder(TableSpace::Vram);
    let l4 = tables.root_table();
    // Names a level-3 table just past the 8 MiB slice.
    tables.set_raw(l4, 2, (8 * MIB) | PTE_VALID);
    let walked = walk(&tables, VaRange::ALL);
    let faults = real_faults(&walked);
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].level, Level::L4);
    assert_eq!(faults[0].va, GpuVa(2 << 39));
    assert!(matches!(
        faults[0].reason,
        FaultReason::Rejected(PteRejection::OutsideVram { .. })
    ));
    assert_eq!(walked.stats.tables_read, 1, "the bad table is never read");
}

#[test]
fn a_root_table_outside_every_window_faults_everything() {
    let tables = builder(TableSpace::System);
    let outside = PTE_VALID | PTE_SYSTEM | 0x10_0000;
    let walked = walk_with(
        &tables,
        outside,
        VaRange::ALL,
        &allowed(),
        WalkLimits::default(),
    );
    assert!(matches!(
        walked.faults[..],
        [WalkFault {
            level: Level::Root,
            len: GPU_VA_SPACE,
            reason: FaultReason::Rejected(PteRejection::NotMapped { .. }),
            ..
        }]
    ));
    assert_eq!(walked.stats.tables_read, 0);
}

#[test]
fn a_table_in_a_read_only_window_is_walked() {
    let mut tables = builder(TableSpace::Vram);
    // A level-3 table in the read-only window.
    let l3 = system(6 * MIB);
    tables.set(
        tables.root_table(),
        0,
        GuestPte::Table {
            table: l3,
            permissions: RW,
        },
    );
    tables.set(
        l3,
        0,
        GuestPte::Page {
            page: vram(0),
            size: LARGE,
            permissions: RW,
        },
    );
    let l3_raw = tables.entry(l3, 0);
    assert_eq!(l3_raw & PTE_LARGE, PTE_LARGE);
    // A large page at level 3 is invalid; what matters is that the
    // table was read.
    let walked = walk(&tables, VaRange::ALL);
    assert_eq!(walked.stats.tables_read, 2);
}

#[test]
fn an_unreadable_table_faults_with_the_read_error() {
    let mut tables = builder(TableSpace::Vram);
    // Inside the slice (8 MiB) but past the 1 MiB the fake memory holds.
    tables.set_raw(tables.root_table(), 0, (2 * MIB) | PTE_VALID);
    let walked = walk(&tables, VaRange::ALL);
    let faults = real_faults(&walked);
    assert!(matches!(
        faults[..],
        [WalkFault {
            reason: FaultReason::TableUnreadable { .. },
            ..
        }]
    ));
    assert_eq!(faults[0].reason.code(), FaultCode::NotMapped);
}

#[test]
fn an_entry_naming_a_table_on_its_own_path_is_cut() {
    let mut tables = builder(TableSpace::Vram);
    let l4 = tables.root_table();
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    // Level-4 entry 1 names the level-4 table itself; the level-3 table
    // under entry 0 names the level-4 table too.
    tables.set(
        l4,
        1,
        GuestPte::Table {
            table: l4,
            permissions: RW,
        },
    );
    let l3 = tables.table_for(GpuVa(0), Level::L3, TableSpace::Vram);
    tables.set(
        l3,
        7,
        GuestPte::Table {
            table: l4,
            permissions: RW,
        },
    );
    let walked = walk(&tables, VaRange::ALL);
    let cycles: Vec<_> = walked
        .faults
        .iter()
        .filter(|fault| matches!(fault.reason, FaultReason::Cycle { .. }))
        .map(|fault| (fault.va, fault.level))
        .collect();
    assert_eq!(
        cycles,
        vec![(GpuVa(7 * GIB), Level::L3), (GpuVa(1 << 39), Level::L4)]
    );
    assert_eq!(walked.leaves.len(), 1);
}

#[test]
fn a_table_used_at_two_depths_but_not_on_its_own_path_is_walked() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    let l1 = tables.table_for(GpuVa(0), Level::L1, TableSpace::Vram);
    // The level-1 table is also named as a level-2 table elsewhere: its
    // entry 0 (a 4 KiB page entry) then reads as a level-1 table pointer
    // whose entries are whatever the table at VRAM 0 holds (zeros).
    let l3 = tables.table_for(GpuVa(0), Level::L3, TableSpace::Vram);
    tables.set(
        l3,
        1,
        GuestPte::Table {
            table: l1,
            permissions: RW,
        },
    );
    let walked = walk(&tables, VaRange::ALL);
    assert!(
        walked
            .faults
            .iter()
            .all(|f| !matches!(f.reason, FaultReason::Cycle { .. }))
    );
    assert_eq!(walked.leaves.len(), 1);
}

/// Level-2 entries 0..4 all name the level-1 table of VA 0, which maps
/// one page.
fn shared_level_1(tables: &mut TableBuilder) {
    tables.map(GpuVa(0), SMALL, vram(0x5000), true, TableSpace::Vram);
    let l2 = tables.table_for(GpuVa(0), Level::L2, TableSpace::Vram);
    let shared_l1 = tables.table_for(GpuVa(0), Level::L1, TableSpace::Vram);
    for index in 1..4 {
        tables.set(
            l2,
            index,
            GuestPte::Table {
                table: shared_l1,
                permissions: RW,
            },
        );
    }
}

#[test]
fn a_table_shared_by_several_parents_is_mapped_under_each() {
    let mut tables = builder(TableSpace::Vram);
    shared_level_1(&mut tables);
    let walked = walk(&tables, VaRange::ALL);
    let vas: Vec<u64> = walked.leaves.iter().map(|l| l.va.0).collect();
    assert_eq!(vas, vec![0, 2 * MIB, 4 * MIB, 6 * MIB]);
    assert!(walked.leaves.iter().all(|l| l.target == vram(0x5000)));
}

#[test]
fn a_table_shared_by_several_parents_counts_once_against_the_table_limit() {
    let mut tables = builder(TableSpace::Vram);
    shared_level_1(&mut tables);
    // Four distinct tables, seven visits.
    let limits = WalkLimits {
        max_tables: 4,
        ..WalkLimits::default()
    };
    let walked = walk_with(&tables, tables.root(), VaRange::ALL, &allowed(), limits);
    assert!(!walked.stats.limited);
    assert_eq!(walked.leaves.len(), 4);
    let limits = WalkLimits {
        max_tables: 3,
        ..WalkLimits::default()
    };
    let walked = walk_with(&tables, tables.root(), VaRange::ALL, &allowed(), limits);
    assert!(walked.stats.limited);
    assert!(walked.leaves.is_empty());
}

#[test]
fn a_table_shared_by_several_parents_is_copied_at_each_visit() {
    let mut tables = builder(TableSpace::Vram);
    shared_level_1(&mut tables);
    tables.vram.reset_tally();
    let walked = walk(&tables, VaRange::ALL);
    assert_eq!(walked.stats.tables_read, 3 + 4);
    assert_eq!(tables.vram.reads(), 3 + 4, "one read per visit");
    assert_eq!(tables.vram.bytes_read(), (3 + 4) * 4096);
    assert_eq!(walked.stats.bytes_read, (3 + 4) * 4096);
}

#[test]
fn the_table_limit_faults_the_rest_of_the_range() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    tables.map(GpuVa(GIB), SMALL, vram(0x1000), true, TableSpace::Vram);
    let limits = WalkLimits {
        max_tables: 4,
        ..WalkLimits::default()
    };
    let walked = walk_with(&tables, tables.root(), VaRange::ALL, &allowed(), limits);
    assert_eq!(walked.leaves.len(), 1, "the first page fits the budget");
    let last = walked.faults.last().unwrap();
    assert!(matches!(last.reason, FaultReason::WalkLimit));
    assert_eq!(last.va, GpuVa(GIB));
    assert_eq!(last.va.0 + last.len, GPU_VA_SPACE);
    assert!(walked.stats.limited);
    assert_eq!(walked.stats.tables_read, 4);
}

#[test]
fn the_entry_limit_bounds_a_fan_out_of_shared_tables() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    // Every level-3 and level-2 entry names the one table below: 512 * 512
    // level-1 visits of a single table, 2^27 leaves if unbounded.
    let l3 = tables.table_for(GpuVa(0), Level::L3, TableSpace::Vram);
    let l2 = tables.table_for(GpuVa(0), Level::L2, TableSpace::Vram);
    let l1 = tables.table_for(GpuVa(0), Level::L1, TableSpace::Vram);
    for index in 0..512 {
        tables.set(
            l3,
            index,
            GuestPte::Table {
                table: l2,
                permissions: RW,
            },
        );
        tables.set(
            l2,
            index,
            GuestPte::Table {
                table: l1,
                permissions: RW,
            },
        );
        tables.map(
            GpuVa(index as u64 * 4096),
            SMALL,
            vram(0),
            true,
            TableSpace::Vram,
        );
    }
    // Four distinct tables: the table limit allows them, and the entry
    // limit is what stops the fan-out.
    let limits = WalkLimits {
        max_tables: 4,
        ..WalkLimits::default()
    };
    let walked = walk_with(&tables, tables.root(), VaRange::ALL, &allowed(), limits);
    let limit = limits.max_entries;
    assert!(walked.stats.limited);
    assert!(walked.stats.entries <= limit);
    assert!(walked.leaves.len() as u64 <= limit);
    assert!(
        walked.leaves.len() as u64 > limit / 2,
        "visits of the shared tables are not counted as new tables"
    );
    let last = walked.faults.last().unwrap();
    assert!(matches!(last.reason, FaultReason::WalkLimit));
}

#[test]
fn a_range_reads_only_the_entries_it_needs() {
    let mut tables = builder(TableSpace::Vram);
    for page in 0..1024 {
        tables.map(GpuVa(page * 4096), SMALL, vram(0), true, TableSpace::Vram);
    }
    tables.vram.reset_tally();
    let walked = walk(&tables, range(2 * MIB, 2 * MIB));
    assert_eq!(walked.leaves.len(), 512);
    assert_eq!(walked.leaves[0].va, GpuVa(2 * MIB));
    // One entry of each upper table, the whole level-1 table.
    assert_eq!(tables.vram.reads(), 4);
    assert_eq!(tables.vram.bytes_read(), 3 * 8 + 4096);
    assert_eq!(walked.stats.entries, 3 + 512);
}

#[test]
fn each_visit_of_a_shared_table_copies_only_the_entries_it_needs() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    let l2 = tables.table_for(GpuVa(0), Level::L2, TableSpace::Vram);
    let l1 = tables.table_for(GpuVa(0), Level::L1, TableSpace::Vram);
    tables.set(
        l2,
        1,
        GuestPte::Table {
            table: l1,
            permissions: RW,
        },
    );
    tables.vram.reset_tally();
    // Needs entries 256..512 of the level-1 table under level-2 entry 0,
    // then all of it under entry 1.
    let walked = walk(&tables, range(MIB, 3 * MIB));
    assert_eq!(walked.stats.tables_read, 5);
    let (l2, first_visit) = (2 * 8, 256 * 8);
    assert_eq!(tables.vram.bytes_read(), 2 * 8 + l2 + first_visit + 4096);
    assert_eq!(walked.leaves.len(), 1, "page 0 of the second 2 MiB");
    assert_eq!(walked.leaves[0].va, GpuVa(2 * MIB));
}

#[test]
fn the_visitor_can_stop_the_walk() {
    let mut tables = builder(TableSpace::Vram);
    for page in 0..8 {
        tables.map(GpuVa(page * 4096), SMALL, vram(0), true, TableSpace::Vram);
    }
    let mut seen = 0;
    let stats = Walker::new(WalkLimits::default()).walk(
        tables.root(),
        VaRange::ALL,
        &tables.memory(),
        &allowed(),
        |_| {
            seen += 1;
            if seen == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    assert_eq!(seen, 3);
    assert!(stats.stopped);
}

#[test]
fn a_walker_reused_for_a_second_walk_reads_the_tables_again() {
    let mut tables = builder(TableSpace::Vram);
    tables.map(GpuVa(0), SMALL, vram(0), true, TableSpace::Vram);
    let mut walker = Walker::new(WalkLimits::default());
    let memory_allowed = allowed();
    let mut targets = Vec::new();
    for target in [0x1000, 0x2000] {
        tables.map(GpuVa(0), SMALL, vram(target), true, TableSpace::Vram);
        walker.walk(
            tables.root(),
            VaRange::ALL,
            &tables.memory(),
            &memory_allowed,
            |item| {
                if let WalkItem::Leaves(run) = item {
                    targets.extend(run.iter().map(|leaf| leaf.target));
                }
                ControlFlow::Continue(())
            },
        );
    }
    assert_eq!(targets, vec![vram(0x1000), vram(0x2000)]);
}
