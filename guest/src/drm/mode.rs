//! Display modes: names, and VESA DMT timings for the modes the programs set
//! when the connector does not list them (the driver lists only what the
//! EDID offers).

use super::sys::{self, ModeInfo};

/// (width, height, clock kHz, h sync start, h sync end, h total, v sync
/// start, v sync end, v total, positive sync).
type DmtTiming = (u16, u16, u32, u16, u16, u16, u16, u16, u16, bool);

/// VESA DMT 1.0 r13 modes at 60 Hz.
const DMT_60HZ: [DmtTiming; 3] = [
    (640, 480, 25_175, 656, 752, 800, 490, 492, 525, false),
    (800, 600, 40_000, 840, 968, 1056, 601, 605, 628, true),
    (1024, 768, 65_000, 1048, 1184, 1344, 771, 777, 806, false),
];

/// The VESA DMT 60 Hz mode of `width` x `height`, if the table has it.
pub fn dmt_mode(width: u16, height: u16) -> Option<ModeInfo> {
    let &(w, h, clock, hss, hse, ht, vss, vse, vt, positive) =
        DMT_60HZ.iter().find(|m| m.0 == width && m.1 == height)?;
    let mut mode = ModeInfo {
        clock,
        hdisplay: w,
        hsync_start: hss,
        hsync_end: hse,
        htotal: ht,
        vdisplay: h,
        vsync_start: vss,
        vsync_end: vse,
        vtotal: vt,
        vrefresh: 60,
        flags: if positive {
            sys::FLAG_PHSYNC | sys::FLAG_PVSYNC
        } else {
            0
        },
        type_: sys::TYPE_USERDEF,
        ..Default::default()
    };
    let name = format!("{w}x{h}");
    mode.name[..name.len()].copy_from_slice(name.as_bytes());
    Some(mode)
}

/// The mode's name (`800x600`), from its NUL-terminated name field.
pub fn mode_name(mode: &ModeInfo) -> String {
    let end = mode
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(mode.name.len());
    String::from_utf8_lossy(&mode.name[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmt_800x600_has_the_vesa_timings() {
        let m = dmt_mode(800, 600).unwrap();
        assert_eq!(
            (m.hdisplay, m.hsync_start, m.hsync_end, m.htotal),
            (800, 840, 968, 1056)
        );
        assert_eq!(
            (m.vdisplay, m.vsync_start, m.vsync_end, m.vtotal),
            (600, 601, 605, 628)
        );
        // 40 MHz / (1056 x 628) is 60.3 Hz.
        assert_eq!(
            m.clock * 1000 / (u32::from(m.htotal) * u32::from(m.vtotal)),
            60
        );
        assert_eq!(mode_name(&m), "800x600");
    }

    #[test]
    fn dmt_mode_is_none_for_an_unknown_size() {
        assert!(dmt_mode(801, 600).is_none());
    }
}
