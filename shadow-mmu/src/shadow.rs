//! The shadow builder: keeps a vGPU's contexts' physical MMU tables equal
//! to what its guest tables map, minus everything the policy refuses.
//!
//! Shadowing is driven by the guest's own invalidations, as on real GPUs
//! (over vfio-user there is no write-protection of guest page tables):
//! writing `PT_ROOT` re-shadows the whole context, `INV_CONTROL` re-shadows
//! the range or the context named. A re-shadow unmaps the range in the
//! physical MMU, walks it, validates every leaf and maps those that pass;
//! what fails is left unmapped, so the GPU faults there. Ranges are widened
//! to whole 2 MiB so that a 2 MiB page is always wholly inside or outside
//! one, and every `PhysicalMmu::unmap` call covers either whole 2 MiB
//! chunks or exactly one mapped page.
//!
//! The owner may cap how many pages one re-shadow maps
//! ([`ShadowMmu::set_max_pages`]), to hold a budget of translations across
//! re-shadows and contexts: pages are mapped in VA order, and the first
//! one past the cap faults with [`FaultReason::PageBudget`] together with
//! the rest of the range, where the walk ends. Only pages that are mapped
//! count (a 2 MiB page as one); refused and absent ones do not.
//!
//! `DMA_UNMAP` revokes: [`ShadowMmu::revoke_system_range`] unmaps every
//! shadow entry into the range, in every context, and invalidates those
//! contexts before it returns. Entries are never re-created behind the
//! guest's back: a revoked or refused range stays unmapped until the guest
//! invalidates it again.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use thiserror::Error;

use crate::addr::{ContextId, GpuVa, Iova, PageSize, VaRange};
use crate::allowed::AllowedSet;
use crate::entry::Level;
use crate::fault::{FaultCode, FaultReason, WalkFault};
use crate::fault_log::FaultLog;
use crate::memory::{GuestMemory, PageTableMemory, VramMemory};
use crate::mmu::{MmuError, PhysicalMmu};
use crate::policy::{RunSplit, Validator};
use crate::pte::PteTarget;
use crate::system_index::{CHUNK_BYTES, SystemIndex};
use crate::walk::{WalkItem, WalkLimits, WalkStats, Walker};

/// Most faults a [`ShadowSummary`] lists; the rest are only counted.
pub const MAX_REPORTED_FAULTS: usize = 32;

/// The physical MMU failed while the builder programmed it. What was
/// programmed before the failure is validated and indexed, so isolation
/// holds; the context is left partly shadowed.
#[derive(Debug, Error)]
pub enum ShadowError {
    /// A map, unmap or invalidation of `ctx` failed.
    #[error("programming the physical MMU for {ctx} failed")]
    Mmu {
        /// The context being programmed.
        ctx: ContextId,
        /// The backend's error.
        #[source]
        source: MmuError,
    },
}

/// What one re-shadow did.
#[derive(Debug)]
pub struct ShadowSummary {
    /// The context.
    pub ctx: ContextId,
    /// The range re-walked (the requested one widened to 2 MiB), or `None`
    /// when the context has no root and nothing was done.
    pub range: Option<VaRange>,
    /// Pages mapped in the physical MMU.
    pub mapped: u64,
    /// Not-present entries met (normal in a sparse address space, so not
    /// counted as faults).
    pub not_present: u64,
    /// Faults found: refused pages and tables, invalid entries, limits.
    pub fault_count: u64,
    /// The first [`MAX_REPORTED_FAULTS`] of those, in VA order.
    pub faults: Vec<WalkFault>,
    /// What the walk read.
    pub walk: WalkStats,
}

impl ShadowSummary {
    fn new(ctx: ContextId, range: Option<VaRange>) -> Self {
        Self {
            ctx,
            range,
            mapped: 0,
            not_present: 0,
            fault_count: 0,
            faults: Vec::new(),
            walk: WalkStats::default(),
        }
    }
}

/// The shadow state of one context.
#[derive(Debug)]
struct Context {
    /// The raw `PT_ROOT` value.
    root: u64,
    faults: FaultLog,
}

/// The shadow MMU of one vGPU: its contexts' roots, and what is needed to
/// re-shadow and revoke.
///
/// Page-table memory, the allowed set and the physical MMU are passed to
/// each call rather than held, so the owner keeps them behind whatever
/// locks it uses; it must pass the same physical MMU every time and be the
/// only one programming these contexts.
///
/// What it holds grows only as far as the owner lets it: a context per id
/// passed to [`ShadowMmu::set_root`] until [`ShadowMmu::remove_context`]
/// or [`ShadowMmu::reset`], each with a fault log of at most 4096 ranges;
/// an index entry per 2 MiB of a context's VA holding system pages, so no
/// more than there are system shadow entries, which only the owner bounds
/// through the walk limits it sets (the daemon spends one entry budget
/// across all channels); and a walker holding at most
/// [`WalkLimits::max_tables`] table addresses.
#[derive(Debug)]
pub struct ShadowMmu {
    walker: Walker,
    contexts: BTreeMap<ContextId, Context>,
    system: SystemIndex,
    /// Most pages one re-shadow may map.
    max_pages: u64,
}

impl ShadowMmu {
    /// A shadow MMU without contexts whose walks obey `limits`.
    pub fn new(limits: WalkLimits) -> Self {
        Self {
            walker: Walker::new(limits),
            contexts: BTreeMap::new(),
            system: SystemIndex::default(),
            max_pages: u64::MAX,
        }
    }

    /// The limits the next walks obey; see [`Walker::set_limits`].
    pub fn set_limits(&mut self, limits: WalkLimits) {
        self.walker.set_limits(limits);
    }

    /// The limits walks obey now.
    pub fn limits(&self) -> WalkLimits {
        self.walker.limits()
    }

    /// Caps the pages (4 KiB or 2 MiB alike) that each following
    /// re-shadow maps at `max_pages`: the first page past it faults with
    /// [`FaultReason::PageBudget`], and so does the rest of the range, which
    /// is not walked. An owner that holds a budget across re-shadows and
    /// contexts sets what is left of it before each one. Unlimited until
    /// set.
    pub fn set_max_pages(&mut self, max_pages: u64) {
        self.max_pages = max_pages;
    }

    /// The raw root of `ctx`, if it has one.
    pub fn root(&self, ctx: ContextId) -> Option<u64> {
        self.contexts.get(&ctx).map(|context| context.root)
    }

    /// Number of shadow entries that point into guest memory.
    pub fn system_entries(&self) -> usize {
        self.system.len()
    }

    /// Why an access to `va` in `ctx` faults, as far as the walks know:
    /// `None` means not present, or a reason the context's fault log had
    /// no room for (it keeps at most 4096 ranges; see `fault_log`), never
    /// a wrong reason. A write to a page that is mapped read-only is the
    /// caller's [`FaultCode::ReadOnly`].
    pub fn fault_code(&self, ctx: ContextId, va: GpuVa) -> Option<FaultCode> {
        self.contexts.get(&ctx)?.faults.lookup(va)
    }

    /// Ranges in the fault log of `ctx`.
    #[cfg(test)]
    fn fault_ranges(&self, ctx: ContextId) -> usize {
        self.contexts
            .get(&ctx)
            .map_or(0, |context| context.faults.len())
    }

    /// Sets the root of `ctx` (the guest wrote `PT_ROOT`) and re-shadows
    /// the whole context from it.
    pub fn set_root<G, V, A, M>(
        &mut self,
        ctx: ContextId,
        root: u64,
        memory: &PageTableMemory<'_, G, V>,
        allowed: &A,
        mmu: &mut M,
    ) -> Result<ShadowSummary, ShadowError>
    where
        G: GuestMemory + ?Sized,
        V: VramMemory + ?Sized,
        A: AllowedSet + ?Sized,
        M: PhysicalMmu + ?Sized,
    {
        self.contexts
            .entry(ctx)
            .or_insert_with(|| Context {
                root,
                faults: FaultLog::default(),
            })
            .root = root;
        self.invalidate(ctx, VaRange::ALL, memory, allowed, mmu)
    }

    /// Re-shadows `range` of `ctx` (widened to whole 2 MiB) from the guest
    /// tables as they are now. A context without a root has nothing to
    /// re-shadow.
    pub fn invalidate<G, V, A, M>(
        &mut self,
        ctx: ContextId,
        range: VaRange,
        memory: &PageTableMemory<'_, G, V>,
        allowed: &A,
        mmu: &mut M,
    ) -> Result<ShadowSummary, ShadowError>
    where
        G: GuestMemory + ?Sized,
        V: VramMemory + ?Sized,
        A: AllowedSet + ?Sized,
        M: PhysicalMmu + ?Sized,
    {
        let Some(context) = self.contexts.get_mut(&ctx) else {
            return Ok(ShadowSummary::new(ctx, None));
        };
        let range = range.align_out(PageSize::Size2MiB);
        let mmu_error = |source| ShadowError::Mmu { ctx, source };
        mmu.unmap(ctx, range.start(), range.size())
            .map_err(mmu_error)?;
        // Kept for the walk to refill, released below.
        self.system.retire(ctx, range);
        let mut faults = context.faults.rewalk(range);

        let mut summary = ShadowSummary::new(ctx, Some(range));
        let mut failure = None;
        let max_pages = self.max_pages;
        let mut budget_spent = false;
        let mut validator = Validator::new(allowed);
        let system = &mut self.system;
        let mut note = |summary: &mut ShadowSummary, fault: WalkFault| {
            if matches!(fault.reason, FaultReason::NotPresent) {
                summary.not_present += 1;
                return;
            }
            faults.record(fault.va, fault.len, fault.reason.code());
            summary.fault_count += 1;
            if summary.faults.len() < MAX_REPORTED_FAULTS {
                summary.faults.push(fault);
            }
        };
        let walk = self
            .walker
            .walk(context.root, range, memory, allowed, |item| match item {
                WalkItem::Leaves(mut run) => {
                    while !run.is_empty() {
                        run = match validator.split(run) {
                            RunSplit::Accepted(accepted, rest) => {
                                let room = max_pages.saturating_sub(summary.mapped);
                                let (accepted, over) = if accepted.len() as u64 > room {
                                    // Less than the run's length: fits usize.
                                    let (head, over) = accepted.split_at(room as usize);
                                    (head, Some(over))
                                } else {
                                    (accepted, None)
                                };
                                if !accepted.is_empty() {
                                    // Indexed before it is mapped: if the MMU
                                    // fails halfway, revoking a page that was
                                    // never mapped is harmless, missing one is
                                    // not.
                                    system.record_run(ctx, &accepted);
                                    if let Err(source) = mmu.map_run(ctx, &accepted) {
                                        failure = Some(source);
                                        return ControlFlow::Break(());
                                    }
                                    summary.mapped += accepted.len() as u64;
                                }
                                if let Some(over) = over {
                                    let va = over.va();
                                    let fault = WalkFault {
                                        va,
                                        len: range.end() - va.0,
                                        level: level_of(over.size()),
                                        reason: FaultReason::PageBudget,
                                    };
                                    note(&mut summary, fault);
                                    budget_spent = true;
                                    return ControlFlow::Break(());
                                }
                                rest
                            }
                            RunSplit::Refused(leaf, rejection, rest) => {
                                let fault = WalkFault {
                                    va: leaf.va,
                                    len: leaf.size.bytes(),
                                    level: level_of(leaf.size),
                                    reason: FaultReason::Rejected(rejection),
                                };
                                note(&mut summary, fault);
                                rest
                            }
                        };
                    }
                    ControlFlow::Continue(())
                }
                WalkItem::Fault(fault) => {
                    note(&mut summary, fault);
                    ControlFlow::Continue(())
                }
            });
        summary.walk = walk;
        // Stores the last faults gathered.
        drop(faults);
        summary.walk.limited |= budget_spent;
        self.system.release_retired();
        // The unmap above always needs the TLB flushed, even if a map
        // failed halfway.
        mmu.invalidate(ctx);
        match failure {
            Some(source) => Err(mmu_error(source)),
            None => Ok(summary),
        }
    }

    /// Re-shadows the whole address space of `ctx`.
    pub fn invalidate_all<G, V, A, M>(
        &mut self,
        ctx: ContextId,
        memory: &PageTableMemory<'_, G, V>,
        allowed: &A,
        mmu: &mut M,
    ) -> Result<ShadowSummary, ShadowError>
    where
        G: GuestMemory + ?Sized,
        V: VramMemory + ?Sized,
        A: AllowedSet + ?Sized,
        M: PhysicalMmu + ?Sized,
    {
        self.invalidate(ctx, VaRange::ALL, memory, allowed, mmu)
    }

    /// Unmaps every shadow entry, in every context, whose page overlaps the
    /// `len` bytes of guest memory at `iova` (the VMM is unmapping them),
    /// and invalidates those contexts before returning the number of
    /// entries removed. The caller removes the DMA window from its
    /// allowed set first, so that no later walk maps the range again.
    ///
    /// The index names the 2 MiB chunks that may hold such entries; each
    /// is read back from the physical MMU and exactly the entries into the
    /// range are unmapped. A chunk the MMU cannot read back is unmapped
    /// whole: more than needed, never less.
    pub fn revoke_system_range<M>(
        &mut self,
        iova: Iova,
        len: u64,
        mmu: &mut M,
    ) -> Result<usize, ShadowError>
    where
        M: PhysicalMmu + ?Sized,
    {
        let (start, end) = (iova.0, iova.0.saturating_add(len));
        let mut touched: Vec<ContextId> = Vec::new();
        let mut removed = 0;
        let mut result = Ok(());
        let mut pages: Vec<(GpuVa, PageSize)> = Vec::new();
        for chunk in self.system.candidates(iova, len) {
            let ctx = chunk.ctx;
            if touched.last() != Some(&ctx) {
                touched.push(ctx);
            }
            let fault = |context: Option<&mut Context>, va: GpuVa, len: u64| {
                if let Some(context) = context {
                    context.faults.record(va, len, FaultCode::NotMapped);
                }
            };
            pages.clear();
            let read = mmu.mapped_pages(ctx, chunk.va, CHUNK_BYTES, &mut |va, pte| {
                if let PteTarget::System(page) = pte.target()
                    && page.0 < end
                    && start < page.0.saturating_add(pte.size().bytes())
                {
                    pages.push((va, pte.size()));
                }
            });
            if read.is_err() {
                if let Err(source) = mmu.unmap(ctx, chunk.va, CHUNK_BYTES) {
                    result = Err(ShadowError::Mmu { ctx, source });
                    break;
                }
                removed += self.system.chunk_pages(ctx, chunk.va);
                self.system.forget_chunk(ctx, chunk.va);
                fault(self.contexts.get_mut(&ctx), chunk.va, CHUNK_BYTES);
                continue;
            }
            // Revoked pages fault with "not mapped" from now on; adjacent
            // ones go into the fault log as one range, so that a revoked
            // run of pages takes one record, not one per page.
            let mut span: Option<(u64, u64)> = None;
            for &(va, size) in &pages {
                if let Err(source) = mmu.unmap(ctx, va, size.bytes()) {
                    result = Err(ShadowError::Mmu { ctx, source });
                    break;
                }
                self.system.unmapped(ctx, chunk.va, 1);
                removed += 1;
                let end = va.0 + size.bytes();
                span = match span {
                    Some((start, last)) if last == va.0 => Some((start, end)),
                    Some((start, last)) => {
                        fault(self.contexts.get_mut(&ctx), GpuVa(start), last - start);
                        Some((va.0, end))
                    }
                    None => Some((va.0, end)),
                };
            }
            if let Some((start, end)) = span {
                fault(self.contexts.get_mut(&ctx), GpuVa(start), end - start);
            }
            if result.is_err() {
                break;
            }
        }
        // Candidates come by context, so each context appears in one run
        // and is invalidated once.
        for ctx in touched {
            mmu.invalidate(ctx);
        }
        result.map(|()| removed)
    }

    /// Unmaps everything of `ctx` and forgets it (its channel went away).
    pub fn remove_context<M>(&mut self, ctx: ContextId, mmu: &mut M) -> Result<(), ShadowError>
    where
        M: PhysicalMmu + ?Sized,
    {
        if !self.contexts.contains_key(&ctx) {
            return Ok(());
        }
        mmu.unmap(ctx, GpuVa(0), VaRange::ALL.size())
            .map_err(|source| ShadowError::Mmu { ctx, source })?;
        mmu.invalidate(ctx);
        self.system.clear(ctx, VaRange::ALL);
        self.contexts.remove(&ctx);
        Ok(())
    }

    /// Unmaps everything of every context and forgets them all (device
    /// reset). Stops at the first context the MMU fails to unmap, which
    /// stays known so that a retry can finish the job.
    pub fn reset<M>(&mut self, mmu: &mut M) -> Result<(), ShadowError>
    where
        M: PhysicalMmu + ?Sized,
    {
        let contexts: Vec<ContextId> = self.contexts.keys().copied().collect();
        for ctx in contexts {
            self.remove_context(ctx, mmu)?;
        }
        Ok(())
    }
}

/// The level of the entry that maps a page of `size`.
fn level_of(size: PageSize) -> Level {
    match size {
        PageSize::Size4KiB => Level::L1,
        PageSize::Size2MiB => Level::L2,
    }
}

impl Default for ShadowMmu {
    /// A shadow MMU with the default walk limits.
    fn default() -> Self {
        Self::new(WalkLimits::default())
    }
}

#[cfg(test)]
mod page_budget_tests;
#[cfg(test)]
mod tests;
