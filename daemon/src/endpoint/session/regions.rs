//! Region info, reads and writes: the register path.
//!
//! BAR0 is the attachment's VRAM aperture (read and written straight
//! through the daemon's mapping); every other region is the device model,
//! under the vGPU's `hw` lock.

use vgpu_emulation::{Effects, RegionFlags, RegionIndex};
use vgpu_mdev::VgpuStats;
use vgpu_protocol::{Header, MmapArea, RegionInfo, RegionInfoReply};

use super::{Refusal, Session};

/// The device's region `index`, or a refusal.
pub(super) fn region_index(index: u32) -> Result<RegionIndex, Refusal> {
    RegionIndex::try_from(index).map_err(|_| Refusal::NoRegion(index))
}

impl Session<'_> {
    /// Encodes `GET_REGION_INFO`'s reply; true when the reply is whole and
    /// offers an mmap, so the aperture's fd goes with it.
    pub(super) fn region_info(
        &mut self,
        header: &Header,
        argsz: u32,
        index: u32,
    ) -> Result<bool, Refusal> {
        let region = region_index(index)?;
        let info = self.vgpu.hw().device.region_info(region);
        let area = [MmapArea {
            offset: 0,
            size: info.size,
        }];
        let areas: &[MmapArea] = if info.mmap_whole { &area } else { &[] };
        let wire = RegionInfo {
            index,
            flags: region_flags(info.flags),
            size: info.size,
            offset: 0,
        };
        let reply =
            vgpu_protocol::encode_region_info_reply(&mut self.out, header, argsz, &wire, areas)
                .map_err(Refusal::Reply)?;
        Ok(reply == RegionInfoReply::Complete && !areas.is_empty())
    }

    pub(super) fn region_read(
        &mut self,
        header: &Header,
        region: u32,
        offset: u64,
        count: u32,
    ) -> Result<(), Refusal> {
        let index = region_index(region)?;
        let slot =
            vgpu_protocol::encode_region_read_reply(&mut self.out, header, region, offset, count)
                .map_err(Refusal::Reply)?;
        if index == RegionIndex::BAR0 {
            self.aperture.read(offset, slot).map_err(Refusal::Vram)
        } else {
            VgpuStats::count(&self.vgpu.stats().register_reads, 1);
            self.vgpu
                .hw()
                .device
                .read(index, offset, slot)
                .map_err(|source| Refusal::Region { region, source })
        }
    }

    pub(super) fn region_write(
        &mut self,
        header: &Header,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<Effects, Refusal> {
        let index = region_index(region)?;
        let mut effects = if index == RegionIndex::BAR0 {
            self.aperture.write(offset, data).map_err(Refusal::Vram)?;
            Effects::NONE
        } else {
            VgpuStats::count(&self.vgpu.stats().register_writes, 1);
            self.vgpu
                .hw()
                .device
                .write(index, offset, data)
                .map_err(|source| Refusal::Region { region, source })?
        };
        // A channel reset and a doorbell are done when the write is
        // answered: the reset channel runs nothing more, and the rung
        // channel's commands are validated into the device's copy, so the
        // guest may reuse its ring at once (docs/device-interface.md,
        // "Channels").
        // The common register write asks for none of this: one branch.
        if effects.channel_resets | effects.doorbells != 0 || effects.control_pages {
            let device = self.vgpu.device();
            device.reset_channels(std::mem::take(&mut effects.channel_resets));
            device.doorbells(std::mem::take(&mut effects.doorbells));
            if std::mem::take(&mut effects.control_pages) {
                device.control_pages_changed();
            }
        }
        vgpu_protocol::encode_region_write_reply(
            &mut self.out,
            header,
            region,
            offset,
            data.len() as u32,
        );
        Ok(effects)
    }
}

/// The wire form of the device model's region flags.
pub(super) fn region_flags(flags: RegionFlags) -> vgpu_protocol::wire::RegionFlags {
    use vgpu_protocol::wire::RegionFlags as Wire;
    Wire::from_bits(flags.bits() & Wire::KNOWN.bits()).unwrap_or(Wire::EMPTY)
}
