//! Drawing the engines picture ([`EnginesPattern`]) on one vGPU with two
//! channels: where everything lies in VRAM ([`WorkArea`]), the page tables
//! and channels, the submissions, and waiting for their fences.
//!
//! Channel 0 rings through RING_PUT, channel 1 through its control page.
//! Each channel's work is a run of submissions (its palette, one per cell
//! row, then the stamp and marker), interleaved between the channels;
//! every submission ends with a 64-bit FENCE of the next value into the
//! channel's fence word, the last one optionally with its interrupt flag.
//! The palette of channel 0 goes straight into the ring; everything else
//! is a batch buffer written once, at setup, and started from the ring;
//! channel 1's last batch is started from another batch (two levels).

use std::time::{Duration, Instant};

use vgpu_commands::StreamBuilder;

use crate::channel::{Channel, ChannelConfig, ChannelError, Door};
use crate::engines_pattern::{CHANNELS, DrawTarget, EnginesPattern, PALETTE_BYTES};
use crate::gpu::{Gpu, GpuError, VRAM_VA, channel as reg};
use crate::page_tables::{LARGE_PAGE, PageTables};
use crate::pattern::FrameLayout;
use crate::vfio::VfioDevice;
use crate::wait::wait_for_every;

/// Bytes of VRAM the programs take for their own structures.
pub const WORK_BYTES: u64 = 16 << 20;
/// Bytes of each ring.
pub const RING_BYTES: u32 = 64 << 10;
/// How long the device may take to take a submission (GET = PUT): it waits
/// while the channel holds 16 submissions.
pub const TAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the programs' structures lie in VRAM: 16 MiB below the last
/// 2 MiB (the `dma` program uses the last MiB), away from the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkArea {
    /// VRAM offset of its start (2 MiB aligned).
    pub base: u64,
}

impl WorkArea {
    /// The work area of a slice of `vram` bytes; refused if it would
    /// overlap `frame`.
    pub fn place(vram: u64, frame: &FrameLayout) -> Result<Self, String> {
        let base = vram
            .checked_sub(WORK_BYTES + LARGE_PAGE)
            .map(|b| b & !(LARGE_PAGE - 1))
            .ok_or(format!("VRAM ({vram:#x} bytes) is too small"))?;
        let frame_end = frame.start + frame.span();
        if frame.start < base + WORK_BYTES && base < frame_end {
            return Err(format!(
                "the frame at VRAM {:#x}..{frame_end:#x} overlaps the work area at {base:#x}",
                frame.start
            ));
        }
        Ok(WorkArea { base })
    }

    /// The page tables (up to 64 KiB).
    pub fn tables(&self) -> u64 {
        self.base
    }

    /// Channel `n`'s ring.
    pub fn ring(&self, n: u32) -> u64 {
        self.base + 0x10000 * (1 + u64::from(n))
    }

    /// Channel `n`'s control page (64 bytes).
    pub fn control_page(&self, n: u32) -> u64 {
        self.base + 0x5_0000 + 0x40 * u64::from(n)
    }

    /// Channel `n`'s fence word (8 bytes).
    pub fn fence(&self, n: u32) -> u64 {
        self.base + 0x5_1000 + 8 * u64::from(n)
    }

    /// 64 KiB of scratch, for checks.
    pub fn scratch(&self) -> u64 {
        self.base + 0x6_0000
    }

    /// Channel `n`'s palette.
    pub fn palette(&self, n: u32) -> u64 {
        self.base + 0x8_0000 + PALETTE_BYTES * u64::from(n)
    }

    /// The batch buffers, to the end of the area.
    pub fn batches(&self) -> u64 {
        self.base + 0x10_0000
    }

    /// The end of the area.
    pub fn end(&self) -> u64 {
        self.base + WORK_BYTES
    }
}

/// Page tables that map all of `gpu`'s VRAM at [`VRAM_VA`], stored at the
/// work area's start; returns them (for PT_ROOT and for more entries).
pub fn identity_tables(gpu: &Gpu, work: &WorkArea) -> PageTables {
    let mut tables = PageTables::new(work.tables());
    let mapped = gpu.vram_size() & !(LARGE_PAGE - 1);
    tables.map_vram(VRAM_VA, 0, mapped);
    tables
}

/// Stores `tables` into VRAM.
pub fn store_tables(gpu: &Gpu, tables: &PageTables) -> Result<(), GpuError> {
    for (offset, image) in tables.images() {
        gpu.write_vram(offset, &image)?;
    }
    Ok(())
}

/// One submission's commands: in the ring, or a batch started from it.
#[derive(Debug)]
enum Submission {
    /// Commands written into the ring itself.
    Ring(Vec<u32>),
    /// A batch at this GPU VA, of this many bytes.
    Batch { va: u64, bytes: u32 },
}

/// The picture, two channels and their submissions on one vGPU.
#[derive(Debug)]
pub struct Drawing<'g> {
    gpu: &'g Gpu,
    work: WorkArea,
    /// The channels: 0 (RING_PUT) and 1 (control page).
    pub channels: Vec<Channel<'g>>,
    plan: Vec<Vec<Submission>>,
    /// The picture.
    pub pattern: EnginesPattern,
    /// Where it is drawn.
    pub frame: FrameLayout,
}

/// How the program learns that fences completed.
#[derive(Debug)]
pub enum FenceWait<'v> {
    /// Polling: channel 0's fence word in VRAM, channel 1's control page.
    Poll,
    /// The channels' MSI-X vectors (1 + channel) through VFIO eventfds.
    Msix(&'v VfioDevice),
}

impl<'g> Drawing<'g> {
    /// Starts channels 0 and 1 on the page tables at VRAM offset `root`,
    /// with their rings and pages in `work`, and writes every batch of
    /// `pattern` drawn into `frame` there.
    pub fn setup(
        gpu: &'g Gpu,
        work: WorkArea,
        root: u64,
        pattern: EnginesPattern,
        frame: FrameLayout,
    ) -> Result<Self, String> {
        let mut channels = Vec::new();
        for n in 0..CHANNELS {
            let door = if n == 0 {
                Door::Register
            } else {
                Door::ControlPage(work.control_page(n))
            };
            let config = ChannelConfig {
                index: n,
                ring: work.ring(n),
                ring_size: RING_BYTES,
                door,
                root,
            };
            channels.push(Channel::start(gpu, config).map_err(|e| e.to_string())?);
        }
        gpu.zero_vram(work.fence(0), 16)
            .map_err(|e| e.to_string())?;

        let mut next_batch = work.batches();
        let mut store = |words: &[u32]| -> Result<(u64, u32), String> {
            let bytes = u32::try_from(words.len() * 4).map_err(|_| "batch too long")?;
            if next_batch + u64::from(bytes) > work.end() {
                return Err("the batches do not fit in the work area".to_string());
            }
            gpu.write_vram_words(next_batch, words)
                .map_err(|e| e.to_string())?;
            let at = next_batch;
            next_batch = (next_batch + u64::from(bytes)).next_multiple_of(256);
            Ok((VRAM_VA + at, bytes))
        };
        let mut plan = Vec::new();
        for n in 0..CHANNELS {
            let target = DrawTarget {
                frame: VRAM_VA + frame.start,
                pitch: u32::try_from(frame.pitch).map_err(|_| "pitch too large")?,
                palette: VRAM_VA + work.palette(n),
            };
            let streams = pattern.submissions(n, &target);
            let count = streams.len();
            let mut subs = Vec::new();
            for (i, stream) in streams.into_iter().enumerate() {
                let mut words = stream.into_words();
                if n == 0 && i == 0 {
                    subs.push(Submission::Ring(words));
                    continue;
                }
                words.extend(StreamBuilder::new().batch_end().words());
                let (mut va, mut bytes) = store(&words)?;
                if n == 1 && i + 1 == count {
                    // Started from another batch: two levels deep.
                    let mut outer = StreamBuilder::new();
                    outer.batch_start(va, bytes).batch_end();
                    (va, bytes) = store(outer.words())?;
                }
                subs.push(Submission::Batch { va, bytes });
            }
            plan.push(subs);
        }
        Ok(Drawing {
            gpu,
            work,
            channels,
            plan,
            pattern,
            frame,
        })
    }

    /// Submissions per channel.
    pub fn submissions(&self) -> Vec<usize> {
        self.plan.iter().map(Vec::len).collect()
    }

    /// Submits the whole picture, the channels' submissions interleaved;
    /// channel `n`'s fence values go from `bases[n] + 1` up, one per
    /// submission. The last fence of each channel raises its interrupt if
    /// `interrupt`. `observe` is called after each submission was taken.
    /// Returns each channel's last fence value.
    pub fn submit_all(
        &mut self,
        bases: &[u64],
        interrupt: bool,
        mut observe: impl FnMut(&Self),
    ) -> Result<Vec<u64>, ChannelError> {
        let most = self.plan.iter().map(Vec::len).max().unwrap_or(0);
        let mut last: Vec<u64> = (0..self.plan.len())
            .map(|n| bases.get(n).copied().unwrap_or(0))
            .collect();
        for i in 0..most {
            for (n, last) in last.iter_mut().enumerate() {
                let Some(submission) = self.plan[n].get(i) else {
                    continue;
                };
                let value = bases.get(n).copied().unwrap_or(0) + i as u64 + 1;
                let is_last = i + 1 == self.plan[n].len();
                let mut words = StreamBuilder::new();
                match submission {
                    Submission::Ring(commands) => {
                        words.raw(commands);
                    }
                    Submission::Batch { va, bytes } => {
                        words.batch_start(*va, *bytes);
                    }
                }
                words.fence64(
                    VRAM_VA + self.work.fence(n as u32),
                    value,
                    interrupt && is_last,
                );
                self.channels[n].submit(words.words(), TAKE_TIMEOUT)?;
                *last = value;
                observe(self);
            }
        }
        Ok(last)
    }

    /// The fence values as the polling side sees them: channel 0's fence
    /// word in VRAM (the FENCE command's target), channel 1's control page.
    pub fn polled_fences(&self) -> Result<Vec<u64>, GpuError> {
        let mut fences = vec![self.gpu.vram_u64(self.work.fence(0))?];
        for channel in &self.channels[1..] {
            fences.push(channel.fence()?);
        }
        Ok(fences)
    }

    /// Any channel's error.
    fn stopped(&self) -> Result<Option<ChannelError>, GpuError> {
        for channel in &self.channels {
            if let Some(e) = channel.stopped()? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Waits up to `timeout` until every channel's fence reached `last`
    /// (by `how`); returns how it went, for the report.
    pub fn wait_fences(
        &self,
        last: &[u64],
        how: &FenceWait<'_>,
        timeout: Duration,
    ) -> Result<String, String> {
        let started = Instant::now();
        match how {
            FenceWait::Poll => {
                let done = wait_for_every(timeout, Duration::from_millis(1), || {
                    match (self.polled_fences(), self.stopped()) {
                        (_, Ok(Some(e))) => Some(Err(e.to_string())),
                        (Ok(f), _) if f.iter().zip(last).all(|(f, l)| f >= l) => Some(Ok(f)),
                        (Err(e), _) | (_, Err(e)) => Some(Err(e.to_string())),
                        _ => None,
                    }
                });
                let fences = done.unwrap_or_else(|| {
                    Err(format!(
                        "fences {:?} after {timeout:?}, expected {last:?}",
                        self.polled_fences()
                    ))
                })?;
                Ok(format!(
                    "polled fences {fences:?} (channel 0: its fence word in VRAM, channel 1: its control page) in {:.0?}",
                    started.elapsed()
                ))
            }
            FenceWait::Msix(vfio) => {
                let mut counts = Vec::new();
                for (n, &want) in last.iter().enumerate() {
                    let vector = 1 + n as u32;
                    let eventfd = vfio
                        .vector(vector)
                        .ok_or(format!("no eventfd for MSI-X vector {vector}"))?;
                    let mut interrupts = 0;
                    loop {
                        let left = timeout.saturating_sub(started.elapsed());
                        let got = eventfd
                            .wait(left)
                            .map_err(|e| format!("eventfd of vector {vector}: {e}"))?;
                        let fence = self
                            .gpu
                            .channel_reg64(n as u32, reg::FENCE)
                            .map_err(|e| e.to_string())?;
                        interrupts += got;
                        if got != 0 && fence >= want {
                            break;
                        }
                        if got == 0 {
                            return Err(format!(
                                "no interrupt on MSI-X vector {vector} within {timeout:?}: channel {n} FENCE {fence}, expected {want}, {}",
                                self.stopped()
                                    .ok()
                                    .flatten()
                                    .map_or("not stopped".to_string(), |e| e.to_string())
                            ));
                        }
                    }
                    let intr = self
                        .gpu
                        .channel_reg(n as u32, reg::INTR_STATUS)
                        .map_err(|e| e.to_string())?;
                    if intr & reg::INTR_FENCE == 0 {
                        return Err(format!(
                            "vector {vector} fired but channel {n}'s INTR_STATUS is {intr:#x}, without FENCE"
                        ));
                    }
                    self.gpu
                        .set_channel_reg(n as u32, reg::INTR_STATUS, reg::INTR_FENCE)
                        .map_err(|e| e.to_string())?;
                    counts.push(format!(
                        "vector {vector}: {interrupts} interrupt(s), FENCE {want}"
                    ));
                }
                Ok(format!(
                    "waited on MSI-X through VFIO eventfds ({}) in {:.0?}; INTR_STATUS.FENCE set and cleared",
                    counts.join(", "),
                    started.elapsed()
                ))
            }
        }
    }

    /// Compares the frame with the picture, in VRAM through BAR0.
    pub fn check_frame(&self) -> Result<String, String> {
        let comparison = self
            .gpu
            .compare_frame(&self.frame, |x, y| self.pattern.pixel(x, y));
        if comparison.matches() {
            Ok(format!(
                "{}x{} at VRAM {:#x} pitch {}: {} pixels match the engines picture (seed {})",
                self.frame.width,
                self.frame.height,
                self.frame.start,
                self.frame.pitch,
                comparison.pixels,
                self.pattern.seed
            ))
        } else {
            Err(format!(
                "{}x{} at VRAM {:#x} pitch {}: {comparison}",
                self.frame.width, self.frame.height, self.frame.start, self.frame.pitch
            ))
        }
    }

    /// Resets every channel (they stop and go back to disabled).
    pub fn stop(&mut self) -> Result<(), GpuError> {
        for channel in &mut self.channels {
            channel.reset()?;
        }
        Ok(())
    }
}
