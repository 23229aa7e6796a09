//! A flooding client: a thread that keeps channel 0 of one vGPU busy with
//! big FILLs and COPYs, submitting more as fences complete, so that the
//! vGPU always has work queued. It sleeps between looks at its fence word
//! and rings the trapped doorbell only to submit, so that on a machine of
//! two cores it takes little CPU from the daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};
use vgpu_commands::StreamBuilder;

use uuid::Uuid;
use vgpud_tests::TestDaemon;

use super::rig::{DATA, Doorbell, Vgpu, with_stderr};

/// What a flooder submits.
#[derive(Clone, Copy, Debug)]
pub struct FloodSpec {
    /// Bytes of each FILL and each COPY: a submission fills this many at
    /// [`DATA`] and copies them to just after.
    pub bytes: u32,
    /// Submissions kept in flight (at most 16 are queued by the device).
    pub depth: u32,
    /// Sleep between looks at the fence word.
    pub poll: Duration,
}

impl FloodSpec {
    /// The commands of one submission (the rig adds the FENCE).
    fn commands(&self, round: u32) -> StreamBuilder {
        let mut s = StreamBuilder::new();
        s.fill(Vgpu::va(DATA), self.bytes, 0x5a5a_0000 | (round & 0xffff))
            .copy(
                Vgpu::va(DATA),
                Vgpu::va(DATA + u64::from(self.bytes)),
                self.bytes,
            );
        s
    }

    /// VRAM the flood touches, from offset 0.
    pub fn vram_needed(&self) -> u64 {
        DATA + 2 * u64::from(self.bytes)
    }
}

/// A running flooder.
#[derive(Debug)]
pub struct Flooder {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Flooded>>,
}

/// What a flooder did, and its vGPU back.
#[derive(Debug)]
pub struct Flooded {
    /// The vGPU, still attached.
    pub vgpu: Vgpu,
    /// Submissions made.
    pub submissions: u64,
}

impl Flooder {
    /// Starts flooding `vgpu` (channel 0) on a thread of its own.
    pub fn start(mut vgpu: Vgpu, spec: FloodSpec) -> anyhow::Result<Self> {
        anyhow::ensure!(
            spec.vram_needed() <= vgpu.vram().len() as u64,
            "a flood of {} bytes does not fit the slice",
            spec.bytes
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("flood-{}", vgpu.uuid))
            .spawn(move || {
                let mut submissions = 0u64;
                let mut round = 0u32;
                let commands: Vec<StreamBuilder> = (0..4).map(|r| spec.commands(r)).collect();
                while !stopping.load(Ordering::Relaxed) {
                    while vgpu.in_flight(0) < spec.depth {
                        round = round.wrapping_add(1);
                        let next = &commands[(round % 4) as usize];
                        vgpu.submit(0, next, Doorbell::Trapped)?;
                        submissions += 1;
                    }
                    std::thread::sleep(spec.poll);
                }
                vgpu.check_running(0)?;
                Ok(Flooded { vgpu, submissions })
            })
            .context("spawning a flooder")?;
        Ok(Flooder { stop, thread })
    }

    /// Stops submitting (what is queued still runs) and returns what it
    /// did; an error if its channel stopped.
    pub fn stop(self) -> anyhow::Result<Flooded> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow!("a flooder panicked"))?
    }

    /// Attaches to each of `uuids` (channel 0 only) and floods it.
    pub fn start_all(
        daemon: &TestDaemon,
        uuids: &[Uuid],
        spec: FloodSpec,
    ) -> anyhow::Result<Vec<Flooder>> {
        uuids
            .iter()
            .map(|&uuid| {
                let vgpu = with_stderr(Vgpu::attach(daemon, uuid, 1), daemon)?;
                Flooder::start(vgpu, spec)
            })
            .collect()
    }

    /// Stops every flooder of `all` at once, then collects them.
    pub fn stop_all(all: Vec<Flooder>) -> anyhow::Result<Vec<Flooded>> {
        for flooder in &all {
            flooder.stop.store(true, Ordering::Relaxed);
        }
        all.into_iter().map(Flooder::stop).collect()
    }
}
