//! `vgpuctl`: the command-line client of a running vgpud's control API
//! (docs/control-api.md; the verbs are in docs/operations.md, "Managing
//! vGPUs at run time").
//!
//! - `cli`: the command line and its `--help`.
//! - `client`: one request on the control socket.
//! - `error`: what can fail, its exit code and hint.
//! - `render`, `table`, `units`: results as tables for people.
//! - `top`: the refreshing view of `stats`.

mod cli;
mod client;
mod error;
mod render;
mod table;
mod top;
mod units;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use base64::Engine;
use clap::Parser;
use serde::Serialize;
use vgpud::control::protocol::{
    CreateArgs, DefineArgs, DefinitionEntry, ListArgs, ListResult, MetricsResult, ModifyArgs,
    ScreenshotArgs, ScreenshotResult, SocketAccessArgs, StartedResult, StatsArgs, StatsResult,
    StopArgs, StoppedResult, TypesArgs, TypesResult, UuidArgs,
};
use vgpud::error_chain::ErrorChain;

use crate::cli::{Args, Command, SocketOptions};
use crate::client::Control;
use crate::error::CtlError;

fn main() -> ExitCode {
    let args = Args::parse();
    let verb = verb(&args.command);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`vgpuctl top | head`) wanted no more.
        Err(CtlError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpuctl: {}", ErrorChain(&e));
            if let Some(hint) = e.hint(verb) {
                eprintln!("hint: {hint}");
            }
            e.exit_code()
        }
    }
}

fn verb(command: &Command) -> &'static str {
    match command {
        Command::Types { .. } => "types",
        Command::List { .. } => "list",
        Command::Create { .. } => "create",
        Command::Remove { .. } => "remove",
        Command::Define { .. } => "define",
        Command::Undefine { .. } => "undefine",
        Command::Start { .. } => "start",
        Command::Stop { .. } => "stop",
        Command::Modify { .. } => "modify",
        Command::Stats { .. } => "stats",
        Command::Top { .. } => "top",
        Command::Metrics => "metrics",
        Command::Screenshot { .. } => "screenshot",
        Command::Version => "version",
    }
}

fn run(args: &Args) -> Result<(), CtlError> {
    let control = Control::new(&args.runtime_dir);
    let json = args.json;
    match &args.command {
        Command::Types { gpu } => {
            let (result, raw) =
                control.call::<TypesResult>("types", TypesArgs { gpu: gpu.clone() })?;
            show(json, &raw, || render::types(&result))
        }
        Command::List { defined } => {
            let (result, raw) =
                control.call::<ListResult>("list", ListArgs { defined: *defined })?;
            show(json, &raw, || render::list(&result))
        }
        Command::Create {
            profile,
            uuid,
            gpu,
            socket,
        } => {
            let request = CreateArgs {
                profile: profile.clone(),
                uuid: uuid.clone(),
                gpu: gpu.clone(),
                access: access(socket),
            };
            started(&control, json, "create", request, true)
        }
        Command::Start { uuid } => started(
            &control,
            json,
            "start",
            UuidArgs { uuid: uuid.clone() },
            false,
        ),
        Command::Remove { uuid, force } | Command::Stop { uuid, force } => {
            let verb = verb(&args.command);
            let request = StopArgs {
                uuid: uuid.clone(),
                force: force.force,
            };
            let (result, raw) = control.call::<StoppedResult>(verb, request)?;
            show(json, &raw, || render::stopped(&result, verb))
        }
        Command::Define {
            profile,
            uuid,
            gpu,
            auto,
            socket,
        } => {
            let request = DefineArgs {
                profile: profile.clone(),
                uuid: uuid.clone(),
                gpu: gpu.clone(),
                auto: *auto,
                access: access(socket),
            };
            definition(&control, json, "define", request)
        }
        Command::Undefine { uuid } => {
            definition(&control, json, "undefine", UuidArgs { uuid: uuid.clone() })
        }
        Command::Modify {
            uuid,
            profile,
            gpu,
            auto,
            manual,
            socket,
        } => {
            let request = ModifyArgs {
                uuid: uuid.clone(),
                profile: profile.clone(),
                gpu: gpu.clone(),
                auto: match (auto, manual) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                access: access(socket),
            };
            definition(&control, json, "modify", request)
        }
        Command::Stats { uuid } => {
            let (result, raw) =
                control.call::<StatsResult>("stats", StatsArgs { uuid: uuid.clone() })?;
            show(json, &raw, || render::stats(&result))
        }
        Command::Top { interval, count } => top::run(&control, *interval, *count, json),
        Command::Metrics => {
            let (result, raw) = control.call::<MetricsResult>("metrics", ())?;
            show(json, &raw, || result.text.clone())
        }
        Command::Screenshot { uuid, file } => screenshot(&control, json, uuid, file),
        Command::Version => {
            let raw = control.call_raw("version", ())?;
            show(json, &raw, || {
                format!(
                    "vgpud {} (control API {})\n",
                    raw["daemon"].as_str().unwrap_or("?"),
                    raw["api"]
                )
            })
        }
    }
}

fn access(socket: &SocketOptions) -> SocketAccessArgs {
    SocketAccessArgs {
        socket_owner: socket.socket_owner.clone(),
        socket_group: socket.socket_group.clone(),
        socket_mode: socket.socket_mode.clone(),
    }
}

/// Prints the daemon's result as JSON, or `human` of it.
fn show(
    json: bool,
    raw: &serde_json::Value,
    human: impl FnOnce() -> String,
) -> Result<(), CtlError> {
    if json {
        print_json(raw)
    } else {
        print(&human())
    }
}

fn print_json(value: &serde_json::Value) -> Result<(), CtlError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CtlError::Output(std::io::Error::other(e)))?;
    print(&format!("{text}\n"))
}

fn print(text: &str) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CtlError::Output)
}

/// `create` and `start`.
fn started(
    control: &Control,
    json: bool,
    verb: &str,
    request: impl Serialize,
    transient: bool,
) -> Result<(), CtlError> {
    let (result, raw) = control.call::<StartedResult>(verb, request)?;
    if json {
        return print_json(&raw);
    }
    let (socket, note) = render::started(&result, transient);
    eprint!("{note}");
    print(&socket)
}

/// `define`, `undefine` and `modify`.
fn definition(
    control: &Control,
    json: bool,
    verb: &str,
    request: impl Serialize,
) -> Result<(), CtlError> {
    let (result, raw) = control.call::<DefinitionEntry>(verb, request)?;
    show(json, &raw, || render::definition(&result, verb))
}

fn screenshot(control: &Control, json: bool, uuid: &str, file: &Path) -> Result<(), CtlError> {
    let (shot, mut raw) = control.call::<ScreenshotResult>(
        "screenshot",
        ScreenshotArgs {
            uuid: uuid.to_string(),
        },
    )?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(&shot.png_base64)
        .map_err(|e| CtlError::Incomplete {
            command: "screenshot".into(),
            what: format!("the PNG is not base64: {e}"),
        })?;
    std::fs::write(file, &png).map_err(|source| CtlError::WriteFile {
        path: file.to_path_buf(),
        source,
    })?;
    if json {
        if let Some(map) = raw.as_object_mut() {
            map.remove("png_base64");
            map.insert("file".into(), file.display().to_string().into());
        }
        return print_json(&raw);
    }
    print(&format!(
        "{}: {}x{} {} bpp, {} bytes\n",
        file.display(),
        shot.width,
        shot.height,
        shot.bpp,
        png.len()
    ))
}
