//! Running a client that has no timeouts of its own (the rust-vmm
//! `vfio_user::Client` blocks forever on some error replies) under a
//! deadline, without leaking its connection when the deadline passes.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// The closure did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}: the client blocked")]
pub struct TimedOut(pub Duration);

/// Runs `work` on a helper thread and waits up to `timeout` for its result.
///
/// On timeout, every socket of this process connected to `socket_path` is
/// shut down, which makes the blocked client's read fail so that the helper
/// thread ends instead of leaking with an open connection. Paths are unique
/// per test (temporary directories), so no other test's socket is touched.
pub fn run_with_timeout<T, F>(socket_path: &Path, timeout: Duration, work: F) -> Result<T, TimedOut>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = mpsc::channel();
    let helper = std::thread::spawn(move || {
        // The receiver is gone only if we already timed out.
        let _ = sender.send(work());
    });
    match receiver.recv_timeout(timeout) {
        Ok(value) => {
            // The thread has sent its value and is about to return.
            let _ = helper.join();
            Ok(value)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked before sending: re-raise its panic here.
            match helper.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the helper sends before it returns"),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            shutdown_sockets_connected_to(socket_path);
            Err(TimedOut(timeout))
        }
    }
}

/// Shuts down (both directions) each socket of this process whose peer
/// address is `path`.
pub fn shutdown_sockets_connected_to(path: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let wanted = path.as_os_str().as_bytes();
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        if peer_path(fd).as_deref() == Some(wanted) {
            // SAFETY: shutdown() on a descriptor number only changes the
            // state of the socket it names; it neither closes nor frees it.
            // The number was just identified as a socket connected to
            // `path`, which only the blocked client holds.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}

/// The peer's path of a connected Unix socket, if `fd` is one.
fn peer_path(fd: i32) -> Option<Vec<u8>> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut length = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: getpeername writes at most `length` bytes into `address`, which
    // is that large; a descriptor that is not a socket just fails.
    let result = unsafe {
        libc::getpeername(
            fd,
            (&raw mut address).cast::<libc::sockaddr>(),
            &raw mut length,
        )
    };
    if result != 0 || i32::from(address.sun_family) != libc::AF_UNIX {
        return None;
    }
    let path_len = (length as usize).checked_sub(size_of::<libc::sa_family_t>())?;
    let bytes: Vec<u8> = address.sun_path[..path_len.min(address.sun_path.len())]
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn blocked_client_times_out_and_its_connection_is_shut_down() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        // Accepts (through the backlog) and never answers.
        let _listener = UnixListener::bind(&path).unwrap();
        let (ended, helper_ended) = mpsc::channel();
        let client_path = path.clone();
        let result = run_with_timeout(&path, Duration::from_millis(200), move || {
            let outcome = vfio_user::Client::new(&client_path).is_ok();
            let _ = ended.send(());
            outcome
        });
        assert!(result.is_err(), "the silent server answered");
        helper_ended
            .recv_timeout(Duration::from_secs(5))
            .expect("the helper thread is still blocked on its socket");
    }

    #[test]
    fn result_within_the_deadline_is_returned() {
        let path = Path::new("/nonexistent/never-connected.sock");
        let value = run_with_timeout(path, Duration::from_secs(5), || 42);
        assert_eq!(value.ok(), Some(42));
    }
}
