//! DMA maps cost the daemon mappings and address space: one client must
//! not take what other vGPUs need. Unmaps name a map exactly, and the DMA
//! self-test's queue is the device's alone.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use zerocopy::IntoBytes;

use vgpud_tests::device::DmaJob;
use vgpud_tests::host::pattern;
use vgpud_tests::process::resources;
use vgpud_tests::regs::bar2::{
    DMA_CONTROL, DMA_COUNT, DMA_IOVA_HI, DMA_IOVA_LO, DMA_LENGTH, DMA_STATUS, DMA_TO_VRAM,
    DMA_VRAM_HI, DMA_VRAM_LO, ERROR_CODE, ERROR_INFO,
};
use vgpud_tests::regs::{error_code, region};
use vgpud_tests::wire::{DmaMap, command, dma_flags};
use vgpud_tests::{
    DaemonConfig, DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A, VGPU_B,
};

use crate::rig::write_all;

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;

/// Sends `count` DMA_MAPs of one page each, `batch` at a time without
/// waiting for replies, and returns each one's errno (0: accepted).
fn pipelined_maps(
    c: &mut RawClient,
    fd: BorrowedFd<'_>,
    first_iova: u64,
    count: u64,
) -> anyhow::Result<Vec<u32>> {
    const BATCH: u64 = 64;
    let mut outcomes = Vec::new();
    for start in (0..count).step_by(BATCH as usize) {
        let ids: Vec<u16> = (start..count.min(start + BATCH))
            .map(|i| {
                let map = DmaMap {
                    argsz: size_of::<DmaMap>() as u32,
                    flags: dma_flags::READ | dma_flags::WRITE,
                    offset: 0,
                    address: first_iova + i * 2 * PAGE,
                    size: PAGE,
                };
                c.send_command(command::DMA_MAP, 0, &[map.as_bytes()], &[fd])
            })
            .collect::<Result<_, _>>()?;
        for id in ids {
            outcomes.push(match c.wait_reply(id, command::DMA_MAP) {
                Ok(_) => 0,
                Err(e) => e.errno().ok_or(e)?,
            });
        }
    }
    Ok(outcomes)
}

/// A sparse memfd of `size` bytes: nothing of it exists until touched.
fn sparse(size: u64) -> anyhow::Result<File> {
    let fd = rustix::fs::memfd_create("vgpud-test-sparse", rustix::fs::MemfdFlags::CLOEXEC)?;
    let file = File::from(fd);
    file.set_len(size)?;
    Ok(file)
}

/// vGPU B still does everything with guest memory: a new client
/// connects, maps, and runs a DMA self-test.
fn the_other_vgpu_still_maps(daemon: &TestDaemon) -> anyhow::Result<()> {
    let mut b = daemon.connect(VGPU_B)?;
    let mut memory = GuestMemory::new(64 << 10)?;
    let data = pattern(4096, 3);
    memory.bytes_mut()[..4096].copy_from_slice(&data);
    b.dma_map(
        DmaMapRequest::read_write(0x10_0000, 64 << 10),
        Some(memory.as_fd()),
    )?;
    let status = b.run_dma(DmaJob {
        iova: 0x10_0000,
        vram_offset: 0,
        length: 4096,
        control: DMA_TO_VRAM,
    })?;
    assert_eq!(status, 0);
    assert_eq!(b.region_read(region::BAR0, 0, 4096)?, data);
    Ok(())
}

#[test]
fn a_flood_of_maps_stops_at_the_advertised_bound() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let advertised = a
        .version()
        .and_then(|v| v.capability("max_dma_maps"))
        .expect("max_dma_maps in the VERSION reply");
    assert_eq!(advertised, 1024, "the documented default");
    let before = resources(daemon.pid().expect("running"))?;

    let memory = GuestMemory::new(PAGE as usize)?;
    let outcomes = pipelined_maps(&mut a, memory.as_fd(), 0x1_0000_0000, advertised + 200)?;
    let accepted = outcomes.iter().take_while(|&&e| e == 0).count();
    assert_eq!(accepted as u64, advertised);
    assert!(
        outcomes[accepted..]
            .iter()
            .all(|&e| e == libc::ENOSPC as u32),
        "maps past the bound: {:?}",
        &outcomes[accepted..accepted + 5]
    );
    // Each accepted map is one mapping of the daemon's, and no more.
    let after = resources(daemon.pid().expect("running"))?;
    assert!(
        after.mappings <= before.mappings + advertised as usize + 16,
        "{} mappings before, {} after",
        before.mappings,
        after.mappings
    );
    the_other_vgpu_still_maps(&daemon)?;
    // Unmapping gives the windows back.
    a.dma_unmap(0x1_0000_0000, PAGE)?;
    a.dma_map(
        DmaMapRequest::read_write(0x2_0000_0000, PAGE),
        Some(memory.as_fd()),
    )?;
    Ok(())
}

#[test]
fn huge_maps_stop_at_the_byte_bound() -> anyhow::Result<()> {
    let daemon = TestDaemon::start(&DaemonConfig::standard().with("max_dma_bytes = \"64GiB\""))?;
    let mut a = daemon.connect(VGPU_A)?;
    let huge = sparse(1 << 40)?;
    let refused = a
        .dma_map(DmaMapRequest::read_write(0, 1 << 40), Some(huge.as_fd()))
        .expect_err("a 1 TiB map over a 64 GiB bound");
    assert_eq!(refused.errno(), Some(libc::ENOMEM as u32));
    for i in 0..2 {
        let map = DmaMapRequest {
            offset: i * 32 * GIB,
            ..DmaMapRequest::read_write(i * 32 * GIB, 32 * GIB)
        };
        a.dma_map(map, Some(huge.as_fd()))?;
    }
    let refused = a
        .dma_map(
            DmaMapRequest::read_write(64 * GIB, PAGE),
            Some(huge.as_fd()),
        )
        .expect_err("one page past 64 GiB");
    assert_eq!(refused.errno(), Some(libc::ENOMEM as u32));
    // Maps without an fd map nothing into the daemon and cost no bytes.
    a.dma_map(DmaMapRequest::read_write(1 << 50, 1 << 40), None)?;
    the_other_vgpu_still_maps(&daemon)?;
    Ok(())
}

#[test]
fn a_budget_the_system_cannot_give_is_refused_at_start() -> anyhow::Result<()> {
    let max_map_count: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")?
        .trim()
        .parse()?;
    // Enough vGPUs of 65535 windows each to need more than the system has.
    let vgpus = max_map_count / 65535 + 2;
    let dir = tempfile::tempdir()?;
    let mut toml = format!(
        "runtime_dir = {:?}\nmax_dma_maps = 65535\n\n[[gpu]]\nid = \"gpu0\"\nvram = \"{}MiB\"\n\n\
         [[profile]]\nname = \"p\"\nframebuffer = \"1MiB\"\nmax_instances = {vgpus}\nmax_resolution = \"320x200\"\n",
        dir.path().join("run").display().to_string(),
        vgpus,
    );
    for i in 0..vgpus {
        toml.push_str(&format!(
            "\n[[vgpu]]\nuuid = \"{}\"\ngpu = \"gpu0\"\nprofile = \"p\"\n",
            uuid::Uuid::from_u128(0x1000 + u128::from(i))
        ));
    }
    let exited =
        vgpud_tests::daemon::run_to_exit(dir.path(), &toml, std::time::Duration::from_secs(20))?;
    assert!(!exited.status.success());
    assert!(
        exited.stderr.contains("max_dma_maps") && exited.stderr.contains("vm.max_map_count"),
        "{}",
        exited.stderr
    );
    // Nothing was left listening.
    assert_eq!(std::fs::read_dir(dir.path().join("run"))?.count(), 0);
    Ok(())
}

#[test]
fn unmaps_must_name_a_map_exactly() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let memory = GuestMemory::new(4 * PAGE as usize)?;
    a.dma_map(
        DmaMapRequest::read_write(0x10000, 2 * PAGE),
        Some(memory.as_fd()),
    )?;
    a.dma_map(DmaMapRequest::read_write(0x20000, PAGE), None)?;
    for (iova, size) in [
        (0x10000, PAGE),
        (0x10000, 4 * PAGE),
        (0x11000, PAGE),
        (0x0, 0x30000),
    ] {
        let refused = a.dma_unmap(iova, size).expect_err("not a map");
        assert_eq!(
            refused.errno(),
            Some(libc::ENOENT as u32),
            "{iova:#x}+{size:#x}"
        );
    }
    // Both maps are still in place, then go when named.
    let status = a.run_dma(DmaJob {
        iova: 0x10000,
        vram_offset: 0,
        length: 2 * PAGE as u32,
        control: DMA_TO_VRAM,
    })?;
    assert_eq!(status, 0);
    a.dma_unmap(0x10000, 2 * PAGE)?;
    a.dma_unmap(0x20000, PAGE)?;
    // Gone: unmapping it again covers no map, removes nothing and is no
    // error (QEMU sweeps with such unmaps).
    a.dma_unmap(0x20000, PAGE)?;
    Ok(())
}

#[test]
fn overlapping_self_tests_through_fd_less_maps_complete_in_order() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    // The client serves 0x40000..0x41000 from a buffer, and refuses the
    // server's requests anywhere else.
    let data = pattern(PAGE as usize, 5);
    let mut a = daemon
        .connect(VGPU_A)?
        .with_remote_memory(0x40000, data.clone());
    a.dma_map(DmaMapRequest::read_write(0x40000, PAGE), None)?;
    a.dma_map(DmaMapRequest::read_write(0x80000, PAGE), None)?;

    // Both DMAs are started before the client answers the first one's
    // DMA_READ: the second waits in the device's queue.
    let mut writes = Vec::new();
    for (iova, vram) in [(0x40000u32, 0x1000u32), (0x80000, 0x2000)] {
        writes.extend([
            (DMA_IOVA_LO, iova),
            (DMA_IOVA_HI, 0),
            (DMA_VRAM_LO, vram),
            (DMA_VRAM_HI, 0),
            (DMA_LENGTH, PAGE as u32),
            (DMA_CONTROL, DMA_TO_VRAM),
        ]);
    }
    write_all(&mut a, &writes)?;
    // Each DMA is reported as itself: the first succeeded, the second
    // failed (the client refused its DMA_READ), and both were counted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while a.bar2_read32(DMA_COUNT)? < 2 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "DMA_COUNT stuck");
    }
    assert_eq!(a.bar2_read32(DMA_COUNT)?, 2);
    assert_eq!(a.bar2_read32(DMA_STATUS)?, error_code::DMA_FAILED);
    assert_eq!(a.bar2_read32(ERROR_CODE)?, error_code::DMA_FAILED);
    assert_eq!(a.bar2_read32(ERROR_INFO)?, 0x80000, "the second DMA's IOVA");
    assert_eq!(a.region_read(region::BAR0, 0x1000, PAGE as u32)?, data);
    assert_eq!(
        a.region_read(region::BAR0, 0x2000, PAGE as u32)?,
        vec![0; PAGE as usize]
    );
    Ok(())
}
