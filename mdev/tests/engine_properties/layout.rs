//! A's GPU page tables: valid mappings in eight VA slots, hostile entries
//! laid over them or in slots of their own, and hostile roots; and B's
//! plain tables.
//!
//! Tables are built with `shadow_mmu::testing::TableBuilder` in a copy of
//! the first 256 KiB of the slice, then written into the VRAM. Valid
//! mappings never make the tables, the rings or the batch buffers
//! writable, so a valid stream cannot change what it runs through; hostile
//! entries may do anything.

use proptest::collection::vec;
use proptest::prelude::*;
use shadow_mmu::testing::{FlatMemory, TableBuilder, TableSpace};
use shadow_mmu::{
    GpuVa, Iova, Level, PTE_ADDRESS_MASK, PTE_LARGE, PTE_SYSTEM, PTE_VALID, PTE_WRITABLE, PageSize,
    PteTarget, VramOffset,
};

use crate::rig::{
    B_HIGH_IOVA, BATCH_VA, BATCHES_AT, DATA_AT, MIB, PAGE, REMOTE_IOVA, RING_VA, RINGS_AT,
    RO_FILE_OFFSET, RO_IOVA, RO_LEN, RW_IOVA, RW_LEN, SLICE, TABLES_LEN, noise,
};

/// Slots of valid mappings.
pub const SLOTS: u8 = 8;
/// Slots that only hostile entries use (numbered from `SLOTS`).
pub const HOSTILE_SLOTS: u8 = 8;
/// Pages of the read-only window that hold crafted page tables.
pub const CRAFTED_PAGES: u64 = 16;
const LARGE: u64 = 2 * MIB;
const VA_END: u64 = 1 << 48;

/// The first VA of slot `slot`'s 2 MiB region: slots 0–6 are 4 MiB apart
/// from 1 GiB, slot 7 is the last 2 MiB of the address space, and the
/// hostile slots are 4 MiB apart from 512 GiB (another level-4 entry).
pub fn slot_va(slot: u8) -> u64 {
    let slot = u64::from(slot);
    match slot {
        0..=6 => 0x4000_0000 + slot * 4 * MIB,
        7 => VA_END - LARGE,
        _ => 0x80_0000_0000 + (slot - u64::from(SLOTS)) * 4 * MIB,
    }
}

/// Where a valid mapping's pages come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// A's VRAM from `DATA_AT`.
    VramData,
    /// A's page tables (read-only: valid streams read them as data).
    VramLow,
    /// The read-write window.
    RamRw,
    /// The read-only window.
    RamRo,
}

impl Space {
    pub fn pages(self) -> u64 {
        match self {
            Space::VramData => (SLICE - DATA_AT) / PAGE,
            Space::VramLow => TABLES_LEN / PAGE,
            Space::RamRw => RW_LEN / PAGE,
            Space::RamRo => RO_LEN / PAGE,
        }
    }

    pub fn read_only(self) -> bool {
        matches!(self, Space::VramLow | Space::RamRo)
    }

    /// The entry target of page `page` (modulo the space) and where it is
    /// in the model's flat memory (VRAM, then A's guest memory file).
    pub fn page(self, page: u64) -> (PteTarget, usize) {
        let page = page % self.pages();
        match self {
            Space::VramData => vram(DATA_AT + page * PAGE),
            Space::VramLow => vram(page * PAGE),
            Space::RamRw => ram(RW_IOVA + page * PAGE, page * PAGE),
            Space::RamRo => ram(RO_IOVA + page * PAGE, RO_FILE_OFFSET + page * PAGE),
        }
    }
}

fn vram(offset: u64) -> (PteTarget, usize) {
    (PteTarget::Vram(VramOffset(offset)), offset as usize)
}

fn ram(iova: u64, file_offset: u64) -> (PteTarget, usize) {
    (
        PteTarget::System(Iova(iova)),
        (SLICE + file_offset) as usize,
    )
}

/// One slot's valid mapping.
#[derive(Clone, Debug)]
pub enum SlotMap {
    /// 4 KiB pages, page i at page `pages[i]` of `space`; placed at the
    /// start of the slot (at its end for slot 7, up to 2^48).
    Pages {
        space: Space,
        pages: Vec<u64>,
        writable: bool,
    },
    /// One 2 MiB page: VRAM from 2 MiB, or the whole read-write window.
    Large { space: Space, writable: bool },
}

/// The valid part of A's tables.
#[derive(Clone, Debug)]
pub struct Layout {
    pub slots: Vec<SlotMap>,
}

impl Layout {
    /// First mapped VA of `slot`.
    pub fn first_va(&self, slot: u8) -> u64 {
        match &self.slots[slot as usize] {
            SlotMap::Pages { pages, .. } if slot == 7 => VA_END - pages.len() as u64 * PAGE,
            _ => slot_va(slot),
        }
    }

    /// Bytes mapped in `slot`, from `first_va`.
    pub fn len(&self, slot: u8) -> u64 {
        match &self.slots[slot as usize] {
            SlotMap::Pages { pages, .. } => pages.len() as u64 * PAGE,
            SlotMap::Large { .. } => LARGE,
        }
    }

    pub fn writable(&self, slot: u8) -> bool {
        match &self.slots[slot as usize] {
            SlotMap::Pages { writable, .. } | SlotMap::Large { writable, .. } => *writable,
        }
    }

    /// Where `len` bytes at `offset` into `slot`'s mapping are in the
    /// model's flat memory: runs of (start, length), merged where they
    /// touch. The range must lie inside the mapping.
    pub fn pieces(&self, slot: u8, offset: u64, len: u64) -> Vec<(usize, usize)> {
        assert!(offset + len <= self.len(slot), "inside the slot");
        let mut out: Vec<(usize, usize)> = Vec::new();
        let mut push = |start: usize, n: usize| match out.last_mut() {
            Some((s, l)) if *s + *l == start => *l += n,
            _ => out.push((start, n)),
        };
        match &self.slots[slot as usize] {
            SlotMap::Large { space, .. } => {
                push(large_target(*space).1 + offset as usize, len as usize)
            }
            SlotMap::Pages { space, pages, .. } => {
                let mut at = offset;
                while at < offset + len {
                    let in_page = (PAGE - at % PAGE).min(offset + len - at);
                    let (_, flat) = space.page(pages[(at / PAGE) as usize]);
                    push(flat + (at % PAGE) as usize, in_page as usize);
                    at += in_page;
                }
            }
        }
        out
    }
}

fn large_target(space: Space) -> (PteTarget, usize) {
    match space {
        Space::RamRw => ram(RW_IOVA, 0),
        _ => vram(LARGE),
    }
}

/// A hostile entry, written over whatever the valid mappings put there.
#[derive(Clone, Copy, Debug)]
pub struct Hostile {
    /// A valid slot (the entry replaces one of its pages, or its large
    /// page, or the table above it) or a hostile one.
    pub slot: u8,
    pub page: u16,
    pub entry: BadEntry,
}

#[derive(Clone, Copy, Debug)]
pub enum BadEntry {
    /// A level-1 entry.
    Page { page: BadPage, writable: bool },
    /// A level-2 entry with LARGE.
    Large { page: BadLarge, writable: bool },
    /// An entry naming a table, at level 2 (or 3).
    Table {
        table: BadTable,
        at_l3: bool,
        writable: bool,
    },
}

#[derive(Clone, Copy, Debug)]
pub enum BadPage {
    /// VRAM offset `SLICE + 4 KiB × n`: B's VRAM by offset arithmetic.
    VramBeyond(u16),
    /// Any VRAM offset at or past 1 TiB.
    VramFar(u64),
    /// B's window, at an IOVA where A has none.
    BWindow(u16),
    /// A's window without an fd.
    Remote(u8),
    /// Just past A's read-only window (the unmapped tail of its file).
    Tail(u8),
    /// A page of the read-only window (writable if the entry says so).
    ReadOnlyWindow(u8),
    /// A valid VRAM page with a reserved bit set (bits 4–11, 52–63).
    ReservedBit(u8),
    /// A valid VRAM page with LARGE at level 1.
    LargeAtLevel1,
}

#[derive(Clone, Copy, Debug)]
pub enum BadLarge {
    /// B's first 2 MiB.
    AtSlice,
    /// Past the slice, `n` × 2 MiB further.
    Beyond(u8),
    /// LARGE with address bits 20:12 set.
    Misaligned,
    /// From the read-only window on: 256 KiB of window, the rest nothing.
    OverReadOnlyWindow,
    /// B's high window.
    BWindow,
}

#[derive(Clone, Copy, Debug)]
pub enum BadTable {
    /// A table in B's VRAM.
    VramBeyond(u16),
    /// The level-4 table itself: a cycle, or its entries read as pages.
    Root,
    /// One of A's own tables (or a zeroed page of the table area).
    Own(u8),
    /// A crafted table in the read-only window.
    ReadOnlyWindow(u8),
    /// In A's window without an fd.
    Remote,
    /// In B's window.
    BWindow,
}

/// PT_ROOT as a hostile guest may write it.
#[derive(Clone, Copy, Debug)]
pub enum Root {
    /// The tables built.
    Tables,
    ReservedBit(u8),
    BeyondSlice,
    ReadOnlyWindow(u8),
    BWindow,
    Remote,
    NotPresent,
    Large,
}

/// A's tables, ready for its VRAM.
pub struct Tables {
    /// The first `TABLES_LEN` bytes of the slice.
    pub bytes: Vec<u8>,
    /// PT_ROOT naming the level-4 table.
    pub root: u64,
}

fn with_writable(raw: u64, writable: bool) -> u64 {
    if writable { raw | PTE_WRITABLE } else { raw }
}

/// A reserved bit of an entry: bits 4–11 and 52–63.
fn reserved_bit(n: u8) -> u64 {
    let n = u64::from(n) % 20;
    if n < 8 {
        1 << (4 + n)
    } else {
        1 << (52 + n - 8)
    }
}

impl BadEntry {
    fn raw(self) -> u64 {
        match self {
            BadEntry::Page { page, writable } => with_writable(page.raw(), writable),
            BadEntry::Large { page, writable } => with_writable(page.raw() | PTE_LARGE, writable),
            BadEntry::Table {
                table, writable, ..
            } => with_writable(table.raw(), writable),
        }
    }
}

impl BadPage {
    fn raw(self) -> u64 {
        let data = DATA_AT | PTE_VALID;
        match self {
            BadPage::VramBeyond(n) => (SLICE + u64::from(n) * PAGE) | PTE_VALID,
            BadPage::VramFar(address) => ((address | (1 << 40)) & PTE_ADDRESS_MASK) | PTE_VALID,
            BadPage::BWindow(n) => {
                (B_HIGH_IOVA + u64::from(n) % 128 * PAGE) | PTE_SYSTEM | PTE_VALID
            }
            BadPage::Remote(n) => (REMOTE_IOVA + u64::from(n % 16) * PAGE) | PTE_SYSTEM | PTE_VALID,
            BadPage::Tail(n) => (RO_IOVA + RO_LEN + u64::from(n) * PAGE) | PTE_SYSTEM | PTE_VALID,
            BadPage::ReadOnlyWindow(n) => {
                (RO_IOVA + u64::from(n % 64) * PAGE) | PTE_SYSTEM | PTE_VALID
            }
            BadPage::ReservedBit(n) => data | reserved_bit(n),
            BadPage::LargeAtLevel1 => data | PTE_LARGE,
        }
    }
}

impl BadLarge {
    fn raw(self) -> u64 {
        match self {
            BadLarge::AtSlice => SLICE | PTE_VALID,
            BadLarge::Beyond(n) => (SLICE + u64::from(n) * LARGE) | PTE_VALID,
            BadLarge::Misaligned => (LARGE + 0x3000) | PTE_VALID,
            BadLarge::OverReadOnlyWindow => RO_IOVA | PTE_SYSTEM | PTE_VALID,
            BadLarge::BWindow => B_HIGH_IOVA | PTE_SYSTEM | PTE_VALID,
        }
    }
}

impl BadTable {
    fn raw(self) -> u64 {
        match self {
            BadTable::VramBeyond(n) => (SLICE + u64::from(n) * PAGE) | PTE_VALID,
            BadTable::Root => PTE_VALID,
            BadTable::Own(n) => (u64::from(n % 64) * PAGE) | PTE_VALID,
            BadTable::ReadOnlyWindow(n) => {
                (RO_IOVA + u64::from(n) % CRAFTED_PAGES * PAGE) | PTE_SYSTEM | PTE_VALID
            }
            BadTable::Remote => REMOTE_IOVA | PTE_SYSTEM | PTE_VALID,
            BadTable::BWindow => B_HIGH_IOVA | PTE_SYSTEM | PTE_VALID,
        }
    }
}

impl Root {
    pub fn value(self, tables: u64) -> u64 {
        match self {
            Root::Tables => tables,
            Root::ReservedBit(n) => tables | reserved_bit(n),
            Root::BeyondSlice => SLICE | PTE_VALID,
            Root::ReadOnlyWindow(n) => {
                (RO_IOVA + u64::from(n) % CRAFTED_PAGES * PAGE) | PTE_SYSTEM | PTE_VALID
            }
            Root::BWindow => B_HIGH_IOVA | PTE_SYSTEM | PTE_VALID,
            Root::Remote => REMOTE_IOVA | PTE_SYSTEM | PTE_VALID,
            Root::NotPresent => tables & !PTE_VALID,
            Root::Large => tables | PTE_LARGE,
        }
    }
}

/// Maps the rings and the batch buffers read-only, 64 KiB each.
fn map_fixed(builder: &mut TableBuilder) {
    for page in 0..16 {
        for (va, at) in [(RING_VA, RINGS_AT), (BATCH_VA, BATCHES_AT)] {
            builder.map(
                GpuVa(va + page * PAGE),
                PageSize::Size4KiB,
                PteTarget::Vram(VramOffset(at + page * PAGE)),
                false,
                TableSpace::Vram,
            );
        }
    }
}

fn builder() -> TableBuilder {
    TableBuilder::new(
        FlatMemory::new(TABLES_LEN as usize),
        0,
        FlatMemory::new(0),
        0,
        TableSpace::Vram,
    )
}

/// The tables of `layout`, with `hostile` written over them, and `extra`
/// entries for the VAs they name.
pub fn build(layout: &Layout, hostile: &[Hostile], extra: &[(u64, BadEntry)]) -> Tables {
    let mut b = builder();
    map_fixed(&mut b);
    for slot in 0..SLOTS {
        let first = layout.first_va(slot);
        match &layout.slots[slot as usize] {
            SlotMap::Pages {
                space,
                pages,
                writable,
            } => {
                for (i, &page) in pages.iter().enumerate() {
                    let va = GpuVa(first + i as u64 * PAGE);
                    b.map(
                        va,
                        PageSize::Size4KiB,
                        space.page(page).0,
                        *writable,
                        TableSpace::Vram,
                    );
                }
            }
            SlotMap::Large { space, writable } => b.map(
                GpuVa(first),
                PageSize::Size2MiB,
                large_target(*space).0,
                *writable,
                TableSpace::Vram,
            ),
        }
    }
    // Every hostile entry's table is found (or made) first: once a raw
    // entry names memory the builder does not hold, walking through it
    // would leave the builder's memory.
    let sites: Vec<(PteTarget, usize, u64)> = hostile
        .iter()
        .map(|h| (hostile_va(layout, h), h.entry))
        .chain(extra.iter().copied())
        .map(|(va, entry)| {
            let level = match entry {
                BadEntry::Page { .. } => Level::L1,
                BadEntry::Large { .. } | BadEntry::Table { at_l3: false, .. } => Level::L2,
                BadEntry::Table { at_l3: true, .. } => Level::L3,
            };
            let table = b.table_for(GpuVa(va), level, TableSpace::Vram);
            (table, level.index(GpuVa(va)), entry.raw())
        })
        .collect();
    for (table, index, raw) in sites {
        b.set_raw(table, index, raw);
    }
    Tables {
        bytes: b.vram.bytes().to_vec(),
        root: b.root(),
    }
}

/// The VA whose entry `h` replaces.
pub fn hostile_va(layout: &Layout, h: &Hostile) -> u64 {
    let large = matches!(h.entry, BadEntry::Large { .. });
    if h.slot < SLOTS {
        let pages = layout.len(h.slot) / PAGE;
        if large {
            slot_va(h.slot)
        } else {
            layout.first_va(h.slot) + u64::from(h.page) % pages * PAGE
        }
    } else if large {
        slot_va(h.slot)
    } else {
        slot_va(h.slot) + u64::from(h.page) % 512 * PAGE
    }
}

/// B's tables: the rings as A's, and 2 MiB of its VRAM from 2 MiB at the
/// VA of slot 0, writable.
pub fn b_tables() -> Tables {
    let mut b = builder();
    map_fixed(&mut b);
    b.map(
        GpuVa(slot_va(0)),
        PageSize::Size2MiB,
        PteTarget::Vram(VramOffset(LARGE)),
        true,
        TableSpace::Vram,
    );
    Tables {
        bytes: b.vram.bytes().to_vec(),
        root: b.root(),
    }
}

/// Page tables for the first `CRAFTED_PAGES` pages of the read-only window:
/// entries a walk may meet at any level, each tempting in its own way.
/// About two entries per table name another table (the level-4 table or a
/// crafted one): enough to make every level of a walk meet them, few
/// enough that a walk stays far from its bounds (the tests run
/// unoptimised; the bounds have tests of their own in `shadow-mmu`).
pub fn crafted_tables(seed: u64) -> Vec<u8> {
    let entries = (CRAFTED_PAGES * PAGE / 8) as usize;
    let noise = noise(seed, entries * 8).to_vec();
    let mut out = Vec::with_capacity(entries * 8);
    for word in noise.chunks_exact(8) {
        let r = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let n = r >> 16;
        let w = if r & 0x8000 != 0 { PTE_WRITABLE } else { 0 };
        let raw = match r % 1024 {
            0 => PTE_WRITABLE | PTE_VALID,
            1 => (RO_IOVA + n % CRAFTED_PAGES * PAGE) | PTE_SYSTEM | PTE_WRITABLE | PTE_VALID,
            2..=300 => 0,
            301..=450 => (DATA_AT + n % ((SLICE - DATA_AT) / PAGE) * PAGE) | w | PTE_VALID,
            451..=550 => (SLICE + n % 1024 * PAGE) | w | PTE_VALID,
            551..=700 => (RW_IOVA + n % (RW_LEN / PAGE) * PAGE) | PTE_SYSTEM | w | PTE_VALID,
            // Pages of the read-only window past the crafted tables.
            701..=780 => {
                let page = CRAFTED_PAGES + n % (RO_LEN / PAGE - CRAFTED_PAGES);
                (RO_IOVA + page * PAGE) | PTE_SYSTEM | PTE_WRITABLE | PTE_VALID
            }
            781..=860 => (B_HIGH_IOVA + n % 128 * PAGE) | PTE_SYSTEM | w | PTE_VALID,
            861..=900 => REMOTE_IOVA | PTE_SYSTEM | w | PTE_VALID,
            901..=920 => SLICE | PTE_LARGE | w | PTE_VALID,
            921..=940 => LARGE | PTE_LARGE | w | PTE_VALID,
            _ => r,
        };
        out.extend_from_slice(&raw.to_le_bytes());
    }
    out
}

fn space() -> impl Strategy<Value = Space> {
    prop_oneof![
        4 => Just(Space::VramData),
        3 => Just(Space::RamRw),
        1 => Just(Space::RamRo),
        1 => Just(Space::VramLow),
    ]
}

fn slot_map() -> impl Strategy<Value = SlotMap> {
    let pages = (
        space(),
        any::<u64>(),
        1..=48usize,
        any::<bool>(),
        vec(any::<u64>(), 48),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(space, start, n, scatter, seeds, writable)| {
            let pages = (0..n)
                .map(|i| if scatter { seeds[i] } else { start + i as u64 } % space.pages())
                .collect();
            SlotMap::Pages {
                space,
                pages,
                writable: writable && !space.read_only(),
            }
        });
    let large = (
        prop_oneof![Just(Space::VramData), Just(Space::RamRw)],
        prop::bool::weighted(0.8),
    )
        .prop_map(|(space, writable)| SlotMap::Large { space, writable });
    prop_oneof![6 => pages, 1 => large]
}

pub fn layout() -> impl Strategy<Value = Layout> {
    vec(slot_map(), SLOTS as usize).prop_map(|slots| Layout { slots })
}

pub fn bad_page() -> impl Strategy<Value = BadPage> {
    prop_oneof![
        (0..1024u16).prop_map(BadPage::VramBeyond),
        any::<u64>().prop_map(BadPage::VramFar),
        any::<u16>().prop_map(BadPage::BWindow),
        any::<u8>().prop_map(BadPage::Remote),
        (0..64u8).prop_map(BadPage::Tail),
        any::<u8>().prop_map(BadPage::ReadOnlyWindow),
        any::<u8>().prop_map(BadPage::ReservedBit),
        Just(BadPage::LargeAtLevel1),
    ]
}

fn bad_large() -> impl Strategy<Value = BadLarge> {
    prop_oneof![
        Just(BadLarge::AtSlice),
        any::<u8>().prop_map(BadLarge::Beyond),
        Just(BadLarge::Misaligned),
        Just(BadLarge::OverReadOnlyWindow),
        Just(BadLarge::BWindow),
    ]
}

fn bad_table() -> impl Strategy<Value = BadTable> {
    prop_oneof![
        1 => (0..1024u16).prop_map(BadTable::VramBeyond),
        1 => Just(BadTable::Root),
        1 => any::<u8>().prop_map(BadTable::Own),
        2 => any::<u8>().prop_map(BadTable::ReadOnlyWindow),
        1 => Just(BadTable::Remote),
        1 => Just(BadTable::BWindow),
    ]
}

fn bad_entry() -> impl Strategy<Value = BadEntry> {
    prop_oneof![
        4 => (bad_page(), any::<bool>()).prop_map(|(page, writable)| BadEntry::Page { page, writable }),
        2 => (bad_large(), any::<bool>()).prop_map(|(page, writable)| BadEntry::Large { page, writable }),
        2 => (bad_table(), prop::bool::weighted(0.2), any::<bool>())
            .prop_map(|(table, at_l3, writable)| BadEntry::Table { table, at_l3, writable }),
    ]
}

pub fn hostile_entries() -> impl Strategy<Value = Vec<Hostile>> {
    vec(
        (0..SLOTS + HOSTILE_SLOTS, 0..4u16, bad_entry()).prop_map(|(slot, page, entry)| Hostile {
            slot,
            page,
            entry,
        }),
        0..12,
    )
}

pub fn root() -> impl Strategy<Value = Root> {
    prop_oneof![
        30 => Just(Root::Tables),
        1 => any::<u8>().prop_map(Root::ReservedBit),
        1 => Just(Root::BeyondSlice),
        2 => any::<u8>().prop_map(Root::ReadOnlyWindow),
        1 => Just(Root::BWindow),
        1 => Just(Root::Remote),
        1 => Just(Root::NotPresent),
        1 => Just(Root::Large),
    ]
}
