//! `DEVICE_RESET` and client disconnects: registers back to reset values,
//! VRAM cleared, triggers unassigned; DMA maps kept by a reset and dropped
//! by a disconnect.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use vgpud_tests::device::DmaJob;
use vgpud_tests::host::pattern;
use vgpud_tests::regs::bar2::*;
use vgpud_tests::regs::config::{BAR0_LO, COMMAND};
use vgpud_tests::regs::{error_code, region};
use vgpud_tests::wire::irq_index;
use vgpud_tests::{DmaMapRequest, EventFd, GuestMemory, RawClient, TestDaemon, VGPU_A};

const IOVA: u64 = 0x8000_0000;

/// Changes state everywhere a reset must restore.
fn dirty(c: &mut RawClient) -> anyhow::Result<()> {
    c.dispi_write(DISPI_XRES, 800)?;
    c.dispi_write(DISPI_ENABLE, 0x41)?;
    c.bar2_write32(IRQ_MASK, 7)?;
    c.bar2_write32(EXT_BYTE_ORDER, 0xbebe_bebe)?;
    c.bar2_write32(MSIX_TABLE + 8, 0x1234)?;
    c.bar2_write32(SELFTEST, 99)?;
    c.config_write(COMMAND, 2, 0x6)?;
    c.config_write(BAR0_LO, 4, 0xf000_0000)?;
    c.region_write(region::BAR0, 0x1000, &pattern(4096, 3))?;
    Ok(())
}

fn assert_reset_values(c: &mut RawClient) -> anyhow::Result<()> {
    assert_eq!(c.dispi_read(DISPI_XRES)?, 0);
    assert_eq!(c.dispi_read(DISPI_ENABLE)?, 0);
    assert_eq!(c.bar2_read32(IRQ_MASK)?, 0);
    assert_eq!(c.bar2_read32(IRQ_STATUS)?, 0);
    assert_eq!(c.bar2_read32(ERROR_CODE)?, 0);
    assert_eq!(c.bar2_read32(EXT_BYTE_ORDER)?, BYTE_ORDER_LE);
    assert_eq!(c.bar2_read32(MSIX_TABLE + 8)?, 0, "MSI-X data");
    assert_eq!(c.bar2_read32(MSIX_TABLE + 12)?, 1, "MSI-X vector masked");
    assert_eq!(c.config_read(COMMAND, 2)?, 0);
    assert_eq!(c.config_read(BAR0_LO, 4)?, 0xc);
    let vram = c.region_read(region::BAR0, 0, 0x4000)?;
    assert!(vram.iter().all(|&b| b == 0), "VRAM cleared");
    Ok(())
}

#[test]
fn device_reset_restores_registers_and_clears_vram() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    dirty(&mut c)?;
    let bar0 = c.map_bar0()?;
    c.reset()?;
    assert_reset_values(&mut c)?;
    assert!(bar0.map.iter().all(|&b| b == 0), "VRAM cleared (mmap view)");
    Ok(())
}

#[test]
fn device_reset_unassigns_interrupt_triggers() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let vector0 = EventFd::new()?;
    c.assign_irq_eventfds(irq_index::MSIX, 0, 1, &[vector0.as_fd()])?;
    c.reset()?;
    c.bar2_write32(SELFTEST, 0)?;
    assert_eq!(vector0.wait(Duration::from_millis(200))?, 0);
    Ok(())
}

#[test]
fn device_reset_keeps_dma_maps() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let memory = GuestMemory::new(4096)?;
    c.dma_map(DmaMapRequest::read_write(IOVA, 4096), Some(memory.as_fd()))?;
    c.reset()?;
    let status = c.run_dma(DmaJob {
        iova: IOVA,
        vram_offset: 0,
        length: 4096,
        control: DMA_TO_VRAM,
    })?;
    assert_eq!(status, 0);
    Ok(())
}

/// Connects, retrying while the daemon still resets after a disconnect.
fn reconnect(daemon: &TestDaemon) -> anyhow::Result<RawClient> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match daemon.connect(VGPU_A) {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => return Err(error),
        }
    }
}

#[test]
fn reconnecting_client_gets_a_reset_device_without_dma_maps() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let memory = GuestMemory::new(4096)?;
    {
        let mut c = daemon.connect(VGPU_A)?;
        c.dma_map(DmaMapRequest::read_write(IOVA, 4096), Some(memory.as_fd()))?;
        dirty(&mut c)?;
    }
    let mut c = reconnect(&daemon)?;
    assert_reset_values(&mut c)?;
    let status = c.run_dma(DmaJob {
        iova: IOVA,
        vram_offset: 0,
        length: 4096,
        control: DMA_TO_VRAM,
    })?;
    assert_eq!(status, error_code::DMA_NOT_MAPPED, "maps released");
    Ok(())
}
