//! Shared memory mappings of device memory: a BAR through its sysfs
//! `resourceN` file, or a DRM dumb buffer through the card's fd.
//!
//! Accesses are bounds-checked and volatile (the memory is a device's: a
//! register read must happen, and happen once).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::ptr::NonNull;

use thiserror::Error;

/// Why a mapping could not be made.
#[derive(Debug, Error)]
pub enum MappingError {
    /// The file could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// mmap failed (for a BAR: is the kernel booted with `iomem=relaxed`?).
    #[error("cannot mmap {len} bytes at offset {offset:#x}")]
    Map {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Zero length, or an offset that is not page aligned.
    #[error("bad mapping request: {len} bytes at offset {offset:#x}")]
    BadRequest {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: usize,
    },
}

/// Whether a mapping may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

/// A `MAP_SHARED` mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; no memory is
    // passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

impl Mapping {
    /// Maps `len` bytes of `fd` from `offset` (a multiple of the page size).
    pub fn new(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        access: Access,
    ) -> Result<Self, MappingError> {
        if len == 0 || !offset.is_multiple_of(page_size()) {
            return Err(MappingError::BadRequest { offset, len });
        }
        let file_offset =
            libc::off_t::try_from(offset).map_err(|_| MappingError::BadRequest { offset, len })?;
        let prot = match access {
            Access::ReadOnly => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        };
        // SAFETY: a new mapping at an address the kernel picks cannot alias
        // any Rust object; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                file_offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MappingError::Map {
                offset,
                len,
                source: io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(MappingError::BadRequest { offset, len })?;
        Ok(Mapping { ptr, len })
    }

    /// Maps `len` bytes of the sysfs BAR file `path` from `offset`, read only.
    pub fn bar(path: &Path, offset: u64, len: usize) -> Result<Self, MappingError> {
        Self::bar_with(path, offset, len, Access::ReadOnly)
    }

    /// Maps `len` bytes of the sysfs BAR file `path` from `offset` with
    /// `access`.
    pub fn bar_with(
        path: &Path,
        offset: u64,
        len: usize,
        access: Access,
    ) -> Result<Self, MappingError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(access == Access::ReadWrite)
            .open(path)
            .map_err(|source| MappingError::Open {
                path: path.display().to_string(),
                source,
            })?;
        // The mapping outlives the file: mmap holds its own reference.
        Self::new(file_as_fd(&file), offset, len, access)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: [`Mapping::new`] refuses 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn in_bounds(&self, at: usize, size: usize) -> bool {
        at.is_multiple_of(size) && at.checked_add(size).is_some_and(|end| end <= self.len)
    }

    /// Reads the 16-bit little-endian word at byte `at`; `None` if it is out
    /// of bounds or misaligned.
    pub fn read_u16(&self, at: usize) -> Option<u16> {
        if !self.in_bounds(at, 2) {
            return None;
        }
        let ptr = self.ptr.as_ptr().wrapping_add(at).cast::<u16>();
        // SAFETY: `at + 2 <= len` and `at` is 2-aligned (the base is page
        // aligned), so the read is inside the live mapping and aligned.
        let value = unsafe { ptr.read_volatile() };
        Some(u16::from_le(value))
    }

    /// Reads the 32-bit little-endian word at byte `at`; `None` if it is out
    /// of bounds or misaligned.
    pub fn read_u32(&self, at: usize) -> Option<u32> {
        if !self.in_bounds(at, 4) {
            return None;
        }
        let ptr = self.ptr.as_ptr().wrapping_add(at).cast::<u32>();
        // SAFETY: `at + 4 <= len` and `at` is 4-aligned (the base is page
        // aligned), so the read is inside the live mapping and aligned.
        let value = unsafe { ptr.read_volatile() };
        Some(u32::from_le(value))
    }

    /// Writes the 32-bit little-endian word `value` at byte `at`; `None` if
    /// it is out of bounds or misaligned. Only for mappings made with
    /// [`Access::ReadWrite`] (others fault).
    pub fn write_u32(&self, at: usize, value: u32) -> Option<()> {
        if !self.in_bounds(at, 4) {
            return None;
        }
        let ptr = self.ptr.as_ptr().wrapping_add(at).cast::<u32>();
        // SAFETY: `at + 4 <= len` and `at` is 4-aligned (the base is page
        // aligned), so the write is inside the live mapping and aligned.
        unsafe { ptr.write_volatile(value.to_le()) };
        Some(())
    }

    /// Writes the 16-bit little-endian word `value` at byte `at`; `None` if
    /// it is out of bounds or misaligned. Only for mappings made with
    /// [`Access::ReadWrite`] (others fault).
    pub fn write_u16(&self, at: usize, value: u16) -> Option<()> {
        if !self.in_bounds(at, 2) {
            return None;
        }
        let ptr = self.ptr.as_ptr().wrapping_add(at).cast::<u16>();
        // SAFETY: `at + 2 <= len` and `at` is 2-aligned (the base is page
        // aligned), so the write is inside the live mapping and aligned.
        unsafe { ptr.write_volatile(value.to_le()) };
        Some(())
    }

    /// Copies `bytes` to byte `at`; `None` if they do not fit. Only for
    /// mappings made with [`Access::ReadWrite`] (others fault).
    pub fn write(&self, at: usize, bytes: &[u8]) -> Option<()> {
        let end = at.checked_add(bytes.len())?;
        if end > self.len {
            return None;
        }
        let dst = self.ptr.as_ptr().wrapping_add(at);
        // SAFETY: `at..end` is inside the live mapping, and `bytes` is a
        // Rust slice, so it cannot overlap a mapping made by mmap here.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
        }
        Some(())
    }
}

fn file_as_fd(file: &File) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    file.as_fd()
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value made and still
        // owns; nothing borrows it past `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    #[test]
    fn reads_little_endian_words() {
        let mut bytes = vec![0u8; 8192];
        bytes[0x500..0x502].copy_from_slice(&0xb0c5u16.to_le_bytes());
        bytes[0x1000..0x1004].copy_from_slice(&0x5550_4776u32.to_le_bytes());
        let file = file_with(&bytes);
        let map = Mapping::bar(file.path(), 0, 8192).unwrap();
        assert_eq!(map.read_u16(0x500), Some(0xb0c5));
        assert_eq!(map.read_u32(0x1000), Some(0x5550_4776));
        assert_eq!(map.read_u32(0x1000 - 4), Some(0));
        assert_eq!(map.len(), 8192);
    }

    #[test]
    fn refuses_out_of_bounds_and_misaligned_reads() {
        let file = file_with(&[0u8; 4096]);
        let map = Mapping::bar(file.path(), 0, 4096).unwrap();
        assert_eq!(map.read_u32(4094), None);
        assert_eq!(map.read_u32(4096), None);
        assert_eq!(map.read_u16(3), None);
        assert_eq!(map.read_u32(usize::MAX - 1), None);
    }

    #[test]
    fn refuses_an_offset_that_is_not_page_aligned() {
        let file = file_with(&[0u8; 8192]);
        assert!(matches!(
            Mapping::bar(file.path(), 100, 4096),
            Err(MappingError::BadRequest { offset: 100, .. })
        ));
    }

    #[test]
    fn writes_reach_the_file() {
        let file = file_with(&[0u8; 4096]);
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file.path())
            .unwrap();
        let map = Mapping::new(file_as_fd(&handle), 0, 4096, Access::ReadWrite).unwrap();
        map.write(8, &[1, 2, 3, 4]).unwrap();
        assert_eq!(map.write(4094, &[0; 4]), None);
        drop(map);
        assert_eq!(std::fs::read(file.path()).unwrap()[8..12], [1, 2, 3, 4]);
    }
}
