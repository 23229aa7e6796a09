//! What a vGPU owns, as the validation policy sees it: its VRAM slice and
//! the guest memory its VMM mapped for it, with permissions.
//!
//! It is a trait rather than a snapshot struct because the owner (the
//! daemon, over the vGPU's DMA windows) changes it on every `DMA_MAP` and
//! `DMA_UNMAP`; the policy asks it one question per entry.

use crate::addr::Iova;

/// One range of guest memory mapped for the vGPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SystemWindow {
    /// First IOVA of the window.
    pub iova: Iova,
    /// Length of the window in bytes (never 0).
    pub size: u64,
    /// The VMM mapped it read-write; otherwise it is read-only.
    pub writable: bool,
}

impl SystemWindow {
    /// Whether `[iova, iova + len)` lies wholly inside the window.
    pub fn contains(&self, iova: Iova, len: u64) -> bool {
        let Some(window_end) = self.iova.0.checked_add(self.size) else {
            return false;
        };
        match iova.0.checked_add(len) {
            Some(end) => iova >= self.iova && end <= window_end,
            None => false,
        }
    }
}

/// The memory a vGPU may reach through the GPU MMU.
pub trait AllowedSet {
    /// Size of the vGPU's VRAM slice in bytes; offsets `0..vram_size()` are
    /// its own.
    fn vram_size(&self) -> u64;

    /// The window that contains `iova`, if any. Windows never overlap, so
    /// there is at most one.
    fn system_window(&self, iova: Iova) -> Option<SystemWindow>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_contains_ranges_inside_it_only() {
        let window = SystemWindow {
            iova: Iova(0x1000),
            size: 0x2000,
            writable: false,
        };
        assert!(window.contains(Iova(0x1000), 0x2000));
        assert!(window.contains(Iova(0x2000), 0x1000));
        assert!(!window.contains(Iova(0x0fff), 0x10));
        assert!(!window.contains(Iova(0x2000), 0x1001));
        assert!(!window.contains(Iova(0x2000), u64::MAX));
    }
}
