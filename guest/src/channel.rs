//! One channel of a vGPU, driven from the guest (docs/device-interface.md,
//! "Channels"): a ring in VRAM, commands written at PUT through BAR0, and
//! a doorbell of one of the two kinds the device has.
//!
//! - [`Door::Register`]: PUT is written to RING_PUT, a trapped BAR2
//!   register; the device validates the new span before the write is
//!   answered.
//! - [`Door::ControlPage`]: PUT is stored into the channel's control page
//!   (USERD) in VRAM through the BAR0 mapping: no exit to the VMM; the
//!   daemon notices the store within milliseconds and mirrors GET, FENCE
//!   and ERROR_CODE back into the page.
//!
//! Every submission is rung on its own and waited for until GET reaches
//! it, so that two submissions never merge into one (the device would
//! validate them as one span, and its watchdog counts a span's engine
//! time).

use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use thiserror::Error;

use crate::gpu::{Gpu, GpuError, VRAM_VA, channel as reg};
use crate::wait::wait_for_every;

/// How often a wait looks at the device.
const POLL_INTERVAL: Duration = Duration::from_micros(500);

/// Which door a channel's PUT goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// RING_PUT, a trapped register write.
    Register,
    /// PUT in the control page at this VRAM offset, a plain store.
    ControlPage(u64),
}

impl std::fmt::Display for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Door::Register => f.write_str("RING_PUT doorbell"),
            Door::ControlPage(page) => write!(f, "control page at VRAM {page:#x}"),
        }
    }
}

/// Why a channel did not do what was asked.
#[derive(Debug, Error)]
pub enum ChannelError {
    /// A register or VRAM access failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The channel stopped with an error.
    #[error("channel {channel} stopped: ERROR_CODE {code}, ERROR_VA {va:#x}")]
    Stopped {
        /// The channel.
        channel: u32,
        /// ERROR_CODE.
        code: u32,
        /// ERROR_VA.
        va: u64,
    },
    /// ENABLE did not start the channel.
    #[error("channel {channel} did not start: STATUS {status:#x}, ERROR_CODE {code}")]
    NotRunning {
        /// The channel.
        channel: u32,
        /// STATUS.
        status: u32,
        /// ERROR_CODE.
        code: u32,
    },
    /// The device did not get to a point in time.
    #[error("channel {channel}: {what} after {timeout:?}")]
    Timeout {
        /// The channel.
        channel: u32,
        /// What did not happen.
        what: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// More commands than the ring has room for.
    #[error("channel {channel}: {words} dwords do not fit in the ring's {free} free bytes")]
    RingFull {
        /// The channel.
        channel: u32,
        /// The commands' length.
        words: usize,
        /// Free bytes.
        free: u32,
    },
}

/// Where a channel lives: its number, its ring and its door.
#[derive(Debug, Clone, Copy)]
pub struct ChannelConfig {
    /// The channel.
    pub index: u32,
    /// VRAM offset of the ring (4 KiB aligned).
    pub ring: u64,
    /// Ring size in bytes (a power of two, 4 KiB ..= 1 MiB).
    pub ring_size: u32,
    /// The door PUT goes through.
    pub door: Door,
    /// VRAM offset of the level-4 page table.
    pub root: u64,
}

/// A running channel.
#[derive(Debug)]
pub struct Channel<'g> {
    gpu: &'g Gpu,
    config: ChannelConfig,
    put: u32,
    doorbells: u32,
}

impl<'g> Channel<'g> {
    /// Resets channel `config.index`, points it at its page tables, ring
    /// and door, and enables it.
    pub fn start(gpu: &'g Gpu, config: ChannelConfig) -> Result<Self, ChannelError> {
        let n = config.index;
        gpu.set_channel_reg(n, reg::CONTROL, reg::RESET)?;
        gpu.set_pt_root(n, config.root)?;
        let base = VRAM_VA + config.ring;
        gpu.set_channel_reg(n, reg::RING_BASE, base as u32)?;
        gpu.set_channel_reg(n, reg::RING_BASE + 4, (base >> 32) as u32)?;
        gpu.set_channel_reg(n, reg::RING_SIZE, config.ring_size)?;
        let userd = match config.door {
            Door::Register => 0,
            Door::ControlPage(page) => {
                // PUT must read 0 (RING_PUT after ENABLE) before the daemon
                // looks at the page, or it would ring at once.
                gpu.zero_vram(page, 64)?;
                page | 1
            }
        };
        gpu.set_channel_reg(n, reg::USERD, userd as u32)?;
        gpu.set_channel_reg(n, reg::USERD + 4, (userd >> 32) as u32)?;
        gpu.set_channel_reg(n, reg::INTR_STATUS, reg::INTR_FENCE | reg::INTR_ERROR)?;
        gpu.set_channel_reg(n, reg::CONTROL, reg::ENABLE)?;
        let status = gpu.channel_reg(n, reg::STATUS)?;
        if status & 3 != reg::STATE_RUNNING {
            return Err(ChannelError::NotRunning {
                channel: n,
                status,
                code: gpu.channel_reg(n, reg::ERROR_CODE)?,
            });
        }
        Ok(Channel {
            gpu,
            config,
            put: 0,
            doorbells: 0,
        })
    }

    /// The channel's number.
    pub fn index(&self) -> u32 {
        self.config.index
    }

    /// Its door.
    pub fn door(&self) -> Door {
        self.config.door
    }

    /// Doorbells rung so far.
    pub fn doorbells(&self) -> u32 {
        self.doorbells
    }

    /// GPU VA of byte `offset` of the ring.
    pub fn ring_va(&self, offset: u32) -> u64 {
        VRAM_VA + self.config.ring + u64::from(offset % self.config.ring_size)
    }

    /// PUT as this side has it.
    pub fn put(&self) -> u32 {
        self.put
    }

    /// GET as the device reports it: through the control page for a
    /// control-page channel (no register read), else RING_GET.
    pub fn get(&self) -> Result<u32, GpuError> {
        match self.config.door {
            Door::ControlPage(page) => self.gpu.vram_u32(page + reg::PAGE_GET),
            Door::Register => self.gpu.channel_reg(self.config.index, reg::RING_GET),
        }
    }

    /// The channel's error, if it stopped: through the control page for a
    /// control-page channel, else the registers.
    pub fn stopped(&self) -> Result<Option<ChannelError>, GpuError> {
        let n = self.config.index;
        let code = match self.config.door {
            Door::ControlPage(page) => self.gpu.vram_u32(page + reg::PAGE_ERROR_CODE)?,
            Door::Register => self.gpu.channel_reg(n, reg::ERROR_CODE)?,
        };
        if code == 0 {
            return Ok(None);
        }
        Ok(Some(ChannelError::Stopped {
            channel: n,
            code,
            va: self.gpu.channel_reg64(n, reg::ERROR_VA)?,
        }))
    }

    /// The last completed FENCE: from the control page for a
    /// control-page channel, else the FENCE registers.
    pub fn fence(&self) -> Result<u64, GpuError> {
        match self.config.door {
            Door::ControlPage(page) => self.gpu.vram_u64(page + reg::PAGE_FENCE),
            Door::Register => self.gpu.channel_reg64(self.config.index, reg::FENCE),
        }
    }

    /// Writes `words` into the ring at PUT (wrapping), without ringing.
    pub fn push(&mut self, words: &[u32]) -> Result<(), ChannelError> {
        let size = self.config.ring_size;
        let used = self.put.wrapping_sub(self.get()?) & (size - 1);
        let free = size - used - 4;
        if words.len() * 4 > free as usize {
            return Err(ChannelError::RingFull {
                channel: self.config.index,
                words: words.len(),
                free,
            });
        }
        for &word in words {
            self.gpu
                .set_vram_u32(self.config.ring + u64::from(self.put), word)?;
            self.put = (self.put + 4) & (size - 1);
        }
        Ok(())
    }

    /// Rings the door with PUT and waits up to `timeout` until the device
    /// has taken everything up to it (GET = PUT).
    pub fn kick(&mut self, timeout: Duration) -> Result<(), ChannelError> {
        // The commands reach VRAM before the doorbell does.
        fence(Ordering::SeqCst);
        let n = self.config.index;
        match self.config.door {
            Door::Register => self.gpu.set_channel_reg(n, reg::RING_PUT, self.put)?,
            Door::ControlPage(page) => self.gpu.set_vram_u32(page + reg::PAGE_PUT, self.put)?,
        }
        self.doorbells += 1;
        let put = self.put;
        let taken = wait_for_every(timeout, POLL_INTERVAL, || match self.get() {
            Ok(get) if get == put => Some(Ok(())),
            Err(e) => Some(Err(ChannelError::from(e))),
            Ok(_) => match self.stopped() {
                Ok(Some(stopped)) => Some(Err(stopped)),
                Ok(None) => None,
                Err(e) => Some(Err(e.into())),
            },
        });
        match taken {
            Some(result) => result,
            None => Err(ChannelError::Timeout {
                channel: n,
                what: format!("GET stayed at {:#x}, PUT is {put:#x}", self.get()?),
                timeout,
            }),
        }
    }

    /// Pushes `words` and kicks.
    pub fn submit(&mut self, words: &[u32], timeout: Duration) -> Result<(), ChannelError> {
        self.push(words)?;
        self.kick(timeout)
    }

    /// RESET: the channel stops and returns to disabled.
    pub fn reset(&mut self) -> Result<(), GpuError> {
        self.put = 0;
        self.gpu
            .set_channel_reg(self.config.index, reg::CONTROL, reg::RESET)
    }

    /// RESET, then ENABLE again with the same ring and door.
    pub fn restart(&mut self) -> Result<(), ChannelError> {
        *self = Channel::start(self.gpu, self.config)?;
        Ok(())
    }
}
