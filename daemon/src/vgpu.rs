//! One vGPU as the daemon holds it: the partition of the physical GPU (its
//! VRAM slice), the guest-visible device model, and the client attached to
//! it, if any.
//!
//! Lock order: `Vgpu::client` before `Vgpu::hw`. The `hw` lock is taken per
//! message by the vGPU's own session thread and briefly by the control
//! plane; no other vGPU ever takes it, so the register path never contends
//! with another vGPU.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use uuid::Uuid;
use vgpu_emulation::{DeviceConfig, Interrupts, IrqIndex, Resolution, VgpuDevice};
use vgpu_mdev::{Profile, VgpuInstance, VramSlice};

use crate::eventfd::EventFd;

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

/// A vGPU served by this daemon.
#[derive(Debug)]
pub struct Vgpu {
    uuid: Uuid,
    gpu_id: String,
    socket_path: PathBuf,
    instance: VgpuInstance,
    hw: Mutex<Hardware>,
    client: Mutex<Option<Client>>,
    /// Client messages refused since start-up (a metric).
    refusals: AtomicU64,
    /// Accesses the GPU MMU faulted since start-up (a metric).
    mmu_faults: AtomicU64,
    /// Guest page-table entries the shadow MMU refused to program.
    refused_ptes: AtomicU64,
}

/// The guest-visible device and the interrupt triggers its client gave:
/// one lock, because every register access that raises an interrupt needs
/// both.
#[derive(Debug)]
pub struct Hardware {
    pub device: VgpuDevice,
    pub irqs: Interrupts<EventFd>,
}

impl Hardware {
    /// Raises `vectors` (a bitmap) on whatever triggers the client gave,
    /// and keeps the INTx status bit in step.
    pub fn raise(&mut self, vectors: u64) {
        if vectors == 0 {
            return;
        }
        let disabled = self.device.intx_disabled();
        for vector in (0..64u32).filter(|v| vectors & (1 << v) != 0) {
            if let Some(trigger) = self.irqs.raise(vector, disabled) {
                trigger.signal();
            }
        }
        self.device.set_intx_asserted(self.irqs.intx_asserted());
    }
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
        socket_path: PathBuf,
    ) -> Result<Self, VgpuError> {
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
            hw: Mutex::new(Hardware {
                device,
                irqs: Interrupts::new(vectors),
            }),
            client: Mutex::new(None),
            refusals: AtomicU64::new(0),
            mmu_faults: AtomicU64::new(0),
            refused_ptes: AtomicU64::new(0),
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

    /// The device model and interrupt triggers. Poisoning is ignored: a
    /// panic while holding it is a daemon bug, and the register file stays
    /// structurally valid.
    pub fn hw(&self) -> MutexGuard<'_, Hardware> {
        self.hw.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the vGPU for a new client; false if one is attached.
    pub fn attach(&self, socket: OwnedFd) -> bool {
        let mut client = self.lock_client();
        if client.is_some() {
            return false;
        }
        *client = Some(Client {
            socket,
            thread: None,
        });
        true
    }

    /// Records the thread serving the attached client.
    pub fn set_session_thread(&self, thread: JoinHandle<()>) {
        if let Some(client) = self.lock_client().as_mut() {
            client.thread = Some(thread);
        }
    }

    /// Called by the session thread when its client is gone: returns the
    /// device to its reset state and frees the slot for the next client.
    pub fn detach(&self) {
        self.reset();
        // The thread handle is dropped (detached): this *is* that thread.
        self.lock_client().take();
    }

    /// Counts a refused client message.
    pub fn count_refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Client messages refused since start-up.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Counts a faulted GPU MMU access.
    pub fn count_mmu_fault(&self) {
        self.mmu_faults.fetch_add(1, Ordering::Relaxed);
    }

    /// GPU MMU accesses that faulted since start-up.
    pub fn mmu_faults(&self) -> u64 {
        self.mmu_faults.load(Ordering::Relaxed)
    }

    /// Counts guest page-table entries the shadow MMU refused.
    pub fn count_refused_ptes(&self, n: u64) {
        self.refused_ptes.fetch_add(n, Ordering::Relaxed);
    }

    /// Guest page-table entries refused since start-up.
    pub fn refused_ptes(&self) -> u64 {
        self.refused_ptes.load(Ordering::Relaxed)
    }

    pub fn is_attached(&self) -> bool {
        self.lock_client().is_some()
    }

    /// Every register to its reset value, every interrupt trigger
    /// unassigned, and the VRAM slice to zeros.
    pub fn reset(&self) {
        {
            let mut hw = self.hw();
            hw.device.reset();
            hw.irqs.reset();
        }
        self.instance.slice.clear();
    }

    /// Asks the attached client to give the device back (the REQ
    /// interrupt), gives it `grace` to leave by itself, then cuts it off
    /// (its session thread sees end of file, resets the vGPU and exits) and
    /// waits for the thread.
    pub fn disconnect(&self, grace: std::time::Duration) {
        if !self.is_attached() {
            return;
        }
        let asked = match self.hw().irqs.trigger(IrqIndex::Req, 0) {
            Some(req) => {
                req.signal();
                true
            }
            None => false,
        };
        if asked {
            tracing::info!(uuid = %self.uuid, "asked the client to release the vGPU");
            let deadline = std::time::Instant::now() + grace;
            while self.is_attached() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let thread = {
            let mut client = self.lock_client();
            match client.as_mut() {
                Some(c) => {
                    let _ = rustix::net::shutdown(&c.socket, rustix::net::Shutdown::Both);
                    c.thread.take()
                }
                None => None,
            }
        };
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!(uuid = %self.uuid, "session thread panicked");
            }
        }
    }

    fn lock_client(&self) -> MutexGuard<'_, Option<Client>> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
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
