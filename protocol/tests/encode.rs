//! Replies, byte for byte, against layouts written out by hand from the spec.

use vgpu_protocol::wire::{DeviceFlags, DmaUnmapFlags, IrqInfoFlags, RegionFlags};
use vgpu_protocol::{
    ClientCapabilities, DeviceInfo, Header, IrqInfo, MmapArea, RegionInfo, RegionInfoReply,
    ServerCapabilities, encode_device_info_reply, encode_dma_unmap_reply, encode_empty_reply,
    encode_error, encode_irq_info_reply, encode_region_info_reply, encode_region_io_fds_reply,
    encode_region_read_reply, encode_region_write_reply, encode_reply, encode_version_reply,
    negotiate,
};

fn request(msg_id: u16, command: u16) -> Header {
    Header {
        msg_id,
        command,
        msg_size: 16,
        flags: 0,
        error: 0,
    }
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// A reply header: id, command, size, flags = REPLY, error 0.
fn reply_header(msg_id: u16, command: u16, size: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&msg_id.to_le_bytes());
    v.extend_from_slice(&command.to_le_bytes());
    v.extend_from_slice(&le32(size));
    v.extend_from_slice(&le32(1));
    v.extend_from_slice(&le32(0));
    v
}

#[test]
fn error_reply_carries_errno_and_error_bit() {
    let mut buf = vec![0xaa; 100];
    encode_error(&mut buf, &request(0x1234, 9), 22);
    assert_eq!(
        buf,
        [0x34, 0x12, 9, 0, 16, 0, 0, 0, 0x21, 0, 0, 0, 22, 0, 0, 0]
    );
}

#[test]
fn error_reply_never_carries_errno_zero() {
    let mut buf = Vec::new();
    encode_error(&mut buf, &request(1, 9), 0);
    assert_eq!(buf[12..16], le32(22));
    encode_error(&mut buf, &request(1, 9), -5);
    assert_eq!(buf[12..16], le32(22));
}

#[test]
fn empty_reply_is_a_bare_header() {
    let mut buf = Vec::new();
    encode_empty_reply(&mut buf, &request(7, 2));
    assert_eq!(buf, reply_header(7, 2, 16));
}

#[test]
fn generic_reply_concatenates_its_parts() {
    let mut buf = Vec::new();
    encode_reply(&mut buf, &request(3, 13), &[b"ab", b"", b"c"]).unwrap();
    let mut expected = reply_header(3, 13, 19);
    expected.extend_from_slice(b"abc");
    assert_eq!(buf, expected);
}

#[test]
fn device_info_reply_layout() {
    let mut buf = Vec::new();
    let info = DeviceInfo {
        flags: DeviceFlags::RESET | DeviceFlags::PCI,
        num_regions: 9,
        num_irqs: 5,
    };
    encode_device_info_reply(&mut buf, &request(4, 4), &info);
    let mut expected = reply_header(4, 4, 32);
    for v in [16, 3, 9, 5] {
        expected.extend_from_slice(&le32(v));
    }
    assert_eq!(buf, expected);
}

#[test]
fn irq_info_reply_layout() {
    let mut buf = Vec::new();
    let info = IrqInfo {
        index: 2,
        flags: IrqInfoFlags::EVENTFD | IrqInfoFlags::NORESIZE,
        count: 17,
    };
    encode_irq_info_reply(&mut buf, &request(5, 7), &info);
    let mut expected = reply_header(5, 7, 32);
    for v in [16, 9, 2, 17] {
        expected.extend_from_slice(&le32(v));
    }
    assert_eq!(buf, expected);
}

fn bar0() -> RegionInfo {
    RegionInfo {
        index: 0,
        flags: RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP,
        size: 0x100_0000,
        offset: 0,
    }
}

const AREA: MmapArea = MmapArea {
    offset: 0,
    size: 0x100_0000,
};

/// The fixed 32-byte region info: argsz, flags, index, cap_offset, size, offset.
fn region_info_body(
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [argsz, flags, index, cap_offset] {
        v.extend_from_slice(&le32(x));
    }
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&offset.to_le_bytes());
    v
}

#[test]
fn region_info_without_caps_is_32_bytes() {
    let mut buf = Vec::new();
    let info = RegionInfo {
        index: 7,
        flags: RegionFlags::READ | RegionFlags::WRITE,
        size: 4096,
        offset: 0,
    };
    let outcome = encode_region_info_reply(&mut buf, &request(9, 5), 32, &info, &[]).unwrap();
    assert_eq!(outcome, RegionInfoReply::Complete);
    let mut expected = reply_header(9, 5, 48);
    expected.extend(region_info_body(32, 3, 7, 0, 4096, 0));
    assert_eq!(buf, expected);
}

#[test]
fn region_info_with_room_carries_the_sparse_mmap_cap() {
    let mut buf = Vec::new();
    let outcome = encode_region_info_reply(&mut buf, &request(9, 5), 64, &bar0(), &[AREA]).unwrap();
    assert_eq!(outcome, RegionInfoReply::Complete);
    let mut expected = reply_header(9, 5, 16 + 64);
    // argsz 64 = 32 + cap header 8 + nr_areas/reserved 8 + one area 16; flags R|W|MMAP|CAPS; cap at 32.
    expected.extend(region_info_body(64, 0xf, 0, 32, 0x100_0000, 0));
    expected.extend_from_slice(&[1, 0, 1, 0, 0, 0, 0, 0]); // id 1, version 1, next 0
    expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // nr_areas 1, reserved
    expected.extend_from_slice(&0u64.to_le_bytes());
    expected.extend_from_slice(&0x100_0000u64.to_le_bytes());
    assert_eq!(buf, expected);
}

#[test]
fn region_info_with_small_argsz_asks_for_more_without_caps() {
    let mut buf = Vec::new();
    let outcome = encode_region_info_reply(&mut buf, &request(9, 5), 32, &bar0(), &[AREA]).unwrap();
    assert_eq!(outcome, RegionInfoReply::Truncated { needed: 64 });
    let mut expected = reply_header(9, 5, 48);
    // CAPS clear, cap_offset 0: QEMU refuses CAPS with offset 0.
    expected.extend(region_info_body(64, 0x7, 0, 0, 0x100_0000, 0));
    assert_eq!(buf, expected);
}

#[test]
fn region_info_ignores_a_caller_set_caps_flag_without_areas() {
    let mut buf = Vec::new();
    let info = RegionInfo {
        flags: RegionFlags::READ | RegionFlags::CAPS,
        ..bar0()
    };
    encode_region_info_reply(&mut buf, &request(1, 5), 32, &info, &[]).unwrap();
    assert_eq!(buf[20..24], le32(1));
}

#[test]
fn region_io_fds_reply_has_no_sub_regions() {
    let mut buf = Vec::new();
    encode_region_io_fds_reply(&mut buf, &request(2, 6), 4);
    let mut expected = reply_header(2, 6, 32);
    for v in [16, 0, 4, 0] {
        expected.extend_from_slice(&le32(v));
    }
    assert_eq!(buf, expected);
}

#[test]
fn region_read_reply_has_access_then_data() {
    let mut buf = Vec::new();
    let slot = encode_region_read_reply(&mut buf, &request(11, 9), 2, 0x500, 2).unwrap();
    slot.copy_from_slice(&[0xc5, 0xb0]);
    let mut expected = reply_header(11, 9, 34);
    expected.extend_from_slice(&0x500u64.to_le_bytes());
    expected.extend_from_slice(&le32(2));
    expected.extend_from_slice(&le32(2));
    expected.extend_from_slice(&[0xc5, 0xb0]);
    assert_eq!(buf, expected);
}

#[test]
fn region_write_reply_echoes_the_access() {
    let mut buf = Vec::new();
    encode_region_write_reply(&mut buf, &request(12, 10), 7, 4, 2);
    let mut expected = reply_header(12, 10, 32);
    expected.extend_from_slice(&4u64.to_le_bytes());
    expected.extend_from_slice(&le32(7));
    expected.extend_from_slice(&le32(2));
    assert_eq!(buf, expected);
}

#[test]
fn dma_unmap_reply_echoes_the_request() {
    let mut buf = Vec::new();
    encode_dma_unmap_reply(
        &mut buf,
        &request(13, 3),
        24,
        DmaUnmapFlags::EMPTY,
        0x10_0000,
        0x8000,
    );
    let mut expected = reply_header(13, 3, 40);
    expected.extend_from_slice(&le32(24));
    expected.extend_from_slice(&le32(0));
    expected.extend_from_slice(&0x10_0000u64.to_le_bytes());
    expected.extend_from_slice(&0x8000u64.to_le_bytes());
    assert_eq!(buf, expected);
}

#[test]
fn version_reply_has_version_then_nul_terminated_json() {
    let caps = ClientCapabilities {
        max_msg_fds: Some(16),
        max_data_xfer_size: Some(1 << 20),
        ..Default::default()
    };
    let negotiated = negotiate(0, 0, &caps, &ServerCapabilities::default()).unwrap();
    let mut buf = Vec::new();
    encode_version_reply(&mut buf, &request(0, 1), &negotiated);
    let json = b"{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576}}\0";
    let mut expected = reply_header(0, 1, (16 + 4 + json.len()) as u32);
    expected.extend_from_slice(&[0, 0, 0, 0]);
    expected.extend_from_slice(json);
    assert_eq!(buf, expected);
}

#[test]
fn encoding_reuses_the_buffer_without_growing() {
    let mut buf = Vec::with_capacity(4096);
    let ptr = buf.as_ptr();
    for _ in 0..3 {
        encode_region_info_reply(&mut buf, &request(1, 5), 64, &bar0(), &[AREA]).unwrap();
        encode_error(&mut buf, &request(1, 5), 22);
    }
    assert_eq!(buf.as_ptr(), ptr);
    assert_eq!(buf.capacity(), 4096);
}
