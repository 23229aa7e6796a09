//! [`SimMmu`]: the simulated GPU's MMU, one set of page tables and one TLB
//! per hardware context.
//!
//! The daemon owns the tables: it creates a context per channel, fills it
//! through [`PhysicalMmu`] with entries the policy validated, and
//! invalidates after changing them. Engines (and the device's translate
//! port) translate through [`SimMmu::translate`]; nothing reaches memory
//! any other way except the privileged physical form.

use std::collections::BTreeMap;

use shadow_mmu::{ContextId, GpuVa, MmuError, PageSize, PhysicalMmu, ShadowPte};
use thiserror::Error;

use super::access::{Access, PhysicalAddress, PrivilegedAccess};
use super::fault::{MmuFault, MmuFaultReason};
use super::table::PageTable;
use super::tlb::Tlb;

/// Width of a GPU virtual address: 48 bits, four levels of 9 bits over a
/// 4 KiB page. Addresses at or above `1 << 48` are never mapped.
pub const GPU_VA_BITS: u32 = 48;

/// The first address past the GPU virtual address space.
const VA_END: u64 = 1 << GPU_VA_BITS;

/// A context operation or table update that the simulated MMU refused; it
/// reaches callers of [`PhysicalMmu`] as [`MmuError::Backend`].
#[derive(Debug, Error)]
pub enum SimMmuError {
    /// The context was already created.
    #[error("{0} already exists")]
    ContextExists(ContextId),
    /// A map whose page size is not the one the entry was validated for:
    /// the policy only checked that a page of `pte_size` is owned.
    #[error("a {size} page cannot be mapped with an entry validated for a {pte_size} page")]
    PageSizeMismatch {
        /// The page size asked for.
        size: PageSize,
        /// The page size of the validated entry.
        pte_size: PageSize,
    },
}

/// A page of a context's tables, as [`SimMmu::mapping`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// First VA of the page.
    pub va: GpuVa,
    /// The entry the page was mapped with.
    pub pte: ShadowPte,
}

/// One hardware context: its page tables and its TLB.
#[derive(Clone, Debug, Default)]
struct Context {
    table: PageTable,
    tlb: Tlb,
}

/// The simulated GPU MMU: page tables and a TLB per hardware context.
///
/// Contexts exist only between [`create_context`](Self::create_context)
/// and [`destroy_context`](Self::destroy_context); every operation on
/// another id is refused with [`MmuError::UnknownContext`] (or, for a
/// translation, faults). Table updates never flush the TLB: only
/// [`PhysicalMmu::invalidate`] does, as on hardware.
#[derive(Clone, Debug, Default)]
pub struct SimMmu {
    contexts: BTreeMap<ContextId, Context>,
}

impl SimMmu {
    /// An MMU with no contexts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates `ctx` with empty tables. An existing context is refused
    /// rather than reset, so that two owners can never share one.
    pub fn create_context(&mut self, ctx: ContextId) -> Result<(), MmuError> {
        if self.contexts.contains_key(&ctx) {
            return Err(MmuError::Backend(Box::new(SimMmuError::ContextExists(ctx))));
        }
        self.contexts.insert(ctx, Context::default());
        Ok(())
    }

    /// Destroys `ctx`, its tables and its TLB.
    pub fn destroy_context(&mut self, ctx: ContextId) -> Result<(), MmuError> {
        self.contexts
            .remove(&ctx)
            .map(drop)
            .ok_or(MmuError::UnknownContext(ctx))
    }

    /// Empties the tables and the TLB of `ctx`, which goes on existing
    /// (a device reset of the vGPU that owns it).
    pub fn reset(&mut self, ctx: ContextId) -> Result<(), MmuError> {
        *self.context(ctx)? = Context::default();
        Ok(())
    }

    /// Whether `ctx` exists.
    pub fn has_context(&self, ctx: ContextId) -> bool {
        self.contexts.contains_key(&ctx)
    }

    /// The page of the tables of `ctx` that contains `va`, looked up
    /// directly, without the TLB (for diagnostics and tests of the daemon).
    pub fn mapping(&self, ctx: ContextId, va: GpuVa) -> Option<Mapping> {
        let (base, pte) = self.contexts.get(&ctx)?.table.lookup(va.0)?;
        Some(Mapping {
            va: GpuVa(base),
            pte,
        })
    }

    /// Number of pages mapped in `ctx` (0 for a context that does not
    /// exist).
    pub fn page_count(&self, ctx: ContextId) -> usize {
        self.contexts.get(&ctx).map_or(0, |c| c.table.len())
    }

    /// Pages of `ctx` that start in `va..va + len` (0 for an unknown
    /// context).
    pub fn page_count_in(&self, ctx: ContextId, va: GpuVa, len: u64) -> usize {
        self.contexts
            .get(&ctx)
            .map_or(0, |c| c.table.count_in(va.0, va.0.saturating_add(len)))
    }

    /// Translates `va` for an `access` in `ctx`, as an engine does: through
    /// the TLB, filled from the tables on a miss. A read needs a present
    /// page, a write a writable one.
    pub fn translate(
        &mut self,
        ctx: ContextId,
        va: GpuVa,
        access: Access,
    ) -> Result<PhysicalAddress, MmuFault> {
        let fault = |reason| MmuFault {
            ctx,
            va,
            access,
            reason,
        };
        let context = self
            .contexts
            .get_mut(&ctx)
            .ok_or(fault(MmuFaultReason::UnknownContext))?;
        let (base, pte) = match context.tlb.lookup(va.0) {
            Some(hit) => hit,
            None => {
                let (base, pte) = context
                    .table
                    .lookup(va.0)
                    .ok_or(fault(MmuFaultReason::NotPresent))?;
                context.tlb.fill(base, pte);
                (base, pte)
            }
        };
        if access.is_write() && !pte.permissions().writable {
            return Err(fault(MmuFaultReason::ReadOnly));
        }
        // The policy checked that the whole page is owned, so the offset
        // cannot overflow; should it, nothing is reachable there.
        PhysicalAddress::from(pte.target())
            .checked_add(va.0 - base)
            .ok_or(fault(MmuFaultReason::NotPresent))
    }

    /// The privileged form: a physical address used as it is, without the
    /// MMU. Only an engine of this crate holds a [`PrivilegedAccess`]; guest
    /// input can never produce one (see there).
    pub fn translate_physical(
        &self,
        _privilege: &PrivilegedAccess,
        address: PhysicalAddress,
    ) -> PhysicalAddress {
        address
    }

    fn context(&mut self, ctx: ContextId) -> Result<&mut Context, MmuError> {
        self.contexts
            .get_mut(&ctx)
            .ok_or(MmuError::UnknownContext(ctx))
    }
}

impl PhysicalMmu for SimMmu {
    /// Maps the page and removes every page it overlaps (see the `table`
    /// module). The TLB is not flushed.
    fn map(
        &mut self,
        ctx: ContextId,
        va: GpuVa,
        size: PageSize,
        pte: &ShadowPte,
    ) -> Result<(), MmuError> {
        let context = self.context(ctx)?;
        if pte.size() != size {
            return Err(MmuError::Backend(Box::new(SimMmuError::PageSizeMismatch {
                size,
                pte_size: pte.size(),
            })));
        }
        if !va.is_aligned(size) {
            return Err(MmuError::Misaligned { va, size });
        }
        if va.0 >= VA_END || VA_END - va.0 < size.bytes() {
            return Err(MmuError::OutOfRange {
                va,
                len: size.bytes(),
            });
        }
        context.table.map(va.0, *pte);
        Ok(())
    }

    /// Removes every page overlapping the range, whole (see the `table`
    /// module). The TLB is not flushed.
    fn unmap(&mut self, ctx: ContextId, va: GpuVa, len: u64) -> Result<(), MmuError> {
        let context = self.context(ctx)?;
        let end =
            va.0.checked_add(len)
                .filter(|&end| end <= VA_END)
                .ok_or(MmuError::OutOfRange { va, len })?;
        context.table.unmap(va.0, end);
        Ok(())
    }

    /// Flushes the TLB of `ctx`. A context that does not exist has nothing
    /// cached, so there is nothing to do.
    fn invalidate(&mut self, ctx: ContextId) {
        match self.contexts.get_mut(&ctx) {
            Some(context) => context.tlb.flush(),
            None => tracing::debug!(%ctx, "invalidation of a context that does not exist"),
        }
    }

    /// Reads the tables, not the TLB: what the GPU translates once the
    /// context is invalidated.
    fn mapped_pages(
        &self,
        ctx: ContextId,
        va: GpuVa,
        len: u64,
        each: &mut dyn FnMut(GpuVa, &ShadowPte),
    ) -> Result<(), MmuError> {
        let context = self
            .contexts
            .get(&ctx)
            .ok_or(MmuError::UnknownContext(ctx))?;
        for (start, pte) in context.table.starting_in(va.0, va.0.saturating_add(len)) {
            each(GpuVa(start), &pte);
        }
        Ok(())
    }
}
