//! One client's GPU MMU: the shadow builder that walks and validates the
//! guest's page tables, and the simulated physical MMU it programs (one
//! hardware context per channel).
//!
//! It lives with the session because everything it holds is derived from
//! what this client gave: page-table roots it wrote, DMA windows it mapped.
//! A disconnect drops it whole; DEVICE_RESET empties it; DMA_UNMAP revokes
//! every shadow entry into the range before the reply goes out.

use shadow_mmu::{
    ContextId, FaultCode, GpuVa, Iova, PageSize, PageTableMemory, ShadowMmu, ShadowSummary,
    VaRange, WalkLimits,
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

/// Fewest translations (pages) a vGPU may hold, whatever its VRAM size.
const MIN_PAGE_BUDGET: u64 = 1 << 18;

/// The GPU MMU of one session.
///
/// Two bounds keep what a guest's tables cost the daemon in check, each
/// one a rule a driver can follow (docs/device-interface.md, "The GPU
/// MMU"): every walk obeys the same [`WalkLimits`] (time per walk), and
/// the channels together hold at most `budget` pages (memory per vGPU).
#[derive(Debug)]
pub struct GpuMmu {
    shadow: ShadowMmu,
    physical: SimMmu,
    channels: u32,
    /// Most pages (4 KiB or 2 MiB alike) the channels' physical tables
    /// hold together: a guest can alias one table under every entry of
    /// another and make a few KiB of tables map the whole address space,
    /// so the daemon's memory for one vGPU is bounded by what the vGPU
    /// owns, not by what its tables claim.
    budget: u64,
}

impl GpuMmu {
    /// An MMU with one hardware context per channel, every one empty, for
    /// a vGPU with `vram_size` bytes of VRAM: its channels together may
    /// hold twice its VRAM in 4 KiB pages (at least 256 Ki pages).
    pub fn new(channels: u32, vram_size: u64) -> Self {
        let mut physical = SimMmu::new();
        for channel in 0..channels {
            // Fresh ids on a fresh MMU: creation cannot collide.
            let _ = physical.create_context(ContextId(channel));
        }
        let budget = (2 * (vram_size >> 12)).max(MIN_PAGE_BUDGET);
        Self {
            shadow: ShadowMmu::new(WalkLimits::default()),
            physical,
            channels,
            budget,
        }
    }

    /// Caps the pages that the re-shadow of `range` in `channel` may map
    /// at what is left of the budget once every page it will not replace
    /// is counted: those of the other channels, and those of `channel`
    /// outside the range as the shadow widens it (whole 2 MiB).
    fn spend_budget(&mut self, channel: u32, range: VaRange) {
        let range = range.align_out(PageSize::Size2MiB);
        let held: u64 = (0..self.channels)
            .map(|c| self.physical.page_count(ContextId(c)) as u64)
            .sum();
        let replaced =
            self.physical
                .page_count_in(ContextId(channel), range.start(), range.size()) as u64;
        let kept = held.saturating_sub(replaced);
        self.shadow.set_max_pages(self.budget.saturating_sub(kept));
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
