//! DMA windows: the guest memory a VMM mapped for one vGPU with vfio-user
//! `DMA_MAP`, and the only guest memory the vGPU's DMA can reach.
//!
//! A window with a file descriptor is mapped into the daemon (read-only
//! when the VMM mapped it read-only, so that even a daemon bug cannot write
//! it) and copied with raw pointers, as the guest uses the same pages
//! concurrently; where the pages under the mapping can go away, the copies
//! are checked by the kernel so that the VMM cannot kill the daemon with
//! SIGBUS (see the `local` module). A window without one is reached with
//! `DMA_READ` and `DMA_WRITE` messages to the client, which the daemon
//! sends; here it is only bookkeeping.
//!
//! A copy borrows the windows, so a window cannot be unmapped while a copy
//! through it is in flight.

mod budget;
mod local;
mod windows;

use std::io;

use thiserror::Error;

pub use budget::{
    BASE_RESERVED_BYTES, BASE_RESERVED_MAPPINGS, BudgetError, DmaAllowance, DmaBudget, DmaGrant,
    MAPPINGS_PER_VGPU, SystemLimits,
};
pub use local::LocalDma;
pub use windows::{DmaBacking, DmaTarget, DmaWindowInfo, DmaWindows};

/// A DMA map, unmap or access that was refused or failed.
#[derive(Debug, Error)]
pub enum DmaError {
    /// A map, unmap or access of zero bytes.
    #[error("zero-length DMA range at IOVA {iova:#x}")]
    ZeroLength {
        /// Where the range would start.
        iova: u64,
    },
    /// The range runs past the end of the 64-bit address space.
    #[error("DMA range of {len:#x} bytes at IOVA {iova:#x} wraps around the address space")]
    Overflow {
        /// Where the range starts.
        iova: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// The new window overlaps one that exists.
    #[error(
        "DMA map of {size:#x} bytes at IOVA {iova:#x} overlaps the window of {existing_size:#x} bytes at {existing_iova:#x}"
    )]
    Overlap {
        /// The refused window's start.
        iova: u64,
        /// The refused window's size.
        size: u64,
        /// The existing window's start.
        existing_iova: u64,
        /// The existing window's size.
        existing_size: u64,
    },
    /// The vGPU has as many windows as it accepts.
    #[error("DMA map at IOVA {iova:#x} refused: the limit of {max} windows is reached")]
    TooManyWindows {
        /// The refused window's start.
        iova: u64,
        /// The limit.
        max: u64,
    },
    /// The window would take the vGPU's fd-backed windows past the bytes
    /// it may map.
    #[error(
        "DMA map of {size:#x} bytes at IOVA {iova:#x} refused: {mapped:#x} bytes are mapped and the limit is {max:#x}"
    )]
    TooManyBytes {
        /// The refused window's start.
        iova: u64,
        /// Its size.
        size: u64,
        /// Bytes of fd-backed windows already mapped.
        mapped: u64,
        /// The limit.
        max: u64,
    },
    /// The descriptor is not a regular file (a device, a socket, a pipe,
    /// an eventfd): it is not the VM's memory.
    #[error("DMA map at IOVA {iova:#x}: the descriptor is a {kind}, not a file of guest memory")]
    NotAFile {
        /// The refused window's start.
        iova: u64,
        /// What the descriptor is.
        kind: String,
    },
    /// A writable map of a file the VMM opened read-only.
    #[error("DMA map at IOVA {iova:#x}: writable, but the file is open read-only")]
    ReadOnlyFile {
        /// The refused window's start.
        iova: u64,
    },
    /// The file lives on a filesystem whose pages a user-space server
    /// supplies (FUSE): a copy through it could wait on that server for
    /// ever.
    #[error("DMA map at IOVA {iova:#x}: files on FUSE cannot back guest memory")]
    UntrustedFilesystem {
        /// The refused window's start.
        iova: u64,
    },
    /// The file is shorter than the range to map: touching the part past
    /// its end would kill the daemon with SIGBUS.
    #[error(
        "DMA map at IOVA {iova:#x}: file range {offset:#x}+{size:#x} runs past the file's end at {file_size:#x}"
    )]
    BeyondEndOfFile {
        /// The refused window's start.
        iova: u64,
        /// File offset of the window.
        offset: u64,
        /// Size of the window.
        size: u64,
        /// Size of the file.
        file_size: u64,
    },
    /// Mapping the window's file failed.
    #[error("cannot map the DMA window of {size:#x} bytes at IOVA {iova:#x}")]
    Map {
        /// The refused window's start.
        iova: u64,
        /// Its size.
        size: u64,
        /// The host's error.
        #[source]
        source: io::Error,
    },
    /// A copy through a window met memory that went away under its
    /// mapping (the VMM truncated the file, or hugetlb memory could not be
    /// refilled).
    #[error("{len:#x} bytes at IOVA {iova:#x} could not be copied: the window's memory is gone")]
    Unreachable {
        /// The range's start.
        iova: u64,
        /// Its length.
        len: u64,
        /// The host's error (EFAULT).
        #[source]
        source: io::Error,
    },
    /// An unmap that does not name one window exactly (its start and
    /// size).
    #[error("DMA unmap of {size:#x} bytes at IOVA {iova:#x} matches no DMA map")]
    NoSuchWindow {
        /// The unmap's start.
        iova: u64,
        /// The unmap's size.
        size: u64,
    },
    /// No single window holds the whole range.
    #[error("{len:#x} bytes at IOVA {iova:#x} are not inside one DMA window")]
    NotMapped {
        /// The access's start.
        iova: u64,
        /// Its length.
        len: u64,
    },
    /// A write to a window the VMM mapped read-only.
    #[error("write of {len:#x} bytes at IOVA {iova:#x} hits a read-only DMA window")]
    ReadOnly {
        /// The access's start.
        iova: u64,
        /// Its length.
        len: u64,
    },
    /// A write through a range that was resolved for reading.
    #[error("DMA range at IOVA {iova:#x} was resolved for reading, not writing")]
    ResolvedForRead {
        /// The range's start.
        iova: u64,
    },
    /// A copy whose buffer is not as long as the resolved range.
    #[error("DMA range at IOVA {iova:#x} is {resolved:#x} bytes, the buffer {buffer:#x}")]
    LengthMismatch {
        /// The range's start.
        iova: u64,
        /// The range's length.
        resolved: u64,
        /// The buffer's length.
        buffer: u64,
    },
}

#[cfg(test)]
mod tests;
