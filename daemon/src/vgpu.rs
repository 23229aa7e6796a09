//! One vGPU as the daemon serves it: the device state (a
//! [`VirtualGpu`] of `mdev`, which outlives connections), the socket it
//! listens on, and the client attached to it, if any.
//!
//! Lock order: `Vgpu::client` before the device's locks
//! ([`VirtualGpu`] documents those). The client slot is held only to
//! attach, detach and cut a client off, never across a message.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use uuid::Uuid;
use vgpu_emulation::IrqIndex;
use vgpu_mdev::{
    DmaAllowance, DmaGrant, GpuMmuError, Hardware, ParentGpu, Profile, Signals, VgpuInstance,
    VgpuStats, VirtualGpu, VirtualGpuError, VramAperture, VramSlice,
};

use crate::log_limit::LogLimit;

/// Why a client was not attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the vGPU already has a client")]
    Busy,
    /// The vGPU is being stopped or removed.
    #[error("the vGPU is being stopped")]
    Closed,
    /// The VRAM an earlier client saw could not be replaced: attaching
    /// would hand the new client memory the old one can still reach.
    #[error("cannot give the vGPU fresh VRAM")]
    Vram(#[source] vgpu_mdev::VramError),
}

/// A vGPU served by this daemon.
#[derive(Debug)]
pub struct Vgpu {
    device: Arc<VirtualGpu>,
    /// The GPU it was carved from, whose engine runs its channels.
    parent: Arc<ParentGpu>,
    socket_path: PathBuf,
    client: Mutex<ClientSlot>,
    /// Lines about connections (attach, detach, refused second clients).
    pub connection_log: LogLimit,
    /// Lines about what the client and the guest do (refused messages,
    /// faults, refused DMA).
    pub client_log: LogLimit,
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
    /// The vGPU is being taken down: no client attaches any more.
    closed: bool,
}

/// The client currently attached: a duplicate of its socket (to cut it off
/// at shutdown) and the thread serving it.
#[derive(Debug)]
struct Client {
    socket: OwnedFd,
    thread: Option<JoinHandle<()>>,
    /// Its process id, from the socket's peer credentials.
    pid: Option<u32>,
}

impl Vgpu {
    pub fn new(
        parent: &Arc<ParentGpu>,
        instance: VgpuInstance,
        dma: DmaGrant,
        socket_path: PathBuf,
    ) -> Result<Self, VirtualGpuError> {
        let uuid = instance.uuid;
        Ok(Self {
            device: Arc::new(VirtualGpu::new(parent.gpu().as_ref(), instance, dma)?),
            parent: Arc::clone(parent),
            socket_path,
            client: Mutex::new(ClientSlot {
                client: None,
                aperture_fresh: true,
                closed: false,
            }),
            connection_log: LogLimit::new(format!("vGPU {uuid} connections")),
            client_log: LogLimit::new(format!("vGPU {uuid} client")),
        })
    }

    /// The device state.
    pub fn device(&self) -> &Arc<VirtualGpu> {
        &self.device
    }

    pub fn uuid(&self) -> Uuid {
        self.device.uuid()
    }

    pub fn gpu_id(&self) -> &str {
        self.parent.gpu().id()
    }

    pub fn profile(&self) -> &Arc<Profile> {
        self.device.profile()
    }

    pub fn socket_path(&self) -> &PathBuf {
        &self.socket_path
    }

    pub fn vram(&self) -> &VramSlice {
        self.device.vram()
    }

    /// What a client may hold in DMA windows.
    pub fn dma_allowance(&self) -> DmaAllowance {
        self.device.dma_allowance()
    }

    pub fn stats(&self) -> &VgpuStats {
        self.device.stats()
    }

    /// The device model and interrupt triggers.
    pub fn hw(&self) -> MutexGuard<'_, Hardware> {
        self.device.hw()
    }

    /// Raises `vectors` and signals their triggers outside the lock.
    pub fn raise(&self, vectors: u64) {
        self.device.raise(vectors);
    }

    /// Claims the vGPU for a new client (`socket` is a duplicate of its
    /// connection) and returns the VRAM aperture it gets: one that no
    /// earlier client was given. `pid` is the client's, if known.
    pub fn attach(
        &self,
        socket: OwnedFd,
        pid: Option<u32>,
    ) -> Result<Arc<VramAperture>, AttachError> {
        let mut slot = self.lock_client();
        if slot.closed {
            return Err(AttachError::Closed);
        }
        if slot.client.is_some() {
            return Err(AttachError::Busy);
        }
        if !slot.aperture_fresh {
            // What the earlier client may still map: emptied like at a
            // detach.
            self.vram().renew().map_err(AttachError::Vram)?.clear();
        }
        slot.aperture_fresh = false;
        slot.client = Some(Client {
            socket,
            thread: None,
            pid,
        });
        self.device.power_on(self.parent.engine());
        Ok(self.vram().aperture())
    }

    /// Records the thread serving the attached client.
    pub fn set_session_thread(&self, thread: JoinHandle<()>) {
        if let Some(client) = self.lock_client().client.as_mut() {
            client.thread = Some(thread);
        }
    }

    /// Called by the session thread when its client is gone: returns the
    /// device to its reset state, releases the client's DMA maps, gives
    /// the VRAM a fresh aperture, and frees the slot for the next client.
    pub fn detach(&self) {
        let retired = {
            let mut slot = self.lock_client();
            if let Err(e) = self.device.release() {
                self.client_log.log(|| {
                    tracing::error!(
                        uuid = %self.uuid(),
                        error = %crate::error_chain::ErrorChain(&e),
                        "cannot empty the GPU MMU at detach"
                    )
                });
            }
            match self.vram().renew() {
                Ok(old) => {
                    slot.aperture_fresh = true;
                    old
                }
                Err(e) => {
                    self.connection_log.log(|| {
                        tracing::warn!(
                            uuid = %self.uuid(),
                            error = %crate::error_chain::ErrorChain(&e),
                            "cannot renew the VRAM aperture now; the next client's attach will try again"
                        )
                    });
                    self.vram().aperture()
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

    /// The attached client's process id, if a client is attached and its
    /// id is known.
    pub fn client_pid(&self) -> Option<u32> {
        self.lock_client().client.as_ref().and_then(|c| c.pid)
    }

    /// Closes the vGPU to new clients, if it has none: false (and nothing
    /// changed) if a client is attached. Checked and closed under one
    /// lock, so no client can slip in between.
    pub fn close_if_idle(&self) -> bool {
        let mut slot = self.lock_client();
        if slot.client.is_some() {
            return false;
        }
        slot.closed = true;
        true
    }

    /// Closes the vGPU to new clients, attached or not.
    pub fn close(&self) {
        self.lock_client().closed = true;
    }

    /// `DEVICE_RESET`: registers, interrupts, GPU MMU and VRAM to reset.
    pub fn reset(&self) -> Result<(), GpuMmuError> {
        self.device.reset()
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
        signals.send(self.stats());
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

/// A vGPU with `channels` channels and 16 MiB of VRAM on a GPU of its
/// own, for unit tests.
#[cfg(test)]
pub(crate) fn test_vgpu(channels: u32) -> Vgpu {
    use vgpu_mdev::{PhysicalGpu, SimGpu};
    let gpu: Arc<dyn PhysicalGpu> = Arc::new(SimGpu::new("gpu0", 16 << 20).unwrap());
    let parent = Arc::new(ParentGpu::new(gpu));
    let profile = Arc::new(Profile {
        name: "p".into(),
        framebuffer: 16 << 20,
        max_instances: 1,
        channels,
        max_resolution: (1024, 768),
        subsystem_vendor_id: 0x1234,
        subsystem_id: 0x1100,
        weight: 1,
    });
    let instance = parent.create(Uuid::from_u128(1), profile).unwrap();
    Vgpu::new(
        &parent,
        instance,
        test_grant(),
        PathBuf::from("/nonexistent"),
    )
    .unwrap()
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
