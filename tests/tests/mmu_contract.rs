//! What `docs/device-interface.md` settles about the GPU MMU beyond the
//! page format: when and how far the daemon walks, the bounds of a walk
//! and of a vGPU's translations, and the details a driver relies on
//! (fault reasons after DMA_UNMAP, register values after refusals and
//! reset, interrupts, memory that the VMM truncates). One test per rule,
//! each against the running daemon over vfio-user.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
use vgpud_tests::device::DmaJob;
use vgpud_tests::host::{EventFd, eventfds, pattern};
use vgpud_tests::page_tables::{
    ENTRIES, LARGE_PAGE_SIZE, Level, PAGE_SIZE, Page, PageTables, TableMemory, Target, Translation,
    pte,
};
use vgpud_tests::regs::bar2::{
    CHANNELS, DMA_COUNT, DMA_FROM_VRAM, DMA_TO_VRAM, ERROR_CODE, ERROR_INFO, FAULT_INFO,
    INV_CONTROL, IRQ_ERROR, IRQ_FAULT, IRQ_MASK, IRQ_STATUS, SELFTEST, VRAM_SIZE_LO, XLATE_CONTROL,
    XLATE_WRITE,
};
use vgpud_tests::regs::config::COMMAND;
use vgpud_tests::regs::error_code::{BAD_CHANNEL, DMA_FAILED, DMA_NOT_MAPPED};
use vgpud_tests::regs::fault_info::{
    self, INVALID_ENTRY, NOT_MAPPED, NOT_PRESENT, OUTSIDE_VRAM, READ_ONLY, WALK_LIMIT,
};
use vgpud_tests::regs::region::BAR0;
use vgpud_tests::wire::irq_index;
use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A};

/// Guest memory for tables, DMA-mapped read-write from file offset 0.
const TABLES_IOVA: u64 = 0x10_0000_0000;
/// An offset inside a page that shows in a translation.
const OFF: u64 = 0x9ab;
/// The standard profile's 16 MiB slice gives the smallest page budget.
const PAGE_BUDGET: u64 = 1 << 18;

/// The command register's bus-master bit.
const BUS_MASTER: u16 = 1 << 2;

/// A VA from its four table indexes.
const fn va(l4: u64, l3: u64, l2: u64, l1: u64) -> u64 {
    (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12)
}

struct Rig {
    _daemon: TestDaemon,
    c: RawClient,
    guest: GuestMemory,
    tables: PageTables,
}

/// A daemon, vGPU A, and `table_count` tables' worth of guest memory
/// mapped at [`TABLES_IOVA`], with an empty root table at its start.
fn rig(table_count: u64) -> anyhow::Result<Rig> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let len = table_count * PAGE_SIZE;
    let mut guest = GuestMemory::new(usize::try_from(len)?)?;
    c.dma_map(
        DmaMapRequest::read_write(TABLES_IOVA, len),
        Some(guest.as_fd()),
    )?;
    let tables = PageTables::in_guest(&mut guest, TABLES_IOVA..TABLES_IOVA + len, 0)?;
    Ok(Rig {
        _daemon: daemon,
        c,
        guest,
        tables,
    })
}

impl Rig {
    #[track_caller]
    fn assert_xlate(&mut self, channel: u32, va: u64, expected: Translation) -> anyhow::Result<()> {
        let got = self.c.xlate(channel, va, false)?;
        assert_eq!(got, expected, "channel {channel}, VA {va:#x}");
        Ok(())
    }

    #[track_caller]
    fn assert_vram(&mut self, channel: u32, va: u64, page: u64) -> anyhow::Result<()> {
        self.assert_xlate(channel, va + OFF, Translation::ok(page + OFF, Target::Vram))
    }

    #[track_caller]
    fn assert_fault(&mut self, channel: u32, va: u64, reason: u32) -> anyhow::Result<()> {
        self.assert_xlate(channel, va + OFF, Translation::fault(reason))
    }
}

// ---------------------------------------------------------------------
// The walk bounds: 4096 tables, 2 Mi entries examined, per walk.
// ---------------------------------------------------------------------

/// 4096 tables, none shared: the root, one level-3 table, 8 level-2
/// tables and 4086 level-1 tables, each of which maps one page, so the
/// last one is at VA (0, 7, 501, 0).
fn tree_of_4096_tables(r: &mut Rig) -> anyhow::Result<()> {
    for l3 in 0..8 {
        let l2_count = if l3 == 7 { 502 } else { 512 };
        for l2 in 0..l2_count {
            r.tables
                .map(&mut r.guest, va(0, l3, l2, 0), Page::vram(0x5000))?;
        }
    }
    Ok(())
}

#[test]
fn a_tree_of_4096_unshared_tables_is_walked_whole() -> anyhow::Result<()> {
    let mut r = rig(4097)?;
    tree_of_4096_tables(&mut r)?;
    r.c.set_pt_root(0, r.tables.root_entry())?;
    for at in [va(0, 0, 0, 0), va(0, 3, 256, 0), va(0, 7, 501, 0)] {
        r.assert_vram(0, at, 0x5000)?;
    }
    r.assert_fault(0, va(0, 7, 501, 1), NOT_PRESENT)?;
    r.assert_fault(0, va(0, 7, 502, 0), NOT_PRESENT)?;
    r.assert_fault(0, va(1, 0, 0, 0), NOT_PRESENT)
}

#[test]
fn the_table_past_the_walk_bound_faults_from_its_entry_to_the_end_of_the_walk() -> anyhow::Result<()>
{
    let mut r = rig(4098)?;
    tree_of_4096_tables(&mut r)?;
    // Table 4097: the level-1 table of VA (0, 7, 502, 0).
    r.tables
        .map(&mut r.guest, va(0, 7, 502, 0), Page::vram(0x6000))?;
    r.c.set_pt_root(0, r.tables.root_entry())?;
    r.assert_vram(0, va(0, 7, 501, 0), 0x5000)?;
    // Before the cut, what the walk found stays.
    r.assert_fault(0, va(0, 7, 501, 1), NOT_PRESENT)?;
    // From the first VA of the entry naming table 4097 to 2^48: reason 6,
    // whether the tables map anything there or not.
    for at in [
        va(0, 7, 502, 0),
        va(0, 7, 502, 1),
        va(0, 7, 503, 0),
        va(0, 8, 0, 0),
        va(511, 511, 511, 511),
    ] {
        r.assert_fault(0, at, WALK_LIMIT)?;
    }
    // A range invalidation walks only its 2 MiB: four tables, well inside
    // the bound, so the page comes; the rest keeps the old walk's answer.
    r.c.invalidate_range(0, va(0, 7, 502, 0), PAGE_SIZE)?;
    r.assert_vram(0, va(0, 7, 502, 0), 0x6000)?;
    r.assert_fault(0, va(0, 7, 502, 1), NOT_PRESENT)?;
    r.assert_fault(0, va(0, 7, 503, 0), WALK_LIMIT)?;
    // Another channel walks the same tree on its own bounds.
    r.c.set_pt_root(1, r.tables.root_entry())?;
    r.assert_fault(1, va(0, 7, 502, 0), WALK_LIMIT)?;
    r.assert_vram(1, va(0, 7, 501, 0), 0x5000)
}

#[test]
fn a_table_named_by_several_entries_is_counted_at_each_visit() -> anyhow::Result<()> {
    let mut r = rig(16)?;
    // Nine level-2 tables whose 512 entries all name one level-1 table,
    // which maps one page: 12 distinct tables, but 3 + 9 × 513 visits.
    let shared = r.tables.new_table(&mut r.guest)?;
    let pointer = r.tables.pointer_to(shared);
    r.tables
        .set_entry(&mut r.guest, shared, 0, Page::vram(0x7000).entry())?;
    for l3 in 0..9 {
        let l2 = r.tables.table(&mut r.guest, va(0, l3, 0, 0), Level::L2)?;
        r.tables.fill_table(&mut r.guest, l2, &[pointer; ENTRIES])?;
    }
    r.c.set_pt_root(0, r.tables.root_entry())?;
    // The 4096th visit is the level-1 table under (0, 7, 501); the next
    // one would examine entries 2 Mi + 1 to 2 Mi + 512.
    r.assert_vram(0, va(0, 0, 0, 0), 0x7000)?;
    r.assert_vram(0, va(0, 7, 501, 0), 0x7000)?;
    r.assert_fault(0, va(0, 7, 501, 1), NOT_PRESENT)?;
    r.assert_fault(0, va(0, 7, 502, 0), WALK_LIMIT)?;
    r.assert_fault(0, va(0, 8, 0, 0), WALK_LIMIT)
}

// ---------------------------------------------------------------------
// The page budget: the channels together hold at most 256 Ki pages here.
// ---------------------------------------------------------------------

/// Makes every entry of the level-2 table of VA (`l4`, 0, *, *) name one
/// level-1 table that maps VRAM pages 0..512: 512 × 512 = 256 Ki pages,
/// the whole budget of a 16 MiB vGPU, through four tables.
fn fan_out(r: &mut Rig, l4: u64) -> anyhow::Result<()> {
    let l1 = r.tables.new_table(&mut r.guest)?;
    let pages = std::array::from_fn(|i| Page::vram(i as u64 * PAGE_SIZE).entry());
    r.tables.fill_table(&mut r.guest, l1, &pages)?;
    let l2 = r.tables.table(&mut r.guest, va(l4, 0, 0, 0), Level::L2)?;
    let pointer = r.tables.pointer_to(l1);
    r.tables.fill_table(&mut r.guest, l2, &[pointer; ENTRIES])
}

#[test]
fn a_level_1_table_shared_by_512_level_2_entries_is_mapped_under_each() -> anyhow::Result<()> {
    let mut r = rig(16)?;
    fan_out(&mut r, 1)?;
    r.c.set_pt_root(0, r.tables.root_entry())?;
    for (l2, l1) in [(0, 0), (255, 17), (511, 511)] {
        r.assert_vram(0, va(1, 0, l2, l1), l1 * PAGE_SIZE)?;
    }
    // Re-walking part of it gives its pages back first: no fault.
    r.c.invalidate_range(0, va(1, 0, 300, 0), LARGE_PAGE_SIZE)?;
    r.assert_vram(0, va(1, 0, 300, 5), 5 * PAGE_SIZE)?;
    r.c.invalidate_all(0)?;
    r.assert_vram(0, va(1, 0, 511, 511), 511 * PAGE_SIZE)
}

#[test]
fn pages_past_the_budget_fault_in_va_order_to_the_end_of_the_walk() -> anyhow::Result<()> {
    let mut r = rig(16)?;
    fan_out(&mut r, 1)?;
    r.tables
        .map(&mut r.guest, va(2, 0, 0, 0), Page::vram(0x1000))?;
    r.c.set_pt_root(0, r.tables.root_entry())?;
    r.assert_vram(0, va(1, 0, 511, 511), 511 * PAGE_SIZE)?;
    r.assert_fault(0, va(2, 0, 0, 0), WALK_LIMIT)?;
    r.assert_fault(0, va(2, 0, 0, 1), WALK_LIMIT)?;
    r.assert_fault(0, va(0, 0, 0, 0), NOT_PRESENT)?;
    // A page mapped at a lower VA comes first: now the fan-out's last
    // page is the one past the budget.
    r.tables
        .map(&mut r.guest, va(0, 0, 0, 0), Page::vram(0x2000))?;
    r.c.invalidate_all(0)?;
    r.assert_vram(0, va(0, 0, 0, 0), 0x2000)?;
    r.assert_vram(0, va(1, 0, 511, 510), 510 * PAGE_SIZE)?;
    r.assert_fault(0, va(1, 0, 511, 511), WALK_LIMIT)?;
    r.assert_fault(0, va(2, 0, 0, 0), WALK_LIMIT)
}

#[test]
fn the_budget_is_shared_by_the_channels_and_comes_back_on_the_next_walk() -> anyhow::Result<()> {
    let mut r = rig(16)?;
    fan_out(&mut r, 1)?;
    let full = r.tables.root_entry();
    let mut small = PageTables::in_guest(
        &mut r.guest,
        TABLES_IOVA + 8 * PAGE_SIZE..TABLES_IOVA + 16 * PAGE_SIZE,
        8 * PAGE_SIZE,
    )?;
    small.map(&mut r.guest, va(3, 0, 0, 0), Page::vram(0x3000))?;
    assert_eq!(PAGE_BUDGET, 512 * 512);
    // Channel 0 holds the whole budget: channel 1's walk maps nothing.
    r.c.set_pt_root(0, full)?;
    r.c.set_pt_root(1, small.root_entry())?;
    r.assert_fault(1, va(3, 0, 0, 0), WALK_LIMIT)?;
    r.assert_vram(0, va(1, 0, 511, 511), 511 * PAGE_SIZE)?;
    // Channel 0 gives its pages up (a root with VALID clear maps
    // nothing); channel 1 keeps its fault until it walks again.
    r.c.set_pt_root(0, 0)?;
    r.assert_fault(1, va(3, 0, 0, 0), WALK_LIMIT)?;
    r.c.invalidate_all(1)?;
    r.assert_vram(1, va(3, 0, 0, 0), 0x3000)?;
    // Now channel 1 holds one page, and channel 0 gets one fewer.
    r.c.set_pt_root(0, full)?;
    r.assert_vram(0, va(1, 0, 511, 510), 510 * PAGE_SIZE)?;
    r.assert_fault(0, va(1, 0, 511, 511), WALK_LIMIT)
}

// ---------------------------------------------------------------------
// DMA_UNMAP: what a translation of a revoked page says.
// ---------------------------------------------------------------------

/// Tables in VRAM from 8 MiB into the slice, written with REGION_WRITE.
const VRAM_ARENA: std::ops::Range<u64> = 0x80_0000..0x84_0000;

/// A daemon and a client of vGPU A with nothing mapped yet.
fn plain() -> anyhow::Result<(TestDaemon, RawClient)> {
    let daemon = TestDaemon::standard()?;
    let c = daemon.connect(VGPU_A)?;
    Ok((daemon, c))
}

/// A memfd of `len` bytes DMA-mapped read-write at `iova`.
fn map_memory(c: &mut RawClient, iova: u64, len: u64) -> anyhow::Result<GuestMemory> {
    let memory = GuestMemory::new(usize::try_from(len)?)?;
    c.dma_map(DmaMapRequest::read_write(iova, len), Some(memory.as_fd()))?;
    Ok(memory)
}

#[test]
fn a_page_that_dma_unmap_took_faults_as_not_mapped() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let (small_iova, large_iova, table_iova) = (0x3_0000_0000, 0x4_0000_0000, 0x5_0000_0000);
    let _small = map_memory(&mut c, small_iova, 64 << 10)?;
    let _large = map_memory(&mut c, large_iova, LARGE_PAGE_SIZE)?;
    let mut table_memory = map_memory(&mut c, table_iova, PAGE_SIZE)?;
    let (small_va, large_va, far_va) = (va(1, 0, 0, 4), va(1, 0, 2, 0), va(2, 0, 0, 7));
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    tables.map(&mut c, small_va, Page::system(small_iova + 0x2000))?;
    tables.map(&mut c, large_va, Page::system(large_iova).large())?;
    // far_va's level-1 table lies in guest memory; its page is in VRAM.
    let l2 = tables.table(&mut c, far_va, Level::L2)?;
    let level_1_in_guest = table_iova | pte::VALID | pte::WRITABLE | pte::SYSTEM;
    tables.set_entry(&mut c, l2, Level::L2.index(far_va), level_1_in_guest)?;
    let leaf = Page::vram(0x8000).entry().to_le_bytes();
    let slot = 8 * Level::L1.index(far_va);
    table_memory.bytes_mut()[slot..slot + 8].copy_from_slice(&leaf);
    c.set_pt_root(0, tables.root_entry())?;
    let small = Translation::ok(small_iova + 0x2000 + OFF, Target::System);
    assert_eq!(c.xlate(0, small_va + OFF, true)?, small);
    let large = Translation::ok(large_iova + 0x1_2345, Target::System);
    assert_eq!(c.xlate(0, large_va + 0x1_2345, true)?, large);
    let far = Translation::ok(0x8000 + OFF, Target::Vram);
    assert_eq!(c.xlate(0, far_va + OFF, false)?, far);

    c.dma_unmap(small_iova, 64 << 10)?;
    c.dma_unmap(large_iova, LARGE_PAGE_SIZE)?;
    c.dma_unmap(table_iova, PAGE_SIZE)?;
    let not_mapped = Translation::fault(NOT_MAPPED);
    for write in [false, true] {
        assert_eq!(c.xlate(0, small_va + OFF, write)?, not_mapped);
        for offset in [0, 0x1_2345, LARGE_PAGE_SIZE - 1] {
            assert_eq!(c.xlate(0, large_va + offset, write)?, not_mapped);
        }
    }
    assert_eq!(
        c.xlate(0, small_va + PAGE_SIZE, false)?,
        Translation::fault(NOT_PRESENT),
        "the next VA never had a page"
    );
    // A page whose table the unmap took stays until it is walked again.
    assert_eq!(c.xlate(0, far_va + OFF, false)?, far);
    // Walked again, entries that still name the unmapped memory: 4.
    c.invalidate_all(0)?;
    assert_eq!(c.xlate(0, small_va + OFF, false)?, not_mapped);
    assert_eq!(c.xlate(0, large_va, false)?, not_mapped);
    assert_eq!(c.xlate(0, far_va + OFF, false)?, not_mapped);
    // Pointed elsewhere and walked again, the VA translates anew.
    tables.map(&mut c, small_va, Page::vram(0x9000))?;
    c.invalidate_range(0, small_va, PAGE_SIZE)?;
    assert_eq!(
        c.xlate(0, small_va + OFF, true)?,
        Translation::ok(0x9000 + OFF, Target::Vram)
    );
    Ok(())
}

// ---------------------------------------------------------------------
// Cycles: a table is on its own path by address, not by memory.
// ---------------------------------------------------------------------

const fn vram_pointer(table: u64) -> u64 {
    table | pte::VALID | pte::WRITABLE
}

const fn system_pointer(table: u64) -> u64 {
    vram_pointer(table) | pte::SYSTEM
}

/// Writes `entries` (index, value) into one page of `memory` at `at`.
fn put_entries(memory: &mut [u8], at: usize, entries: &[(usize, u64)]) {
    for &(index, entry) in entries {
        let slot = at + 8 * index;
        memory[slot..slot + 8].copy_from_slice(&entry.to_le_bytes());
    }
}

#[test]
fn one_page_under_several_iovas_is_several_tables_and_no_cycle() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    // One page of guest memory, DMA-mapped at four IOVAs.
    let iovas = [0x3_0000_0000, 0x3_0001_0000, 0x3_0002_0000, 0x3_0003_0000];
    let [a, b, c_iova, d] = iovas;
    let mut page = GuestMemory::new(PAGE_SIZE as usize)?;
    for iova in iovas {
        c.dma_map(
            DmaMapRequest::read_write(iova, PAGE_SIZE),
            Some(page.as_fd()),
        )?;
    }
    put_entries(
        page.bytes_mut(),
        0,
        &[
            (0, system_pointer(b)),
            (1, system_pointer(a)),
            (2, system_pointer(c_iova)),
            (3, system_pointer(d)),
            (4, Page::vram(0x5000).entry()),
        ],
    );
    c.set_pt_root(0, system_pointer(a))?;
    // Root A, then B as level 3, C as level 2, D as level 1: one page of
    // memory read four times, under four addresses, none of them twice.
    assert_eq!(
        c.xlate(0, va(0, 2, 3, 4) + OFF, true)?,
        Translation::ok(0x5000 + OFF, Target::Vram)
    );
    // An address already on the path is a cycle, at any level.
    let cycle = Translation::fault(WALK_LIMIT);
    assert_eq!(c.xlate(0, va(1, 0, 0, 0), false)?, cycle, "A under A");
    assert_eq!(c.xlate(0, va(0, 1, 0, 0), false)?, cycle, "A under B");
    assert_eq!(c.xlate(0, va(0, 0, 0, 0), false)?, cycle, "B under B");
    assert_eq!(c.xlate(0, va(0, 2, 0, 0), false)?, cycle, "B under C");
    Ok(())
}

#[test]
fn vram_that_is_also_dma_mapped_is_another_table_and_no_cycle() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let (root, level_2, level_1) = (0x80_0000, 0x80_1000, 0x80_2000);
    // The root table's VRAM page, DMA-mapped as guest memory too.
    let alias = 0x6_0000_0000;
    let bar0 = c.region_info(vgpud_tests::regs::region::BAR0)?;
    let vram_fd = bar0
        .fd
        .ok_or_else(|| anyhow::anyhow!("BAR0 region info carried no fd"))?;
    let map = DmaMapRequest {
        offset: root,
        ..DmaMapRequest::read_write(alias, PAGE_SIZE)
    };
    c.dma_map(map, Some(vram_fd.as_fd()))?;
    let mut vram = c.map_bar0()?;
    let root_at = usize::try_from(root)?;
    put_entries(
        &mut vram.map,
        root_at,
        &[
            (0, system_pointer(alias)),
            (1, vram_pointer(root)),
            (2, vram_pointer(level_2)),
        ],
    );
    put_entries(
        &mut vram.map,
        usize::try_from(level_2)?,
        &[(3, vram_pointer(level_1))],
    );
    put_entries(
        &mut vram.map,
        usize::try_from(level_1)?,
        &[(4, Page::vram(0x6000).entry())],
    );
    c.set_pt_root(0, vram_pointer(root))?;
    // The root's memory read again as a level-3 table through its IOVA.
    assert_eq!(
        c.xlate(0, va(0, 2, 3, 4) + OFF, false)?,
        Translation::ok(0x6000 + OFF, Target::Vram)
    );
    let cycle = Translation::fault(WALK_LIMIT);
    assert_eq!(
        c.xlate(0, va(1, 0, 0, 0), false)?,
        cycle,
        "VRAM root under itself"
    );
    assert_eq!(
        c.xlate(0, va(0, 1, 0, 0), false)?,
        cycle,
        "VRAM root under its alias"
    );
    assert_eq!(
        c.xlate(0, va(0, 0, 0, 0), false)?,
        cycle,
        "the alias under itself"
    );
    Ok(())
}

// ---------------------------------------------------------------------
// Refused commands: a channel the device lacks.
// ---------------------------------------------------------------------

/// Checks that the last command was refused with `code` and `written`,
/// as an error and not a fault, and clears the error.
#[track_caller]
fn assert_refused(c: &mut RawClient, code: u32, written: u32) -> anyhow::Result<()> {
    assert_eq!(c.bar2_read32(ERROR_CODE)?, code, "ERROR_CODE");
    assert_eq!(c.bar2_read32(ERROR_INFO)?, written, "ERROR_INFO");
    let status = c.bar2_read32(IRQ_STATUS)?;
    assert_ne!(status & IRQ_ERROR, 0, "IRQ_STATUS.ERROR");
    assert_eq!(status & IRQ_FAULT, 0, "IRQ_STATUS.FAULT");
    c.bar2_write32(ERROR_CODE, 0)?;
    c.bar2_write32(IRQ_STATUS, IRQ_ERROR)?;
    Ok(())
}

#[test]
fn inv_control_naming_a_missing_channel_is_refused_even_without_range_or_all() -> anyhow::Result<()>
{
    let (_daemon, mut c) = plain()?;
    let channels = c.bar2_read32(CHANNELS)?;
    for control in [channels, 63, channels | 0xc0] {
        c.bar2_write32(INV_CONTROL, control)?;
        assert_refused(&mut c, BAD_CHANNEL, control)?;
    }
    // On a channel the device has, neither bit is no error.
    c.bar2_write32(INV_CONTROL, channels - 1)?;
    assert_eq!(c.bar2_read32(ERROR_CODE)?, 0);
    assert_eq!(c.bar2_read32(IRQ_STATUS)? & IRQ_ERROR, 0);
    Ok(())
}

#[test]
fn a_refused_xlate_control_leaves_the_last_translation_in_the_result_registers()
-> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    let page_va = va(3, 2, 1, 0);
    tables.map(&mut c, page_va, Page::vram(0x4000))?;
    c.set_pt_root(0, tables.root_entry())?;
    let channels = c.bar2_read32(CHANNELS)?;
    let ok = Translation::ok(0x4000 + OFF, Target::Vram);
    let fault = Translation::fault(NOT_PRESENT);
    for (at, last) in [(page_va + OFF, ok), (0, fault)] {
        assert_eq!(c.xlate(0, at, false)?, last);
        c.acknowledge_faults()?;
        let count = c.fault_record()?.count;
        // A VA that would fault, on a channel the device lacks.
        let refused = c.xlate(channels, 0x1000, true)?;
        assert_eq!(refused, last, "the last translation's answer stays");
        assert_refused(&mut c, BAD_CHANNEL, channels | XLATE_WRITE)?;
        assert_eq!(c.fault_record()?.count, count, "no fault recorded");
    }
    Ok(())
}

// ---------------------------------------------------------------------
// VALID clear: not present, whatever else the entry holds.
// ---------------------------------------------------------------------

/// Every bit but VALID: reserved bits, LARGE, SYSTEM, WRITABLE, an
/// address.
const JUNK: u64 = !pte::VALID;

#[test]
fn an_entry_with_valid_clear_is_not_present_whatever_its_reserved_bits() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    // One path per level, each with a VALID-clear entry full of junk at
    // that level, and a good page beside it.
    for (l4, level) in [
        (1, Level::L4),
        (2, Level::L3),
        (3, Level::L2),
        (4, Level::L1),
    ] {
        let good = va(l4, 0, 0, 0);
        tables.map(&mut c, good, Page::vram(0x4000))?;
        let table = tables.table(&mut c, good, level)?;
        let index = if level == Level::L4 { 5 } else { 1 };
        tables.set_entry(&mut c, table, index, JUNK)?;
    }
    c.set_pt_root(0, tables.root_entry())?;
    let not_present = Translation::fault(NOT_PRESENT);
    let cases = [
        va(5, 0, 0, 0),
        va(2, 1, 0, 0),
        va(3, 0, 1, 0),
        va(4, 0, 0, 1),
    ];
    for at in cases {
        for write in [false, true] {
            assert_eq!(c.xlate(0, at + OFF, write)?, not_present, "{at:#x}");
        }
    }
    for l4 in 1..=4 {
        assert_eq!(
            c.xlate(0, va(l4, 0, 0, 0) + OFF, true)?,
            Translation::ok(0x4000 + OFF, Target::Vram)
        );
    }
    // The same junk with VALID set is an invalid entry.
    let level_1 = tables.table(&mut c, va(4, 0, 0, 0), Level::L1)?;
    tables.set_entry(&mut c, level_1, 1, JUNK | pte::VALID)?;
    c.invalidate_range(0, va(4, 0, 0, 0), PAGE_SIZE)?;
    assert_eq!(
        c.xlate(0, va(4, 0, 0, 1), false)?,
        Translation::fault(INVALID_ENTRY)
    );
    // And a root with VALID clear is not present, however junky.
    c.set_pt_root(0, JUNK)?;
    assert_eq!(c.xlate(0, va(1, 0, 0, 0), false)?, not_present);
    c.set_pt_root(0, JUNK | pte::VALID)?;
    assert_eq!(
        c.xlate(0, va(1, 0, 0, 0), false)?,
        Translation::fault(INVALID_ENTRY)
    );
    Ok(())
}

// ---------------------------------------------------------------------
// PT_ROOT's reset value.
// ---------------------------------------------------------------------

#[track_caller]
fn assert_roots_reset(c: &mut RawClient) -> anyhow::Result<()> {
    for channel in 0..c.bar2_read32(CHANNELS)? {
        assert_eq!(c.pt_root(channel)?, 0, "PT_ROOT of channel {channel}");
        assert_eq!(
            c.xlate(channel, va(0, 0, 0, 0), false)?,
            Translation::fault(NOT_PRESENT),
            "channel {channel}"
        );
    }
    Ok(())
}

#[test]
fn pt_root_is_0_at_attach_and_after_reset() -> anyhow::Result<()> {
    let (daemon, mut c) = plain()?;
    assert_roots_reset(&mut c)?;
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    tables.map(&mut c, 0, Page::vram(0x4000))?;
    for channel in 0..c.bar2_read32(CHANNELS)? {
        c.set_pt_root(channel, tables.root_entry())?;
        assert_eq!(c.xlate(channel, 0, false)?.status, 0);
    }
    c.reset()?;
    assert_roots_reset(&mut c)?;
    for channel in 0..c.bar2_read32(CHANNELS)? {
        c.set_pt_root(channel, tables.root_entry())?;
    }
    // The next client attaches to a reset device.
    c.shutdown();
    drop(c);
    let mut next = connect_when_free(&daemon)?;
    assert_roots_reset(&mut next)
}

/// Connects to vGPU A once the previous client's session has ended (the
/// daemon refuses a second client while one is attached); the deadline
/// only bounds a hang.
fn connect_when_free(daemon: &TestDaemon) -> anyhow::Result<RawClient> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match daemon.connect(VGPU_A) {
            Ok(c) => return Ok(c),
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(error),
        }
    }
}

// ---------------------------------------------------------------------
// FAULT_INFO: channel, write, reason, and 0 everywhere else.
// ---------------------------------------------------------------------

#[test]
fn fault_info_reserved_bits_read_0_for_every_reason() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let _read_only = {
        let memory = GuestMemory::new(PAGE_SIZE as usize)?;
        let map = DmaMapRequest::read_only(0x3_0000_0000, PAGE_SIZE);
        c.dma_map(map, Some(memory.as_fd()))?;
        memory
    };
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    let vram_end = u64::from(c.bar2_read32(VRAM_SIZE_LO)?);
    let invalid = va(2, 0, 0, 0);
    tables.map(&mut c, invalid, Page::vram(0x4000))?;
    let level_1 = tables.table(&mut c, invalid, Level::L1)?;
    tables.set_entry(&mut c, level_1, 0, Page::vram(0x4000).entry() | 0xff0)?;
    tables.map(&mut c, va(3, 0, 0, 0), Page::vram(vram_end))?;
    tables.map(&mut c, va(4, 0, 0, 0), Page::system(0x9_0000_0000))?;
    tables.map(
        &mut c,
        va(5, 0, 0, 0),
        Page::system(0x3_0000_0000).read_only(),
    )?;
    tables.set_entry(&mut c, tables.root(), 6, tables.root_entry())?;
    let channel = c.bar2_read32(CHANNELS)? - 1;
    c.set_pt_root(channel, tables.root_entry())?;
    let cases = [
        (va(1, 0, 0, 0), NOT_PRESENT),
        (invalid, INVALID_ENTRY),
        (va(3, 0, 0, 0), OUTSIDE_VRAM),
        (va(4, 0, 0, 0), NOT_MAPPED),
        (va(5, 0, 0, 0), READ_ONLY),
        (va(6, 0, 0, 0), WALK_LIMIT),
    ];
    for (at, reason) in cases {
        for write in [false, true] {
            if reason == READ_ONLY && !write {
                continue;
            }
            c.acknowledge_faults()?;
            assert_eq!(c.bar2_read32(FAULT_INFO)?, 0, "no fault recorded");
            assert_eq!(c.xlate(channel, at, write)?, Translation::fault(reason));
            let info = c.bar2_read32(FAULT_INFO)?;
            assert_eq!(info, fault_info::encode(channel, write, reason));
            assert_eq!(info & !0x000f_013f, 0, "reserved bits of {info:#x}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Interrupts: one per event, signalled before the next reply.
// ---------------------------------------------------------------------

/// Assigns MSI-X eventfds to every vector and unmasks `mask` in IRQ_MASK.
fn arm_vector_0(c: &mut RawClient, mask: u32) -> anyhow::Result<Vec<EventFd>> {
    let irq = eventfds(1 + c.bar2_read32(CHANNELS)? as usize)?;
    let fds: Vec<BorrowedFd<'_>> = irq.iter().map(AsFd::as_fd).collect();
    c.assign_irq_eventfds(irq_index::MSIX, 0, fds.len() as u32, &fds)?;
    c.bar2_write32(IRQ_MASK, mask)?;
    Ok(irq)
}

#[test]
fn every_fault_raises_vector_0_while_unmasked_not_only_the_first() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let irq = arm_vector_0(&mut c, IRQ_FAULT)?;
    for faults in 1..=5u64 {
        c.xlate(0, va(1, 0, 0, 0), faults % 2 == 0)?;
        assert_ne!(c.bar2_read32(IRQ_STATUS)? & IRQ_FAULT, 0);
        assert_eq!(c.fault_record()?.count, faults as u32);
    }
    // IRQ_STATUS.FAULT was set from the first fault on, never cleared:
    // five faults, five signals (the eventfd adds them up).
    assert_eq!(irq[0].take()?, 5);
    // Masked, a fault raises nothing; the count and status still move.
    c.bar2_write32(IRQ_MASK, 0)?;
    c.xlate(0, va(1, 0, 0, 0), false)?;
    assert_eq!(c.fault_record()?.count, 6);
    assert_eq!(irq[0].take()?, 0);
    for (vector, fd) in irq.iter().enumerate().skip(1) {
        assert_eq!(fd.take()?, 0, "vector {vector}");
    }
    Ok(())
}

#[test]
fn an_interrupt_a_write_raises_is_signalled_before_the_next_reply() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let irq = arm_vector_0(&mut c, IRQ_FAULT | IRQ_ERROR)?;
    let channels = c.bar2_read32(CHANNELS)?;
    for round in 0..50 {
        // A fault of XLATE_CONTROL: no wait, only one more round trip.
        c.bar2_write32(XLATE_CONTROL, 0)?;
        c.bar2_read32(IRQ_STATUS)?;
        assert_eq!(irq[0].take()?, 1, "round {round}: fault");
        // A refused command.
        c.bar2_write32(INV_CONTROL, channels)?;
        c.bar2_read32(IRQ_STATUS)?;
        assert_eq!(irq[0].take()?, 1, "round {round}: error");
        // SELFTEST of a channel vector.
        c.bar2_write32(SELFTEST, 1)?;
        c.bar2_read32(IRQ_STATUS)?;
        assert_eq!(irq[1].take()?, 1, "round {round}: SELFTEST");
    }
    Ok(())
}

// ---------------------------------------------------------------------
// The DMA self-test: one map per copy.
// ---------------------------------------------------------------------

#[test]
fn a_dma_self_test_across_two_adjacent_maps_is_refused_as_not_mapped() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    // Two 1 MiB maps of consecutive file bytes, IOVAs adjacent too.
    let (iova, half) = (0x3_0000_0000, 1 << 20);
    let mut memory = GuestMemory::new(2 * half as usize)?;
    memory
        .bytes_mut()
        .copy_from_slice(&pattern(2 * half as usize, 0x3c));
    for part in [0, half] {
        let map = DmaMapRequest {
            offset: part,
            ..DmaMapRequest::read_write(iova + part, half)
        };
        c.dma_map(map, Some(memory.as_fd()))?;
    }
    let guest_before = memory.bytes().to_vec();
    let across = iova + half - PAGE_SIZE;
    for control in [DMA_TO_VRAM, DMA_FROM_VRAM] {
        let count = c.bar2_read32(DMA_COUNT)?;
        let job = DmaJob {
            iova: across,
            vram_offset: 0,
            length: 2 * PAGE_SIZE as u32,
            control,
        };
        assert_eq!(c.run_dma(job)?, DMA_NOT_MAPPED, "DMA_CONTROL {control}");
        assert_eq!(c.bar2_read32(DMA_COUNT)?, count + 1);
        assert_eq!(c.bar2_read32(ERROR_CODE)?, DMA_NOT_MAPPED);
        c.bar2_write32(ERROR_CODE, 0)?;
    }
    assert_eq!(memory.bytes(), &guest_before[..], "nothing copied in");
    let vram = c.region_read(BAR0, 0, 2 * PAGE_SIZE as u32)?;
    assert!(vram.iter().all(|&b| b == 0), "nothing copied out");
    // The same bytes, one map at a time, copy.
    for (part, at) in [(across, 0), (iova + half, PAGE_SIZE)] {
        let job = DmaJob {
            iova: part,
            vram_offset: at,
            length: PAGE_SIZE as u32,
            control: DMA_TO_VRAM,
        };
        assert_eq!(c.run_dma(job)?, 0);
    }
    let vram = c.region_read(BAR0, 0, 2 * PAGE_SIZE as u32)?;
    let start = (half - PAGE_SIZE) as usize;
    assert_eq!(vram, &guest_before[start..start + 2 * PAGE_SIZE as usize]);
    Ok(())
}

// ---------------------------------------------------------------------
// Memory the VMM truncates under a DMA map, and grows back.
// ---------------------------------------------------------------------

/// A memfd that the test writes with pwrite and never maps, so that
/// truncating it cannot fault the test itself.
struct ShrinkableMemory(OwnedFd);

impl ShrinkableMemory {
    fn new(len: u64) -> anyhow::Result<Self> {
        let fd = memfd_create("vgpud-test-shrinkable", MemfdFlags::CLOEXEC)?;
        ftruncate(&fd, len)?;
        Ok(ShrinkableMemory(fd))
    }

    fn resize(&self, len: u64) -> anyhow::Result<()> {
        Ok(ftruncate(&self.0, len)?)
    }
}

impl TableMemory for ShrinkableMemory {
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> anyhow::Result<()> {
        let written = rustix::io::pwrite(&self.0, bytes, addr)?;
        anyhow::ensure!(written == bytes.len(), "short pwrite at {addr:#x}");
        Ok(())
    }
}

#[test]
fn memory_truncated_under_a_map_fails_reads_and_writes_but_not_translations() -> anyhow::Result<()>
{
    let (_daemon, mut c) = plain()?;
    let (iova, len) = (0x3_0000_0000, 64 << 10);
    let mut memory = ShrinkableMemory::new(len)?;
    c.dma_map(DmaMapRequest::read_write(iova, len), Some(memory.0.as_fd()))?;
    // table_va's level-1 table is in the memfd (file offset 0x1000) and
    // maps a VRAM page; page_va maps a page of the memfd (0x4000).
    let (table_va, page_va) = (va(1, 0, 0, 3), va(2, 0, 0, 0));
    let level_1 = iova + 0x1000;
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    tables.map(&mut c, page_va, Page::system(iova + 0x4000))?;
    let level_2 = tables.table(&mut c, table_va, Level::L2)?;
    let pointer = system_pointer(level_1);
    tables.set_entry(&mut c, level_2, 0, pointer)?;
    let leaf = Page::vram(0x8000).entry().to_le_bytes();
    memory.write_bytes(0x1000 + 8 * 3, &leaf)?;
    memory.write_bytes(0x4000, &pattern(PAGE_SIZE as usize, 0x77))?;
    c.set_pt_root(0, tables.root_entry())?;
    let through_table = Translation::ok(0x8000 + OFF, Target::Vram);
    let into_memory = Translation::ok(iova + 0x4000 + OFF, Target::System);
    assert_eq!(c.xlate(0, table_va + OFF, false)?, through_table);
    assert_eq!(c.xlate(0, page_va + OFF, true)?, into_memory);
    let copy = |control| DmaJob {
        iova: iova + 0x4000,
        vram_offset: 0x10_0000,
        length: PAGE_SIZE as u32,
        control,
    };
    assert_eq!(c.run_dma(copy(DMA_TO_VRAM))?, 0);

    memory.resize(0)?;
    // Translations stand, before and after a walk: the map is still there.
    assert_eq!(c.xlate(0, table_va + OFF, false)?, through_table);
    assert_eq!(c.xlate(0, page_va + OFF, true)?, into_memory);
    for control in [DMA_TO_VRAM, DMA_FROM_VRAM] {
        assert_eq!(c.run_dma(copy(control))?, DMA_FAILED, "{control}");
        c.bar2_write32(ERROR_CODE, 0)?;
    }
    c.invalidate_all(0)?;
    assert_eq!(c.xlate(0, page_va + OFF, true)?, into_memory);
    let unreadable = Translation::fault(NOT_MAPPED);
    assert_eq!(c.xlate(0, table_va + OFF, false)?, unreadable);

    memory.resize(len)?;
    // The copies work again (on zeros); the table is walked only when
    // asked, and now reads as zeros.
    assert_eq!(c.xlate(0, table_va + OFF, false)?, unreadable);
    assert_eq!(c.run_dma(copy(DMA_TO_VRAM))?, 0);
    let vram = c.region_read(BAR0, 0x10_0000, PAGE_SIZE as u32)?;
    assert!(vram.iter().all(|&b| b == 0), "the page came back as zeros");
    assert_eq!(c.run_dma(copy(DMA_FROM_VRAM))?, 0);
    c.invalidate_all(0)?;
    let gone = Translation::fault(NOT_PRESENT);
    assert_eq!(c.xlate(0, table_va + OFF, false)?, gone);
    // Written again by the VMM, the table maps again once walked.
    memory.write_bytes(0x1000 + 8 * 3, &leaf)?;
    c.invalidate_range(0, table_va, PAGE_SIZE)?;
    assert_eq!(c.xlate(0, table_va + OFF, false)?, through_table);
    assert_eq!(c.xlate(0, page_va + OFF, true)?, into_memory);
    Ok(())
}

// ---------------------------------------------------------------------
// The command register's bus-master bit gates nothing.
// ---------------------------------------------------------------------

#[test]
fn translation_and_dma_work_with_bus_master_clear() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let iova = 0x3_0000_0000;
    let mut memory = map_memory(&mut c, iova, 64 << 10)?;
    memory.bytes_mut()[..PAGE_SIZE as usize].copy_from_slice(&pattern(PAGE_SIZE as usize, 5));
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    tables.map(&mut c, va(1, 0, 0, 0), Page::system(iova))?;
    for command in [None, Some(BUS_MASTER), Some(0)] {
        if let Some(value) = command {
            c.config_write(COMMAND, 2, u64::from(value))?;
        }
        let set = c.config_read(COMMAND, 2)? & u64::from(BUS_MASTER) != 0;
        assert_eq!(set, command == Some(BUS_MASTER), "bus master reads back");
        c.set_pt_root(0, tables.root_entry())?;
        assert_eq!(
            c.xlate(0, va(1, 0, 0, 0) + OFF, true)?,
            Translation::ok(iova + OFF, Target::System),
            "command {command:?}"
        );
        let job = DmaJob {
            iova,
            vram_offset: 0,
            length: PAGE_SIZE as u32,
            control: DMA_TO_VRAM,
        };
        assert_eq!(c.run_dma(job)?, 0, "command {command:?}");
        let vram = c.region_read(BAR0, 0, PAGE_SIZE as u32)?;
        assert_eq!(vram, pattern(PAGE_SIZE as usize, 5));
        c.region_write(BAR0, 0, &[0; PAGE_SIZE as usize])?;
    }
    Ok(())
}
