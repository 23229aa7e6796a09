//! Attacks through page-table entries: pages and tables outside what the
//! vGPU owns, bad bits, shared tables, cycles and walk bounds.

use super::rig::*;

#[test]
fn vram_pages_at_or_past_the_slice_end_fault_outside_vram() -> anyhow::Result<()> {
    let mut r = standard()?;
    let end = r.slice;
    let mut t = r.vram_tables()?;
    let good = [
        Page::vram(end - PAGE_SIZE),
        Page::vram(end - LARGE_PAGE_SIZE).large(),
    ];
    let bad = [
        Page::vram(end),
        Page::vram(end + PAGE_SIZE),
        Page::vram(1 << 32), // 0 if truncated to 32 bits
        Page::vram(TOP),
        Page::vram(end).large(),
        Page::vram(TOP & !(LARGE_PAGE_SIZE - 1)).large(),
    ];
    let at = |i: usize| va(1, 2, i as u64, 0);
    for (i, page) in good.iter().chain(&bad).enumerate() {
        t.map(&mut r.vram, at(i), *page)?;
    }
    r.c.set_pt_root(1, t.root_entry())?;
    for (i, page) in good.iter().enumerate() {
        let last = page.size() - 1;
        r.ok_vram(1, at(i) + last, true, page.addr + last)?;
    }
    for (i, page) in bad.iter().enumerate() {
        let i = i + good.len();
        r.faults(1, at(i) + OFF, OUTSIDE_VRAM)?;
        r.faults(1, at(i) + page.size() - 1, OUTSIDE_VRAM)?;
    }
    r.finish()
}

#[test]
fn a_large_page_straddling_the_end_of_a_1_mib_slice_faults_whole() -> anyhow::Result<()> {
    let mut r = one_mib_slices()?;
    let end = r.slice;
    assert_eq!(end, 1 << 20);
    let mut t = r.vram_tables()?;
    let (large, last, past) = (va(0, 1, 2, 0), va(0, 1, 3, 1), va(0, 1, 3, 2));
    t.map(&mut r.vram, large, Page::vram(0).large())?;
    t.map(&mut r.vram, last, Page::vram(end - PAGE_SIZE))?;
    t.map(&mut r.vram, past, Page::vram(end))?;
    r.c.set_pt_root(2, t.root_entry())?;
    // Refused whole: not even the half inside the slice translates.
    for offset in [0, PAGE_SIZE, end - 1, end, LARGE_PAGE_SIZE - 1] {
        r.faults(2, large + offset, OUTSIDE_VRAM)?;
    }
    r.ok_vram(2, last + OFF, true, end - PAGE_SIZE + OFF)?;
    r.faults(2, past, OUTSIDE_VRAM)?;
    r.finish()
}

#[test]
fn system_pages_must_lie_wholly_inside_one_dma_map() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.guest_tables()?;
    let good = [
        Page::system(IOVA_T + T_LEN - PAGE_SIZE),
        Page::system(IOVA_HALVES + HALF - PAGE_SIZE),
        Page::system(IOVA_HALVES + HALF),
        Page::system(IOVA_P).large(),
    ];
    let bad = [
        Page::system(IOVA_T + T_LEN),
        Page::system(IOVA_T - PAGE_SIZE),
        Page::system(IOVA_HALVES).large(), // over two adjacent maps
        Page::system(IOVA_T).large(),      // over a 512 KiB map
        Page::system(IOVA_P + LARGE_PAGE_SIZE).large(),
        Page::system(0),
        Page::system(IOVA_T + (1 << 40)), // in a map if truncated to 40 bits
        Page::system(TOP),
    ];
    let at = |i: usize| va(2, 0, i as u64, 0);
    for (i, page) in good.iter().chain(&bad).enumerate() {
        t.map(&mut r.guest, at(i), *page)?;
    }
    r.c.set_pt_root(0, t.root_entry())?;
    for (i, page) in good.iter().enumerate() {
        let last = page.size() - 1;
        r.ok_iova(0, at(i) + last, true, page.addr + last)?;
    }
    for (i, page) in bad.iter().enumerate() {
        let i = i + good.len();
        r.faults(0, at(i) + OFF, NOT_MAPPED)?;
        r.faults(0, at(i) + page.size() - 1, NOT_MAPPED)?;
    }
    // A map whose length is not a whole number of pages: if the daemon
    // takes it, what runs past its end (a page, a table) still faults.
    let odd = GuestMemory::new(4 * PAGE_SIZE as usize)?;
    let (iova, at) = (0x6_0000_0000, va(2, 1, 0, 0));
    let map = DmaMapRequest::read_write(iova, 0x1800);
    if r.c.dma_map(map, Some(odd.as_fd())).is_ok() {
        t.map(&mut r.guest, at, Page::system(iova + PAGE_SIZE))?;
        r.c.invalidate_range(0, at, PAGE_SIZE)?;
        r.faults(0, at, NOT_MAPPED)?;
        r.c.set_pt_root(1, sys_ptr(iova + PAGE_SIZE))?;
        r.faults(1, at, NOT_MAPPED)?;
    }
    r.finish()
}

#[test]
fn writable_entries_over_a_read_only_map_fault_for_reads_and_writes() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.guest_tables()?;
    let (w, ro) = (va(3, 1, 0, 3), va(3, 1, 0, 4));
    let (w_large, ro_large) = (va(3, 1, 1, 0), va(3, 1, 2, 0));
    let large = Page::system(IOVA_RO).large();
    t.map(&mut r.guest, w, Page::system(IOVA_RO + 0x3000))?;
    t.map(&mut r.guest, ro, Page::system(IOVA_RO + 0x4000).read_only())?;
    t.map(&mut r.guest, w_large, large)?;
    t.map(&mut r.guest, ro_large, large.read_only())?;
    r.c.set_pt_root(3, t.root_entry())?;
    // Refused whole, never downgraded to read-only.
    r.faults(3, w + OFF, READ_ONLY)?;
    r.faults(3, w_large + 0x1f_f000, READ_ONLY)?;
    r.ok_iova(3, ro + OFF, false, IOVA_RO + 0x4000 + OFF)?;
    r.fault(3, ro + OFF, true, READ_ONLY)?;
    r.ok_iova(3, ro_large + 0x1234, false, IOVA_RO + 0x1234)?;
    r.fault(3, ro_large + 0x1234, true, READ_ONLY)?;
    r.finish()
}

#[test]
fn tables_outside_the_slice_or_the_fd_backed_maps_fault() -> anyhow::Result<()> {
    let mut r = standard()?;
    let at = va(5, 6, 7, 8);
    let bad = [
        (vram_ptr(r.slice), OUTSIDE_VRAM),
        (vram_ptr(1 << 32), OUTSIDE_VRAM),
        (vram_ptr(TOP), OUTSIDE_VRAM),
        (sys_ptr(IOVA_T + T_LEN), NOT_MAPPED),
        (sys_ptr(IOVA_T - PAGE_SIZE), NOT_MAPPED),
        (sys_ptr(IOVA_REMOTE), NOT_MAPPED), // a map without an fd
    ];
    for (root, reason) in bad {
        r.c.set_pt_root(2, root)?;
        r.faults(2, at + OFF, reason)?;
    }
    let mut t = r.vram_tables()?;
    let steps = path(&mut t, &mut r.vram, at, Page::vram(0x4000))?;
    r.c.set_pt_root(2, t.root_entry())?;
    for (table, index, good) in &steps[..3] {
        for (pointer, reason) in bad {
            t.set_entry(&mut r.vram, *table, *index, pointer)?;
            r.c.invalidate_range(2, at, PAGE_SIZE)?;
            r.faults(2, at + OFF, reason)?;
        }
        t.set_entry(&mut r.vram, *table, *index, *good)?;
        r.c.invalidate_range(2, at, PAGE_SIZE)?;
        r.ok_vram(2, at + OFF, true, 0x4000 + OFF)?;
    }
    r.finish()
}

#[test]
fn tables_in_a_read_only_map_are_walked_and_never_written() -> anyhow::Result<()> {
    let mut r = standard()?;
    let arena = IOVA_RO..IOVA_RO + (64 << 10);
    let mut t = PageTables::new(&mut r.guest, Target::System, arena, RO_FILE)?;
    let (to_vram, to_rw, to_ro) = (va(0, 0, 1, 1), va(0, 0, 1, 2), va(0, 0, 1, 3));
    let ro_page = IOVA_RO + 0x10_0000;
    t.map(&mut r.guest, to_vram, Page::vram(0x5000))?;
    t.map(&mut r.guest, to_rw, Page::system(IOVA_P + 0x2000))?;
    t.map(&mut r.guest, to_ro, Page::system(ro_page).read_only())?;
    r.c.set_pt_root(0, t.root_entry())?;
    // The tables' map governs the daemon's reads of them; what a page
    // allows comes from its path's entries and its own map.
    for write in [false, true] {
        r.ok_vram(0, to_vram + OFF, write, 0x5000 + OFF)?;
        r.ok_iova(0, to_rw + OFF, write, IOVA_P + 0x2000 + OFF)?;
    }
    r.ok_iova(0, to_ro, false, ro_page)?;
    r.fault(0, to_ro, true, READ_ONLY)?;
    r.finish()
}

#[test]
fn a_reserved_bit_at_any_level_makes_the_entry_invalid() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.guest_tables()?;
    let at = va(3, 4, 5, 6);
    let steps = path(&mut t, &mut r.guest, at, Page::vram(0x7000))?;
    r.c.set_pt_root(1, t.root_entry())?;
    r.ok_vram(1, at + OFF, true, 0x7000 + OFF)?;
    for (table, index, good) in steps {
        for bit in (4..=11).chain(52..=63) {
            t.set_entry(&mut r.guest, table, index, good | (1 << bit))?;
            r.c.invalidate_range(1, at, PAGE_SIZE)?;
            r.fault(1, at + OFF, bit % 2 == 1, INVALID_ENTRY)?;
        }
        t.set_entry(&mut r.guest, table, index, good)?;
        r.c.invalidate_range(1, at, PAGE_SIZE)?;
        r.ok_vram(1, at + OFF, true, 0x7000 + OFF)?;
    }
    r.finish()
}

#[test]
fn large_outside_level_2_and_misaligned_large_pages_are_invalid() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    let at = va(4, 5, 6, 7);
    let [l4, l3, l2, l1] = path(&mut t, &mut r.vram, at, Page::vram(0x9000))?;
    r.c.set_pt_root(0, t.root_entry())?;
    let large = |addr: u64| Page::vram(addr).large().entry();
    let cases = [
        (l4, l4.2 | pte::LARGE),
        (l3, l3.2 | pte::LARGE),
        (l3, large(0)), // a 1 GiB page
        (l1, l1.2 | pte::LARGE),
        (l2, large(0x1000)),
        (l2, large(0x10_0000)),
    ];
    for ((table, index, good), entry) in cases {
        t.set_entry(&mut r.vram, table, index, entry)?;
        r.c.invalidate_range(0, at, PAGE_SIZE)?;
        r.faults(0, at + OFF, INVALID_ENTRY)?;
        t.set_entry(&mut r.vram, table, index, good)?;
    }
    // Misaligned and past the end: either rule may be named.
    let tail = r.slice - LARGE_PAGE_SIZE + PAGE_SIZE;
    t.set_entry(&mut r.vram, l2.0, l2.1, large(tail))?;
    r.c.invalidate_range(0, at, PAGE_SIZE)?;
    r.either(0, at, false, &faults_of(&[INVALID_ENTRY, OUTSIDE_VRAM]))?;
    t.set_entry(&mut r.vram, l2.0, l2.1, large(LARGE_PAGE_SIZE))?;
    r.c.invalidate_range(0, at, PAGE_SIZE)?;
    let offset = at & (LARGE_PAGE_SIZE - 1);
    r.ok_vram(0, at, true, LARGE_PAGE_SIZE + offset)?;
    r.finish()
}

#[test]
fn a_table_used_at_two_levels_is_validated_at_each() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    // Entry 5 of `shared` is a good 2 MiB page at level 2, and invalid at
    // levels 3 and 1 (LARGE outside level 2).
    let shared = t.new_table(&mut r.vram)?;
    t.set_entry(&mut r.vram, shared, 5, Page::vram(0).large().entry())?;
    let (as_l2, as_l1, as_l3) = (va(1, 1, 5, 0), va(1, 2, 3, 5), va(2, 5, 0, 0));
    let pointer = t.pointer_to(shared);
    t.set_entry_on_path(&mut r.vram, as_l2, Level::L3, pointer)?;
    t.set_entry_on_path(&mut r.vram, as_l1, Level::L2, pointer)?;
    t.set_entry_on_path(&mut r.vram, as_l3, Level::L4, pointer)?;
    // Both orders, each on a channel of its own.
    for (ch, l2_first) in [(0, true), (1, false)] {
        r.c.set_pt_root(ch, t.root_entry())?;
        for step in 0..2 {
            if (step == 0) == l2_first {
                r.ok_vram(ch, as_l2 + OFF, true, OFF)?;
            } else {
                r.faults(ch, as_l1 + OFF, INVALID_ENTRY)?;
                r.faults(ch, as_l3 + OFF, INVALID_ENTRY)?;
            }
        }
    }
    r.finish()
}

#[test]
fn a_shared_table_takes_the_permissions_and_address_space_of_each_path() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    // One level-2 table reached through a writable and a read-only pointer.
    let (w, ro) = (va(14, 0, 0, 1), va(14, 1, 0, 1));
    t.map(&mut r.vram, w, Page::vram(0x2000))?;
    let l2 = t.table(&mut r.vram, w, Level::L2)?;
    let read_only = t.pointer_to(l2) & !pte::WRITABLE;
    t.set_entry_on_path(&mut r.vram, ro, Level::L3, read_only)?;
    // A VRAM table's offset, and a VRAM page's, named as IOVAs.
    let (sys_table, sys_page) = (va(15, 0, 0, 1), va(14, 0, 0, 2));
    let l3 = t.table(&mut r.vram, w, Level::L3)?;
    t.set_entry(&mut r.vram, t.root(), 15, t.pointer_to(l3) | pte::SYSTEM)?;
    t.map(&mut r.vram, sys_page, Page::system(0x2000))?;
    for (ch, writable_first) in [(0, true), (1, false)] {
        r.c.set_pt_root(ch, t.root_entry())?;
        for step in 0..2 {
            if (step == 0) == writable_first {
                r.ok_vram(ch, w + OFF, true, 0x2000 + OFF)?;
            } else {
                r.ok_vram(ch, ro + OFF, false, 0x2000 + OFF)?;
                r.fault(ch, ro + OFF, true, READ_ONLY)?;
            }
        }
        r.faults(ch, sys_table, NOT_MAPPED)?;
        r.faults(ch, sys_page, NOT_MAPPED)?;
    }
    // The other way round: a guest table's IOVA named as a VRAM offset.
    let mut g = r.guest_tables()?;
    g.map(&mut r.guest, w, Page::system(IOVA_P))?;
    r.c.set_pt_root(2, g.root_entry())?;
    r.ok_iova(2, w, true, IOVA_P)?;
    r.c.set_pt_root(2, g.root_entry() & !pte::SYSTEM)?;
    r.faults(2, w, OUTSIDE_VRAM)?;
    r.finish()
}

#[test]
fn a_table_that_names_itself_or_an_ancestor_is_cut_without_escaping() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    let root = t.root();
    // Root entry 7 names the root: VA (7,7,7,7) reads it at every level
    // and ends on the root itself as a page.
    t.set_entry(&mut r.vram, root, 7, t.pointer_to(root))?;
    // A level-2 entry names the root, which is then read as level 1.
    let up = va(1, 2, 3, 1);
    let l3 = t.table(&mut r.vram, up, Level::L3)?;
    t.set_entry_on_path(&mut r.vram, up, Level::L2, t.pointer_to(root))?;
    // Two tables in guest memory that name each other.
    let mut g = r.guest_tables()?;
    let other = g.new_table(&mut r.guest)?;
    g.set_entry(&mut r.guest, g.root(), 0, g.pointer_to(other))?;
    g.set_entry(&mut r.guest, other, 0, g.pointer_to(g.root()))?;
    let normal = va(0, 0, 0, 9);
    t.map(&mut r.vram, normal, Page::vram(0xd000))?;
    for ch in [0, 1] {
        r.c.set_pt_root(ch, t.root_entry())?;
    }
    r.c.set_pt_root(2, g.root_entry())?;
    // "Cycles are cut": a walk limit, or a page the vGPU owns anyway.
    let cases = [
        (0, va(7, 7, 7, 7), Translation::ok(root + OFF, Target::Vram)),
        (1, up, Translation::ok(l3 + OFF, Target::Vram)),
        (2, 0, Translation::ok(other + OFF, Target::System)),
    ];
    for (ch, at, own) in cases {
        r.either(ch, at + OFF, false, &[Translation::fault(WALK_LIMIT), own])?;
    }
    r.ok_vram(1, normal + OFF, true, 0xd000 + OFF)?;
    r.finish()
}

#[test]
fn a_fan_out_of_shared_tables_is_bounded_and_its_budget_comes_back() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    // Four tables, every entry of each naming the next: 2^36 pages.
    let l3 = t.new_table(&mut r.vram)?;
    let l2 = t.new_table(&mut r.vram)?;
    let l1 = t.new_table(&mut r.vram)?;
    for (table, next) in [(t.root(), l3), (l3, l2), (l2, l1)] {
        t.fill_table(&mut r.vram, table, &[t.pointer_to(next); ENTRIES])?;
    }
    let pages = std::array::from_fn(|i| Page::vram(i as u64 * PAGE_SIZE).entry());
    t.fill_table(&mut r.vram, l1, &pages)?;
    for ch in 0..4 {
        r.c.set_pt_root(ch, t.root_entry())?;
    }
    // 1024 distinct 2 MiB regions: twice the 256 Ki pages a vGPU may map.
    let mut limited = 0;
    for k in 0..1024u64 {
        let (leaf, ch) = ((k * 7) % 512, (k % 4) as u32);
        let at = va(k % 512, k / 512 + 3, (k * 101) % 512, leaf) + OFF;
        let mapped = Translation::ok(leaf * PAGE_SIZE + OFF, Target::Vram);
        let got = r.either(ch, at, false, &[mapped, Translation::fault(WALK_LIMIT)])?;
        limited += u32::from(got.status != 0);
    }
    assert!(limited > 0, "2^36 aliased pages and no walk limit");
    // Rooted nowhere any more, the fan-out gives its budget back.
    for ch in 0..3 {
        r.c.set_pt_root(ch, 0)?;
        r.faults(ch, va(0, 3, 0, 0), NOT_PRESENT)?;
    }
    let mut g = r.guest_tables()?;
    g.map(&mut r.guest, va(1, 1, 1, 1), Page::system(IOVA_P))?;
    r.c.set_pt_root(3, g.root_entry())?;
    r.ok_iova(3, va(1, 1, 1, 1) + OFF, true, IOVA_P + OFF)?;
    r.finish()
}

#[test]
fn more_distinct_tables_than_the_walk_bound_are_walked_within_it() -> anyhow::Result<()> {
    let mut r = standard()?;
    // 1 root, 512 level-3 tables, 8 level-2 tables under each (4096), and
    // one shared level-1 table: 4610 distinct tables, 4096 pages.
    let (l3_base, l2_base, l1) = (1, 513, 4609);
    let mut memory = GuestMemory::new(4610 * PAGE_SIZE as usize)?;
    let iova = 0x10_0000_0000;
    let pointer = |table: u64| sys_ptr(iova + table * PAGE_SIZE);
    let bytes = memory.bytes_mut();
    let mut put = |table: u64, index: u64, entry: u64| {
        let at = (table * PAGE_SIZE + index * 8) as usize;
        bytes[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    };
    for i in 0..512 {
        put(0, i, pointer(l3_base + i));
        for j in 0..8 {
            let l2 = l2_base + i * 8 + j;
            put(l3_base + i, j, pointer(l2));
            put(l2, 0, pointer(l1));
        }
    }
    put(l1, 0, Page::vram(0x3000).entry());
    let snapshot = memory.bytes().to_vec();
    let map = DmaMapRequest::read_write(iova, memory.len() as u64);
    r.c.dma_map(map, Some(memory.as_fd()))?;
    for ch in 0..4 {
        r.c.set_pt_root(ch, pointer(0))?;
    }
    let allowed = [
        Translation::ok(0x3000 + OFF, Target::Vram),
        Translation::fault(WALK_LIMIT),
    ];
    for i in [0, 1, 255, 454, 455, 456, 511] {
        for j in [0, 7] {
            r.either((i % 4) as u32, va(i, j, 0, 0) + OFF, false, &allowed)?;
        }
    }
    assert_same(memory.bytes(), &snapshot, "the tables");
    r.finish()
}
