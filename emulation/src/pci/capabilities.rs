//! The capability list: generic placement of capability descriptions, and
//! the five capabilities of the vGPU (power management, MSI, MSI-X, PCI
//! Express, vendor-specific).
//!
//! A capability is described by its id, its length and its registers at
//! offsets relative to the capability; [`lay_out`] places the descriptions,
//! writes each header (id, next pointer: read-only) and chains them.

use super::config_space::{RegisterSpec, WriteFilter};

/// Power management capability id.
pub const CAP_ID_PM: u8 = 0x01;
/// MSI capability id.
pub const CAP_ID_MSI: u8 = 0x05;
/// Vendor-specific capability id.
pub const CAP_ID_VENDOR: u8 = 0x09;
/// PCI Express capability id.
pub const CAP_ID_PCIE: u8 = 0x10;
/// MSI-X capability id.
pub const CAP_ID_MSIX: u8 = 0x11;

/// Where the power management capability sits.
pub const PM_CAP_OFFSET: u16 = 0x40;
/// Where the MSI capability sits.
pub const MSI_CAP_OFFSET: u16 = 0x50;
/// Where the MSI-X capability sits.
pub const MSIX_CAP_OFFSET: u16 = 0x70;
/// Where the PCI Express capability sits.
pub const PCIE_CAP_OFFSET: u16 = 0x80;
/// Where the vendor-specific capability sits.
pub const VENDOR_CAP_OFFSET: u16 = 0xc0;

/// First byte a capability may use (after the type 0 header).
pub const CAP_AREA_START: u16 = 0x40;
/// End of the standard configuration space.
pub const CAP_AREA_END: u16 = 0x100;

/// PMCSR power state field (bits 1:0).
pub const PMCSR_POWER_STATE: u32 = 0x3;
/// PMCSR No_Soft_Reset bit.
pub const PMCSR_NO_SOFT_RESET: u32 = 1 << 3;
/// Power state D3hot.
pub const POWER_STATE_D3HOT: u32 = 3;

/// MSI message control: 64-bit address capable, per-vector masking, 1 vector.
pub const MSI_CONTROL_RESET: u32 = 0x0180;
/// MSI-X message control: function mask and enable.
pub const MSIX_CONTROL_WRITABLE: u32 = 0xc000;
/// MSI-X table location: BAR2 + 0x2000 (offset | BIR).
pub const MSIX_TABLE_LOCATION: u32 = 0x0000_2002;
/// MSI-X PBA location: BAR2 + 0x3000 (offset | BIR).
pub const MSIX_PBA_LOCATION: u32 = 0x0000_3002;

/// PCI Express device control writable bits.
pub const PCIE_DEVCTL_WRITABLE: u32 = 0x79ff;
/// PCI Express device control reset value: relaxed ordering, no snoop,
/// 512-byte maximum read requests.
pub const PCIE_DEVCTL_RESET: u32 = 0x2810;

/// Vendor capability: structure version.
pub const VENDOR_CAP_VERSION: u8 = 1;
/// Vendor capability length in bytes.
pub const VENDOR_CAP_LEN: u8 = 16;
/// Vendor capability magic ("vGPU" as a little-endian dword).
pub const VGPU_MAGIC: u32 = 0x5550_4776;
/// Vendor capability pointer to the control block: BAR2 offset 0x1000,
/// BAR index 2 in bits 2:0.
pub const VENDOR_CAP_CONTROL_BLOCK: u32 = 0x0000_1002;

/// One capability, before placement.
#[derive(Debug, Clone)]
pub struct Capability {
    /// Capability id.
    pub id: u8,
    /// Length in bytes, header included.
    pub len: u8,
    /// Registers after the two header bytes, offsets relative to the
    /// capability.
    pub registers: Vec<RegisterSpec>,
    /// Write filters, by offset relative to the capability.
    pub filters: Vec<(u16, WriteFilter)>,
}

/// Capabilities laid out in config space.
#[derive(Debug, Clone, Default)]
pub struct CapabilityLayout {
    /// Registers at absolute offsets, headers included.
    pub registers: Vec<RegisterSpec>,
    /// Write filters at absolute offsets.
    pub filters: Vec<(u16, WriteFilter)>,
    /// Offset of the first capability, 0 when there is none.
    pub first: u8,
}

/// Why capabilities could not be laid out (a bug in the descriptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// A capability is misaligned, outside 0x40..0x100, overlaps the one
    /// before it, or has a register outside itself or on its header.
    #[error("capability {id:#04x} at {offset:#x} does not fit")]
    Misplaced {
        /// Capability id.
        id: u8,
        /// Requested offset.
        offset: u16,
    },
}

/// Places `capabilities` (in list order, at ascending dword-aligned
/// offsets) and chains their next pointers.
pub fn lay_out(capabilities: &[(u16, Capability)]) -> Result<CapabilityLayout, CapabilityError> {
    let mut layout = CapabilityLayout::default();
    let mut free_from = CAP_AREA_START;
    for (i, (offset, cap)) in capabilities.iter().enumerate() {
        let offset = *offset;
        let misplaced = CapabilityError::Misplaced { id: cap.id, offset };
        let end = offset.checked_add(u16::from(cap.len)).ok_or(misplaced)?;
        let inside =
            |r: &RegisterSpec| r.offset >= 2 && r.offset + u16::from(r.width) <= u16::from(cap.len);
        if offset % 4 != 0
            || offset < free_from
            || end > CAP_AREA_END
            || cap.len < 2
            || !cap.registers.iter().all(inside)
        {
            return Err(misplaced);
        }
        free_from = end;
        let next = capabilities.get(i + 1).map_or(0, |(next, _)| *next);
        layout
            .registers
            .push(RegisterSpec::ro(offset, 1, u32::from(cap.id)));
        layout
            .registers
            .push(RegisterSpec::ro(offset + 1, 1, u32::from(next)));
        layout
            .registers
            .extend(cap.registers.iter().map(|r| r.at(offset)));
        layout
            .filters
            .extend(cap.filters.iter().map(|&(at, f)| (offset + at, f)));
    }
    // The first offset is below 0x100 once placement succeeded.
    layout.first = capabilities.first().map_or(0, |(offset, _)| *offset as u8);
    Ok(layout)
}

/// Power management: version 3, no D1/D2, no PME; D0 and D3hot only.
pub fn power_management() -> Capability {
    Capability {
        id: CAP_ID_PM,
        len: 8,
        registers: vec![
            RegisterSpec::ro(2, 2, 0x0003),
            RegisterSpec::rw(4, 2, PMCSR_NO_SOFT_RESET, PMCSR_POWER_STATE),
        ],
        filters: vec![(4, refuse_d1_d2)],
    }
}

/// D1 and D2 are not supported (PMC says so), so writes asking for them
/// keep the current state, as the PCI PM spec asks.
fn refuse_d1_d2(old: u32, new: u32) -> u32 {
    match new & PMCSR_POWER_STATE {
        1 | 2 => (new & !PMCSR_POWER_STATE) | (old & PMCSR_POWER_STATE),
        _ => new,
    }
}

/// MSI: one vector, 64-bit address, per-vector masking.
pub fn msi() -> Capability {
    Capability {
        id: CAP_ID_MSI,
        len: 0x18,
        registers: vec![
            RegisterSpec::rw(0x02, 2, MSI_CONTROL_RESET, 0x0001),
            RegisterSpec::rw(0x04, 4, 0, 0xffff_fffc),
            RegisterSpec::rw(0x08, 4, 0, 0xffff_ffff),
            RegisterSpec::rw(0x0c, 2, 0, 0xffff),
            RegisterSpec::rw(0x10, 4, 0, 0x1),
            RegisterSpec::ro(0x14, 4, 0),
        ],
        filters: Vec::new(),
    }
}

/// MSI-X with `vectors` table entries (1 ..= 2048) in BAR2.
pub fn msix(vectors: u32) -> Capability {
    Capability {
        id: CAP_ID_MSIX,
        len: 12,
        registers: vec![
            RegisterSpec::rw(
                0x02,
                2,
                vectors.saturating_sub(1) & 0x7ff,
                MSIX_CONTROL_WRITABLE,
            ),
            RegisterSpec::ro(0x04, 4, MSIX_TABLE_LOCATION),
            RegisterSpec::ro(0x08, 4, MSIX_PBA_LOCATION),
        ],
        filters: Vec::new(),
    }
}

/// PCI Express version 2 endpoint, 2.5 GT/s x1, no FLR.
pub fn pci_express() -> Capability {
    Capability {
        id: CAP_ID_PCIE,
        len: 0x3c,
        registers: vec![
            RegisterSpec::ro(0x02, 2, 0x0002),
            RegisterSpec::ro(0x04, 4, 0x0000_8000),
            RegisterSpec::rw(0x08, 2, PCIE_DEVCTL_RESET, PCIE_DEVCTL_WRITABLE),
            RegisterSpec::ro(0x0a, 2, 0).with_w1c(0xf),
            RegisterSpec::ro(0x0c, 4, 0x0000_0011),
            RegisterSpec::ro(0x12, 2, 0x0011),
        ],
        filters: Vec::new(),
    }
}

/// Vendor-specific: version, magic, where the control block is, VRAM size.
pub fn vendor(vram_size: u64) -> Capability {
    // VRAM is at most 64 GiB, i.e. 65536 MiB: fits with room to spare.
    let vram_mib = (vram_size >> 20) as u32;
    Capability {
        id: CAP_ID_VENDOR,
        len: VENDOR_CAP_LEN,
        registers: vec![
            RegisterSpec::ro(0x02, 1, u32::from(VENDOR_CAP_LEN)),
            RegisterSpec::ro(0x03, 1, u32::from(VENDOR_CAP_VERSION)),
            RegisterSpec::ro(0x04, 4, VGPU_MAGIC),
            RegisterSpec::ro(0x08, 4, VENDOR_CAP_CONTROL_BLOCK),
            RegisterSpec::ro(0x0c, 4, vram_mib),
        ],
        filters: Vec::new(),
    }
}

/// The vGPU's capability list, in order, at the offsets of the contract.
pub fn vgpu_capabilities(vram_size: u64, msix_vectors: u32) -> Vec<(u16, Capability)> {
    vec![
        (PM_CAP_OFFSET, power_management()),
        (MSI_CAP_OFFSET, msi()),
        (MSIX_CAP_OFFSET, msix(msix_vectors)),
        (PCIE_CAP_OFFSET, pci_express()),
        (VENDOR_CAP_OFFSET, vendor(vram_size)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_chains_next_pointers_in_order() {
        let layout = lay_out(&vgpu_capabilities(1 << 20, 2)).unwrap();
        assert_eq!(layout.first, 0x40);
        let next_of = |offset: u16| {
            layout
                .registers
                .iter()
                .find(|r| r.offset == offset + 1)
                .map(|r| r.reset)
        };
        assert_eq!(next_of(PM_CAP_OFFSET), Some(0x50));
        assert_eq!(next_of(VENDOR_CAP_OFFSET), Some(0));
    }

    #[test]
    fn overlapping_capabilities_are_refused() {
        let caps = [(0x40, power_management()), (0x44, msi())];
        assert_eq!(
            lay_out(&caps).unwrap_err(),
            CapabilityError::Misplaced {
                id: CAP_ID_MSI,
                offset: 0x44
            }
        );
    }

    #[test]
    fn capabilities_must_stay_inside_0x40_to_0x100() {
        assert!(lay_out(&[(0x3c, msi())]).is_err());
        assert!(lay_out(&[(0xf0, pci_express())]).is_err());
        assert!(lay_out(&[(0xfc, vendor(1 << 20))]).is_err());
    }

    #[test]
    fn pm_filter_keeps_the_state_for_d1_and_d2() {
        assert_eq!(refuse_d1_d2(0x8, 0x9), 0x8);
        assert_eq!(refuse_d1_d2(0x8, 0xa), 0x8);
        assert_eq!(refuse_d1_d2(0x8, 0xb), 0xb);
        assert_eq!(refuse_d1_d2(0xb, 0x8), 0x8);
    }
}
