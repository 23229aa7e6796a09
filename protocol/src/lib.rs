//! The vfio-user wire format as vgpud speaks it.
//!
//! vfio-user (QEMU's `docs/interop/vfio-user.rst`) carries the VFIO device
//! interface over a Unix stream socket: 16-byte headers, fixed structures
//! mirroring `<linux/vfio.h>`, and file descriptors in SCM_RIGHTS. This crate
//! is the server's side of it, with no device logic and no threads:
//!
//! - [`wire`]: `#[repr(C)]`, alignment-free little-endian layouts (zerocopy),
//!   command numbers, flag sets.
//! - [`Header::parse`] and [`decode_request`]: a total decoder from bytes to
//!   [`Request`]; every malformed message becomes a [`ProtocolError`] with the
//!   errno for its error reply, and no input panics.
//! - [`negotiate`]: version and capability negotiation.
//! - `encode_*`: replies written into a reused buffer, and server → client
//!   DMA_READ/DMA_WRITE requests with their reply checks ([`DmaLayout`]).
//! - [`MessageReader`] and [`send_message`]: framing with fd passing, one
//!   `recvmsg` per wake-up, fds attributed to the message they came with.
//!
//! # Implemented
//!
//! VERSION, DMA_MAP / DMA_UNMAP (including QEMU's unmap-all), DEVICE_GET_INFO,
//! DEVICE_GET_REGION_INFO with the sparse-mmap capability and the argsz
//! re-query rule, DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS (none / bool / eventfd
//! data, QEMU's chunked eventfds), REGION_READ / REGION_WRITE (posted writes
//! included), DEVICE_RESET, and DMA_READ / DMA_WRITE from the server.
//!
//! # Deliberately not implemented
//!
//! - Migration (DEVICE_FEATURE, MIG_DATA_READ/WRITE, the old DIRTY_PAGES):
//!   decoded and answered ENOTSUP; `migration` is not offered in the version
//!   reply. vgpud devices keep their state in the daemon.
//! - REGION_WRITE_MULTI: `write_multiple` is not offered, so QEMU never sends
//!   it (it only batches posted writes, which an mmapped BAR disables anyway).
//! - ioeventfds / ioregionfds: GET_REGION_IO_FDS is answered with no
//!   sub-regions.
//! - Twin-socket mode: not offered; DMA requests share the main socket.
//!
//! # Why not the rust-vmm `vfio_user` crate's server
//!
//! Its server advertises `max_msg_fds` 1 (QEMU then sends MSI-X eventfds one
//! per message), sends error replies with errno 0, cannot send DMA_READ /
//! DMA_WRITE (needed for QEMU's fd-less maps), `unwrap`s on peer data (the
//! version string), does not bounds-check region accesses, and desynchronises
//! the stream on a read sent with NO_REPLY. Its client is still useful as an
//! independent peer in tests.
//!
//! # Deviations from the spec, for QEMU
//!
//! - DMA_READ replies and DMA_WRITE requests use QEMU's `VFIOUserDMARW`
//!   layout by default (32-bit count, data at body offset 12), not the
//!   spec's; see [`DmaLayout`].
//! - A region info reply too small for its capabilities leaves CAPS clear;
//!   see [`encode_region_info_reply`].
#![forbid(unsafe_code)]

mod decode;
mod dma;
mod encode;
mod error;
mod fdlist;
mod framing;
mod header;
mod version;
pub mod wire;

pub use decode::{Request, decode_request, decode_request_with_limit};
pub use dma::{
    DmaError, DmaLayout, DmaRequest, decode_dma_read_reply, decode_dma_write_reply,
    encode_dma_read, encode_dma_write,
};
pub use encode::{
    DeviceInfo, EncodeError, IrqInfo, MmapArea, RegionInfo, RegionInfoReply, encode_command,
    encode_device_info_reply, encode_dma_unmap_reply, encode_empty_reply, encode_error,
    encode_irq_info_reply, encode_region_info_reply, encode_region_io_fds_reply,
    encode_region_read_reply, encode_region_write_reply, encode_reply, encode_version_reply,
};
pub use error::{ProtocolError, errno};
pub use fdlist::{FdList, MAX_MSG_FDS};
pub use framing::{
    Frame, FrameError, MAX_SEND_PARTS, MessageReader, send_message, send_message_vectored,
};
pub use header::{Header, MessageKind};
pub use version::{ClientCapabilities, Negotiated, ServerCapabilities, negotiate};
