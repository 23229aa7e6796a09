//! What one vGPU owns, as the shadow MMU sees it: its VRAM slice and the
//! guest memory its VMM DMA-mapped. The walker reads guest page tables only
//! through this, and the policy checks every entry against it, so the
//! physical MMU is never programmed with anything else.

use shadow_mmu::{AllowedSet, GuestMemory, GuestMemoryError, Iova, SystemWindow};

use crate::dma::{DmaTarget, DmaWindows};
use crate::slice::VramAperture;

/// A vGPU's VRAM slice and DMA windows, borrowed for one walk.
#[derive(Debug, Clone, Copy)]
pub struct OwnedMemory<'a> {
    pub vram: &'a VramAperture,
    pub windows: &'a DmaWindows,
}

impl AllowedSet for OwnedMemory<'_> {
    fn vram_size(&self) -> u64 {
        self.vram.size()
    }

    fn system_window(&self, iova: Iova) -> Option<SystemWindow> {
        self.windows
            .window_containing(iova.0)
            .map(|w| SystemWindow {
                iova: Iova(w.iova),
                size: w.size,
                writable: w.writable,
            })
    }
}

impl GuestMemory for OwnedMemory<'_> {
    /// Reads guest memory through the daemon's own mapping of a DMA window.
    /// Page tables in a window that came without an fd (reached only by
    /// asking the client) cannot be walked synchronously: they read as not
    /// mapped, and the entries behind them fault.
    fn read(&self, addr: Iova, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let len = buf.len() as u64;
        let not_mapped = || GuestMemoryError::NotMapped { addr: addr.0, len };
        match self.windows.resolve(addr.0, len, false) {
            Ok(DmaTarget::Local(local)) => local.read(buf).map_err(|_| not_mapped()),
            Ok(DmaTarget::Remote { .. }) | Err(_) => Err(not_mapped()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use super::*;
    use crate::dma::DmaBacking;
    use crate::{ParentGpu, PhysicalGpu, Profile, SimGpu};

    fn memfd(len: u64) -> OwnedFd {
        let fd = rustix::fs::memfd_create("owned-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        fd
    }

    fn slice() -> crate::VgpuInstance {
        let gpu: std::sync::Arc<dyn PhysicalGpu> =
            std::sync::Arc::new(SimGpu::new("gpu0", 4 << 20).unwrap());
        let parent = ParentGpu::new(gpu);
        let profile = std::sync::Arc::new(Profile {
            name: "p".into(),
            framebuffer: 2 << 20,
            max_instances: 1,
            channels: 1,
            max_resolution: (640, 480),
            subsystem_vendor_id: 0x1234,
            subsystem_id: 0x1100,
            weight: 1,
        });
        parent.create(uuid::Uuid::from_u128(7), profile).unwrap()
    }

    #[test]
    fn windows_are_the_allowed_system_memory_with_their_permission() {
        let instance = slice();
        let mut windows = DmaWindows::new();
        windows
            .map(
                0x10000,
                0x4000,
                false,
                DmaBacking::Fd {
                    fd: memfd(0x4000),
                    offset: 0,
                },
            )
            .unwrap();
        let owned = OwnedMemory {
            vram: &instance.slice.aperture(),
            windows: &windows,
        };
        assert_eq!(owned.vram_size(), 2 << 20);
        let window = owned.system_window(Iova(0x12000)).unwrap();
        assert_eq!(
            (window.iova, window.size, window.writable),
            (Iova(0x10000), 0x4000, false)
        );
        assert!(owned.system_window(Iova(0x14000)).is_none());
    }

    #[test]
    fn tables_are_read_from_fd_windows_only() {
        let instance = slice();
        let fd = memfd(0x2000);
        rustix::io::pwrite(&fd, &[0xab; 8], 0x1000).unwrap();
        let mut windows = DmaWindows::new();
        windows
            .map(0x0, 0x2000, true, DmaBacking::Fd { fd, offset: 0 })
            .unwrap();
        windows
            .map(0x8000, 0x1000, true, DmaBacking::Remote)
            .unwrap();
        let owned = OwnedMemory {
            vram: &instance.slice.aperture(),
            windows: &windows,
        };
        let mut buf = [0u8; 8];
        owned.read(Iova(0x1000), &mut buf).unwrap();
        assert_eq!(buf, [0xab; 8]);
        assert!(owned.read(Iova(0x8000), &mut buf).is_err(), "remote window");
        assert!(owned.read(Iova(0x4000), &mut buf).is_err(), "no window");
    }
}
