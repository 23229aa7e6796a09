//! What a hostile VMM can do to the daemon, tried over vfio-user against
//! the real binary: reach another attachment's VRAM, hang the daemon with
//! its eventfds, exhaust the mappings and address space every vGPU needs,
//! grow the daemon's memory, flood its log. Each module holds the attacks
//! on one resource; `soak` runs them all against one vGPU while a second
//! one keeps serving, and checks the daemon's resources against the bounds
//! `docs/` states.

mod dma;
mod irqs;
mod logs;
mod rig;
mod soak;

mod vram;
