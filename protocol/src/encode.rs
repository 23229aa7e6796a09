//! Reply encoding into a caller-owned, reused buffer.
//!
//! Every function clears `buf` and writes one whole message (header
//! included) into it, so a connection keeps one `Vec<u8>` for its replies
//! and, once that has grown to the largest reply, encodes without
//! allocating. Replies echo the request's message id and command.

use zerocopy::IntoBytes;

use crate::error::errno;
use crate::header::Header;
use crate::version::Negotiated;
use crate::wire::{
    CAP_SPARSE_MMAP, CAP_SPARSE_MMAP_VERSION, CapHeader, Command, DeviceFlags, DeviceInfoBody,
    DmaUnmapBody, DmaUnmapFlags, HEADER_SIZE, HeaderFlags, IrqInfoBody, IrqInfoFlags, RawHeader,
    RegionAccessBody, RegionFlags, RegionInfoBody, RegionIoFdsBody, SparseMmapArea,
    SparseMmapHeader, VersionBody,
};

/// A message that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message would not fit the 32-bit `msg_size` (or `argsz`).
    #[error("a {size}-byte message does not fit in msg_size")]
    TooLarge {
        /// Size the message would have.
        size: u64,
    },
}

fn message_size(body_len: u64) -> Result<u32, EncodeError> {
    let size = body_len.saturating_add(HEADER_SIZE as u64);
    u32::try_from(size).map_err(|_| EncodeError::TooLarge { size })
}

fn put_header(buf: &mut Vec<u8>, msg_id: u16, command: u16, msg_size: u32, flags: u32, error: u32) {
    buf.clear();
    let raw = RawHeader {
        msg_id: msg_id.into(),
        command: command.into(),
        msg_size: msg_size.into(),
        flags: flags.into(),
        error: error.into(),
    };
    buf.extend_from_slice(raw.as_bytes());
}

fn put_reply_header(buf: &mut Vec<u8>, request: &Header, body_len: u64) -> Result<(), EncodeError> {
    let size = message_size(body_len)?;
    put_header(
        buf,
        request.msg_id,
        request.command,
        size,
        HeaderFlags::REPLY.bits(),
        0,
    );
    Ok(())
}

/// A successful reply to `request` whose body is the concatenation of `body`.
pub fn encode_reply(
    buf: &mut Vec<u8>,
    request: &Header,
    body: &[&[u8]],
) -> Result<(), EncodeError> {
    let len = body
        .iter()
        .map(|part| part.len() as u64)
        .fold(0u64, u64::saturating_add);
    put_reply_header(buf, request, len)?;
    for part in body {
        buf.extend_from_slice(part);
    }
    Ok(())
}

/// An error reply to `request`: header only, ERROR set, `errno` in the error
/// field. An `errno` of 0 or below (a host-side bug) is sent as EINVAL, so
/// that the client never sees a failure that claims to be success.
pub fn encode_error(buf: &mut Vec<u8>, request: &Header, errno: i32) {
    let errno = u32::try_from(errno)
        .ok()
        .filter(|&e| e != 0)
        .unwrap_or(errno::EINVAL as u32);
    let flags = (HeaderFlags::REPLY | HeaderFlags::ERROR).bits();
    put_header(
        buf,
        request.msg_id,
        request.command,
        HEADER_SIZE as u32,
        flags,
        errno,
    );
}

/// A reply with no body: DMA_MAP, SET_IRQS, DEVICE_RESET.
pub fn encode_empty_reply(buf: &mut Vec<u8>, request: &Header) {
    put_header(
        buf,
        request.msg_id,
        request.command,
        HEADER_SIZE as u32,
        HeaderFlags::REPLY.bits(),
        0,
    );
}

/// Device information for `VFIO_USER_DEVICE_GET_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// RESET and/or PCI.
    pub flags: DeviceFlags,
    /// Number of regions (9 for a PCI device without extra regions).
    pub num_regions: u32,
    /// Number of IRQ indexes (5 for PCI: INTx, MSI, MSI-X, ERR, REQ).
    pub num_irqs: u32,
}

/// The `VFIO_USER_DEVICE_GET_INFO` reply.
pub fn encode_device_info_reply(buf: &mut Vec<u8>, request: &Header, info: &DeviceInfo) {
    let body = DeviceInfoBody {
        argsz: 16.into(),
        flags: info.flags.bits().into(),
        num_regions: info.num_regions.into(),
        num_irqs: info.num_irqs.into(),
    };
    put_fixed_reply(buf, request, body.as_bytes());
}

fn put_fixed_reply(buf: &mut Vec<u8>, request: &Header, body: &[u8]) {
    // Fixed bodies are a few dozen bytes: the size always fits.
    let size = (HEADER_SIZE + body.len()) as u32;
    put_header(
        buf,
        request.msg_id,
        request.command,
        size,
        HeaderFlags::REPLY.bits(),
        0,
    );
    buf.extend_from_slice(body);
}

/// One region's description for `VFIO_USER_DEVICE_GET_REGION_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index.
    pub index: u32,
    /// READ, WRITE, MMAP (CAPS is managed by the encoder).
    pub flags: RegionFlags,
    /// Region size in bytes.
    pub size: u64,
    /// mmap offset of the region in its file descriptor.
    pub offset: u64,
}

/// One mmappable area of a region, relative to the region's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmapArea {
    /// Offset in the region.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What a region info reply carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionInfoReply {
    /// Everything, capabilities included: send the region's fd with it.
    Complete,
    /// The client's argsz was too small for the capabilities: the reply has
    /// the fixed part only, with `argsz` set to what is needed, and the
    /// client asks again (QEMU does). Send no fd with it.
    Truncated {
        /// The argsz the client needs.
        needed: u32,
    },
}

const REGION_INFO_SIZE: u64 = 32;

/// The `VFIO_USER_DEVICE_GET_REGION_INFO` reply for a request with `argsz`.
///
/// With `areas` non-empty, a sparse-mmap capability at offset 32 lists them
/// and the CAPS flag is set; if `argsz` is too small for it, only the fixed
/// part is sent, with the needed argsz and neither CAPS nor a capability
/// offset. CAPS is cleared there (unlike the kernel) because QEMU's
/// vfio-user client rejects a CAPS reply whose `cap_offset` is 0 instead of
/// growing its buffer and asking again.
pub fn encode_region_info_reply(
    buf: &mut Vec<u8>,
    request: &Header,
    argsz: u32,
    info: &RegionInfo,
    areas: &[MmapArea],
) -> Result<RegionInfoReply, EncodeError> {
    let caps_len = if areas.is_empty() {
        0
    } else {
        (size_of::<CapHeader>() + size_of::<SparseMmapHeader>()) as u64
            + (areas.len() as u64).saturating_mul(size_of::<SparseMmapArea>() as u64)
    };
    let needed_wide = REGION_INFO_SIZE + caps_len;
    let needed =
        u32::try_from(needed_wide).map_err(|_| EncodeError::TooLarge { size: needed_wide })?;
    let complete = caps_len == 0 || argsz >= needed;
    let flags = info.flags.without(RegionFlags::CAPS);
    let mut body = RegionInfoBody {
        argsz: needed.into(),
        flags: flags.bits().into(),
        index: info.index.into(),
        cap_offset: 0.into(),
        size: info.size.into(),
        offset: info.offset.into(),
    };
    if !complete {
        put_reply_header(buf, request, REGION_INFO_SIZE)?;
        buf.extend_from_slice(body.as_bytes());
        return Ok(RegionInfoReply::Truncated { needed });
    }
    put_reply_header(buf, request, needed_wide)?;
    if caps_len == 0 {
        buf.extend_from_slice(body.as_bytes());
        return Ok(RegionInfoReply::Complete);
    }
    body.flags = (flags | RegionFlags::CAPS).bits().into();
    body.cap_offset = (REGION_INFO_SIZE as u32).into();
    buf.extend_from_slice(body.as_bytes());
    let cap = CapHeader {
        id: CAP_SPARSE_MMAP.into(),
        version: CAP_SPARSE_MMAP_VERSION.into(),
        next: 0.into(),
    };
    buf.extend_from_slice(cap.as_bytes());
    // `needed` fits in u32, so the area count does too.
    let sparse = SparseMmapHeader {
        nr_areas: (areas.len() as u32).into(),
        reserved: 0.into(),
    };
    buf.extend_from_slice(sparse.as_bytes());
    for area in areas {
        let wire = SparseMmapArea {
            offset: area.offset.into(),
            size: area.size.into(),
        };
        buf.extend_from_slice(wire.as_bytes());
    }
    Ok(RegionInfoReply::Complete)
}

/// One IRQ index's description for `VFIO_USER_DEVICE_GET_IRQ_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqInfo {
    /// IRQ index.
    pub index: u32,
    /// EVENTFD, MASKABLE, AUTOMASKED, NORESIZE.
    pub flags: IrqInfoFlags,
    /// Number of vectors.
    pub count: u32,
}

/// The `VFIO_USER_DEVICE_GET_IRQ_INFO` reply.
pub fn encode_irq_info_reply(buf: &mut Vec<u8>, request: &Header, info: &IrqInfo) {
    let body = IrqInfoBody {
        argsz: 16.into(),
        flags: info.flags.bits().into(),
        index: info.index.into(),
        count: info.count.into(),
    };
    put_fixed_reply(buf, request, body.as_bytes());
}

/// The `VFIO_USER_DEVICE_GET_REGION_IO_FDS` reply with no sub-regions (vgpud
/// offers no ioeventfds).
pub fn encode_region_io_fds_reply(buf: &mut Vec<u8>, request: &Header, index: u32) {
    let body = RegionIoFdsBody {
        argsz: 16.into(),
        flags: 0.into(),
        index: index.into(),
        count: 0.into(),
    };
    put_fixed_reply(buf, request, body.as_bytes());
}

/// Starts a `VFIO_USER_REGION_READ` reply for `count` bytes and returns the
/// zeroed data slot, for the device model to read into directly.
pub fn encode_region_read_reply<'b>(
    buf: &'b mut Vec<u8>,
    request: &Header,
    region: u32,
    offset: u64,
    count: u32,
) -> Result<&'b mut [u8], EncodeError> {
    put_reply_header(
        buf,
        request,
        size_of::<RegionAccessBody>() as u64 + u64::from(count),
    )?;
    let body = RegionAccessBody {
        offset: offset.into(),
        region: region.into(),
        count: count.into(),
    };
    buf.extend_from_slice(body.as_bytes());
    let start = buf.len();
    buf.resize(start + count as usize, 0);
    Ok(buf.get_mut(start..).unwrap_or_default())
}

/// The `VFIO_USER_REGION_WRITE` reply (the access, without data).
pub fn encode_region_write_reply(
    buf: &mut Vec<u8>,
    request: &Header,
    region: u32,
    offset: u64,
    count: u32,
) {
    let body = RegionAccessBody {
        offset: offset.into(),
        region: region.into(),
        count: count.into(),
    };
    put_fixed_reply(buf, request, body.as_bytes());
}

/// The `VFIO_USER_VERSION` reply: the negotiated version and capabilities.
pub fn encode_version_reply(buf: &mut Vec<u8>, request: &Header, negotiated: &Negotiated) {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER_SIZE]);
    let version = VersionBody {
        major: negotiated.major.into(),
        minor: negotiated.minor.into(),
    };
    buf.extend_from_slice(version.as_bytes());
    negotiated.write_capabilities(buf);
    // The capability JSON is a few dozen bytes.
    let size = buf.len() as u32;
    let raw = RawHeader {
        msg_id: request.msg_id.into(),
        command: request.command.into(),
        msg_size: size.into(),
        flags: HeaderFlags::REPLY.bits().into(),
        error: 0.into(),
    };
    if let Some(head) = buf.get_mut(..HEADER_SIZE) {
        head.copy_from_slice(raw.as_bytes());
    }
}

/// The `VFIO_USER_DMA_UNMAP` reply: the request's body, echoed as the spec asks.
pub fn encode_dma_unmap_reply(
    buf: &mut Vec<u8>,
    request: &Header,
    argsz: u32,
    flags: DmaUnmapFlags,
    iova: u64,
    size: u64,
) {
    let body = DmaUnmapBody {
        argsz: argsz.into(),
        flags: flags.bits().into(),
        address: iova.into(),
        size: size.into(),
    };
    put_fixed_reply(buf, request, body.as_bytes());
}

/// A client → server command, for clients and tests. `no_reply` sets NO_REPLY.
pub fn encode_command(
    buf: &mut Vec<u8>,
    msg_id: u16,
    command: Command,
    no_reply: bool,
    body: &[&[u8]],
) -> Result<(), EncodeError> {
    let len = body
        .iter()
        .map(|part| part.len() as u64)
        .fold(0u64, u64::saturating_add);
    let size = message_size(len)?;
    let flags = if no_reply {
        HeaderFlags::NO_REPLY.bits()
    } else {
        0
    };
    put_header(buf, msg_id, command.into(), size, flags, 0);
    for part in body {
        buf.extend_from_slice(part);
    }
    Ok(())
}
