//! One attached vGPU, set up for engine work the way a guest driver would
//! (docs/device-interface.md, "The GPU MMU" and "Channels"):
//!
//! - page tables in VRAM map the whole slice at GPU VA [`VA_BASE`] with
//!   2 MiB pages, so every engine access is translated by the GPU MMU;
//! - channel `n` has a 64 KiB ring at VRAM 1 MiB + 64 KiB × n, its fence
//!   word at 128 KiB + 64 × n and its control page at 64 KiB + 64 × n;
//! - rings, fences and control pages are written and read through the
//!   client's mmap of BAR0, as a guest does (no exit); the trapped
//!   doorbell is a BAR2 write of RING_PUT (an exit and a socket round
//!   trip).
//!
//! ```text
//! VRAM offset  0        64 KiB         128 KiB       1 MiB            4 MiB (DATA)
//!              | tables | control pages | fence words | rings (64 KiB) | free for data
//! ```
//!
//! Every submission ends with a FENCE of the next value to the channel's
//! fence word; completion is that word reaching the value.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use uuid::Uuid;
use vgpu_commands::StreamBuilder;
use vgpud_tests::config::{GpuSpec, ProfileSpec, VgpuSpec};
use vgpud_tests::device::MappedBar0;
use vgpud_tests::page_tables::{LARGE_PAGE_SIZE, Page, PageTables};
use vgpud_tests::regs::channel::{self, reg};
use vgpud_tests::{DaemonConfig, RawClient, TestDaemon};

/// GPU VA of VRAM offset 0. VRAM is mapped one to one from here, so that
/// a VA is never the offset it translates to.
pub const VA_BASE: u64 = 1 << 32;
/// The page-table arena.
const TABLES: Range<u64> = 0..0x1_0000;
/// Control pages, 64 bytes per channel.
const CONTROL_PAGES: u64 = 0x1_0000;
/// Fence words, 64 bytes per channel.
const FENCES: u64 = 0x2_0000;
/// Rings, [`RING_SIZE`] bytes per channel.
const RINGS: u64 = 0x10_0000;
/// Bytes of each channel's ring.
pub const RING_SIZE: u32 = 0x1_0000;
/// Where data may go: everything from here to the end of the slice.
pub const DATA: u64 = 0x40_0000;
/// Most channels the layout has room for (rings end at [`DATA`]).
pub const MAX_CHANNELS: u32 = ((DATA - RINGS) / RING_SIZE as u64) as u32;
/// How long a fence may take before the bench gives up on it.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a submission reaches the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doorbell {
    /// A BAR2 write of RING_PUT: a vfio-user `REGION_WRITE` round trip.
    Trapped,
    /// A store of PUT into the channel's control page in the BAR0 mmap,
    /// which the daemon's watcher picks up.
    ControlPage,
}

/// How a client waits for a fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Look, then `sched_yield`, until it comes: the shortest reaction,
    /// while giving way to any other runnable thread on the CPU.
    Spin,
    /// Spin for the first `spin`, then look every `nap`.
    SpinThenNap {
        /// How long to spin first.
        spin: Duration,
        /// Sleep between looks afterwards.
        nap: Duration,
    },
}

/// One channel's ring as the client keeps it.
#[derive(Debug, Default)]
struct Ring {
    /// Byte offset one past the last command written.
    put: u32,
    /// The last fence value submitted.
    fence: u32,
    /// Submissions whose fence has not been seen: (fence value, ring
    /// offset where the submission starts). Their bytes may not be
    /// overwritten yet.
    in_flight: VecDeque<(u32, u32)>,
}

/// An attached vGPU ready for engine work.
#[derive(Debug)]
pub struct Vgpu {
    /// The vGPU's UUID.
    pub uuid: Uuid,
    /// Its vfio-user connection.
    pub client: RawClient,
    bar0: MappedBar0,
    rings: Vec<Ring>,
}

impl Vgpu {
    /// Attaches to `uuid` on `daemon` and starts `channels` channels.
    pub fn attach(daemon: &TestDaemon, uuid: Uuid, channels: u32) -> anyhow::Result<Self> {
        ensure!(
            (1..=MAX_CHANNELS).contains(&channels),
            "{channels} channels"
        );
        let mut client = daemon.connect(uuid)?;
        let mut bar0 = client.map_bar0()?;
        let size = bar0.map.len() as u64;
        ensure!(
            size > DATA && size.is_multiple_of(LARGE_PAGE_SIZE),
            "a {size}-byte slice does not fit the rig's layout"
        );
        let mut tables = PageTables::in_vram(&mut bar0, TABLES)?;
        for at in (0..size).step_by(LARGE_PAGE_SIZE as usize) {
            tables.map(&mut bar0, VA_BASE + at, Page::vram(at).large())?;
        }
        for n in 0..channels {
            let ring = VA_BASE + ring_offset(n);
            client.set_pt_root(n, tables.root_entry())?;
            client.bar2_write32(reg(n, channel::RING_BASE_LO), ring as u32)?;
            client.bar2_write32(reg(n, channel::RING_BASE_HI), (ring >> 32) as u32)?;
            client.bar2_write32(reg(n, channel::RING_SIZE), RING_SIZE)?;
            client.bar2_write32(reg(n, channel::CONTROL), channel::ENABLE)?;
        }
        let mut vgpu = Vgpu {
            uuid,
            client,
            bar0,
            rings: (0..channels).map(|_| Ring::default()).collect(),
        };
        for n in 0..channels {
            vgpu.check_running(n)?;
        }
        Ok(vgpu)
    }

    /// The GPU VA of VRAM offset `offset`.
    pub fn va(offset: u64) -> u64 {
        VA_BASE + offset
    }

    /// The VRAM slice as this client maps it.
    pub fn vram(&self) -> &[u8] {
        &self.bar0.map
    }

    /// The VRAM slice, writable (to put data in place or touch pages).
    pub fn vram_mut(&mut self) -> &mut [u8] {
        &mut self.bar0.map
    }

    /// Turns on channel `n`'s control page (USERD), its PUT set to where
    /// RING_PUT is, so that enabling it rings nothing.
    pub fn enable_control_page(&mut self, n: u32) -> anyhow::Result<()> {
        let page = control_page(n);
        store(&mut self.bar0, page, self.rings[n as usize].put);
        self.client
            .bar2_write32(reg(n, channel::USERD_LO), page as u32 | 1)?;
        self.client.bar2_write32(reg(n, channel::USERD_HI), 0)?;
        Ok(())
    }

    /// Turns channel `n`'s control page off.
    pub fn disable_control_page(&mut self, n: u32) -> anyhow::Result<()> {
        Ok(self.client.bar2_write32(reg(n, channel::USERD_LO), 0)?)
    }

    /// Writes `commands` and a FENCE of the next value into channel `n`'s
    /// ring and rings `doorbell`; returns the fence value to wait for.
    pub fn submit(
        &mut self,
        n: u32,
        commands: &StreamBuilder,
        doorbell: Doorbell,
    ) -> anyhow::Result<u32> {
        let put = self.write_commands(n, commands)?;
        self.ring_doorbell(n, put, doorbell)?;
        Ok(self.rings[n as usize].fence)
    }

    /// Writes `commands` and a FENCE of the next value into channel `n`'s
    /// ring without ringing the doorbell; returns the new PUT.
    pub fn write_commands(&mut self, n: u32, commands: &StreamBuilder) -> anyhow::Result<u32> {
        let completed = self.fence(n);
        let ring = &mut self.rings[n as usize];
        while ring
            .in_flight
            .front()
            .is_some_and(|&(value, _)| reached(completed, value))
        {
            ring.in_flight.pop_front();
        }
        let value = ring.fence.wrapping_add(1);
        let mut tail = StreamBuilder::new();
        tail.fence32(Self::va(fence_word(n)), value, false);
        let len = commands.byte_len() + tail.byte_len();
        let start = ring.in_flight.front().map_or(ring.put, |&(_, at)| at);
        let used = ring.put.wrapping_sub(start) % RING_SIZE;
        ensure!(
            used + len < RING_SIZE,
            "channel {n}'s ring is full ({used} bytes in flight): the bench submits too far ahead"
        );
        let begin = ring.put;
        ring.put = write_ring(&mut self.bar0, n, begin, &commands.to_bytes());
        ring.put = write_ring(&mut self.bar0, n, ring.put, &tail.to_bytes());
        ring.fence = value;
        ring.in_flight.push_back((value, begin));
        Ok(ring.put)
    }

    /// Rings channel `n`'s doorbell with `put`.
    pub fn ring_doorbell(&mut self, n: u32, put: u32, doorbell: Doorbell) -> anyhow::Result<()> {
        match doorbell {
            Doorbell::Trapped => self.client.bar2_write32(reg(n, channel::RING_PUT), put)?,
            Doorbell::ControlPage => {
                // The ring's bytes are in place before PUT says so.
                fence(Ordering::SeqCst);
                store(&mut self.bar0, control_page(n), put);
            }
        }
        Ok(())
    }

    /// The last fence value channel `n` completed, from its fence word.
    pub fn fence(&self, n: u32) -> u32 {
        load(&self.bar0, fence_word(n))
    }

    /// The last fence value submitted on channel `n`.
    pub fn submitted(&self, n: u32) -> u32 {
        self.rings[n as usize].fence
    }

    /// Submissions of channel `n` whose fence has not been seen.
    pub fn in_flight(&self, n: u32) -> u32 {
        self.submitted(n).wrapping_sub(self.fence(n))
    }

    /// FENCE_LO as the device mirrors it into channel `n`'s control page.
    pub fn page_fence(&self, n: u32) -> u32 {
        load(&self.bar0, control_page(n) + 8)
    }

    /// Waits until channel `n`'s fence reaches `value`; a channel that
    /// stopped, or a fence that does not come within [`FENCE_TIMEOUT`], is
    /// an error.
    pub fn wait_fence(&mut self, n: u32, value: u32, poll: Poll) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if reached(self.fence(n), value) {
                return Ok(());
            }
            let waited = start.elapsed();
            match poll {
                Poll::Spin => std::thread::yield_now(),
                Poll::SpinThenNap { spin, .. } if waited < spin => std::thread::yield_now(),
                Poll::SpinThenNap { nap, .. } => std::thread::sleep(nap),
            }
            if waited > FENCE_TIMEOUT {
                self.check_running(n)?;
                bail!(
                    "channel {n} of {}: fence {value} did not come in {FENCE_TIMEOUT:?} (at {})",
                    self.uuid,
                    self.fence(n)
                );
            }
        }
    }

    /// An error if channel `n` is not running (it stopped on an error).
    pub fn check_running(&mut self, n: u32) -> anyhow::Result<()> {
        let status = self.client.bar2_read32(reg(n, channel::STATUS))?;
        if status & 3 != channel::RUNNING {
            let code = self.client.bar2_read32(reg(n, channel::ERROR_CODE))?;
            let va = self.client.bar2_read32(reg(n, channel::ERROR_VA_LO))?;
            bail!(
                "channel {n} of {} is not running: STATUS {status:#x}, ERROR_CODE {code}, ERROR_VA_LO {va:#x}",
                self.uuid
            );
        }
        Ok(())
    }
}

/// Whether a fence word that reads `completed` has reached `value`
/// (fence values count up and may wrap).
fn reached(completed: u32, value: u32) -> bool {
    (completed.wrapping_sub(value) as i32) >= 0
}

fn ring_offset(n: u32) -> u64 {
    RINGS + u64::from(RING_SIZE) * u64::from(n)
}

fn control_page(n: u32) -> u64 {
    CONTROL_PAGES + 0x40 * u64::from(n)
}

fn fence_word(n: u32) -> u64 {
    FENCES + 0x40 * u64::from(n)
}

/// Copies `bytes` into channel `n`'s ring at `put`, wrapping at its end;
/// returns the offset after them.
fn write_ring(bar0: &mut MappedBar0, n: u32, put: u32, bytes: &[u8]) -> u32 {
    let base = ring_offset(n) as usize;
    let size = RING_SIZE as usize;
    let at = put as usize;
    let (before_end, wrapped) = bytes.split_at(bytes.len().min(size - at));
    bar0.map[base + at..base + at + before_end.len()].copy_from_slice(before_end);
    bar0.map[base..base + wrapped.len()].copy_from_slice(wrapped);
    ((at + bytes.len()) % size) as u32
}

/// The 32-bit word at `offset` of the mapping, read with one volatile
/// load: the daemon writes these words at any time.
fn load(bar0: &MappedBar0, offset: u64) -> u32 {
    let at = word_index(&bar0.map, offset);
    let ptr = bar0.map.as_ptr().wrapping_add(at).cast::<u32>();
    // SAFETY: `word_index` checked that the 4 bytes at `at` lie inside the
    // live mapping and are 4-byte aligned (the mapping is page aligned).
    // A volatile load of plain bytes has no validity requirement.
    u32::from_le(unsafe { ptr.read_volatile() })
}

/// Stores `value` at `offset` of the mapping with one volatile store: the
/// daemon reads the word at any time.
fn store(bar0: &mut MappedBar0, offset: u64, value: u32) {
    let at = word_index(&bar0.map, offset);
    let ptr = bar0.map.as_mut_ptr().wrapping_add(at).cast::<u32>();
    // SAFETY: as in `load`: 4 aligned bytes inside the live, writable
    // mapping.
    unsafe { ptr.write_volatile(value.to_le()) };
}

fn word_index(map: &[u8], offset: u64) -> usize {
    let at = usize::try_from(offset).unwrap_or(usize::MAX);
    // Offsets come from this module's layout: a host-side invariant.
    assert!(
        at.is_multiple_of(4) && at.checked_add(4).is_some_and(|end| end <= map.len()),
        "word at {offset:#x} of a {}-byte mapping",
        map.len()
    );
    at
}

/// UUIDs for bench vGPUs: `6f1c2a4e-…-0000000000NN`.
pub fn uuid(index: u32) -> Uuid {
    Uuid::from_u128(0x6f1c2a4e_0d4e_4a43_9f7b_000000000000 | u128::from(index))
}

/// `result`, with the daemon's stderr added to an error.
pub fn with_stderr<T>(result: anyhow::Result<T>, daemon: &TestDaemon) -> anyhow::Result<T> {
    result.with_context(|| format!("vgpud stderr:\n{}", daemon.stderr()))
}

/// A profile of `framebuffer` (e.g. `"256MiB"`), for benches.
pub fn profile(
    name: &str,
    framebuffer: &str,
    max_instances: u32,
    channels: u32,
    weight: Option<u32>,
) -> ProfileSpec {
    ProfileSpec {
        name: name.into(),
        framebuffer: framebuffer.into(),
        max_instances,
        channels,
        max_resolution: (640, 480),
        subsystem: None,
        weight,
    }
}

/// One simulated GPU `gpu0` of `vram` with `scheduler` (None: the
/// default), carved into `vgpus` (UUID, profile name).
pub fn one_gpu(
    vram: &str,
    scheduler: Option<&str>,
    profiles: Vec<ProfileSpec>,
    vgpus: &[(Uuid, &str)],
) -> DaemonConfig {
    DaemonConfig {
        gpus: vec![GpuSpec {
            id: "gpu0".into(),
            vram: vram.into(),
            scheduler: scheduler.map(Into::into),
            time_slice_ms: None,
        }],
        profiles,
        vgpus: vgpus
            .iter()
            .map(|&(uuid, profile)| VgpuSpec {
                uuid,
                gpu: "gpu0".into(),
                profile: profile.into(),
            })
            .collect(),
        top_level: Vec::new(),
    }
}
