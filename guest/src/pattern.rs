//! The deterministic test pattern the guest programs draw, and the check that
//! a frame in VRAM holds it.
//!
//! Pixel (x, y) of the pattern with seed `s` is an XRGB8888 word (X, bits
//! 31:24, is 0) computed from 32-bit wrapping arithmetic:
//!
//! ```text
//! h = x * 0x9E3779B1 + y * 0x85EBCA77 + s * 0xC2B2AE3D
//! h ^= h >> 15
//! h *= 0x2C1B3C6D
//! h ^= h >> 12
//! pixel = h & 0x00FFFFFF
//! ```
//!
//! Every pixel depends on its own coordinates, so a frame shown at the wrong
//! offset, with the wrong pitch or with two lines swapped does not match;
//! `docs/e2e.md` carries the same definition for host-side checkers.

/// Seed of the frame `draw` writes through the fbdev device.
pub const SEED_FBDEV: u32 = 1;
/// Seed of the first (front) buffer `modeset` scans out.
pub const SEED_MODESET_FRONT: u32 = 2;
/// Seed of the second buffer `modeset` flips to.
pub const SEED_MODESET_BACK: u32 = 3;

/// Bytes of one XRGB8888 pixel.
pub const BYTES_PER_PIXEL: usize = 4;

/// XRGB8888 value of pixel (`x`, `y`) of the pattern with `seed`.
pub const fn pixel(x: u32, y: u32, seed: u32) -> u32 {
    let mut h = x
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(y.wrapping_mul(0x85EB_CA77))
        .wrapping_add(seed.wrapping_mul(0xC2B2_AE3D));
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h & 0x00FF_FFFF
}

/// Fills `row` with line `y` of the pattern, little-endian, `width` pixels
/// from its start; bytes past them (the rest of a pitch) are zeroed.
pub fn fill_row(row: &mut [u8], y: u32, width: u32, seed: u32) {
    let mut x = 0u32;
    for chunk in row.chunks_exact_mut(BYTES_PER_PIXEL) {
        let value = if x < width { pixel(x, y, seed) } else { 0 };
        chunk.copy_from_slice(&value.to_le_bytes());
        x = x.saturating_add(1);
    }
    let tail = row.len() - row.len() % BYTES_PER_PIXEL;
    row[tail..].fill(0);
}

/// Where a frame lies in VRAM: the geometry a display scans out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// Byte offset of pixel (0, 0) in VRAM.
    pub start: u64,
    /// Bytes from one line to the next.
    pub pitch: u64,
    /// Visible pixels per line.
    pub width: u32,
    /// Visible lines.
    pub height: u32,
}

impl FrameLayout {
    /// Byte offset, relative to `start`, just past the last visible pixel.
    pub fn span(&self) -> u64 {
        match self.height {
            0 => 0,
            h => u64::from(h - 1) * self.pitch + u64::from(self.width) * BYTES_PER_PIXEL as u64,
        }
    }
}

/// How a frame compared with the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameComparison {
    /// Pixels compared.
    pub pixels: u64,
    /// Pixels that differ from the pattern.
    pub mismatches: u64,
    /// The first differing pixel in scan order.
    pub first_mismatch: Option<Mismatch>,
}

/// One pixel that differs from the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Column.
    pub x: u32,
    /// Line.
    pub y: u32,
    /// What the pattern has there.
    pub expected: u32,
    /// What the frame has there.
    pub found: u32,
}

impl FrameComparison {
    /// Whether every pixel matched.
    pub fn matches(&self) -> bool {
        self.mismatches == 0
    }
}

impl std::fmt::Display for FrameComparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} pixels differ", self.mismatches, self.pixels)?;
        if let Some(m) = self.first_mismatch {
            write!(
                f,
                ", first at ({},{}): expected {:#08x}, found {:#010x}",
                m.x, m.y, m.expected, m.found
            )?;
        }
        Ok(())
    }
}

/// Compares the frame at `layout` with the pattern of `seed`; `read` returns
/// the 32-bit little-endian word at a byte offset relative to `layout.start`.
/// The X byte is compared too: the programs write it as 0.
pub fn compare_frame(
    layout: &FrameLayout,
    seed: u32,
    read: impl Fn(u64) -> u32,
) -> FrameComparison {
    compare_frame_with(layout, |x, y| pixel(x, y, seed), read)
}

/// Compares the frame at `layout` with the picture `expected(x, y)`; `read`
/// returns the 32-bit little-endian word at a byte offset relative to
/// `layout.start`.
pub fn compare_frame_with(
    layout: &FrameLayout,
    expected: impl Fn(u32, u32) -> u32,
    read: impl Fn(u64) -> u32,
) -> FrameComparison {
    let mut result = FrameComparison {
        pixels: 0,
        mismatches: 0,
        first_mismatch: None,
    };
    for y in 0..layout.height {
        let line = u64::from(y) * layout.pitch;
        for x in 0..layout.width {
            let found = read(line + u64::from(x) * BYTES_PER_PIXEL as u64);
            let want = expected(x, y);
            result.pixels += 1;
            if found != want {
                result.mismatches += 1;
                result.first_mismatch.get_or_insert(Mismatch {
                    x,
                    y,
                    expected: want,
                    found,
                });
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values computed independently from the formula in the module header
    /// (and docs/e2e.md), so that code and documentation cannot drift apart.
    #[test]
    fn pixel_matches_documented_reference_values() {
        assert_eq!(pixel(0, 0, 0), 0x000000);
        assert_eq!(pixel(0, 0, 1), 0xb37fd9);
        assert_eq!(pixel(1, 0, 1), 0x1ebfcb);
        assert_eq!(pixel(0, 1, 1), 0xbff53c);
        assert_eq!(pixel(799, 599, 2), 0xe001cd);
        assert_eq!(pixel(1919, 1079, 3), 0x00ca2c);
    }

    #[test]
    fn pixel_leaves_the_x_byte_zero() {
        for (x, y, s) in [(0, 0, 1), (4095, 4095, 3), (17, 923, 0xffff_ffff)] {
            assert_eq!(pixel(x, y, s) >> 24, 0);
        }
    }

    #[test]
    fn neighbouring_pixels_and_seeds_differ() {
        assert_ne!(pixel(10, 10, 1), pixel(11, 10, 1));
        assert_ne!(pixel(10, 10, 1), pixel(10, 11, 1));
        assert_ne!(pixel(10, 10, 1), pixel(10, 10, 2));
    }

    #[test]
    fn fill_row_writes_little_endian_pixels_and_zeroes_the_pitch_padding() {
        let mut row = [0xaau8; 14];
        fill_row(&mut row, 5, 2, 1);
        assert_eq!(row[0..4], pixel(0, 5, 1).to_le_bytes());
        assert_eq!(row[4..8], pixel(1, 5, 1).to_le_bytes());
        assert_eq!(row[8..14], [0; 6]);
    }

    fn frame(layout: &FrameLayout, seed: u32) -> Vec<u8> {
        let mut bytes =
            vec![0u8; (layout.start + u64::from(layout.height) * layout.pitch) as usize];
        for y in 0..layout.height {
            let at = (layout.start + u64::from(y) * layout.pitch) as usize;
            fill_row(
                &mut bytes[at..at + layout.pitch as usize],
                y,
                layout.width,
                seed,
            );
        }
        bytes
    }

    fn reader(bytes: &[u8], start: u64) -> impl Fn(u64) -> u32 + '_ {
        move |offset| {
            let at = (start + offset) as usize;
            u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
        }
    }

    const LAYOUT: FrameLayout = FrameLayout {
        start: 64,
        pitch: 48,
        width: 10,
        height: 7,
    };

    #[test]
    fn compare_frame_accepts_the_pattern_at_its_layout() {
        let bytes = frame(&LAYOUT, 2);
        let result = compare_frame(&LAYOUT, 2, reader(&bytes, LAYOUT.start));
        assert!(result.matches(), "{result}");
        assert_eq!(result.pixels, 70);
    }

    #[test]
    fn compare_frame_reports_the_first_wrong_pixel() {
        let mut bytes = frame(&LAYOUT, 2);
        let at = (LAYOUT.start + 3 * LAYOUT.pitch + 4 * 4) as usize;
        bytes[at] ^= 1;
        let result = compare_frame(&LAYOUT, 2, reader(&bytes, LAYOUT.start));
        assert_eq!(result.mismatches, 1);
        let first = result.first_mismatch.unwrap();
        assert_eq!((first.x, first.y), (4, 3));
        assert_eq!(first.expected, pixel(4, 3, 2));
    }

    #[test]
    fn compare_frame_rejects_a_frame_one_line_off() {
        let bytes = frame(&LAYOUT, 2);
        let result = compare_frame(&LAYOUT, 2, reader(&bytes, LAYOUT.start - LAYOUT.pitch));
        assert!(!result.matches());
    }

    #[test]
    fn compare_frame_rejects_another_seed() {
        let bytes = frame(&LAYOUT, 3);
        assert!(!compare_frame(&LAYOUT, 2, reader(&bytes, LAYOUT.start)).matches());
    }

    #[test]
    fn span_ends_at_the_last_visible_pixel() {
        assert_eq!(LAYOUT.span(), 6 * 48 + 40);
    }
}
