//! Screenshots of a vGPU's scanout: the visible frame, read from the VRAM
//! slice with the mode the DISPI registers describe, as a PNG.
//!
//! The guest renders through its own mapping of the slice and never tells
//! the daemon, so a screenshot reads the slice as it is at that moment (a
//! frame being drawn may be torn, as on a real display). It takes the
//! device lock only to copy the mode, and never writes anything: the guest
//! cannot notice it.
//!
//! The frame is read and compressed one scanline at a time, so a capture
//! holds one line and the PNG it produces (at most about 3 bytes per pixel
//! of the mode, which is at most 4095 × 4095): no copy of the whole frame.

use vgpu_emulation::{PixelFormat, ScanoutMode};

use crate::vgpu::Vgpu;

/// Why no screenshot was taken.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    /// The display is disabled, or its mode is invalid: nothing is shown.
    #[error("the display shows nothing (disabled or invalid mode)")]
    NoScanout,
    #[error("cannot read the frame from VRAM")]
    Vram(#[source] vgpu_mdev::VramError),
    #[error("cannot encode the PNG")]
    Encode(#[source] png::EncodingError),
}

/// A captured frame.
#[derive(Debug)]
pub struct Screenshot {
    /// The mode it was taken in.
    pub mode: ScanoutMode,
    /// The frame as a PNG (8-bit RGB).
    pub png: Vec<u8>,
}

/// Captures what `vgpu` shows now.
pub fn capture(vgpu: &Vgpu) -> Result<Screenshot, ScreenshotError> {
    let mode = vgpu
        .hw()
        .device
        .scanout()
        .ok_or(ScreenshotError::NoScanout)?;
    let vram = vgpu.vram().aperture();
    let width = mode.width as usize;
    let mut line = vec![0u8; width * mode.bytes_per_pixel() as usize];
    let mut rgb = Vec::with_capacity(width * 3);
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, mode.width, mode.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(ScreenshotError::Encode)?;
    let mut rows = writer.stream_writer().map_err(ScreenshotError::Encode)?;
    for y in 0..u64::from(mode.height) {
        let start = mode.offset + y * u64::from(mode.pitch);
        vram.read(start, &mut line).map_err(ScreenshotError::Vram)?;
        rgb.clear();
        to_rgb(mode.format(), mode.big_endian, &line, &mut rgb);
        std::io::Write::write_all(&mut rows, &rgb)
            .map_err(|e| ScreenshotError::Encode(e.into()))?;
    }
    rows.finish().map_err(ScreenshotError::Encode)?;
    drop(writer);
    Ok(Screenshot { mode, png })
}

/// Appends the pixels of one scanline in `format` to `out` as R, G, B bytes.
pub fn to_rgb(format: PixelFormat, big_endian: bool, line: &[u8], out: &mut Vec<u8>) {
    match format {
        PixelFormat::Xrgb8888 => {
            for px in line.chunks_exact(4) {
                let word = if big_endian {
                    u32::from_be_bytes([px[0], px[1], px[2], px[3]])
                } else {
                    u32::from_le_bytes([px[0], px[1], px[2], px[3]])
                };
                out.extend_from_slice(&[(word >> 16) as u8, (word >> 8) as u8, word as u8]);
            }
        }
        PixelFormat::Bgr888 => {
            for px in line.chunks_exact(3) {
                if big_endian {
                    out.extend_from_slice(&[px[0], px[1], px[2]]);
                } else {
                    out.extend_from_slice(&[px[2], px[1], px[0]]);
                }
            }
        }
        PixelFormat::Rgb565 => {
            for px in line.chunks_exact(2) {
                let half = if big_endian {
                    u16::from_be_bytes([px[0], px[1]])
                } else {
                    u16::from_le_bytes([px[0], px[1]])
                };
                // Widen 5 and 6 bits to 8 by repeating the top bits, so that
                // full intensity stays 0xff.
                let r = ((half >> 11) & 0x1f) as u8;
                let g = ((half >> 5) & 0x3f) as u8;
                let b = (half & 0x1f) as u8;
                out.extend_from_slice(&[
                    (r << 3) | (r >> 2),
                    (g << 2) | (g >> 4),
                    (b << 3) | (b >> 2),
                ]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vgpu_emulation::RegionIndex;
    use vgpu_emulation::bar2::layout::dispi_offset;

    use super::*;

    #[test]
    fn xrgb8888_little_endian_is_b_g_r_x_bytes() {
        let mut out = Vec::new();
        to_rgb(
            PixelFormat::Xrgb8888,
            false,
            &[0x03, 0x02, 0x01, 0xff],
            &mut out,
        );
        assert_eq!(out, [0x01, 0x02, 0x03]);
        out.clear();
        to_rgb(
            PixelFormat::Xrgb8888,
            true,
            &[0xff, 0x01, 0x02, 0x03],
            &mut out,
        );
        assert_eq!(out, [0x01, 0x02, 0x03]);
    }

    #[test]
    fn bgr888_and_rgb565_convert_to_rgb() {
        let mut out = Vec::new();
        to_rgb(PixelFormat::Bgr888, false, &[0x03, 0x02, 0x01], &mut out);
        assert_eq!(out, [0x01, 0x02, 0x03]);
        out.clear();
        // Pure red, pure green, pure blue in RGB565.
        to_rgb(
            PixelFormat::Rgb565,
            false,
            &[0x00, 0xf8, 0xe0, 0x07, 0x1f, 0x00],
            &mut out,
        );
        assert_eq!(out, [0xff, 0, 0, 0, 0xff, 0, 0, 0, 0xff]);
    }

    fn vgpu() -> Vgpu {
        crate::vgpu::test_vgpu(1)
    }

    fn dispi(vgpu: &Vgpu, index: usize, value: u16) {
        vgpu.hw()
            .device
            .write(RegionIndex::BAR2, dispi_offset(index), &value.to_le_bytes())
            .unwrap();
    }

    #[test]
    fn nothing_is_shown_while_the_display_is_disabled() {
        assert!(matches!(capture(&vgpu()), Err(ScreenshotError::NoScanout)));
    }

    #[test]
    fn capture_reads_the_visible_frame_at_its_offset() {
        let vgpu = vgpu();
        // 4x2 at 32 bpp, pitch 8 pixels, panned to (1, 1).
        for (index, value) in [
            (1, 4),
            (2, 2),
            (3, 32),
            (6, 8),
            (7, 8),
            (8, 1),
            (9, 1),
            (4, 0x41),
        ] {
            dispi(&vgpu, index, value);
        }
        let pitch = 8 * 4;
        for y in 0..3u64 {
            for x in 0..8u64 {
                let pixel = [x as u8, y as u8, 0x80, 0];
                vgpu.vram()
                    .aperture()
                    .write(y * pitch + x * 4, &pixel)
                    .unwrap();
            }
        }
        let shot = capture(&vgpu).unwrap();
        assert_eq!((shot.mode.width, shot.mode.height), (4, 2));
        let decoder = png::Decoder::new(std::io::Cursor::new(shot.png));
        let mut reader = decoder.read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut rgb).unwrap();
        // Pixel (0, 0) of the picture is VRAM pixel (1, 1): R = 0x80, G = y, B = x.
        assert_eq!(&rgb[..3], &[0x80, 1, 1]);
        assert_eq!(&rgb[rgb.len() - 3..], &[0x80, 2, 4]);
    }
}
