//! The guest-visible vGPU device model: PCI configuration space, the BAR2
//! register file (EDID, VGA/VBE display registers, the vGPU control block,
//! MSI-X table), the scanout mode, and interrupt routing.
//!
//! Transport-free and I/O-free: accesses come in as (region, offset,
//! bytes), and what the device wants done comes back as [`Effects`] —
//! vectors to raise, a DMA copy to run — for the owner to apply. The
//! contract implemented here is `docs/device-interface.md`.
//!
//! Modules:
//! - [`pci`]: config space as a register table, the header and capabilities.
//! - [`bar2`]: BAR2 layout and its blocks ([`bar2::dispi`], [`bar2::control`], [`bar2::msix`]).
//! - [`edid`]: the EDID 1.4 generator.
//! - [`interrupts`]: `GET_IRQ_INFO` / `SET_IRQS` and vector routing.
//! - [`region`]: the nine VFIO regions and access errors.
//! - [`effects`]: what an access asks the owner to do.
//! - [`config`]: the profile parameters and their validation.
//! - [`errno`]: the errno numbers errors map to.
#![forbid(unsafe_code)]

pub mod bar2;
pub mod config;
mod device;
pub mod edid;
pub mod effects;
pub mod errno;
pub mod interrupts;
mod lanes;
pub mod pci;
pub mod region;

pub use bar2::control::DeviceErrorCode;
pub use bar2::dispi::{PixelFormat, ScanoutMode};
pub use bar2::msix::MsixEntry;
pub use config::{DeviceConfig, DeviceConfigError, Resolution};
pub use device::VgpuDevice;
pub use edid::EdidError;
pub use effects::{DmaDirection, DmaFault, DmaRequest, Effects};
pub use interrupts::{
    Interrupts, IrqAction, IrqData, IrqError, IrqIndex, IrqInfo, SetIrqs, SetIrqsOutcome,
};
pub use region::{AccessError, REGION_COUNT, RegionFlags, RegionIndex, RegionInfo};
