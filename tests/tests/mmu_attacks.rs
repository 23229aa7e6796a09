//! Hostile page tables, written independently of the daemon's walker: every
//! entry that reaches outside what the vGPU owns must fault and be reported
//! (XLATE_STATUS, FAULT_INFO, FAULT_COUNT, IRQ_STATUS.FAULT), and the memory
//! around it that the test owns must be unchanged byte for byte: the
//! neighbour vGPU's VRAM, this vGPU's VRAM, and guest memory inside and
//! outside the DMA maps, all filled with a pattern before the attack.
//!
//! The translate port only translates; the comparisons check that nothing
//! in the daemon wrote while walking hostile tables either.

use std::ops::Range;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::Context;

use vgpud_tests::config::STANDARD_FRAMEBUFFER;
use vgpud_tests::device::MappedBar0;
use vgpud_tests::host::pattern;
use vgpud_tests::page_tables::{
    ENTRIES, FaultRecord, LARGE_PAGE_SIZE, Level, PAGE_SIZE, Page, PageTables, Target, Translation,
    pte,
};
use vgpud_tests::regs::bar2::{IRQ_FAULT, IRQ_STATUS, MAGIC, MAGIC_VALUE};
use vgpud_tests::regs::fault_info::{
    self, ALL_REASONS, INVALID_ENTRY, NOT_MAPPED, OUTSIDE_VRAM, READ_ONLY, WALK_LIMIT,
};
use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A, VGPU_B};

/// The vGPU's slice ends here (the standard profile's framebuffer).
const SLICE_END: u64 = STANDARD_FRAMEBUFFER;
/// Guest memory: a 1 MiB memfd; its first [`MAP_LEN`] bytes are mapped
/// read-write at [`IOVA`], the rest is guest memory outside every map.
const IOVA: u64 = 0x1_0000_0000;
const GUEST_LEN: usize = 1 << 20;
const MAP_LEN: u64 = 512 << 10;
/// Tables come from the first half of the map.
const ARENA: Range<u64> = IOVA..IOVA + (256 << 10);
/// A read-only map of its own memfd.
const READ_ONLY_IOVA: u64 = 0x2_0000_0000;
const READ_ONLY_LEN: u64 = 64 << 10;

/// How long a reply may take while the MMU holds a fan-out tree.
const FAN_OUT_ANSWER: Duration = Duration::from_secs(2);

/// Each attack gets its own level-4 slot, so that paths share only the
/// root; 2 MiB aligned, so that large pages start there too.
const fn va(slot: u64) -> u64 {
    slot << 39 | 0x1240_0000
}

struct Rig {
    _daemon: TestDaemon,
    a: RawClient,
    b: RawClient,
    a_vram: MappedBar0,
    b_vram: MappedBar0,
    guest: GuestMemory,
    read_only: GuestMemory,
    tables: PageTables,
}

/// What the test owns, as it was before the attack.
struct Snapshot {
    a_vram: Vec<u8>,
    b_vram: Vec<u8>,
    guest: Vec<u8>,
    read_only: Vec<u8>,
}

/// Fills `bytes` with a pattern that differs in every 4 KiB page (the
/// page number is in its first bytes), cheaply enough for 16 MiB.
fn fill(bytes: &mut [u8], seed: u8) {
    let page = pattern(PAGE_SIZE as usize, seed);
    for (number, chunk) in bytes.chunks_mut(PAGE_SIZE as usize).enumerate() {
        chunk.copy_from_slice(&page[..chunk.len()]);
        let tag = (number as u32).to_le_bytes();
        let len = tag.len().min(chunk.len());
        chunk[..len].copy_from_slice(&tag[..len]);
    }
}

/// Two vGPUs of the standard configuration, both connected; every byte the
/// test owns filled with a pattern; an empty tree for channel 0 of A,
/// rooted by [`Rig::arm`] once the test has built it.
fn rig() -> anyhow::Result<Rig> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    let mut a_vram = a.map_bar0()?;
    let mut b_vram = b.map_bar0()?;
    fill(&mut a_vram.map, 0xa);
    fill(&mut b_vram.map, 0xb);
    let mut guest = GuestMemory::new(GUEST_LEN)?;
    fill(guest.bytes_mut(), 0xc);
    a.dma_map(
        DmaMapRequest::read_write(IOVA, MAP_LEN),
        Some(guest.as_fd()),
    )?;
    let mut read_only = GuestMemory::new(READ_ONLY_LEN as usize)?;
    fill(read_only.bytes_mut(), 0xd);
    a.dma_map(
        DmaMapRequest::read_only(READ_ONLY_IOVA, READ_ONLY_LEN),
        Some(read_only.as_fd()),
    )?;
    let tables = PageTables::in_guest(&mut guest, ARENA, 0)?;
    Ok(Rig {
        _daemon: daemon,
        a,
        b,
        a_vram,
        b_vram,
        guest,
        read_only,
        tables,
    })
}

impl Rig {
    fn map(&mut self, va: u64, page: Page) -> anyhow::Result<()> {
        self.tables.map(&mut self.guest, va, page)
    }

    fn set_entry(&mut self, va: u64, level: Level, entry: u64) -> anyhow::Result<()> {
        self.tables
            .set_entry_on_path(&mut self.guest, va, level, entry)
    }

    /// Roots the tree at channel 0 (which makes the MMU read it afresh)
    /// and takes the snapshot to compare with after the attack.
    fn arm(&mut self) -> anyhow::Result<Snapshot> {
        self.a.set_pt_root(0, self.tables.root_entry())?;
        Ok(self.snapshot())
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            a_vram: self.a_vram.map.to_vec(),
            b_vram: self.b_vram.map.to_vec(),
            guest: self.guest.bytes().to_vec(),
            read_only: self.read_only.bytes().to_vec(),
        }
    }

    /// Everything the test owns is as `before`, byte for byte.
    fn assert_unchanged(&self, before: &Snapshot) {
        let regions: [(&str, &[u8], &[u8]); 4] = [
            ("neighbour VRAM", &self.b_vram.map, &before.b_vram),
            ("own VRAM", &self.a_vram.map, &before.a_vram),
            ("guest memory", self.guest.bytes(), &before.guest),
            ("read-only map", self.read_only.bytes(), &before.read_only),
        ];
        for (what, now, then) in regions {
            if let Some(at) = now.iter().zip(then).position(|(x, y)| x != y) {
                panic!(
                    "{what} changed at {at:#x}: {:#04x} became {:#04x}",
                    then[at], now[at]
                );
            }
        }
    }

    /// Translates `va`; a fault must be reported (results 0, the fault
    /// record, one more in FAULT_COUNT, IRQ_STATUS.FAULT), a success must
    /// not count one.
    fn xlate_checked(&mut self, va: u64, write: bool) -> anyhow::Result<Translation> {
        let c = &mut self.a;
        c.acknowledge_faults()?;
        let count = c.fault_record()?.count;
        let translation = c.xlate(0, va, write)?;
        let reason = translation.status;
        if reason == 0 {
            assert_eq!(
                c.fault_record()?.count,
                count,
                "{va:#x} translated, yet counted"
            );
            return Ok(translation);
        }
        assert_eq!(translation, Translation::fault(reason), "results read 0");
        assert_eq!(
            c.fault_record()?,
            FaultRecord {
                va,
                info: fault_info::encode(0, write, reason),
                count: count + 1,
            },
            "fault record of {va:#x}"
        );
        assert_ne!(
            c.bar2_read32(IRQ_STATUS)? & IRQ_FAULT,
            0,
            "IRQ_STATUS.FAULT"
        );
        Ok(translation)
    }

    /// `va` faults, for one of `reasons`, and the fault is reported.
    fn assert_fault_among(&mut self, va: u64, write: bool, reasons: &[u32]) -> anyhow::Result<()> {
        let translation = self.xlate_checked(va, write)?;
        assert!(
            reasons.contains(&translation.status),
            "{va:#x} (write {write}): {translation:x?}, expected a fault for one of {reasons:?}"
        );
        Ok(())
    }

    fn assert_fault(&mut self, va: u64, write: bool, reason: u32) -> anyhow::Result<()> {
        self.assert_fault_among(va, write, &[reason])
    }

    fn assert_translates(
        &mut self,
        va: u64,
        write: bool,
        expected: Translation,
    ) -> anyhow::Result<()> {
        assert_eq!(
            self.a.xlate(0, va, write)?,
            expected,
            "{va:#x} (write {write})"
        );
        Ok(())
    }
}

#[test]
fn leaf_past_the_vram_slice_faults_outside_vram() -> anyhow::Result<()> {
    let mut r = rig()?;
    let last_page = SLICE_END - PAGE_SIZE;
    r.map(va(1), Page::vram(last_page))?;
    r.map(va(2), Page::vram(SLICE_END))?;
    r.map(va(3), Page::vram(pte::ADDRESS_MASK))?;
    let before = r.arm()?;
    r.assert_translates(
        va(1) + 0xff8,
        true,
        Translation::ok(last_page + 0xff8, Target::Vram),
    )?;
    for slot in [2, 3] {
        for write in [false, true] {
            r.assert_fault(va(slot), write, OUTSIDE_VRAM)?;
        }
    }
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn large_page_reaching_past_the_slice_faults() -> anyhow::Result<()> {
    let mut r = rig()?;
    let last_large = SLICE_END - LARGE_PAGE_SIZE;
    r.map(va(1), Page::vram(last_large).large())?;
    r.map(va(2), Page::vram(SLICE_END).large())?;
    // Half inside the slice, half outside (and misaligned: address bits
    // 20:12 must be 0). Its first half must not be reachable either.
    r.map(va(3), Page::vram(SLICE_END - LARGE_PAGE_SIZE / 2).large())?;
    let before = r.arm()?;
    let end = LARGE_PAGE_SIZE - 1;
    r.assert_translates(
        va(1) + end,
        true,
        Translation::ok(last_large + end, Target::Vram),
    )?;
    r.assert_fault(va(2), false, OUTSIDE_VRAM)?;
    r.assert_fault_among(va(3), false, &[INVALID_ENTRY, OUTSIDE_VRAM])?;
    r.assert_fault_among(va(3) + end, true, &[INVALID_ENTRY, OUTSIDE_VRAM])?;
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn root_outside_what_the_vgpu_owns_faults() -> anyhow::Result<()> {
    let mut r = rig()?;
    let before = r.arm()?;
    let va = va(1);
    r.a.set_pt_root(0, SLICE_END | pte::VALID | pte::WRITABLE)?;
    r.assert_fault(va, false, OUTSIDE_VRAM)?;
    r.a.set_pt_root(0, (IOVA + MAP_LEN) | pte::VALID | pte::SYSTEM)?;
    r.assert_fault(va, false, NOT_MAPPED)?;
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn table_outside_the_vram_slice_faults_outside_vram() -> anyhow::Result<()> {
    let mut r = rig()?;
    let table = pte::VALID | pte::WRITABLE;
    r.set_entry(va(1), Level::L4, SLICE_END | table)?;
    r.set_entry(va(2), Level::L3, (SLICE_END + 0x10_0000) | table)?;
    r.set_entry(va(3), Level::L2, pte::ADDRESS_MASK | table)?;
    let before = r.arm()?;
    for slot in 1..=3 {
        r.assert_fault(va(slot), false, OUTSIDE_VRAM)?;
    }
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn table_outside_every_dma_map_faults_not_mapped() -> anyhow::Result<()> {
    let mut r = rig()?;
    let table = pte::VALID | pte::WRITABLE | pte::SYSTEM;
    // Right after the map: the memfd goes on there, full of pattern bytes
    // that would make plausible entries if they were read.
    r.set_entry(va(1), Level::L4, (IOVA + MAP_LEN) | table)?;
    r.set_entry(va(2), Level::L3, (IOVA - PAGE_SIZE) | table)?;
    r.set_entry(va(3), Level::L2, table)?;
    let before = r.arm()?;
    for slot in 1..=3 {
        r.assert_fault(va(slot), false, NOT_MAPPED)?;
    }
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn system_page_outside_every_dma_map_faults_not_mapped() -> anyhow::Result<()> {
    let mut r = rig()?;
    let last_page = IOVA + MAP_LEN - PAGE_SIZE;
    r.map(va(1), Page::system(last_page))?;
    r.map(va(2), Page::system(IOVA + MAP_LEN))?;
    r.map(va(3), Page::system(IOVA - PAGE_SIZE))?;
    r.map(
        va(4),
        Page::system(READ_ONLY_IOVA + READ_ONLY_LEN).read_only(),
    )?;
    let before = r.arm()?;
    r.assert_translates(va(1), true, Translation::ok(last_page, Target::System))?;
    for slot in 2..=4 {
        r.assert_fault(va(slot), false, NOT_MAPPED)?;
    }
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn writable_page_over_a_read_only_map_faults_on_write() -> anyhow::Result<()> {
    let mut r = rig()?;
    let page = READ_ONLY_IOVA + 0x3000;
    r.map(va(1), Page::system(page))?;
    r.map(va(2), Page::system(page).read_only())?;
    let before = r.arm()?;
    let expected = Translation::ok(page + 8, Target::System);
    r.assert_fault(va(1) + 8, true, READ_ONLY)?;
    // The contract says a writable page needs a writable map, not whether
    // such a page is still readable: either answer is safe, nothing else is.
    let read = r.xlate_checked(va(1) + 8, false)?;
    assert!(
        read == expected || read == Translation::fault(READ_ONLY),
        "read through a writable page over a read-only map: {read:x?}"
    );
    // Read-only page, read-only map: reads work, writes fault.
    r.assert_translates(va(2) + 8, false, expected)?;
    r.assert_fault(va(2) + 8, true, READ_ONLY)?;
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn system_page_running_past_the_end_of_a_map_faults() -> anyhow::Result<()> {
    let mut r = rig()?;
    // A 2 MiB page at the start of the 512 KiB map: its first quarter is
    // mapped, the rest is the unmapped part of the memfd and beyond.
    r.map(va(1), Page::system(IOVA).large())?;
    let before = r.arm()?;
    r.assert_fault(va(1) + 0x1000, false, NOT_MAPPED)?;
    r.assert_fault(va(1) + MAP_LEN + 0x1000, true, NOT_MAPPED)?;
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn large_page_across_two_adjacent_maps_faults() -> anyhow::Result<()> {
    let mut r = rig()?;
    // Two memfds at adjacent IOVAs: together they cover the 2 MiB page,
    // but no one map does, and the host memory behind them is not one
    // block.
    let base = 0x3_0000_0000;
    let half = LARGE_PAGE_SIZE / 2;
    let mut low = GuestMemory::new(half as usize)?;
    let mut high = GuestMemory::new(half as usize)?;
    fill(low.bytes_mut(), 0xe);
    fill(high.bytes_mut(), 0xf);
    r.a.dma_map(DmaMapRequest::read_write(base, half), Some(low.as_fd()))?;
    r.a.dma_map(
        DmaMapRequest::read_write(base + half, half),
        Some(high.as_fd()),
    )?;
    r.map(va(1), Page::system(base).large())?;
    let (low_before, high_before) = (low.bytes().to_vec(), high.bytes().to_vec());
    let before = r.arm()?;
    r.assert_fault(va(1) + 0x1000, true, NOT_MAPPED)?;
    r.assert_fault(va(1) + half + 0x1000, false, NOT_MAPPED)?;
    r.assert_unchanged(&before);
    assert!(low.bytes() == low_before && high.bytes() == high_before);
    Ok(())
}

#[test]
fn reserved_bits_make_an_entry_invalid() -> anyhow::Result<()> {
    let mut r = rig()?;
    let page = Page::vram(0x10_0000).entry();
    r.map(va(1), Page::vram(0x10_0000))?;
    r.set_entry(va(1), Level::L1, page | 1 << 52)?;
    r.map(va(2), Page::vram(0x10_0000))?;
    r.set_entry(va(2), Level::L1, page | 1 << 63)?;
    r.map(va(3), Page::vram(0x10_0000))?;
    r.set_entry(va(3), Level::L1, page | 1 << 4)?;
    r.map(va(4), Page::vram(0x10_0000))?;
    let level_2 = r.tables.table(&mut r.guest, va(4), Level::L2)?;
    let pointer = r.tables.pointer_to(level_2) | 1 << 11;
    r.set_entry(va(4), Level::L3, pointer)?;
    let before = r.arm()?;
    for slot in 1..=4 {
        r.assert_fault(va(slot), false, INVALID_ENTRY)?;
    }
    // A root with a reserved bit set.
    r.a.set_pt_root(0, r.tables.root_entry() | pte::RESERVED_LOW)?;
    r.assert_fault(va(1), false, INVALID_ENTRY)?;
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn large_outside_level_2_is_invalid() -> anyhow::Result<()> {
    let mut r = rig()?;
    let large = pte::VALID | pte::WRITABLE | pte::LARGE;
    // A 1 GiB and a 512 GiB "page" at VRAM 0, and a large level-1 entry.
    r.set_entry(va(1), Level::L3, large)?;
    r.set_entry(va(2), Level::L4, large)?;
    r.set_entry(va(3), Level::L1, 0x10_0000 | large)?;
    let before = r.arm()?;
    for slot in 1..=3 {
        r.assert_fault(va(slot), false, INVALID_ENTRY)?;
    }
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn cycles_in_the_tables_terminate_and_map_nothing_outside() -> anyhow::Result<()> {
    let mut r = rig()?;
    let root = r.tables.root();
    let root_pointer = r.tables.pointer_to(root);
    // A level-3 entry back to the root: a walk comes round and reads the
    // root as level 2, then the level-3 table as level 1.
    r.set_entry(va(1), Level::L3, root_pointer)?;
    let around = 1 << 39 | 1 << 21;
    // A root entry to the root itself: every level is the root.
    let slot = 7;
    let self_loop = slot << 39 | slot << 30 | slot << 21 | slot << 12;
    r.tables
        .set_entry(&mut r.guest, root, slot as usize, root_pointer)?;
    let before = r.arm()?;
    let vas = [va(1), around, around + 5 * PAGE_SIZE, self_loop + 0x10];
    for va in vas {
        for write in [false, true] {
            let translation = r.xlate_checked(va, write)?;
            if translation.status == 0 {
                // The only thing a cycle can reach is the tables' own
                // memory, which the vGPU owns.
                assert_eq!(translation.target, Target::System.xlate_target());
                assert!(
                    ARENA.contains(&translation.address),
                    "{va:#x} maps {translation:x?}"
                );
            }
        }
    }
    assert_eq!(r.a.bar2_read32(MAGIC)?, MAGIC_VALUE, "still answering");
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn fan_out_to_shared_tables_is_bounded() -> anyhow::Result<()> {
    let mut r = rig()?;
    // Every entry of every level points at the single next table, and the
    // 512 leaves at 512 VRAM pages: the whole 256 TiB is mapped through
    // four tables, 2^36 paths. A walk that follows every path never ends.
    let mut tables = [r.tables.root(), 0, 0, 0];
    for table in &mut tables[1..] {
        *table = r.tables.new_table(&mut r.guest)?;
    }
    for pair in tables.windows(2) {
        let entries = [r.tables.pointer_to(pair[1]); ENTRIES];
        r.tables.fill_table(&mut r.guest, pair[0], &entries)?;
    }
    let leaves: Vec<u64> = (0..ENTRIES as u64)
        .map(|i| Page::vram(i * PAGE_SIZE).entry())
        .collect();
    let leaves: [u64; ENTRIES] = leaves.try_into().map_err(|_| anyhow::anyhow!("512"))?;
    r.tables.fill_table(&mut r.guest, tables[3], &leaves)?;
    // Not a timing measurement but a hang bound, tighter than the
    // harness's: four distinct tables are walked once each, so no reply
    // may wait seconds on them.
    r.a.set_timeout(FAN_OUT_ANSWER)?;
    let before = r.arm()?;
    for va in [0, 0x7fff_ffff_f123, 0x1234_5678_9abc, 0x4000_0020_0fff] {
        let translation = r
            .xlate_checked(va, true)
            .with_context(|| format!("XLATE of {va:#x} with the fan-out tree rooted"))?;
        if translation.status == 0 {
            let page = Level::L1.index(va) as u64 * PAGE_SIZE;
            let expected = Translation::ok(page + (va & (PAGE_SIZE - 1)), Target::Vram);
            assert_eq!(translation, expected, "{va:#x}");
        } else {
            assert_eq!(translation.status, WALK_LIMIT, "{va:#x}");
        }
    }
    assert_eq!(r.a.bar2_read32(MAGIC)?, MAGIC_VALUE, "still answering");
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn va_above_48_bits_faults() -> anyhow::Result<()> {
    let mut r = rig()?;
    let low = va(1);
    r.map(low, Page::vram(0x10_0000))?;
    let before = r.arm()?;
    r.assert_translates(low, false, Translation::ok(0x10_0000, Target::Vram))?;
    // If the top bits were dropped, these would translate like `low`.
    for high in [1 << 48, 1 << 63, 0xffff << 48] {
        r.assert_fault_among(low | high, false, &ALL_REASONS)?;
    }
    r.assert_unchanged(&before);
    Ok(())
}

#[test]
fn faults_of_one_vgpu_leave_the_other_translating() -> anyhow::Result<()> {
    let mut r = rig()?;
    let arena = 0x80_0000..0x80_8000;
    let mut b_tables = PageTables::in_vram(&mut r.b_vram, arena)?;
    b_tables.map(&mut r.b_vram, va(1), Page::vram(0x10_0000))?;
    r.b.set_pt_root(0, b_tables.root_entry())?;
    r.map(va(1), Page::vram(SLICE_END))?;
    let before = r.arm()?;
    r.assert_fault(va(1), true, OUTSIDE_VRAM)?;
    assert_eq!(
        r.b.xlate(0, va(1), true)?,
        Translation::ok(0x10_0000, Target::Vram)
    );
    assert_eq!(r.b.fault_record()?.count, 0, "the neighbour saw no fault");
    assert_eq!(r.b.bar2_read32(IRQ_STATUS)? & IRQ_FAULT, 0);
    r.assert_unchanged(&before);
    Ok(())
}
