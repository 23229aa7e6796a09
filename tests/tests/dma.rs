//! DMA maps and the DMA self-test: copies through fd-backed maps (with
//! their permissions), through fd-less maps served by the client, and the
//! refusals the contract lists.

use std::os::fd::AsFd;

use vgpud_tests::device::DmaJob;
use vgpud_tests::host::pattern;
use vgpud_tests::regs::bar2::{
    DMA_COUNT, DMA_FROM_VRAM, DMA_TO_VRAM, ERROR_CODE, ERROR_INFO, IRQ_DMA_DONE, IRQ_STATUS,
};
use vgpud_tests::regs::error_code;
use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A};

/// Above 4 GiB, so that the high halves of the address registers matter.
const IOVA: u64 = 0x1_0000_0000;
const LEN: usize = 64 << 10;

fn connect_with_map() -> anyhow::Result<(TestDaemon, RawClient, GuestMemory)> {
    let daemon = TestDaemon::standard()?;
    let mut client = daemon.connect(VGPU_A)?;
    let memory = GuestMemory::new(LEN)?;
    client.dma_map(
        DmaMapRequest::read_write(IOVA, LEN as u64),
        Some(memory.as_fd()),
    )?;
    Ok((daemon, client, memory))
}

fn job(iova: u64, vram_offset: u64, length: u32, control: u32) -> DmaJob {
    DmaJob {
        iova,
        vram_offset,
        length,
        control,
    }
}

#[test]
fn guest_memory_is_copied_to_vram() -> anyhow::Result<()> {
    let (_daemon, mut c, mut memory) = connect_with_map()?;
    let data = pattern(4096, 7);
    memory.bytes_mut()[0x2000..0x3000].copy_from_slice(&data);
    let status = c.run_dma(job(IOVA + 0x2000, 0x1000, 4096, DMA_TO_VRAM))?;
    assert_eq!(status, 0);
    assert_eq!(c.bar2_read32(DMA_COUNT)?, 1);
    let bar0 = c.map_bar0()?;
    assert_eq!(&bar0.map[0x1000..0x2000], &data[..]);
    assert!(
        bar0.map[..0x1000].iter().all(|&b| b == 0),
        "before the range"
    );
    assert!(bar0.map[0x2000..0x3000].iter().all(|&b| b == 0), "after it");
    Ok(())
}

#[test]
fn vram_is_copied_to_a_writable_map() -> anyhow::Result<()> {
    let (_daemon, mut c, memory) = connect_with_map()?;
    let data = pattern(8192, 9);
    let mut bar0 = c.map_bar0()?;
    bar0.map[0x4000..0x6000].copy_from_slice(&data);
    let status = c.run_dma(job(IOVA + 0x1000, 0x4000, 8192, DMA_FROM_VRAM))?;
    assert_eq!(status, 0);
    assert_eq!(&memory.bytes()[0x1000..0x3000], &data[..]);
    assert!(memory.bytes()[..0x1000].iter().all(|&b| b == 0));
    Ok(())
}

#[test]
fn copy_into_a_read_only_map_is_refused_and_leaves_it_unchanged() -> anyhow::Result<()> {
    let (_daemon, mut c, _rw) = connect_with_map()?;
    let ro_iova = IOVA + 0x10_0000;
    let mut read_only = GuestMemory::new(LEN)?;
    read_only.bytes_mut().fill(0xaa);
    c.dma_map(
        DmaMapRequest::read_only(ro_iova, LEN as u64),
        Some(read_only.as_fd()),
    )?;
    let mut bar0 = c.map_bar0()?;
    bar0.map[..4096].copy_from_slice(&pattern(4096, 1));
    let status = c.run_dma(job(ro_iova, 0, 4096, DMA_FROM_VRAM))?;
    assert_eq!(status, error_code::DMA_READ_ONLY);
    assert!(read_only.bytes().iter().all(|&b| b == 0xaa));
    // Reading from it is allowed.
    let status = c.run_dma(job(ro_iova, 0x8000, 4096, DMA_TO_VRAM))?;
    assert_eq!(status, 0);
    assert!(bar0.map[0x8000..0x9000].iter().all(|&b| b == 0xaa));
    Ok(())
}

#[test]
fn copy_from_an_unmapped_address_is_refused() -> anyhow::Result<()> {
    let (_daemon, mut c, _memory) = connect_with_map()?;
    let status = c.run_dma(job(IOVA + LEN as u64, 0, 4096, DMA_TO_VRAM))?;
    assert_eq!(status, error_code::DMA_NOT_MAPPED);
    // A range that starts inside the map but ends outside it, too.
    let status = c.run_dma(job(IOVA + LEN as u64 - 2048, 0, 4096, DMA_TO_VRAM))?;
    assert_eq!(status, error_code::DMA_NOT_MAPPED);
    Ok(())
}

#[test]
fn bad_lengths_vram_ranges_and_commands_are_refused() -> anyhow::Result<()> {
    let (_daemon, mut c, _memory) = connect_with_map()?;
    let cases = [
        (job(IOVA, 0, 0, DMA_TO_VRAM), error_code::DMA_BAD_LENGTH),
        (
            job(IOVA, 0, (1 << 20) + 1, DMA_TO_VRAM),
            error_code::DMA_BAD_LENGTH,
        ),
        (
            job(IOVA, (16 << 20) - 100, 4096, DMA_TO_VRAM),
            error_code::DMA_VRAM_RANGE,
        ),
    ];
    for (count, (job, expected)) in cases.into_iter().enumerate() {
        assert_eq!(c.run_dma(job)?, expected, "{job:?}");
        assert_eq!(
            c.bar2_read32(DMA_COUNT)?,
            count as u32 + 1,
            "refusals count"
        );
    }
    Ok(())
}

#[test]
fn bad_dma_command_is_reported_but_not_counted() -> anyhow::Result<()> {
    let (_daemon, mut c, _memory) = connect_with_map()?;
    // Not a DMA, so DMA_STATUS ("result of the last DMA") is not asserted:
    // the error registers carry the refusal.
    c.run_dma(job(IOVA, 0, 4096, 3))?;
    assert_eq!(c.bar2_read32(ERROR_CODE)?, error_code::DMA_BAD_COMMAND);
    assert_eq!(c.bar2_read32(ERROR_INFO)?, 3, "the value written");
    assert_eq!(c.bar2_read32(DMA_COUNT)?, 0);
    assert_eq!(c.bar2_read32(IRQ_STATUS)? & IRQ_DMA_DONE, 0);
    Ok(())
}

#[test]
fn unmapped_range_is_no_longer_reachable() -> anyhow::Result<()> {
    let (_daemon, mut c, _memory) = connect_with_map()?;
    assert_eq!(c.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?, 0);
    c.dma_unmap(IOVA, LEN as u64)?;
    let status = c.run_dma(job(IOVA, 0, 4096, DMA_TO_VRAM))?;
    assert_eq!(status, error_code::DMA_NOT_MAPPED);
    Ok(())
}

#[test]
fn overlapping_map_is_refused() -> anyhow::Result<()> {
    let (_daemon, mut c, _memory) = connect_with_map()?;
    let other = GuestMemory::new(LEN)?;
    let result = c.dma_map(
        DmaMapRequest::read_write(IOVA + 0x1000, LEN as u64),
        Some(other.as_fd()),
    );
    let errno = result.expect_err("overlap accepted").errno();
    assert!(matches!(errno, Some(e) if e != 0), "{errno:?}");
    Ok(())
}

#[test]
fn fdless_map_is_read_through_dma_read_requests() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let data = pattern(LEN, 5);
    let mut c = daemon
        .connect(VGPU_A)?
        .with_remote_memory(IOVA, data.clone());
    c.dma_map(DmaMapRequest::read_write(IOVA, LEN as u64), None)?;
    let status = c.run_dma(job(IOVA + 0x3000, 0, 0x4000, DMA_TO_VRAM))?;
    assert_eq!(status, 0);
    assert!(c.served().dma_reads >= 1, "{:?}", c.served());
    let bar0 = c.map_bar0()?;
    assert_eq!(&bar0.map[..0x4000], &data[0x3000..0x7000]);
    Ok(())
}

#[test]
fn fdless_map_is_written_through_dma_write_requests() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon
        .connect(VGPU_A)?
        .with_remote_memory(IOVA, vec![0; LEN]);
    c.dma_map(DmaMapRequest::read_write(IOVA, LEN as u64), None)?;
    let data = pattern(0x2000, 11);
    let mut bar0 = c.map_bar0()?;
    bar0.map[0x1000..0x3000].copy_from_slice(&data);
    let status = c.run_dma(job(IOVA + 0x100, 0x1000, 0x2000, DMA_FROM_VRAM))?;
    assert_eq!(status, 0);
    assert!(c.served().dma_writes >= 1, "{:?}", c.served());
    let remote = c.remote_memory().expect("remote memory");
    assert_eq!(&remote[0x100..0x2100], &data[..]);
    assert!(remote[..0x100].iter().all(|&b| b == 0));
    Ok(())
}

#[test]
fn fdless_read_the_client_refuses_reports_dma_failed() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    // The client serves only the first 4 KiB of the 64 KiB it mapped.
    let mut c = daemon
        .connect(VGPU_A)?
        .with_remote_memory(IOVA, vec![0x11; 4096]);
    c.dma_map(DmaMapRequest::read_write(IOVA, LEN as u64), None)?;
    let status = c.run_dma(job(IOVA + 0x8000, 0, 4096, DMA_TO_VRAM))?;
    assert_eq!(status, error_code::DMA_FAILED);
    assert!(c.served().refused >= 1, "{:?}", c.served());
    Ok(())
}
