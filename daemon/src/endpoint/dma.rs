//! Carrying out the device's DMA requests against the guest memory the VMM
//! mapped: straight through the daemon's mapping when the map came with an
//! fd, or by asking the client (DMA_READ/DMA_WRITE on the same socket) when
//! it did not.
//!
//! Permissions are checked before a byte moves: a copy into guest memory
//! resolves its target as writable first, so a refused copy reads nothing
//! and writes nothing anywhere. Remote copies are a small state machine
//! driven by the session: one request in flight at a time, in chunks of the
//! negotiated transfer size, while the session keeps answering the client's
//! own requests (a vCPU waiting on a register must never wait on DMA).
//!
//! The queue of requests is the device's (`VgpuDevice::next_dma`, at most
//! 16): the engine runs its oldest request and holds nothing else, so each
//! completion is reported for the request it belongs to.

use vgpu_emulation::{DmaDirection, DmaFault, DmaRequest};
use vgpu_mdev::{DmaTarget, DmaWindows, VramAperture};

/// The DMA engine of one session.
#[derive(Debug)]
pub struct DmaEngine {
    in_flight: Option<RemoteCopy>,
    /// Staging buffer, kept between copies so the steady state does not
    /// allocate.
    bounce: Vec<u8>,
}

/// A copy that needs the client.
#[derive(Debug)]
struct RemoteCopy {
    request: DmaRequest,
    /// Bytes already transferred.
    done: usize,
}

/// What the session must do next for the copy in flight.
#[derive(Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Nothing is in flight.
    Idle,
    /// Ask the client to read `len` bytes at `iova` (DMA_READ).
    Read { iova: u64, len: usize },
    /// Ask the client to write the bytes of [`DmaEngine::chunk`] at `iova`
    /// (DMA_WRITE).
    Write { iova: u64, start: usize, len: usize },
}

impl DmaEngine {
    pub fn new(capacity: usize) -> Self {
        Self {
            in_flight: None,
            bounce: Vec::with_capacity(capacity),
        }
    }

    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Forgets the copy in flight (device reset): nothing of it will touch
    /// memory any more.
    pub fn abort(&mut self) {
        self.in_flight = None;
    }

    /// Starts `request`, the device's oldest, while none is in flight.
    /// Local copies complete at once and are returned for the device to be
    /// told; a remote copy stays in flight.
    pub fn start(
        &mut self,
        request: DmaRequest,
        windows: &DmaWindows,
        vram: &VramAperture,
    ) -> Option<Result<(), DmaFault>> {
        if self.in_flight.is_some() {
            return None;
        }
        let len = request.len as usize;
        self.bounce.clear();
        self.bounce.resize(len, 0);
        let write = request.direction == DmaDirection::FromVram;
        let target = match windows.resolve(request.iova, len as u64, write) {
            Ok(t) => t,
            Err(e) => return Some(Err(fault(&e))),
        };
        match (request.direction, target) {
            (DmaDirection::ToVram, DmaTarget::Local(local)) => Some(
                local
                    .read(&mut self.bounce)
                    .map_err(|e| fault(&e))
                    .and_then(|()| vram_write(vram, request.vram_offset, &self.bounce)),
            ),
            (DmaDirection::FromVram, DmaTarget::Local(local)) => Some(
                vram_read(vram, request.vram_offset, &mut self.bounce)
                    .and_then(|()| local.write(&self.bounce).map_err(|e| fault(&e))),
            ),
            (DmaDirection::ToVram, DmaTarget::Remote { .. }) => {
                self.in_flight = Some(RemoteCopy { request, done: 0 });
                None
            }
            (DmaDirection::FromVram, DmaTarget::Remote { .. }) => {
                if let Err(f) = vram_read(vram, request.vram_offset, &mut self.bounce) {
                    return Some(Err(f));
                }
                self.in_flight = Some(RemoteCopy { request, done: 0 });
                None
            }
        }
    }

    /// The next message the remote copy needs, in chunks of at most
    /// `max_chunk` bytes.
    pub fn next_step(&self, max_chunk: usize) -> NextStep {
        let Some(copy) = &self.in_flight else {
            return NextStep::Idle;
        };
        let total = copy.request.len as usize;
        let len = (total - copy.done).min(max_chunk.max(1));
        let iova = copy.request.iova + copy.done as u64;
        match copy.request.direction {
            DmaDirection::ToVram => NextStep::Read { iova, len },
            DmaDirection::FromVram => NextStep::Write {
                iova,
                start: copy.done,
                len,
            },
        }
    }

    /// Bytes of the staging buffer, for a DMA_WRITE chunk.
    pub fn chunk(&self, start: usize, len: usize) -> &[u8] {
        self.bounce.get(start..start + len).unwrap_or_default()
    }

    /// The client answered the chunk in flight: `data` for a read. Returns
    /// the copy's result once it is whole (or failed).
    pub fn chunk_done(
        &mut self,
        data: Option<&[u8]>,
        windows: &DmaWindows,
        vram: &VramAperture,
    ) -> Option<Result<(), DmaFault>> {
        let copy = self.in_flight.as_mut()?;
        // The client may have unmapped the range while the copy was in
        // flight: it must not complete into memory that is gone.
        let write = copy.request.direction == DmaDirection::FromVram;
        let total = copy.request.len as usize;
        if let Err(e) = windows.resolve(copy.request.iova, total as u64, write) {
            self.in_flight = None;
            return Some(Err(fault(&e)));
        }
        if let Some(data) = data {
            let Some(slot) = self.bounce.get_mut(copy.done..copy.done + data.len()) else {
                self.in_flight = None;
                return Some(Err(DmaFault::Failed));
            };
            slot.copy_from_slice(data);
            copy.done += data.len();
        }
        if copy.done < total {
            return None;
        }
        let request = copy.request;
        self.in_flight = None;
        Some(match request.direction {
            DmaDirection::ToVram => vram_write(vram, request.vram_offset, &self.bounce),
            DmaDirection::FromVram => Ok(()),
        })
    }

    /// Records that a DMA_WRITE chunk of `len` bytes was accepted.
    pub fn advance(&mut self, len: usize) {
        if let Some(copy) = self.in_flight.as_mut() {
            copy.done += len;
        }
    }

    /// The client refused or botched the chunk in flight.
    pub fn fail(&mut self) -> Option<Result<(), DmaFault>> {
        self.in_flight.take().map(|_| Err(DmaFault::Failed))
    }
}

fn vram_read(vram: &VramAperture, offset: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
    // The device checked the range against the slice; a failure here is a
    // device-model bug, reported to the guest as a failed copy.
    vram.read(offset, buf).map_err(|_| DmaFault::Failed)
}

fn vram_write(vram: &VramAperture, offset: u64, data: &[u8]) -> Result<(), DmaFault> {
    vram.write(offset, data).map_err(|_| DmaFault::Failed)
}

fn fault(e: &vgpu_mdev::DmaError) -> DmaFault {
    match e {
        vgpu_mdev::DmaError::ReadOnly { .. } => DmaFault::ReadOnly,
        vgpu_mdev::DmaError::NotMapped { .. } => DmaFault::NotMapped,
        _ => DmaFault::Failed,
    }
}
