//! Windows the daemon reaches itself, and copies through them.
//!
//! A window is mapped into the daemon when its file cannot shrink under
//! the mapping: a memfd sealed with `F_SEAL_SHRINK` (QEMU seals its
//! `memory-backend-memfd` so by default, with or without `hugetlb=on`), or
//! something that is not a regular file. Any other regular file (a
//! `memory-backend-file` on tmpfs, an unsealed memfd) is read and written
//! with `pread` and `pwrite`: its VMM could truncate it at any moment, and
//! touching a mapped page past the new end raises SIGBUS, which would take
//! the daemon and every vGPU it serves down with it. Through the file, a
//! truncated window only makes the copy fail.
//!
//! The exception is a file on hugetlbfs, which has no `write(2)` to copy
//! into: it is mapped, and a VMM that truncates one behind a window can
//! still kill the daemon. `memory-backend-memfd,hugetlb=on` gives the same
//! huge pages sealed.

use std::io;
use std::os::fd::OwnedFd;
use std::ptr;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FileType, OFlags, SealFlags};

use super::DmaError;

/// How the daemon reaches one window's memory.
#[derive(Debug)]
pub(super) enum WindowMemory {
    /// Mapped into the daemon (read-only for a read-only window).
    Mapped(MmapRaw),
    /// Copied with `pread`/`pwrite` at `offset` in the file.
    File {
        /// The window's file.
        fd: OwnedFd,
        /// Where the window starts in the file.
        offset: u64,
    },
}

/// `statfs` type of hugetlbfs (`linux/magic.h`).
const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;

/// How the daemon reaches a regular file's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Mapped into the daemon.
    Map,
    /// Copied through with `pread`/`pwrite`.
    Copy,
}

/// How to reach a regular file that is `shrink_sealed` or not, on
/// hugetlbfs or not (see the module's comment).
fn reach(shrink_sealed: bool, hugetlbfs: bool) -> Reach {
    if shrink_sealed || hugetlbfs {
        Reach::Map
    } else {
        Reach::Copy
    }
}

/// Opens the window of `size` bytes of `fd` from `offset`: mapped shared
/// if the file cannot shrink, else kept to copy through.
pub(super) fn open_window(
    iova: u64,
    size: u64,
    writable: bool,
    fd: OwnedFd,
    offset: u64,
) -> Result<WindowMemory, DmaError> {
    let map_failed = |source| DmaError::Map { iova, size, source };
    let stat = rustix::fs::fstat(&fd).map_err(|errno| map_failed(errno.into()))?;
    // Other file types have no meaningful size to check or to shrink.
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return map_window(size, writable, &fd, offset).map_err(map_failed);
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
    // Seals are never removed, so a SHRINK seal seen now holds for the
    // mapping's life. Files that do not support seals answer EINVAL.
    let sealed =
        rustix::fs::fcntl_get_seals(&fd).is_ok_and(|seals| seals.contains(SealFlags::SHRINK));
    // The statfs type is a signed word; the magic fits in 32 bits.
    let hugetlbfs = rustix::fs::fstatfs(&fd).is_ok_and(|fs| fs.f_type as u64 == HUGETLBFS_MAGIC);
    if reach(sealed, hugetlbfs) == Reach::Map {
        return map_window(size, writable, &fd, offset).map_err(map_failed);
    }
    // A writable window needs a writable file, as a mapping would.
    let mode = rustix::fs::fcntl_getfl(&fd).map_err(|errno| map_failed(errno.into()))?;
    if writable && mode & OFlags::RWMODE == OFlags::RDONLY {
        return Err(map_failed(io::Error::from_raw_os_error(
            rustix::io::Errno::ACCESS.raw_os_error(),
        )));
    }
    Ok(WindowMemory::File { fd, offset })
}

/// Maps `size` bytes of `fd` from `offset`, shared, writable only if
/// `writable`.
fn map_window(size: u64, writable: bool, fd: &OwnedFd, offset: u64) -> io::Result<WindowMemory> {
    let len = usize::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut options = MmapOptions::new();
    options.offset(offset).len(len);
    let map = if writable {
        options.map_raw(fd)
    } else {
        options.map_raw_read_only(fd)
    };
    map.map(WindowMemory::Mapped)
}

/// A resolved range of a window the daemon reaches itself: `len` bytes at
/// `start` in the window, borrowed from the windows so that the range
/// cannot be unmapped while it is in use.
#[derive(Debug)]
pub struct LocalDma<'a> {
    memory: &'a WindowMemory,
    start: usize,
    len: usize,
    iova: u64,
    writable: bool,
}

impl<'a> LocalDma<'a> {
    /// A range the caller has checked: inside the window, and `writable`
    /// only if the window is.
    pub(super) fn new(
        memory: &'a WindowMemory,
        start: usize,
        len: usize,
        iova: u64,
        writable: bool,
    ) -> Self {
        if let WindowMemory::Mapped(map) = memory {
            // Host-side invariant established by `DmaWindows::resolve`; a
            // violation would make the copies below unsound, so stop here.
            assert!(start.checked_add(len).is_some_and(|end| end <= map.len()));
        }
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
        let (fd, offset) = match self.memory {
            WindowMemory::Mapped(map) => {
                // SAFETY: `new` checked start + len <= the mapping's length.
                let src = unsafe { map.as_ptr().add(self.start) };
                // No reference into guest memory is created, so the guest
                // writing concurrently can only make the bytes stale.
                // SAFETY: `src..src + len` is inside the mapping, which
                // outlives `self`; `buf` (len bytes, checked above) is a
                // distinct allocation.
                unsafe { ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), self.len) };
                return Ok(());
            }
            WindowMemory::File { fd, offset } => (fd, offset + self.start as u64),
        };
        let mut done = 0;
        while done < buf.len() {
            match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(self.file_error(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(self.file_error(errno.into())),
            }
        }
        Ok(())
    }

    /// Copies `data`, which must be exactly as long as the range, into it.
    /// The range must have been resolved for writing.
    pub fn write(&self, data: &[u8]) -> Result<(), DmaError> {
        if !self.writable {
            return Err(DmaError::ResolvedForRead { iova: self.iova });
        }
        self.check_length(data.len())?;
        let (fd, offset) = match self.memory {
            WindowMemory::Mapped(map) => {
                // SAFETY: `new` checked start + len <= the mapping's length.
                let dst = unsafe { map.as_mut_ptr().add(self.start) };
                // The mapping is PROT_WRITE: `writable` is only set for
                // writable windows. No reference into the mapping exists.
                // SAFETY: `dst..dst + len` is inside the mapping, which
                // outlives `self`; `data` (len bytes, checked above) is a
                // distinct allocation.
                unsafe { ptr::copy_nonoverlapping(data.as_ptr(), dst, self.len) };
                return Ok(());
            }
            WindowMemory::File { fd, offset } => (fd, offset + self.start as u64),
        };
        // A write past a truncated end grows the VMM's own file back; it
        // lands nowhere else.
        let mut done = 0;
        while done < data.len() {
            match rustix::io::pwrite(fd, &data[done..], offset + done as u64) {
                Ok(0) => return Err(self.file_error(io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(self.file_error(errno.into())),
            }
        }
        Ok(())
    }

    fn file_error(&self, source: io::Error) -> DmaError {
        DmaError::File {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_that_cannot_shrink_or_cannot_be_written_are_mapped() {
        assert_eq!(reach(true, false), Reach::Map);
        assert_eq!(reach(false, false), Reach::Copy);
        assert_eq!(reach(false, true), Reach::Map, "hugetlbfs has no write(2)");
        assert_eq!(reach(true, true), Reach::Map);
    }
}
