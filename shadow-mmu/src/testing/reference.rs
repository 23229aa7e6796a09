//! A reference model of the GPU MMU contract: translates one VA by reading
//! the guest tables directly, one entry at a time, with no cache, no
//! limits and no policy code shared with the walker or the builder (only
//! the entry decoder, which has bit-exact tests of its own).

use crate::addr::{GpuVa, PageSize};
use crate::entry::{GuestPte, Level};
use crate::pte::{Permissions, PteTarget};

use super::{FixedAllowed, FlatMemory};

/// What a VA translates to: the page it lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// First VA of the page.
    pub va: GpuVa,
    /// First byte of the page.
    pub page: PteTarget,
    /// The page size.
    pub size: PageSize,
    /// The effective permission.
    pub permissions: Permissions,
}

fn read_entry(
    vram: &FlatMemory,
    system: &FlatMemory,
    table: PteTarget,
    index: usize,
) -> Option<u64> {
    let (memory, base) = match table {
        PteTarget::Vram(offset) => (vram, offset.0),
        PteTarget::System(iova) => (system, iova.0),
    };
    let start = usize::try_from(base).ok()?.checked_add(index * 8)?;
    let bytes = memory.bytes().get(start..start + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The translation of `va` under `root` that the contract allows, or
/// `None` where the access must fault.
pub fn translate(
    root: u64,
    va: GpuVa,
    vram: &FlatMemory,
    system: &FlatMemory,
    allowed: &FixedAllowed,
) -> Option<Translation> {
    let mut raw = root;
    let mut level = Level::Root;
    let mut writable = true;
    let mut path: Vec<PteTarget> = Vec::new();
    loop {
        match GuestPte::decode(raw, level).ok()? {
            GuestPte::NotPresent => return None,
            GuestPte::Page {
                page,
                size,
                permissions,
            } => {
                let permissions = Permissions {
                    writable: writable && permissions.writable,
                };
                let page_va = GpuVa(va.0 & !(size.bytes() - 1));
                return allowed
                    .owns(page, size, permissions)
                    .then_some(Translation {
                        va: page_va,
                        page,
                        size,
                        permissions,
                    });
            }
            GuestPte::Table { table, permissions } => {
                if level != Level::Root {
                    writable &= permissions.writable;
                }
                let read_only = Permissions { writable: false };
                if path.contains(&table) || !allowed.owns(table, PageSize::Size4KiB, read_only) {
                    return None;
                }
                path.push(table);
                level = level.next()?;
                raw = read_entry(vram, system, table, level.index(va))?;
            }
        }
    }
}
