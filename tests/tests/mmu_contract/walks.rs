//! When the daemon walks a channel's tables and how far, the two bounds
//! of one walk, and the page budget the channels share.

use crate::rig::*;

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
