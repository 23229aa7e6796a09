//! Whatever a client makes its vGPU do, the lines it causes in the log
//! stay within the documented rate: routine events are debug lines, and
//! everything else goes through the vGPU's limits.

use std::os::fd::AsFd;
use std::time::Instant;

use zerocopy::IntoBytes;

use vgpud_tests::regs::bar2::{
    DMA_CONTROL, DMA_COUNT, DMA_IOVA_LO, DMA_LENGTH, DMA_STATUS, DMA_TO_VRAM, ERROR_CODE,
    ERROR_INFO,
};
use vgpud_tests::regs::{error_code, region};
use vgpud_tests::wire::{RegionAccess, command, flags};
use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A, VGPU_B};

use crate::rig::{LINES_PER_WINDOW, lines_about, wait_detached, windows};

/// Lines naming a vGPU that no limit covers: "vGPU created" and "vGPU
/// listening" at start-up.
const FIXED_LINES: usize = 2;

fn assert_lines_within_bound(daemon: &TestDaemon, started: Instant, what: &str) {
    let lines = lines_about(daemon, VGPU_A);
    let bound = LINES_PER_WINDOW * windows(started.elapsed()) + FIXED_LINES;
    assert!(
        lines <= bound,
        "{what}: {lines} lines about vGPU A, bound {bound}:\n{}",
        daemon.stderr()
    );
    assert!(lines_about(daemon, VGPU_B) <= FIXED_LINES);
}

/// Sends `count` copies of a command without waiting, in batches, and
/// waits for the replies of those that want one.
fn pipelined(
    c: &mut RawClient,
    count: usize,
    command_id: u16,
    extra_flags: u32,
    parts: &[&[u8]],
) -> anyhow::Result<()> {
    for _ in 0..count.div_ceil(256) {
        let ids: Vec<u16> = (0..256)
            .map(|_| c.send_command(command_id, extra_flags, parts, &[]))
            .collect::<Result<_, _>>()?;
        if extra_flags & flags::NO_REPLY == 0 {
            for id in ids {
                c.wait_reply(id, command_id)?;
            }
        }
    }
    Ok(())
}

#[test]
fn resetting_in_a_loop_is_not_logged() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let started = Instant::now();
    let mut a = daemon.connect(VGPU_A)?;
    pipelined(&mut a, 20_000, command::DEVICE_RESET, 0, &[])?;
    assert_lines_within_bound(&daemon, started, "20 000 DEVICE_RESETs");
    Ok(())
}

#[test]
fn refused_messages_in_a_loop_are_rate_limited() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let started = Instant::now();
    let mut a = daemon.connect(VGPU_A)?;
    // Reads of a region that does not exist: each is refused.
    let access = RegionAccess {
        offset: 0,
        region: 42,
        count: 4,
    };
    for _ in 0..5000 {
        let refused = a
            .request(command::REGION_READ, 0, &[access.as_bytes()], &[])
            .expect_err("no region 42");
        assert_eq!(refused.errno(), Some(libc::EINVAL as u32));
    }
    assert_lines_within_bound(&daemon, started, "5000 refused messages");
    let entry = vgpud_tests::control::list_entry(&daemon.control_socket(), VGPU_A)?;
    assert_eq!(entry["refused_messages"], 5000, "every refusal is counted");
    Ok(())
}

#[test]
fn dma_controls_while_the_client_stalls_are_refused_quietly() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let started = Instant::now();
    let mut a = daemon.connect(VGPU_A)?;
    // A map without an fd: the daemon must ask the client, which never
    // answers while it floods.
    a.dma_map(DmaMapRequest::read_write(0x40000, 4096), None)?;
    for (offset, value) in [(DMA_IOVA_LO, 0x40000), (DMA_LENGTH, 4096)] {
        a.bar2_write32(offset, value)?;
    }
    let start = RegionAccess {
        offset: DMA_CONTROL,
        region: region::BAR2,
        count: 4,
    };
    let go = DMA_TO_VRAM.to_le_bytes();
    pipelined(
        &mut a,
        10_000,
        command::REGION_WRITE,
        flags::NO_REPLY,
        &[start.as_bytes(), &go],
    )?;
    // The first 16 were queued; every later one was refused at once by the
    // device with DMA_QUEUE_FULL, and counted as completed.
    assert_eq!(a.bar2_read32(ERROR_CODE)?, error_code::DMA_QUEUE_FULL);
    assert_eq!(a.bar2_read32(ERROR_INFO)?, 16);
    assert!(a.bar2_read32(DMA_COUNT)? >= 10_000 - 16);
    assert_ne!(a.bar2_read32(DMA_STATUS)?, 0);
    assert_lines_within_bound(&daemon, started, "10 000 DMA_CONTROLs");
    Ok(())
}

#[test]
fn connecting_in_a_loop_is_rate_limited() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let started = Instant::now();
    let memory = GuestMemory::new(4096)?;
    for _ in 0..300 {
        let mut a = daemon.connect(VGPU_A)?;
        a.dma_map(DmaMapRequest::read_write(0, 4096), Some(memory.as_fd()))?;
        // A second client while the first is attached is refused.
        let second = daemon.connect(VGPU_A);
        assert!(second.is_err());
        drop(a);
        wait_detached(&daemon, VGPU_A)?;
    }
    assert_lines_within_bound(&daemon, started, "300 connections");
    Ok(())
}
