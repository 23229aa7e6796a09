//! The validator: copies a submission into a private buffer once and
//! decodes every command of the copy, at every nesting level, in one pass.
//!
//! At a doorbell the engine owner hands it the channel's ring registers and
//! the channel's GPU memory. The validator checks the registers, reads the
//! ring span GET..PUT (two reads where it wraps), and decodes it. At each
//! BATCH_START it checks the depth and the submission's byte budget, reads
//! the whole batch to the end of the private buffer, and decodes that
//! before going on after the BATCH_START; BATCH_END must be a batch's last
//! dword. Every byte it reads it reads once, and every command it hands
//! on it decoded from its own copy, so the guest changing its memory during
//! or after validation changes nothing of the result. The first refusal
//! ends the submission: nothing of it is returned.

use zerocopy::IntoBytes;

use crate::addr::GpuVa;
use crate::decode::{Decoded, Privileged, decode};
use crate::error::{CommandSite, Refusal, ValidateError};
use crate::memory::StreamMemory;
use crate::ring::{RingSpan, RingState};
use crate::screen::{WINDOW, screen};
use crate::stream::{Origin, Segment, StreamParts, ValidatedStream};

/// Deepest batch nesting: the ring is level 0, and a BATCH_START at level
/// 4 is refused (BATCH_DEPTH).
pub const MAX_BATCH_DEPTH: u8 = 4;

/// Most bytes one submission may copy: the ring span plus every batch, a
/// batch started twice counting twice (STREAM_TOO_LONG past it).
pub const MAX_SUBMISSION_BYTES: u32 = 1 << 20;

/// Most BATCH_STARTs one submission may run (STREAM_TOO_LONG past it).
/// Each one splits the stream into another run to execute, so this bounds
/// what a [`ValidatedStream`] holds besides its bytes (about 450 KiB of
/// runs at most) whatever the guest's batches look like.
pub const MAX_BATCH_STARTS: u32 = 4096;

/// Validates submissions. It keeps only scratch buffers between calls (no
/// channel state), so one can serve every channel of an engine thread;
/// handing each [`ValidatedStream`] back with [`recycle`](Self::recycle)
/// once it has run makes validation allocation-free in the steady state.
///
/// Memory: a [`ValidatedStream`] (and the scratch a validator keeps) holds
/// at most [`MAX_SUBMISSION_BYTES`] + 32 bytes of commands and one run per
/// BATCH_START and BATCH_END plus one (56 bytes each, at most
/// 2 × [`MAX_BATCH_STARTS`] + 1 of them).
#[derive(Debug, Default)]
pub struct Validator {
    words: Vec<u32>,
    segments: Vec<Segment>,
}

impl Validator {
    /// A validator with empty scratch buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the commands from `ring.get` to `ring.put`, reading the
    /// ring and its batches through `memory` (the channel's MMU).
    pub fn validate<M: StreamMemory + ?Sized>(
        &mut self,
        ring: &RingState,
        memory: &mut M,
    ) -> Result<ValidatedStream, ValidateError> {
        let span = ring.span().map_err(ValidateError::ring)?;
        self.segments.clear();
        let summary = Pass {
            words: &mut self.words,
            segments: &mut self.segments,
            memory,
        }
        .run(&span)?;
        Ok(ValidatedStream::new(StreamParts {
            words: std::mem::take(&mut self.words),
            segments: std::mem::take(&mut self.segments),
            commands: summary.commands,
            bytes: summary.bytes,
            ring_bytes: span.bytes(),
            new_get: span.put,
        }))
    }

    /// Takes back the buffers of a stream that has run, for the next
    /// submission.
    pub fn recycle(&mut self, stream: ValidatedStream) {
        let (words, segments) = stream.into_buffers();
        if words.capacity() >= self.words.capacity() {
            self.words = words;
            self.segments = segments;
        }
    }
}

struct Summary {
    commands: usize,
    bytes: u32,
}

/// A ring span or batch being decoded.
#[derive(Clone, Copy)]
struct Frame {
    /// Next word to decode.
    pos: usize,
    /// One past its last word.
    end: usize,
    /// First word of the run not yet recorded as a segment.
    run_start: usize,
    origin: Origin,
    level: u8,
    /// The BATCH_START that started it (the ring's VA at GET for the ring).
    started_by: CommandSite,
}

impl Frame {
    fn site(&self, word: usize) -> CommandSite {
        CommandSite {
            va: self.origin.va(word),
            level: self.level,
        }
    }

    /// Records the run of guest commands that ends at `end`.
    fn close_run(&mut self, end: usize, segments: &mut Vec<Segment>) {
        if end > self.run_start {
            segments.push(Segment {
                start: self.run_start,
                end,
                origin: self.origin,
                level: self.level,
            });
        }
    }
}

struct Pass<'a, M: ?Sized> {
    /// The private buffer: the ring span, then each batch in the order
    /// they are reached. It only grows, so that reuse never zeroes it
    /// again; words past what this pass copied are stale and never read.
    words: &'a mut Vec<u32>,
    segments: &'a mut Vec<Segment>,
    memory: &'a mut M,
}

impl<M: StreamMemory + ?Sized> Pass<'_, M> {
    fn run(mut self, span: &RingSpan) -> Result<Summary, ValidateError> {
        let ring_words = span.bytes() as usize / 4;
        let ring = Frame {
            pos: 0,
            end: ring_words,
            run_start: 0,
            origin: Origin {
                base: span.base.get(),
                offset: u64::from(span.get),
                mask: u64::from(span.size - 1),
                anchor: 0,
            },
            level: 0,
            started_by: CommandSite {
                va: span.va(span.get),
                level: 0,
            },
        };
        let mut at = 0;
        for (va, bytes) in span.pieces() {
            let words = bytes as usize / 4;
            self.fetch(va, at, words, ring.started_by)?;
            at += words;
        }

        let mut used = ring_words;
        let mut bytes = span.bytes();
        let mut starts = 0;
        let mut commands = 0;
        let mut stack = [ring; MAX_BATCH_DEPTH as usize + 1];
        let mut top = 0;
        loop {
            let frame = &mut stack[top];
            let (stop, pos) = match scan(self.words, frame.pos, frame.end, &mut commands) {
                Ok(found) => found,
                Err((pos, error)) => return Err(ValidateError::at(frame.site(pos), error)),
            };
            match stop {
                Stop::End if frame.level == 0 => {
                    frame.close_run(pos, self.segments);
                    return Ok(Summary { commands, bytes });
                }
                Stop::End => {
                    return Err(ValidateError::at(
                        frame.started_by,
                        Refusal::UnterminatedBatch,
                    ));
                }
                Stop::BatchEnd => {
                    if frame.level == 0 || pos + 1 != frame.end {
                        return Err(ValidateError::at(frame.site(pos), Refusal::StrayBatchEnd));
                    }
                    frame.close_run(pos, self.segments);
                    top -= 1;
                }
                Stop::BatchStart {
                    batch,
                    bytes: len,
                    dwords,
                } => {
                    let site = frame.site(pos);
                    let level = frame.level + 1;
                    if level > MAX_BATCH_DEPTH {
                        return Err(ValidateError::at(site, Refusal::BatchDepth { level }));
                    }
                    if starts == MAX_BATCH_STARTS {
                        return Err(ValidateError::at(site, Refusal::TooManyBatches));
                    }
                    starts += 1;
                    let total = u64::from(bytes) + u64::from(len);
                    if total > u64::from(MAX_SUBMISSION_BYTES) {
                        return Err(ValidateError::at(
                            site,
                            Refusal::StreamTooLong { bytes: total },
                        ));
                    }
                    bytes += len;
                    frame.close_run(pos, self.segments);
                    frame.pos = pos + dwords;
                    frame.run_start = frame.pos;
                    let words = len as usize / 4;
                    self.fetch(batch, used, words, site)?;
                    top += 1;
                    stack[top] = Frame {
                        pos: used,
                        end: used + words,
                        run_start: used,
                        origin: Origin {
                            base: batch.get(),
                            offset: 0,
                            mask: u64::MAX,
                            anchor: used,
                        },
                        level,
                        started_by: site,
                    };
                    used += words;
                }
                Stop::Privileged(form) => {
                    return Err(ValidateError::at(
                        frame.site(pos),
                        Refusal::Privileged(form),
                    ));
                }
            }
        }
    }

    /// Reads `words` dwords at `va` into the private buffer at word `at`.
    fn fetch(
        &mut self,
        va: GpuVa,
        at: usize,
        words: usize,
        site: CommandSite,
    ) -> Result<(), ValidateError> {
        if words == 0 {
            return Ok(());
        }
        let end = at + words;
        // The screen reads a window of dwords from each command on,
        // whatever its length: keep them readable past the copy's end.
        if self.words.len() < end + WINDOW - 1 {
            self.words.resize(end + WINDOW - 1, 0);
        }
        let copy = &mut self.words[at..end];
        self.memory
            .read(va, copy.as_mut_bytes())
            .map_err(|fault| ValidateError::at(site, Refusal::FetchFault(fault)))?;
        if cfg!(target_endian = "big") {
            for word in copy {
                *word = u32::from_le(*word);
            }
        }
        Ok(())
    }
}

/// Why [`scan`] stopped.
enum Stop {
    /// The end of the ring span or batch.
    End,
    /// A BATCH_START of `dwords` dwords.
    BatchStart {
        batch: GpuVa,
        bytes: u32,
        dwords: usize,
    },
    /// A BATCH_END.
    BatchEnd,
    /// A privileged form.
    Privileged(Privileged),
}

/// Decodes guest commands from word `pos` of `words` until `end` or the
/// first command that is not a guest command, and says where it stopped
/// and why; counts the guest commands into `commands`. This is the loop
/// every dword of a submission goes through: the screen passes the common
/// commands, the decoder decides the rest.
#[inline]
fn scan(
    words: &[u32],
    mut pos: usize,
    end: usize,
    commands: &mut usize,
) -> Result<(Stop, usize), (usize, Refusal)> {
    let mut count = 0;
    let result = loop {
        if let Some(dwords) = screen(words, pos, end) {
            pos += dwords;
            count += 1;
            continue;
        }
        let rest = match words.get(pos..end) {
            Some(rest) if !rest.is_empty() => rest,
            _ => break Ok((Stop::End, pos)),
        };
        let stop = match decode(rest) {
            Ok((Decoded::Command(_), dwords)) => {
                pos += dwords;
                count += 1;
                continue;
            }
            Ok((Decoded::BatchStart { batch, bytes }, dwords)) => Stop::BatchStart {
                batch,
                bytes,
                dwords,
            },
            Ok((Decoded::BatchEnd, _)) => Stop::BatchEnd,
            Ok((Decoded::Privileged(form), _)) => Stop::Privileged(form),
            Err(error) => break Err((pos, Refusal::Decode(error))),
        };
        break Ok((stop, pos));
    };
    *commands += count;
    result
}

#[cfg(test)]
mod tests;
