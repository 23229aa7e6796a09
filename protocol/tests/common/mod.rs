//! Helpers shared by the integration tests: message builders over the
//! crate's own wire types.
#![allow(dead_code)]

use vgpu_protocol::wire::{
    Command, DeviceInfoBody, DmaMapBody, DmaUnmapBody, IrqInfoBody, IrqSetBody, RegionAccessBody,
    RegionInfoBody, VersionBody,
};
use vgpu_protocol::{Header, ProtocolError, Request, decode_request, encode_command};
use zerocopy::IntoBytes;

pub const QEMU_CAPS: &[u8] = b"{\"capabilities\":{\"migration\":{\"pgsize\":4096,\"max_bitmap_size\":268435456},\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,\"pgsizes\":4096,\"max_dma_maps\":65535,\"write_multiple\":true}}\0";

/// A command message with `body`.
pub fn command(msg_id: u16, command: Command, body: &[&[u8]]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_command(&mut buf, msg_id, command, false, body).unwrap();
    buf
}

/// Parses and decodes a whole message.
pub fn decode(message: &[u8], fds: usize) -> Result<Request<'_>, ProtocolError> {
    let header = Header::parse(message)?;
    decode_request(&header, message.get(16..).unwrap_or_default(), fds)
}

pub fn version(major: u16, minor: u16, caps: &[u8]) -> Vec<u8> {
    let body = VersionBody {
        major: major.into(),
        minor: minor.into(),
    };
    command(1, Command::Version, &[body.as_bytes(), caps])
}

pub fn dma_map(flags: u32, offset: u64, iova: u64, size: u64) -> Vec<u8> {
    let body = DmaMapBody {
        argsz: 32.into(),
        flags: flags.into(),
        offset: offset.into(),
        address: iova.into(),
        size: size.into(),
    };
    command(2, Command::DmaMap, &[body.as_bytes()])
}

pub fn dma_unmap(argsz: u32, flags: u32, iova: u64, size: u64) -> Vec<u8> {
    let body = DmaUnmapBody {
        argsz: argsz.into(),
        flags: flags.into(),
        address: iova.into(),
        size: size.into(),
    };
    command(3, Command::DmaUnmap, &[body.as_bytes()])
}

pub fn device_get_info(argsz: u32) -> Vec<u8> {
    let body = DeviceInfoBody {
        argsz: argsz.into(),
        ..Default::default()
    };
    command(4, Command::DeviceGetInfo, &[body.as_bytes()])
}

pub fn region_info(argsz: u32, index: u32) -> Vec<u8> {
    let body = RegionInfoBody {
        argsz: argsz.into(),
        index: index.into(),
        ..Default::default()
    };
    command(5, Command::DeviceGetRegionInfo, &[body.as_bytes()])
}

pub fn irq_info(argsz: u32, index: u32) -> Vec<u8> {
    let body = IrqInfoBody {
        argsz: argsz.into(),
        index: index.into(),
        ..Default::default()
    };
    command(7, Command::DeviceGetIrqInfo, &[body.as_bytes()])
}

pub fn set_irqs(flags: u32, index: u32, start: u32, count: u32, data: &[u8]) -> Vec<u8> {
    let body = IrqSetBody {
        argsz: (20 + data.len() as u32).into(),
        flags: flags.into(),
        index: index.into(),
        start: start.into(),
        count: count.into(),
    };
    command(8, Command::DeviceSetIrqs, &[body.as_bytes(), data])
}

pub fn region_read(region: u32, offset: u64, count: u32) -> Vec<u8> {
    let body = RegionAccessBody {
        offset: offset.into(),
        region: region.into(),
        count: count.into(),
    };
    command(9, Command::RegionRead, &[body.as_bytes()])
}

pub fn region_write(region: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    let body = RegionAccessBody {
        offset: offset.into(),
        region: region.into(),
        count: (data.len() as u32).into(),
    };
    command(10, Command::RegionWrite, &[body.as_bytes(), data])
}

/// One valid message of each kind the server handles.
pub fn valid_messages() -> Vec<(&'static str, Vec<u8>, usize)> {
    vec![
        ("version", version(0, 0, QEMU_CAPS), 0),
        ("dma_map_fd", dma_map(3, 0x1000, 0x10_0000, 0x8000), 1),
        ("dma_map_nofd", dma_map(1, 0, 0xf_0000, 0x1_0000), 0),
        ("dma_unmap", dma_unmap(24, 0, 0x10_0000, 0x8000), 0),
        ("dma_unmap_all", dma_unmap(24, 2, 0, 0), 0),
        ("device_get_info", device_get_info(16), 0),
        ("region_info", region_info(32, 0), 0),
        ("irq_info", irq_info(16, 2), 0),
        ("set_irqs_eventfd", set_irqs(0x24, 2, 0, 2, &[]), 2),
        ("set_irqs_bool", set_irqs(0x22, 0, 0, 1, &[1]), 0),
        ("set_irqs_disable", set_irqs(0x21, 2, 0, 0, &[]), 0),
        ("region_read", region_read(7, 0, 4), 0),
        ("region_write", region_write(2, 0x504, &[0x41, 0]), 0),
        ("device_reset", command(13, Command::DeviceReset, &[]), 0),
    ]
}
