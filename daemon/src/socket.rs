//! Binding the daemon's Unix sockets without trampling a live daemon.
//!
//! A socket file left behind by a daemon that died is replaced; one that a
//! live process still accepts on is refused, so that two daemons never
//! serve (or silently steal) the same vGPU path. Liveness is probed with a
//! connect: a live server accepts it (and sees a client that leaves without
//! a word), a stale file refuses it.
//!
//! A socket is given its owner, group and mode before it appears at its
//! path (see [`bind_unix`]), so that no one the configuration did not name
//! can connect to it even for a moment.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, CWD, Gid, RenameFlags, Uid};

use crate::access::SocketAccess;
use crate::log_limit::LogLimit;

/// Why a socket path could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{} is served by a live process; stop it or use another runtime_dir", path.display())]
    Live { path: PathBuf },
    #[error("{} exists and is not a socket; remove it or use another runtime_dir", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot give {} {access}", path.display())]
    Access {
        path: PathBuf,
        access: SocketAccess,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds a listening socket at `path` with the owner, group and mode of
/// `access`, replacing a stale socket file.
///
/// The socket never exists at `path` with any other owner, group or mode:
/// it is bound in a new private directory (mode 0700, so that nobody else
/// can connect while it is set up), given its owner, group and mode there,
/// and renamed into place. Binding at `path` and changing them afterwards
/// would leave a moment in which the process umask, user and group decide
/// who may connect.
pub fn bind_unix(path: &Path, access: &SocketAccess) -> Result<UnixListener, BindError> {
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
    let (listener, staged) = private.stage(access).map_err(|e| match e {
        StageError::Bind(source) => io_err(source),
        StageError::Access(source) => BindError::Access {
            path: path.to_path_buf(),
            access: *access,
            source,
        },
    })?;
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

/// Which step of [`PrivateDir::stage`] failed.
#[derive(Debug)]
enum StageError {
    Bind(io::Error),
    Access(io::Error),
}

impl PrivateDir {
    /// Binds `socket` in the directory and gives it `access`: ownership
    /// first, then the mode, as chown may clear mode bits.
    fn stage(&self, access: &SocketAccess) -> Result<(UnixListener, PathBuf), StageError> {
        let staged = self.path.join("socket");
        let listener = UnixListener::bind(&staged).map_err(StageError::Bind)?;
        if access.owner.is_some() || access.group.is_some() {
            // -1 means "no change" to chown: a SocketAccess built by hand
            // (not resolved) must not silently skip its owner.
            if access.owner == Some(u32::MAX) || access.group == Some(u32::MAX) {
                return Err(StageError::Access(io::Error::from_raw_os_error(
                    libc::EINVAL,
                )));
            }
            // No symlink can be here (the directory is ours alone), but the
            // flag keeps a chown from ever following one.
            rustix::fs::chownat(
                CWD,
                &staged,
                access.owner.map(Uid::from_raw),
                access.group.map(Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| StageError::Access(e.into()))?;
        }
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(access.mode))
            .map_err(StageError::Access)?;
        Ok((listener, staged))
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
    use std::os::unix::fs::MetadataExt;

    const OWNER_ONLY: SocketAccess = SocketAccess {
        owner: None,
        group: None,
        mode: 0o600,
    };

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = bind_unix(&path, &OWNER_ONLY).unwrap();
        UnixStream::connect(&path).unwrap();
        drop(listener);
    }

    #[test]
    fn live_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _live = UnixListener::bind(&path).unwrap();
        assert!(matches!(
            bind_unix(&path, &OWNER_ONLY),
            Err(BindError::Live { .. })
        ));
    }

    #[test]
    fn regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        std::fs::write(&path, b"keep me").unwrap();
        assert!(matches!(
            bind_unix(&path, &OWNER_ONLY),
            Err(BindError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }

    #[test]
    fn nothing_is_left_beside_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = bind_unix(&path, &OWNER_ONLY).unwrap();
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
        let _l = bind_unix(&path, &OWNER_ONLY).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn socket_gets_the_requested_mode_whatever_the_umask_allows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let access = SocketAccess {
            mode: 0o666,
            ..OWNER_ONLY
        };
        let _l = bind_unix(&path, &access).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o666);
    }

    /// Owner, group and mode are already in place in the private directory,
    /// before the rename makes the socket reachable.
    #[test]
    fn staged_socket_has_owner_group_and_mode_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let private = PrivateDir::create(dir.path()).unwrap();
        // Root can give the socket away; anyone can "give" it to
        // themselves, which still goes through chown.
        let (uid, gid) = if is_root() {
            (54321, 54322)
        } else {
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )
        };
        let access = SocketAccess {
            owner: Some(uid),
            group: Some(gid),
            mode: 0o640,
        };
        let (_listener, staged) = private.stage(&access).unwrap();
        let meta = std::fs::symlink_metadata(&staged).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        assert_eq!(meta.mode() & 0o7777, 0o640);
        let private_mode = std::fs::metadata(&private.path).unwrap().mode() & 0o7777;
        assert_eq!(private_mode, 0o700);
    }

    #[test]
    fn bound_socket_has_the_owner_and_group_asked() {
        if !is_root() {
            eprintln!("skipped: giving a socket to another user needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let access = SocketAccess {
            owner: Some(54321),
            group: Some(54322),
            mode: 0o600,
        };
        let _l = bind_unix(&path, &access).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (54321, 54322, 0o600)
        );
    }

    #[test]
    fn unset_owner_and_group_keep_the_daemons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = bind_unix(&path, &OWNER_ONLY).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    }

    /// A failed chown leaves nothing at the path and nothing beside it.
    #[test]
    fn access_that_cannot_be_applied_binds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let access = SocketAccess {
            owner: Some(u32::MAX),
            ..OWNER_ONLY
        };
        assert!(matches!(
            bind_unix(&path, &access),
            Err(BindError::Access { .. })
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
