//! Typed helpers for each client-to-server command.

use std::os::fd::{BorrowedFd, OwnedFd};

use zerocopy::{FromBytes, IntoBytes};

use super::{ClientError, RawClient};
use crate::wire::{
    self, CapHeader, DeviceInfo, DmaMap, DmaUnmap, IrqInfo, IrqSet, REGION_CAP_SPARSE_MMAP,
    RegionAccess, RegionInfo, SparseArea, SparseMmapHeader, command, flags, irq_set_flags,
};

/// Capability chains longer than this are treated as loops.
const MAX_CAPS: usize = 16;

/// A region as `DEVICE_GET_REGION_INFO` describes it.
#[derive(Debug)]
pub struct Region {
    /// The fixed part of the (last) reply.
    pub info: RegionInfo,
    /// The sparse-mmap areas, if the reply had that capability.
    pub sparse_areas: Option<Vec<SparseArea>>,
    /// The fd to mmap, if the reply carried one.
    pub fd: Option<OwnedFd>,
    /// How many `DEVICE_GET_REGION_INFO` requests it took (2 when the
    /// first reply asked for a larger `argsz`).
    pub queries: u32,
}

/// A `DMA_MAP` request.
#[derive(Clone, Copy, Debug)]
pub struct DmaMapRequest {
    /// IOVA of the range.
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
    /// File offset of the range in the fd (0 without an fd).
    pub offset: u64,
    /// `wire::dma_flags`.
    pub flags: u32,
}

impl DmaMapRequest {
    /// A readable and writable map.
    pub fn read_write(iova: u64, size: u64) -> Self {
        DmaMapRequest {
            iova,
            size,
            offset: 0,
            flags: wire::dma_flags::READ | wire::dma_flags::WRITE,
        }
    }

    /// A read-only map.
    pub fn read_only(iova: u64, size: u64) -> Self {
        DmaMapRequest {
            iova,
            size,
            offset: 0,
            flags: wire::dma_flags::READ,
        }
    }
}

fn reply_struct<T: FromBytes>(body: &[u8], what: &str) -> Result<T, ClientError> {
    T::read_from_prefix(body)
        .map(|(value, _)| value)
        .map_err(|_| ClientError::BadReply(format!("{what} reply of {} bytes", body.len())))
}

impl RawClient {
    /// `DEVICE_GET_INFO`.
    pub fn device_info(&mut self) -> Result<DeviceInfo, ClientError> {
        let request = DeviceInfo {
            argsz: size_of::<DeviceInfo>() as u32,
            ..Default::default()
        };
        self.request(command::DEVICE_GET_INFO, 0, &[request.as_bytes()], &[])?;
        reply_struct(self.body(), "DEVICE_GET_INFO")
    }

    /// One `DEVICE_GET_REGION_INFO` with the given `argsz`: the fixed reply,
    /// the bytes after it, and any fd.
    pub fn region_info_once(
        &mut self,
        index: u32,
        argsz: u32,
    ) -> Result<(RegionInfo, Vec<u8>, Vec<OwnedFd>), ClientError> {
        let request = RegionInfo {
            argsz,
            index,
            ..Default::default()
        };
        let fds = self.request(
            command::DEVICE_GET_REGION_INFO,
            0,
            &[request.as_bytes()],
            &[],
        )?;
        let info: RegionInfo = reply_struct(self.body(), "DEVICE_GET_REGION_INFO")?;
        let rest = self.body()[size_of::<RegionInfo>()..].to_vec();
        Ok((info, rest, fds))
    }

    /// `DEVICE_GET_REGION_INFO` as QEMU asks it: once with the bare
    /// structure, and again with the `argsz` the first reply asked for.
    pub fn region_info(&mut self, index: u32) -> Result<Region, ClientError> {
        let base = size_of::<RegionInfo>() as u32;
        let (mut info, mut caps, mut fds) = self.region_info_once(index, base)?;
        let mut queries = 1;
        if info.argsz > base {
            (info, caps, fds) = self.region_info_once(index, info.argsz)?;
            queries = 2;
        }
        if fds.len() > 1 {
            return Err(ClientError::BadReply(format!(
                "region {index} info came with {} fds",
                fds.len()
            )));
        }
        let sparse_areas = if info.flags & wire::region_flags::CAPS != 0 {
            parse_sparse_mmap(&info, &caps)?
        } else {
            None
        };
        Ok(Region {
            info,
            sparse_areas,
            fd: fds.pop(),
            queries,
        })
    }

    /// `DEVICE_GET_IRQ_INFO`.
    pub fn irq_info(&mut self, index: u32) -> Result<IrqInfo, ClientError> {
        let request = IrqInfo {
            argsz: size_of::<IrqInfo>() as u32,
            index,
            ..Default::default()
        };
        self.request(command::DEVICE_GET_IRQ_INFO, 0, &[request.as_bytes()], &[])?;
        reply_struct(self.body(), "DEVICE_GET_IRQ_INFO")
    }

    /// `DEVICE_SET_IRQS` with any flags, `data` (bools) and `fds`.
    pub fn set_irqs(
        &mut self,
        index: u32,
        set_flags: u32,
        start: u32,
        count: u32,
        data: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ClientError> {
        let request = IrqSet {
            argsz: (size_of::<IrqSet>() + data.len()) as u32,
            flags: set_flags,
            index,
            start,
            count,
        };
        self.request(
            command::DEVICE_SET_IRQS,
            0,
            &[request.as_bytes(), data],
            fds,
        )?;
        Ok(())
    }

    /// Assigns `fds` as the triggers of vectors `start..start + count`
    /// (fewer fds than `count` unassigns the rest, as QEMU relies on).
    pub fn assign_irq_eventfds(
        &mut self,
        index: u32,
        start: u32,
        count: u32,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ClientError> {
        let set_flags = irq_set_flags::DATA_EVENTFD | irq_set_flags::ACTION_TRIGGER;
        self.set_irqs(index, set_flags, start, count, &[], fds)
    }

    /// Disables every vector of `index` (`count` 0, `DATA_NONE`, `TRIGGER`).
    pub fn disable_irqs(&mut self, index: u32) -> Result<(), ClientError> {
        let set_flags = irq_set_flags::DATA_NONE | irq_set_flags::ACTION_TRIGGER;
        self.set_irqs(index, set_flags, 0, 0, &[], &[])
    }

    /// Unmasks INTx, as QEMU does after the guest's EOI.
    pub fn unmask_intx(&mut self) -> Result<(), ClientError> {
        let set_flags = irq_set_flags::DATA_NONE | irq_set_flags::ACTION_UNMASK;
        self.set_irqs(wire::irq_index::INTX, set_flags, 0, 1, &[], &[])
    }

    /// `REGION_READ` of `count` bytes; the data is then in `self.body()[16..]`.
    /// Allocation-free once the receive buffer has grown.
    pub fn region_read_in_place(
        &mut self,
        region: u32,
        offset: u64,
        count: u32,
    ) -> Result<&[u8], ClientError> {
        let request = RegionAccess {
            offset,
            region,
            count,
        };
        self.request(command::REGION_READ, 0, &[request.as_bytes()], &[])?;
        let body = self.body();
        let header: RegionAccess = reply_struct(body, "REGION_READ")?;
        let data = &body[size_of::<RegionAccess>()..];
        if header.count != count || data.len() != count as usize {
            return Err(ClientError::BadReply(format!(
                "REGION_READ of {count} bytes answered with count {} and {} bytes",
                header.count,
                data.len()
            )));
        }
        Ok(data)
    }

    /// `REGION_READ` of `count` bytes.
    pub fn region_read(
        &mut self,
        region: u32,
        offset: u64,
        count: u32,
    ) -> Result<Vec<u8>, ClientError> {
        Ok(self.region_read_in_place(region, offset, count)?.to_vec())
    }

    /// `REGION_WRITE` of `data`, waiting for the reply.
    pub fn region_write(
        &mut self,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let request = RegionAccess {
            offset,
            region,
            count: data.len() as u32,
        };
        self.request(command::REGION_WRITE, 0, &[request.as_bytes(), data], &[])?;
        let reply: RegionAccess = reply_struct(self.body(), "REGION_WRITE")?;
        if reply.count as usize != data.len() {
            return Err(ClientError::BadReply(format!(
                "REGION_WRITE of {} bytes answered with count {}",
                data.len(),
                reply.count
            )));
        }
        Ok(())
    }

    /// `REGION_WRITE` with `NO_REPLY` set: returns once the bytes are sent.
    pub fn region_write_posted(
        &mut self,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let request = RegionAccess {
            offset,
            region,
            count: data.len() as u32,
        };
        self.send_command(
            command::REGION_WRITE,
            flags::NO_REPLY,
            &[request.as_bytes(), data],
            &[],
        )?;
        Ok(())
    }

    /// Reads a little-endian `u8`/`u16`/`u32`/`u64` (1, 2, 4, 8 bytes).
    pub fn read_reg(&mut self, region: u32, offset: u64, size: u32) -> Result<u64, ClientError> {
        let data = self.region_read_in_place(region, offset, size)?;
        let mut bytes = [0u8; 8];
        bytes[..data.len()].copy_from_slice(data);
        Ok(u64::from_le_bytes(bytes))
    }

    /// Writes the low `size` bytes of `value`, little-endian.
    pub fn write_reg(
        &mut self,
        region: u32,
        offset: u64,
        size: u32,
        value: u64,
    ) -> Result<(), ClientError> {
        let bytes = value.to_le_bytes();
        let size = (size as usize).min(8);
        self.region_write(region, offset, &bytes[..size])
    }

    /// `DMA_MAP`, with or without an fd.
    pub fn dma_map(
        &mut self,
        map: DmaMapRequest,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ClientError> {
        let request = DmaMap {
            argsz: size_of::<DmaMap>() as u32,
            flags: map.flags,
            offset: map.offset,
            address: map.iova,
            size: map.size,
        };
        let fds: &[BorrowedFd<'_>] = match &fd {
            Some(fd) => std::slice::from_ref(fd),
            None => &[],
        };
        self.request(command::DMA_MAP, 0, &[request.as_bytes()], fds)?;
        Ok(())
    }

    /// `DMA_UNMAP` of a range given earlier to `DMA_MAP`.
    pub fn dma_unmap(&mut self, iova: u64, size: u64) -> Result<(), ClientError> {
        let request = DmaUnmap {
            argsz: size_of::<DmaUnmap>() as u32,
            flags: 0,
            address: iova,
            size,
        };
        self.request(command::DMA_UNMAP, 0, &[request.as_bytes()], &[])?;
        Ok(())
    }

    /// `DEVICE_RESET`.
    pub fn reset(&mut self) -> Result<(), ClientError> {
        self.request(command::DEVICE_RESET, 0, &[], &[])?;
        Ok(())
    }
}

/// Walks the capability chain that follows `info` and returns the areas of
/// its sparse-mmap capability. Offsets count from the start of `info`.
fn parse_sparse_mmap(
    info: &RegionInfo,
    caps: &[u8],
) -> Result<Option<Vec<SparseArea>>, ClientError> {
    let base = size_of::<RegionInfo>();
    let bad = |what: String| ClientError::BadReply(format!("region {}: {what}", info.index));
    let mut next = info.cap_offset as usize;
    let mut areas = None;
    for _ in 0..MAX_CAPS {
        if next == 0 {
            return Ok(areas);
        }
        let at = next
            .checked_sub(base)
            .ok_or_else(|| bad(format!("capability offset {next} inside the fixed reply")))?;
        let cap_bytes = caps
            .get(at..)
            .ok_or_else(|| bad(format!("capability offset {next} past the reply")))?;
        let (header, rest) = CapHeader::read_from_prefix(cap_bytes)
            .map_err(|_| bad(format!("truncated capability at {next}")))?;
        if header.id == REGION_CAP_SPARSE_MMAP {
            let (sparse, mut rest) = SparseMmapHeader::read_from_prefix(rest)
                .map_err(|_| bad("truncated sparse-mmap capability".into()))?;
            let mut list = Vec::new();
            for _ in 0..sparse.nr_areas {
                let (area, tail) = SparseArea::read_from_prefix(rest)
                    .map_err(|_| bad(format!("{} sparse areas do not fit", sparse.nr_areas)))?;
                list.push(area);
                rest = tail;
            }
            areas = Some(list);
        }
        if header.next != 0 && header.next as usize <= next {
            return Err(bad(format!(
                "capability chain goes back to {}",
                header.next
            )));
        }
        next = header.next as usize;
    }
    Err(bad("capability chain too long".into()))
}
