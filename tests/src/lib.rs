//! Integration tests of vgpud, driven through its sockets.
//!
//! - [`client`]: `RawClient`, an independent vfio-user client (it shares no
//!   code with the daemon's protocol crate, so a symmetric codec bug cannot
//!   hide), with [`wire`] its message layouts.
//! - [`daemon`]: `TestDaemon`, which runs a `vgpud` binary on a [`config`]
//!   in a temporary directory and stops it when dropped.
//! - [`device`]: register helpers, BAR0 mapping and the DMA self-test.
//! - [`regs`]: the device contract of `docs/device-interface.md` as constants.
//! - [`host`]: eventfds and memfd guest memory, as a VMM hands them over.
//! - [`page_tables`]: guest GPU page tables written into VRAM or guest
//!   memory, and the MMU registers (roots, invalidation, translate port).
//! - [`timeout`]: running clients that have no timeouts under a deadline.
//! - [`control`]: requests on the daemon's control socket.
//! - [`process`]: the daemon's memory, descriptors, mappings and threads,
//!   from /proc.

pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod device;
pub mod host;
pub mod page_tables;
pub mod process;
pub mod regs;
pub mod timeout;
pub mod wire;

pub use client::{ClientError, DmaMapRequest, RawClient, Region};
pub use config::{DaemonConfig, VGPU_A, VGPU_B};
pub use daemon::TestDaemon;
pub use host::{EventFd, GuestMemory};
