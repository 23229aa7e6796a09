//! The simulated GPU's engines: what runs a vGPU's validated submissions.
//!
//! - `work`: the submissions each channel holds and the limits on them;
//! - `memory`: a channel's GPU virtual memory for the validator and the
//!   engines ([`ChannelMemory`]), and how their faults are reported;
//! - `runner`: the engine thread of a GPU and its scheduler
//!   ([`GpuEngine`], [`EngineSlot`]).
//!
//! The commands themselves are executed by the vGPU that owns them
//! (`vgpu::engines`), one step at a time under its `work` lock.

pub(crate) mod memory;
mod runner;
pub(crate) mod work;

pub use memory::{AccessFault, ChannelMemory};
pub use runner::{EngineSlot, GpuEngine};
pub use work::{
    ENGINE_CHUNK, MAX_QUEUED_SUBMISSIONS, SEMAPHORE_TIMEOUT_MS, SUBMISSION_TIME_LIMIT_MS,
};
