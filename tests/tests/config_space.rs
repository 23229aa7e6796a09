//! PCI configuration space as the contract describes it: identity, the
//! capability chain and its contents, BAR sizing, writable masks.

use vgpud_tests::config::{STANDARD_CHANNELS, STANDARD_FRAMEBUFFER, STANDARD_SUBSYSTEM};
use vgpud_tests::regs::config::*;
use vgpud_tests::{RawClient, TestDaemon, VGPU_A};

fn connect() -> anyhow::Result<(TestDaemon, RawClient)> {
    let daemon = TestDaemon::standard()?;
    let client = daemon.connect(VGPU_A)?;
    Ok((daemon, client))
}

#[test]
fn identity_registers_match_the_contract() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    assert_eq!(c.config_read(VENDOR_ID, 2)?, u64::from(VENDOR));
    assert_eq!(c.config_read(DEVICE_ID, 2)?, u64::from(DEVICE));
    assert_eq!(c.config_read(COMMAND, 2)?, 0);
    assert_eq!(c.config_read(STATUS, 2)?, u64::from(STATUS_VALUE));
    assert_eq!(c.config_read(REVISION, 1)?, u64::from(REVISION_VALUE));
    assert_eq!(c.config_read(REVISION, 4)? >> 8, u64::from(CLASS_VALUE));
    assert_eq!(c.config_read(HEADER_TYPE, 1)?, 0);
    assert_eq!(
        c.config_read(SUBSYSTEM_VENDOR_ID, 2)?,
        u64::from(STANDARD_SUBSYSTEM.0)
    );
    assert_eq!(
        c.config_read(SUBSYSTEM_ID, 2)?,
        u64::from(STANDARD_SUBSYSTEM.1)
    );
    assert_eq!(c.config_read(CAP_PTR, 1)?, CAP_PM);
    assert_eq!(c.config_read(INTERRUPT_PIN, 1)?, 1);
    Ok(())
}

#[test]
fn capability_chain_is_pm_msi_msix_pcie_vendor() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let mut chain = Vec::new();
    let mut next = c.config_read(CAP_PTR, 1)?;
    while next != 0 && chain.len() < 16 {
        let id = c.config_read(next, 1)? as u8;
        chain.push((next, id));
        next = c.config_read(next + 1, 1)?;
    }
    assert_eq!(
        chain,
        [
            (CAP_PM, CAP_ID_PM),
            (CAP_MSI, CAP_ID_MSI),
            (CAP_MSIX, CAP_ID_MSIX),
            (CAP_PCIE, CAP_ID_PCIE),
            (CAP_VENDOR, CAP_ID_VENDOR),
        ]
    );
    Ok(())
}

#[test]
fn power_management_and_msi_capabilities_hold_their_values() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    assert_eq!(c.config_read(CAP_PM + 2, 2)?, 0x0003, "PMC");
    assert_ne!(c.config_read(CAP_PM + 4, 2)? & (1 << 3), 0, "No_Soft_Reset");
    assert_eq!(c.config_read(CAP_PM + 4, 2)? & 0x3, 0, "D0 at reset");
    assert_eq!(
        c.config_read(CAP_MSI + 2, 2)?,
        0x0180,
        "MSI message control"
    );
    Ok(())
}

#[test]
fn msix_capability_sizes_the_table_by_channels() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let control = c.config_read(CAP_MSIX + 2, 2)?;
    // N−1 encoding of 1 + channels vectors.
    assert_eq!(control & 0x7ff, u64::from(STANDARD_CHANNELS));
    assert_eq!(
        control & 0xc000,
        0,
        "function mask and enable clear at reset"
    );
    assert_eq!(c.config_read(CAP_MSIX + 4, 4)?, 0x0000_2002, "table");
    assert_eq!(c.config_read(CAP_MSIX + 8, 4)?, 0x0000_3002, "PBA");
    Ok(())
}

#[test]
fn pci_express_capability_holds_its_values() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    assert_eq!(c.config_read(CAP_PCIE + 2, 2)?, 0x0002, "capabilities");
    assert_eq!(c.config_read(CAP_PCIE + 4, 4)?, 0x0000_8000, "device caps");
    assert_eq!(c.config_read(CAP_PCIE + 8, 2)?, 0x2810, "device control");
    assert_eq!(c.config_read(CAP_PCIE + 0xc, 4)?, 0x0000_0011, "link caps");
    assert_eq!(c.config_read(CAP_PCIE + 0x12, 2)?, 0x0011, "link status");
    c.config_write(CAP_PCIE + 8, 2, 0xffff)?;
    assert_eq!(
        c.config_read(CAP_PCIE + 8, 2)?,
        0x79ff,
        "device control mask"
    );
    Ok(())
}

#[test]
fn vendor_capability_carries_magic_and_control_block() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    assert_eq!(c.config_read(CAP_VENDOR + 2, 1)?, 16, "length");
    assert_eq!(c.config_read(CAP_VENDOR + 3, 1)?, 1, "structure version");
    assert_eq!(c.config_read(CAP_VENDOR + 4, 4)?, 0x5550_4776, "magic");
    assert_eq!(
        c.config_read(CAP_VENDOR + 8, 4)?,
        0x0000_1002,
        "control block"
    );
    assert_eq!(
        c.config_read(CAP_VENDOR + 0xc, 4)?,
        STANDARD_FRAMEBUFFER >> 20,
        "VRAM MiB"
    );
    assert_eq!(c.config_read(0x100, 4)?, 0, "no extended capabilities");
    Ok(())
}

#[test]
fn bar0_sizing_reads_back_the_framebuffer_size_mask() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    assert_eq!(c.config_read(BAR0_LO, 4)?, 0x0000_000c);
    c.config_write(BAR0_LO, 4, 0xffff_ffff)?;
    c.config_write(BAR0_HI, 4, 0xffff_ffff)?;
    let size_mask = !(STANDARD_FRAMEBUFFER - 1) & 0xffff_fff0;
    assert_eq!(c.config_read(BAR0_LO, 4)?, size_mask | 0xc);
    assert_eq!(c.config_read(BAR0_HI, 4)?, 0xffff_ffff);
    Ok(())
}

#[test]
fn bar2_sizing_reads_back_a_16k_mask() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    c.config_write(BAR2, 4, 0xffff_ffff)?;
    assert_eq!(c.config_read(BAR2, 4)?, 0xffff_8000);
    Ok(())
}

#[test]
fn absent_bars_and_rom_size_to_zero() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    for offset in [BAR3, BAR3 + 4, BAR3 + 8, ROM] {
        c.config_write(offset, 4, 0xffff_ffff)?;
        assert_eq!(c.config_read(offset, 4)?, 0, "offset {offset:#x}");
    }
    Ok(())
}

#[test]
fn command_register_keeps_only_its_writable_bits() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    c.config_write(COMMAND, 2, 0xffff)?;
    assert_eq!(c.config_read(COMMAND, 2)?, u64::from(COMMAND_MASK));
    Ok(())
}

#[test]
fn whole_config_space_reads_in_one_access() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let all = c.region_read(vgpud_tests::regs::region::CONFIG, 0, 4096)?;
    assert_eq!(all.len(), 4096);
    assert_eq!(&all[0..4], &[0x34, 0x12, 0x11, 0x11]);
    assert_eq!(all[CAP_PTR as usize], CAP_PM as u8);
    Ok(())
}
