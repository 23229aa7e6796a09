//! The set of one vGPU's DMA windows, keyed by IOVA.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use super::DmaError;
use super::budget::DmaAllowance;
use super::local::{LocalDma, WindowMemory, open_window};

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
/// whole. What they may hold is bounded by the vGPU's [`DmaAllowance`].
#[derive(Debug)]
pub struct DmaWindows {
    /// First IOVA → window.
    windows: BTreeMap<u64, Window>,
    allowance: DmaAllowance,
    /// Bytes of the fd-backed windows.
    mapped_bytes: u64,
    /// Bytes of every window, fd-backed or not (u128: non-overlapping
    /// windows can cover all 2^64 IOVAs).
    window_bytes: u128,
}

impl Default for DmaWindows {
    fn default() -> Self {
        Self::new()
    }
}

impl DmaWindows {
    /// No windows, and no limit on them (for tests).
    pub fn new() -> Self {
        Self::with_allowance(DmaAllowance::UNLIMITED)
    }

    /// No windows, accepting what `allowance` allows.
    pub fn with_allowance(allowance: DmaAllowance) -> Self {
        Self {
            windows: BTreeMap::new(),
            allowance,
            mapped_bytes: 0,
            window_bytes: 0,
        }
    }

    /// Whether some window overlaps `[iova, iova + size)` (a range that
    /// wraps past 2^64 reaches to the end).
    fn overlaps(&self, iova: u64, size: u64) -> bool {
        let end = iova.saturating_add(size);
        // Windows do not overlap, so only the last one starting before
        // `end` can reach into the range.
        self.windows
            .range(..end)
            .next_back()
            .is_some_and(|(&start, window)| start.saturating_add(window.size) > iova)
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
        if self.windows.len() as u64 >= self.allowance.windows {
            return Err(DmaError::TooManyWindows {
                iova,
                max: self.allowance.windows,
            });
        }
        let map = match backing {
            DmaBacking::Fd { fd, offset } => {
                let mapped = self.mapped_bytes.saturating_add(size);
                if mapped > self.allowance.mapped_bytes {
                    return Err(DmaError::TooManyBytes {
                        iova,
                        size,
                        mapped: self.mapped_bytes,
                        max: self.allowance.mapped_bytes,
                    });
                }
                let map = open_window(iova, size, writable, fd, offset)?;
                self.mapped_bytes = mapped;
                Some(map)
            }
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
        self.window_bytes += u128::from(size);
        Ok(())
    }

    /// Removes the window that starts at `iova` and is `size` bytes long:
    /// an unmap names a map exactly, as the vfio-user specification asks.
    /// A range that overlaps no window at all removes nothing and is not
    /// an error: QEMU sweeps its whole address space with such unmaps when
    /// a device changes IOMMU domain, and the kernel's VFIO accepts them.
    /// Anything else (part of a window, several) is refused.
    pub fn unmap(&mut self, iova: u64, size: u64) -> Result<(), DmaError> {
        if size != 0 && !self.overlaps(iova, size) {
            return Ok(());
        }
        // An empty or wrapping range names no window either.
        match self.windows.get(&iova) {
            Some(window) if window.size == size => {}
            _ => return Err(DmaError::NoSuchWindow { iova, size }),
        }
        if let Some(window) = self.windows.remove(&iova) {
            self.window_bytes -= u128::from(window.size);
            if window.map.is_some() {
                self.mapped_bytes -= window.size;
            }
        }
        Ok(())
    }

    /// Removes every window.
    pub fn clear(&mut self) {
        self.windows.clear();
        self.mapped_bytes = 0;
        self.window_bytes = 0;
    }

    /// Bytes of guest memory in every window, fd-backed or not (at most
    /// `u64::MAX`).
    pub fn window_bytes(&self) -> u64 {
        u64::try_from(self.window_bytes).unwrap_or(u64::MAX)
    }

    /// Bytes of the fd-backed windows, all mapped into the daemon.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped_bytes
    }

    /// What the windows may hold.
    pub fn allowance(&self) -> DmaAllowance {
        self.allowance
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
