//! The check every drawing program ends with: the frame the display
//! registers say is scanned out lies in VRAM (BAR0) and holds the pattern.
//!
//! This reads VRAM through the guest's own mapping of BAR0, which QEMU maps
//! straight onto the daemon's VRAM slice: a match proves the pixels reached
//! the memory the daemon would show, not just a guest-side copy.

use std::time::{Duration, Instant};

use thiserror::Error;

use crate::mapping::{Mapping, MappingError};
use crate::pattern::{FrameComparison, FrameLayout, compare_frame};
use crate::pci::{PciDevice, SysfsError};
use crate::registers::{Dispi, RegisterError, Registers};

/// Why the scanout could not be compared, or did not match.
#[derive(Debug, Error)]
pub enum ScanoutError {
    /// A register could not be read.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// BAR0's size could not be read.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// The display is off or not in a 32-bit mode.
    #[error("no 32-bit scanout: {0}")]
    NoScanout(Dispi),
    /// The frame reaches past the end of VRAM.
    #[error("{dispi}: frame ends at {end:#x}, past VRAM ({vram:#x} bytes)")]
    OutsideVram {
        /// The registers.
        dispi: Dispi,
        /// Where the frame ends.
        end: u64,
        /// VRAM size.
        vram: u64,
    },
    /// BAR0 could not be mapped.
    #[error("cannot map the scanout in BAR0")]
    Map(#[source] MappingError),
    /// The frame does not hold the pattern.
    #[error("{dispi}: {comparison}")]
    Mismatch {
        /// The registers.
        dispi: Dispi,
        /// How the frame compared.
        comparison: FrameComparison,
    },
}

/// The size of BAR0 (the VRAM aperture) of `device`.
pub fn vram_size(device: &PciDevice) -> Result<u64, SysfsError> {
    Ok(device.resources()?.first().map_or(0, |r| r.size()))
}

/// Compares the frame currently scanned out with the pattern of `seed`.
pub fn compare_scanout(
    device: &PciDevice,
    registers: &Registers,
    seed: u32,
) -> Result<(Dispi, FrameComparison), ScanoutError> {
    let dispi = registers.dispi()?;
    let layout = dispi.scanout().ok_or(ScanoutError::NoScanout(dispi))?;
    let vram = vram_size(device)?;
    let end = layout.start + layout.span();
    if end > vram {
        return Err(ScanoutError::OutsideVram { dispi, end, vram });
    }
    // mmap offsets must be page aligned: map from the page holding the start.
    let page = 4096u64;
    let map_start = layout.start - layout.start % page;
    let len = usize::try_from(end - map_start).map_err(|_| ScanoutError::OutsideVram {
        dispi,
        end,
        vram,
    })?;
    let bar0 = Mapping::bar(&device.bar_path(0), map_start, len).map_err(ScanoutError::Map)?;
    let base = layout.start - map_start;
    let relative = FrameLayout { start: 0, ..layout };
    let comparison = compare_frame(&relative, seed, |offset| {
        usize::try_from(base + offset)
            .ok()
            .and_then(|at| bar0.read_u32(at))
            // Unreachable given the bounds above; a value the pattern never
            // has (X byte set) makes it a mismatch rather than a panic.
            .unwrap_or(u32::MAX)
    });
    Ok((dispi, comparison))
}

/// Waits up to `timeout` for the scanout to hold the pattern of `seed` (the
/// fbdev emulation copies its shadow buffer to VRAM from a worker, later).
/// Returns a description of the matching frame.
pub fn wait_for_pattern(
    device: &PciDevice,
    seed: u32,
    timeout: Duration,
) -> Result<String, ScanoutError> {
    let registers = Registers::open(device)?;
    let deadline = Instant::now() + timeout;
    loop {
        let result = compare_scanout(device, &registers, seed);
        match result {
            Ok((dispi, comparison)) if comparison.matches() => {
                return Ok(format!(
                    "{dispi}: {} pixels match seed {seed}",
                    comparison.pixels
                ));
            }
            _ if Instant::now() >= deadline => {
                let (dispi, comparison) = result?;
                return Err(ScanoutError::Mismatch { dispi, comparison });
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
