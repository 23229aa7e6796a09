//! The vGPU's page-table walker for TLB_INVALIDATE commands: its own
//! thread, so that a walk (up to the walk bounds, which a guest can make
//! take long) never holds the GPU's engine, which every vGPU shares.
//!
//! The channel that issued the command waits for its walk (the commands
//! after it see the new translations); the vGPU's other channels and every
//! other vGPU go on. While the walk holds the vGPU's `memory` lock, the
//! engine skips this vGPU's steps that need it and doorbells of this vGPU
//! wait; both resume when the walk ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Weak};
use std::time::Instant;

use vgpu_emulation::MmuRequest;

use super::{GpuMemory, MmuOutcome, VgpuStats, VirtualGpu};

/// A walk asked for and whether it is done.
#[derive(Debug, Default)]
pub(crate) struct WalkTicket {
    done: AtomicBool,
    /// How long the walk took, ns: engine time of the submission (its
    /// watchdog counts it).
    ns: AtomicU64,
}

impl WalkTicket {
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The walk's time, once it is done.
    pub fn ns(&self) -> u64 {
        self.ns.load(Ordering::Acquire)
    }
}

/// A walk for the walker thread.
#[derive(Debug)]
pub(crate) struct WalkJob {
    request: MmuRequest,
    ticket: Arc<WalkTicket>,
}

/// The sending end of the vGPU's walker thread, started on first use.
#[derive(Debug, Default)]
pub(crate) struct Walker {
    jobs: Option<Sender<WalkJob>>,
}

impl Walker {
    /// Queues `request` for `vgpu`'s walker, starting the thread if need
    /// be; `None` if no thread can be started (the caller walks itself).
    pub fn submit(
        &mut self,
        vgpu: &Weak<VirtualGpu>,
        request: MmuRequest,
    ) -> Option<Arc<WalkTicket>> {
        if self.jobs.is_none() {
            let (jobs, queue) = channel();
            let me = Weak::clone(vgpu);
            std::thread::Builder::new()
                .name("vgpu-walker".into())
                .spawn(move || run(&me, &queue))
                .ok()?;
            self.jobs = Some(jobs);
        }
        let ticket = Arc::new(WalkTicket::default());
        let job = WalkJob {
            request,
            ticket: Arc::clone(&ticket),
        };
        match self.jobs.as_ref()?.send(job) {
            Ok(()) => Some(ticket),
            Err(_) => {
                self.jobs = None;
                None
            }
        }
    }
}

/// The walker thread: walks until the vGPU (and with it the sender) goes.
fn run(vgpu: &Weak<VirtualGpu>, queue: &Receiver<WalkJob>) {
    for job in queue {
        let Some(vgpu) = vgpu.upgrade() else {
            return;
        };
        let started = Instant::now();
        vgpu.walk(job.request);
        let ns = started.elapsed().as_nanos() as u64;
        job.ticket.ns.store(ns, Ordering::Release);
        job.ticket.done.store(true, Ordering::Release);
        vgpu.after_walk();
    }
}

impl VirtualGpu {
    /// Carries out a TLB_INVALIDATE's walk (on the walker thread, or on
    /// the engine's if no walker could be started).
    pub(crate) fn walk(&self, request: MmuRequest) {
        let aperture = self.vram().aperture();
        let outcome = {
            let mut memory = self.memory();
            let GpuMemory { windows, mmu } = &mut *memory;
            mmu.handle(request, &aperture, windows)
        };
        match outcome {
            Ok(MmuOutcome::Shadowed(summary)) => {
                VgpuStats::count(&self.stats.refused_ptes, summary.fault_count);
            }
            Ok(_) => {}
            Err(e) => self.engine_log.log(|| {
                tracing::error!(
                    uuid = %self.uuid(),
                    error = %crate::ErrorChain(&e),
                    "TLB_INVALIDATE"
                )
            }),
        }
    }
}
