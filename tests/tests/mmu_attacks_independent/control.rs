//! Attacks through the MMU registers and the VMM: PT_ROOT, invalidation,
//! changes without invalidation, DMA_UNMAP, disconnects, other vGPUs'
//! maps, truncated files and entries flipping mid-walk.

use super::rig::*;

#[test]
fn pt_root_with_garbage_bits_is_an_invalid_root() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    let at = va(6, 7, 8, 9);
    t.map(&mut r.vram, at, Page::vram(0xa000))?;
    let good = t.root_entry();
    for bits in [
        1 << 4,
        1 << 11,
        1 << 52,
        1 << 63,
        pte::LARGE,
        0xfff0_0000_0000_0ff0,
    ] {
        r.c.set_pt_root(1, good | bits)?;
        assert_eq!(r.c.pt_root(1)?, good | bits, "PT_ROOT is stored as written");
        r.faults(1, at + OFF, INVALID_ENTRY)?;
    }
    r.c.set_pt_root(1, good & !pte::VALID)?;
    r.faults(1, at, NOT_PRESENT)?;
    r.c.set_pt_root(1, good & !pte::WRITABLE)?;
    r.ok_vram(1, at, true, 0xa000)?;
    // Only the high half commits: a new low half alone changes nothing.
    r.c.bar2_write32(pt_root_lo(1), vram_ptr(r.slice) as u32)?;
    r.ok_vram(1, at, true, 0xa000)?;
    r.c.bar2_write32(pt_root_hi(1), 0)?;
    r.faults(1, at, OUTSIDE_VRAM)?;
    // One 8-byte write commits both halves.
    r.c.write_reg(BAR2, pt_root_lo(1), 8, good | 1 << 60)?;
    assert_eq!(r.c.pt_root(1)?, good | 1 << 60);
    r.faults(1, at, INVALID_ENTRY)?;
    // A one-byte write to PT_ROOT_HI's top byte is a PT_ROOT_HI write.
    r.c.set_pt_root(1, good)?;
    r.ok_vram(1, at, false, 0xa000)?;
    r.c.write_reg(BAR2, pt_root_hi(1) + 3, 1, 0x80)?;
    assert_eq!(r.c.pt_root(1)?, good | 1 << 63, "byte enables");
    r.faults(1, at, INVALID_ENTRY)?;
    r.finish()
}

#[test]
fn mmu_slots_of_absent_channels_and_reserved_offsets_ignore_writes() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    let at = va(7, 0, 0, 1);
    t.map(&mut r.vram, at, Page::vram(0xc000))?;
    let root = t.root_entry();
    for ch in 0..4 {
        r.c.set_pt_root(ch, root)?;
    }
    for ch in [4, 5, 31, 63] {
        r.c.set_pt_root(ch, root)?;
        r.c.write_reg(BAR2, pt_root_lo(ch), 8, u64::MAX)?;
        assert_eq!(r.c.pt_root(ch)?, 0, "channel {ch}'s slot is reserved");
    }
    for slot in [0, 3] {
        for offset in (8..MMU_CHANNEL_STRIDE).step_by(4) {
            let register = pt_root_lo(slot) + offset;
            r.c.bar2_write32(register, u32::MAX)?;
            assert_eq!(r.c.bar2_read32(register)?, 0, "{register:#x} is reserved");
        }
    }
    for ch in 0..4 {
        assert_eq!(r.c.pt_root(ch)?, root, "channel {ch}");
        r.ok_vram(ch, at + OFF, true, 0xc000 + OFF)?;
    }
    r.finish()
}

/// Maps `at` to `old`, translates it on channel 0, then points it at
/// `new` without invalidating.
fn translated_then_changed(r: &mut Rig, at: u64, old: u64, new: u64) -> anyhow::Result<PageTables> {
    let mut t = r.vram_tables()?;
    t.map(&mut r.vram, at, Page::vram(old))?;
    r.c.set_pt_root(0, t.root_entry())?;
    r.ok_vram(0, at + OFF, false, old + OFF)?;
    t.map(&mut r.vram, at, Page::vram(new))?;
    Ok(t)
}

#[test]
fn commands_naming_absent_channels_are_refused_before_anything_else() -> anyhow::Result<()> {
    let mut r = standard()?;
    let at = va(8, 1, 1, 1);
    translated_then_changed(&mut r, at, 0x1_0000, 0x2_0000)?;
    r.c.bar2_write32(XLATE_VA_LO, at as u32)?;
    r.c.bar2_write32(XLATE_VA_HI, (at >> 32) as u32)?;
    for control in [4, 5, 63, 63 | XLATE_WRITE] {
        r.c.bar2_write32(XLATE_CONTROL, control)?;
        r.refused(BAD_CHANNEL, control)?;
    }
    // The channel is checked before the range, and nothing is invalidated.
    let cases = [
        (4 | INV_ALL, 0, PAGE_SIZE),
        (63 | INV_RANGE, at + 1, 0),
        (4 | INV_RANGE, 1 << 48, PAGE_SIZE),
        (32 | INV_RANGE | INV_ALL, 0, 1 << 48),
    ];
    for (control, start, size) in cases {
        r.c.invalidate(control, start, size)?;
        r.refused(BAD_CHANNEL, control)?;
    }
    assert_eq!(r.c.fault_record()?.count, 0, "refusals are no faults");
    r.ok_vram(0, at + OFF, false, 0x1_0000 + OFF)?;
    r.finish()
}

#[test]
fn overflowing_invalidation_ranges_are_refused_and_invalidate_nothing() -> anyhow::Result<()> {
    let mut r = standard()?;
    let at = va(9, 2, 2, 2);
    let mut t = translated_then_changed(&mut r, at, 0x1_0000, 0x2_0000)?;
    let top = (1 << 48) - PAGE_SIZE;
    let bad = [
        (at | 1, PAGE_SIZE),
        (at, PAGE_SIZE + 1),
        (top, 2 * PAGE_SIZE),
        (1 << 48, PAGE_SIZE),
        (0, (1 << 48) + PAGE_SIZE),
        (0u64.wrapping_sub(PAGE_SIZE), 2 * PAGE_SIZE), // end wraps to 4 KiB
        (top, 0xffff_0000_0000_2000),                  // end wraps below 2^48
        (PAGE_SIZE, 0u64.wrapping_sub(PAGE_SIZE)),     // end wraps to 0
    ];
    for (start, size) in bad {
        r.c.invalidate(INV_RANGE, start, size)?;
        r.refused(BAD_RANGE, INV_RANGE)?;
        r.ok_vram(0, at + OFF, false, 0x1_0000 + OFF)?;
    }
    // The last page below 2^48 is a good range; so is all of it, which
    // the daemon must not take a page at a time.
    r.c.invalidate(INV_RANGE, top, PAGE_SIZE)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, 0, "the top page");
    r.c.invalidate(INV_RANGE, 0, 1 << 48)?;
    assert_eq!(r.c.bar2_read32(ERROR_CODE)?, 0, "the whole space");
    r.ok_vram(0, at + OFF, false, 0x2_0000 + OFF)?;
    // ALL wins over RANGE: with both, a bad range either is refused (and
    // nothing invalidated) or is ignored (and everything invalidated).
    t.map(&mut r.vram, at, Page::vram(0x3_0000))?;
    r.c.invalidate(INV_ALL | INV_RANGE, 1 << 48, PAGE_SIZE)?;
    let code = r.c.bar2_read32(ERROR_CODE)?;
    if code != 0 {
        r.refused(BAD_RANGE, INV_ALL | INV_RANGE)?;
    }
    let now = if code == 0 { 0x3_0000 } else { 0x2_0000 };
    r.ok_vram(0, at + OFF, false, now + OFF)?;
    r.finish()
}

#[test]
fn a_change_without_invalidation_never_bypasses_validation() -> anyhow::Result<()> {
    let mut r = standard()?;
    let (at, old, end) = (va(10, 3, 3, 3), 0x6000, r.slice);
    let mut t = translated_then_changed(&mut r, at, old, end)?;
    // Until invalidated, the old entry or the new one: never the bad page.
    let stale_or = |reason| {
        [
            Translation::ok(old + OFF, Target::Vram),
            Translation::fault(reason),
        ]
    };
    r.either(0, at + OFF, false, &stale_or(OUTSIDE_VRAM))?;
    // A neighbouring region's invalidation does not take it in either.
    r.c.invalidate_range(0, at + LARGE_PAGE_SIZE, PAGE_SIZE)?;
    r.either(0, at + OFF, false, &stale_or(OUTSIDE_VRAM))?;
    r.c.invalidate_range(0, at, PAGE_SIZE)?;
    r.faults(0, at + OFF, OUTSIDE_VRAM)?;
    t.map(&mut r.vram, at, Page::vram(old))?;
    r.either(0, at + OFF, false, &stale_or(OUTSIDE_VRAM))?;
    r.c.invalidate_range(0, at, PAGE_SIZE)?;
    r.ok_vram(0, at + OFF, true, old + OFF)?;
    // The same through a level-3 pointer to a table past the slice.
    let l2 = t.table(&mut r.vram, at, Level::L2)?;
    t.set_entry_on_path(&mut r.vram, at, Level::L3, vram_ptr(end))?;
    r.either(0, at + OFF, false, &stale_or(OUTSIDE_VRAM))?;
    r.c.invalidate_range(0, at, PAGE_SIZE)?;
    r.faults(0, at + OFF, OUTSIDE_VRAM)?;
    t.set_entry_on_path(&mut r.vram, at, Level::L3, t.pointer_to(l2))?;
    r.c.invalidate_all(0)?;
    r.ok_vram(0, at + OFF, false, old + OFF)?;
    // And to a writable page over the read-only map.
    t.set_entry_on_path(&mut r.vram, at, Level::L1, Page::system(IOVA_RO).entry())?;
    r.either(0, at + OFF, true, &stale_or(READ_ONLY))?;
    r.c.invalidate_range(0, at, PAGE_SIZE)?;
    r.faults(0, at + OFF, READ_ONLY)?;
    r.finish()
}

#[test]
fn dma_unmap_revokes_every_translation_into_the_map_before_its_reply() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    let (small, large, remote, vram) = (
        va(11, 0, 0, 1),
        va(11, 0, 1, 0),
        va(11, 0, 2, 1),
        va(11, 0, 3, 1),
    );
    let (low, high) = (va(11, 0, 4, 1), va(11, 0, 4, 2));
    let inside = 0x12_3456;
    t.map(&mut r.vram, small, Page::system(IOVA_P + 0x3000))?;
    t.map(&mut r.vram, large, Page::system(IOVA_P).large())?;
    t.map(&mut r.vram, remote, Page::system(IOVA_REMOTE + 0x1000))?;
    t.map(&mut r.vram, vram, Page::vram(0xe000))?;
    t.map(&mut r.vram, low, Page::system(IOVA_HALVES))?;
    t.map(&mut r.vram, high, Page::system(IOVA_HALVES + HALF))?;
    for ch in 0..4 {
        r.c.set_pt_root(ch, t.root_entry())?;
        r.ok_iova(ch, small, true, IOVA_P + 0x3000)?;
        r.ok_iova(ch, large + inside, true, IOVA_P + inside)?;
        r.ok_iova(ch, remote, true, IOVA_REMOTE + 0x1000)?;
        r.ok_iova(ch, high, true, IOVA_HALVES + HALF)?;
    }
    // Half a map is refused and leaves its translations alone.
    assert_eq!(
        r.c.dma_unmap(IOVA_P, HALF).unwrap_err().errno(),
        Some(libc::ENOENT as u32),
        "a partial DMA_UNMAP"
    );
    r.ok_iova(0, small, true, IOVA_P + 0x3000)?;
    r.c.dma_unmap(IOVA_P, LARGE_PAGE_SIZE)?;
    r.c.dma_unmap(IOVA_REMOTE, REMOTE_LEN)?;
    // An unmap names one map exactly: a range over both halves (and the
    // unmapped bytes around them) is refused and revokes nothing.
    assert_eq!(
        r.c.dma_unmap(IOVA_HALVES - HALF, 4 * HALF)
            .unwrap_err()
            .errno(),
        Some(libc::ENOENT as u32)
    );
    r.ok_iova(0, high, true, IOVA_HALVES + HALF)?;
    r.c.dma_unmap(IOVA_HALVES, HALF)?;
    r.c.dma_unmap(IOVA_HALVES + HALF, HALF)?;
    for ch in 0..4 {
        for at in [small, large + inside, remote, low, high] {
            r.faults(ch, at, NOT_MAPPED)?;
        }
        r.ok_vram(ch, vram, true, 0xe000)?;
    }
    // Mapped again read-only: no old writable translation comes back.
    let again = DmaMapRequest::read_only(IOVA_P, LARGE_PAGE_SIZE);
    let again = DmaMapRequest {
        offset: P_FILE,
        ..again
    };
    r.c.dma_map(again, Some(r.guest.memory.as_fd()))?;
    for write in [false, true] {
        r.either(1, small, write, &faults_of(&[NOT_MAPPED, READ_ONLY]))?;
    }
    r.c.invalidate_all(1)?;
    r.faults(1, small, READ_ONLY)?;
    r.finish()
}

#[test]
fn unmapping_the_tables_and_mapping_hostile_ones_there_is_validated() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.guest_tables()?;
    let (to_vram, into_tables) = (va(12, 1, 0, 1), va(12, 1, 0, 2));
    let page_in_t = IOVA_T + T_LEN - PAGE_SIZE;
    t.map(&mut r.guest, to_vram, Page::vram(0x4000))?;
    t.map(&mut r.guest, into_tables, Page::system(page_in_t))?;
    for ch in [0, 1] {
        r.c.set_pt_root(ch, t.root_entry())?;
        r.ok_vram(ch, to_vram, true, 0x4000)?;
        r.ok_iova(ch, into_tables, true, page_in_t)?;
    }
    r.c.dma_unmap(IOVA_T, T_LEN)?;
    let stale = Translation::ok(0x4000, Target::Vram);
    for ch in [0, 1] {
        r.faults(ch, into_tables, NOT_MAPPED)?;
        r.either(ch, to_vram, false, &[stale, Translation::fault(NOT_MAPPED)])?;
    }
    r.c.invalidate_all(0)?;
    r.faults(0, to_vram, NOT_MAPPED)?;
    // New memory at the same IOVA, with tables that point past the slice.
    let mut hostile = GuestMemory::new(64 << 10)?;
    let mut h = PageTables::in_guest(&mut hostile, IOVA_T..IOVA_T + (64 << 10), 0)?;
    assert_eq!(h.root_entry(), t.root_entry(), "the same root address");
    h.map(&mut hostile, to_vram, Page::vram(r.slice))?;
    let snapshot = hostile.bytes().to_vec();
    let map = DmaMapRequest::read_write(IOVA_T, 64 << 10);
    r.c.dma_map(map, Some(hostile.as_fd()))?;
    let out = faults_of(&[NOT_MAPPED, OUTSIDE_VRAM]);
    r.either(0, to_vram, false, &out)?;
    r.either(1, to_vram, false, &[stale, out[0], out[1]])?;
    r.c.invalidate_all(0)?;
    r.faults(0, to_vram, OUTSIDE_VRAM)?;
    assert_same(hostile.bytes(), &snapshot, "the hostile tables");
    r.finish()
}

/// Connects to A, retrying while the daemon still cleans up a disconnect.
fn reconnect(daemon: &TestDaemon) -> anyhow::Result<RawClient> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match daemon.connect(VGPU_A) {
            Ok(client) => return Ok(client),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => return Err(error),
        }
    }
}

#[test]
fn a_disconnect_leaves_no_translation_behind() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut g = r.guest_tables()?;
    let mut v = r.vram_tables()?;
    let at = va(13, 1, 1, 1);
    g.map(&mut r.guest, at, Page::system(IOVA_P + 0x5000))?;
    v.map(&mut r.vram, at, Page::vram(0x5000))?;
    let roots = [g.root_entry(), v.root_entry()];
    for ch in 0..4 {
        r.c.set_pt_root(ch, roots[ch as usize % 2])?;
    }
    r.ok_iova(0, at, true, IOVA_P + 0x5000)?;
    r.ok_vram(1, at, true, 0x5000)?;
    r.fault(2, at + LARGE_PAGE_SIZE, false, NOT_PRESENT)?;
    assert_eq!(r.c.served().dma_writes, 0);
    // Hang up with a root write and a translation still in flight.
    r.c.region_write_posted(BAR2, pt_root_lo(3), &roots[0].to_le_bytes())?;
    r.c.region_write_posted(BAR2, XLATE_CONTROL, &3u32.to_le_bytes())?;
    r.c.shutdown();
    r.c = reconnect(&r.daemon)?;
    arm_fault_interrupt(&mut r.c, &r.irq)?;
    let zero = FaultRecord {
        va: 0,
        info: 0,
        count: 0,
    };
    assert_eq!(r.c.fault_record()?, zero, "fault registers reset");
    for ch in 0..4 {
        assert_eq!(r.c.pt_root(ch)?, 0, "channel {ch}'s root");
        r.faults(ch, at, NOT_PRESENT)?;
    }
    // The old roots: the maps are gone and the VRAM was cleared.
    r.c.set_pt_root(0, roots[0])?;
    r.faults(0, at, NOT_MAPPED)?;
    r.c.set_pt_root(1, roots[1])?;
    r.faults(1, at, NOT_PRESENT)?;
    // Mapped again, the guest's tables (which nobody wrote) work again.
    for (iova, size, offset) in [(IOVA_T, T_LEN, T_FILE), (IOVA_P, LARGE_PAGE_SIZE, P_FILE)] {
        let map = DmaMapRequest {
            offset,
            ..DmaMapRequest::read_write(iova, size)
        };
        r.c.dma_map(map, Some(r.guest.memory.as_fd()))?;
    }
    r.c.set_pt_root(0, roots[0])?;
    r.ok_iova(0, at, true, IOVA_P + 0x5000)?;
    r.finish()
}

#[test]
fn another_vgpus_dma_maps_are_not_reachable() -> anyhow::Result<()> {
    let mut r = standard()?;
    let foreign = 0x7_0000_0000;
    let mut theirs = GuestMemory::new(LARGE_PAGE_SIZE as usize)?;
    fill(theirs.bytes_mut(), 0x42);
    let mut t = PageTables::in_guest(&mut theirs, foreign..foreign + (64 << 10), 0)?;
    t.map(&mut theirs, va(0, 0, 0, 1), Page::vram(0x1000))?;
    let snapshot = theirs.bytes().to_vec();
    let map = DmaMapRequest::read_write(foreign, LARGE_PAGE_SIZE);
    r.b.c.dma_map(map, Some(theirs.as_fd()))?;
    // A's root in B's memory, and A's pages there.
    r.c.set_pt_root(0, t.root_entry())?;
    r.faults(0, va(0, 0, 0, 1), NOT_MAPPED)?;
    let mut mine = r.vram_tables()?;
    mine.map(&mut r.vram, va(1, 0, 0, 1), Page::system(foreign + 0x2000))?;
    mine.map(&mut r.vram, va(1, 0, 1, 0), Page::system(foreign).large())?;
    r.c.set_pt_root(1, mine.root_entry())?;
    r.faults(1, va(1, 0, 0, 1), NOT_MAPPED)?;
    r.faults(1, va(1, 0, 1, 0), NOT_MAPPED)?;
    assert_same(theirs.bytes(), &snapshot, "vGPU B's guest memory");
    r.finish()
}

/// A memfd the test does not map, so that shrinking it cannot fault here.
fn unmapped_memfd(len: u64) -> anyhow::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("vgpud-attack", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&fd, len)?;
    Ok(fd)
}

#[test]
fn dma_maps_that_wrap_or_outrun_their_file_do_not_widen_what_is_reachable() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    // A map that wraps around 2^64: whatever the daemon does with it, IOVA
    // 0 (which wrapping arithmetic would put inside it) stays unmapped.
    let small = unmapped_memfd(2 * PAGE_SIZE)?;
    let wrapping = DmaMapRequest::read_write(0u64.wrapping_sub(PAGE_SIZE), 2 * PAGE_SIZE);
    let _ = r.c.dma_map(wrapping, Some(small.as_fd()));
    t.map(&mut r.vram, va(16, 0, 0, 0), Page::system(0))?;
    r.c.set_pt_root(0, t.root_entry())?;
    r.faults(0, va(16, 0, 0, 0), NOT_MAPPED)?;
    // A map longer than its file: if taken, tables past the file's end.
    let short = unmapped_memfd(PAGE_SIZE)?;
    let iova = 0x8_0000_0000;
    let long = DmaMapRequest::read_write(iova, LARGE_PAGE_SIZE);
    if r.c.dma_map(long, Some(short.as_fd())).is_ok() {
        r.c.set_pt_root(1, sys_ptr(iova + HALF))?;
        r.either(1, 0, false, &faults_of(&ALL_REASONS))?;
    }
    r.finish()
}

#[test]
fn tables_in_a_file_the_vmm_shrinks_after_mapping_do_not_kill_the_daemon() -> anyhow::Result<()> {
    let mut r = standard()?;
    let file = unmapped_memfd(4 * PAGE_SIZE)?;
    let iova = 0x9_0000_0000;
    // A chain of four tables, one per page of the file.
    for level in 0..3 {
        let entry = sys_ptr(iova + (level + 1) * PAGE_SIZE);
        rustix::io::pwrite(&file, &entry.to_le_bytes(), level * PAGE_SIZE)?;
    }
    let leaf = Page::vram(0x8000).entry().to_le_bytes();
    rustix::io::pwrite(&file, &leaf, 3 * PAGE_SIZE)?;
    let map = DmaMapRequest::read_write(iova, 4 * PAGE_SIZE);
    r.c.dma_map(map, Some(file.as_fd()))?;
    r.c.set_pt_root(2, sys_ptr(iova))?;
    r.ok_vram(2, OFF, true, 0x8000 + OFF)?;
    // The VMM shrinks the file; the guest makes the daemon walk again.
    rustix::fs::ftruncate(&file, 0)?;
    r.c.invalidate_all(2)?;
    let mut after = faults_of(&[NOT_PRESENT, NOT_MAPPED]);
    after.push(Translation::ok(0x8000 + OFF, Target::Vram));
    r.either(2, OFF, false, &after)?;
    r.finish()
}

/// Sets the flag when dropped, so that a failed assertion stops the
/// flipping thread instead of leaving the scope waiting for it.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn entries_flipping_while_the_daemon_walks_are_never_used_unvalidated() -> anyhow::Result<()> {
    let mut r = standard()?;
    let mut t = r.vram_tables()?;
    let (a, b) = (va(17, 0, 0, 1), va(17, 0, 0, 2));
    let ro_page = Page::system(IOVA_RO + 0x1000).read_only();
    t.map(&mut r.vram, a, Page::vram(0x6000))?;
    t.map(&mut r.vram, b, ro_page)?;
    let l1 = t.table(&mut r.vram, a, Level::L1)?;
    r.c.set_pt_root(0, t.root_entry())?;
    // Good and bad values of two entries: a page far past the slice, and
    // WRITABLE over the read-only map.
    let far = Page::vram(3 * r.slice + 0x7000).entry();
    let writable = Page {
        writable: true,
        ..ro_page
    }
    .entry();
    let flips = [
        (l1 + 8, Page::vram(0x6000).entry(), far),
        (l1 + 16, ro_page.entry(), writable),
    ];
    let mut flipper = r.c.map_bar0()?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let _stop = StopOnDrop(&stop);
        scope.spawn(|| {
            let base = flipper.map.as_mut_ptr();
            let slots = flips.map(|(at, good, bad)| {
                let ptr = base.wrapping_add(at as usize).cast::<u64>();
                // SAFETY: `at` is an 8-byte aligned offset inside the mapping,
                // which outlives this thread (the scope joins it first), and
                // this process touches those bytes only through these atomics.
                (unsafe { AtomicU64::from_ptr(ptr) }, good, bad)
            });
            while !stop.load(Ordering::Relaxed) {
                for (slot, good, bad) in &slots {
                    slot.store(*bad, Ordering::Relaxed);
                    slot.store(*good, Ordering::Relaxed);
                }
            }
        });
        let a_allowed = [
            Translation::ok(0x6000 + OFF, Target::Vram),
            Translation::fault(OUTSIDE_VRAM),
        ];
        let b_read = [
            Translation::ok(IOVA_RO + 0x1000 + OFF, Target::System),
            Translation::fault(READ_ONLY),
        ];
        for _ in 0..FLIP_ROUNDS {
            r.c.invalidate_range(0, a, 2 * PAGE_SIZE)?;
            r.either(0, a + OFF, true, &a_allowed)?;
            r.either(0, b + OFF, true, &b_read[1..])?;
            r.either(0, b + OFF, false, &b_read)?;
        }
        Ok(())
    })?;
    r.c.invalidate_all(0)?;
    r.ok_vram(0, a + OFF, true, 0x6000 + OFF)?;
    r.finish()
}
