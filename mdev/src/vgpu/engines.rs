//! The vGPU's side of the engines: taking commands from a channel's ring
//! at a doorbell (validated into a private copy), and running them, one
//! step at a time, when the GPU's engine thread gives the vGPU a turn.
//!
//! Lock order: `work`, then `memory` or `hw` (never both at once). The
//! `work` lock is held for one step: at most one chunk of a command
//! ([`ENGINE_CHUNK`]), so a doorbell or a channel reset waits at most that
//! long, and when a reset returns nothing more of the channel's work runs.

use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use vgpu_commands::{Command, CommandAt, FenceValue, ReadableRegister, RingState, TlbScope};
use vgpu_emulation::{Fault, MmuRequest};

use super::{GpuMemory, VgpuStats, VirtualGpu};
use crate::engine::memory::{AccessFault, ChannelMemory};
use crate::engine::work::{
    ENGINE_CHUNK, MAX_HELD_BYTES, MAX_PENDING_DOORBELLS, MAX_QUEUED_SUBMISSIONS, Running,
    SEMAPHORE_TIMEOUT_MS, SUBMISSION_TIME_LIMIT_MS, Work,
};

/// Channel error: an engine access faulted (FAULT registers say why).
pub const ERROR_ENGINE_FAULT: u32 = 16;
/// Channel error: the watchdog stopped the channel.
pub const ERROR_WATCHDOG: u32 = 17;
/// Channel error: a SET_SCANOUT surface that is not one run of the vGPU's
/// VRAM in address order.
pub const ERROR_BAD_SURFACE: u32 = 18;

/// What a look at a vGPU's control pages found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageLook {
    /// A doorbell rang.
    pub rang: bool,
    /// Some running channel has an enabled page.
    pub watched: bool,
}

/// What became of a span at a doorbell.
enum Taken {
    /// Validated and queued.
    Queued,
    /// Refused: the channel stopped.
    Refused,
    /// A walk of the vGPU holds its memory: the doorbell waits.
    Busy,
}

/// How an engine turn of a vGPU ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnEnd {
    /// No work is left.
    Done,
    /// The turn's time is over; work is left.
    Preempted,
    /// Everything left waits on a semaphore: look again a little later.
    Blocked,
}

/// What one step of a command came to.
enum Step {
    /// The command is not finished (a chunk of it was done).
    Continue,
    /// The command completed.
    Done,
    /// A FENCE completed.
    Fence { value: u64, interrupt: bool },
    /// A SEMAPHORE_WAIT whose condition does not hold yet.
    Blocked,
    /// The command waits for something else than guest memory (its walk,
    /// or the vGPU's memory held by a walk): no progress, no watchdog.
    Busy,
    /// A SET_SCANOUT whose surface was found in VRAM: show it.
    Scanout(vgpu_emulation::ScanoutMode),
    /// An access faulted.
    Fault(AccessFault),
    /// The channel must stop with this error at the command's VA.
    Stop(u32),
}

impl VirtualGpu {
    pub(crate) fn work(&self) -> MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Doorbells of `channels` (a bitmap) were rung: takes their new
    /// commands, validated, from their rings.
    pub fn doorbells(&self, channels: u64) {
        if channels == 0 {
            return;
        }
        let mut work = self.work();
        let mut queued = false;
        for channel in super::vector_bits(channels) {
            let Some(put) = self.hw().device.channels().ring(channel).map(|r| r.put) else {
                continue;
            };
            let Some(c) = work.channels.get_mut(channel as usize) else {
                continue;
            };
            // Each doorbell's span is taken on its own, so that spans that
            // wait for room are not merged past the submission limit; past
            // MAX_PENDING_DOORBELLS the latest ones are merged.
            if c.pending.back() != Some(&put) {
                if c.pending.len() < MAX_PENDING_DOORBELLS {
                    c.pending.push_back(put);
                } else if let Some(last) = c.pending.back_mut() {
                    *last = put;
                }
            }
            queued |= self.take_pending(&mut work, channel);
        }
        drop(work);
        if queued {
            self.notify_engine();
        }
    }

    /// Looks at the PUT word of every running channel's control page and
    /// rings the doorbell of those that moved.
    pub(crate) fn poll_control_pages(&self) -> PageLook {
        let aperture = self.vram().aperture();
        let mut rung = 0u64;
        let mut watched = false;
        {
            let mut hw = self.hw();
            let channels = hw.device.channels_mut();
            for channel in 0..self.profile().channels {
                let Some(page) = channels.userd(channel) else {
                    continue;
                };
                watched = true;
                let mut put = [0u8; 4];
                if aperture.read(page, &mut put).is_ok()
                    && channels.set_put(channel, u32::from_le_bytes(put))
                {
                    rung |= 1 << channel;
                }
            }
        }
        if rung != 0 {
            self.doorbells(rung);
        } else if watched {
            // Doorbells that found the memory held (by a walk or the
            // client's own request) are taken at a later look.
            self.after_walk();
        }
        PageLook {
            rang: rung != 0,
            watched,
        }
    }

    /// The watched control pages may have changed (a register write said
    /// so): pages just enabled, moved or whose channel just started get
    /// RING_PUT (and the mirrored fields) written into them, so that what
    /// they held before is not taken for a doorbell; then the GPU's
    /// watcher looks again.
    pub fn control_pages_changed(&self) {
        {
            let mut hw = self.hw();
            let fresh = hw.device.channels_mut().take_fresh_pages();
            for channel in super::vector_bits(fresh) {
                let channels = hw.device.channels();
                if let Some((page, _)) = channels.control_page(channel) {
                    let put = channels.put(channel);
                    let _ = self.vram().aperture().write(page, &put.to_le_bytes());
                    self.mirror(&hw, channel);
                }
            }
        }
        if let Some(slot) = self.engine_slot() {
            slot.wake_watcher();
        }
    }

    /// Channels of `channels` (a bitmap) were reset: their work goes.
    pub fn reset_channels(&self, channels: u64) {
        if channels == 0 {
            return;
        }
        let mut work = self.work();
        for channel in super::vector_bits(channels) {
            work.clear_channel(channel as usize);
        }
        let queued = self.retry_deferred(&mut work, 0);
        drop(work);
        if queued {
            self.notify_engine();
        }
    }

    /// Takes channel `channel`'s pending doorbells, oldest first, while it
    /// and the vGPU have room: each span from GET to its PUT is validated
    /// into a queued submission. True if any was queued. A refused span
    /// stops the channel.
    fn take_pending(&self, work: &mut Work, channel: u32) -> bool {
        let n = channel as usize;
        let mut queued = false;
        while let Some(&put) = work.channels.get(n).and_then(|c| c.pending.front()) {
            if work.channels[n].held() >= MAX_QUEUED_SUBMISSIONS
                || work.held_bytes >= MAX_HELD_BYTES
            {
                break;
            }
            let Some(ring) = self.hw().device.channels().ring(channel) else {
                work.channels[n].pending.clear();
                break;
            };
            work.channels[n].pending.pop_front();
            if ring.get == put {
                continue;
            }
            let state = RingState {
                base: ring.base,
                size: ring.size,
                get: ring.get,
                put,
            };
            match self.take_span(work, channel, &state) {
                Taken::Queued => queued = true,
                Taken::Refused => break,
                Taken::Busy => {
                    // A walk holds the memory: taken when it ends.
                    work.channels[n].pending.push_front(put);
                    break;
                }
            }
        }
        queued
    }

    /// Validates one span into a queued submission.
    fn take_span(&self, work: &mut Work, channel: u32, state: &RingState) -> Taken {
        let aperture = self.vram().aperture();
        let validated = {
            let Some(mut memory) = self.try_memory() else {
                return Taken::Busy;
            };
            let GpuMemory { windows, mmu } = &mut *memory;
            match mmu.context(channel) {
                Ok(ctx) => {
                    let mut reader = ChannelMemory::new(mmu, ctx, &aperture, windows);
                    work.validator.validate(state, &mut reader)
                }
                Err(_) => return Taken::Refused,
            }
        };
        match validated {
            Ok(stream) => {
                VgpuStats::count(&self.stats.submissions, 1);
                VgpuStats::count(&self.stats.commands, stream.len() as u64);
                let get = stream.new_get();
                work.held_bytes += u64::from(stream.bytes());
                work.channels[channel as usize].queue.push_back(stream);
                let mut hw = self.hw();
                hw.device.channels_mut().advance(channel, get, true);
                self.mirror(&hw, channel);
                Taken::Queued
            }
            Err(e) => {
                VgpuStats::count(&self.stats.refused_submissions, 1);
                self.engine_log.log(|| {
                    tracing::warn!(
                        uuid = %self.uuid(),
                        channel,
                        code = e.code().value(),
                        va = format_args!("{:#x}", e.info()),
                        "commands refused: {}",
                        crate::ErrorChain(&e)
                    )
                });
                self.stop_channel(work, channel, e.code().value(), e.info());
                Taken::Refused
            }
        }
    }

    /// Room was made: takes the doorbells that waited for it, channel
    /// `first`'s first. True if any work was queued.
    fn retry_deferred(&self, work: &mut Work, first: usize) -> bool {
        let count = work.channels.len();
        let mut queued = false;
        for turn in 0..count {
            let other = (first + turn) % count;
            if !work.channels[other].pending.is_empty() {
                queued |= self.take_pending(work, other as u32);
            }
        }
        queued
    }

    /// Stops `channel` with `code` at `va`: its work goes, the registers
    /// say why, its vector is raised.
    fn stop_channel(&self, work: &mut Work, channel: u32, code: u32, va: u64) {
        work.clear_channel(channel as usize);
        self.retry_deferred(work, channel as usize);
        let signals = {
            let mut hw = self.hw();
            let effects = hw.device.channels_mut().stop(channel, code, va);
            self.mirror(&hw, channel);
            hw.raise(effects.vectors)
        };
        signals.send(&self.stats);
    }

    /// Writes what the device reports of `channel` (GET, FENCE, ERROR_CODE)
    /// into its control page, if it has one: a driver that submits through
    /// the page can follow its channel there without a register read.
    fn mirror(&self, hw: &super::Hardware, channel: u32) {
        let Some((page, words)) = hw.device.channels().control_page(channel) else {
            return;
        };
        let mut bytes = [0u8; 16];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        // A page past the slice's end is the guest's mistake: nothing is
        // written.
        let _ = self.vram().aperture().write(page + 4, &bytes);
    }

    /// Runs this vGPU's channel work, round robin over its channels, until
    /// `deadline` (checked at preemption boundaries) or until nothing can
    /// progress. Says what is left.
    pub fn run_engines(&self, deadline: Instant) -> TurnEnd {
        loop {
            let mut work = self.work();
            let count = work.channels.len();
            // One step of the next channel, round robin, that can make
            // progress: a channel waiting on a semaphore does not end the
            // turn while another has work.
            let mut progressed = false;
            for turn in 0..count {
                let channel = (work.next + turn) % count;
                if !work.channels[channel].has_work() {
                    continue;
                }
                if self.step(&mut work, channel as u32) {
                    work.next = (channel + 1) % count;
                    progressed = true;
                    break;
                }
            }
            let more = work.has_work();
            drop(work);
            if !more {
                return TurnEnd::Done;
            }
            if !progressed {
                return TurnEnd::Blocked;
            }
            if Instant::now() >= deadline {
                return TurnEnd::Preempted;
            }
        }
    }

    /// One step of channel `channel`'s work; false if it is blocked.
    fn step(&self, work: &mut Work, channel: u32) -> bool {
        let n = channel as usize;
        if work.channels[n].running.is_none() {
            let Some(stream) = work.channels[n].queue.pop_front() else {
                return false;
            };
            work.channels[n].running = Some(Running::start(stream));
        }
        let Some(at) = work.channels[n].running.as_mut().and_then(Running::command) else {
            self.complete_submission(work, channel);
            return true;
        };
        let fence = self.hw().device.channels().completed_fence(channel);
        let started = Instant::now();
        let step = self.execute(work, channel, at, fence);
        let Some(running) = work.channels[n].running.as_mut() else {
            return true;
        };
        running.engine_ns += started.elapsed().as_nanos() as u64;
        let over_time = running.engine_ns > SUBMISSION_TIME_LIMIT_MS * 1_000_000;
        let va = at.va.get();
        match step {
            Step::Continue => {}
            Step::Done => running.next(),
            Step::Fence { value, interrupt } => {
                running.next();
                let signals = {
                    let mut hw = self.hw();
                    let effects = hw.device.channels_mut().fence(channel, value, interrupt);
                    self.mirror(&hw, channel);
                    hw.raise(effects.vectors)
                };
                signals.send(&self.stats);
            }
            Step::Scanout(mode) => {
                running.next();
                self.hw().device.set_plane(mode);
            }
            Step::Busy => return false,
            Step::Blocked => {
                let since = *running.waiting_since.get_or_insert(started);
                if since.elapsed() > Duration::from_millis(SEMAPHORE_TIMEOUT_MS) {
                    self.watchdog(work, channel, va);
                }
                return false;
            }
            Step::Fault(fault) => {
                VgpuStats::count(&self.stats.mmu_faults, 1);
                self.engine_log.log(|| {
                    tracing::warn!(
                        uuid = %self.uuid(),
                        channel,
                        va = format_args!("{:#x}", fault.va),
                        write = fault.write,
                        reason = ?fault.reason,
                        "engine access faulted; channel stopped"
                    )
                });
                let signals = {
                    let mut hw = self.hw();
                    let effects = hw.device.record_fault(Fault {
                        channel,
                        va: fault.va,
                        write: fault.write,
                        reason: fault.reason,
                    });
                    hw.raise(effects.vectors)
                };
                signals.send(&self.stats);
                self.stop_channel(work, channel, ERROR_ENGINE_FAULT, fault.va);
                return true;
            }
            Step::Stop(code) => {
                self.stop_channel(work, channel, code, va);
                return true;
            }
        }
        if over_time {
            self.watchdog(work, channel, va);
        }
        true
    }

    fn watchdog(&self, work: &mut Work, channel: u32, va: u64) {
        self.engine_log.log(|| {
            tracing::warn!(
                uuid = %self.uuid(),
                channel,
                va = format_args!("{va:#x}"),
                "watchdog stopped the channel"
            )
        });
        self.stop_channel(work, channel, ERROR_WATCHDOG, va);
    }

    /// The running submission of `channel` is done: the next one runs, a
    /// deferred doorbell is taken now that there is room, and a channel
    /// left with nothing is no longer BUSY.
    fn complete_submission(&self, work: &mut Work, channel: u32) {
        let n = channel as usize;
        if let Some(done) = work.channels[n].running.take() {
            work.held_bytes -= u64::from(done.stream.bytes());
            work.validator.recycle(done.stream);
        }
        self.retry_deferred(work, n);
        if !work.channels[n].has_work() {
            self.hw().device.channels_mut().idle(channel);
        }
    }

    /// Carries out (a chunk of) `at` in `channel`'s context.
    fn execute(&self, work: &mut Work, channel: u32, at: CommandAt, fence: u64) -> Step {
        let n = channel as usize;
        if let Command::TlbInvalidate(scope) = at.command {
            return self.tlb_invalidate(work, channel, scope);
        }
        let timestamp = self.engine_timestamp();
        let aperture = self.vram().aperture();
        let Some(mut memory) = self.try_memory() else {
            // A walk of this vGPU holds it: the engine goes on elsewhere.
            return Step::Busy;
        };
        let GpuMemory { windows, mmu } = &mut *memory;
        let Ok(ctx) = mmu.context(channel) else {
            return Step::Stop(ERROR_ENGINE_FAULT);
        };
        let mut mem = ChannelMemory::new(mmu, ctx, &aperture, windows);
        let Work {
            channels,
            bounce,
            fill,
            ..
        } = work;
        let c = &mut channels[n];
        let Some(running) = c.running.as_mut() else {
            return Step::Done;
        };
        let result = match at.command {
            Command::Nop { .. } => Ok(Step::Done),
            Command::Copy { src, dst, bytes } => {
                *fill = None;
                let done = running.progress;
                let len = (u64::from(bytes) - done).min(ENGINE_CHUNK);
                mem.copy(src.get() + done, dst.get() + done, len as usize, bounce)
                    .map(|()| running.advance(len, u64::from(bytes)))
            }
            Command::Fill {
                dst,
                bytes,
                pattern,
            } => {
                let done = running.progress;
                let len = (u64::from(bytes) - done).min(ENGINE_CHUNK);
                // The pattern is laid out once per FILL (a chunk at most),
                // a dword at a time, and reused for its later chunks.
                if *fill != Some(pattern) || bounce.len() < ENGINE_CHUNK as usize {
                    bounce.resize(ENGINE_CHUNK as usize, 0);
                    for word in bounce.chunks_exact_mut(4) {
                        word.copy_from_slice(&pattern.to_le_bytes());
                    }
                    *fill = Some(pattern);
                }
                mem.write(dst.get() + done, &bounce[..len as usize])
                    .map(|()| running.advance(len, u64::from(bytes)))
            }
            Command::Blit2d(blit) => {
                *fill = None;
                let row = u64::from(blit.width) * 4;
                let rows = (ENGINE_CHUNK / row).max(1);
                let first = running.progress;
                let last = (first + rows).min(u64::from(blit.height));
                bounce.resize(row as usize, 0);
                let mut result = Ok(());
                for r in first..last {
                    result = mem
                        .read(blit.src.get() + r * u64::from(blit.src_pitch), bounce)
                        .and_then(|()| {
                            mem.write(blit.dst.get() + r * u64::from(blit.dst_pitch), bounce)
                        });
                    if result.is_err() {
                        break;
                    }
                }
                result.map(|()| running.advance(last - first, u64::from(blit.height)))
            }
            Command::Fence {
                dst,
                value,
                interrupt,
            } => {
                let (bytes, value) = match value {
                    FenceValue::U32(v) => (&v.to_le_bytes()[..], u64::from(v)),
                    FenceValue::U64(v) => (&v.to_le_bytes()[..], v),
                };
                let bytes = bytes.to_vec();
                mem.write(dst.get(), &bytes)
                    .map(|()| Step::Fence { value, interrupt })
            }
            Command::SemaphoreWait {
                addr,
                compare,
                value,
            } => {
                let mut word = [0u8; 4];
                mem.read(addr.get(), &mut word).map(|()| {
                    if compare.holds(u32::from_le_bytes(word), value) {
                        Step::Done
                    } else {
                        Step::Blocked
                    }
                })
            }
            // Handled before the memory is taken.
            Command::TlbInvalidate(_) => Ok(Step::Busy),
            Command::Timestamp { dst } => mem
                .write(dst.get(), &timestamp.to_le_bytes())
                .map(|()| Step::Done),
            Command::LoadRegisterImm { register, value } => {
                c.gprs[usize::from(register.index())] = value;
                Ok(Step::Done)
            }
            Command::StoreRegister { register, dst } => {
                let value = match register {
                    ReadableRegister::Gpr(g) => c.gprs[usize::from(g.index())],
                    ReadableRegister::CompletedFenceLo => fence as u32,
                    ReadableRegister::CompletedFenceHi => (fence >> 32) as u32,
                    ReadableRegister::TimestampLo => timestamp as u32,
                    ReadableRegister::TimestampHi => (timestamp >> 32) as u32,
                };
                mem.write(dst.get(), &value.to_le_bytes())
                    .map(|()| Step::Done)
            }
            Command::SetScanout(surface) => scanout(&mut mem, surface),
        };
        result.unwrap_or_else(Step::Fault)
    }

    /// TLB_INVALIDATE: the walk goes to the vGPU's walker thread; the
    /// channel waits for it (the commands after it must see the new
    /// translations) while the engine runs other work.
    fn tlb_invalidate(&self, work: &mut Work, channel: u32, scope: TlbScope) -> Step {
        let Some(running) = work.channels[channel as usize].running.as_mut() else {
            return Step::Done;
        };
        match &running.walk {
            Some(ticket) if ticket.is_done() => {
                // The walk's time is the submission's, for its watchdog.
                running.engine_ns += ticket.ns();
                running.walk = None;
                return Step::Done;
            }
            Some(_) => return Step::Busy,
            None => {}
        }
        let request = match scope {
            TlbScope::All => MmuRequest::InvalidateAll { channel },
            TlbScope::Range { start, bytes } => MmuRequest::Invalidate {
                channel,
                va: start.get(),
                size: bytes,
            },
        };
        // Never powered on (no engine thread: a test stepping the engines
        // itself): walk here.
        let Some(me) = self.me.get() else {
            self.walk(request);
            return Step::Done;
        };
        let submitted = self
            .walker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .submit(me, request);
        match submitted {
            Some(ticket) => {
                running.walk = Some(ticket);
                Step::Busy
            }
            None => {
                // No thread for it: walk here, as before.
                self.walk(request);
                Step::Done
            }
        }
    }

    /// A walk ended: doorbells that waited for the vGPU's memory are
    /// taken, and the engine looks at the vGPU again.
    pub(crate) fn after_walk(&self) {
        let mut work = self.work();
        let queued = self.retry_deferred(&mut work, 0);
        drop(work);
        if queued {
            self.notify_engine();
        }
    }

    /// Nanoseconds on the GPU's engine clock (0 before the vGPU joins).
    fn engine_timestamp(&self) -> u64 {
        self.engine_slot().map_or(0, |slot| slot.timestamp())
    }
}

impl Running {
    /// Moves to the next command.
    fn next(&mut self) {
        self.current = None;
        self.progress = 0;
        self.waiting_since = None;
    }

    /// `len` more of `total` done: the command completed, or goes on.
    fn advance(&mut self, len: u64, total: u64) -> Step {
        self.progress += len;
        if self.progress >= total {
            Step::Done
        } else {
            Step::Continue
        }
    }
}

/// Finds a SET_SCANOUT's surface in VRAM: every page of it, in address
/// order, must be the next page of one run of the slice (the display reads
/// VRAM, not the GPU's virtual addresses).
fn scanout(
    mem: &mut ChannelMemory<'_>,
    surface: vgpu_commands::Scanout,
) -> Result<Step, AccessFault> {
    const PAGE: u64 = 4096;
    let start = surface.surface.get();
    let bytes =
        u64::from(surface.pitch) * u64::from(surface.height - 1) + u64::from(surface.width) * 4;
    let Some(first) = mem.vram_page(start)? else {
        return Ok(Step::Stop(ERROR_BAD_SURFACE));
    };
    let mut page = PAGE;
    while page < bytes {
        match mem.vram_page(start + page)? {
            Some(offset) if offset == first + page => page += PAGE,
            _ => return Ok(Step::Stop(ERROR_BAD_SURFACE)),
        }
    }
    Ok(Step::Scanout(vgpu_emulation::ScanoutMode {
        width: surface.width,
        height: surface.height,
        bpp: 32,
        pitch: surface.pitch,
        offset: first,
        big_endian: false,
    }))
}
