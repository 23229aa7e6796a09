//! The decoder, path by path: each good message decodes to its request, and
//! each malformed form gives its typed error and errno.

mod common;

use common::*;
use vgpu_protocol::wire::{
    Command, DeviceFeatureBody, DmaMapFlags, DmaUnmapFlags, FeatureFlags, IrqSetFlags,
    RegionIoFdsBody,
};
use vgpu_protocol::{
    ClientCapabilities, Header, ProtocolError, Request, decode_request_with_limit,
};
use zerocopy::IntoBytes;

const EINVAL: i32 = 22;
const E2BIG: i32 = 7;
const ENOSYS: i32 = 38;
const EPROTO: i32 = 71;
const ENOTSUP: i32 = 95;

fn errno(message: &[u8], fds: usize) -> i32 {
    let err = decode(message, fds).expect_err("message must be refused");
    let errno = err.errno();
    assert_ne!(errno, 0);
    errno
}

fn set_flags(message: &mut [u8], flags: u32) {
    message[8..12].copy_from_slice(&flags.to_le_bytes());
}

#[test]
fn version_decodes_qemu_proposal() {
    let message = version(0, 0, QEMU_CAPS);
    let Request::Version {
        major: 0,
        minor: 0,
        capabilities,
    } = decode(&message, 0).unwrap()
    else {
        panic!("not a version");
    };
    assert_eq!(capabilities.max_msg_fds, Some(16));
    assert!(capabilities.migration);
}

#[test]
fn version_without_capability_string_uses_defaults() {
    let message = version(0, 1, b"");
    assert_eq!(
        decode(&message, 0).unwrap(),
        Request::Version {
            major: 0,
            minor: 1,
            capabilities: ClientCapabilities::default()
        }
    );
}

#[test]
fn version_with_malformed_capabilities_is_einval() {
    assert_eq!(errno(&version(0, 0, b"{}"), 0), EINVAL);
    assert_eq!(
        errno(
            &version(0, 0, b"{\"capabilities\":{\"max_msg_fds\":true}}\0"),
            0
        ),
        EINVAL
    );
    assert_eq!(errno(&version(0, 0, b"\xc3\x28\0"), 0), EINVAL);
    assert_eq!(errno(&version(0, 0, b"{,}\0"), 0), EINVAL);
    assert_eq!(errno(&command(1, Command::Version, &[&[0, 0]]), 0), EINVAL);
}

#[test]
fn dma_map_with_fd_decodes() {
    assert_eq!(
        decode(&dma_map(3, 0x1000, 0x10_0000, 0x8000), 1).unwrap(),
        Request::DmaMap {
            flags: DmaMapFlags::READ | DmaMapFlags::WRITE,
            offset: 0x1000,
            iova: 0x10_0000,
            size: 0x8000,
            has_fd: true,
        }
    );
}

#[test]
fn dma_map_without_fd_decodes_read_only() {
    let Request::DmaMap {
        flags,
        has_fd: false,
        ..
    } = decode(&dma_map(1, 0, 0xf_0000, 0x1000), 0).unwrap()
    else {
        panic!("not a fd-less map");
    };
    assert_eq!(flags, DmaMapFlags::READ);
}

#[test]
fn dma_map_malformed_forms_are_einval() {
    assert_eq!(errno(&dma_map(3, 0, 0x1000, 0x1000), 2), EINVAL, "two fds");
    assert_eq!(
        errno(&dma_map(0, 0, 0x1000, 0x1000), 1),
        EINVAL,
        "no access"
    );
    assert_eq!(
        errno(&dma_map(7, 0, 0x1000, 0x1000), 1),
        EINVAL,
        "unknown flag"
    );
    assert_eq!(errno(&dma_map(3, 0, 0x1000, 0), 1), EINVAL, "zero size");
    assert_eq!(
        errno(&dma_map(3, 0, u64::MAX - 10, 0x1000), 1),
        EINVAL,
        "iova overflow"
    );
    assert_eq!(
        errno(&dma_map(3, u64::MAX, 0x1000, 0x1000), 1),
        EINVAL,
        "offset overflow"
    );
    let mut small_argsz = dma_map(3, 0, 0x1000, 0x1000);
    small_argsz[16] = 31;
    assert_eq!(errno(&small_argsz, 1), EINVAL, "argsz");
    let mut long = dma_map(3, 0, 0x1000, 0x1000);
    long.push(0);
    long[4] += 1;
    assert!(matches!(
        decode(&long, 1),
        Err(ProtocolError::BodyLength { .. })
    ));
}

#[test]
fn dma_unmap_decodes_range_and_all() {
    assert_eq!(
        decode(&dma_unmap(24, 0, 0x10_0000, 0x8000), 0).unwrap(),
        Request::DmaUnmap {
            argsz: 24,
            flags: DmaUnmapFlags::EMPTY,
            iova: 0x10_0000,
            size: 0x8000
        }
    );
    assert_eq!(
        decode(&dma_unmap(24, 2, 0, 0), 0).unwrap(),
        Request::DmaUnmap {
            argsz: 24,
            flags: DmaUnmapFlags::ALL,
            iova: 0,
            size: 0
        }
    );
}

#[test]
fn dma_unmap_dirty_bitmap_is_enotsup() {
    assert_eq!(errno(&dma_unmap(24, 1, 0x1000, 0x1000), 0), ENOTSUP);
    assert_eq!(errno(&dma_unmap(24, 4, 0x1000, 0x1000), 0), ENOTSUP);
}

#[test]
fn dma_unmap_malformed_forms_are_einval() {
    assert_eq!(
        errno(&dma_unmap(24, 2, 0x1000, 0), 0),
        EINVAL,
        "all with an address"
    );
    assert_eq!(
        errno(&dma_unmap(24, 8, 0x1000, 0x1000), 0),
        EINVAL,
        "unknown flag"
    );
    assert_eq!(errno(&dma_unmap(23, 0, 0x1000, 0x1000), 0), EINVAL, "argsz");
    assert_eq!(errno(&dma_unmap(24, 0, 0x1000, 0x1000), 1), EINVAL, "fd");
    assert_eq!(errno(&dma_unmap(24, 0, 0x1000, 0), 0), EINVAL, "zero size");
    assert_eq!(errno(&dma_unmap(24, 0, u64::MAX, 2), 0), EINVAL, "overflow");
}

#[test]
fn device_get_info_decodes_and_checks_argsz() {
    assert_eq!(
        decode(&device_get_info(16), 0).unwrap(),
        Request::DeviceGetInfo { argsz: 16 }
    );
    assert_eq!(errno(&device_get_info(15), 0), EINVAL);
    assert_eq!(errno(&command(4, Command::DeviceGetInfo, &[]), 0), EINVAL);
}

#[test]
fn region_info_decodes_and_checks_argsz() {
    assert_eq!(
        decode(&region_info(72, 7), 0).unwrap(),
        Request::GetRegionInfo {
            argsz: 72,
            index: 7
        }
    );
    assert_eq!(errno(&region_info(31, 0), 0), EINVAL);
    assert_eq!(errno(&region_info(32, 0), 1), EINVAL);
}

#[test]
fn region_io_fds_decodes_and_checks_flags() {
    let body = RegionIoFdsBody {
        argsz: 16.into(),
        index: 2.into(),
        ..Default::default()
    };
    let message = command(6, Command::DeviceGetRegionIoFds, &[body.as_bytes()]);
    assert_eq!(
        decode(&message, 0).unwrap(),
        Request::GetRegionIoFds {
            argsz: 16,
            index: 2
        }
    );
    let body = RegionIoFdsBody {
        argsz: 16.into(),
        flags: 1.into(),
        ..Default::default()
    };
    assert_eq!(
        errno(
            &command(6, Command::DeviceGetRegionIoFds, &[body.as_bytes()]),
            0
        ),
        EINVAL
    );
}

#[test]
fn irq_info_decodes_and_checks_argsz() {
    assert_eq!(
        decode(&irq_info(16, 3), 0).unwrap(),
        Request::GetIrqInfo {
            argsz: 16,
            index: 3
        }
    );
    assert_eq!(errno(&irq_info(8, 3), 0), EINVAL);
}

#[test]
fn set_irqs_eventfds_decode_with_up_to_count_fds() {
    let message = set_irqs(0x24, 2, 1, 2, &[]);
    let expected = Request::SetIrqs {
        flags: IrqSetFlags::DATA_EVENTFD | IrqSetFlags::ACTION_TRIGGER,
        index: 2,
        start: 1,
        count: 2,
        data: &[],
    };
    assert_eq!(decode(&message, 2).unwrap(), expected);
    assert_eq!(
        decode(&message, 0).unwrap(),
        expected,
        "no fds unassigns the range"
    );
    assert_eq!(
        decode(&message, 1).unwrap(),
        expected,
        "fewer fds than count assign the first vectors"
    );
    assert_eq!(errno(&message, 3), EINVAL, "more fds than count");
}

#[test]
fn set_irqs_bools_decode_with_their_data() {
    let message = set_irqs(0x12, 0, 0, 2, &[1, 0]);
    let Request::SetIrqs { data, .. } = decode(&message, 0).unwrap() else {
        panic!("not set_irqs")
    };
    assert_eq!(data, [1, 0]);
    assert_eq!(
        errno(&set_irqs(0x12, 0, 0, 3, &[1, 0]), 0),
        EINVAL,
        "count mismatch"
    );
    assert_eq!(errno(&message, 1), EINVAL, "fd with bools");
}

#[test]
fn set_irqs_disable_all_decodes() {
    let Request::SetIrqs {
        count: 0,
        start: 0,
        flags,
        ..
    } = decode(&set_irqs(0x21, 2, 0, 0, &[]), 0).unwrap()
    else {
        panic!("not set_irqs")
    };
    assert_eq!(flags, IrqSetFlags::DATA_NONE | IrqSetFlags::ACTION_TRIGGER);
}

#[test]
fn set_irqs_flag_combinations_are_checked() {
    assert_eq!(
        errno(&set_irqs(0x25, 2, 0, 1, &[]), 1),
        EINVAL,
        "two data bits"
    );
    assert_eq!(errno(&set_irqs(0x04, 2, 0, 1, &[]), 1), EINVAL, "no action");
    assert_eq!(
        errno(&set_irqs(0x0c | 0x20, 2, 0, 1, &[]), 1),
        EINVAL,
        "two actions"
    );
    assert_eq!(
        errno(&set_irqs(0x64, 2, 0, 1, &[]), 1),
        EINVAL,
        "unknown bit"
    );
    assert_eq!(
        errno(&set_irqs(0x24, 2, 0, 1, &[0]), 1),
        EINVAL,
        "data with eventfds"
    );
    assert_eq!(
        errno(&set_irqs(0x21, 2, 0, 1, &[]), 1),
        EINVAL,
        "fd with DATA_NONE"
    );
    assert_eq!(
        errno(&set_irqs(0x21, 2, u32::MAX, 2, &[]), 0),
        EINVAL,
        "range overflow"
    );
    assert_eq!(
        errno(&command(8, Command::DeviceSetIrqs, &[&[0; 19]]), 0),
        EINVAL,
        "short body"
    );
}

#[test]
fn region_read_decodes() {
    assert_eq!(
        decode(&region_read(7, 0x40, 4), 0).unwrap(),
        Request::RegionRead {
            region: 7,
            offset: 0x40,
            count: 4
        }
    );
}

#[test]
fn region_read_limits_are_checked() {
    assert_eq!(errno(&region_read(7, 0, 0), 0), EINVAL, "zero count");
    assert_eq!(
        errno(&region_read(0, 0, (1 << 20) + 1), 0),
        E2BIG,
        "over max_data_xfer_size"
    );
    assert_eq!(
        errno(&region_read(0, u64::MAX - 1, 4), 0),
        EINVAL,
        "offset overflow"
    );
    assert_eq!(errno(&region_read(7, 0, 4), 1), EINVAL, "fd");
}

#[test]
fn negotiated_limit_applies_to_transfers() {
    let message = region_read(0, 0, 8192);
    let header = Header::parse(&message).unwrap();
    let err = decode_request_with_limit(&header, &message[16..], 0, 4096).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::TransferTooLarge {
            count: 8192,
            max: 4096,
            ..
        }
    ));
    assert_eq!(err.errno(), E2BIG);
}

#[test]
fn region_write_decodes_its_data() {
    assert_eq!(
        decode(&region_write(2, 0x504, &[0x41, 0]), 0).unwrap(),
        Request::RegionWrite {
            region: 2,
            offset: 0x504,
            data: &[0x41, 0]
        }
    );
}

#[test]
fn region_write_count_must_match_data() {
    let mut message = region_write(2, 0x504, &[1, 2, 3, 4]);
    message[28] = 5; // count
    assert!(matches!(
        decode(&message, 0),
        Err(ProtocolError::CountMismatch {
            count: 5,
            data_len: 4,
            ..
        })
    ));
    assert_eq!(errno(&region_write(2, 0, &[]), 0), EINVAL, "empty write");
    assert_eq!(
        errno(&region_write(2, u64::MAX, &[1]), 0),
        EINVAL,
        "overflow"
    );
    assert_eq!(
        errno(&region_write(0, 0, &vec![0; (1 << 20) + 1]), 0),
        E2BIG
    );
}

#[test]
fn device_reset_takes_no_body() {
    assert_eq!(
        decode(&command(1, Command::DeviceReset, &[]), 0).unwrap(),
        Request::DeviceReset
    );
    assert_eq!(errno(&command(1, Command::DeviceReset, &[&[0]]), 0), EINVAL);
}

#[test]
fn device_feature_decodes_and_checks_ops() {
    let body = DeviceFeatureBody {
        argsz: 8.into(),
        flags: (0x4_0000 | 0x1_0000 | 1).into(),
    };
    assert_eq!(
        decode(&command(1, Command::DeviceFeature, &[body.as_bytes()]), 0).unwrap(),
        Request::DeviceFeature {
            argsz: 8,
            feature: 1,
            ops: FeatureFlags::PROBE | FeatureFlags::GET,
            data: &[]
        }
    );
    for flags in [0x3_0001u32, 0x8_0001, 0x1] {
        let body = DeviceFeatureBody {
            argsz: 8.into(),
            flags: flags.into(),
        };
        assert_eq!(
            errno(&command(1, Command::DeviceFeature, &[body.as_bytes()]), 0),
            EINVAL,
            "{flags:#x}"
        );
    }
}

#[test]
fn unimplemented_commands_decode_as_unsupported() {
    for c in [
        Command::RegionWriteMulti,
        Command::MigDataRead,
        Command::MigDataWrite,
        Command::DirtyPages,
    ] {
        assert_eq!(
            decode(&command(1, c, &[&[0; 8]]), 0).unwrap(),
            Request::Unsupported(c)
        );
    }
}

#[test]
fn reply_from_client_is_an_unexpected_reply() {
    let mut message = device_get_info(16);
    set_flags(&mut message, 1);
    assert!(matches!(
        decode(&message, 0),
        Err(ProtocolError::UnexpectedReply {
            msg_id: 4,
            command: 4
        })
    ));
    assert_eq!(errno(&message, 0), EPROTO);
}

#[test]
fn bad_header_flags_are_einval() {
    for flags in [0x2, 0x40, 0x20, 0x8000_0000] {
        let mut message = device_get_info(16);
        set_flags(&mut message, flags);
        assert_eq!(errno(&message, 0), EINVAL, "{flags:#x}");
    }
}

#[test]
fn msg_size_must_match_payload() {
    let message = device_get_info(16);
    let header = Header::parse(&message).unwrap();
    let err = vgpu_protocol::decode_request(&header, &message[16..31], 0).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::MessageSizeMismatch {
            msg_size: 32,
            payload_len: 15
        }
    ));
}

#[test]
fn unknown_command_is_enosys() {
    let mut message = device_get_info(16);
    message[2] = 99;
    assert_eq!(errno(&message, 0), ENOSYS);
}

#[test]
fn dma_read_from_the_client_is_the_wrong_direction() {
    let message = command(1, Command::DmaRead, &[&[0; 16]]);
    assert!(matches!(
        decode(&message, 0),
        Err(ProtocolError::WrongDirection(Command::DmaRead))
    ));
}

#[test]
fn version_decodes_rust_vmm_client_proposal() {
    let caps = b"{\"capabilities\":{\"max_msg_fds\":1,\"max_data_xfer_size\":1048576,\"migration\":{\"pgsize\":4096}}}\0";
    let Request::Version {
        major: 0,
        minor: 1,
        capabilities,
    } = decode(&version(0, 1, caps), 0).unwrap()
    else {
        panic!("not a version");
    };
    assert_eq!(capabilities.max_msg_fds, Some(1));
    assert_eq!(capabilities.pgsizes, None);
}
