//! vgpu-mdev: physical GPUs and the vGPUs carved out of them.
//!
//! - [`PhysicalGpu`] is the physical GPU abstraction; [`SimGpu`] is the
//!   simulated GPU, the embedded default backend.
//! - VRAM is sliced by a buddy allocator ([`SliceAllocator`]) into
//!   [`VramSlice`]s, each its own memfd that can be handed to a VMM.
//! - [`ParentGpu`] partitions a GPU into [`VgpuInstance`]s of validated
//!   types ([`Profile`]), refusing what does not fit.
//! - [`DmaWindows`] holds the guest memory a VMM mapped for one vGPU, with
//!   its permissions.
//! - [`SimMmu`] is the simulated GPU's MMU: per-context page tables that
//!   the daemon programs through [`shadow_mmu::PhysicalMmu`], a TLB, and
//!   the translation engines use; [`EngineMemory`] reads and writes at GPU
//!   virtual addresses through it.
//! - [`VirtualGpu`] is one vGPU's device state (registers, interrupts,
//!   GPU MMU, DMA windows), which outlives connections; a transport feeds
//!   it requests.
//! - [`ByteSize`] prints and parses sizes ("512 MiB") for errors and
//!   configuration.
//!
//! `unsafe` code lives only where host memory is touched: the raw copies in
//! [`VramSlice`] and [`LocalDma`], each with its invariant stated.

mod allocator;
mod bytesize;
mod dma;
mod engine;
mod error_chain;
mod log_limit;
mod mmu;
mod owned;
mod parent;
mod physical;
mod profile;
mod sched;
mod sim;
mod slice;
mod sync;
mod vgpu;

pub use allocator::{MIN_SLICE_SIZE, SliceAllocator};
pub use bytesize::{ByteSize, ByteSizeError};
pub use dma::{
    BASE_RESERVED_BYTES, BASE_RESERVED_MAPPINGS, BudgetError, DmaAllowance, DmaBacking, DmaBudget,
    DmaError, DmaGrant, DmaTarget, DmaWindowInfo, DmaWindows, LocalDma, MAPPINGS_PER_VGPU,
    SystemLimits,
};
pub use engine::{
    AccessFault, ChannelMemory, ENGINE_CHUNK, EngineSlot, GpuEngine, MAX_QUEUED_SUBMISSIONS,
    SEMAPHORE_TIMEOUT_MS, SUBMISSION_TIME_LIMIT_MS,
};
pub use error_chain::ErrorChain;
pub use log_limit::LogLimit;
pub use mmu::{
    Access, BoundContexts, ClientPiece, Completion, ContextError, ContextIds, EngineMemory,
    EngineMemoryError, GPU_VA_BITS, MAX_CONTEXTS, Mapping, MmuFault, MmuFaultReason, Partition,
    PartitionMmu, PhysicalAddress, PrivilegedAccess, SimMmu, SimMmuError, TLB_ENTRIES,
};
pub use owned::OwnedMemory;
pub use parent::{CreateError, InstanceSummary, ParentGpu, VgpuInstance};
pub use physical::PhysicalGpu;
pub use profile::{MAX_CHANNELS, MAX_RESOLUTION_SIDE, MAX_WEIGHT, Profile, ProfileError};
pub use sched::{
    Decision, EngineScheduler, Nanos, SchedError, SchedStats, SchedulingPolicy, TimeSlice,
    jain_index,
};
pub use sim::SimGpu;
pub use slice::{VramAperture, VramError, VramSlice};
pub use vgpu::{
    ERROR_BAD_SURFACE, ERROR_ENGINE_FAULT, ERROR_WATCHDOG, EngineTime, GpuMemory, GpuMmu,
    GpuMmuError, Hardware, InterruptTrigger, MmuOutcome, Signalled, Signals, Trigger, TurnEnd,
    UnmapError, Unmapped, VgpuStats, VirtualGpu, VirtualGpuError, device_config, vector_bits,
};
