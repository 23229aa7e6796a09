//! The physical GPU abstraction: what the daemon needs from a GPU to carve
//! vGPUs out of it.
//!
//! The simulated GPU ([`crate::SimGpu`]) is the embedded default; a real
//! backend (a PCI GPU through vfio-pci, a CUDA device) is one more
//! implementation. Capabilities with state of their own are traits of their
//! own that the GPU hands out ([`PartitionMmu`] for the MMU contexts of one
//! vGPU), so that a vGPU holds its part of the GPU and locks nothing
//! another vGPU locks.

use std::fmt;

use crate::allocator::SliceAllocator;
use crate::mmu::{ContextError, PartitionMmu};
use crate::slice::{VramError, VramSlice};

/// A physical GPU whose VRAM can be sliced among vGPUs.
pub trait PhysicalGpu: Send + Sync + fmt::Debug {
    /// The GPU's name in configuration, logs and errors (e.g. "gpu0").
    fn id(&self) -> &str;

    /// Total VRAM in bytes.
    fn vram_size(&self) -> u64;

    /// Allocates a slice of `size` bytes (a power of two, at least 1 MiB),
    /// naturally aligned in the GPU's VRAM address space. The slice owns its
    /// range until dropped. What a client is given of it is per attachment
    /// ([`VramSlice::renew`]): a client that leaves keeps its mapping, so
    /// the next one must get memory the earlier one cannot reach (a fresh
    /// memfd here; a real GPU revokes the old mapping of its BAR).
    fn allocate_slice(&self, size: u64) -> Result<VramSlice, VramError>;

    /// A copy of the current VRAM placement, for dry runs that must answer
    /// "would these slices fit now?" without allocating anything.
    fn vram_placement(&self) -> SliceAllocator;

    /// Binds `count` contexts of the GPU's MMU (one per channel) to
    /// `slice`'s partition of VRAM. Their ids are the GPU's, unique among
    /// all its vGPUs, and go back to the GPU when the result is dropped;
    /// nothing translated in them reaches VRAM outside the slice.
    fn bind_contexts(
        &self,
        slice: &VramSlice,
        count: u32,
    ) -> Result<Box<dyn PartitionMmu>, ContextError>;
}
