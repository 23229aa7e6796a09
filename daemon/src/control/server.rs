//! Serving the control socket: one task per connection, one response per
//! request line.
//!
//! Nothing here blocks the event loop or waits on a vGPU's register path:
//! `list`, `types`, `stats`, `metrics` and `version` only read counters and
//! take each vGPU's client lock (held for bounded work); commands that
//! change what runs (`create`, `stop`, ...) run on a blocking thread, one
//! change at a time; a screenshot, which reads and encodes a whole frame,
//! runs on a blocking thread, one at a time ([`MAX_SCREENSHOTS`]).
//!
//! Bounds: at most [`MAX_CONTROL_CONNECTIONS`] connections at once (one
//! more is answered `busy` and closed), and a connection that sends no
//! complete line for [`CONTROL_IDLE_TIMEOUT`] is closed, so a client that
//! stalls half-way through a line holds one slot for that long at most.

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use base64::Engine;

use super::commands::{self, LIFECYCLE_COMMANDS};
use super::protocol::{
    CONTROL_API_VERSION, ErrorKind, ListArgs, MAX_REQUEST_LEN, NoArgs, Request, Response,
    ScreenshotArgs, ScreenshotResult, StatsArgs, StatsResult, TypesArgs,
};
use crate::daemon::Registry;
use crate::log_limit::LogLimit;

/// Screenshots taken at once: each holds a frame (up to 4095 × 4095
/// pixels) and its PNG in memory.
pub const MAX_SCREENSHOTS: usize = 1;
/// How long a screenshot request waits for the one running.
pub const SCREENSHOT_WAIT: Duration = Duration::from_secs(10);
/// Control connections served at once.
pub const MAX_CONTROL_CONNECTIONS: usize = 64;
/// How long a connection may go without completing a request line.
pub const CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long writing a response may take before the connection is dropped
/// (a client that does not read).
pub const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every command this daemon knows, for `unknown_command` answers and the
/// per-command request counter.
pub const COMMANDS: &[&str] = &[
    "list",
    "types",
    "create",
    "remove",
    "define",
    "undefine",
    "start",
    "stop",
    "modify",
    "stats",
    "metrics",
    "screenshot",
    "version",
];

/// What the control tasks share.
#[derive(Debug)]
struct Control {
    registry: Arc<Registry>,
    screenshots: Semaphore,
    connections: Arc<Semaphore>,
}

/// Accepts control clients until `shutdown` is cancelled.
pub async fn serve(registry: Arc<Registry>, listener: UnixListener, shutdown: CancellationToken) {
    let tasks = shutdown.clone();
    let control = Arc::new(Control {
        registry,
        screenshots: Semaphore::new(MAX_SCREENSHOTS),
        connections: Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS)),
    });
    let log = LogLimit::new("control connections");
    crate::socket::accept_until(listener, shutdown, "control", &log, move |stream| {
        let control = Arc::clone(&control);
        let shutdown = tasks.clone();
        let permit = Arc::clone(&control.connections).try_acquire_owned();
        tokio::spawn(async move {
            let Ok(_permit) = permit else {
                refuse(stream).await;
                return;
            };
            let counter = &control.registry.control.connections;
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = connection(&control, stream) => {}
            }
            counter.fetch_sub(1, Ordering::Relaxed);
        });
    })
    .await;
}

/// Answers a connection past the limit with one `busy` line.
async fn refuse(mut stream: tokio::net::UnixStream) {
    let response = Response::failure(
        ErrorKind::Busy,
        format!(
            "the daemon serves {MAX_CONTROL_CONNECTIONS} control connections at once; try again"
        ),
    );
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
}

async fn connection(control: &Control, stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_LEN as u64 + 1);
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.set_limit(MAX_REQUEST_LEN as u64 + 1);
        match tokio::time::timeout(CONTROL_IDLE_TIMEOUT, reader.read_until(b'\n', &mut line)).await
        {
            Err(_) => {
                tracing::debug!("control connection idle; closed");
                return;
            }
            Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "control connection read failed");
                return;
            }
        }
        let too_long = line.len() > MAX_REQUEST_LEN;
        let response = if too_long {
            Response::failure(
                ErrorKind::BadRequest,
                format!("request longer than {MAX_REQUEST_LEN} bytes"),
            )
        } else {
            match std::str::from_utf8(&line) {
                Ok(text) => handle(control, text).await,
                Err(e) => Response::failure(
                    ErrorKind::BadRequest,
                    format!("not a request: the line is not UTF-8 ({e})"),
                ),
            }
        };
        if let Some(error) = &response.error {
            control.registry.control.error(error.kind);
        }
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec());
        out.push(b'\n');
        let written = tokio::time::timeout(CONTROL_WRITE_TIMEOUT, write.write_all(&out)).await;
        if !matches!(written, Ok(Ok(()))) || too_long {
            return;
        }
    }
}

/// Answers one request line; blocking commands off the event loop.
async fn handle(control: &Control, line: &str) -> Response {
    let request = match parse(line) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let known = COMMANDS.iter().find(|c| **c == request.command).copied();
    control.registry.control.request(known.unwrap_or("unknown"));
    if request.command == "screenshot" {
        return screenshot_off_loop(control, request).await;
    }
    if LIFECYCLE_COMMANDS.contains(&request.command.as_str()) {
        let registry = Arc::clone(&control.registry);
        return tokio::task::spawn_blocking(move || {
            commands::answer(&registry, &request.command, &request.args)
        })
        .await
        .unwrap_or_else(|e| Response::failure(ErrorKind::Failed, format!("command failed: {e}")));
    }
    answer(&control.registry, &request)
}

async fn screenshot_off_loop(control: &Control, request: Request) -> Response {
    let Ok(permit) = tokio::time::timeout(SCREENSHOT_WAIT, control.screenshots.acquire()).await
    else {
        return Response::failure(
            ErrorKind::Busy,
            format!(
                "another screenshot is being taken and did not finish within {} s; try again",
                SCREENSHOT_WAIT.as_secs()
            ),
        );
    };
    let registry = Arc::clone(&control.registry);
    let taken = tokio::task::spawn_blocking(move || screenshot(&registry, &request.args)).await;
    drop(permit);
    taken
        .unwrap_or_else(|e| Response::failure(ErrorKind::Failed, format!("screenshot failed: {e}")))
}

/// Answers one request line on the calling thread (every command).
#[cfg(test)]
pub(crate) fn handle_line(registry: &Registry, line: &str) -> Response {
    match parse(line) {
        Ok(request) if request.command == "screenshot" => screenshot(registry, &request.args),
        Ok(request) if LIFECYCLE_COMMANDS.contains(&request.command.as_str()) => {
            commands::answer(registry, &request.command, &request.args)
        }
        Ok(request) => answer(registry, &request),
        Err(response) => response,
    }
}

/// A request of the version this daemon speaks, or the response refusing
/// the line.
fn parse(line: &str) -> Result<Request, Response> {
    let request: Request = serde_json::from_str(line.trim_end())
        .map_err(|e| Response::failure(ErrorKind::BadRequest, format!("not a request: {e}")))?;
    if request.version != CONTROL_API_VERSION {
        return Err(Response::failure(
            ErrorKind::UnsupportedVersion,
            format!(
                "this daemon speaks control API version {CONTROL_API_VERSION}, not {}",
                request.version
            ),
        ));
    }
    Ok(request)
}

/// `request`'s `args` as `T`.
fn args<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, Response> {
    super::protocol::parse_args(&request.command, &request.args)
        .map_err(|message| Response::failure(ErrorKind::BadArguments, message))
}

/// Answers the commands that only read.
fn answer(registry: &Registry, request: &Request) -> Response {
    let result = match request.command.as_str() {
        "list" => args::<ListArgs>(request).map(|a| json!(registry.list(a.defined))),
        "types" => args::<TypesArgs>(request).and_then(|a| {
            if let Some(gpu) = &a.gpu
                && !registry.gpus.contains_key(gpu)
            {
                return Err(Response::failure(
                    ErrorKind::NotFound,
                    format!("no GPU \"{gpu}\"; GPUs: {}", registry.gpu_ids().join(", ")),
                ));
            }
            Ok(json!(registry.types(a.gpu.as_deref())))
        }),
        "stats" => args::<StatsArgs>(request).and_then(|a| stats(registry, a)),
        "metrics" => args::<NoArgs>(request)
            .map(|_| json!(crate::metrics::control_result(&registry.metrics()))),
        "version" => args::<NoArgs>(request).map(|_| {
            json!({
                "daemon": env!("CARGO_PKG_VERSION"),
                "api": CONTROL_API_VERSION,
            })
        }),
        other => Err(Response::failure(
            ErrorKind::UnknownCommand,
            format!(
                "unknown command \"{}\"; this daemon knows: {}",
                other.chars().take(64).collect::<String>(),
                COMMANDS.join(", ")
            ),
        )),
    };
    result.map_or_else(|response| response, Response::success)
}

fn stats(registry: &Registry, a: StatsArgs) -> Result<serde_json::Value, Response> {
    let time_ns = registry.time_ns();
    let mut vgpus = registry.stats();
    if let Some(uuid) = &a.uuid {
        let uuid = commands::uuid_arg(uuid).map_err(Response::from)?;
        vgpus.retain(|v| v.uuid == uuid.to_string());
        if vgpus.is_empty() {
            return Err(Response::failure(
                ErrorKind::NotFound,
                format!("no running vGPU {uuid}"),
            ));
        }
    }
    Ok(json!(StatsResult { time_ns, vgpus }))
}

fn screenshot(registry: &Registry, args: &serde_json::Value) -> Response {
    let args: ScreenshotArgs = match serde_json::from_value(args.clone()) {
        Ok(a) => a,
        Err(e) => return Response::failure(ErrorKind::BadArguments, format!("screenshot: {e}")),
    };
    let Some(vgpu) = uuid::Uuid::try_parse(&args.uuid)
        .ok()
        .and_then(|u| registry.vgpu(u))
    else {
        return Response::failure(ErrorKind::NotFound, format!("no vGPU {}", args.uuid));
    };
    match crate::screenshot::capture(&vgpu) {
        Ok(shot) => Response::success(json!(ScreenshotResult {
            width: shot.mode.width,
            height: shot.mode.height,
            bpp: shot.mode.bpp,
            pitch: shot.mode.pitch,
            offset: shot.mode.offset,
            png_base64: base64::engine::general_purpose::STANDARD.encode(&shot.png),
        })),
        Err(crate::screenshot::ScreenshotError::NoScanout) => Response::failure(
            ErrorKind::NoScanout,
            format!(
                "vGPU {} shows nothing: its display is disabled or its mode invalid",
                args.uuid
            ),
        ),
        Err(e) => Response::failure(
            ErrorKind::Failed,
            format!("screenshot of {}: {e}", args.uuid),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests;
