//! The vfio-user endpoint of one vGPU: a listening socket whose accept loop
//! runs on the tokio runtime, and one blocking session thread for the
//! attached client.
//!
//! The session is a plain thread doing blocking `recvmsg`/`sendmsg`: the
//! register path is latency-critical (every trapped register write from
//! QEMU is a synchronous round trip), and a dedicated thread answers it with
//! one receive and one send, no reactor wake-ups in between.

mod dma;
mod gpu_mmu;
mod session;

use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::vgpu::Vgpu;

/// Accepts clients for `vgpu` until `shutdown` is cancelled. One client at
/// a time: a second connection is closed at once, with a log line.
pub async fn serve(vgpu: Arc<Vgpu>, listener: UnixListener, shutdown: CancellationToken) {
    let name = vgpu.uuid().to_string();
    crate::socket::accept_until(listener, shutdown, &name, |stream| attach(&vgpu, stream)).await;
}

fn attach(vgpu: &Arc<Vgpu>, stream: tokio::net::UnixStream) {
    let peer = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .map_or_else(|| "unknown".to_string(), |p| p.to_string());
    let stream = match stream
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(uuid = %vgpu.uuid(), error = %e, "cannot take over client socket");
            return;
        }
    };
    let handle = match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(uuid = %vgpu.uuid(), error = %e, "cannot duplicate client socket");
            return;
        }
    };
    if !vgpu.attach(handle) {
        tracing::warn!(uuid = %vgpu.uuid(), peer_pid = %peer, "second client refused: the vGPU already has one");
        return;
    }
    tracing::info!(uuid = %vgpu.uuid(), peer_pid = %peer, "client attached");
    let session_vgpu = Arc::clone(vgpu);
    let spawned = std::thread::Builder::new()
        .name(format!("vgpu-{}", &vgpu.uuid().simple().to_string()[..8]))
        .spawn(move || {
            session::run(&session_vgpu, stream);
            session_vgpu.detach();
            tracing::info!(uuid = %session_vgpu.uuid(), "client detached; vGPU reset");
        });
    match spawned {
        Ok(thread) => vgpu.set_session_thread(thread),
        Err(e) => {
            tracing::error!(uuid = %vgpu.uuid(), error = %e, "cannot start session thread");
            vgpu.detach();
        }
    }
}
