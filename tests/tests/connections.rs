//! The connection: version negotiation and one client per vGPU.

use vgpud_tests::regs::config::{VENDOR, VENDOR_ID};
use vgpud_tests::{RawClient, TestDaemon, VGPU_A, VGPU_B};

#[test]
fn version_reply_advertises_the_server_capabilities() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let c = daemon.connect(VGPU_A)?;
    let version = c.version().expect("handshake done");
    assert_eq!((version.major, version.minor), (0, 0));
    assert_eq!(version.capability("max_msg_fds"), Some(16));
    assert_eq!(version.capability("max_data_xfer_size"), Some(1 << 20));
    Ok(())
}

#[test]
fn second_client_is_refused_while_the_first_keeps_working() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut first = daemon.connect(VGPU_A)?;
    let second = RawClient::connect(&daemon.socket(VGPU_A));
    let error = second.expect_err("a second client was accepted");
    assert!(error.is_closed(), "expected a close, got {error:?}");
    assert_eq!(first.config_read(VENDOR_ID, 2)?, u64::from(VENDOR));
    Ok(())
}

#[test]
fn each_vgpu_takes_its_own_client() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    a.dispi_write(1, 640)?;
    assert_eq!(b.dispi_read(1)?, 0, "B does not see A's registers");
    assert_eq!(a.dispi_read(1)?, 640);
    Ok(())
}
