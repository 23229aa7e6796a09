//! One client's session with one vGPU: the vfio-user message loop.
//!
//! Runs on its own thread with blocking socket I/O. The register path is one
//! `recvmsg` (which may bring several pipelined requests), the device model
//! under the vGPU's own lock, one `sendmsg` of a reply encoded into a buffer
//! that lives as long as the session: no allocation, no lock shared with
//! another vGPU.
//!
//! Per-client state lives here and dies with the session: the negotiated
//! limits, the VRAM aperture this attachment was given, the DMA windows
//! (within the vGPU's allowance), the interrupt triggers, the DMA engine.
//!
//! Every log line a client or its guest can cause goes through the vGPU's
//! `client_log` limit.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vgpu_emulation::{
    Effects, IrqAction, IrqData, IrqIndex, MmuRequest, RegionFlags, RegionIndex, SetIrqs,
};
use vgpu_mdev::{DmaBacking, DmaWindows, VramAperture};
use vgpu_protocol::wire::{DeviceFlags, DmaMapFlags, DmaUnmapFlags, IrqInfoFlags, IrqSetFlags};
use vgpu_protocol::{
    DeviceInfo, DmaLayout, Frame, Header, IrqInfo, MessageReader, MmapArea, Negotiated,
    ProtocolError, RegionInfo, RegionInfoReply, Request, ServerCapabilities, errno,
};

use super::dma::{DmaEngine, NextStep};
use super::gpu_mmu::{GpuMmu, MmuOutcome};
use crate::error_chain::ErrorChain;
use crate::eventfd::EventFd;
use crate::vgpu::{Signals, Vgpu, VgpuStats, vector_bits};

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
    windows: DmaWindows,
    dma: DmaEngine,
    mmu: GpuMmu,
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
            windows: DmaWindows::with_allowance(vgpu.dma_allowance()),
            dma: DmaEngine::new(limits.max_data_xfer_size as usize),
            mmu: GpuMmu::new(vgpu.profile().channels, aperture.size()),
            aperture,
            awaiting: None,
            next_msg_id: 0x8000,
            closing: false,
        }
    }

    fn handle(&mut self, frame: Frame<'_>) {
        let header = frame.header;
        if header.is_reply() {
            self.on_reply(&header, frame.payload, frame.fds.len());
            return;
        }
        let limit = self
            .negotiated
            .map_or(self.limits.max_data_xfer_size, |n| n.max_data_xfer_size);
        let request = match vgpu_protocol::decode_request_with_limit(
            &header,
            frame.payload,
            frame.fds.len(),
            limit,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.refuse(&header, e.errno(), &e);
                return;
            }
        };
        if self.negotiated.is_none() && !matches!(request, Request::Version { .. }) {
            self.refuse(&header, errno::EINVAL, &"VERSION must be the first message");
            return;
        }
        let mut fds = frame.fds;
        let effects = match self.dispatch(&header, request, &mut fds) {
            Ok(effects) => effects,
            Err(refusal) => {
                self.refuse(&header, refusal.errno, &refusal);
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
            } => {
                if self.negotiated.is_some() {
                    return Err(Refusal::new(errno::EINVAL, "VERSION sent twice"));
                }
                let n = vgpu_protocol::negotiate(major, minor, &capabilities, &self.limits)
                    .map_err(|e| Refusal::new(e.errno(), e.to_string()))?;
                // QEMU (10.1 and later) lays out DMA_READ/DMA_WRITE bodies
                // its own way; it is the client that proposes migration and
                // write_multiple. Anyone else gets the specification's.
                self.dma_layout = if capabilities.migration || capabilities.write_multiple.is_some()
                {
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
            }
            Request::DmaMap {
                flags,
                offset,
                iova,
                size,
                has_fd,
            } => {
                let backing = match (has_fd, fds.take(0)) {
                    (true, Some(fd)) => DmaBacking::Fd { fd, offset },
                    _ => DmaBacking::Remote,
                };
                let writable = flags.contains(DmaMapFlags::WRITE);
                self.windows
                    .map(iova, size, writable, backing)
                    .map_err(|e| Refusal::new(dma_errno(&e), format!("DMA_MAP: {e}")))?;
                vgpu_protocol::encode_empty_reply(&mut self.out, header);
            }
            Request::DmaUnmap {
                argsz,
                flags,
                iova,
                size,
            } => {
                let (start, len) = if flags.contains(DmaUnmapFlags::ALL) {
                    self.windows.clear();
                    (0, u64::MAX)
                } else {
                    self.windows
                        .unmap(iova, size)
                        .map_err(|e| Refusal::new(dma_errno(&e), format!("DMA_UNMAP: {e}")))?;
                    (iova, size)
                };
                // Nothing may reach the range once the reply is out: the
                // GPU MMU's entries into it go now (nothing runs between the
                // unmap and this on this thread), remote copies re-check
                // their window on every chunk, and local ones completed
                // before this message was read.
                match self.mmu.revoke(start, len) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(entries = n, "GPU MMU entries revoked by DMA_UNMAP"),
                    Err(e) => self
                        .vgpu
                        .client_log
                        .log(|| tracing::error!(error = %e, "cannot revoke GPU MMU entries")),
                }
                vgpu_protocol::encode_dma_unmap_reply(
                    &mut self.out,
                    header,
                    argsz,
                    flags,
                    iova,
                    size,
                );
            }
            Request::DeviceGetInfo { .. } => {
                let info = DeviceInfo {
                    flags: DeviceFlags::PCI | DeviceFlags::RESET,
                    num_regions: vgpu_emulation::REGION_COUNT,
                    num_irqs: vgpu_emulation::interrupts::IRQ_INDEX_COUNT,
                };
                vgpu_protocol::encode_device_info_reply(&mut self.out, header, &info);
            }
            Request::GetRegionInfo { argsz, index } => {
                let region = RegionIndex::try_from(index)
                    .map_err(|_| Refusal::new(errno::EINVAL, format!("no region {index}")))?;
                let info = self.vgpu.hw().device.region_info(region);
                let area = [MmapArea {
                    offset: 0,
                    size: info.size,
                }];
                let areas: &[MmapArea] = if info.mmap_whole { &area } else { &[] };
                let wire = RegionInfo {
                    index,
                    flags: region_flags(info.flags),
                    size: info.size,
                    offset: 0,
                };
                let reply = vgpu_protocol::encode_region_info_reply(
                    &mut self.out,
                    header,
                    argsz,
                    &wire,
                    areas,
                )
                .map_err(|e| Refusal::new(errno::EINVAL, e.to_string()))?;
                if reply == RegionInfoReply::Complete && !areas.is_empty() {
                    reply_fd = Some(Arc::clone(&self.aperture));
                }
            }
            Request::GetRegionIoFds { index, .. } => {
                RegionIndex::try_from(index)
                    .map_err(|_| Refusal::new(errno::EINVAL, format!("no region {index}")))?;
                vgpu_protocol::encode_region_io_fds_reply(&mut self.out, header, index);
            }
            Request::GetIrqInfo { index, .. } => {
                let info = self
                    .vgpu
                    .hw()
                    .irqs
                    .info(index)
                    .map_err(|e| Refusal::new(e.errno(), e.to_string()))?;
                let wire = IrqInfo {
                    index: info.index,
                    flags: IrqInfoFlags::from_bits(info.flags & IrqInfoFlags::KNOWN.bits())
                        .unwrap_or(IrqInfoFlags::EMPTY),
                    count: info.count,
                };
                vgpu_protocol::encode_irq_info_reply(&mut self.out, header, &wire);
            }
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
            } => {
                let index = RegionIndex::try_from(region)
                    .map_err(|_| Refusal::new(errno::EINVAL, format!("no region {region}")))?;
                let slot = vgpu_protocol::encode_region_read_reply(
                    &mut self.out,
                    header,
                    region,
                    offset,
                    count,
                )
                .map_err(|e| Refusal::new(errno::EINVAL, e.to_string()))?;
                if index == RegionIndex::BAR0 {
                    self.aperture
                        .read(offset, slot)
                        .map_err(|e| Refusal::new(errno::EINVAL, format!("BAR0 read: {e}")))?;
                } else {
                    self.vgpu
                        .hw()
                        .device
                        .read(index, offset, slot)
                        .map_err(|e| {
                            Refusal::new(e.errno(), format!("region {region} read: {e}"))
                        })?;
                }
            }
            Request::RegionWrite {
                region,
                offset,
                data,
            } => {
                let index = RegionIndex::try_from(region)
                    .map_err(|_| Refusal::new(errno::EINVAL, format!("no region {region}")))?;
                if index == RegionIndex::BAR0 {
                    self.aperture
                        .write(offset, data)
                        .map_err(|e| Refusal::new(errno::EINVAL, format!("BAR0 write: {e}")))?;
                } else {
                    effects = self
                        .vgpu
                        .hw()
                        .device
                        .write(index, offset, data)
                        .map_err(|e| {
                            Refusal::new(e.errno(), format!("region {region} write: {e}"))
                        })?;
                }
                vgpu_protocol::encode_region_write_reply(
                    &mut self.out,
                    header,
                    region,
                    offset,
                    data.len() as u32,
                );
            }
            Request::DeviceReset => {
                self.reset();
                vgpu_protocol::encode_empty_reply(&mut self.out, header);
            }
            Request::DeviceFeature { feature, .. } => {
                return Err(Refusal::new(
                    errno::ENOTSUP,
                    format!("device feature {feature} is not supported"),
                ));
            }
            Request::Unsupported(command) => {
                return Err(Refusal::new(
                    errno::ENOTSUP,
                    format!("{command:?} is not supported"),
                ));
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

    fn set_irqs(
        &mut self,
        flags: IrqSetFlags,
        index: u32,
        start: u32,
        count: u32,
        data: &[u8],
        fds: &mut vgpu_protocol::FdList,
    ) -> Result<(), Refusal> {
        let action = if flags.contains(IrqSetFlags::ACTION_MASK) {
            IrqAction::Mask
        } else if flags.contains(IrqSetFlags::ACTION_UNMASK) {
            IrqAction::Unmask
        } else {
            IrqAction::Trigger
        };
        let data = if flags.contains(IrqSetFlags::DATA_BOOL) {
            IrqData::Bool(data.iter().map(|&b| b != 0).collect())
        } else if flags.contains(IrqSetFlags::DATA_EVENTFD) {
            // Every descriptor is checked before anything changes: one that
            // is not an eventfd refuses the whole request.
            let mut triggers = Vec::with_capacity(fds.len());
            for i in 0..fds.len() {
                let trigger = match fds.take(i) {
                    Some(fd) => Some(EventFd::from_client(fd).map(Arc::new).map_err(|e| {
                        Refusal::new(
                            errno::EINVAL,
                            format!("SET_IRQS: descriptor {i}: {}", ErrorChain(&e)),
                        )
                    })?),
                    None => None,
                };
                triggers.push(trigger);
            }
            IrqData::Triggers(triggers)
        } else {
            IrqData::None
        };
        let mut signals = Signals::default();
        {
            let mut hw = self.vgpu.hw();
            let outcome = hw
                .irqs
                .set_irqs(SetIrqs {
                    index,
                    action,
                    start,
                    count,
                    data,
                })
                .map_err(|e| Refusal::new(e.errno(), format!("SET_IRQS: {e}")))?;
            if let Ok(irq_index) = IrqIndex::try_from(index) {
                for vector in vector_bits(outcome.fire) {
                    if let Some(trigger) = hw.irqs.trigger(irq_index, vector) {
                        signals.push(trigger);
                    }
                }
            }
            let asserted = hw.irqs.intx_asserted();
            hw.device.set_intx_asserted(asserted);
        }
        signals.send(self.vgpu.stats());
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

    /// Carries out a request of the MMU registers and reports back to the
    /// device model.
    fn mmu_request(&mut self, request: MmuRequest) {
        match self.mmu.handle(request, &self.aperture, &self.windows) {
            MmuOutcome::Shadowed(summary) => {
                if summary.fault_count > 0 {
                    VgpuStats::count(&self.vgpu.stats().refused_ptes, summary.fault_count);
                    let first = summary.faults.first().map(|f| format!("{f}: {}", f.reason));
                    self.vgpu.client_log.log(|| {
                        tracing::warn!(
                            channel = summary.ctx.0,
                            refused = summary.fault_count,
                            first = first.as_deref().unwrap_or(""),
                            "page-table entries refused: accesses through them fault"
                        )
                    });
                }
                tracing::debug!(
                    channel = summary.ctx.0,
                    mapped = summary.mapped,
                    not_present = summary.not_present,
                    table_reads = summary.walk.tables_read,
                    "page tables shadowed"
                );
            }
            MmuOutcome::Translated(result) => {
                if let (Err(reason), MmuRequest::Translate { channel, va, write }) =
                    (&result, request)
                {
                    VgpuStats::count(&self.vgpu.stats().mmu_faults, 1);
                    self.vgpu.client_log.log(|| {
                        tracing::warn!(
                            channel,
                            va = format_args!("{va:#x}"),
                            write,
                            ?reason,
                            "GPU MMU fault"
                        )
                    });
                }
                let effects = self.vgpu.hw().device.complete_translate(result);
                self.apply(effects);
            }
            MmuOutcome::Failed(e) => self
                .vgpu
                .client_log
                .log(|| tracing::error!(error = %e, "GPU MMU request failed")),
        }
    }

    /// Runs the device's DMA queue, oldest first, until it is empty or
    /// the oldest request waits on the client.
    fn pump_dma(&mut self) {
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
            if let Some(result) = self.dma.start(request, &self.windows, &self.aperture) {
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
        let chunk = self
            .negotiated
            .map_or(self.limits.max_data_xfer_size, |n| n.max_data_xfer_size)
            as usize;
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
    fn on_reply(&mut self, header: &Header, payload: &[u8], fd_count: usize) {
        let expected = self.awaiting.filter(|r| r.is_reply(header));
        let Some(request) = expected else {
            // Clients send requests; a reply is only valid as the answer to
            // the DMA request in flight. Anything else is refused like any
            // malformed message.
            let e = ProtocolError::UnexpectedReply {
                msg_id: header.msg_id,
                command: header.command,
            };
            VgpuStats::count(&self.vgpu.stats().refusals, 1);
            self.vgpu
                .client_log
                .log(|| tracing::warn!(errno = errno::EINVAL, "refused: {e}"));
            vgpu_protocol::encode_error(&mut self.out, header, errno::EINVAL);
            self.send(&[]);
            return;
        };
        self.awaiting = None;
        let result = if request.command == vgpu_protocol::wire::Command::DmaRead {
            match vgpu_protocol::decode_dma_read_reply(&request, header, payload, fd_count) {
                Ok(data) => self
                    .dma
                    .chunk_done(Some(data), &self.windows, &self.aperture),
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
                    self.dma.chunk_done(None, &self.windows, &self.aperture)
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

    /// DEVICE_RESET: registers, interrupts and VRAM back to reset; DMA in
    /// flight abandoned. The DMA maps stay (see docs/device-interface.md).
    fn reset(&mut self) {
        self.dma.abort();
        self.awaiting = None;
        if let Err(e) = self.mmu.reset() {
            self.vgpu.client_log.log(|| tracing::error!("{e}"));
        }
        self.vgpu.reset();
        // Routine, and a client can ask for it in a loop.
        tracing::debug!("device reset");
    }

    fn refuse(&mut self, header: &Header, errno: i32, why: &dyn std::fmt::Display) {
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

    fn refuse_frame(&mut self, e: &vgpu_protocol::FrameError) {
        match e.header() {
            Some(header) => {
                let header = *header;
                self.refuse(&header, e.errno(), e);
            }
            None => self
                .vgpu
                .connection_log
                .log(|| tracing::info!(error = %e, "connection ended")),
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

/// A request refused with an errno and a reason for the log.
#[derive(Debug)]
struct Refusal {
    errno: i32,
    reason: String,
}

impl Refusal {
    fn new(errno: i32, reason: impl Into<String>) -> Self {
        Self {
            errno,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

fn region_flags(flags: RegionFlags) -> vgpu_protocol::wire::RegionFlags {
    use vgpu_protocol::wire::RegionFlags as Wire;
    Wire::from_bits(flags.bits() & Wire::KNOWN.bits()).unwrap_or(Wire::EMPTY)
}

fn dma_errno(e: &vgpu_mdev::DmaError) -> i32 {
    use vgpu_mdev::DmaError as E;
    match e {
        E::Overlap { .. } => errno::EEXIST,
        E::TooManyWindows { .. } => errno::ENOSPC,
        E::TooManyBytes { .. } => libc::ENOMEM,
        E::NoSuchWindow { .. } => libc::ENOENT,
        E::ReadOnly { .. } => libc::EPERM,
        E::Map { .. } => errno::EFAULT,
        _ => errno::EINVAL,
    }
}
