//! The `vram` program: checks that each vGPU's VRAM reads zero before any
//! driver has touched it, as `DEVICE_RESET` leaves it (the device interface
//! clears the VRAM slice on reset, and QEMU resets every device when the
//! machine starts and on every reboot). /init runs it before it inserts the
//! display driver, so on the boot after a reboot it sees whether what the
//! previous boot drew is gone.

use std::path::Path;

use crate::mapping::Mapping;
use crate::pci::{PciDevice, SYSFS_PCI_DEVICES};
use crate::report::Reporter;
use crate::scanout::vram_size;

/// Offset of the (low byte of the) PCI command register.
const COMMAND: usize = 0x04;
/// Command register bit 1: memory space enable.
const COMMAND_MEMORY: u8 = 1 << 1;

/// How much of VRAM is read: the previous boot's frames (the console's
/// 1920x1080 framebuffer at offset 0 and the modeset buffers after it) all
/// lie in the first few MiB; reading all of a 1 GiB slice would take the
/// emulated guest minutes.
pub const DEFAULT_CHECKED_BYTES: u64 = 16 << 20;

/// Runs the check over the first `bytes` of each vGPU's VRAM; returns the
/// number of failed checks.
pub fn run(bytes: u64) -> usize {
    let mut report = Reporter::new("vram");
    let devices = match PciDevice::find_vgpus(Path::new(SYSFS_PCI_DEVICES)) {
        Ok(devices) if !devices.is_empty() => devices,
        Ok(_) => {
            report.fail("zero", "no vGPU found");
            return report.failures();
        }
        Err(e) => {
            report.fail("zero", e);
            return report.failures();
        }
    };
    for device in &devices {
        let at = &device.address;
        let result = check_zero(device, bytes).map_err(|e| format!("{at} {e}"));
        report.record("zero", result.map(|d| format!("{at} {d}")));
    }
    report.failures()
}

fn check_zero(device: &PciDevice, bytes: u64) -> Result<String, String> {
    if let Some(driver) = device.driver() {
        return Err(format!(
            "{driver} is bound already: run this before the driver loads"
        ));
    }
    // With memory decoding off the reads would not reach VRAM at all (and
    // might read zero): make sure they do.
    let config = device.config().map_err(|e| e.to_string())?;
    let command = config.get(COMMAND).copied().unwrap_or(0);
    if command & COMMAND_MEMORY == 0 {
        return Err(format!(
            "memory decoding is off (command register {command:#04x})"
        ));
    }
    let size = vram_size(device).map_err(|e| e.to_string())?;
    let len = usize::try_from(bytes.min(size)).map_err(|e| e.to_string())?;
    let bar0 = Mapping::bar(&device.bar_path(0), 0, len).map_err(|e| e.to_string())?;
    let mut nonzero = 0u64;
    let mut first = None;
    for at in (0..len).step_by(4) {
        let word = bar0.read_u32(at).unwrap_or(u32::MAX);
        if word != 0 {
            nonzero += 1;
            first.get_or_insert((at, word));
        }
    }
    match first {
        None => Ok(format!(
            "first {} MiB of {} MiB read zero",
            len >> 20,
            size >> 20
        )),
        Some((at, word)) => Err(format!(
            "{nonzero} non-zero words in the first {} MiB, first at {at:#x}: {word:#010x}",
            len >> 20
        )),
    }
}
