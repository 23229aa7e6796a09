//! The harness behind the `command_validator` fuzz target, here so that
//! the seed corpus is replayed by `cargo test` without nightly.
//!
//! Input layout (missing bytes read as 0):
//!
//! | bytes | meaning |
//! | --- | --- |
//! | 0 | ring size: bits 3:0 `n`; 0–8 give 4 KiB << n, 9–15 sizes the validator refuses ([`BAD_SIZES`]) |
//! | 1 | bit 0: ring base 0x800 past [`IMAGE_BASE`] (misaligned); bit 1: memory changes at every read; bit 2: one page faults (byte 10) |
//! | 2–5 | GET, u32 LE, modulo twice the ring size (so both valid and invalid values come up) |
//! | 6–9 | PUT, likewise |
//! | 10 | the 4 KiB page of the window that faults with reason 3, when byte 1 bit 2 is set |
//! | 11– | the image |
//!
//! GPU memory is the window of [`WINDOW_BYTES`] from [`IMAGE_BASE`], whose
//! byte at `IMAGE_BASE + i` is `image[i % image.len()]` (zeros if the
//! image is empty), so rings and batches larger than the input still read
//! its bytes; anything outside the window faults with reason 1. The ring
//! starts at `IMAGE_BASE`, and a BATCH_START names a batch in the window
//! by its VA. When memory changes at every read, read `r` (0 the first)
//! from the third on sees every byte XOR `(r − 1) × 0x3d`, so that the
//! ring and the first batch read as the image and later reads do not.
//!
//! The harness validates, then checks:
//!
//! - the result agrees with the reference validator
//!   ([`testing::reference`](crate::testing::reference)) run over exactly
//!   the bytes the validator read, which also asks for the same ranges in
//!   the same order: every range read once, what runs is what was read;
//! - a validated stream keeps its invariants: GET advances to PUT, the
//!   bytes copied stay within the limit, every command encodes back to
//!   itself;
//! - a second validation with the recycled buffers of the first gives the
//!   same result;
//! - the screen's promise, at every dword of the image: what it passes
//!   decodes to a guest command of the same length.

use crate::addr::GpuVa;
use crate::decode::{Decoded, decode};
use crate::encode::encode;
use crate::error::ChannelErrorCode;
use crate::memory::{FetchFault, StreamMemory};
use crate::ring::RingState;
use crate::screen::{WINDOW, screen};
use crate::testing::reference::{self, Outcome};
use crate::validator::{MAX_SUBMISSION_BYTES, Validator};

/// GPU VA of the image's first byte, and of the ring.
pub const IMAGE_BASE: u64 = 0x10_0000;
/// Bytes of GPU memory the image fills.
pub const WINDOW_BYTES: u64 = 4 << 20;
/// Ring sizes for selectors 9 to 15.
pub const BAD_SIZES: [u32; 7] = [0, 2048, 2 << 20, 3 << 12, 4097, 1 << 31, u32::MAX];
/// Reason of the faulting page's faults.
pub const HOLE_REASON: u8 = 3;
/// Byte 1, bit 0.
pub const FLAG_MISALIGNED_BASE: u8 = 1;
/// Byte 1, bit 1.
pub const FLAG_CHANGING_MEMORY: u8 = 2;
/// Byte 1, bit 2.
pub const FLAG_HOLE: u8 = 4;

/// A fuzz input, built (for seeds) or parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FuzzInput {
    /// Byte 0.
    pub size: u8,
    /// Byte 1.
    pub flags: u8,
    /// Bytes 2–5.
    pub get: u32,
    /// Bytes 6–9.
    pub put: u32,
    /// Byte 10.
    pub hole: u8,
    /// The image.
    pub image: Vec<u8>,
}

impl FuzzInput {
    /// Parses an input; missing bytes read as 0.
    pub fn parse(data: &[u8]) -> Self {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let u32_at =
            |i: usize| u32::from_le_bytes([byte(i), byte(i + 1), byte(i + 2), byte(i + 3)]);
        Self {
            size: byte(0),
            flags: byte(1),
            get: u32_at(2),
            put: u32_at(6),
            hole: byte(10),
            image: data.get(11..).unwrap_or_default().to_vec(),
        }
    }

    /// The input's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = vec![self.size, self.flags];
        data.extend(self.get.to_le_bytes());
        data.extend(self.put.to_le_bytes());
        data.push(self.hole);
        data.extend(&self.image);
        data
    }

    /// The ring size the input selects.
    pub fn ring_size(&self) -> u32 {
        match self.size & 0xf {
            n @ 0..=8 => 4096 << n,
            n => BAD_SIZES[usize::from(n - 9)],
        }
    }

    /// The ring registers the input describes.
    pub fn ring(&self) -> RingState {
        let size = self.ring_size();
        let modulus = u64::from(size).max(1) * 2;
        let reduce = |value: u32| (u64::from(value) % modulus) as u32;
        RingState {
            base: IMAGE_BASE
                + if self.flags & FLAG_MISALIGNED_BASE != 0 {
                    0x800
                } else {
                    0
                },
            size,
            get: reduce(self.get),
            put: reduce(self.put),
        }
    }
}

/// The window of GPU memory the image fills.
#[derive(Debug)]
struct ImageMemory<'a> {
    image: &'a [u8],
    hole: Option<u64>,
    changing: bool,
    reads: u8,
}

impl StreamMemory for ImageMemory<'_> {
    fn read(&mut self, va: GpuVa, out: &mut [u8]) -> Result<(), FetchFault> {
        let start = va.get();
        let salt = if self.changing && self.reads >= 2 {
            (self.reads - 1).wrapping_mul(0x3d)
        } else {
            0
        };
        self.reads = self.reads.wrapping_add(1);
        let end = start + out.len() as u64;
        if start < IMAGE_BASE {
            return Err(FetchFault {
                va: start,
                reason: 1,
            });
        }
        if end > IMAGE_BASE + WINDOW_BYTES {
            let va = start.max(IMAGE_BASE + WINDOW_BYTES);
            return Err(FetchFault { va, reason: 1 });
        }
        if let Some(page) = self.hole {
            let hole = IMAGE_BASE + page * 4096;
            if start < hole + 4096 && hole < end {
                return Err(FetchFault {
                    va: start.max(hole),
                    reason: HOLE_REASON,
                });
            }
        }
        let len = self.image.len();
        for (i, byte) in out.iter_mut().enumerate() {
            let at = (start - IMAGE_BASE) as usize + i;
            *byte = if len == 0 { 0 } else { self.image[at % len] } ^ salt;
        }
        Ok(())
    }
}

/// What one read returned.
type Read = (u64, usize, Result<Vec<u8>, FetchFault>);

/// Passes reads through and records them.
struct Recorder<'a, M> {
    inner: &'a mut M,
    reads: Vec<Read>,
}

impl<M: StreamMemory> StreamMemory for Recorder<'_, M> {
    fn read(&mut self, va: GpuVa, out: &mut [u8]) -> Result<(), FetchFault> {
        let result = self.inner.read(va, out);
        let recorded = result.map(|()| out.to_vec());
        self.reads.push((va.get(), out.len(), recorded));
        result
    }
}

/// Answers reads with what a [`Recorder`] recorded, in order, and checks
/// that they ask for the same ranges.
struct Replay<'a> {
    reads: &'a [Read],
    next: usize,
}

impl StreamMemory for Replay<'_> {
    fn read(&mut self, va: GpuVa, out: &mut [u8]) -> Result<(), FetchFault> {
        let (at, len, result) = self
            .reads
            .get(self.next)
            .unwrap_or_else(|| panic!("read {} of {va} was never made", self.next));
        assert_eq!(
            (*at, *len),
            (va.get(), out.len()),
            "read {} differs",
            self.next
        );
        self.next += 1;
        match result {
            Ok(bytes) => {
                out.copy_from_slice(bytes);
                Ok(())
            }
            Err(fault) => Err(*fault),
        }
    }
}

/// What the harness saw, for the seed tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuzzOutcome {
    /// The channel error, if the submission was refused.
    pub code: Option<ChannelErrorCode>,
    /// Commands validated (0 if refused).
    pub commands: usize,
    /// Reads of GPU memory.
    pub reads: usize,
}

/// Runs one input through the validator and checks everything listed in
/// the module documentation; panics if anything does not hold.
pub fn fuzz_command_validator(data: &[u8]) -> FuzzOutcome {
    let input = FuzzInput::parse(data);
    let ring = input.ring();
    let mut memory = ImageMemory {
        image: &input.image,
        hole: (input.flags & FLAG_HOLE != 0).then_some(u64::from(input.hole)),
        changing: input.flags & FLAG_CHANGING_MEMORY != 0,
        reads: 0,
    };
    let mut recorder = Recorder {
        inner: &mut memory,
        reads: Vec::new(),
    };
    let mut validator = Validator::new();
    let result = validator.validate(&ring, &mut recorder);
    let reads = recorder.reads;
    let outcome = Outcome::of(&result);

    let mut replay = Replay {
        reads: &reads,
        next: 0,
    };
    let expected = reference::validate(&ring, &mut replay);
    assert_eq!(replay.next, reads.len(), "the reference read less");
    assert_eq!(outcome, expected);

    let summary = match &result {
        Ok(stream) => {
            assert_eq!(stream.new_get(), ring.put);
            assert!(stream.bytes() <= MAX_SUBMISSION_BYTES);
            assert_eq!(stream.commands().count(), stream.len());
            for at in stream.commands() {
                let mut words = Vec::new();
                encode(&at.command, &mut words);
                assert_eq!(
                    decode(&words),
                    Ok((Decoded::Command(at.command), words.len()))
                );
            }
            FuzzOutcome {
                code: None,
                commands: stream.len(),
                reads: reads.len(),
            }
        }
        Err(error) => {
            let code = error.code().value();
            assert!((1..16).contains(&code), "{code}");
            assert!(!error.to_string().is_empty());
            FuzzOutcome {
                code: Some(error.code()),
                commands: 0,
                reads: reads.len(),
            }
        }
    };

    // The same submission again, through buffers the first one left.
    if let Ok(stream) = result {
        validator.recycle(stream);
    }
    let mut replay = Replay {
        reads: &reads,
        next: 0,
    };
    assert_eq!(
        Outcome::of(&validator.validate(&ring, &mut replay)),
        outcome
    );

    check_screen(&input.image);
    summary
}

/// The screen's promise at every dword of `image`.
fn check_screen(image: &[u8]) {
    let mut words: Vec<u32> = image
        .chunks(4)
        .map(|chunk| {
            let mut bytes = [0; 4];
            bytes[..chunk.len()].copy_from_slice(chunk);
            u32::from_le_bytes(bytes)
        })
        .collect();
    let len = words.len();
    words.resize(len + WINDOW, 0);
    for pos in 0..len {
        if let Some(dwords) = screen(&words, pos, len) {
            match decode(&words[pos..len]) {
                Ok((Decoded::Command(_), decoded)) => assert_eq!(decoded, dwords, "at {pos}"),
                other => panic!("the screen passed dword {pos}, the decoder says {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_round_trip() {
        let input = FuzzInput {
            size: 3,
            flags: 5,
            get: 8,
            put: 0x1_0000,
            hole: 2,
            image: vec![1, 2, 3],
        };
        assert_eq!(FuzzInput::parse(&input.encode()), input);
        assert_eq!(input.ring().size, 32 << 10);
        assert_eq!(input.ring().base, IMAGE_BASE + 0x800);
        assert_eq!(input.ring().put, 0);
    }

    #[test]
    fn empty_and_short_inputs_run() {
        assert_eq!(
            fuzz_command_validator(&[]),
            FuzzOutcome {
                code: None,
                commands: 0,
                reads: 0
            }
        );
        for len in 1..16 {
            fuzz_command_validator(&vec![0xff; len]);
        }
    }
}
