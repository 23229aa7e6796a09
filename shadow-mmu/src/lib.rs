//! The shadow MMU: how a vGPU's GPU page tables reach the physical GPU MMU.
//!
//! On the MMU data path (DESIGN.md, "The data paths", item 5) the guest
//! builds GPU page tables in its VRAM slice or in guest memory, writes a
//! channel's page-table root, and invalidates after changing entries. The
//! daemon then walks the guest tables, validates every entry against what
//! the vGPU owns, and programs the physical MMU's own tables for that
//! context. An entry that points outside the vGPU's VRAM slice or its DMA
//! windows is never programmed: the GPU faults instead, so the GPU itself
//! cannot reach memory the vGPU does not own. The format and the rules are
//! the contract in docs/device-interface.md, "The GPU MMU".
//!
//! - `addr`: the address spaces as newtypes ([`GpuVa`], [`Iova`],
//!   [`VramOffset`]) plus [`ContextId`], [`PageSize`] and the invalidation
//!   range [`VaRange`];
//! - `entry`: the guest page-table entry format ([`GuestPte`], [`Level`],
//!   [`EntryError`]);
//! - `memory`: how the walker reads guest-owned memory ([`GuestMemory`],
//!   [`VramMemory`], and [`PageTableMemory`] over both);
//! - `allowed`: what a vGPU owns ([`AllowedSet`], [`SystemWindow`]);
//! - `pte`: what an entry points at ([`PteTarget`], [`Permissions`]) and
//!   the validated [`ShadowPte`], which only the policy builds;
//! - `policy`: the validation rule ([`validate`], [`PteRejection`]) and
//!   [`Validator`], which applies it to many entries or whole runs
//!   ([`RunSplit`]);
//! - `walk`: the bounded walker over the guest tables ([`Walker`],
//!   [`WalkLimits`], [`WalkItem`]);
//! - `leaf`: the pages it finds ([`Leaf`], runs of them as [`LeafRun`])
//!   and runs the policy accepted whole ([`ShadowRun`]);
//! - `fault`: why a range has no mapping ([`WalkFault`], [`FaultReason`])
//!   and the device's reason codes ([`FaultCode`]);
//! - `mmu`: the physical MMU a backend programs ([`PhysicalMmu`]), page by
//!   page or a [`ShadowRun`] at a time;
//! - `shadow`: the builder that keeps the physical MMU in step with the
//!   guest's invalidations and `DMA_UNMAP` ([`ShadowMmu`],
//!   [`ShadowSummary`]), with its private `system_index` (shadow entries
//!   by IOVA, for revocation) and `fault_log` (fault reasons by VA);
//! - [`testing`]: in-memory doubles of the seams, and the fuzz harness.
//!
//! The crate is transport-free and holds no `unsafe` code.

#![forbid(unsafe_code)]

mod addr;
mod allowed;
mod entry;
mod fault;
mod fault_log;
mod leaf;
mod memory;
mod mmu;
mod policy;
mod pte;
mod shadow;
mod system_index;
pub mod testing;
mod walk;

pub use addr::{
    ContextId, GPU_VA_BITS, GPU_VA_SPACE, GpuVa, Iova, PageSize, VaRange, VaRangeError, VramOffset,
};
pub use allowed::{AllowedSet, SystemWindow};
pub use entry::{
    ENTRIES_PER_TABLE, EntryError, GuestPte, Level, PTE_ADDRESS_MASK, PTE_LARGE, PTE_RESERVED_MASK,
    PTE_SYSTEM, PTE_VALID, PTE_WRITABLE, TABLE_BYTES,
};
pub use fault::{FaultCode, FaultReason, WalkFault};
pub use leaf::{Leaf, LeafRun, ShadowRun};
pub use memory::{GuestMemory, GuestMemoryError, PageTableMemory, VramMemory};
pub use mmu::{MmuError, PhysicalMmu};
pub use policy::{PteRejection, RunSplit, Validator, validate};
pub use pte::{Permissions, PteTarget, ShadowPte};
pub use shadow::{MAX_REPORTED_FAULTS, ShadowError, ShadowMmu, ShadowSummary};
pub use walk::{WalkItem, WalkLimits, WalkStats, Walker};
