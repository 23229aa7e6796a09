//! One client's GPU MMU: the shadow builder that walks and validates the
//! guest's page tables, and the simulated physical MMU it programs (one
//! hardware context per channel).
//!
//! It lives with the session because everything it holds is derived from
//! what this client gave: page-table roots it wrote, DMA windows it mapped.
//! A disconnect drops it whole; DEVICE_RESET empties it; DMA_UNMAP revokes
//! every shadow entry into the range before the reply goes out.

use shadow_mmu::{
    ContextId, FaultCode, GpuVa, Iova, PageTableMemory, ShadowMmu, ShadowSummary, VaRange,
    WalkLimits,
};
use vgpu_emulation::{FaultReason, MmuRequest, Translation};

use crate::error_chain::ErrorChain;
use vgpu_mdev::{
    Access, DmaWindows, MmuFaultReason, OwnedMemory, PhysicalAddress, SimMmu, VramAperture,
};

/// What a request came to.
#[derive(Debug)]
pub enum MmuOutcome {
    /// Tables were (re)walked; `summary` says what was programmed and what
    /// was refused.
    Shadowed(ShadowSummary),
    /// The translate port's answer, for the device model.
    Translated(Result<Translation, FaultReason>),
    /// The physical MMU refused to be programmed: a daemon bug, reported as
    /// an error line; the channel's translations fault until the next
    /// invalidation.
    Failed(String),
}

/// Fewest shadow entries a vGPU may have, whatever its VRAM size.
const MIN_ENTRY_BUDGET: u64 = 1 << 18;

/// The GPU MMU of one session.
#[derive(Debug)]
pub struct GpuMmu {
    shadow: ShadowMmu,
    physical: SimMmu,
    channels: u32,
    /// Most entries a walk may examine, across every channel's shadow
    /// tables: a guest can alias one table under every entry of another
    /// and make a few KiB of tables map the whole address space, so the
    /// daemon's memory and time for one vGPU are bounded by what it owns,
    /// not by what its tables claim.
    budget: u64,
}

impl GpuMmu {
    /// An MMU with one hardware context per channel, every one empty, for
    /// a vGPU with `vram_size` bytes of VRAM: its channels together may map
    /// twice its VRAM in 4 KiB pages (at least 256 Ki pages).
    pub fn new(channels: u32, vram_size: u64) -> Self {
        let mut physical = SimMmu::new();
        for channel in 0..channels {
            // Fresh ids on a fresh MMU: creation cannot collide.
            let _ = physical.create_context(ContextId(channel));
        }
        let budget = (2 * (vram_size >> 12)).max(MIN_ENTRY_BUDGET);
        Self {
            shadow: ShadowMmu::new(WalkLimits::default()),
            physical,
            channels,
            budget,
        }
    }

    /// Tightens the walk limits to what is left of the budget once the
    /// entries that the walk of `range` in `channel` will not replace are
    /// counted.
    fn spend_budget(&mut self, channel: u32, range: VaRange) {
        let kept: u64 = (0..self.channels)
            .map(|c| {
                let ctx = ContextId(c);
                let all = self.physical.page_count(ctx);
                let replaced = if c == channel {
                    self.physical
                        .page_count_in(ctx, range.start(), range.size())
                } else {
                    0
                };
                (all - replaced.min(all)) as u64
            })
            .sum();
        let mut limits = WalkLimits::default();
        limits.max_entries = limits
            .max_entries
            .min(self.budget.saturating_sub(kept).max(1));
        self.shadow.set_limits(limits);
    }

    /// Carries out what the guest asked through the MMU registers.
    pub fn handle(
        &mut self,
        request: MmuRequest,
        vram: &VramAperture,
        windows: &DmaWindows,
    ) -> MmuOutcome {
        let owned = OwnedMemory { vram, windows };
        let memory = PageTableMemory::new(&owned, vram);
        let shadowed = match request {
            MmuRequest::SetRoot { channel, root } => {
                self.spend_budget(channel, VaRange::ALL);
                self.shadow.set_root(
                    ContextId(channel),
                    root,
                    &memory,
                    &owned,
                    &mut self.physical,
                )
            }
            MmuRequest::Invalidate { channel, va, size } => {
                let Ok(range) = VaRange::new(GpuVa(va), size) else {
                    // The device checked alignment; a range past the top of
                    // the address space holds no translation to refresh.
                    return MmuOutcome::Failed(format!(
                        "invalidation of {size:#x} bytes at {va:#x} is outside the address space"
                    ));
                };
                self.spend_budget(channel, range);
                self.shadow.invalidate(
                    ContextId(channel),
                    range,
                    &memory,
                    &owned,
                    &mut self.physical,
                )
            }
            MmuRequest::InvalidateAll { channel } => {
                self.spend_budget(channel, VaRange::ALL);
                self.shadow
                    .invalidate_all(ContextId(channel), &memory, &owned, &mut self.physical)
            }
            MmuRequest::Translate { channel, va, write } => {
                return MmuOutcome::Translated(self.translate(channel, va, write));
            }
        };
        match shadowed {
            Ok(summary) => MmuOutcome::Shadowed(summary),
            Err(e) => MmuOutcome::Failed(ErrorChain(&e).to_string()),
        }
    }

    /// Translates as an engine would, through the physical MMU. A fault
    /// says why: the reason the walk refused the entry when it did, else
    /// what the physical MMU saw.
    fn translate(
        &mut self,
        channel: u32,
        va: u64,
        write: bool,
    ) -> Result<Translation, FaultReason> {
        let ctx = ContextId(channel);
        let access = if write { Access::Write } else { Access::Read };
        match self.physical.translate(ctx, GpuVa(va), access) {
            Ok(PhysicalAddress::Vram(offset)) => Ok(Translation {
                address: offset.0,
                system: false,
            }),
            Ok(PhysicalAddress::System(iova)) => Ok(Translation {
                address: iova.0,
                system: true,
            }),
            Err(fault) => Err(match fault.reason {
                MmuFaultReason::ReadOnly => FaultReason::ReadOnly,
                _ => self
                    .shadow
                    .fault_code(ctx, GpuVa(va))
                    .map_or(FaultReason::NotPresent, fault_reason),
            }),
        }
    }

    /// Removes every shadow entry into `iova..iova + len` from every
    /// context (DMA_UNMAP), before the caller replies. If that fails, it
    /// fails closed: no translation into the range may outlive the reply,
    /// so every translation goes (as on reset), the channels fault until
    /// the guest sets their roots again, and the error says so.
    pub fn revoke(&mut self, iova: u64, len: u64) -> Result<usize, String> {
        self.shadow
            .revoke_system_range(Iova(iova), len, &mut self.physical)
            .map_err(|e| {
                // The physical contexts are emptied whatever this says.
                let _ = self.reset();
                format!(
                    "{}; every translation of this vGPU was dropped instead",
                    ErrorChain(&e)
                )
            })
    }

    /// Forgets every root and translation (DEVICE_RESET). The physical
    /// contexts are emptied even if the shadow state could not be; the
    /// error says so.
    pub fn reset(&mut self) -> Result<(), String> {
        let shadow = self.shadow.reset(&mut self.physical);
        for channel in 0..self.channels {
            let _ = self.physical.reset(ContextId(channel));
        }
        shadow.map_err(|e| format!("cannot empty the shadow MMU: {}", ErrorChain(&e)))
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
