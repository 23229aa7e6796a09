//! The harness behind the `page_table_walker` fuzz target, here so that
//! the seed corpus is replayed by `cargo test` without nightly.
//!
//! Input layout (missing bytes read as 0):
//!
//! | bytes | meaning |
//! | --- | --- |
//! | 0 | VRAM slice size in 16 KiB units |
//! | 1 | bits 1:0 number of DMA windows (0–3); bits 6:2 walk table limit − 1 |
//! | 2–10 | three windows: start (16 KiB units), length − 1 (16 KiB units), bit 0 writable |
//! | 11, 12 | roots of contexts 0 and 1: bits 3:0 table, 4 SYSTEM, 5 WRITABLE, 6 LARGE, 7 a reserved bit |
//! | 13–20 | invalidation: bits 35:0 first 4 KiB page, 47:36 pages − 1 |
//! | 21 | which window `DMA_UNMAP` removes |
//! | 22– | 12-byte records writing one entry: table (bits 3:0), index (u16, mod 512), mode, value (u64) |
//!
//! Memory is [`TABLES`] 4 KiB tables, table `t` at address `t × 4096` in
//! both VRAM and guest memory. A record's mode picks how `value` becomes
//! the entry: 1 names table `value[15:12]` keeping `value`'s low 12 bits
//! as flags; 2 names a page in the first 4 MiB, likewise; anything else
//! writes `value` as it is.
//!
//! The harness sets both roots, invalidates a range, removes a window and
//! revokes it, re-shadows everything and resets, and after every step
//! checks the isolation contract on every entry of the physical MMU: it
//! lies inside the allowed set with the permission it grants, and agrees
//! with the reference model.

use crate::addr::{ContextId, GpuVa, Iova, VaRange};
use crate::allowed::SystemWindow;
use crate::entry::{PTE_SYSTEM, PTE_VALID, PTE_WRITABLE};
use crate::memory::PageTableMemory;
use crate::pte::PteTarget;
use crate::shadow::ShadowMmu;
use crate::walk::WalkLimits;

use super::reference::{self, Translation};
use super::{FixedAllowed, FlatMemory, RecordingMmu};

/// Number of tables in the harness's memory.
pub const TABLES: usize = 16;

const UNIT: u64 = 16 << 10;
const CONTEXTS: [ContextId; 2] = [ContextId(0), ContextId(1)];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&byte, rest)) => {
                self.0 = rest;
                byte
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        for byte in &mut bytes {
            *byte = self.byte();
        }
        u64::from_le_bytes(bytes)
    }
}

fn root_entry(byte: u8) -> u64 {
    let mut raw = u64::from(byte & 0xf) << 12 | PTE_VALID;
    for (bit, flag) in [(4, PTE_SYSTEM), (5, PTE_WRITABLE), (6, 1 << 3), (7, 1 << 4)] {
        if byte & (1 << bit) != 0 {
            raw |= flag;
        }
    }
    raw
}

fn entry(mode: u8, value: u64) -> u64 {
    let flags = value & 0xfff;
    match mode {
        1 => ((value >> 12) & 0xf) << 12 | flags,
        2 => ((value >> 12) & 0x3ff) << 12 | flags,
        _ => value,
    }
}

/// Windows from the header, dropping any that overlaps an earlier one.
fn windows(input: &mut Input<'_>, count: u8) -> Vec<SystemWindow> {
    let mut windows: Vec<SystemWindow> = Vec::new();
    for n in 0..3 {
        let (start, pages, flags) = (input.byte(), input.byte(), input.byte());
        let window = SystemWindow {
            iova: Iova(u64::from(start) * UNIT),
            size: (u64::from(pages) + 1) * UNIT,
            writable: flags & 1 != 0,
        };
        let end = window.iova.0 + window.size;
        let overlaps = windows
            .iter()
            .any(|other| window.iova.0 < other.iova.0 + other.size && other.iova.0 < end);
        if n < count && !overlaps {
            windows.push(window);
        }
    }
    windows
}

/// What one fuzz input did, so that tests can tell that a seed exercises
/// what it is meant to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuzzOutcome {
    /// Entries in the physical MMU once both roots were set.
    pub mapped: usize,
    /// Faults (other than not-present) the first walk found.
    pub faults: u64,
    /// Some walk hit a limit.
    pub limited: bool,
}

/// Runs one fuzz input. Panics if the isolation contract is broken.
pub fn fuzz_page_tables(data: &[u8]) -> FuzzOutcome {
    let mut input = Input(data);
    let vram_size = u64::from(input.byte()) * UNIT;
    let flags = input.byte();
    let window_list = windows(&mut input, flags & 3);
    let mut allowed = FixedAllowed {
        vram_size,
        windows: window_list,
    };
    let max_tables = u32::from((flags >> 2) & 0x1f) + 1;
    let roots = [root_entry(input.byte()), root_entry(input.byte())];
    let invalidation = input.u64();
    let revoked = input.byte();

    let mut image = vec![0u8; TABLES * 4096];
    while !input.0.is_empty() {
        let table = u64::from(input.byte() & 0xf);
        let index = u64::from(u16::from_le_bytes([input.byte(), input.byte()]) % 512);
        let mode = input.byte();
        let raw = entry(mode, input.u64());
        let at = (table * 4096 + index * 8) as usize;
        image[at..at + 8].copy_from_slice(&raw.to_le_bytes());
    }
    // Both address spaces show the same bytes.
    let vram = FlatMemory::from_bytes(image.clone());
    let system = FlatMemory::from_bytes(image);
    let memory = PageTableMemory::new(&system, &vram);

    let limits = WalkLimits {
        max_tables,
        max_entries: u64::from(max_tables) * 512,
    };
    let mut shadow = ShadowMmu::new(limits);
    let mut mmu = RecordingMmu::new();
    let check = |shadow: &ShadowMmu, mmu: &RecordingMmu, allowed: &FixedAllowed| {
        check_contained(mmu, allowed);
        check_reference(shadow, mmu, &vram, &system, allowed);
    };

    let mut outcome = FuzzOutcome::default();
    for (ctx, root) in CONTEXTS.into_iter().zip(roots) {
        let summary = shadow
            .set_root(ctx, root, &memory, &allowed, &mut mmu)
            .expect("the recording MMU accepts what the builder sends");
        if ctx == CONTEXTS[0] {
            outcome.faults = summary.fault_count;
        }
        outcome.limited |= summary.walk.limited;
        check(&shadow, &mmu, &allowed);
    }
    outcome.mapped = mmu.len();

    let first_page = invalidation & 0xf_ffff_ffff;
    let pages = (invalidation >> 36) & 0xfff;
    let range = VaRange::new(GpuVa(first_page << 12), (pages + 1) << 12).unwrap_or(VaRange::ALL);
    let summary = shadow
        .invalidate(CONTEXTS[0], range, &memory, &allowed, &mut mmu)
        .expect("the recording MMU accepts what the builder sends");
    outcome.limited |= summary.walk.limited;
    check(&shadow, &mmu, &allowed);
    let _ = shadow.fault_code(CONTEXTS[0], range.start());

    if !allowed.windows.is_empty() {
        let window = allowed
            .windows
            .remove(usize::from(revoked) % allowed.windows.len());
        shadow
            .revoke_system_range(window.iova, window.size, &mut mmu)
            .expect("the recording MMU accepts what the builder sends");
        // Entries whose tables were in the window stay until the guest
        // invalidates, so only containment holds here.
        check_contained(&mmu, &allowed);
    }

    for ctx in CONTEXTS {
        let summary = shadow
            .invalidate_all(ctx, &memory, &allowed, &mut mmu)
            .expect("the recording MMU accepts what the builder sends");
        outcome.limited |= summary.walk.limited;
    }
    check(&shadow, &mmu, &allowed);

    shadow
        .reset(&mut mmu)
        .expect("the recording MMU accepts what the builder sends");
    assert!(mmu.is_empty(), "reset left entries in the physical MMU");
    assert_eq!(shadow.system_entries(), 0);
    outcome
}

/// Every entry of the physical MMU lies inside the allowed set with the
/// permission it grants.
pub fn check_contained(mmu: &RecordingMmu, allowed: &FixedAllowed) {
    for (ctx, va, pte) in mmu.entries() {
        assert!(
            allowed.owns(pte.target(), pte.size(), pte.permissions()),
            "{ctx} maps {va} to {pte:?}, outside {allowed:?}"
        );
    }
}

/// Every entry of the physical MMU is what the reference model translates
/// its VA to.
pub fn check_reference(
    shadow: &ShadowMmu,
    mmu: &RecordingMmu,
    vram: &FlatMemory,
    system: &FlatMemory,
    allowed: &FixedAllowed,
) {
    for (ctx, va, pte) in mmu.entries() {
        let root = shadow.root(ctx).expect("only known contexts are mapped");
        let expected = reference::translate(root, va, vram, system, allowed);
        let actual = Translation {
            va,
            page: pte.target(),
            size: pte.size(),
            permissions: pte.permissions(),
        };
        assert_eq!(expected, Some(actual), "{ctx} at {va}");
        if let PteTarget::System(_) = pte.target() {
            assert!(shadow.system_entries() > 0);
        }
    }
}
