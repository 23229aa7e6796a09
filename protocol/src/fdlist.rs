//! [`FdList`]: the file descriptors that came with one message, held inline
//! (no allocation) up to the protocol's per-message limit.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Most file descriptors vgpud accepts with one message (the `max_msg_fds`
/// it advertises; QEMU's client refuses to be offered more).
pub const MAX_MSG_FDS: usize = 16;

/// Up to [`MAX_MSG_FDS`] owned file descriptors, in arrival order. Dropping
/// the list closes the ones not taken.
#[derive(Debug, Default)]
pub struct FdList {
    fds: [Option<OwnedFd>; MAX_MSG_FDS],
    len: usize,
}

impl FdList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of descriptors received (taken ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no descriptor was received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `fd`, or hands it back if the list is full.
    pub fn push(&mut self, fd: OwnedFd) -> Result<(), OwnedFd> {
        match self.fds.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(fd);
                self.len += 1;
                Ok(())
            }
            None => Err(fd),
        }
    }

    /// The descriptor at `index`, unless out of range or taken.
    pub fn get(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.fds.get(index)?.as_ref().map(AsFd::as_fd)
    }

    /// Takes ownership of the descriptor at `index`, leaving a hole.
    pub fn take(&mut self, index: usize) -> Option<OwnedFd> {
        self.fds.get_mut(index)?.take()
    }

    /// The descriptors not yet taken, in order.
    pub fn iter(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.fds.iter().flatten().map(AsFd::as_fd)
    }

    /// Closes every descriptor.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

impl IntoIterator for FdList {
    type Item = OwnedFd;
    type IntoIter = core::iter::Flatten<core::array::IntoIter<Option<OwnedFd>, MAX_MSG_FDS>>;

    /// The descriptors not yet taken, in order.
    fn into_iter(self) -> Self::IntoIter {
        self.fds.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn fd() -> OwnedFd {
        UnixStream::pair().unwrap().0.into()
    }

    #[test]
    fn push_stops_at_the_limit() {
        let mut list = FdList::new();
        for _ in 0..MAX_MSG_FDS {
            list.push(fd()).unwrap();
        }
        assert_eq!(list.len(), MAX_MSG_FDS);
        assert!(list.push(fd()).is_err());
    }

    #[test]
    fn take_leaves_a_hole_and_keeps_order() {
        let mut list = FdList::new();
        let raws: Vec<i32> = (0..3)
            .map(|_| {
                let f = fd();
                let raw = f.as_raw_fd();
                list.push(f).unwrap();
                raw
            })
            .collect();
        assert_eq!(list.take(1).unwrap().as_raw_fd(), raws[1]);
        assert!(list.take(1).is_none());
        assert_eq!(list.len(), 3);
        let left: Vec<i32> = list.iter().map(|f| f.as_raw_fd()).collect();
        assert_eq!(left, [raws[0], raws[2]]);
        let owned: Vec<i32> = list.into_iter().map(|f| f.as_raw_fd()).collect();
        assert_eq!(owned, [raws[0], raws[2]]);
    }
}
