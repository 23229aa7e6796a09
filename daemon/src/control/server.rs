//! Serving the control socket: one task per connection, one response per
//! request line. Handlers only read the registry; they never reach into a
//! session.

use std::os::unix::net::UnixListener;
use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::protocol::{
    CONTROL_API_VERSION, ErrorKind, GpuEntry, ListResult, MAX_REQUEST_LEN, Request, Response,
    VgpuEntry,
};
use crate::daemon::Registry;

/// Accepts control clients until `shutdown` is cancelled.
pub async fn serve(registry: Arc<Registry>, listener: UnixListener, shutdown: CancellationToken) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen on the control socket");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let registry = Arc::clone(&registry);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = connection(registry, stream) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
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
        "version" => Response::success(json!({
            "daemon": env!("CARGO_PKG_VERSION"),
            "api": CONTROL_API_VERSION,
        })),
        other => Response::failure(
            ErrorKind::UnknownCommand,
            format!("unknown command \"{other}\"; this daemon knows: list, version"),
        ),
    }
}

fn list(registry: &Registry) -> ListResult {
    let gpus = registry
        .parents
        .iter()
        .map(|(id, parent)| GpuEntry {
            id: id.clone(),
            backend: "sim".into(),
            vram: parent.gpu().vram_size(),
            vram_free: parent.gpu().vram_placement().free_bytes(),
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
            }
        })
        .collect();
    ListResult { gpus, vgpus }
}
