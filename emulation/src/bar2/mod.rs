//! BAR2, the trapped register BAR: layout and dispatch to the blocks.
//!
//! Accesses arrive range-checked, 1, 2, 4 or 8 bytes and naturally aligned,
//! so none crosses a block (every block is 8-byte aligned and sized);
//! wider accesses are split into the block's registers, lowest first.

pub mod channels;
pub mod control;
pub mod dispi;
pub mod layout;
pub mod mmu;
pub mod msix;

use crate::config::DeviceConfig;
use crate::edid::EDID_BLOCK_SIZE;
use crate::effects::{DmaFault, Effects, Fault, FaultReason, Translation};
use crate::lanes::{lanes, merge};
use channels::ChannelRegisters;
use control::{ControlBlock, ControlIdentity};
use dispi::{DISPI_SLOTS, Dispi, QemuExt, ScanoutMode, VGA_PORT_COUNT, VgaPorts};
use layout::*;
use msix::MsixTable;

pub use control::{DMA_MAX_LENGTH, DMA_QUEUE_DEPTH};

/// The register blocks of BAR2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Edid,
    Vga,
    Dispi,
    Qext,
    Control,
    ChannelMmu,
    MsixTable,
    Channels,
    Reserved,
}

impl Block {
    /// The block `offset` falls in and the block's start.
    fn of(offset: u64) -> (Block, u64) {
        let within = |start: u64, size: u64| (start..start + size).contains(&offset);
        if within(EDID_OFFSET, EDID_REGION_SIZE) {
            (Block::Edid, EDID_OFFSET)
        } else if within(VGA_PORTS_OFFSET, VGA_PORT_COUNT as u64) {
            (Block::Vga, VGA_PORTS_OFFSET)
        } else if within(DISPI_OFFSET, 2 * DISPI_SLOTS as u64) {
            (Block::Dispi, DISPI_OFFSET)
        } else if within(QEXT_OFFSET, 8) {
            (Block::Qext, QEXT_OFFSET)
        } else if within(CONTROL_OFFSET, CONTROL_SIZE) {
            (Block::Control, CONTROL_OFFSET)
        } else if within(CHANNEL_MMU_OFFSET, CHANNEL_MMU_SIZE) {
            (Block::ChannelMmu, CHANNEL_MMU_OFFSET)
        } else if within(MSIX_TABLE_OFFSET, MSIX_TABLE_SIZE) {
            (Block::MsixTable, MSIX_TABLE_OFFSET)
        } else if within(CHANNEL_OFFSET, CHANNEL_SIZE) {
            (Block::Channels, CHANNEL_OFFSET)
        } else {
            // The PBA reads 0 (see `msix`), like the reserved gaps.
            (Block::Reserved, 0)
        }
    }

    /// Register width in bytes.
    fn width(self) -> u64 {
        match self {
            Block::Edid | Block::Vga | Block::Reserved => 1,
            Block::Dispi => 2,
            Block::Qext
            | Block::Control
            | Block::ChannelMmu
            | Block::MsixTable
            | Block::Channels => 4,
        }
    }
}

/// All BAR2 state.
#[derive(Debug, Clone)]
pub struct Bar2 {
    edid: [u8; EDID_BLOCK_SIZE],
    vga: VgaPorts,
    dispi: Dispi,
    qext: QemuExt,
    control: ControlBlock,
    msix: MsixTable,
    channels: ChannelRegisters,
    /// A surface a SET_SCANOUT command put on head 0; shown instead of the
    /// DISPI mode until the DISPI registers are written or the device is
    /// reset.
    plane: Option<ScanoutMode>,
}

impl Bar2 {
    /// BAR2 at reset for a validated profile, serving `edid`.
    pub fn new(config: &DeviceConfig, edid: [u8; EDID_BLOCK_SIZE]) -> Self {
        Bar2 {
            edid,
            vga: VgaPorts::default(),
            dispi: Dispi::new(config.max_resolution, config.vram_size),
            qext: QemuExt::default(),
            control: ControlBlock::new(ControlIdentity {
                vram_size: config.vram_size,
                channels: config.channels,
                max_resolution: config.max_resolution,
            }),
            msix: MsixTable::new(config.msix_vectors()),
            channels: ChannelRegisters::new(config.channels),
            plane: None,
        }
    }

    /// Returns every register to its reset value.
    pub fn reset(&mut self) {
        self.vga = VgaPorts::default();
        self.dispi.reset();
        self.qext = QemuExt::default();
        self.control.reset();
        self.msix.reset();
        self.channels.reset();
        self.plane = None;
    }

    /// Reads `data.len()` bytes at `offset` (a checked, aligned access).
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let (block, base) = Block::of(offset);
        for lane in lanes(offset, data.len(), block.width()) {
            let rel = lane.reg - base;
            let value = match block {
                Block::Edid => u32::from(self.edid.get(rel as usize).copied().unwrap_or(0)),
                Block::Vga => u32::from(self.vga.read(rel as usize)),
                Block::Dispi => u32::from(self.dispi.read((rel / 2) as usize)),
                Block::Qext => self.qext.read((rel / 4) as usize),
                // The control block owns the MMU registers (their faults
                // and errors are its interrupt and error state).
                Block::Control | Block::ChannelMmu => self.control.read(lane.reg),
                Block::MsixTable => self.msix.read(rel),
                Block::Channels => self.channels.read(lane.reg),
                Block::Reserved => 0,
            };
            lane.read_into(value, data);
        }
    }

    /// Writes `data` at `offset` (a checked, aligned access).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Effects {
        let (block, base) = Block::of(offset);
        let mut effects = Effects::NONE;
        for lane in lanes(offset, data.len(), block.width()) {
            let rel = lane.reg - base;
            let (value, enables) = lane.write_value(data);
            match block {
                Block::Vga => self.vga.write(rel as usize, value as u8),
                Block::Dispi => {
                    let index = (rel / 2) as usize;
                    let old = u32::from(self.dispi.stored(index));
                    self.dispi.write(index, merge(old, value, enables) as u16);
                    // The guest sets a mode: what the commands showed goes.
                    self.plane = None;
                }
                Block::Qext => {
                    let index = (rel / 4) as usize;
                    self.qext
                        .write(index, merge(self.qext.read(index), value, enables));
                }
                Block::Control | Block::ChannelMmu => {
                    effects = effects.merge(self.control.write(lane.reg, value, enables));
                }
                Block::MsixTable => self.msix.write(rel, value, enables),
                Block::Channels => {
                    effects = effects.merge(self.channels.write(lane.reg, value, enables));
                }
                Block::Edid | Block::Reserved => {}
            }
        }
        effects
    }

    /// The oldest outstanding DMA self-test.
    pub fn next_dma(&self) -> Option<crate::DmaRequest> {
        self.control.next_dma()
    }

    /// Completes the oldest outstanding DMA self-test.
    pub fn complete_dma(&mut self, result: Result<(), DmaFault>) -> Effects {
        self.control.complete_dma(result)
    }

    /// Records a GPU MMU fault the owner reports.
    pub fn record_fault(&mut self, fault: Fault) -> Effects {
        self.control.record_fault(fault)
    }

    /// Completes the translation handed out last.
    pub fn complete_translate(&mut self, result: Result<Translation, FaultReason>) -> Effects {
        self.control.complete_translate(result)
    }

    /// Channel `channel`'s page-table root, if the channel exists.
    pub fn page_table_root(&self, channel: u32) -> Option<u64> {
        self.control.mmu().root(channel)
    }

    /// The frame the display shows, if any: the surface of the last
    /// SET_SCANOUT since the DISPI registers were written, else the DISPI
    /// mode.
    pub fn scanout(&self) -> Option<ScanoutMode> {
        self.plane
            .or_else(|| self.dispi.scanout(self.qext.big_endian()))
    }

    /// Shows `mode` on head 0 (a SET_SCANOUT the owner carried out; the
    /// owner checked that the surface lies in the VRAM slice).
    pub fn set_plane(&mut self, mode: ScanoutMode) {
        self.plane = Some(mode);
    }

    /// The EDID block served at offset 0.
    pub fn edid(&self) -> &[u8; EDID_BLOCK_SIZE] {
        &self.edid
    }

    /// The MSI-X table.
    pub fn msix(&self) -> &MsixTable {
        &self.msix
    }

    /// The channel registers.
    pub fn channels(&self) -> &ChannelRegisters {
        &self.channels
    }

    /// The channel registers, for the owner's reports of progress,
    /// fences and errors.
    pub fn channels_mut(&mut self) -> &mut ChannelRegisters {
        &mut self.channels
    }
}
