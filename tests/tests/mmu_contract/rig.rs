//! What every module of these tests shares: the prelude of imports (each
//! module takes everything here with one glob), the VA and entry helpers,
//! and the rigs: [`plain`] (a daemon and a client of vGPU A) and [`rig`]
//! (that plus guest memory holding a tree of tables).

pub(crate) use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
pub(crate) use vgpud_tests::device::DmaJob;
pub(crate) use vgpud_tests::host::{EventFd, eventfds, pattern};
pub(crate) use vgpud_tests::page_tables::{
    ENTRIES, LARGE_PAGE_SIZE, Level, PAGE_SIZE, Page, PageTables, TableMemory, Target, Translation,
    pte,
};
pub(crate) use vgpud_tests::regs::bar2::{
    CHANNELS, DMA_COUNT, DMA_FROM_VRAM, DMA_TO_VRAM, ERROR_CODE, ERROR_INFO, FAULT_INFO,
    INV_CONTROL, IRQ_ERROR, IRQ_FAULT, IRQ_MASK, IRQ_STATUS, SELFTEST, VRAM_SIZE_LO, XLATE_CONTROL,
    XLATE_WRITE,
};
pub(crate) use vgpud_tests::regs::config::COMMAND;
pub(crate) use vgpud_tests::regs::error_code::{BAD_CHANNEL, DMA_FAILED, DMA_NOT_MAPPED};
pub(crate) use vgpud_tests::regs::fault_info::{
    self, INVALID_ENTRY, NOT_MAPPED, NOT_PRESENT, OUTSIDE_VRAM, READ_ONLY, WALK_LIMIT,
};
pub(crate) use vgpud_tests::regs::region::BAR0;
pub(crate) use vgpud_tests::wire::irq_index;
pub(crate) use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A};

/// Guest memory for tables, DMA-mapped read-write from file offset 0.
pub(crate) const TABLES_IOVA: u64 = 0x10_0000_0000;
/// An offset inside a page that shows in a translation.
pub(crate) const OFF: u64 = 0x9ab;
/// The standard profile's 16 MiB slice gives the smallest page budget.
pub(crate) const PAGE_BUDGET: u64 = 1 << 18;

/// The command register's bus-master bit.
pub(crate) const BUS_MASTER: u16 = 1 << 2;

/// A VA from its four table indexes.
pub(crate) const fn va(l4: u64, l3: u64, l2: u64, l1: u64) -> u64 {
    (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12)
}

/// A daemon and a client of vGPU A, with guest memory for a tree of
/// tables ([`rig`]).
pub(crate) struct Rig {
    pub(crate) _daemon: TestDaemon,
    pub(crate) c: RawClient,
    pub(crate) guest: GuestMemory,
    pub(crate) tables: PageTables,
}

/// A daemon, vGPU A, and `table_count` tables' worth of guest memory
/// mapped at [`TABLES_IOVA`], with an empty root table at its start.
pub(crate) fn rig(table_count: u64) -> anyhow::Result<Rig> {
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
    pub(crate) fn assert_xlate(
        &mut self,
        channel: u32,
        va: u64,
        expected: Translation,
    ) -> anyhow::Result<()> {
        let got = self.c.xlate(channel, va, false)?;
        assert_eq!(got, expected, "channel {channel}, VA {va:#x}");
        Ok(())
    }

    #[track_caller]
    pub(crate) fn assert_vram(&mut self, channel: u32, va: u64, page: u64) -> anyhow::Result<()> {
        self.assert_xlate(channel, va + OFF, Translation::ok(page + OFF, Target::Vram))
    }

    #[track_caller]
    pub(crate) fn assert_fault(
        &mut self,
        channel: u32,
        va: u64,
        reason: u32,
    ) -> anyhow::Result<()> {
        self.assert_xlate(channel, va + OFF, Translation::fault(reason))
    }
}

/// Tables in VRAM from 8 MiB into the slice, written with REGION_WRITE.
pub(crate) const VRAM_ARENA: std::ops::Range<u64> = 0x80_0000..0x84_0000;

/// A daemon and a client of vGPU A with nothing mapped yet.
pub(crate) fn plain() -> anyhow::Result<(TestDaemon, RawClient)> {
    let daemon = TestDaemon::standard()?;
    let c = daemon.connect(VGPU_A)?;
    Ok((daemon, c))
}

/// A memfd of `len` bytes DMA-mapped read-write at `iova`.
pub(crate) fn map_memory(c: &mut RawClient, iova: u64, len: u64) -> anyhow::Result<GuestMemory> {
    let memory = GuestMemory::new(usize::try_from(len)?)?;
    c.dma_map(DmaMapRequest::read_write(iova, len), Some(memory.as_fd()))?;
    Ok(memory)
}

/// A VALID, WRITABLE entry naming the VRAM table at `table`.
pub(crate) const fn vram_pointer(table: u64) -> u64 {
    table | pte::VALID | pte::WRITABLE
}

/// A VALID, WRITABLE entry naming the table at IOVA `table`.
pub(crate) const fn system_pointer(table: u64) -> u64 {
    vram_pointer(table) | pte::SYSTEM
}

/// Writes `entries` (index, value) into one page of `memory` at `at`.
pub(crate) fn put_entries(memory: &mut [u8], at: usize, entries: &[(usize, u64)]) {
    for &(index, entry) in entries {
        let slot = at + 8 * index;
        memory[slot..slot + 8].copy_from_slice(&entry.to_le_bytes());
    }
}
