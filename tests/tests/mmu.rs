//! The GPU MMU as a driver sees it: page tables in guest memory or VRAM,
//! per-channel roots, translations through the translate port, stale
//! translations until the guest invalidates, fault records and their
//! interrupt, refused commands, and revocation by reset and `DMA_UNMAP`.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use vgpud_tests::config::STANDARD_CHANNELS;
use vgpud_tests::host::eventfds;
use vgpud_tests::page_tables::{
    FaultRecord, LARGE_PAGE_SIZE, Level, PAGE_SIZE, Page, PageTables, Target, Translation, pte,
};
use vgpud_tests::regs::bar2::{
    ERROR_CODE, ERROR_INFO, INV_ALL, INV_RANGE, IRQ_ERROR, IRQ_FAULT, IRQ_MASK, IRQ_STATUS,
    XLATE_CONTROL,
};
use vgpud_tests::regs::error_code;
use vgpud_tests::regs::fault_info::{self, NOT_MAPPED, NOT_PRESENT, READ_ONLY};
use vgpud_tests::wire::irq_index;
use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A};

/// Guest memory: a memfd whose first [`MAP_LEN`] bytes are DMA-mapped
/// read-write at [`IOVA`] (above 4 GiB, so that high halves matter).
const IOVA: u64 = 0x1_0000_0000;
const MAP_LEN: u64 = 512 << 10;
/// Tables in guest memory come from the first half of the map.
const GUEST_ARENA: std::ops::Range<u64> = IOVA..IOVA + (256 << 10);
/// Tables in VRAM come from 8 MiB into the slice.
const VRAM_ARENA: std::ops::Range<u64> = 0x80_0000..0x88_0000;

/// VAs that differ in every level's index.
const VA_VRAM: u64 = 0x1234_5678_9000;
const VA_SYSTEM: u64 = 0x7fff_ff20_3000;
/// Where they map to.
const VRAM_PAGE: u64 = 0x12_3000;
const SYSTEM_PAGE: u64 = IOVA + 0x4_1000;
/// Offsets inside a page that show in the result.
const OFFSET: u64 = 0xabc;

const SIGNAL: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(200);

struct Rig {
    _daemon: TestDaemon,
    c: RawClient,
    guest: GuestMemory,
}

fn rig() -> anyhow::Result<Rig> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let guest = GuestMemory::new(1 << 20)?;
    c.dma_map(
        DmaMapRequest::read_write(IOVA, MAP_LEN),
        Some(guest.as_fd()),
    )?;
    Ok(Rig {
        _daemon: daemon,
        c,
        guest,
    })
}

impl Rig {
    fn guest_tables(&mut self) -> anyhow::Result<PageTables> {
        PageTables::in_guest(&mut self.guest, GUEST_ARENA, 0)
    }
}

fn assert_no_fault(c: &mut RawClient) -> anyhow::Result<()> {
    assert_eq!(c.fault_record()?.count, 0, "FAULT_COUNT");
    assert_eq!(
        c.bar2_read32(IRQ_STATUS)? & IRQ_FAULT,
        0,
        "IRQ_STATUS.FAULT"
    );
    Ok(())
}

#[test]
fn tables_in_guest_memory_translate_vram_and_system_pages() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut tables = r.guest_tables()?;
    tables.map(&mut r.guest, VA_VRAM, Page::vram(VRAM_PAGE))?;
    tables.map(&mut r.guest, VA_SYSTEM, Page::system(SYSTEM_PAGE))?;
    r.c.set_pt_root(0, tables.root_entry())?;
    assert_eq!(r.c.pt_root(0)?, tables.root_entry(), "PT_ROOT reads back");
    for write in [false, true] {
        assert_eq!(
            r.c.xlate(0, VA_VRAM + OFFSET, write)?,
            Translation::ok(VRAM_PAGE + OFFSET, Target::Vram),
            "write {write}"
        );
        assert_eq!(
            r.c.xlate(0, VA_SYSTEM + OFFSET, write)?,
            Translation::ok(SYSTEM_PAGE + OFFSET, Target::System),
            "write {write}"
        );
    }
    assert_no_fault(&mut r.c)
}

#[test]
fn tables_in_vram_translate_vram_and_system_pages() -> anyhow::Result<()> {
    let mut r = rig()?;
    // Written with REGION_WRITE, as a VMM without the mmap would.
    let mut tables = PageTables::in_vram(&mut r.c, VRAM_ARENA)?;
    tables.map(&mut r.c, VA_VRAM, Page::vram(VRAM_PAGE))?;
    tables.map(&mut r.c, VA_SYSTEM, Page::system(SYSTEM_PAGE))?;
    r.c.set_pt_root(0, tables.root_entry())?;
    assert_eq!(
        r.c.xlate(0, VA_VRAM + OFFSET, true)?,
        Translation::ok(VRAM_PAGE + OFFSET, Target::Vram)
    );
    assert_eq!(
        r.c.xlate(0, VA_SYSTEM + OFFSET, false)?,
        Translation::ok(SYSTEM_PAGE + OFFSET, Target::System)
    );
    assert_no_fault(&mut r.c)
}

#[test]
fn large_pages_map_two_mib_of_vram_or_guest_memory() -> anyhow::Result<()> {
    let mut r = rig()?;
    // A second map, 2 MiB aligned and long, for a large system page.
    let large_iova = 0x2_0000_0000;
    let large_memory = GuestMemory::new(LARGE_PAGE_SIZE as usize)?;
    r.c.dma_map(
        DmaMapRequest::read_write(large_iova, LARGE_PAGE_SIZE),
        Some(large_memory.as_fd()),
    )?;
    // Tables through the BAR0 mmap this time.
    let mut bar0 = r.c.map_bar0()?;
    let mut tables = PageTables::in_vram(&mut bar0, VRAM_ARENA)?;
    let va = 0x40_0060_0000;
    let system_va = va + 4 * LARGE_PAGE_SIZE;
    let vram_page = 0x40_0000;
    tables.map(&mut bar0, va, Page::vram(vram_page).large())?;
    tables.map(&mut bar0, system_va, Page::system(large_iova).large())?;
    r.c.set_pt_root(0, tables.root_entry())?;
    for offset in [0, 0x1_2345, LARGE_PAGE_SIZE - 1] {
        assert_eq!(
            r.c.xlate(0, va + offset, true)?,
            Translation::ok(vram_page + offset, Target::Vram),
            "offset {offset:#x}"
        );
        assert_eq!(
            r.c.xlate(0, system_va + offset, true)?,
            Translation::ok(large_iova + offset, Target::System),
            "offset {offset:#x}"
        );
    }
    assert_no_fault(&mut r.c)?;
    assert_eq!(
        r.c.xlate(0, va + LARGE_PAGE_SIZE, false)?,
        Translation::fault(NOT_PRESENT),
        "the next 2 MiB are not mapped"
    );
    Ok(())
}

#[test]
fn a_write_needs_writable_on_every_level() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut tables = r.guest_tables()?;
    // Three paths that share no table below the root.
    let all_writable = 1 << 39;
    let read_only_level_3 = 2 << 39;
    let read_only_leaf = 3 << 39;
    for va in [all_writable, read_only_level_3, read_only_leaf] {
        tables.map(&mut r.guest, va, Page::vram(VRAM_PAGE))?;
    }
    let level_2 = tables.table(&mut r.guest, read_only_level_3, Level::L2)?;
    let read_only_pointer = tables.pointer_to(level_2) & !pte::WRITABLE;
    tables.set_entry_on_path(
        &mut r.guest,
        read_only_level_3,
        Level::L3,
        read_only_pointer,
    )?;
    tables.map(
        &mut r.guest,
        read_only_leaf,
        Page::vram(VRAM_PAGE).read_only(),
    )?;
    r.c.set_pt_root(0, tables.root_entry())?;

    let vram = Translation::ok(VRAM_PAGE + OFFSET, Target::Vram);
    assert_eq!(r.c.xlate(0, all_writable + OFFSET, true)?, vram);
    for va in [read_only_level_3, read_only_leaf] {
        assert_eq!(r.c.xlate(0, va + OFFSET, false)?, vram, "read {va:#x}");
        r.c.acknowledge_faults()?;
        assert_eq!(
            r.c.xlate(0, va + OFFSET, true)?,
            Translation::fault(READ_ONLY),
            "write {va:#x}"
        );
        let fault = r.c.fault_record()?;
        assert_eq!(fault.va, va + OFFSET);
        assert_eq!(fault.info, fault_info::encode(0, true, READ_ONLY));
    }
    Ok(())
}

/// Maps `va` to `VRAM_PAGE`, translates it once (so that the MMU holds
/// the translation), then points the leaf at `new_page` without
/// invalidating. Returns the tables.
fn map_then_change_leaf(r: &mut Rig, va: u64, new_page: u64) -> anyhow::Result<PageTables> {
    let mut tables = r.guest_tables()?;
    tables.map(&mut r.guest, va, Page::vram(VRAM_PAGE))?;
    r.c.set_pt_root(0, tables.root_entry())?;
    assert_eq!(
        r.c.xlate(0, va, false)?,
        Translation::ok(VRAM_PAGE, Target::Vram)
    );
    tables.map(&mut r.guest, va, Page::vram(new_page))?;
    Ok(tables)
}

#[test]
fn a_changed_entry_takes_effect_after_range_invalidation() -> anyhow::Result<()> {
    let mut r = rig()?;
    let new_page = 0x45_6000;
    map_then_change_leaf(&mut r, VA_VRAM, new_page)?;
    assert_eq!(
        r.c.xlate(0, VA_VRAM + OFFSET, false)?,
        Translation::ok(VRAM_PAGE + OFFSET, Target::Vram),
        "stale until invalidated, as the hardware is"
    );
    r.c.invalidate_range(0, VA_VRAM, PAGE_SIZE)?;
    assert_eq!(
        r.c.xlate(0, VA_VRAM + OFFSET, false)?,
        Translation::ok(new_page + OFFSET, Target::Vram)
    );
    Ok(())
}

#[test]
fn a_changed_entry_takes_effect_after_invalidating_all() -> anyhow::Result<()> {
    let mut r = rig()?;
    let new_page = 0x45_6000;
    map_then_change_leaf(&mut r, VA_VRAM, new_page)?;
    assert_eq!(
        r.c.xlate(0, VA_VRAM, false)?,
        Translation::ok(VRAM_PAGE, Target::Vram),
        "stale until invalidated"
    );
    r.c.invalidate_all(0)?;
    assert_eq!(
        r.c.xlate(0, VA_VRAM, false)?,
        Translation::ok(new_page, Target::Vram)
    );
    Ok(())
}

#[test]
fn a_removed_entry_faults_after_invalidation() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut tables = map_then_change_leaf(&mut r, VA_VRAM, VRAM_PAGE)?;
    tables.set_entry_on_path(&mut r.guest, VA_VRAM, Level::L1, 0)?;
    r.c.invalidate_range(0, VA_VRAM, PAGE_SIZE)?;
    assert_eq!(
        r.c.xlate(0, VA_VRAM, false)?,
        Translation::fault(NOT_PRESENT)
    );
    Ok(())
}

#[test]
fn writing_pt_root_invalidates_the_channel() -> anyhow::Result<()> {
    let mut r = rig()?;
    let new_page = 0x45_6000;
    let tables = map_then_change_leaf(&mut r, VA_VRAM, new_page)?;
    r.c.set_pt_root(0, tables.root_entry())?;
    assert_eq!(
        r.c.xlate(0, VA_VRAM, false)?,
        Translation::ok(new_page, Target::Vram)
    );
    Ok(())
}

/// Maps `first` and `second`, translates both, points both elsewhere,
/// invalidates `first`'s page only, and checks that `second` still has
/// its old translation until it is invalidated too.
fn assert_invalidation_leaves_neighbour_alone(first: u64, second: u64) -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut tables = r.guest_tables()?;
    tables.map(&mut r.guest, first, Page::vram(0x10_0000))?;
    tables.map(&mut r.guest, second, Page::vram(0x20_0000))?;
    r.c.set_pt_root(0, tables.root_entry())?;
    r.c.xlate(0, first, false)?;
    r.c.xlate(0, second, false)?;
    tables.map(&mut r.guest, first, Page::vram(0x30_0000))?;
    tables.map(&mut r.guest, second, Page::vram(0x40_0000))?;

    r.c.invalidate_range(0, first, PAGE_SIZE)?;
    assert_eq!(
        r.c.xlate(0, first, false)?,
        Translation::ok(0x30_0000, Target::Vram)
    );
    assert_eq!(
        r.c.xlate(0, second, false)?,
        Translation::ok(0x20_0000, Target::Vram),
        "outside the range: still the old translation"
    );
    r.c.invalidate_range(0, second, PAGE_SIZE)?;
    assert_eq!(
        r.c.xlate(0, second, false)?,
        Translation::ok(0x40_0000, Target::Vram)
    );
    Ok(())
}

#[test]
fn range_invalidation_leaves_other_regions_alone() -> anyhow::Result<()> {
    // Different level-1 tables and 2 MiB regions.
    assert_invalidation_leaves_neighbour_alone(VA_VRAM, VA_VRAM + LARGE_PAGE_SIZE)
}

/// Within one 2 MiB region, the contract promises only that an
/// invalidated page shows its new entry: a neighbour may show either (the
/// daemon re-reads whole 2 MiB regions, as a TLB may refill at any time).
#[test]
fn range_invalidation_refreshes_its_page_and_may_refresh_its_region() -> anyhow::Result<()> {
    let (first, second) = (VA_VRAM, VA_VRAM + PAGE_SIZE);
    let mut r = rig()?;
    let mut tables = r.guest_tables()?;
    tables.map(&mut r.guest, first, Page::vram(0x10_0000))?;
    tables.map(&mut r.guest, second, Page::vram(0x20_0000))?;
    r.c.set_pt_root(0, tables.root_entry())?;
    tables.map(&mut r.guest, first, Page::vram(0x30_0000))?;
    tables.map(&mut r.guest, second, Page::vram(0x40_0000))?;
    r.c.invalidate_range(0, first, PAGE_SIZE)?;
    assert_eq!(
        r.c.xlate(0, first, false)?,
        Translation::ok(0x30_0000, Target::Vram)
    );
    let neighbour = r.c.xlate(0, second, false)?;
    assert!(
        neighbour == Translation::ok(0x20_0000, Target::Vram)
            || neighbour == Translation::ok(0x40_0000, Target::Vram),
        "the neighbour shows its old or its new entry, nothing else: {neighbour:?}"
    );
    Ok(())
}

#[test]
fn a_fault_is_recorded_until_acknowledged_and_counted() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut tables = r.guest_tables()?;
    tables.map(&mut r.guest, VA_SYSTEM, Page::system(SYSTEM_PAGE))?;
    let channel = 2;
    r.c.set_pt_root(channel, tables.root_entry())?;
    // A translation first, so that the zeroed results below are news.
    assert_eq!(
        r.c.xlate(channel, VA_SYSTEM, false)?,
        Translation::ok(SYSTEM_PAGE, Target::System)
    );
    let first_va = VA_VRAM + OFFSET;
    assert_eq!(
        r.c.xlate(channel, first_va, true)?,
        Translation::fault(NOT_PRESENT)
    );
    let first = FaultRecord {
        va: first_va,
        info: fault_info::encode(channel, true, NOT_PRESENT),
        count: 1,
    };
    assert_eq!(r.c.fault_record()?, first);
    assert_ne!(r.c.bar2_read32(IRQ_STATUS)? & IRQ_FAULT, 0);

    let second_va = VA_SYSTEM + LARGE_PAGE_SIZE;
    assert_eq!(
        r.c.xlate(channel, second_va, false)?,
        Translation::fault(NOT_PRESENT)
    );
    assert_eq!(
        r.c.fault_record()?,
        FaultRecord { count: 2, ..first },
        "later faults only count"
    );

    r.c.acknowledge_faults()?;
    assert_eq!(
        r.c.fault_record()?,
        FaultRecord {
            va: 0,
            info: 0,
            count: 2
        },
        "a write clears the record, not the count"
    );
    assert_eq!(r.c.bar2_read32(IRQ_STATUS)? & IRQ_FAULT, 0);

    r.c.xlate(channel, second_va, false)?;
    assert_eq!(
        r.c.fault_record()?,
        FaultRecord {
            va: second_va,
            info: fault_info::encode(channel, false, NOT_PRESENT),
            count: 3,
        }
    );
    assert_ne!(r.c.bar2_read32(IRQ_STATUS)? & IRQ_FAULT, 0);
    Ok(())
}

#[test]
fn a_fault_raises_vector_0_while_its_mask_bit_is_set() -> anyhow::Result<()> {
    let mut r = rig()?;
    let fds = eventfds(1 + STANDARD_CHANNELS as usize)?;
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    r.c.assign_irq_eventfds(irq_index::MSIX, 0, borrowed.len() as u32, &borrowed)?;
    let tables = r.guest_tables()?;
    r.c.set_pt_root(0, tables.root_entry())?;

    r.c.xlate(0, VA_VRAM, false)?;
    assert_ne!(r.c.bar2_read32(IRQ_STATUS)? & IRQ_FAULT, 0);
    assert_eq!(fds[0].wait(QUIET)?, 0, "masked");

    r.c.bar2_write32(IRQ_MASK, IRQ_FAULT)?;
    assert!(fds[0].wait(SIGNAL)? >= 1, "unmasking a set bit raises it");
    r.c.acknowledge_faults()?;
    r.c.xlate(0, VA_VRAM, true)?;
    assert!(fds[0].wait(SIGNAL)? >= 1, "a fault while unmasked");
    for (vector, fd) in fds.iter().enumerate().skip(1) {
        assert_eq!(fd.take()?, 0, "vector {vector}");
    }
    Ok(())
}

#[test]
fn channels_translate_through_their_own_roots() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut zero = PageTables::in_guest(&mut r.guest, IOVA..IOVA + (64 << 10), 0)?;
    let second_arena = IOVA + (64 << 10)..IOVA + (128 << 10);
    let mut one = PageTables::in_guest(&mut r.guest, second_arena, 64 << 10)?;
    zero.map(&mut r.guest, VA_VRAM, Page::vram(0x10_0000))?;
    one.map(&mut r.guest, VA_VRAM, Page::system(SYSTEM_PAGE))?;
    r.c.set_pt_root(0, zero.root_entry())?;
    r.c.set_pt_root(1, one.root_entry())?;
    assert_eq!(
        r.c.xlate(0, VA_VRAM, false)?,
        Translation::ok(0x10_0000, Target::Vram)
    );
    assert_eq!(
        r.c.xlate(1, VA_VRAM, false)?,
        Translation::ok(SYSTEM_PAGE, Target::System)
    );
    // A channel without a root faults and stops no other.
    assert_eq!(
        r.c.xlate(3, VA_VRAM, false)?,
        Translation::fault(NOT_PRESENT)
    );
    assert_eq!(
        r.c.xlate(0, VA_VRAM, false)?,
        Translation::ok(0x10_0000, Target::Vram)
    );
    Ok(())
}

/// Checks the refusal of a command with error `code`, and clears it.
fn assert_refused(c: &mut RawClient, code: u32, written: u32) -> anyhow::Result<()> {
    assert_eq!(c.bar2_read32(ERROR_CODE)?, code, "after {written:#x}");
    assert_eq!(c.bar2_read32(ERROR_INFO)?, written, "the value written");
    let status = c.bar2_read32(IRQ_STATUS)?;
    assert_ne!(status & IRQ_ERROR, 0, "IRQ_STATUS.ERROR");
    assert_eq!(status & IRQ_FAULT, 0, "a refusal is not a fault");
    c.bar2_write32(ERROR_CODE, 0)?;
    c.bar2_write32(IRQ_STATUS, IRQ_ERROR)?;
    Ok(())
}

#[test]
fn invalidation_of_a_channel_the_device_lacks_records_bad_channel() -> anyhow::Result<()> {
    let mut r = rig()?;
    for control in [STANDARD_CHANNELS | INV_ALL, 63 | INV_RANGE] {
        r.c.invalidate(control, 0, PAGE_SIZE)?;
        assert_refused(&mut r.c, error_code::BAD_CHANNEL, control)?;
    }
    Ok(())
}

#[test]
fn translation_on_a_channel_the_device_lacks_records_bad_channel() -> anyhow::Result<()> {
    let mut r = rig()?;
    let control = STANDARD_CHANNELS;
    r.c.bar2_write32(XLATE_CONTROL, control)?;
    assert_refused(&mut r.c, error_code::BAD_CHANNEL, control)?;
    assert_eq!(r.c.fault_record()?.count, 0, "nothing was translated");
    Ok(())
}

#[test]
fn a_bad_invalidation_range_records_bad_range_and_invalidates_nothing() -> anyhow::Result<()> {
    let mut r = rig()?;
    map_then_change_leaf(&mut r, VA_VRAM, 0x45_6000)?;
    // Every range covers VA_VRAM, so that an invalidation would show.
    let cases = [
        (VA_VRAM - 0x800, 0x2000, "VA not 4 KiB aligned"),
        (VA_VRAM, 0, "size 0"),
        (VA_VRAM, 0x1800, "size not a multiple of 4 KiB"),
        (VA_VRAM, 1 << 48, "runs past 2^48"),
    ];
    for (va, size, what) in cases {
        r.c.invalidate(INV_RANGE, va, size)?;
        assert_refused(&mut r.c, error_code::BAD_RANGE, INV_RANGE)
            .map_err(|error| error.context(what))?;
        assert_eq!(
            r.c.xlate(0, VA_VRAM, false)?,
            Translation::ok(VRAM_PAGE, Target::Vram),
            "{what}: nothing invalidated"
        );
    }
    // The same command with a good range does invalidate.
    r.c.invalidate(INV_RANGE, VA_VRAM, PAGE_SIZE)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, 0);
    assert_eq!(
        r.c.xlate(0, VA_VRAM, false)?,
        Translation::ok(0x45_6000, Target::Vram)
    );
    Ok(())
}

#[test]
fn device_reset_drops_every_translation() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut tables = r.guest_tables()?;
    tables.map(&mut r.guest, VA_SYSTEM, Page::system(SYSTEM_PAGE))?;
    for channel in 0..STANDARD_CHANNELS {
        r.c.set_pt_root(channel, tables.root_entry())?;
        assert_eq!(r.c.xlate(channel, VA_SYSTEM, false)?.status, 0);
    }
    r.c.reset()?;
    for channel in 0..STANDARD_CHANNELS {
        assert_eq!(r.c.pt_root(channel)?, 0, "PT_ROOT of channel {channel}");
        assert_eq!(
            r.c.xlate(channel, VA_SYSTEM, false)?,
            Translation::fault(NOT_PRESENT),
            "channel {channel}"
        );
    }
    // The DMA maps survive a reset: the same tables work once rooted again.
    r.c.set_pt_root(0, tables.root_entry())?;
    assert_eq!(
        r.c.xlate(0, VA_SYSTEM, false)?,
        Translation::ok(SYSTEM_PAGE, Target::System)
    );
    Ok(())
}

#[test]
fn dma_unmap_revokes_system_pages_before_its_reply() -> anyhow::Result<()> {
    let mut r = rig()?;
    let page_iova = 0x3_0000_0000;
    let page_memory = GuestMemory::new(64 << 10)?;
    r.c.dma_map(
        DmaMapRequest::read_write(page_iova, 64 << 10),
        Some(page_memory.as_fd()),
    )?;
    // Tables in VRAM, so that the unmap takes only the page away.
    let mut tables = PageTables::in_vram(&mut r.c, VRAM_ARENA)?;
    tables.map(&mut r.c, VA_SYSTEM, Page::system(page_iova + 0x2000))?;
    tables.map(&mut r.c, VA_VRAM, Page::vram(VRAM_PAGE))?;
    r.c.set_pt_root(0, tables.root_entry())?;
    assert_eq!(
        r.c.xlate(0, VA_SYSTEM, true)?,
        Translation::ok(page_iova + 0x2000, Target::System)
    );

    r.c.dma_unmap(page_iova, 64 << 10)?;
    assert_eq!(
        r.c.xlate(0, VA_SYSTEM, false)?,
        Translation::fault(NOT_MAPPED),
        "no invalidation needed"
    );
    assert_eq!(
        r.c.fault_record()?,
        FaultRecord {
            va: VA_SYSTEM,
            info: fault_info::encode(0, false, NOT_MAPPED),
            count: 1,
        }
    );
    assert_eq!(
        r.c.xlate(0, VA_VRAM, false)?,
        Translation::ok(VRAM_PAGE, Target::Vram),
        "other translations stay"
    );
    Ok(())
}

#[test]
fn invalidate_control_without_range_or_all_does_nothing() -> anyhow::Result<()> {
    let mut r = rig()?;
    map_then_change_leaf(&mut r, VA_VRAM, 0x45_6000)?;
    r.c.invalidate(0, VA_VRAM, PAGE_SIZE)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, 0);
    assert_eq!(
        r.c.xlate(0, VA_VRAM, false)?,
        Translation::ok(VRAM_PAGE, Target::Vram)
    );
    Ok(())
}
