//! The host side of a checkpoint: does a screenshot (a PNG that `vgpuctl
//! screenshot` wrote) show the test pattern, exactly?

use std::path::Path;

use crate::pattern::pixel;

/// Why a screenshot is not the expected frame.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a PNG this checker reads: {0}")]
    Decode(#[from] png::DecodingError),
    #[error("the PNG is {0:?} at {1:?} bits, expected 8-bit RGB")]
    Format(png::ColorType, png::BitDepth),
    #[error("the screenshot is {got_width}x{got_height}, expected {width}x{height}")]
    Size {
        width: u32,
        height: u32,
        got_width: u32,
        got_height: u32,
    },
    #[error(
        "{mismatched} of {total} pixels differ; first at ({x}, {y}): {got:06x}, expected {want:06x}"
    )]
    Pixels {
        mismatched: u64,
        total: u64,
        x: u32,
        y: u32,
        got: u32,
        want: u32,
    },
}

/// An 8-bit RGB picture.
#[derive(Debug)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Picture {
    /// Decodes the PNG at `path`.
    pub fn load(path: &Path) -> Result<Self, CompareError> {
        let file = std::fs::File::open(path).map_err(|source| CompareError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let decoder = png::Decoder::new(std::io::BufReader::new(file));
        let mut reader = decoder.read_info()?;
        let size = reader.output_buffer_size().unwrap_or(0);
        let mut rgb = vec![0; size];
        let info = reader.next_frame(&mut rgb)?;
        if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
            return Err(CompareError::Format(info.color_type, info.bit_depth));
        }
        rgb.truncate(info.buffer_size());
        Ok(Picture {
            width: info.width,
            height: info.height,
            rgb,
        })
    }

    /// Pixel (`x`, `y`) as 0xRRGGBB.
    pub fn at(&self, x: u32, y: u32) -> u32 {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        match self.rgb.get(i..i + 3) {
            Some(p) => u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]),
            None => u32::MAX,
        }
    }

    /// How many distinct colours the picture has, up to `limit`.
    pub fn colours(&self, limit: usize) -> usize {
        let mut seen = std::collections::HashSet::new();
        for p in self.rgb.chunks_exact(3) {
            seen.insert([p[0], p[1], p[2]]);
            if seen.len() >= limit {
                break;
            }
        }
        seen.len()
    }
}

/// Checks that `picture` is exactly the `width` x `height` pattern of
/// `seed`; returns the number of pixels compared.
pub fn matches_pattern(
    picture: &Picture,
    seed: u32,
    width: u32,
    height: u32,
) -> Result<u64, CompareError> {
    matches(picture, width, height, |x, y| pixel(x, y, seed))
}

/// Checks that `picture` is exactly the `width` x `height` picture whose
/// pixel (x, y) is `expected(x, y)` (0xRRGGBB); returns the number of
/// pixels compared.
pub fn matches(
    picture: &Picture,
    width: u32,
    height: u32,
    expected: impl Fn(u32, u32) -> u32,
) -> Result<u64, CompareError> {
    if (picture.width, picture.height) != (width, height) {
        return Err(CompareError::Size {
            width,
            height,
            got_width: picture.width,
            got_height: picture.height,
        });
    }
    let mut first = None;
    let mut mismatched = 0u64;
    for y in 0..height {
        for x in 0..width {
            let (got, want) = (picture.at(x, y), expected(x, y));
            if got != want {
                mismatched += 1;
                first.get_or_insert((x, y, got, want));
            }
        }
    }
    let total = u64::from(width) * u64::from(height);
    match first {
        None => Ok(total),
        Some((x, y, got, want)) => Err(CompareError::Pixels {
            mismatched,
            total,
            x,
            y,
            got,
            want,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern_picture(width: u32, height: u32, seed: u32) -> Picture {
        let mut rgb = Vec::new();
        for y in 0..height {
            for x in 0..width {
                let p = pixel(x, y, seed);
                rgb.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, p as u8]);
            }
        }
        Picture { width, height, rgb }
    }

    #[test]
    fn the_pattern_matches_itself() {
        assert_eq!(
            matches_pattern(&pattern_picture(8, 4, 2), 2, 8, 4).unwrap(),
            32
        );
    }

    #[test]
    fn another_seed_one_wrong_pixel_or_size_does_not_match() {
        let picture = pattern_picture(8, 4, 2);
        assert!(matches!(
            matches_pattern(&picture, 3, 8, 4),
            Err(CompareError::Pixels { .. })
        ));
        assert!(matches!(
            matches_pattern(&picture, 2, 4, 8),
            Err(CompareError::Size { .. })
        ));
        let mut one_off = pattern_picture(8, 4, 2);
        one_off.rgb[3 * 9] ^= 1;
        let Err(CompareError::Pixels {
            mismatched, x, y, ..
        }) = matches_pattern(&one_off, 2, 8, 4)
        else {
            panic!("a changed pixel went unnoticed");
        };
        assert_eq!((mismatched, x, y), (1, 1, 1));
    }

    #[test]
    fn the_engines_picture_is_compared_with_its_own_pixels() {
        let engines = crate::engines_pattern::EnginesPattern::new(300, 70, 5);
        let mut rgb = Vec::new();
        for y in 0..70 {
            for x in 0..300 {
                let p = engines.pixel(x, y);
                rgb.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, p as u8]);
            }
        }
        let picture = Picture {
            width: 300,
            height: 70,
            rgb,
        };
        assert_eq!(
            matches(&picture, 300, 70, |x, y| engines.pixel(x, y)).unwrap(),
            21000
        );
        assert!(matches_pattern(&picture, 5, 300, 70).is_err());
        let other = crate::engines_pattern::EnginesPattern::new(300, 70, 6);
        assert!(matches(&picture, 300, 70, |x, y| other.pixel(x, y)).is_err());
    }

    #[test]
    fn png_round_trip_decodes_to_the_same_pixels() {
        let picture = pattern_picture(5, 3, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let file = std::fs::File::create(&path).unwrap();
        let mut encoder = png::Encoder::new(file, 5, 3);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&picture.rgb).unwrap();
        writer.finish().unwrap();
        let loaded = Picture::load(&path).unwrap();
        assert_eq!(matches_pattern(&loaded, 1, 5, 3).unwrap(), 15);
    }
}
