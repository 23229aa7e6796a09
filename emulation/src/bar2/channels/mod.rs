//! The channel registers at BAR2 + 0x4000, 0x40 bytes per channel.
//!
//! A channel is a ring of commands in GPU virtual memory (its base, a
//! power-of-two size, and the byte offsets PUT, where the guest writes
//! next, and GET, where the device reads next), run in the channel's GPU
//! MMU context. The device holds the registers and their rules; the
//! owner validates and runs the commands and reports back progress,
//! fences and errors, which land here.
//!
//! | offset | register | access |
//! | --- | --- | --- |
//! | +0x00 | RING_BASE_LO | RW while disabled |
//! | +0x04 | RING_BASE_HI | RW while disabled |
//! | +0x08 | RING_SIZE | RW while disabled |
//! | +0x0c | RING_PUT | RW; a write while running rings the doorbell |
//! | +0x10 | RING_GET | RO |
//! | +0x14 | CONTROL | WO: 1 ENABLE, 2 RESET |
//! | +0x18 | STATUS | RO: bits 1:0 state, bit 8 BUSY |
//! | +0x1c | ERROR_CODE | RO |
//! | +0x20 | ERROR_VA_LO | RO |
//! | +0x24 | ERROR_VA_HI | RO |
//! | +0x28 | FENCE_LO | RO |
//! | +0x2c | FENCE_HI | RO |
//! | +0x30 | USERD_LO | RW: control page VRAM offset (64-byte aligned), bit 0 ENABLE |
//! | +0x34 | USERD_HI | RW |
//! | +0x38 | INTR_STATUS | W1C: bit 0 FENCE, bit 1 ERROR |

use crate::config::MAX_CHANNELS;
use crate::effects::Effects;
use crate::lanes::{merge, merge64};

use super::layout::{CHANNEL_OFFSET, CHANNEL_SIZE, CHANNEL_STRIDE};

/// RING_BASE_LO.
pub const RING_BASE_LO: u64 = 0x00;
/// RING_BASE_HI.
pub const RING_BASE_HI: u64 = 0x04;
/// RING_SIZE.
pub const RING_SIZE: u64 = 0x08;
/// RING_PUT: the trapped doorbell.
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

/// CONTROL: check the ring registers and start the channel.
pub const CONTROL_ENABLE: u32 = 1;
/// CONTROL: stop the channel, drop its queued work, clear its error.
pub const CONTROL_RESET: u32 = 2;
/// STATUS: the state field, bits 1:0.
pub const STATUS_STATE: u32 = 0x3;
/// STATUS: work was accepted and has not completed.
pub const STATUS_BUSY: u32 = 1 << 8;
/// USERD_LO: the control page is watched.
pub const USERD_ENABLE: u32 = 1;
/// INTR_STATUS: a FENCE that asked for an interrupt completed.
pub const INTR_FENCE: u32 = 1 << 0;
/// INTR_STATUS: the channel stopped with an error.
pub const INTR_ERROR: u32 = 1 << 1;

/// Smallest ring: 4 KiB.
pub const MIN_RING_SIZE: u32 = 4096;
/// Largest ring: 1 MiB.
pub const MAX_RING_SIZE: u32 = 1 << 20;
/// The first address past the GPU virtual address space.
const VA_END: u64 = 1 << 48;

/// Channel error code set by the device itself when ENABLE finds the ring
/// registers unusable (the other codes come from the owner).
pub const ERROR_BAD_RING: u32 = 10;

/// A channel's state (STATUS bits 1:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelState {
    /// Reset, or never enabled: doorbells are not rung.
    #[default]
    Disabled = 0,
    /// Enabled: a PUT write rings the doorbell.
    Running = 1,
    /// Stopped by an error (ERROR_CODE); RESET brings it back.
    Stopped = 2,
}

/// The ring of a running channel, as the owner needs it to validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    /// GPU VA of the ring's first byte (4 KiB aligned).
    pub base: u64,
    /// Size in bytes, a power of two, 4 KiB ..= 1 MiB.
    pub size: u32,
    /// Byte offset of the next command to read.
    pub get: u32,
    /// Byte offset one past the last command written.
    pub put: u32,
}

/// One channel's registers.
#[derive(Debug, Clone, Copy, Default)]
struct Channel {
    base: u64,
    size: u32,
    put: u32,
    get: u32,
    state: ChannelState,
    busy: bool,
    error_code: u32,
    error_va: u64,
    fence: u64,
    userd: u64,
    intr_status: u32,
    /// The control page was just enabled or moved, or the channel started
    /// with one: the owner writes PUT (and the mirrored fields) into it
    /// before watching it, so that what the page held before is not taken
    /// for a doorbell.
    fresh_page: bool,
}

impl Channel {
    fn status(&self) -> u32 {
        self.state as u32 | if self.busy { STATUS_BUSY } else { 0 }
    }

    fn ring_is_usable(&self) -> bool {
        self.base.is_multiple_of(u64::from(MIN_RING_SIZE))
            && self.base < VA_END
            && VA_END - self.base >= u64::from(self.size)
            && self.size.is_power_of_two()
            && (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&self.size)
    }
}

/// Every channel's registers.
#[derive(Debug, Clone)]
pub struct ChannelRegisters {
    count: u32,
    channels: [Channel; MAX_CHANNELS as usize],
}

impl ChannelRegisters {
    /// The registers at reset for `count` channels (at most
    /// [`MAX_CHANNELS`]).
    pub fn new(count: u32) -> Self {
        Self {
            count: count.min(MAX_CHANNELS),
            channels: [Channel::default(); MAX_CHANNELS as usize],
        }
    }

    /// Every channel back to reset.
    pub fn reset(&mut self) {
        *self = Self::new(self.count);
    }

    /// Whether BAR2 offset `reg` is in the channel block.
    pub fn owns(reg: u64) -> bool {
        (CHANNEL_OFFSET..CHANNEL_OFFSET + CHANNEL_SIZE).contains(&reg)
    }

    /// The channel and register offset of `reg`, if the channel exists.
    fn locate(&self, reg: u64) -> Option<(usize, u64)> {
        let rel = reg.checked_sub(CHANNEL_OFFSET)?;
        let channel = rel / CHANNEL_STRIDE;
        (channel < u64::from(self.count)).then_some((channel as usize, rel % CHANNEL_STRIDE))
    }

    /// Reads the 32-bit register at BAR2 offset `reg`.
    pub fn read(&self, reg: u64) -> u32 {
        let Some((n, off)) = self.locate(reg) else {
            return 0;
        };
        let c = &self.channels[n];
        match off {
            RING_BASE_LO => c.base as u32,
            RING_BASE_HI => (c.base >> 32) as u32,
            RING_SIZE => c.size,
            RING_PUT => c.put,
            RING_GET => c.get,
            STATUS => c.status(),
            ERROR_CODE => c.error_code,
            ERROR_VA_LO => c.error_va as u32,
            ERROR_VA_HI => (c.error_va >> 32) as u32,
            FENCE_LO => c.fence as u32,
            FENCE_HI => (c.fence >> 32) as u32,
            USERD_LO => c.userd as u32,
            USERD_HI => (c.userd >> 32) as u32,
            INTR_STATUS => c.intr_status,
            _ => 0,
        }
    }

    /// Applies a guest write to the register at BAR2 offset `reg`.
    pub fn write(&mut self, reg: u64, value: u32, enables: u32) -> Effects {
        let Some((n, off)) = self.locate(reg) else {
            return Effects::NONE;
        };
        let value = value & enables;
        let c = &mut self.channels[n];
        let configurable = c.state == ChannelState::Disabled;
        match off {
            RING_BASE_LO if configurable => c.base = merge64(c.base, 0, value, enables),
            RING_BASE_HI if configurable => c.base = merge64(c.base, 32, value, enables),
            RING_SIZE if configurable => c.size = merge(c.size, value, enables),
            RING_PUT => {
                c.put = merge(c.put, value, enables);
                if c.state == ChannelState::Running {
                    return Effects::doorbell(n as u32);
                }
            }
            CONTROL => return self.control(n, value),
            USERD_LO => {
                c.userd = merge64(c.userd, 0, value, enables) & !0x3e;
                c.fresh_page = true;
                return Effects::CONTROL_PAGES;
            }
            USERD_HI => {
                c.userd = merge64(c.userd, 32, value, enables);
                c.fresh_page = true;
                return Effects::CONTROL_PAGES;
            }
            INTR_STATUS => c.intr_status &= !value,
            _ => {}
        }
        Effects::NONE
    }

    /// CONTROL: RESET wins over ENABLE when both are written.
    fn control(&mut self, n: usize, value: u32) -> Effects {
        let c = &mut self.channels[n];
        if value & CONTROL_RESET != 0 {
            let keep = Channel {
                base: c.base,
                size: c.size,
                userd: c.userd,
                ..Channel::default()
            };
            *c = keep;
            return Effects::channel_reset(n as u32).merge(Effects::CONTROL_PAGES);
        }
        if value & CONTROL_ENABLE != 0 && c.state == ChannelState::Disabled {
            c.get = 0;
            c.put = 0;
            if c.ring_is_usable() {
                c.state = ChannelState::Running;
                c.fresh_page = true;
                return Effects::CONTROL_PAGES;
            } else {
                return self.stop(n as u32, ERROR_BAD_RING, 0);
            }
        }
        Effects::NONE
    }

    /// The ring of channel `n` if it is running.
    pub fn ring(&self, n: u32) -> Option<Ring> {
        let c = self.channels.get(n as usize).filter(|_| n < self.count)?;
        (c.state == ChannelState::Running).then_some(Ring {
            base: c.base,
            size: c.size,
            get: c.get,
            put: c.put,
        })
    }

    /// The VRAM offset of channel `n`'s control page, if it is running and
    /// its page is enabled.
    pub fn userd(&self, n: u32) -> Option<u64> {
        let c = self.channels.get(n as usize).filter(|_| n < self.count)?;
        (c.state == ChannelState::Running && c.userd & u64::from(USERD_ENABLE) != 0)
            .then_some(c.userd & !0x3f)
    }

    /// Channel `n`'s control page if it is enabled, whatever the channel's
    /// state, with what the device writes into it: RING_GET, FENCE (low,
    /// high) and ERROR_CODE, for offsets 0x04 to 0x13 of the page.
    pub fn control_page(&self, n: u32) -> Option<(u64, [u32; 4])> {
        let c = self.channels.get(n as usize).filter(|_| n < self.count)?;
        (c.userd & u64::from(USERD_ENABLE) != 0).then_some((
            c.userd & !0x3f,
            [c.get, c.fence as u32, (c.fence >> 32) as u32, c.error_code],
        ))
    }

    /// Channels whose control page must be written before it is watched
    /// (see [`control_page`](Self::control_page)), as a bitmap; each is
    /// reported once.
    pub fn take_fresh_pages(&mut self) -> u64 {
        let mut fresh = 0;
        for (n, c) in self.channels.iter_mut().enumerate() {
            if std::mem::take(&mut c.fresh_page) && c.userd & u64::from(USERD_ENABLE) != 0 {
                fresh |= 1 << n;
            }
        }
        fresh
    }

    /// Channel `n`'s RING_PUT.
    pub fn put(&self, n: u32) -> u32 {
        self.channels.get(n as usize).map_or(0, |c| c.put)
    }

    /// The owner took the commands up to `get` (validated, into its own
    /// copy): the ring is free up to there. `busy` says whether accepted
    /// work is still to complete.
    pub fn advance(&mut self, n: u32, get: u32, busy: bool) {
        if let Some(c) = self.running(n) {
            c.get = get;
            c.busy = busy;
        }
    }

    /// The guest moved PUT through the control page; it reads back here.
    /// Returns whether it changed.
    pub fn set_put(&mut self, n: u32, put: u32) -> bool {
        match self.running(n) {
            Some(c) if c.put != put => {
                c.put = put;
                true
            }
            _ => false,
        }
    }

    /// All accepted work of channel `n` completed.
    pub fn idle(&mut self, n: u32) {
        if let Some(c) = self.channels.get_mut(n as usize) {
            c.busy = false;
        }
    }

    /// A FENCE completed: FENCE takes `value`; with `interrupt`,
    /// INTR_STATUS.FENCE is set and the channel's vector raised.
    pub fn fence(&mut self, n: u32, value: u64, interrupt: bool) -> Effects {
        let Some(c) = self.running(n) else {
            return Effects::NONE;
        };
        c.fence = value;
        if interrupt {
            c.intr_status |= INTR_FENCE;
            return Effects::vector(n + 1);
        }
        Effects::NONE
    }

    /// Stops channel `n` with error `code` at `va`: later doorbells are
    /// not rung until RESET; INTR_STATUS.ERROR is set and the channel's
    /// vector raised. A channel already stopped keeps its first error.
    pub fn stop(&mut self, n: u32, code: u32, va: u64) -> Effects {
        let count = self.count;
        let Some(c) = self
            .channels
            .get_mut(n as usize)
            .filter(|c| n < count && c.state != ChannelState::Stopped)
        else {
            return Effects::NONE;
        };
        c.state = ChannelState::Stopped;
        c.busy = false;
        c.error_code = code;
        c.error_va = va;
        c.intr_status |= INTR_ERROR;
        Effects::vector(n + 1)
    }

    /// Channel `n`'s completed fence.
    pub fn completed_fence(&self, n: u32) -> u64 {
        self.channels.get(n as usize).map_or(0, |c| c.fence)
    }

    /// Channel `n`'s error code (0: none).
    pub fn error_code(&self, n: u32) -> u32 {
        self.channels.get(n as usize).map_or(0, |c| c.error_code)
    }

    fn running(&mut self, n: u32) -> Option<&mut Channel> {
        self.channels
            .get_mut(n as usize)
            .filter(|c| c.state == ChannelState::Running)
    }
}

#[cfg(test)]
mod tests;
