//! systemd readiness (`Type=notify`). Without `NOTIFY_SOCKET` these do
//! nothing, so the daemon runs the same by hand and under systemd; test
//! harnesses use the same variable to learn when the sockets listen.

/// Tells the service manager every socket listens.
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells the service manager the daemon is stopping.
pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// TEMPORARY (the systemd branch brings the real ones).
pub fn status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

/// TEMPORARY.
pub fn reloading() {
    notify(&[sd_notify::NotifyState::Reloading]);
}

/// TEMPORARY.
pub fn status_line(listening: usize, attached: usize) -> String {
    format!(
        "{} vGPUs: {listening} listening, {attached} attached",
        listening + attached
    )
}
