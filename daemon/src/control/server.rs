//! Serving the control socket: one task per connection, one response per
//! request line. Handlers only read the registry; they never reach into a
//! session.
//!
//! Nothing here blocks the runtime: `list` and `version` only read
//! counters and take a vGPU's client lock (held for bounded work), and a
//! screenshot, which reads and encodes a whole frame, runs on a blocking
//! thread, one at a time ([`MAX_SCREENSHOTS`]); a request that finds
//! another screenshot running waits up to [`SCREENSHOT_WAIT`] and is then
//! answered `busy`.

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use base64::Engine;

use super::protocol::{
    CONTROL_API_VERSION, ErrorKind, GpuEntry, ListResult, MAX_REQUEST_LEN, Request, Response,
    ScreenshotArgs, ScreenshotResult, VgpuEntry,
};
use crate::daemon::Registry;
use crate::log_limit::LogLimit;
use vgpu_mdev::VgpuStats;

/// Screenshots taken at once: each holds a frame (up to 4095 × 4095
/// pixels) and its PNG in memory.
pub const MAX_SCREENSHOTS: usize = 1;
/// How long a screenshot request waits for the one running.
pub const SCREENSHOT_WAIT: Duration = Duration::from_secs(10);

/// What the control tasks share.
#[derive(Debug)]
struct Control {
    registry: Arc<Registry>,
    screenshots: Semaphore,
}

/// Accepts control clients until `shutdown` is cancelled.
pub async fn serve(registry: Arc<Registry>, listener: UnixListener, shutdown: CancellationToken) {
    let tasks = shutdown.clone();
    let control = Arc::new(Control {
        registry,
        screenshots: Semaphore::new(MAX_SCREENSHOTS),
    });
    let log = LogLimit::new("control connections");
    crate::socket::accept_until(listener, shutdown, "control", &log, move |stream| {
        let control = Arc::clone(&control);
        let shutdown = tasks.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = connection(control, stream) => {}
            }
        });
    })
    .await;
}

async fn connection(control: Arc<Control>, stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_LEN as u64 + 1);
    let mut line = String::new();
    loop {
        line.clear();
        reader.set_limit(MAX_REQUEST_LEN as u64 + 1);
        match reader.read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
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
            handle(&control, &line).await
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec());
        out.push(b'\n');
        if write.write_all(&out).await.is_err() || too_long {
            return;
        }
    }
}

/// Answers one request line; screenshots off the runtime.
async fn handle(control: &Control, line: &str) -> Response {
    let request = match parse(line) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if request.command != "screenshot" {
        return answer(&control.registry, &request);
    }
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

/// Answers one request line on the calling thread (screenshots too).
#[cfg(test)]
pub(crate) fn handle_line(registry: &Registry, line: &str) -> Response {
    match parse(line) {
        Ok(request) if request.command == "screenshot" => screenshot(registry, &request.args),
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

/// Answers every command but `screenshot`.
fn answer(registry: &Registry, request: &Request) -> Response {
    match request.command.as_str() {
        "list" => Response::success(json!(list(registry))),
        "version" => Response::success(json!({
            "daemon": env!("CARGO_PKG_VERSION"),
            "api": CONTROL_API_VERSION,
        })),
        other => Response::failure(
            ErrorKind::UnknownCommand,
            format!("unknown command \"{other}\"; this daemon knows: list, screenshot, version"),
        ),
    }
}

fn screenshot(registry: &Registry, args: &serde_json::Value) -> Response {
    let args: ScreenshotArgs = match serde_json::from_value(args.clone()) {
        Ok(a) => a,
        Err(e) => return Response::failure(ErrorKind::BadArguments, format!("screenshot: {e}")),
    };
    let Some(vgpu) = uuid::Uuid::try_parse(&args.uuid)
        .ok()
        .and_then(|u| registry.vgpus.get(&u))
    else {
        return Response::failure(ErrorKind::NotFound, format!("no vGPU {}", args.uuid));
    };
    match crate::screenshot::capture(vgpu) {
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

fn list(registry: &Registry) -> ListResult {
    let gpus = registry
        .gpus
        .iter()
        .map(|(id, gpu)| GpuEntry {
            id: id.clone(),
            backend: gpu.backend.name().into(),
            vram: gpu.parent.gpu().vram_size(),
            vram_free: gpu.parent.gpu().vram_placement().free_bytes(),
        })
        .collect();
    let vgpus = registry
        .vgpus
        .values()
        .map(|v| {
            let p = v.profile();
            let engine = v.device().engine_time();
            VgpuEntry {
                uuid: v.uuid().to_string(),
                gpu: v.gpu_id().to_string(),
                profile: p.name.clone(),
                socket: v.socket_path().display().to_string(),
                state: if v.is_attached() {
                    crate::control::protocol::VgpuState::Attached
                } else {
                    crate::control::protocol::VgpuState::Listening
                },
                origin: crate::control::protocol::VgpuOrigin::Config,
                auto: false,
                client_pid: None,
                framebuffer: p.framebuffer,
                channels: p.channels,
                max_resolution: format!("{}x{}", p.max_resolution.0, p.max_resolution.1),
                attached: v.is_attached(),
                refused_messages: VgpuStats::get(&v.stats().refusals),
                mmu_faults: VgpuStats::get(&v.stats().mmu_faults),
                refused_ptes: VgpuStats::get(&v.stats().refused_ptes),
                interrupts: VgpuStats::get(&v.stats().interrupts),
                interrupts_coalesced: VgpuStats::get(&v.stats().interrupts_coalesced),
                max_dma_maps: v.dma_allowance().windows,
                max_dma_bytes: v.dma_allowance().mapped_bytes,
                submissions: VgpuStats::get(&v.stats().submissions),
                commands: VgpuStats::get(&v.stats().commands),
                refused_submissions: VgpuStats::get(&v.stats().refused_submissions),
                engine_run_ns: engine.run_ns,
                engine_wait_ns: engine.wait_ns,
                engine_idle_ns: engine.idle_ns,
            }
        })
        .collect();
    ListResult { gpus, vgpus }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use vgpu_mdev::{ParentGpu, PhysicalGpu, Profile, SimGpu};

    use super::*;
    use crate::control::protocol::ErrorBody;
    use crate::vgpu::Vgpu;

    fn registry() -> Registry {
        let gpu: Arc<dyn PhysicalGpu> = Arc::new(SimGpu::new("gpu0", 64 << 20).unwrap());
        let parent = Arc::new(ParentGpu::new(gpu));
        let profile = Arc::new(Profile {
            name: "small".into(),
            framebuffer: 16 << 20,
            max_instances: 2,
            channels: 2,
            max_resolution: (1024, 768),
            subsystem_vendor_id: 0x1234,
            subsystem_id: 0x1100,
            weight: 1,
        });
        let uuid = uuid::Uuid::from_u128(0x6f1c2a4e_0d4e_4a43_9f7b_3b1d8e0c1a01);
        let instance = parent.create(uuid, profile).unwrap();
        let vgpu = Vgpu::new(
            &parent,
            instance,
            crate::vgpu::test_grant(),
            PathBuf::from("/run/vgpud/x.sock"),
        )
        .unwrap();
        Registry {
            runtime_dir: PathBuf::from("/run/vgpud"),
            gpus: BTreeMap::from([(
                "gpu0".to_string(),
                crate::daemon::Gpu {
                    backend: crate::config::Backend::Sim,
                    parent,
                },
            )]),
            vgpus: BTreeMap::from([(uuid, Arc::new(vgpu))]),
        }
    }

    fn error_of(response: &Response) -> &ErrorBody {
        assert!(!response.ok);
        response.error.as_ref().unwrap()
    }

    #[test]
    fn list_reports_gpus_and_vgpus() {
        let response = handle_line(&registry(), r#"{"version":1,"command":"list"}"#);
        assert!(response.ok, "{response:?}");
        let list: ListResult = serde_json::from_value(response.result.unwrap()).unwrap();
        assert_eq!(list.gpus.len(), 1);
        assert_eq!(list.gpus[0].vram, 64 << 20);
        assert_eq!(list.gpus[0].vram_free, 48 << 20);
        assert_eq!(list.vgpus.len(), 1);
        let v = &list.vgpus[0];
        assert_eq!(v.uuid, "6f1c2a4e-0d4e-4a43-9f7b-3b1d8e0c1a01");
        assert_eq!(
            (v.profile.as_str(), v.framebuffer, v.channels),
            ("small", 16 << 20, 2)
        );
        assert_eq!(v.max_resolution, "1024x768");
        assert!(!v.attached);
    }

    #[test]
    fn malformed_request_is_a_bad_request() {
        let response = handle_line(&registry(), "not json");
        assert_eq!(error_of(&response).kind, ErrorKind::BadRequest);
        let response = handle_line(&registry(), r#"{"version":1,"command":"list","extra":1}"#);
        assert_eq!(error_of(&response).kind, ErrorKind::BadRequest);
    }

    #[test]
    fn other_versions_are_refused_by_name() {
        let response = handle_line(&registry(), r#"{"version":2,"command":"list"}"#);
        let error = error_of(&response);
        assert_eq!(error.kind, ErrorKind::UnsupportedVersion);
        assert!(error.message.contains("version 1"));
    }

    #[test]
    fn unknown_commands_are_told_apart_from_failures() {
        let response = handle_line(&registry(), r#"{"version":1,"command":"frobnicate"}"#);
        assert_eq!(error_of(&response).kind, ErrorKind::UnknownCommand);
    }
}
