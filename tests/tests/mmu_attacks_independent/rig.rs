//! The rig every attack runs on: a daemon with vGPU A under attack and
//! vGPU B as a witness, guest memory mirrored byte for byte, and helpers
//! that check a translation, its fault report and that nothing changed.
//! The attack modules take everything here, imports included, with one
//! glob, as a prelude.

pub(crate) use std::ops::Range;
pub(crate) use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use vgpud_tests::config::{DaemonConfig, GpuSpec, ProfileSpec, VgpuSpec};
pub(crate) use vgpud_tests::device::MappedBar0;
pub(crate) use vgpud_tests::host::{EventFd, eventfds, pattern};
pub(crate) use vgpud_tests::page_tables::{
    ENTRIES, FaultRecord, LARGE_PAGE_SIZE, Level, PAGE_SIZE, Page, PageTables, TableMemory, Target,
    Translation, pte,
};
pub(crate) use vgpud_tests::regs::bar2::{
    CHANNELS, ERROR_CODE, ERROR_INFO, INV_ALL, INV_RANGE, IRQ_ERROR, IRQ_FAULT, IRQ_MASK,
    IRQ_STATUS, MMU_CHANNEL_STRIDE, VRAM_SIZE_HI, VRAM_SIZE_LO, XLATE_CONTROL, XLATE_VA_HI,
    XLATE_VA_LO, XLATE_WRITE, pt_root_hi, pt_root_lo,
};
pub(crate) use vgpud_tests::regs::error_code::{BAD_CHANNEL, BAD_RANGE};
pub(crate) use vgpud_tests::regs::fault_info::{
    ALL_REASONS, INVALID_ENTRY, NOT_MAPPED, NOT_PRESENT, OUTSIDE_VRAM, READ_ONLY, WALK_LIMIT,
    encode,
};
pub(crate) use vgpud_tests::regs::region::BAR2;
pub(crate) use vgpud_tests::wire::irq_index;
pub(crate) use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A, VGPU_B};

/// Guest memfd layout (file offset → IOVA), with unmapped guard bytes
/// between the maps: `[0, 64 KiB)`, `[576 KiB, 2 MiB)` and the last 64 KiB.
pub(crate) const GUEST_LEN: usize = (8 << 20) + (64 << 10);
/// Read-write, 512 KiB: tables (the first half) and pages.
pub(crate) const IOVA_T: u64 = 0x1_0000_0000;
pub(crate) const T_LEN: u64 = 512 << 10;
pub(crate) const T_FILE: u64 = 64 << 10;
/// Read-write, 2 MiB, 2 MiB aligned: room for one large system page.
pub(crate) const IOVA_P: u64 = 0x2_0000_0000;
pub(crate) const P_FILE: u64 = 2 << 20;
/// Read-only, 2 MiB, 2 MiB aligned.
pub(crate) const IOVA_RO: u64 = 0x3_0000_0000;
pub(crate) const RO_FILE: u64 = 4 << 20;
/// Two adjacent read-write 1 MiB maps of contiguous file bytes.
pub(crate) const IOVA_HALVES: u64 = 0x4_0000_0000;
pub(crate) const HALF: u64 = 1 << 20;
pub(crate) const HALVES_FILE: u64 = 6 << 20;
/// Read-write, served by the client without an fd.
pub(crate) const IOVA_REMOTE: u64 = 0x5_0000_0000;
pub(crate) const REMOTE_LEN: u64 = 64 << 10;

pub(crate) const GUEST_ARENA: Range<u64> = IOVA_T..IOVA_T + (256 << 10);
/// Tables in VRAM; inside even a 1 MiB slice.
pub(crate) const VRAM_ARENA: Range<u64> = 0x8_0000..0xc_0000;
pub(crate) const B_ARENA: Range<u64> = 0xc_0000..0xd_0000;
/// vGPU B's own translation, checked at the end of every attack.
pub(crate) const B_VA: u64 = 0x7f_0000_5000;
pub(crate) const B_PAGE: u64 = 0x1_3000;

/// The highest page address an entry can name (address bits 51:12).
pub(crate) const TOP: u64 = pte::ADDRESS_MASK;
pub(crate) const OFF: u64 = 0xabc;
pub(crate) const SIGNAL: Duration = Duration::from_secs(2);
pub(crate) const FLIP_ROUNDS: usize = 1000;

/// A VA from its four table indexes.
pub(crate) const fn va(l4: u64, l3: u64, l2: u64, l1: u64) -> u64 {
    (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12)
}

pub(crate) const fn vram_ptr(addr: u64) -> u64 {
    addr | pte::VALID | pte::WRITABLE
}

pub(crate) const fn sys_ptr(addr: u64) -> u64 {
    vram_ptr(addr) | pte::SYSTEM
}

pub(crate) fn faults_of(reasons: &[u32]) -> Vec<Translation> {
    reasons
        .iter()
        .map(|&reason| Translation::fault(reason))
        .collect()
}

/// A position-dependent fill that differs in every page.
pub(crate) fn fill(bytes: &mut [u8], seed: u8) {
    let tile = pattern(PAGE_SIZE as usize, seed);
    for (page, chunk) in bytes.chunks_mut(PAGE_SIZE as usize).enumerate() {
        chunk.copy_from_slice(&tile[..chunk.len()]);
        chunk[..2].copy_from_slice(&(page as u16).to_le_bytes());
    }
}

#[track_caller]
pub(crate) fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let at = actual.iter().zip(expected).position(|(a, e)| a != e);
        panic!("{what} changed (first differing byte at {at:?})");
    }
}

/// Guest memory and a mirror of every byte the test wrote to it.
pub(crate) struct Guest {
    pub(crate) memory: GuestMemory,
    pub(crate) expected: Vec<u8>,
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
pub(crate) struct Witness {
    pub(crate) c: RawClient,
    pub(crate) vram: MappedBar0,
    pub(crate) snapshot: Vec<u8>,
}

impl Witness {
    pub(crate) fn new(daemon: &TestDaemon) -> anyhow::Result<Self> {
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
    pub(crate) fn check(&mut self) -> anyhow::Result<()> {
        let expected = Translation::ok(B_PAGE + OFF, Target::Vram);
        assert_eq!(self.c.xlate(0, B_VA + OFF, true)?, expected, "vGPU B");
        assert_eq!(self.c.fault_record()?.count, 0, "vGPU B's FAULT_COUNT");
        assert_same(&self.vram.map, &self.snapshot, "vGPU B's VRAM slice");
        Ok(())
    }
}

pub(crate) struct Rig {
    pub(crate) daemon: TestDaemon,
    pub(crate) c: RawClient,
    pub(crate) vram: MappedBar0,
    pub(crate) guest: Guest,
    pub(crate) slice: u64,
    pub(crate) irq: Vec<EventFd>,
    pub(crate) b: Witness,
}

pub(crate) fn standard() -> anyhow::Result<Rig> {
    Rig::start(&DaemonConfig::standard())
}

/// Two vGPUs with 1 MiB slices, so that a 2 MiB page at offset 0 runs
/// past the end of A's slice into whatever follows it on the GPU.
pub(crate) fn one_mib_slices() -> anyhow::Result<Rig> {
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
            scheduler: None,
            time_slice_ms: None,
        }],
        profiles: vec![ProfileSpec {
            name: "tiny".into(),
            framebuffer: "1MiB".into(),
            max_instances: 4,
            channels: 4,
            max_resolution: (320, 200),
            subsystem: None,
            weight: None,
        }],
        vgpus: vec![vgpu(VGPU_A), vgpu(VGPU_B)],
        top_level: Vec::new(),
    })
}

impl Rig {
    pub(crate) fn start(config: &DaemonConfig) -> anyhow::Result<Self> {
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

    pub(crate) fn vram_tables(&mut self) -> anyhow::Result<PageTables> {
        PageTables::in_vram(&mut self.vram, VRAM_ARENA)
    }

    pub(crate) fn guest_tables(&mut self) -> anyhow::Result<PageTables> {
        PageTables::new(&mut self.guest, Target::System, GUEST_ARENA, T_FILE)
    }

    /// Translates `va` and accepts any of `allowed`. A fault must be
    /// reported: record, count, IRQ_STATUS.FAULT and vector 0.
    #[track_caller]
    pub(crate) fn either(
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
    pub(crate) fn fault(
        &mut self,
        ch: u32,
        va: u64,
        write: bool,
        reason: u32,
    ) -> anyhow::Result<()> {
        self.either(ch, va, write, &[Translation::fault(reason)])?;
        Ok(())
    }

    /// Faults with `reason` for reads and for writes.
    #[track_caller]
    pub(crate) fn faults(&mut self, ch: u32, va: u64, reason: u32) -> anyhow::Result<()> {
        self.fault(ch, va, false, reason)?;
        self.fault(ch, va, true, reason)
    }

    #[track_caller]
    pub(crate) fn ok_vram(&mut self, ch: u32, va: u64, write: bool, to: u64) -> anyhow::Result<()> {
        self.either(ch, va, write, &[Translation::ok(to, Target::Vram)])?;
        Ok(())
    }

    #[track_caller]
    pub(crate) fn ok_iova(&mut self, ch: u32, va: u64, write: bool, to: u64) -> anyhow::Result<()> {
        self.either(ch, va, write, &[Translation::ok(to, Target::System)])?;
        Ok(())
    }

    /// Checks a refused command's error record and clears it.
    #[track_caller]
    pub(crate) fn refused(&mut self, code: u32, written: u32) -> anyhow::Result<()> {
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
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
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

pub(crate) fn arm_fault_interrupt(c: &mut RawClient, irq: &[EventFd]) -> anyhow::Result<()> {
    let fds: Vec<BorrowedFd<'_>> = irq.iter().map(AsFd::as_fd).collect();
    c.assign_irq_eventfds(irq_index::MSIX, 0, fds.len() as u32, &fds)?;
    c.bar2_write32(IRQ_MASK, IRQ_FAULT)?;
    Ok(())
}

/// Maps `leaf` at `va` and returns (table, index, entry) of each level of
/// its path, root first.
pub(crate) fn path(
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
