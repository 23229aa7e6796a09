//! Guest GPU page tables as `docs/device-interface.md` ("The GPU MMU")
//! describes them, written from the document and not from the
//! `shadow-mmu` crate, so that a misreading there cannot hide here.
//!
//! Four levels of 4 KiB tables of 512 little-endian 64-bit entries, indexed
//! by VA bits 47:39 (level 4), 38:30, 29:21 and 20:12 (level 1):
//!
//! ```text
//!  63        52 51                                12 11     4  3   2   1   0
//! +------------+------------------------------------+--------+---+---+---+---+
//! |  reserved  |   address bits 51:12               |reserved| L | S | W | V |
//! +------------+------------------------------------+--------+---+---+---+---+
//! ```
//!
//! [`PageTables`] allocates tables from an arena in VRAM or in guest memory
//! and writes them through a [`TableMemory`] (BAR0 `REGION_WRITE`, the BAR0
//! mmap, or a memfd); attack tests overwrite single entries with
//! [`PageTables::set_entry`]. The `RawClient` methods at the end drive the
//! MMU registers: roots, invalidation, the translate port, fault records.

use std::collections::HashMap;
use std::ops::Range;

use anyhow::{Context, bail, ensure};

use crate::client::{ClientError, RawClient};
use crate::device::MappedBar0;
use crate::host::GuestMemory;
use crate::regs::bar2::{
    FAULT_COUNT, FAULT_INFO, FAULT_VA_HI, FAULT_VA_LO, INV_ALL, INV_CONTROL, INV_RANGE,
    INV_SIZE_HI, INV_SIZE_LO, INV_VA_HI, INV_VA_LO, IRQ_FAULT, IRQ_STATUS, XLATE_CONTROL,
    XLATE_RESULT_HI, XLATE_RESULT_LO, XLATE_STATUS, XLATE_TARGET, XLATE_VA_HI, XLATE_VA_LO,
    XLATE_WRITE, pt_root_hi, pt_root_lo,
};
use crate::regs::region;

/// Bytes in a page and in a table.
pub const PAGE_SIZE: u64 = 4096;
/// Bytes in a large (level-2) page.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
/// Entries in a table.
pub const ENTRIES: usize = 512;
/// Width of a GPU virtual address.
pub const VA_BITS: u32 = 48;

/// Page-table entry bits.
pub mod pte {
    /// The entry is present.
    pub const VALID: u64 = 1 << 0;
    /// Writes allowed (only if every entry on the path allows them).
    pub const WRITABLE: u64 = 1 << 1;
    /// The address is an IOVA; clear, an offset in the VRAM slice.
    pub const SYSTEM: u64 = 1 << 2;
    /// Level 2 only: a 2 MiB page.
    pub const LARGE: u64 = 1 << 3;
    /// Address bits 51:12.
    pub const ADDRESS_MASK: u64 = ((1 << 52) - 1) & !0xfff;
    /// Reserved bits 11:4.
    pub const RESERVED_LOW: u64 = 0xff0;
    /// Reserved bits 63:52.
    pub const RESERVED_HIGH: u64 = !((1 << 52) - 1);
}

/// Where a page or a table lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// An offset in the vGPU's VRAM slice.
    Vram,
    /// A guest physical address (an IOVA of the DMA maps).
    System,
}

impl Target {
    /// The entry's SYSTEM bit for this target.
    pub const fn flag(self) -> u64 {
        match self {
            Target::Vram => 0,
            Target::System => pte::SYSTEM,
        }
    }

    /// The XLATE_TARGET value of a translation to this target.
    pub const fn xlate_target(self) -> u32 {
        match self {
            Target::Vram => 0,
            Target::System => 1,
        }
    }
}

/// A table level; level 4 is the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The root, indexed by VA bits 47:39.
    L4,
    /// Indexed by VA bits 38:30.
    L3,
    /// Indexed by VA bits 29:21; may map 2 MiB pages.
    L2,
    /// Indexed by VA bits 20:12; maps 4 KiB pages.
    L1,
}

impl Level {
    /// From the root down.
    pub const ALL: [Level; 4] = [Level::L4, Level::L3, Level::L2, Level::L1];

    /// The lowest VA bit of this level's index.
    pub const fn shift(self) -> u32 {
        match self {
            Level::L4 => 39,
            Level::L3 => 30,
            Level::L2 => 21,
            Level::L1 => 12,
        }
    }

    /// The index of `va`'s entry in a table of this level.
    pub const fn index(self, va: u64) -> usize {
        ((va >> self.shift()) & (ENTRIES as u64 - 1)) as usize
    }

    /// The level of the tables this level's entries point to.
    pub const fn below(self) -> Option<Level> {
        match self {
            Level::L4 => Some(Level::L3),
            Level::L3 => Some(Level::L2),
            Level::L2 => Some(Level::L1),
            Level::L1 => None,
        }
    }
}

/// A leaf: what a VA maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// VRAM offset or IOVA of the page (address bits 51:12 of the entry).
    pub addr: u64,
    /// Which address space `addr` is in.
    pub target: Target,
    /// The leaf's WRITABLE bit.
    pub writable: bool,
    /// A 2 MiB page, mapped at level 2.
    pub large: bool,
}

impl Page {
    /// A writable 4 KiB page at VRAM offset `addr`.
    pub const fn vram(addr: u64) -> Self {
        Page {
            addr,
            target: Target::Vram,
            writable: true,
            large: false,
        }
    }

    /// A writable 4 KiB page at IOVA `addr`.
    pub const fn system(addr: u64) -> Self {
        Page {
            addr,
            target: Target::System,
            writable: true,
            large: false,
        }
    }

    /// The same page without WRITABLE.
    pub const fn read_only(self) -> Self {
        Page {
            writable: false,
            ..self
        }
    }

    /// The same address as a 2 MiB page.
    pub const fn large(self) -> Self {
        Page {
            large: true,
            ..self
        }
    }

    /// Bytes the page covers.
    pub const fn size(&self) -> u64 {
        if self.large {
            LARGE_PAGE_SIZE
        } else {
            PAGE_SIZE
        }
    }

    /// The leaf entry. The address is not masked, so that a test can put
    /// any bits it likes into an entry.
    pub const fn entry(&self) -> u64 {
        let mut entry = self.addr | pte::VALID | self.target.flag();
        if self.writable {
            entry |= pte::WRITABLE;
        }
        if self.large {
            entry |= pte::LARGE;
        }
        entry
    }
}

/// Memory that tables are written to, addressed as that memory sees it (a
/// VRAM offset, or an offset in a memfd).
pub trait TableMemory {
    /// Writes `bytes` at `addr`.
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> anyhow::Result<()>;
}

/// VRAM through BAR0 `REGION_WRITE`.
impl TableMemory for RawClient {
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> anyhow::Result<()> {
        self.region_write(region::BAR0, addr, bytes)
            .with_context(|| format!("REGION_WRITE of BAR0 at {addr:#x}"))
    }
}

/// VRAM through the BAR0 mmap.
impl TableMemory for MappedBar0 {
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> anyhow::Result<()> {
        write_into(&mut self.map, addr, bytes, "BAR0 mmap")
    }
}

/// Guest memory; the address is the memfd offset.
impl TableMemory for GuestMemory {
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> anyhow::Result<()> {
        write_into(self.bytes_mut(), addr, bytes, "guest memory")
    }
}

fn write_into(memory: &mut [u8], addr: u64, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    let start = usize::try_from(addr)?;
    let Some(slot) = start
        .checked_add(bytes.len())
        .and_then(|end| memory.get_mut(start..end))
    else {
        bail!(
            "{} bytes at {addr:#x} do not fit in {what} of {} bytes",
            bytes.len(),
            memory.len()
        );
    };
    slot.copy_from_slice(bytes);
    Ok(())
}

/// A guest page-table tree whose tables come from one arena.
///
/// Addresses of tables are GPU addresses (VRAM offsets or IOVAs, per
/// [`PageTables::target`]); the arena starts at `memory_base` in the
/// [`TableMemory`] the methods are given. Intermediate entries are VALID
/// and WRITABLE.
#[derive(Debug)]
pub struct PageTables {
    target: Target,
    arena: Range<u64>,
    memory_base: u64,
    next_free: u64,
    root: u64,
    /// (table, index) → the table this builder linked there.
    children: HashMap<(u64, usize), u64>,
}

impl PageTables {
    /// An empty root table at the start of `arena` (GPU addresses, 4 KiB
    /// aligned), which is at `memory_base` in `memory`.
    pub fn new(
        memory: &mut impl TableMemory,
        target: Target,
        arena: Range<u64>,
        memory_base: u64,
    ) -> anyhow::Result<Self> {
        ensure!(
            arena.start.is_multiple_of(PAGE_SIZE) && arena.end >= arena.start + PAGE_SIZE,
            "arena {arena:#x?} is not an aligned range of at least one table"
        );
        let mut tables = PageTables {
            target,
            next_free: arena.start,
            arena,
            memory_base,
            root: 0,
            children: HashMap::new(),
        };
        tables.root = tables.new_table(memory)?;
        Ok(tables)
    }

    /// Tables in VRAM at the offsets `arena`.
    pub fn in_vram(memory: &mut impl TableMemory, arena: Range<u64>) -> anyhow::Result<Self> {
        let base = arena.start;
        Self::new(memory, Target::Vram, arena, base)
    }

    /// Tables in guest memory at the IOVAs `arena`, which a DMA map puts
    /// at memfd offset `file_offset`.
    pub fn in_guest(
        memory: &mut GuestMemory,
        arena: Range<u64>,
        file_offset: u64,
    ) -> anyhow::Result<Self> {
        Self::new(memory, Target::System, arena, file_offset)
    }

    /// Where the tables live.
    pub fn target(&self) -> Target {
        self.target
    }

    /// GPU address of the root (level-4) table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The PT_ROOT value for this tree.
    pub fn root_entry(&self) -> u64 {
        self.pointer_to(self.root)
    }

    /// A VALID, WRITABLE entry pointing at `table` in this tree's memory.
    pub fn pointer_to(&self, table: u64) -> u64 {
        table | pte::VALID | pte::WRITABLE | self.target.flag()
    }

    /// Allocates a zeroed table that nothing points to yet.
    pub fn new_table(&mut self, memory: &mut impl TableMemory) -> anyhow::Result<u64> {
        let table = self.next_free;
        ensure!(
            table + PAGE_SIZE <= self.arena.end,
            "page-table arena {:#x?} is full",
            self.arena
        );
        self.next_free += PAGE_SIZE;
        memory.write_bytes(self.memory_addr(table)?, &[0; PAGE_SIZE as usize])?;
        Ok(table)
    }

    /// The table of `level` on `va`'s path, created (and linked) if needed.
    pub fn table(
        &mut self,
        memory: &mut impl TableMemory,
        va: u64,
        level: Level,
    ) -> anyhow::Result<u64> {
        let mut table = self.root;
        let mut current = Level::L4;
        while current != level {
            let index = current.index(va);
            table = match self.children.get(&(table, index)) {
                Some(&child) => child,
                None => {
                    let child = self.new_table(memory)?;
                    self.set_entry(memory, table, index, self.pointer_to(child))?;
                    self.children.insert((table, index), child);
                    child
                }
            };
            current = current
                .below()
                .context("walked below level 1 without meeting the level")?;
        }
        Ok(table)
    }

    /// Maps `page` at `va` (a 4 KiB page at level 1, a large one at level 2).
    pub fn map(
        &mut self,
        memory: &mut impl TableMemory,
        va: u64,
        page: Page,
    ) -> anyhow::Result<()> {
        let level = if page.large { Level::L2 } else { Level::L1 };
        self.set_entry_on_path(memory, va, level, page.entry())
    }

    /// Writes `entry` into `va`'s slot of the `level` table on its path
    /// (creating the tables above it).
    pub fn set_entry_on_path(
        &mut self,
        memory: &mut impl TableMemory,
        va: u64,
        level: Level,
        entry: u64,
    ) -> anyhow::Result<()> {
        let table = self.table(memory, va, level)?;
        self.set_entry(memory, table, level.index(va), entry)
    }

    /// Writes `entry` at `index` of `table`. The builder forgets any table
    /// it had linked there, so a later [`PageTables::table`] through that
    /// slot makes a new one.
    pub fn set_entry(
        &mut self,
        memory: &mut impl TableMemory,
        table: u64,
        index: usize,
        entry: u64,
    ) -> anyhow::Result<()> {
        ensure!(index < ENTRIES, "entry index {index}");
        self.children.remove(&(table, index));
        let addr = self.memory_addr(table)? + 8 * index as u64;
        memory.write_bytes(addr, &entry.to_le_bytes())
    }

    /// Replaces all 512 entries of `table` in one write.
    pub fn fill_table(
        &mut self,
        memory: &mut impl TableMemory,
        table: u64,
        entries: &[u64; ENTRIES],
    ) -> anyhow::Result<()> {
        self.children.retain(|&(parent, _), _| parent != table);
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        memory.write_bytes(self.memory_addr(table)?, &bytes)
    }

    fn memory_addr(&self, table: u64) -> anyhow::Result<u64> {
        ensure!(
            self.arena.contains(&table) && table.is_multiple_of(PAGE_SIZE),
            "{table:#x} is not a table of the arena {:#x?}",
            self.arena
        );
        Ok(self.memory_base + (table - self.arena.start))
    }
}

/// One answer of the translate port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// XLATE_STATUS: 0, or the fault reason.
    pub status: u32,
    /// XLATE_RESULT.
    pub address: u64,
    /// XLATE_TARGET.
    pub target: u32,
}

impl Translation {
    /// A successful translation to `address` in `target`.
    pub const fn ok(address: u64, target: Target) -> Self {
        Translation {
            status: 0,
            address,
            target: target.xlate_target(),
        }
    }

    /// A fault: the result registers read 0.
    pub const fn fault(reason: u32) -> Self {
        Translation {
            status: reason,
            address: 0,
            target: 0,
        }
    }
}

/// FAULT_VA, FAULT_INFO and FAULT_COUNT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// FAULT_VA.
    pub va: u64,
    /// FAULT_INFO (see `regs::fault_info`).
    pub info: u32,
    /// FAULT_COUNT.
    pub count: u32,
}

impl RawClient {
    /// Writes `entry` to `channel`'s PT_ROOT, low half first (the high
    /// half commits).
    pub fn set_pt_root(&mut self, channel: u32, entry: u64) -> Result<(), ClientError> {
        self.bar2_write32(pt_root_lo(channel), entry as u32)?;
        self.bar2_write32(pt_root_hi(channel), (entry >> 32) as u32)
    }

    /// Reads `channel`'s PT_ROOT.
    pub fn pt_root(&mut self, channel: u32) -> Result<u64, ClientError> {
        let low = self.bar2_read32(pt_root_lo(channel))?;
        let high = self.bar2_read32(pt_root_hi(channel))?;
        Ok(u64::from(high) << 32 | u64::from(low))
    }

    /// Translates `va` through `channel` with the translate port.
    pub fn xlate(
        &mut self,
        channel: u32,
        va: u64,
        write: bool,
    ) -> Result<Translation, ClientError> {
        self.bar2_write32(XLATE_VA_LO, va as u32)?;
        self.bar2_write32(XLATE_VA_HI, (va >> 32) as u32)?;
        let access = if write { XLATE_WRITE } else { 0 };
        self.bar2_write32(XLATE_CONTROL, channel | access)?;
        let status = self.bar2_read32(XLATE_STATUS)?;
        let low = self.bar2_read32(XLATE_RESULT_LO)?;
        let high = self.bar2_read32(XLATE_RESULT_HI)?;
        let target = self.bar2_read32(XLATE_TARGET)?;
        Ok(Translation {
            status,
            address: u64::from(high) << 32 | u64::from(low),
            target,
        })
    }

    /// Programs INV_VA and INV_SIZE and writes `control` to INV_CONTROL.
    pub fn invalidate(&mut self, control: u32, va: u64, size: u64) -> Result<(), ClientError> {
        self.bar2_write32(INV_VA_LO, va as u32)?;
        self.bar2_write32(INV_VA_HI, (va >> 32) as u32)?;
        self.bar2_write32(INV_SIZE_LO, size as u32)?;
        self.bar2_write32(INV_SIZE_HI, (size >> 32) as u32)?;
        self.bar2_write32(INV_CONTROL, control)
    }

    /// Invalidates `channel`'s translations of `va .. va + size`.
    pub fn invalidate_range(
        &mut self,
        channel: u32,
        va: u64,
        size: u64,
    ) -> Result<(), ClientError> {
        self.invalidate(channel | INV_RANGE, va, size)
    }

    /// Invalidates all of `channel`'s translations.
    pub fn invalidate_all(&mut self, channel: u32) -> Result<(), ClientError> {
        self.bar2_write32(INV_CONTROL, channel | INV_ALL)
    }

    /// Reads the fault record.
    pub fn fault_record(&mut self) -> Result<FaultRecord, ClientError> {
        let low = self.bar2_read32(FAULT_VA_LO)?;
        let high = self.bar2_read32(FAULT_VA_HI)?;
        Ok(FaultRecord {
            va: u64::from(high) << 32 | u64::from(low),
            info: self.bar2_read32(FAULT_INFO)?,
            count: self.bar2_read32(FAULT_COUNT)?,
        })
    }

    /// Acknowledges faults as a driver does: a write to FAULT_COUNT, then
    /// IRQ_STATUS.FAULT cleared.
    pub fn acknowledge_faults(&mut self) -> Result<(), ClientError> {
        self.bar2_write32(FAULT_COUNT, 0)?;
        self.bar2_write32(IRQ_STATUS, IRQ_FAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOVA: u64 = 0x1_0000_0000;

    fn entry_at(memory: &GuestMemory, offset: u64) -> u64 {
        let at = offset as usize;
        u64::from_le_bytes(memory.bytes()[at..at + 8].try_into().unwrap())
    }

    /// Walks the tables in `memory` by hand, as the document describes.
    fn walk(memory: &GuestMemory, root_entry: u64, va: u64) -> u64 {
        let mut entry = root_entry;
        for level in Level::ALL {
            let table = entry & pte::ADDRESS_MASK;
            entry = entry_at(memory, table - IOVA + 8 * level.index(va) as u64);
            if entry & pte::LARGE != 0 {
                break;
            }
        }
        entry
    }

    #[test]
    fn level_indexes_take_nine_va_bits_each() {
        let va = (3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0xabc;
        let indexes = Level::ALL.map(|level| level.index(va));
        assert_eq!(indexes, [3, 5, 7, 9]);
        assert_eq!(Level::L4.index(1 << 48), 0, "bits above 47 are no index");
    }

    #[test]
    fn page_entries_carry_the_documented_bits() {
        assert_eq!(Page::vram(0x5000).entry(), 0x5003);
        assert_eq!(Page::system(0x5000).read_only().entry(), 0x5005);
        assert_eq!(Page::vram(0x20_0000).large().entry(), 0x20_000b);
    }

    #[test]
    fn mapped_pages_are_found_by_a_walk_of_guest_memory() -> anyhow::Result<()> {
        let mut memory = GuestMemory::new(64 << 10)?;
        let mut tables = PageTables::in_guest(&mut memory, IOVA..IOVA + (64 << 10), 0)?;
        let small = 0x1234_5678_9000;
        let large = 0x7f00_0040_0000;
        tables.map(&mut memory, small, Page::vram(0x3000))?;
        tables.map(&mut memory, large, Page::system(IOVA).large())?;
        assert_eq!(tables.root_entry(), IOVA | 0x7);
        assert_eq!(walk(&memory, tables.root_entry(), small), 0x3003);
        assert_eq!(walk(&memory, tables.root_entry(), large), IOVA | 0xf);
        assert_eq!(walk(&memory, tables.root_entry(), small + 0x1000), 0);
        Ok(())
    }

    #[test]
    fn a_full_arena_is_an_error() -> anyhow::Result<()> {
        let mut memory = GuestMemory::new(8 << 10)?;
        let mut tables = PageTables::in_guest(&mut memory, IOVA..IOVA + (8 << 10), 0)?;
        assert!(tables.map(&mut memory, 0, Page::vram(0)).is_err());
        Ok(())
    }
}
