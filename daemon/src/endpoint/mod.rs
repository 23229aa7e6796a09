//! The vfio-user endpoint of one vGPU: a listening socket whose accept loop
//! runs on the tokio runtime, and one blocking session thread for the
//! attached client.
//!
//! The session is a plain thread doing blocking `recvmsg`/`sendmsg`: the
//! register path is latency-critical (every trapped register write from
//! QEMU is a synchronous round trip), and a dedicated thread answers it with
//! one receive and one send, no reactor wake-ups in between.

mod dma;
mod session;

use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error_chain::ErrorChain;
use crate::vgpu::{AttachError, Vgpu};

/// Accepts clients for `vgpu` until `shutdown` is cancelled. One client at
/// a time: a second connection is closed at once, with a log line. Lines
/// about connections go through the vGPU's `connection_log` limit.
pub async fn serve(vgpu: Arc<Vgpu>, listener: UnixListener, shutdown: CancellationToken) {
    let name = vgpu.uuid().to_string();
    let accept_vgpu = Arc::clone(&vgpu);
    crate::socket::accept_until(listener, shutdown, &name, &vgpu.connection_log, |stream| {
        attach(&accept_vgpu, stream)
    })
    .await;
}

fn attach(vgpu: &Arc<Vgpu>, stream: tokio::net::UnixStream) {
    let uuid = vgpu.uuid();
    let pid = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok());
    let peer = pid.map_or_else(|| "unknown".to_string(), |p| p.to_string());
    let stream = match stream
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            vgpu.connection_log
                .log(|| tracing::warn!(%uuid, error = %e, "cannot take over client socket"));
            return;
        }
    };
    let handle = match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            vgpu.connection_log
                .log(|| tracing::warn!(%uuid, error = %e, "cannot duplicate client socket"));
            return;
        }
    };
    let aperture = match vgpu.attach(handle, pid) {
        Ok(aperture) => aperture,
        Err(AttachError::Busy) => {
            vgpu.connection_log.log(|| {
                tracing::warn!(%uuid, peer_pid = %peer, "second client refused: the vGPU already has one")
            });
            return;
        }
        Err(AttachError::Closed) => {
            vgpu.connection_log.log(|| {
                tracing::info!(%uuid, peer_pid = %peer, "client refused: the vGPU is being stopped")
            });
            return;
        }
        Err(e) => {
            vgpu.connection_log.log(|| {
                tracing::error!(%uuid, peer_pid = %peer, error = %ErrorChain(&e), "client refused")
            });
            return;
        }
    };
    vgpu.connection_log
        .log(|| tracing::info!(%uuid, peer_pid = %peer, "client attached"));
    let session_vgpu = Arc::clone(vgpu);
    let spawned = std::thread::Builder::new()
        .name(format!("vgpu-{}", &uuid.simple().to_string()[..8]))
        .spawn(move || {
            session::run(&session_vgpu, aperture, stream);
            session_vgpu.detach();
            session_vgpu
                .connection_log
                .log(|| tracing::info!(%uuid, "client detached; vGPU reset"));
        });
    match spawned {
        Ok(thread) => vgpu.set_session_thread(thread),
        Err(e) => {
            vgpu.connection_log
                .log(|| tracing::error!(%uuid, error = %e, "cannot start session thread"));
            vgpu.detach();
        }
    }
}
