//! The interrupt triggers a VMM hands over with `SET_IRQS`: eventfds that
//! the daemon signals and the VMM (or KVM, through an irqfd) waits on.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// An eventfd received from the client.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new(fd: OwnedFd) -> Self {
        Self(fd)
    }

    /// Adds one to the counter. A failure means the client handed us
    /// something that is not an eventfd (or closed the other end of a pipe);
    /// that is the client's problem, logged and otherwise ignored.
    pub fn signal(&self) {
        if let Err(e) = rustix::io::write(&self.0, &1u64.to_ne_bytes()) {
            tracing::debug!(error = %e, "cannot signal an interrupt trigger");
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_increments_the_counter() {
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let dup = fd.try_clone().unwrap();
        let event = EventFd::new(fd);
        event.signal();
        event.signal();
        let mut buf = [0u8; 8];
        rustix::io::read(&dup, &mut buf).unwrap();
        assert_eq!(u64::from_ne_bytes(buf), 2);
    }
}
