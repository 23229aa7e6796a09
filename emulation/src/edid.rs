//! EDID 1.4 base block generator.
//!
//! The block describes a virtual digital monitor whose preferred (and
//! largest) mode is the profile's maximum resolution at 60 Hz, with VESA
//! CVT 1.2 reduced-blanking (version 1) timings, so that a guest sees a
//! mode it can drive and the DMT modes below it (the range limits and the
//! continuous-frequency feature let Linux infer them).
//!
//! Layout of the 128 bytes:
//!
//! ```text
//! 0x00 header 00 ff ff ff ff ff ff 00   0x36 descriptor 1: detailed timing (preferred)
//! 0x08 manufacturer "VGD", product       0x48 descriptor 2: range limits
//! 0x0c serial, week, year                0x5a descriptor 3: monitor name "vgpud"
//! 0x12 version 1.4                       0x6c descriptor 4: dummy
//! 0x14 basic display parameters          0x7e extension count (0)
//! 0x19 chromaticity (sRGB)               0x7f checksum
//! 0x23 established timings (none), 0x26 standard timings (unused: 01 01)
//! ```

use crate::config::Resolution;

/// Size of an EDID base block.
pub const EDID_BLOCK_SIZE: usize = 128;
/// The fixed 8-byte EDID header.
pub const EDID_HEADER: [u8; 8] = [0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
/// PNP manufacturer id in the block.
pub const EDID_MANUFACTURER: &str = "VGD";
/// Product code in the block.
pub const EDID_PRODUCT: u16 = 0x1111;
/// Monitor name in the name descriptor.
pub const EDID_MONITOR_NAME: &str = "vgpud";
/// Offset of the first (preferred) detailed timing descriptor.
pub const EDID_DTD1_OFFSET: usize = 0x36;
/// Size of one 18-byte descriptor.
pub const EDID_DESCRIPTOR_SIZE: usize = 18;

/// Largest active width or height a detailed timing descriptor encodes
/// (12-bit fields).
pub const DTD_MAX_ACTIVE: u32 = 4095;
/// Largest pixel clock a detailed timing descriptor encodes, in 10 kHz
/// units (655.35 MHz).
pub const DTD_MAX_PIXEL_CLOCK_10KHZ: u64 = 0xffff;

const REFRESH_HZ: u64 = 60;
// CVT reduced blanking (v1) constants, VESA CVT 1.2 section 3.4.
const RB_H_BLANK: u32 = 160;
const RB_H_FRONT_PORCH: u32 = 48;
const RB_H_SYNC: u32 = 32;
const RB_V_FRONT_PORCH: u32 = 3;
const RB_MIN_V_BACK_PORCH: u32 = 6;
const RB_MIN_V_BLANK_US: u64 = 460;
const CVT_CLOCK_STEP_KHZ: u64 = 250;
// Week 1 of 2025: a fixed date keeps the block deterministic.
const MANUFACTURE_WEEK: u8 = 1;
const MANUFACTURE_YEAR: u16 = 2025;
// Physical size is derived at 96 dots per inch, the desktop default.
const DOTS_PER_INCH: u32 = 96;

/// Why no EDID could be built for a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EdidError {
    /// Width or height is 0 or does not fit the descriptor's 12-bit fields.
    #[error(
        "{width}x{height} cannot be described by an EDID detailed timing (1..={DTD_MAX_ACTIVE} each)"
    )]
    ResolutionNotEncodable {
        /// Requested width in pixels.
        width: u32,
        /// Requested height in lines.
        height: u32,
    },
    /// The 60 Hz reduced-blanking pixel clock exceeds 655.35 MHz.
    #[error(
        "{width}x{height}@60Hz needs a {clock_khz} kHz pixel clock, over the 655350 kHz an EDID timing can hold"
    )]
    PixelClockTooHigh {
        /// Requested width in pixels.
        width: u32,
        /// Requested height in lines.
        height: u32,
        /// The pixel clock the mode needs, in kHz.
        clock_khz: u64,
    },
}

/// A display timing as an EDID detailed timing descriptor carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetailedTiming {
    /// Pixel clock in 10 kHz units.
    pub pixel_clock_10khz: u16,
    /// Visible pixels per line.
    pub h_active: u32,
    /// Horizontal front porch in pixels.
    pub h_front_porch: u32,
    /// Horizontal sync width in pixels.
    pub h_sync: u32,
    /// Horizontal blanking (porches and sync) in pixels.
    pub h_blank: u32,
    /// Visible lines.
    pub v_active: u32,
    /// Vertical front porch in lines.
    pub v_front_porch: u32,
    /// Vertical sync width in lines.
    pub v_sync: u32,
    /// Vertical blanking (porches and sync) in lines.
    pub v_blank: u32,
}

impl DetailedTiming {
    /// CVT reduced-blanking (v1) timing for `resolution` at 60 Hz.
    ///
    /// The active size is used as given (CVT's 8-pixel cell rounding would
    /// make the preferred mode differ from the configured resolution).
    pub fn cvt_reduced_blanking(resolution: Resolution) -> Result<Self, EdidError> {
        let Resolution { width, height } = resolution;
        if !(1..=DTD_MAX_ACTIVE).contains(&width) || !(1..=DTD_MAX_ACTIVE).contains(&height) {
            return Err(EdidError::ResolutionNotEncodable { width, height });
        }
        let v_sync = cvt_v_sync(width, height);
        // Lines needed to cover the minimum vertical blanking time:
        // floor(MIN_VBLANK / H_PERIOD_EST) + 1 with
        // H_PERIOD_EST = (1 s / 60 - MIN_VBLANK) / height, kept exact in
        // integers: floor(MIN_VBLANK * 60 * height / (1 s - MIN_VBLANK * 60)).
        let min_vblank_per_s = RB_MIN_V_BLANK_US * REFRESH_HZ;
        let vbi_lines = min_vblank_per_s * u64::from(height) / (1_000_000 - min_vblank_per_s) + 1;
        let min_vbi = u64::from(RB_V_FRONT_PORCH + v_sync + RB_MIN_V_BACK_PORCH);
        // Both terms are small: height <= 4095 bounds vbi_lines to ~117.
        let v_blank = vbi_lines.max(min_vbi) as u32;
        let h_total = u64::from(width + RB_H_BLANK);
        let v_total = u64::from(height + v_blank);
        let raw_hz = REFRESH_HZ * h_total * v_total;
        let clock_khz = raw_hz / (CVT_CLOCK_STEP_KHZ * 1000) * CVT_CLOCK_STEP_KHZ;
        let clock_10khz = clock_khz / 10;
        if clock_10khz > DTD_MAX_PIXEL_CLOCK_10KHZ {
            return Err(EdidError::PixelClockTooHigh {
                width,
                height,
                clock_khz,
            });
        }
        Ok(DetailedTiming {
            pixel_clock_10khz: clock_10khz as u16,
            h_active: width,
            h_front_porch: RB_H_FRONT_PORCH,
            h_sync: RB_H_SYNC,
            h_blank: RB_H_BLANK,
            v_active: height,
            v_front_porch: RB_V_FRONT_PORCH,
            v_sync,
            v_blank,
        })
    }

    /// Pixel clock in kHz.
    pub fn pixel_clock_khz(&self) -> u32 {
        u32::from(self.pixel_clock_10khz) * 10
    }

    /// Line rate in Hz.
    pub fn h_freq_hz(&self) -> u32 {
        self.pixel_clock_khz() * 1000 / (self.h_active + self.h_blank)
    }

    /// Encodes the 18-byte descriptor with the given image size in mm.
    /// Sync is digital separate, hsync positive and vsync negative as CVT
    /// reduced blanking requires.
    fn encode(&self, width_mm: u32, height_mm: u32) -> [u8; EDID_DESCRIPTOR_SIZE] {
        let lo = |v: u32| (v & 0xff) as u8;
        let hi4 = |v: u32| ((v >> 8) & 0xf) as u8;
        let mut d = [0u8; EDID_DESCRIPTOR_SIZE];
        d[0..2].copy_from_slice(&self.pixel_clock_10khz.to_le_bytes());
        d[2] = lo(self.h_active);
        d[3] = lo(self.h_blank);
        d[4] = (hi4(self.h_active) << 4) | hi4(self.h_blank);
        d[5] = lo(self.v_active);
        d[6] = lo(self.v_blank);
        d[7] = (hi4(self.v_active) << 4) | hi4(self.v_blank);
        d[8] = lo(self.h_front_porch);
        d[9] = lo(self.h_sync);
        d[10] = (((self.v_front_porch & 0xf) << 4) | (self.v_sync & 0xf)) as u8;
        d[11] = ((((self.h_front_porch >> 8) & 3) << 6)
            | (((self.h_sync >> 8) & 3) << 4)
            | (((self.v_front_porch >> 4) & 3) << 2)
            | ((self.v_sync >> 4) & 3)) as u8;
        d[12] = lo(width_mm);
        d[13] = lo(height_mm);
        d[14] = (hi4(width_mm) << 4) | hi4(height_mm);
        // Bytes 15 and 16: no borders.
        d[17] = 0b0001_1010;
        d
    }

    /// Decodes a detailed timing descriptor; `None` for a display
    /// descriptor (pixel clock 0).
    pub fn decode(d: &[u8; EDID_DESCRIPTOR_SIZE]) -> Option<DetailedTiming> {
        let pixel_clock_10khz = u16::from_le_bytes([d[0], d[1]]);
        if pixel_clock_10khz == 0 {
            return None;
        }
        let join = |lo: u8, hi: u8| u32::from(lo) | (u32::from(hi) << 8);
        Some(DetailedTiming {
            pixel_clock_10khz,
            h_active: join(d[2], d[4] >> 4),
            h_blank: join(d[3], d[4] & 0xf),
            v_active: join(d[5], d[7] >> 4),
            v_blank: join(d[6], d[7] & 0xf),
            h_front_porch: join(d[8], (d[11] >> 6) & 3),
            h_sync: join(d[9], (d[11] >> 4) & 3),
            v_front_porch: u32::from(d[10] >> 4) | (u32::from((d[11] >> 2) & 3) << 4),
            v_sync: u32::from(d[10] & 0xf) | (u32::from(d[11] & 3) << 4),
        })
    }
}

/// CVT vertical sync width, chosen by aspect ratio (CVT 1.2 table 3-2).
fn cvt_v_sync(width: u32, height: u32) -> u32 {
    let is = |w: u32, h: u32| width * h == height * w;
    if is(4, 3) {
        4
    } else if is(16, 9) {
        5
    } else if is(16, 10) {
        6
    } else if is(5, 4) || is(15, 9) {
        7
    } else {
        10
    }
}

/// Builds the 128-byte EDID 1.4 base block for a monitor whose preferred
/// mode is `resolution` at 60 Hz.
pub fn edid_block(resolution: Resolution, serial: u32) -> Result<[u8; EDID_BLOCK_SIZE], EdidError> {
    let timing = DetailedTiming::cvt_reduced_blanking(resolution)?;
    let mut b = [0u8; EDID_BLOCK_SIZE];
    b[0..8].copy_from_slice(&EDID_HEADER);
    b[8..10].copy_from_slice(&pnp_id(EDID_MANUFACTURER).to_be_bytes());
    b[10..12].copy_from_slice(&EDID_PRODUCT.to_le_bytes());
    b[12..16].copy_from_slice(&serial.to_le_bytes());
    b[16] = MANUFACTURE_WEEK;
    b[17] = (MANUFACTURE_YEAR - 1990) as u8;
    b[18] = 1;
    b[19] = 4;
    // Digital input, 8 bits per primary colour, interface not defined.
    b[20] = 0b1010_0000;
    let width_mm = pixels_to_mm(resolution.width);
    let height_mm = pixels_to_mm(resolution.height);
    b[21] = (width_mm.div_ceil(10).min(255)) as u8;
    b[22] = (height_mm.div_ceil(10).min(255)) as u8;
    // Gamma 2.2, stored as (gamma * 100) - 100.
    b[23] = 120;
    // No DPMS; RGB 4:4:4; sRGB is the default colour space; the preferred
    // timing mode (descriptor 1) is the native one; continuous frequency,
    // so that the range limits below describe the modes the guest may infer.
    b[24] = 0b0000_0111;
    b[25..35].copy_from_slice(&srgb_chromaticity());
    // Established timings (0x23..0x26) stay 0: none.
    for slot in b[0x26..0x36].chunks_exact_mut(2) {
        slot.copy_from_slice(&[0x01, 0x01]);
    }
    b[0x36..0x48].copy_from_slice(&timing.encode(width_mm, height_mm));
    b[0x48..0x5a].copy_from_slice(&range_limits(&timing));
    b[0x5a..0x6c].copy_from_slice(&monitor_name());
    b[0x6c..0x7e].copy_from_slice(&display_descriptor(0x10, &[]));
    b[0x7e] = 0;
    let sum = b[..0x7f]
        .iter()
        .fold(0u8, |acc, &byte| acc.wrapping_add(byte));
    b[0x7f] = 0u8.wrapping_sub(sum);
    Ok(b)
}

/// Packs a three-letter PNP id into five-bit letters (A = 1), big-endian.
fn pnp_id(id: &str) -> u16 {
    id.bytes().take(3).fold(0u16, |acc, c| {
        (acc << 5) | u16::from(c.saturating_sub(b'A' - 1) & 0x1f)
    })
}

fn pixels_to_mm(pixels: u32) -> u32 {
    // Rounded to nearest; at most 4095 px * 254 / 960 = 1083 mm, which fits
    // the descriptor's 12-bit image size fields.
    (pixels * 254 + DOTS_PER_INCH * 5) / (DOTS_PER_INCH * 10)
}

/// sRGB primaries and D65 white point as 10-bit binary fractions.
fn srgb_chromaticity() -> [u8; 10] {
    // (x, y) in thousandths: red, green, blue, white.
    const POINTS: [(u32, u32); 4] = [(640, 330), (300, 600), (150, 60), (3127, 3290)];
    let scale = |v: u32, denom: u32| (v * 1024 + denom / 2) / denom;
    let mut coords = [0u32; 8];
    for (i, &(x, y)) in POINTS.iter().enumerate() {
        // The white point is given in ten-thousandths.
        let denom = if i == 3 { 10_000 } else { 1_000 };
        coords[2 * i] = scale(x, denom);
        coords[2 * i + 1] = scale(y, denom);
    }
    let low2 = |i: usize, shift: u32| ((coords[i] & 3) << shift) as u8;
    let mut out = [0u8; 10];
    out[0] = low2(0, 6) | low2(1, 4) | low2(2, 2) | low2(3, 0);
    out[1] = low2(4, 6) | low2(5, 4) | low2(6, 2) | low2(7, 0);
    for (slot, coord) in out[2..].iter_mut().zip(coords) {
        *slot = (coord >> 2) as u8;
    }
    out
}

/// A display descriptor: 0 0 0 tag 0, then up to 13 bytes of payload.
fn display_descriptor(tag: u8, payload: &[u8]) -> [u8; EDID_DESCRIPTOR_SIZE] {
    let mut d = [0u8; EDID_DESCRIPTOR_SIZE];
    d[3] = tag;
    let len = payload.len().min(13);
    d[5..5 + len].copy_from_slice(&payload[..len]);
    d
}

/// Range limits (tag 0xfd): 50–75 Hz vertical, 30 kHz (or the preferred
/// mode's line rate, if lower) up to the preferred mode's line rate, pixel
/// clock up to the preferred mode's (rounded up to 10 MHz), "range limits
/// only" timing support.
fn range_limits(preferred: &DetailedTiming) -> [u8; EDID_DESCRIPTOR_SIZE] {
    let h_hz = preferred.h_freq_hz();
    let min_h_khz = (h_hz / 1000).clamp(1, 30) as u8;
    let max_h_khz = h_hz.div_ceil(1000).clamp(30, 255) as u8;
    let max_clock_10mhz = preferred.pixel_clock_khz().div_ceil(10_000).min(255) as u8;
    let payload = [
        50,
        75,
        min_h_khz,
        max_h_khz,
        max_clock_10mhz,
        0x01,
        0x0a,
        0x20,
        0x20,
        0x20,
        0x20,
        0x20,
        0x20,
    ];
    display_descriptor(0xfd, &payload)
}

/// Monitor name (tag 0xfc): the name, a line feed, space padding.
fn monitor_name() -> [u8; EDID_DESCRIPTOR_SIZE] {
    let mut text = [0x20u8; 13];
    let name = EDID_MONITOR_NAME.as_bytes();
    text[..name.len()].copy_from_slice(name);
    text[name.len()] = b'\n';
    display_descriptor(0xfc, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FHD: Resolution = Resolution {
        width: 1920,
        height: 1080,
    };

    fn descriptor(block: &[u8; EDID_BLOCK_SIZE], n: usize) -> [u8; EDID_DESCRIPTOR_SIZE] {
        let start = EDID_DTD1_OFFSET + n * EDID_DESCRIPTOR_SIZE;
        block[start..start + EDID_DESCRIPTOR_SIZE]
            .try_into()
            .unwrap()
    }

    #[test]
    fn block_starts_with_the_edid_header_and_version_1_4() {
        let block = edid_block(FHD, 0).unwrap();
        assert_eq!(block[0..8], EDID_HEADER);
        assert_eq!((block[18], block[19]), (1, 4));
        assert_eq!(block[126], 0, "no extension blocks");
    }

    #[test]
    fn checksum_makes_the_block_sum_to_zero() {
        for res in [
            FHD,
            Resolution {
                width: 1024,
                height: 768,
            },
            Resolution {
                width: 3840,
                height: 2160,
            },
        ] {
            let block = edid_block(res, 7).unwrap();
            let sum = block.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
            assert_eq!(sum, 0, "{res:?}");
        }
    }

    #[test]
    fn manufacturer_is_vgd_packed_and_product_is_0x1111() {
        let block = edid_block(FHD, 0x0102_0304).unwrap();
        // V = 22, G = 7, D = 4: 0b0_10110_00111_00100.
        assert_eq!(block[8..10], [0x58, 0xe4]);
        assert_eq!(block[10..12], [0x11, 0x11]);
        assert_eq!(block[12..16], [0x04, 0x03, 0x02, 0x01]);
    }

    #[test]
    fn basic_parameters_describe_a_digital_srgb_display() {
        let block = edid_block(FHD, 0).unwrap();
        assert_eq!(block[20] & 0x80, 0x80, "digital input");
        // 1920 px at 96 dpi = 50.8 cm, 1080 px = 28.6 cm.
        assert_eq!((block[21], block[22]), (51, 29));
        assert_eq!(block[23], 120, "gamma 2.2");
        assert_eq!(
            block[24] & 0b110,
            0b110,
            "sRGB default, preferred timing in DTD 1"
        );
        // Red x = 0.640 -> 655 = 0b10_1000_1111.
        assert_eq!(u32::from(block[27]), 655 >> 2);
        assert_eq!(u32::from(block[25] >> 6), 655 & 3);
    }

    #[test]
    fn unused_timings_are_filled_per_the_standard() {
        let block = edid_block(FHD, 0).unwrap();
        assert_eq!(block[0x23..0x26], [0, 0, 0]);
        assert!(block[0x26..0x36].iter().all(|&b| b == 0x01));
    }

    #[test]
    fn preferred_mode_decodes_back_to_the_resolution() {
        for res in [
            FHD,
            Resolution {
                width: 1280,
                height: 800,
            },
            Resolution {
                width: 333,
                height: 222,
            },
        ] {
            let block = edid_block(res, 0).unwrap();
            let timing = DetailedTiming::decode(&descriptor(&block, 0)).unwrap();
            assert_eq!((timing.h_active, timing.v_active), (res.width, res.height));
            assert_eq!(timing.h_blank, 160);
            assert_eq!(timing.h_front_porch, 48);
            assert_eq!(timing.h_sync, 32);
            assert_eq!(timing.v_front_porch, 3);
        }
    }

    #[test]
    fn cvt_rb_1920x1080_matches_the_vesa_table() {
        // VESA CVT-RB 1920x1080@60: 138.50 MHz, vblank 31 (3 + 5 + 23).
        let timing = DetailedTiming::cvt_reduced_blanking(FHD).unwrap();
        assert_eq!(timing.pixel_clock_10khz, 13_850);
        assert_eq!(timing.v_blank, 31);
        assert_eq!(timing.v_sync, 5);
        let decoded = DetailedTiming::decode(&timing.encode(508, 286)).unwrap();
        assert_eq!(decoded, timing);
    }

    #[test]
    fn cvt_rb_uses_aspect_sync_and_minimum_back_porch() {
        // 2560x1600 (16:10): 268.50 MHz, vsync 6, vblank 46.
        let wqxga = DetailedTiming::cvt_reduced_blanking(Resolution {
            width: 2560,
            height: 1600,
        })
        .unwrap();
        assert_eq!(
            (wqxga.pixel_clock_10khz, wqxga.v_sync, wqxga.v_blank),
            (26_850, 6, 46)
        );
        // 1024x768 (4:3): vsync 4; vblank 22 >= 3 + 4 + 6.
        let xga = DetailedTiming::cvt_reduced_blanking(Resolution {
            width: 1024,
            height: 768,
        })
        .unwrap();
        assert_eq!(
            (xga.v_sync, xga.v_blank, xga.pixel_clock_10khz),
            (4, 22, 5_600)
        );
        // Odd aspect: vsync 10, and the minimum vblank 3 + 10 + 6 dominates.
        let odd = DetailedTiming::cvt_reduced_blanking(Resolution {
            width: 333,
            height: 222,
        })
        .unwrap();
        assert_eq!((odd.v_sync, odd.v_blank), (10, 19));
    }

    #[test]
    fn refresh_is_close_to_60hz() {
        let timing = DetailedTiming::cvt_reduced_blanking(FHD).unwrap();
        let total =
            u64::from((timing.h_active + timing.h_blank) * (timing.v_active + timing.v_blank));
        let millihertz = u64::from(timing.pixel_clock_khz()) * 1_000_000 / total;
        assert!((59_500..=60_000).contains(&millihertz), "{millihertz}");
    }

    #[test]
    fn modes_a_dtd_cannot_hold_are_refused() {
        assert!(matches!(
            DetailedTiming::cvt_reduced_blanking(Resolution {
                width: 4096,
                height: 2160
            }),
            Err(EdidError::ResolutionNotEncodable { .. })
        ));
        assert!(matches!(
            DetailedTiming::cvt_reduced_blanking(Resolution {
                width: 4095,
                height: 4095
            }),
            Err(EdidError::PixelClockTooHigh { .. })
        ));
        assert!(
            DetailedTiming::cvt_reduced_blanking(Resolution {
                width: 3840,
                height: 2160
            })
            .is_ok()
        );
    }

    #[test]
    fn name_descriptor_is_vgpud_newline_padded() {
        let block = edid_block(FHD, 0).unwrap();
        let name = descriptor(&block, 2);
        assert_eq!(name[0..5], [0, 0, 0, 0xfc, 0]);
        assert_eq!(&name[5..], b"vgpud\n       ");
    }

    #[test]
    fn range_limits_cover_the_preferred_mode() {
        let block = edid_block(FHD, 0).unwrap();
        let range = descriptor(&block, 1);
        assert_eq!(range[0..5], [0, 0, 0, 0xfd, 0]);
        // 50-75 Hz, 30-67 kHz (138.5 MHz / 2080 = 66.6 kHz), 140 MHz.
        assert_eq!(range[5..10], [50, 75, 30, 67, 14]);
        assert_eq!(range[10], 0x01, "range limits only");
        // A small preferred mode has a low line rate: the range still
        // includes it (320x200 RB: 6 MHz / 480 px = 12.5 kHz).
        let small = edid_block(
            Resolution {
                width: 320,
                height: 200,
            },
            0,
        )
        .unwrap();
        assert_eq!(descriptor(&small, 1)[7..10], [12, 30, 1]);
        let dummy = descriptor(&block, 3);
        assert_eq!(dummy[3], 0x10);
    }
}
