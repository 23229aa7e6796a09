//! Random guest page-table forests for the property tests: where the
//! tables go, what the leaves map, hostile raw writes over them, and the
//! checks against the reference model.

use proptest::prelude::*;
use shadow_mmu::testing::reference::{self, Translation};
use shadow_mmu::testing::{FixedAllowed, FlatMemory, RecordingMmu, TableBuilder, TableSpace};
use shadow_mmu::{
    ContextId, GpuVa, Iova, Level, PTE_LARGE, PTE_SYSTEM, PTE_VALID, PTE_WRITABLE, PageSize,
    PteTarget, SystemWindow, VramOffset,
};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const CTX: ContextId = ContextId(7);

/// The slice is 3.5 MiB, so that a 2 MiB page at 2 MiB straddles its end;
/// the fake VRAM holds 5 MiB so that tables past the slice are readable
/// (only the policy keeps the walker out).
const VRAM_SLICE: u64 = 7 * MIB / 2;
const VRAM_MEMORY: u64 = 5 * MIB;
const SYSTEM_MEMORY: u64 = 4 * MIB;
/// Table areas: VRAM inside and past the slice; guest memory in the
/// writable window, the read-only window, and the hole.
const VRAM_AREAS: [u64; 2] = [3 * MIB, 4 * MIB];
const SYSTEM_AREAS: [u64; 3] = [512 * KIB, 3 * MIB / 2, 7 * MIB / 2];

/// Guest memory windows 0–1 MiB writable, 1–2 MiB read-only, 2–3 MiB
/// writable, nothing at 3–4 MiB: a 2 MiB page at IOVA 0 straddles two
/// windows, one at 2 MiB a window and the hole.
pub fn allowed() -> FixedAllowed {
    let window = |start: u64, writable| SystemWindow {
        iova: Iova(start * MIB),
        size: MIB,
        writable,
    };
    FixedAllowed {
        vram_size: VRAM_SLICE,
        windows: vec![window(0, true), window(1, false), window(2, true)],
    }
}

/// Where a forest's tables go.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub root: TableSpace,
    pub vram_at: u64,
    pub system_at: u64,
}

fn space() -> impl Strategy<Value = TableSpace> {
    prop_oneof![Just(TableSpace::Vram), Just(TableSpace::System)]
}

/// Tables inside the allowed set.
pub fn valid_placement() -> impl Strategy<Value = Placement> {
    space().prop_map(|root| Placement {
        root,
        vram_at: VRAM_AREAS[0],
        system_at: SYSTEM_AREAS[0],
    })
}

/// Tables inside the allowed set, the level-4 table in VRAM.
pub fn valid_placement_fixed() -> Placement {
    Placement {
        root: TableSpace::Vram,
        vram_at: VRAM_AREAS[0],
        system_at: SYSTEM_AREAS[0],
    }
}

/// Tables anywhere, owned or not.
pub fn any_placement() -> impl Strategy<Value = Placement> {
    (space(), 0..VRAM_AREAS.len(), 0..SYSTEM_AREAS.len()).prop_map(|(root, vram, system)| {
        Placement {
            root,
            vram_at: VRAM_AREAS[vram],
            system_at: SYSTEM_AREAS[system],
        }
    })
}

/// Few indices per level, so that mappings share tables; 511 reaches the
/// top of each table.
fn index() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(2), Just(3), Just(511)]
}

fn va(size: PageSize) -> impl Strategy<Value = GpuVa> {
    (index(), index(), index(), index()).prop_map(move |(l4, l3, l2, l1)| {
        let l1 = if size == PageSize::Size2MiB { 0 } else { l1 };
        GpuVa((l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12))
    })
}

/// A page the allowed set owns with the permission chosen: in VRAM, or
/// (4 KiB only: 2 MiB fits no 1 MiB window) in a window, writable only
/// in a writable one.
fn valid_target(size: PageSize) -> BoxedStrategy<(PteTarget, bool)> {
    let slice_pages = VRAM_SLICE / size.bytes();
    let vram = (0..slice_pages, any::<bool>())
        .prop_map(move |(page, w)| (PteTarget::Vram(VramOffset(page * size.bytes())), w));
    if size == PageSize::Size2MiB {
        return vram.boxed();
    }
    let system = (0u64..3, 0..MIB / 4096, any::<bool>()).prop_map(|(window, page, w)| {
        let iova = window * MIB + page * 4096;
        (PteTarget::System(Iova(iova)), w && window != 1)
    });
    prop_oneof![vram, system].boxed()
}

/// Any page near the allowed set: past the slice, straddling its end or
/// two windows, in the hole, writable over the read-only window.
fn any_target(size: PageSize) -> impl Strategy<Value = (PteTarget, bool)> {
    let vram = (0..VRAM_MEMORY / size.bytes())
        .prop_map(move |page| PteTarget::Vram(VramOffset(page * size.bytes())));
    let system = (0..SYSTEM_MEMORY / size.bytes())
        .prop_map(move |page| PteTarget::System(Iova(page * size.bytes())));
    (prop_oneof![vram, system], any::<bool>())
}

/// One page for [`TableBuilder::map`], with new tables in `space`.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub va: GpuVa,
    pub size: PageSize,
    pub target: PteTarget,
    pub writable: bool,
    pub space: TableSpace,
}

/// A mapping to an owned page, or (when `hostile`) sometimes to any page.
pub fn mapping(hostile: bool) -> impl Strategy<Value = Mapping> {
    let size = prop_oneof![4 => Just(PageSize::Size4KiB), 1 => Just(PageSize::Size2MiB)];
    (
        size,
        space(),
        prop::bool::weighted(if hostile { 0.4 } else { 0.0 }),
    )
        .prop_flat_map(|(size, space, wild)| {
            let target = if wild {
                any_target(size).boxed()
            } else {
                valid_target(size)
            };
            (va(size), target).prop_map(move |(va, (target, writable))| Mapping {
                va,
                size,
                target,
                writable,
                space,
            })
        })
}

/// Tables for `mappings`, with WRITABLE cleared in a level-3 or level-2
/// entry on the path of each mapping `read_only` picks.
pub fn forest(placement: Placement, mappings: &[Mapping], read_only: &[usize]) -> TableBuilder {
    let mut tables = TableBuilder::new(
        FlatMemory::new(VRAM_MEMORY as usize),
        placement.vram_at,
        FlatMemory::new(SYSTEM_MEMORY as usize),
        placement.system_at,
        placement.root,
    );
    for m in mappings {
        tables.map(m.va, m.size, m.target, m.writable, m.space);
    }
    for &pick in read_only {
        let Some(m) = mappings.get(pick % mappings.len().max(1)) else {
            continue;
        };
        let level = if pick % 2 == 0 { Level::L3 } else { Level::L2 };
        let table = tables.table_for(m.va, level, m.space);
        let raw = tables.entry(table, level.index(m.va));
        tables.set_raw(table, level.index(m.va), raw & !PTE_WRITABLE);
    }
    tables
}

/// Writes `NotPresent` over the leaf entry of `m`.
pub fn unmap(tables: &mut TableBuilder, m: &Mapping) {
    let level = match m.size {
        PageSize::Size4KiB => Level::L1,
        PageSize::Size2MiB => Level::L2,
    };
    let table = tables.table_for(m.va, level, m.space);
    tables.set_raw(table, level.index(m.va), 0);
}

/// Table slots that hostile writes and roots use: the first tables of
/// every area, where forests put theirs.
const SLOTS: u64 = 30;

fn slot(slot: u64) -> PteTarget {
    let n = slot / 5 * 4096;
    match slot % 5 {
        area @ 0..2 => PteTarget::Vram(VramOffset(VRAM_AREAS[area as usize] + n)),
        area => PteTarget::System(Iova(SYSTEM_AREAS[area as usize - 2] + n)),
    }
}

fn pointer(target: PteTarget) -> u64 {
    match target {
        PteTarget::Vram(offset) => offset.0,
        PteTarget::System(iova) => iova.0 | PTE_SYSTEM,
    }
}

/// A raw entry: a pointer to a slot, a page near the allowed set, or
/// anything at all, with random flags.
pub fn hostile_entry() -> impl Strategy<Value = u64> {
    let flags = (
        prop::bool::weighted(0.9),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(valid, writable, large, reserved)| {
            (if valid { PTE_VALID } else { 0 })
                | (if writable { PTE_WRITABLE } else { 0 })
                | (if large { PTE_LARGE } else { 0 })
                | (if reserved { 1 << 62 } else { 0 })
        });
    let address = prop_oneof![
        3 => (0..SLOTS).prop_map(|s| pointer(slot(s))),
        2 => any_target(PageSize::Size4KiB).prop_map(|(target, _)| pointer(target)),
        1 => any_target(PageSize::Size2MiB).prop_map(|(target, _)| pointer(target)),
    ];
    prop_oneof![
        8 => (address, flags).prop_map(|(address, flags)| address | flags),
        1 => any::<u64>(),
    ]
}

/// A raw write of one entry into a slot.
#[derive(Clone, Copy, Debug)]
pub struct Write {
    slot: u64,
    index: usize,
    raw: u64,
}

pub fn writes(max: usize) -> impl Strategy<Value = Vec<Write>> {
    let index = prop_oneof![
        4 => prop_oneof![Just(0usize), Just(1), Just(2), Just(3), Just(511)],
        1 => 0usize..512,
    ];
    prop::collection::vec(
        (0..SLOTS, index, hostile_entry()).prop_map(|(slot, index, raw)| Write {
            slot,
            index,
            raw,
        }),
        0..max,
    )
}

pub fn apply(tables: &mut TableBuilder, writes: &[Write]) {
    for write in writes {
        tables.set_raw(slot(write.slot), write.index, write.raw);
    }
}

/// The root a hostile test uses.
#[derive(Clone, Copy, Debug)]
pub enum Root {
    /// The forest's own.
    Forest,
    /// A slot.
    Slot(u64),
    /// Anything.
    Raw(u64),
}

pub fn root() -> impl Strategy<Value = Root> {
    prop_oneof![
        6 => Just(Root::Forest),
        2 => (0..SLOTS).prop_map(Root::Slot),
        1 => hostile_entry().prop_map(Root::Raw),
    ]
}

impl Root {
    pub fn raw(self, tables: &TableBuilder) -> u64 {
        match self {
            Root::Forest => tables.root(),
            Root::Slot(s) => pointer(slot(s)) | PTE_VALID,
            Root::Raw(raw) => raw,
        }
    }
}

/// Every index combination the forests use, at `offset` into the page.
pub fn sample_vas(offset: u64) -> Vec<GpuVa> {
    let indices = [0u64, 1, 2, 3, 511];
    let mut vas = Vec::new();
    for l4 in indices {
        for l3 in indices {
            for l2 in indices {
                for l1 in indices {
                    vas.push(GpuVa(
                        (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12) | offset,
                    ));
                }
            }
        }
    }
    vas
}

/// What the physical MMU translates `va` of [`CTX`] to.
pub fn mmu_translation(mmu: &RecordingMmu, va: GpuVa) -> Option<Translation> {
    mmu.entry(CTX, va).map(|(page_va, pte)| Translation {
        va: page_va,
        page: pte.target(),
        size: pte.size(),
        permissions: pte.permissions(),
    })
}

/// The physical MMU translates every VA in `vas` as the reference model
/// reads the tables under `root`.
pub fn agrees_at(
    vas: &[GpuVa],
    root: u64,
    tables: &TableBuilder,
    allowed: &FixedAllowed,
    mmu: &RecordingMmu,
) -> Result<(), TestCaseError> {
    for &va in vas {
        let expected = reference::translate(root, va, &tables.vram, &tables.system, allowed);
        prop_assert_eq!(mmu_translation(mmu, va), expected, "at {}", va);
    }
    Ok(())
}

/// Points the level-`level` entry on `m`'s path back at the table of
/// level `ancestor` on the same path (the entry's own table or one above):
/// a cycle.
pub fn loop_back(tables: &mut TableBuilder, m: &Mapping, level: Level, ancestor: Level) {
    let table = tables.table_for(m.va, level, m.space);
    let target = tables.table_for(m.va, ancestor, m.space);
    let raw = pointer(target) | PTE_VALID | PTE_WRITABLE;
    tables.set_raw(table, level.index(m.va), raw);
}

/// A cycle to make: which mapping, the level of the entry that loops, and
/// how far up it points.
pub fn cycle() -> impl Strategy<Value = (prop::sample::Index, Level, Level)> {
    let levels = [Level::L4, Level::L3, Level::L2];
    (any::<prop::sample::Index>(), 0..3usize, 0..3usize).prop_map(move |(pick, from, up)| {
        let from_level = levels[from];
        (pick, from_level, levels[from.saturating_sub(up)])
    })
}
