//! The commands that change what runs or is defined (`create`, `remove`,
//! `define`, `undefine`, `start`, `stop`, `modify`): arguments checked and
//! turned into registry calls. They may block (see
//! `registry::lifecycle`), so the server runs them off the event loop.

use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use super::protocol::{
    CreateArgs, DefineArgs, DefinitionEntry, ModifyArgs, Response, SocketAccessArgs, StartedResult,
    StopArgs, StoppedResult, UuidArgs, VgpuOrigin,
};
use crate::access::SocketAccess;
use crate::registry::{LifecycleError, Registry, StartRequest};
use crate::state::Definition;
use crate::vgpu::Vgpu;

/// The names of the commands this module answers.
pub const LIFECYCLE_COMMANDS: &[&str] = &[
    "create", "remove", "define", "undefine", "start", "stop", "modify",
];

/// Answers a lifecycle command (one of [`LIFECYCLE_COMMANDS`]).
pub fn answer(registry: &Registry, command: &str, args: &serde_json::Value) -> Response {
    let result = match command {
        "create" => parse(command, args).and_then(|a| create(registry, a)),
        "remove" => parse(command, args).and_then(|a| stop(registry, a, &[VgpuOrigin::Transient])),
        "stop" => parse(command, args)
            .and_then(|a| stop(registry, a, &[VgpuOrigin::Transient, VgpuOrigin::Defined])),
        "define" => parse(command, args).and_then(|a| define(registry, a)),
        "undefine" => parse::<UuidArgs>(command, args).and_then(|a| {
            let uuid = uuid_arg(&a.uuid)?;
            let d = registry.undefine(uuid)?;
            Ok(json!(definition_entry(registry, &d)))
        }),
        "start" => parse::<UuidArgs>(command, args).and_then(|a| {
            let uuid = uuid_arg(&a.uuid)?;
            Ok(json!(started(registry.start_defined(uuid)?.as_ref())))
        }),
        "modify" => parse(command, args).and_then(|a| modify(registry, a)),
        other => Err(LifecycleError::BadArguments(format!(
            "{other} is not a lifecycle command"
        ))),
    };
    match result {
        Ok(value) => Response::success(value),
        Err(e) => Response::failure(e.kind(), e.to_string()),
    }
}

/// `args` as the command's argument type.
fn parse<T: DeserializeOwned>(
    command: &str,
    args: &serde_json::Value,
) -> Result<T, LifecycleError> {
    super::protocol::parse_args(command, args).map_err(LifecycleError::BadArguments)
}

/// A UUID argument.
pub fn uuid_arg(text: &str) -> Result<Uuid, LifecycleError> {
    Uuid::try_parse(text).map_err(|e| {
        LifecycleError::BadArguments(format!(
            "\"{text}\" is not a UUID ({e}); write it as 8-4-4-4-12 hex digits"
        ))
    })
}

/// The UUID asked for, or a fresh random one.
fn uuid_or_new(uuid: Option<&str>) -> Result<Uuid, LifecycleError> {
    uuid.map_or_else(|| Ok(Uuid::new_v4()), uuid_arg)
}

fn create(registry: &Registry, args: CreateArgs) -> Result<serde_json::Value, LifecycleError> {
    let uuid = uuid_or_new(args.uuid.as_deref())?;
    let (profile, defaults) = {
        let settings = registry.settings();
        let profile = settings.profile(&args.profile).cloned().ok_or_else(|| {
            LifecycleError::NotFound(format!(
                "no profile \"{}\"; `vgpuctl types` lists them",
                args.profile
            ))
        })?;
        (profile, settings.socket_access)
    };
    // Not under `settings`: a user lookup may be slow, and a reload
    // waiting to write would hold up every reader (`list` on the event
    // loop) behind it.
    let access = resolve(&args.access, &defaults)?;
    let vgpu = registry.start(StartRequest {
        uuid,
        gpu: args.gpu,
        profile,
        access,
        origin: VgpuOrigin::Transient,
        config: None,
    })?;
    Ok(json!(started(&vgpu)))
}

fn stop(
    registry: &Registry,
    args: StopArgs,
    allowed: &[VgpuOrigin],
) -> Result<serde_json::Value, LifecycleError> {
    let uuid = uuid_arg(&args.uuid)?;
    let stopped = registry.stop(uuid, args.force, allowed)?;
    Ok(json!(StoppedResult {
        uuid: uuid.to_string(),
        disconnected: stopped.disconnected,
        released: stopped.released,
    }))
}

fn define(registry: &Registry, args: DefineArgs) -> Result<serde_json::Value, LifecycleError> {
    let uuid = uuid_or_new(args.uuid.as_deref())?;
    let definition = Definition {
        uuid,
        profile: args.profile,
        gpu: args.gpu,
        auto: args.auto,
        socket_owner: args.access.socket_owner,
        socket_group: args.access.socket_group,
        socket_mode: args.access.socket_mode,
    };
    let d = registry.define(definition)?;
    Ok(json!(definition_entry(registry, &d)))
}

fn modify(registry: &Registry, args: ModifyArgs) -> Result<serde_json::Value, LifecycleError> {
    let uuid = uuid_arg(&args.uuid)?;
    // "" clears a key back to its default.
    let set = |value: Option<String>, target: &mut Option<String>| {
        if let Some(v) = value {
            *target = (!v.is_empty()).then_some(v);
        }
    };
    let d = registry.modify(uuid, |d| {
        if let Some(p) = args.profile {
            d.profile = p;
        }
        set(args.gpu, &mut d.gpu);
        if let Some(auto) = args.auto {
            d.auto = auto;
        }
        set(args.access.socket_owner, &mut d.socket_owner);
        set(args.access.socket_group, &mut d.socket_group);
        set(args.access.socket_mode, &mut d.socket_mode);
    })?;
    Ok(json!(definition_entry(registry, &d)))
}

fn resolve(
    args: &SocketAccessArgs,
    defaults: &SocketAccess,
) -> Result<SocketAccess, LifecycleError> {
    SocketAccess::resolve(
        args.socket_owner.as_deref(),
        args.socket_group.as_deref(),
        args.socket_mode.as_deref(),
        defaults,
    )
    .map_err(|e| LifecycleError::BadArguments(e.to_string()))
}

fn started(vgpu: &Vgpu) -> StartedResult {
    StartedResult {
        uuid: vgpu.uuid().to_string(),
        gpu: vgpu.gpu_id().to_string(),
        profile: vgpu.profile().name.clone(),
        socket: vgpu.socket_path().display().to_string(),
    }
}

fn definition_entry(registry: &Registry, d: &Definition) -> DefinitionEntry {
    DefinitionEntry {
        uuid: d.uuid.to_string(),
        profile: d.profile.clone(),
        gpu: d.gpu.clone(),
        auto: d.auto,
        access: SocketAccessArgs {
            socket_owner: d.socket_owner.clone(),
            socket_group: d.socket_group.clone(),
            socket_mode: d.socket_mode.clone(),
        },
        file: registry
            .definition_file(d.uuid)
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

impl From<LifecycleError> for Response {
    fn from(e: LifecycleError) -> Self {
        Response::failure(e.kind(), e.to_string())
    }
}
