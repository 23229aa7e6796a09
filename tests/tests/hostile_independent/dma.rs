//! DMA windows and the DMA self-test against a hostile client
//! (`docs/vfio-user.md`, `DMA_MAP`, `DMA_UNMAP`, `DMA_READ`/`DMA_WRITE` and
//! "What a client can make the daemon hold"; `docs/device-interface.md`,
//! the vGPU control block): the window and byte bounds and their errnos,
//! exact unmaps, maps of things that are not guest memory, the queue of
//! outstanding self-tests, server requests left unanswered or answered
//! wrongly, and disconnects and resets in the middle of it all.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::fs::{MemfdFlags, Mode, OFlags, ftruncate, memfd_create, open};
use vgpud_tests::client::RawMessage;
use vgpud_tests::device::DmaJob;
use vgpud_tests::host::pattern;
use vgpud_tests::regs::bar2::{
    DMA_CONTROL, DMA_COUNT, DMA_FROM_VRAM, DMA_STATUS, DMA_TO_VRAM, ERROR_CODE, ERROR_INFO,
    IRQ_DMA_DONE, IRQ_STATUS,
};
use vgpud_tests::regs::{error_code, region};
use vgpud_tests::wire::{DmaUnmap, Version, command, dma_flags};
use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A, VGPU_B};
use zerocopy::IntoBytes;

use crate::rig::{
    EEXIST, EINVAL, ENOENT, ENOMEM, ENOSPC, QUIET, access_of, answer_read, answer_write,
    assert_serves, call, daemon_with, errno_of, map_guest, next_request, program_dma, read32,
    reconnect, refuse, write32,
};

const IOVA: u64 = 0x1_0000_0000;
const REMOTE: u64 = 0x4_0000_0000;
const PAGE: usize = 4096;

fn job(iova: u64, vram_offset: u64, length: u32, control: u32) -> DmaJob {
    DmaJob {
        iova,
        vram_offset,
        length,
        control,
    }
}

fn errno<T: std::fmt::Debug>(result: Result<T, vgpud_tests::ClientError>) -> Option<u32> {
    match result {
        Ok(_) => None,
        Err(error) => Some(error.errno().unwrap_or(u32::MAX)),
    }
}

/// A memfd of `len` bytes that is not sealed (a file the VMM can truncate).
fn unsealed_memfd(len: u64) -> anyhow::Result<OwnedFd> {
    let fd = memfd_create("vgpud-test-unsealed", MemfdFlags::CLOEXEC)?;
    ftruncate(&fd, len)?;
    Ok(fd)
}

#[test]
fn the_window_bound_is_advertised_and_enforced_with_enospc() -> anyhow::Result<()> {
    let daemon = daemon_with(&["max_dma_maps = 8"])?;
    let mut a = daemon.connect(VGPU_A)?;
    assert_eq!(
        a.version().and_then(|v| v.capability("max_dma_maps")),
        Some(8),
        "a client proposing 65535 is told the vGPU's bound"
    );
    let memory = GuestMemory::new(64 << 10)?;
    for i in 0..4u64 {
        a.dma_map(
            DmaMapRequest::read_write(IOVA + i * 0x10000, 0x1000),
            Some(memory.as_fd()),
        )?;
        a.dma_map(
            DmaMapRequest::read_write(REMOTE + i * 0x10000, 0x1000),
            None,
        )?;
    }
    let with_fd = a.dma_map(
        DmaMapRequest::read_write(IOVA + 0x10_0000, 0x1000),
        Some(memory.as_fd()),
    );
    assert_eq!(errno(with_fd), Some(ENOSPC), "a 9th window with an fd");
    let without = a.dma_map(DmaMapRequest::read_write(REMOTE + 0x10_0000, 0x1000), None);
    assert_eq!(errno(without), Some(ENOSPC), "a 9th window without an fd");
    // The refusals changed nothing; B has its own 8.
    assert_eq!(a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?, 0);
    let mut b = daemon.connect(VGPU_B)?;
    for i in 0..8u64 {
        b.dma_map(
            DmaMapRequest::read_write(REMOTE + i * 0x10000, 0x1000),
            None,
        )?;
    }
    // A freed window can be used again.
    a.dma_unmap(REMOTE, 0x1000)?;
    a.dma_map(DmaMapRequest::read_write(REMOTE + 0x20_0000, 0x1000), None)?;
    assert_eq!(
        errno(a.dma_map(DmaMapRequest::read_write(REMOTE + 0x30_0000, 0x1000), None)),
        Some(ENOSPC)
    );
    Ok(())
}

/// Connects with a `VERSION` whose capabilities are `capabilities`.
fn connect_proposing(
    daemon: &TestDaemon,
    capabilities: serde_json::Value,
) -> anyhow::Result<(RawClient, serde_json::Value)> {
    let mut c = RawClient::connect_without_handshake(&daemon.socket(VGPU_A))?;
    let json = serde_json::json!({ "capabilities": capabilities }).to_string();
    let mut payload = Version { major: 0, minor: 0 }.as_bytes().to_vec();
    payload.extend_from_slice(json.as_bytes());
    payload.push(0);
    c.request(command::VERSION, 0, &[&payload], &[])?;
    let data = &c.body()[4..];
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    let reply: serde_json::Value = serde_json::from_slice(data)?;
    Ok((c, reply))
}

#[test]
fn a_smaller_proposal_of_max_dma_maps_is_what_is_advertised() -> anyhow::Result<()> {
    let daemon = daemon_with(&["max_dma_maps = 8"])?;
    let (_c, reply) = connect_proposing(
        &daemon,
        serde_json::json!({"max_msg_fds": 16, "max_data_xfer_size": 1048576, "pgsizes": 4096, "max_dma_maps": 3}),
    )?;
    assert_eq!(reply["capabilities"]["max_dma_maps"], 3, "{reply}");
    Ok(())
}

#[test]
fn the_byte_bound_counts_fd_backed_windows_only_and_refuses_with_enomem() -> anyhow::Result<()> {
    let daemon = daemon_with(&["max_dma_bytes = \"64KiB\""])?;
    let mut a = daemon.connect(VGPU_A)?;
    let memory = GuestMemory::new(128 << 10)?;
    a.dma_map(
        DmaMapRequest::read_write(IOVA, 64 << 10),
        Some(memory.as_fd()),
    )?;
    let over = a.dma_map(
        DmaMapRequest::read_write(IOVA + 0x10_0000, 0x1000),
        Some(memory.as_fd()),
    );
    assert_eq!(errno(over), Some(ENOMEM), "past max_dma_bytes");
    // Windows without an fd map nothing and do not count.
    a.dma_map(DmaMapRequest::read_write(REMOTE, 1 << 40), None)?;
    assert_eq!(a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?, 0);
    // Freeing bytes lets a map in again; B has its own 64 KiB.
    let mut b = daemon.connect(VGPU_B)?;
    b.dma_map(
        DmaMapRequest::read_write(IOVA, 64 << 10),
        Some(memory.as_fd()),
    )?;
    a.dma_unmap(IOVA, 64 << 10)?;
    a.dma_map(
        DmaMapRequest::read_write(IOVA + 0x10_0000, 0x1000),
        Some(memory.as_fd()),
    )?;
    Ok(())
}

#[test]
fn maps_of_what_is_not_guest_memory_are_refused_with_einval() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let memory = GuestMemory::new(64 << 10)?;
    let past_end = [
        (0, 128 << 10, "longer than the file"),
        (60 << 10, 8 << 10, "offset + size past the end"),
        (u64::MAX - 4095, 8192, "offset + size overflows"),
        (128 << 10, 4096, "offset past the end"),
    ];
    for (offset, size, what) in past_end {
        let map = DmaMapRequest {
            offset,
            ..DmaMapRequest::read_write(IOVA, size)
        };
        assert_eq!(
            errno(a.dma_map(map, Some(memory.as_fd()))),
            Some(EINVAL),
            "{what}"
        );
    }
    let empty = unsealed_memfd(0)?;
    let result = a.dma_map(
        DmaMapRequest::read_write(IOVA + 0x100_0000, 4096),
        Some(empty.as_fd()),
    );
    assert_eq!(errno(result), Some(EINVAL), "an empty memfd");
    assert_serves(&mut a, "vGPU A")
}

#[test]
fn a_map_of_dev_zero_is_refused_and_cannot_grow_the_daemon() -> anyhow::Result<()> {
    // docs/vfio-user.md, DMA_MAP: "A range past the file's end ... is
    // refused with EINVAL"; /dev/zero's size is 0. Accepted, a MAP_SHARED
    // of /dev/zero is shared anonymous memory that only the daemon holds:
    // every DMA into it grows the daemon, not the VM ("plus the VRAM and
    // guest memory the daemon touches, which is the VM's own").
    let daemon = TestDaemon::standard()?;
    let pid = daemon.pid().expect("pid");
    let mut a = daemon.connect(VGPU_A)?;
    let zero = open("/dev/zero", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let size = 64u64 << 20;
    let result = a.dma_map(DmaMapRequest::read_write(IOVA, size), Some(zero.as_fd()));
    let mut growth = 0;
    if result.is_ok() {
        let before = vgpud_tests::process::resources(pid)?.rss;
        for i in 0..size >> 20 {
            a.run_dma(job(IOVA + (i << 20), 0, 1 << 20, DMA_FROM_VRAM))?;
        }
        // Nothing of it is the client's: it closes its descriptor.
        drop(zero);
        growth = vgpud_tests::process::resources(pid)?
            .rss
            .saturating_sub(before);
    }
    assert_eq!(
        errno(result),
        Some(EINVAL),
        "/dev/zero was mapped; 64 DMAs of 1 MiB grew the daemon's RSS by {} MiB",
        growth >> 20
    );
    Ok(())
}

#[test]
fn a_map_of_a_descriptor_of_size_0_is_refused_with_einval() -> anyhow::Result<()> {
    // docs/vfio-user.md, DMA_MAP: "A range past the file's end ... is
    // refused with EINVAL"; an eventfd's and a socket's size is 0.
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let eventfd = vgpud_tests::EventFd::new()?;
    let (sock, _peer) = std::os::unix::net::UnixStream::pair()?;
    let mut got = Vec::new();
    for (what, fd) in [("an eventfd", eventfd.as_fd()), ("a socket", sock.as_fd())] {
        let result = a.dma_map(DmaMapRequest::read_write(IOVA, 4096), Some(fd));
        got.push((what, errno(result)));
    }
    assert_eq!(
        got,
        [("an eventfd", Some(EINVAL)), ("a socket", Some(EINVAL))]
    );
    assert_serves(&mut a, "vGPU A")
}

#[test]
fn a_map_that_overlaps_is_refused_with_eexist() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let memory = map_guest(&mut a, IOVA, 64 << 10)?;
    a.dma_map(DmaMapRequest::read_write(REMOTE, 64 << 10), None)?;
    for (iova, size, what) in [
        (IOVA, 64 << 10, "the same range"),
        (IOVA - 0x1000, 0x2000, "the start"),
        (IOVA + 0xf000, 0x2000, "the end"),
        (IOVA - 0x1000, 0x1_2000, "a superset"),
        (IOVA + 0x1000, 0x1000, "a subset"),
        (REMOTE + 0x8000, 0x100_0000, "an fd-less map"),
    ] {
        let with_fd = a.dma_map(DmaMapRequest::read_write(iova, size), Some(memory.as_fd()));
        assert_eq!(errno(with_fd), Some(EEXIST), "{what} with an fd");
        let without = a.dma_map(DmaMapRequest::read_write(iova, size), None);
        assert_eq!(errno(without), Some(EEXIST), "{what} without an fd");
    }
    // Adjacent is not overlapping; an unaligned size is allowed.
    a.dma_map(
        DmaMapRequest::read_write(IOVA + (64 << 10), 100),
        Some(memory.as_fd()),
    )?;
    a.dma_map(DmaMapRequest::read_write(IOVA - 4096, 4096), None)?;
    Ok(())
}

#[test]
fn dma_unmap_takes_only_an_exact_map() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let memory = GuestMemory::new(256 << 10)?;
    let first = DmaMapRequest::read_write(IOVA, 64 << 10);
    let second = DmaMapRequest {
        offset: 64 << 10,
        ..DmaMapRequest::read_write(IOVA + (64 << 10), 64 << 10)
    };
    a.dma_map(first, Some(memory.as_fd()))?;
    a.dma_map(second, Some(memory.as_fd()))?;
    a.dma_map(DmaMapRequest::read_write(REMOTE, 64 << 10), None)?;
    let wrong = [
        (IOVA, 32 << 10, "part of a map"),
        (IOVA + 0x1000, 64 << 10, "shifted"),
        (IOVA, 128 << 10, "two adjacent maps"),
        (IOVA, (64 << 10) + 1, "one byte more"),
        (IOVA, (64 << 10) - 1, "one byte less"),
        (0, u64::MAX, "everything"),
        (REMOTE, 4096, "part of an fd-less map"),
    ];
    for (iova, size, what) in wrong {
        assert_eq!(errno(a.dma_unmap(iova, size)), Some(ENOENT), "{what}");
        // Nothing changed: both maps still work.
        assert_eq!(a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?, 0, "{what}");
        assert_eq!(
            a.run_dma(job(IOVA + (64 << 10), 0, 4096, DMA_TO_VRAM))?,
            0,
            "{what}"
        );
    }
    // A range with no map in it removes nothing, and is no error.
    a.dma_unmap(IOVA + (256 << 10), 4096)?;
    a.dma_unmap(IOVA, 64 << 10)?;
    a.dma_unmap(IOVA, 64 << 10)?;
    assert_eq!(
        a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?,
        error_code::DMA_NOT_MAPPED
    );
    assert_eq!(a.run_dma(job(IOVA + (64 << 10), 0, 4096, DMA_TO_VRAM))?, 0);
    a.dma_unmap(REMOTE, 64 << 10)?;
    Ok(())
}

#[test]
fn an_unmap_of_size_0_is_refused_with_einval() -> anyhow::Result<()> {
    // docs/vfio-user.md: "An unmap of size 0 (without ALL) is malformed
    // and refused with EINVAL".
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let _memory = map_guest(&mut a, IOVA, 64 << 10)?;
    assert_eq!(
        errno(a.dma_unmap(IOVA, 0)),
        Some(libc::EINVAL as u32),
        "at a map's start"
    );
    assert_eq!(
        errno(a.dma_unmap(REMOTE, 0)),
        Some(libc::EINVAL as u32),
        "where nothing is"
    );
    assert_eq!(a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?, 0);
    Ok(())
}

#[test]
fn a_writable_map_of_a_read_only_fd_is_refused_with_einval() -> anyhow::Result<()> {
    // docs/vfio-user.md, DMA_MAP: "A range past the file's end, a writable
    // map of a read-only fd, or a file on FUSE ... is refused with EINVAL."
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let memory = GuestMemory::new(64 << 10)?;
    let read_only = open(
        format!(
            "/proc/self/fd/{}",
            rustix::fd::AsRawFd::as_raw_fd(&memory.as_fd())
        ),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let write_only = DmaMapRequest {
        flags: dma_flags::WRITE,
        ..DmaMapRequest::read_write(IOVA + (1 << 20), 64 << 10)
    };
    assert_eq!(
        errno(a.dma_map(write_only, Some(read_only.as_fd()))),
        Some(EINVAL),
        "write-only map of a read-only fd"
    );
    assert_eq!(
        errno(a.dma_map(
            DmaMapRequest::read_write(IOVA, 64 << 10),
            Some(read_only.as_fd())
        )),
        Some(EINVAL),
        "read-write map of a read-only fd"
    );
    Ok(())
}

#[test]
fn a_read_only_map_of_a_read_only_fd_reads_and_refuses_writes() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut memory = GuestMemory::new(64 << 10)?;
    memory.bytes_mut()[..PAGE].copy_from_slice(&pattern(PAGE, 4));
    let read_only = open(
        format!(
            "/proc/self/fd/{}",
            rustix::fd::AsRawFd::as_raw_fd(&memory.as_fd())
        ),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    a.dma_map(
        DmaMapRequest::read_only(IOVA, 64 << 10),
        Some(read_only.as_fd()),
    )?;
    a.region_write(region::BAR0, 0x4000, &[0x66; PAGE])?;
    assert_eq!(
        a.run_dma(job(IOVA, 0x4000, 4096, DMA_FROM_VRAM))?,
        error_code::DMA_READ_ONLY
    );
    assert_eq!(&memory.bytes()[..PAGE], &pattern(PAGE, 4)[..]);
    assert_eq!(a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?, 0);
    assert_eq!(
        a.region_read(region::BAR0, 0, PAGE as u32)?,
        pattern(PAGE, 4)
    );
    Ok(())
}

/// `VFIO_DMA_UNMAP_FLAG_ALL`.
const UNMAP_ALL: u32 = 1 << 1;

#[test]
fn dma_unmap_all_takes_every_map() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let _memory = map_guest(&mut a, IOVA, 64 << 10)?;
    a.dma_map(DmaMapRequest::read_write(REMOTE, 64 << 10), None)?;
    let request = DmaUnmap {
        argsz: size_of::<DmaUnmap>() as u32,
        flags: UNMAP_ALL,
        address: 0,
        size: 0,
    };
    a.request(command::DMA_UNMAP, 0, &[request.as_bytes()], &[])?;
    assert_eq!(
        a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?,
        error_code::DMA_NOT_MAPPED
    );
    assert_eq!(
        a.run_dma(job(REMOTE, 0, 4096, DMA_TO_VRAM))?,
        error_code::DMA_NOT_MAPPED
    );
    // Both ranges are free again.
    let _again = map_guest(&mut a, IOVA, 64 << 10)?;
    a.dma_map(DmaMapRequest::read_write(REMOTE, 64 << 10), None)?;
    Ok(())
}

#[test]
fn a_file_truncated_under_its_map_fails_dma_with_code_6_and_not_the_daemon() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let mut b = daemon.connect(VGPU_B)?;
    let mut a = daemon.connect(VGPU_A)?;
    let fd = unsealed_memfd(64 << 10)?;
    a.dma_map(DmaMapRequest::read_write(IOVA, 64 << 10), Some(fd.as_fd()))?;
    a.region_write(region::BAR0, 0, &[0x11; PAGE])?;
    ftruncate(&fd, 0)?;
    assert_eq!(
        a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?,
        error_code::DMA_FAILED
    );
    assert_eq!(
        a.run_dma(job(IOVA + 0x8000, 0, 4096, DMA_FROM_VRAM))?,
        error_code::DMA_FAILED
    );
    assert_eq!(
        a.region_read(region::BAR0, 0, PAGE as u32)?,
        vec![0x11; PAGE],
        "nothing copied into VRAM"
    );
    assert!(daemon.is_running(), "stderr:\n{}", daemon.stderr());
    assert_serves(&mut b, "vGPU B")?;
    // Grown back: zeros, and DMA works again.
    ftruncate(&fd, 64 << 10)?;
    assert_eq!(a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?, 0);
    assert_eq!(a.region_read(region::BAR0, 0, PAGE as u32)?, vec![0; PAGE]);
    assert_eq!(
        a.run_dma(job(IOVA + 0x1000, 0x2000, 4096, DMA_FROM_VRAM))?,
        0
    );
    Ok(())
}

/// A client of A with an fd-less map of 1 MiB at [`REMOTE`], whose
/// server requests the test answers by hand.
fn remote_client(daemon: &TestDaemon) -> anyhow::Result<RawClient> {
    let mut c = reconnect(daemon, VGPU_A)?;
    c.dma_map(DmaMapRequest::read_write(REMOTE, 1 << 20), None)?;
    Ok(c)
}

/// Programs and starts a self-test, leaving requests unanswered.
fn start(
    c: &mut RawClient,
    iova: u64,
    vram: u64,
    len: u32,
    control: u32,
) -> anyhow::Result<Vec<RawMessage>> {
    let mut requests = program_dma(c, iova, vram, len)?;
    requests.extend(write32(c, DMA_CONTROL, control)?);
    Ok(requests)
}

/// The one request the server has outstanding, waiting up to 2 s.
fn one_request(c: &mut RawClient, mut seen: Vec<RawMessage>) -> anyhow::Result<RawMessage> {
    anyhow::ensure!(seen.len() <= 1, "{} server requests at once", seen.len());
    match seen.pop() {
        Some(request) => Ok(request),
        None => next_request(c, Duration::from_secs(2))?
            .ok_or_else(|| anyhow::anyhow!("no server request came")),
    }
}

#[test]
fn sixteen_outstanding_self_tests_then_a_refusal_with_error_10() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = remote_client(&daemon)?;
    let mut seen = Vec::new();
    for i in 0..16u64 {
        seen.extend(start(
            &mut c,
            REMOTE + i * 0x1_0000,
            i * 0x1000,
            4096,
            DMA_TO_VRAM,
        )?);
    }
    // The 17th is refused at once, without waiting for the 16.
    seen.extend(start(
        &mut c,
        REMOTE + 0xf_0000,
        0x10_0000,
        4096,
        DMA_TO_VRAM,
    )?);
    let (code, more) = read32(&mut c, ERROR_CODE)?;
    seen.extend(more);
    assert_eq!(code, error_code::DMA_QUEUE_FULL);
    let (info, more) = read32(&mut c, ERROR_INFO)?;
    seen.extend(more);
    assert_eq!(info, 16, "ERROR_INFO of DMA_QUEUE_FULL");
    let (status, more) = read32(&mut c, DMA_STATUS)?;
    seen.extend(more);
    assert_eq!(status, error_code::DMA_QUEUE_FULL);
    let (count, more) = read32(&mut c, DMA_COUNT)?;
    seen.extend(more);
    assert_eq!(count, 1, "only the refusal has completed");
    let (irq, more) = read32(&mut c, IRQ_STATUS)?;
    seen.extend(more);
    assert_ne!(irq & IRQ_DMA_DONE, 0, "the refusal sets DMA_DONE");
    // One server request at a time.
    let first = one_request(&mut c, seen)?;
    assert!(
        next_request(&mut c, QUIET)?.is_none(),
        "a second request while one is outstanding"
    );
    write32(&mut c, ERROR_CODE, 0)?;

    // Serve them in order; job 5 is refused by the VMM.
    let mut request = first;
    for i in 0..16u64 {
        assert_eq!(request.header.command, command::DMA_READ, "job {i}");
        let access = access_of(&request)?;
        assert_eq!(
            (access.address, access.count),
            (REMOTE + i * 0x1_0000, 4096),
            "job {i} runs in the order started, with its own registers"
        );
        if i == 5 {
            refuse(&mut c, &request, libc::EIO as u32)?;
        } else {
            answer_read(&mut c, &request, &pattern(PAGE, i as u8))?;
        }
        let (count, seen) = read32(&mut c, DMA_COUNT)?;
        let (status, more) = read32(&mut c, DMA_STATUS)?;
        let mut seen = seen;
        seen.extend(more);
        assert_eq!(count, 2 + i as u32, "DMA_COUNT after job {i}");
        if i == 5 {
            assert_eq!(status, error_code::DMA_FAILED, "job 5's own status");
            let (info, more) = read32(&mut c, ERROR_INFO)?;
            seen.extend(more);
            assert_eq!(
                info,
                (REMOTE + 5 * 0x1_0000) as u32,
                "job 5's own IOVA in ERROR_INFO"
            );
            write32(&mut c, ERROR_CODE, 0)?;
        } else {
            assert_eq!(status, 0, "job {i}'s own status");
        }
        if i < 15 {
            request = one_request(&mut c, seen)?;
        } else {
            anyhow::ensure!(seen.is_empty(), "a request after the last job");
        }
    }
    let vram = c.region_read(region::BAR0, 0, 16 * PAGE as u32)?;
    for i in 0..16 {
        let expected = if i == 5 {
            vec![0; PAGE]
        } else {
            pattern(PAGE, i as u8)
        };
        assert!(vram[i * PAGE..(i + 1) * PAGE] == expected[..], "job {i}");
    }
    assert_eq!(
        c.region_read(region::BAR0, 0x10_0000, PAGE as u32)?,
        vec![0; PAGE],
        "the refused 17th copied nothing"
    );
    Ok(())
}

#[test]
fn the_session_answers_requests_while_its_own_request_is_unanswered() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = remote_client(&daemon)?;
    let seen = start(&mut c, REMOTE, 0, 4096, DMA_TO_VRAM)?;
    let request = one_request(&mut c, seen)?;
    // Everything else still gets its reply.
    for _ in 0..20 {
        let (magic, more) = read32(&mut c, vgpud_tests::regs::bar2::MAGIC)?;
        assert_eq!(magic, vgpud_tests::regs::bar2::MAGIC_VALUE);
        assert!(more.is_empty());
    }
    let memory = GuestMemory::new(64 << 10)?;
    let map = vgpud_tests::wire::DmaMap {
        argsz: size_of::<vgpud_tests::wire::DmaMap>() as u32,
        flags: dma_flags::READ | dma_flags::WRITE,
        offset: 0,
        address: IOVA,
        size: 64 << 10,
    };
    let (reply, more) = call(
        &mut c,
        command::DMA_MAP,
        &[map.as_bytes()],
        &[memory.as_fd()],
    )?;
    assert_eq!(errno_of(&reply), 0);
    assert!(more.is_empty());
    answer_read(&mut c, &request, &pattern(PAGE, 3))?;
    let (count, _) = read32(&mut c, DMA_COUNT)?;
    assert_eq!(count, 1);
    assert_eq!(
        c.region_read(region::BAR0, 0, PAGE as u32)?,
        pattern(PAGE, 3)
    );
    Ok(())
}

#[test]
fn an_unmap_while_its_dma_read_is_unanswered_leaves_nothing_reaching_the_range()
-> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = remote_client(&daemon)?;
    let seen = start(&mut c, REMOTE + 0x1000, 0, 4096, DMA_TO_VRAM)?;
    let request = one_request(&mut c, seen)?;
    let unmap = DmaUnmap {
        argsz: size_of::<DmaUnmap>() as u32,
        flags: 0,
        address: REMOTE,
        size: 1 << 20,
    };
    let (reply, more) = call(&mut c, command::DMA_UNMAP, &[unmap.as_bytes()], &[])?;
    assert_eq!(errno_of(&reply), 0, "the unmap is answered");
    assert!(more.is_empty());
    // The VMM now answers the request it got before the unmap: the device
    // can no longer reach the range, so the data must not land.
    answer_read(&mut c, &request, &[0xab; PAGE])?;
    let (count, more) = read32(&mut c, DMA_COUNT)?;
    assert!(more.is_empty(), "a request after the unmap");
    let (status, _) = read32(&mut c, DMA_STATUS)?;
    assert_eq!(count, 1, "the job completed");
    assert_ne!(status, 0, "a copy from an unmapped range succeeded");
    assert_eq!(
        c.region_read(region::BAR0, 0, PAGE as u32)?,
        vec![0; PAGE],
        "data of an unmapped range reached VRAM after the unmap's reply"
    );
    Ok(())
}

#[test]
fn wrong_answers_to_a_dma_read_fail_the_copy_and_copy_nothing() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = remote_client(&daemon)?;
    let mut b = daemon.connect(VGPU_B)?;
    type Build = fn(&RawMessage) -> Vec<u8>;
    let cases: [(&str, Build); 4] = [
        ("short data", |request| {
            reply_bytes(
                request,
                access_of(request).unwrap().address,
                4096,
                &[7; 100],
            )
        }),
        ("another address", |request| {
            let access = access_of(request).unwrap();
            reply_bytes(request, access.address + 4096, access.count, &[7; PAGE])
        }),
        ("count larger than asked, with that much data", |request| {
            let access = access_of(request).unwrap();
            reply_bytes(request, access.address, 2 * PAGE as u64, &[7; 2 * PAGE])
        }),
        ("count 0", |request| {
            reply_bytes(request, access_of(request).unwrap().address, 0, &[])
        }),
    ];
    for (i, (what, build)) in cases.into_iter().enumerate() {
        let vram = (i * 2 * PAGE) as u64;
        let seen = start(&mut c, REMOTE, vram, 4096, DMA_TO_VRAM)?;
        let request = one_request(&mut c, seen)?;
        c.send_raw(&build(&request), &[])?;
        let (count, more) = read32(&mut c, DMA_COUNT)?;
        assert!(more.is_empty(), "{what}: another request");
        let (status, _) = read32(&mut c, DMA_STATUS)?;
        assert_eq!(count, i as u32 + 1, "{what}: completed");
        assert_eq!(status, error_code::DMA_FAILED, "{what}");
        assert_eq!(
            c.region_read(region::BAR0, vram, 2 * PAGE as u32)?,
            vec![0; 2 * PAGE],
            "{what}: something was copied"
        );
    }
    assert_serves(&mut c, "vGPU A")?;
    assert_serves(&mut b, "vGPU B")
}

/// Whatever the server sends within [`QUIET`], if anything.
fn next_request_or_reply(c: &mut RawClient) -> anyhow::Result<Option<RawMessage>> {
    c.set_timeout(QUIET)?;
    let result = c.recv_raw();
    c.set_timeout(vgpud_tests::client::DEFAULT_TIMEOUT)?;
    match result {
        Ok(message) => Ok(Some(message)),
        Err(error) if error.is_timeout() => Ok(None),
        Err(error) => Err(error.into()),
    }
}

fn reply_bytes(request: &RawMessage, address: u64, count: u64, data: &[u8]) -> Vec<u8> {
    let access = vgpud_tests::wire::DmaAccess { address, count };
    let header = vgpud_tests::wire::Header {
        id: request.header.id,
        command: request.header.command,
        size: (16 + 16 + data.len()) as u32,
        flags: vgpud_tests::wire::flags::TYPE_REPLY,
        error: 0,
    };
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(access.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn a_refused_dma_write_request_reports_dma_failed() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = remote_client(&daemon)?;
    let seen = start(&mut c, REMOTE, 0, 4096, DMA_FROM_VRAM)?;
    let request = one_request(&mut c, seen)?;
    assert_eq!(request.header.command, command::DMA_WRITE);
    refuse(&mut c, &request, libc::EFAULT as u32)?;
    let (count, _) = read32(&mut c, DMA_COUNT)?;
    let (status, _) = read32(&mut c, DMA_STATUS)?;
    assert_eq!((count, status), (1, error_code::DMA_FAILED));
    let (info, _) = read32(&mut c, ERROR_INFO)?;
    assert_eq!(info, REMOTE as u32);
    // A good one after it works.
    let seen = start(&mut c, REMOTE + 0x2000, 0, 4096, DMA_FROM_VRAM)?;
    let request = one_request(&mut c, seen)?;
    answer_write(&mut c, &request)?;
    let (count, _) = read32(&mut c, DMA_COUNT)?;
    let (status, _) = read32(&mut c, DMA_STATUS)?;
    assert_eq!((count, status), (2, 0));
    Ok(())
}

#[test]
fn server_requests_respect_the_negotiated_transfer_size() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let (mut c, reply) = connect_proposing(
        &daemon,
        serde_json::json!({"max_msg_fds": 16, "max_data_xfer_size": 4096, "pgsizes": 4096, "max_dma_maps": 64}),
    )?;
    let negotiated = reply["capabilities"]["max_data_xfer_size"].as_u64();
    c.dma_map(DmaMapRequest::read_write(REMOTE, 1 << 20), None)?;
    let seen = start(&mut c, REMOTE, 0, 64 << 10, DMA_TO_VRAM)?;
    let mut request = Some(one_request(&mut c, seen)?);
    let mut bytes = 0u64;
    let mut served = 0;
    while let Some(current) = request {
        let access = access_of(&current)?;
        assert!(
            access.count <= 4096,
            "a request of {} bytes to a client that proposed 4096 (reply said {negotiated:?})",
            access.count
        );
        answer_read(&mut c, &current, &vec![9; access.count as usize])?;
        bytes += access.count;
        served += 1;
        anyhow::ensure!(served <= 64 << 10, "endless requests");
        request = next_request(&mut c, Duration::from_secs(1))?;
    }
    assert_eq!(bytes, 64 << 10);
    let (status, _) = read32(&mut c, DMA_STATUS)?;
    assert_eq!(status, 0);
    Ok(())
}

#[test]
fn a_disconnect_with_requests_unanswered_leaves_nothing_for_the_next_client() -> anyhow::Result<()>
{
    let daemon = TestDaemon::standard()?;
    let mut b = daemon.connect(VGPU_B)?;
    for round in 0..3 {
        let mut c = remote_client(&daemon)?;
        let mut seen = Vec::new();
        let jobs = [1, 8, 16][round];
        for i in 0..jobs {
            seen.extend(start(
                &mut c,
                REMOTE + i * 0x1000,
                i * 0x1000,
                4096,
                [DMA_TO_VRAM, DMA_FROM_VRAM][i as usize % 2],
            )?);
        }
        let request = one_request(&mut c, seen)?;
        if round == 2 {
            // Half a reply, then gone.
            let bytes = reply_bytes(&request, access_of(&request)?.address, 4096, &[1; PAGE]);
            c.send_raw(&bytes[..24], &[])?;
        }
        drop(c);
        assert_serves(&mut b, "vGPU B")?;
        let mut next = reconnect(&daemon, VGPU_A)?;
        assert!(
            next_request(&mut next, QUIET)?.is_none(),
            "round {round}: the next client got a request of the last one's DMA"
        );
        assert_eq!(next.bar2_read32(DMA_COUNT)?, 0, "round {round}");
        assert_eq!(next.bar2_read32(DMA_STATUS)?, 0, "round {round}");
        assert_eq!(next.bar2_read32(IRQ_STATUS)?, 0, "round {round}");
        let memory = map_guest(&mut next, IOVA, 64 << 10)?;
        assert_eq!(next.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?, 0);
        assert_eq!(next.bar2_read32(DMA_COUNT)?, 1, "round {round}");
        assert!(
            next.region_read(region::BAR0, 0x1000, 15 * 4096)?
                .iter()
                .all(|&b| b == 0)
        );
        drop(memory);
    }
    Ok(())
}

#[test]
fn a_reset_with_a_request_unanswered_leaves_a_clean_device() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = remote_client(&daemon)?;
    let seen = start(&mut c, REMOTE, 0, 4096, DMA_TO_VRAM)?;
    let request = one_request(&mut c, seen)?;
    let (reply, more) = call(&mut c, command::DEVICE_RESET, &[], &[])?;
    assert_eq!(errno_of(&reply), 0, "the reset is answered");
    assert!(more.is_empty());
    let (count, _) = read32(&mut c, DMA_COUNT)?;
    assert_eq!(count, 0, "DMA_COUNT after the reset");
    // The stale request is answered late: the reset device's VRAM (cleared
    // by the reset) must not take data of a DMA the guest started before.
    answer_read(&mut c, &request, &[0xcd; PAGE])?;
    // The daemon may answer the stale reply with an error reply of its own.
    if let Some(answer) = next_request_or_reply(&mut c)? {
        assert_eq!(answer.header.id, request.header.id, "{:?}", answer.header);
    }
    let (count, more) = read32(&mut c, DMA_COUNT)?;
    assert!(more.is_empty());
    assert_eq!(
        c.region_read(region::BAR0, 0, PAGE as u32)?,
        vec![0; PAGE],
        "a DMA started before DEVICE_RESET wrote VRAM after it (DMA_COUNT {count})"
    );
    // And the device works: a new self-test through the kept map.
    let seen = start(&mut c, REMOTE + 0x3000, 0x3000, 4096, DMA_TO_VRAM)?;
    let request = one_request(&mut c, seen)?;
    assert_eq!(access_of(&request)?.address, REMOTE + 0x3000);
    answer_read(&mut c, &request, &[0xef; PAGE])?;
    let (status, _) = read32(&mut c, DMA_STATUS)?;
    assert_eq!(status, 0);
    assert_eq!(
        c.region_read(region::BAR0, 0x3000, PAGE as u32)?,
        vec![0xef; PAGE]
    );
    Ok(())
}

#[test]
fn a_client_that_sends_server_commands_or_stray_replies_is_refused() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    for cmd in [command::DMA_READ, command::DMA_WRITE] {
        let access = vgpud_tests::wire::DmaAccess {
            address: 0,
            count: 4096,
        };
        let (reply, more) = call(&mut c, cmd, &[access.as_bytes()], &[])?;
        assert_ne!(errno_of(&reply), 0, "command {cmd} from the client");
        assert!(more.is_empty());
    }
    // A reply to nothing: the session goes on.
    let stray = vgpud_tests::wire::Header {
        id: 999,
        command: command::DMA_READ,
        size: 16,
        flags: vgpud_tests::wire::flags::TYPE_REPLY,
        error: 0,
    };
    c.send_raw(stray.as_bytes(), &[])?;
    // The documents do not say whether a stray reply is ignored or gets an
    // error reply of its own (the daemon sends one, with the stray's id).
    if let Some(answer) = next_request_or_reply(&mut c)? {
        assert_eq!(answer.header.id, 999, "{:?}", answer.header);
        assert_ne!(errno_of(&answer), 0, "{:?}", answer.header);
    }
    assert_serves(&mut c, "vGPU A after a stray reply")?;
    assert_serves(&mut b, "vGPU B")
}

#[test]
fn an_fd_backed_copy_queued_behind_a_remote_one_waits_for_it() -> anyhow::Result<()> {
    // docs/device-interface.md: "Copies through fd-backed maps have
    // completed before the next register access is answered, unless DMA
    // self-tests started earlier are still outstanding: self-tests run one
    // at a time in the order they were started".
    let daemon = TestDaemon::standard()?;
    let mut c = remote_client(&daemon)?;
    let _memory = map_guest(&mut c, IOVA, 64 << 10)?;
    let seen = start(&mut c, REMOTE, 0, 4096, DMA_TO_VRAM)?;
    let _request = one_request(&mut c, seen)?;
    start(&mut c, IOVA, 0x8000, 4096, DMA_TO_VRAM)?;
    let (count, _) = read32(&mut c, DMA_COUNT)?;
    assert_eq!(
        count, 0,
        "the fd-backed copy waits behind the outstanding remote one"
    );
    Ok(())
}

#[test]
fn an_fd_backed_copy_while_a_remote_one_is_outstanding() -> anyhow::Result<()> {
    // "they run one at a time in the order they were started" and "Copies
    // through fd-backed maps have completed before the next register
    // access is answered": with a remote copy outstanding, the fd-backed
    // one cannot do both (the daemon queues it). Either way, both complete
    // and nothing is lost.
    let daemon = TestDaemon::standard()?;
    let mut c = remote_client(&daemon)?;
    let mut memory = map_guest(&mut c, IOVA, 64 << 10)?;
    memory.bytes_mut()[..PAGE].copy_from_slice(&pattern(PAGE, 1));
    let seen = start(&mut c, REMOTE, 0, 4096, DMA_TO_VRAM)?;
    let request = one_request(&mut c, seen)?;
    let more = start(&mut c, IOVA, 0x8000, 4096, DMA_TO_VRAM)?;
    assert!(more.is_empty());
    let (count_before, _) = read32(&mut c, DMA_COUNT)?;
    answer_read(&mut c, &request, &pattern(PAGE, 2))?;
    let (count, seen) = read32(&mut c, DMA_COUNT)?;
    assert!(seen.is_empty());
    assert_eq!(count, 2, "both completed (count was {count_before} before)");
    assert_eq!(
        c.region_read(region::BAR0, 0, PAGE as u32)?,
        pattern(PAGE, 2)
    );
    assert_eq!(
        c.region_read(region::BAR0, 0x8000, PAGE as u32)?,
        pattern(PAGE, 1)
    );
    Ok(())
}

/// Free 2 MiB huge pages, from /proc/meminfo.
fn free_huge_pages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("HugePages_Free:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn hugetlb_memory_taken_away_under_a_map_fails_dma_not_the_daemon() -> anyhow::Result<()> {
    // docs/vfio-user.md: hugetlb memory is copied with process_vm_readv/
    // process_vm_writev, "so a vanished page fails the copy ... instead of
    // killing the daemon with SIGBUS". Needs two free huge pages (the
    // test returns early without them, as most CI machines have none).
    if free_huge_pages() < 2 {
        eprintln!("skipped: fewer than 2 free huge pages");
        return Ok(());
    }
    let mut daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::HUGETLB | MemfdFlags::ALLOW_SEALING;
    let fd = memfd_create("vgpud-test-huge", flags)?;
    ftruncate(&fd, 2 << 20)?;
    // Sealed against shrinking, as QEMU's memfd backend is.
    rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK)?;
    a.dma_map(DmaMapRequest::read_write(IOVA, 2 << 20), Some(fd.as_fd()))?;
    assert_eq!(a.run_dma(job(IOVA, 0, 4096, DMA_FROM_VRAM))?, 0);
    // The page goes (a hole punched), and every huge page is taken.
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a descriptor this test owns; no pointers.
    let punched =
        unsafe { libc::fallocate(rustix::fd::AsRawFd::as_raw_fd(&fd), punch, 0, 2 << 20) };
    assert_eq!(punched, 0, "{}", std::io::Error::last_os_error());
    let hog = memfd_create("vgpud-test-hog", MemfdFlags::CLOEXEC | MemfdFlags::HUGETLB)?;
    let pages = free_huge_pages();
    ftruncate(&hog, pages * (2 << 20))?;
    // SAFETY: a shared mapping of a memfd only this test holds.
    let mut hog_map = unsafe {
        memmap2::MmapOptions::new()
            .len((pages * (2 << 20)) as usize)
            .map_mut(&hog)?
    };
    for page in 0..pages as usize {
        hog_map[page * (2 << 20)] = 1;
    }
    assert_eq!(
        a.run_dma(job(IOVA, 0, 4096, DMA_FROM_VRAM))?,
        error_code::DMA_FAILED
    );
    assert_eq!(
        a.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?,
        error_code::DMA_FAILED
    );
    assert!(daemon.is_running(), "stderr:\n{}", daemon.stderr());
    assert_serves(&mut b, "vGPU B")
}
