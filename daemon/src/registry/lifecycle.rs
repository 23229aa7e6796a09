//! Starting and stopping vGPUs, and keeping definitions: what `create`,
//! `remove`, `define`, `undefine`, `start`, `stop`, `modify` and a reload
//! do. Every function here takes the registry's `changes` lock first and
//! may block (memfd creation, a forced stop's grace period): call them off
//! the async runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use vgpu_mdev::{ByteSize, CreateError, Profile};

use super::{Registry, Running, lock};
use crate::access::SocketAccess;
use crate::config::VgpuConfig;
use crate::control::protocol::{ErrorKind, VgpuOrigin};
use crate::daemon::{RELEASE_GRACE, SESSION_STOP_TIMEOUT};
use crate::error_chain::ErrorChain;
use crate::socket::{self, BindError};
use crate::state::{Definition, StateError};
use crate::vgpu::Vgpu;

/// Why a lifecycle command was refused; each maps to one control API
/// error kind.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0}")]
    BadArguments(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Insufficient(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
}

impl LifecycleError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            LifecycleError::BadArguments(_) => ErrorKind::BadArguments,
            LifecycleError::NotFound(_) => ErrorKind::NotFound,
            LifecycleError::Conflict(_) => ErrorKind::Conflict,
            LifecycleError::Insufficient(_) => ErrorKind::InsufficientResources,
            LifecycleError::Busy(_) => ErrorKind::Busy,
            LifecycleError::Failed(_) => ErrorKind::Failed,
        }
    }
}

/// A vGPU to start.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub uuid: Uuid,
    /// None: the first GPU, in configuration order, it fits on.
    pub gpu: Option<String>,
    pub profile: Arc<Profile>,
    pub access: SocketAccess,
    pub origin: VgpuOrigin,
    /// For a `[[vgpu]]` of the file.
    pub config: Option<VgpuConfig>,
}

/// What stopping a vGPU did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// A client was attached and was disconnected.
    pub disconnected: bool,
    /// It let go by itself within the grace period.
    pub released: bool,
}

impl Registry {
    /// Starts a vGPU: creates it on its GPU, carves its DMA allowance,
    /// binds its socket and starts accepting clients.
    pub fn start(&self, request: StartRequest) -> Result<Arc<Vgpu>, LifecycleError> {
        let _changes = lock(&self.changes);
        self.start_locked(request)
    }

    pub(super) fn start_locked(&self, request: StartRequest) -> Result<Arc<Vgpu>, LifecycleError> {
        let uuid = request.uuid;
        // Checked under `changes`, which the daemon's stop takes once
        // `shutdown` is cancelled (`wait_changes`): a vGPU started after
        // that would be missed by it, its socket file left behind.
        if self.shutdown.is_cancelled() {
            return Err(LifecycleError::Failed(format!(
                "the daemon is stopping; vGPU {uuid} was not started"
            )));
        }
        if self.running().contains_key(&uuid) {
            return Err(LifecycleError::Conflict(format!(
                "vGPU {uuid} is already running"
            )));
        }
        // Checked under `changes`, so a `define` of the same UUID cannot
        // slip in between: a defined UUID starts as its definition only.
        if request.origin != VgpuOrigin::Defined
            && lock(&self.definitions).by_uuid.contains_key(&uuid)
        {
            return Err(LifecycleError::Conflict(format!(
                "vGPU {uuid} is defined; start it with `vgpuctl start {uuid}`"
            )));
        }
        let gpu_id = match &request.gpu {
            Some(id) => {
                if !self.gpus.contains_key(id) {
                    return Err(LifecycleError::NotFound(format!(
                        "no GPU \"{id}\"; GPUs: {}",
                        self.gpu_order.join(", ")
                    )));
                }
                id.clone()
            }
            None => self.choose_gpu(uuid, &request.profile)?,
        };
        let parent = Arc::clone(&self.gpus[&gpu_id].parent);
        let instance = parent
            .create(uuid, Arc::clone(&request.profile))
            .map_err(|e| create_error(&gpu_id, &request.profile, e))?;
        let dma = self.settings().dma;
        let grant = self
            .budget
            .carve(dma, request.profile.framebuffer)
            .map_err(|e| {
                LifecycleError::Insufficient(format!(
                    "the daemon's DMA budget cannot give vGPU {uuid} {dma}: {}; remove a vGPU, lower max_dma_maps or max_dma_bytes, or raise the system's limits",
                    ErrorChain(&e)
                ))
            })?;
        let path = self.socket_path(uuid);
        let vgpu = Vgpu::new(&parent, instance, grant, path.clone()).map_err(|e| {
            LifecycleError::Failed(format!("cannot create vGPU {uuid}: {}", ErrorChain(&e)))
        })?;
        let vgpu = Arc::new(vgpu);
        let listener = socket::bind_unix(&path, &request.access).map_err(|e| match e {
            BindError::Live { .. } | BindError::NotASocket { .. } => {
                LifecycleError::Conflict(ErrorChain(&e).to_string())
            }
            BindError::Io { .. } | BindError::Access { .. } => {
                LifecycleError::Failed(ErrorChain(&e).to_string())
            }
        })?;
        let stop = self.shutdown.child_token();
        let accept = self.tasks.spawn_on(
            crate::endpoint::serve(Arc::clone(&vgpu), listener, stop.clone()),
            &self.runtime,
        );
        tracing::info!(
            %uuid,
            gpu = %gpu_id,
            profile = %request.profile.name,
            origin = request.origin.name(),
            socket = %path.display(),
            "vGPU listening"
        );
        self.running().insert(
            uuid,
            Running {
                vgpu: Arc::clone(&vgpu),
                origin: request.origin,
                config: request.config,
                stop,
                accept: Some(accept),
            },
        );
        Ok(vgpu)
    }

    /// The first GPU, in configuration order, that `profile` fits on now.
    fn choose_gpu(&self, uuid: Uuid, profile: &Arc<Profile>) -> Result<String, LifecycleError> {
        let mut reasons = Vec::new();
        for id in &self.gpu_order {
            let parent = &self.gpus[id].parent;
            match parent.plan(&[(uuid, Arc::clone(profile))]) {
                Ok(()) => return Ok(id.clone()),
                Err(e) => reasons.push(shortfall(id, profile, &e)),
            }
        }
        Err(LifecycleError::Insufficient(format!(
            "no GPU has room for a {} vGPU: {}",
            profile.name,
            reasons.join("; ")
        )))
    }

    /// Stops the running vGPU `uuid`: refuses new clients, and if one is
    /// attached, refuses with `Busy` unless `force`, in which case the
    /// client is asked to release the vGPU (its REQ interrupt), given
    /// [`RELEASE_GRACE`], then reset and disconnected. The socket is gone
    /// and the vGPU's VRAM free when this returns (unless a session thread
    /// did not end within [`SESSION_STOP_TIMEOUT`]: then the VRAM follows
    /// when it does).
    pub fn stop(
        &self,
        uuid: Uuid,
        force: bool,
        allowed: &[VgpuOrigin],
    ) -> Result<Stopped, LifecycleError> {
        let _changes = lock(&self.changes);
        self.stop_locked(uuid, force, allowed)
    }

    pub(super) fn stop_locked(
        &self,
        uuid: Uuid,
        force: bool,
        allowed: &[VgpuOrigin],
    ) -> Result<Stopped, LifecycleError> {
        // `running` is let go before `not_running` takes `definitions`.
        let found = self
            .running()
            .get(&uuid)
            .map(|r| (Arc::clone(&r.vgpu), r.origin));
        let Some((vgpu, origin)) = found else {
            return Err(self.not_running(uuid));
        };
        if !allowed.contains(&origin) {
            return Err(LifecycleError::Conflict(match origin {
                VgpuOrigin::Config => format!(
                    "vGPU {uuid} is a [[vgpu]] of the configuration file; remove it there and reload (systemctl reload vgpud)"
                ),
                VgpuOrigin::Defined => format!(
                    "vGPU {uuid} is defined; stop it with `vgpuctl stop {uuid}` (and delete the definition with `vgpuctl undefine {uuid}`)"
                ),
                VgpuOrigin::Transient => {
                    format!(
                        "vGPU {uuid} was made by create; remove it with `vgpuctl remove {uuid}`"
                    )
                }
            }));
        }
        let mut stopped = Stopped {
            disconnected: false,
            released: false,
        };
        if !vgpu.close_if_idle() {
            if !force {
                let pid = vgpu
                    .client_pid()
                    .map_or_else(String::new, |p| format!(" (pid {p})"));
                return Err(LifecycleError::Busy(format!(
                    "a client{pid} is attached to vGPU {uuid}; shut its VM down first, or force it off"
                )));
            }
            vgpu.close();
            stopped.disconnected = true;
            stopped.released = disconnect(&vgpu);
        }
        let entry = self.running().remove(&uuid);
        if let Some(mut entry) = entry {
            entry.stop.cancel();
            if let Some(accept) = entry.accept.take() {
                // The accept loop ends at once once cancelled; waiting for
                // it drops its reference to the vGPU.
                let _ = self
                    .runtime
                    .block_on(async { tokio::time::timeout(Duration::from_secs(5), accept).await });
            }
        }
        socket::remove_socket(vgpu.socket_path());
        release_instance(vgpu);
        tracing::info!(%uuid, disconnected = stopped.disconnected, released = stopped.released, "vGPU stopped");
        Ok(stopped)
    }

    /// Why `uuid` has no definition to change: it runs without one
    /// (`conflict`), or it is unknown (`not_found`).
    fn not_defined(&self, uuid: Uuid) -> LifecycleError {
        match self.running().get(&uuid).map(|r| r.origin) {
            Some(VgpuOrigin::Config) => LifecycleError::Conflict(format!(
                "vGPU {uuid} is a [[vgpu]] of the configuration file, not a definition; change it in the file and reload"
            )),
            Some(_) => LifecycleError::Conflict(format!(
                "vGPU {uuid} runs without a definition (it was made by create); `vgpuctl define --uuid {uuid} --type P` defines it"
            )),
            None => LifecycleError::NotFound(format!("no vGPU {uuid}")),
        }
    }

    fn not_running(&self, uuid: Uuid) -> LifecycleError {
        if lock(&self.definitions).by_uuid.contains_key(&uuid) {
            LifecycleError::Conflict(format!(
                "vGPU {uuid} is defined but not running; start it with `vgpuctl start {uuid}`"
            ))
        } else {
            LifecycleError::NotFound(format!("no vGPU {uuid}"))
        }
    }

    /// Writes a new definition; it is not started.
    pub fn define(&self, definition: Definition) -> Result<Definition, LifecycleError> {
        let _changes = lock(&self.changes);
        let uuid = definition.uuid;
        if lock(&self.definitions).by_uuid.contains_key(&uuid) {
            return Err(LifecycleError::Conflict(format!(
                "vGPU {uuid} is already defined; change it with `vgpuctl modify`"
            )));
        }
        if let Some(r) = self.running().get(&uuid)
            && r.origin != VgpuOrigin::Transient
        {
            return Err(LifecycleError::Conflict(format!(
                "vGPU {uuid} is a [[vgpu]] of the configuration file"
            )));
        }
        self.check_definition(&definition)?;
        self.save(&definition)?;
        // A transient vGPU of this UUID becomes the definition's (mdevctl
        // `define` of a running device).
        if let Some(r) = self.running().get_mut(&uuid) {
            r.origin = VgpuOrigin::Defined;
        }
        lock(&self.definitions)
            .by_uuid
            .insert(uuid, definition.clone());
        tracing::info!(%uuid, profile = %definition.profile, auto = definition.auto, "vGPU defined");
        Ok(definition)
    }

    /// Deletes a definition. A running vGPU of it keeps running, as a
    /// transient one.
    pub fn undefine(&self, uuid: Uuid) -> Result<Definition, LifecycleError> {
        let _changes = lock(&self.changes);
        let Some(definition) = lock(&self.definitions).by_uuid.get(&uuid).cloned() else {
            return Err(self.not_defined(uuid));
        };
        {
            let definitions = lock(&self.definitions);
            if let Some(dir) = &definitions.dir {
                match dir.remove(uuid) {
                    Ok(()) | Err(crate::state::StateError::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(LifecycleError::Failed(format!(
                            "cannot delete the definition of {uuid}: {}",
                            ErrorChain(&e)
                        )));
                    }
                }
            }
        }
        lock(&self.definitions).by_uuid.remove(&uuid);
        if let Some(r) = self.running().get_mut(&uuid) {
            r.origin = VgpuOrigin::Transient;
        }
        tracing::info!(%uuid, "vGPU undefined");
        Ok(definition)
    }

    /// Replaces a definition; a running vGPU keeps what it was started
    /// with until it next starts.
    pub fn modify(
        &self,
        uuid: Uuid,
        change: impl FnOnce(&mut Definition),
    ) -> Result<Definition, LifecycleError> {
        let _changes = lock(&self.changes);
        let Some(mut definition) = lock(&self.definitions).by_uuid.get(&uuid).cloned() else {
            return Err(self.not_defined(uuid));
        };
        change(&mut definition);
        self.check_definition(&definition)?;
        self.save(&definition)?;
        lock(&self.definitions)
            .by_uuid
            .insert(uuid, definition.clone());
        tracing::info!(%uuid, profile = %definition.profile, auto = definition.auto, "definition modified");
        Ok(definition)
    }

    /// Starts the defined vGPU `uuid`.
    pub fn start_defined(&self, uuid: Uuid) -> Result<Arc<Vgpu>, LifecycleError> {
        let _changes = lock(&self.changes);
        let Some(definition) = lock(&self.definitions).by_uuid.get(&uuid).cloned() else {
            return Err(if self.running().contains_key(&uuid) {
                LifecycleError::Conflict(format!("vGPU {uuid} is running and not defined"))
            } else {
                LifecycleError::NotFound(format!("no definition of vGPU {uuid}"))
            });
        };
        let request = self.definition_request(&definition)?;
        self.start_locked(request)
    }

    /// What starting `definition` takes, with the file's current profiles
    /// and socket defaults.
    pub fn definition_request(
        &self,
        definition: &Definition,
    ) -> Result<StartRequest, LifecycleError> {
        let (profile, defaults) = {
            let settings = self.settings();
            let profile = settings.profile(&definition.profile).cloned().ok_or_else(|| {
                LifecycleError::Conflict(format!(
                    "vGPU {}'s profile \"{}\" is no longer in the configuration file; `vgpuctl modify {} --type P` with one of: {}",
                    definition.uuid,
                    definition.profile,
                    definition.uuid,
                    profile_names(&settings.profiles)
                ))
            })?;
            (profile, settings.socket_access)
        };
        // User lookups (possibly slow) outside `settings`.
        let access = SocketAccess::resolve(
            definition.socket_owner.as_deref(),
            definition.socket_group.as_deref(),
            definition.socket_mode.as_deref(),
            &defaults,
        )
        // The request is fine; the stored definition no longer resolves
        // (a user deleted, a file edited by hand).
        .map_err(|e| {
            LifecycleError::Conflict(format!(
                "vGPU {}'s definition: {e}; `vgpuctl modify {} --socket-owner ...` fixes it",
                definition.uuid, definition.uuid
            ))
        })?;
        Ok(StartRequest {
            uuid: definition.uuid,
            gpu: definition.gpu.clone(),
            profile,
            access,
            origin: VgpuOrigin::Defined,
            config: None,
        })
    }

    /// Checks what can be checked of a definition without starting it:
    /// its values can be saved, its profile, GPU and socket keys.
    fn check_definition(&self, definition: &Definition) -> Result<(), LifecycleError> {
        // Values that could not be saved first: `gpu: ""` is a bad
        // argument, not an unknown GPU.
        definition.check().map_err(LifecycleError::BadArguments)?;
        let defaults = {
            let settings = self.settings();
            if settings.profile(&definition.profile).is_none() {
                return Err(LifecycleError::NotFound(format!(
                    "no profile \"{}\"; profiles: {}",
                    definition.profile,
                    profile_names(&settings.profiles)
                )));
            }
            settings.socket_access
        };
        if let Some(gpu) = &definition.gpu
            && !self.gpus.contains_key(gpu)
        {
            return Err(LifecycleError::NotFound(format!(
                "no GPU \"{gpu}\"; GPUs: {}",
                self.gpu_order.join(", ")
            )));
        }
        SocketAccess::resolve(
            definition.socket_owner.as_deref(),
            definition.socket_group.as_deref(),
            definition.socket_mode.as_deref(),
            &defaults,
        )
        .map_err(|e| LifecycleError::BadArguments(e.to_string()))?;
        Ok(())
    }

    fn save(&self, definition: &Definition) -> Result<(), LifecycleError> {
        let definitions = lock(&self.definitions);
        let Some(dir) = &definitions.dir else {
            return Err(LifecycleError::Failed(
                "the daemon has no state directory".into(),
            ));
        };
        dir.save(definition).map_err(|e| {
            let message = format!(
                "cannot write the definition of {}: {}",
                definition.uuid,
                ErrorChain(&e)
            );
            match e {
                StateError::Full { .. } => LifecycleError::Insufficient(message),
                StateError::Unsavable { .. } => LifecycleError::BadArguments(message),
                _ => LifecycleError::Failed(message),
            }
        })
    }

    /// The file holding `uuid`'s definition.
    pub fn definition_file(&self, uuid: Uuid) -> Option<std::path::PathBuf> {
        lock(&self.definitions)
            .dir
            .as_ref()
            .map(|d| d.path_of(uuid))
    }
}

/// Asks the client of `vgpu` to let go, waits up to [`RELEASE_GRACE`],
/// then cuts it off and waits for its session ([`disconnect_all`]). True if
/// the client let go by itself.
pub(crate) fn disconnect(vgpu: &Arc<Vgpu>) -> bool {
    disconnect_all(std::slice::from_ref(vgpu))[0]
}

/// Asks every attached client of `vgpus` to let go, gives them
/// [`RELEASE_GRACE`] together, cuts whoever is left, and waits up to
/// [`SESSION_STOP_TIMEOUT`] for their session threads, interrupting any
/// that is blocked on a client. Bounded whatever the clients do: a REQ
/// signal takes at most 10 ms, and no thread is waited on past the
/// timeout. Says, per vGPU, whether its client let go by itself (or had
/// none).
pub(crate) fn disconnect_all(vgpus: &[Arc<Vgpu>]) -> Vec<bool> {
    let mut asked = 0;
    for vgpu in vgpus {
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
    let released = vgpus.iter().map(|v| !v.is_attached()).collect();
    // A vGPU cut between its attach and its session thread's registration
    // has no thread to join: its detach is waited for instead.
    let threads: Vec<_> = vgpus
        .iter()
        .filter_map(|v| v.cut().map(|thread| (v.uuid(), thread)))
        .collect();
    let deadline = Instant::now() + SESSION_STOP_TIMEOUT;
    while Instant::now() < deadline
        && (threads.iter().any(|(_, t)| !t.is_finished()) || vgpus.iter().any(|v| v.is_attached()))
    {
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
            tracing::error!(%uuid, "session thread did not stop; leaving it behind");
        }
    }
    released
}

/// How long a stop waits for the last short-lived holders of a stopped
/// vGPU (a `list` or `stats` being answered, a screenshot being taken) to
/// let go, so that its VRAM and instance are free when the stop is
/// answered.
pub const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Drops the registry's last reference to a stopped vGPU once nobody else
/// holds one: its VRAM slice and its place in the profile's instance count
/// are back when this returns (or, past [`RELEASE_WAIT`], when the last
/// holder lets go: a session thread that would not end, which is logged).
fn release_instance(vgpu: Arc<Vgpu>) {
    let deadline = Instant::now() + RELEASE_WAIT;
    while Arc::strong_count(&vgpu) > 1 {
        if Instant::now() >= deadline {
            tracing::error!(
                uuid = %vgpu.uuid(),
                "the stopped vGPU is still in use; its VRAM is freed when that ends"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What is short when `profile` does not fit on `gpu`.
fn shortfall(gpu: &str, profile: &Profile, error: &CreateError) -> String {
    match error {
        CreateError::InstanceLimit { max, .. } => format!(
            "{gpu} has all {max} instances of {} its max_instances allows",
            profile.name
        ),
        CreateError::Vram { .. } => format!(
            "{gpu} has no free {} block of VRAM",
            ByteSize(profile.framebuffer)
        ),
        other => format!("{gpu}: {}", ErrorChain(other)),
    }
}

fn create_error(gpu: &str, profile: &Profile, error: CreateError) -> LifecycleError {
    match &error {
        CreateError::DuplicateUuid { uuid, .. } => {
            LifecycleError::Conflict(format!("vGPU {uuid} already exists on {gpu}"))
        }
        CreateError::InstanceLimit { .. } | CreateError::Vram { .. } => {
            LifecycleError::Insufficient(shortfall(gpu, profile, &error))
        }
        CreateError::Profile { .. } => LifecycleError::BadArguments(ErrorChain(&error).to_string()),
    }
}

fn profile_names(profiles: &[Arc<Profile>]) -> String {
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Starts every vGPU of `requests` in order, logging (not failing on) the
/// ones that cannot start: used for `auto` definitions at start-up.
pub fn start_each(registry: &Registry, requests: Vec<Result<StartRequest, LifecycleError>>) {
    for request in requests {
        match request.and_then(|r| registry.start(r)) {
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot start a defined vGPU"),
        }
    }
}
