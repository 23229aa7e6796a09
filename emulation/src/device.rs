//! The vGPU device model: one value that owns config space and BAR2 and
//! answers region accesses, returning the effects for its owner to apply.

use crate::bar2::Bar2;
use crate::bar2::dispi::ScanoutMode;
use crate::bar2::layout::BAR2_SIZE;
use crate::bar2::msix::MsixEntry;
use crate::config::{DeviceConfig, DeviceConfigError};
use crate::edid::{EDID_BLOCK_SIZE, edid_block};
use crate::effects::{DmaFault, Effects, Fault, FaultReason, Translation};
use crate::pci::PciConfig;
use crate::region::{
    AccessError, CONFIG_SPACE_SIZE, RegionFlags, RegionIndex, RegionInfo, check_range,
};

/// EDID serial number: the profile carries no per-instance serial, and 0
/// means "not used" in EDID 1.4.
const EDID_SERIAL: u32 = 0;

/// One guest-visible vGPU: PCI config space and the BAR2 registers.
///
/// BAR0 (VRAM) is served by the owner from the VRAM slice; this type only
/// reports its region info. Interrupt routing is [`Interrupts`](crate::Interrupts),
/// also owned by the owner, who delivers the vectors of [`Effects`].
#[derive(Debug, Clone)]
pub struct VgpuDevice {
    config: DeviceConfig,
    pci: PciConfig,
    bar2: Bar2,
}

impl VgpuDevice {
    /// Builds a device at reset for `config`, after validating it.
    pub fn new(config: DeviceConfig) -> Result<Self, DeviceConfigError> {
        config.validate()?;
        let edid = edid_block(config.max_resolution, EDID_SERIAL).map_err(|source| {
            DeviceConfigError::Resolution {
                resolution: config.max_resolution,
                source,
            }
        })?;
        Ok(VgpuDevice {
            pci: PciConfig::new(&config),
            bar2: Bar2::new(&config, edid),
            config,
        })
    }

    /// The profile the device was built from.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Size and flags of one of the nine VFIO PCI regions.
    pub fn region_info(&self, index: RegionIndex) -> RegionInfo {
        let rw = RegionFlags::READ | RegionFlags::WRITE;
        match index {
            RegionIndex::BAR0 => RegionInfo {
                size: self.config.vram_size,
                flags: rw | RegionFlags::MMAP,
                mmap_whole: true,
            },
            RegionIndex::BAR2 => RegionInfo {
                size: BAR2_SIZE,
                flags: rw,
                mmap_whole: false,
            },
            RegionIndex::CONFIG => RegionInfo {
                size: CONFIG_SPACE_SIZE,
                flags: rw,
                mmap_whole: false,
            },
            _ => RegionInfo::ABSENT,
        }
    }

    /// Checks an access against the region's size and access rules.
    fn check(&self, region: RegionIndex, offset: u64, len: usize) -> Result<(), AccessError> {
        if region == RegionIndex::BAR0 {
            return Err(AccessError::NotEmulated(region));
        }
        let size = self.region_info(region).size;
        if size == 0 {
            return Err(AccessError::EmptyRegion(region));
        }
        let bad_length = AccessError::BadLength { region, len };
        match region {
            RegionIndex::BAR2 if !matches!(len, 1 | 2 | 4 | 8) => return Err(bad_length),
            _ if len == 0 => return Err(bad_length),
            _ => {}
        }
        check_range(region, offset, len, size)?;
        if region == RegionIndex::BAR2 && !offset.is_multiple_of(len as u64) {
            return Err(AccessError::Misaligned {
                region,
                offset,
                len,
            });
        }
        Ok(())
    }

    /// Reads `data.len()` bytes at `offset` of `region`. Reads have no side
    /// effects; `&mut` leaves room for devices whose reads do.
    pub fn read(
        &mut self,
        region: RegionIndex,
        offset: u64,
        data: &mut [u8],
    ) -> Result<(), AccessError> {
        self.check(region, offset, data.len())?;
        if region == RegionIndex::CONFIG {
            self.pci.read(offset, data);
        } else {
            self.bar2.read(offset, data);
        }
        Ok(())
    }

    /// Writes `data` at `offset` of `region` and returns what the owner must
    /// do (raise vectors, run a DMA).
    pub fn write(
        &mut self,
        region: RegionIndex,
        offset: u64,
        data: &[u8],
    ) -> Result<Effects, AccessError> {
        self.check(region, offset, data.len())?;
        if region == RegionIndex::CONFIG {
            self.pci.write(offset, data);
            Ok(Effects::NONE)
        } else {
            Ok(self.bar2.write(offset, data))
        }
    }

    /// The oldest outstanding [`DmaRequest`](crate::DmaRequest): the owner
    /// runs the device's requests one at a time in this order (at most
    /// [`DMA_QUEUE_DEPTH`](crate::bar2::DMA_QUEUE_DEPTH) are outstanding).
    pub fn next_dma(&self) -> Option<crate::DmaRequest> {
        self.bar2.next_dma()
    }

    /// Reports the outcome of the oldest outstanding
    /// [`DmaRequest`](crate::DmaRequest) ([`next_dma`](Self::next_dma)):
    /// sets DMA_STATUS and DMA_COUNT, the error registers on failure, and
    /// IRQ_STATUS.DMA_DONE; vector 0 is raised if IRQ_MASK lets DMA_DONE
    /// (or ERROR) through. Without a request outstanding (none was made, or
    /// a reset dropped it) this does nothing.
    pub fn complete_dma(&mut self, result: Result<(), DmaFault>) -> Effects {
        self.bar2.complete_dma(result)
    }

    /// Records a GPU MMU fault the owner met on behalf of a channel (a walk
    /// or an engine access that faulted): FAULT_VA and FAULT_INFO take it
    /// unless an earlier fault is unacknowledged, FAULT_COUNT counts it,
    /// IRQ_STATUS.FAULT is set, and vector 0 is raised if IRQ_MASK lets
    /// FAULT through.
    pub fn record_fault(&mut self, fault: Fault) -> Effects {
        self.bar2.record_fault(fault)
    }

    /// Reports the outcome of the last
    /// [`MmuRequest::Translate`](crate::MmuRequest::Translate): sets
    /// XLATE_STATUS, XLATE_RESULT and XLATE_TARGET, and on a fault records
    /// it as [`record_fault`](Self::record_fault) does. Without a request
    /// outstanding (none was made, or a reset dropped it) this does
    /// nothing. The owner completes it before it answers the next register
    /// access, so that a guest reading XLATE_STATUS sees the result.
    pub fn complete_translate(&mut self, result: Result<Translation, FaultReason>) -> Effects {
        self.bar2.complete_translate(result)
    }

    /// Channel `channel`'s PT_ROOT as the guest last wrote it (both halves,
    /// committed or not), or `None` if the channel does not exist.
    pub fn page_table_root(&self, channel: u32) -> Option<u64> {
        self.bar2.page_table_root(channel)
    }

    /// Returns every register to its reset value (device reset or client
    /// disconnect). The owner resets interrupt routing, DMA maps and VRAM,
    /// and empties the MMU contexts of the channels.
    pub fn reset(&mut self) {
        self.pci.reset();
        self.bar2.reset();
    }

    /// The frame the display shows: `None` while the display is disabled
    /// or the mode is invalid.
    pub fn scanout(&self) -> Option<ScanoutMode> {
        self.bar2.scanout()
    }

    /// Shows `mode` on head 0 until the guest writes a DISPI register or
    /// the device is reset: what a SET_SCANOUT command does, once the
    /// owner has checked that the surface lies in the VRAM slice.
    pub fn set_plane(&mut self, mode: ScanoutMode) {
        self.bar2.set_plane(mode);
    }

    /// Command register bit 10: the guest disabled INTx.
    pub fn intx_disabled(&self) -> bool {
        self.pci.intx_disabled()
    }

    /// Mirrors the INTx line into status bit 3 (interrupt status).
    pub fn set_intx_asserted(&mut self, asserted: bool) {
        self.pci.set_intx_asserted(asserted);
    }

    /// The channel registers (ring state, fences, errors).
    pub fn channels(&self) -> &crate::bar2::channels::ChannelRegisters {
        self.bar2.channels()
    }

    /// The channel registers, for the owner's reports of progress,
    /// fences and errors; their [`Effects`] are the owner's to apply.
    pub fn channels_mut(&mut self) -> &mut crate::bar2::channels::ChannelRegisters {
        self.bar2.channels_mut()
    }

    /// MSI-X table entry `vector` as the guest programmed it.
    pub fn msix_entry(&self, vector: u32) -> Option<MsixEntry> {
        self.bar2.msix().entry(vector)
    }

    /// The EDID base block the display reports.
    pub fn edid(&self) -> &[u8; EDID_BLOCK_SIZE] {
        self.bar2.edid()
    }
}

#[cfg(test)]
mod tests;
