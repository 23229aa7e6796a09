//! What the validator hands the engine: the private copy of a submission,
//! validated, and the commands in it in execution order.
//!
//! [`ValidatedStream`] holds the bytes the validator copied (ring span and
//! batches) and the runs of them to execute in order, with BATCH_START and
//! BATCH_END already followed. Only the validator builds one, its fields
//! are private and nothing can change them, so what an engine runs is what
//! was checked, whatever the guest writes into its ring or batches later.
//! The engine reads the commands with [`ValidatedStream::commands`], which
//! decodes the validated dwords again as it goes: that keeps the
//! validator's own pass to a copy and a read, and costs the engine only
//! what building each [`Command`] costs.

use std::fmt;

use crate::addr::GpuVa;
use crate::command::Command;
use crate::decode::{Decoded, decode};

/// Where a copy of guest memory came from, so that every dword of it has
/// its GPU VA: word `i` of the copy is at
/// `base + ((offset + 4 (i − anchor)) & mask)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The ring's base, or the batch's address.
    pub base: u64,
    /// Byte offset from `base` of word `anchor` (the ring's GET; 0 for a
    /// batch).
    pub offset: u64,
    /// `size − 1` for the ring, which wraps; all ones for a batch.
    pub mask: u64,
    /// Index of the copy's first word in the private buffer.
    pub anchor: usize,
}

impl Origin {
    pub fn va(&self, word: usize) -> GpuVa {
        let offset = (self.offset + 4 * (word - self.anchor) as u64) & self.mask;
        // The ring lies below 2^48 (its registers were checked) and so
        // does every batch (its BATCH_START was), so nothing is dropped.
        GpuVa::wrapping(self.base + offset)
    }
}

/// A run of the private buffer holding only guest commands, to execute
/// whole before the next run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub start: usize,
    pub end: usize,
    pub origin: Origin,
    pub level: u8,
}

/// A validated submission of one channel.
pub struct ValidatedStream {
    words: Vec<u32>,
    segments: Vec<Segment>,
    commands: usize,
    bytes: u32,
    ring_bytes: u32,
    new_get: u32,
}

/// What [`Validator`](crate::Validator) passes to [`ValidatedStream::new`].
pub(crate) struct StreamParts {
    pub words: Vec<u32>,
    pub segments: Vec<Segment>,
    pub commands: usize,
    pub bytes: u32,
    pub ring_bytes: u32,
    pub new_get: u32,
}

impl ValidatedStream {
    pub(crate) fn new(parts: StreamParts) -> Self {
        let StreamParts {
            words,
            segments,
            commands,
            bytes,
            ring_bytes,
            new_get,
        } = parts;
        Self {
            words,
            segments,
            commands,
            bytes,
            ring_bytes,
            new_get,
        }
    }

    /// Gives the buffers back for reuse.
    pub(crate) fn into_buffers(self) -> (Vec<u32>, Vec<Segment>) {
        (self.words, self.segments)
    }

    /// The commands to execute, in order, batches followed.
    pub fn commands(&self) -> Commands<'_> {
        Commands {
            words: &self.words,
            segments: self.segments.iter(),
            pos: 0,
            end: 0,
            origin: None,
            level: 0,
            remaining: self.commands,
        }
    }

    /// The command at `cursor`, which then moves past it; `None` once
    /// every command was given. An engine that runs a submission a step at
    /// a time keeps the cursor (plain data) between steps, so that it
    /// holds nothing per command.
    pub fn next_command(&self, cursor: &mut CommandCursor) -> Option<CommandAt> {
        loop {
            let segment = self.segments.get(cursor.segment)?;
            let pos = cursor.pos.max(segment.start);
            if pos >= segment.end {
                cursor.segment += 1;
                cursor.pos = 0;
                continue;
            }
            let words = self.words.get(pos..segment.end)?;
            return match decode(words) {
                Ok((Decoded::Command(command), dwords)) => {
                    cursor.pos = pos + dwords;
                    Some(CommandAt {
                        va: segment.origin.va(pos),
                        level: segment.level,
                        command,
                    })
                }
                _ => {
                    // As in `Commands`: never run anything unvalidated.
                    debug_assert!(false, "a validated segment holds {words:x?}");
                    cursor.segment = self.segments.len();
                    None
                }
            };
        }
    }

    /// Number of commands [`commands`](Self::commands) yields (BATCH_START
    /// and BATCH_END not counted).
    pub fn len(&self) -> usize {
        self.commands
    }

    /// Whether there is nothing to execute.
    pub fn is_empty(&self) -> bool {
        self.commands == 0
    }

    /// The ring's GET once this submission is fetched: its PUT. Every
    /// command up to it has been copied, so the guest may reuse the ring
    /// space at once.
    pub fn new_get(&self) -> u32 {
        self.new_get
    }

    /// Bytes copied from guest memory: the ring span and every batch.
    pub fn bytes(&self) -> u32 {
        self.bytes
    }

    /// Bytes of the ring span (GET to PUT).
    pub fn ring_bytes(&self) -> u32 {
        self.ring_bytes
    }
}

impl fmt::Debug for ValidatedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatedStream")
            .field("commands", &self.commands)
            .field("bytes", &self.bytes)
            .field("ring_bytes", &self.ring_bytes)
            .field("new_get", &self.new_get)
            .field("segments", &self.segments.len())
            .finish()
    }
}

/// A position in the commands of a [`ValidatedStream`], from its start
/// ([`Default`]); see [`ValidatedStream::next_command`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CommandCursor {
    segment: usize,
    pos: usize,
}

/// One command to execute and where the guest put it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommandAt {
    /// GPU VA of the command's header (for an engine error's ERROR_INFO).
    pub va: GpuVa,
    /// 0 in the ring, n in a batch started at level n − 1.
    pub level: u8,
    /// The command.
    pub command: Command,
}

/// The commands of a [`ValidatedStream`] in execution order.
#[derive(Debug)]
pub struct Commands<'a> {
    words: &'a [u32],
    segments: std::slice::Iter<'a, Segment>,
    pos: usize,
    end: usize,
    origin: Option<Origin>,
    level: u8,
    remaining: usize,
}

impl Iterator for Commands<'_> {
    type Item = CommandAt;

    #[inline]
    fn next(&mut self) -> Option<CommandAt> {
        while self.pos == self.end {
            let segment = self.segments.next()?;
            self.pos = segment.start;
            self.end = segment.end;
            self.origin = Some(segment.origin);
            self.level = segment.level;
        }
        let origin = self.origin?;
        let words = self.words.get(self.pos..self.end)?;
        match decode(words) {
            Ok((Decoded::Command(command), dwords)) => {
                let va = origin.va(self.pos);
                self.pos += dwords;
                self.remaining -= 1;
                Some(CommandAt {
                    va,
                    level: self.level,
                    command,
                })
            }
            _ => {
                // The validator put only guest commands in segments, and
                // nothing has written to them since. Should that ever not
                // hold, stop rather than run anything else.
                debug_assert!(false, "a validated segment holds {words:x?}");
                self.pos = self.end;
                self.segments = [].iter();
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Commands<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestMemory;
    use crate::{RingState, StreamBuilder, Validator};

    #[test]
    fn a_run_costs_56_bytes() {
        // The figure the validator's documentation bounds memory with.
        assert_eq!(std::mem::size_of::<Segment>(), 56);
    }

    #[test]
    fn a_cursor_yields_what_the_iterator_yields_across_batches_and_the_wrap() {
        let mut memory = TestMemory::new();
        memory.map(0x1_0000, 0x1000).map(0x8_0000, 0x1000);
        let mut batch = StreamBuilder::new();
        batch.fill(0x9000, 16, 7).nop(2).batch_end();
        memory.write_words(0x8_0000, batch.words());
        let mut ring = StreamBuilder::new();
        ring.nop(1)
            .batch_start(0x8_0000, batch.byte_len())
            .copy(0x9000, 0xa000, 16)
            .fence32(0xb000, 1, true);
        // Start near the end of the ring so that the span wraps.
        let get = 0x1000 - 8;
        let put = memory.write_ring(0x1_0000, 0x1000, get, ring.words());
        let stream = Validator::new()
            .validate(
                &RingState {
                    base: 0x1_0000,
                    size: 0x1000,
                    get,
                    put,
                },
                &mut memory,
            )
            .unwrap();
        let expected: Vec<_> = stream.commands().collect();
        let mut cursor = CommandCursor::default();
        let mut got = Vec::new();
        while let Some(at) = stream.next_command(&mut cursor) {
            got.push(at);
        }
        assert_eq!(got, expected);
        assert_eq!(got.len(), 5);
        assert_eq!(stream.next_command(&mut cursor), None);
    }
}
