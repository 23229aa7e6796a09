//! Hostile-VMM tests written from the documentation alone
//! (`docs/vfio-user.md`, `docs/device-interface.md`, `docs/operations.md`,
//! `docs/configuration.md`, `docs/control-api.md`), without reading the
//! daemon's implementation. Every test asserts a documented outcome; a
//! test marked `#[ignore = "BUG: ..."]` documents a place where the running
//! daemon does not do what the documents say.
//!
//! - [`vram`]: VRAM isolation between attachments and abuse of BAR0's fd.
//! - [`irqs`]: interrupt eventfds that are full, blocking or not eventfds,
//!   and when an interrupt is signalled relative to replies.
//! - [`dma`]: DMA windows and their bounds, exact unmaps, the self-test
//!   queue, server requests left unanswered, disconnects mid-DMA.
//! - [`mmu`]: the GPU MMU's walk bounds, page budget, cycle rule, fault
//!   reasons, fault log, register interleavings and reset values.
//! - [`protocol`]: commands before VERSION, reads with NO_REPLY, commands
//!   the daemon does not implement.
//! - [`resources`]: what a client can make the daemon hold (memory,
//!   descriptors, mappings, threads) and log flooding.
//! - [`lifecycle`]: socket modes, SIGTERM under misbehaving clients, the
//!   control API while clients misbehave.

mod dma;
mod irqs;
mod lifecycle;
mod mmu;
mod protocol;
mod resources;
mod rig;
mod vram;
