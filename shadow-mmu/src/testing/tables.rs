//! [`TableBuilder`]: guest page tables laid out in two [`FlatMemory`]s, one
//! standing for the VRAM slice and one for guest memory.

use crate::addr::{GpuVa, Iova, PageSize, VramOffset};
use crate::entry::{GuestPte, Level, PTE_SYSTEM, PTE_VALID, TABLE_BYTES};
use crate::memory::PageTableMemory;
use crate::pte::{Permissions, PteTarget};

use super::FlatMemory;

/// Where new tables go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableSpace {
    /// In the VRAM slice.
    Vram,
    /// In guest memory.
    System,
}

/// Guest page tables under construction. Tables are allocated upward from
/// a start address in each space; the caller keeps those areas inside the
/// allowed set when it wants valid tables.
///
/// Methods panic when a table does not fit its memory: set-up only.
#[derive(Debug)]
pub struct TableBuilder {
    /// The VRAM slice.
    pub vram: FlatMemory,
    /// Guest memory.
    pub system: FlatMemory,
    next_vram: u64,
    next_system: u64,
    root: PteTarget,
}

impl TableBuilder {
    /// Empty tables: the level-4 table is allocated in `root_space`.
    pub fn new(
        vram: FlatMemory,
        vram_tables_at: u64,
        system: FlatMemory,
        system_tables_at: u64,
        root_space: TableSpace,
    ) -> Self {
        let mut builder = Self {
            vram,
            system,
            next_vram: vram_tables_at,
            next_system: system_tables_at,
            root: PteTarget::Vram(VramOffset(0)),
        };
        builder.root = builder.allocate(root_space);
        builder
    }

    /// The raw `PT_ROOT` value naming the level-4 table.
    pub fn root(&self) -> u64 {
        match self.root {
            PteTarget::Vram(offset) => offset.0 | PTE_VALID,
            PteTarget::System(iova) => iova.0 | PTE_SYSTEM | PTE_VALID,
        }
    }

    /// The level-4 table.
    pub fn root_table(&self) -> PteTarget {
        self.root
    }

    /// Both memories, as the walker reads them.
    pub fn memory(&self) -> PageTableMemory<'_, FlatMemory, FlatMemory> {
        PageTableMemory::new(&self.system, &self.vram)
    }

    /// A new zeroed table in `space`.
    pub fn allocate(&mut self, space: TableSpace) -> PteTarget {
        let (memory, next) = match space {
            TableSpace::Vram => (&mut self.vram, &mut self.next_vram),
            TableSpace::System => (&mut self.system, &mut self.next_system),
        };
        let table = *next;
        *next += TABLE_BYTES as u64;
        for index in 0..TABLE_BYTES as u64 / 8 {
            assert!(memory.write_u64(table + index * 8, 0), "table fits");
        }
        match space {
            TableSpace::Vram => PteTarget::Vram(VramOffset(table)),
            TableSpace::System => PteTarget::System(Iova(table)),
        }
    }

    /// The raw entry `index` of `table`.
    pub fn entry(&self, table: PteTarget, index: usize) -> u64 {
        let (memory, addr) = self.locate(table);
        let at = addr as usize + index * 8;
        let bytes = memory.bytes()[at..at + 8].try_into().expect("8 bytes");
        u64::from_le_bytes(bytes)
    }

    /// Writes the raw entry `index` of `table`.
    pub fn set_raw(&mut self, table: PteTarget, index: usize, raw: u64) {
        let addr = match table {
            PteTarget::Vram(offset) => offset.0,
            PteTarget::System(iova) => iova.0,
        } + index as u64 * 8;
        let memory = match table {
            PteTarget::Vram(_) => &mut self.vram,
            PteTarget::System(_) => &mut self.system,
        };
        assert!(memory.write_u64(addr, raw), "entry fits");
    }

    /// Writes entry `index` of `table`.
    pub fn set(&mut self, table: PteTarget, index: usize, pte: GuestPte) {
        let raw = pte.encode().expect("test entry encodes");
        self.set_raw(table, index, raw);
    }

    fn locate(&self, table: PteTarget) -> (&FlatMemory, u64) {
        match table {
            PteTarget::Vram(offset) => (&self.vram, offset.0),
            PteTarget::System(iova) => (&self.system, iova.0),
        }
    }

    /// The table at `level` on `va`'s path, creating missing tables (in
    /// `space`, through writable entries) down to it. An entry that is a
    /// page where a table is needed is replaced.
    pub fn table_for(&mut self, va: GpuVa, level: Level, space: TableSpace) -> PteTarget {
        let mut table = self.root;
        let mut at = Level::L4;
        while at != level {
            let index = at.index(va);
            let next = match GuestPte::decode(self.entry(table, index), at) {
                Ok(GuestPte::Table { table, .. }) => table,
                _ => {
                    let new = self.allocate(space);
                    let pte = GuestPte::Table {
                        table: new,
                        permissions: Permissions { writable: true },
                    };
                    self.set(table, index, pte);
                    new
                }
            };
            table = next;
            at = at.next().expect("stops at the requested level");
        }
        table
    }

    /// Maps the `size` page at `va` to `target`, creating tables in
    /// `space` as needed.
    pub fn map(
        &mut self,
        va: GpuVa,
        size: PageSize,
        target: PteTarget,
        writable: bool,
        space: TableSpace,
    ) {
        let level = match size {
            PageSize::Size4KiB => Level::L1,
            PageSize::Size2MiB => Level::L2,
        };
        let table = self.table_for(va, level, space);
        let pte = GuestPte::Page {
            page: target,
            size,
            permissions: Permissions { writable },
        };
        self.set(table, level.index(va), pte);
    }
}
