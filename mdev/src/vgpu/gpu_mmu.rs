//! One vGPU's GPU MMU: the shadow builder that walks and validates the
//! guest's page tables, and the contexts of the physical MMU it programs
//! (one per channel, GPU-wide ids bound to the vGPU's partition).
//!
//! Everything here is derived from what the guest and its VMM gave (roots
//! it wrote, DMA windows it mapped): DEVICE_RESET and a detach empty it,
//! DMA_UNMAP revokes every entry into the range before it is answered.

use shadow_mmu::{
    ContextId, FaultCode, GpuVa, Iova, PageSize, PageTableMemory, ShadowError, ShadowMmu,
    ShadowSummary, VaRange, WalkLimits,
};
use thiserror::Error;
use vgpu_emulation::{FaultReason, MmuRequest, Translation};

use crate::dma::DmaWindows;
use crate::mmu::{Access, MmuFaultReason, PartitionMmu, PhysicalAddress};
use crate::owned::OwnedMemory;
use crate::slice::VramAperture;

/// What a request came to.
#[derive(Debug)]
pub enum MmuOutcome {
    /// Tables were (re)walked; `summary` says what was programmed and what
    /// was refused.
    Shadowed(ShadowSummary),
    /// The translate port's answer, for the device model.
    Translated(Result<Translation, FaultReason>),
}

/// The GPU MMU could not do what was asked: a daemon bug or a request the
/// device model should not have made, never a guest error (those are
/// faults).
#[derive(Debug, Error)]
pub enum GpuMmuError {
    /// The device model named a channel this vGPU has no context for.
    #[error("channel {0} has no MMU context")]
    NoSuchChannel(u32),
    /// An invalidation past the top of the address space (the device
    /// checks ranges, so this is a device-model bug).
    #[error("invalidation of {size:#x} bytes at {va:#x} is outside the address space")]
    Range {
        /// Start of the range.
        va: u64,
        /// Its length.
        size: u64,
    },
    /// The physical MMU refused to be programmed; the channel's
    /// translations fault until the next invalidation.
    #[error("cannot program the GPU MMU")]
    Shadow(#[source] ShadowError),
    /// Revoking entries into an unmapped range failed; every translation
    /// of the vGPU was dropped instead, so none into the range survives.
    #[error("cannot revoke GPU MMU entries; every translation of this vGPU was dropped instead")]
    Revoke(#[source] ShadowError),
    /// The shadow state could not be emptied; the physical contexts were.
    #[error("cannot empty the shadow MMU")]
    Reset(#[source] ShadowError),
}

/// Fewest translations (pages) a vGPU may hold, whatever its VRAM size.
const MIN_PAGE_BUDGET: u64 = 1 << 18;

/// The GPU MMU of one vGPU.
///
/// Two bounds keep what a guest's tables cost the daemon in check, each
/// one a rule a driver can follow (docs/device-interface.md, "The GPU
/// MMU"): every walk obeys the same [`WalkLimits`] (time per walk), and
/// the channels together hold at most `budget` pages (memory per vGPU).
#[derive(Debug)]
pub struct GpuMmu {
    shadow: ShadowMmu,
    physical: Box<dyn PartitionMmu>,
    /// Most pages (4 KiB or 2 MiB alike) the channels' physical tables
    /// hold together: a guest can alias one table under every entry of
    /// another and make a few KiB of tables map the whole address space,
    /// so the daemon's memory for one vGPU is bounded by what the vGPU
    /// owns, not by what its tables claim.
    budget: u64,
}

impl GpuMmu {
    /// The MMU of a vGPU with `vram_size` bytes of VRAM over `physical`,
    /// its contexts (one per channel, all empty): its channels together
    /// may hold twice its VRAM in 4 KiB pages (at least 256 Ki pages).
    pub fn new(physical: Box<dyn PartitionMmu>, vram_size: u64) -> Self {
        let budget = (2 * (vram_size >> 12)).max(MIN_PAGE_BUDGET);
        Self {
            shadow: ShadowMmu::new(WalkLimits::default()),
            physical,
            budget,
        }
    }

    /// The GPU-wide context of `channel`.
    pub fn context(&self, channel: u32) -> Result<ContextId, GpuMmuError> {
        self.physical
            .contexts()
            .get(channel as usize)
            .copied()
            .ok_or(GpuMmuError::NoSuchChannel(channel))
    }

    /// The physical contexts, for engines that translate through them.
    pub fn physical(&mut self) -> &mut dyn PartitionMmu {
        self.physical.as_mut()
    }

    /// Caps the pages that the re-shadow of `range` in `ctx` may map at
    /// what is left of the budget once every page it will not replace is
    /// counted: those of the other contexts, and those of `ctx` outside
    /// the range as the shadow widens it (whole 2 MiB).
    fn spend_budget(&mut self, ctx: ContextId, range: VaRange) {
        let range = range.align_out(PageSize::Size2MiB);
        let held: u64 = self
            .physical
            .contexts()
            .iter()
            .map(|&c| self.physical.page_count(c) as u64)
            .sum();
        let replaced = self
            .physical
            .page_count_in(ctx, range.start(), range.size()) as u64;
        let kept = held.saturating_sub(replaced);
        self.shadow.set_max_pages(self.budget.saturating_sub(kept));
    }

    /// Carries out what the guest asked through the MMU registers.
    pub fn handle(
        &mut self,
        request: MmuRequest,
        vram: &VramAperture,
        windows: &DmaWindows,
    ) -> Result<MmuOutcome, GpuMmuError> {
        let owned = OwnedMemory { vram, windows };
        let memory = PageTableMemory::new(&owned, vram);
        let shadowed = match request {
            MmuRequest::SetRoot { channel, root } => {
                let ctx = self.context(channel)?;
                self.spend_budget(ctx, VaRange::ALL);
                self.shadow
                    .set_root(ctx, root, &memory, &owned, self.physical.as_mut())
            }
            MmuRequest::Invalidate { channel, va, size } => {
                let ctx = self.context(channel)?;
                let range =
                    VaRange::new(GpuVa(va), size).map_err(|_| GpuMmuError::Range { va, size })?;
                self.spend_budget(ctx, range);
                self.shadow
                    .invalidate(ctx, range, &memory, &owned, self.physical.as_mut())
            }
            MmuRequest::InvalidateAll { channel } => {
                let ctx = self.context(channel)?;
                self.spend_budget(ctx, VaRange::ALL);
                self.shadow
                    .invalidate_all(ctx, &memory, &owned, self.physical.as_mut())
            }
            MmuRequest::Translate { channel, va, write } => {
                return Ok(MmuOutcome::Translated(self.translate(channel, va, write)));
            }
        };
        shadowed
            .map(MmuOutcome::Shadowed)
            .map_err(GpuMmuError::Shadow)
    }

    /// Translates as an engine would, through the physical MMU, for the
    /// translate port: a VRAM result is an offset in the vGPU's slice. A
    /// fault says why: the reason the walk refused the entry when it did,
    /// else what the physical MMU saw.
    fn translate(
        &mut self,
        channel: u32,
        va: u64,
        write: bool,
    ) -> Result<Translation, FaultReason> {
        let Ok(ctx) = self.context(channel) else {
            return Err(FaultReason::NotPresent);
        };
        let access = if write { Access::Write } else { Access::Read };
        let partition = self.physical.partition();
        match self.physical.translate(ctx, GpuVa(va), access) {
            Ok(PhysicalAddress::Vram(address)) => match partition.offset_of(address.0) {
                Some(offset) => Ok(Translation {
                    address: offset,
                    system: false,
                }),
                None => Err(FaultReason::OutsideVram),
            },
            Ok(PhysicalAddress::System(iova)) => Ok(Translation {
                address: iova.0,
                system: true,
            }),
            Err(fault) => Err(match fault.reason {
                MmuFaultReason::ReadOnly => FaultReason::ReadOnly,
                _ => self.fault_reason(ctx, GpuVa(va)),
            }),
        }
    }

    /// Why `va` of `ctx` faults when the physical MMU has no page there:
    /// the reason the last walk (or revocation) recorded, else not present.
    pub fn fault_reason(&self, ctx: ContextId, va: GpuVa) -> FaultReason {
        self.shadow
            .fault_code(ctx, va)
            .map_or(FaultReason::NotPresent, fault_reason)
    }

    /// Removes every shadow entry into `iova..iova + len` from every
    /// context (DMA_UNMAP). If that fails, it fails closed: no translation
    /// into the range may outlive the unmap, so every translation goes (as
    /// on reset), the channels fault until the guest sets their roots
    /// again, and the error says so. Returns how many entries went.
    pub fn revoke(&mut self, iova: u64, len: u64) -> Result<usize, GpuMmuError> {
        self.shadow
            .revoke_system_range(Iova(iova), len, self.physical.as_mut())
            .map_err(|e| {
                // The physical contexts are emptied whatever this says.
                let _ = self.reset();
                GpuMmuError::Revoke(e)
            })
    }

    /// Forgets every root and translation (DEVICE_RESET). The physical
    /// contexts are emptied even if the shadow state could not be.
    pub fn reset(&mut self) -> Result<(), GpuMmuError> {
        let shadow = self.shadow.reset(self.physical.as_mut());
        for ctx in self.physical.contexts().to_vec() {
            let _ = self.physical.reset(ctx);
        }
        shadow.map_err(GpuMmuError::Reset)
    }
}

fn fault_reason(code: FaultCode) -> FaultReason {
    match code {
        FaultCode::NotPresent => FaultReason::NotPresent,
        FaultCode::InvalidEntry => FaultReason::InvalidEntry,
        FaultCode::OutsideVram => FaultReason::OutsideVram,
        FaultCode::NotMapped => FaultReason::NotMapped,
        FaultCode::ReadOnly => FaultReason::ReadOnly,
        FaultCode::WalkLimit => FaultReason::WalkLimit,
    }
}
