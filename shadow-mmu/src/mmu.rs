//! The physical GPU MMU, as the shadow builder programs it.
//!
//! A backend (the simulated GPU, later a real one) implements
//! [`PhysicalMmu`]; it takes only [`ShadowPte`]s, which only the policy can
//! build, so nothing unvalidated can reach the hardware tables by
//! construction.

use std::error::Error;

use thiserror::Error;

use crate::addr::{ContextId, GpuVa, PageSize};
use crate::leaf::ShadowRun;
use crate::pte::ShadowPte;

/// The physical MMU refused or failed an update.
#[derive(Debug, Error)]
pub enum MmuError {
    /// The context does not exist on this GPU.
    #[error("{0} does not exist")]
    UnknownContext(ContextId),
    /// The virtual address is not aligned to the page size being mapped.
    #[error("GPU VA {va} is not aligned to a {size} page")]
    Misaligned {
        /// The refused address.
        va: GpuVa,
        /// The page size of the mapping.
        size: PageSize,
    },
    /// The range runs past the context's virtual address space.
    #[error("GPU VA range of {len:#x} bytes at {va} is outside the address space")]
    OutOfRange {
        /// First address of the range.
        va: GpuVa,
        /// Length of the range in bytes.
        len: u64,
    },
    /// The backend could not update its tables.
    #[error("the MMU backend failed")]
    Backend(#[source] Box<dyn Error + Send + Sync + 'static>),
}

/// The page tables of a physical GPU, one set per context.
pub trait PhysicalMmu {
    /// Maps the `size` page at `va` in `ctx` to what `pte` points at,
    /// replacing any previous mapping of that page.
    fn map(
        &mut self,
        ctx: ContextId,
        va: GpuVa,
        size: PageSize,
        pte: &ShadowPte,
    ) -> Result<(), MmuError>;

    /// Maps every page of `run` in `ctx`, in order, as [`PhysicalMmu::map`]
    /// would. A backend that can program consecutive entries at once (a
    /// run is at most one level-1 table's worth, all in one 2 MiB range)
    /// overrides it. On error, any prefix of the run may be mapped.
    fn map_run(&mut self, ctx: ContextId, run: &ShadowRun<'_>) -> Result<(), MmuError> {
        for (va, pte) in run.iter() {
            self.map(ctx, va, run.size(), &pte)?;
        }
        Ok(())
    }

    /// Removes every mapping of `ctx` in `[va, va + len)`; unmapped pages
    /// in the range are not an error.
    fn unmap(&mut self, ctx: ContextId, va: GpuVa, len: u64) -> Result<(), MmuError>;

    /// Makes the GPU drop cached translations of `ctx`, so that the next
    /// access sees the tables as they are now.
    fn invalidate(&mut self, ctx: ContextId);

    /// Calls `each` with every page of `ctx` that starts in
    /// `[va, va + len)`, in VA order, and the entry it is mapped with, as
    /// the tables hold them now. Revocation reads the candidate ranges
    /// back through this, so that it removes what the GPU would translate
    /// rather than what a copy kept on the side says; if it fails, the
    /// shadow MMU unmaps the whole range instead.
    fn mapped_pages(
        &self,
        ctx: ContextId,
        va: GpuVa,
        len: u64,
        each: &mut dyn FnMut(GpuVa, &ShadowPte),
    ) -> Result<(), MmuError>;
}
