//! What the engine benches share (each bench binary includes this module
//! with `mod common;`):
//!
//! - [`rig`]: one vGPU set up as a guest driver would for engine work
//!   (page tables in VRAM, rings, fences, control pages), reached through
//!   the raw client and the BAR0 mmap;
//! - [`flood`]: a client thread that keeps a vGPU's engine queue full;
//! - [`floor`]: the Unix-socket echo floor, as `bar2_rtt` measures it;
//! - [`stats`]: medians, quantiles and Jain's index;
//! - [`host`]: the machine, the daemon binary, environment knobs, and what
//!   the daemon process uses (CPU time, memory) from /proc.
//!
//! Benches report; they fail only when the device does not do what it
//! should (a channel stops, a fence never comes, data is wrong).

// Each bench binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod flood;
pub mod floor;
pub mod host;
pub mod rig;
pub mod stats;
