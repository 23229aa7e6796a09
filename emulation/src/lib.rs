//! The guest-visible vGPU device model: PCI configuration space, the BAR2
//! register file (EDID, VGA/VBE display registers, the vGPU control block,
//! MSI-X table), the scanout mode, and interrupt routing.
//!
//! Transport-free and I/O-free: accesses come in as (region, offset,
//! bytes), and what the device wants done comes back as [`Effects`] —
//! vectors to raise, a DMA copy to run, an MMU operation — for the owner
//! to apply. The
//! contract implemented here is `docs/device-interface.md`.
//!
//! How an owner drives it:
//!
//! ```
//! use vgpu_emulation::bar2::layout::CTRL_SELFTEST;
//! use vgpu_emulation::{
//!     DeviceConfig, Interrupts, IrqAction, IrqData, RegionIndex, Resolution, SetIrqs, VgpuDevice,
//! };
//!
//! let mut device = VgpuDevice::new(DeviceConfig {
//!     vram_size: 64 << 20,
//!     channels: 2,
//!     max_resolution: Resolution { width: 1920, height: 1080 },
//!     subsystem_vendor_id: 0x1af4,
//!     subsystem_id: 0x1100,
//! })?;
//! // The owner keeps interrupt routing beside the device; `T` is its
//! // trigger type (an eventfd in the daemon).
//! let mut irqs: Interrupts<&str> = Interrupts::new(device.config().msix_vectors());
//! irqs.set_irqs(SetIrqs {
//!     index: 2, // MSI-X
//!     action: IrqAction::Trigger,
//!     start: 0,
//!     count: 1,
//!     data: IrqData::Triggers(vec![Some("eventfd for vector 0")]),
//! })?;
//!
//! let effects = device.write(RegionIndex::BAR2, CTRL_SELFTEST, &0u32.to_le_bytes())?;
//! for vector in effects.raised_vectors() {
//!     let trigger = irqs.raise(vector, device.intx_disabled());
//!     assert_eq!(trigger, Some(&"eventfd for vector 0")); // the owner signals it
//! }
//! // Keep the status register's interrupt bit in step with INTx.
//! device.set_intx_asserted(irqs.intx_asserted());
//! if let Some(_dma) = effects.dma {
//!     // Check the DMA maps, copy, then report (and apply the new effects).
//!     let _more = device.complete_dma(Ok(()));
//! }
//! if let Some(_request) = effects.mmu {
//!     // Program or invalidate the shadow page tables; a translation is
//!     // reported back with `device.complete_translate(..)`.
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules:
//! - [`pci`]: config space as a register table, the header and capabilities.
//! - [`bar2`]: BAR2 layout and its blocks ([`bar2::dispi`], [`bar2::control`],
//!   [`bar2::mmu`], [`bar2::msix`]).
//! - [`edid`]: the EDID 1.4 generator.
//! - [`interrupts`]: `GET_IRQ_INFO` / `SET_IRQS` and vector routing.
//! - [`region`]: the nine VFIO regions and access errors.
//! - [`effects`]: what an access asks the owner to do.
//! - [`config`]: the profile parameters and their validation.
//! - [`errno`]: the errno numbers errors map to.
//! - [`fuzzing`]: the harness of the `device_access` fuzz target, which
//!   checks the device's contract after every guest access and owner
//!   event; the property tests and the seed replay use it too.
#![forbid(unsafe_code)]

pub mod bar2;
pub mod config;
mod device;
pub mod edid;
pub mod effects;
pub mod errno;
pub mod fuzzing;
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
pub use effects::{
    DmaDirection, DmaFault, DmaRequest, Effects, Fault, FaultReason, MmuRequest, Translation,
};
pub use interrupts::{
    Interrupts, IrqAction, IrqData, IrqError, IrqIndex, IrqInfo, SetIrqs, SetIrqsOutcome,
};
pub use region::{AccessError, REGION_COUNT, RegionFlags, RegionIndex, RegionInfo};
