//! The vGPU control block at BAR2 + 0x1000: identity, interrupt status and
//! mask, the error registers, the interrupt self-test and the DMA self-test.
//! It also owns the GPU MMU registers ([`super::mmu`]), whose faults and
//! refused commands land in its interrupt status and error registers.
//!
//! Register handlers take a 32-bit value with a byte-enable mask, so
//! narrower accesses behave like a bus with byte enables: storage registers
//! keep the bytes not written, trigger registers (SELFTEST, DMA_CONTROL,
//! IRQ_STATUS) see 0 in them.
//!
//! Where the device interface document leaves room, this block does:
//!
//! | event | registers | vector 0 |
//! | --- | --- | --- |
//! | SELFTEST `v` < MSIX_VECTORS | IRQ_STATUS.SELFTEST | only if `v` = 0 (`v` is raised, mask ignored) |
//! | SELFTEST `v` ≥ MSIX_VECTORS | error 1, ERROR_INFO = `v`; SELFTEST status not set | if mask.ERROR |
//! | DMA_CONTROL not 1 or 2 | error 7, ERROR_INFO = the value; no DMA, DMA_COUNT unchanged | if mask.ERROR |
//! | DMA refused by the device | DMA_STATUS = 2, 3 or 10, DMA_COUNT + 1, DMA_DONE; ERROR_INFO = DMA_LENGTH (2), DMA_VRAM_LO (3) or the number outstanding (10) | if mask.ERROR or mask.DMA_DONE |
//! | DMA completed by the owner | DMA_STATUS = 0 or 4–6, DMA_COUNT + 1, DMA_DONE; on failure ERROR_INFO = DMA_IOVA_LO of that request | likewise |
//! | MMU fault recorded (by the owner, or a faulted translation) | IRQ_STATUS.FAULT, fault registers | if mask.FAULT |
//! | INV_CONTROL or XLATE_CONTROL refused | error 8 or 9, ERROR_INFO = the value | if mask.ERROR |
//! | IRQ_MASK write unmasking a set status bit | — | yes, so the event is not lost |
//!
//! ERROR_CODE and ERROR_INFO keep the first error until ERROR_CODE is
//! written; IRQ_STATUS.ERROR is set by every error.

use crate::config::Resolution;
use crate::effects::{
    DmaDirection, DmaFault, DmaRequest, Effects, Fault, FaultReason, Translation,
};
use crate::lanes::{merge, merge64};

use super::layout::*;
use super::mmu::{MmuRegisters, MmuWrite};

/// Interface version: major 1, minor 0.
pub const INTERFACE_VERSION: u32 = 0x0001_0000;
/// IRQ_STATUS / IRQ_MASK bit: interrupt self-test.
pub const IRQ_SELFTEST: u32 = 1 << 0;
/// IRQ_STATUS / IRQ_MASK bit: an error was recorded.
pub const IRQ_ERROR: u32 = 1 << 1;
/// IRQ_STATUS / IRQ_MASK bit: a DMA self-test completed.
pub const IRQ_DMA_DONE: u32 = 1 << 2;
/// IRQ_STATUS / IRQ_MASK bit: a GPU MMU fault was recorded.
pub const IRQ_FAULT: u32 = 1 << 3;
/// IRQ_STATUS / IRQ_MASK bits that exist.
pub const IRQ_ALL: u32 = IRQ_SELFTEST | IRQ_ERROR | IRQ_DMA_DONE | IRQ_FAULT;
/// Largest DMA self-test length: 1 MiB.
pub const DMA_MAX_LENGTH: u32 = 1 << 20;
/// DMA_CONTROL: copy guest memory into VRAM.
pub const DMA_CONTROL_TO_VRAM: u32 = 1;
/// DMA_CONTROL: copy VRAM into guest memory.
pub const DMA_CONTROL_FROM_VRAM: u32 = 2;
/// Most DMA self-tests outstanding at once (started and not completed).
pub const DMA_QUEUE_DEPTH: usize = 16;

/// Error codes of ERROR_CODE and DMA_STATUS.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceErrorCode {
    /// SELFTEST named a vector the device does not have.
    BadVector = 1,
    /// DMA_LENGTH is 0 or over 1 MiB.
    DmaBadLength = 2,
    /// The VRAM range is not inside the slice.
    DmaVramRange = 3,
    /// Part of the IOVA range is not covered by a DMA map.
    DmaNotMapped = 4,
    /// A copy to guest memory hit a read-only map.
    DmaReadOnly = 5,
    /// The VMM refused or failed a DMA_READ/DMA_WRITE request.
    DmaFailed = 6,
    /// DMA_CONTROL got something other than 1 or 2.
    DmaBadCommand = 7,
    /// INV_CONTROL or XLATE_CONTROL named a channel the device does not
    /// have.
    BadChannel = 8,
    /// INV_CONTROL asked for a range that is empty, not whole 4 KiB pages,
    /// or not inside the 48-bit address space.
    BadRange = 9,
    /// DMA_CONTROL while [`DMA_QUEUE_DEPTH`] DMA self-tests are outstanding.
    DmaQueueFull = 10,
}

impl From<DmaFault> for DeviceErrorCode {
    fn from(fault: DmaFault) -> Self {
        match fault {
            DmaFault::NotMapped => DeviceErrorCode::DmaNotMapped,
            DmaFault::ReadOnly => DeviceErrorCode::DmaReadOnly,
            DmaFault::Failed => DeviceErrorCode::DmaFailed,
        }
    }
}

/// What the read-only identity registers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlIdentity {
    /// VRAM slice size in bytes.
    pub vram_size: u64,
    /// Number of channels.
    pub channels: u32,
    /// Maximum resolution (each side below 2^16).
    pub max_resolution: Resolution,
}

impl ControlIdentity {
    fn msix_vectors(&self) -> u32 {
        self.channels + 1
    }
}

/// The control block's state.
#[derive(Debug, Clone)]
pub struct ControlBlock {
    identity: ControlIdentity,
    irq_status: u32,
    irq_mask: u32,
    error_code: u32,
    error_info: u32,
    dma_iova: u64,
    dma_vram: u64,
    dma_length: u32,
    dma_status: u32,
    dma_count: u32,
    /// The requests handed to the owner and not yet completed, oldest
    /// first: the owner runs them in this order, and each completion is
    /// the oldest one's.
    dma_queue: DmaQueue,
    mmu: MmuRegisters,
}

/// A fixed ring of outstanding DMA requests: no allocation on the register
/// path, and a bound the guest cannot raise.
#[derive(Debug, Clone, Copy)]
struct DmaQueue {
    slots: [Option<DmaRequest>; DMA_QUEUE_DEPTH],
    head: usize,
    len: usize,
}

impl DmaQueue {
    const EMPTY: DmaQueue = DmaQueue {
        slots: [None; DMA_QUEUE_DEPTH],
        head: 0,
        len: 0,
    };

    fn push(&mut self, request: DmaRequest) -> bool {
        if self.len == DMA_QUEUE_DEPTH {
            return false;
        }
        self.slots[(self.head + self.len) % DMA_QUEUE_DEPTH] = Some(request);
        self.len += 1;
        true
    }

    fn front(&self) -> Option<DmaRequest> {
        if self.len == 0 {
            None
        } else {
            self.slots[self.head]
        }
    }

    fn pop(&mut self) -> Option<DmaRequest> {
        let front = self.front()?;
        self.slots[self.head] = None;
        self.head = (self.head + 1) % DMA_QUEUE_DEPTH;
        self.len -= 1;
        Some(front)
    }
}

impl ControlBlock {
    /// A control block at reset.
    pub fn new(identity: ControlIdentity) -> Self {
        ControlBlock {
            identity,
            irq_status: 0,
            irq_mask: 0,
            error_code: 0,
            error_info: 0,
            dma_iova: 0,
            dma_vram: 0,
            dma_length: 0,
            dma_status: 0,
            dma_count: 0,
            dma_queue: DmaQueue::EMPTY,
            mmu: MmuRegisters::new(identity.channels),
        }
    }

    /// Returns every register to its reset value and forgets every DMA
    /// outstanding (a late completion is then ignored).
    pub fn reset(&mut self) {
        *self = ControlBlock::new(self.identity);
    }

    /// Reads the 32-bit register at BAR2 offset `reg`; reserved and
    /// write-only registers read 0.
    pub fn read(&self, reg: u64) -> u32 {
        let id = &self.identity;
        match reg {
            CTRL_MAGIC => crate::pci::capabilities::VGPU_MAGIC,
            CTRL_VERSION => INTERFACE_VERSION,
            CTRL_VRAM_SIZE_LO => id.vram_size as u32,
            CTRL_VRAM_SIZE_HI => (id.vram_size >> 32) as u32,
            CTRL_CHANNELS => id.channels,
            CTRL_MSIX_VECTORS => id.msix_vectors(),
            CTRL_MAX_RESOLUTION => {
                (id.max_resolution.width & 0xffff) | (id.max_resolution.height << 16)
            }
            CTRL_IRQ_STATUS => self.irq_status,
            CTRL_IRQ_MASK => self.irq_mask,
            CTRL_ERROR_CODE => self.error_code,
            CTRL_ERROR_INFO => self.error_info,
            CTRL_DMA_IOVA_LO => self.dma_iova as u32,
            CTRL_DMA_IOVA_HI => (self.dma_iova >> 32) as u32,
            CTRL_DMA_VRAM_LO => self.dma_vram as u32,
            CTRL_DMA_VRAM_HI => (self.dma_vram >> 32) as u32,
            CTRL_DMA_LENGTH => self.dma_length,
            CTRL_DMA_STATUS => self.dma_status,
            CTRL_DMA_COUNT => self.dma_count,
            reg if MmuRegisters::owns(reg) => self.mmu.read(reg),
            _ => 0,
        }
    }

    /// Applies a guest write to the 32-bit register at BAR2 offset `reg`:
    /// `value` holds the written bytes at their positions, `enables` has
    /// `0xff` in each written byte.
    pub fn write(&mut self, reg: u64, value: u32, enables: u32) -> Effects {
        let value = value & enables;
        match reg {
            CTRL_IRQ_STATUS => self.irq_status &= !(value & IRQ_ALL),
            CTRL_IRQ_MASK => {
                let old = self.irq_mask;
                self.irq_mask = merge(old, value, enables) & IRQ_ALL;
                // A status bit that is already set and gets unmasked is
                // delivered now rather than lost.
                if self.irq_status & self.irq_mask & !old != 0 {
                    return Effects::vector(0);
                }
            }
            CTRL_ERROR_CODE => {
                self.error_code = 0;
                self.error_info = 0;
            }
            CTRL_SELFTEST => return self.selftest(value),
            CTRL_DMA_IOVA_LO => self.dma_iova = merge64(self.dma_iova, 0, value, enables),
            CTRL_DMA_IOVA_HI => self.dma_iova = merge64(self.dma_iova, 32, value, enables),
            CTRL_DMA_VRAM_LO => self.dma_vram = merge64(self.dma_vram, 0, value, enables),
            CTRL_DMA_VRAM_HI => self.dma_vram = merge64(self.dma_vram, 32, value, enables),
            CTRL_DMA_LENGTH => self.dma_length = merge(self.dma_length, value, enables),
            CTRL_DMA_CONTROL => return self.start_dma(value),
            reg if MmuRegisters::owns(reg) => {
                return match self.mmu.write(reg, value, enables) {
                    MmuWrite::Stored => Effects::NONE,
                    MmuWrite::Request(request) => Effects {
                        mmu: Some(request),
                        ..Effects::NONE
                    },
                    MmuWrite::Refused(code, info) => self.record_error(code, info),
                };
            }
            _ => {}
        }
        Effects::NONE
    }

    fn selftest(&mut self, vector: u32) -> Effects {
        if vector >= self.identity.msix_vectors() {
            return self.record_error(DeviceErrorCode::BadVector, vector);
        }
        self.irq_status |= IRQ_SELFTEST;
        Effects::vector(vector)
    }

    fn start_dma(&mut self, command: u32) -> Effects {
        let direction = match command {
            DMA_CONTROL_TO_VRAM => DmaDirection::ToVram,
            DMA_CONTROL_FROM_VRAM => DmaDirection::FromVram,
            _ => return self.record_error(DeviceErrorCode::DmaBadCommand, command),
        };
        let len = self.dma_length;
        if !(1..=DMA_MAX_LENGTH).contains(&len) {
            return self.finish_dma(Err(DeviceErrorCode::DmaBadLength), len);
        }
        let inside = self
            .dma_vram
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= self.identity.vram_size);
        if !inside {
            return self.finish_dma(Err(DeviceErrorCode::DmaVramRange), self.dma_vram as u32);
        }
        let request = DmaRequest {
            direction,
            iova: self.dma_iova,
            vram_offset: self.dma_vram,
            len,
        };
        if !self.dma_queue.push(request) {
            return self.finish_dma(Err(DeviceErrorCode::DmaQueueFull), DMA_QUEUE_DEPTH as u32);
        }
        Effects {
            dma: Some(request),
            ..Effects::NONE
        }
    }

    /// The oldest outstanding DMA request: the one to run now, and the one
    /// the next [`complete_dma`](Self::complete_dma) completes.
    pub fn next_dma(&self) -> Option<DmaRequest> {
        self.dma_queue.front()
    }

    /// Completes the oldest outstanding DMA; without one (never started, or
    /// dropped by a reset) this does nothing.
    pub fn complete_dma(&mut self, result: Result<(), DmaFault>) -> Effects {
        let Some(request) = self.dma_queue.pop() else {
            return Effects::NONE;
        };
        self.finish_dma(result.map_err(DeviceErrorCode::from), request.iova as u32)
    }

    /// Ends a DMA self-test, refused or performed: DMA_STATUS, DMA_COUNT,
    /// the error registers on failure (`info` is ERROR_INFO), DMA_DONE.
    fn finish_dma(&mut self, result: Result<(), DeviceErrorCode>, info: u32) -> Effects {
        self.dma_count = self.dma_count.wrapping_add(1);
        let mut effects = Effects::NONE;
        self.dma_status = match result {
            Ok(()) => 0,
            Err(code) => {
                effects = self.record_error(code, info);
                code as u32
            }
        };
        effects.merge(self.raise_status(IRQ_DMA_DONE))
    }

    /// Records a GPU MMU fault: the fault registers (see [`super::mmu`])
    /// and IRQ_STATUS.FAULT.
    pub fn record_fault(&mut self, fault: Fault) -> Effects {
        self.mmu.record_fault(fault);
        self.raise_status(IRQ_FAULT)
    }

    /// Completes the translation handed out last; a fault is also recorded.
    /// Without one outstanding this does nothing.
    pub fn complete_translate(&mut self, result: Result<Translation, FaultReason>) -> Effects {
        match self.mmu.complete_translate(result) {
            Some(fault) => self.record_fault(fault),
            None => Effects::NONE,
        }
    }

    /// The MMU registers.
    pub fn mmu(&self) -> &MmuRegisters {
        &self.mmu
    }

    /// Records an error (ERROR_CODE keeps the first unacknowledged one) and
    /// sets IRQ_STATUS.ERROR.
    fn record_error(&mut self, code: DeviceErrorCode, info: u32) -> Effects {
        if self.error_code == 0 {
            self.error_code = code as u32;
            self.error_info = info;
        }
        self.raise_status(IRQ_ERROR)
    }

    /// Sets status bits; vector 0 is raised when one of them is unmasked.
    fn raise_status(&mut self, bits: u32) -> Effects {
        self.irq_status |= bits;
        if self.irq_mask & bits != 0 {
            Effects::vector(0)
        } else {
            Effects::NONE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u32 = u32::MAX;

    fn block() -> ControlBlock {
        ControlBlock::new(ControlIdentity {
            vram_size: 16 << 20,
            channels: 3,
            max_resolution: Resolution {
                width: 1920,
                height: 1080,
            },
        })
    }

    #[test]
    fn unmasking_a_pending_status_raises_vector_0() {
        let mut cb = block();
        assert_eq!(cb.write(CTRL_SELFTEST, 2, ALL), Effects::vector(2));
        assert_eq!(
            cb.write(CTRL_IRQ_MASK, IRQ_SELFTEST, ALL),
            Effects::vector(0)
        );
        assert_eq!(cb.write(CTRL_IRQ_MASK, IRQ_SELFTEST, ALL), Effects::NONE);
    }

    #[test]
    fn first_error_is_kept_until_acknowledged() {
        let mut cb = block();
        cb.write(CTRL_SELFTEST, 9, ALL);
        cb.write(CTRL_DMA_CONTROL, 5, ALL);
        assert_eq!(cb.read(CTRL_ERROR_CODE), DeviceErrorCode::BadVector as u32);
        assert_eq!(cb.read(CTRL_ERROR_INFO), 9);
        cb.write(CTRL_ERROR_CODE, 0, 0xff);
        cb.write(CTRL_DMA_CONTROL, 5, ALL);
        assert_eq!(
            cb.read(CTRL_ERROR_CODE),
            DeviceErrorCode::DmaBadCommand as u32
        );
        assert_eq!(cb.read(CTRL_ERROR_INFO), 5);
    }

    #[test]
    fn byte_writes_merge_into_the_dma_address_halves() {
        let mut cb = block();
        cb.write(CTRL_DMA_IOVA_HI, 0x1234_5678, ALL);
        cb.write(CTRL_DMA_IOVA_LO, 0x0000_ab00, 0x0000_ff00);
        assert_eq!(cb.read(CTRL_DMA_IOVA_HI), 0x1234_5678);
        assert_eq!(cb.read(CTRL_DMA_IOVA_LO), 0x0000_ab00);
    }

    #[test]
    fn completion_without_a_pending_dma_is_ignored() {
        let mut cb = block();
        assert_eq!(cb.complete_dma(Ok(())), Effects::NONE);
        assert_eq!(cb.read(CTRL_DMA_COUNT), 0);
    }

    fn start_dma_at(cb: &mut ControlBlock, iova: u32) -> Effects {
        cb.write(CTRL_DMA_IOVA_LO, iova, ALL);
        cb.write(CTRL_DMA_LENGTH, 4096, ALL);
        cb.write(CTRL_DMA_CONTROL, DMA_CONTROL_TO_VRAM, ALL)
    }

    #[test]
    fn outstanding_dmas_complete_oldest_first_with_their_own_details() {
        let mut cb = block();
        let first = start_dma_at(&mut cb, 0x1000).dma.unwrap();
        let second = start_dma_at(&mut cb, 0x2000).dma.unwrap();
        assert_eq!(cb.next_dma(), Some(first));
        cb.complete_dma(Ok(()));
        assert_eq!(cb.read(CTRL_DMA_COUNT), 1);
        assert_eq!(cb.read(CTRL_DMA_STATUS), 0);
        assert_eq!(cb.next_dma(), Some(second));
        cb.complete_dma(Err(DmaFault::Failed));
        assert_eq!(cb.read(CTRL_DMA_COUNT), 2);
        assert_eq!(cb.read(CTRL_DMA_STATUS), DeviceErrorCode::DmaFailed as u32);
        assert_eq!(
            cb.read(CTRL_ERROR_INFO),
            0x2000,
            "the second request's IOVA"
        );
        assert_eq!(cb.next_dma(), None);
        assert_eq!(cb.complete_dma(Ok(())), Effects::NONE);
        assert_eq!(cb.read(CTRL_DMA_COUNT), 2);
    }

    #[test]
    fn a_full_queue_refuses_the_next_dma_at_once() {
        let mut cb = block();
        for i in 0..DMA_QUEUE_DEPTH as u32 {
            assert!(start_dma_at(&mut cb, i << 12).dma.is_some());
        }
        let refused = start_dma_at(&mut cb, 0xdead_0000);
        assert_eq!(refused.dma, None);
        assert_eq!(cb.read(CTRL_DMA_COUNT), 1);
        assert_eq!(
            cb.read(CTRL_DMA_STATUS),
            DeviceErrorCode::DmaQueueFull as u32
        );
        assert_eq!(
            cb.read(CTRL_ERROR_CODE),
            DeviceErrorCode::DmaQueueFull as u32
        );
        assert_eq!(cb.read(CTRL_ERROR_INFO), DMA_QUEUE_DEPTH as u32);
        assert_eq!(cb.next_dma().map(|r| r.iova), Some(0));
        // A completion makes room for one more.
        cb.complete_dma(Ok(()));
        assert!(start_dma_at(&mut cb, 0x5000).dma.is_some());
        let mut last = None;
        while let Some(request) = cb.next_dma() {
            last = Some(request.iova);
            cb.complete_dma(Ok(()));
        }
        assert_eq!(last, Some(0x5000));
        assert_eq!(cb.read(CTRL_DMA_COUNT), 2 + DMA_QUEUE_DEPTH as u32);
    }

    #[test]
    fn reset_forgets_every_outstanding_dma() {
        let mut cb = block();
        start_dma_at(&mut cb, 0x1000);
        start_dma_at(&mut cb, 0x2000);
        cb.reset();
        assert_eq!(cb.next_dma(), None);
        assert_eq!(cb.complete_dma(Ok(())), Effects::NONE);
        assert_eq!(cb.read(CTRL_DMA_COUNT), 0);
    }

    #[test]
    fn vram_range_check_does_not_overflow() {
        let mut cb = block();
        cb.write(CTRL_DMA_VRAM_LO, u32::MAX, ALL);
        cb.write(CTRL_DMA_VRAM_HI, u32::MAX, ALL);
        cb.write(CTRL_DMA_LENGTH, 16, ALL);
        assert_eq!(cb.write(CTRL_DMA_CONTROL, 1, ALL).dma, None);
        assert_eq!(
            cb.read(CTRL_DMA_STATUS),
            DeviceErrorCode::DmaVramRange as u32
        );
    }
}
