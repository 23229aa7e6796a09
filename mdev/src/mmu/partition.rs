//! The GPU MMU's contexts as one vGPU holds them: GPU-wide context ids,
//! each bound to the vGPU's VRAM partition.
//!
//! The simulated GPU has one MMU. Its context ids are a GPU-wide namespace
//! ([`ContextIds`], handed out by the GPU and returned when the vGPU goes),
//! and each context is bound, when it is created, to the partition of VRAM
//! it may reach, as a partition base and bound register would on hardware:
//! a translation into VRAM lands at `partition.base + offset`, and an
//! offset at or past the partition's size faults whatever the tables say.
//! A vGPU reaches only the contexts in its own [`BoundContexts`], so no
//! two vGPUs can name the same context, and no address in one vGPU's
//! context reaches another's VRAM.
//!
//! Each context's tables and TLB are memory of that context alone: the
//! vGPU that owns them locks them, and no lock is shared with another
//! vGPU (DESIGN.md, "The data paths": the register path never contends
//! with another vGPU).

use std::fmt;
use std::sync::{Arc, Mutex};

use shadow_mmu::{ContextId, GpuVa, MmuError, PageSize, PhysicalMmu, ShadowPte, VramOffset};
use thiserror::Error;

use super::access::{Access, PhysicalAddress};
use super::fault::{MmuFault, MmuFaultReason};
use super::sim::SimMmu;
use crate::sync::lock;

/// Most contexts the simulated GPU's MMU has, over all its vGPUs' channels
/// (64 vGPUs of 64 channels).
pub const MAX_CONTEXTS: u32 = 4096;

/// A range of the GPU's physical VRAM that contexts are bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Partition {
    /// First byte of the partition in the GPU's VRAM.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Partition {
    /// The physical VRAM address of `len` bytes at `offset` in the
    /// partition, if they lie inside it.
    pub fn physical(&self, offset: u64, len: u64) -> Option<u64> {
        let end = offset.checked_add(len)?;
        (end <= self.size).then(|| self.base + offset)
    }

    /// The partition offset of the physical VRAM address `address`, if it
    /// lies inside the partition.
    pub fn offset_of(&self, address: u64) -> Option<u64> {
        address
            .checked_sub(self.base)
            .filter(|&offset| offset < self.size)
    }
}

/// Why contexts could not be bound.
#[derive(Debug, Error)]
pub enum ContextError {
    /// The GPU's MMU has no free contexts left.
    #[error("the GPU MMU has {free} free contexts of {MAX_CONTEXTS}; {wanted} are needed")]
    Exhausted {
        /// Contexts asked for.
        wanted: u32,
        /// Contexts free.
        free: u32,
    },
}

/// The GPU-wide context id space of one GPU. Share it with `Arc`; a leaf
/// lock, held only to take or return ids.
#[derive(Debug)]
pub struct ContextIds {
    used: Mutex<Vec<bool>>,
}

impl Default for ContextIds {
    fn default() -> Self {
        Self {
            used: Mutex::new(vec![false; MAX_CONTEXTS as usize]),
        }
    }
}

impl ContextIds {
    /// Takes `count` free ids, lowest first, or none.
    fn take(self: &Arc<Self>, count: u32) -> Result<ContextLease, ContextError> {
        let mut used = lock(&self.used);
        let free: Vec<u32> = (0..MAX_CONTEXTS)
            .filter(|&id| !used[id as usize])
            .take(count as usize)
            .collect();
        if free.len() < count as usize {
            let total_free = used.iter().filter(|u| !**u).count() as u32;
            return Err(ContextError::Exhausted {
                wanted: count,
                free: total_free,
            });
        }
        for &id in &free {
            used[id as usize] = true;
        }
        Ok(ContextLease {
            ids: free.into_iter().map(ContextId).collect(),
            owner: Arc::clone(self),
        })
    }

    /// How many ids are free.
    pub fn free(&self) -> u32 {
        lock(&self.used).iter().filter(|u| !**u).count() as u32
    }
}

/// Ids taken from [`ContextIds`]; given back when dropped.
#[derive(Debug)]
struct ContextLease {
    ids: Vec<ContextId>,
    owner: Arc<ContextIds>,
}

impl Drop for ContextLease {
    fn drop(&mut self) {
        let mut used = lock(&self.owner.used);
        for id in &self.ids {
            if let Some(slot) = used.get_mut(id.0 as usize) {
                *slot = false;
            }
        }
    }
}

/// The contexts of a GPU MMU that one vGPU owns, one per channel, all
/// bound to its VRAM partition: what a backend gives
/// [`PhysicalGpu::bind_contexts`](crate::PhysicalGpu::bind_contexts).
///
/// As [`PhysicalMmu`] it takes entries whose VRAM targets are offsets in
/// the partition (what the shadow MMU validated against the slice);
/// [`translate`](Self::translate) answers with physical VRAM addresses.
pub trait PartitionMmu: PhysicalMmu + Send + fmt::Debug {
    /// The GPU-wide context of each channel, channel 0 first.
    fn contexts(&self) -> &[ContextId];

    /// The VRAM every context is bound to.
    fn partition(&self) -> Partition;

    /// Translates `va` for an `access` in `ctx`, as an engine does. A VRAM
    /// result is a physical VRAM address, inside the partition.
    fn translate(
        &mut self,
        ctx: ContextId,
        va: GpuVa,
        access: Access,
    ) -> Result<PhysicalAddress, MmuFault>;

    /// Pages mapped in `ctx`.
    fn page_count(&self, ctx: ContextId) -> usize;

    /// Pages of `ctx` that start in `va..va + len`.
    fn page_count_in(&self, ctx: ContextId, va: GpuVa, len: u64) -> usize;

    /// Empties the tables and the TLB of `ctx`, which goes on existing.
    fn reset(&mut self, ctx: ContextId) -> Result<(), MmuError>;
}

/// The simulated MMU's contexts of one partition.
#[derive(Debug)]
pub struct BoundContexts {
    mmu: SimMmu,
    partition: Partition,
    lease: ContextLease,
}

impl BoundContexts {
    /// Takes `count` GPU-wide ids from `ids` and creates their contexts,
    /// empty and bound to `partition`.
    pub(crate) fn bind(
        ids: &Arc<ContextIds>,
        partition: Partition,
        count: u32,
    ) -> Result<Self, ContextError> {
        let lease = ids.take(count)?;
        let mut mmu = SimMmu::new();
        for &ctx in &lease.ids {
            // Fresh ids on a fresh table: creation cannot collide.
            let _ = mmu.create_context(ctx);
        }
        Ok(Self {
            mmu,
            partition,
            lease,
        })
    }
}

impl PartitionMmu for BoundContexts {
    fn contexts(&self) -> &[ContextId] {
        &self.lease.ids
    }

    fn partition(&self) -> Partition {
        self.partition
    }

    fn translate(
        &mut self,
        ctx: ContextId,
        va: GpuVa,
        access: Access,
    ) -> Result<PhysicalAddress, MmuFault> {
        match self.mmu.translate(ctx, va, access)? {
            PhysicalAddress::Vram(offset) => self
                .partition
                .physical(offset.0, 1)
                .map(|address| PhysicalAddress::Vram(VramOffset(address)))
                // The bound register: nothing past the partition is
                // reachable, whatever the entry says.
                .ok_or(MmuFault {
                    ctx,
                    va,
                    access,
                    reason: MmuFaultReason::NotPresent,
                }),
            system => Ok(system),
        }
    }

    fn page_count(&self, ctx: ContextId) -> usize {
        self.mmu.page_count(ctx)
    }

    fn page_count_in(&self, ctx: ContextId, va: GpuVa, len: u64) -> usize {
        self.mmu.page_count_in(ctx, va, len)
    }

    fn reset(&mut self, ctx: ContextId) -> Result<(), MmuError> {
        self.mmu.reset(ctx)
    }
}

impl PhysicalMmu for BoundContexts {
    fn map(
        &mut self,
        ctx: ContextId,
        va: GpuVa,
        size: PageSize,
        pte: &ShadowPte,
    ) -> Result<(), MmuError> {
        self.mmu.map(ctx, va, size, pte)
    }

    fn unmap(&mut self, ctx: ContextId, va: GpuVa, len: u64) -> Result<(), MmuError> {
        self.mmu.unmap(ctx, va, len)
    }

    fn invalidate(&mut self, ctx: ContextId) {
        self.mmu.invalidate(ctx);
    }

    fn mapped_pages(
        &self,
        ctx: ContextId,
        va: GpuVa,
        len: u64,
        each: &mut dyn FnMut(GpuVa, &ShadowPte),
    ) -> Result<(), MmuError> {
        self.mmu.mapped_pages(ctx, va, len, each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_gpu_wide_and_come_back_when_dropped() {
        let ids = Arc::new(ContextIds::default());
        let a = BoundContexts::bind(
            &ids,
            Partition {
                base: 0,
                size: 1 << 20,
            },
            4,
        )
        .unwrap();
        let b = BoundContexts::bind(
            &ids,
            Partition {
                base: 1 << 20,
                size: 1 << 20,
            },
            4,
        )
        .unwrap();
        assert!(a.contexts().iter().all(|c| !b.contexts().contains(c)));
        assert_eq!(ids.free(), MAX_CONTEXTS - 8);
        drop(a);
        assert_eq!(ids.free(), MAX_CONTEXTS - 4);
    }

    #[test]
    fn the_id_space_is_bounded() {
        let ids = Arc::new(ContextIds::default());
        let _all = BoundContexts::bind(
            &ids,
            Partition {
                base: 0,
                size: 1 << 20,
            },
            MAX_CONTEXTS,
        )
        .unwrap();
        assert!(matches!(
            BoundContexts::bind(
                &ids,
                Partition {
                    base: 0,
                    size: 1 << 20
                },
                1
            ),
            Err(ContextError::Exhausted { wanted: 1, free: 0 })
        ));
    }

    #[test]
    fn a_context_of_one_vgpu_is_unknown_to_another() {
        let ids = Arc::new(ContextIds::default());
        let a = BoundContexts::bind(
            &ids,
            Partition {
                base: 0,
                size: 1 << 20,
            },
            1,
        )
        .unwrap();
        let mut b = BoundContexts::bind(
            &ids,
            Partition {
                base: 1 << 20,
                size: 1 << 20,
            },
            1,
        )
        .unwrap();
        let theirs = a.contexts()[0];
        assert!(matches!(
            b.translate(theirs, GpuVa(0), Access::Read),
            Err(MmuFault {
                reason: MmuFaultReason::UnknownContext,
                ..
            })
        ));
        assert!(matches!(b.reset(theirs), Err(MmuError::UnknownContext(_))));
    }

    #[test]
    fn partition_arithmetic_stays_inside() {
        let p = Partition {
            base: 0x10_0000,
            size: 0x10_0000,
        };
        assert_eq!(p.physical(0, 0x10_0000), Some(0x10_0000));
        assert_eq!(p.physical(1, 0x10_0000), None);
        assert_eq!(p.physical(u64::MAX, 2), None);
        assert_eq!(p.offset_of(0x1f_ffff), Some(0xf_ffff));
        assert_eq!(p.offset_of(0x20_0000), None);
        assert_eq!(p.offset_of(0xf_ffff), None);
    }
}
