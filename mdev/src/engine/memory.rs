//! A channel's GPU virtual memory as the validator and the engines reach
//! it: through the channel's context of the GPU MMU, into the vGPU's VRAM
//! and the DMA windows its VMM mapped with a file descriptor.
//!
//! Engines run on the GPU's own thread and cannot wait on the VMM, so
//! guest memory mapped without a file descriptor (reached only by asking
//! the client) is out of their reach: an access there faults with reason 4
//! (not mapped), as a page-table walk there does.

use shadow_mmu::{ContextId, GpuVa as MmuVa};
use vgpu_commands::{FetchFault, GpuVa, StreamMemory};
use vgpu_emulation::FaultReason;

use crate::dma::{DmaError, DmaWindows};
use crate::mmu::{Completion, EngineMemory, EngineMemoryError, MmuFaultReason};
use crate::slice::VramAperture;
use crate::vgpu::GpuMmu;

/// Why an engine access faulted, as the MMU contract reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessFault {
    /// The first address that could not be reached.
    pub va: u64,
    /// Whether the access was a write.
    pub write: bool,
    /// The FAULT_INFO reason.
    pub reason: FaultReason,
}

/// One channel's memory, borrowed for one piece of engine work.
pub struct ChannelMemory<'a> {
    mmu: &'a mut GpuMmu,
    ctx: ContextId,
    vram: &'a VramAperture,
    windows: &'a DmaWindows,
}

impl std::fmt::Debug for ChannelMemory<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelMemory")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl<'a> ChannelMemory<'a> {
    /// The memory of context `ctx` of `mmu`.
    pub fn new(
        mmu: &'a mut GpuMmu,
        ctx: ContextId,
        vram: &'a VramAperture,
        windows: &'a DmaWindows,
    ) -> Self {
        Self {
            mmu,
            ctx,
            vram,
            windows,
        }
    }

    /// Reads `buf.len()` bytes at `va`. On a fault nothing is read.
    pub fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), AccessFault> {
        let result = EngineMemory::new(self.mmu.physical(), self.ctx, self.vram, self.windows)
            .local_only()
            .read(MmuVa(va), buf);
        self.settle(va, false, result)
    }

    /// Writes `data` at `va`. On a fault nothing is written.
    pub fn write(&mut self, va: u64, data: &[u8]) -> Result<(), AccessFault> {
        let result = EngineMemory::new(self.mmu.physical(), self.ctx, self.vram, self.windows)
            .local_only()
            .write(MmuVa(va), data);
        self.settle(va, true, result)
    }

    /// Copies `len` bytes from `src` to `dst`: straight within VRAM when
    /// both lie there, else through `bounce`. On a fault of the source
    /// nothing is written; of the destination, nothing either (both are
    /// checked before a byte moves).
    pub fn copy(
        &mut self,
        src: u64,
        dst: u64,
        len: usize,
        bounce: &mut Vec<u8>,
    ) -> Result<(), AccessFault> {
        let mut engine =
            EngineMemory::new(self.mmu.physical(), self.ctx, self.vram, self.windows).local_only();
        let from = engine.vram_runs(MmuVa(src), len, crate::mmu::Access::Read);
        let to = engine.vram_runs(MmuVa(dst), len, crate::mmu::Access::Write);
        match (from, to) {
            (Ok(Some(from)), Ok(Some(to))) => {
                let (mut i, mut j) = (0, 0);
                let (mut a, mut b) = (from.first().copied(), to.first().copied());
                while let (Some((s, sl)), Some((d, dl))) = (a, b) {
                    let n = sl.min(dl);
                    // Both runs were checked inside the partition, which
                    // the aperture holds.
                    let _ = self.vram.copy_within(s, d, n);
                    a = if n == sl {
                        i += 1;
                        from.get(i).copied()
                    } else {
                        Some((s + n as u64, sl - n))
                    };
                    b = if n == dl {
                        j += 1;
                        to.get(j).copied()
                    } else {
                        Some((d + n as u64, dl - n))
                    };
                }
                Ok(())
            }
            (Err(e), _) => self.settle(src, false, Err(e)),
            (_, Err(e)) => self.settle(dst, true, Err(e)),
            _ => {
                bounce.resize(len, 0);
                self.read(src, bounce)?;
                self.write(dst, bounce)
            }
        }
    }

    /// Where the page of `va` lies in the vGPU's VRAM slice (its offset),
    /// or `None` if it is guest memory; a fault if nothing is mapped there.
    pub fn vram_page(&mut self, va: u64) -> Result<Option<u64>, AccessFault> {
        let partition = self.mmu.physical().partition();
        match self
            .mmu
            .physical()
            .translate(self.ctx, MmuVa(va), crate::mmu::Access::Read)
        {
            Ok(crate::mmu::PhysicalAddress::Vram(address)) => Ok(partition.offset_of(address.0)),
            Ok(crate::mmu::PhysicalAddress::System(_)) => Ok(None),
            Err(fault) => Err(AccessFault {
                va,
                write: false,
                reason: self.mmu.fault_reason(self.ctx, fault.va),
            }),
        }
    }

    /// The GPU MMU, for TLB_INVALIDATE.
    pub fn mmu(&mut self) -> &mut GpuMmu {
        self.mmu
    }

    /// The VRAM and windows, for TLB_INVALIDATE's walk.
    pub fn owned(&self) -> (&'a VramAperture, &'a DmaWindows) {
        (self.vram, self.windows)
    }

    fn settle(
        &self,
        va: u64,
        write: bool,
        result: Result<Completion, EngineMemoryError>,
    ) -> Result<(), AccessFault> {
        match result {
            Ok(Completion::Done) => Ok(()),
            // Windows without an fd: the engine cannot ask the client. The
            // pieces before them were copied; the guest sees a fault at
            // the first such piece, and the channel stops.
            Ok(Completion::NeedsClient(pieces)) => Err(AccessFault {
                va: va.wrapping_add(pieces.first().map_or(0, |p| p.offset as u64)),
                write,
                reason: FaultReason::NotMapped,
            }),
            Err(EngineMemoryError::Fault(fault)) => Err(AccessFault {
                va: fault.va.0,
                write,
                reason: match fault.reason {
                    MmuFaultReason::ReadOnly => FaultReason::ReadOnly,
                    _ => self.mmu.fault_reason(self.ctx, fault.va),
                },
            }),
            Err(EngineMemoryError::Dma { va, source }) => Err(AccessFault {
                va: va.0,
                write,
                reason: match source {
                    DmaError::ReadOnly { .. } => FaultReason::ReadOnly,
                    _ => FaultReason::NotMapped,
                },
            }),
            Err(EngineMemoryError::NoFd { va }) => Err(AccessFault {
                va: va.0,
                write,
                reason: FaultReason::NotMapped,
            }),
            Err(EngineMemoryError::OutsideVram { va, .. }) => Err(AccessFault {
                va: va.0,
                write,
                reason: FaultReason::OutsideVram,
            }),
        }
    }
}

impl StreamMemory for ChannelMemory<'_> {
    fn read(&mut self, va: GpuVa, out: &mut [u8]) -> Result<(), FetchFault> {
        ChannelMemory::read(self, va.get(), out).map_err(|f| FetchFault {
            va: f.va,
            reason: fault_code(f.reason),
        })
    }
}

/// FAULT_INFO's number for a reason.
pub fn fault_code(reason: FaultReason) -> u8 {
    reason as u8
}
