//! The total decoder for client → server commands.
//!
//! [`decode_request`] turns a framed message (header, body, number of file
//! descriptors that came with it) into a [`Request`], or a
//! [`ProtocolError`] that names what is wrong and carries the errno for the
//! error reply. It never panics: fixed parts are read with zerocopy's
//! `read_from_prefix`/`read_from_bytes`, variable parts with `get`.

use zerocopy::FromBytes;

use crate::error::ProtocolError;
use crate::header::{Header, MessageKind};
use crate::version::{ClientCapabilities, ServerCapabilities};
use crate::wire::{
    Command, DeviceFeatureBody, DeviceInfoBody, DmaMapBody, DmaMapFlags, DmaUnmapBody,
    DmaUnmapFlags, FeatureFlags, HeaderFlags, IrqInfoBody, IrqSetBody, IrqSetFlags,
    RegionAccessBody, RegionInfoBody, RegionIoFdsBody, VersionBody,
};

/// A decoded client command. Borrowed data points into the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `VFIO_USER_VERSION`: the client's proposal.
    Version {
        /// Proposed major version.
        major: u16,
        /// Proposed minor version.
        minor: u16,
        /// Proposed capabilities.
        capabilities: ClientCapabilities,
    },
    /// `VFIO_USER_DMA_MAP`. The range's file descriptor, if any, is the
    /// message's only fd; without one the range is reached with DMA_READ/WRITE.
    DmaMap {
        /// READ and/or WRITE (at least one).
        flags: DmaMapFlags,
        /// Offset of the range in the fd (0 without an fd).
        offset: u64,
        /// Client DMA address; `iova + size` does not overflow.
        iova: u64,
        /// Size in bytes, nonzero.
        size: u64,
        /// Whether an fd came with the message.
        has_fd: bool,
    },
    /// `VFIO_USER_DMA_UNMAP`. The reply echoes `argsz`, `flags`, `iova`, `size`.
    DmaUnmap {
        /// The request's argsz (echoed).
        argsz: u32,
        /// Either empty or [`DmaUnmapFlags::ALL`] (then `iova` and `size` are 0).
        flags: DmaUnmapFlags,
        /// Client DMA address.
        iova: u64,
        /// Size in bytes (nonzero unless ALL).
        size: u64,
    },
    /// `VFIO_USER_DEVICE_GET_INFO`.
    DeviceGetInfo {
        /// Maximum reply body size, at least 16.
        argsz: u32,
    },
    /// `VFIO_USER_DEVICE_GET_REGION_INFO`.
    GetRegionInfo {
        /// Maximum reply body size, at least 32.
        argsz: u32,
        /// Region index.
        index: u32,
    },
    /// `VFIO_USER_DEVICE_GET_REGION_IO_FDS`.
    GetRegionIoFds {
        /// Maximum reply body size, at least 16.
        argsz: u32,
        /// Region index.
        index: u32,
    },
    /// `VFIO_USER_DEVICE_GET_IRQ_INFO`.
    GetIrqInfo {
        /// Maximum reply body size, at least 16.
        argsz: u32,
        /// IRQ index.
        index: u32,
    },
    /// `VFIO_USER_DEVICE_SET_IRQS`. With `DATA_EVENTFD` the eventfds are the
    /// message's fds: either `count` of them, or none (unassign the range).
    SetIrqs {
        /// Exactly one DATA bit and one ACTION bit.
        flags: IrqSetFlags,
        /// IRQ index.
        index: u32,
        /// First vector; `start + count` does not overflow.
        start: u32,
        /// Number of vectors.
        count: u32,
        /// `count` bool bytes with `DATA_BOOL`, empty otherwise.
        data: &'a [u8],
    },
    /// `VFIO_USER_REGION_READ`.
    RegionRead {
        /// Region index.
        region: u32,
        /// Offset in the region; `offset + count` does not overflow.
        offset: u64,
        /// Bytes to read, 1 ..= max_data_xfer_size.
        count: u32,
    },
    /// `VFIO_USER_REGION_WRITE`.
    RegionWrite {
        /// Region index.
        region: u32,
        /// Offset in the region; `offset + data.len()` does not overflow.
        offset: u64,
        /// Bytes to write, 1 ..= max_data_xfer_size of them.
        data: &'a [u8],
    },
    /// `VFIO_USER_DEVICE_RESET`.
    DeviceReset,
    /// `VFIO_USER_DEVICE_FEATURE`: decoded so that it can be answered
    /// properly; vgpud supports no feature and answers ENOTSUP.
    DeviceFeature {
        /// Maximum reply body size.
        argsz: u32,
        /// Feature index (bits 0–15 of the flags).
        feature: u16,
        /// GET / SET / PROBE bits.
        ops: FeatureFlags,
        /// Feature data.
        data: &'a [u8],
    },
    /// A well-formed command that vgpud does not implement (dirty pages,
    /// REGION_WRITE_MULTI, migration data): answer ENOTSUP.
    Unsupported(Command),
}

/// Decodes a client command with the default [`ServerCapabilities`] limits.
///
/// `payload` is the message body (the `msg_size - 16` bytes after the
/// header); `fd_count` the number of file descriptors framed with it.
pub fn decode_request<'a>(
    header: &Header,
    payload: &'a [u8],
    fd_count: usize,
) -> Result<Request<'a>, ProtocolError> {
    decode_request_with_limit(
        header,
        payload,
        fd_count,
        ServerCapabilities::default().max_data_xfer_size,
    )
}

/// Decodes a client command, refusing transfers over `max_data_xfer_size`
/// (the negotiated limit).
pub fn decode_request_with_limit<'a>(
    header: &Header,
    payload: &'a [u8],
    fd_count: usize,
    max_data_xfer_size: u32,
) -> Result<Request<'a>, ProtocolError> {
    match header.kind() {
        MessageKind::Command => {}
        MessageKind::Reply => {
            return Err(ProtocolError::UnexpectedReply {
                msg_id: header.msg_id,
                command: header.command,
            });
        }
        MessageKind::Unknown(kind) => return Err(ProtocolError::UnknownMessageType(kind)),
    }
    let allowed = HeaderFlags::TYPE_MASK | HeaderFlags::NO_REPLY;
    if header.flags & !allowed.bits() != 0 {
        return Err(ProtocolError::InvalidHeaderFlags(header.flags));
    }
    if header.payload_len() != payload.len()
        || (header.msg_size as usize) < crate::wire::HEADER_SIZE
    {
        return Err(ProtocolError::MessageSizeMismatch {
            msg_size: header.msg_size,
            payload_len: payload.len(),
        });
    }
    let command = header.command().map_err(ProtocolError::UnknownCommand)?;
    let cx = Cx {
        command,
        payload,
        fd_count,
        max: max_data_xfer_size,
    };
    match command {
        Command::Version => cx.version(),
        Command::DmaMap => cx.dma_map(),
        Command::DmaUnmap => cx.dma_unmap(),
        Command::DeviceGetInfo => cx.device_get_info(),
        Command::DeviceGetRegionInfo => cx.region_info(),
        Command::DeviceGetRegionIoFds => cx.region_io_fds(),
        Command::DeviceGetIrqInfo => cx.irq_info(),
        Command::DeviceSetIrqs => cx.set_irqs(),
        Command::RegionRead => cx.region_read(),
        Command::RegionWrite => cx.region_write(),
        Command::DmaRead | Command::DmaWrite => Err(ProtocolError::WrongDirection(command)),
        Command::DeviceReset => {
            cx.no_fds()?;
            cx.exact_len(0, "0")?;
            Ok(Request::DeviceReset)
        }
        Command::DeviceFeature => cx.device_feature(),
        Command::DirtyPages
        | Command::RegionWriteMulti
        | Command::MigDataRead
        | Command::MigDataWrite => {
            cx.no_fds()?;
            Ok(Request::Unsupported(command))
        }
    }
}

/// One command's decoding context.
struct Cx<'a> {
    command: Command,
    payload: &'a [u8],
    fd_count: usize,
    max: u32,
}

impl<'a> Cx<'a> {
    fn no_fds(&self) -> Result<(), ProtocolError> {
        if self.fd_count != 0 {
            return Err(self.wrong_fds("0"));
        }
        Ok(())
    }

    fn wrong_fds(&self, expected: &'static str) -> ProtocolError {
        ProtocolError::WrongFdCount {
            command: self.command,
            received: self.fd_count,
            expected,
        }
    }

    fn exact_len(&self, len: usize, expected: &'static str) -> Result<(), ProtocolError> {
        if self.payload.len() != len {
            return Err(self.bad_len(expected));
        }
        Ok(())
    }

    fn bad_len(&self, expected: &'static str) -> ProtocolError {
        ProtocolError::BodyLength {
            command: self.command,
            len: self.payload.len(),
            expected,
        }
    }

    /// The whole body as `T`.
    fn exact<T: FromBytes>(&self, expected: &'static str) -> Result<T, ProtocolError> {
        T::read_from_bytes(self.payload).map_err(|_| self.bad_len(expected))
    }

    /// `T` from the start of the body, and the rest.
    fn prefix<T: FromBytes>(&self, expected: &'static str) -> Result<(T, &'a [u8]), ProtocolError> {
        T::read_from_prefix(self.payload).map_err(|_| self.bad_len(expected))
    }

    fn argsz_at_least(&self, argsz: u32, min: u32) -> Result<(), ProtocolError> {
        if argsz < min {
            return Err(ProtocolError::ArgszTooSmall {
                command: self.command,
                argsz,
                min,
            });
        }
        Ok(())
    }

    fn end_of(&self, base: u64, len: u64) -> Result<u64, ProtocolError> {
        base.checked_add(len).ok_or(ProtocolError::RangeOverflow {
            command: self.command,
            base,
            len,
        })
    }

    fn transfer(&self, count: u64) -> Result<(), ProtocolError> {
        if count == 0 {
            return Err(ProtocolError::ZeroLength {
                command: self.command,
            });
        }
        if count > u64::from(self.max) {
            return Err(ProtocolError::TransferTooLarge {
                command: self.command,
                count,
                max: self.max,
            });
        }
        Ok(())
    }

    fn version(&self) -> Result<Request<'a>, ProtocolError> {
        self.no_fds()?;
        let (body, rest) = self.prefix::<VersionBody>("at least 4")?;
        Ok(Request::Version {
            major: body.major.get(),
            minor: body.minor.get(),
            capabilities: ClientCapabilities::parse(rest)?,
        })
    }

    fn dma_map(&self) -> Result<Request<'a>, ProtocolError> {
        if self.fd_count > 1 {
            return Err(self.wrong_fds("0 or 1"));
        }
        let body = self.exact::<DmaMapBody>("32")?;
        self.argsz_at_least(body.argsz.get(), 32)?;
        let raw = body.flags.get();
        let flags = DmaMapFlags::from_bits(raw)
            .filter(|f| f.intersects(DmaMapFlags::KNOWN))
            .ok_or(ProtocolError::InvalidFlags {
                command: self.command,
                flags: raw,
            })?;
        let (offset, iova, size) = (body.offset.get(), body.address.get(), body.size.get());
        if size == 0 {
            return Err(ProtocolError::ZeroLength {
                command: self.command,
            });
        }
        self.end_of(iova, size)?;
        self.end_of(offset, size)?;
        Ok(Request::DmaMap {
            flags,
            offset,
            iova,
            size,
            has_fd: self.fd_count == 1,
        })
    }

    fn dma_unmap(&self) -> Result<Request<'a>, ProtocolError> {
        self.no_fds()?;
        let body = self.exact::<DmaUnmapBody>("24")?;
        let argsz = body.argsz.get();
        self.argsz_at_least(argsz, 24)?;
        let raw = body.flags.get();
        let flags = DmaUnmapFlags::from_bits(raw).ok_or(ProtocolError::InvalidFlags {
            command: self.command,
            flags: raw,
        })?;
        if flags.intersects(DmaUnmapFlags::GET_DIRTY_BITMAP | DmaUnmapFlags::VADDR) {
            return Err(ProtocolError::UnsupportedFlags {
                command: self.command,
                flags: raw,
            });
        }
        let (iova, size) = (body.address.get(), body.size.get());
        if flags.contains(DmaUnmapFlags::ALL) {
            if iova != 0 || size != 0 {
                return Err(ProtocolError::InvalidFlags {
                    command: self.command,
                    flags: raw,
                });
            }
        } else {
            if size == 0 {
                return Err(ProtocolError::ZeroLength {
                    command: self.command,
                });
            }
            self.end_of(iova, size)?;
        }
        Ok(Request::DmaUnmap {
            argsz,
            flags,
            iova,
            size,
        })
    }

    fn device_get_info(&self) -> Result<Request<'a>, ProtocolError> {
        self.no_fds()?;
        // The spec says the other fields "must be zero"; they are ignored, as
        // the kernel ignores them in the ioctl this mirrors.
        let body = self.exact::<DeviceInfoBody>("16")?;
        self.argsz_at_least(body.argsz.get(), 16)?;
        Ok(Request::DeviceGetInfo {
            argsz: body.argsz.get(),
        })
    }

    fn region_info(&self) -> Result<Request<'a>, ProtocolError> {
        self.no_fds()?;
        let body = self.exact::<RegionInfoBody>("32")?;
        self.argsz_at_least(body.argsz.get(), 32)?;
        Ok(Request::GetRegionInfo {
            argsz: body.argsz.get(),
            index: body.index.get(),
        })
    }

    fn region_io_fds(&self) -> Result<Request<'a>, ProtocolError> {
        self.no_fds()?;
        let body = self.exact::<RegionIoFdsBody>("16")?;
        self.argsz_at_least(body.argsz.get(), 16)?;
        if body.flags.get() != 0 {
            return Err(ProtocolError::InvalidFlags {
                command: self.command,
                flags: body.flags.get(),
            });
        }
        Ok(Request::GetRegionIoFds {
            argsz: body.argsz.get(),
            index: body.index.get(),
        })
    }

    fn irq_info(&self) -> Result<Request<'a>, ProtocolError> {
        self.no_fds()?;
        let body = self.exact::<IrqInfoBody>("16")?;
        self.argsz_at_least(body.argsz.get(), 16)?;
        Ok(Request::GetIrqInfo {
            argsz: body.argsz.get(),
            index: body.index.get(),
        })
    }

    fn set_irqs(&self) -> Result<Request<'a>, ProtocolError> {
        let (body, data) = self.prefix::<IrqSetBody>("at least 20")?;
        // QEMU sends argsz 20 with eventfds (they travel as fds, not data),
        // 20 + count with bools: only the lower bound is meaningful.
        self.argsz_at_least(body.argsz.get(), 20)?;
        let raw = body.flags.get();
        let invalid = ProtocolError::InvalidFlags {
            command: self.command,
            flags: raw,
        };
        let flags = IrqSetFlags::from_bits(raw).ok_or(invalid)?;
        let data_bits = raw & IrqSetFlags::DATA_MASK.bits();
        let action_bits = raw & IrqSetFlags::ACTION_MASK_BITS.bits();
        if data_bits.count_ones() != 1 || action_bits.count_ones() != 1 {
            return Err(ProtocolError::InvalidFlags {
                command: self.command,
                flags: raw,
            });
        }
        let (index, start, count) = (body.index.get(), body.start.get(), body.count.get());
        if start.checked_add(count).is_none() {
            return Err(ProtocolError::RangeOverflow {
                command: self.command,
                base: start.into(),
                len: count.into(),
            });
        }
        if flags.contains(IrqSetFlags::DATA_BOOL) {
            self.no_fds()?;
            if data.len() as u64 != u64::from(count) {
                return Err(ProtocolError::CountMismatch {
                    command: self.command,
                    count: count.into(),
                    data_len: data.len(),
                });
            }
        } else {
            if !data.is_empty() {
                return Err(self.bad_len("20 without DATA_BOOL"));
            }
            if flags.contains(IrqSetFlags::DATA_EVENTFD) {
                // QEMU sends `count` fds, or none to unassign the range;
                // fewer than `count` assigns the first ones and unassigns
                // the rest, as the kernel does for -1 entries.
                if self.fd_count as u64 > u64::from(count) {
                    return Err(self.wrong_fds("at most count"));
                }
            } else {
                self.no_fds()?;
            }
        }
        Ok(Request::SetIrqs {
            flags,
            index,
            start,
            count,
            data,
        })
    }

    fn region_read(&self) -> Result<Request<'a>, ProtocolError> {
        self.no_fds()?;
        let body = self.exact::<RegionAccessBody>("16")?;
        let (offset, region, count) = (body.offset.get(), body.region.get(), body.count.get());
        self.transfer(count.into())?;
        self.end_of(offset, count.into())?;
        Ok(Request::RegionRead {
            region,
            offset,
            count,
        })
    }

    fn region_write(&self) -> Result<Request<'a>, ProtocolError> {
        self.no_fds()?;
        let (body, data) = self.prefix::<RegionAccessBody>("at least 16")?;
        let (offset, region, count) = (body.offset.get(), body.region.get(), body.count.get());
        if data.len() as u64 != u64::from(count) {
            return Err(ProtocolError::CountMismatch {
                command: self.command,
                count: count.into(),
                data_len: data.len(),
            });
        }
        self.transfer(count.into())?;
        self.end_of(offset, count.into())?;
        Ok(Request::RegionWrite {
            region,
            offset,
            data,
        })
    }

    fn device_feature(&self) -> Result<Request<'a>, ProtocolError> {
        self.no_fds()?;
        let (body, data) = self.prefix::<DeviceFeatureBody>("at least 8")?;
        self.argsz_at_least(body.argsz.get(), 8)?;
        let raw = body.flags.get();
        let invalid = ProtocolError::InvalidFlags {
            command: self.command,
            flags: raw,
        };
        let flags = FeatureFlags::from_bits(raw).ok_or(invalid)?;
        let ops = flags.without(FeatureFlags::INDEX_MASK);
        // As in the kernel: GET and SET are exclusive unless probing.
        if ops.contains(FeatureFlags::GET | FeatureFlags::SET) && !ops.contains(FeatureFlags::PROBE)
        {
            return Err(ProtocolError::InvalidFlags {
                command: self.command,
                flags: raw,
            });
        }
        if ops == FeatureFlags::EMPTY {
            return Err(ProtocolError::InvalidFlags {
                command: self.command,
                flags: raw,
            });
        }
        Ok(Request::DeviceFeature {
            argsz: body.argsz.get(),
            feature: (raw & FeatureFlags::INDEX_MASK.bits()) as u16,
            ops,
            data,
        })
    }
}
