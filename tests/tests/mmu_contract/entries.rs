//! Entries whose meaning the page format alone leaves open: a table on
//! its own path, and VALID clear with other bits set.

use crate::rig::*;

// ---------------------------------------------------------------------
// Cycles: a table is on its own path by address, not by memory.
// ---------------------------------------------------------------------

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
