//! The set of one vGPU's DMA windows, keyed by IOVA.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use super::DmaError;
use super::local::{LocalDma, WindowMemory, open_window};

/// The most windows one vGPU accepts by default; the daemon advertises it
/// to the client as `max_dma_maps`. It bounds the daemon's mappings (and
/// the work of a hostile client) per vGPU.
pub const MAX_DMA_WINDOWS: usize = 65535;

/// Where a window's memory is.
#[derive(Debug)]
pub enum DmaBacking {
    /// A file descriptor the VMM sent, mapped at `offset` in the file.
    Fd {
        /// The guest memory's file (memfd, hugetlbfs file, ...).
        fd: OwnedFd,
        /// Where the window starts in the file.
        offset: u64,
    },
    /// No fd came with the map: the memory is reached by `DMA_READ` and
    /// `DMA_WRITE` messages to the client.
    Remote,
}

/// What [`DmaWindows::iter`] tells about one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DmaWindowInfo {
    /// First IOVA.
    pub iova: u64,
    /// Size in bytes.
    pub size: u64,
    /// Mapped read-write (otherwise read-only).
    pub writable: bool,
    /// Reached through the client rather than a local mapping.
    pub remote: bool,
}

/// Where a resolved DMA range is.
#[derive(Debug)]
pub enum DmaTarget<'a> {
    /// In a window the daemon mapped: copy directly.
    Local(LocalDma<'a>),
    /// In a remote window: ask the client with `DMA_READ`/`DMA_WRITE` for
    /// this range.
    Remote {
        /// First IOVA of the range.
        iova: u64,
        /// Length in bytes.
        len: u64,
    },
}

#[derive(Debug)]
struct Window {
    size: u64,
    writable: bool,
    /// `None` for a remote window. Dropping it unmaps the window.
    map: Option<WindowMemory>,
}

impl Window {
    fn info(&self, iova: u64) -> DmaWindowInfo {
        DmaWindowInfo {
            iova,
            size: self.size,
            writable: self.writable,
            remote: self.map.is_none(),
        }
    }
}

/// One vGPU's DMA windows. Windows never overlap; each is added and removed
/// whole.
#[derive(Debug)]
pub struct DmaWindows {
    /// First IOVA → window.
    windows: BTreeMap<u64, Window>,
    max_windows: usize,
}

impl Default for DmaWindows {
    fn default() -> Self {
        Self::new()
    }
}

impl DmaWindows {
    /// No windows, accepting up to [`MAX_DMA_WINDOWS`].
    pub fn new() -> Self {
        Self::with_max_windows(MAX_DMA_WINDOWS)
    }

    /// No windows, accepting up to `max_windows`.
    pub fn with_max_windows(max_windows: usize) -> Self {
        Self {
            windows: BTreeMap::new(),
            max_windows,
        }
    }

    /// Adds the window `[iova, iova + size)`. An fd-backed window is mapped
    /// now, read-only unless `writable`; the fd itself is not kept.
    pub fn map(
        &mut self,
        iova: u64,
        size: u64,
        writable: bool,
        backing: DmaBacking,
    ) -> Result<(), DmaError> {
        let end = checked_end(iova, size)?;
        if let Some((&existing_iova, existing)) = self.windows.range(..end).next_back() {
            // Windows do not overlap, so only the last one starting before
            // `end` can reach into the new range.
            if existing_iova + existing.size > iova {
                return Err(DmaError::Overlap {
                    iova,
                    size,
                    existing_iova,
                    existing_size: existing.size,
                });
            }
        }
        if self.windows.len() >= self.max_windows {
            return Err(DmaError::TooManyWindows {
                iova,
                max: self.max_windows,
            });
        }
        let map = match backing {
            DmaBacking::Fd { fd, offset } => Some(open_window(iova, size, writable, fd, offset)?),
            DmaBacking::Remote => None,
        };
        self.windows.insert(
            iova,
            Window {
                size,
                writable,
                map,
            },
        );
        Ok(())
    }

    /// Removes every window inside `[iova, iova + size)` and returns how
    /// many. If a window is only partly inside, nothing is removed.
    pub fn unmap(&mut self, iova: u64, size: u64) -> Result<usize, DmaError> {
        let end = checked_end(iova, size)?;
        let partial = |(&window_iova, window): (&u64, &Window)| DmaError::PartialUnmap {
            iova,
            size,
            window_iova,
            window_size: window.size,
        };
        if let Some(before) = self.windows.range(..iova).next_back() {
            if before.0 + before.1.size > iova {
                return Err(partial(before));
            }
        }
        if let Some(last) = self.windows.range(iova..end).next_back() {
            if last.0 + last.1.size > end {
                return Err(partial(last));
            }
        }
        let inside: Vec<u64> = self.windows.range(iova..end).map(|(&at, _)| at).collect();
        for at in &inside {
            self.windows.remove(at);
        }
        Ok(inside.len())
    }

    /// Removes every window.
    pub fn clear(&mut self) {
        self.windows.clear();
    }

    /// Finds the window that holds all of `[iova, iova + len)`, checking
    /// that it is writable if `write`.
    pub fn resolve(&self, iova: u64, len: u64, write: bool) -> Result<DmaTarget<'_>, DmaError> {
        if len == 0 {
            return Err(DmaError::ZeroLength { iova });
        }
        let not_mapped = DmaError::NotMapped { iova, len };
        let Some((&window_iova, window)) = self.windows.range(..=iova).next_back() else {
            return Err(not_mapped);
        };
        let start = iova - window_iova;
        if start.checked_add(len).is_none_or(|end| end > window.size) {
            return Err(not_mapped);
        }
        if write && !window.writable {
            return Err(DmaError::ReadOnly { iova, len });
        }
        let Some(map) = &window.map else {
            return Ok(DmaTarget::Remote { iova, len });
        };
        // Both fit in usize: the range lies inside a mapping of the window.
        let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
            return Err(not_mapped);
        };
        Ok(DmaTarget::Local(LocalDma::new(
            map, start, len, iova, write,
        )))
    }

    /// The window containing `iova`, if any.
    pub fn window_containing(&self, iova: u64) -> Option<DmaWindowInfo> {
        let (&window_iova, window) = self.windows.range(..=iova).next_back()?;
        (iova - window_iova < window.size).then(|| window.info(window_iova))
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether there are no windows.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The windows in IOVA order.
    pub fn iter(&self) -> impl Iterator<Item = DmaWindowInfo> + '_ {
        self.windows.iter().map(|(&iova, window)| window.info(iova))
    }
}

/// The end of a non-empty range that fits the address space.
fn checked_end(iova: u64, len: u64) -> Result<u64, DmaError> {
    if len == 0 {
        return Err(DmaError::ZeroLength { iova });
    }
    iova.checked_add(len)
        .ok_or(DmaError::Overflow { iova, len })
}
