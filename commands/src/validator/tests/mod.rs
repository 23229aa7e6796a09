use super::*;
use crate::command::{Command, FenceValue};
use crate::decode::DecodeError;
use crate::encode::StreamBuilder;
use crate::error::ChannelErrorCode;
use crate::memory::FetchFault;
use crate::opcode::{FLAG_BATCH_PRIVILEGED, FLAG_PHYSICAL, Opcode, header};
use crate::ring::RingError;
use crate::stream::CommandAt;
use crate::testing::{NOT_PRESENT, TestMemory};

mod privileged;
mod toctou;

const RING: u64 = 0x10_0000;
const RING_SIZE: u32 = 4096;
/// Where tests put batches: 2 MiB of memory.
const BATCHES: u64 = 0x40_0000;

fn va(value: u64) -> GpuVa {
    GpuVa::new(value).unwrap()
}

fn memory() -> TestMemory {
    let mut memory = TestMemory::new();
    memory.map(RING, RING_SIZE as usize).map(BATCHES, 2 << 20);
    memory
}

fn ring(get: u32, put: u32) -> RingState {
    RingState {
        base: RING,
        size: RING_SIZE,
        get,
        put,
    }
}

fn stream(build: impl FnOnce(&mut StreamBuilder) -> &mut StreamBuilder) -> Vec<u32> {
    let mut builder = StreamBuilder::new();
    build(&mut builder);
    builder.into_words()
}

/// Writes `words` into the ring at `get` and validates them.
fn submit_at(
    memory: &mut TestMemory,
    get: u32,
    words: &[u32],
) -> Result<ValidatedStream, ValidateError> {
    let put = memory.write_ring(RING, RING_SIZE, get, words);
    Validator::new().validate(&ring(get, put), memory)
}

fn submit(memory: &mut TestMemory, words: &[u32]) -> Result<ValidatedStream, ValidateError> {
    submit_at(memory, 0, words)
}

fn commands(stream: &ValidatedStream) -> Vec<Command> {
    stream.commands().map(|at| at.command).collect()
}

fn refusal(result: Result<ValidatedStream, ValidateError>) -> ValidateError {
    match result {
        Ok(stream) => panic!("validated: {:?}", stream.commands().collect::<Vec<_>>()),
        Err(error) => error,
    }
}

fn assert_refused(
    result: Result<ValidatedStream, ValidateError>,
    code: ChannelErrorCode,
    info: u64,
) -> ValidateError {
    let error = refusal(result);
    assert_eq!((error.code(), error.info()), (code, info), "{error}");
    error
}

fn fence(dst: u64, value: u32) -> Command {
    Command::Fence {
        dst: va(dst),
        value: FenceValue::U32(value),
        interrupt: false,
    }
}

// What validates, and what comes out.

#[test]
fn empty_submission_validates_to_nothing() {
    let mut memory = memory();
    let stream = Validator::new()
        .validate(&ring(64, 64), &mut memory)
        .unwrap();
    assert!(stream.is_empty());
    assert_eq!(stream.commands().count(), 0);
    assert_eq!((stream.new_get(), stream.bytes()), (64, 0));
    assert!(memory.reads().is_empty());
}

#[test]
fn ring_commands_come_out_in_order_with_their_vas() {
    let mut memory = memory();
    let words = stream(|b| b.nop(1).fence32(0x1000, 1, false).timestamp(0x2000));
    let stream = submit_at(&mut memory, 16, &words).unwrap();
    let out: Vec<CommandAt> = stream.commands().collect();
    assert_eq!(
        out,
        [
            CommandAt {
                va: va(RING + 16),
                level: 0,
                command: Command::Nop { dwords: 1 }
            },
            CommandAt {
                va: va(RING + 20),
                level: 0,
                command: fence(0x1000, 1)
            },
            CommandAt {
                va: va(RING + 40),
                level: 0,
                command: Command::Timestamp { dst: va(0x2000) }
            },
        ]
    );
    assert_eq!(stream.len(), 3);
    assert_eq!(stream.commands().len(), 3);
    assert_eq!(stream.new_get(), 16 + 4 * words.len() as u32);
    assert_eq!(stream.ring_bytes(), 4 * words.len() as u32);
    assert_eq!(memory.reads(), [(RING + 16, 4 * words.len())]);
}

#[test]
fn ring_wrap_is_copied_in_order() {
    let mut memory = memory();
    // The FENCE straddles the end of the ring: header and address before
    // the wrap, the value after it.
    let words = stream(|b| b.nop(1).fence32(0x1000, 7, false).timestamp(0x2000));
    let get = RING_SIZE - 12;
    let stream = submit_at(&mut memory, get, &words).unwrap();
    let out: Vec<(u64, Command)> = stream
        .commands()
        .map(|at| (at.va.get(), at.command))
        .collect();
    assert_eq!(
        out,
        [
            (RING + u64::from(get), Command::Nop { dwords: 1 }),
            (RING + u64::from(get) + 4, fence(0x1000, 7)),
            (RING + 12, Command::Timestamp { dst: va(0x2000) }),
        ]
    );
    assert_eq!(stream.new_get(), 24);
    assert_eq!(memory.reads(), [(RING + u64::from(get), 12), (RING, 24)]);
}

#[test]
fn batch_commands_run_in_place_of_their_batch_start() {
    let mut memory = memory();
    let batch = stream(|b| b.fill(0x3000, 8, 1).timestamp(0x3008).batch_end());
    memory.write_words(BATCHES, &batch);
    let ring_words = stream(|b| {
        b.fence32(0x1000, 1, false)
            .batch_start(BATCHES, 4 * batch.len() as u32)
            .fence32(0x1000, 2, false)
    });
    let stream = submit(&mut memory, &ring_words).unwrap();
    let out: Vec<(u64, u8, Command)> = stream
        .commands()
        .map(|at| (at.va.get(), at.level, at.command))
        .collect();
    assert_eq!(
        out,
        [
            (RING, 0, fence(0x1000, 1)),
            (
                BATCHES,
                1,
                Command::Fill {
                    dst: va(0x3000),
                    bytes: 8,
                    pattern: 1
                }
            ),
            (BATCHES + 20, 1, Command::Timestamp { dst: va(0x3008) }),
            (RING + 36, 0, fence(0x1000, 2)),
        ]
    );
    assert_eq!(stream.bytes(), 4 * (ring_words.len() + batch.len()) as u32);
}

/// Writes a chain of `levels` batches at `BATCHES + 0x1000 n`, each
/// starting the next, the last holding a TIMESTAMP; returns the ring words
/// that start the first.
fn batch_chain(memory: &mut TestMemory, levels: u64) -> Vec<u32> {
    for level in 1..=levels {
        let at = BATCHES + 0x1000 * level;
        let words = if level == levels {
            stream(|b| b.timestamp(0x8000 + 8 * level).batch_end())
        } else {
            stream(|b| {
                b.timestamp(0x8000 + 8 * level)
                    .batch_start(at + 0x1000, 64)
                    .batch_end()
            })
        };
        let mut padded = words.clone();
        // Each batch is 64 bytes: pad before its BATCH_END with one NOP.
        let pad = 16 - words.len();
        let end = padded.pop().unwrap();
        padded.extend(stream(|b| b.nop(pad as u8)));
        padded.push(end);
        memory.write_words(at, &padded);
    }
    stream(|b| b.batch_start(BATCHES + 0x1000, 64))
}

#[test]
fn batches_nest_to_the_maximum_depth() {
    let mut memory = memory();
    let ring_words = batch_chain(&mut memory, u64::from(MAX_BATCH_DEPTH));
    let stream = submit(&mut memory, &ring_words).unwrap();
    let levels: Vec<u8> = stream
        .commands()
        .filter(|at| matches!(at.command, Command::Timestamp { .. }))
        .map(|at| at.level)
        .collect();
    assert_eq!(levels, [1, 2, 3, 4]);
}

#[test]
fn privileged_form_in_the_deepest_batch_is_refused() {
    let mut memory = memory();
    let ring_words = batch_chain(&mut memory, u64::from(MAX_BATCH_DEPTH));
    // The level-4 batch's NOP padding becomes a SET_PT_ROOT.
    let deepest = BATCHES + 0x1000 * u64::from(MAX_BATCH_DEPTH);
    memory.write_words(deepest + 12, &stream(|b| b.set_pt_root(0x1000)));
    let error = assert_refused(
        submit(&mut memory, &ring_words),
        ChannelErrorCode::Privileged,
        deepest + 12,
    );
    assert_eq!(error.site().unwrap().level, MAX_BATCH_DEPTH);
}

#[test]
fn batch_nested_past_depth_is_refused() {
    let mut memory = memory();
    let ring_words = batch_chain(&mut memory, u64::from(MAX_BATCH_DEPTH) + 1);
    // The BATCH_START of the level-4 batch, after its TIMESTAMP.
    let error = assert_refused(
        submit(&mut memory, &ring_words),
        ChannelErrorCode::BatchDepth,
        BATCHES + 0x4000 + 12,
    );
    assert_eq!(error.refusal(), &Refusal::BatchDepth { level: 5 });
    assert_eq!(error.site().unwrap().level, 4);
}

#[test]
fn batch_that_starts_itself_is_refused() {
    let mut memory = memory();
    let batch = stream(|b| b.batch_start(BATCHES, 20).batch_end());
    memory.write_words(BATCHES, &batch);
    let ring_words = stream(|b| b.batch_start(BATCHES, 20));
    assert_refused(
        submit(&mut memory, &ring_words),
        ChannelErrorCode::BatchDepth,
        BATCHES,
    );
    // Four copies of it were read before the fifth was refused.
    assert_eq!(memory.reads().len(), 1 + 4);
}

#[test]
fn a_batch_started_twice_is_copied_and_checked_twice() {
    let mut memory = memory();
    memory.write_words(BATCHES, &stream(|b| b.timestamp(0x1000).batch_end()));
    let ring_words = stream(|b| b.batch_start(BATCHES, 16).batch_start(BATCHES, 16));
    let stream = submit(&mut memory, &ring_words).unwrap();
    assert_eq!(stream.len(), 2);
    assert_eq!(stream.bytes(), 32 + 32);
    assert_eq!(&memory.reads()[1..], [(BATCHES, 16), (BATCHES, 16)]);
}

#[test]
fn stream_past_1_mib_is_refused() {
    let mut memory = memory();
    // A 256 KiB batch of NOPs, started five times: the fourth copy brings
    // the submission to 1 MiB plus the ring span, the fifth never happens.
    let quarter = 256 << 10;
    let mut batch = vec![header(Opcode::Nop, 255, 0); quarter / 4];
    let nops = batch.len() - 1;
    for (i, word) in batch.iter_mut().enumerate() {
        *word = if i % 255 == 0 && i + 255 <= nops {
            header(Opcode::Nop, 255, 0)
        } else if i < nops - nops % 255 {
            0
        } else {
            header(Opcode::Nop, 1, 0)
        };
    }
    *batch.last_mut().unwrap() = header(Opcode::BatchEnd, 1, 0);
    memory.write_words(BATCHES, &batch);
    let mut builder = StreamBuilder::new();
    for _ in 0..5 {
        builder.batch_start(BATCHES, quarter as u32);
    }
    let ring_words = builder.into_words();
    // Three fit with the ring span (80 bytes); the fourth would not.
    let error = assert_refused(
        submit(&mut memory, &ring_words),
        ChannelErrorCode::StreamTooLong,
        RING + 48,
    );
    assert_eq!(
        error.refusal(),
        &Refusal::StreamTooLong {
            bytes: 80 + 4 * quarter as u64
        }
    );
    assert_eq!(memory.reads().len(), 1 + 3);
}

#[test]
fn more_than_4096_batch_starts_are_refused() {
    let mut memory = TestMemory::new();
    let size = 128 << 10;
    memory.map(RING, size as usize).map(BATCHES, 4096);
    memory.write_words(BATCHES, &stream(|b| b.batch_end()));
    let mut builder = StreamBuilder::new();
    for _ in 0..=MAX_BATCH_STARTS {
        builder.batch_start(BATCHES, 4);
    }
    let put = memory.write_ring(RING, size, 0, builder.words());
    let state = RingState {
        base: RING,
        size,
        get: 0,
        put,
    };
    let error = assert_refused(
        Validator::new().validate(&state, &mut memory),
        ChannelErrorCode::StreamTooLong,
        RING + 16 * u64::from(MAX_BATCH_STARTS),
    );
    assert_eq!(error.refusal(), &Refusal::TooManyBatches);
    // One fewer is fine.
    let state = RingState {
        put: put - 16,
        ..state
    };
    let stream = Validator::new().validate(&state, &mut memory).unwrap();
    assert!(stream.is_empty());
    assert_eq!(stream.bytes(), 16 * MAX_BATCH_STARTS + 4 * MAX_BATCH_STARTS);
}

#[test]
fn batch_longer_than_the_limit_is_refused_before_it_is_read() {
    let mut memory = memory();
    let ring_words = stream(|b| b.batch_start(BATCHES, MAX_SUBMISSION_BYTES));
    assert_refused(
        submit(&mut memory, &ring_words),
        ChannelErrorCode::StreamTooLong,
        RING,
    );
    assert_eq!(memory.reads().len(), 1);
}

#[test]
fn batch_end_in_the_ring_is_refused() {
    let mut memory = memory();
    let words = stream(|b| b.nop(1).batch_end());
    assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::StrayBatchEnd,
        RING + 4,
    );
}

#[test]
fn batch_end_before_the_end_of_its_batch_is_refused() {
    let mut memory = memory();
    memory.write_words(BATCHES, &stream(|b| b.batch_end().nop(1)));
    let words = stream(|b| b.batch_start(BATCHES, 8));
    assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::StrayBatchEnd,
        BATCHES,
    );
}

#[test]
fn batch_without_batch_end_is_unterminated() {
    let mut memory = memory();
    memory.write_words(BATCHES, &stream(|b| b.nop(1).nop(1)));
    let words = stream(|b| b.nop(1).batch_start(BATCHES, 8));
    let error = assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::UnterminatedBatch,
        RING + 4,
    );
    assert_eq!(error.site().unwrap().level, 0);
}

#[test]
fn command_running_past_the_end_of_its_batch_is_bad_length() {
    let mut memory = memory();
    memory.write_words(BATCHES, &stream(|b| b.timestamp(0x1000).batch_end()));
    // The batch ends after the TIMESTAMP's address low dword.
    let words = stream(|b| b.batch_start(BATCHES, 8));
    assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::BadLength,
        BATCHES,
    );
}

#[test]
fn command_cut_by_put_is_bad_length() {
    let mut memory = memory();
    let words = stream(|b| b.nop(1).copy(0, 0x1000, 4));
    memory.write_ring(RING, RING_SIZE, 0, &words);
    let result = Validator::new().validate(&ring(0, 16), &mut memory);
    let error = assert_refused(result, ChannelErrorCode::BadLength, RING + 4);
    assert_eq!(
        error.refusal(),
        &Refusal::Decode(DecodeError::Truncated {
            dwords: 6,
            available: 3
        })
    );
}

#[test]
fn unreadable_ring_is_a_fetch_fault() {
    let mut memory = TestMemory::new();
    memory.map(RING, 2048);
    let result = Validator::new().validate(&ring(1024, 3072), &mut memory);
    let error = assert_refused(result, ChannelErrorCode::FetchFault, RING + 1024);
    assert_eq!(
        error.refusal(),
        &Refusal::FetchFault(FetchFault {
            va: RING + 2048,
            reason: NOT_PRESENT
        })
    );
}

#[test]
fn unreadable_batch_is_a_fetch_fault_at_its_batch_start() {
    let mut memory = memory();
    let words = stream(|b| b.nop(2).batch_start(0x7000_0000, 64));
    let error = assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::FetchFault,
        RING + 8,
    );
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert_eq!(
        source,
        "the MMU refused a read at GPU VA 0x70000000 (reason 1)"
    );
}

#[test]
fn bad_ring_registers_are_refused_without_reading() {
    let mut memory = memory();
    let cases = [
        (
            RingState {
                size: 6000,
                ..ring(0, 0)
            },
            RingError::Size(6000),
        ),
        (
            RingState {
                base: RING + 4,
                ..ring(0, 0)
            },
            RingError::Base(RING + 4),
        ),
        (ring(4096, 0), RingError::Get(4096)),
        (ring(0, 5), RingError::Put(5)),
    ];
    for (state, expected) in cases {
        let error = refusal(Validator::new().validate(&state, &mut memory));
        assert_eq!(error.refusal(), &Refusal::BadRing(expected));
        assert_eq!(
            (error.code(), error.info()),
            (ChannelErrorCode::BadRing, expected.value())
        );
        assert_eq!(error.site(), None);
    }
    assert!(memory.reads().is_empty());
}

#[test]
fn unknown_opcode_deep_in_a_batch_names_its_va_and_level() {
    let mut memory = memory();
    memory.write_words(
        BATCHES + 0x2000,
        &[0x0000_01ee, header(Opcode::BatchEnd, 1, 0)],
    );
    memory.write_words(
        BATCHES,
        &stream(|b| b.nop(1).batch_start(BATCHES + 0x2000, 8).batch_end()),
    );
    let words = stream(|b| b.batch_start(BATCHES, 24));
    let error = assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::UnknownOpcode,
        BATCHES + 0x2000,
    );
    assert_eq!(error.site().unwrap().level, 2);
}

#[test]
fn va_at_2_pow_48_is_bad_field() {
    let mut memory = memory();
    let words = stream(|b| b.timestamp(crate::addr::GPU_VA_SPACE));
    assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::BadField,
        RING,
    );
}

// The validator itself.

#[test]
fn a_refusal_leaves_the_validator_ready_for_the_next_submission() {
    let mut memory = memory();
    let mut validator = Validator::new();
    memory.write_words(BATCHES, &stream(|b| b.timestamp(0x10).batch_end()));
    let bad = stream(|b| b.batch_start(BATCHES, 16).set_context(0));
    let put = memory.write_ring(RING, RING_SIZE, 0, &bad);
    assert!(validator.validate(&ring(0, put), &mut memory).is_err());
    let good = stream(|b| b.fence32(0x20, 1, true));
    let put2 = memory.write_ring(RING, RING_SIZE, put, &good);
    let stream = validator.validate(&ring(put, put2), &mut memory).unwrap();
    assert_eq!(
        commands(&stream),
        [Command::Fence {
            dst: va(0x20),
            value: FenceValue::U32(1),
            interrupt: true
        }]
    );
}

#[test]
fn recycled_buffers_hold_no_stale_commands() {
    let mut memory = memory();
    let mut validator = Validator::new();
    memory.write_words(
        BATCHES,
        &stream(|b| b.timestamp(0x10).timestamp(0x18).batch_end()),
    );
    let first = stream(|b| b.nop(1).batch_start(BATCHES, 28).nop(2));
    let put = memory.write_ring(RING, RING_SIZE, 0, &first);
    let stream1 = validator.validate(&ring(0, put), &mut memory).unwrap();
    assert_eq!(stream1.len(), 4);
    validator.recycle(stream1);
    let second = stream(|b| b.fence32(0x20, 1, false));
    let put2 = memory.write_ring(RING, RING_SIZE, put, &second);
    let stream2 = validator.validate(&ring(put, put2), &mut memory).unwrap();
    assert_eq!(commands(&stream2), [fence(0x20, 1)]);
    assert_eq!(stream2.bytes(), 20);
}
