//! The physical GPU abstraction: what the daemon needs from a GPU to carve
//! vGPUs out of it.
//!
//! The simulated GPU ([`crate::SimGpu`]) is the embedded default; a real
//! backend (a PCI GPU through vfio-pci, a CUDA device) is one more
//! implementation. Capabilities that later issues add (the MMU, engines,
//! interrupts) become their own traits, so a backend states what it has
//! instead of inheriting methods that fail at run time.

use std::fmt;

use crate::allocator::SliceAllocator;
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
}
