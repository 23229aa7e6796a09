//! BAR2 offsets, as the device interface document lists them.
//!
//! ```text
//! 0x0000-0x03ff  EDID (128-byte base block, then zeros)    RO
//! 0x0400-0x041f  VGA I/O ports 0x3c0-0x3df                 bytes
//! 0x0500-0x0517  VBE DISPI registers, index n at 2n        16-bit
//! 0x0600-0x0607  QEMU extended registers                   32-bit
//! 0x1000-0x10ff  vGPU control block                        32-bit
//! 0x1100-0x18ff  per-channel MMU registers, 0x20 each      32-bit
//! 0x2000-0x23ff  MSI-X table, 16 bytes per vector
//! 0x3000-0x3007  MSI-X pending bit array                   reads 0
//! 0x4000-0x4fff  channel registers, 0x40 each              32-bit
//! ```
//! Everything else reads 0 and ignores writes.

/// BAR2 size: 32 KiB.
pub const BAR2_SIZE: u64 = 0x8000;

/// EDID block start.
pub const EDID_OFFSET: u64 = 0x0000;
/// EDID block size (the 128-byte EDID, then zeros).
pub const EDID_REGION_SIZE: u64 = 0x400;
/// VGA I/O ports 0x3c0–0x3df.
pub const VGA_PORTS_OFFSET: u64 = 0x0400;
/// VGA input status 1 (port 0x3da), which reads 0.
pub const VGA_INPUT_STATUS_1_OFFSET: u64 = 0x041a;
/// VBE DISPI registers.
pub const DISPI_OFFSET: u64 = 0x0500;
/// QEMU extended registers.
pub const QEXT_OFFSET: u64 = 0x0600;
/// QEMU extended register: block size.
pub const QEXT_SIZE_OFFSET: u64 = 0x0600;
/// QEMU extended register: framebuffer byte order.
pub const QEXT_BYTE_ORDER_OFFSET: u64 = 0x0604;
/// vGPU control block.
pub const CONTROL_OFFSET: u64 = 0x1000;
/// Size of the control block.
pub const CONTROL_SIZE: u64 = 0x100;
/// MSI-X table.
pub const MSIX_TABLE_OFFSET: u64 = 0x2000;
/// Size reserved for the MSI-X table (64 vectors).
pub const MSIX_TABLE_SIZE: u64 = 0x400;
/// Bytes per MSI-X table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// MSI-X pending bit array.
pub const MSIX_PBA_OFFSET: u64 = 0x3000;
/// Size of the PBA (64 vectors).
pub const MSIX_PBA_SIZE: u64 = 8;

/// BAR2 offset of DISPI register `index`.
pub const fn dispi_offset(index: usize) -> u64 {
    DISPI_OFFSET + 2 * index as u64
}

/// Control block: MAGIC.
pub const CTRL_MAGIC: u64 = 0x1000;
/// Control block: VERSION.
pub const CTRL_VERSION: u64 = 0x1004;
/// Control block: VRAM_SIZE_LO.
pub const CTRL_VRAM_SIZE_LO: u64 = 0x1008;
/// Control block: VRAM_SIZE_HI.
pub const CTRL_VRAM_SIZE_HI: u64 = 0x100c;
/// Control block: CHANNELS.
pub const CTRL_CHANNELS: u64 = 0x1010;
/// Control block: MSIX_VECTORS.
pub const CTRL_MSIX_VECTORS: u64 = 0x1014;
/// Control block: MAX_RESOLUTION.
pub const CTRL_MAX_RESOLUTION: u64 = 0x1018;
/// Control block: IRQ_STATUS.
pub const CTRL_IRQ_STATUS: u64 = 0x1020;
/// Control block: IRQ_MASK.
pub const CTRL_IRQ_MASK: u64 = 0x1024;
/// Control block: ERROR_CODE.
pub const CTRL_ERROR_CODE: u64 = 0x1028;
/// Control block: ERROR_INFO.
pub const CTRL_ERROR_INFO: u64 = 0x102c;
/// Control block: SELFTEST.
pub const CTRL_SELFTEST: u64 = 0x1030;
/// Control block: DMA_IOVA_LO.
pub const CTRL_DMA_IOVA_LO: u64 = 0x1040;
/// Control block: DMA_IOVA_HI.
pub const CTRL_DMA_IOVA_HI: u64 = 0x1044;
/// Control block: DMA_VRAM_LO.
pub const CTRL_DMA_VRAM_LO: u64 = 0x1048;
/// Control block: DMA_VRAM_HI.
pub const CTRL_DMA_VRAM_HI: u64 = 0x104c;
/// Control block: DMA_LENGTH.
pub const CTRL_DMA_LENGTH: u64 = 0x1050;
/// Control block: DMA_CONTROL.
pub const CTRL_DMA_CONTROL: u64 = 0x1054;
/// Control block: DMA_STATUS.
pub const CTRL_DMA_STATUS: u64 = 0x1058;
/// Control block: DMA_COUNT.
pub const CTRL_DMA_COUNT: u64 = 0x105c;
/// Control block: INV_VA_LO.
pub const CTRL_INV_VA_LO: u64 = 0x1060;
/// Control block: INV_VA_HI.
pub const CTRL_INV_VA_HI: u64 = 0x1064;
/// Control block: INV_SIZE_LO.
pub const CTRL_INV_SIZE_LO: u64 = 0x1068;
/// Control block: INV_SIZE_HI.
pub const CTRL_INV_SIZE_HI: u64 = 0x106c;
/// Control block: INV_CONTROL.
pub const CTRL_INV_CONTROL: u64 = 0x1070;
/// Control block: FAULT_VA_LO.
pub const CTRL_FAULT_VA_LO: u64 = 0x1080;
/// Control block: FAULT_VA_HI.
pub const CTRL_FAULT_VA_HI: u64 = 0x1084;
/// Control block: FAULT_INFO.
pub const CTRL_FAULT_INFO: u64 = 0x1088;
/// Control block: FAULT_COUNT.
pub const CTRL_FAULT_COUNT: u64 = 0x108c;
/// Control block: XLATE_VA_LO.
pub const CTRL_XLATE_VA_LO: u64 = 0x1090;
/// Control block: XLATE_VA_HI.
pub const CTRL_XLATE_VA_HI: u64 = 0x1094;
/// Control block: XLATE_CONTROL.
pub const CTRL_XLATE_CONTROL: u64 = 0x1098;
/// Control block: XLATE_STATUS.
pub const CTRL_XLATE_STATUS: u64 = 0x109c;
/// Control block: XLATE_RESULT_LO.
pub const CTRL_XLATE_RESULT_LO: u64 = 0x10a0;
/// Control block: XLATE_RESULT_HI.
pub const CTRL_XLATE_RESULT_HI: u64 = 0x10a4;
/// Control block: XLATE_TARGET.
pub const CTRL_XLATE_TARGET: u64 = 0x10a8;

/// Per-channel MMU registers: channel `n` at `CHANNEL_MMU_OFFSET +
/// n * CHANNEL_MMU_STRIDE`.
pub const CHANNEL_MMU_OFFSET: u64 = 0x1100;
/// Bytes per channel in the per-channel MMU block.
pub const CHANNEL_MMU_STRIDE: u64 = 0x20;
/// Size of the per-channel MMU block: 64 channel slots (the 6-bit channel
/// fields), of which the first CHANNELS exist.
pub const CHANNEL_MMU_SIZE: u64 = 64 * CHANNEL_MMU_STRIDE;
/// Offset of PT_ROOT_LO within a channel's slot.
pub const PT_ROOT_LO: u64 = 0x00;
/// Offset of PT_ROOT_HI within a channel's slot.
pub const PT_ROOT_HI: u64 = 0x04;

/// BAR2 offset of channel `channel`'s PT_ROOT_LO (PT_ROOT_HI follows).
pub const fn pt_root_offset(channel: u32) -> u64 {
    CHANNEL_MMU_OFFSET + channel as u64 * CHANNEL_MMU_STRIDE + PT_ROOT_LO
}

/// Channel registers: channel `n` at `CHANNEL_OFFSET + n * CHANNEL_STRIDE`.
pub const CHANNEL_OFFSET: u64 = 0x4000;
/// Bytes per channel in the channel block.
pub const CHANNEL_STRIDE: u64 = 0x40;
/// Size of the channel block: 64 channel slots, of which the first
/// CHANNELS exist.
pub const CHANNEL_SIZE: u64 = 64 * CHANNEL_STRIDE;

/// BAR2 offset of register `reg` (e.g. [`super::channels::RING_PUT`]) of
/// channel `channel`.
pub const fn channel_register(channel: u32, reg: u64) -> u64 {
    CHANNEL_OFFSET + channel as u64 * CHANNEL_STRIDE + reg
}
