//! The type 0 configuration header of the vGPU (offsets 0x00–0x3f).
//!
//! BARs:
//!
//! ```text
//! BAR0 (0x10, 0x14): 64-bit prefetchable memory, VRAM aperture, size = VRAM slice
//!   31            log2(size)        4  3  2 1  0
//!   [ address bits | reads 0 ...     ][P][10][0]     P = 1, type 10 = 64-bit
//! BAR2 (0x18): 32-bit non-prefetchable memory, registers, 16 KiB
//! BAR1, BAR3-BAR5, expansion ROM: absent, read 0 whatever is written
//! ```

use super::config_space::RegisterSpec;

/// PCI vendor id (the QEMU/Bochs id that Linux `bochs` matches).
pub const PCI_VENDOR_ID: u16 = 0x1234;
/// PCI device id (the Bochs/QEMU standard VGA id that Linux `bochs` binds).
pub const PCI_DEVICE_ID: u16 = 0x1111;
/// Revision: `bochs` needs 2 to use the QEMU extended registers.
pub const PCI_REVISION: u8 = 0x02;
/// Class code: display controller, other.
pub const PCI_CLASS_CODE: u32 = 0x03_8000;
/// Interrupt pin INTA#.
pub const PCI_INTERRUPT_PIN: u8 = 1;

/// Vendor id register.
pub const PCI_VENDOR_ID_OFFSET: u16 = 0x00;
/// Device id register.
pub const PCI_DEVICE_ID_OFFSET: u16 = 0x02;
/// Command register.
pub const PCI_COMMAND: u16 = 0x04;
/// Status register.
pub const PCI_STATUS: u16 = 0x06;
/// Revision id register (class code in the three bytes above it).
pub const PCI_REVISION_ID: u16 = 0x08;
/// Cache line size register.
pub const PCI_CACHE_LINE_SIZE: u16 = 0x0c;
/// Header type register.
pub const PCI_HEADER_TYPE: u16 = 0x0e;
/// BAR0, low half of the 64-bit VRAM BAR.
pub const PCI_BAR0: u16 = 0x10;
/// BAR0, high half.
pub const PCI_BAR0_HIGH: u16 = 0x14;
/// BAR2, the register BAR.
pub const PCI_BAR2: u16 = 0x18;
/// Subsystem vendor id register.
pub const PCI_SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
/// Subsystem id register.
pub const PCI_SUBSYSTEM_ID: u16 = 0x2e;
/// Expansion ROM BAR.
pub const PCI_ROM_ADDRESS: u16 = 0x30;
/// Capabilities pointer.
pub const PCI_CAPABILITY_LIST: u16 = 0x34;
/// Interrupt line register.
pub const PCI_INTERRUPT_LINE: u16 = 0x3c;
/// Interrupt pin register.
pub const PCI_INTERRUPT_PIN_OFFSET: u16 = 0x3d;

/// Command bits the guest may set: memory space, bus master, parity error
/// response, SERR#, interrupt disable. No I/O space: there are no I/O BARs.
pub const COMMAND_WRITABLE: u32 = 0x0546;
/// Command register Interrupt Disable bit.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status: capabilities list present.
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Status: interrupt status (an INTx is asserted), driven by the host.
pub const STATUS_INTERRUPT: u16 = 1 << 3;
/// Status bits the guest clears by writing 1: parity, aborts, SERR.
pub const STATUS_W1C: u32 = 0xf900;

/// BAR type bits: 64-bit memory, prefetchable.
pub const BAR_MEM64_PREFETCH: u32 = 0xc;
/// Size of the register BAR (BAR2): one constant with the register
/// layout, so that the BAR the guest sizes is the region the VMM maps.
pub use crate::bar2::layout::BAR2_SIZE;

/// The registers of a 64-bit prefetchable memory BAR of `size` bytes (a
/// power of two, at least 16) at `offset` and `offset + 4`: the address
/// bits below the size read 0 because they are not writable.
pub fn memory_bar64(offset: u16, size: u64) -> [RegisterSpec; 2] {
    let address = !(size.max(16) - 1);
    [
        RegisterSpec::rw(offset, 4, BAR_MEM64_PREFETCH, address as u32 & !0xf),
        RegisterSpec::rw(offset + 4, 4, 0, (address >> 32) as u32),
    ]
}

/// The register of a 32-bit non-prefetchable memory BAR of `size` bytes (a
/// power of two, 16 ..= 2 GiB) at `offset`.
pub fn memory_bar32(offset: u16, size: u64) -> RegisterSpec {
    let address = !(size.max(16) - 1);
    RegisterSpec::rw(offset, 4, 0, address as u32 & !0xf)
}

/// Identity the header carries from the profile.
#[derive(Debug, Clone, Copy)]
pub struct HeaderParams {
    /// BAR0 size (the VRAM slice).
    pub vram_size: u64,
    /// Subsystem vendor id.
    pub subsystem_vendor_id: u16,
    /// Subsystem id.
    pub subsystem_id: u16,
    /// Capabilities pointer; 0 for none.
    pub capabilities: u8,
}

/// The header's registers. Offsets not listed (BAR1, BAR3–BAR5, the ROM
/// BAR, latency timer, BIST, ...) read 0 and ignore writes.
pub fn header(params: HeaderParams) -> Vec<RegisterSpec> {
    let status = if params.capabilities != 0 {
        STATUS_CAP_LIST
    } else {
        0
    };
    let [bar0_low, bar0_high] = memory_bar64(PCI_BAR0, params.vram_size);
    vec![
        RegisterSpec::ro(PCI_VENDOR_ID_OFFSET, 2, u32::from(PCI_VENDOR_ID)),
        RegisterSpec::ro(PCI_DEVICE_ID_OFFSET, 2, u32::from(PCI_DEVICE_ID)),
        RegisterSpec::rw(PCI_COMMAND, 2, 0, COMMAND_WRITABLE),
        RegisterSpec::ro(PCI_STATUS, 2, u32::from(status)).with_w1c(STATUS_W1C),
        RegisterSpec::ro(
            PCI_REVISION_ID,
            4,
            (PCI_CLASS_CODE << 8) | u32::from(PCI_REVISION),
        ),
        RegisterSpec::rw(PCI_CACHE_LINE_SIZE, 1, 0, 0xff),
        RegisterSpec::ro(PCI_HEADER_TYPE, 1, 0),
        bar0_low,
        bar0_high,
        memory_bar32(PCI_BAR2, BAR2_SIZE),
        RegisterSpec::ro(
            PCI_SUBSYSTEM_VENDOR_ID,
            2,
            u32::from(params.subsystem_vendor_id),
        ),
        RegisterSpec::ro(PCI_SUBSYSTEM_ID, 2, u32::from(params.subsystem_id)),
        RegisterSpec::ro(PCI_ROM_ADDRESS, 4, 0),
        RegisterSpec::ro(PCI_CAPABILITY_LIST, 1, u32::from(params.capabilities)),
        RegisterSpec::rw(PCI_INTERRUPT_LINE, 1, 0, 0xff),
        RegisterSpec::ro(PCI_INTERRUPT_PIN_OFFSET, 1, u32::from(PCI_INTERRUPT_PIN)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar64_masks_follow_the_size() {
        let [low, high] = memory_bar64(0x10, 256 << 20);
        assert_eq!((low.writable, high.writable), (0xf000_0000, 0xffff_ffff));
        let [low, high] = memory_bar64(0x10, 64 << 30);
        assert_eq!((low.writable, high.writable), (0, 0xffff_fff0));
        assert_eq!(low.reset, BAR_MEM64_PREFETCH);
    }

    #[test]
    fn bar32_mask_follows_the_size() {
        assert_eq!(memory_bar32(0x18, 0x4000).writable, 0xffff_c000);
    }
}
