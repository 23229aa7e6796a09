//! Page-table attacks on the GPU MMU, written by an independent reviewer
//! from `docs/device-interface.md` ("The GPU MMU") and `docs/vfio-user.md`
//! alone, without reading the daemon's or the MMU's source.
//!
//! Every attack checks the three things the isolation contract promises:
//! the access faults with the documented reason (XLATE_STATUS), the fault
//! is reported (FAULT_VA, FAULT_INFO, FAULT_COUNT, IRQ_STATUS.FAULT and
//! vector 0), and nothing outside the vGPU's slice and maps changed. The
//! translate port reads no data, so "nothing changed" is checked on all the
//! memory the harness can see: every byte of the guest memfd (a mirror
//! records each byte the test wrote, so any byte the daemon wrote shows),
//! the memory served without an fd, and the VRAM slice, translation and
//! fault count of a second vGPU whose client stays connected throughout.
//!
//! The helpers are `#[track_caller]`, so a failure names the attacking line.

mod control;
mod entries;
mod rig;
