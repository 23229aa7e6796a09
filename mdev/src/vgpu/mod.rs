//! [`VirtualGpu`]: one vGPU's device state, owned next to its physical GPU
//! and outliving any connection.
//!
//! It holds what the guest sees and what the GPU does for it: the
//! registers and interrupt state (the `emulation` device model), the GPU
//! MMU (shadow state and the physical contexts bound to the vGPU's
//! partition), the DMA windows its VMM mapped, and its counters. A
//! transport (the daemon's vfio-user session) feeds it requests and
//! carries its answers; an engine scheduler reaches the same object.
//!
//! # Threads, locks and who takes them
//!
//! Threads: the session thread of the vGPU's client (the daemon's
//! vfio-user transport), the GPU's engine thread and its control-page
//! watcher (one each per physical GPU, `engine::GpuEngine`), and briefly
//! the control plane (screenshots, `list`).
//!
//! - `work` (the channels' validated submissions, the validator): a
//!   doorbell (session thread for RING_PUT, watcher for control pages)
//!   validates under it; the engine thread holds it for one step of a
//!   command (at most one 64 KiB chunk); channel and device resets take it
//!   to drop work, so once they return nothing of it runs.
//! - `hw` (registers and interrupt state): the register path, once per
//!   message; the engine thread to report progress, fences and errors;
//!   the watcher to read control pages' PUT; the control plane.
//! - `memory` (DMA windows and the GPU MMU): the session thread for
//!   `DMA_MAP`, `DMA_UNMAP`, MMU register requests and the DMA self-test;
//!   validation and every engine step, so that an unmap waits out the
//!   step that reads or writes what it takes away.
//!
//! Lock order: `work` first; then `hw` or `memory`, never both at once
//! (every path takes one, lets it go, then takes the other). The GPU
//! engine's own lock is taken with none of these held, except `work` when
//! a doorbell marks the vGPU runnable. No lock is shared with another vGPU
//! but that engine lock, which the register path never takes (a doorbell
//! is not a plain register access). No holder of any of them waits on a
//! client (interrupt triggers are picked under `hw` and signalled after it
//! is released, [`Signals`]), so every holder finishes in bounded time.
//!
//! # What could be saved
//!
//! The state a snapshot or a live restart must carry is plain data: the
//! device model (`VgpuDevice` is `Clone`, registers and queues as values,
//! the channels' ring registers, fences and errors among them), the VRAM
//! contents, and the channels' queued submissions (validated copies with
//! a cursor each, and the general-purpose registers), which a snapshot
//! either saves as they are or lets drain first. The rest is rebuilt, not saved: the shadow and
//! physical page tables are derived from the roots in the registers (a
//! restore re-walks them), and the DMA windows and interrupt triggers are
//! the VMM's to give again when it reconnects.

mod engines;
mod gpu_mmu;
mod signals;
mod stats;
mod walker;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;
use uuid::Uuid;
use vgpu_emulation::{DeviceConfig, Interrupts, MmuRequest, Resolution, VgpuDevice};

pub use engines::{ERROR_BAD_SURFACE, ERROR_ENGINE_FAULT, ERROR_WATCHDOG, TurnEnd};
pub use gpu_mmu::{GpuMmu, GpuMmuError, MmuOutcome};
pub use signals::{InterruptTrigger, Signalled, Signals, Trigger, vector_bits};
pub use stats::{EngineTime, VgpuStats};
pub(crate) use walker::WalkTicket;
use walker::Walker;

use crate::dma::{DmaAllowance, DmaBacking, DmaError, DmaGrant, DmaWindows};
use crate::engine::work::Work;
use crate::engine::{EngineSlot, GpuEngine};
use crate::log_limit::LogLimit;
use crate::mmu::ContextError;
use crate::parent::VgpuInstance;
use crate::physical::PhysicalGpu;
use crate::profile::Profile;
use crate::slice::{VramAperture, VramSlice};

/// Why a vGPU could not be built.
#[derive(Debug, Error)]
pub enum VirtualGpuError {
    /// The device model refused the profile.
    #[error("vGPU {uuid}: the device model refused profile \"{profile}\"")]
    Device {
        /// The vGPU.
        uuid: Uuid,
        /// The profile's name.
        profile: String,
        /// What the device model said.
        #[source]
        source: vgpu_emulation::DeviceConfigError,
    },
    /// The GPU's MMU has no contexts left for the vGPU's channels.
    #[error("vGPU {uuid}: no GPU MMU contexts for its channels")]
    Contexts {
        /// The vGPU.
        uuid: Uuid,
        /// What the GPU said.
        #[source]
        source: ContextError,
    },
}

/// Why a `DMA_UNMAP` was refused; nothing changed.
#[derive(Debug, Error)]
#[error("cannot unmap guest memory")]
pub struct UnmapError(#[source] pub DmaError);

/// What a `DMA_UNMAP` took away.
#[derive(Debug)]
pub struct Unmapped {
    /// GPU MMU entries into the range that were torn down, or why they
    /// could not be picked out (then every entry of the vGPU went: the
    /// range is unreachable either way).
    pub revoked: Result<usize, GpuMmuError>,
}

/// The guest-visible device and the interrupt triggers its client gave:
/// one lock, because every register access that raises an interrupt needs
/// both.
#[derive(Debug)]
pub struct Hardware {
    /// Registers, config space, display and the device's queues.
    pub device: VgpuDevice,
    /// Interrupt state and the triggers the VMM assigned.
    pub irqs: Interrupts<Trigger>,
}

impl Hardware {
    /// Raises `vectors` (a bitmap): picks the triggers they are delivered
    /// on and keeps the INTx status bit in step. The caller signals the
    /// returned triggers once the lock is released.
    #[must_use]
    pub fn raise(&mut self, vectors: u64) -> Signals {
        let mut signals = Signals::default();
        if vectors == 0 {
            return signals;
        }
        let disabled = self.device.intx_disabled();
        for vector in vector_bits(vectors) {
            if let Some(trigger) = self.irqs.raise(vector, disabled) {
                signals.push(trigger);
            }
        }
        self.device.set_intx_asserted(self.irqs.intx_asserted());
        signals
    }

    /// Every register to its reset value, every trigger unassigned.
    fn reset(&mut self) {
        self.device.reset();
        self.irqs.reset();
    }
}

/// The memory side of the vGPU: the guest memory its VMM mapped and the
/// GPU MMU that translates into it and into the VRAM slice.
#[derive(Debug)]
pub struct GpuMemory {
    /// The VMM's DMA maps, within the vGPU's allowance.
    pub windows: DmaWindows,
    /// Shadow page tables and the physical contexts.
    pub mmu: GpuMmu,
}

/// One vGPU's device state. See the module documentation for its locks.
#[derive(Debug)]
pub struct VirtualGpu {
    /// Channel work: taken first when held with another of these locks.
    work: Mutex<Work>,
    hw: Mutex<Hardware>,
    memory: Mutex<GpuMemory>,
    stats: VgpuStats,
    /// Its place in its GPU's engine schedule while powered on.
    engine: Mutex<Option<Arc<EngineSlot>>>,
    /// Lines about what its channels do (refused commands, engine faults,
    /// the watchdog).
    engine_log: LogLimit,
    /// The walker thread of its TLB_INVALIDATE commands.
    walker: Mutex<Walker>,
    /// Itself, for the walker thread (set when first powered on).
    me: std::sync::OnceLock<std::sync::Weak<VirtualGpu>>,
    /// What its clients may hold in DMA windows, reserved from the
    /// daemon's budget for as long as the vGPU exists.
    dma: DmaGrant,
    // Last: the instance keeps the VRAM slice and the profile's count.
    instance: VgpuInstance,
}

impl VirtualGpu {
    /// Builds the device for `instance`, created on `gpu`: the device
    /// model of its profile, one MMU context of `gpu` per channel, and no
    /// DMA windows, with `dma` as what its clients may map.
    pub fn new(
        gpu: &dyn PhysicalGpu,
        instance: VgpuInstance,
        dma: DmaGrant,
    ) -> Result<Self, VirtualGpuError> {
        let uuid = instance.uuid;
        let config = device_config(&instance.profile);
        let vectors = config.channels + 1;
        let channels = config.channels;
        let device = VgpuDevice::new(config).map_err(|source| VirtualGpuError::Device {
            uuid,
            profile: instance.profile.name.clone(),
            source,
        })?;
        let contexts = gpu
            .bind_contexts(&instance.slice, channels)
            .map_err(|source| VirtualGpuError::Contexts { uuid, source })?;
        let windows = DmaWindows::with_allowance(dma.allowance());
        Ok(Self {
            work: Mutex::new(Work::new(channels)),
            engine: Mutex::new(None),
            engine_log: LogLimit::new(format!("vGPU {uuid} channels")),
            walker: Mutex::new(Walker::default()),
            me: std::sync::OnceLock::new(),
            hw: Mutex::new(Hardware {
                device,
                irqs: Interrupts::new(vectors),
            }),
            memory: Mutex::new(GpuMemory {
                windows,
                mmu: GpuMmu::new(contexts, instance.slice.size()),
            }),
            stats: VgpuStats::default(),
            dma,
            instance,
        })
    }

    /// The vGPU's UUID.
    pub fn uuid(&self) -> Uuid {
        self.instance.uuid
    }

    /// Its type.
    pub fn profile(&self) -> &Arc<Profile> {
        &self.instance.profile
    }

    /// Its VRAM.
    pub fn vram(&self) -> &VramSlice {
        &self.instance.slice
    }

    /// What a client may hold in DMA windows.
    pub fn dma_allowance(&self) -> DmaAllowance {
        self.dma.allowance()
    }

    /// Its counters.
    pub fn stats(&self) -> &VgpuStats {
        &self.stats
    }

    /// The device model and interrupt triggers. Poisoning is ignored: a
    /// panic while holding it is a daemon bug, and the register file stays
    /// structurally valid.
    pub fn hw(&self) -> MutexGuard<'_, Hardware> {
        self.hw.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The DMA windows and the GPU MMU. Poisoning is ignored as for
    /// [`hw`](Self::hw).
    pub fn memory(&self) -> MutexGuard<'_, GpuMemory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The memory if no one holds it (the engine and doorbells must not
    /// wait for a walk).
    pub(crate) fn try_memory(&self) -> Option<MutexGuard<'_, GpuMemory>> {
        match self.memory.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Raises `vectors` and signals their triggers outside the lock.
    pub fn raise(&self, vectors: u64) {
        if vectors != 0 {
            let signals = self.hw().raise(vectors);
            signals.send(&self.stats);
        }
    }

    /// Maps guest memory (`DMA_MAP`), within the allowance.
    pub fn map_dma(
        &self,
        iova: u64,
        size: u64,
        writable: bool,
        backing: DmaBacking,
    ) -> Result<(), DmaError> {
        let mapped = {
            let mut memory = self.memory();
            let mapped = memory.windows.map(iova, size, writable, backing);
            self.stats.set_dma(&memory.windows);
            mapped
        };
        self.after_walk();
        mapped
    }

    /// Unmaps guest memory (`DMA_UNMAP`): the map that is exactly
    /// `iova..iova + size`, or every map when `size` is `None`. When this
    /// returns, nothing reaches the range: the window is gone, every GPU
    /// MMU entry into it is torn down (failing closed: see
    /// [`GpuMmu::revoke`]), and engine work on it finished before the
    /// `memory` lock was taken here, since engines hold it while they run.
    pub fn unmap_dma(&self, iova: u64, size: Option<u64>) -> Result<Unmapped, UnmapError> {
        let mut memory = self.memory();
        let (start, len) = match size {
            None => {
                memory.windows.clear();
                (0, u64::MAX)
            }
            Some(size) => {
                memory.windows.unmap(iova, size).map_err(UnmapError)?;
                (iova, size)
            }
        };
        self.stats.set_dma(&memory.windows);
        let revoked = memory.mmu.revoke(start, len);
        drop(memory);
        self.after_walk();
        Ok(Unmapped { revoked })
    }

    /// Carries out a request of the MMU registers against the VRAM of the
    /// current attachment, `vram`.
    pub fn mmu_request(
        &self,
        request: MmuRequest,
        vram: &VramAperture,
    ) -> Result<MmuOutcome, GpuMmuError> {
        let outcome = {
            let mut memory = self.memory();
            let GpuMemory { windows, mmu } = &mut *memory;
            mmu.handle(request, vram, windows)
        };
        // Doorbells that found the memory held meanwhile are taken now.
        self.after_walk();
        outcome
    }

    /// Joins `engine`'s schedule (a client attached): its channels' work
    /// runs from now on.
    pub fn power_on(self: &Arc<Self>, engine: &GpuEngine) {
        let _ = self.me.set(Arc::downgrade(self));
        let weight = NonZeroU32::new(self.profile().weight).unwrap_or(NonZeroU32::MIN);
        let slot = Arc::new(engine.join(self, weight));
        *self.engine.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot);
    }

    /// Leaves the schedule and drops every channel's work.
    pub fn power_off(&self) {
        let slot = self.engine.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stats) = slot.and_then(|slot| slot.leave()) {
            self.stats.add_engine_time(&stats);
        }
        self.work().clear();
    }

    pub(crate) fn engine_slot(&self) -> Option<Arc<EngineSlot>> {
        self.engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn notify_engine(&self) {
        if let Some(slot) = self.engine_slot() {
            slot.notify();
        }
    }

    /// The vGPU's engine time since it was created: run, waiting while
    /// runnable, idle (ns), over every attachment.
    pub fn engine_time(&self) -> EngineTime {
        let mut time = EngineTime {
            run_ns: VgpuStats::get(&self.stats.engine_run_ns),
            wait_ns: VgpuStats::get(&self.stats.engine_wait_ns),
            idle_ns: VgpuStats::get(&self.stats.engine_idle_ns),
        };
        if let Some(now) = self.engine_slot().and_then(|slot| slot.stats()) {
            time.run_ns += now.run_ns;
            time.wait_ns += now.wait_ns;
            time.idle_ns += now.idle_ns;
        }
        time
    }

    /// `DEVICE_RESET`: registers, interrupts, channel work, MMU state and
    /// VRAM back to reset. The DMA maps stay (docs/device-interface.md,
    /// "Reset").
    pub fn reset(&self) -> Result<(), GpuMmuError> {
        self.work().clear();
        self.hw().reset();
        let mmu = self.memory().mmu.reset();
        self.instance.slice.aperture().clear();
        mmu
    }

    /// A client left: registers, interrupts and MMU state back to reset
    /// and every DMA map released. VRAM is the caller's to renew.
    pub fn release(&self) -> Result<(), GpuMmuError> {
        self.power_off();
        self.hw().reset();
        let mut memory = self.memory();
        memory.windows.clear();
        self.stats.set_dma(&memory.windows);
        memory.mmu.reset()
    }
}

/// The device model's view of a profile.
pub fn device_config(profile: &Profile) -> DeviceConfig {
    DeviceConfig {
        vram_size: profile.framebuffer,
        channels: profile.channels,
        max_resolution: Resolution {
            width: profile.max_resolution.0,
            height: profile.max_resolution.1,
        },
        subsystem_vendor_id: profile.subsystem_vendor_id,
        subsystem_id: profile.subsystem_id,
    }
}
