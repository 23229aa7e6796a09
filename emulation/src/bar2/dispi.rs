//! Display registers of BAR2: the VGA I/O port bytes, the Bochs VBE DISPI
//! registers, the QEMU extended registers, and the scanout mode they
//! describe.
//!
//! Register values are stored as written (within each register's rules),
//! and the scanout is derived on demand, so the torn states between the
//! writes of a mode set never need special handling.

use crate::config::Resolution;

/// Number of VGA I/O port bytes mirrored at BAR2 + 0x400 (ports 0x3c0–0x3df).
pub const VGA_PORT_COUNT: usize = 0x20;
/// Port index (from 0x3c0) of input status 1 (port 0x3da), which reads 0.
pub const VGA_INPUT_STATUS_1: usize = 0x1a;

/// DISPI index of the ID register.
pub const DISPI_INDEX_ID: usize = 0;
/// DISPI index of XRES.
pub const DISPI_INDEX_XRES: usize = 1;
/// DISPI index of YRES.
pub const DISPI_INDEX_YRES: usize = 2;
/// DISPI index of BPP.
pub const DISPI_INDEX_BPP: usize = 3;
/// DISPI index of ENABLE.
pub const DISPI_INDEX_ENABLE: usize = 4;
/// DISPI index of BANK.
pub const DISPI_INDEX_BANK: usize = 5;
/// DISPI index of VIRT_WIDTH.
pub const DISPI_INDEX_VIRT_WIDTH: usize = 6;
/// DISPI index of VIRT_HEIGHT.
pub const DISPI_INDEX_VIRT_HEIGHT: usize = 7;
/// DISPI index of X_OFFSET.
pub const DISPI_INDEX_X_OFFSET: usize = 8;
/// DISPI index of Y_OFFSET.
pub const DISPI_INDEX_Y_OFFSET: usize = 9;
/// DISPI index of VIDEO_MEMORY_64K.
pub const DISPI_INDEX_VIDEO_MEMORY_64K: usize = 10;
/// Number of 16-bit slots in the DISPI block (index 11 is reserved).
pub const DISPI_SLOTS: usize = 12;

/// The ID the device reports after reset.
pub const DISPI_ID5: u16 = 0xb0c5;
/// Lowest ID value the guest may write.
pub const DISPI_ID0: u16 = 0xb0c0;
/// ENABLE: display enabled.
pub const DISPI_ENABLED: u16 = 0x01;
/// ENABLE: XRES/YRES/BPP read their maxima.
pub const DISPI_GETCAPS: u16 = 0x02;
/// ENABLE: 8-bit DAC.
pub const DISPI_8BIT_DAC: u16 = 0x20;
/// ENABLE: linear framebuffer.
pub const DISPI_LFB_ENABLED: u16 = 0x40;
/// ENABLE: do not clear memory (VRAM is never cleared anyway).
pub const DISPI_NOCLEARMEM: u16 = 0x80;
const DISPI_ENABLE_BITS: u16 =
    DISPI_ENABLED | DISPI_GETCAPS | DISPI_8BIT_DAC | DISPI_LFB_ENABLED | DISPI_NOCLEARMEM;

/// QEMU extended register block size (read at BAR2 + 0x600).
pub const QEXT_SIZE: u32 = 8;
/// Framebuffer byte order value: little-endian (reset value).
pub const BYTE_ORDER_LITTLE: u32 = 0x1e1e_1e1e;
/// Framebuffer byte order value: big-endian.
pub const BYTE_ORDER_BIG: u32 = 0xbebe_bebe;

/// How scanout pixels are laid out in VRAM. With the big-endian byte order
/// the bytes of each pixel are reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// 32 bpp XRGB8888 as a little-endian word: bytes B, G, R, X.
    Xrgb8888,
    /// 24 bpp: bytes B, G, R.
    Bgr888,
    /// 16 bpp RGB565 as a little-endian halfword (red in bits 15:11).
    Rgb565,
}

/// The frame the display shows, derived from the DISPI registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanoutMode {
    /// Visible width in pixels.
    pub width: u32,
    /// Visible height in lines.
    pub height: u32,
    /// Bits per pixel: 16, 24 or 32 (see [`ScanoutMode::format`]).
    pub bpp: u32,
    /// Bytes from one line to the next (VIRT_WIDTH × bytes per pixel).
    pub pitch: u32,
    /// Byte offset of the first visible pixel in the VRAM slice. The last
    /// visible byte, at `offset + (height - 1) * pitch + width * bpp / 8 - 1`,
    /// is inside the slice.
    pub offset: u64,
    /// The guest selected big-endian pixels (BAR2 + 0x604).
    pub big_endian: bool,
}

impl ScanoutMode {
    /// The pixel format, by `bpp`.
    pub fn format(&self) -> PixelFormat {
        match self.bpp {
            32 => PixelFormat::Xrgb8888,
            24 => PixelFormat::Bgr888,
            _ => PixelFormat::Rgb565,
        }
    }

    /// Bytes per pixel.
    pub fn bytes_per_pixel(&self) -> u32 {
        self.bpp / 8
    }
}

/// The VGA I/O port bytes: stored and read back, except input status 1.
#[derive(Debug, Clone, Default)]
pub struct VgaPorts {
    ports: [u8; VGA_PORT_COUNT],
}

impl VgaPorts {
    /// Reads port `0x3c0 + index`.
    pub fn read(&self, index: usize) -> u8 {
        if index == VGA_INPUT_STATUS_1 {
            return 0;
        }
        self.ports.get(index).copied().unwrap_or(0)
    }

    /// Writes port `0x3c0 + index`.
    pub fn write(&mut self, index: usize, value: u8) {
        if let Some(port) = self.ports.get_mut(index) {
            *port = value;
        }
    }
}

/// The VBE DISPI register file.
#[derive(Debug, Clone)]
pub struct Dispi {
    regs: [u16; DISPI_SLOTS],
    max: Resolution,
    vram_size: u64,
}

impl Dispi {
    /// Registers at their reset values for a display of at most `max`
    /// (each side at most 0xffff) over `vram_size` bytes of VRAM.
    pub fn new(max: Resolution, vram_size: u64) -> Self {
        let mut dispi = Dispi {
            regs: [0; DISPI_SLOTS],
            max,
            vram_size,
        };
        dispi.reset();
        dispi
    }

    /// Returns every register to its reset value.
    pub fn reset(&mut self) {
        self.regs = [0; DISPI_SLOTS];
        self.regs[DISPI_INDEX_ID] = DISPI_ID5;
        self.regs[DISPI_INDEX_VIDEO_MEMORY_64K] = (self.vram_size >> 16).min(0xffff) as u16;
    }

    /// The stored value of register `index`, ignoring GETCAPS.
    pub fn stored(&self, index: usize) -> u16 {
        self.regs.get(index).copied().unwrap_or(0)
    }

    /// What a guest read of register `index` returns.
    pub fn read(&self, index: usize) -> u16 {
        if self.stored(DISPI_INDEX_ENABLE) & DISPI_GETCAPS != 0 {
            // Maxima fit: the profile's resolution is at most 4095 per side.
            match index {
                DISPI_INDEX_XRES => return self.max.width as u16,
                DISPI_INDEX_YRES => return self.max.height as u16,
                DISPI_INDEX_BPP => return 32,
                _ => {}
            }
        }
        self.stored(index)
    }

    /// Applies a guest write of `value` to register `index`; values a
    /// register does not take are ignored.
    pub fn write(&mut self, index: usize, value: u16) {
        let max = self.max;
        let accepted = match index {
            DISPI_INDEX_ID => (DISPI_ID0..=DISPI_ID5).contains(&value).then_some(value),
            DISPI_INDEX_XRES => (1..=max.width).contains(&u32::from(value)).then_some(value),
            DISPI_INDEX_YRES => (1..=max.height)
                .contains(&u32::from(value))
                .then_some(value),
            DISPI_INDEX_BPP => matches!(value, 8 | 15 | 16 | 24 | 32).then_some(value),
            DISPI_INDEX_ENABLE => Some(value & DISPI_ENABLE_BITS),
            DISPI_INDEX_BANK..=DISPI_INDEX_Y_OFFSET => Some(value),
            _ => None,
        };
        if let Some(value) = accepted {
            self.regs[index] = value;
        }
    }

    /// The frame shown, or `None` while the display is disabled or the
    /// mode is invalid (see the device interface document).
    pub fn scanout(&self, big_endian: bool) -> Option<ScanoutMode> {
        let reg = |i: usize| u64::from(self.regs[i]);
        if self.regs[DISPI_INDEX_ENABLE] & DISPI_ENABLED == 0 {
            return None;
        }
        let bpp = reg(DISPI_INDEX_BPP);
        if !matches!(bpp, 16 | 24 | 32) {
            return None;
        }
        let (width, height) = (reg(DISPI_INDEX_XRES), reg(DISPI_INDEX_YRES));
        let virt_width = reg(DISPI_INDEX_VIRT_WIDTH);
        if width == 0 || height == 0 || virt_width < width {
            return None;
        }
        // Every factor is below 2^16, so none of this can overflow a u64.
        let bytes_pp = bpp / 8;
        let pitch = virt_width * bytes_pp;
        let offset = reg(DISPI_INDEX_X_OFFSET) * bytes_pp + reg(DISPI_INDEX_Y_OFFSET) * pitch;
        let end = offset + (height - 1) * pitch + width * bytes_pp;
        if end > self.vram_size {
            return None;
        }
        Some(ScanoutMode {
            width: width as u32,
            height: height as u32,
            bpp: bpp as u32,
            pitch: pitch as u32,
            offset,
            big_endian,
        })
    }
}

/// The QEMU extended registers: block size and framebuffer byte order.
#[derive(Debug, Clone)]
pub struct QemuExt {
    byte_order: u32,
}

impl Default for QemuExt {
    fn default() -> Self {
        QemuExt {
            byte_order: BYTE_ORDER_LITTLE,
        }
    }
}

impl QemuExt {
    /// Reads the 32-bit register at `index` (0: size, 1: byte order).
    pub fn read(&self, index: usize) -> u32 {
        match index {
            0 => QEXT_SIZE,
            1 => self.byte_order,
            _ => 0,
        }
    }

    /// Writes the 32-bit register at `index`; only the two byte-order
    /// values are taken.
    pub fn write(&mut self, index: usize, value: u32) {
        if index == 1 && matches!(value, BYTE_ORDER_LITTLE | BYTE_ORDER_BIG) {
            self.byte_order = value;
        }
    }

    /// True when the guest selected big-endian pixels.
    pub fn big_endian(&self) -> bool {
        self.byte_order == BYTE_ORDER_BIG
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Resolution = Resolution {
        width: 1920,
        height: 1080,
    };

    fn mode_set(dispi: &mut Dispi, width: u16, height: u16, bpp: u16) {
        // The order Linux bochs_hw_setmode uses.
        dispi.write(DISPI_INDEX_ENABLE, 0);
        dispi.write(DISPI_INDEX_BPP, bpp);
        dispi.write(DISPI_INDEX_XRES, width);
        dispi.write(DISPI_INDEX_YRES, height);
        dispi.write(DISPI_INDEX_BANK, 0);
        dispi.write(DISPI_INDEX_VIRT_WIDTH, width);
        dispi.write(DISPI_INDEX_VIRT_HEIGHT, height);
        dispi.write(DISPI_INDEX_X_OFFSET, 0);
        dispi.write(DISPI_INDEX_Y_OFFSET, 0);
        dispi.write(DISPI_INDEX_ENABLE, DISPI_ENABLED | DISPI_LFB_ENABLED);
    }

    #[test]
    fn out_of_rule_values_are_ignored() {
        let mut dispi = Dispi::new(MAX, 16 << 20);
        dispi.write(DISPI_INDEX_ID, 0xb0c6);
        dispi.write(DISPI_INDEX_XRES, 1921);
        dispi.write(DISPI_INDEX_YRES, 0);
        dispi.write(DISPI_INDEX_BPP, 12);
        dispi.write(DISPI_INDEX_VIDEO_MEMORY_64K, 1);
        assert_eq!(dispi.read(DISPI_INDEX_ID), DISPI_ID5);
        assert_eq!(dispi.read(DISPI_INDEX_XRES), 0);
        assert_eq!(dispi.read(DISPI_INDEX_YRES), 0);
        assert_eq!(dispi.read(DISPI_INDEX_BPP), 0);
        assert_eq!(dispi.read(DISPI_INDEX_VIDEO_MEMORY_64K), 256);
        dispi.write(DISPI_INDEX_ID, 0xb0c0);
        assert_eq!(dispi.read(DISPI_INDEX_ID), 0xb0c0);
        dispi.write(DISPI_INDEX_ENABLE, 0xffff);
        assert_eq!(dispi.read(DISPI_INDEX_ENABLE), 0xe3);
    }

    #[test]
    fn video_memory_saturates_for_4_gib_and_more() {
        assert_eq!(
            Dispi::new(MAX, 4 << 30).read(DISPI_INDEX_VIDEO_MEMORY_64K),
            0xffff
        );
        assert_eq!(
            Dispi::new(MAX, 2 << 30).read(DISPI_INDEX_VIDEO_MEMORY_64K),
            0x8000
        );
    }

    #[test]
    fn scanout_needs_16_24_or_32_bpp() {
        let mut dispi = Dispi::new(MAX, 16 << 20);
        for (bpp, shown) in [(8, false), (15, false), (16, true), (24, true), (32, true)] {
            mode_set(&mut dispi, 640, 480, bpp);
            assert_eq!(dispi.scanout(false).is_some(), shown, "{bpp} bpp");
        }
        mode_set(&mut dispi, 640, 480, 24);
        let mode = dispi.scanout(false).unwrap();
        assert_eq!((mode.pitch, mode.format()), (1920, PixelFormat::Bgr888));
    }

    #[test]
    fn frame_ending_exactly_at_the_vram_end_is_shown() {
        // 1 MiB = 512 lines of 512 px at 32 bpp.
        let mut dispi = Dispi::new(MAX, 1 << 20);
        mode_set(&mut dispi, 512, 512, 32);
        assert!(dispi.scanout(false).is_some());
        dispi.write(DISPI_INDEX_X_OFFSET, 1);
        assert_eq!(dispi.scanout(false), None);
    }

    #[test]
    fn vga_input_status_reads_zero_and_other_ports_read_back() {
        let mut vga = VgaPorts::default();
        vga.write(0, 0x20);
        vga.write(VGA_INPUT_STATUS_1, 0xff);
        assert_eq!(vga.read(0), 0x20);
        assert_eq!(vga.read(VGA_INPUT_STATUS_1), 0);
        assert_eq!(vga.read(VGA_PORT_COUNT), 0);
    }

    #[test]
    fn byte_order_takes_only_the_two_magic_values() {
        let mut qext = QemuExt::default();
        qext.write(1, 0x1234_5678);
        assert_eq!(qext.read(1), BYTE_ORDER_LITTLE);
        qext.write(1, BYTE_ORDER_BIG);
        assert!(qext.big_endian());
        qext.write(0, 0);
        assert_eq!(qext.read(0), QEXT_SIZE);
    }
}
