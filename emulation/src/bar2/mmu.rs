//! The GPU MMU registers: the per-channel page-table roots at
//! BAR2 + 0x1100, and the invalidation, fault and translate registers of
//! the control block.
//!
//! The device holds the registers and checks what it can (the channel
//! exists, an invalidated range is whole pages of the address space); the
//! walk of the guest's tables, the shadow tables and the translation are
//! the owner's, asked for with [`MmuRequest`]s. The owner reports back
//! faults and translations, which land here.
//!
//! | event | registers | request |
//! | --- | --- | --- |
//! | PT_ROOT_LO of channel `n` < CHANNELS | stored | — |
//! | PT_ROOT_HI of channel `n` < CHANNELS | stored | `SetRoot` with both halves |
//! | PT_ROOT of a channel ≥ CHANNELS | reserved: reads 0, ignored | — |
//! | INV_CONTROL, channel ≥ CHANNELS | error 8, ERROR_INFO = the value | — |
//! | INV_CONTROL with ALL | — | `InvalidateAll` (ALL wins over RANGE) |
//! | INV_CONTROL with RANGE, range whole 4 KiB pages below 2^48 | — | `Invalidate` |
//! | INV_CONTROL with RANGE, another range | error 9, ERROR_INFO = the value | — |
//! | INV_CONTROL with neither | — | — (nothing to invalidate) |
//! | XLATE_CONTROL, channel ≥ CHANNELS | error 8, ERROR_INFO = the value | — |
//! | XLATE_CONTROL | — | `Translate` |
//! | translation completed | XLATE_STATUS 0, XLATE_RESULT, XLATE_TARGET | — |
//! | translation faulted | XLATE_STATUS = reason, XLATE_RESULT and XLATE_TARGET 0; the fault is recorded | — |
//! | fault recorded | FAULT_VA and FAULT_INFO unless a fault is unacknowledged; FAULT_COUNT + 1 | — |
//! | any write to FAULT_COUNT | FAULT_VA and FAULT_INFO cleared (FAULT_COUNT counts on) | — |

use crate::config::MAX_CHANNELS;
use crate::effects::{Fault, FaultReason, MmuRequest, Translation};
use crate::lanes::merge64;

use super::control::DeviceErrorCode;
use super::layout::*;

/// INV_CONTROL, XLATE_CONTROL and FAULT_INFO: the channel field, bits 5:0.
pub const CHANNEL_FIELD: u32 = 0x3f;
/// INV_CONTROL: invalidate INV_VA .. INV_VA + INV_SIZE.
pub const INV_CONTROL_RANGE: u32 = 1 << 8;
/// INV_CONTROL: invalidate the channel's whole address space.
pub const INV_CONTROL_ALL: u32 = 1 << 9;
/// XLATE_CONTROL: translate for a write access.
pub const XLATE_CONTROL_WRITE: u32 = 1 << 8;
/// FAULT_INFO: the faulting access was a write.
pub const FAULT_INFO_WRITE: u32 = 1 << 8;
/// FAULT_INFO: the reason field, bits 19:16.
pub const FAULT_INFO_REASON_SHIFT: u32 = 16;
/// The granule of invalidation: 4 KiB.
pub const MMU_PAGE_SIZE: u64 = 4096;
/// The first address past the 48-bit GPU virtual address space.
pub const GPU_VA_END: u64 = 1 << 48;

/// What a guest write to an MMU register asks of the control block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmuWrite {
    /// Stored, or ignored: nothing else to do.
    Stored,
    /// An operation for the owner.
    Request(MmuRequest),
    /// A command the device refuses: record the error, with ERROR_INFO.
    Refused(DeviceErrorCode, u32),
}

/// A translation handed to the owner and not yet completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingTranslate {
    channel: u32,
    va: u64,
    write: bool,
}

/// The MMU registers' state.
#[derive(Debug, Clone)]
pub struct MmuRegisters {
    channels: u32,
    roots: [u64; MAX_CHANNELS as usize],
    inv_va: u64,
    inv_size: u64,
    /// The first fault not yet acknowledged.
    fault: Option<Fault>,
    fault_count: u32,
    xlate_va: u64,
    xlate_status: u32,
    xlate_result: u64,
    xlate_target: u32,
    pending_translate: Option<PendingTranslate>,
}

impl MmuRegisters {
    /// The registers at reset, for a device with `channels` channels (at
    /// most [`MAX_CHANNELS`], as the validated config guarantees; more are
    /// treated as that many).
    pub fn new(channels: u32) -> Self {
        MmuRegisters {
            channels: channels.min(MAX_CHANNELS),
            roots: [0; MAX_CHANNELS as usize],
            inv_va: 0,
            inv_size: 0,
            fault: None,
            fault_count: 0,
            xlate_va: 0,
            xlate_status: 0,
            xlate_result: 0,
            xlate_target: 0,
            pending_translate: None,
        }
    }

    /// Returns every register to its reset value and forgets a translation
    /// in flight (a late completion is then ignored).
    pub fn reset(&mut self) {
        *self = MmuRegisters::new(self.channels);
    }

    /// Whether the 32-bit register at BAR2 offset `reg` is one of these.
    pub fn owns(reg: u64) -> bool {
        (CTRL_INV_VA_LO..=CTRL_XLATE_TARGET).contains(&reg)
            || (CHANNEL_MMU_OFFSET..CHANNEL_MMU_OFFSET + CHANNEL_MMU_SIZE).contains(&reg)
    }

    /// Channel `channel`'s page-table root as the guest last wrote it, or
    /// `None` if the channel does not exist.
    pub fn root(&self, channel: u32) -> Option<u64> {
        (channel < self.channels).then(|| self.roots[channel as usize])
    }

    /// Reads the 32-bit register at BAR2 offset `reg`; reserved and
    /// write-only registers read 0.
    pub fn read(&self, reg: u64) -> u32 {
        if let Some((channel, half)) = self.root_register(reg) {
            return (self.roots[channel] >> half) as u32;
        }
        let fault = self.fault;
        match reg {
            CTRL_INV_VA_LO => self.inv_va as u32,
            CTRL_INV_VA_HI => (self.inv_va >> 32) as u32,
            CTRL_INV_SIZE_LO => self.inv_size as u32,
            CTRL_INV_SIZE_HI => (self.inv_size >> 32) as u32,
            CTRL_FAULT_VA_LO => fault.map_or(0, |f| f.va as u32),
            CTRL_FAULT_VA_HI => fault.map_or(0, |f| (f.va >> 32) as u32),
            CTRL_FAULT_INFO => fault.map_or(0, fault_info),
            CTRL_FAULT_COUNT => self.fault_count,
            CTRL_XLATE_VA_LO => self.xlate_va as u32,
            CTRL_XLATE_VA_HI => (self.xlate_va >> 32) as u32,
            CTRL_XLATE_STATUS => self.xlate_status,
            CTRL_XLATE_RESULT_LO => self.xlate_result as u32,
            CTRL_XLATE_RESULT_HI => (self.xlate_result >> 32) as u32,
            CTRL_XLATE_TARGET => self.xlate_target,
            _ => 0,
        }
    }

    /// Applies a guest write to the register at BAR2 offset `reg`; `value`
    /// holds the written bytes at their positions, `enables` has `0xff` in
    /// each written byte.
    pub fn write(&mut self, reg: u64, value: u32, enables: u32) -> MmuWrite {
        let value = value & enables;
        if let Some((channel, half)) = self.root_register(reg) {
            let root = merge64(self.roots[channel], half, value, enables);
            self.roots[channel] = root;
            // LO then HI, so the write of HI is the one that commits.
            return if half == 32 {
                MmuWrite::Request(MmuRequest::SetRoot {
                    channel: channel as u32,
                    root,
                })
            } else {
                MmuWrite::Stored
            };
        }
        match reg {
            CTRL_INV_VA_LO => self.inv_va = merge64(self.inv_va, 0, value, enables),
            CTRL_INV_VA_HI => self.inv_va = merge64(self.inv_va, 32, value, enables),
            CTRL_INV_SIZE_LO => self.inv_size = merge64(self.inv_size, 0, value, enables),
            CTRL_INV_SIZE_HI => self.inv_size = merge64(self.inv_size, 32, value, enables),
            CTRL_INV_CONTROL => return self.invalidate(value),
            CTRL_FAULT_COUNT => self.fault = None,
            CTRL_XLATE_VA_LO => self.xlate_va = merge64(self.xlate_va, 0, value, enables),
            CTRL_XLATE_VA_HI => self.xlate_va = merge64(self.xlate_va, 32, value, enables),
            CTRL_XLATE_CONTROL => return self.translate(value),
            _ => {}
        }
        MmuWrite::Stored
    }

    /// Records a fault the owner reports: the fault registers keep the
    /// first one until acknowledged; FAULT_COUNT counts every one.
    pub fn record_fault(&mut self, fault: Fault) {
        self.fault.get_or_insert(fault);
        self.fault_count = self.fault_count.wrapping_add(1);
    }

    /// Completes the translation handed out last and returns the fault to
    /// record if it faulted. Without one outstanding (never started, or
    /// dropped by a reset) this does nothing.
    pub fn complete_translate(
        &mut self,
        result: Result<Translation, FaultReason>,
    ) -> Option<Fault> {
        let request = self.pending_translate.take()?;
        match result {
            Ok(translation) => {
                self.xlate_status = 0;
                self.xlate_result = translation.address;
                self.xlate_target = u32::from(translation.system);
                None
            }
            Err(reason) => {
                self.xlate_status = reason as u32;
                self.xlate_result = 0;
                self.xlate_target = 0;
                Some(Fault {
                    channel: request.channel,
                    va: request.va,
                    write: request.write,
                    reason,
                })
            }
        }
    }

    /// For a PT_ROOT register of an existing channel: the channel and which
    /// half (the shift of its bits in the root).
    fn root_register(&self, reg: u64) -> Option<(usize, u32)> {
        let rel = reg.checked_sub(CHANNEL_MMU_OFFSET)?;
        if rel >= CHANNEL_MMU_SIZE {
            return None;
        }
        let channel = rel / CHANNEL_MMU_STRIDE;
        if channel >= u64::from(self.channels) {
            return None;
        }
        let half = match rel % CHANNEL_MMU_STRIDE {
            PT_ROOT_LO => 0,
            PT_ROOT_HI => 32,
            _ => return None,
        };
        Some((channel as usize, half))
    }

    /// The channel named by a command's bits 5:0, if it exists.
    fn channel(&self, command: u32) -> Option<u32> {
        let channel = command & CHANNEL_FIELD;
        (channel < self.channels).then_some(channel)
    }

    fn invalidate(&mut self, command: u32) -> MmuWrite {
        let Some(channel) = self.channel(command) else {
            return MmuWrite::Refused(DeviceErrorCode::BadChannel, command);
        };
        if command & INV_CONTROL_ALL != 0 {
            return MmuWrite::Request(MmuRequest::InvalidateAll { channel });
        }
        if command & INV_CONTROL_RANGE == 0 {
            return MmuWrite::Stored;
        }
        let (va, size) = (self.inv_va, self.inv_size);
        let whole_pages = va % MMU_PAGE_SIZE == 0 && size != 0 && size % MMU_PAGE_SIZE == 0;
        let inside = va.checked_add(size).is_some_and(|end| end <= GPU_VA_END);
        if !(whole_pages && inside) {
            return MmuWrite::Refused(DeviceErrorCode::BadRange, command);
        }
        MmuWrite::Request(MmuRequest::Invalidate { channel, va, size })
    }

    fn translate(&mut self, command: u32) -> MmuWrite {
        let Some(channel) = self.channel(command) else {
            return MmuWrite::Refused(DeviceErrorCode::BadChannel, command);
        };
        let request = PendingTranslate {
            channel,
            va: self.xlate_va,
            write: command & XLATE_CONTROL_WRITE != 0,
        };
        self.pending_translate = Some(request);
        MmuWrite::Request(MmuRequest::Translate {
            channel,
            va: request.va,
            write: request.write,
        })
    }
}

/// FAULT_INFO for `fault`: channel in bits 5:0, write in bit 8, reason in
/// bits 19:16.
fn fault_info(fault: Fault) -> u32 {
    let write = if fault.write { FAULT_INFO_WRITE } else { 0 };
    (fault.channel & CHANNEL_FIELD) | write | ((fault.reason as u32) << FAULT_INFO_REASON_SHIFT)
}
