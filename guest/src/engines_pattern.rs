//! The test picture the `engines` programs draw with the GPU's engines, and
//! the commands that draw it: a pure definition that the host's
//! `compare-png --pattern engines` computes as well.
//!
//! The frame (`width` x `height`, XRGB8888) is a mosaic of [`TILE`] x
//! [`TILE`] cells, split into two halves of whole cell rows: channel 0
//! draws the top half, channel 1 the bottom half, each in its own
//! submissions, so that the picture is right only if both channels ran all
//! their work. Each channel draws in three stages, in this order:
//!
//! 1. **Tiles** (FILL): a palette of [`TILES`] tiles in scratch VRAM, each
//!    tile's 1024 pixels cut into [`SEGMENTS`] runs of one colour (a run is
//!    one FILL; the cuts fall mid-row, so the tiles show stepped bands).
//! 2. **Cells** (BLIT2D, tile to frame): every cell of the channel's half
//!    gets tile `pixel(cx, cy, seed) % TILES`; cells at the right and
//!    bottom edges are clipped. One submission per cell row.
//! 3. **Stamp and marker**: a BLIT2D within the frame copies the half's
//!    top-left 4 x 2 cells onto its top-right 4 x 2 cells (so it reads
//!    what stage 2 wrote), then FILLs, one per row, paint a marker
//!    rectangle of one colour over the top-left corner (after the stamp
//!    read it).
//!
//! The colours come from [`pattern::pixel`](crate::pattern::pixel), so
//! every tile, run and marker differs with the seed.

use vgpu_commands::StreamBuilder;

use crate::pattern::{BYTES_PER_PIXEL, pixel};

/// Width and height of a cell and of a tile, in pixels.
pub const TILE: u32 = 32;
/// Tiles in each channel's palette.
pub const TILES: u32 = 8;
/// Runs of one colour per tile.
pub const SEGMENTS: u32 = 5;
/// Pixels of one tile.
const TILE_PIXELS: u32 = TILE * TILE;
/// Bytes of one tile (its rows are contiguous: pitch `TILE` x 4).
pub const TILE_BYTES: u64 = TILE_PIXELS as u64 * BYTES_PER_PIXEL as u64;
/// Bytes of one channel's palette.
pub const PALETTE_BYTES: u64 = TILE_BYTES * TILES as u64;
/// The stamp's size in cells.
const STAMP_CELLS: (u32, u32) = (4, 2);
/// Channels that draw.
pub const CHANNELS: u32 = 2;

/// Seed of the frame `engines` draws.
pub const SEED_ENGINES: u32 = 5;
/// Seed of the frame the innocent vGPU redraws during `engines-hostile`.
pub const SEED_HOSTILE: u32 = 6;

/// A rectangle of pixels, `x0..x1` by `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

impl Rect {
    fn contains(&self, x: u32, y: u32) -> bool {
        (self.x0..self.x1).contains(&x) && (self.y0..self.y1).contains(&y)
    }

    fn is_empty(&self) -> bool {
        self.x0 >= self.x1 || self.y0 >= self.y1
    }
}

/// The engines picture of one size and seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnginesPattern {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Seed.
    pub seed: u32,
}

/// Where a channel draws: the frame and its scratch palette, as GPU VAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawTarget {
    /// GPU VA of the frame's pixel (0, 0).
    pub frame: u64,
    /// Bytes from one frame row to the next (at least `width` x 4).
    pub pitch: u32,
    /// GPU VA of the channel's palette: [`PALETTE_BYTES`] bytes.
    pub palette: u64,
}

impl EnginesPattern {
    /// The picture of `width` x `height` with `seed`.
    pub fn new(width: u32, height: u32, seed: u32) -> Self {
        Self {
            width,
            height,
            seed,
        }
    }

    fn cells_x(&self) -> u32 {
        self.width.div_ceil(TILE)
    }

    fn cells_y(&self) -> u32 {
        self.height.div_ceil(TILE)
    }

    /// The cell rows channel `channel` draws: the top half (rounded down)
    /// for channel 0, the rest for channel 1.
    pub fn cell_rows(&self, channel: u32) -> std::ops::Range<u32> {
        let split = self.cells_y() / 2;
        match channel {
            0 => 0..split,
            1 => split..self.cells_y(),
            _ => 0..0,
        }
    }

    fn channel_of_row(&self, cell_y: u32) -> u32 {
        u32::from(cell_y >= self.cells_y() / 2)
    }

    /// Tile of cell (`cx`, `cy`).
    fn tile_of(&self, cx: u32, cy: u32) -> u32 {
        pixel(cx, cy, self.seed) % TILES
    }

    /// Start (pixel index in the tile) of run `segment` of tile `tile` of
    /// `channel`'s palette; run `SEGMENTS` starts at the tile's end.
    fn cut(&self, channel: u32, tile: u32, segment: u32) -> u32 {
        let step = TILE_PIXELS / SEGMENTS;
        match segment {
            0 => 0,
            s if s >= SEGMENTS => TILE_PIXELS,
            s => s * step + pixel(tile + TILES * channel, s, self.seed ^ 0x00c0_ffee) % step,
        }
    }

    /// Colour of run `segment` of tile `tile` of `channel`'s palette.
    fn colour(&self, channel: u32, tile: u32, segment: u32) -> u32 {
        pixel(
            tile + TILES * channel,
            segment + 0x100,
            self.seed.wrapping_add(0x5eed),
        )
    }

    /// Colour of `channel`'s marker.
    fn marker_colour(&self, channel: u32) -> u32 {
        pixel(0x7777, channel, self.seed)
    }

    /// Pixel rows of `channel`'s half.
    fn rows(&self, channel: u32) -> (u32, u32) {
        let cells = self.cell_rows(channel);
        (
            (cells.start * TILE).min(self.height),
            (cells.end * TILE).min(self.height),
        )
    }

    /// The stamp of `channel`: source top-left (x, y), destination rect.
    fn stamp(&self, channel: u32) -> Option<((u32, u32), Rect)> {
        let cells = self.cell_rows(channel);
        if self.cells_x() < 2 * STAMP_CELLS.0 || cells.len() < STAMP_CELLS.1 as usize {
            return None;
        }
        let (y0, y_end) = self.rows(channel);
        let x0 = (self.cells_x() - STAMP_CELLS.0) * TILE;
        let dst = Rect {
            x0,
            y0,
            x1: (x0 + STAMP_CELLS.0 * TILE).min(self.width),
            y1: (y0 + STAMP_CELLS.1 * TILE).min(y_end),
        };
        Some(((0, y0), dst))
    }

    /// The marker rectangle of `channel`.
    fn marker(&self, channel: u32) -> Option<Rect> {
        let (y0, y_end) = self.rows(channel);
        let rect = Rect {
            x0: (TILE / 2).min(self.width),
            y0: (y0 + TILE / 2).min(y_end),
            x1: (TILE / 2 + 3 * TILE).min(self.width),
            y1: (y0 + TILE / 2 + TILE).min(y_end),
        };
        (!rect.is_empty()).then_some(rect)
    }

    /// What stages 1 and 2 leave at (`x`, `y`).
    fn cell_pixel(&self, x: u32, y: u32) -> u32 {
        let (cx, cy) = (x / TILE, y / TILE);
        let channel = self.channel_of_row(cy);
        let tile = self.tile_of(cx, cy);
        let index = (y % TILE) * TILE + x % TILE;
        let segment = (1..SEGMENTS)
            .take_while(|&s| self.cut(channel, tile, s) <= index)
            .last()
            .unwrap_or(0);
        self.colour(channel, tile, segment)
    }

    /// XRGB8888 value of pixel (`x`, `y`) of the finished picture.
    pub fn pixel(&self, x: u32, y: u32) -> u32 {
        let channel = self.channel_of_row(y / TILE);
        if self.marker(channel).is_some_and(|m| m.contains(x, y)) {
            return self.marker_colour(channel);
        }
        if let Some(((sx, sy), dst)) = self.stamp(channel)
            && dst.contains(x, y)
        {
            return self.cell_pixel(sx + (x - dst.x0), sy + (y - dst.y0));
        }
        self.cell_pixel(x, y)
    }

    /// The work of `channel`, as the command streams of its submissions in
    /// order (no fences: the caller adds its own). Addresses are `target`'s.
    pub fn submissions(&self, channel: u32, target: &DrawTarget) -> Vec<StreamBuilder> {
        let mut out = Vec::new();
        let bpp = BYTES_PER_PIXEL as u64;
        let pitch = u64::from(target.pitch);
        let at = |x: u32, y: u32| target.frame + u64::from(y) * pitch + u64::from(x) * bpp;
        let tile_va = |tile: u32| target.palette + u64::from(tile) * TILE_BYTES;
        let rows = self.cell_rows(channel);
        if rows.is_empty() {
            return out;
        }

        // Stage 1: the palette.
        let mut tiles = StreamBuilder::new();
        for tile in 0..TILES {
            for segment in 0..SEGMENTS {
                let start = self.cut(channel, tile, segment);
                let end = self.cut(channel, tile, segment + 1);
                if end > start {
                    tiles.fill(
                        tile_va(tile) + u64::from(start) * bpp,
                        (end - start) * BYTES_PER_PIXEL as u32,
                        self.colour(channel, tile, segment),
                    );
                }
            }
        }
        out.push(tiles);

        // Stage 2: the cells, a row per submission.
        for cy in rows {
            let mut row = StreamBuilder::new();
            let y = cy * TILE;
            let height = TILE.min(self.height - y);
            for cx in 0..self.cells_x() {
                let x = cx * TILE;
                row.blit2d(
                    tile_va(self.tile_of(cx, cy)),
                    TILE * BYTES_PER_PIXEL as u32,
                    at(x, y),
                    target.pitch,
                    TILE.min(self.width - x),
                    height,
                );
            }
            out.push(row);
        }

        // Stage 3: the stamp, then the marker over its source.
        let mut last = StreamBuilder::new();
        if let Some(((sx, sy), dst)) = self.stamp(channel) {
            last.blit2d(
                at(sx, sy),
                target.pitch,
                at(dst.x0, dst.y0),
                target.pitch,
                dst.x1 - dst.x0,
                dst.y1 - dst.y0,
            );
        }
        if let Some(m) = self.marker(channel) {
            for y in m.y0..m.y1 {
                last.fill(
                    at(m.x0, y),
                    (m.x1 - m.x0) * BYTES_PER_PIXEL as u32,
                    self.marker_colour(channel),
                );
            }
        }
        if !last.words().is_empty() {
            out.push(last);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_commands::{Command, Decoded, decode};

    /// Runs FILL, BLIT2D and COPY the way the engines define them, on a
    /// flat memory where the GPU VA is the index.
    fn run(memory: &mut [u8], words: &[u32]) {
        let mut pos = 0;
        while pos < words.len() {
            let (decoded, len) = decode(&words[pos..]).expect("the plan decodes");
            pos += len;
            let Decoded::Command(command) = decoded else {
                panic!("unexpected {decoded:?}");
            };
            match command {
                Command::Fill {
                    dst,
                    bytes,
                    pattern,
                } => {
                    let dst = dst.get() as usize;
                    for chunk in memory[dst..dst + bytes as usize].chunks_exact_mut(4) {
                        chunk.copy_from_slice(&pattern.to_le_bytes());
                    }
                }
                Command::Blit2d(b) => {
                    let row = b.width as usize * 4;
                    for r in 0..b.height as u64 {
                        let src = (b.src.get() + r * u64::from(b.src_pitch)) as usize;
                        let dst = (b.dst.get() + r * u64::from(b.dst_pitch)) as usize;
                        memory.copy_within(src..src + row, dst);
                    }
                }
                other => panic!("the plan has {other:?}"),
            }
        }
    }

    fn draw(pattern: &EnginesPattern, pitch_pad: u32) -> (Vec<u8>, u64, u32) {
        let pitch = (pattern.width + pitch_pad) * 4;
        let frame = 4096u64;
        let frame_bytes = u64::from(pitch) * u64::from(pattern.height);
        let palettes = frame + frame_bytes.next_multiple_of(4096);
        let mut memory = vec![0xeeu8; (palettes + 2 * PALETTE_BYTES) as usize];
        for channel in 0..CHANNELS {
            let target = DrawTarget {
                frame,
                pitch,
                palette: palettes + u64::from(channel) * PALETTE_BYTES,
            };
            for stream in pattern.submissions(channel, &target) {
                run(&mut memory, stream.words());
            }
        }
        (memory, frame, pitch)
    }

    fn check(width: u32, height: u32, seed: u32, pitch_pad: u32) {
        let pattern = EnginesPattern::new(width, height, seed);
        let (memory, frame, pitch) = draw(&pattern, pitch_pad);
        for y in 0..height {
            for x in 0..width {
                let at = (frame + u64::from(y) * u64::from(pitch) + u64::from(x) * 4) as usize;
                let got = u32::from_le_bytes(memory[at..at + 4].try_into().unwrap());
                assert_eq!(
                    got,
                    pattern.pixel(x, y),
                    "{width}x{height} seed {seed}: pixel ({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn the_commands_draw_exactly_the_picture() {
        check(1280, 1024, SEED_ENGINES, 64);
        check(1920, 1080, SEED_HOSTILE, 0);
        check(800, 600, 1, 3);
    }

    /// Values of the Python definition in docs/e2e.md ("The engines
    /// picture"), so that code and documentation cannot drift apart.
    #[test]
    fn pixel_matches_documented_reference_values() {
        let a = EnginesPattern::new(1280, 1024, 5);
        assert_eq!(a.pixel(0, 0), 0x123c60);
        assert_eq!(a.pixel(20, 20), 0x05479a); // the marker
        assert_eq!(a.pixel(1200, 10), 0x122c48); // the stamp
        assert_eq!(a.pixel(640, 512), 0xa66ad9);
        assert_eq!(a.pixel(1279, 1023), 0x1ca488);
        let b = EnginesPattern::new(1920, 1080, 6);
        assert_eq!(b.pixel(100, 600), 0xd412c6);
        assert_eq!(b.pixel(1919, 1079), 0x1c600d);
    }

    #[test]
    fn odd_sizes_clip_cells_stamp_and_marker() {
        for (w, h) in [(1, 1), (33, 31), (100, 70), (260, 65), (257, 97), (300, 20)] {
            check(w, h, 9, 1);
        }
    }

    #[test]
    fn the_halves_split_on_cell_rows() {
        let p = EnginesPattern::new(1920, 1080, 1);
        assert_eq!(p.cell_rows(0), 0..17);
        assert_eq!(p.cell_rows(1), 17..34);
        let one_row = EnginesPattern::new(64, 20, 1);
        assert!(one_row.cell_rows(0).is_empty());
        assert_eq!(one_row.cell_rows(1), 0..1);
    }

    #[test]
    fn every_stage_shows_in_the_picture() {
        let p = EnginesPattern::new(1280, 1024, SEED_ENGINES);
        let mut colours = std::collections::HashSet::new();
        for y in (0..1024).step_by(3) {
            for x in (0..1280).step_by(3) {
                colours.insert(p.pixel(x, y));
            }
        }
        // Two palettes of 8 tiles of 5 runs, and two markers.
        assert!(colours.len() > 40, "{} colours", colours.len());
        assert_eq!(p.pixel(TILE / 2, TILE / 2), p.marker_colour(0));
        let (_, dst) = p.stamp(0).unwrap();
        assert_eq!(p.pixel(dst.x0, 0), p.cell_pixel(0, 0));
    }

    #[test]
    fn runs_cut_each_tile_in_order() {
        let p = EnginesPattern::new(64, 64, 3);
        for channel in 0..CHANNELS {
            for tile in 0..TILES {
                let cuts: Vec<u32> = (0..=SEGMENTS).map(|s| p.cut(channel, tile, s)).collect();
                assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
            }
        }
    }

    #[test]
    fn submissions_are_tiles_then_a_row_each_then_the_stamp() {
        let p = EnginesPattern::new(1920, 1080, 1);
        let target = DrawTarget {
            frame: 0x10_0000,
            pitch: 7680,
            palette: 0x100_0000,
        };
        assert_eq!(p.submissions(0, &target).len(), 1 + 17 + 1);
        assert_eq!(p.submissions(1, &target).len(), 1 + 17 + 1);
    }
}
