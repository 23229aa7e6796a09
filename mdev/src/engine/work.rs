//! The work a vGPU's channels hold: validated submissions queued for the
//! engine, the one each channel is running, and its general-purpose
//! registers.

use std::collections::VecDeque;
use std::time::Instant;

use vgpu_commands::{CommandAt, CommandCursor, GPR_COUNT, ValidatedStream, Validator};

/// Most validated submissions a channel holds (queued or running). A
/// doorbell rung while a channel holds that many is taken when one
/// completes: RING_GET waits until then.
pub const MAX_QUEUED_SUBMISSIONS: usize = 16;

/// Bytes of validated copies (ring spans and batches) one vGPU's channels
/// hold together, queued or running, at which doorbells wait: a doorbell
/// is taken while they hold less, so they hold at most this plus one
/// submission (1 MiB).
pub const MAX_HELD_BYTES: u64 = 16 << 20;

/// Doorbells a channel remembers while they wait for room; later ones are
/// merged into the last (one span from its GET to the latest PUT).
pub const MAX_PENDING_DOORBELLS: usize = 16;

/// How long a SEMAPHORE_WAIT may wait before the watchdog stops the
/// channel (error 17).
pub const SEMAPHORE_TIMEOUT_MS: u64 = 2000;

/// How much engine time one submission may use before the watchdog stops
/// the channel (error 17).
pub const SUBMISSION_TIME_LIMIT_MS: u64 = 1000;

/// Bytes of a COPY or FILL, or of a BLIT2D's rows, an engine moves before
/// it may be preempted: the preemption boundary.
pub const ENGINE_CHUNK: u64 = 64 << 10;

/// A submission an engine has started.
#[derive(Debug)]
pub(crate) struct Running {
    /// The validated copy.
    pub stream: ValidatedStream,
    /// Where the next command is.
    pub cursor: CommandCursor,
    /// The command in progress, decoded from the copy when it started.
    pub current: Option<CommandAt>,
    /// Bytes (COPY, FILL) or rows (BLIT2D) of it done.
    pub progress: u64,
    /// Engine time used so far, ns.
    pub engine_ns: u64,
    /// When the SEMAPHORE_WAIT in progress started waiting.
    pub waiting_since: Option<Instant>,
    /// The walk of the TLB_INVALIDATE in progress.
    pub walk: Option<std::sync::Arc<crate::vgpu::WalkTicket>>,
}

impl Running {
    /// The command in progress, or the next one; `None` at the end.
    pub fn command(&mut self) -> Option<CommandAt> {
        if self.current.is_none() {
            self.current = self.stream.next_command(&mut self.cursor);
        }
        self.current
    }

    pub fn start(stream: ValidatedStream) -> Self {
        Self {
            stream,
            cursor: CommandCursor::default(),
            current: None,
            progress: 0,
            engine_ns: 0,
            waiting_since: None,
            walk: None,
        }
    }
}

/// One channel's work.
#[derive(Debug, Default)]
pub(crate) struct ChannelWork {
    pub queue: VecDeque<ValidatedStream>,
    pub running: Option<Running>,
    pub gprs: [u32; GPR_COUNT as usize],
    /// PUT values of doorbells not taken yet (waiting for room), oldest
    /// first.
    pub pending: VecDeque<u32>,
}

impl ChannelWork {
    pub fn held(&self) -> usize {
        self.queue.len() + usize::from(self.running.is_some())
    }

    pub fn has_work(&self) -> bool {
        self.running.is_some() || !self.queue.is_empty()
    }

    /// Bytes of validated copies held.
    pub fn bytes(&self) -> u64 {
        self.queue
            .iter()
            .chain(self.running.as_ref().map(|r| &r.stream))
            .map(|s| u64::from(s.bytes()))
            .sum()
    }

    /// Drops everything (channel reset, device reset, detach).
    pub fn clear(&mut self, validator: &mut Validator) {
        for stream in self.queue.drain(..) {
            validator.recycle(stream);
        }
        if let Some(running) = self.running.take() {
            validator.recycle(running.stream);
        }
        self.gprs = [0; GPR_COUNT as usize];
        self.pending.clear();
    }
}

/// Every channel's work and the validator, under one lock per vGPU.
#[derive(Debug)]
pub(crate) struct Work {
    pub channels: Vec<ChannelWork>,
    pub validator: Validator,
    /// The channel the next engine turn starts with (round robin).
    pub next: usize,
    /// Staging for engine copies: one chunk, kept between steps.
    pub bounce: Vec<u8>,
    /// The FILL pattern `bounce` holds laid out, if it holds one.
    pub fill: Option<u32>,
    /// Bytes of validated copies the channels hold.
    pub held_bytes: u64,
}

impl Work {
    pub fn new(channels: u32) -> Self {
        Self {
            channels: (0..channels).map(|_| ChannelWork::default()).collect(),
            validator: Validator::new(),
            next: 0,
            bounce: Vec::with_capacity(ENGINE_CHUNK as usize),
            fill: None,
            held_bytes: 0,
        }
    }

    pub fn has_work(&self) -> bool {
        self.channels.iter().any(ChannelWork::has_work)
    }

    pub fn clear(&mut self) {
        let Work {
            channels,
            validator,
            ..
        } = self;
        for channel in channels {
            channel.clear(validator);
        }
        self.held_bytes = 0;
    }

    /// Drops channel `n`'s work and what it held.
    pub fn clear_channel(&mut self, n: usize) {
        let Work {
            channels,
            validator,
            held_bytes,
            ..
        } = self;
        if let Some(c) = channels.get_mut(n) {
            *held_bytes -= c.bytes();
            c.clear(validator);
        }
    }
}
