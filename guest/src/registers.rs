//! The vGPU's BAR2 registers the checks read (docs/device-interface.md,
//! "BAR2: registers"): the VBE DISPI block that describes the scanout, the
//! QEMU extended block, and the vGPU control block.

use thiserror::Error;

use crate::mapping::{Mapping, MappingError};
use crate::pattern::{BYTES_PER_PIXEL, FrameLayout};
use crate::pci::PciDevice;

/// Size of BAR2.
pub const BAR2_SIZE: usize = 0x8000;
/// The DISPI register with index `n` is at `DISPI_BASE + 2 n`.
pub const DISPI_BASE: usize = 0x500;
/// QEMU extended registers: block size.
pub const QEXT_SIZE: usize = 0x600;
/// Control block: MAGIC.
pub const CONTROL_MAGIC: usize = 0x1000;
/// Control block: VERSION.
pub const CONTROL_VERSION: usize = 0x1004;
/// Control block: VRAM_SIZE_LO (HI follows).
pub const CONTROL_VRAM_SIZE: usize = 0x1008;
/// Control block: MAX_RESOLUTION.
pub const CONTROL_MAX_RESOLUTION: usize = 0x1018;

/// ENABLE bit 0: the display is on.
const ENABLE_ENABLED: u16 = 1 << 0;

/// DISPI register indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum DispiIndex {
    Id = 0,
    Xres = 1,
    Yres = 2,
    Bpp = 3,
    Enable = 4,
    VirtWidth = 6,
    VirtHeight = 7,
    XOffset = 8,
    YOffset = 9,
    VideoMemory64k = 10,
}

/// Why a register could not be read.
#[derive(Debug, Error)]
pub enum RegisterError {
    /// BAR2 could not be mapped.
    #[error("cannot map BAR2")]
    Map(#[source] MappingError),
    /// The offset is outside BAR2 (a bug in this program).
    #[error("register offset {0:#x} is outside BAR2")]
    Offset(usize),
}

/// A snapshot of the DISPI registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispi {
    /// ID (0xB0C0..=0xB0C5).
    pub id: u16,
    /// Visible width in pixels.
    pub xres: u16,
    /// Visible height in lines.
    pub yres: u16,
    /// Bits per pixel.
    pub bpp: u16,
    /// ENABLE flags.
    pub enable: u16,
    /// Pixels per line in memory.
    pub virt_width: u16,
    /// Lines in memory.
    pub virt_height: u16,
    /// Scanout start column.
    pub x_offset: u16,
    /// Scanout start line.
    pub y_offset: u16,
    /// VRAM size in 64 KiB units.
    pub video_memory_64k: u16,
}

impl Dispi {
    /// Whether the display is on.
    pub fn enabled(&self) -> bool {
        self.enable & ENABLE_ENABLED != 0
    }

    /// Where the scanned-out frame lies in VRAM, for an enabled 32-bit mode
    /// (the only depth the programs draw); `None` otherwise.
    pub fn scanout(&self) -> Option<FrameLayout> {
        if !self.enabled() || usize::from(self.bpp) != BYTES_PER_PIXEL * 8 {
            return None;
        }
        let bpp = BYTES_PER_PIXEL as u64;
        let pitch = u64::from(self.virt_width) * bpp;
        Some(FrameLayout {
            start: u64::from(self.x_offset) * bpp + u64::from(self.y_offset) * pitch,
            pitch,
            width: u32::from(self.xres),
            height: u32::from(self.yres),
        })
    }
}

impl std::fmt::Display for Dispi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dispi(id={:#06x} {}x{}x{} enable={:#x} virt={}x{} offset={},{})",
            self.id,
            self.xres,
            self.yres,
            self.bpp,
            self.enable,
            self.virt_width,
            self.virt_height,
            self.x_offset,
            self.y_offset
        )
    }
}

/// BAR2 of one vGPU, mapped through sysfs.
#[derive(Debug)]
pub struct Registers {
    bar2: Mapping,
}

impl Registers {
    /// Maps BAR2 of `device`.
    pub fn open(device: &PciDevice) -> Result<Self, RegisterError> {
        let bar2 = Mapping::bar(&device.bar_path(2), 0, BAR2_SIZE).map_err(RegisterError::Map)?;
        Ok(Registers { bar2 })
    }

    /// Reads the 32-bit register at `offset`.
    pub fn read_u32(&self, offset: usize) -> Result<u32, RegisterError> {
        self.bar2
            .read_u32(offset)
            .ok_or(RegisterError::Offset(offset))
    }

    /// Reads the 16-bit register at `offset`.
    pub fn read_u16(&self, offset: usize) -> Result<u16, RegisterError> {
        self.bar2
            .read_u16(offset)
            .ok_or(RegisterError::Offset(offset))
    }

    /// Reads the DISPI block.
    pub fn dispi(&self) -> Result<Dispi, RegisterError> {
        read_dispi(&self.bar2)
    }
}

/// Reads the DISPI block from a mapping of BAR2.
pub fn read_dispi(bar2: &Mapping) -> Result<Dispi, RegisterError> {
    let register = |index: DispiIndex| {
        let offset = DISPI_BASE + 2 * index as usize;
        bar2.read_u16(offset).ok_or(RegisterError::Offset(offset))
    };
    Ok(Dispi {
        id: register(DispiIndex::Id)?,
        xres: register(DispiIndex::Xres)?,
        yres: register(DispiIndex::Yres)?,
        bpp: register(DispiIndex::Bpp)?,
        enable: register(DispiIndex::Enable)?,
        virt_width: register(DispiIndex::VirtWidth)?,
        virt_height: register(DispiIndex::VirtHeight)?,
        x_offset: register(DispiIndex::XOffset)?,
        y_offset: register(DispiIndex::YOffset)?,
        video_memory_64k: register(DispiIndex::VideoMemory64k)?,
    })
}

/// The visible mode (width, height) of the vGPU at PCI `address`, from its
/// DISPI registers.
pub fn current_mode(address: &str) -> Result<(u32, u32), String> {
    let devices = PciDevice::find_vgpus(std::path::Path::new(crate::pci::SYSFS_PCI_DEVICES))
        .map_err(|e| e.to_string())?;
    let device = devices
        .iter()
        .find(|d| d.address == address)
        .ok_or(format!("no vGPU at {address}"))?;
    let dispi = Registers::open(device)
        .and_then(|r| r.dispi())
        .map_err(|e| e.to_string())?;
    Ok((dispi.xres.into(), dispi.yres.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(xres: u16, yres: u16, virt_width: u16, x: u16, y: u16) -> Dispi {
        Dispi {
            id: 0xb0c5,
            xres,
            yres,
            bpp: 32,
            enable: 0x41,
            virt_width,
            virt_height: 1200,
            x_offset: x,
            y_offset: y,
            video_memory_64k: 4096,
        }
    }

    #[test]
    fn scanout_start_is_linear_in_the_offsets() {
        let layout = mode(800, 600, 832, 2, 600).scanout().unwrap();
        assert_eq!(layout.pitch, 832 * 4);
        assert_eq!(layout.start, 2 * 4 + 600 * 832 * 4);
        assert_eq!((layout.width, layout.height), (800, 600));
    }

    #[test]
    fn no_scanout_while_disabled_or_not_32_bit() {
        let mut d = mode(800, 600, 800, 0, 0);
        d.enable = 0x40;
        assert_eq!(d.scanout(), None);
        let mut d = mode(800, 600, 800, 0, 0);
        d.bpp = 16;
        assert_eq!(d.scanout(), None);
    }
}
