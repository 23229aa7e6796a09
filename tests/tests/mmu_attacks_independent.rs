//! Page-table attacks on the GPU MMU, written by an independent reviewer
//! from `docs/device-interface.md` ("The GPU MMU") and `docs/vfio-user.md`
//! alone, without reading the daemon's or the MMU's source.
//!
//! Every attack checks the three things the isolation contract promises:
//! the access faults with the documented reason (XLATE_STATUS), the fault
//! is reported (FAULT_VA, FAULT_INFO, FAULT_COUNT, IRQ_STATUS.FAULT and
//! vector 0), and nothing outside the vGPU's slice and maps changed. The
//! translate port reads no data, so "nothing changed" is checked on all the
//! memory the harness can see: every byte of the guest memfd (a mirror
//! records each byte the test wrote, so any byte the daemon wrote shows),
//! the memory served without an fd, and the VRAM slice, translation and
//! fault count of a second vGPU whose client stays connected throughout.
//!
//! The helpers are `#[track_caller]`, so a failure names the attacking line.

use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vgpud_tests::config::{DaemonConfig, GpuSpec, ProfileSpec, VgpuSpec};
use vgpud_tests::device::MappedBar0;
use vgpud_tests::host::{EventFd, eventfds, pattern};
use vgpud_tests::page_tables::{
    ENTRIES, FaultRecord, LARGE_PAGE_SIZE, Level, PAGE_SIZE, Page, PageTables, TableMemory, Target,
    Translation, pte,
};
use vgpud_tests::regs::bar2::{
    CHANNELS, ERROR_CODE, ERROR_INFO, INV_ALL, INV_RANGE, IRQ_ERROR, IRQ_FAULT, IRQ_MASK,
    IRQ_STATUS, MMU_CHANNEL_STRIDE, VRAM_SIZE_HI, VRAM_SIZE_LO, XLATE_CONTROL, XLATE_VA_HI,
    XLATE_VA_LO, XLATE_WRITE, pt_root_hi, pt_root_lo,
};
use vgpud_tests::regs::error_code::{BAD_CHANNEL, BAD_RANGE};
use vgpud_tests::regs::fault_info::{
    INVALID_ENTRY, NOT_MAPPED, NOT_PRESENT, OUTSIDE_VRAM, READ_ONLY, WALK_LIMIT, encode,
};
use vgpud_tests::regs::region::BAR2;
use vgpud_tests::wire::irq_index;
use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A, VGPU_B};

/// Guest memfd layout (file offset → IOVA), with unmapped guard bytes
/// between the maps: `[0, 64 KiB)`, `[576 KiB, 2 MiB)` and the last 64 KiB.
const GUEST_LEN: usize = (8 << 20) + (64 << 10);
/// Read-write, 512 KiB: tables (the first half) and pages.
const IOVA_T: u64 = 0x1_0000_0000;
const T_LEN: u64 = 512 << 10;
const T_FILE: u64 = 64 << 10;
/// Read-write, 2 MiB, 2 MiB aligned: room for one large system page.
const IOVA_P: u64 = 0x2_0000_0000;
const P_FILE: u64 = 2 << 20;
/// Read-only, 2 MiB, 2 MiB aligned.
const IOVA_RO: u64 = 0x3_0000_0000;
const RO_FILE: u64 = 4 << 20;
/// Two adjacent read-write 1 MiB maps of contiguous file bytes.
const IOVA_HALVES: u64 = 0x4_0000_0000;
const HALF: u64 = 1 << 20;
const HALVES_FILE: u64 = 6 << 20;
/// Read-write, served by the client without an fd.
const IOVA_REMOTE: u64 = 0x5_0000_0000;
const REMOTE_LEN: u64 = 64 << 10;

const GUEST_ARENA: Range<u64> = IOVA_T..IOVA_T + (256 << 10);
/// Tables in VRAM; inside even a 1 MiB slice.
const VRAM_ARENA: Range<u64> = 0x8_0000..0xc_0000;
const B_ARENA: Range<u64> = 0xc_0000..0xd_0000;
/// vGPU B's own translation, checked at the end of every attack.
const B_VA: u64 = 0x7f_0000_5000;
const B_PAGE: u64 = 0x1_3000;

/// The highest page address an entry can name (address bits 51:12).
const TOP: u64 = pte::ADDRESS_MASK;
const OFF: u64 = 0xabc;
const SIGNAL: Duration = Duration::from_secs(2);
const FLIP_ROUNDS: usize = 1000;
const ANY_REASON: [u32; 6] = [
    NOT_PRESENT,
    INVALID_ENTRY,
    OUTSIDE_VRAM,
    NOT_MAPPED,
    READ_ONLY,
    WALK_LIMIT,
];

/// A VA from its four table indexes.
const fn va(l4: u64, l3: u64, l2: u64, l1: u64) -> u64 {
    (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12)
}

const fn vram_ptr(addr: u64) -> u64 {
    addr | pte::VALID | pte::WRITABLE
}

const fn sys_ptr(addr: u64) -> u64 {
    vram_ptr(addr) | pte::SYSTEM
}

fn faults_of(reasons: &[u32]) -> Vec<Translation> {
    reasons
        .iter()
        .map(|&reason| Translation::fault(reason))
        .collect()
}

/// A position-dependent fill that differs in every page.
fn fill(bytes: &mut [u8], seed: u8) {
    let tile = pattern(PAGE_SIZE as usize, seed);
    for (page, chunk) in bytes.chunks_mut(PAGE_SIZE as usize).enumerate() {
        chunk.copy_from_slice(&tile[..chunk.len()]);
        chunk[..2].copy_from_slice(&(page as u16).to_le_bytes());
    }
}

#[track_caller]
fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let at = actual.iter().zip(expected).position(|(a, e)| a != e);
        panic!("{what} changed (first differing byte at {at:?})");
    }
}

/// Guest memory and a mirror of every byte the test wrote to it.
struct Guest {
    memory: GuestMemory,
    expected: Vec<u8>,
}

impl TableMemory for Guest {
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> anyhow::Result<()> {
        self.memory.write_bytes(addr, bytes)?;
        let start = usize::try_from(addr)?;
        self.expected[start..start + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

/// vGPU B: a connected client, its VRAM, and one working translation.
struct Witness {
    c: RawClient,
    vram: MappedBar0,
    snapshot: Vec<u8>,
}

impl Witness {
    fn new(daemon: &TestDaemon) -> anyhow::Result<Self> {
        let mut c = daemon.connect(VGPU_B)?;
        let mut vram = c.map_bar0()?;
        fill(&mut vram.map, 0xb0);
        let mut tables = PageTables::in_vram(&mut vram, B_ARENA)?;
        tables.map(&mut vram, B_VA, Page::vram(B_PAGE))?;
        c.set_pt_root(0, tables.root_entry())?;
        let snapshot = vram.map.to_vec();
        let mut witness = Witness { c, vram, snapshot };
        witness.check()?;
        Ok(witness)
    }

    #[track_caller]
    fn check(&mut self) -> anyhow::Result<()> {
        let expected = Translation::ok(B_PAGE + OFF, Target::Vram);
        assert_eq!(self.c.xlate(0, B_VA + OFF, true)?, expected, "vGPU B");
        assert_eq!(self.c.fault_record()?.count, 0, "vGPU B's FAULT_COUNT");
        assert_same(&self.vram.map, &self.snapshot, "vGPU B's VRAM slice");
        Ok(())
    }
}

struct Rig {
    daemon: TestDaemon,
    c: RawClient,
    vram: MappedBar0,
    guest: Guest,
    slice: u64,
    irq: Vec<EventFd>,
    b: Witness,
}

fn standard() -> anyhow::Result<Rig> {
    Rig::start(&DaemonConfig::standard())
}

/// Two vGPUs with 1 MiB slices, so that a 2 MiB page at offset 0 runs
/// past the end of A's slice into whatever follows it on the GPU.
fn one_mib_slices() -> anyhow::Result<Rig> {
    let gpu = "gpu0".to_string();
    let vgpu = |uuid| VgpuSpec {
        uuid,
        gpu: gpu.clone(),
        profile: "tiny".into(),
    };
    Rig::start(&DaemonConfig {
        gpus: vec![GpuSpec {
            id: gpu.clone(),
            vram: "4MiB".into(),
        }],
        profiles: vec![ProfileSpec {
            name: "tiny".into(),
            framebuffer: "1MiB".into(),
            max_instances: 4,
            channels: 4,
            max_resolution: (320, 200),
            subsystem: None,
        }],
        vgpus: vec![vgpu(VGPU_A), vgpu(VGPU_B)],
    })
}

impl Rig {
    fn start(config: &DaemonConfig) -> anyhow::Result<Self> {
        let daemon = TestDaemon::start(config)?;
        let b = Witness::new(&daemon)?;
        let remote = pattern(REMOTE_LEN as usize, 0x5e);
        let mut c = daemon
            .connect(VGPU_A)?
            .with_remote_memory(IOVA_REMOTE, remote);
        let high = u64::from(c.bar2_read32(VRAM_SIZE_HI)?);
        let slice = high << 32 | u64::from(c.bar2_read32(VRAM_SIZE_LO)?);
        let vram = c.map_bar0()?;
        let mut memory = GuestMemory::new(GUEST_LEN)?;
        fill(memory.bytes_mut(), 0x9a);
        let expected = memory.bytes().to_vec();
        let maps = [
            (DmaMapRequest::read_write(IOVA_T, T_LEN), T_FILE),
            (DmaMapRequest::read_write(IOVA_P, LARGE_PAGE_SIZE), P_FILE),
            (DmaMapRequest::read_only(IOVA_RO, LARGE_PAGE_SIZE), RO_FILE),
            (DmaMapRequest::read_write(IOVA_HALVES, HALF), HALVES_FILE),
            (
                DmaMapRequest::read_write(IOVA_HALVES + HALF, HALF),
                HALVES_FILE + HALF,
            ),
        ];
        for (map, offset) in maps {
            c.dma_map(DmaMapRequest { offset, ..map }, Some(memory.as_fd()))?;
        }
        c.dma_map(DmaMapRequest::read_write(IOVA_REMOTE, REMOTE_LEN), None)?;
        let irq = eventfds(1 + c.bar2_read32(CHANNELS)? as usize)?;
        arm_fault_interrupt(&mut c, &irq)?;
        let guest = Guest { memory, expected };
        Ok(Rig {
            daemon,
            c,
            vram,
            guest,
            slice,
            irq,
            b,
        })
    }

    fn vram_tables(&mut self) -> anyhow::Result<PageTables> {
        PageTables::in_vram(&mut self.vram, VRAM_ARENA)
    }

    fn guest_tables(&mut self) -> anyhow::Result<PageTables> {
        PageTables::new(&mut self.guest, Target::System, GUEST_ARENA, T_FILE)
    }

    /// Translates `va` and accepts any of `allowed`. A fault must be
    /// reported: record, count, IRQ_STATUS.FAULT and vector 0.
    #[track_caller]
    fn either(
        &mut self,
        ch: u32,
        va: u64,
        write: bool,
        allowed: &[Translation],
    ) -> anyhow::Result<Translation> {
        self.c.acknowledge_faults()?;
        self.irq[0].take()?;
        let count = self.c.fault_record()?.count;
        let got = self.c.xlate(ch, va, write)?;
        assert!(
            allowed.contains(&got),
            "XLATE {va:#x} channel {ch} write {write}: {got:x?}, allowed {allowed:x?}"
        );
        let record = self.c.fault_record()?;
        if got.status == 0 {
            assert_eq!(record.count, count, "{va:#x}: a translation is no fault");
            return Ok(got);
        }
        let info = encode(ch, write, got.status);
        let count = count.wrapping_add(1);
        assert_eq!(
            record,
            FaultRecord { va, info, count },
            "{va:#x}: fault record"
        );
        let status = self.c.bar2_read32(IRQ_STATUS)?;
        assert_ne!(status & IRQ_FAULT, 0, "{va:#x}: IRQ_STATUS.FAULT");
        assert!(self.irq[0].wait(SIGNAL)? >= 1, "{va:#x}: vector 0");
        self.c.acknowledge_faults()?;
        Ok(got)
    }

    #[track_caller]
    fn fault(&mut self, ch: u32, va: u64, write: bool, reason: u32) -> anyhow::Result<()> {
        self.either(ch, va, write, &[Translation::fault(reason)])?;
        Ok(())
    }

    /// Faults with `reason` for reads and for writes.
    #[track_caller]
    fn faults(&mut self, ch: u32, va: u64, reason: u32) -> anyhow::Result<()> {
        self.fault(ch, va, false, reason)?;
        self.fault(ch, va, true, reason)
    }

    #[track_caller]
    fn ok_vram(&mut self, ch: u32, va: u64, write: bool, to: u64) -> anyhow::Result<()> {
        self.either(ch, va, write, &[Translation::ok(to, Target::Vram)])?;
        Ok(())
    }

    #[track_caller]
    fn ok_iova(&mut self, ch: u32, va: u64, write: bool, to: u64) -> anyhow::Result<()> {
        self.either(ch, va, write, &[Translation::ok(to, Target::System)])?;
        Ok(())
    }

    /// Checks a refused command's error record and clears it.
    #[track_caller]
    fn refused(&mut self, code: u32, written: u32) -> anyhow::Result<()> {
        assert_eq!(self.c.bar2_read32(ERROR_CODE)?, code, "ERROR_CODE");
        assert_eq!(self.c.bar2_read32(ERROR_INFO)?, written, "ERROR_INFO");
        let status = self.c.bar2_read32(IRQ_STATUS)?;
        assert_ne!(status & IRQ_ERROR, 0, "IRQ_STATUS.ERROR");
        assert_eq!(status & IRQ_FAULT, 0, "a refusal is no fault");
        self.c.bar2_write32(ERROR_CODE, 0)?;
        self.c.bar2_write32(IRQ_STATUS, IRQ_ERROR)?;
        Ok(())
    }

    /// Nothing outside A's slice and maps changed, and B still works.
    #[track_caller]
    fn finish(mut self) -> anyhow::Result<()> {
        assert_same(
            self.guest.memory.bytes(),
            &self.guest.expected,
            "guest memory",
        );
        if let Some(remote) = self.c.remote_memory() {
            assert_same(
                remote,
                &pattern(REMOTE_LEN as usize, 0x5e),
                "fd-less memory",
            );
        }
        assert_eq!(self.c.served().dma_writes, 0, "DMA_WRITE requests");
        self.b.check()?;
        assert!(self.daemon.is_running(), "the daemon is alive");
        Ok(())
    }
}

fn arm_fault_interrupt(c: &mut RawClient, irq: &[EventFd]) -> anyhow::Result<()> {
    let fds: Vec<BorrowedFd<'_>> = irq.iter().map(AsFd::as_fd).collect();
    c.assign_irq_eventfds(irq_index::MSIX, 0, fds.len() as u32, &fds)?;
    c.bar2_write32(IRQ_MASK, IRQ_FAULT)?;
    Ok(())
}

/// Maps `leaf` at `va` and returns (table, index, entry) of each level of
/// its path, root first.
fn path(
    tables: &mut PageTables,
    mem: &mut impl TableMemory,
    va: u64,
    leaf: Page,
) -> anyhow::Result<[(u64, usize, u64); 4]> {
    tables.map(mem, va, leaf)?;
    let mut out = [(0, 0, leaf.entry()); 4];
    for (slot, level) in out.iter_mut().zip(Level::ALL) {
        slot.0 = tables.table(mem, va, level)?;
        slot.1 = level.index(va);
        if let Some(below) = level.below() {
            let next = tables.table(mem, va, below)?;
            slot.2 = tables.pointer_to(next);
        }
    }
    Ok(out)
}

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
    assert!(r.c.dma_unmap(IOVA_P, HALF).is_err(), "a partial DMA_UNMAP");
    r.ok_iova(0, small, true, IOVA_P + 0x3000)?;
    r.c.dma_unmap(IOVA_P, LARGE_PAGE_SIZE)?;
    r.c.dma_unmap(IOVA_REMOTE, REMOTE_LEN)?;
    // One request over both halves and the unmapped bytes around them.
    r.c.dma_unmap(IOVA_HALVES - HALF, 4 * HALF)?;
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
        r.either(1, 0, false, &faults_of(&ANY_REASON))?;
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
