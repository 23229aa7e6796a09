//! PCI configuration space of the vGPU: the register-table machinery, the
//! type 0 header and the capability list, assembled.

pub mod capabilities;
pub mod config_space;
pub mod header;

use crate::config::DeviceConfig;
use capabilities::{lay_out, vgpu_capabilities};
use config_space::ConfigSpace;
use header::{
    COMMAND_INTX_DISABLE, HeaderParams, PCI_COMMAND, PCI_STATUS, STATUS_INTERRUPT, header,
};

/// The vGPU's configuration space.
#[derive(Debug, Clone)]
pub struct PciConfig {
    space: ConfigSpace,
}

impl PciConfig {
    /// Builds the configuration space for a validated profile.
    pub fn new(config: &DeviceConfig) -> Self {
        // The capability layout and header are static tables whose fit is
        // covered by the tests; a failure here is a bug in those tables,
        // not something a profile or a guest can cause.
        let caps = lay_out(&vgpu_capabilities(config.vram_size, config.msix_vectors()))
            .expect("static capability layout fits in config space");
        let mut specs = header(HeaderParams {
            vram_size: config.vram_size,
            subsystem_vendor_id: config.subsystem_vendor_id,
            subsystem_id: config.subsystem_id,
            capabilities: caps.first,
        });
        specs.extend(caps.registers);
        let mut space = ConfigSpace::new(&specs).expect("static register table has no overlaps");
        for (offset, filter) in caps.filters {
            space.set_filter(offset, filter);
        }
        PciConfig { space }
    }

    /// Reads config space; the access has been range-checked.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        self.space.read(offset, data);
    }

    /// Writes config space; the access has been range-checked.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.space.write(offset, data);
    }

    /// The register file, for inspection.
    pub fn space(&self) -> &ConfigSpace {
        &self.space
    }

    /// Command register bit 10: the guest disabled INTx.
    pub fn intx_disabled(&self) -> bool {
        self.space.word(u64::from(PCI_COMMAND)) & COMMAND_INTX_DISABLE != 0
    }

    /// Drives status bit 3 (interrupt status).
    pub fn set_intx_asserted(&mut self, asserted: bool) {
        let mask = u32::from(STATUS_INTERRUPT) << 16;
        self.space
            .set_host_bits(u64::from(PCI_STATUS & !3), mask, asserted);
    }

    /// Returns every register to its reset value.
    pub fn reset(&mut self) {
        self.space.reset();
    }
}
