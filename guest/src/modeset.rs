//! The `modeset` program: on each vGPU, through DRM/KMS, sets a second mode
//! (800x600 by default) scanning out a dumb buffer with the pattern, flips
//! to a second buffer (another VRAM offset, another seed) and back, and
//! checks after each step that the display registers and VRAM show the
//! right frame; then gives the display back to the fbdev console and checks
//! that its mode returns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checkpoint;
use crate::drm::{Card, DumbBuffer, ModeInfo, dmt_mode, mode_name};
use crate::pattern::{BYTES_PER_PIXEL, SEED_MODESET_BACK, SEED_MODESET_FRONT, fill_row};
use crate::pci::{PciDevice, SYSFS_PCI_DEVICES};
use crate::registers::{Dispi, Registers};
use crate::report::Reporter;
use crate::scanout::wait_for_pattern;
use crate::wait::wait_for;

/// How long a frame may take to show (mode sets and flips are synchronous
/// on bochs; this only absorbs a slow TCG guest).
const SHOW_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the flip-complete event may take.
const FLIP_TIMEOUT: Duration = Duration::from_secs(5);
/// Cookie of the flip to the back buffer.
const FLIP_TO_BACK: u64 = 0xb0c5_0001;
/// Cookie of the flip back to the front buffer.
const FLIP_TO_FRONT: u64 = 0xb0c5_0002;

/// The driver name bochs registers with DRM.
const BOCHS_DRM_NAME: &str = "bochs-drm";

/// Runs the modeset checks at `width` x `height`; returns the number of
/// failed checks.
pub fn run(width: u16, height: u16) -> usize {
    let mut report = Reporter::new("modeset");
    let devices = match PciDevice::find_vgpus(Path::new(SYSFS_PCI_DEVICES)) {
        Ok(devices) if !devices.is_empty() => devices,
        Ok(_) => {
            report.fail("setcrtc", "no vGPU found");
            return report.failures();
        }
        Err(e) => {
            report.fail("setcrtc", e);
            return report.failures();
        }
    };
    for device in &devices {
        if let Err(e) = modeset_device(&mut report, device, width, height) {
            report.fail("setcrtc", format!("{} {e}", device.address));
        }
    }
    report.failures()
}

/// The display pipeline of one card the program drives.
struct Pipeline {
    crtc: u32,
    connector: u32,
    mode: ModeInfo,
    /// The mode the console had, to check that it comes back.
    console_mode: Option<ModeInfo>,
}

fn choose_pipeline(
    report: &Reporter,
    card: &Card,
    at: &str,
    width: u16,
    height: u16,
) -> Result<Pipeline, String> {
    let resources = card.resources().map_err(|e| e.to_string())?;
    let connector = resources
        .connectors
        .iter()
        .filter_map(|&id| card.connector(id).ok())
        .find(|c| c.connected)
        .ok_or("no connected connector")?;
    let names: Vec<_> = connector.modes.iter().map(mode_name).collect();
    report.info(format!(
        "{at} connector {} modes [{}]",
        connector.id,
        names.join(" ")
    ));
    let mode = connector
        .modes
        .iter()
        .find(|m| m.hdisplay == width && m.vdisplay == height)
        .copied()
        .or_else(|| dmt_mode(width, height))
        .ok_or(format!("no {width}x{height} mode listed or known"))?;
    let encoder_id = match connector.encoder_id {
        0 => *connector
            .encoders
            .first()
            .ok_or("connector has no encoder")?,
        id => id,
    };
    let encoder = card.encoder(encoder_id).map_err(|e| e.to_string())?;
    let crtc = match encoder.crtc_id {
        0 => resources
            .crtcs
            .iter()
            .enumerate()
            .find(|(i, _)| encoder.possible_crtcs & (1 << i) != 0)
            .map(|(_, &id)| id)
            .ok_or("encoder has no possible CRTC")?,
        id => id,
    };
    let console_mode = card.crtc(crtc).ok().and_then(|c| c.mode);
    Ok(Pipeline {
        crtc,
        connector: connector.id,
        mode,
        console_mode,
    })
}

fn filled_buffer(
    card: &Card,
    width: u16,
    height: u16,
    seed: u32,
) -> Result<(DumbBuffer, u32), String> {
    let buffer = card
        .create_dumb(width.into(), height.into())
        .map_err(|e| e.to_string())?;
    let pitch = buffer.pitch as usize;
    if pitch < usize::from(width) * BYTES_PER_PIXEL {
        return Err(format!(
            "dumb buffer pitch {pitch} is too small for {width} pixels"
        ));
    }
    let mut row = vec![0u8; pitch];
    for y in 0..u32::from(height) {
        fill_row(&mut row, y, width.into(), seed);
        buffer
            .mapping
            .write(y as usize * pitch, &row)
            .ok_or(format!(
                "dumb buffer of {} bytes is too small",
                buffer.mapping.len()
            ))?;
    }
    let fb = card.add_framebuffer(&buffer).map_err(|e| e.to_string())?;
    Ok((buffer, fb))
}

/// Checks that the registers show `width` x `height` at 32 bpp and that VRAM
/// there holds the pattern of `seed`; returns the registers.
fn check_shown(
    device: &PciDevice,
    width: u16,
    height: u16,
    seed: u32,
) -> Result<(Dispi, String), String> {
    let registers = Registers::open(device).map_err(|e| e.to_string())?;
    let dispi = wait_for(SHOW_TIMEOUT, || {
        registers
            .dispi()
            .ok()
            .filter(|d| d.enabled() && d.xres == width && d.yres == height && d.bpp == 32)
    })
    .ok_or_else(|| match registers.dispi() {
        Ok(d) => format!("{d}, expected {width}x{height}x32 enabled"),
        Err(e) => e.to_string(),
    })?;
    let seen = wait_for_pattern(device, seed, SHOW_TIMEOUT).map_err(|e| e.to_string())?;
    Ok((dispi, seen))
}

fn modeset_device(
    report: &mut Reporter,
    device: &PciDevice,
    width: u16,
    height: u16,
) -> Result<(), String> {
    let at = device.address.as_str();
    let card_name = device.drm_cards().into_iter().next().ok_or("no DRM card")?;
    let card_path = PathBuf::from("/dev/dri").join(&card_name);
    let card = Card::open(&card_path).map_err(|e| e.to_string())?;
    let driver = card.driver_name().map_err(|e| e.to_string())?;
    if driver != BOCHS_DRM_NAME {
        return Err(format!(
            "{card_name} is driven by {driver}, expected {BOCHS_DRM_NAME}"
        ));
    }
    card.set_master().map_err(|e| e.to_string())?;
    if !card.has_dumb_buffers().map_err(|e| e.to_string())? {
        return Err(format!("{card_name} has no dumb buffers"));
    }
    let pipe = choose_pipeline(report, &card, at, width, height)?;
    let (front, front_fb) = filled_buffer(&card, width, height, SEED_MODESET_FRONT)?;
    let (back, back_fb) = filled_buffer(&card, width, height, SEED_MODESET_BACK)?;

    let shown = card
        .set_crtc(pipe.crtc, front_fb, &[pipe.connector], &pipe.mode)
        .map_err(|e| e.to_string())
        .and_then(|()| check_shown(device, width, height, SEED_MODESET_FRONT));
    let front_dispi = shown.as_ref().ok().map(|(d, _)| *d);
    if shown.is_ok() {
        checkpoint::hold(
            at,
            "modeset-front",
            Some(SEED_MODESET_FRONT),
            width.into(),
            height.into(),
        );
    }
    report.record(
        "setcrtc",
        shown
            .map(|(_, seen)| format!("{at} {card_name} {} front: {seen}", mode_name(&pipe.mode)))
            .map_err(|e| format!("{at} {card_name} {}: {e}", mode_name(&pipe.mode))),
    );

    let flipped = card
        .page_flip(pipe.crtc, back_fb, FLIP_TO_BACK)
        .and_then(|()| card.wait_flip(FLIP_TO_BACK, FLIP_TIMEOUT))
        .map_err(|e| e.to_string())
        .and_then(|()| check_shown(device, width, height, SEED_MODESET_BACK))
        .and_then(|(dispi, seen)| match front_dispi {
            Some(front) if front.scanout() == dispi.scanout() => Err(format!(
                "the back buffer is scanned out at the front buffer's place: {dispi}"
            )),
            _ => Ok(seen),
        });
    if flipped.is_ok() {
        checkpoint::hold(
            at,
            "modeset-back",
            Some(SEED_MODESET_BACK),
            width.into(),
            height.into(),
        );
    }
    report.record(
        "flip",
        flipped
            .map(|seen| format!("{at} back: {seen}"))
            .map_err(|e| format!("{at} {e}")),
    );

    let flipped_back = card
        .page_flip(pipe.crtc, front_fb, FLIP_TO_FRONT)
        .and_then(|()| card.wait_flip(FLIP_TO_FRONT, FLIP_TIMEOUT))
        .map_err(|e| e.to_string())
        .and_then(|()| check_shown(device, width, height, SEED_MODESET_FRONT));
    report.record(
        "flip-back",
        flipped_back
            .map(|(_, seen)| format!("{at} front: {seen}"))
            .map_err(|e| format!("{at} {e}")),
    );

    // Hand the display back: with the framebuffers gone and the card closed,
    // the kernel restores the fbdev console's mode (DRM "lastclose").
    for fb in [front_fb, back_fb] {
        let _ = card.remove_framebuffer(fb);
    }
    for buffer in [front, back] {
        let handle = buffer.handle;
        drop(buffer);
        let _ = card.destroy_dumb(handle);
    }
    let _ = card.drop_master();
    drop(card);
    report.record(
        "restore",
        check_restored(device, pipe.console_mode)
            .map(|d| format!("{at} {d}"))
            .map_err(|e| format!("{at} {e}")),
    );
    Ok(())
}

fn check_restored(device: &PciDevice, console_mode: Option<ModeInfo>) -> Result<String, String> {
    let Some(mode) = console_mode else {
        return Ok("no console mode was set before; nothing to restore".into());
    };
    let registers = Registers::open(device).map_err(|e| e.to_string())?;
    wait_for(SHOW_TIMEOUT, || {
        registers
            .dispi()
            .ok()
            .filter(|d| d.enabled() && d.xres == mode.hdisplay && d.yres == mode.vdisplay)
    })
    .map(|d| format!("console mode {} back: {d}", mode_name(&mode)))
    .ok_or_else(|| match registers.dispi() {
        Ok(d) => format!("{d}, expected the console mode {} back", mode_name(&mode)),
        Err(e) => e.to_string(),
    })
}
