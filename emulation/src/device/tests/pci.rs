//! Config space, register by register, as the contract tables list it.

use super::*;
use crate::pci::capabilities::*;
use crate::pci::header::*;

#[test]
fn identity_registers_match_the_contract() {
    let mut dev = device();
    assert_eq!(dev.cfg_read(0x00, 2), 0x1234);
    assert_eq!(dev.cfg_read(0x02, 2), 0x1111);
    assert_eq!(dev.cfg_read(0x08, 1), 0x02, "revision");
    assert_eq!(dev.cfg_read(0x09, 1), 0x00, "programming interface");
    assert_eq!(dev.cfg_read(0x0a, 2), 0x0380, "display controller, other");
    assert_eq!(dev.cfg_read(0x0e, 1), 0, "type 0 header, single function");
    assert_eq!(dev.cfg_read(0x2c, 2), 0x1af4);
    assert_eq!(dev.cfg_read(0x2e, 2), 0x1100);
    assert_eq!(dev.cfg_read(0x3d, 1), 1, "INTA#");
    assert_eq!(dev.cfg_read(0x34, 1), 0x40);
}

#[test]
fn read_only_header_registers_ignore_writes() {
    let mut dev = device();
    let before: Vec<u64> = (0..0x40).step_by(4).map(|o| dev.cfg_read(o, 4)).collect();
    for offset in [0x00, 0x08, 0x0c, 0x2c, 0x30, 0x34, 0x3c] {
        dev.cfg_write(offset, 4, 0xffff_ffff);
        dev.cfg_write(offset, 4, 0);
    }
    let after: Vec<u64> = (0..0x40).step_by(4).map(|o| dev.cfg_read(o, 4)).collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let offset = i * 4;
        // Cache line size (0x0c) and interrupt line (0x3c) are the RW bytes.
        let rw: u64 = match offset {
            0x0c => 0xff,
            0x3c => 0xff,
            _ => 0,
        };
        assert_eq!(b & !rw, a & !rw, "dword {offset:#x}");
    }
    assert_eq!(dev.cfg_read(0x0d, 1), 0, "latency timer is RO");
}

#[test]
fn cache_line_size_and_interrupt_line_are_writable() {
    let mut dev = device();
    dev.cfg_write(0x0c, 1, 0x10);
    dev.cfg_write(0x3c, 1, 0x0b);
    assert_eq!(dev.cfg_read(0x0c, 1), 0x10);
    assert_eq!(dev.cfg_read(0x3c, 2), 0x010b);
}

#[test]
fn command_register_takes_only_its_writable_bits() {
    let mut dev = device();
    assert_eq!(dev.cfg_read(0x04, 2), 0);
    dev.cfg_write(0x04, 2, 0xffff);
    assert_eq!(dev.cfg_read(0x04, 2), 0x0546);
    assert!(dev.intx_disabled());
    dev.cfg_write(0x04, 2, 0x0001);
    assert_eq!(dev.cfg_read(0x04, 2), 0, "no I/O space");
    assert!(!dev.intx_disabled());
}

#[test]
fn status_keeps_the_capability_bit_and_reflects_intx() {
    let mut dev = device();
    assert_eq!(dev.cfg_read(0x06, 2), 0x0010);
    dev.set_intx_asserted(true);
    assert_eq!(dev.cfg_read(0x06, 2), 0x0018);
    // Writing ones: the W1C bits are clear already, bits 3 and 4 are RO.
    dev.cfg_write(0x06, 2, 0xffff);
    assert_eq!(dev.cfg_read(0x06, 2), 0x0018);
    dev.cfg_write(0x04, 4, 0xffff_0000);
    assert_eq!(
        dev.cfg_read(0x06, 2),
        0x0018,
        "a dword write to command/status"
    );
    dev.set_intx_asserted(false);
    assert_eq!(dev.cfg_read(0x06, 2), 0x0010);
}

#[test]
fn status_w1c_mask_is_the_error_bits() {
    // The device never sets the error bits itself; the table says which
    // bits a write of 1 clears.
    let specs = header(HeaderParams {
        vram_size: 1 << 20,
        subsystem_vendor_id: 0,
        subsystem_id: 0,
        capabilities: 0x40,
    });
    let status = specs.iter().find(|r| r.offset == PCI_STATUS).unwrap();
    assert_eq!(
        (status.reset, status.writable, status.w1c),
        (0x0010, 0, 0xf900)
    );
}

#[test]
fn bar0_sizes_as_a_64_bit_bar_across_both_halves() {
    let mut dev = device();
    assert_eq!(dev.cfg_read(0x10, 4), 0x0000_000c);
    dev.cfg_write(0x10, 4, 0xffff_ffff);
    dev.cfg_write(0x14, 4, 0xffff_ffff);
    let size_mask = dev.cfg_read(0x10, 4) | (dev.cfg_read(0x14, 4) << 32);
    assert_eq!(size_mask, 0xffff_ffff_f000_000c);
    assert_eq!(!(size_mask & !0xf) + 1, 256 << 20);

    let big = DeviceConfig {
        vram_size: 64 << 30,
        ..config()
    };
    let mut dev = VgpuDevice::new(big).unwrap();
    dev.cfg_write(0x10, 8, u64::MAX);
    assert_eq!(dev.cfg_read(0x10, 4), 0x0000_000c);
    assert_eq!(dev.cfg_read(0x14, 4), 0xffff_fff0);
}

#[test]
fn bar0_takes_a_64_bit_address_aligned_to_its_size() {
    let mut dev = device();
    dev.cfg_write(0x10, 4, 0xe123_4567);
    dev.cfg_write(0x14, 4, 0x0000_0080);
    assert_eq!(dev.cfg_read(0x10, 4), 0xe000_000c);
    assert_eq!(dev.cfg_read(0x14, 4), 0x0000_0080);
}

#[test]
fn bar2_sizes_as_32_kib_32_bit_bar() {
    let mut dev = device();
    dev.cfg_write(0x18, 4, 0xffff_ffff);
    assert_eq!(dev.cfg_read(0x18, 4), 0xffff_8000);
    dev.cfg_write(0x18, 4, 0xfebf_4321);
    assert_eq!(dev.cfg_read(0x18, 4), 0xfebf_0000);
}

#[test]
fn unused_bars_and_rom_read_zero_after_all_ones_write() {
    let mut dev = device();
    for offset in [0x1c, 0x20, 0x24, 0x30] {
        dev.cfg_write(offset, 4, 0xffff_ffff);
        assert_eq!(dev.cfg_read(offset, 4), 0, "{offset:#x}");
    }
}

#[test]
fn capability_list_walks_pm_msi_msix_pcie_vendor() {
    let mut dev = device();
    let mut found = Vec::new();
    let mut next = dev.cfg_read(0x34, 1);
    while next != 0 {
        assert!(
            (0x40..0x100).contains(&next),
            "{next:#x} outside 0x40..0x100"
        );
        assert_eq!(next % 4, 0);
        assert!(found.len() < 8, "list does not terminate");
        found.push((next, dev.cfg_read(next, 1)));
        next = dev.cfg_read(next + 1, 1);
    }
    assert_eq!(
        found,
        vec![
            (0x40, 0x01),
            (0x50, 0x05),
            (0x70, 0x11),
            (0x80, 0x10),
            (0xc0, 0x09)
        ]
    );
}

#[test]
fn capability_headers_are_read_only() {
    let mut dev = device();
    for offset in [0x40, 0x50, 0x70, 0x80, 0xc0] {
        let before = dev.cfg_read(offset, 2);
        dev.cfg_write(offset, 2, 0);
        assert_eq!(dev.cfg_read(offset, 2), before);
    }
}

#[test]
fn pm_accepts_d3hot_and_ignores_d1_d2() {
    let mut dev = device();
    assert_eq!(
        dev.cfg_read(0x42, 2),
        0x0003,
        "PMC: version 3, no D1/D2, no PME"
    );
    assert_eq!(dev.cfg_read(0x44, 2), 0x0008, "D0, No_Soft_Reset");
    dev.cfg_write(0x44, 2, 0x0003);
    assert_eq!(dev.cfg_read(0x44, 2), 0x000b);
    dev.cfg_write(0x44, 2, 0x0001);
    assert_eq!(dev.cfg_read(0x44, 2), 0x000b, "D1 ignored");
    dev.cfg_write(0x44, 2, 0x0002);
    assert_eq!(dev.cfg_read(0x44, 2), 0x000b, "D2 ignored");
    dev.cfg_write(0x44, 2, 0xfff0);
    assert_eq!(
        dev.cfg_read(0x44, 4),
        0x0000_0008,
        "back to D0; other bits RO"
    );
}

#[test]
fn msi_registers_follow_their_writable_masks() {
    let mut dev = device();
    assert_eq!(dev.cfg_read(0x52, 2), 0x0180);
    dev.cfg_write(0x52, 2, 0xffff);
    assert_eq!(dev.cfg_read(0x52, 2), 0x0181, "only enable is writable");
    dev.cfg_write(0x54, 4, 0xffff_ffff);
    assert_eq!(dev.cfg_read(0x54, 4), 0xffff_fffc);
    dev.cfg_write(0x58, 4, 0xffff_ffff);
    assert_eq!(dev.cfg_read(0x58, 4), 0xffff_ffff);
    dev.cfg_write(0x5c, 4, 0xffff_ffff);
    assert_eq!(dev.cfg_read(0x5c, 4), 0x0000_ffff);
    dev.cfg_write(0x60, 4, 0xffff_ffff);
    assert_eq!(dev.cfg_read(0x60, 4), 1);
    dev.cfg_write(0x64, 4, 0xffff_ffff);
    assert_eq!(dev.cfg_read(0x64, 4), 0, "pending is RO");
}

#[test]
fn msix_capability_reports_table_size_and_locations() {
    let mut dev = device();
    assert_eq!(dev.cfg_read(0x72, 2), 7, "8 vectors, N-1 encoded");
    dev.cfg_write(0x72, 2, 0xffff);
    assert_eq!(dev.cfg_read(0x72, 2), 0xc007, "function mask and enable");
    dev.cfg_write(0x72, 2, 0);
    assert_eq!(dev.cfg_read(0x72, 2), 7);
    assert_eq!(dev.cfg_read(0x74, 4), 0x0000_2002);
    assert_eq!(dev.cfg_read(0x78, 4), 0x0000_3002);
    dev.cfg_write(0x74, 8, 0);
    assert_eq!(dev.cfg_read(0x74, 8), 0x0000_3002_0000_2002);

    let one = DeviceConfig {
        channels: 63,
        ..config()
    };
    let mut dev = VgpuDevice::new(one).unwrap();
    assert_eq!(dev.cfg_read(0x72, 2), 63);
}

#[test]
fn pcie_device_control_mask_and_status_w1c() {
    let mut dev = device();
    assert_eq!(dev.cfg_read(0x82, 2), 0x0002);
    assert_eq!(dev.cfg_read(0x84, 4), 0x0000_8000);
    assert_eq!(dev.cfg_read(0x88, 2), 0x2810);
    dev.cfg_write(0x88, 2, 0xffff);
    assert_eq!(dev.cfg_read(0x88, 2), 0x79ff);
    dev.cfg_write(0x88, 2, 0);
    assert_eq!(dev.cfg_read(0x88, 2), 0);
    // Status bits are W1C and never set: writing ones leaves them 0.
    dev.cfg_write(0x8a, 2, 0xffff);
    assert_eq!(dev.cfg_read(0x8a, 2), 0);
    let status = pci_express()
        .registers
        .into_iter()
        .find(|r| r.offset == 0x0a)
        .unwrap();
    assert_eq!(status.w1c, 0xf);
    assert_eq!(dev.cfg_read(0x8c, 4), 0x0000_0011);
    assert_eq!(dev.cfg_read(0x92, 2), 0x0011);
    for offset in [0x82, 0x84, 0x8c, 0x90] {
        let before = dev.cfg_read(offset, 4);
        dev.cfg_write(offset, 4, 0xffff_ffff);
        let after = dev.cfg_read(offset, 4);
        // 0x88 (device control) sits in none of these dwords.
        assert_eq!(before, after, "{offset:#x}");
    }
}

#[test]
fn vendor_capability_describes_the_control_block() {
    let mut dev = device();
    assert_eq!(dev.cfg_read(0xc2, 1), 16, "length");
    assert_eq!(dev.cfg_read(0xc3, 1), 1, "structure version");
    assert_eq!(dev.cfg_read(0xc4, 4), 0x5550_4776);
    assert_eq!(dev.cfg_read(0xc4, 4).to_le_bytes()[..4], *b"vGPU");
    assert_eq!(dev.cfg_read(0xc8, 4), 0x0000_1002);
    assert_eq!(dev.cfg_read(0xcc, 4), 256, "VRAM in MiB");
    assert_eq!(dev.cfg_read(0xd0, 4), 0, "nothing after the list");
}

#[test]
fn extended_config_space_reads_zero() {
    let mut dev = device();
    assert_eq!(dev.cfg_read(0x100, 4), 0);
    dev.cfg_write(0x100, 4, 0xffff_ffff);
    assert_eq!(dev.cfg_read(0x100, 4), 0);
    assert_eq!(dev.cfg_read(0xffc, 4), 0);
}

#[test]
fn config_access_of_any_length_spans_register_boundaries() {
    let mut dev = device();
    let mut whole = vec![0u8; 4096];
    dev.read(RegionIndex::CONFIG, 0, &mut whole).unwrap();
    let dwords: Vec<u8> = (0..0x40)
        .step_by(4)
        .flat_map(|o| (dev.cfg_read(o, 4) as u32).to_le_bytes())
        .collect();
    assert_eq!(whole[..64], dwords[..]);

    let mut three = [0u8; 3];
    dev.read(RegionIndex::CONFIG, 0x03, &mut three).unwrap();
    assert_eq!(three, [0x11, 0x00, 0x00], "device id high byte, command");

    // A 3-byte write from the device id's high byte into the command.
    dev.write(RegionIndex::CONFIG, 0x03, &[0xff, 0xff, 0xff])
        .unwrap();
    assert_eq!(dev.cfg_read(0x00, 4), 0x1111_1234);
    assert_eq!(dev.cfg_read(0x04, 2), 0x0546);

    // 64 bytes of ones over the header: only the writable bits take.
    dev.write(RegionIndex::CONFIG, 0, &[0xff; 64]).unwrap();
    assert_eq!(dev.cfg_read(0x10, 4), 0xf000_000c);
    assert_eq!(dev.cfg_read(0x18, 4), 0xffff_8000);
    assert_eq!(dev.cfg_read(0x00, 4), 0x1111_1234);
}

#[test]
fn config_accesses_outside_the_region_are_refused() {
    let mut dev = device();
    let mut buf = vec![0u8; 4097];
    assert!(matches!(
        dev.read(RegionIndex::CONFIG, 0, &mut buf),
        Err(AccessError::OutOfRange { .. })
    ));
    assert!(matches!(
        dev.read(RegionIndex::CONFIG, 0, &mut []),
        Err(AccessError::BadLength { .. })
    ));
    assert!(matches!(
        dev.read(RegionIndex::CONFIG, 4095, &mut [0; 2]),
        Err(AccessError::OutOfRange { .. })
    ));
    assert!(matches!(
        dev.write(RegionIndex::CONFIG, u64::MAX, &[0]),
        Err(AccessError::OutOfRange { .. })
    ));
    assert!(dev.read(RegionIndex::CONFIG, 4095, &mut [0]).is_ok());
    assert!(dev.read(RegionIndex::CONFIG, 0, &mut buf[..4096]).is_ok());
}
