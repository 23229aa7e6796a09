//! Commands the daemon does not implement (`docs/vfio-user.md`,
//! "Messages"): each is answered with the documented errno and the
//! session goes on.

use vgpud_tests::{TestDaemon, VGPU_A};

use crate::rig::{assert_serves, call, errno_of};

const ENOTSUP: u32 = libc::ENOTSUP as u32;

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn feature_migration_and_write_multi_are_answered_with_enotsup() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    // DEVICE_FEATURE (16) probing, getting and setting features 1, 3, 6;
    // the old dirty-pages command (14), REGION_WRITE_MULTI (15), and the
    // migration data commands (17, 18).
    let cases: [(u16, Vec<u8>); 6] = [
        (16, words(&[8, (1 << 16) | 1])),
        (16, words(&[16, (1 << 17) | 3, 0, 0])),
        (16, words(&[16, (1 << 18) | 6, 0, 0])),
        (14, words(&[16, 1, 0, 0])),
        (15, words(&[0, 0, 0, 0])),
        (17, words(&[16, 0, 0, 0])),
    ];
    for (cmd, body) in cases {
        let (reply, more) = call(&mut a, cmd, &[&body], &[])?;
        assert!(more.is_empty());
        assert_eq!(errno_of(&reply), ENOTSUP, "command {cmd}");
    }
    let (reply, _) = call(&mut a, 18, &[&words(&[16, 0, 0, 0])], &[])?;
    assert_eq!(errno_of(&reply), ENOTSUP, "command 18");
    assert_serves(&mut a, "vGPU A")
}

#[test]
fn get_region_io_fds_is_answered_with_no_ioeventfds() -> anyhow::Result<()> {
    // docs/vfio-user.md, Messages: "DEVICE_GET_REGION_IO_FDS | For a
    // region that exists: a reply with no ioeventfds (count 0) ...;
    // otherwise EINVAL."
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    for index in [0, 2, 7] {
        // struct vfio_user_region_io_fds_request: argsz, flags, index, count.
        let (reply, fds) = call(&mut a, 6, &[&words(&[4096, 0, index, 0])], &[])?;
        assert_eq!(errno_of(&reply), 0, "region {index}");
        assert!(fds.is_empty(), "region {index}");
        assert_eq!(
            reply.body.get(12..16),
            Some(&[0u8; 4][..]),
            "region {index}: count, in {:?}",
            reply.body
        );
    }
    let (reply, _) = call(&mut a, 6, &[&words(&[4096, 0, 42, 0])], &[])?;
    assert_eq!(errno_of(&reply), libc::EINVAL as u32, "region 42");
    Ok(())
}

#[test]
fn anything_before_version_is_refused_with_einval_and_version_still_works() -> anyhow::Result<()> {
    use vgpud_tests::wire::{DeviceInfo, RegionAccess, command};
    use zerocopy::IntoBytes;
    let daemon = TestDaemon::standard()?;
    let mut c = vgpud_tests::RawClient::connect_without_handshake(&daemon.socket(VGPU_A))?;
    let info = DeviceInfo {
        argsz: 16,
        ..Default::default()
    };
    let read = RegionAccess {
        offset: 0,
        region: 7,
        count: 2,
    };
    let cases: [(u16, &[u8]); 4] = [
        (command::DEVICE_GET_INFO, info.as_bytes()),
        (command::REGION_READ, read.as_bytes()),
        (command::DEVICE_RESET, &[]),
        (command::DMA_UNMAP, &[0; 24]),
    ];
    for (cmd, body) in cases {
        let (reply, more) = call(&mut c, cmd, &[body], &[])?;
        assert!(more.is_empty());
        assert_eq!(errno_of(&reply), crate::rig::EINVAL, "command {cmd}");
    }
    c.handshake()?;
    assert_serves(&mut c, "vGPU A after a late VERSION")
}

#[test]
fn a_read_sent_with_no_reply_does_not_desynchronise_the_stream() -> anyhow::Result<()> {
    use vgpud_tests::wire::{RegionAccess, command, flags};
    use zerocopy::IntoBytes;
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let access = RegionAccess {
        offset: 0x1000,
        region: 2,
        count: 4,
    };
    for _ in 0..10 {
        let posted = c.send_command(
            command::REGION_READ,
            flags::NO_REPLY,
            &[access.as_bytes()],
            &[],
        )?;
        let id = c.send_command(command::REGION_READ, 0, &[access.as_bytes()], &[])?;
        // The documents say nothing of a read with NO_REPLY: a reply to it
        // may come first, but the next request's reply must follow, intact.
        let mut reply = c.recv_raw()?;
        if reply.header.id == posted {
            reply = c.recv_raw()?;
        }
        assert_eq!(reply.header.id, id);
        assert_eq!(errno_of(&reply), 0);
        assert_eq!(&reply.body[16..20], &0x5550_4776u32.to_le_bytes());
    }
    assert_serves(&mut c, "vGPU A")
}
