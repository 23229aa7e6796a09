//! Host objects a VMM hands to the device: eventfds for interrupts and
//! memfd-backed guest memory for DMA maps.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use memmap2::MmapMut;
use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::fs::{MemfdFlags, memfd_create};

/// A non-blocking eventfd standing for one interrupt vector.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// Creates an eventfd with count 0.
    pub fn new() -> io::Result<Self> {
        Ok(EventFd(eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?))
    }

    /// Waits up to `timeout` for a signal; consumes and returns the count,
    /// or 0 if nothing came.
    pub fn wait(&self, timeout: Duration) -> io::Result<u64> {
        let timeout = Timespec::try_from(timeout).map_err(io::Error::other)?;
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let ready = poll(&mut fds, Some(&timeout))?;
        if ready == 0 {
            return Ok(0);
        }
        self.take()
    }

    /// Consumes and returns the count without waiting (0 if unsignalled).
    pub fn take(&self) -> io::Result<u64> {
        let mut bytes = [0u8; 8];
        match rustix::io::read(&self.0, &mut bytes) {
            Ok(_) => Ok(u64::from_ne_bytes(bytes)),
            Err(rustix::io::Errno::AGAIN) => Ok(0),
            Err(errno) => Err(errno.into()),
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Creates `count` eventfds.
pub fn eventfds(count: usize) -> io::Result<Vec<EventFd>> {
    (0..count).map(|_| EventFd::new()).collect()
}

/// Guest memory as QEMU shares it with `share=on`: a memfd, mapped here too.
#[derive(Debug)]
pub struct GuestMemory {
    file: File,
    map: MmapMut,
}

impl GuestMemory {
    /// A zero-filled memfd of `size` bytes, mapped read-write.
    pub fn new(size: usize) -> io::Result<Self> {
        let fd = memfd_create("vgpud-test-guest", MemfdFlags::CLOEXEC)?;
        let file = File::from(fd);
        file.set_len(size as u64)?;
        // SAFETY: the memfd is private to this process (and to the daemon it
        // is handed to, which is what the tests observe); nothing truncates it
        // while the mapping lives, because `GuestMemory` owns both.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(GuestMemory { file, map })
    }

    /// The memory as seen by the guest.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Mutable view of the memory.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the memory is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl AsFd for GuestMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// A deterministic, position-dependent byte pattern (never all one value),
/// so that a copy to the wrong offset shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(u32::from(seed))
                .to_le_bytes()[0]
                ^ (i >> 8) as u8
        })
        .collect()
}
