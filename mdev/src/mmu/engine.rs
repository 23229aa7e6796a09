//! [`EngineMemory`]: byte copies at a GPU VA, page by page through the MMU.
//!
//! This is the one way an engine (and the daemon's translate port, and the
//! copy and fill engines to come) touches a vGPU's memory: every 4 KiB page
//! of the range is translated in the context and resolved against the
//! vGPU's VRAM slice or DMA windows first, and only when every page passed
//! is a byte copied. An access that faults anywhere copies nothing.
//!
//! The DMA windows are checked again after translation although the
//! policy checked the entries when they were programmed: a stale
//! translation into a window the VMM has since unmapped is then refused
//! instead of reaching memory that is gone (real hardware without an IOMMU
//! would reach whatever is there now; the simulation reports it, so that
//! tests catch a daemon that revoked a window without invalidating).
//!
//! Pages in windows that are reached through the client cannot be copied
//! here; they come back as [`ClientPiece`]s for the caller to move with
//! `DMA_READ` / `DMA_WRITE`.

use shadow_mmu::{ContextId, GpuVa, Iova, VramOffset};
use thiserror::Error;

use super::access::{Access, PhysicalAddress};
use super::fault::{MmuFault, MmuFaultReason};
use super::partition::PartitionMmu;
use crate::dma::{DmaError, DmaTarget, DmaWindows, LocalDma};
use crate::slice::VramAperture;

/// The granule an access is split into: the smallest page, so that every
/// piece lies inside one page whatever the page size.
const PAGE: u64 = 4096;

/// An engine access that was refused; nothing was copied.
#[derive(Debug, Error)]
pub enum EngineMemoryError {
    /// A page of the range is not mapped, or not writable for a write.
    #[error("engine access faulted")]
    Fault(#[from] MmuFault),
    /// A page translates into guest memory that no DMA window holds, or
    /// that a read-only window holds for a write.
    #[error("GPU VA {va} translates to guest memory that the DMA windows refuse")]
    Dma {
        /// First VA of the refused piece.
        va: GpuVa,
        /// What the windows said.
        #[source]
        source: DmaError,
    },
    /// A page translates into a window that is reached only through the
    /// client, and the access was made without one
    /// ([`EngineMemory::local_only`]).
    #[error("GPU VA {va} translates to guest memory mapped without a file descriptor")]
    NoFd {
        /// First VA of the refused piece.
        va: GpuVa,
    },
    /// A page translates past the end of the VRAM slice (the context is
    /// not the slice's vGPU's).
    #[error("GPU VA {va} translates to {len:#x} bytes at VRAM {offset}, past the VRAM slice")]
    OutsideVram {
        /// First VA of the refused piece.
        va: GpuVa,
        /// Where it translated to.
        offset: VramOffset,
        /// Length of the piece in bytes.
        len: u64,
    },
}

/// A piece of an access that lies in a window reached through the client,
/// which the caller must copy with `DMA_READ` (for a read, into
/// `buf[offset..offset + len]`) or `DMA_WRITE` (for a write, from
/// `data[offset..offset + len]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientPiece {
    /// Where the piece starts in the caller's buffer.
    pub offset: usize,
    /// Where it starts in guest memory.
    pub iova: Iova,
    /// Its length in bytes.
    pub len: usize,
}

/// What is left of an access that the MMU allowed.
#[must_use = "pieces in windows reached through the client are not copied yet"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Every byte was copied.
    Done,
    /// Every piece in VRAM or in a mapped window was copied; these pieces,
    /// in address order, are for the caller to copy through the client.
    NeedsClient(Vec<ClientPiece>),
}

impl Completion {
    fn from_client_pieces(pieces: Vec<ClientPiece>) -> Self {
        if pieces.is_empty() {
            Completion::Done
        } else {
            Completion::NeedsClient(pieces)
        }
    }
}

/// Where one piece of an access goes, checked and ready to copy.
enum Resolved<'w> {
    Vram(u64),
    Local(LocalDma<'w>),
    Remote(Iova),
}

struct Piece<'w> {
    /// Where the piece starts in the caller's buffer.
    at: usize,
    len: usize,
    target: Resolved<'w>,
}

/// The memory of one context as an engine sees it: GPU virtual addresses,
/// translated by the MMU into the VRAM slice and DMA windows of the vGPU
/// that owns the context.
#[derive(Debug)]
pub struct EngineMemory<'a> {
    mmu: &'a mut dyn PartitionMmu,
    ctx: ContextId,
    vram: &'a VramAperture,
    windows: &'a DmaWindows,
    /// Pieces in windows without an fd are refused, not handed back.
    local_only: bool,
}

impl<'a> EngineMemory<'a> {
    /// Accesses in `ctx`, one of `mmu`'s contexts, which must be those of
    /// the vGPU that owns `vram` and `windows`: the MMU translates into its
    /// partition of VRAM, which `vram` holds for this attachment, and to
    /// addresses in its own VMM's windows.
    pub fn new(
        mmu: &'a mut dyn PartitionMmu,
        ctx: ContextId,
        vram: &'a VramAperture,
        windows: &'a DmaWindows,
    ) -> Self {
        Self {
            mmu,
            ctx,
            vram,
            windows,
            local_only: false,
        }
    }

    /// Accesses that cannot ask a client: a page in a window without an fd
    /// faults like any other page the access cannot reach, in address
    /// order, before anything is copied.
    pub fn local_only(mut self) -> Self {
        self.local_only = true;
        self
    }

    /// Reads `buf.len()` bytes at `va` into `buf`. On an error nothing is
    /// read into `buf`.
    pub fn read(&mut self, va: GpuVa, buf: &mut [u8]) -> Result<Completion, EngineMemoryError> {
        let pieces = self.resolve(va, buf.len(), Access::Read)?;
        let mut client = Vec::new();
        for piece in pieces {
            let chunk = &mut buf[piece.at..piece.at + piece.len];
            match piece.target {
                Resolved::Vram(offset) => self
                    .vram
                    .read(offset, chunk)
                    .map_err(|_| outside_vram(va, piece.at, offset, chunk.len()))?,
                Resolved::Local(dma) => {
                    dma.read(chunk).map_err(|source| EngineMemoryError::Dma {
                        va: piece_va(va, piece.at),
                        source,
                    })?
                }
                Resolved::Remote(iova) => client.push(ClientPiece {
                    offset: piece.at,
                    iova,
                    len: piece.len,
                }),
            }
        }
        Ok(Completion::from_client_pieces(client))
    }

    /// Writes `data` at `va`. On an error nothing is written.
    pub fn write(&mut self, va: GpuVa, data: &[u8]) -> Result<Completion, EngineMemoryError> {
        let pieces = self.resolve(va, data.len(), Access::Write)?;
        let mut client = Vec::new();
        for piece in pieces {
            let chunk = &data[piece.at..piece.at + piece.len];
            match piece.target {
                Resolved::Vram(offset) => self
                    .vram
                    .write(offset, chunk)
                    .map_err(|_| outside_vram(va, piece.at, offset, chunk.len()))?,
                Resolved::Local(dma) => {
                    dma.write(chunk).map_err(|source| EngineMemoryError::Dma {
                        va: piece_va(va, piece.at),
                        source,
                    })?
                }
                Resolved::Remote(iova) => client.push(ClientPiece {
                    offset: piece.at,
                    iova,
                    len: piece.len,
                }),
            }
        }
        Ok(Completion::from_client_pieces(client))
    }

    /// Where `len` bytes at `va` lie in VRAM, as runs of consecutive
    /// offsets `(offset, len)` in address order, if every byte is VRAM;
    /// `None` if some lie in guest memory. Checks the access as a copy
    /// would, copying nothing.
    pub fn vram_runs(
        &mut self,
        va: GpuVa,
        len: usize,
        access: Access,
    ) -> Result<Option<Vec<(u64, usize)>>, EngineMemoryError> {
        let pieces = self.resolve(va, len, access)?;
        let mut runs: Vec<(u64, usize)> = Vec::with_capacity(4);
        for piece in pieces {
            let Resolved::Vram(offset) = piece.target else {
                return Ok(None);
            };
            match runs.last_mut() {
                Some((start, run)) if *start + *run as u64 == offset => *run += piece.len,
                _ => runs.push((offset, piece.len)),
            }
        }
        Ok(Some(runs))
    }

    /// Translates and checks every page of `len` bytes at `va`, copying
    /// nothing.
    fn resolve(
        &mut self,
        va: GpuVa,
        len: usize,
        access: Access,
    ) -> Result<Vec<Piece<'a>>, EngineMemoryError> {
        let windows: &'a DmaWindows = self.windows;
        let partition = self.mmu.partition();
        let mut pieces = Vec::with_capacity(len.div_ceil(PAGE as usize) + 1);
        let mut at = 0usize;
        while at < len {
            // Addresses past the 48-bit space fault before this can wrap.
            let page_va = va.checked_add(at as u64).ok_or(MmuFault {
                ctx: self.ctx,
                va,
                access,
                reason: MmuFaultReason::NotPresent,
            })?;
            let in_page = (PAGE - page_va.0 % PAGE) as usize;
            let piece_len = in_page.min(len - at);
            let target = match self.mmu.translate(self.ctx, page_va, access)? {
                PhysicalAddress::Vram(address) => {
                    // The MMU answers with physical VRAM; the aperture holds
                    // the partition.
                    let offset = partition.offset_of(address.0).unwrap_or(u64::MAX);
                    let inside = offset
                        .checked_add(piece_len as u64)
                        .is_some_and(|end| end <= self.vram.size());
                    if !inside {
                        return Err(outside_vram(va, at, address.0, piece_len));
                    }
                    Resolved::Vram(offset)
                }
                PhysicalAddress::System(iova) => {
                    match windows.resolve(iova.0, piece_len as u64, access.is_write()) {
                        Ok(DmaTarget::Local(dma)) => Resolved::Local(dma),
                        Ok(DmaTarget::Remote { .. }) if self.local_only => {
                            return Err(EngineMemoryError::NoFd { va: page_va });
                        }
                        Ok(DmaTarget::Remote { .. }) => Resolved::Remote(iova),
                        Err(source) => {
                            return Err(EngineMemoryError::Dma {
                                va: page_va,
                                source,
                            });
                        }
                    }
                }
            };
            pieces.push(Piece {
                at,
                len: piece_len,
                target,
            });
            at += piece_len;
        }
        Ok(pieces)
    }
}

/// The VA of the piece `at` bytes into an access at `va` (which resolved,
/// so it does not wrap).
fn piece_va(va: GpuVa, at: usize) -> GpuVa {
    GpuVa(va.0.wrapping_add(at as u64))
}

fn outside_vram(va: GpuVa, at: usize, offset: u64, len: usize) -> EngineMemoryError {
    EngineMemoryError::OutsideVram {
        va: piece_va(va, at),
        offset: VramOffset(offset),
        len: len as u64,
    }
}
