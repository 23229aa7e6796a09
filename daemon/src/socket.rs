//! Binding the daemon's Unix sockets without trampling a live daemon.
//!
//! A socket file left behind by a daemon that died is replaced; one that a
//! live process still accepts on is refused, so that two daemons never
//! serve (or silently steal) the same vGPU path. Liveness is probed with a
//! connect: a live server accepts it (and sees a client that leaves without
//! a word), a stale file refuses it.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why a socket path could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{} is served by a live process; stop it or use another runtime_dir", path.display())]
    Live { path: PathBuf },
    #[error("{} exists and is not a socket; remove it or use another runtime_dir", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot bind {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds a listening socket at `path` with file mode `mode`, replacing a
/// stale socket file.
pub fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
            if !meta.file_type().is_socket() {
                return Err(BindError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(BindError::Live {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing stale socket");
                    std::fs::remove_file(path).map_err(io_err)?;
                    UnixListener::bind(path).map_err(io_err)?
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        Err(e) => return Err(io_err(e)),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
    Ok(listener)
}

/// Accepts connections on `listener` and hands each to `on_accept` until
/// `shutdown` is cancelled. `name` says which socket in log lines.
pub async fn accept_until(
    listener: UnixListener,
    shutdown: tokio_util::sync::CancellationToken,
    name: &str,
    mut on_accept: impl FnMut(tokio::net::UnixStream),
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(socket = name, error = %e, "cannot listen");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => on_accept(stream),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(socket = name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Removes a socket file this daemon bound; a missing file is fine.
pub fn remove_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove socket"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = bind_unix(&path, 0o600).unwrap();
        UnixStream::connect(&path).unwrap();
        drop(listener);
    }

    #[test]
    fn live_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _live = UnixListener::bind(&path).unwrap();
        assert!(matches!(
            bind_unix(&path, 0o600),
            Err(BindError::Live { .. })
        ));
    }

    #[test]
    fn regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        std::fs::write(&path, b"keep me").unwrap();
        assert!(matches!(
            bind_unix(&path, 0o600),
            Err(BindError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }

    #[test]
    fn socket_gets_the_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = bind_unix(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
