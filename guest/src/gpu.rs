//! One vGPU as a GPU driver sees it: BAR0 (VRAM) and BAR2 (registers)
//! mapped read-write through sysfs, with the registers of the control
//! block, the GPU MMU, the channels and the DISPI block that the engine
//! programs use (docs/device-interface.md).
//!
//! The programs give every channel the same address space: all of VRAM
//! mapped at [`VRAM_VA`] with 2 MiB pages, so that the GPU VA of VRAM
//! offset `o` is `VRAM_VA + o`.

use thiserror::Error;

use crate::mapping::{Access, Mapping, MappingError};
use crate::pattern::{BYTES_PER_PIXEL, FrameComparison, FrameLayout, compare_frame_with};
use crate::pci::{PciDevice, SysfsError};
use crate::registers::{BAR2_SIZE, DISPI_BASE, Dispi, read_dispi};

/// GPU VA where the programs map VRAM offset 0 (128 GiB: level-4 entry 0,
/// level-3 entry 128), so that VA 0 stays unmapped.
pub const VRAM_VA: u64 = 0x20_0000_0000;

/// Control block registers.
pub mod control {
    /// VRAM_SIZE_LO (HI follows).
    pub const VRAM_SIZE: usize = 0x1008;
    /// CHANNELS.
    pub const CHANNELS: usize = 0x1010;
    /// MSIX_VECTORS.
    pub const MSIX_VECTORS: usize = 0x1014;
    /// MAX_RESOLUTION: width in bits 15:0, height in 31:16.
    pub const MAX_RESOLUTION: usize = 0x1018;
    /// IRQ_STATUS (W1C).
    pub const IRQ_STATUS: usize = 0x1020;
    /// IRQ_MASK.
    pub const IRQ_MASK: usize = 0x1024;
    /// ERROR_CODE (any write clears it).
    pub const ERROR_CODE: usize = 0x1028;
    /// SELFTEST: writing `v` raises vector `v`.
    pub const SELFTEST: usize = 0x1030;
    /// IRQ_STATUS / IRQ_MASK bit 0: SELFTEST.
    pub const IRQ_SELFTEST: u32 = 1 << 0;
    /// IRQ_STATUS / IRQ_MASK bit 3: a GPU MMU fault.
    pub const IRQ_FAULT: u32 = 1 << 3;
    /// PT_ROOT_LO of channel `n` is at `PT_ROOT + 0x20 n` (HI at + 4).
    pub const PT_ROOT: usize = 0x1100;
    /// Stride of the per-channel MMU registers.
    pub const PT_ROOT_STRIDE: usize = 0x20;
    /// FAULT_VA_LO (HI follows).
    pub const FAULT_VA: usize = 0x1080;
    /// FAULT_INFO.
    pub const FAULT_INFO: usize = 0x1088;
    /// FAULT_COUNT (any write acknowledges FAULT_VA and FAULT_INFO).
    pub const FAULT_COUNT: usize = 0x108c;
    /// XLATE_VA_LO (HI follows).
    pub const XLATE_VA: usize = 0x1090;
    /// XLATE_CONTROL.
    pub const XLATE_CONTROL: usize = 0x1098;
    /// XLATE_STATUS.
    pub const XLATE_STATUS: usize = 0x109c;
    /// XLATE_RESULT_LO (HI follows).
    pub const XLATE_RESULT: usize = 0x10a0;
    /// XLATE_TARGET.
    pub const XLATE_TARGET: usize = 0x10a8;
}

/// Channel registers: channel `n`'s block is at `BLOCK + STRIDE n`.
pub mod channel {
    /// The first channel's block.
    pub const BLOCK: usize = 0x4000;
    /// Distance between two channels' blocks.
    pub const STRIDE: usize = 0x40;
    /// RING_BASE_LO (HI follows).
    pub const RING_BASE: usize = 0x00;
    /// RING_SIZE.
    pub const RING_SIZE: usize = 0x08;
    /// RING_PUT: the doorbell.
    pub const RING_PUT: usize = 0x0c;
    /// RING_GET.
    pub const RING_GET: usize = 0x10;
    /// CONTROL: bit 0 ENABLE, bit 1 RESET.
    pub const CONTROL: usize = 0x14;
    /// STATUS: bits 1:0 state, bit 8 BUSY.
    pub const STATUS: usize = 0x18;
    /// ERROR_CODE.
    pub const ERROR_CODE: usize = 0x1c;
    /// ERROR_VA_LO (HI follows).
    pub const ERROR_VA: usize = 0x20;
    /// FENCE_LO (HI follows).
    pub const FENCE: usize = 0x28;
    /// USERD_LO (HI follows): control page offset | ENABLE.
    pub const USERD: usize = 0x30;
    /// INTR_STATUS (W1C): bit 0 FENCE, bit 1 ERROR.
    pub const INTR_STATUS: usize = 0x38;
    /// CONTROL.ENABLE.
    pub const ENABLE: u32 = 1;
    /// CONTROL.RESET.
    pub const RESET: u32 = 2;
    /// STATUS state: running.
    pub const STATE_RUNNING: u32 = 1;
    /// STATUS state: stopped by an error.
    pub const STATE_STOPPED: u32 = 2;
    /// INTR_STATUS.FENCE.
    pub const INTR_FENCE: u32 = 1 << 0;
    /// INTR_STATUS.ERROR.
    pub const INTR_ERROR: u32 = 1 << 1;
    /// Control page: PUT (written by the guest).
    pub const PAGE_PUT: u64 = 0x00;
    /// Control page: GET (written by the device).
    pub const PAGE_GET: u64 = 0x04;
    /// Control page: FENCE_LO (HI follows).
    pub const PAGE_FENCE: u64 = 0x08;
    /// Control page: ERROR_CODE.
    pub const PAGE_ERROR_CODE: u64 = 0x10;
}

/// DISPI register indices the programs write.
mod dispi {
    pub const XRES: usize = 1;
    pub const YRES: usize = 2;
    pub const BPP: usize = 3;
    pub const ENABLE: usize = 4;
    pub const BANK: usize = 5;
    pub const VIRT_WIDTH: usize = 6;
    pub const VIRT_HEIGHT: usize = 7;
    pub const X_OFFSET: usize = 8;
    pub const Y_OFFSET: usize = 9;
    /// ENABLE: ENABLED | LFB_ENABLED.
    pub const ENABLED_LFB: u16 = 0x41;
}

/// Why the device could not be used.
#[derive(Debug, Error)]
pub enum GpuError {
    /// A BAR could not be mapped.
    #[error("cannot map BAR{bar}")]
    Map {
        /// The BAR.
        bar: u8,
        /// Why.
        #[source]
        source: MappingError,
    },
    /// BAR0's size could not be read.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// A register offset outside BAR2 (a bug in the program).
    #[error("register offset {0:#x} is outside BAR2")]
    Register(usize),
    /// A VRAM range outside BAR0.
    #[error("VRAM range {offset:#x}+{len:#x} is outside the {size:#x}-byte BAR0")]
    Vram {
        /// Its start.
        offset: u64,
        /// Its length.
        len: u64,
        /// BAR0's size.
        size: u64,
    },
    /// The DISPI registers could not be read.
    #[error("cannot read the DISPI registers")]
    Dispi(#[source] crate::registers::RegisterError),
}

/// What the translate port answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// XLATE_STATUS: 0, or the fault reason.
    pub status: u32,
    /// XLATE_RESULT.
    pub result: u64,
    /// XLATE_TARGET: 0 VRAM, 1 guest memory.
    pub target: u32,
}

/// The first unacknowledged GPU MMU fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRecord {
    /// FAULT_VA.
    pub va: u64,
    /// FAULT_INFO: bits 5:0 channel, bit 8 write, bits 19:16 reason.
    pub info: u32,
    /// FAULT_COUNT.
    pub count: u32,
}

impl FaultRecord {
    /// FAULT_INFO's fields: (channel, write, reason).
    pub fn fields(&self) -> (u32, bool, u32) {
        (
            self.info & 0x3f,
            self.info & (1 << 8) != 0,
            (self.info >> 16) & 0xf,
        )
    }
}

/// A display mode and where its frame lies, for the DISPI registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayMode {
    /// Visible width.
    pub width: u16,
    /// Visible height.
    pub height: u16,
    /// Pixels per line in memory.
    pub virt_width: u16,
    /// Lines in memory.
    pub virt_height: u16,
    /// Scanout start column.
    pub x_offset: u16,
    /// Scanout start line.
    pub y_offset: u16,
}

impl DisplayMode {
    /// Where the frame lies in VRAM (32 bits per pixel).
    pub fn layout(&self) -> FrameLayout {
        let bpp = BYTES_PER_PIXEL as u64;
        let pitch = u64::from(self.virt_width) * bpp;
        FrameLayout {
            start: u64::from(self.x_offset) * bpp + u64::from(self.y_offset) * pitch,
            pitch,
            width: self.width.into(),
            height: self.height.into(),
        }
    }
}

/// One vGPU, mapped.
#[derive(Debug)]
pub struct Gpu {
    address: String,
    bar0: Mapping,
    bar2: Mapping,
    vram: u64,
}

impl Gpu {
    /// Maps all of BAR0 and BAR2 of `device`, read-write.
    pub fn open(device: &PciDevice) -> Result<Self, GpuError> {
        let vram = crate::scanout::vram_size(device)?;
        let len = usize::try_from(vram).map_err(|_| GpuError::Vram {
            offset: 0,
            len: vram,
            size: vram,
        })?;
        let bar0 = Mapping::bar_with(&device.bar_path(0), 0, len, Access::ReadWrite)
            .map_err(|source| GpuError::Map { bar: 0, source })?;
        let bar2 = Mapping::bar_with(&device.bar_path(2), 0, BAR2_SIZE, Access::ReadWrite)
            .map_err(|source| GpuError::Map { bar: 2, source })?;
        Ok(Gpu {
            address: device.address.clone(),
            bar0,
            bar2,
            vram,
        })
    }

    /// The function's PCI address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// VRAM (BAR0) size in bytes.
    pub fn vram_size(&self) -> u64 {
        self.vram
    }

    /// Reads the 32-bit register at BAR2 offset `offset`.
    pub fn reg(&self, offset: usize) -> Result<u32, GpuError> {
        self.bar2.read_u32(offset).ok_or(GpuError::Register(offset))
    }

    /// Writes the 32-bit register at BAR2 offset `offset`.
    pub fn set_reg(&self, offset: usize, value: u32) -> Result<(), GpuError> {
        self.bar2
            .write_u32(offset, value)
            .ok_or(GpuError::Register(offset))
    }

    /// Reads a 64-bit register pair (LO at `offset`, HI after it).
    pub fn reg64(&self, offset: usize) -> Result<u64, GpuError> {
        let lo = self.reg(offset)?;
        let hi = self.reg(offset + 4)?;
        Ok(u64::from(hi) << 32 | u64::from(lo))
    }

    /// Reads register `reg` of channel `n`.
    pub fn channel_reg(&self, n: u32, reg: usize) -> Result<u32, GpuError> {
        self.reg(channel::BLOCK + channel::STRIDE * n as usize + reg)
    }

    /// Writes register `reg` of channel `n`.
    pub fn set_channel_reg(&self, n: u32, reg: usize, value: u32) -> Result<(), GpuError> {
        self.set_reg(channel::BLOCK + channel::STRIDE * n as usize + reg, value)
    }

    /// Reads a 64-bit register pair of channel `n`.
    pub fn channel_reg64(&self, n: u32, reg: usize) -> Result<u64, GpuError> {
        self.reg64(channel::BLOCK + channel::STRIDE * n as usize + reg)
    }

    fn vram_at(&self, offset: u64, len: u64) -> Result<usize, GpuError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.vram => Ok(offset as usize),
            _ => Err(GpuError::Vram {
                offset,
                len,
                size: self.vram,
            }),
        }
    }

    /// Reads the 32-bit word at VRAM offset `offset`.
    pub fn vram_u32(&self, offset: u64) -> Result<u32, GpuError> {
        let at = self.vram_at(offset, 4)?;
        self.bar0.read_u32(at).ok_or(GpuError::Vram {
            offset,
            len: 4,
            size: self.vram,
        })
    }

    /// Reads the 64-bit little-endian word at VRAM offset `offset`.
    pub fn vram_u64(&self, offset: u64) -> Result<u64, GpuError> {
        let lo = self.vram_u32(offset)?;
        let hi = self.vram_u32(offset + 4)?;
        Ok(u64::from(hi) << 32 | u64::from(lo))
    }

    /// Writes the 32-bit word at VRAM offset `offset`.
    pub fn set_vram_u32(&self, offset: u64, value: u32) -> Result<(), GpuError> {
        let at = self.vram_at(offset, 4)?;
        self.bar0.write_u32(at, value).ok_or(GpuError::Vram {
            offset,
            len: 4,
            size: self.vram,
        })
    }

    /// Copies `bytes` to VRAM offset `offset`.
    pub fn write_vram(&self, offset: u64, bytes: &[u8]) -> Result<(), GpuError> {
        let at = self.vram_at(offset, bytes.len() as u64)?;
        self.bar0.write(at, bytes).ok_or(GpuError::Vram {
            offset,
            len: bytes.len() as u64,
            size: self.vram,
        })
    }

    /// Writes `words` (little-endian) to VRAM offset `offset`.
    pub fn write_vram_words(&self, offset: u64, words: &[u32]) -> Result<(), GpuError> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write_vram(offset, &bytes)
    }

    /// Zeroes `len` bytes of VRAM from `offset`.
    pub fn zero_vram(&self, offset: u64, len: u64) -> Result<(), GpuError> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.write_vram(offset + done, &zeros[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// Sets channel `n`'s page-table root to the level-4 table at VRAM
    /// offset `root` (writing PT_ROOT_HI commits it and walks the tables).
    pub fn set_pt_root(&self, n: u32, root: u64) -> Result<(), GpuError> {
        let at = control::PT_ROOT + control::PT_ROOT_STRIDE * n as usize;
        self.set_reg(
            at,
            (root as u32 & !0xfff) | crate::page_tables::PTE_VALID as u32,
        )?;
        self.set_reg(at + 4, (root >> 32) as u32)
    }

    /// Translates `va` through channel `n`'s MMU with the translate port.
    pub fn translate(&self, n: u32, va: u64, write: bool) -> Result<Translation, GpuError> {
        self.set_reg(control::XLATE_VA, va as u32)?;
        self.set_reg(control::XLATE_VA + 4, (va >> 32) as u32)?;
        self.set_reg(control::XLATE_CONTROL, n | u32::from(write) << 8)?;
        Ok(Translation {
            status: self.reg(control::XLATE_STATUS)?,
            result: self.reg64(control::XLATE_RESULT)?,
            target: self.reg(control::XLATE_TARGET)?,
        })
    }

    /// The fault registers.
    pub fn fault(&self) -> Result<FaultRecord, GpuError> {
        Ok(FaultRecord {
            va: self.reg64(control::FAULT_VA)?,
            info: self.reg(control::FAULT_INFO)?,
            count: self.reg(control::FAULT_COUNT)?,
        })
    }

    /// The DISPI registers.
    pub fn dispi(&self) -> Result<Dispi, GpuError> {
        read_dispi(&self.bar2).map_err(GpuError::Dispi)
    }

    fn set_dispi(&self, index: usize, value: u16) -> Result<(), GpuError> {
        let at = DISPI_BASE + 2 * index;
        self.bar2.write_u16(at, value).ok_or(GpuError::Register(at))
    }

    /// Sets `mode` (32 bits per pixel) through the DISPI registers, in the
    /// order the bochs driver writes them.
    pub fn set_mode(&self, mode: &DisplayMode) -> Result<(), GpuError> {
        self.set_dispi(dispi::ENABLE, 0)?;
        self.set_dispi(dispi::BPP, 32)?;
        self.set_dispi(dispi::XRES, mode.width)?;
        self.set_dispi(dispi::YRES, mode.height)?;
        self.set_dispi(dispi::BANK, 0)?;
        self.set_dispi(dispi::VIRT_WIDTH, mode.virt_width)?;
        self.set_dispi(dispi::VIRT_HEIGHT, mode.virt_height)?;
        self.set_dispi(dispi::X_OFFSET, mode.x_offset)?;
        self.set_dispi(dispi::Y_OFFSET, mode.y_offset)?;
        self.set_dispi(dispi::ENABLE, dispi::ENABLED_LFB)
    }

    /// Compares the frame at `layout` in VRAM with `expected(x, y)`.
    pub fn compare_frame(
        &self,
        layout: &FrameLayout,
        expected: impl Fn(u32, u32) -> u32,
    ) -> FrameComparison {
        compare_frame_with(layout, expected, |offset| {
            // Outside VRAM: a value no picture has (X byte set).
            self.vram_u32(layout.start + offset).unwrap_or(u32::MAX)
        })
    }
}
