//! The `probe` program: finds every vGPU function and checks what the guest
//! kernel sees of it against docs/device-interface.md: identity, BARs,
//! capability list, the bound driver, the DRM and fbdev nodes, and the
//! registers the `bochs` driver and a vGPU driver read first.

use std::path::Path;
use std::time::Duration;

use crate::config_space::{CapabilityId, capabilities, vendor_capability};
use crate::pci::{DEVICE_ID, Identity, PciDevice, Resource, SYSFS_PCI_DEVICES, VENDOR_ID};
use crate::registers::{
    CONTROL_MAGIC, CONTROL_MAX_RESOLUTION, CONTROL_VERSION, CONTROL_VRAM_SIZE, QEXT_SIZE, Registers,
};
use crate::report::Reporter;
use crate::wait::wait_for;

/// Class code of a display controller, "other".
const CLASS_DISPLAY_OTHER: u32 = 0x03_8000;
/// The `bochs` driver ignores the extended registers below this revision.
const MIN_REVISION: u32 = 2;
/// BAR2's size.
const BAR2_SIZE: u64 = 0x8000;
/// Offset of the control block in BAR2.
const CONTROL_BLOCK_OFFSET: u32 = 0x1000;
/// The names Linux's bochs DRM driver registers its PCI driver under
/// (`bochs-drm` up to at least 6.12; the module is `bochs`).
const BOCHS_DRIVERS: [&str; 2] = ["bochs-drm", "bochs"];
/// The control block's MAGIC.
const CONTROL_BLOCK_MAGIC: u32 = 0x5550_4776;
/// Interface major version the checks know.
const INTERFACE_MAJOR: u32 = 1;
/// How long the driver may take to bind and to create its nodes.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the host expects to find.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// Number of vGPU functions; `None`: at least one.
    pub expect: Option<usize>,
    /// Subsystem ids (vendor, device) the functions must have, one per
    /// function, in any order; empty: not checked.
    pub subsystems: Vec<(u32, u32)>,
}

/// Runs the probe checks; returns the number of failed checks.
pub fn run(options: &ProbeOptions) -> usize {
    let mut report = Reporter::new("probe");
    let devices = match PciDevice::find_vgpus(Path::new(SYSFS_PCI_DEVICES)) {
        Ok(devices) => devices,
        Err(e) => {
            report.fail("count", e);
            return report.failures();
        }
    };
    let addresses: Vec<_> = devices.iter().map(|d| d.address.as_str()).collect();
    let count_ok = match options.expect {
        Some(n) => devices.len() == n,
        None => !devices.is_empty(),
    };
    let count_detail = format!(
        "{} functions {VENDOR_ID:04x}:{DEVICE_ID:04x} [{}], expected {}",
        devices.len(),
        addresses.join(" "),
        options
            .expect
            .map_or("at least 1".to_string(), |n| n.to_string())
    );
    if count_ok {
        report.pass("count", count_detail);
    } else {
        report.fail("count", count_detail);
    }

    let mut identities = Vec::new();
    for device in &devices {
        if let Some(identity) = check_device(&mut report, device) {
            identities.push(identity);
        }
    }
    if !options.subsystems.is_empty() {
        check_subsystems(&mut report, &options.subsystems, &identities);
    }
    report.failures()
}

fn check_device(report: &mut Reporter, device: &PciDevice) -> Option<Identity> {
    let at = &device.address;
    let identity = match device.identity() {
        Ok(identity) => identity,
        Err(e) => {
            report.fail("identity", format!("{at} {e}"));
            return None;
        }
    };
    report.record(
        "identity",
        check_identity(&identity)
            .map(|()| format!("{at} {identity}"))
            .map_err(|e| format!("{at} {identity}: {e}")),
    );
    let bar0 = match device.resources() {
        Ok(resources) => {
            let result = check_bars(&resources);
            let bar0 = result.as_ref().ok().map(|(size, _)| *size);
            report.record(
                "bars",
                result
                    .map(|(_, d)| format!("{at} {d}"))
                    .map_err(|e| format!("{at} {e}")),
            );
            bar0
        }
        Err(e) => {
            report.fail("bars", format!("{at} {e}"));
            None
        }
    };
    report.record(
        "caps",
        check_capabilities(device, bar0)
            .map(|d| format!("{at} {d}"))
            .map_err(|e| format!("{at} {e}")),
    );
    let is_bochs = |d: &String| BOCHS_DRIVERS.contains(&d.as_str());
    match wait_for(NODE_TIMEOUT, || device.driver().filter(is_bochs)) {
        Some(driver) => report.pass("driver", format!("{at} {driver}")),
        None => report.fail(
            "driver",
            format!(
                "{at} bound to {:?}, expected one of {BOCHS_DRIVERS:?}",
                device.driver()
            ),
        ),
    }
    let nodes = wait_for(NODE_TIMEOUT, || {
        let (cards, fbs) = (device.drm_cards(), device.framebuffers());
        (!cards.is_empty() && !fbs.is_empty()).then_some((cards, fbs))
    });
    match nodes {
        Some((cards, fbs)) => report.pass(
            "nodes",
            format!("{at} drm={} fb={}", cards.join(","), fbs.join(",")),
        ),
        None => report.fail(
            "nodes",
            format!(
                "{at} drm={:?} fb={:?}: want a DRM card and an fb device",
                device.drm_cards(),
                device.framebuffers()
            ),
        ),
    }
    report.record(
        "regs",
        check_registers(device, bar0)
            .map(|d| format!("{at} {d}"))
            .map_err(|e| format!("{at} {e}")),
    );
    Some(identity)
}

fn check_identity(id: &Identity) -> Result<(), String> {
    let mut wrong = Vec::new();
    if id.vendor != VENDOR_ID || id.device != DEVICE_ID {
        wrong.push(format!("id {:04x}:{:04x}", id.vendor, id.device));
    }
    if id.class != CLASS_DISPLAY_OTHER {
        wrong.push(format!(
            "class {:06x}, expected {CLASS_DISPLAY_OTHER:06x}",
            id.class
        ));
    }
    if id.revision < MIN_REVISION {
        wrong.push(format!(
            "revision {}, expected >= {MIN_REVISION}",
            id.revision
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{}MiB", bytes >> 20)
    } else {
        format!("{}KiB", bytes >> 10)
    }
}

/// Checks the `resource` table; returns BAR0's size and a description.
pub fn check_bars(resources: &[Resource]) -> Result<(u64, String), String> {
    let none = Resource {
        start: 0,
        end: 0,
        flags: 0,
    };
    let bar = |i: usize| resources.get(i).copied().unwrap_or(none);
    let mut wrong = Vec::new();
    let bar0 = bar(0);
    let size0 = bar0.size();
    if !(bar0.is_memory() && bar0.is_64bit() && bar0.is_prefetchable()) {
        wrong.push(format!(
            "BAR0 flags {:#x}, expected 64-bit prefetchable memory",
            bar0.flags
        ));
    }
    if !size0.is_power_of_two() || size0 < 1 << 20 {
        wrong.push(format!(
            "BAR0 size {size0:#x}, expected a power of two >= 1 MiB"
        ));
    }
    let bar2 = bar(2);
    if !bar2.is_memory() || bar2.is_64bit() || bar2.is_prefetchable() || bar2.size() != BAR2_SIZE {
        wrong.push(format!(
            "BAR2 size {:#x} flags {:#x}, expected 32 KiB 32-bit non-prefetchable memory",
            bar2.size(),
            bar2.flags
        ));
    }
    for i in [1, 3, 4, 5, 6] {
        if bar(i).size() != 0 {
            wrong.push(format!(
                "resource {i} has size {:#x}, expected none",
                bar(i).size()
            ));
        }
    }
    if wrong.is_empty() {
        Ok((
            size0,
            format!("bar0={} bar2={} rom=none", mib(size0), mib(bar2.size())),
        ))
    } else {
        Err(wrong.join("; "))
    }
}

fn check_capabilities(device: &PciDevice, bar0: Option<u64>) -> Result<String, String> {
    let config = device.config().map_err(|e| e.to_string())?;
    let list = capabilities(&config).map_err(|e| e.to_string())?;
    let shown: Vec<_> = list
        .iter()
        .map(|c| format!("{}@{:#04x}", c.id, c.offset))
        .collect();
    let shown = shown.join(",");
    let mut wrong = Vec::new();
    for want in [
        CapabilityId::PowerManagement,
        CapabilityId::Msi,
        CapabilityId::MsiX,
        CapabilityId::PciExpress,
        CapabilityId::VendorSpecific,
    ] {
        let n = list.iter().filter(|c| c.id == want).count();
        if n != 1 {
            wrong.push(format!("{n} {want} capabilities, expected 1"));
        }
    }
    let mut vendor_detail = String::new();
    if let Some(cap) = list.iter().find(|c| c.id == CapabilityId::VendorSpecific) {
        match vendor_capability(&config, cap.offset) {
            Ok(v) => {
                vendor_detail = format!(
                    " vndr(v{} control=bar{}+{:#x} vram={}MiB)",
                    v.version, v.control_block_bar, v.control_block_offset, v.vram_mib
                );
                if v.control_block_bar != 2 || v.control_block_offset != CONTROL_BLOCK_OFFSET {
                    wrong.push(format!(
                        "control block at BAR{} + {:#x}, expected BAR2 + {CONTROL_BLOCK_OFFSET:#x}",
                        v.control_block_bar, v.control_block_offset
                    ));
                }
                if let Some(size) = bar0.filter(|&s| u64::from(v.vram_mib) << 20 != s) {
                    wrong.push(format!(
                        "vendor capability says {} MiB of VRAM, BAR0 is {}",
                        v.vram_mib,
                        mib(size)
                    ));
                }
            }
            Err(e) => wrong.push(e.to_string()),
        }
    }
    if wrong.is_empty() {
        Ok(format!("{shown}{vendor_detail} config={}B", config.len()))
    } else {
        Err(format!("{shown}: {}", wrong.join("; ")))
    }
}

fn check_registers(device: &PciDevice, bar0: Option<u64>) -> Result<String, String> {
    let regs = Registers::open(device).map_err(|e| e.to_string())?;
    let read = |offset| regs.read_u32(offset).map_err(|e| e.to_string());
    let mut wrong = Vec::new();
    let magic = read(CONTROL_MAGIC)?;
    if magic != CONTROL_BLOCK_MAGIC {
        wrong.push(format!(
            "MAGIC {magic:#010x}, expected {CONTROL_BLOCK_MAGIC:#010x}"
        ));
    }
    let version = read(CONTROL_VERSION)?;
    if version >> 16 != INTERFACE_MAJOR {
        wrong.push(format!(
            "VERSION {version:#010x}, expected major {INTERFACE_MAJOR}"
        ));
    }
    let vram = u64::from(read(CONTROL_VRAM_SIZE)?) | u64::from(read(CONTROL_VRAM_SIZE + 4)?) << 32;
    if bar0.is_some_and(|size| size != vram) {
        wrong.push(format!("VRAM_SIZE {vram:#x} differs from BAR0's size"));
    }
    let max = read(CONTROL_MAX_RESOLUTION)?;
    let qext = read(QEXT_SIZE)?;
    if qext != 8 {
        wrong.push(format!("extended register block size {qext}, expected 8"));
    }
    let dispi = regs.dispi().map_err(|e| e.to_string())?;
    if !(0xb0c0..=0xb0c5).contains(&dispi.id) {
        wrong.push(format!(
            "DISPI ID {:#06x}, expected 0xb0c0..=0xb0c5",
            dispi.id
        ));
    }
    let expected_64k = (vram >> 16).min(0xffff);
    if u64::from(dispi.video_memory_64k) != expected_64k {
        wrong.push(format!(
            "VIDEO_MEMORY_64K {}, expected {expected_64k}",
            dispi.video_memory_64k
        ));
    }
    let detail = format!(
        "magic={magic:#010x} version={version:#010x} vram={} max={}x{} {dispi}",
        mib(vram),
        max & 0xffff,
        max >> 16
    );
    if wrong.is_empty() {
        Ok(detail)
    } else {
        Err(format!("{detail}: {}", wrong.join("; ")))
    }
}

fn check_subsystems(report: &mut Reporter, expected: &[(u32, u32)], identities: &[Identity]) {
    let mut want: Vec<_> = expected.to_vec();
    let mut seen: Vec<_> = identities
        .iter()
        .map(|i| (i.subsystem_vendor, i.subsystem_device))
        .collect();
    want.sort_unstable();
    seen.sort_unstable();
    let show = |list: &[(u32, u32)]| {
        list.iter()
            .map(|(v, d)| format!("{v:04x}:{d:04x}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let detail = format!("seen [{}] expected [{}]", show(&seen), show(&want));
    if want == seen {
        report.pass("subsystems", detail);
    } else {
        report.fail("subsystems", detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(start: u64, size: u64, flags: u64) -> Resource {
        Resource {
            start,
            end: start + size - 1,
            flags,
        }
    }

    fn documented_bars() -> Vec<Resource> {
        let none = Resource {
            start: 0,
            end: 0,
            flags: 0,
        };
        vec![
            res(0x8_0000_0000, 256 << 20, 0x0014_220c),
            none,
            res(0xc100_0000, 0x8000, 0x0004_0200),
            none,
            none,
            none,
            none,
        ]
    }

    #[test]
    fn check_bars_accepts_the_documented_layout() {
        let (size, _) = check_bars(&documented_bars()).unwrap();
        assert_eq!(size, 256 << 20);
    }

    #[test]
    fn check_bars_refuses_a_32_bit_vram_bar() {
        let mut bars = documented_bars();
        bars[0].flags = 0x0004_2208;
        assert!(check_bars(&bars).unwrap_err().contains("BAR0 flags"));
    }

    #[test]
    fn check_bars_refuses_a_rom() {
        let mut bars = documented_bars();
        bars[6] = res(0xc200_0000, 0x10000, 0x0004_6200);
        assert!(check_bars(&bars).unwrap_err().contains("resource 6"));
    }

    #[test]
    fn check_identity_wants_revision_2_and_class_038000() {
        let good = Identity {
            vendor: 0x1234,
            device: 0x1111,
            class: 0x038000,
            revision: 2,
            subsystem_vendor: 0x1234,
            subsystem_device: 0x1100,
        };
        assert!(check_identity(&good).is_ok());
        assert!(
            check_identity(&Identity {
                revision: 1,
                ..good
            })
            .is_err()
        );
        assert!(
            check_identity(&Identity {
                class: 0x030000,
                ..good
            })
            .is_err()
        );
    }
}
