//! One client's session with one vGPU: the vfio-user transport adapter.
//!
//! Runs on its own thread with blocking socket I/O. The register path is one
//! `recvmsg` (which may bring several pipelined requests), the device model
//! under the vGPU's own lock, one `sendmsg` of a reply encoded into a buffer
//! that lives as long as the session: no allocation, no lock shared with
//! another vGPU.
//!
//! The device state is the vGPU's ([`VirtualGpu`](vgpu_mdev::VirtualGpu))
//! and outlives the session. What is the session's is what belongs to the
//! connection: the negotiated limits, the VRAM aperture this attachment
//! was given, and the DMA self-test's copy in flight through the client.
//!
//! - `regions`: region info, reads and writes (the register path);
//! - `irqs`: `GET_IRQ_INFO` and `SET_IRQS`;
//! - `guest_memory`: `DMA_MAP`, `DMA_UNMAP`, and the DMA self-test's
//!   copies, through the daemon's mapping or the client;
//! - `mmu`: what the MMU registers ask of the GPU MMU;
//! - `refusal`: why a message is refused, and its errno.
//!
//! Every log line a client or its guest can cause goes through the vGPU's
//! `client_log` limit.

mod guest_memory;
mod irqs;
mod mmu;
mod refusal;
mod regions;

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vgpu_emulation::Effects;
use vgpu_mdev::{VgpuStats, VramAperture};
use vgpu_protocol::wire::DeviceFlags;
use vgpu_protocol::{
    DeviceInfo, DmaLayout, Frame, Header, MessageReader, Negotiated, Request, ServerCapabilities,
};

use super::dma::DmaEngine;
use crate::vgpu::Vgpu;
pub use refusal::Refusal;

/// Serves `socket` for `vgpu` until the client leaves or the socket is shut
/// down; `aperture` is the VRAM this attachment was given. The caller
/// resets the vGPU afterwards.
pub fn run(vgpu: &Vgpu, aperture: Arc<VramAperture>, socket: UnixStream) {
    let span = tracing::info_span!("vgpu", uuid = %vgpu.uuid());
    let _entered = span.enter();
    let limits = ServerCapabilities {
        // The allowance is at most 65535 windows (the configuration's
        // bound).
        max_dma_maps: u32::try_from(vgpu.dma_allowance().windows).unwrap_or(u32::MAX),
        ..ServerCapabilities::default()
    };
    let mut reader = MessageReader::new(limits.max_data_xfer_size);
    let mut session = Session::new(vgpu, aperture, socket, limits);
    loop {
        match reader.next_frame(&session.socket) {
            Ok(Some(frame)) => session.handle(frame),
            Ok(None) => break,
            Err(e) => {
                session.refuse_frame(&e);
                if e.is_fatal() {
                    break;
                }
            }
        }
        if session.closing {
            break;
        }
    }
}

struct Session<'v> {
    vgpu: &'v Vgpu,
    /// This attachment's VRAM: what BAR0's fd and accesses reach.
    aperture: Arc<VramAperture>,
    socket: UnixStream,
    limits: ServerCapabilities,
    negotiated: Option<Negotiated>,
    dma_layout: DmaLayout,
    /// Reply buffer, reused for every message.
    out: Vec<u8>,
    dma: DmaEngine,
    /// The server's DMA request awaiting its reply.
    awaiting: Option<vgpu_protocol::DmaRequest>,
    next_msg_id: u16,
    /// Set when the connection cannot go on (a send failed).
    closing: bool,
}

impl<'v> Session<'v> {
    fn new(
        vgpu: &'v Vgpu,
        aperture: Arc<VramAperture>,
        socket: UnixStream,
        limits: ServerCapabilities,
    ) -> Self {
        let max_message = limits.max_data_xfer_size as usize + 64;
        Self {
            vgpu,
            socket,
            limits,
            negotiated: None,
            dma_layout: DmaLayout::Qemu,
            out: Vec::with_capacity(max_message),
            dma: DmaEngine::new(limits.max_data_xfer_size as usize),
            aperture,
            awaiting: None,
            next_msg_id: 0x8000,
            closing: false,
        }
    }

    /// The largest data transfer the client and the server agreed on.
    fn max_data_xfer_size(&self) -> u32 {
        self.negotiated
            .map_or(self.limits.max_data_xfer_size, |n| n.max_data_xfer_size)
    }

    fn handle(&mut self, frame: Frame<'_>) {
        let header = frame.header;
        if header.is_reply() {
            self.on_reply(&header, frame.payload, frame.fds.len());
            return;
        }
        let request = match vgpu_protocol::decode_request_with_limit(
            &header,
            frame.payload,
            frame.fds.len(),
            self.max_data_xfer_size(),
        ) {
            Ok(r) => r,
            Err(e) => {
                self.refuse(&header, &Refusal::Malformed(e));
                return;
            }
        };
        if self.negotiated.is_none() && !matches!(request, Request::Version { .. }) {
            self.refuse(&header, &Refusal::NotNegotiated);
            return;
        }
        let mut fds = frame.fds;
        let effects = match self.dispatch(&header, request, &mut fds) {
            Ok(effects) => effects,
            Err(refusal) => {
                self.refuse(&header, &refusal);
                return;
            }
        };
        // The common register access asks for nothing more: keep it to
        // one lock and no further work.
        if !effects.is_empty() {
            self.apply(effects);
            self.pump_dma();
        }
    }

    /// Answers one decoded request; the reply is sent here, before its
    /// effects are applied, so that a vCPU waiting on a register write never
    /// waits for the DMA it starts.
    fn dispatch(
        &mut self,
        header: &Header,
        request: Request<'_>,
        fds: &mut vgpu_protocol::FdList,
    ) -> Result<Effects, Refusal> {
        let mut effects = Effects::NONE;
        // The aperture whose fd goes with the reply (BAR0's region info).
        let mut reply_fd: Option<Arc<VramAperture>> = None;
        match request {
            Request::Version {
                major,
                minor,
                capabilities,
            } => self.version(header, major, minor, &capabilities)?,
            Request::DmaMap {
                flags,
                offset,
                iova,
                size,
                has_fd,
            } => self.dma_map(header, flags, offset, iova, size, has_fd, fds)?,
            Request::DmaUnmap {
                argsz,
                flags,
                iova,
                size,
            } => self.dma_unmap(header, argsz, flags, iova, size)?,
            Request::DeviceGetInfo { .. } => {
                let info = DeviceInfo {
                    flags: DeviceFlags::PCI | DeviceFlags::RESET,
                    num_regions: vgpu_emulation::REGION_COUNT,
                    num_irqs: vgpu_emulation::interrupts::IRQ_INDEX_COUNT,
                };
                vgpu_protocol::encode_device_info_reply(&mut self.out, header, &info);
            }
            Request::GetRegionInfo { argsz, index } => {
                if self.region_info(header, argsz, index)? {
                    reply_fd = Some(Arc::clone(&self.aperture));
                }
            }
            Request::GetRegionIoFds { index, .. } => {
                regions::region_index(index)?;
                vgpu_protocol::encode_region_io_fds_reply(&mut self.out, header, index);
            }
            Request::GetIrqInfo { index, .. } => self.irq_info(header, index)?,
            Request::SetIrqs {
                flags,
                index,
                start,
                count,
                data,
            } => {
                self.set_irqs(flags, index, start, count, data, fds)?;
                vgpu_protocol::encode_empty_reply(&mut self.out, header);
            }
            Request::RegionRead {
                region,
                offset,
                count,
            } => self.region_read(header, region, offset, count)?,
            Request::RegionWrite {
                region,
                offset,
                data,
            } => effects = self.region_write(header, region, offset, data)?,
            Request::DeviceReset => {
                self.reset();
                vgpu_protocol::encode_empty_reply(&mut self.out, header);
            }
            Request::DeviceFeature { feature, .. } => {
                return Err(Refusal::Feature(feature.into()));
            }
            Request::Unsupported(command) => {
                return Err(Refusal::Unsupported(format!("{command:?}")));
            }
        }
        if header.wants_reply() {
            match &reply_fd {
                Some(aperture) => self.send(&[aperture.fd()]),
                None => self.send(&[]),
            }
        }
        Ok(effects)
    }

    fn version(
        &mut self,
        header: &Header,
        major: u16,
        minor: u16,
        capabilities: &vgpu_protocol::ClientCapabilities,
    ) -> Result<(), Refusal> {
        if self.negotiated.is_some() {
            return Err(Refusal::VersionTwice);
        }
        let n = vgpu_protocol::negotiate(major, minor, capabilities, &self.limits)
            .map_err(Refusal::Negotiation)?;
        // QEMU (10.1 and later) lays out DMA_READ/DMA_WRITE bodies its own
        // way; it is the client that proposes migration and
        // write_multiple. Anyone else gets the specification's.
        self.dma_layout = if capabilities.migration || capabilities.write_multiple.is_some() {
            DmaLayout::Qemu
        } else {
            DmaLayout::Spec
        };
        vgpu_protocol::encode_version_reply(&mut self.out, header, &n);
        tracing::debug!(
            minor = n.minor,
            max_data_xfer_size = n.max_data_xfer_size,
            layout = ?self.dma_layout,
            "version negotiated"
        );
        self.negotiated = Some(n);
        Ok(())
    }

    /// Applies what a register access asked for: interrupts and MMU work.
    /// DMA the device queued is run by [`pump_dma`](Self::pump_dma).
    fn apply(&mut self, effects: Effects) {
        self.vgpu.raise(effects.vectors);
        if let Some(request) = effects.mmu {
            self.mmu_request(request);
        }
    }

    /// DEVICE_RESET: registers, interrupts, GPU MMU and VRAM back to reset;
    /// DMA in flight abandoned. The DMA maps stay (see
    /// docs/device-interface.md).
    fn reset(&mut self) {
        self.dma.abort();
        self.awaiting = None;
        if let Err(e) = self.vgpu.reset() {
            self.vgpu.client_log.log(
                || tracing::error!(error = %crate::error_chain::ErrorChain(&e), "device reset"),
            );
        }
        // Routine, and a client can ask for it in a loop.
        tracing::debug!("device reset");
    }

    fn refuse(&mut self, header: &Header, why: &Refusal) {
        self.refuse_with(header, why.errno(), &crate::error_chain::ErrorChain(why));
    }

    fn refuse_frame(&mut self, e: &vgpu_protocol::FrameError) {
        match e.header() {
            Some(header) => {
                let header = *header;
                self.refuse_with(&header, e.errno(), e);
            }
            None => self
                .vgpu
                .connection_log
                .log(|| tracing::info!(error = %e, "connection ended")),
        }
    }

    /// Counts a refused message, logs it (rate-limited) and answers it
    /// with `errno` if it wants a reply.
    fn refuse_with(&mut self, header: &Header, errno: i32, why: &dyn std::fmt::Display) {
        VgpuStats::count(&self.vgpu.stats().refusals, 1);
        self.vgpu.client_log.log(|| {
            tracing::warn!(
                msg_id = header.msg_id,
                command = header.command,
                errno,
                "refused: {why}"
            )
        });
        if header.wants_reply() {
            vgpu_protocol::encode_error(&mut self.out, header, errno);
            self.send(&[]);
        }
    }

    fn send(&mut self, fds: &[BorrowedFd<'_>]) {
        if let Err(e) = vgpu_protocol::send_message(self.socket.as_fd(), &self.out, fds) {
            self.vgpu
                .connection_log
                .log(|| tracing::info!(error = %e, "cannot send to the client; closing"));
            self.closing = true;
        }
    }
}

#[cfg(test)]
mod tests;
