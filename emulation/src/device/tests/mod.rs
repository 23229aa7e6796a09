//! Device-level tests: every guest-visible behaviour through `read`/`write`.

use super::*;

mod bar2;
mod mmu;
mod pci;
mod props;

pub(super) fn config() -> DeviceConfig {
    DeviceConfig {
        vram_size: 256 << 20,
        channels: 7,
        max_resolution: crate::Resolution {
            width: 1920,
            height: 1080,
        },
        subsystem_vendor_id: 0x1af4,
        subsystem_id: 0x1100,
    }
}

pub(super) fn device() -> VgpuDevice {
    VgpuDevice::new(config()).unwrap()
}

/// Test-side accessors: reads and writes of a fixed width.
pub(super) trait Access {
    fn cfg_read(&mut self, offset: u64, len: usize) -> u64;
    fn cfg_write(&mut self, offset: u64, len: usize, value: u64);
    fn bar2_read(&mut self, offset: u64, len: usize) -> u64;
    fn bar2_write(&mut self, offset: u64, len: usize, value: u64) -> Effects;
}

fn read_le(dev: &mut VgpuDevice, region: RegionIndex, offset: u64, len: usize) -> u64 {
    let mut buf = [0u8; 8];
    dev.read(region, offset, &mut buf[..len]).unwrap();
    u64::from_le_bytes(buf)
}

impl Access for VgpuDevice {
    fn cfg_read(&mut self, offset: u64, len: usize) -> u64 {
        read_le(self, RegionIndex::CONFIG, offset, len)
    }

    fn cfg_write(&mut self, offset: u64, len: usize, value: u64) {
        let effects = self
            .write(RegionIndex::CONFIG, offset, &value.to_le_bytes()[..len])
            .unwrap();
        assert!(effects.is_empty());
    }

    fn bar2_read(&mut self, offset: u64, len: usize) -> u64 {
        read_le(self, RegionIndex::BAR2, offset, len)
    }

    fn bar2_write(&mut self, offset: u64, len: usize, value: u64) -> Effects {
        self.write(RegionIndex::BAR2, offset, &value.to_le_bytes()[..len])
            .unwrap()
    }
}
