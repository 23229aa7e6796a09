//! systemd service notifications (`Type=notify`, sd_notify(3)). Without
//! `NOTIFY_SOCKET` these do nothing, so the daemon runs the same by hand
//! and under systemd; test harnesses use the same variable to learn when
//! the sockets listen, reload and stop.
//!
//! The sequence a service manager sees (docs/operations.md, "The systemd
//! unit"):
//!
//! ```text
//! READY=1 + STATUS=<status_line>           every socket listens
//! RELOADING=1 + MONOTONIC_USEC=<µs>        SIGHUP received
//! READY=1 + STATUS=<status_line>           the reload finished
//! STOPPING=1 + STATUS=stopping             SIGTERM/SIGINT received
//! ```

/// Tells the service manager every socket listens (`READY=1`), with the
/// [`status_line`] as `STATUS=`. Also ends a reload begun by
/// [`reloading`].
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Replaces the status line `systemctl status` shows (`STATUS=`), e.g.
/// when a client attaches or detaches.
pub fn status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

/// Tells the service manager a reload (SIGHUP) began: `RELOADING=1` and
/// `MONOTONIC_USEC=` the CLOCK_MONOTONIC time in microseconds, which
/// systemd 253 and later require with `RELOADING=1` (`Type=notify-reload`)
/// and older versions ignore. [`ready`] ends the reload.
pub fn reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        // Without the timestamp systemd ≥ 253 rejects the reload under
        // Type=notify-reload, which is still better than not announcing it.
        Err(e) => tracing::warn!(error = %e, "cannot read CLOCK_MONOTONIC"),
    }
    notify(&states);
}

/// Tells the service manager the daemon is stopping (`STOPPING=1`,
/// `STATUS=stopping`).
pub fn stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
}

/// The `STATUS=` text: `"<N> vGPUs: <L> listening, <A> attached"`, where
/// `N = L + A`, a vGPU is "attached" while a VMM is connected to its
/// socket and "listening" otherwise. `N` is spelled `vGPU` when it is 1:
/// `"1 vGPU: 1 listening, 0 attached"`.
pub fn status_line(listening: usize, attached: usize) -> String {
    let total = listening.saturating_add(attached);
    let noun = if total == 1 { "vGPU" } else { "vGPUs" };
    format!("{total} {noun}: {listening} listening, {attached} attached")
}

/// Sends `states` as one datagram to `$NOTIFY_SOCKET`, never blocking:
/// a service manager that does not read its socket (a full queue) loses
/// the message, with a warning, rather than stalling the thread that
/// called, which may be one the control API is served on.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut message = String::new();
    for state in states {
        message.push_str(&state.to_string());
        message.push('\n');
    }
    if let Err(e) = send(&path, message.as_bytes()) {
        static LOG: std::sync::OnceLock<crate::log_limit::LogLimit> = std::sync::OnceLock::new();
        LOG.get_or_init(|| crate::log_limit::LogLimit::new("service manager notifications"))
            .log(
                || tracing::warn!(error = %e, "cannot notify the service manager; message dropped"),
            );
    }
}

fn send(path: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;

    use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

    let bytes = path.as_bytes();
    // "@name" is a socket in the abstract namespace (sd_notify(3)).
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddrUnix::new_abstract_name(name)?,
        None => SocketAddrUnix::new(path)?,
    };
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::sendto(
        &socket,
        message,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        &addr,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::status_line;

    #[test]
    fn a_full_notify_socket_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let _unread = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // Far past any datagram queue (net.unix.max_dgram_qlen): each
        // send returns at once, delivered or refused.
        for _ in 0..1000 {
            let _ = super::send(path.as_os_str(), b"STATUS=x\n");
        }
        assert!(super::send(path.as_os_str(), b"STATUS=x\n").is_err());
    }

    #[test]
    fn abstract_socket_names_are_reached() {
        let name = format!("vgpud-notify-test-{}", std::process::id());
        let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes()).unwrap();
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        super::send(std::ffi::OsStr::new(&format!("@{name}")), b"READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn status_line_counts_listening_and_attached() {
        assert_eq!(status_line(2, 1), "3 vGPUs: 2 listening, 1 attached");
    }

    #[test]
    fn status_line_of_one_vgpu_is_singular() {
        assert_eq!(status_line(0, 1), "1 vGPU: 0 listening, 1 attached");
    }

    #[test]
    fn status_line_of_no_vgpus() {
        assert_eq!(status_line(0, 0), "0 vGPUs: 0 listening, 0 attached");
    }
}
