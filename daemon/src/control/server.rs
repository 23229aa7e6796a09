//! Serving the control socket: one task per connection, one response per
//! request line. Handlers only read the registry; they never reach into a
//! session.

use std::os::unix::net::UnixListener;
use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use base64::Engine;

use super::protocol::{
    CONTROL_API_VERSION, ErrorKind, GpuEntry, ListResult, MAX_REQUEST_LEN, Request, Response,
    ScreenshotArgs, ScreenshotResult, VgpuEntry,
};
use crate::daemon::Registry;

/// Accepts control clients until `shutdown` is cancelled.
pub async fn serve(registry: Arc<Registry>, listener: UnixListener, shutdown: CancellationToken) {
    let tasks = shutdown.clone();
    crate::socket::accept_until(listener, shutdown, "control", move |stream| {
        let registry = Arc::clone(&registry);
        let shutdown = tasks.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = connection(registry, stream) => {}
            }
        });
    })
    .await;
}

async fn connection(registry: Arc<Registry>, stream: tokio::net::UnixStream) {
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
            handle_line(&registry, &line)
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec());
        out.push(b'\n');
        if write.write_all(&out).await.is_err() || too_long {
            return;
        }
    }
}

/// Answers one request line.
pub(crate) fn handle_line(registry: &Registry, line: &str) -> Response {
    let request: Request = match serde_json::from_str(line.trim_end()) {
        Ok(r) => r,
        Err(e) => return Response::failure(ErrorKind::BadRequest, format!("not a request: {e}")),
    };
    if request.version != CONTROL_API_VERSION {
        return Response::failure(
            ErrorKind::UnsupportedVersion,
            format!(
                "this daemon speaks control API version {CONTROL_API_VERSION}, not {}",
                request.version
            ),
        );
    }
    match request.command.as_str() {
        "list" => Response::success(json!(list(registry))),
        "screenshot" => screenshot(registry, &request.args),
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
            VgpuEntry {
                uuid: v.uuid().to_string(),
                gpu: v.gpu_id().to_string(),
                profile: p.name.clone(),
                socket: v.socket_path().display().to_string(),
                framebuffer: p.framebuffer,
                channels: p.channels,
                max_resolution: format!("{}x{}", p.max_resolution.0, p.max_resolution.1),
                attached: v.is_attached(),
                refused_messages: v.refusals(),
                mmu_faults: v.mmu_faults(),
                refused_ptes: v.refused_ptes(),
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
        });
        let uuid = uuid::Uuid::from_u128(0x6f1c2a4e_0d4e_4a43_9f7b_3b1d8e0c1a01);
        let instance = parent.create(uuid, profile).unwrap();
        let vgpu = Vgpu::new("gpu0", instance, PathBuf::from("/run/vgpud/x.sock")).unwrap();
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
