//! vgpud: carves physical GPUs into vGPUs and serves each one to a VMM as a
//! PCI device over its own vfio-user socket.
//!
//! - [`config`]: the TOML configuration and its validation.
//! - [`access`]: who may connect to a socket (owner, group, mode).
//! - [`daemon`]: start-up, serving, shutdown ([`run`]).
//! - `endpoint`: one vGPU's vfio-user socket and its client session.
//! - [`control`]: the control API that `vgpuctl` speaks.
//! - [`vgpu`]: one vGPU: its VRAM slice, device model and client.
//! - [`screenshot`]: PNG captures of a vGPU's scanout.

pub mod access;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deadline;
mod endpoint;
pub mod metrics;
pub mod error_chain {
    //! One line for an error and its causes (the type lives in `mdev`).
    pub use vgpu_mdev::ErrorChain;
}
pub mod eventfd;
pub mod log_limit {
    //! Rate-limited log lines (the type lives in `mdev`, whose engines log
    //! too).
    pub use vgpu_mdev::LogLimit;
}
pub mod notify;
pub mod registry;
pub mod screenshot;
pub mod socket;
pub mod state;
pub mod vgpu;

pub use daemon::{Registry, run};
