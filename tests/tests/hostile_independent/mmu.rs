//! The GPU MMU exactly as `docs/device-interface.md` ("The GPU MMU")
//! describes it: the walk's bounds (4096 distinct tables, 2,097,152
//! entries) and where a walk that meets them ends, the page budget B and
//! how channels share it, the cycle rule, fault reasons and their
//! precedence, the per-channel fault log, PT_ROOT's two halves, range
//! invalidation, DMA_UNMAP revocation and reset values.
//!
//! Large trees are written straight into a memfd as raw entries, from the
//! entry format in the document.

use std::os::fd::AsFd;

use vgpud_tests::config::STANDARD_CHANNELS;
use vgpud_tests::page_tables::{FaultRecord, LARGE_PAGE_SIZE, PAGE_SIZE, Target, Translation, pte};
use vgpud_tests::regs::bar2::{
    ERROR_CODE, FAULT_COUNT, INV_ALL, INV_RANGE, INV_SIZE_HI, INV_SIZE_LO, INV_VA_HI, INV_VA_LO,
    IRQ_ERROR, IRQ_STATUS, XLATE_CONTROL, XLATE_RESULT_HI, XLATE_RESULT_LO, XLATE_STATUS,
    XLATE_TARGET, XLATE_VA_HI, XLATE_VA_LO, pt_root_hi, pt_root_lo,
};
use vgpud_tests::regs::fault_info::{
    self, INVALID_ENTRY, NOT_MAPPED, NOT_PRESENT, OUTSIDE_VRAM, READ_ONLY, WALK_LIMIT,
};
use vgpud_tests::regs::{error_code, region};
use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A, VGPU_B};

use crate::rig::{reconnect, wait_detached};

/// Guest memory holding the tables, DMA-mapped read-write here.
const G: u64 = 0x1_0000_0000;
const FB: u64 = 16 << 20;
/// The page budget of a 16 MiB vGPU: max(2 × 16 MiB / 4 KiB, 262,144).
const B: u64 = 262_144;
const TABLE: u64 = PAGE_SIZE;
const GIB: u64 = 1 << 30;
const L4_SPAN: u64 = 1 << 39;
const TOP: u64 = 1 << 48;

const V: u64 = pte::VALID;
const W: u64 = pte::WRITABLE;
const S: u64 = pte::SYSTEM;
const L: u64 = pte::LARGE;

/// A pointer to a table in guest memory (VALID, WRITABLE, SYSTEM).
const fn sys_table(iova: u64) -> u64 {
    iova | V | W | S
}

/// A writable 4 KiB VRAM page.
const fn vram_page(offset: u64) -> u64 {
    offset | V | W
}

/// A daemon, a client of A, and `tables` 4 KiB tables of guest memory
/// mapped at [`G`].
struct Rig {
    daemon: TestDaemon,
    c: RawClient,
    mem: GuestMemory,
}

impl Rig {
    fn new(tables: usize) -> anyhow::Result<Self> {
        let daemon = TestDaemon::standard()?;
        let mut c = daemon.connect(VGPU_A)?;
        let len = tables * TABLE as usize;
        let mem = GuestMemory::new(len)?;
        c.dma_map(DmaMapRequest::read_write(G, len as u64), Some(mem.as_fd()))?;
        Ok(Rig { daemon, c, mem })
    }

    /// The IOVA of table `i`.
    fn t(i: u64) -> u64 {
        G + i * TABLE
    }

    fn set(&mut self, table: u64, index: usize, entry: u64) {
        let at = (table - G) as usize + 8 * index;
        self.mem.bytes_mut()[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    }

    fn fill(&mut self, table: u64, indexes: std::ops::Range<usize>, entry: impl Fn(usize) -> u64) {
        for index in indexes {
            self.set(table, index, entry(index));
        }
    }

    fn xlate(&mut self, channel: u32, va: u64) -> anyhow::Result<Translation> {
        Ok(self.c.xlate(channel, va, false)?)
    }

    fn status(&mut self, channel: u32, va: u64) -> anyhow::Result<u32> {
        Ok(self.xlate(channel, va)?.status)
    }
}

fn ok_vram(addr: u64) -> Translation {
    Translation::ok(addr, Target::Vram)
}

fn fault(reason: u32) -> Translation {
    Translation::fault(reason)
}

// ---------------------------------------------------------------------
// Walk bounds.

#[test]
fn the_entry_bound_ends_a_walk_of_shared_tables_at_the_documented_entry() -> anyhow::Result<()> {
    // L4 → T3 (all 512 entries), T3 → T2 (all 512), T2 → T1 (all 512),
    // T1 maps one page at index 0. Four distinct tables; entries examined:
    // L4 512, then each T2 visit 512 + 512 × 512. After 7 whole T2 visits
    // and the 8th's own 512, 1,840,128; each T1 visit adds 512, so 502 fit
    // (to 2,097,152) and T2[502] of the 8th visit faults with reason 6, as
    // does every VA after it.
    let mut r = Rig::new(4)?;
    let (l4, t3, t2, t1) = (Rig::t(0), Rig::t(1), Rig::t(2), Rig::t(3));
    r.fill(l4, 0..512, |_| sys_table(t3));
    r.fill(t3, 0..512, |_| sys_table(t2));
    r.fill(t2, 0..512, |_| sys_table(t1));
    r.set(t1, 0, vram_page(0x5000));
    r.c.set_pt_root(0, sys_table(l4))?;
    let boundary = 7 * GIB + 502 * LARGE_PAGE_SIZE;
    assert_eq!(r.xlate(0, 0)?, ok_vram(0x5000));
    assert_eq!(
        r.xlate(0, 6 * GIB + 511 * LARGE_PAGE_SIZE)?,
        ok_vram(0x5000)
    );
    assert_eq!(r.xlate(0, boundary - LARGE_PAGE_SIZE)?, ok_vram(0x5000));
    assert_eq!(r.status(0, boundary - PAGE_SIZE)?, NOT_PRESENT);
    assert_eq!(
        r.status(0, boundary)?,
        WALK_LIMIT,
        "the entry past the bound"
    );
    for va in [
        boundary + PAGE_SIZE,
        boundary + LARGE_PAGE_SIZE,
        8 * GIB,
        L4_SPAN,
        TOP - PAGE_SIZE,
    ] {
        assert_eq!(r.status(0, va)?, WALK_LIMIT, "VA {va:#x} after the bound");
    }
    // A range walk examines only the range's entries: walking the faulted
    // 2 MiB again fits, and translations outside the range stay.
    r.c.invalidate_range(0, boundary, PAGE_SIZE)?;
    assert_eq!(r.xlate(0, boundary)?, ok_vram(0x5000));
    assert_eq!(r.status(0, boundary + LARGE_PAGE_SIZE)?, WALK_LIMIT);
    assert_eq!(r.xlate(0, 0)?, ok_vram(0x5000));
    Ok(())
}

/// Writes a tree of one L4, `l3s` distinct L3 tables (L4 entries 0..l3s)
/// and, under them, distinct L2 tables: 512 under each L3 but the last,
/// which gets `last` (`l3s` ≥ 1). Each L2 maps one 2 MiB VRAM page at
/// index 0. Returns how many tables it wrote.
fn distinct_tree(r: &mut Rig, l3s: u64, last: u64) -> u64 {
    let l4 = Rig::t(0);
    let mut next = 1;
    for i in 0..l3s {
        let l3 = Rig::t(next);
        next += 1;
        r.set(l4, i as usize, sys_table(l3));
        let count = if i + 1 == l3s { last } else { 512 };
        for j in 0..count {
            let l2 = Rig::t(next);
            next += 1;
            r.set(l3, j as usize, sys_table(l2));
            r.set(l2, 0, ((j % 8) << 21) | V | W | L);
        }
    }
    next
}

#[test]
fn a_tree_of_4096_distinct_tables_never_meets_a_bound() -> anyhow::Result<()> {
    // 1 + 8 L3 + 7 × 512 + 503 L2 = 4096 tables.
    let mut r = Rig::new(4096)?;
    assert_eq!(distinct_tree(&mut r, 8, 503), 4096);
    r.c.set_pt_root(0, sys_table(Rig::t(0)))?;
    let last = 7 * L4_SPAN + 502 * GIB;
    assert_eq!(
        r.xlate(0, last + 0x1234)?,
        ok_vram((502 % 8) << 21 | 0x1234)
    );
    assert_eq!(r.status(0, last + GIB)?, NOT_PRESENT);
    assert_eq!(r.status(0, 8 * L4_SPAN)?, NOT_PRESENT);
    // Nor does any range walk, the whole space as a range included.
    r.c.invalidate(INV_RANGE, 0, TOP)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, 0);
    assert_eq!(r.xlate(0, last)?, ok_vram((502 % 8) << 21));
    r.c.invalidate_range(0, 7 * L4_SPAN, L4_SPAN)?;
    assert_eq!(r.xlate(0, last)?, ok_vram((502 % 8) << 21));
    assert_eq!(r.c.fault_record()?.count, 2, "only the two probes faulted");
    Ok(())
}

#[test]
fn the_4097th_distinct_table_faults_with_reason_6_from_its_entry_on() -> anyhow::Result<()> {
    let mut r = Rig::new(4097)?;
    assert_eq!(distinct_tree(&mut r, 8, 504), 4097);
    r.c.set_pt_root(0, sys_table(Rig::t(0)))?;
    let boundary = 7 * L4_SPAN + 503 * GIB;
    assert_eq!(r.xlate(0, boundary - GIB)?, ok_vram((502 % 8) << 21));
    assert_eq!(r.status(0, boundary - PAGE_SIZE)?, NOT_PRESENT);
    assert_eq!(r.status(0, boundary)?, WALK_LIMIT);
    assert_eq!(
        r.status(0, boundary + GIB)?,
        WALK_LIMIT,
        "not present, but after"
    );
    assert_eq!(r.status(0, TOP - PAGE_SIZE)?, WALK_LIMIT);
    assert_eq!(r.xlate(0, 0)?, ok_vram(0));
    let record = r.c.fault_record()?;
    assert_eq!(
        fault_info::reason(record.info),
        NOT_PRESENT,
        "the first fault recorded"
    );
    Ok(())
}

// ---------------------------------------------------------------------
// The page budget.

/// L4 → L3; L3 entries `l3` → one shared T2 (all 512) → one shared T1 of
/// 512 VRAM pages: 262,144 pages per L3 entry.
fn budget_tree(r: &mut Rig, l3: std::ops::Range<usize>) {
    let (l4, t3, t2, t1) = (Rig::t(0), Rig::t(1), Rig::t(2), Rig::t(3));
    r.set(l4, 0, sys_table(t3));
    r.fill(t3, l3, |_| sys_table(t2));
    r.fill(t2, 0..512, |_| sys_table(t1));
    r.fill(t1, 0..512, |i| vram_page(i as u64 * PAGE_SIZE));
}

/// A second, one-page tree at tables 8.. mapping VA 0 to VRAM 0x7000.
fn one_page_tree(r: &mut Rig) -> u64 {
    let (l4, l3, l2, l1) = (Rig::t(8), Rig::t(9), Rig::t(10), Rig::t(11));
    r.set(l4, 0, sys_table(l3));
    r.set(l3, 0, sys_table(l2));
    r.set(l2, 0, sys_table(l1));
    r.set(l1, 0, vram_page(0x7000));
    sys_table(l4)
}

#[test]
fn the_page_budget_faults_the_first_page_past_b_and_everything_after() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let mut b = r.daemon.connect(VGPU_B)?;
    budget_tree(&mut r, 0..2);
    r.c.set_pt_root(0, sys_table(Rig::t(0)))?;
    assert_eq!(
        r.xlate(0, GIB - PAGE_SIZE)?,
        ok_vram(511 * PAGE_SIZE),
        "page B"
    );
    assert_eq!(r.status(0, GIB)?, WALK_LIMIT, "page B + 1");
    assert_eq!(r.status(0, 2 * GIB)?, WALK_LIMIT, "after it, not present");
    assert_eq!(r.status(0, TOP - PAGE_SIZE)?, WALK_LIMIT);
    // Another vGPU's budget is its own.
    let mut tables = vgpud_tests::page_tables::PageTables::in_vram(&mut b, 0..0x10_0000)?;
    tables.map(&mut b, 0, vgpud_tests::page_tables::Page::vram(0x20_0000))?;
    b.set_pt_root(0, tables.root_entry())?;
    assert_eq!(b.xlate(0, 0, false)?, ok_vram(0x20_0000));
    Ok(())
}

#[test]
fn channels_share_the_budget_exactly() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    budget_tree(&mut r, 0..1);
    let small = one_page_tree(&mut r);
    r.c.set_pt_root(0, sys_table(Rig::t(0)))?;
    assert_eq!(r.xlate(0, GIB - PAGE_SIZE)?, ok_vram(511 * PAGE_SIZE));
    // Channel 0 holds B: channel 1's one page faults.
    r.c.set_pt_root(1, small)?;
    assert_eq!(r.status(1, 0)?, WALK_LIMIT);
    // A range walk of channel 0 gives up its pages in the range first, so
    // it maps them again.
    r.c.invalidate_range(0, 0, LARGE_PAGE_SIZE)?;
    assert_eq!(r.xlate(0, 0)?, ok_vram(0));
    assert_eq!(
        r.xlate(0, LARGE_PAGE_SIZE - PAGE_SIZE)?,
        ok_vram(511 * PAGE_SIZE)
    );
    // Channel 0 gives everything up (VALID clear): channel 1 fits.
    r.c.set_pt_root(0, 0)?;
    r.c.invalidate_all(1)?;
    assert_eq!(r.xlate(1, 0)?, ok_vram(0x7000));
    // Now channel 0 gets B - 1: its very last page faults.
    r.c.set_pt_root(0, sys_table(Rig::t(0)))?;
    assert_eq!(r.xlate(0, GIB - 2 * PAGE_SIZE)?, ok_vram(510 * PAGE_SIZE));
    assert_eq!(r.status(0, GIB - PAGE_SIZE)?, WALK_LIMIT);
    Ok(())
}

#[test]
fn large_pages_count_one_each_against_the_budget() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (l4, t3, t2) = (Rig::t(0), Rig::t(1), Rig::t(2));
    r.set(l4, 0, sys_table(t3));
    r.fill(t3, 0..512, |_| sys_table(t2));
    r.fill(t2, 0..512, |i| ((i as u64 % 8) << 21) | V | W | L);
    r.c.set_pt_root(0, sys_table(l4))?;
    // 512 × 512 = B large pages: all of them map.
    assert_eq!(
        r.xlate(0, 511 * GIB + 511 * LARGE_PAGE_SIZE + 5)?,
        ok_vram((7 << 21) + 5)
    );
    let small = one_page_tree(&mut r);
    r.c.set_pt_root(1, small)?;
    assert_eq!(r.status(1, 0)?, WALK_LIMIT);
    Ok(())
}

#[test]
fn a_reset_and_a_disconnect_give_the_budget_back() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    budget_tree(&mut r, 0..1);
    let small = one_page_tree(&mut r);
    r.c.set_pt_root(0, sys_table(Rig::t(0)))?;
    assert_eq!(r.xlate(0, 0)?, ok_vram(0));
    r.c.set_pt_root(1, small)?;
    assert_eq!(r.status(1, 0)?, WALK_LIMIT);
    r.c.reset()?;
    r.c.set_pt_root(1, small)?;
    assert_eq!(r.xlate(1, 0)?, ok_vram(0x7000), "after DEVICE_RESET");
    r.c.set_pt_root(0, sys_table(Rig::t(0)))?;
    assert_eq!(r.status(0, GIB - PAGE_SIZE)?, WALK_LIMIT, "B - 1 left");
    // The next client starts with the whole budget.
    let Rig { daemon, c, mem } = r;
    drop(c);
    let mut next = reconnect(&daemon, VGPU_A)?;
    next.dma_map(
        DmaMapRequest::read_write(G, mem.len() as u64),
        Some(mem.as_fd()),
    )?;
    next.set_pt_root(0, sys_table(Rig::t(0)))?;
    assert_eq!(next.xlate(0, 0, false)?, ok_vram(0));
    next.set_pt_root(1, small)?;
    assert_eq!(next.xlate(1, 0, false)?.status, WALK_LIMIT);
    assert_eq!(
        next.xlate(0, GIB - PAGE_SIZE, false)?,
        ok_vram(511 * PAGE_SIZE)
    );
    Ok(())
}

// ---------------------------------------------------------------------
// Cycles.

#[test]
fn an_entry_naming_a_table_on_its_path_faults_for_its_range_only() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (l4, l3, l2, l1) = (Rig::t(0), Rig::t(1), Rig::t(2), Rig::t(3));
    r.set(l4, 0, sys_table(l4)); // the root names itself
    r.set(l4, 1, sys_table(l3));
    r.set(l3, 5, sys_table(l4)); // names the root
    r.set(l3, 6, sys_table(l2));
    r.set(l2, 3, sys_table(l3) & !W); // names its parent, read-only
    r.set(l2, 4, sys_table(l1));
    r.set(l1, 0, vram_page(0x9000));
    r.set(l1, 1, sys_table(l1)); // a leaf naming its own table is a page
    r.c.set_pt_root(0, sys_table(l4))?;
    let base = L4_SPAN + 6 * GIB;
    assert_eq!(r.status(0, 0)?, WALK_LIMIT);
    assert_eq!(r.status(0, L4_SPAN - PAGE_SIZE)?, WALK_LIMIT);
    assert_eq!(r.status(0, L4_SPAN + 5 * GIB)?, WALK_LIMIT);
    assert_eq!(r.status(0, L4_SPAN + 6 * GIB - PAGE_SIZE)?, WALK_LIMIT);
    assert_eq!(r.status(0, base + 3 * LARGE_PAGE_SIZE)?, WALK_LIMIT);
    assert_eq!(
        r.status(0, base + 4 * LARGE_PAGE_SIZE - PAGE_SIZE)?,
        WALK_LIMIT
    );
    // The walk went on after each cycle.
    assert_eq!(
        r.xlate(0, base + 4 * LARGE_PAGE_SIZE)?,
        Translation::ok(0x9000, Target::Vram)
    );
    assert_eq!(
        r.xlate(0, base + 4 * LARGE_PAGE_SIZE + PAGE_SIZE + 8)?,
        Translation::ok(l1 + 8, Target::System)
    );
    assert_eq!(r.status(0, base + 5 * LARGE_PAGE_SIZE)?, NOT_PRESENT);
    assert_eq!(r.status(0, 2 * L4_SPAN)?, NOT_PRESENT);
    Ok(())
}

#[test]
fn the_same_memory_under_other_addresses_is_other_tables() -> anyhow::Result<()> {
    // VRAM table X, also DMA-mapped (BAR0's own memfd) at three IOVAs:
    // the path VRAM X → IOVA1+X → IOVA2+X → IOVA3+X names the same memory
    // four times under four addresses, and is walked like any other.
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let bar0 = c.map_bar0()?;
    let fd = bar0.region.fd.as_ref().expect("fd");
    let iovas = [0x10_0000_0000u64, 0x20_0000_0000, 0x30_0000_0000];
    for iova in iovas {
        c.dma_map(DmaMapRequest::read_only(iova, FB), Some(fd.as_fd()))?;
    }
    let x = 0x40_0000u64;
    let mut table = [0u64; 512];
    table[0] = sys_table(iovas[0] + x); // read at level 4
    table[1] = sys_table(iovas[1] + x); // level 3
    table[2] = sys_table(iovas[2] + x); // level 2
    table[3] = vram_page(0xa000); // level 1
    let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
    c.region_write(region::BAR0, x, &bytes)?;
    c.set_pt_root(0, x | V)?;
    let va = (1 << 30) | (2 << 21) | (3 << 12);
    assert_eq!(c.xlate(0, va + 0x10, false)?, ok_vram(0xa010));
    // Within one space the same address is a cycle: at level 3 (read
    // from IOVA1 + X), entry 0 names IOVA1 + X itself.
    assert_eq!(c.xlate(0, 0, false)?.status, WALK_LIMIT);
    // At level 2 (IOVA2 + X), entry 1 names IOVA2 + X: a cycle for 2 MiB.
    assert_eq!(c.xlate(0, (1 << 30) | (1 << 21), false)?.status, WALK_LIMIT);
    Ok(())
}

// ---------------------------------------------------------------------
// Fault reasons.

/// Maps `entry` at L1 index 1 (VA 0x1000) of a fresh 4-table path, and
/// returns the translation of VA 0x1000 + 8.
fn leaf(r: &mut Rig, entry: u64) -> anyhow::Result<Translation> {
    let (l4, l3, l2, l1) = (Rig::t(0), Rig::t(1), Rig::t(2), Rig::t(3));
    r.set(l4, 0, sys_table(l3));
    r.set(l3, 0, sys_table(l2));
    r.set(l2, 0, sys_table(l1));
    r.set(l1, 1, entry);
    r.c.set_pt_root(0, sys_table(l4))?;
    r.xlate(0, 0x1008)
}

#[test]
fn fault_reasons_of_leaf_entries() -> anyhow::Result<()> {
    let mut r = Rig::new(64)?;
    let ro_iova = 0x2_0000_0000;
    let ro = GuestMemory::new(64 << 10)?;
    r.c.dma_map(
        DmaMapRequest::read_only(ro_iova, 64 << 10),
        Some(ro.as_fd()),
    )?;
    // A map whose size is not a multiple of 4 KiB.
    let odd_iova = 0x3_0000_0000;
    r.c.dma_map(
        DmaMapRequest::read_write(odd_iova, 4096 + 100),
        Some(ro.as_fd()),
    )?;
    let remote = 0x4_0000_0000;
    r.c.dma_map(DmaMapRequest::read_write(remote, 64 << 10), None)?;
    let cases: Vec<(&str, u64, Translation)> = vec![
        (
            "VALID clear with junk",
            0xfff0_0000_0000_0ffe,
            fault(NOT_PRESENT),
        ),
        (
            "reserved bit 4",
            vram_page(0x3000) | 1 << 4,
            fault(INVALID_ENTRY),
        ),
        (
            "reserved bit 11",
            vram_page(0x3000) | 1 << 11,
            fault(INVALID_ENTRY),
        ),
        (
            "reserved bit 52",
            vram_page(0x3000) | 1 << 52,
            fault(INVALID_ENTRY),
        ),
        (
            "reserved bit 63",
            vram_page(0x3000) | 1 << 63,
            fault(INVALID_ENTRY),
        ),
        ("LARGE at level 1", vram_page(0) | L, fault(INVALID_ENTRY)),
        (
            "invalid and outside VRAM",
            vram_page(FB) | 1 << 5,
            fault(INVALID_ENTRY),
        ),
        (
            "the last VRAM page",
            vram_page(FB - PAGE_SIZE),
            ok_vram(FB - PAGE_SIZE + 8),
        ),
        (
            "the next vGPU's first page",
            vram_page(FB),
            fault(OUTSIDE_VRAM),
        ),
        (
            "far outside VRAM",
            vram_page(0xf_ffff_ffff_f000),
            fault(OUTSIDE_VRAM),
        ),
        ("system, no map", 0x9_0000_0000 | V | S, fault(NOT_MAPPED)),
        (
            "system, in a map",
            (G + 0x8000) | V | S,
            Translation::ok(G + 0x8008, Target::System),
        ),
        (
            "system, fd-less map",
            remote | V | S,
            Translation::ok(remote + 8, Target::System),
        ),
        (
            "past an odd-sized map's end",
            (odd_iova + 4096) | V | S,
            fault(NOT_MAPPED),
        ),
        (
            "writable page of a read-only map",
            ro_iova | V | W | S,
            fault(READ_ONLY),
        ),
        (
            "read-only page of a read-only map",
            ro_iova | V | S,
            Translation::ok(ro_iova + 8, Target::System),
        ),
    ];
    for (what, entry, expected) in cases {
        assert_eq!(leaf(&mut r, entry)?, expected, "{what}: {entry:#x}");
    }
    Ok(())
}

/// Maps `entry` at level `level`'s index 1 (tables above point down).
fn entry_at_level(r: &mut Rig, level: u32, entry: u64) -> anyhow::Result<u32> {
    for i in 0..4 {
        r.fill(Rig::t(i), 0..512, |_| 0);
    }
    let va = match level {
        4 => L4_SPAN,
        3 => GIB,
        2 => LARGE_PAGE_SIZE,
        _ => PAGE_SIZE,
    };
    let mut table = Rig::t(0);
    for current in (level + 1..=4).rev() {
        let next = Rig::t(u64::from(5 - current));
        r.set(table, 0, sys_table(next));
        table = next;
    }
    r.set(table, 1, entry);
    r.c.set_pt_root(0, sys_table(Rig::t(0)))?;
    r.status(0, va)
}

#[test]
fn fault_reasons_of_table_entries() -> anyhow::Result<()> {
    let mut r = Rig::new(64)?;
    let remote = 0x4_0000_0000;
    r.c.dma_map(DmaMapRequest::read_write(remote, 64 << 10), None)?;
    let ro_iova = 0x2_0000_0000;
    let ro = GuestMemory::new(64 << 10)?;
    r.c.dma_map(
        DmaMapRequest::read_only(ro_iova, 64 << 10),
        Some(ro.as_fd()),
    )?;
    for level in [4, 3, 2] {
        let cases = [
            ("LARGE", sys_table(Rig::t(40)) | L, INVALID_ENTRY),
            (
                "reserved bit 7",
                sys_table(Rig::t(40)) | 1 << 7,
                INVALID_ENTRY,
            ),
            ("table past VRAM", FB | V | W, OUTSIDE_VRAM),
            ("table in no map", 0x9_0000_0000 | V | S, NOT_MAPPED),
            ("table in an fd-less map", remote | V | W | S, NOT_MAPPED),
            (
                "table in a read-only map (empty)",
                ro_iova | V | S,
                NOT_PRESENT,
            ),
        ];
        for (what, entry, reason) in cases {
            if level == 2 && what == "LARGE" {
                continue;
            }
            assert_eq!(
                entry_at_level(&mut r, level, entry)?,
                reason,
                "level {level}: {what}"
            );
        }
    }
    // Level 2 LARGE: with address bits 20:12 set it is invalid; a large
    // VRAM page that ends past the slice is outside; a large system page
    // must lie in one map.
    assert_eq!(
        entry_at_level(&mut r, 2, (1 << 21 | 1 << 12) | V | L)?,
        INVALID_ENTRY
    );
    assert_eq!(entry_at_level(&mut r, 2, FB | V | L)?, OUTSIDE_VRAM);
    assert_eq!(
        entry_at_level(&mut r, 2, (FB - LARGE_PAGE_SIZE) | V | L)?,
        0
    );
    let adjacent = 0x6_0000_0000u64;
    let one = GuestMemory::new(1 << 20)?;
    let two = GuestMemory::new(1 << 20)?;
    r.c.dma_map(
        DmaMapRequest::read_write(adjacent, 1 << 20),
        Some(one.as_fd()),
    )?;
    r.c.dma_map(
        DmaMapRequest::read_write(adjacent + (1 << 20), 1 << 20),
        Some(two.as_fd()),
    )?;
    assert_eq!(
        entry_at_level(&mut r, 2, adjacent | V | S | L)?,
        NOT_MAPPED,
        "a large page over two adjacent maps"
    );
    Ok(())
}

#[test]
fn fault_reasons_of_the_root() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    leaf(&mut r, vram_page(0x3000))?;
    let root = sys_table(Rig::t(0));
    let cases = [
        (
            "VALID clear, LARGE and junk",
            (root & !V) | L | 1 << 60,
            NOT_PRESENT,
        ),
        ("LARGE", root | L, INVALID_ENTRY),
        ("reserved bit 9", root | 1 << 9, INVALID_ENTRY),
        ("reserved bit 55", root | 1 << 55, INVALID_ENTRY),
        ("VRAM past the slice", FB | V, OUTSIDE_VRAM),
        ("system, unmapped", 0x9_0000_0000 | V | S, NOT_MAPPED),
    ];
    for (what, value, reason) in cases {
        r.c.set_pt_root(0, value)?;
        assert_eq!(r.c.pt_root(0)?, value, "{what}: stored as written");
        for va in [0x1000, 0, TOP - PAGE_SIZE] {
            assert_eq!(r.status(0, va)?, reason, "{what}: VA {va:#x}");
        }
    }
    // One range over the whole space, however it is invalidated.
    r.c.set_pt_root(0, root | 1 << 9)?;
    r.c.invalidate_range(0, 0x20_0000, PAGE_SIZE)?;
    for va in [0x1000, 0x20_0000, TOP - PAGE_SIZE] {
        assert_eq!(r.status(0, va)?, INVALID_ENTRY, "VA {va:#x}");
    }
    // WRITABLE of the root is ignored: writes work without it.
    r.c.set_pt_root(0, root & !W)?;
    assert_eq!(r.c.xlate(0, 0x1008, true)?, ok_vram(0x3008));
    Ok(())
}

#[test]
fn a_va_at_or_above_2_pow_48_is_not_present_and_recorded_whole() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    leaf(&mut r, vram_page(0x3000))?;
    for (i, va) in [TOP, TOP + 0x1008, 0xffff_ffff_ffff_f008, u64::MAX]
        .into_iter()
        .enumerate()
    {
        r.c.acknowledge_faults()?;
        assert_eq!(r.c.xlate(2, va, true)?, fault(NOT_PRESENT), "{va:#x}");
        assert_eq!(
            r.c.fault_record()?,
            FaultRecord {
                va,
                info: fault_info::encode(2, true, NOT_PRESENT),
                count: i as u32 + 1,
            }
        );
    }
    // The same low bits below 2^48 still translate.
    assert_eq!(r.xlate(0, 0x1008)?, ok_vram(0x3008));
    Ok(())
}

#[test]
fn a_refused_translation_leaves_the_last_results() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    assert_eq!(leaf(&mut r, vram_page(0x3000))?, ok_vram(0x3008));
    r.c.bar2_write32(XLATE_VA_LO, 0x1010)?;
    r.c.bar2_write32(XLATE_CONTROL, STANDARD_CHANNELS)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, error_code::BAD_CHANNEL);
    assert_eq!(r.c.bar2_read32(XLATE_STATUS)?, 0);
    assert_eq!(r.c.bar2_read32(XLATE_RESULT_LO)?, 0x3008);
    assert_eq!(r.c.bar2_read32(XLATE_TARGET)?, 0);
    assert_eq!(r.c.fault_record()?.count, 0);
    Ok(())
}

// ---------------------------------------------------------------------
// The fault log.

/// T1 alternates reason 3 (even entries: a VRAM page past the slice) and
/// reason 2 (odd: a reserved bit), so that it holds 512 fault ranges and
/// no page; T2 entries `0..n` name it.
fn alternating_ranges(r: &mut Rig, n: usize) {
    let (l4, l3, t2, t1) = (Rig::t(0), Rig::t(1), Rig::t(2), Rig::t(3));
    r.set(l4, 0, sys_table(l3));
    r.set(l3, 0, sys_table(t2));
    r.fill(t2, 0..n, |_| sys_table(t1));
    r.fill(t1, 0..512, |i| {
        if i % 2 == 0 {
            vram_page(FB)
        } else {
            vram_page(0) | 1 << 4
        }
    });
}

fn range_va(k: u64) -> u64 {
    (k / 512) * LARGE_PAGE_SIZE + (k % 512) * PAGE_SIZE
}

#[test]
fn the_fault_log_keeps_4096_ranges_exact_and_reports_1_past_them() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    alternating_ranges(&mut r, 9);
    r.c.set_pt_root(0, sys_table(Rig::t(0)))?;
    for k in [0u64, 1, 2, 1000, 4093, 4094, 4095] {
        let expected = if k % 2 == 0 {
            OUTSIDE_VRAM
        } else {
            INVALID_ENTRY
        };
        assert_eq!(r.status(0, range_va(k))?, expected, "range {k}");
    }
    for k in [4096u64, 4097, 4500, 9 * 512 - 1] {
        assert_eq!(
            r.status(0, range_va(k))?,
            NOT_PRESENT,
            "range {k}, not remembered"
        );
    }
    // Another channel has a log of its own.
    r.c.set_pt_root(1, sys_table(Rig::t(0)))?;
    assert_eq!(r.status(1, range_va(4095))?, INVALID_ENTRY);
    Ok(())
}

#[test]
fn fault_logs_and_walks_of_every_channel_stay_within_the_memory_bound() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let pid = r.daemon.pid().expect("pid");
    let before = vgpud_tests::process::resources(pid)?.rss_anon;
    alternating_ranges(&mut r, 512);
    for channel in 0..STANDARD_CHANNELS {
        r.c.set_pt_root(channel, sys_table(Rig::t(0)))?;
    }
    // Invalidations that split remembered ranges in full logs.
    for i in 0..300u64 {
        let channel = (i % u64::from(STANDARD_CHANNELS)) as u32;
        r.c.invalidate_range(channel, range_va(i * 37 % 4096), PAGE_SIZE)?;
    }
    let after = vgpud_tests::process::resources(pid)?.rss_anon;
    // 300 KiB of fault log per channel, plus slack for the allocator.
    let bound = u64::from(STANDARD_CHANNELS) * (300 << 10) + (8 << 20);
    assert!(
        after.saturating_sub(before) <= bound,
        "RssAnon grew by {} KiB (bound {} KiB)",
        after.saturating_sub(before) >> 10,
        bound >> 10
    );
    Ok(())
}

#[test]
fn a_full_budget_stays_within_the_memory_bound() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let pid = r.daemon.pid().expect("pid");
    let before = vgpud_tests::process::resources(pid)?.rss_anon;
    budget_tree(&mut r, 0..4);
    for channel in 0..STANDARD_CHANNELS {
        r.c.set_pt_root(channel, sys_table(Rig::t(0)))?;
    }
    r.c.invalidate_all(0)?;
    let after = vgpud_tests::process::resources(pid)?.rss_anon;
    // "at most about 130 bytes × B of page tables and revocation index".
    let bound = 130 * B + (8 << 20);
    assert!(
        after.saturating_sub(before) <= bound,
        "RssAnon grew by {} MiB (bound {} MiB)",
        after.saturating_sub(before) >> 20,
        bound >> 20
    );
    Ok(())
}

// ---------------------------------------------------------------------
// PT_ROOT's halves, invalidation and reset.

/// Two one-page trees: VA 0x1000 → VRAM 0x3000 (tables 0..4) and
/// → VRAM 0x4000 (tables 4..8).
fn two_trees(r: &mut Rig) -> (u64, u64) {
    for (base, page) in [(0, 0x3000), (4, 0x4000)] {
        let (l4, l3, l2, l1) = (
            Rig::t(base),
            Rig::t(base + 1),
            Rig::t(base + 2),
            Rig::t(base + 3),
        );
        r.set(l4, 0, sys_table(l3));
        r.set(l3, 0, sys_table(l2));
        r.set(l2, 0, sys_table(l1));
        r.set(l1, 1, vram_page(page));
    }
    (sys_table(Rig::t(0)), sys_table(Rig::t(4)))
}

#[test]
fn pt_root_lo_alone_walks_nothing_and_hi_commits_even_the_same_value() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (first, second) = two_trees(&mut r);
    r.c.set_pt_root(0, first)?;
    assert_eq!(r.xlate(0, 0x1000)?, ok_vram(0x3000));
    r.c.bar2_write32(pt_root_lo(0), second as u32)?;
    assert_eq!(
        r.xlate(0, 0x1000)?,
        ok_vram(0x3000),
        "LO alone commits nothing"
    );
    r.c.bar2_write32(pt_root_hi(0), (second >> 32) as u32)?;
    assert_eq!(r.xlate(0, 0x1000)?, ok_vram(0x4000));
    // The same value again walks again.
    r.set(Rig::t(7), 1, vram_page(0x5000));
    r.c.bar2_write32(pt_root_hi(0), (second >> 32) as u32)?;
    assert_eq!(r.xlate(0, 0x1000)?, ok_vram(0x5000));
    Ok(())
}

#[test]
fn pt_root_halves_are_per_channel_and_byte_enabled() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (first, second) = two_trees(&mut r);
    // LO of channel 0, LO of channel 1, HI of channel 0.
    r.c.bar2_write32(pt_root_lo(0), first as u32)?;
    r.c.bar2_write32(pt_root_lo(1), second as u32)?;
    r.c.bar2_write32(pt_root_hi(0), (first >> 32) as u32)?;
    assert_eq!(r.xlate(0, 0x1000)?, ok_vram(0x3000));
    r.c.bar2_write32(pt_root_hi(1), (second >> 32) as u32)?;
    assert_eq!(r.xlate(1, 0x1000)?, ok_vram(0x4000));
    // An 8-byte write at PT_ROOT_LO commits both halves.
    r.c.write_reg(region::BAR2, pt_root_lo(2), 8, second)?;
    assert_eq!(r.xlate(2, 0x1000)?, ok_vram(0x4000));
    // An 8-byte write at PT_ROOT_HI is misaligned: refused, nothing changes.
    let refused = r.c.write_reg(region::BAR2, pt_root_hi(2), 8, 0);
    assert_eq!(
        refused.err().and_then(|e| e.errno()),
        Some(crate::rig::EINVAL)
    );
    assert_eq!(r.c.pt_root(2)?, second);
    assert_eq!(r.xlate(2, 0x1000)?, ok_vram(0x4000));
    // A 2-byte write keeps the other bytes; a 1-byte write to the top byte
    // of HI commits.
    r.c.set_pt_root(3, first)?;
    assert_eq!(first >> 32, second >> 32, "both trees share PT_ROOT_HI");
    let low = second as u32;
    r.c.write_reg(
        region::BAR2,
        pt_root_lo(3),
        2,
        u64::from(first as u32 & 0xffff),
    )?;
    r.c.write_reg(region::BAR2, pt_root_lo(3) + 2, 2, u64::from(low >> 16))?;
    assert_eq!(
        r.c.bar2_read32(pt_root_lo(3))?,
        (first as u32 & 0xffff) | (low & 0xffff_0000)
    );
    r.c.write_reg(region::BAR2, pt_root_lo(3), 2, u64::from(low & 0xffff))?;
    r.c.write_reg(region::BAR2, pt_root_hi(3) + 3, 1, 0)?;
    assert_eq!(r.xlate(3, 0x1000)?, ok_vram(0x4000));
    Ok(())
}

#[test]
fn a_staged_pt_root_lo_does_not_survive_a_reset_or_a_disconnect() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (first, _) = two_trees(&mut r);
    r.c.bar2_write32(pt_root_lo(0), first as u32)?;
    r.c.reset()?;
    r.c.bar2_write32(pt_root_hi(0), 0)?;
    assert_eq!(r.c.pt_root(0)?, 0);
    assert_eq!(r.status(0, 0x1000)?, NOT_PRESENT, "after DEVICE_RESET");
    r.c.bar2_write32(pt_root_lo(1), first as u32)?;
    let Rig { daemon, c, mem } = r;
    drop(c);
    let mut next = reconnect(&daemon, VGPU_A)?;
    next.dma_map(
        DmaMapRequest::read_write(G, mem.len() as u64),
        Some(mem.as_fd()),
    )?;
    next.bar2_write32(pt_root_hi(1), 0)?;
    assert_eq!(next.pt_root(1)?, 0);
    assert_eq!(
        next.xlate(1, 0x1000, false)?.status,
        NOT_PRESENT,
        "after a disconnect"
    );
    Ok(())
}

#[test]
fn reserved_mmu_slots_read_0_and_ignore_writes() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (first, _) = two_trees(&mut r);
    r.c.set_pt_root(0, first)?;
    for offset in [
        pt_root_lo(0) + 8,
        pt_root_lo(0) + 0x1c,
        pt_root_lo(STANDARD_CHANNELS),
        pt_root_hi(63),
    ] {
        r.c.bar2_write32(offset, 0xffff_ffff)?;
        assert_eq!(r.c.bar2_read32(offset)?, 0, "{offset:#x}");
    }
    assert_eq!(r.xlate(0, 0x1000)?, ok_vram(0x3000));
    Ok(())
}

#[test]
fn a_range_invalidation_rewalks_exactly_its_2_mib_regions() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (l4, l3, l2, l1a, l1b) = (Rig::t(0), Rig::t(1), Rig::t(2), Rig::t(3), Rig::t(4));
    r.set(l4, 0, sys_table(l3));
    r.set(l3, 0, sys_table(l2));
    r.set(l2, 0, sys_table(l1a));
    r.set(l2, 1, sys_table(l1b));
    r.set(l1a, 0, vram_page(0x1000));
    r.set(l1a, 511, vram_page(0x2000));
    r.set(l1b, 0, vram_page(0x3000));
    r.c.set_pt_root(0, sys_table(l4))?;
    // Used once, so that the root's walk has certainly been done before
    // the tables change (a change is certain to show only after an
    // invalidation; before it, old and new entries are both allowed).
    assert_eq!(r.xlate(0, 0)?, ok_vram(0x1000));
    assert_eq!(r.xlate(0, LARGE_PAGE_SIZE)?, ok_vram(0x3000));
    r.set(l1a, 0, vram_page(0x11000));
    r.set(l1a, 511, vram_page(0x12000));
    r.set(l1b, 0, vram_page(0x13000));
    r.c.invalidate_range(0, 0x10_0000, PAGE_SIZE)?;
    assert_eq!(
        r.xlate(0, 0)?,
        ok_vram(0x11000),
        "start of the widened region"
    );
    assert_eq!(r.xlate(0, 511 * PAGE_SIZE)?, ok_vram(0x12000), "its end");
    assert_eq!(
        r.xlate(0, LARGE_PAGE_SIZE)?,
        ok_vram(0x3000),
        "the next region stays"
    );
    // A range ending exactly at 2^48 is good; one past it, or wrapping
    // around, is error 9 and invalidates nothing.
    r.c.invalidate_range(0, TOP - PAGE_SIZE, PAGE_SIZE)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, 0);
    for (va, size) in [
        (TOP, PAGE_SIZE),
        (TOP - PAGE_SIZE, 2 * PAGE_SIZE),
        (0xffff_ffff_ffff_f000, 0x2000),
        (PAGE_SIZE, u64::MAX - 0xfff),
    ] {
        r.c.invalidate(INV_RANGE, va, size)?;
        assert_eq!(
            r.c.bar2_read32(ERROR_CODE)?,
            error_code::BAD_RANGE,
            "{va:#x}+{size:#x}"
        );
        r.c.bar2_write32(ERROR_CODE, 0)?;
        r.c.bar2_write32(IRQ_STATUS, IRQ_ERROR)?;
    }
    assert_eq!(r.xlate(0, LARGE_PAGE_SIZE)?, ok_vram(0x3000));
    // ALL wins over RANGE, whatever the range registers hold.
    r.c.invalidate(INV_ALL | INV_RANGE, 0xffff_ffff_ffff_f000, 0x2000)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, 0);
    assert_eq!(r.xlate(0, LARGE_PAGE_SIZE)?, ok_vram(0x13000));
    Ok(())
}

#[test]
fn dma_unmap_revokes_pages_until_a_walk_even_when_the_iova_is_mapped_again() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let page_iova = 0x5_0000_0000u64;
    let first = GuestMemory::new(4 << 20)?;
    r.c.dma_map(
        DmaMapRequest::read_write(page_iova, 4 << 20),
        Some(first.as_fd()),
    )?;
    let (l4, l3, l2, l1) = (Rig::t(0), Rig::t(1), Rig::t(2), Rig::t(3));
    r.set(l4, 0, sys_table(l3));
    r.set(l3, 0, sys_table(l2));
    r.set(l2, 0, sys_table(l1));
    r.set(l2, 1, (page_iova + LARGE_PAGE_SIZE) | V | W | S | L);
    r.set(l1, 1, (page_iova + 0x3000) | V | W | S);
    r.c.set_pt_root(0, sys_table(l4))?;
    let system = |addr| Translation::ok(addr, Target::System);
    assert_eq!(r.xlate(0, 0x1000)?, system(page_iova + 0x3000));
    assert_eq!(
        r.xlate(0, LARGE_PAGE_SIZE + 0x1234)?,
        system(page_iova + LARGE_PAGE_SIZE + 0x1234)
    );
    r.c.dma_unmap(page_iova, 4 << 20)?;
    for va in [0x1000, LARGE_PAGE_SIZE, 2 * LARGE_PAGE_SIZE - 1] {
        assert_eq!(r.xlate(0, va)?, fault(NOT_MAPPED), "read {va:#x}");
        assert_eq!(r.c.xlate(0, va, true)?, fault(NOT_MAPPED), "write {va:#x}");
    }
    // Other memory at the same IOVA: nothing walks, so still reason 4.
    let second = GuestMemory::new(4 << 20)?;
    r.c.dma_map(
        DmaMapRequest::read_write(page_iova, 4 << 20),
        Some(second.as_fd()),
    )?;
    assert_eq!(r.xlate(0, 0x1000)?, fault(NOT_MAPPED));
    r.c.invalidate_range(0, 0, PAGE_SIZE)?;
    assert_eq!(r.xlate(0, 0x1000)?, system(page_iova + 0x3000));
    assert_eq!(
        r.xlate(0, LARGE_PAGE_SIZE)?,
        fault(NOT_MAPPED),
        "the next 2 MiB region was not walked: it stays faulted"
    );
    r.c.invalidate_range(0, LARGE_PAGE_SIZE, PAGE_SIZE)?;
    assert_eq!(
        r.xlate(0, LARGE_PAGE_SIZE)?,
        system(page_iova + LARGE_PAGE_SIZE)
    );
    Ok(())
}

#[test]
fn tables_in_unmapped_memory_keep_translations_until_invalidated() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    leaf(&mut r, vram_page(0x3000))?;
    assert_eq!(r.xlate(0, 0x1000)?, ok_vram(0x3000));
    let len = r.mem.len() as u64;
    r.c.dma_unmap(G, len)?;
    assert_eq!(r.xlate(0, 0x1000)?, ok_vram(0x3000), "the page is VRAM");
    r.c.invalidate_all(0)?;
    assert_eq!(r.status(0, 0x1000)?, NOT_MAPPED);
    assert_eq!(
        r.status(0, TOP - PAGE_SIZE)?,
        NOT_MAPPED,
        "the root is gone"
    );
    Ok(())
}

#[test]
fn mmu_registers_read_their_reset_values_after_reset_and_at_attach() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (first, _) = two_trees(&mut r);
    for channel in 0..STANDARD_CHANNELS {
        r.c.set_pt_root(channel, first)?;
    }
    r.c.xlate(1, 0x5000, true)?;
    r.c.invalidate(63 | INV_ALL, 0x1000, 0x2000)?;
    r.c.reset()?;
    let documented = |c: &mut RawClient| -> anyhow::Result<()> {
        for channel in 0..STANDARD_CHANNELS {
            assert_eq!(c.pt_root(channel)?, 0, "PT_ROOT {channel}");
        }
        assert_eq!(
            c.fault_record()?,
            FaultRecord {
                va: 0,
                info: 0,
                count: 0
            }
        );
        assert_eq!(c.bar2_read32(IRQ_STATUS)?, 0);
        assert_eq!(c.bar2_read32(ERROR_CODE)?, 0);
        for channel in 0..STANDARD_CHANNELS {
            assert_eq!(c.xlate(channel, 0x1000, false)?.status, NOT_PRESENT);
        }
        Ok(())
    };
    // Registers the documents give no reset value: 0 is what a driver
    // would assume after "every register above to its reset value".
    let undocumented = [
        INV_VA_LO,
        INV_VA_HI,
        INV_SIZE_LO,
        INV_SIZE_HI,
        XLATE_VA_LO,
        XLATE_VA_HI,
        XLATE_STATUS,
        XLATE_RESULT_LO,
        XLATE_RESULT_HI,
        XLATE_TARGET,
    ];
    for offset in undocumented {
        assert_eq!(r.c.bar2_read32(offset)?, 0, "{offset:#x} after reset");
    }
    documented(&mut r.c)?;
    assert_eq!(r.c.bar2_read32(FAULT_COUNT)?, 4);
    let Rig { daemon, c, .. } = r;
    drop(c);
    wait_detached(&daemon, VGPU_A)?;
    let mut next = reconnect(&daemon, VGPU_A)?;
    documented(&mut next)
}

// ---------------------------------------------------------------------
// Walks racing with unmaps, resets and disconnects.

/// Writes the shared-table tree of the entry-bound test (a walk that
/// examines 2,097,152 entries) into `mem`, whose first byte is at `iova`.
fn long_walk_tree(mem: &mut GuestMemory, iova: u64) {
    let mut set = |table: u64, index: usize, entry: u64| {
        let at = (table * TABLE) as usize + 8 * index;
        mem.bytes_mut()[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    };
    for i in 0..512 {
        set(0, i, sys_table(iova + TABLE));
        set(1, i, sys_table(iova + 2 * TABLE));
        set(2, i, sys_table(iova + 3 * TABLE));
    }
    set(3, 0, vram_page(0x5000));
}

#[test]
fn an_unmap_of_the_tables_under_a_walk_stops_neither_the_daemon_nor_b() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    for round in 0..8u64 {
        let iova = G + round * 0x100_0000;
        let mut mem = GuestMemory::new(4 * TABLE as usize)?;
        long_walk_tree(&mut mem, iova);
        c.dma_map(
            DmaMapRequest::read_write(iova, 4 * TABLE),
            Some(mem.as_fd()),
        )?;
        let root = sys_table(iova);
        c.region_write_posted(region::BAR2, pt_root_lo(0), &(root as u32).to_le_bytes())?;
        c.region_write_posted(
            region::BAR2,
            pt_root_hi(0),
            &((root >> 32) as u32).to_le_bytes(),
        )?;
        c.dma_unmap(iova, 4 * TABLE)?;
        drop(mem);
        let status = c.xlate(0, 0, false)?;
        assert!(
            status == ok_vram(0x5000) || status == fault(NOT_MAPPED),
            "round {round}: {status:?}"
        );
        assert!(daemon.is_running(), "stderr:\n{}", daemon.stderr());
        crate::rig::assert_serves(&mut b, "vGPU B")?;
    }
    c.invalidate_all(0)?;
    assert_eq!(c.xlate(0, 0, false)?, fault(NOT_MAPPED));
    Ok(())
}

#[test]
fn a_reset_or_a_disconnect_under_a_walk_leaves_a_clean_device() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut mem = GuestMemory::new(4 * TABLE as usize)?;
    long_walk_tree(&mut mem, G);
    let mut c = daemon.connect(VGPU_A)?;
    for round in 0..4u32 {
        c.dma_map(DmaMapRequest::read_write(G, 4 * TABLE), Some(mem.as_fd()))?;
        // The walk this commits examines 2,097,152 entries; the reset or
        // the disconnect comes right behind it.
        let channel = round % STANDARD_CHANNELS;
        let root = sys_table(G);
        c.region_write_posted(
            region::BAR2,
            pt_root_lo(channel),
            &(root as u32).to_le_bytes(),
        )?;
        c.region_write_posted(
            region::BAR2,
            pt_root_hi(channel),
            &((root >> 32) as u32).to_le_bytes(),
        )?;
        if round % 2 == 0 {
            c.reset()?;
            c.dma_unmap(G, 4 * TABLE)?;
        } else {
            drop(c);
            c = reconnect(&daemon, VGPU_A)?;
        }
        for channel in 0..STANDARD_CHANNELS {
            assert_eq!(c.pt_root(channel)?, 0, "round {round}");
            assert_eq!(
                c.xlate(channel, 0, false)?,
                fault(NOT_PRESENT),
                "round {round}"
            );
        }
        assert_eq!(c.fault_record()?.count, STANDARD_CHANNELS, "round {round}");
        c.reset()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------
// The fault log when it is full: splits, room made again, reason 5.

/// T1 alternating reason 2 (even entries: a reserved bit) and reason 3
/// (odd: a VRAM page past the slice): 512 fault ranges, no page.
fn alternating_from_2(r: &mut Rig, t1: u64) {
    r.fill(t1, 0..512, |i| {
        if i % 2 == 0 {
            vram_page(0) | 1 << 4
        } else {
            vram_page(FB)
        }
    });
}

#[test]
fn a_full_fault_log_keeps_the_larger_part_of_a_split_and_refills_when_there_is_room()
-> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (l4, l3, long, alt, t1, ro) = (
        Rig::t(0),
        Rig::t(1),
        Rig::t(2),
        Rig::t(3),
        Rig::t(4),
        Rig::t(5),
    );
    r.set(l4, 0, sys_table(l3));
    // [0, 1 GiB): one range of reason 3 (large VRAM pages past the slice).
    r.set(l3, 0, sys_table(long));
    r.fill(long, 0..512, |_| FB | V | W | L);
    // [1 GiB, 1 GiB + 16 MiB): 8 × 512 alternating ranges, so 4097 in all.
    r.set(l3, 1, sys_table(alt));
    r.fill(alt, 0..8, |_| sys_table(t1));
    alternating_from_2(&mut r, t1);
    // Then a read-only page, after the list is full.
    r.set(alt, 8, sys_table(ro));
    r.set(ro, 0, vram_page(0x6000) & !W);
    r.c.set_pt_root(0, sys_table(l4))?;
    let alt_va = |k: u64| GIB + range_va(k);
    assert_eq!(r.status(0, 0)?, OUTSIDE_VRAM);
    assert_eq!(r.status(0, GIB - PAGE_SIZE)?, OUTSIDE_VRAM);
    assert_eq!(
        r.status(0, alt_va(4094))?,
        INVALID_ENTRY,
        "the 4096th range"
    );
    assert_eq!(
        r.status(0, alt_va(4095))?,
        NOT_PRESENT,
        "the 4097th is not kept"
    );
    // Reason 5 does not depend on the list.
    let page = GIB + 8 * LARGE_PAGE_SIZE;
    assert_eq!(r.xlate(0, page)?, ok_vram(0x6000));
    assert_eq!(r.c.xlate(0, page, true)?, fault(READ_ONLY));

    // Split the long range: its first 2 MiB now fault with reason 2, which
    // does not fit; the larger part keeps reason 3.
    r.set(long, 0, vram_page(0) | 1 << 4);
    r.c.invalidate_range(0, 0, PAGE_SIZE)?;
    assert_eq!(r.status(0, 0)?, NOT_PRESENT, "a reason that does not fit");
    assert_eq!(
        r.status(0, LARGE_PAGE_SIZE)?,
        OUTSIDE_VRAM,
        "the larger part"
    );
    assert_eq!(r.status(0, GIB - PAGE_SIZE)?, OUTSIDE_VRAM);
    // Make room: one 2 MiB region of alternating ranges becomes not present.
    r.set(alt, 7, 0);
    r.c.invalidate_range(0, GIB + 7 * LARGE_PAGE_SIZE, PAGE_SIZE)?;
    assert_eq!(r.status(0, GIB + 7 * LARGE_PAGE_SIZE)?, NOT_PRESENT);
    // Invalidating the address again restores its reason.
    r.c.invalidate_range(0, 0, PAGE_SIZE)?;
    assert_eq!(
        r.status(0, 0)?,
        INVALID_ENTRY,
        "restored once there is room"
    );
    assert_eq!(r.status(0, alt_va(3000))?, INVALID_ENTRY, "the others stay");
    Ok(())
}

#[test]
fn tables_in_a_file_the_vmm_truncates_fault_with_reason_4_until_it_grows_back() -> anyhow::Result<()>
{
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let fd = rustix::fs::memfd_create("vgpud-test-tables", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&fd, 4 * TABLE)?;
    let tables = [
        (0u64, sys_table(G + TABLE)),
        (1, sys_table(G + 2 * TABLE)),
        (2, sys_table(G + 3 * TABLE)),
        (3, vram_page(0x8000)),
    ];
    for (table, entry) in tables {
        rustix::io::pwrite(&fd, &entry.to_le_bytes(), table * TABLE)?;
    }
    // A second page mapped from the same file, to show that translations
    // into truncated memory keep working.
    rustix::io::pwrite(&fd, &((G + 2 * TABLE) | V | S).to_le_bytes(), 3 * TABLE + 8)?;
    c.dma_map(DmaMapRequest::read_write(G, 4 * TABLE), Some(fd.as_fd()))?;
    c.set_pt_root(0, sys_table(G))?;
    assert_eq!(c.xlate(0, 0, false)?, ok_vram(0x8000));
    assert_eq!(
        c.xlate(0, PAGE_SIZE, false)?,
        Translation::ok(G + 2 * TABLE, Target::System)
    );
    rustix::fs::ftruncate(&fd, 0)?;
    assert_eq!(
        c.xlate(0, PAGE_SIZE, false)?,
        Translation::ok(G + 2 * TABLE, Target::System),
        "a translation never reads the memory"
    );
    c.invalidate_all(0)?;
    assert_eq!(c.xlate(0, 0, false)?, fault(NOT_MAPPED), "a table there");
    assert_eq!(c.xlate(0, TOP - PAGE_SIZE, false)?, fault(NOT_MAPPED));
    rustix::fs::ftruncate(&fd, 4 * TABLE)?;
    c.invalidate_all(0)?;
    assert_eq!(
        c.xlate(0, 0, false)?,
        fault(NOT_PRESENT),
        "a table of zeros"
    );
    Ok(())
}

#[test]
fn system_pages_and_tables_must_lie_wholly_inside_an_unaligned_map() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    // 8 KiB at an IOVA 0x64 past a page boundary: only the page at
    // base + 0x1000 lies wholly inside it.
    let base = 0x7_0000_0000u64;
    let memory = GuestMemory::new(64 << 10)?;
    r.c.dma_map(
        DmaMapRequest::read_write(base + 0x64, 0x2000),
        Some(memory.as_fd()),
    )?;
    assert_eq!(
        leaf(&mut r, base | V | S)?,
        fault(NOT_MAPPED),
        "starts before"
    );
    assert_eq!(
        leaf(&mut r, (base + 0x1000) | V | S)?,
        Translation::ok(base + 0x1008, Target::System)
    );
    assert_eq!(
        leaf(&mut r, (base + 0x2000) | V | S)?,
        fault(NOT_MAPPED),
        "ends after"
    );
    Ok(())
}

// ---------------------------------------------------------------------
// Byte enables and 8-byte accesses on the trigger registers.

#[test]
fn narrow_writes_to_trigger_registers_see_0_in_the_bytes_not_written() -> anyhow::Result<()> {
    use vgpud_tests::regs::bar2::{
        DMA_CONTROL, DMA_COUNT, ERROR_INFO, INV_CONTROL, IRQ_MASK, SELFTEST,
    };
    let mut r = Rig::new(16)?;
    let (first, _) = two_trees(&mut r);
    r.c.set_pt_root(0, first)?;
    assert_eq!(r.xlate(0, 0x1000)?, ok_vram(0x3000));
    r.set(Rig::t(3), 1, vram_page(0x9000));
    // Byte 1 of INV_CONTROL = 0x02: bit 9 (ALL), channel byte 0 → 0.
    r.c.write_reg(region::BAR2, INV_CONTROL + 1, 1, 0x02)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, 0);
    assert_eq!(
        r.xlate(0, 0x1000)?,
        ok_vram(0x9000),
        "channel 0 invalidated"
    );
    // Byte 1 of XLATE_CONTROL = 0x01: a write access on channel 0.
    r.c.bar2_write32(XLATE_VA_LO, 0x1010)?;
    r.c.write_reg(region::BAR2, XLATE_CONTROL + 1, 1, 0x01)?;
    assert_eq!(r.c.bar2_read32(XLATE_STATUS)?, 0);
    assert_eq!(r.c.bar2_read32(XLATE_RESULT_LO)?, 0x9010);
    // Byte 1 of SELFTEST = 1: vector 0x100, which the device lacks.
    r.c.write_reg(region::BAR2, SELFTEST + 1, 1, 1)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, error_code::BAD_VECTOR);
    assert_eq!(r.c.bar2_read32(ERROR_INFO)?, 0x100);
    r.c.bar2_write32(ERROR_CODE, 0)?;
    // Byte 1 of DMA_CONTROL = 0: the command 0 is not a DMA.
    r.c.write_reg(region::BAR2, DMA_CONTROL + 1, 1, 0)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, error_code::DMA_BAD_COMMAND);
    assert_eq!(r.c.bar2_read32(ERROR_INFO)?, 0);
    assert_eq!(r.c.bar2_read32(DMA_COUNT)?, 0);
    // IRQ_MASK keeps its writable mask.
    r.c.bar2_write32(IRQ_MASK, u32::MAX)?;
    assert_eq!(r.c.bar2_read32(IRQ_MASK)?, 0xf);
    Ok(())
}

#[test]
fn eight_byte_accesses_cover_two_registers() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let (first, _) = two_trees(&mut r);
    r.c.set_pt_root(1, first)?;
    // XLATE_VA in one access; then XLATE_CONTROL and the read-only
    // XLATE_STATUS in one: the high half is not stored.
    r.c.write_reg(region::BAR2, XLATE_VA_LO, 8, 0x1020)?;
    r.c.write_reg(region::BAR2, XLATE_CONTROL, 8, 0xdead_beef_0000_0001)?;
    assert_eq!(r.c.bar2_read32(XLATE_STATUS)?, 0);
    assert_eq!(
        r.c.read_reg(region::BAR2, XLATE_RESULT_LO, 8)?,
        0x3020,
        "XLATE_RESULT read in one access"
    );
    // A fault's VA read in one access.
    r.c.write_reg(region::BAR2, XLATE_VA_LO, 8, 0x0000_1234_5678_9000)?;
    r.c.write_reg(region::BAR2, XLATE_CONTROL, 4, 1)?;
    assert_eq!(
        r.c.read_reg(region::BAR2, vgpud_tests::regs::bar2::FAULT_VA_LO, 8)?,
        0x0000_1234_5678_9000
    );
    // INV_VA and INV_SIZE in one access each.
    r.c.write_reg(region::BAR2, INV_VA_LO, 8, 0x1_0000_0000)?;
    r.c.write_reg(region::BAR2, INV_SIZE_LO, 8, 0x2_0000_0000)?;
    assert_eq!(r.c.bar2_read32(INV_VA_HI)?, 1);
    assert_eq!(r.c.bar2_read32(INV_SIZE_HI)?, 2);
    assert_eq!(r.c.bar2_read32(INV_SIZE_LO)?, 0);
    // An 8-byte access that is not 8-byte aligned is refused.
    let refused =
        r.c.write_reg(region::BAR2, vgpud_tests::regs::bar2::DMA_CONTROL, 8, 1);
    assert_eq!(
        refused.err().and_then(|e| e.errno()),
        Some(crate::rig::EINVAL)
    );
    assert_eq!(r.c.bar2_read32(vgpud_tests::regs::bar2::DMA_COUNT)?, 0);
    Ok(())
}

#[test]
fn a_range_walk_counts_only_the_entries_in_its_range() -> anyhow::Result<()> {
    // L4[0] → T3; T3[0..16] → T2; T2 → T1 (one page at index 0). First
    // with T2[0] only (a light walk), then with all 512 T2 entries and an
    // invalidation of [0, 16 GiB): the walk examines 1 entry of L4, 16 of
    // T3, then 512 + 512 × 512 per T2 visit. After 7 T2 visits and the
    // 8th's own 512 that is 1,839,121; 503 T1 visits fit, the 504th
    // (T2[503] under T3[7]) faults with reason 6, as does the rest of the
    // range. A walk of the whole space would stop one entry earlier.
    let mut r = Rig::new(4)?;
    let (l4, t3, t2, t1) = (Rig::t(0), Rig::t(1), Rig::t(2), Rig::t(3));
    r.set(l4, 0, sys_table(t3));
    r.fill(t3, 0..16, |_| sys_table(t2));
    r.set(t2, 0, sys_table(t1));
    r.set(t1, 0, vram_page(0x5000));
    r.c.set_pt_root(0, sys_table(l4))?;
    assert_eq!(r.xlate(0, 15 * GIB)?, ok_vram(0x5000));
    assert_eq!(r.status(0, 16 * GIB)?, NOT_PRESENT);
    r.fill(t2, 0..512, |_| sys_table(t1));
    r.c.invalidate_range(0, 0, 16 * GIB)?;
    let boundary = 7 * GIB + 503 * LARGE_PAGE_SIZE;
    assert_eq!(
        r.xlate(0, boundary - LARGE_PAGE_SIZE)?,
        ok_vram(0x5000),
        "T2[502]"
    );
    assert_eq!(r.status(0, boundary)?, WALK_LIMIT, "T2[503]");
    assert_eq!(
        r.status(0, 16 * GIB - PAGE_SIZE)?,
        WALK_LIMIT,
        "to the range's end"
    );
    assert_eq!(
        r.status(0, 16 * GIB)?,
        NOT_PRESENT,
        "after the range: as it was"
    );
    Ok(())
}

#[test]
fn a_dma_unmap_gives_its_pages_back_to_the_budget() -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let pages_iova = 0x8_0000_0000u64;
    let pages = GuestMemory::new(2 << 20)?;
    r.c.dma_map(
        DmaMapRequest::read_write(pages_iova, 2 << 20),
        Some(pages.as_fd()),
    )?;
    // B system pages: L3[0] → T2 (512) → T1 (512 pages in the map).
    let (l4, t3, t2, t1) = (Rig::t(0), Rig::t(1), Rig::t(2), Rig::t(3));
    r.set(l4, 0, sys_table(t3));
    r.set(t3, 0, sys_table(t2));
    r.fill(t2, 0..512, |_| sys_table(t1));
    r.fill(t1, 0..512, |i| {
        (pages_iova + i as u64 * PAGE_SIZE) | V | W | S
    });
    r.c.set_pt_root(0, sys_table(l4))?;
    assert_eq!(
        r.xlate(0, GIB - PAGE_SIZE)?,
        Translation::ok(pages_iova + 511 * PAGE_SIZE, Target::System)
    );
    let small = one_page_tree(&mut r);
    r.c.set_pt_root(1, small)?;
    assert_eq!(r.status(1, 0)?, WALK_LIMIT, "the budget is full");
    r.c.dma_unmap(pages_iova, 2 << 20)?;
    assert_eq!(r.status(0, 0)?, NOT_MAPPED);
    r.c.invalidate_all(1)?;
    assert_eq!(
        r.xlate(1, 0)?,
        ok_vram(0x7000),
        "the unmapped pages count no more"
    );
    Ok(())
}

#[test]
fn pages_a_dma_unmap_takes_while_the_fault_log_is_full_report_reason_1() -> anyhow::Result<()> {
    // docs/device-interface.md: a DMA_UNMAP "records each run of pages it
    // took as one range of the channel's list of fault reasons; if that
    // list is full, the run is not remembered and its pages report reason
    // 1". One run of 512 pages, and pages every other entry.
    unmapped_pages_under_a_full_fault_log(1)?;
    unmapped_pages_under_a_full_fault_log(2)
}

/// Fills channel 0's list of fault ranges, maps system pages at every
/// `stride`-th entry of the 2 MiB at 1 GiB, unmaps them and checks that
/// each faults with reason 1, the list having no room to remember them.
fn unmapped_pages_under_a_full_fault_log(stride: usize) -> anyhow::Result<()> {
    let mut r = Rig::new(16)?;
    let pages_iova = 0x8_0000_0000u64;
    let pages = GuestMemory::new(2 << 20)?;
    r.c.dma_map(
        DmaMapRequest::read_write(pages_iova, 2 << 20),
        Some(pages.as_fd()),
    )?;
    let (l4, l3, alt, t1, t2p, t1p) = (
        Rig::t(0),
        Rig::t(1),
        Rig::t(2),
        Rig::t(3),
        Rig::t(4),
        Rig::t(5),
    );
    r.set(l4, 0, sys_table(l3));
    r.set(l3, 0, sys_table(alt));
    r.fill(alt, 0..9, |_| sys_table(t1));
    alternating_from_2(&mut r, t1);
    // [1 GiB, 1 GiB + 2 MiB): system pages every `stride` entries.
    r.set(l3, 1, sys_table(t2p));
    r.set(t2p, 0, sys_table(t1p));
    r.fill(t1p, 0..512, |i| {
        if i % stride == 0 {
            (pages_iova + i as u64 * PAGE_SIZE) | V | W | S
        } else {
            0
        }
    });
    r.c.set_pt_root(0, sys_table(l4))?;
    assert_eq!(
        r.status(0, range_va(4094))?,
        INVALID_ENTRY,
        "the list is full"
    );
    assert_eq!(
        r.status(0, range_va(4095))?,
        OUTSIDE_VRAM,
        "the list is full"
    );
    assert_eq!(r.status(0, range_va(4096))?, NOT_PRESENT, "past it");
    assert_eq!(
        r.xlate(0, GIB + 2 * PAGE_SIZE)?,
        Translation::ok(pages_iova + 2 * PAGE_SIZE, Target::System)
    );
    r.c.dma_unmap(pages_iova, 2 << 20)?;
    let mut reasons = Vec::new();
    for i in (0..512).step_by(stride) {
        let va = GIB + i * PAGE_SIZE;
        reasons.push((i, r.status(0, va)?, r.c.xlate(0, va, true)?.status));
    }
    let wrong: Vec<_> = reasons
        .iter()
        .filter(|(_, read, write)| *read != NOT_PRESENT || *write != NOT_PRESENT)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} unmapped pages report another reason (entry, read, write): {:?}",
        wrong.len(),
        reasons.len(),
        &wrong[..wrong.len().min(8)]
    );
    Ok(())
}
