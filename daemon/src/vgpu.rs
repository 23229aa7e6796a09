//! One vGPU as the daemon holds it: the partition of the physical GPU (its
//! VRAM slice), the guest-visible device model, and the client attached to
//! it, if any.
//!
//! Lock order: `Vgpu::client` before `Vgpu::device`. The device lock is
//! taken per message by the vGPU's own session thread and briefly by the
//! control plane; no other vGPU ever takes it, so the register path never
//! contends with another vGPU.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use uuid::Uuid;
use vgpu_emulation::{DeviceConfig, Resolution, VgpuDevice};
use vgpu_mdev::{Profile, VgpuInstance, VramSlice};

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
    device: Mutex<VgpuDevice>,
    client: Mutex<Option<Client>>,
    /// Client messages refused since start-up (a metric).
    refusals: AtomicU64,
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
            device: Mutex::new(device),
            client: Mutex::new(None),
            refusals: AtomicU64::new(0),
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

    /// The device model. Poisoning is ignored: a panic while holding it is a
    /// daemon bug, and the register file stays structurally valid.
    pub fn device(&self) -> MutexGuard<'_, VgpuDevice> {
        self.device.lock().unwrap_or_else(|e| e.into_inner())
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

    pub fn is_attached(&self) -> bool {
        self.lock_client().is_some()
    }

    /// Every register to its reset value and the VRAM slice to zeros.
    pub fn reset(&self) {
        self.device().reset();
        self.instance.slice.clear();
    }

    /// Cuts the attached client off (its session thread sees end of file,
    /// resets the vGPU and exits) and waits for the thread.
    pub fn disconnect(&self) {
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
