//! Everything the daemon serves, and the one place vGPUs come and go.
//!
//! The physical GPUs are fixed for the daemon's life. The running vGPUs
//! change at run time: the configuration file's `[[vgpu]]`s (created at
//! start, changed by a reload), definitions of the state directory
//! (`define`, `start`, `stop`) and transient ones (`create`, `remove`).
//!
//! Locks, in the order they are taken:
//! - `changes`: serializes every change of what runs or is defined. Held
//!   across slow work (creating a slice's memfd, a forced stop's grace
//!   period), so only lifecycle commands, reloads and the daemon's stop
//!   take it, never `list`, `stats` or metrics.
//! - `settings`, `definitions`, `running`: held for map operations only.
//! - then a vGPU's own locks ([`Vgpu`] documents those).

mod lifecycle;
mod reload;
mod snapshot;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;
use vgpu_mdev::{DmaAllowance, DmaBudget, ParentGpu, Profile};

pub(crate) use lifecycle::disconnect_all;
pub use lifecycle::{LifecycleError, StartRequest, Stopped, start_each};
pub use reload::{ReloadError, ReloadOutcome};

use crate::access::SocketAccess;
use crate::config::{Backend, Config, VgpuConfig};
use crate::control::protocol::{ErrorKind, VgpuOrigin};
use crate::state::{Definition, StateDir};
use crate::vgpu::Vgpu;

/// A physical GPU and the vGPUs carved from it.
#[derive(Debug)]
pub struct Gpu {
    pub backend: Backend,
    pub parent: Arc<ParentGpu>,
}

/// What the configuration file says that can change by a reload.
#[derive(Debug, Clone)]
pub struct Settings {
    pub profiles: Vec<Arc<Profile>>,
    pub dma: DmaAllowance,
    /// Socket ownership of vGPUs that do not say otherwise.
    pub socket_access: SocketAccess,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            profiles: config.profiles.clone(),
            dma: config.dma,
            socket_access: config.socket_access,
        }
    }

    pub fn profile(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.iter().find(|p| p.name == name)
    }
}

/// A running vGPU and what stops it.
#[derive(Debug)]
pub struct Running {
    pub vgpu: Arc<Vgpu>,
    pub origin: VgpuOrigin,
    /// For a `[[vgpu]]` of the file: what it was started from, for reloads
    /// to compare against.
    pub config: Option<VgpuConfig>,
    /// Ends its accept loop.
    stop: CancellationToken,
    /// Its accept loop, to wait for at stop.
    accept: Option<tokio::task::JoinHandle<()>>,
}

/// Control requests answered, by command and by error kind, for metrics.
#[derive(Debug, Default)]
pub struct ControlCounters {
    requests: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Control connections open now.
    pub connections: AtomicU64,
}

impl ControlCounters {
    /// Counts a request of `command` (a known command's name or
    /// "unknown", so the map stays small whatever clients send).
    pub fn request(&self, command: &'static str) {
        *lock(&self.requests).entry(command).or_default() += 1;
    }

    /// Counts a failed request.
    pub fn error(&self, kind: ErrorKind) {
        *lock(&self.errors).entry(kind.name()).or_default() += 1;
    }

    pub fn requests(&self) -> Vec<(String, u64)> {
        lock(&self.requests)
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    pub fn errors(&self) -> Vec<(String, u64)> {
        lock(&self.errors)
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }
}

/// Everything the daemon serves, shared with the control plane.
#[derive(Debug)]
pub struct Registry {
    pub runtime_dir: PathBuf,
    /// By id; `gpu_order` keeps the configuration file's order.
    pub gpus: BTreeMap<String, Gpu>,
    gpu_order: Vec<String>,
    started: Instant,
    budget: Arc<DmaBudget>,
    settings: RwLock<Settings>,
    running: Mutex<BTreeMap<Uuid, Running>>,
    definitions: Mutex<Definitions>,
    changes: Mutex<()>,
    /// Cancelled when the daemon stops; every accept loop's token is a
    /// child of it.
    shutdown: CancellationToken,
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
    pub control: ControlCounters,
}

/// The state directory and the definitions loaded from it.
#[derive(Debug)]
struct Definitions {
    dir: Option<StateDir>,
    by_uuid: BTreeMap<Uuid, Definition>,
}

impl Registry {
    /// A registry of `gpus` (in configuration order) with nothing running.
    /// `runtime` runs the accept loops of the vGPUs it starts; `shutdown`
    /// ends them all.
    pub fn new(
        config: &Config,
        gpus: Vec<(String, Gpu)>,
        budget: Arc<DmaBudget>,
        state: Option<(StateDir, Vec<Definition>)>,
        shutdown: CancellationToken,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let gpu_order = gpus.iter().map(|(id, _)| id.clone()).collect();
        let (dir, loaded) = match state {
            Some((dir, loaded)) => (Some(dir), loaded),
            None => (None, Vec::new()),
        };
        Self {
            runtime_dir: config.runtime_dir.clone(),
            gpus: gpus.into_iter().collect(),
            gpu_order,
            started: Instant::now(),
            budget,
            settings: RwLock::new(Settings::from_config(config)),
            running: Mutex::new(BTreeMap::new()),
            definitions: Mutex::new(Definitions {
                dir,
                by_uuid: loaded.into_iter().map(|d| (d.uuid, d)).collect(),
            }),
            changes: Mutex::new(()),
            shutdown,
            tasks: TaskTracker::new(),
            runtime,
            control: ControlCounters::default(),
        }
    }

    /// The GPU ids in configuration order.
    pub fn gpu_ids(&self) -> &[String] {
        &self.gpu_order
    }

    /// Time since the registry was made (the daemon started).
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn settings(&self) -> RwLockReadGuard<'_, Settings> {
        self.settings.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The running vGPU `uuid`.
    pub fn vgpu(&self, uuid: Uuid) -> Option<Arc<Vgpu>> {
        self.running().get(&uuid).map(|r| Arc::clone(&r.vgpu))
    }

    /// Every running vGPU with its origin, by UUID.
    pub fn vgpus(&self) -> Vec<(Arc<Vgpu>, VgpuOrigin)> {
        self.running()
            .values()
            .map(|r| (Arc::clone(&r.vgpu), r.origin))
            .collect()
    }

    /// How many vGPUs run, and how many of them have a client.
    pub fn counts(&self) -> (usize, usize) {
        let vgpus = self.vgpus();
        let attached = vgpus.iter().filter(|(v, _)| v.is_attached()).count();
        (vgpus.len(), attached)
    }

    /// Every definition, by UUID.
    pub fn definitions(&self) -> Vec<Definition> {
        lock(&self.definitions).by_uuid.values().cloned().collect()
    }

    /// Where the vGPU `uuid`'s socket is.
    pub fn socket_path(&self, uuid: Uuid) -> PathBuf {
        self.runtime_dir.join(format!("{uuid}.sock"))
    }

    /// Waits for the change of what runs that is under way, if any (it
    /// may block, as a forced stop does). Once `shutdown` is cancelled
    /// nothing starts any more, so after this [`Registry::vgpus`] is
    /// everything there is to take down.
    pub fn wait_changes(&self) {
        drop(lock(&self.changes));
    }

    /// Waits until every accept loop has ended (after `shutdown`).
    pub async fn wait_accept_loops(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn running(&self) -> MutexGuard<'_, BTreeMap<Uuid, Running>> {
        lock(&self.running)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
