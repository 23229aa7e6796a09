//! The daemon's life: build every GPU and vGPU from the configuration, bind
//! their sockets, serve until told to stop, then take everything down.
//!
//! Start-up is all or nothing: the configuration was validated before, and
//! if creating anything still fails (a socket path that a live daemon
//! serves, memfd limits), what was created is torn down and the error says
//! which vGPU and why.

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;
use vgpu_mdev::{DmaBudget, ParentGpu, PhysicalGpu, SimGpu, SystemLimits};

use crate::config::{Backend, Config};
use crate::control;
use crate::control::protocol::VgpuOrigin;
use crate::error_chain::ErrorChain;
use crate::registry::StartRequest;
use crate::socket::{self, BindError};
use crate::state::{Definition, StateDir};
use crate::vgpu::Vgpu;

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
    #[error("vGPU {uuid}: cannot start it")]
    Start {
        uuid: Uuid,
        #[source]
        source: crate::registry::LifecycleError,
    },
    #[error("state directory {}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: crate::state::StateError,
    },
    #[error(
        "vGPU {uuid} is both a [[vgpu]] of the configuration file and defined in {}; remove one (vgpuctl undefine, or edit the file)",
        definition.display()
    )]
    Duplicate { uuid: Uuid, definition: PathBuf },
    #[error("start-up failed: {0}")]
    Panicked(String),
    #[error("cannot serve metrics on {addr} (metrics_listen)")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    MetricsAddress(crate::metrics::MetricsError),
}

pub use crate::registry::{Gpu, Registry};

/// How the daemon reads its configuration file again (SIGHUP): the
/// binary's own loader, with its command-line overrides applied.
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>;

/// Runs the daemon on `config` until `shutdown` is cancelled. `ready` is
/// called once every socket listens. Each message on `reload` rereads the
/// configuration with `load` and applies it ([`Registry::reload`]);
/// `reloaded` is called after each, done or refused.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(&Arc<Registry>),
) -> Result<(), DaemonError> {
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    run_with_reload(config, shutdown, rx, None, ready, |_| {}).await
}

/// [`run`], reloading the configuration with `load` on each message of
/// `reload`, and calling `reloaded` with the registry after each.
pub async fn run_with_reload(
    config: Config,
    shutdown: CancellationToken,
    mut reload: tokio::sync::mpsc::Receiver<()>,
    load: Option<ConfigLoader>,
    ready: impl FnOnce(&Arc<Registry>),
    reloaded: impl Fn(&Registry) + Send + Sync + 'static,
) -> Result<(), DaemonError> {
    let runtime_dir = config.runtime_dir.clone();
    // Created 0755 at most (never the umask's 0777): other users must not
    // be able to replace the sockets in it, but an unprivileged VMM must
    // reach its own socket in it. An existing directory is left as it is.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&runtime_dir)
        .map_err(|source| DaemonError::RuntimeDir {
            path: runtime_dir.clone(),
            source,
        })?;
    let state = open_state(&config)?;
    // Bound before any vGPU exists, so that a taken port fails the start
    // with nothing to undo.
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            crate::metrics::check_listen(addr, config.metrics_allow_remote)
                .map_err(DaemonError::MetricsAddress)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "metrics served over HTTP");
            Some(listener)
        }
        None => None,
    };

    let mut gpus = Vec::new();
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
        gpus.push((
            gpu.id.clone(),
            Gpu {
                backend: gpu.backend,
                parent,
            },
        ));
    }

    let budget = DmaBudget::new(SystemLimits::read());
    let auto: Vec<Definition> = state
        .as_ref()
        .map(|(_, defs)| defs.iter().filter(|d| d.auto).cloned().collect())
        .unwrap_or_default();
    let registry = Arc::new(Registry::new(
        &config,
        gpus,
        budget,
        state,
        shutdown.clone(),
        tokio::runtime::Handle::current(),
    ));

    // The file's vGPUs are all or nothing: any that cannot start stops
    // the daemon, with what was started taken down again.
    let starting = Arc::clone(&registry);
    let file_vgpus = config.vgpus.clone();
    let control_path = runtime_dir.join(CONTROL_SOCKET);
    let binding = control_path.clone();
    let control_access = config.control_access;
    let started = tokio::task::spawn_blocking(move || -> Result<UnixListener, DaemonError> {
        for v in &file_vgpus {
            let request = StartRequest {
                uuid: v.uuid,
                gpu: Some(v.gpu.clone()),
                profile: Arc::clone(&v.profile),
                access: v.access,
                origin: VgpuOrigin::Config,
                config: Some(v.clone()),
            };
            starting
                .start(request)
                .map_err(|source| DaemonError::Start {
                    uuid: v.uuid,
                    source,
                })?;
        }
        let control = socket::bind_unix(&binding, &control_access)?;
        // Definitions marked auto start after the file's vGPUs, each on
        // its own: one that no longer fits is logged, not fatal.
        let requests = auto
            .iter()
            .map(|d| starting.definition_request(d))
            .collect();
        crate::registry::start_each(&starting, requests);
        Ok(control)
    })
    .await
    .unwrap_or_else(|e| Err(DaemonError::Panicked(e.to_string())));
    let control_listener = match started {
        Ok(listener) => listener,
        Err(e) => {
            shutdown.cancel();
            stop_all(&registry).await;
            return Err(e);
        }
    };

    let tasks = TaskTracker::new();
    tasks.spawn(control::serve(
        Arc::clone(&registry),
        control_listener,
        shutdown.clone(),
    ));
    if let Some(listener) = metrics_listener {
        let source = Arc::clone(&registry);
        tasks.spawn(crate::metrics::serve_http(
            listener,
            Arc::new(move || source.metrics()),
            shutdown.clone(),
        ));
    }
    tasks.close();
    ready(&registry);

    let reloaded = Arc::new(reloaded);
    let load: Option<Arc<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>> =
        load.map(Arc::from);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = reload.recv() => {
                let Some(load) = load.clone() else { continue };
                let target = Arc::clone(&registry);
                let fixed = config.clone();
                // Off the event loop: rereading the file looks its users
                // and groups up in the system's database, which may ask a
                // network service.
                let done = tokio::task::spawn_blocking(move || {
                    load().map(|new| target.reload(&new, &fixed))
                })
                .await;
                match done {
                    Ok(Ok(Ok(o))) => tracing::info!(
                        started = o.started.len(),
                        stopped = o.stopped.len(),
                        restarted = o.restarted.len(),
                        kept_attached = o.kept.len(),
                        failed = o.failed.len(),
                        "configuration reloaded"
                    ),
                    Ok(Ok(Err(e))) => tracing::error!(error = %e, "configuration not reloaded"),
                    Ok(Err(e)) => tracing::error!(
                        "configuration not reloaded; the daemon runs on as it was:\n{}",
                        ErrorChain(&e)
                    ),
                    Err(e) => tracing::error!(error = %e, "configuration reload panicked"),
                }
                reloaded(&registry);
            }
        }
    }
    tracing::info!("shutting down");
    tasks.wait().await;
    stop_all(&registry).await;
    socket::remove_socket(&control_path);
    tracing::info!("stopped");
    Ok(())
}

/// Opens the state directory and loads its definitions, refusing a UUID
/// that is also a `[[vgpu]]` of the file.
fn open_state(config: &Config) -> Result<Option<(StateDir, Vec<Definition>)>, DaemonError> {
    let dir = StateDir::open(&config.state_dir).map_err(|source| DaemonError::State {
        path: config.state_dir.clone(),
        source,
    })?;
    let definitions = dir.load().map_err(|source| DaemonError::State {
        path: config.state_dir.clone(),
        source,
    })?;
    for d in &definitions {
        if config.vgpus.iter().any(|v| v.uuid == d.uuid) {
            return Err(DaemonError::Duplicate {
                uuid: d.uuid,
                definition: dir.path_of(d.uuid),
            });
        }
    }
    Ok(Some((dir, definitions)))
}

/// Takes every vGPU down: the accept loops end (the shutdown token is
/// cancelled), attached clients are asked to release their vGPUs and given
/// [`RELEASE_GRACE`] together, then cut off.
async fn stop_all(registry: &Arc<Registry>) {
    registry.wait_accept_loops().await;
    let stopping = Arc::clone(registry);
    // Session threads block in recvmsg: cut their sockets and wait for them
    // off the runtime.
    let _ = tokio::task::spawn_blocking(move || release_all(&stopping)).await;
    for (vgpu, _) in registry.vgpus() {
        socket::remove_socket(vgpu.socket_path());
    }
}

/// Closes every vGPU to new clients and disconnects the attached ones
/// ([`crate::registry::disconnect_all`]).
fn release_all(registry: &Registry) {
    // A create or start still under way either finishes first, and is
    // taken down here, or sees `shutdown` and starts nothing.
    registry.wait_changes();
    let vgpus: Vec<Arc<Vgpu>> = registry.vgpus().into_iter().map(|(v, _)| v).collect();
    for vgpu in &vgpus {
        vgpu.close();
    }
    crate::registry::disconnect_all(&vgpus);
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;
    use std::sync::mpsc;

    use super::*;

    fn config(dir: &Path) -> Config {
        let text = format!(
            "runtime_dir = \"{}\"\nstate_dir = \"{}\"\n[[gpu]]\nid = \"gpu0\"\nvram = \"16MiB\"\n[[profile]]\nname = \"p\"\nframebuffer = \"16MiB\"\nmax_instances = 1\n",
            dir.join("run").display(),
            dir.join("state").display()
        );
        Config::parse(Path::new("test.toml"), &text).unwrap()
    }

    /// Rereading the file reads it and looks users up in the system's
    /// database (NSS, which may ask a network service): the control socket
    /// is answered meanwhile, even on a runtime of one thread.
    #[test]
    fn a_slow_configuration_reload_blocks_no_control_client() {
        let dir = tempfile::tempdir().unwrap();
        let base = config(dir.path());
        let (entered_tx, entered) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let reread = base.clone();
        let load: ConfigLoader = Box::new(move || {
            let _ = entered_tx.send(());
            // Held until the test has had its answer; a safety net only.
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            Ok(reread.clone())
        });
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        let (ready_tx, ready) = mpsc::channel();
        let stop = shutdown.clone();
        let daemon = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(run_with_reload(
                base,
                stop,
                reload_rx,
                Some(load),
                move |_| ready_tx.send(()).unwrap(),
                |_| {},
            ))
        });
        // Whatever happens below, the daemon thread is stopped and joined.
        struct Stop(
            CancellationToken,
            Option<std::thread::JoinHandle<Result<(), DaemonError>>>,
        );
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.cancel();
                if let Some(t) = self.1.take() {
                    let _ = t.join();
                }
            }
        }
        let guard = Stop(shutdown, Some(daemon));

        ready.recv_timeout(Duration::from_secs(30)).unwrap();
        reload_tx.blocking_send(()).unwrap();
        entered.recv_timeout(Duration::from_secs(30)).unwrap();

        let mut control =
            UnixStream::connect(control_socket_path(&dir.path().join("run"))).unwrap();
        control
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        control
            .write_all(b"{\"version\":1,\"command\":\"version\"}\n")
            .unwrap();
        let mut line = String::new();
        let answered = BufReader::new(&control).read_line(&mut line);
        drop(release);
        drop(guard);
        assert!(
            matches!(answered, Ok(n) if n > 0),
            "the control socket was not answered while the file was reread: {answered:?}"
        );
    }
}
