//! The `draw` program: writes the test pattern to each vGPU's fbdev device
//! (the DRM driver's fbdev emulation) and checks that the frame the display
//! registers point at, in VRAM, holds it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checkpoint;
use crate::fbdev::FbDevice;
use crate::pci::{PciDevice, SYSFS_PCI_DEVICES};
use crate::report::Reporter;
use crate::scanout::wait_for_pattern;

/// How long the fbdev emulation may take to copy its shadow buffer to VRAM
/// (its worker runs every few tens of milliseconds; TCG is slow).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the kernel lists the console drivers bound to virtual terminals.
const VTCONSOLES: &str = "/sys/class/vtconsole";

/// Runs the draw checks with `seed`; returns the number of failed checks.
pub fn run(seed: u32) -> usize {
    let mut report = Reporter::new("draw");
    let devices = match PciDevice::find_vgpus(Path::new(SYSFS_PCI_DEVICES)) {
        Ok(devices) if !devices.is_empty() => devices,
        Ok(_) => {
            report.fail("fbdev", "no vGPU found");
            return report.failures();
        }
        Err(e) => {
            report.fail("fbdev", e);
            return report.failures();
        }
    };
    // fbcon draws the console (and its cursor) into the first framebuffer:
    // detach it so that the pattern is the only thing drawn there.
    for unbound in unbind_fbcon() {
        report.info(format!("unbound {}", unbound.display()));
    }
    for device in &devices {
        let at = &device.address;
        let result = draw_device(device, seed).map_err(|e| format!("{at} {e}"));
        report.record("fbdev", result.map(|d| format!("{at} {d}")));
    }
    report.failures()
}

fn draw_device(device: &PciDevice, seed: u32) -> Result<String, String> {
    let fb = device
        .framebuffers()
        .into_iter()
        .next()
        .ok_or("no fb device")?;
    let path = PathBuf::from("/dev").join(&fb);
    let mut dev = FbDevice::open(&path).map_err(|e| e.to_string())?;
    dev.activate().map_err(|e| format!("{fb}: {e}"))?;
    let geometry = dev.geometry().map_err(|e| e.to_string())?;
    dev.write_pattern(&geometry, seed)
        .map_err(|e| format!("{fb} {geometry}: {e}"))?;
    let seen = wait_for_pattern(device, seed, FLUSH_TIMEOUT)
        .map_err(|e| format!("{fb} {geometry}: {e}"))?;
    checkpoint::hold(
        &device.address,
        "draw",
        Some(seed),
        geometry.xres,
        geometry.yres,
    );
    Ok(format!("{fb} {geometry} wrote seed {seed}; {seen}"))
}

/// Unbinds every framebuffer console from the virtual terminals; returns
/// the vtconsole entries it unbound. Best effort: a system without fbcon
/// has nothing to unbind.
pub fn unbind_fbcon() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(VTCONSOLES) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            fs::read_to_string(p.join("name")).is_ok_and(|n| n.contains("frame buffer"))
                && fs::read_to_string(p.join("bind")).is_ok_and(|b| b.trim() == "1")
        })
        .filter(|p| fs::write(p.join("bind"), "0").is_ok())
        .collect()
}
