//! The simulated GPU's MMU: the physical page tables that the daemon
//! programs, and the translation that every engine access goes through.
//!
//! This is the hardware end of the MMU data path (DESIGN.md, "The data
//! paths", item 5): the shadow MMU validates guest entries and programs
//! them through [`shadow_mmu::PhysicalMmu`], which [`SimMmu`] implements.
//! It enforces its tables as a GPU would (the isolation contract, point 5),
//! down to a TLB that keeps stale translations until it is told to drop
//! them, so that a test catches a daemon that forgets to invalidate.
//!
//! - `access`: what an engine access is ([`Access`]) and where it lands
//!   ([`PhysicalAddress`]); the privileged physical form
//!   ([`PrivilegedAccess`]) that guests never get;
//! - `fault`: why a translation failed ([`MmuFault`], [`MmuFaultReason`]);
//! - `table`: one context's page tables;
//! - `tlb`: one context's translation cache;
//! - `sim`: [`SimMmu`], the contexts and their translation;
//! - `partition`: GPU-wide context ids and the contexts one vGPU holds,
//!   bound to its VRAM partition ([`PartitionMmu`], [`BoundContexts`]);
//! - `engine`: [`EngineMemory`], byte copies at a GPU VA, page by page
//!   through the MMU, so that no engine touches memory any other way.

mod access;
mod engine;
mod fault;
mod partition;
mod sim;
mod table;
mod tlb;

pub use access::{Access, PhysicalAddress, PrivilegedAccess};
pub use engine::{ClientPiece, Completion, EngineMemory, EngineMemoryError};
pub use fault::{MmuFault, MmuFaultReason};
pub use partition::{
    BoundContexts, ContextError, ContextIds, MAX_CONTEXTS, Partition, PartitionMmu,
};
pub use sim::{GPU_VA_BITS, Mapping, SimMmu, SimMmuError};
pub use tlb::TLB_ENTRIES;

#[cfg(test)]
mod tests;
