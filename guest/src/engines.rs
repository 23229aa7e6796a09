//! The `engines` program: on each vGPU, drives the GPU's engines the way a
//! guest driver would, and checks the picture they draw.
//!
//! For each vGPU: map BAR0 and BAR2 through sysfs; build page tables in
//! VRAM that map all of VRAM with 2 MiB pages; start channel 0 (submitting
//! through the trapped RING_PUT doorbell) and channel 1 (through its
//! control page in VRAM, a plain store through BAR0); draw the engines
//! picture ([`crate::engines_pattern`]) into the frame the display scans
//! out with FILLs and BLIT2Ds, a submission at a time; wait for each
//! channel's last fence; compare the frame in VRAM; and hold it for the
//! host's screenshot.
//!
//! How fences are waited for depends on who owns the function:
//!
//! - the vGPU that stays with `bochs` (the console's): bochs owns its
//!   interrupts, so the program polls: channel 1's fence in its control
//!   page, channel 0's fence word in VRAM. The frame is the one bochs
//!   scans out (DISPI says where).
//! - the other vGPU (the last one, when there are two or more) is handed
//!   to `vfio-pci` ([`crate::vfio`]): the program enables MSI-X with an
//!   eventfd per vector and waits on the channels' vectors (1 + channel),
//!   and it sets the display mode itself through the DISPI registers.
//!
//! Checks (per vGPU): `mmu`, `channels`, `submit`, `fences`, `frame`;
//! once, for the vGPU on vfio-pci: `msix`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checkpoint;
use crate::drawing::{Drawing, FenceWait, WorkArea, identity_tables, store_tables};
use crate::engines_pattern::EnginesPattern;
use crate::fbdev::FbDevice;
use crate::gpu::{DisplayMode, Gpu, VRAM_VA, channel as reg, control};
use crate::pattern::FrameLayout;
use crate::pci::{PciDevice, SYSFS_PCI_DEVICES};
use crate::report::Reporter;
use crate::vfio::{VfioDevice, bind_vfio_pci};

/// How long the engines may take to draw the picture (a debug build of
/// the daemon under a TCG guest takes a few seconds).
pub const DRAW_TIMEOUT: Duration = Duration::from_secs(60);
/// The scanout of the vGPU on vfio-pci: this many pixels of padding per
/// line, and the frame this far into the buffer, so that pitch and
/// offsets are not the trivial ones.
const PITCH_PADDING: u16 = 64;
const FRAME_X_OFFSET: u16 = 16;
const FRAME_Y_OFFSET: u16 = 8;

/// Which vGPU goes to vfio-pci.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VfioChoice {
    /// The last vGPU, when there are two or more (the first keeps bochs
    /// and the console).
    Auto,
    /// None: every vGPU stays with bochs and fences are polled.
    Never,
    /// The vGPU at this PCI address.
    At(String),
}

impl VfioChoice {
    /// The address of the vGPU to hand to vfio-pci among `devices`.
    pub fn pick(&self, devices: &[PciDevice]) -> Option<String> {
        match self {
            VfioChoice::Auto if devices.len() >= 2 => devices.last().map(|d| d.address.clone()),
            VfioChoice::At(address) => Some(address.clone()),
            _ => None,
        }
    }
}

/// The vGPUs, or the failure to find them reported as `check`.
pub fn find_devices(report: &mut Reporter, check: &str) -> Option<Vec<PciDevice>> {
    match PciDevice::find_vgpus(Path::new(SYSFS_PCI_DEVICES)) {
        Ok(devices) if !devices.is_empty() => Some(devices),
        Ok(_) => {
            report.fail(check, "no vGPU found");
            None
        }
        Err(e) => {
            report.fail(check, e);
            None
        }
    }
}

/// Runs the engines checks with `seed`; returns the number of failed
/// checks.
pub fn run(seed: u32, vfio: &VfioChoice) -> usize {
    let mut report = Reporter::new("engines");
    let Some(devices) = find_devices(&mut report, "mmu") else {
        return report.failures();
    };
    // fbcon would draw its cursor into the frame bochs scans out.
    for unbound in crate::draw::unbind_fbcon() {
        report.info(format!("unbound {}", unbound.display()));
    }
    let vfio_address = vfio.pick(&devices);
    for device in &devices {
        let via_vfio = vfio_address.as_deref() == Some(device.address.as_str());
        if let Err(e) = engines_device(&mut report, device, via_vfio, seed) {
            report.fail(
                if via_vfio { "msix" } else { "mmu" },
                format!("{} {e}", device.address),
            );
        }
    }
    report.failures()
}

/// Hands `device` to vfio-pci and opens it with MSI-X on every vector.
pub fn open_vfio(report: &Reporter, device: &PciDevice) -> Result<VfioDevice, String> {
    let before = bind_vfio_pci(device).map_err(|e| crate::error_chain(&e))?;
    if let Some(driver) = before {
        report.info(format!(
            "{} unbound from {driver}, bound to vfio-pci",
            device.address
        ));
    }
    let mut vfio = VfioDevice::open(device).map_err(|e| crate::error_chain(&e))?;
    // An MSI-X message is a memory write of the device: without bus
    // mastering QEMU drops it (vfio-pci leaves the bit to its user).
    crate::dma::enable_bus_master(device)
        .map_err(|e| format!("cannot enable bus mastering: {e}"))?;
    let vectors = vfio.enable_msix().map_err(|e| crate::error_chain(&e))?;
    report.info(format!(
        "{} opened through VFIO (IOMMU group {}, {} container): MSI-X enabled, {vectors} vectors with eventfds",
        device.address, vfio.group, vfio.iommu
    ));
    Ok(vfio)
}

/// The frame bochs scans out on `device`, lit through its fbdev device
/// first if the display is off.
pub fn bochs_frame(gpu: &Gpu, device: &PciDevice) -> Result<FrameLayout, String> {
    let dispi = gpu.dispi().map_err(|e| e.to_string())?;
    if let Some(layout) = dispi.scanout() {
        return Ok(layout);
    }
    let fb = device.framebuffers().into_iter().next().ok_or(format!(
        "the display is off ({dispi}) and there is no fb device"
    ))?;
    FbDevice::open(&PathBuf::from("/dev").join(&fb))
        .and_then(|dev| dev.activate())
        .map_err(|e| format!("{fb}: {e}"))?;
    let dispi = gpu.dispi().map_err(|e| e.to_string())?;
    dispi
        .scanout()
        .ok_or(format!("no 32-bit scanout after lighting {fb}: {dispi}"))
}

/// Sets a mode of the profile's largest size with a padded pitch and an
/// offset start, through the DISPI registers; returns its frame.
fn own_frame(gpu: &Gpu) -> Result<FrameLayout, String> {
    let max = gpu
        .reg(control::MAX_RESOLUTION)
        .map_err(|e| e.to_string())?;
    let (width, height) = (max as u16, (max >> 16) as u16);
    let mode = DisplayMode {
        width,
        height,
        virt_width: width + PITCH_PADDING,
        virt_height: height + FRAME_Y_OFFSET,
        x_offset: FRAME_X_OFFSET,
        y_offset: FRAME_Y_OFFSET,
    };
    gpu.set_mode(&mode).map_err(|e| e.to_string())?;
    let dispi = gpu.dispi().map_err(|e| e.to_string())?;
    match dispi.scanout() {
        Some(layout) if layout == mode.layout() => Ok(layout),
        _ => Err(format!("DISPI reads {dispi} after setting {mode:?}")),
    }
}

/// Checks the page tables through the translate port: a pixel of the
/// frame translates to its VRAM offset on both channels, writable, and
/// the first VA past VRAM is not present.
pub fn check_translations(gpu: &Gpu, frame: &FrameLayout) -> Result<String, String> {
    let probe = frame.start + frame.span() - 4;
    for n in 0..2 {
        let t = gpu
            .translate(n, VRAM_VA + probe, true)
            .map_err(|e| e.to_string())?;
        if (t.status, t.result, t.target) != (0, probe, 0) {
            return Err(format!(
                "channel {n}: VA {:#x} (write) translates to status {} result {:#x} target {}, expected VRAM {probe:#x}",
                VRAM_VA + probe,
                t.status,
                t.result,
                t.target
            ));
        }
    }
    let past = VRAM_VA + gpu.vram_size();
    let t = gpu.translate(0, past, false).map_err(|e| e.to_string())?;
    if t.status != 1 {
        return Err(format!(
            "VA {past:#x}, past VRAM, translates with status {} (expected 1, not present)",
            t.status
        ));
    }
    // The translate port records the fault it reports: acknowledge it.
    gpu.set_reg(control::FAULT_COUNT, 0)
        .and_then(|()| gpu.set_reg(control::IRQ_STATUS, control::IRQ_FAULT))
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "VRAM mapped at VA {VRAM_VA:#x} with 2 MiB pages; VA {:#x} -> VRAM {probe:#x} on channels 0 and 1, VA {past:#x} not present",
        VRAM_VA + probe
    ))
}

fn engines_device(
    report: &mut Reporter,
    device: &PciDevice,
    via_vfio: bool,
    seed: u32,
) -> Result<(), String> {
    let at = device.address.as_str();
    let vfio = if via_vfio {
        Some(open_vfio(report, device)?)
    } else {
        None
    };
    let gpu = Gpu::open(device).map_err(|e| crate::error_chain(&e))?;
    if let Some(v) = &vfio {
        let probed = selftest_vectors(&gpu, v, &[1, 2]);
        if let Err(e) = &probed {
            report.info(format!("{at} SELFTEST: {e}; {}", vfio_interrupt_counts()));
        } else if let Ok(d) = &probed {
            report.info(format!("{at} {d}"));
        }
    }
    let channels = gpu.reg(control::CHANNELS).map_err(|e| e.to_string())?;
    if channels < 2 {
        return Err(format!("{channels} channel(s); the program needs 2"));
    }
    let frame = if via_vfio {
        own_frame(&gpu)?
    } else {
        bochs_frame(&gpu, device)?
    };
    let work = WorkArea::place(gpu.vram_size(), &frame)?;
    let tables = identity_tables(&gpu, &work);
    store_tables(&gpu, &tables).map_err(|e| e.to_string())?;
    let pattern = EnginesPattern::new(frame.width, frame.height, seed);
    let mut drawing = Drawing::setup(&gpu, work, tables.root(), pattern, frame)?;

    report.record(
        "mmu",
        check_translations(&gpu, &frame).map(|d| {
            format!(
                "{at} {} tables at VRAM {:#x}: {d}",
                tables.bytes() / 4096,
                tables.root()
            )
        }),
    );
    let states: Vec<String> = drawing
        .channels
        .iter()
        .map(|c| {
            let status = gpu.channel_reg(c.index(), reg::STATUS).unwrap_or(u32::MAX);
            format!("channel {} STATUS {status:#x} via {}", c.index(), c.door())
        })
        .collect();
    let running = drawing.channels.iter().all(|c| {
        gpu.channel_reg(c.index(), reg::STATUS)
            .is_ok_and(|s| s & 3 == reg::STATE_RUNNING)
    });
    report.record(
        "channels",
        if running {
            Ok(format!("{at} {}", states.join("; ")))
        } else {
            Err(format!("{at} {}", states.join("; ")))
        },
    );

    let submitted = drawing.submit_all(&[0, 0], via_vfio, |_| {});
    let last = match submitted {
        Ok(last) => {
            let doors: Vec<String> = drawing
                .channels
                .iter()
                .map(|c| {
                    format!(
                        "channel {}: {} doorbells via {}",
                        c.index(),
                        c.doorbells(),
                        c.door()
                    )
                })
                .collect();
            report.pass(
                "submit",
                format!(
                    "{at} {:?} submissions taken (GET reached PUT after each): {}",
                    drawing.submissions(),
                    doors.join("; ")
                ),
            );
            last
        }
        Err(e) => {
            report.fail("submit", format!("{at} {e}"));
            return Ok(());
        }
    };
    let how = match &vfio {
        Some(v) => FenceWait::Msix(v),
        None => FenceWait::Poll,
    };
    let waited = drawing.wait_fences(&last, &how, DRAW_TIMEOUT);
    let fences_ok = report.record(
        "fences",
        waited
            .as_ref()
            .map(|d| format!("{at} last fences {last:?}: {d}"))
            .map_err(|e| format!("{at} {e}")),
    );
    if via_vfio {
        if waited.is_err() {
            report.info(format!("{at} {}", vfio_interrupt_counts()));
        }
        report.record(
            "msix",
            match &waited {
                Ok(d) => Ok(format!("{at} {d}")),
                Err(e) => Err(format!("{at} {e}")),
            },
        );
    }
    if !fences_ok {
        return Ok(());
    }
    let framed = report.record(
        "frame",
        drawing
            .check_frame()
            .map(|d| format!("{at} {d}"))
            .map_err(|e| format!("{at} {e}")),
    );
    if framed {
        checkpoint::hold_pattern(
            at,
            "engines",
            checkpoint::Picture::Engines(seed),
            frame.width,
            frame.height,
        );
    }
    drawing.stop().map_err(|e| e.to_string())?;
    Ok(())
}

/// The guest kernel's counts of vfio-pci's interrupts, from
/// /proc/interrupts (for a failure's report).
pub fn vfio_interrupt_counts() -> String {
    let Ok(text) = std::fs::read_to_string("/proc/interrupts") else {
        return "no /proc/interrupts".to_string();
    };
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains("vfio"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if lines.is_empty() {
        "/proc/interrupts has no vfio interrupt".to_string()
    } else {
        format!("/proc/interrupts: {}", lines.join(" | "))
    }
}

/// Raises each of `vectors` with the SELFTEST register and waits for its
/// eventfd: the interrupt path from the device to this program, before
/// any engine work.
pub fn selftest_vectors(gpu: &Gpu, vfio: &VfioDevice, vectors: &[u32]) -> Result<String, String> {
    let mut seen = Vec::new();
    for &vector in vectors {
        let eventfd = vfio
            .vector(vector)
            .ok_or(format!("no eventfd for vector {vector}"))?;
        eventfd.take().map_err(|e| e.to_string())?;
        gpu.set_reg(control::SELFTEST, vector)
            .map_err(|e| e.to_string())?;
        let got = eventfd
            .wait(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        if got == 0 {
            return Err(format!(
                "SELFTEST of vector {vector}: no interrupt within 5 s"
            ));
        }
        seen.push(vector);
    }
    gpu.set_reg(control::IRQ_STATUS, control::IRQ_SELFTEST)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "SELFTEST raised MSI-X vectors {seen:?}: each arrived on its eventfd"
    ))
}
