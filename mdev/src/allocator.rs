//! The buddy allocator that places vGPU VRAM slices in a physical GPU's
//! VRAM address space.
//!
//! Slices are powers of two from [`MIN_SLICE_SIZE`] up, each naturally
//! aligned (a 1 GiB slice starts on a 1 GiB boundary), which is what GPU
//! MMUs and large pages want. VRAM need not be a power of two: it starts as
//! the largest aligned blocks that tile it (24 GiB is 16 GiB + 8 GiB), and
//! freed blocks coalesce back into those.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::bytesize::ByteSize;
use crate::slice::VramError;
use crate::sync::lock;

/// The smallest slice, and the granularity of VRAM sizes: 1 MiB.
pub const MIN_SLICE_SIZE: u64 = 1 << MIN_ORDER;

const MIN_ORDER: u32 = 20;
/// Orders `MIN_ORDER..=63`: a block of order `k` is `1 << k` bytes.
const ORDERS: usize = (u64::BITS - MIN_ORDER) as usize;

/// Free and allocated blocks of one GPU's VRAM. Cloning gives an
/// independent copy, used for dry runs.
#[derive(Clone, Debug)]
pub struct SliceAllocator {
    gpu: String,
    vram_size: u64,
    /// Free block offsets, indexed by `order - MIN_ORDER`; ordered so that
    /// the lowest block is used first, which keeps placement predictable.
    free: Vec<BTreeSet<u64>>,
    /// Allocated block offset → order, to refuse frees that do not match.
    allocated: BTreeMap<u64, u32>,
    free_bytes: u64,
}

impl SliceAllocator {
    /// An allocator with all of `vram_size` bytes free. `gpu` names the GPU
    /// in errors. The size must be a non-zero multiple of
    /// [`MIN_SLICE_SIZE`].
    pub fn new(gpu: impl Into<String>, vram_size: u64) -> Result<Self, VramError> {
        let gpu = gpu.into();
        if vram_size == 0 || !vram_size.is_multiple_of(MIN_SLICE_SIZE) {
            return Err(VramError::VramSize {
                gpu,
                size: ByteSize(vram_size),
            });
        }
        let mut allocator = Self {
            gpu,
            vram_size,
            free: vec![BTreeSet::new(); ORDERS],
            allocated: BTreeMap::new(),
            free_bytes: vram_size,
        };
        let mut offset = 0u64;
        while offset < vram_size {
            let remaining = vram_size - offset;
            // The block must be aligned to its size and fit the rest of VRAM;
            // offset 0 has every alignment.
            let align_order = if offset == 0 {
                u64::BITS - 1
            } else {
                offset.trailing_zeros()
            };
            let order = align_order.min(remaining.ilog2());
            allocator.free_list(order).insert(offset);
            offset += 1 << order;
        }
        Ok(allocator)
    }

    /// The GPU this allocator places slices for.
    pub fn gpu(&self) -> &str {
        &self.gpu
    }

    /// Total VRAM in bytes.
    pub fn vram_size(&self) -> u64 {
        self.vram_size
    }

    /// Bytes not allocated.
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// The largest slice that can be allocated now, in bytes (0 when full).
    pub fn largest_free_block(&self) -> u64 {
        (MIN_ORDER..u64::BITS)
            .rev()
            .find(|&order| !self.free[Self::index(order)].is_empty())
            .map_or(0, |order| 1 << order)
    }

    /// Places a slice of `size` bytes (a power of two, at least
    /// [`MIN_SLICE_SIZE`]) and returns its offset, a multiple of `size`.
    pub fn allocate(&mut self, size: u64) -> Result<u64, VramError> {
        let order = self.order_of(size)?;
        let Some((mut block_order, offset)) = (order..u64::BITS).find_map(|candidate| {
            let lowest = self.free[Self::index(candidate)].pop_first()?;
            Some((candidate, lowest))
        }) else {
            return Err(VramError::OutOfVram {
                gpu: self.gpu.clone(),
                requested: ByteSize(size),
                free: ByteSize(self.free_bytes),
                largest_free: ByteSize(self.largest_free_block()),
            });
        };
        // Split the block, keeping the lower half and freeing the upper.
        while block_order > order {
            block_order -= 1;
            self.free_list(block_order)
                .insert(offset + (1 << block_order));
        }
        self.allocated.insert(offset, order);
        self.free_bytes -= size;
        Ok(offset)
    }

    /// Returns the slice of `size` bytes at `offset`, which must be exactly
    /// what [`Self::allocate`] gave, to the free blocks.
    pub fn free(&mut self, offset: u64, size: u64) -> Result<(), VramError> {
        let order = self.order_of(size)?;
        if self.allocated.get(&offset) != Some(&order) {
            return Err(VramError::NotAllocated {
                gpu: self.gpu.clone(),
                offset,
                size: ByteSize(size),
            });
        }
        self.allocated.remove(&offset);
        self.free_bytes += size;
        let (mut offset, mut order) = (offset, order);
        // Merge with the buddy while it is free. A buddy that would reach
        // past VRAM is never in a free list, so merged blocks stay inside.
        while order < u64::BITS - 1 {
            let buddy = offset ^ (1 << order);
            if !self.free_list(order).remove(&buddy) {
                break;
            }
            offset = offset.min(buddy);
            order += 1;
        }
        self.free_list(order).insert(offset);
        Ok(())
    }

    fn order_of(&self, size: u64) -> Result<u32, VramError> {
        if !size.is_power_of_two() || size < MIN_SLICE_SIZE {
            return Err(VramError::SliceSize {
                gpu: self.gpu.clone(),
                requested: ByteSize(size),
            });
        }
        Ok(size.trailing_zeros())
    }

    fn free_list(&mut self, order: u32) -> &mut BTreeSet<u64> {
        &mut self.free[Self::index(order)]
    }

    fn index(order: u32) -> usize {
        (order - MIN_ORDER) as usize
    }
}

/// A range of VRAM allocated from a shared allocator until dropped.
///
/// The allocator's mutex is a leaf lock: nothing else is locked while it
/// is held, and it is held only for the allocator's bookkeeping.
#[derive(Debug)]
pub(crate) struct Placement {
    allocator: Arc<Mutex<SliceAllocator>>,
    offset: u64,
    size: u64,
}

impl Placement {
    pub(crate) fn allocate(
        allocator: &Arc<Mutex<SliceAllocator>>,
        size: u64,
    ) -> Result<Self, VramError> {
        let offset = lock(allocator).allocate(size)?;
        Ok(Self {
            allocator: Arc::clone(allocator),
            offset,
            size,
        })
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn gpu(&self) -> String {
        lock(&self.allocator).gpu().to_owned()
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if let Err(error) = lock(&self.allocator).free(self.offset, self.size) {
            // Only a bookkeeping bug gets here; leaking the range is the safe
            // outcome, so log it rather than bring the daemon down.
            tracing::error!(%error, "VRAM slice could not be returned");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn allocator(size: u64) -> SliceAllocator {
        SliceAllocator::new("gpu0", size).unwrap()
    }

    #[test]
    fn vram_size_must_be_a_non_zero_multiple_of_1_mib() {
        assert!(matches!(
            SliceAllocator::new("gpu0", 0),
            Err(VramError::VramSize { .. })
        ));
        assert!(matches!(
            SliceAllocator::new("gpu0", MIB + 4096),
            Err(VramError::VramSize { .. })
        ));
    }

    #[test]
    fn slices_are_naturally_aligned() {
        let mut vram = allocator(GIB);
        let small = vram.allocate(MIB).unwrap();
        let large = vram.allocate(256 * MIB).unwrap();
        assert_eq!(small, 0);
        assert_eq!(large % (256 * MIB), 0);
        assert_eq!(large, 256 * MIB);
    }

    #[test]
    fn slice_sizes_must_be_powers_of_two_of_at_least_1_mib() {
        let mut vram = allocator(GIB);
        for size in [0, 4096, 3 * MIB, MIB + 1] {
            assert!(
                matches!(vram.allocate(size), Err(VramError::SliceSize { .. })),
                "{size}"
            );
        }
        assert_eq!(vram.free_bytes(), GIB);
    }

    #[test]
    fn out_of_vram_names_what_is_short() {
        let mut vram = allocator(GIB);
        vram.allocate(512 * MIB).unwrap();
        let err = vram.allocate(GIB).unwrap_err();
        assert_eq!(
            err.to_string(),
            "gpu0: cannot place a 1 GiB slice: 512 MiB free, largest free block 512 MiB"
        );
    }

    #[test]
    fn fragmentation_is_reported_as_the_largest_free_block() {
        let mut vram = allocator(4 * MIB);
        let offsets: Vec<u64> = (0..4).map(|_| vram.allocate(MIB).unwrap()).collect();
        vram.free(offsets[0], MIB).unwrap();
        vram.free(offsets[2], MIB).unwrap();
        assert_eq!(vram.free_bytes(), 2 * MIB);
        assert_eq!(vram.largest_free_block(), MIB);
        assert!(matches!(
            vram.allocate(2 * MIB),
            Err(VramError::OutOfVram { .. })
        ));
    }

    #[test]
    fn freed_buddies_coalesce() {
        let mut vram = allocator(GIB);
        let a = vram.allocate(MIB).unwrap();
        let b = vram.allocate(MIB).unwrap();
        assert_eq!(vram.largest_free_block(), 512 * MIB);
        vram.free(a, MIB).unwrap();
        vram.free(b, MIB).unwrap();
        assert_eq!(vram.largest_free_block(), GIB);
        assert_eq!(vram.allocate(GIB).unwrap(), 0);
    }

    #[test]
    fn non_power_of_two_vram_is_tiled_by_aligned_blocks() {
        let mut vram = allocator(24 * GIB);
        assert_eq!(vram.largest_free_block(), 16 * GIB);
        assert_eq!(vram.allocate(16 * GIB).unwrap(), 0);
        assert_eq!(vram.allocate(8 * GIB).unwrap(), 16 * GIB);
        assert_eq!(vram.free_bytes(), 0);
        assert!(matches!(
            vram.allocate(MIB),
            Err(VramError::OutOfVram { .. })
        ));
    }

    #[test]
    fn free_of_something_not_allocated_is_refused() {
        let mut vram = allocator(GIB);
        let offset = vram.allocate(2 * MIB).unwrap();
        assert!(matches!(
            vram.free(offset, MIB),
            Err(VramError::NotAllocated { .. })
        ));
        assert!(matches!(
            vram.free(offset + 2 * MIB, 2 * MIB),
            Err(VramError::NotAllocated { .. })
        ));
        vram.free(offset, 2 * MIB).unwrap();
        assert!(matches!(
            vram.free(offset, 2 * MIB),
            Err(VramError::NotAllocated { .. })
        ));
        assert_eq!(vram.free_bytes(), GIB);
    }

    #[test]
    fn placement_returns_its_range_when_dropped() {
        let shared = Arc::new(Mutex::new(allocator(4 * MIB)));
        let placement = Placement::allocate(&shared, 4 * MIB).unwrap();
        assert_eq!(lock(&shared).free_bytes(), 0);
        drop(placement);
        assert_eq!(lock(&shared).free_bytes(), 4 * MIB);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u32),
        Free(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            3 => (0u32..7).prop_map(Op::Allocate),
            2 => any::<usize>().prop_map(Op::Free),
        ];
        prop::collection::vec(op, 0..64)
    }

    proptest! {
        #[test]
        fn random_sequences_keep_slices_disjoint_inside_vram_and_accounted(
            vram_mib in 1u64..=96,
            ops in ops(),
        ) {
            let vram_size = vram_mib * MIB;
            let mut vram = allocator(vram_size);
            let initial_largest = vram.largest_free_block();
            let mut live: Vec<(u64, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Allocate(order) => {
                        let size = MIB << order;
                        let fits = vram.largest_free_block() >= size;
                        match vram.allocate(size) {
                            Ok(offset) => {
                                prop_assert!(fits);
                                prop_assert_eq!(offset % size, 0);
                                prop_assert!(offset + size <= vram_size);
                                for &(other, other_size) in &live {
                                    prop_assert!(offset + size <= other || other + other_size <= offset);
                                }
                                live.push((offset, size));
                            }
                            Err(VramError::OutOfVram { .. }) => prop_assert!(!fits),
                            Err(other) => prop_assert!(false, "unexpected {other}"),
                        }
                    }
                    Op::Free(pick) if !live.is_empty() => {
                        let (offset, size) = live.swap_remove(pick % live.len());
                        prop_assert!(vram.free(offset, size).is_ok());
                    }
                    Op::Free(_) => {}
                }
                let used: u64 = live.iter().map(|&(_, size)| size).sum();
                prop_assert_eq!(vram.free_bytes(), vram_size - used);
            }
            for (offset, size) in live.drain(..) {
                prop_assert!(vram.free(offset, size).is_ok());
            }
            prop_assert_eq!(vram.free_bytes(), vram_size);
            prop_assert_eq!(vram.largest_free_block(), initial_largest);
            if vram_size.is_power_of_two() {
                prop_assert_eq!(vram.largest_free_block(), vram_size);
            }
        }
    }
}
