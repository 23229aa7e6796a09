//! Guest memory: `DMA_MAP` and `DMA_UNMAP` on the vGPU's windows, and the
//! DMA self-test's copies, straight through the daemon's mapping or by
//! asking the client (`DMA_READ` / `DMA_WRITE` on this socket) for maps
//! that came without an fd.

use vgpu_mdev::DmaBacking;
use vgpu_protocol::wire::{DmaMapFlags, DmaUnmapFlags};
use vgpu_protocol::{Header, ProtocolError};

use super::super::dma::NextStep;
use super::{Refusal, Session};
use crate::error_chain::ErrorChain;

impl Session<'_> {
    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one DMA_MAP message"
    )]
    pub(super) fn dma_map(
        &mut self,
        header: &Header,
        flags: DmaMapFlags,
        offset: u64,
        iova: u64,
        size: u64,
        has_fd: bool,
        fds: &mut vgpu_protocol::FdList,
    ) -> Result<(), Refusal> {
        let backing = match (has_fd, fds.take(0)) {
            (true, Some(fd)) => DmaBacking::Fd { fd, offset },
            _ => DmaBacking::Remote,
        };
        let writable = flags.contains(DmaMapFlags::WRITE);
        self.vgpu
            .device()
            .map_dma(iova, size, writable, backing)
            .map_err(Refusal::DmaMap)?;
        vgpu_protocol::encode_empty_reply(&mut self.out, header);
        Ok(())
    }

    /// Nothing reaches the range once the reply is out: the vGPU removes
    /// the window and every GPU MMU entry into it in one call, after any
    /// engine work on it; a copy of the self-test through the client
    /// re-checks its window on every chunk, and local ones completed
    /// before this message was read.
    pub(super) fn dma_unmap(
        &mut self,
        header: &Header,
        argsz: u32,
        flags: DmaUnmapFlags,
        iova: u64,
        size: u64,
    ) -> Result<(), Refusal> {
        let range = (!flags.contains(DmaUnmapFlags::ALL)).then_some(size);
        let unmapped = self
            .vgpu
            .device()
            .unmap_dma(iova, range)
            .map_err(|e| Refusal::DmaUnmap(e.0))?;
        match unmapped.revoked {
            Ok(0) => {}
            Ok(n) => tracing::debug!(entries = n, "GPU MMU entries revoked by DMA_UNMAP"),
            Err(e) => self
                .vgpu
                .client_log
                .log(|| tracing::error!(error = %ErrorChain(&e), "DMA_UNMAP")),
        }
        vgpu_protocol::encode_dma_unmap_reply(&mut self.out, header, argsz, flags, iova, size);
        Ok(())
    }

    /// Runs the device's DMA queue, oldest first, until it is empty or
    /// the oldest request waits on the client.
    pub(super) fn pump_dma(&mut self) {
        loop {
            if self.dma.is_busy() {
                if self.awaiting.is_none() {
                    self.send_dma_step();
                }
                return;
            }
            let Some(request) = self.vgpu.hw().device.next_dma() else {
                return;
            };
            let started = {
                let memory = self.vgpu.device().memory();
                self.dma.start(request, &memory.windows, &self.aperture)
            };
            if let Some(result) = started {
                self.complete_dma(result);
            }
        }
    }

    /// Completes the device's oldest DMA request.
    fn complete_dma(&mut self, result: Result<(), vgpu_emulation::DmaFault>) {
        if let Err(fault) = result {
            self.vgpu
                .client_log
                .log(|| tracing::warn!(?fault, "DMA refused"));
        }
        let effects = self.vgpu.hw().device.complete_dma(result);
        self.apply(effects);
    }

    /// Sends the DMA_READ or DMA_WRITE that the copy in flight needs next.
    fn send_dma_step(&mut self) {
        let chunk = self.max_data_xfer_size() as usize;
        let msg_id = self.next_msg_id;
        self.next_msg_id = self.next_msg_id.wrapping_add(1) | 0x8000;
        let request = match self.dma.next_step(chunk) {
            NextStep::Idle => return,
            NextStep::Read { iova, len } => vgpu_protocol::encode_dma_read(
                &mut self.out,
                self.dma_layout,
                msg_id,
                iova,
                len as u32,
            ),
            NextStep::Write { iova, start, len } => {
                let data = self.dma.chunk(start, len);
                match vgpu_protocol::encode_dma_write(
                    &mut self.out,
                    self.dma_layout,
                    msg_id,
                    iova,
                    data,
                ) {
                    Ok(r) => r,
                    Err(_) => {
                        if let Some(result) = self.dma.fail() {
                            self.complete_dma(result);
                        }
                        return;
                    }
                }
            }
        };
        self.awaiting = Some(request);
        self.send(&[]);
    }

    /// A reply from the client: it can only answer our DMA request.
    pub(super) fn on_reply(&mut self, header: &Header, payload: &[u8], fd_count: usize) {
        let expected = self.awaiting.filter(|r| r.is_reply(header));
        let Some(request) = expected else {
            // Clients send requests; a reply is only valid as the answer to
            // the DMA request in flight. Anything else is refused like any
            // malformed message.
            let e = ProtocolError::UnexpectedReply {
                msg_id: header.msg_id,
                command: header.command,
            };
            // A reply does not want one; answer it with an error anyway,
            // as the protocol's rule for unexpected messages.
            let refusal = Refusal::UnexpectedReply(e);
            let errno = refusal.errno();
            vgpu_mdev::VgpuStats::count(&self.vgpu.stats().refusals, 1);
            self.vgpu
                .client_log
                .log(|| tracing::warn!(errno, "refused: {}", ErrorChain(&refusal)));
            vgpu_protocol::encode_error(&mut self.out, header, errno);
            self.send(&[]);
            return;
        };
        self.awaiting = None;
        let result = if request.command == vgpu_protocol::wire::Command::DmaRead {
            match vgpu_protocol::decode_dma_read_reply(&request, header, payload, fd_count) {
                Ok(data) => {
                    let memory = self.vgpu.device().memory();
                    self.dma
                        .chunk_done(Some(data), &memory.windows, &self.aperture)
                }
                Err(e) => {
                    self.vgpu
                        .client_log
                        .log(|| tracing::warn!(error = %e, "DMA_READ failed"));
                    self.dma.fail()
                }
            }
        } else {
            match vgpu_protocol::decode_dma_write_reply(&request, header, payload, fd_count) {
                Ok(()) => {
                    self.dma.advance(request.count as usize);
                    let memory = self.vgpu.device().memory();
                    self.dma.chunk_done(None, &memory.windows, &self.aperture)
                }
                Err(e) => {
                    self.vgpu
                        .client_log
                        .log(|| tracing::warn!(error = %e, "DMA_WRITE failed"));
                    self.dma.fail()
                }
            }
        };
        if let Some(result) = result {
            self.complete_dma(result);
        }
        self.pump_dma();
    }
}
