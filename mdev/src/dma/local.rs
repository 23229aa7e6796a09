//! Windows the daemon reaches itself, and copies through them.
//!
//! Every fd-backed window is mapped into the daemon (read-only when the VMM
//! mapped it read-only). How a copy touches the mapping depends on whether
//! the pages under it can go away:
//!
//! - A memfd sealed with `F_SEAL_SHRINK` that is not hugetlb (QEMU's
//!   default `memory-backend-memfd`): its pages stay. A hole the VMM punches
//!   reads as zeros and is refilled on the next write. Copies are plain
//!   memory copies.
//! - Any other file: one the VMM can truncate (a `memory-backend-file`,
//!   an unsealed memfd), hugetlb memory (a punched huge page may find no
//!   free huge page to come back as). Touching a page that went away
//!   raises SIGBUS, which would take the daemon and every vGPU it serves
//!   down with it. So copies go through `process_vm_readv` and
//!   `process_vm_writev` on the daemon's own memory: the kernel walks the
//!   same mapping and answers EFAULT where a plain copy would fault, and
//!   the copy fails instead.
//!
//! Only regular files back windows. Anything else is refused: a device
//! such as `/dev/zero` would give the daemon memory of its own rather than
//! the VM's (and a shared mapping of it costs the daemon what the guest
//! writes), and sockets, pipes and eventfds are not memory. So are files on
//! FUSE, whose page faults wait on a user-space server that may be the VMM
//! itself, uninterruptibly, and a writable map of a file opened read-only.
//!
//! A copy through the mapping also follows the window, not the fd: the
//! VMM's `O_APPEND` or file position on the shared open file cannot
//! redirect it.

use std::io;
use std::os::fd::OwnedFd;
use std::ptr;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FileType, OFlags, SealFlags};

use super::DmaError;

/// How copies through one window's mapping touch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyKind {
    /// Plain memory copies: the pages cannot go away.
    Plain,
    /// Through `process_vm_readv`/`process_vm_writev`, which fail with
    /// EFAULT on a page that went away.
    Checked,
}

/// One window's memory, mapped into the daemon.
#[derive(Debug)]
pub(super) struct WindowMemory {
    map: MmapRaw,
    copies: CopyKind,
}

/// `statfs` type of hugetlbfs (`linux/magic.h`).
const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;
/// `statfs` type of FUSE (`linux/magic.h`).
const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;

/// How to copy through a mapping of a regular file that is
/// `shrink_sealed` or not, on hugetlbfs or not (see the module's comment).
fn copy_kind(shrink_sealed: bool, hugetlbfs: bool) -> CopyKind {
    if shrink_sealed && !hugetlbfs {
        CopyKind::Plain
    } else {
        CopyKind::Checked
    }
}

/// Maps the window of `size` bytes of `fd` from `offset`, shared, writable
/// only if `writable`, and decides how copies touch it.
pub(super) fn open_window(
    iova: u64,
    size: u64,
    writable: bool,
    fd: OwnedFd,
    offset: u64,
) -> Result<WindowMemory, DmaError> {
    let map_failed = |source| DmaError::Map { iova, size, source };
    let stat = rustix::fs::fstat(&fd).map_err(|errno| map_failed(errno.into()))?;
    let file_type = FileType::from_raw_mode(stat.st_mode);
    if file_type != FileType::RegularFile {
        return Err(DmaError::NotAFile {
            iova,
            kind: format!("{file_type:?}"),
        });
    }
    // Pages past the end of the file cannot be reached either way; refuse
    // them now rather than fail every access.
    let file_size = u64::try_from(stat.st_size).unwrap_or(0);
    if offset.checked_add(size).is_none_or(|end| end > file_size) {
        return Err(DmaError::BeyondEndOfFile {
            iova,
            offset,
            size,
            file_size,
        });
    }
    if writable {
        let mode = rustix::fs::fcntl_getfl(&fd).map_err(|errno| map_failed(errno.into()))?;
        if mode & OFlags::RWMODE == OFlags::RDONLY {
            return Err(DmaError::ReadOnlyFile { iova });
        }
    }
    // Seals are never removed, so a SHRINK seal seen now holds for the
    // mapping's life. Files that do not support seals answer EINVAL.
    let sealed =
        rustix::fs::fcntl_get_seals(&fd).is_ok_and(|seals| seals.contains(SealFlags::SHRINK));
    // The statfs type is a signed word; the magics fit in 32 bits.
    let fs_type = rustix::fs::fstatfs(&fd).map_or(0, |fs| fs.f_type as u64);
    if fs_type == FUSE_SUPER_MAGIC {
        // A page fault there waits on the FUSE server, which may be the
        // VMM itself, and cannot be interrupted: the session would hang.
        return Err(DmaError::UntrustedFilesystem { iova });
    }
    let hugetlbfs = fs_type == HUGETLBFS_MAGIC;
    let len = usize::try_from(size).map_err(|_| map_failed(io::ErrorKind::InvalidInput.into()))?;
    let mut options = MmapOptions::new();
    options.offset(offset).len(len);
    let map = if writable {
        options.map_raw(&fd)
    } else {
        options.map_raw_read_only(&fd)
    };
    Ok(WindowMemory {
        map: map.map_err(map_failed)?,
        copies: copy_kind(sealed, hugetlbfs),
    })
}

/// A resolved range of a window the daemon has mapped: `len` bytes at
/// `start` in the window's mapping, borrowed from the windows so that the
/// range cannot be unmapped while it is in use.
#[derive(Debug)]
pub struct LocalDma<'a> {
    memory: &'a WindowMemory,
    start: usize,
    len: usize,
    iova: u64,
    writable: bool,
}

impl<'a> LocalDma<'a> {
    /// A range the caller has checked: `start + len <= map.len()`, and
    /// `writable` only if the mapping is writable.
    pub(super) fn new(
        memory: &'a WindowMemory,
        start: usize,
        len: usize,
        iova: u64,
        writable: bool,
    ) -> Self {
        // Host-side invariant established by `DmaWindows::resolve`; a
        // violation would make the copies below unsound, so stop here.
        assert!(
            start
                .checked_add(len)
                .is_some_and(|end| end <= memory.map.len())
        );
        Self {
            memory,
            start,
            len,
            iova,
            writable,
        }
    }

    /// First IOVA of the range.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length of the range in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the range is empty (resolved ranges never are).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the whole range into `buf`, which must be exactly as long.
    pub fn read(&self, buf: &mut [u8]) -> Result<(), DmaError> {
        self.check_length(buf.len())?;
        // SAFETY: `new` checked start + len <= the mapping's length.
        let src = unsafe { self.memory.map.as_ptr().add(self.start) };
        match self.memory.copies {
            CopyKind::Plain => {
                // SAFETY: `src..src + len` is inside the mapping, which
                // outlives `self`, and its pages cannot go away (a sealed
                // memfd); `buf` (len bytes, checked above) is a distinct
                // allocation. No reference into guest memory is created, so
                // the guest writing concurrently can only make the bytes
                // stale.
                unsafe { ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), self.len) };
                Ok(())
            }
            CopyKind::Checked => {
                checked_copy(Direction::Read, buf.as_mut_ptr(), src.cast_mut(), self.len)
                    .map_err(|source| self.unreachable(source))
            }
        }
    }

    /// Copies `data`, which must be exactly as long as the range, into it.
    /// The range must have been resolved for writing.
    pub fn write(&self, data: &[u8]) -> Result<(), DmaError> {
        if !self.writable {
            return Err(DmaError::ResolvedForRead { iova: self.iova });
        }
        self.check_length(data.len())?;
        // SAFETY: `new` checked start + len <= the mapping's length.
        let dst = unsafe { self.memory.map.as_mut_ptr().add(self.start) };
        match self.memory.copies {
            CopyKind::Plain => {
                // SAFETY: `dst..dst + len` is inside the mapping, which
                // outlives `self`, and its pages cannot go away; `data`
                // (len bytes, checked above) is a distinct allocation. The
                // mapping is PROT_WRITE (`writable` is only set for
                // writable windows), and no reference into it exists.
                unsafe { ptr::copy_nonoverlapping(data.as_ptr(), dst, self.len) };
                Ok(())
            }
            CopyKind::Checked => {
                checked_copy(Direction::Write, data.as_ptr().cast_mut(), dst, self.len)
                    .map_err(|source| self.unreachable(source))
            }
        }
    }

    fn unreachable(&self, source: io::Error) -> DmaError {
        DmaError::Unreachable {
            iova: self.iova,
            len: self.len as u64,
            source,
        }
    }
    fn check_length(&self, buffer: usize) -> Result<(), DmaError> {
        if buffer != self.len {
            return Err(DmaError::LengthMismatch {
                iova: self.iova,
                resolved: self.len as u64,
                buffer: buffer as u64,
            });
        }
        Ok(())
    }
}

/// Which way a checked copy goes.
#[derive(Clone, Copy, Debug)]
enum Direction {
    /// From the window into the daemon's buffer.
    Read,
    /// From the daemon's buffer into the window.
    Write,
}

/// Copies `len` bytes between the daemon's buffer `local` and `window` (an
/// address in a window's mapping) with `process_vm_readv`/`writev` on the
/// daemon's own process: the kernel faults the window's pages in as a
/// plain copy would, but a page that cannot come back fails the call with
/// EFAULT instead of raising SIGBUS.
fn checked_copy(
    direction: Direction,
    local: *mut u8,
    window: *mut u8,
    len: usize,
) -> io::Result<()> {
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    let mut done = 0;
    while done < len {
        let local_iov = libc::iovec {
            // SAFETY: `done < len`, so the result stays inside the buffer.
            iov_base: unsafe { local.add(done) }.cast(),
            iov_len: len - done,
        };
        let window_iov = libc::iovec {
            // SAFETY: as above, inside the window's `len` bytes.
            iov_base: unsafe { window.add(done) }.cast(),
            iov_len: len - done,
        };
        // For both calls: `local_iov` is the caller's buffer of `len` bytes
        // (written only by a read, for which the caller passes a `&mut`
        // buffer); `window_iov` is only an address in this process, which
        // the kernel reaches through the page tables, answering EFAULT
        // rather than faulting; no Rust reference to it exists. The kernel
        // keeps neither pointer after the call.
        let copied = match direction {
            // SAFETY: as above.
            Direction::Read => unsafe {
                libc::process_vm_readv(pid, &local_iov, 1, &window_iov, 1, 0)
            },
            // SAFETY: as above.
            Direction::Write => unsafe {
                libc::process_vm_writev(pid, &local_iov, 1, &window_iov, 1, 0)
            },
        };
        match copied {
            // A copy stops short at the first page that cannot be reached;
            // the next call, from there, fails with EFAULT.
            0 => return Err(io::Error::from_raw_os_error(libc::EFAULT)),
            n if n > 0 => done += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sealed_regular_files_off_hugetlbfs_get_plain_copies() {
        assert_eq!(copy_kind(true, false), CopyKind::Plain);
        assert_eq!(copy_kind(false, false), CopyKind::Checked);
        assert_eq!(copy_kind(true, true), CopyKind::Checked, "hugetlb");
        assert_eq!(copy_kind(false, true), CopyKind::Checked);
    }
}
