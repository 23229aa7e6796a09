//! What `docs/device-interface.md` settles about the GPU MMU beyond the
//! page format: when and how far the daemon walks, the bounds of a walk
//! and of a vGPU's translations, and the details a driver relies on
//! (fault reasons after DMA_UNMAP, register values after refusals and
//! reset, interrupts, memory that the VMM truncates). One test per rule,
//! each against the running daemon over vfio-user.
//!
//! - `walks`: when the daemon walks and how far, the walk bounds, and the
//!   page budget the channels share;
//! - `entries`: cycles (by address, not memory) and VALID-clear entries;
//! - `registers`: refused commands, PT_ROOT's reset value, FAULT_INFO,
//!   interrupts, the bus-master bit;
//! - `memory`: DMA_UNMAP, the DMA self-test across maps, memory the VMM
//!   truncates.

mod entries;
mod memory;
mod registers;
mod rig;
mod walks;
