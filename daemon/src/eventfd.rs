//! The interrupt triggers a VMM hands over with `SET_IRQS`: eventfds that
//! the daemon signals and the VMM (or KVM, through an irqfd) waits on.
//!
//! A trigger is the client's file, so nothing about it can be trusted for
//! long: it is checked to be an eventfd when it arrives (anything else is
//! refused) and made non-blocking, and a signal is one `write(2)` that
//! does not wait on the client. A counter at its maximum means the client
//! has not consumed earlier interrupts: the signal is coalesced into them,
//! as a level-triggered line would be.
//!
//! `O_NONBLOCK` is a flag of the open file, which the client shares and can
//! clear again; then a write to a full counter would wait until the client
//! reads it. So every write runs [`within_deadline`](crate::deadline): the
//! watchdog interrupts it after at most 10 ms, and it counts as coalesced.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::OFlags;
use rustix::io::Errno;
use vgpu_mdev::{InterruptTrigger, Signalled};

/// Why a descriptor was refused as an interrupt trigger.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The descriptor is something else (a pipe, a regular file, a socket).
    #[error("descriptor is {kind}, not an eventfd")]
    NotAnEventfd { kind: String },
    /// Its kind could not be told, or it could not be made non-blocking.
    #[error("cannot inspect the descriptor")]
    Inspect(#[source] io::Error),
}

/// An eventfd received from the client.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// Takes `fd` as a trigger if it is an eventfd, and makes it
    /// non-blocking.
    pub fn from_client(fd: OwnedFd) -> Result<Self, TriggerError> {
        let kind = fd_kind(fd.as_fd()).map_err(TriggerError::Inspect)?;
        if kind != "anon_inode:[eventfd]" {
            return Err(TriggerError::NotAnEventfd { kind });
        }
        set_nonblocking(fd.as_fd()).map_err(TriggerError::Inspect)?;
        Ok(Self(fd))
    }
}

impl InterruptTrigger for EventFd {
    /// Adds one to the counter, waiting on the client for at most the
    /// deadline (10 ms) whatever it did to the eventfd.
    fn signal(&self) -> Signalled {
        let one = 1u64.to_ne_bytes();
        match crate::deadline::within_deadline(|| rustix::io::write(&self.0, &one)) {
            Ok(written) => outcome(written),
            Err(e) => {
                tracing::debug!(
                    error = %crate::error_chain::ErrorChain(&e),
                    "cannot signal an interrupt trigger"
                );
                Signalled::Failed
            }
        }
    }
}

/// What a write of 1 to an eventfd came to.
fn outcome(written: rustix::io::Result<usize>) -> Signalled {
    match written {
        Ok(_) => Signalled::Delivered,
        // Full (EAGAIN), or interrupted while waiting for room (EINTR):
        // either way the client has interrupts pending.
        Err(Errno::AGAIN | Errno::INTR) => Signalled::Coalesced,
        Err(e) => {
            tracing::debug!(error = %e, "cannot signal an interrupt trigger");
            Signalled::Failed
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// What the kernel calls the file behind `fd` ("anon_inode:[eventfd]",
/// "pipe:[1234]", a path).
fn fd_kind(fd: BorrowedFd<'_>) -> io::Result<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(link.to_string_lossy().into_owned())
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    if !flags.contains(OFlags::NONBLOCK) {
        rustix::fs::fcntl_setfl(fd, flags | OFlags::NONBLOCK)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rustix::event::{EventfdFlags, eventfd};

    use super::*;

    fn counter(fd: &OwnedFd) -> u64 {
        let mut buf = [0u8; 8];
        rustix::io::read(fd, &mut buf).unwrap();
        u64::from_ne_bytes(buf)
    }

    #[test]
    fn signal_increments_the_counter() {
        let fd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let dup = fd.try_clone().unwrap();
        let event = EventFd::from_client(fd).unwrap();
        assert_eq!(event.signal(), Signalled::Delivered);
        assert_eq!(event.signal(), Signalled::Delivered);
        assert_eq!(counter(&dup), 2);
    }

    #[test]
    fn a_taken_trigger_is_non_blocking_for_both_sides() {
        let fd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let dup = fd.try_clone().unwrap();
        let _event = EventFd::from_client(fd).unwrap();
        assert!(
            rustix::fs::fcntl_getfl(&dup)
                .unwrap()
                .contains(OFlags::NONBLOCK)
        );
    }

    #[test]
    fn a_full_counter_coalesces_instead_of_blocking() {
        let fd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let client = fd.try_clone().unwrap();
        let event = EventFd::from_client(fd).unwrap();
        rustix::io::write(&client, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        assert_eq!(event.signal(), Signalled::Coalesced);
        assert_eq!(counter(&client), u64::MAX - 1);
    }

    #[test]
    fn a_client_that_clears_nonblock_again_cannot_block_a_signal() {
        let fd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let client = fd.try_clone().unwrap();
        let event = EventFd::from_client(fd).unwrap();
        rustix::io::write(&client, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        // The flag lives in the open file description both sides share.
        rustix::fs::fcntl_setfl(&client, OFlags::empty()).unwrap();
        assert_eq!(event.signal(), Signalled::Coalesced);
        assert_eq!(counter(&client), u64::MAX - 1);
    }

    #[test]
    fn pipes_sockets_and_files_are_refused() {
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let memfd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        for fd in [OwnedFd::from(socket), OwnedFd::from(file), memfd] {
            assert!(matches!(
                EventFd::from_client(fd),
                Err(TriggerError::NotAnEventfd { .. })
            ));
        }
    }
}
