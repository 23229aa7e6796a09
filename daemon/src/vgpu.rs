//! One vGPU as the daemon holds it: the partition of the physical GPU (its
//! VRAM slice and DMA allowance), the guest-visible device model, and the
//! client attached to it, if any.
//!
//! Lock order: `Vgpu::client` before `Vgpu::hw`. The `hw` lock is taken per
//! message by the vGPU's own session thread and briefly by the control
//! plane; no other vGPU ever takes it, so the register path never contends
//! with another vGPU. Nothing that can wait on a client (a system call on
//! one of its descriptors) happens while `hw` is held: interrupt triggers
//! are picked under it and signalled after it is released ([`Signals`]),
//! so every holder of `hw` finishes in bounded time and the control plane
//! can take it without a timeout.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use uuid::Uuid;
use vgpu_emulation::interrupts::MAX_VECTORS;
use vgpu_emulation::{DeviceConfig, Interrupts, IrqIndex, Resolution, VgpuDevice};
use vgpu_mdev::{DmaAllowance, DmaGrant, Profile, VgpuInstance, VramAperture, VramSlice};

use crate::eventfd::{EventFd, Signalled};
use crate::log_limit::LogLimit;

/// Why a vGPU could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VgpuError {
    #[error("vGPU {uuid}: the device model refused profile \"{profile}\"")]
    Device {
        uuid: Uuid,
        profile: String,
        #[source]
        source: vgpu_emulation::DeviceConfigError,
    },
}

/// Why a client was not attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the vGPU already has a client")]
    Busy,
    /// The VRAM an earlier client saw could not be replaced: attaching
    /// would hand the new client memory the old one can still reach.
    #[error("cannot give the vGPU fresh VRAM")]
    Vram(#[source] vgpu_mdev::VramError),
}

/// A vGPU served by this daemon.
#[derive(Debug)]
pub struct Vgpu {
    uuid: Uuid,
    gpu_id: String,
    socket_path: PathBuf,
    instance: VgpuInstance,
    /// What its clients may hold in DMA windows, reserved from the
    /// daemon's budget for as long as the vGPU exists.
    dma: DmaGrant,
    hw: Mutex<Hardware>,
    client: Mutex<ClientSlot>,
    stats: VgpuStats,
    /// Lines about connections (attach, detach, refused second clients).
    pub connection_log: LogLimit,
    /// Lines about what the client and the guest do (refused messages,
    /// faults, refused DMA).
    pub client_log: LogLimit,
}

/// What the vGPU counts since start-up (metrics).
#[derive(Debug, Default)]
pub struct VgpuStats {
    /// Client messages refused.
    pub refusals: AtomicU64,
    /// GPU MMU accesses that faulted.
    pub mmu_faults: AtomicU64,
    /// Guest page-table entries the shadow MMU refused to program.
    pub refused_ptes: AtomicU64,
    /// Interrupts signalled to a trigger.
    pub interrupts: AtomicU64,
    /// Interrupts merged into ones the client had not consumed yet (its
    /// eventfd counter was full).
    pub interrupts_coalesced: AtomicU64,
}

impl VgpuStats {
    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The guest-visible device and the interrupt triggers its client gave:
/// one lock, because every register access that raises an interrupt needs
/// both.
#[derive(Debug)]
pub struct Hardware {
    pub device: VgpuDevice,
    pub irqs: Interrupts<Arc<EventFd>>,
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
}

/// Triggers picked under the `hw` lock, to be signalled after it is
/// released. Fixed-size: raising an interrupt allocates nothing.
#[derive(Debug)]
pub struct Signals {
    triggers: [Option<Arc<EventFd>>; MAX_VECTORS as usize],
    len: usize,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            triggers: [const { None }; MAX_VECTORS as usize],
            len: 0,
        }
    }
}

impl Signals {
    /// Adds a trigger; past [`MAX_VECTORS`] (more than one raise can pick)
    /// it is ignored.
    pub fn push(&mut self, trigger: &Arc<EventFd>) {
        if let Some(slot) = self.triggers.get_mut(self.len) {
            *slot = Some(Arc::clone(trigger));
            self.len += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Signals every trigger and counts the outcome in `stats`. Call it
    /// with no lock held: a signal can take up to the deadline (10 ms).
    pub fn send(mut self, stats: &VgpuStats) {
        for trigger in self.triggers[..self.len].iter_mut() {
            if let Some(trigger) = trigger.take() {
                match trigger.signal() {
                    Signalled::Delivered => VgpuStats::count(&stats.interrupts, 1),
                    Signalled::Coalesced => VgpuStats::count(&stats.interrupts_coalesced, 1),
                    Signalled::Failed => {}
                }
            }
        }
    }
}

/// The client slot: who is attached, and whether the VRAM aperture is one
/// no client has seen yet.
#[derive(Debug)]
struct ClientSlot {
    client: Option<Client>,
    /// The current aperture was never handed to a client. False from
    /// attach until the detach that renews it; if the renewal failed, the
    /// next attach renews first or is refused.
    aperture_fresh: bool,
}

/// The client currently attached: a duplicate of its socket (to cut it off
/// at shutdown) and the thread serving it.
#[derive(Debug)]
struct Client {
    socket: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Vgpu {
    pub fn new(
        gpu_id: &str,
        instance: VgpuInstance,
        dma: DmaGrant,
        socket_path: PathBuf,
    ) -> Result<Self, VgpuError> {
        let instance_uuid = instance.uuid;
        let config = device_config(&instance.profile);
        let vectors = config.channels + 1;
        let device = VgpuDevice::new(config).map_err(|source| VgpuError::Device {
            uuid: instance.uuid,
            profile: instance.profile.name.clone(),
            source,
        })?;
        Ok(Self {
            uuid: instance.uuid,
            gpu_id: gpu_id.to_string(),
            socket_path,
            instance,
            dma,
            hw: Mutex::new(Hardware {
                device,
                irqs: Interrupts::new(vectors),
            }),
            client: Mutex::new(ClientSlot {
                client: None,
                aperture_fresh: true,
            }),
            stats: VgpuStats::default(),
            connection_log: LogLimit::new(format!("vGPU {} connections", instance_uuid)),
            client_log: LogLimit::new(format!("vGPU {} client", instance_uuid)),
        })
    }

    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    pub fn gpu_id(&self) -> &str {
        &self.gpu_id
    }

    pub fn profile(&self) -> &Arc<Profile> {
        &self.instance.profile
    }

    pub fn socket_path(&self) -> &PathBuf {
        &self.socket_path
    }

    pub fn vram(&self) -> &VramSlice {
        &self.instance.slice
    }

    /// What a client may hold in DMA windows.
    pub fn dma_allowance(&self) -> DmaAllowance {
        self.dma.allowance()
    }

    pub fn stats(&self) -> &VgpuStats {
        &self.stats
    }

    /// The device model and interrupt triggers. Poisoning is ignored: a
    /// panic while holding it is a daemon bug, and the register file stays
    /// structurally valid.
    pub fn hw(&self) -> MutexGuard<'_, Hardware> {
        self.hw.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raises `vectors` and signals their triggers outside the lock.
    pub fn raise(&self, vectors: u64) {
        if vectors != 0 {
            let signals = self.hw().raise(vectors);
            signals.send(&self.stats);
        }
    }

    /// Claims the vGPU for a new client (`socket` is a duplicate of its
    /// connection) and returns the VRAM aperture it gets: one that no
    /// earlier client was given.
    pub fn attach(&self, socket: OwnedFd) -> Result<Arc<VramAperture>, AttachError> {
        let mut slot = self.lock_client();
        if slot.client.is_some() {
            return Err(AttachError::Busy);
        }
        if !slot.aperture_fresh {
            // What the earlier client may still map: emptied like at a
            // detach.
            self.instance
                .slice
                .renew()
                .map_err(AttachError::Vram)?
                .clear();
        }
        slot.aperture_fresh = false;
        slot.client = Some(Client {
            socket,
            thread: None,
        });
        Ok(self.instance.slice.aperture())
    }

    /// Records the thread serving the attached client.
    pub fn set_session_thread(&self, thread: JoinHandle<()>) {
        if let Some(client) = self.lock_client().client.as_mut() {
            client.thread = Some(thread);
        }
    }

    /// Called by the session thread when its client is gone: returns the
    /// device to its reset state, gives the VRAM a fresh aperture, and
    /// frees the slot for the next client.
    pub fn detach(&self) {
        let retired = {
            let mut slot = self.lock_client();
            self.reset_registers();
            match self.instance.slice.renew() {
                Ok(old) => {
                    slot.aperture_fresh = true;
                    old
                }
                Err(e) => {
                    self.connection_log.log(|| {
                        tracing::warn!(
                            uuid = %self.uuid,
                            error = %crate::error_chain::ErrorChain(&e),
                            "cannot renew the VRAM aperture now; the next client's attach will try again"
                        )
                    });
                    self.instance.slice.aperture()
                }
            }
        };
        // Emptied before the slot is free, so the next client finds the
        // departed one's memory gone; but not under the lock `list` takes,
        // since freeing a large slice's pages takes a while.
        retired.clear();
        // The thread handle is dropped (detached): this *is* that thread.
        self.lock_client().client = None;
    }

    pub fn is_attached(&self) -> bool {
        self.lock_client().client.is_some()
    }

    /// Every register to its reset value, every interrupt trigger
    /// unassigned, and the VRAM to zeros.
    pub fn reset(&self) {
        self.reset_registers();
        self.instance.slice.aperture().clear();
    }

    /// Every register to its reset value, every interrupt trigger
    /// unassigned.
    fn reset_registers(&self) {
        let mut hw = self.hw();
        hw.device.reset();
        hw.irqs.reset();
    }

    /// Signals the attached client's REQ interrupt, asking it to give the
    /// device back; false if it has no client or registered no REQ.
    pub fn request_release(&self) -> bool {
        if !self.is_attached() {
            return false;
        }
        let mut signals = Signals::default();
        if let Some(req) = self.hw().irqs.trigger(IrqIndex::Req, 0) {
            signals.push(req);
        }
        let asked = !signals.is_empty();
        signals.send(&self.stats);
        asked
    }

    /// Cuts the attached client off: its session thread sees the end of
    /// the connection (or a failed send), resets the vGPU and exits.
    /// Returns that thread, for the caller to wait on.
    pub fn cut(&self) -> Option<JoinHandle<()>> {
        let mut slot = self.lock_client();
        let client = slot.client.as_mut()?;
        let _ = rustix::net::shutdown(&client.socket, rustix::net::Shutdown::Both);
        client.thread.take()
    }

    fn lock_client(&self) -> MutexGuard<'_, ClientSlot> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An allowance for vGPUs built by unit tests, from a budget with no
/// system limit behind it.
#[cfg(test)]
pub(crate) fn test_grant() -> DmaGrant {
    vgpu_mdev::DmaBudget::new(vgpu_mdev::SystemLimits {
        max_map_count: u64::MAX,
        address_space: u64::MAX,
    })
    .carve(
        DmaAllowance {
            windows: 1024,
            mapped_bytes: 1 << 40,
        },
        0,
    )
    .expect("an unlimited budget has room")
}

/// The vectors set in a bitmap of them, lowest first.
pub fn vector_bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |v| mask & (1 << v) != 0)
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
