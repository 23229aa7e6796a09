//! The device contract (`docs/device-interface.md`) as constants: region
//! indexes, config-space and BAR2 offsets, reset values. Written from the
//! document, not from the emulation crate, so that the tests check the
//! daemon against what the document promises.

/// Region indexes.
pub mod region {
    /// BAR0, the VRAM aperture.
    pub const BAR0: u32 = 0;
    /// BAR1 (absent).
    pub const BAR1: u32 = 1;
    /// BAR2, the registers.
    pub const BAR2: u32 = 2;
    /// Expansion ROM (absent).
    pub const ROM: u32 = 6;
    /// PCI configuration space.
    pub const CONFIG: u32 = 7;
    /// VGA (absent).
    pub const VGA: u32 = 8;
    /// Number of regions.
    pub const COUNT: u32 = 9;
}

/// Size of BAR2 in bytes.
pub const BAR2_SIZE: u64 = 0x8000;
/// Size of the config-space region in bytes.
pub const CONFIG_SIZE: u64 = 4096;

/// PCI config-space offsets and values.
pub mod config {
    /// Vendor id register.
    pub const VENDOR_ID: u64 = 0x00;
    /// Device id register.
    pub const DEVICE_ID: u64 = 0x02;
    /// Command register.
    pub const COMMAND: u64 = 0x04;
    /// Status register.
    pub const STATUS: u64 = 0x06;
    /// Revision id.
    pub const REVISION: u64 = 0x08;
    /// Class code (3 bytes from 0x09).
    pub const CLASS: u64 = 0x09;
    /// Header type.
    pub const HEADER_TYPE: u64 = 0x0e;
    /// BAR0 low dword.
    pub const BAR0_LO: u64 = 0x10;
    /// BAR0 high dword.
    pub const BAR0_HI: u64 = 0x14;
    /// BAR2.
    pub const BAR2: u64 = 0x18;
    /// BAR3.
    pub const BAR3: u64 = 0x1c;
    /// Subsystem vendor id.
    pub const SUBSYSTEM_VENDOR_ID: u64 = 0x2c;
    /// Subsystem id.
    pub const SUBSYSTEM_ID: u64 = 0x2e;
    /// Expansion ROM BAR.
    pub const ROM: u64 = 0x30;
    /// Capabilities pointer.
    pub const CAP_PTR: u64 = 0x34;
    /// Interrupt line.
    pub const INTERRUPT_LINE: u64 = 0x3c;
    /// Interrupt pin.
    pub const INTERRUPT_PIN: u64 = 0x3d;

    /// Vendor id value.
    pub const VENDOR: u16 = 0x1234;
    /// Device id value.
    pub const DEVICE: u16 = 0x1111;
    /// Revision value.
    pub const REVISION_VALUE: u8 = 0x02;
    /// Class code value.
    pub const CLASS_VALUE: u32 = 0x03_8000;
    /// Writable mask of the command register.
    pub const COMMAND_MASK: u16 = 0x0546;
    /// Command register bit 10, Interrupt Disable.
    pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
    /// Status register reset value.
    pub const STATUS_VALUE: u16 = 0x0010;
    /// Status bit 3: an INTx is asserted.
    pub const STATUS_INTX: u16 = 1 << 3;

    /// Capability offsets.
    pub const CAP_PM: u64 = 0x40;
    /// MSI capability.
    pub const CAP_MSI: u64 = 0x50;
    /// MSI-X capability.
    pub const CAP_MSIX: u64 = 0x70;
    /// PCI Express capability.
    pub const CAP_PCIE: u64 = 0x80;
    /// Vendor-specific capability.
    pub const CAP_VENDOR: u64 = 0xc0;

    /// Capability ids.
    pub const CAP_ID_PM: u8 = 0x01;
    /// MSI.
    pub const CAP_ID_MSI: u8 = 0x05;
    /// MSI-X.
    pub const CAP_ID_MSIX: u8 = 0x11;
    /// PCI Express.
    pub const CAP_ID_PCIE: u8 = 0x10;
    /// Vendor-specific.
    pub const CAP_ID_VENDOR: u8 = 0x09;
}

/// BAR2 offsets and values.
pub mod bar2 {
    /// Start of the 128-byte EDID.
    pub const EDID: u64 = 0x000;
    /// VGA port 0x3c0 (ports up to 0x3df follow).
    pub const VGA_PORTS: u64 = 0x400;
    /// VBE DISPI register `index` is at `DISPI + 2 * index`.
    pub const DISPI: u64 = 0x500;
    /// QEMU extended block: size register.
    pub const EXT_SIZE: u64 = 0x600;
    /// QEMU extended block: framebuffer byte order.
    pub const EXT_BYTE_ORDER: u64 = 0x604;
    /// Little-endian byte order value (reset).
    pub const BYTE_ORDER_LE: u32 = 0x1e1e_1e1e;

    /// DISPI register indexes.
    pub const DISPI_ID: u64 = 0;
    /// XRES.
    pub const DISPI_XRES: u64 = 1;
    /// YRES.
    pub const DISPI_YRES: u64 = 2;
    /// BPP.
    pub const DISPI_BPP: u64 = 3;
    /// ENABLE.
    pub const DISPI_ENABLE: u64 = 4;
    /// BANK.
    pub const DISPI_BANK: u64 = 5;
    /// VIRT_WIDTH.
    pub const DISPI_VIRT_WIDTH: u64 = 6;
    /// VIRT_HEIGHT.
    pub const DISPI_VIRT_HEIGHT: u64 = 7;
    /// X_OFFSET.
    pub const DISPI_X_OFFSET: u64 = 8;
    /// Y_OFFSET.
    pub const DISPI_Y_OFFSET: u64 = 9;
    /// VIDEO_MEMORY_64K.
    pub const DISPI_VIDEO_MEMORY_64K: u64 = 10;
    /// ID reset value.
    pub const DISPI_ID_VALUE: u16 = 0xb0c5;
    /// ENABLE bit 1, GETCAPS.
    pub const DISPI_ENABLE_GETCAPS: u16 = 1 << 1;

    /// Offset of DISPI register `index`.
    pub const fn dispi(index: u64) -> u64 {
        DISPI + 2 * index
    }

    /// Control block registers.
    pub const MAGIC: u64 = 0x1000;
    /// Interface version.
    pub const VERSION: u64 = 0x1004;
    /// VRAM size, low half.
    pub const VRAM_SIZE_LO: u64 = 0x1008;
    /// VRAM size, high half.
    pub const VRAM_SIZE_HI: u64 = 0x100c;
    /// Number of channels.
    pub const CHANNELS: u64 = 0x1010;
    /// Number of MSI-X vectors.
    pub const MSIX_VECTORS: u64 = 0x1014;
    /// Maximum resolution.
    pub const MAX_RESOLUTION: u64 = 0x1018;
    /// Interrupt status (W1C).
    pub const IRQ_STATUS: u64 = 0x1020;
    /// Interrupt mask.
    pub const IRQ_MASK: u64 = 0x1024;
    /// First unacknowledged error.
    pub const ERROR_CODE: u64 = 0x1028;
    /// Detail of that error.
    pub const ERROR_INFO: u64 = 0x102c;
    /// Self-test: writing `v` raises vector `v`.
    pub const SELFTEST: u64 = 0x1030;
    /// DMA self-test: IOVA, low half.
    pub const DMA_IOVA_LO: u64 = 0x1040;
    /// DMA self-test: IOVA, high half.
    pub const DMA_IOVA_HI: u64 = 0x1044;
    /// DMA self-test: VRAM offset, low half.
    pub const DMA_VRAM_LO: u64 = 0x1048;
    /// DMA self-test: VRAM offset, high half.
    pub const DMA_VRAM_HI: u64 = 0x104c;
    /// DMA self-test: length.
    pub const DMA_LENGTH: u64 = 0x1050;
    /// DMA self-test: command.
    pub const DMA_CONTROL: u64 = 0x1054;
    /// DMA self-test: result.
    pub const DMA_STATUS: u64 = 0x1058;
    /// DMA self-tests completed since reset.
    pub const DMA_COUNT: u64 = 0x105c;

    /// MAGIC value, "vGPU".
    pub const MAGIC_VALUE: u32 = 0x5550_4776;
    /// VERSION value.
    pub const VERSION_VALUE: u32 = 0x0001_0000;
    /// IRQ_STATUS bits.
    pub const IRQ_SELFTEST: u32 = 1 << 0;
    /// ERROR.
    pub const IRQ_ERROR: u32 = 1 << 1;
    /// DMA_DONE.
    pub const IRQ_DMA_DONE: u32 = 1 << 2;
    /// FAULT, a GPU MMU fault.
    pub const IRQ_FAULT: u32 = 1 << 3;
    /// DMA_CONTROL: guest memory to VRAM.
    pub const DMA_TO_VRAM: u32 = 1;
    /// DMA_CONTROL: VRAM to guest memory.
    pub const DMA_FROM_VRAM: u32 = 2;

    /// GPU MMU: start of the VA range to invalidate, low half.
    pub const INV_VA_LO: u64 = 0x1060;
    /// INV_VA, high half.
    pub const INV_VA_HI: u64 = 0x1064;
    /// Bytes to invalidate, low half.
    pub const INV_SIZE_LO: u64 = 0x1068;
    /// INV_SIZE, high half.
    pub const INV_SIZE_HI: u64 = 0x106c;
    /// Invalidation command: channel, [`INV_RANGE`], [`INV_ALL`].
    pub const INV_CONTROL: u64 = 0x1070;
    /// VA of the first unacknowledged fault, low half.
    pub const FAULT_VA_LO: u64 = 0x1080;
    /// FAULT_VA, high half.
    pub const FAULT_VA_HI: u64 = 0x1084;
    /// Channel, access and reason of that fault (see [`super::fault_info`]).
    pub const FAULT_INFO: u64 = 0x1088;
    /// Faults since reset; any write clears FAULT_VA and FAULT_INFO.
    pub const FAULT_COUNT: u64 = 0x108c;
    /// Translate port: VA, low half.
    pub const XLATE_VA_LO: u64 = 0x1090;
    /// XLATE_VA, high half.
    pub const XLATE_VA_HI: u64 = 0x1094;
    /// Translate command: channel, [`XLATE_WRITE`].
    pub const XLATE_CONTROL: u64 = 0x1098;
    /// 0, or the fault reason of the last translation.
    pub const XLATE_STATUS: u64 = 0x109c;
    /// Translated address, low half.
    pub const XLATE_RESULT_LO: u64 = 0x10a0;
    /// XLATE_RESULT, high half.
    pub const XLATE_RESULT_HI: u64 = 0x10a4;
    /// 0: XLATE_RESULT is a VRAM offset; 1: an IOVA.
    pub const XLATE_TARGET: u64 = 0x10a8;

    /// INV_CONTROL bit 8: invalidate INV_VA .. INV_VA + INV_SIZE.
    pub const INV_RANGE: u32 = 1 << 8;
    /// INV_CONTROL bit 9: invalidate the whole address space.
    pub const INV_ALL: u32 = 1 << 9;
    /// XLATE_CONTROL bit 8: translate for a write.
    pub const XLATE_WRITE: u32 = 1 << 8;
    /// XLATE_TARGET value of a VRAM offset.
    pub const XLATE_TARGET_VRAM: u32 = 0;
    /// XLATE_TARGET value of a guest physical address.
    pub const XLATE_TARGET_SYSTEM: u32 = 1;

    /// Per-channel MMU registers start here, [`MMU_CHANNEL_STRIDE`] apart.
    pub const MMU_CHANNELS: u64 = 0x1100;
    /// Bytes between two channels' MMU registers.
    pub const MMU_CHANNEL_STRIDE: u64 = 0x20;

    /// PT_ROOT_LO of `channel`.
    pub const fn pt_root_lo(channel: u32) -> u64 {
        MMU_CHANNELS + MMU_CHANNEL_STRIDE * channel as u64
    }

    /// PT_ROOT_HI of `channel`; writing it commits the root.
    pub const fn pt_root_hi(channel: u32) -> u64 {
        pt_root_lo(channel) + 4
    }

    /// MSI-X table.
    pub const MSIX_TABLE: u64 = 0x2000;
    /// MSI-X PBA.
    pub const MSIX_PBA: u64 = 0x3000;
}

/// Error codes of ERROR_CODE and DMA_STATUS.
pub mod error_code {
    /// SELFTEST named a vector the device does not have.
    pub const BAD_VECTOR: u32 = 1;
    /// DMA_LENGTH is 0 or over 1 MiB.
    pub const DMA_BAD_LENGTH: u32 = 2;
    /// The VRAM range is outside the slice.
    pub const DMA_VRAM_RANGE: u32 = 3;
    /// Part of the IOVA range is not mapped.
    pub const DMA_NOT_MAPPED: u32 = 4;
    /// A copy to guest memory hit a read-only map.
    pub const DMA_READ_ONLY: u32 = 5;
    /// The VMM refused a DMA_READ/DMA_WRITE request.
    pub const DMA_FAILED: u32 = 6;
    /// DMA_CONTROL got something other than 1 or 2.
    pub const DMA_BAD_COMMAND: u32 = 7;
    /// INV_CONTROL or XLATE_CONTROL named a channel ≥ CHANNELS.
    pub const BAD_CHANNEL: u32 = 8;
    /// INV_CONTROL with RANGE and a misaligned, empty or too long range.
    pub const BAD_RANGE: u32 = 9;
    /// DMA_CONTROL while 16 DMA self-tests are outstanding.
    pub const DMA_QUEUE_FULL: u32 = 10;
}

/// FAULT_INFO fields and the fault reasons (also XLATE_STATUS values).
pub mod fault_info {
    /// Bits 5:0, the channel.
    pub const CHANNEL_MASK: u32 = 0x3f;
    /// Bit 8, a write access.
    pub const WRITE: u32 = 1 << 8;
    /// Bits 19:16 hold the reason.
    pub const REASON_SHIFT: u32 = 16;
    /// Width mask of the reason field (after shifting).
    pub const REASON_MASK: u32 = 0xf;

    /// No valid entry on the path.
    pub const NOT_PRESENT: u32 = 1;
    /// An entry with a reserved bit set, or LARGE outside level 2.
    pub const INVALID_ENTRY: u32 = 2;
    /// A VRAM page or table not wholly inside the slice.
    pub const OUTSIDE_VRAM: u32 = 3;
    /// A system page or table not wholly inside one DMA map.
    pub const NOT_MAPPED: u32 = 4;
    /// A write through a read-only map or page.
    pub const READ_ONLY: u32 = 5;
    /// The walk read more tables or entries than its bounds, or met a
    /// cycle.
    pub const WALK_LIMIT: u32 = 6;

    /// Every reason the contract names.
    pub const ALL_REASONS: [u32; 6] = [
        NOT_PRESENT,
        INVALID_ENTRY,
        OUTSIDE_VRAM,
        NOT_MAPPED,
        READ_ONLY,
        WALK_LIMIT,
    ];

    /// The FAULT_INFO value for `channel`, `write` and `reason`.
    pub const fn encode(channel: u32, write: bool, reason: u32) -> u32 {
        (channel & CHANNEL_MASK) | if write { WRITE } else { 0 } | (reason << REASON_SHIFT)
    }

    /// The reason field of a FAULT_INFO value.
    pub const fn reason(info: u32) -> u32 {
        (info >> REASON_SHIFT) & REASON_MASK
    }
}

/// Channel registers (docs/device-interface.md, "Channels").
pub mod channel {
    /// Channel `n`'s register `reg` in BAR2.
    pub const fn reg(n: u32, reg: u64) -> u64 {
        0x4000 + 0x40 * n as u64 + reg
    }
    /// RING_BASE_LO.
    pub const RING_BASE_LO: u64 = 0x00;
    /// RING_BASE_HI.
    pub const RING_BASE_HI: u64 = 0x04;
    /// RING_SIZE.
    pub const RING_SIZE: u64 = 0x08;
    /// RING_PUT (the trapped doorbell).
    pub const RING_PUT: u64 = 0x0c;
    /// RING_GET.
    pub const RING_GET: u64 = 0x10;
    /// CONTROL.
    pub const CONTROL: u64 = 0x14;
    /// STATUS.
    pub const STATUS: u64 = 0x18;
    /// ERROR_CODE.
    pub const ERROR_CODE: u64 = 0x1c;
    /// ERROR_VA_LO.
    pub const ERROR_VA_LO: u64 = 0x20;
    /// ERROR_VA_HI.
    pub const ERROR_VA_HI: u64 = 0x24;
    /// FENCE_LO.
    pub const FENCE_LO: u64 = 0x28;
    /// FENCE_HI.
    pub const FENCE_HI: u64 = 0x2c;
    /// USERD_LO.
    pub const USERD_LO: u64 = 0x30;
    /// USERD_HI.
    pub const USERD_HI: u64 = 0x34;
    /// INTR_STATUS.
    pub const INTR_STATUS: u64 = 0x38;
    /// CONTROL: ENABLE.
    pub const ENABLE: u32 = 1;
    /// CONTROL: RESET.
    pub const RESET: u32 = 2;
    /// STATUS states.
    pub const DISABLED: u32 = 0;
    /// Running.
    pub const RUNNING: u32 = 1;
    /// Stopped by an error.
    pub const STOPPED: u32 = 2;
    /// STATUS.BUSY.
    pub const BUSY: u32 = 1 << 8;
    /// INTR_STATUS.FENCE.
    pub const INTR_FENCE: u32 = 1;
    /// INTR_STATUS.ERROR.
    pub const INTR_ERROR: u32 = 2;
}
