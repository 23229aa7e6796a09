//! Binding the daemon's Unix sockets without trampling a live daemon.
//!
//! A socket file left behind by a daemon that died is replaced; one that a
//! live process still accepts on is refused, so that two daemons never
//! serve (or silently steal) the same vGPU path. Liveness is probed with a
//! connect: a live server accepts it (and sees a client that leaves without
//! a word), a stale file refuses it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{CWD, RenameFlags};

use crate::log_limit::LogLimit;

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
///
/// The socket never exists at `path` with any other mode: it is bound in a
/// new private directory (mode 0700, so that nobody else can connect while
/// it is set up), given its mode there, and renamed into place. Binding
/// at `path` and changing the mode afterwards would leave a moment in which
/// the process umask decides who may connect.
pub fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    let stale = match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(BindError::Live {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => true,
            Err(e) => return Err(io_err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(e)),
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let private = PrivateDir::create(parent).map_err(io_err)?;
    let staged = private.path.join("socket");
    let listener = UnixListener::bind(&staged).map_err(io_err)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
    // Over a stale file the rename replaces it in one step; otherwise it
    // must not replace a socket another process bound meanwhile.
    let flags = if stale {
        RenameFlags::empty()
    } else {
        RenameFlags::NOREPLACE
    };
    match rustix::fs::renameat_with(CWD, &staged, CWD, path, flags) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {
            return Err(BindError::Live {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err(e.into())),
    }
    if stale {
        tracing::info!(path = %path.display(), "replaced a stale socket");
    }
    Ok(listener)
}

/// A directory only this process can enter, removed (with whatever is
/// left in it) when dropped.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create(parent: &Path) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = parent.join(format!(
            ".vgpud-bind-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self { path })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Accepts connections on `listener` and hands each to `on_accept` until
/// `shutdown` is cancelled. `name` says which socket in log lines, which go
/// through `log`.
pub async fn accept_until(
    listener: UnixListener,
    shutdown: tokio_util::sync::CancellationToken,
    name: &str,
    log: &LogLimit,
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
                log.log(|| tracing::warn!(socket = name, error = %e, "accept failed"));
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
    fn nothing_is_left_beside_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = bind_unix(&path, 0o600).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s.sock"]);
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
