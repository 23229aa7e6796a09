//! Channels and commands over vfio-user, tested from the documentation
//! alone (`docs/device-interface.md` "The GPU MMU", "Channels",
//! "Commands"; `docs/scheduling.md`; `docs/control-api.md`;
//! `docs/vfio-user.md`), without reading the daemon's implementation and
//! without the `vgpu-commands` crate: [`cmd`] encodes the commands from the
//! document's bit layouts. Every test asserts a documented outcome; a test
//! marked `#[ignore = "BUG: ..."]` documents a place where the running
//! daemon does not do what the documents say.
//!
//! A bug found here (a taken submission that sat unrun until the next
//! doorbell, tested in [`sched`]) made tests about other things flaky
//! while it lived; with `ENGINES_KICK=1` the rig's waiting helpers ring a
//! NOP when a channel with work shows no progress for a second and say
//! `KICK:` on stderr, to tell such a bug from the one a test is about.
//! Off by default: a stranded submission fails the test.
//!
//! - [`basics`]: the first command, wrap-around, positive controls.
//! - [`privileged`]: every privileged form at every nesting level.
//! - [`validation`]: opcodes, lengths, reserved bits, fields, 2^48.
//! - [`toctou`]: rings and batches rewritten after the doorbell.
//! - [`fetch`]: rings and batches where the MMU cannot read them.
//! - [`runaway`]: self-starting batches, depth, the 1 MiB and 4096 limits.
//! - [`faults`]: engine faults, and memory outside the vGPU byte for byte.
//! - [`watchdog`]: hung semaphores and long submissions, and recovery.
//! - [`control_page`]: the doorbell without an exit.
//! - [`bounds`]: queued submissions, bytes, waiting doorbells, unmap and
//!   reset under running engines.
//! - [`interrupts`]: channel vectors and INTR_STATUS.
//! - [`tlb`]: TLB_INVALIDATE as a command, and what its walk costs others.
//! - [`scanout`]: SET_SCANOUT surfaces when they run.
//! - [`sched`]: the GPU's scheduler between two flooding vGPUs, and work
//!   that is taken but not run.
//! - [`counters`]: the control API's per-vGPU engine counters.

mod basics;
mod bounds;
mod cmd;
mod control_page;
mod counters;
mod faults;
mod fetch;
mod interrupts;
mod privileged;
mod rig;
mod runaway;
mod scanout;
mod sched;
mod tlb;
mod toctou;
mod validation;
mod watchdog;
