//! Windows the daemon maps itself, and copies through them.

use std::io;
use std::os::fd::OwnedFd;
use std::ptr;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::FileType;

use super::DmaError;

/// Maps `size` bytes of `fd` from `offset`, shared, writable only if
/// `writable`.
pub(super) fn map_window(
    iova: u64,
    size: u64,
    writable: bool,
    fd: &OwnedFd,
    offset: u64,
) -> Result<MmapRaw, DmaError> {
    let map_failed = |source| DmaError::Map { iova, size, source };
    let stat = rustix::fs::fstat(fd).map_err(|errno| map_failed(errno.into()))?;
    // Pages past the end of a file exist in the mapping but fault when
    // touched; refuse them now rather than die of SIGBUS on a guest's DMA.
    // (Other file types have no meaningful size to check.)
    if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile {
        let file_size = u64::try_from(stat.st_size).unwrap_or(0);
        if offset.checked_add(size).is_none_or(|end| end > file_size) {
            return Err(DmaError::BeyondEndOfFile {
                iova,
                offset,
                size,
                file_size,
            });
        }
    }
    let len = usize::try_from(size).map_err(|_| map_failed(io::ErrorKind::InvalidInput.into()))?;
    let mut options = MmapOptions::new();
    options.offset(offset).len(len);
    let map = if writable {
        options.map_raw(fd)
    } else {
        options.map_raw_read_only(fd)
    };
    map.map_err(map_failed)
}

/// A resolved range of a window the daemon has mapped: `len` bytes at
/// `start` in the window's mapping, borrowed from the windows so that the
/// range cannot be unmapped while it is in use.
#[derive(Debug)]
pub struct LocalDma<'a> {
    map: &'a MmapRaw,
    start: usize,
    len: usize,
    iova: u64,
    writable: bool,
}

impl<'a> LocalDma<'a> {
    /// A range the caller has checked: `start + len <= map.len()`, and
    /// `writable` only if the mapping is writable.
    pub(super) fn new(
        map: &'a MmapRaw,
        start: usize,
        len: usize,
        iova: u64,
        writable: bool,
    ) -> Self {
        // Host-side invariant established by `DmaWindows::resolve`; a
        // violation would make the copies below unsound, so stop here.
        assert!(start.checked_add(len).is_some_and(|end| end <= map.len()));
        Self {
            map,
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
        let src = unsafe { self.map.as_ptr().add(self.start) };
        // No reference into guest memory is created, so the guest writing
        // concurrently can only make the bytes stale.
        // SAFETY: `src..src + len` is inside the mapping, which outlives
        // `self`; `buf` (len bytes, checked above) is a distinct allocation.
        unsafe { ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), self.len) };
        Ok(())
    }

    /// Copies `data`, which must be exactly as long as the range, into it.
    /// The range must have been resolved for writing.
    pub fn write(&self, data: &[u8]) -> Result<(), DmaError> {
        if !self.writable {
            return Err(DmaError::ResolvedForRead { iova: self.iova });
        }
        self.check_length(data.len())?;
        // SAFETY: `new` checked start + len <= the mapping's length.
        let dst = unsafe { self.map.as_mut_ptr().add(self.start) };
        // The mapping is PROT_WRITE: `writable` is only set for writable
        // windows. No reference into the mapping exists.
        // SAFETY: `dst..dst + len` is inside the mapping, which outlives
        // `self`; `data` (len bytes, checked above) is a distinct allocation.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), dst, self.len) };
        Ok(())
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
