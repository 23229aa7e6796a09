//! The shadow MMU: how a vGPU's GPU page tables reach the physical GPU MMU.
//!
//! On the MMU data path (DESIGN.md, "The data paths", item 5) the guest
//! builds GPU page tables in its VRAM slice or in guest memory, writes a
//! channel's page-table root, and invalidates after changing entries. The
//! daemon then walks the guest tables, validates every entry against what
//! the vGPU owns, and programs the physical MMU's own tables for that
//! context. An entry that points outside the vGPU's VRAM slice or its DMA
//! windows is never programmed: the GPU faults instead, so the GPU itself
//! cannot reach memory the vGPU does not own.
//!
//! This crate holds that path's seams and its one rule that is already
//! written down; the guest table format, the walker and the shadow builder
//! come later and plug into these types:
//!
//! - `addr`: the address spaces as newtypes ([`GpuVa`], [`Iova`],
//!   [`VramOffset`]) plus [`ContextId`] and [`PageSize`];
//! - `memory`: how the walker reads guest-owned memory ([`GuestMemory`],
//!   [`VramMemory`], and [`PageTableMemory`] over both);
//! - `pte`: what an entry points at ([`PteTarget`], [`Permissions`]) and
//!   the validated [`ShadowPte`], which only [`validate`] builds;
//! - `allowed`: what a vGPU owns ([`AllowedSet`], [`SystemWindow`]);
//! - `policy`: the validation rule ([`validate`], [`PteRejection`]);
//! - `mmu`: the physical MMU a backend programs ([`PhysicalMmu`]).
//!
//! The crate is transport-free and holds no `unsafe` code.

#![forbid(unsafe_code)]

mod addr;
mod allowed;
mod memory;
mod mmu;
mod policy;
mod pte;

pub use addr::{ContextId, GpuVa, Iova, PageSize, VramOffset};
pub use allowed::{AllowedSet, SystemWindow};
pub use memory::{GuestMemory, GuestMemoryError, PageTableMemory, VramMemory};
pub use mmu::{MmuError, PhysicalMmu};
pub use policy::{PteRejection, validate};
pub use pte::{Permissions, PteTarget, ShadowPte};
