//! A framebuffer device (`/dev/fbN`): its geometry from the FBIOGET ioctls
//! (include/uapi/linux/fb.h), and drawing the pattern with `write()`.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use thiserror::Error;

use crate::pattern::{BYTES_PER_PIXEL, fill_row};

/// FBIOGET_VSCREENINFO.
const FBIOGET_VSCREENINFO: u64 = 0x4600;
/// FBIOPUT_VSCREENINFO.
const FBIOPUT_VSCREENINFO: u64 = 0x4601;
/// FBIOGET_FSCREENINFO.
const FBIOGET_FSCREENINFO: u64 = 0x4602;
/// fb_var_screeninfo.activate: FB_ACTIVATE_NOW (0) | FB_ACTIVATE_FORCE,
/// i.e. apply now, even if nothing changed.
const FB_ACTIVATE_NOW_FORCE: u32 = 0x80;

/// Lines per `write()`. A write of exactly one scanline never reaches VRAM
/// on the Debian 6.12 guest kernel (the fbdev emulation's damage handling
/// loses it), so the programs always write several lines at once.
pub const LINES_PER_WRITE: u32 = 16;

/// Why a framebuffer device could not be used.
#[derive(Debug, Error)]
pub enum FbdevError {
    /// Opening failed.
    #[error("cannot open {path}")]
    Open {
        /// The device.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An ioctl failed.
    #[error("{0} failed")]
    Ioctl(&'static str, #[source] io::Error),
    /// Writing failed.
    #[error("writing line {line} failed")]
    Write {
        /// The first line of the failed write.
        line: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The mode is not one the pattern can be drawn in.
    #[error("unsupported mode: {0}")]
    Unsupported(String),
}

/// struct fb_bitfield.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Bitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

/// struct fb_var_screeninfo.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct VarScreeninfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: Bitfield,
    green: Bitfield,
    blue: Bitfield,
    transp: Bitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    pixclock: u32,
    left_margin: u32,
    right_margin: u32,
    upper_margin: u32,
    lower_margin: u32,
    hsync_len: u32,
    vsync_len: u32,
    sync: u32,
    vmode: u32,
    rotate: u32,
    colorspace: u32,
    reserved: [u32; 4],
}

/// struct fb_fix_screeninfo.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FixScreeninfo {
    id: [u8; 16],
    smem_start: libc::c_ulong,
    smem_len: u32,
    type_: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: libc::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

// The kernel copies exactly these sizes (checked against linux/fb.h).
const _: () = assert!(size_of::<VarScreeninfo>() == 160);
const _: () = assert!(size_of::<FixScreeninfo>() == 80);

/// What the pattern-drawing code needs of a framebuffer's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FbGeometry {
    /// Visible width.
    pub xres: u32,
    /// Visible height.
    pub yres: u32,
    /// Panning offset, columns.
    pub xoffset: u32,
    /// Panning offset, lines.
    pub yoffset: u32,
    /// Bits per pixel.
    pub bits_per_pixel: u32,
    /// Bytes per line.
    pub line_length: u32,
    /// Size of the framebuffer memory.
    pub smem_len: u32,
    /// The red channel's bit offset (16 for XRGB8888).
    pub red_offset: u32,
}

impl std::fmt::Display for FbGeometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{} pitch={} offset={},{} mem={}",
            self.xres,
            self.yres,
            self.bits_per_pixel,
            self.line_length,
            self.xoffset,
            self.yoffset,
            self.smem_len
        )
    }
}

/// An open framebuffer device.
#[derive(Debug)]
pub struct FbDevice {
    file: File,
}

impl FbDevice {
    /// Opens `/dev/fbN` for reading and writing.
    pub fn open(path: &Path) -> Result<Self, FbdevError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| FbdevError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(FbDevice { file })
    }

    fn var(&self) -> Result<VarScreeninfo, FbdevError> {
        let mut var = VarScreeninfo::default();
        // SAFETY: FBIOGET_VSCREENINFO writes one fb_var_screeninfo, which
        // `var` is (size pinned above), to a live exclusive borrow.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                FBIOGET_VSCREENINFO as _,
                &mut var as *mut VarScreeninfo,
            )
        };
        if ret != 0 {
            return Err(FbdevError::Ioctl(
                "FBIOGET_VSCREENINFO",
                io::Error::last_os_error(),
            ));
        }
        Ok(var)
    }

    /// Makes the framebuffer's mode the displayed one. A DRM driver's fbdev
    /// emulation sets its mode only when a console uses the framebuffer or
    /// a client sets it: fbcon takes the first one only, so the others stay
    /// dark until this.
    pub fn activate(&self) -> Result<(), FbdevError> {
        let mut var = self.var()?;
        var.activate = FB_ACTIVATE_NOW_FORCE;
        // SAFETY: FBIOPUT_VSCREENINFO reads and writes back one
        // fb_var_screeninfo, which `var` is (size pinned above).
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                FBIOPUT_VSCREENINFO as _,
                &mut var as *mut VarScreeninfo,
            )
        };
        if ret != 0 {
            return Err(FbdevError::Ioctl(
                "FBIOPUT_VSCREENINFO",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// The current mode.
    pub fn geometry(&self) -> Result<FbGeometry, FbdevError> {
        let var = self.var()?;
        let mut fix = FixScreeninfo::default();
        // SAFETY: FBIOGET_FSCREENINFO writes one fb_fix_screeninfo, which
        // `fix` is (size pinned above), to a live exclusive borrow.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                FBIOGET_FSCREENINFO as _,
                &mut fix as *mut FixScreeninfo,
            )
        };
        if ret != 0 {
            return Err(FbdevError::Ioctl(
                "FBIOGET_FSCREENINFO",
                io::Error::last_os_error(),
            ));
        }
        Ok(FbGeometry {
            xres: var.xres,
            yres: var.yres,
            xoffset: var.xoffset,
            yoffset: var.yoffset,
            bits_per_pixel: var.bits_per_pixel,
            line_length: fix.line_length,
            smem_len: fix.smem_len,
            red_offset: var.red.offset,
        })
    }

    /// Writes the pattern of `seed` over the visible frame of `geometry`,
    /// [`LINES_PER_WRITE`] lines per `write()`.
    pub fn write_pattern(&mut self, geometry: &FbGeometry, seed: u32) -> Result<(), FbdevError> {
        if geometry.bits_per_pixel as usize != BYTES_PER_PIXEL * 8 || geometry.red_offset != 16 {
            return Err(FbdevError::Unsupported(format!(
                "{geometry} red at bit {} (want XRGB8888)",
                geometry.red_offset
            )));
        }
        let pitch = geometry.line_length as usize;
        let start = u64::from(geometry.yoffset) * pitch as u64
            + u64::from(geometry.xoffset) * BYTES_PER_PIXEL as u64;
        let frame_end = start + u64::from(geometry.yres) * pitch as u64;
        if pitch < geometry.xres as usize * BYTES_PER_PIXEL
            || frame_end > u64::from(geometry.smem_len)
        {
            return Err(FbdevError::Unsupported(format!(
                "{geometry}: frame does not fit"
            )));
        }
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(|source| FbdevError::Write { line: 0, source })?;
        let mut chunk = vec![0u8; pitch * LINES_PER_WRITE as usize];
        let mut y = 0;
        while y < geometry.yres {
            let lines = LINES_PER_WRITE.min(geometry.yres - y);
            let bytes = &mut chunk[..pitch * lines as usize];
            for (i, row) in bytes.chunks_exact_mut(pitch).enumerate() {
                fill_row(row, y + i as u32, geometry.xres, seed);
            }
            self.file
                .write_all(bytes)
                .map_err(|source| FbdevError::Write { line: y, source })?;
            y += lines;
        }
        self.file
            .flush()
            .map_err(|source| FbdevError::Write { line: y, source })
    }
}
