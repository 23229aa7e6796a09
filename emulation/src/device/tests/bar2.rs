//! BAR2 registers and the region rules, through the device.

use super::*;
use crate::bar2::control::*;
use crate::bar2::dispi::*;
use crate::bar2::layout::*;
use crate::{DmaDirection, DmaRequest};

fn dispi_write(dev: &mut VgpuDevice, index: usize, value: u16) {
    assert!(
        dev.bar2_write(dispi_offset(index), 2, u64::from(value))
            .is_empty()
    );
}

fn dispi_read(dev: &mut VgpuDevice, index: usize) -> u16 {
    dev.bar2_read(dispi_offset(index), 2) as u16
}

/// The register sequence of Linux `bochs_hw_setmode`.
fn set_mode(dev: &mut VgpuDevice, width: u16, height: u16, bpp: u16) {
    dispi_write(dev, DISPI_INDEX_ENABLE, 0);
    dispi_write(dev, DISPI_INDEX_BPP, bpp);
    dispi_write(dev, DISPI_INDEX_XRES, width);
    dispi_write(dev, DISPI_INDEX_YRES, height);
    dispi_write(dev, DISPI_INDEX_BANK, 0);
    dispi_write(dev, DISPI_INDEX_VIRT_WIDTH, width);
    dispi_write(dev, DISPI_INDEX_VIRT_HEIGHT, height * 2);
    dispi_write(dev, DISPI_INDEX_X_OFFSET, 0);
    dispi_write(dev, DISPI_INDEX_Y_OFFSET, 0);
    dispi_write(dev, DISPI_INDEX_ENABLE, DISPI_ENABLED | DISPI_LFB_ENABLED);
}

#[test]
fn region_info_reports_all_nine_regions() {
    let dev = device();
    let rw = RegionFlags::READ | RegionFlags::WRITE;
    let bar0 = dev.region_info(RegionIndex::BAR0);
    assert_eq!(
        (bar0.size, bar0.flags.bits(), bar0.mmap_whole),
        (256 << 20, 7, true)
    );
    let bar2 = dev.region_info(RegionIndex::BAR2);
    assert_eq!(
        (bar2.size, bar2.flags, bar2.mmap_whole),
        (0x8000, rw, false)
    );
    let cfg = dev.region_info(RegionIndex::CONFIG);
    assert_eq!((cfg.size, cfg.flags), (4096, rw));
    for index in [1, 3, 4, 5, 6, 8] {
        let info = dev.region_info(RegionIndex::try_from(index).unwrap());
        assert_eq!(info, RegionInfo::ABSENT, "region {index}");
    }
}

#[test]
fn bar0_is_served_by_the_owner_and_empty_regions_refuse_access() {
    let mut dev = device();
    let mut buf = [0u8; 4];
    assert_eq!(
        dev.read(RegionIndex::BAR0, 0, &mut buf),
        Err(AccessError::NotEmulated(RegionIndex::BAR0))
    );
    assert_eq!(
        dev.write(RegionIndex::BAR0, 0, &buf),
        Err(AccessError::NotEmulated(RegionIndex::BAR0))
    );
    for region in [RegionIndex::BAR1, RegionIndex::ROM, RegionIndex::VGA] {
        assert_eq!(
            dev.read(region, 0, &mut buf),
            Err(AccessError::EmptyRegion(region))
        );
    }
    assert_eq!(AccessError::EmptyRegion(RegionIndex::VGA).errno(), 22);
}

#[test]
fn dispi_probe_sequence_as_linux_bochs() {
    let mut dev = device();
    // bochs_hw_init: ID, video memory, then (revision 2) the QEMU extended
    // registers, byte order, EDID header.
    let id = dispi_read(&mut dev, DISPI_INDEX_ID);
    assert_eq!(id & 0xfff0, 0xb0c0);
    assert_eq!(id, 0xb0c5);
    assert_eq!(
        u64::from(dispi_read(&mut dev, DISPI_INDEX_VIDEO_MEMORY_64K)) * 65536,
        256 << 20
    );
    assert_eq!(dev.bar2_read(QEXT_SIZE_OFFSET, 4), 8);
    dev.bar2_write(QEXT_BYTE_ORDER_OFFSET, 4, u64::from(BYTE_ORDER_LITTLE));
    assert_eq!(dev.bar2_read(QEXT_BYTE_ORDER_OFFSET, 4), 0x1e1e_1e1e);
    let header: Vec<u8> = (0..8).map(|o| dev.bar2_read(o, 1) as u8).collect();
    assert_eq!(header, crate::edid::EDID_HEADER);
    // bochs_hw_init writes the ID it wants, too.
    dispi_write(&mut dev, DISPI_INDEX_ID, 0xb0c0);
    assert_eq!(dispi_read(&mut dev, DISPI_INDEX_ID), 0xb0c0);
}

#[test]
fn dispi_getcaps_reads_the_maxima() {
    let mut dev = device();
    dispi_write(&mut dev, DISPI_INDEX_XRES, 800);
    dispi_write(&mut dev, DISPI_INDEX_ENABLE, DISPI_GETCAPS);
    assert_eq!(dispi_read(&mut dev, DISPI_INDEX_XRES), 1920);
    assert_eq!(dispi_read(&mut dev, DISPI_INDEX_YRES), 1080);
    assert_eq!(dispi_read(&mut dev, DISPI_INDEX_BPP), 32);
    dispi_write(&mut dev, DISPI_INDEX_ENABLE, 0);
    assert_eq!(dispi_read(&mut dev, DISPI_INDEX_XRES), 800);
    assert_eq!(dispi_read(&mut dev, DISPI_INDEX_BPP), 0);
}

#[test]
fn mode_set_sequence_yields_the_scanout_mode() {
    let mut dev = device();
    assert_eq!(dev.scanout(), None);
    set_mode(&mut dev, 1024, 768, 32);
    let mode = dev.scanout().unwrap();
    assert_eq!(
        mode,
        ScanoutMode {
            width: 1024,
            height: 768,
            bpp: 32,
            pitch: 4096,
            offset: 0,
            big_endian: false,
        }
    );
    assert_eq!(mode.format(), PixelFormat::Xrgb8888);
    set_mode(&mut dev, 800, 600, 16);
    let mode = dev.scanout().unwrap();
    assert_eq!((mode.pitch, mode.format()), (1600, PixelFormat::Rgb565));
}

#[test]
fn torn_and_invalid_modes_show_nothing() {
    let mut dev = device();
    set_mode(&mut dev, 1024, 768, 32);
    // Mid-way through the next mode set: disabled first.
    dispi_write(&mut dev, DISPI_INDEX_ENABLE, 0);
    assert_eq!(dev.scanout(), None);
    dispi_write(&mut dev, DISPI_INDEX_XRES, 1280);
    dispi_write(&mut dev, DISPI_INDEX_ENABLE, DISPI_ENABLED);
    assert_eq!(dev.scanout(), None, "virtual width 1024 < xres 1280");
    dispi_write(&mut dev, DISPI_INDEX_VIRT_WIDTH, 1280);
    assert!(dev.scanout().is_some());
    dispi_write(&mut dev, DISPI_INDEX_BPP, 8);
    assert_eq!(dev.scanout(), None, "8 bpp is not scanned out");
}

#[test]
fn flipping_with_the_offsets_moves_the_scanout_start() {
    let mut dev = device();
    set_mode(&mut dev, 1024, 768, 32);
    dispi_write(&mut dev, DISPI_INDEX_Y_OFFSET, 768);
    assert_eq!(dev.scanout().unwrap().offset, 768 * 4096);
    dispi_write(&mut dev, DISPI_INDEX_X_OFFSET, 16);
    assert_eq!(dev.scanout().unwrap().offset, 768 * 4096 + 64);
}

#[test]
fn frame_outside_vram_shows_nothing() {
    let mut dev = device();
    set_mode(&mut dev, 1920, 1080, 32);
    // 256 MiB holds 34952 whole 7680-byte lines; the frame needs 1080.
    dispi_write(&mut dev, DISPI_INDEX_Y_OFFSET, 34952 - 1080);
    assert!(dev.scanout().is_some());
    dispi_write(&mut dev, DISPI_INDEX_Y_OFFSET, 34952 - 1079);
    assert_eq!(dev.scanout(), None);
}

#[test]
fn byte_order_register_selects_big_endian_scanout() {
    let mut dev = device();
    set_mode(&mut dev, 640, 480, 32);
    dev.bar2_write(QEXT_BYTE_ORDER_OFFSET, 4, u64::from(BYTE_ORDER_BIG));
    assert!(dev.scanout().unwrap().big_endian);
    dev.bar2_write(QEXT_BYTE_ORDER_OFFSET, 4, 0x1234_5678);
    assert!(dev.scanout().unwrap().big_endian, "other values ignored");
    dev.bar2_write(QEXT_SIZE_OFFSET, 4, 0);
    assert_eq!(dev.bar2_read(QEXT_SIZE_OFFSET, 4), 8);
}

#[test]
fn edid_reads_byte_by_byte_then_zeros() {
    let mut dev = device();
    let bytes: Vec<u8> = (0..0x80).map(|o| dev.bar2_read(o, 1) as u8).collect();
    assert_eq!(bytes[..], dev.edid()[..]);
    let sum = bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    assert_eq!(sum, 0);
    dev.bar2_write(0x10, 8, u64::MAX);
    assert_eq!(
        dev.bar2_read(0x10, 8),
        u64::from_le_bytes(dev.edid()[0x10..0x18].try_into().unwrap())
    );
    assert_eq!(dev.bar2_read(0x80, 8), 0);
    assert_eq!(dev.bar2_read(0x3f8, 8), 0);
}

#[test]
fn vga_ports_read_back_except_input_status_1() {
    let mut dev = device();
    dev.bar2_write(VGA_PORTS_OFFSET, 1, 0x20);
    dev.bar2_write(VGA_PORTS_OFFSET + 0x18, 8, 0x0102_0304_0506_0708);
    assert_eq!(dev.bar2_read(VGA_PORTS_OFFSET, 1), 0x20);
    assert_eq!(
        dev.bar2_read(VGA_PORTS_OFFSET + 0x18, 8),
        0x0102_0304_0500_0708
    );
    assert_eq!(dev.bar2_read(VGA_INPUT_STATUS_1_OFFSET, 1), 0);
}

#[test]
fn control_block_identity_is_read_only() {
    let mut dev = device();
    let expect = [
        (CTRL_MAGIC, 0x5550_4776),
        (CTRL_VERSION, 0x0001_0000),
        (CTRL_VRAM_SIZE_LO, 0x1000_0000),
        (CTRL_VRAM_SIZE_HI, 0),
        (CTRL_CHANNELS, 7),
        (CTRL_MSIX_VECTORS, 8),
        (CTRL_MAX_RESOLUTION, 0x0438_0780),
    ];
    for (offset, value) in expect {
        assert_eq!(dev.bar2_read(offset, 4), value, "{offset:#x}");
        dev.bar2_write(offset, 4, 0xffff_ffff);
        assert_eq!(dev.bar2_read(offset, 4), value, "{offset:#x} after write");
    }
    let big = DeviceConfig {
        vram_size: 16 << 30,
        ..config()
    };
    let mut dev = VgpuDevice::new(big).unwrap();
    assert_eq!(dev.bar2_read(CTRL_VRAM_SIZE_LO, 8), 16 << 30);
}

#[test]
fn eight_byte_access_covers_two_control_registers() {
    let mut dev = device();
    assert_eq!(dev.bar2_read(CTRL_MAGIC, 8), 0x0001_0000_5550_4776);
    dev.bar2_write(CTRL_DMA_IOVA_LO, 8, 0x0000_0001_2345_6000);
    assert_eq!(dev.bar2_read(CTRL_DMA_IOVA_LO, 4), 0x2345_6000);
    assert_eq!(dev.bar2_read(CTRL_DMA_IOVA_HI, 4), 0x0000_0001);
    // Length and control in one write: the length lands first.
    dev.bar2_write(CTRL_DMA_VRAM_LO, 8, 0x2000);
    let effects = dev.bar2_write(CTRL_DMA_LENGTH, 8, (1 << 32) | 0x100);
    let dma = effects.dma.unwrap();
    assert_eq!(
        (dma.iova, dma.vram_offset, dma.len),
        (0x1_2345_6000, 0x2000, 0x100)
    );
}

#[test]
fn selftest_raises_the_chosen_vector_and_sets_status() {
    let mut dev = device();
    let effects = dev.bar2_write(CTRL_SELFTEST, 4, 5);
    assert_eq!(effects, Effects::vector(5), "raised despite IRQ_MASK = 0");
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), u64::from(IRQ_SELFTEST));
    assert_eq!(dev.bar2_read(CTRL_SELFTEST, 4), 0, "write-only");
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 0);
    assert_eq!(
        dev.bar2_write(CTRL_SELFTEST, 4, 7),
        Effects::vector(7),
        "last vector"
    );
}

#[test]
fn selftest_with_a_missing_vector_records_error_1() {
    let mut dev = device();
    let effects = dev.bar2_write(CTRL_SELFTEST, 4, 8);
    assert_eq!(effects, Effects::NONE, "ERROR is masked");
    assert_eq!(
        dev.bar2_read(CTRL_ERROR_CODE, 4),
        DeviceErrorCode::BadVector as u64
    );
    assert_eq!(dev.bar2_read(CTRL_ERROR_INFO, 4), 8);
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), u64::from(IRQ_ERROR));
    dev.bar2_write(CTRL_IRQ_MASK, 4, u64::from(IRQ_ERROR));
    assert_eq!(
        dev.bar2_write(CTRL_SELFTEST, 4, 0xffff_ffff),
        Effects::vector(0)
    );
}

#[test]
fn writing_error_code_clears_code_and_info() {
    let mut dev = device();
    dev.bar2_write(CTRL_SELFTEST, 4, 100);
    assert_ne!(dev.bar2_read(CTRL_ERROR_CODE, 4), 0);
    dev.bar2_write(CTRL_ERROR_CODE, 1, 0);
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 8), 0, "code and info");
    assert_eq!(
        dev.bar2_read(CTRL_IRQ_STATUS, 4),
        u64::from(IRQ_ERROR),
        "status is W1C, separately"
    );
}

#[test]
fn irq_status_bits_clear_by_writing_one() {
    let mut dev = device();
    dev.bar2_write(CTRL_SELFTEST, 4, 0);
    dev.bar2_write(CTRL_SELFTEST, 4, 99);
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), 0b11);
    dev.bar2_write(CTRL_IRQ_STATUS, 4, 0);
    assert_eq!(
        dev.bar2_read(CTRL_IRQ_STATUS, 4),
        0b11,
        "0 leaves bits alone"
    );
    dev.bar2_write(CTRL_IRQ_STATUS, 4, u64::from(IRQ_SELFTEST));
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), u64::from(IRQ_ERROR));
    dev.bar2_write(CTRL_IRQ_STATUS, 4, 0xffff_ffff);
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), 0);
}

#[test]
fn irq_mask_holds_four_bits_and_gates_vector_0() {
    let mut dev = device();
    dev.bar2_write(CTRL_IRQ_MASK, 4, 0xffff_ffff);
    assert_eq!(dev.bar2_read(CTRL_IRQ_MASK, 4), 0xf);
    assert_eq!(dev.bar2_write(CTRL_DMA_CONTROL, 4, 9), Effects::vector(0));
    dev.bar2_write(CTRL_IRQ_MASK, 4, u64::from(IRQ_DMA_DONE));
    assert_eq!(
        dev.bar2_write(CTRL_DMA_CONTROL, 4, 9),
        Effects::NONE,
        "ERROR masked"
    );
}

fn program_dma(dev: &mut VgpuDevice, iova: u64, vram: u64, len: u32) {
    dev.bar2_write(CTRL_DMA_IOVA_LO, 8, iova);
    dev.bar2_write(CTRL_DMA_VRAM_LO, 8, vram);
    dev.bar2_write(CTRL_DMA_LENGTH, 4, u64::from(len));
}

#[test]
fn dma_registers_read_back() {
    let mut dev = device();
    program_dma(&mut dev, 0xdead_beef_0000, 0x1234, 77);
    assert_eq!(dev.bar2_read(CTRL_DMA_IOVA_LO, 8), 0xdead_beef_0000);
    assert_eq!(dev.bar2_read(CTRL_DMA_VRAM_LO, 8), 0x1234);
    assert_eq!(dev.bar2_read(CTRL_DMA_LENGTH, 4), 77);
    assert_eq!(dev.bar2_read(CTRL_DMA_CONTROL, 4), 0, "write-only");
}

#[test]
fn dma_length_outside_1_to_1_mib_is_refused_without_a_request() {
    let mut dev = device();
    for (len, count) in [(0, 1), (DMA_MAX_LENGTH + 1, 2)] {
        program_dma(&mut dev, 0x1000, 0, len);
        let effects = dev.bar2_write(CTRL_DMA_CONTROL, 4, 1);
        assert_eq!(effects.dma, None);
        assert_eq!(dev.bar2_read(CTRL_DMA_STATUS, 4), 2);
        assert_eq!(dev.bar2_read(CTRL_DMA_COUNT, 4), count);
        assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 2);
        assert_eq!(
            dev.bar2_read(CTRL_ERROR_INFO, 4),
            u64::from(len),
            "first error kept"
        );
        dev.bar2_write(CTRL_ERROR_CODE, 4, 0);
    }
    assert_eq!(
        dev.bar2_read(CTRL_IRQ_STATUS, 4),
        u64::from(IRQ_ERROR | IRQ_DMA_DONE)
    );
    program_dma(&mut dev, 0x1000, 0, DMA_MAX_LENGTH);
    assert!(dev.bar2_write(CTRL_DMA_CONTROL, 4, 1).dma.is_some());
}

#[test]
fn dma_outside_the_vram_slice_is_refused_without_a_request() {
    let mut dev = device();
    let vram = 256u64 << 20;
    program_dma(&mut dev, 0x1000, vram - 16, 32);
    assert_eq!(dev.bar2_write(CTRL_DMA_CONTROL, 4, 2).dma, None);
    assert_eq!(dev.bar2_read(CTRL_DMA_STATUS, 4), 3);
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 3);
    assert_eq!(dev.bar2_read(CTRL_ERROR_INFO, 4), vram - 16);
    program_dma(&mut dev, 0x1000, vram - 32, 32);
    assert!(
        dev.bar2_write(CTRL_DMA_CONTROL, 4, 2).dma.is_some(),
        "ends exactly at the slice end"
    );
}

#[test]
fn dma_control_other_than_1_or_2_records_error_7() {
    let mut dev = device();
    program_dma(&mut dev, 0x1000, 0, 16);
    assert_eq!(dev.bar2_write(CTRL_DMA_CONTROL, 4, 3), Effects::NONE);
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 7);
    assert_eq!(dev.bar2_read(CTRL_ERROR_INFO, 4), 3);
    assert_eq!(
        dev.bar2_read(CTRL_IRQ_STATUS, 4),
        u64::from(IRQ_ERROR),
        "no DMA ran"
    );
    assert_eq!(dev.bar2_read(CTRL_DMA_COUNT, 4), 0);
}

#[test]
fn dma_control_emits_a_request_in_either_direction() {
    let mut dev = device();
    program_dma(&mut dev, 0x8_0000_1000, 0x40_0000, 4096);
    let to_vram = dev.bar2_write(CTRL_DMA_CONTROL, 4, 1);
    assert_eq!(
        to_vram.dma,
        Some(DmaRequest {
            direction: DmaDirection::ToVram,
            iova: 0x8_0000_1000,
            vram_offset: 0x40_0000,
            len: 4096,
        })
    );
    assert_eq!(to_vram.vectors, 0);
    dev.complete_dma(Ok(()));
    let from_vram = dev.bar2_write(CTRL_DMA_CONTROL, 4, 2).dma.unwrap();
    assert_eq!(from_vram.direction, DmaDirection::FromVram);
}

#[test]
fn completed_dma_sets_status_count_and_done() {
    let mut dev = device();
    program_dma(&mut dev, 0x1000, 0, 16);
    dev.bar2_write(CTRL_DMA_CONTROL, 4, 1);
    assert_eq!(dev.complete_dma(Ok(())), Effects::NONE, "DMA_DONE masked");
    assert_eq!(dev.bar2_read(CTRL_DMA_STATUS, 4), 0);
    assert_eq!(dev.bar2_read(CTRL_DMA_COUNT, 4), 1);
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), u64::from(IRQ_DMA_DONE));
    assert_eq!(
        dev.complete_dma(Ok(())),
        Effects::NONE,
        "nothing outstanding"
    );
    assert_eq!(dev.bar2_read(CTRL_DMA_COUNT, 4), 1);

    dev.bar2_write(CTRL_IRQ_MASK, 4, u64::from(IRQ_DMA_DONE));
    dev.bar2_write(CTRL_DMA_CONTROL, 4, 1);
    assert_eq!(dev.complete_dma(Ok(())), Effects::vector(0));
    assert_eq!(dev.bar2_read(CTRL_DMA_COUNT, 4), 2);
}

#[test]
fn failed_dma_reports_the_fault_code() {
    let cases = [
        (DmaFault::NotMapped, 4),
        (DmaFault::ReadOnly, 5),
        (DmaFault::Failed, 6),
    ];
    for (fault, code) in cases {
        let mut dev = device();
        dev.bar2_write(CTRL_IRQ_MASK, 4, u64::from(IRQ_ERROR));
        program_dma(&mut dev, 0x7_0000_2000, 0, 16);
        dev.bar2_write(CTRL_DMA_CONTROL, 4, 2);
        assert_eq!(dev.complete_dma(Err(fault)), Effects::vector(0));
        assert_eq!(dev.bar2_read(CTRL_DMA_STATUS, 4), code);
        assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), code);
        assert_eq!(
            dev.bar2_read(CTRL_ERROR_INFO, 4),
            0x2000,
            "IOVA, low 32 bits"
        );
        assert_eq!(
            dev.bar2_read(CTRL_IRQ_STATUS, 4),
            u64::from(IRQ_ERROR | IRQ_DMA_DONE)
        );
        assert_eq!(dev.bar2_read(CTRL_DMA_COUNT, 4), 1);
    }
}

#[test]
fn reset_drops_an_outstanding_dma() {
    let mut dev = device();
    program_dma(&mut dev, 0x1000, 0, 16);
    dev.bar2_write(CTRL_DMA_CONTROL, 4, 1);
    dev.reset();
    assert_eq!(dev.complete_dma(Ok(())), Effects::NONE);
    assert_eq!(dev.bar2_read(CTRL_DMA_COUNT, 4), 0);
}

#[test]
fn msix_table_stores_entries_and_pba_reads_zero() {
    let mut dev = device();
    assert_eq!(
        dev.bar2_read(MSIX_TABLE_OFFSET + 0x0c, 4),
        1,
        "masked at reset"
    );
    let entry = MSIX_TABLE_OFFSET + 7 * 16;
    dev.bar2_write(entry, 8, 0xfee0_1000);
    dev.bar2_write(entry + 8, 8, 0x0000_0000_0000_4041);
    assert_eq!(dev.bar2_read(entry, 8), 0xfee0_1000);
    assert_eq!(dev.bar2_read(entry + 8, 8), 0x4041);
    let got = dev.msix_entry(7).unwrap();
    assert_eq!(
        (got.address, got.data, got.control),
        (0xfee0_1000, 0x4041, 0)
    );
    dev.bar2_write(MSIX_TABLE_OFFSET + 8 * 16, 4, 0xffff_ffff);
    assert_eq!(
        dev.bar2_read(MSIX_TABLE_OFFSET + 8 * 16, 4),
        0,
        "no vector 8"
    );
    dev.bar2_write(MSIX_PBA_OFFSET, 8, u64::MAX);
    assert_eq!(dev.bar2_read(MSIX_PBA_OFFSET, 8), 0);
}

#[test]
fn reserved_bar2_offsets_read_zero_and_ignore_writes() {
    let mut dev = device();
    let reserved = [
        (0x420, 8),
        (0x516, 2),
        (0x608, 8),
        (0x101c, 4),
        (0x1034, 4),
        (0x1074, 4),
        (0x10ac, 4),
        (0x10b0, 8),
        (0x10f8, 8),
        (0x1108, 8),
        (0x18f8, 8),
        (0x1900, 8),
        (0x2400, 8),
        (0x3008, 8),
        (0x3ff8, 8),
    ];
    for (offset, len) in reserved {
        dev.bar2_write(offset, len, u64::MAX);
        assert_eq!(dev.bar2_read(offset, len), 0, "{offset:#x}");
    }
}

#[test]
fn bar2_refuses_bad_lengths_misalignment_and_out_of_range() {
    let mut dev = device();
    let bar2 = RegionIndex::BAR2;
    for len in [0, 3, 5, 16] {
        let data = vec![0u8; len];
        assert_eq!(
            dev.write(bar2, 0x1000, &data),
            Err(AccessError::BadLength { region: bar2, len })
        );
    }
    for (offset, len) in [(0x1032, 4), (0x1031, 2), (0x1004, 8)] {
        let data = vec![0u8; len];
        assert_eq!(
            dev.write(bar2, offset, &data),
            Err(AccessError::Misaligned {
                region: bar2,
                offset,
                len
            })
        );
    }
    for (offset, len) in [(0x8000, 1), (0x7ffc, 8), (u64::MAX, 1), (u64::MAX - 7, 8)] {
        let mut data = vec![0u8; len];
        assert!(matches!(
            dev.read(bar2, offset, &mut data),
            Err(AccessError::OutOfRange { .. })
        ));
    }
    assert!(dev.read(bar2, 0x7ff8, &mut [0; 8]).is_ok());
}

#[test]
fn refused_bar2_writes_change_nothing() {
    let mut dev = device();
    let before = super::props::snapshot(&mut dev);
    let bar2 = RegionIndex::BAR2;
    assert!(dev.write(bar2, 0x1032, &1u32.to_le_bytes()).is_err());
    assert!(dev.write(bar2, 0x1030, &[1, 0, 0]).is_err());
    assert!(dev.write(bar2, 0x1054, &[1; 16]).is_err());
    assert!(dev.write(RegionIndex::CONFIG, 0xffe, &[0xff; 4]).is_err());
    assert_eq!(super::props::snapshot(&mut dev), before);
}
