//! Parsing of a PCI configuration space image (as read from sysfs `config`):
//! the capability list and the vGPU's vendor-specific capability.

use thiserror::Error;

/// Offset of the status register; bit 4 says a capability list exists.
const STATUS: usize = 0x06;
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Offset of the capabilities pointer.
const CAP_POINTER: usize = 0x34;
/// The standard header ends here; capabilities live in 0x40..0x100.
const HEADER_END: usize = 0x40;
const LEGACY_END: usize = 0x100;
/// At most this many capabilities fit in 0x40..0x100 (4 bytes each), so a
/// longer chain is a loop.
const MAX_CAPABILITIES: usize = (LEGACY_END - HEADER_END) / 4;

/// Magic of the vGPU's vendor-specific capability: "vGPU", little-endian.
pub const VGPU_MAGIC: u32 = 0x5550_4776;

/// Standard capability ids (PCI Code and ID Assignment specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityId {
    /// 0x01.
    PowerManagement,
    /// 0x05.
    Msi,
    /// 0x09.
    VendorSpecific,
    /// 0x10.
    PciExpress,
    /// 0x11.
    MsiX,
    /// Any other id.
    Other(u8),
}

impl From<u8> for CapabilityId {
    fn from(id: u8) -> Self {
        match id {
            0x01 => CapabilityId::PowerManagement,
            0x05 => CapabilityId::Msi,
            0x09 => CapabilityId::VendorSpecific,
            0x10 => CapabilityId::PciExpress,
            0x11 => CapabilityId::MsiX,
            other => CapabilityId::Other(other),
        }
    }
}

impl std::fmt::Display for CapabilityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapabilityId::PowerManagement => f.write_str("PM"),
            CapabilityId::Msi => f.write_str("MSI"),
            CapabilityId::VendorSpecific => f.write_str("VNDR"),
            CapabilityId::PciExpress => f.write_str("PCIe"),
            CapabilityId::MsiX => f.write_str("MSI-X"),
            CapabilityId::Other(id) => write!(f, "{id:#04x}"),
        }
    }
}

/// One entry of the capability list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// What it is.
    pub id: CapabilityId,
    /// Where it starts in config space.
    pub offset: u8,
}

/// Why a capability list could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigSpaceError {
    /// The image is shorter than the standard header.
    #[error("config space image is {0} bytes, shorter than the 64-byte header")]
    TooShort(usize),
    /// Status bit 4 is clear.
    #[error("status register {0:#06x} has no capability list bit")]
    NoCapabilityList(u16),
    /// A next pointer leaves 0x40..0x100 or the image.
    #[error("capability pointer {pointer:#04x} at {at:#04x} is outside 0x40..0x100 or the image")]
    PointerOutOfRange {
        /// The bad pointer.
        pointer: u8,
        /// Where it was read.
        at: usize,
    },
    /// The chain does not end.
    #[error("capability list loops (more than {MAX_CAPABILITIES} entries)")]
    Loop,
    /// The vendor-specific capability is too short or has a wrong magic.
    #[error("vendor-specific capability at {offset:#04x}: {what}")]
    BadVendorCapability {
        /// Where it is.
        offset: u8,
        /// What is wrong with it.
        what: String,
    },
}

fn read_u16(config: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([config[at], config[at + 1]])
}

fn read_u32(config: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([config[at], config[at + 1], config[at + 2], config[at + 3]])
}

/// Walks the capability list of `config` in list order.
pub fn capabilities(config: &[u8]) -> Result<Vec<Capability>, ConfigSpaceError> {
    if config.len() < HEADER_END {
        return Err(ConfigSpaceError::TooShort(config.len()));
    }
    let status = read_u16(config, STATUS);
    if status & STATUS_CAP_LIST == 0 {
        return Err(ConfigSpaceError::NoCapabilityList(status));
    }
    let end = config.len().min(LEGACY_END);
    let mut list = Vec::new();
    let mut at = CAP_POINTER;
    // The bottom two bits of a pointer are reserved (PCI 3.0, 6.7).
    let mut pointer = config[at] & !0x3;
    while pointer != 0 {
        let offset = usize::from(pointer);
        if offset < HEADER_END || offset + 2 > end {
            return Err(ConfigSpaceError::PointerOutOfRange { pointer, at });
        }
        if list.len() == MAX_CAPABILITIES {
            return Err(ConfigSpaceError::Loop);
        }
        list.push(Capability {
            id: CapabilityId::from(config[offset]),
            offset: pointer,
        });
        at = offset + 1;
        pointer = config[at] & !0x3;
    }
    Ok(list)
}

/// The fields of the vGPU's vendor-specific capability
/// (docs/device-interface.md, "Capability list").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorCapability {
    /// Structure version (byte 3).
    pub version: u8,
    /// BAR2 offset of the control block (bits 31:3 of dword 2).
    pub control_block_offset: u32,
    /// BAR index of the control block (bits 2:0 of dword 2).
    pub control_block_bar: u8,
    /// VRAM size in MiB (dword 3).
    pub vram_mib: u32,
}

/// Decodes the vendor-specific capability at `offset` and checks its magic.
pub fn vendor_capability(config: &[u8], offset: u8) -> Result<VendorCapability, ConfigSpaceError> {
    let at = usize::from(offset);
    let bad = |what: String| ConfigSpaceError::BadVendorCapability { offset, what };
    if at + 16 > config.len() {
        return Err(bad("runs past the end of config space".into()));
    }
    let length = config[at + 2];
    if length < 16 {
        return Err(bad(format!("length {length}, expected at least 16")));
    }
    let magic = read_u32(config, at + 4);
    if magic != VGPU_MAGIC {
        return Err(bad(format!(
            "magic {magic:#010x}, expected {VGPU_MAGIC:#010x}"
        )));
    }
    let control = read_u32(config, at + 8);
    Ok(VendorCapability {
        version: config[at + 3],
        control_block_offset: control & !0x7,
        control_block_bar: (control & 0x7) as u8,
        vram_mib: read_u32(config, at + 12),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config space laid out as docs/device-interface.md describes it.
    fn vgpu_config() -> Vec<u8> {
        let mut c = vec![0u8; 256];
        c[STATUS] = 0x10;
        c[CAP_POINTER] = 0x40;
        for (at, id, next) in [
            (0x40, 0x01, 0x50),
            (0x50, 0x05, 0x70),
            (0x70, 0x11, 0x80),
            (0x80, 0x10, 0xc0),
            (0xc0, 0x09, 0x00),
        ] {
            c[at] = id;
            c[at + 1] = next;
        }
        c[0xc2] = 16;
        c[0xc3] = 1;
        c[0xc4..0xc8].copy_from_slice(&VGPU_MAGIC.to_le_bytes());
        c[0xc8..0xcc].copy_from_slice(&0x0000_1002u32.to_le_bytes());
        c[0xcc..0xd0].copy_from_slice(&256u32.to_le_bytes());
        c
    }

    #[test]
    fn walks_the_documented_capability_list_in_order() {
        let ids: Vec<_> = capabilities(&vgpu_config())
            .unwrap()
            .iter()
            .map(|c| (c.id, c.offset))
            .collect();
        assert_eq!(
            ids,
            [
                (CapabilityId::PowerManagement, 0x40),
                (CapabilityId::Msi, 0x50),
                (CapabilityId::MsiX, 0x70),
                (CapabilityId::PciExpress, 0x80),
                (CapabilityId::VendorSpecific, 0xc0),
            ]
        );
    }

    #[test]
    fn refuses_a_list_without_the_status_bit() {
        let mut c = vgpu_config();
        c[STATUS] = 0;
        assert_eq!(capabilities(&c), Err(ConfigSpaceError::NoCapabilityList(0)));
    }

    #[test]
    fn refuses_a_looping_list() {
        let mut c = vgpu_config();
        c[0xc1] = 0x40;
        assert_eq!(capabilities(&c), Err(ConfigSpaceError::Loop));
    }

    #[test]
    fn refuses_a_pointer_into_the_header() {
        let mut c = vgpu_config();
        c[0x51] = 0x20;
        assert_eq!(
            capabilities(&c),
            Err(ConfigSpaceError::PointerOutOfRange {
                pointer: 0x20,
                at: 0x51
            })
        );
    }

    #[test]
    fn refuses_a_truncated_image() {
        assert_eq!(capabilities(&[0; 10]), Err(ConfigSpaceError::TooShort(10)));
    }

    #[test]
    fn decodes_the_vendor_capability() {
        let cap = vendor_capability(&vgpu_config(), 0xc0).unwrap();
        assert_eq!(
            cap,
            VendorCapability {
                version: 1,
                control_block_offset: 0x1000,
                control_block_bar: 2,
                vram_mib: 256
            }
        );
    }

    #[test]
    fn refuses_a_vendor_capability_with_another_magic() {
        let mut c = vgpu_config();
        c[0xc4] = 0;
        assert!(matches!(
            vendor_capability(&c, 0xc0),
            Err(ConfigSpaceError::BadVendorCapability { offset: 0xc0, .. })
        ));
    }
}
