//! The vfio-user wire format, written from the protocol specification
//! (QEMU `docs/interop/vfio-user.rst`) and `<linux/vfio.h>`.
//!
//! This is deliberately an independent implementation: the tests must not
//! share a codec with the daemon, or a symmetric bug would cancel out. All
//! fields are in host byte order, as the specification says.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of the header that starts every message, in bytes.
pub const HEADER_SIZE: usize = 16;

/// Message commands (`Command` field of the header).
pub mod command {
    /// `VFIO_USER_VERSION`.
    pub const VERSION: u16 = 1;
    /// `VFIO_USER_DMA_MAP`.
    pub const DMA_MAP: u16 = 2;
    /// `VFIO_USER_DMA_UNMAP`.
    pub const DMA_UNMAP: u16 = 3;
    /// `VFIO_USER_DEVICE_GET_INFO`.
    pub const DEVICE_GET_INFO: u16 = 4;
    /// `VFIO_USER_DEVICE_GET_REGION_INFO`.
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    /// `VFIO_USER_DEVICE_GET_REGION_IO_FDS`.
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    /// `VFIO_USER_DEVICE_GET_IRQ_INFO`.
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    /// `VFIO_USER_DEVICE_SET_IRQS`.
    pub const DEVICE_SET_IRQS: u16 = 8;
    /// `VFIO_USER_REGION_READ`.
    pub const REGION_READ: u16 = 9;
    /// `VFIO_USER_REGION_WRITE`.
    pub const REGION_WRITE: u16 = 10;
    /// `VFIO_USER_DMA_READ` (server to client).
    pub const DMA_READ: u16 = 11;
    /// `VFIO_USER_DMA_WRITE` (server to client).
    pub const DMA_WRITE: u16 = 12;
    /// `VFIO_USER_DEVICE_RESET`.
    pub const DEVICE_RESET: u16 = 13;
}

/// Header flag bits.
pub mod flags {
    /// Mask of the message type bits (0–3).
    pub const TYPE_MASK: u32 = 0xf;
    /// Type value of a command.
    pub const TYPE_COMMAND: u32 = 0;
    /// Type value of a reply.
    pub const TYPE_REPLY: u32 = 1;
    /// The sender wants no reply.
    pub const NO_REPLY: u32 = 1 << 4;
    /// The reply reports an error; the header's error field holds the errno.
    pub const ERROR: u32 = 1 << 5;
}

/// `VFIO_DEVICE_FLAGS_*` in the `DEVICE_GET_INFO` reply.
pub mod device_flags {
    /// The device supports `DEVICE_RESET`.
    pub const RESET: u32 = 1 << 0;
    /// The device is a PCI device.
    pub const PCI: u32 = 1 << 1;
}

/// `VFIO_REGION_INFO_FLAG_*`.
pub mod region_flags {
    /// The region can be read.
    pub const READ: u32 = 1 << 0;
    /// The region can be written.
    pub const WRITE: u32 = 1 << 1;
    /// The region (or areas of it) can be mmapped.
    pub const MMAP: u32 = 1 << 2;
    /// The reply carries a capability chain.
    pub const CAPS: u32 = 1 << 3;
}

/// Region capability id of the sparse-mmap capability
/// (`VFIO_REGION_INFO_CAP_SPARSE_MMAP`).
pub const REGION_CAP_SPARSE_MMAP: u16 = 1;

/// `VFIO_IRQ_INFO_*`.
pub mod irq_info_flags {
    /// The interrupt can signal an eventfd.
    pub const EVENTFD: u32 = 1 << 0;
    /// `MASK` and `UNMASK` work.
    pub const MASKABLE: u32 = 1 << 1;
    /// The interrupt masks itself when it fires.
    pub const AUTOMASKED: u32 = 1 << 2;
    /// Vectors are set up as a set.
    pub const NORESIZE: u32 = 1 << 3;
}

/// `VFIO_IRQ_SET_*`.
pub mod irq_set_flags {
    /// No data follows; the action applies to every selected vector.
    pub const DATA_NONE: u32 = 1 << 0;
    /// A byte per vector says whether the action applies.
    pub const DATA_BOOL: u32 = 1 << 1;
    /// Eventfds come as `SCM_RIGHTS`.
    pub const DATA_EVENTFD: u32 = 1 << 2;
    /// Mask the vectors.
    pub const ACTION_MASK: u32 = 1 << 3;
    /// Unmask the vectors.
    pub const ACTION_UNMASK: u32 = 1 << 4;
    /// Trigger (or, with eventfds, assign the triggers of) the vectors.
    pub const ACTION_TRIGGER: u32 = 1 << 5;
}

/// `DMA_MAP` flag bits.
pub mod dma_flags {
    /// The server may read the range.
    pub const READ: u32 = 1 << 0;
    /// The server may write the range.
    pub const WRITE: u32 = 1 << 1;
}

/// Interrupt indexes of a PCI device (`VFIO_PCI_*_IRQ_INDEX`).
pub mod irq_index {
    /// Legacy INTx.
    pub const INTX: u32 = 0;
    /// MSI.
    pub const MSI: u32 = 1;
    /// MSI-X.
    pub const MSIX: u32 = 2;
    /// Error notification.
    pub const ERR: u32 = 3;
    /// Device request (the server wants the device back).
    pub const REQ: u32 = 4;
}

/// The header that starts every message.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Header {
    /// Message id, echoed in the reply.
    pub id: u16,
    /// Command.
    pub command: u16,
    /// Size of the whole message including this header, in bytes.
    pub size: u32,
    /// Type, `NO_REPLY` and `ERROR` bits.
    pub flags: u32,
    /// Errno of an error reply.
    pub error: u32,
}

impl Header {
    /// The message type (command or reply).
    pub fn kind(&self) -> u32 {
        self.flags & flags::TYPE_MASK
    }
}

/// `VERSION` payload before the JSON.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Version {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

/// `DMA_MAP` payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmaMap {
    /// Size of this structure.
    pub argsz: u32,
    /// `dma_flags`.
    pub flags: u32,
    /// File offset of the range in the passed fd.
    pub offset: u64,
    /// IOVA of the range.
    pub address: u64,
    /// Length of the range in bytes.
    pub size: u64,
}

/// `DMA_UNMAP` payload (request and reply).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmaUnmap {
    /// Maximum reply payload size.
    pub argsz: u32,
    /// Unused flags.
    pub flags: u32,
    /// IOVA of the range.
    pub address: u64,
    /// Length of the range in bytes.
    pub size: u64,
}

/// `DEVICE_GET_INFO` payload (`struct vfio_device_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DeviceInfo {
    /// Maximum (request) or needed (reply) payload size.
    pub argsz: u32,
    /// `device_flags`.
    pub flags: u32,
    /// Number of regions.
    pub num_regions: u32,
    /// Number of interrupt indexes.
    pub num_irqs: u32,
}

/// `DEVICE_GET_REGION_INFO` payload (`struct vfio_region_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionInfo {
    /// Maximum (request) or needed (reply) payload size.
    pub argsz: u32,
    /// `region_flags`.
    pub flags: u32,
    /// Region index.
    pub index: u32,
    /// Offset of the first capability from the start of this structure.
    pub cap_offset: u32,
    /// Region size in bytes.
    pub size: u64,
    /// File offset to mmap the region at.
    pub offset: u64,
}

/// Header of a region capability (`struct vfio_info_cap_header`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CapHeader {
    /// Capability id.
    pub id: u16,
    /// Capability version.
    pub version: u16,
    /// Offset of the next capability from the start of `RegionInfo`, 0 = end.
    pub next: u32,
}

/// Fixed part of the sparse-mmap capability after its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SparseMmapHeader {
    /// Number of areas that follow.
    pub nr_areas: u32,
    /// Reserved.
    pub reserved: u32,
}

/// One sparse-mmap area.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SparseArea {
    /// Offset of the area inside the region (added to the region's file offset).
    pub offset: u64,
    /// Size of the area in bytes.
    pub size: u64,
}

/// `DEVICE_GET_IRQ_INFO` payload (`struct vfio_irq_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IrqInfo {
    /// Maximum (request) or needed (reply) payload size.
    pub argsz: u32,
    /// `irq_info_flags`.
    pub flags: u32,
    /// Interrupt index.
    pub index: u32,
    /// Number of vectors.
    pub count: u32,
}

/// `DEVICE_SET_IRQS` payload (`struct vfio_irq_set`) without its data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IrqSet {
    /// Size of the payload including data.
    pub argsz: u32,
    /// `irq_set_flags`.
    pub flags: u32,
    /// Interrupt index.
    pub index: u32,
    /// First vector.
    pub start: u32,
    /// Number of vectors.
    pub count: u32,
}

/// `REGION_READ` / `REGION_WRITE` payload before the data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionAccess {
    /// Offset in the region.
    pub offset: u64,
    /// Region index.
    pub region: u32,
    /// Number of bytes.
    pub count: u32,
}

/// `DMA_READ` / `DMA_WRITE` payload before the data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmaAccess {
    /// IOVA accessed.
    pub address: u64,
    /// Number of bytes.
    pub count: u64,
}
