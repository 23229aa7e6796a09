//! A reference validator, written for clarity rather than speed: it reads
//! the ring span and each batch into a list of (VA, dword) pairs and walks
//! them recursively. The fast validator must agree with it on every
//! stream: the same commands at the same VAs and levels, or the same
//! error code and ERROR_INFO.

use crate::addr::GpuVa;
use crate::command::Command;
use crate::decode::{Decoded, decode};
use crate::error::{ChannelErrorCode, ValidateError};
use crate::memory::StreamMemory;
use crate::ring::RingState;
use crate::stream::CommandAt;
use crate::validator::{MAX_BATCH_DEPTH, MAX_BATCH_STARTS, MAX_SUBMISSION_BYTES};

/// What the reference validator makes of a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The commands in execution order, and the bytes copied.
    Valid {
        /// The commands.
        commands: Vec<CommandAt>,
        /// Ring span plus batches.
        bytes: u64,
    },
    /// The channel error and its ERROR_INFO.
    Refused {
        /// The code.
        code: ChannelErrorCode,
        /// The info.
        info: u64,
    },
}

impl Outcome {
    /// The outcome the fast validator's result amounts to.
    pub fn of(result: &Result<crate::ValidatedStream, ValidateError>) -> Outcome {
        match result {
            Ok(stream) => Outcome::Valid {
                commands: stream.commands().collect(),
                bytes: u64::from(stream.bytes()),
            },
            Err(error) => Outcome::Refused {
                code: error.code(),
                info: error.info(),
            },
        }
    }
}

type Refused = (ChannelErrorCode, u64);

/// Validates like [`Validator::validate`](crate::Validator::validate),
/// reading `memory` in the same order (the ring in one or two pieces, then
/// each batch as it is reached).
pub fn validate<M: StreamMemory + ?Sized>(ring: &RingState, memory: &mut M) -> Outcome {
    match run(ring, memory) {
        Ok((commands, bytes)) => Outcome::Valid { commands, bytes },
        Err((code, info)) => Outcome::Refused { code, info },
    }
}

fn run<M: StreamMemory + ?Sized>(
    ring: &RingState,
    memory: &mut M,
) -> Result<(Vec<CommandAt>, u64), Refused> {
    let span = ring
        .span()
        .map_err(|error| (ChannelErrorCode::BadRing, error.value()))?;
    let get_va = span.va(span.get).get();
    let mut words = Vec::new();
    let mut offset = span.get;
    for (va, bytes) in span.pieces() {
        if bytes == 0 {
            continue;
        }
        let data = read(memory, va, bytes).map_err(|()| (ChannelErrorCode::FetchFault, get_va))?;
        for value in data {
            words.push((span.va(offset).get(), value));
            offset = (offset + 4) % span.size;
        }
    }
    let mut walk = Walk {
        memory,
        commands: Vec::new(),
        bytes: u64::from(span.bytes()),
        starts: 0,
    };
    walk.list(&words, 0, get_va)?;
    Ok((walk.commands, walk.bytes))
}

fn read<M: StreamMemory + ?Sized>(memory: &mut M, va: GpuVa, bytes: u32) -> Result<Vec<u32>, ()> {
    let mut data = vec![0; bytes as usize];
    memory.read(va, &mut data).map_err(|_| ())?;
    Ok(data
        .chunks_exact(4)
        .map(|chunk| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect())
}

struct Walk<'a, M: ?Sized> {
    memory: &'a mut M,
    commands: Vec<CommandAt>,
    bytes: u64,
    starts: u32,
}

impl<M: StreamMemory + ?Sized> Walk<'_, M> {
    /// Walks one ring span or batch of (VA, dword) pairs at `level`,
    /// started by the command at `started_by`.
    fn list(&mut self, words: &[(u64, u32)], level: u8, started_by: u64) -> Result<(), Refused> {
        let values: Vec<u32> = words.iter().map(|&(_, value)| value).collect();
        let mut i = 0;
        while i < values.len() {
            let va = words[i].0;
            let (decoded, dwords) = decode(&values[i..]).map_err(|error| (error.code(), va))?;
            match decoded {
                Decoded::Command(command) => self.command(va, level, command),
                Decoded::Privileged(form) => return Err((form.code(), va)),
                Decoded::BatchEnd if level > 0 && i + 1 == values.len() => return Ok(()),
                Decoded::BatchEnd => return Err((ChannelErrorCode::StrayBatchEnd, va)),
                Decoded::BatchStart { batch, bytes } => {
                    if level == MAX_BATCH_DEPTH {
                        return Err((ChannelErrorCode::BatchDepth, va));
                    }
                    if self.starts == MAX_BATCH_STARTS {
                        return Err((ChannelErrorCode::StreamTooLong, va));
                    }
                    self.starts += 1;
                    self.bytes += u64::from(bytes);
                    if self.bytes > u64::from(MAX_SUBMISSION_BYTES) {
                        return Err((ChannelErrorCode::StreamTooLong, va));
                    }
                    let data = read(self.memory, batch, bytes)
                        .map_err(|()| (ChannelErrorCode::FetchFault, va))?;
                    let batch_words: Vec<(u64, u32)> = data
                        .into_iter()
                        .enumerate()
                        .map(|(n, value)| (batch.get() + 4 * n as u64, value))
                        .collect();
                    self.list(&batch_words, level + 1, va)?;
                }
            }
            i += dwords;
        }
        if level == 0 {
            Ok(())
        } else {
            Err((ChannelErrorCode::UnterminatedBatch, started_by))
        }
    }

    fn command(&mut self, va: u64, level: u8, command: Command) {
        self.commands.push(CommandAt {
            va: GpuVa::wrapping(va),
            level,
            command,
        });
    }
}
