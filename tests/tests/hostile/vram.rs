//! A client that attached once keeps whatever it mapped of the BAR0 fd it
//! was given: the next client must get VRAM it cannot reach.

use std::os::fd::AsRawFd;

use vgpud_tests::regs::region;
use vgpud_tests::{TestDaemon, VGPU_A};

use crate::rig::wait_detached;

#[test]
fn a_departed_client_cannot_reach_the_next_clients_vram() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;

    let mut first = daemon.connect(VGPU_A)?;
    let mut kept = first.map_bar0()?;
    let first_inode = rustix::fs::fstat(kept.region.fd.as_ref().expect("fd"))?.st_ino;
    kept.map[0x100..0x108].copy_from_slice(b"client 1");
    drop(first);
    wait_detached(&daemon, VGPU_A)?;

    let mut second = daemon.connect(VGPU_A)?;
    let mut bar0 = second.map_bar0()?;
    let second_fd = bar0.region.fd.as_ref().expect("fd");
    assert_ne!(
        rustix::fs::fstat(second_fd)?.st_ino,
        first_inode,
        "the second client got the first one's memfd (fd {})",
        second_fd.as_raw_fd()
    );
    // It starts zeroed: nothing of the first client is left.
    assert!(bar0.map.iter().all(|&b| b == 0));

    // What the second client's VM writes never shows through the first
    // client's mapping, whether it writes through its own mapping or
    // through the daemon (REGION_WRITE).
    let secret = b"the second VM's secret";
    bar0.map[0x2000..0x2000 + secret.len()].copy_from_slice(secret);
    second.region_write(region::BAR0, 0x3000, secret)?;
    assert!(
        kept.map.iter().all(|&b| b == 0),
        "the departed client sees the next VM's VRAM"
    );

    // And nothing the first client writes reaches the second.
    kept.map.fill(0xee);
    assert!(bar0.map[..0x2000].iter().all(|&b| b == 0));
    assert_eq!(&bar0.map[0x2000..0x2000 + secret.len()], secret);
    let through_daemon = second.region_read(region::BAR0, 0x100, 64)?;
    assert_eq!(through_daemon, [0; 64]);
    Ok(())
}

#[test]
fn every_attachment_gets_its_own_vram() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut inodes = Vec::new();
    let mut mappings = Vec::new();
    for round in 0..4u8 {
        let mut client = daemon.connect(VGPU_A)?;
        let mut bar0 = client.map_bar0()?;
        inodes.push(rustix::fs::fstat(bar0.region.fd.as_ref().expect("fd"))?.st_ino);
        assert!(bar0.map.iter().all(|&b| b == 0), "round {round}");
        bar0.map[..4096].fill(round + 1);
        mappings.push(bar0);
        drop(client);
        wait_detached(&daemon, VGPU_A)?;
    }
    inodes.sort_unstable();
    inodes.dedup();
    assert_eq!(inodes.len(), 4);
    // Each departed client's memory is its own, and was emptied when the
    // daemon let go of it.
    for (round, bar0) in mappings.iter().enumerate() {
        assert!(bar0.map[..4096].iter().all(|&b| b == 0), "round {round}");
    }
    Ok(())
}
