//! What a client can make the daemon hold (`docs/vfio-user.md`, "What a
//! client can make the daemon hold"): mappings, address space,
//! descriptors and memory stay within the per-vGPU bounds whatever the
//! client sends; and the log stays within its documented rate
//! (`docs/operations.md`).

use std::os::fd::AsFd;
use std::time::Duration;

use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
use vgpud_tests::process::resources;
use vgpud_tests::regs::region;
use vgpud_tests::wire::{Header, RegionAccess, command, flags};
use vgpud_tests::{
    DaemonConfig, DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A, VGPU_B,
};
use zerocopy::IntoBytes;

use crate::rig::{
    ENOMEM, ENOSPC, assert_serves, daemon_with, errno_of, log_lines, log_lines_since, message,
    reconnect,
};

const IOVA: u64 = 0x1_0000_0000;

fn errno<T: std::fmt::Debug>(result: Result<T, vgpud_tests::ClientError>) -> Option<u32> {
    result.err().map(|e| e.errno().unwrap_or(u32::MAX))
}

#[test]
fn fd_backed_windows_keep_no_descriptor_and_unmapped_ones_no_mapping() -> anyhow::Result<()> {
    let daemon = daemon_with(&["max_dma_maps = 256"])?;
    let pid = daemon.pid().expect("pid");
    let mut a = daemon.connect(VGPU_A)?;
    let memory = GuestMemory::new(1 << 20)?;
    let before = resources(pid)?;
    for round in 0..4 {
        for i in 0..256u64 {
            a.dma_map(
                DmaMapRequest {
                    offset: (i % 256) * 4096,
                    ..DmaMapRequest::read_write(IOVA + i * 0x10000, 4096)
                },
                Some(memory.as_fd()),
            )?;
        }
        let held = resources(pid)?;
        assert!(held.fds <= before.fds + 1, "round {round}: {held:?}");
        assert!(
            held.mappings <= before.mappings + 256 + 8,
            "round {round}: {} mappings for 256 windows (before {})",
            held.mappings,
            before.mappings
        );
        assert_eq!(
            errno(a.dma_map(
                DmaMapRequest::read_write(IOVA + (1 << 32), 4096),
                Some(memory.as_fd())
            )),
            Some(ENOSPC)
        );
        for i in 0..256u64 {
            a.dma_unmap(IOVA + i * 0x10000, 4096)?;
        }
    }
    let after = resources(pid)?;
    assert!(
        after.mappings <= before.mappings + 8,
        "{after:?} vs {before:?}"
    );
    assert!(after.fds <= before.fds + 1, "{after:?} vs {before:?}");
    Ok(())
}

#[test]
fn a_terabyte_of_sparse_guest_memory_maps_and_the_byte_bound_holds() -> anyhow::Result<()> {
    let daemon = TestDaemon::start(&DaemonConfig::standard().with("max_dma_bytes = \"1TiB\""))?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    let fd = memfd_create(
        "vgpud-test-sparse",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    ftruncate(&fd, (1 << 40) + (1 << 20))?;
    rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK)?;
    // Both vGPUs take their whole 1 TiB.
    a.dma_map(DmaMapRequest::read_write(IOVA, 1 << 40), Some(fd.as_fd()))?;
    b.dma_map(DmaMapRequest::read_write(IOVA, 1 << 40), Some(fd.as_fd()))?;
    let over = a.dma_map(
        DmaMapRequest {
            offset: 1 << 40,
            ..DmaMapRequest::read_write(IOVA + (2 << 40), 4096)
        },
        Some(fd.as_fd()),
    );
    assert_eq!(errno(over), Some(ENOMEM));
    // Both still copy through them, far into the window.
    for c in [&mut a, &mut b] {
        let status = c.run_dma(vgpud_tests::device::DmaJob {
            iova: IOVA + (1 << 40) - 4096,
            vram_offset: 0,
            length: 4096,
            control: vgpud_tests::regs::bar2::DMA_FROM_VRAM,
        })?;
        assert_eq!(status, 0);
    }
    assert_serves(&mut a, "vGPU A")?;
    assert_serves(&mut b, "vGPU B")
}

#[test]
fn an_oversized_message_is_refused_and_the_stream_goes_on() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let pid = daemon.pid().expect("pid");
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    let before = resources(pid)?.rss_anon;
    // A REGION_WRITE whose header claims 4 MiB, followed by the 4 MiB.
    let body = 4usize << 20;
    let header = Header {
        id: 500,
        command: command::REGION_WRITE,
        size: (16 + body) as u32,
        flags: flags::TYPE_COMMAND,
        error: 0,
    };
    let access = RegionAccess {
        offset: 0,
        region: region::BAR0,
        count: (body - 16) as u32,
    };
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(access.as_bytes());
    bytes.resize(16 + body, 0x42);
    let sender = {
        let stream = a.stream().try_clone()?;
        std::thread::spawn(move || {
            use std::io::Write;
            (&stream).write_all(&bytes)
        })
    };
    let reply = a.recv_raw()?;
    sender.join().expect("sender")?;
    assert_eq!(reply.header.id, 500);
    assert_ne!(errno_of(&reply), 0, "an oversized message is refused");
    // The next message is framed correctly.
    assert_serves(&mut a, "vGPU A after the oversized message")?;
    assert_eq!(
        a.region_read(region::BAR0, 0, 4096)?,
        vec![0; 4096],
        "nothing of it was written"
    );
    assert_serves(&mut b, "vGPU B")?;
    let after = resources(pid)?.rss_anon;
    assert!(
        after.saturating_sub(before) < 3 << 20,
        "RssAnon grew by {} KiB for one oversized message",
        after.saturating_sub(before) >> 10
    );
    Ok(())
}

#[test]
fn a_header_claiming_4_gib_costs_no_memory_and_b_keeps_working() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let pid = daemon.pid().expect("pid");
    let mut b = daemon.connect(VGPU_B)?;
    let before = resources(pid)?.rss_anon;
    let mut a = daemon.connect(VGPU_A)?;
    let header = Header {
        id: 1,
        command: command::REGION_WRITE,
        size: u32::MAX,
        flags: flags::TYPE_COMMAND,
        error: 0,
    };
    a.send_raw(header.as_bytes(), &[])?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..16 {
        if a.send_raw(&chunk, &[]).is_err() {
            break;
        }
    }
    assert_serves(&mut b, "vGPU B")?;
    let during = resources(pid)?.rss_anon;
    drop(a);
    let mut again = reconnect(&daemon, VGPU_A)?;
    assert_serves(&mut again, "vGPU A after the 4 GiB header")?;
    assert!(
        during.saturating_sub(before) < 4 << 20,
        "RssAnon grew by {} KiB",
        during.saturating_sub(before) >> 10
    );
    Ok(())
}

#[test]
fn large_region_traffic_holds_only_the_message_buffers() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let pid = daemon.pid().expect("pid");
    let mut a = daemon.connect(VGPU_A)?;
    let data = vec![0x5a; 1 << 20];
    a.region_write(region::BAR0, 0, &data)?;
    a.region_read(region::BAR0, 0, 1 << 20)?;
    let before = resources(pid)?.rss_anon;
    for i in 0..32u64 {
        a.region_write(region::BAR0, (i % 15) << 20, &data)?;
        a.region_read(region::BAR0, (i % 15) << 20, 1 << 20)?;
        a.region_write_posted(region::BAR0, (i % 15) << 20, &data)?;
    }
    assert_serves(&mut a, "vGPU A")?;
    let after = resources(pid)?.rss_anon;
    assert!(
        after.saturating_sub(before) < 4 << 20,
        "RssAnon grew by {} KiB",
        after.saturating_sub(before) >> 10
    );
    Ok(())
}

#[test]
fn many_connections_and_attachments_leak_nothing() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let pid = daemon.pid().expect("pid");
    let mut holder = daemon.connect(VGPU_A)?;
    let before = resources(pid)?;
    // Second clients while A is held: each closed at once.
    let mut refused = Vec::new();
    for _ in 0..100 {
        refused.push(std::os::unix::net::UnixStream::connect(
            daemon.socket(VGPU_A),
        )?);
    }
    for stream in &refused {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut byte = [0u8; 1];
        let read = std::io::Read::read(&mut &*stream, &mut byte);
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "a second client was served: {read:?}"
        );
    }
    drop(refused);
    assert_serves(&mut holder, "the first client")?;
    drop(holder);
    // Attach and leave, with and without a handshake.
    for round in 0..60 {
        let c = reconnect(&daemon, VGPU_A)?;
        if round % 2 == 1 {
            // Leave, and connect once without a handshake before the next.
            drop(c);
            drop(std::os::unix::net::UnixStream::connect(
                daemon.socket(VGPU_A),
            )?);
        }
    }
    crate::rig::wait_detached(&daemon, VGPU_A)?;
    let after = resources(pid)?;
    assert!(after.fds <= before.fds + 1, "{after:?} vs {before:?}");
    assert!(
        after.threads <= before.threads + 2,
        "{after:?} vs {before:?}"
    );
    assert!(
        after.mappings <= before.mappings + 8,
        "{after:?} vs {before:?}"
    );
    Ok(())
}

/// Lines a client of A can make the daemon write, fast.
fn misbehave(daemon: &TestDaemon, a: &mut RawClient) -> anyhow::Result<()> {
    for i in 0..300u16 {
        // A truncated REGION_READ, an unknown command, a bad region.
        a.send_raw(&message(a.next_id(), command::REGION_READ, 0, &[0; 8]), &[])?;
        let _ = a.recv_raw()?;
        a.send_raw(&message(a.next_id(), 0x77, 0, &[]), &[])?;
        let _ = a.recv_raw()?;
        let _ = a.region_read(20, 0, 4);
        // Refused DMA maps and unmaps.
        let _ = a.dma_unmap(0x9_0000_0000 + u64::from(i) * 4096, 4096);
        // MMU faults (no root) and refused commands.
        let _ = a.xlate(0, u64::from(i) << 12, i % 2 == 0);
        let _ = a.bar2_write32(vgpud_tests::regs::bar2::INV_CONTROL, 63);
    }
    // Refused page-table entries: a root table full of invalid entries.
    let table: Vec<u8> = (0..512u64)
        .flat_map(|i| ((i << 12) | 1 | 1 << 5).to_le_bytes())
        .collect();
    a.region_write(region::BAR0, 0x10000, &table)?;
    for _ in 0..20 {
        a.set_pt_root(1, 0x10000 | 1)?;
    }
    // DMA the VMM refuses, interrupts on a full eventfd, descriptors that
    // are not eventfds.
    a.dma_map(DmaMapRequest::read_write(0x4_0000_0000, 1 << 20), None)?;
    let full = vgpud_tests::EventFd::new()?;
    a.assign_irq_eventfds(vgpud_tests::wire::irq_index::MSIX, 0, 1, &[full.as_fd()])?;
    crate::rig::fill_eventfd(full.as_fd())?;
    let (pipe_end, _peer) = std::os::unix::net::UnixStream::pair()?;
    for _ in 0..50 {
        let _ = a.run_dma(vgpud_tests::device::DmaJob {
            iova: 0x4_0000_0000,
            vram_offset: 0,
            length: 4096,
            control: vgpud_tests::regs::bar2::DMA_TO_VRAM,
        });
        a.bar2_write32(vgpud_tests::regs::bar2::SELFTEST, 0)?;
        let _ = a.assign_irq_eventfds(vgpud_tests::wire::irq_index::ERR, 0, 1, &[pipe_end.as_fd()]);
    }
    // Second clients.
    for _ in 0..50 {
        drop(std::os::unix::net::UnixStream::connect(
            daemon.socket(VGPU_A),
        )?);
    }
    Ok(())
}

#[test]
fn a_flooding_client_gets_at_most_the_documented_lines() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let start = log_lines(&daemon).len();
    let mut a = daemon.connect(VGPU_A)?;
    misbehave(&daemon, &mut a)?;
    // Connection churn: attach, leave.
    drop(a);
    for _ in 0..30 {
        drop(reconnect(&daemon, VGPU_A)?);
    }
    let mut b = reconnect(&daemon, VGPU_B)?;
    assert_serves(&mut b, "vGPU B")?;
    std::thread::sleep(Duration::from_millis(200));
    let lines = log_lines_since(&daemon, start);
    let uuid_a = VGPU_A.to_string();
    let uuid_b = VGPU_B.to_string();
    let about_a = lines.iter().filter(|l| l.contains(&uuid_a)).count();
    let about_b: Vec<&String> = lines.iter().filter(|l| l.contains(&uuid_b)).collect();
    // 20 per 10 s for connections and 20 for the rest, each plus one line
    // of how many were dropped; the burst may straddle two 10 s windows.
    assert!(
        about_a <= 2 * (20 + 20 + 2),
        "{about_a} lines about A within a burst:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.len() <= about_a + about_b.len() + 2,
        "lines about no vGPU:\n{}",
        lines
            .iter()
            .filter(|l| !l.contains(&uuid_a) && !l.contains(&uuid_b))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !about_b.is_empty(),
        "B's attach was not logged: A's flood took its lines"
    );
    let counted = crate::rig::counter(&daemon, VGPU_A, "refused_messages")?;
    assert!(
        counted >= 900,
        "refusals are counted whether logged or not: {counted}"
    );
    Ok(())
}

#[test]
fn the_line_after_the_window_says_how_many_were_dropped() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    for _ in 0..60 {
        a.send_raw(&message(a.next_id(), 0x77, 0, &[]), &[])?;
        let _ = a.recv_raw()?;
    }
    std::thread::sleep(Duration::from_millis(10_500));
    let start = log_lines(&daemon).len();
    a.send_raw(&message(a.next_id(), 0x77, 0, &[]), &[])?;
    let _ = a.recv_raw()?;
    std::thread::sleep(Duration::from_millis(200));
    let lines = log_lines_since(&daemon, start);
    let uuid = VGPU_A.to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("log lines dropped by the rate limit") && l.contains(&uuid)),
        "no drop summary naming A after the window:\n{}",
        lines.join("\n")
    );
    Ok(())
}

#[test]
fn descriptors_sent_with_any_message_are_closed() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let pid = daemon.pid().expect("pid");
    let fds = vgpud_tests::host::eventfds(16)?;
    let borrowed: Vec<std::os::fd::BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    // Before VERSION.
    let mut early = RawClient::connect_without_handshake(&daemon.socket(VGPU_A))?;
    for _ in 0..20 {
        early.send_raw(
            &message(early.next_id(), command::REGION_READ, 0, &[0; 16]),
            &borrowed,
        )?;
        let _ = early.recv_raw()?;
    }
    drop(early);
    crate::rig::wait_detached(&daemon, VGPU_A)?;
    let mut a = reconnect(&daemon, VGPU_A)?;
    a.dma_map(DmaMapRequest::read_write(0x4_0000_0000, 1 << 20), None)?;
    let before = resources(pid)?.fds;
    for round in 0..20u16 {
        // Unknown command, truncated payload, posted write.
        a.send_raw(&message(a.next_id(), 0x77, 0, &[]), &borrowed)?;
        let _ = a.recv_raw()?;
        a.send_raw(
            &message(a.next_id(), command::DMA_MAP, 0, &[0; 8]),
            &borrowed,
        )?;
        let _ = a.recv_raw()?;
        let access = RegionAccess {
            offset: 0x1020,
            region: region::BAR2,
            count: 4,
        };
        let mut payload = access.as_bytes().to_vec();
        payload.extend_from_slice(&0u32.to_le_bytes());
        let posted = message(
            a.next_id(),
            command::REGION_WRITE,
            flags::NO_REPLY,
            &payload,
        );
        a.send_raw(&posted, &borrowed)?;
        // An oversized message, body sent.
        let header = Header {
            id: a.next_id(),
            command: command::REGION_WRITE,
            size: 16 + (2 << 20),
            flags: flags::TYPE_COMMAND,
            error: 0,
        };
        let mut big = header.as_bytes().to_vec();
        big.resize(16 + (2 << 20), 0);
        let sender = {
            let stream = a.stream().try_clone()?;
            let fds: Vec<std::os::fd::OwnedFd> = fds
                .iter()
                .map(|fd| fd.as_fd().try_clone_to_owned())
                .collect::<Result<_, _>>()?;
            std::thread::spawn(move || -> anyhow::Result<()> {
                let borrowed: Vec<std::os::fd::BorrowedFd<'_>> =
                    fds.iter().map(AsFd::as_fd).collect();
                let mut raw = RawClient::from_stream(stream)?;
                raw.send_raw(&big, &borrowed)?;
                Ok(())
            })
        };
        let refused = a.recv_raw()?;
        sender.join().expect("sender")?;
        assert_ne!(
            errno_of(&refused),
            0,
            "round {round}: the oversized message"
        );
        // A reply to a DMA_READ with descriptors attached.
        crate::rig::program_dma(&mut a, 0x4_0000_0000, 0, 4096)?;
        let mut seen = crate::rig::write32(&mut a, vgpud_tests::regs::bar2::DMA_CONTROL, 1)?;
        let request = match seen.pop() {
            Some(request) => request,
            None => crate::rig::next_request(&mut a, Duration::from_secs(2))?
                .ok_or_else(|| anyhow::anyhow!("round {round}: no DMA_READ"))?,
        };
        let access = crate::rig::access_of(&request)?;
        let reply = Header {
            id: request.header.id,
            command: request.header.command,
            size: (16 + 16 + 4096) as u32,
            flags: flags::TYPE_REPLY,
            error: 0,
        };
        let mut bytes = reply.as_bytes().to_vec();
        bytes.extend_from_slice(access.as_bytes());
        bytes.resize(16 + 16 + 4096, 0x33);
        a.send_raw(&bytes, &borrowed)?;
        let _ = crate::rig::read32(&mut a, vgpud_tests::regs::bar2::DMA_COUNT)?;
    }
    assert_serves(&mut a, "vGPU A")?;
    let after = resources(pid)?.fds;
    assert!(
        after <= before + 1,
        "descriptors: {before} before, {after} after"
    );
    Ok(())
}
