//! The vfio-user wire layouts: the message header, the fixed part of every
//! command and reply body, command numbers and flag bits.
//!
//! All multi-byte fields are little-endian (the spec says "host endianness";
//! vgpud only runs on little-endian hosts, and spelling the byte order out
//! keeps the layouts alignment-free so they can be read from any offset of a
//! receive buffer). Every struct is `#[repr(C)]` with no padding, checked by
//! the size assertions at the bottom of this file.
//!
//! Offsets in the comments are from the start of the message body, i.e.
//! after the 16-byte header, as in the spec.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

mod flags;

pub use flags::{
    DeviceFlags, DmaMapFlags, DmaUnmapFlags, FeatureFlags, HeaderFlags, IrqInfoFlags, IrqSetFlags,
    RegionFlags,
};

/// Size of the message header in bytes.
pub const HEADER_SIZE: usize = 16;

/// The 16-byte header that starts every message, command or reply.
///
/// ```text
/// 0       2        4           8        12        16
/// | msg_id | command | msg_size | flags  | error   |
/// ```
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct RawHeader {
    /// Chosen by the sender of a command, echoed in its reply.
    pub msg_id: U16,
    /// A [`Command`] number, also set in replies.
    pub command: U16,
    /// Size of the whole message, header included.
    pub msg_size: U32,
    /// [`HeaderFlags`] bits.
    pub flags: U32,
    /// errno of a failed command, valid in replies with [`HeaderFlags::ERROR`].
    pub error: U32,
}

/// vfio-user command numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Command {
    /// Version and capability negotiation.
    Version = 1,
    /// Client memory made available to the server.
    DmaMap = 2,
    /// Client memory withdrawn.
    DmaUnmap = 3,
    /// Device flags, region and IRQ counts.
    DeviceGetInfo = 4,
    /// One region's size, flags and capabilities.
    DeviceGetRegionInfo = 5,
    /// ioeventfd / ioregionfd sub-regions of one region.
    DeviceGetRegionIoFds = 6,
    /// One IRQ index's count and flags.
    DeviceGetIrqInfo = 7,
    /// Eventfds and actions for a range of one IRQ index.
    DeviceSetIrqs = 8,
    /// Read from a device region.
    RegionRead = 9,
    /// Write to a device region.
    RegionWrite = 10,
    /// Server reads client memory (server → client).
    DmaRead = 11,
    /// Server writes client memory (server → client).
    DmaWrite = 12,
    /// Device reset.
    DeviceReset = 13,
    /// Dirty page logging of the pre-v2 migration protocol; removed from the spec.
    DirtyPages = 14,
    /// Several small posted writes in one message.
    RegionWriteMulti = 15,
    /// `VFIO_DEVICE_FEATURE` (migration and DMA logging).
    DeviceFeature = 16,
    /// Migration data from the source server.
    MigDataRead = 17,
    /// Migration data to the destination server.
    MigDataWrite = 18,
}

impl TryFrom<u16> for Command {
    /// The unknown command number.
    type Error = u16;

    fn try_from(value: u16) -> Result<Self, u16> {
        Ok(match value {
            1 => Self::Version,
            2 => Self::DmaMap,
            3 => Self::DmaUnmap,
            4 => Self::DeviceGetInfo,
            5 => Self::DeviceGetRegionInfo,
            6 => Self::DeviceGetRegionIoFds,
            7 => Self::DeviceGetIrqInfo,
            8 => Self::DeviceSetIrqs,
            9 => Self::RegionRead,
            10 => Self::RegionWrite,
            11 => Self::DmaRead,
            12 => Self::DmaWrite,
            13 => Self::DeviceReset,
            14 => Self::DirtyPages,
            15 => Self::RegionWriteMulti,
            16 => Self::DeviceFeature,
            17 => Self::MigDataRead,
            18 => Self::MigDataWrite,
            other => return Err(other),
        })
    }
}

impl From<Command> for u16 {
    fn from(command: Command) -> u16 {
        command as u16
    }
}

/// `VFIO_USER_VERSION` body, followed by the NUL-terminated JSON capabilities.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct VersionBody {
    /// Protocol major version (0).
    pub major: U16,
    /// Protocol minor version.
    pub minor: U16,
}

/// `VFIO_USER_DMA_MAP` request (`struct vfio_iommu_type1_dma_map` with the
/// file offset in place of `vaddr`). The reply has no body.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct DmaMapBody {
    /// Size of this struct (32).
    pub argsz: U32,
    /// [`DmaMapFlags`].
    pub flags: U32,
    /// Offset of the range in the file descriptor sent with the message.
    pub offset: U64,
    /// Client DMA address (IOVA) of the range.
    pub address: U64,
    /// Size of the range in bytes.
    pub size: U64,
}

/// `VFIO_USER_DMA_UNMAP` request, echoed as the reply.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct DmaUnmapBody {
    /// Maximum reply body size (at least 24).
    pub argsz: U32,
    /// [`DmaUnmapFlags`].
    pub flags: U32,
    /// Client DMA address of the range.
    pub address: U64,
    /// Size of the range in bytes.
    pub size: U64,
}

/// `struct vfio_device_info`: `VFIO_USER_DEVICE_GET_INFO` request and reply.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct DeviceInfoBody {
    /// Request: maximum reply size; reply: size of the full reply (16).
    pub argsz: U32,
    /// [`DeviceFlags`].
    pub flags: U32,
    /// Number of regions.
    pub num_regions: U32,
    /// Number of IRQ indexes.
    pub num_irqs: U32,
}

/// `struct vfio_region_info`: `VFIO_USER_DEVICE_GET_REGION_INFO` request and
/// the fixed part of its reply.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct RegionInfoBody {
    /// Request: maximum reply size; reply: size of the full reply.
    pub argsz: U32,
    /// [`RegionFlags`].
    pub flags: U32,
    /// Region index.
    pub index: U32,
    /// Offset of the first capability from the start of this struct, or 0.
    pub cap_offset: U32,
    /// Region size in bytes.
    pub size: U64,
    /// mmap offset of the region in the file descriptor sent with the reply.
    pub offset: U64,
}

/// `struct vfio_info_cap_header`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct CapHeader {
    /// Capability id ([`CAP_SPARSE_MMAP`], ...).
    pub id: U16,
    /// Capability version.
    pub version: U16,
    /// Offset of the next capability from the start of the region info, 0 for the last.
    pub next: U32,
}

/// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`.
pub const CAP_SPARSE_MMAP: u16 = 1;
/// Version of the sparse mmap capability.
pub const CAP_SPARSE_MMAP_VERSION: u16 = 1;

/// The fixed part of `struct vfio_region_info_cap_sparse_mmap`, after its [`CapHeader`].
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct SparseMmapHeader {
    /// Number of [`SparseMmapArea`]s that follow.
    pub nr_areas: U32,
    /// Zero.
    pub reserved: U32,
}

/// `struct vfio_region_sparse_mmap_area`: one mmappable part of a region.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct SparseMmapArea {
    /// Offset of the area in the region (added to the region's mmap offset).
    pub offset: U64,
    /// Size of the area in bytes.
    pub size: U64,
}

/// `VFIO_USER_DEVICE_GET_REGION_IO_FDS` request and the fixed part of its reply.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct RegionIoFdsBody {
    /// Request: maximum reply size; reply: size of the full reply.
    pub argsz: U32,
    /// Zero.
    pub flags: U32,
    /// Region index.
    pub index: U32,
    /// Reply: number of sub-regions that follow.
    pub count: U32,
}

/// `struct vfio_irq_info`: `VFIO_USER_DEVICE_GET_IRQ_INFO` request and reply.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct IrqInfoBody {
    /// Request: maximum reply size; reply: size of the full reply (16).
    pub argsz: U32,
    /// [`IrqInfoFlags`].
    pub flags: U32,
    /// IRQ index (INTx, MSI, MSI-X, ERR, REQ).
    pub index: U32,
    /// Number of vectors.
    pub count: U32,
}

/// `struct vfio_irq_set`: the fixed part of `VFIO_USER_DEVICE_SET_IRQS`; bool
/// data follows for `DATA_BOOL`. The reply has no body.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct IrqSetBody {
    /// Size of the request body, data included.
    pub argsz: U32,
    /// [`IrqSetFlags`].
    pub flags: U32,
    /// IRQ index.
    pub index: U32,
    /// First vector of the range.
    pub start: U32,
    /// Number of vectors in the range.
    pub count: U32,
}

/// `VFIO_USER_REGION_READ` / `VFIO_USER_REGION_WRITE` fixed part; data follows
/// in write requests and read replies.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct RegionAccessBody {
    /// Offset in the region.
    pub offset: U64,
    /// Region index.
    pub region: U32,
    /// Number of bytes.
    pub count: U32,
}

/// `VFIO_USER_DMA_READ` / `VFIO_USER_DMA_WRITE` fixed part as the spec and
/// libvfio-user define it; data follows at offset 16.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct DmaAccessBody {
    /// Client DMA address.
    pub address: U64,
    /// Number of bytes.
    pub count: U64,
}

/// `VFIO_USER_DMA_READ` / `VFIO_USER_DMA_WRITE` fixed part as QEMU's client
/// defines it (`VFIOUserDMARW`: a 32-bit count, data at offset 12, and the C
/// struct's 4 bytes of tail padding counted in the message size).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct QemuDmaAccessBody {
    /// Client DMA address.
    pub address: U64,
    /// Number of bytes.
    pub count: U32,
}

/// `VFIO_USER_DEVICE_FEATURE` fixed part; feature data follows.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct DeviceFeatureBody {
    /// Maximum reply size.
    pub argsz: U32,
    /// [`FeatureFlags`] and the feature index.
    pub flags: U32,
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<RawHeader>() == HEADER_SIZE);
    assert!(size_of::<VersionBody>() == 4);
    assert!(size_of::<DmaMapBody>() == 32);
    assert!(size_of::<DmaUnmapBody>() == 24);
    assert!(size_of::<DeviceInfoBody>() == 16);
    assert!(size_of::<RegionInfoBody>() == 32);
    assert!(size_of::<CapHeader>() == 8);
    assert!(size_of::<SparseMmapHeader>() == 8);
    assert!(size_of::<SparseMmapArea>() == 16);
    assert!(size_of::<RegionIoFdsBody>() == 16);
    assert!(size_of::<IrqInfoBody>() == 16);
    assert!(size_of::<IrqSetBody>() == 20);
    assert!(size_of::<RegionAccessBody>() == 16);
    assert!(size_of::<DmaAccessBody>() == 16);
    assert!(size_of::<QemuDmaAccessBody>() == 12);
    assert!(size_of::<DeviceFeatureBody>() == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_numbers_round_trip() {
        for n in 1..=18u16 {
            let command = Command::try_from(n).expect("1..=18 are all defined");
            assert_eq!(u16::from(command), n);
        }
    }

    #[test]
    fn unknown_command_numbers_are_rejected() {
        assert_eq!(Command::try_from(0), Err(0));
        assert_eq!(Command::try_from(19), Err(19));
        assert_eq!(Command::try_from(u16::MAX), Err(u16::MAX));
    }

    #[test]
    fn flag_sets_reject_unknown_bits() {
        assert_eq!(
            DmaMapFlags::from_bits(3),
            Some(DmaMapFlags::READ | DmaMapFlags::WRITE)
        );
        assert_eq!(DmaMapFlags::from_bits(4), None);
        assert_eq!(IrqSetFlags::KNOWN.bits(), 0x3f);
        assert!(IrqSetFlags::from_bits(0x40).is_none());
    }

    #[test]
    fn header_layout_is_little_endian_at_spec_offsets() {
        let header = RawHeader {
            msg_id: U16::new(0x0102),
            command: U16::new(0x0304),
            msg_size: U32::new(0x0506_0708),
            flags: U32::new(0x090a_0b0c),
            error: U32::new(0x0d0e_0f10),
        };
        assert_eq!(
            header.as_bytes(),
            &[
                0x02, 0x01, 0x04, 0x03, 0x08, 0x07, 0x06, 0x05, 0x0c, 0x0b, 0x0a, 0x09, 0x10, 0x0f,
                0x0e, 0x0d
            ]
        );
    }
}
