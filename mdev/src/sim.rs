//! The simulated physical GPU, the embedded default backend: one VRAM
//! address space whose partitions are per-vGPU memfds placed by the buddy
//! allocator, and one MMU whose contexts are GPU-wide, each bound to a
//! partition.

use std::sync::{Arc, Mutex};

use crate::allocator::{Placement, SliceAllocator};
use crate::mmu::{BoundContexts, ContextError, ContextIds, Partition, PartitionMmu};
use crate::physical::PhysicalGpu;
use crate::slice::{VramError, VramSlice};
use crate::sync::lock;

/// A simulated GPU with `vram_size` bytes of VRAM. Only allocated slices
/// exist as memory, and only their touched pages cost anything.
#[derive(Debug)]
pub struct SimGpu {
    id: String,
    vram_size: u64,
    /// Shared with every live slice, which returns its range on drop. A
    /// leaf lock: nothing else is locked while it is held.
    allocator: Arc<Mutex<SliceAllocator>>,
    /// The MMU's context ids, shared with every vGPU's contexts, which
    /// return theirs on drop. A leaf lock.
    contexts: Arc<ContextIds>,
}

impl SimGpu {
    /// A GPU named `id` with `vram_size` bytes of VRAM, a non-zero multiple
    /// of 1 MiB.
    pub fn new(id: impl Into<String>, vram_size: u64) -> Result<Self, VramError> {
        let id = id.into();
        let allocator = SliceAllocator::new(id.clone(), vram_size)?;
        Ok(Self {
            id,
            vram_size,
            allocator: Arc::new(Mutex::new(allocator)),
            contexts: Arc::default(),
        })
    }
}

impl PhysicalGpu for SimGpu {
    fn id(&self) -> &str {
        &self.id
    }

    fn vram_size(&self) -> u64 {
        self.vram_size
    }

    fn allocate_slice(&self, size: u64) -> Result<VramSlice, VramError> {
        // The allocator lock is released before the memfd is made.
        let placement = Placement::allocate(&self.allocator, size)?;
        let slice = VramSlice::create(placement)?;
        tracing::debug!(
            gpu = %self.id,
            offset = slice.phys_offset(),
            size = slice.size(),
            "VRAM slice allocated"
        );
        Ok(slice)
    }

    fn vram_placement(&self) -> SliceAllocator {
        lock(&self.allocator).clone()
    }

    fn bind_contexts(
        &self,
        slice: &VramSlice,
        count: u32,
    ) -> Result<Box<dyn PartitionMmu>, ContextError> {
        let partition = Partition {
            base: slice.phys_offset(),
            size: slice.size(),
        };
        Ok(Box::new(BoundContexts::bind(
            &self.contexts,
            partition,
            count,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn vram_size_is_validated() {
        assert!(matches!(
            SimGpu::new("gpu0", 0),
            Err(VramError::VramSize { .. })
        ));
        assert!(matches!(
            SimGpu::new("gpu0", 1000),
            Err(VramError::VramSize { .. })
        ));
    }

    #[test]
    fn large_vram_costs_nothing_until_sliced() {
        let gpu = SimGpu::new("gpu0", 64 * GIB).unwrap();
        assert_eq!(gpu.vram_size(), 64 * GIB);
        assert_eq!(gpu.vram_placement().free_bytes(), 64 * GIB);
    }

    #[test]
    fn each_slice_has_its_own_fd_of_its_own_size() {
        let gpu = SimGpu::new("gpu0", 8 * MIB).unwrap();
        let a = gpu.allocate_slice(4 * MIB).unwrap();
        let b = gpu.allocate_slice(2 * MIB).unwrap();
        assert_ne!(a.phys_offset(), b.phys_offset());
        for slice in [&a, &b] {
            let stat = rustix::fs::fstat(slice.aperture().fd()).unwrap();
            assert_eq!(stat.st_size as u64, slice.size());
        }
        let (a_stat, b_stat) = (
            rustix::fs::fstat(a.aperture().fd()).unwrap(),
            rustix::fs::fstat(b.aperture().fd()).unwrap(),
        );
        assert_ne!(a_stat.st_ino, b_stat.st_ino);
    }

    #[test]
    fn slices_do_not_share_memory() {
        let gpu = SimGpu::new("gpu0", 2 * MIB).unwrap();
        let a = gpu.allocate_slice(MIB).unwrap();
        let b = gpu.allocate_slice(MIB).unwrap();
        a.aperture().write(0, &[0x5a; 64]).unwrap();
        let mut buf = [0xff; 64];
        b.aperture().read(0, &mut buf).unwrap();
        assert_eq!(buf, [0; 64]);
    }

    #[test]
    fn dropping_a_slice_returns_its_vram() {
        let gpu = SimGpu::new("gpu0", 4 * MIB).unwrap();
        let slice = gpu.allocate_slice(4 * MIB).unwrap();
        assert!(matches!(
            gpu.allocate_slice(MIB),
            Err(VramError::OutOfVram { .. })
        ));
        drop(slice);
        assert_eq!(gpu.vram_placement().free_bytes(), 4 * MIB);
        assert!(gpu.allocate_slice(4 * MIB).is_ok());
    }

    #[test]
    fn a_reused_range_starts_zeroed() {
        let gpu = SimGpu::new("gpu0", MIB).unwrap();
        let first = gpu.allocate_slice(MIB).unwrap();
        first.aperture().write(0, &[1; 32]).unwrap();
        drop(first);
        let second = gpu.allocate_slice(MIB).unwrap();
        let mut buf = [0xff; 32];
        second.aperture().read(0, &mut buf).unwrap();
        assert_eq!(buf, [0; 32]);
    }

    #[test]
    fn placement_is_a_copy() {
        let gpu = SimGpu::new("gpu0", 2 * MIB).unwrap();
        let mut plan = gpu.vram_placement();
        plan.allocate(2 * MIB).unwrap();
        assert_eq!(gpu.vram_placement().free_bytes(), 2 * MIB);
    }
}
