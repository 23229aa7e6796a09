//! The daemon's life: build every GPU and vGPU from the configuration, bind
//! their sockets, serve until told to stop, then take everything down.
//!
//! Start-up is all or nothing: the configuration was validated before, and
//! if creating anything still fails (a socket path that a live daemon
//! serves, memfd limits), what was created is torn down and the error says
//! which vGPU and why.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;
use vgpu_mdev::{DmaBudget, ParentGpu, PhysicalGpu, SimGpu, SystemLimits};

use crate::config::{Backend, Config};
use crate::control;
use crate::socket::{self, BindError};
use crate::vgpu::Vgpu;

/// File mode of vGPU sockets: the VMM's user or group must reach them.
pub const VGPU_SOCKET_MODE: u32 = 0o660;
/// File mode of the control socket: root (the daemon's user) only.
pub const CONTROL_SOCKET_MODE: u32 = 0o600;
/// How long attached VMMs have to release their vGPUs (the REQ interrupt)
/// when the daemon stops, before their connections are cut.
pub const RELEASE_GRACE: Duration = Duration::from_millis(500);
/// How long session threads have to finish once their connections are
/// cut. A thread still running then (stuck in something no signal ends)
/// is left behind: the process exits anyway.
pub const SESSION_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Name of the control socket in the runtime directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create runtime directory {}", path.display())]
    RuntimeDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gpu {gpu}: cannot start its engine thread")]
    Engine {
        gpu: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gpu {gpu}: cannot create the simulated GPU")]
    Gpu {
        gpu: String,
        #[source]
        source: vgpu_mdev::VramError,
    },
    #[error("vGPU {uuid}: cannot create it on {gpu}")]
    Create {
        uuid: Uuid,
        gpu: String,
        #[source]
        source: vgpu_mdev::CreateError,
    },
    #[error(
        "vGPU {uuid}: the daemon cannot give it {allowance} (max_dma_maps, max_dma_bytes); lower them or raise the system's limits"
    )]
    DmaBudget {
        uuid: Uuid,
        allowance: vgpu_mdev::DmaAllowance,
        #[source]
        source: vgpu_mdev::BudgetError,
    },
    #[error(transparent)]
    Vgpu(#[from] vgpu_mdev::VirtualGpuError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Everything the daemon serves, shared with the control plane.
#[derive(Debug)]
pub struct Registry {
    pub runtime_dir: PathBuf,
    pub gpus: BTreeMap<String, Gpu>,
    pub vgpus: BTreeMap<Uuid, Arc<Vgpu>>,
}

/// A physical GPU and the vGPUs carved from it.
#[derive(Debug)]
pub struct Gpu {
    pub backend: Backend,
    pub parent: Arc<ParentGpu>,
}

/// Runs the daemon on `config` until `shutdown` is cancelled. `ready` is
/// called once every socket listens, with the vGPU socket paths.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(&Registry),
) -> Result<(), DaemonError> {
    let runtime_dir = config.runtime_dir.clone();
    // Created 0755 at most (never the umask's 0777): other users must not
    // be able to replace the sockets in it. An existing directory is left
    // as it is.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&runtime_dir)
        .map_err(|source| DaemonError::RuntimeDir {
            path: runtime_dir.clone(),
            source,
        })?;

    let mut parents = BTreeMap::new();
    for gpu in &config.gpus {
        let physical: Arc<dyn PhysicalGpu> = match gpu.backend {
            Backend::Sim => Arc::new(SimGpu::new(gpu.id.clone(), gpu.vram).map_err(|source| {
                DaemonError::Gpu {
                    gpu: gpu.id.clone(),
                    source,
                }
            })?),
        };
        tracing::info!(gpu = %gpu.id, backend = gpu.backend.name(), vram = gpu.vram, "physical GPU ready");
        let parent = Arc::new(
            ParentGpu::with_schedule(physical, gpu.scheduler, gpu.time_slice).map_err(
                |source| DaemonError::Engine {
                    gpu: gpu.id.clone(),
                    source,
                },
            )?,
        );
        parents.insert(
            gpu.id.clone(),
            Gpu {
                backend: gpu.backend,
                parent,
            },
        );
    }

    let budget = DmaBudget::new(SystemLimits::read());
    // Bind everything before serving anything, so that a refused socket
    // leaves no half-started daemon behind.
    let mut vgpus = BTreeMap::new();
    let mut listeners = Vec::new();
    let mut bound: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<(), DaemonError> {
        for v in &config.vgpus {
            let parent = &parents[&v.gpu].parent;
            let instance = parent
                .create(v.uuid, Arc::clone(&v.profile))
                .map_err(|source| DaemonError::Create {
                    uuid: v.uuid,
                    gpu: v.gpu.clone(),
                    source,
                })?;
            let grant = carve(&budget, &config, v)?;
            let path = runtime_dir.join(format!("{}.sock", v.uuid));
            let vgpu = Arc::new(Vgpu::new(parent, instance, grant, path.clone())?);
            let listener = socket::bind_unix(&path, &v.access)?;
            bound.push(path);
            listeners.push((Arc::clone(&vgpu), listener));
            vgpus.insert(v.uuid, vgpu);
        }
        Ok(())
    })();
    let control_path = runtime_dir.join(CONTROL_SOCKET);
    let control_listener = result.and_then(|()| {
        let l = socket::bind_unix(&control_path, &config.control_access)?;
        bound.push(control_path.clone());
        Ok(l)
    });
    let control_listener = match control_listener {
        Ok(l) => l,
        Err(e) => {
            bound.iter().for_each(|p| socket::remove_socket(p));
            return Err(e);
        }
    };

    let registry = Arc::new(Registry {
        runtime_dir,
        gpus: parents,
        vgpus,
    });
    let tasks = TaskTracker::new();
    for (vgpu, listener) in listeners {
        tracing::info!(uuid = %vgpu.uuid(), profile = %vgpu.profile().name, socket = %vgpu.socket_path().display(), "vGPU listening");
        tasks.spawn(crate::endpoint::serve(vgpu, listener, shutdown.clone()));
    }
    tasks.spawn(control::serve(
        Arc::clone(&registry),
        control_listener,
        shutdown.clone(),
    ));
    tasks.close();
    ready(&registry);

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    tasks.wait().await;
    let stopping = Arc::clone(&registry);
    // Session threads block in recvmsg: cut their sockets and wait for them
    // off the runtime.
    let _ = tokio::task::spawn_blocking(move || release_all(&stopping)).await;
    for path in &bound {
        socket::remove_socket(path);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Asks every attached client to release its vGPU, gives them
/// [`RELEASE_GRACE`] together, cuts whoever is left, and waits up to
/// [`SESSION_STOP_TIMEOUT`] for their session threads, interrupting any
/// that is blocked on a client. Bounded whatever the clients do: a REQ
/// signal takes at most 10 ms, and no thread is waited on past the timeout.
fn release_all(registry: &Registry) {
    let vgpus: Vec<&Arc<Vgpu>> = registry.vgpus.values().collect();
    let mut asked = 0;
    for vgpu in &vgpus {
        if vgpu.request_release() {
            tracing::info!(uuid = %vgpu.uuid(), "asked the client to release the vGPU");
            asked += 1;
        }
    }
    if asked > 0 {
        let deadline = Instant::now() + RELEASE_GRACE;
        while Instant::now() < deadline && vgpus.iter().any(|v| v.is_attached()) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let threads: Vec<_> = vgpus
        .iter()
        .filter_map(|v| v.cut().map(|thread| (v.uuid(), thread)))
        .collect();
    // A session thread still running is interrupted out of whatever it
    // waits in until it notices its connection is gone.
    let deadline = Instant::now() + SESSION_STOP_TIMEOUT;
    while Instant::now() < deadline && threads.iter().any(|(_, t)| !t.is_finished()) {
        for (_, thread) in threads.iter().filter(|(_, t)| !t.is_finished()) {
            let _ = crate::deadline::interrupt(thread);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (uuid, thread) in threads {
        if thread.is_finished() {
            if thread.join().is_err() {
                tracing::error!(%uuid, "session thread panicked");
            }
        } else {
            tracing::error!(%uuid, "session thread did not stop; exiting without it");
        }
    }
}

/// Whether this system's limits can give every vGPU of `config` its DMA
/// allowance, as start-up would carve them (`vgpud --check`).
pub fn check_dma_budget(config: &Config) -> Result<(), DaemonError> {
    let budget = DmaBudget::new(SystemLimits::read());
    let mut grants = Vec::with_capacity(config.vgpus.len());
    for v in &config.vgpus {
        grants.push(carve(&budget, config, v)?);
    }
    Ok(())
}

/// Reserves vGPU `v`'s DMA allowance from `budget`.
fn carve(
    budget: &Arc<DmaBudget>,
    config: &Config,
    v: &crate::config::VgpuConfig,
) -> Result<vgpu_mdev::DmaGrant, DaemonError> {
    budget
        .carve(config.dma, v.profile.framebuffer)
        .map_err(|source| DaemonError::DmaBudget {
            uuid: v.uuid,
            allowance: config.dma,
            source,
        })
}

/// Path of the control socket in `runtime_dir`.
pub fn control_socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(CONTROL_SOCKET)
}
