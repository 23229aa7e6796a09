//! BAR2 registers: EDID, VBE DISPI, the QEMU extended block and the vGPU
//! control block.

use vgpud_tests::config::{STANDARD_CHANNELS, STANDARD_FRAMEBUFFER, STANDARD_MAX_RESOLUTION};
use vgpud_tests::regs::bar2::*;
use vgpud_tests::regs::{error_code, region};
use vgpud_tests::{RawClient, TestDaemon, VGPU_A};

fn connect() -> anyhow::Result<(TestDaemon, RawClient)> {
    let daemon = TestDaemon::standard()?;
    let client = daemon.connect(VGPU_A)?;
    Ok((daemon, client))
}

fn read_bar2(c: &mut RawClient, offset: u64, len: u64) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for at in (offset..offset + len).step_by(8) {
        bytes.extend_from_slice(&c.region_read(region::BAR2, at, 8)?);
    }
    Ok(bytes)
}

#[test]
fn dispi_id_and_video_memory_match_the_slice() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    assert_eq!(c.dispi_read(DISPI_ID)?, DISPI_ID_VALUE);
    assert_eq!(
        u64::from(c.dispi_read(DISPI_VIDEO_MEMORY_64K)?),
        STANDARD_FRAMEBUFFER / (64 << 10)
    );
    c.dispi_write(DISPI_VIDEO_MEMORY_64K, 1)?;
    assert_eq!(
        u64::from(c.dispi_read(DISPI_VIDEO_MEMORY_64K)?),
        STANDARD_FRAMEBUFFER / (64 << 10),
        "read-only"
    );
    Ok(())
}

#[test]
fn dispi_id_stores_only_known_versions() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    c.dispi_write(DISPI_ID, 0xb0c0)?;
    assert_eq!(c.dispi_read(DISPI_ID)?, 0xb0c0);
    c.dispi_write(DISPI_ID, 0x1234)?;
    assert_eq!(c.dispi_read(DISPI_ID)?, 0xb0c0);
    Ok(())
}

#[test]
fn dispi_mode_set_reads_back_as_written() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    // The order Linux's bochs driver uses.
    let mode = [
        (DISPI_ENABLE, 0),
        (DISPI_BPP, 32),
        (DISPI_XRES, 1024),
        (DISPI_YRES, 768),
        (DISPI_BANK, 0),
        (DISPI_VIRT_WIDTH, 1024),
        (DISPI_VIRT_HEIGHT, 768),
        (DISPI_X_OFFSET, 0),
        (DISPI_Y_OFFSET, 0),
        (DISPI_ENABLE, 0x41),
    ];
    for (index, value) in mode {
        c.dispi_write(index, value)?;
    }
    for (index, value) in &mode[1..] {
        assert_eq!(c.dispi_read(*index)?, *value, "DISPI index {index}");
    }
    Ok(())
}

#[test]
fn dispi_ignores_resolutions_and_depths_out_of_range() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let (width, height) = STANDARD_MAX_RESOLUTION;
    c.dispi_write(DISPI_XRES, 800)?;
    c.dispi_write(DISPI_XRES, width as u16 + 1)?;
    assert_eq!(c.dispi_read(DISPI_XRES)?, 800);
    c.dispi_write(DISPI_YRES, 600)?;
    c.dispi_write(DISPI_YRES, height as u16 + 1)?;
    assert_eq!(c.dispi_read(DISPI_YRES)?, 600);
    c.dispi_write(DISPI_BPP, 16)?;
    c.dispi_write(DISPI_BPP, 12)?;
    assert_eq!(c.dispi_read(DISPI_BPP)?, 16);
    Ok(())
}

#[test]
fn dispi_getcaps_reports_the_maximum_mode() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    c.dispi_write(DISPI_ENABLE, DISPI_ENABLE_GETCAPS)?;
    let (width, height) = STANDARD_MAX_RESOLUTION;
    assert_eq!(u32::from(c.dispi_read(DISPI_XRES)?), width);
    assert_eq!(u32::from(c.dispi_read(DISPI_YRES)?), height);
    assert_eq!(c.dispi_read(DISPI_BPP)?, 32);
    Ok(())
}

#[test]
fn edid_has_a_valid_checksum_and_the_profile_preferred_mode() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    // BAR2 takes accesses of at most 8 bytes.
    let edid = read_bar2(&mut c, EDID, 128)?;
    assert_eq!(&edid[0..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    let sum = edid.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
    assert_eq!(sum, 0, "checksum");
    let manufacturer = u16::from_be_bytes([edid[8], edid[9]]);
    let letters: String = [10, 5, 0]
        .iter()
        .map(|shift| char::from(b'A' - 1 + ((manufacturer >> shift) & 0x1f) as u8))
        .collect();
    assert_eq!(letters, "VGD");
    assert_eq!((edid[0x12], edid[0x13]), (1, 4), "EDID 1.4");
    // First detailed timing descriptor: the preferred mode.
    let dtd = &edid[54..72];
    assert_ne!(u16::from_le_bytes([dtd[0], dtd[1]]), 0, "pixel clock");
    let h_active = u32::from(dtd[2]) | (u32::from(dtd[4] >> 4) << 8);
    let v_active = u32::from(dtd[5]) | (u32::from(dtd[7] >> 4) << 8);
    assert_eq!((h_active, v_active), STANDARD_MAX_RESOLUTION);
    // The rest of the EDID window reads zero.
    let rest = read_bar2(&mut c, EDID + 128, 0x400 - 128)?;
    assert!(rest.iter().all(|&b| b == 0));
    Ok(())
}

#[test]
fn extended_block_reports_its_size_and_byte_order() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    assert_eq!(c.bar2_read32(EXT_SIZE)?, 8);
    assert_eq!(c.bar2_read32(EXT_BYTE_ORDER)?, BYTE_ORDER_LE);
    c.bar2_write32(EXT_BYTE_ORDER, 0xbebe_bebe)?;
    assert_eq!(c.bar2_read32(EXT_BYTE_ORDER)?, 0xbebe_bebe);
    c.bar2_write32(EXT_BYTE_ORDER, 0x1234_5678)?;
    assert_eq!(c.bar2_read32(EXT_BYTE_ORDER)?, 0xbebe_bebe);
    Ok(())
}

#[test]
fn control_block_describes_the_profile() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    assert_eq!(c.bar2_read32(MAGIC)?, MAGIC_VALUE);
    assert_eq!(c.bar2_read32(VERSION)?, VERSION_VALUE);
    assert_eq!(
        c.read_reg(region::BAR2, VRAM_SIZE_LO, 8)?,
        STANDARD_FRAMEBUFFER
    );
    assert_eq!(c.bar2_read32(CHANNELS)?, STANDARD_CHANNELS);
    assert_eq!(c.bar2_read32(MSIX_VECTORS)?, STANDARD_CHANNELS + 1);
    let (width, height) = STANDARD_MAX_RESOLUTION;
    assert_eq!(c.bar2_read32(MAX_RESOLUTION)?, width | height << 16);
    c.bar2_write32(MAGIC, 0)?;
    assert_eq!(c.bar2_read32(MAGIC)?, MAGIC_VALUE, "read-only");
    Ok(())
}

#[test]
fn irq_mask_keeps_only_its_four_bits() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    assert_eq!(c.bar2_read32(IRQ_MASK)?, 0);
    c.bar2_write32(IRQ_MASK, 0xffff_ffff)?;
    assert_eq!(
        c.bar2_read32(IRQ_MASK)?,
        0xf,
        "SELFTEST, ERROR, DMA_DONE, FAULT"
    );
    Ok(())
}

#[test]
fn selftest_of_a_missing_vector_records_bad_vector_until_acknowledged() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    c.bar2_write32(SELFTEST, STANDARD_CHANNELS + 1)?;
    assert_eq!(c.bar2_read32(ERROR_CODE)?, error_code::BAD_VECTOR);
    assert_eq!(c.bar2_read32(SELFTEST)?, 0, "write-only");
    c.bar2_write32(ERROR_CODE, 0)?;
    assert_eq!(c.bar2_read32(ERROR_CODE)?, 0);
    assert_eq!(c.bar2_read32(ERROR_INFO)?, 0);
    Ok(())
}

#[test]
fn vga_port_registers_store_bytes_and_input_status_reads_zero() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    c.write_reg(region::BAR2, VGA_PORTS + 2, 1, 0xa5)?;
    assert_eq!(c.read_reg(region::BAR2, VGA_PORTS + 2, 1)?, 0xa5);
    c.write_reg(region::BAR2, VGA_PORTS + 0x1a, 1, 0xff)?;
    assert_eq!(c.read_reg(region::BAR2, VGA_PORTS + 0x1a, 1)?, 0);
    Ok(())
}

#[test]
fn posted_write_is_applied_before_the_next_reply() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    c.region_write_posted(region::BAR2, IRQ_MASK, &5u32.to_le_bytes())?;
    assert_eq!(c.bar2_read32(IRQ_MASK)?, 5);
    Ok(())
}
