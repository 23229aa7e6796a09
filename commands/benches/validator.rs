//! Validator throughput against a `memcpy` of the same bytes, measured in
//! the same run: `cargo bench -p vgpu-commands --bench validator`.
//!
//! The submission is a realistic mixed stream: a ring span of about
//! 64 KiB whose commands start 12 batches, each of which starts smaller
//! batches two levels further down, to about 1 MiB in all (the per-
//! submission limit). Every level mixes what a driver emits per draw or
//! copy: semaphore waits, register loads, copies, fills, blits,
//! timestamps, register stores, fences and NOP padding, in a pseudo-random
//! order (so that the opcode sequence is not a pattern a branch predictor
//! learns).
//!
//! Measured, interleaved round by round, the median of the rounds
//! reported:
//!
//! - floor: `copy_from_slice` of the same number of bytes, from one
//!   buffer to another (the least a validator that must copy can cost);
//! - header walk: following the DWORDS field from header to header over
//!   the same commands, with no copy and no check (the least a decoder
//!   that must find every command can cost: each header says where the
//!   next one is, so this is a chain of dependent loads);
//! - validate: `Validator::validate` (reads through a flat in-memory
//!   `StreamMemory`, decodes everything) and `recycle`;
//! - validate+iterate: the same, then iterating every command as an
//!   engine would (what holding decoded commands instead would cost at
//!   most).
//!
//! each in three cache states: hot (the bytes in this core's caches, the
//! operation repeated), L3 (pushed out of this core's L2 before each
//! operation, as the bytes a vCPU on another core has just written are at
//! a doorbell) and DRAM (pushed out of every cache).
//!
//! The ratios are floor time / path time: 1.0 is memcpy speed. Set
//! `COMMANDS_BENCH_ROUNDS` to change the 31 rounds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vgpu_commands::{
    Command, CompareOp, FetchFault, GpuVa, RingState, StreamBuilder, StreamMemory, Validator,
};

const RING: u64 = 0x100_0000;
const RING_SIZE: u32 = 1 << 20;
const BATCHES: u64 = 0x200_0000;

/// GPU memory as one flat region.
struct FlatMemory {
    base: u64,
    bytes: Vec<u8>,
}

impl StreamMemory for FlatMemory {
    fn read(&mut self, va: GpuVa, out: &mut [u8]) -> Result<(), FetchFault> {
        let fault = FetchFault {
            va: va.get(),
            reason: 1,
        };
        let start = va.get().checked_sub(self.base).ok_or(fault)? as usize;
        let bytes = self.bytes.get(start..start + out.len()).ok_or(fault)?;
        out.copy_from_slice(bytes);
        Ok(())
    }
}

/// xorshift64*, so that the stream is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Appends about `bytes` bytes of guest commands (give or take one
/// command).
fn mixed(b: &mut StreamBuilder, rng: &mut Rng, bytes: u32) {
    let end = b.byte_len() + bytes;
    while b.byte_len() + 40 < end {
        let va = 0x1_0000_0000 + (rng.below(1 << 24) << 6);
        match rng.below(16) {
            0 => b.semaphore_wait(va, CompareOp::Ge, rng.next() as u32),
            1 | 2 => b.load_register_imm(4 * rng.below(16) as u32, rng.next() as u32),
            3..=5 => b.copy(va, va + 0x10_0000, 64 + rng.below(1 << 16) as u32),
            6 | 7 => b.fill(va, 4 * (1 + rng.below(4096)) as u32, rng.next() as u32),
            8 => b.blit2d(
                va,
                4096,
                va + 0x100_0000,
                8192,
                1 + rng.below(1024) as u32,
                64,
            ),
            9 => b.timestamp(va),
            10 => b.store_register(4 * rng.below(20) as u32, va),
            11 | 12 => b.fence32(va, rng.next() as u32, rng.below(4) == 0),
            13 => b.fence64(va, rng.next(), false),
            14 => b.nop(1 + rng.below(8) as u8),
            _ => b.command(&Command::Nop { dwords: 1 }),
        };
    }
}

/// Builds the submission into memory; returns the ring registers, the
/// memory, and every list of commands (ring span and batches) end to end.
fn submission() -> (RingState, FlatMemory, Vec<u32>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut memory = vec![0u8; (BATCHES - RING) as usize + (2 << 20)];
    let mut write = |va: u64, words: &[u32]| {
        let at = (va - RING) as usize;
        for (i, word) in words.iter().enumerate() {
            memory[at + 4 * i..at + 4 * i + 4].copy_from_slice(&word.to_le_bytes());
        }
    };
    let mut next_batch = BATCHES;
    let mut lists = Vec::new();
    let mut batch = |write: &mut dyn FnMut(u64, &[u32]), builder: StreamBuilder| {
        let at = next_batch;
        next_batch += u64::from(builder.byte_len()).next_multiple_of(4096);
        write(at, builder.words());
        lists.extend_from_slice(builder.words());
        (at, builder.byte_len())
    };
    let mut ring = StreamBuilder::new();
    for _ in 0..12 {
        mixed(&mut ring, &mut rng, 5 << 10);
        // A level-1 batch: mixed work around four level-2 batches, each
        // around two level-3 ones.
        let mut level1 = StreamBuilder::new();
        for _ in 0..4 {
            mixed(&mut level1, &mut rng, 6 << 10);
            let mut level2 = StreamBuilder::new();
            for _ in 0..2 {
                mixed(&mut level2, &mut rng, 3 << 10);
                let mut level3 = StreamBuilder::new();
                mixed(&mut level3, &mut rng, 3 << 10);
                level3.batch_end();
                let (va, bytes) = batch(&mut write, level3);
                level2.batch_start(va, bytes);
            }
            level2.batch_end();
            let (va, bytes) = batch(&mut write, level2);
            level1.batch_start(va, bytes);
        }
        level1.batch_end();
        let (va, bytes) = batch(&mut write, level1);
        ring.batch_start(va, bytes);
    }
    mixed(&mut ring, &mut rng, 4 << 10);
    write(RING, ring.words());
    lists.extend_from_slice(ring.words());
    let state = RingState {
        base: RING,
        size: RING_SIZE,
        get: 0,
        put: ring.byte_len(),
    };
    (
        state,
        FlatMemory {
            base: RING,
            bytes: memory,
        },
        lists,
    )
}

/// Walks the command boundaries of `words` and nothing else: the least a
/// decoder that must find every command can cost, since each header says
/// where the next one is.
fn walk_headers(words: &[u32]) -> usize {
    let (mut pos, mut commands) = (0, 0);
    while let Some(&header) = words.get(pos) {
        pos += ((header >> 8) & 0xff) as usize;
        commands += 1;
    }
    commands
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Where the submission's bytes are when a measured operation starts.
#[derive(Clone, Copy, Debug)]
enum Cache {
    /// In this core's caches: the operation just ran on the same bytes.
    Hot,
    /// Pushed out of this core's L2 into the shared L3, as bytes that a
    /// vCPU on another core has just written are.
    L3,
    /// Pushed out to DRAM.
    Dram,
}

impl Cache {
    /// Bytes written between samples to push the submission out.
    fn evict_bytes(self) -> usize {
        match self {
            Cache::Hot => 0,
            Cache::L3 => 8 << 20,
            Cache::Dram => 256 << 20,
        }
    }

    /// Repetitions per sample: hot samples repeat so that a sample lasts
    /// milliseconds; the others measure one operation after an eviction.
    fn reps(self) -> u32 {
        match self {
            Cache::Hot => 20,
            Cache::L3 | Cache::Dram => 1,
        }
    }
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: do nothing.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("COMMANDS_BENCH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(31);
    let (ring, mut memory, lists) = submission();
    let mut validator = Validator::new();
    let stream = validator
        .validate(&ring, &mut memory)
        .expect("the bench stream validates");
    let bytes = stream.bytes() as usize;
    let commands = stream.len();
    let mut per_opcode = std::collections::BTreeMap::new();
    let mut levels = [0usize; 5];
    for at in stream.commands() {
        *per_opcode
            .entry(at.command.opcode().name())
            .or_insert(0usize) += 1;
        levels[usize::from(at.level)] += 1;
    }
    validator.recycle(stream);
    println!(
        "submission: {bytes} bytes ({} in the ring span), {commands} commands, {:.1} bytes each; \
         commands per level {levels:?}",
        ring.put,
        bytes as f64 / commands as f64
    );
    println!("mix: {per_opcode:?}");

    let source: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    let mut target = vec![0u8; bytes];
    let mut evict = vec![0u8; Cache::Dram.evict_bytes()];
    let rate = |time: Duration| bytes as f64 / time.as_secs_f64() / 1e9;
    let per_command = |time: Duration| time.as_nanos() as f64 / commands as f64;
    for cache in [Cache::Hot, Cache::L3, Cache::Dram] {
        let reps = cache.reps();
        let mut push_out = |round: usize| {
            let evict = &mut evict[..cache.evict_bytes()];
            // A different value each time, so that no write is skipped.
            evict.fill(round as u8);
            black_box(evict);
        };
        let (mut floor, mut validate, mut iterate) = (Vec::new(), Vec::new(), Vec::new());
        let mut walk = Vec::new();
        for round in 0..rounds {
            push_out(round);
            let start = Instant::now();
            for _ in 0..reps {
                black_box(walk_headers(black_box(&lists)));
            }
            walk.push(start.elapsed() / reps);

            push_out(round);
            let start = Instant::now();
            for _ in 0..reps {
                target.copy_from_slice(black_box(&source));
                black_box(&mut target);
            }
            floor.push(start.elapsed() / reps);

            push_out(round);
            let start = Instant::now();
            for _ in 0..reps {
                let stream = validator.validate(black_box(&ring), &mut memory).unwrap();
                validator.recycle(black_box(stream));
            }
            validate.push(start.elapsed() / reps);

            push_out(round);
            let start = Instant::now();
            for _ in 0..reps {
                let stream = validator.validate(black_box(&ring), &mut memory).unwrap();
                let mut sum = 0u64;
                for at in stream.commands() {
                    sum = sum.wrapping_add(at.va.get()) ^ at.command.opcode().value() as u64;
                }
                black_box(sum);
                validator.recycle(stream);
            }
            iterate.push(start.elapsed() / reps);
        }
        let (floor, validate, iterate) = (median(floor), median(validate), median(iterate));
        let walk = median(walk);
        println!("{cache:?}:");
        println!(
            "  floor (memcpy)    {:>8.1} us  {:>6.2} GB/s",
            floor.as_secs_f64() * 1e6,
            rate(floor)
        );
        for (name, time) in [
            ("header walk", walk),
            ("validate", validate),
            ("validate+iterate", iterate),
        ] {
            println!(
                "  {name:<17} {:>8.1} us  {:>6.2} GB/s  {:>5.2} ns/command  ratio {:.2}",
                time.as_secs_f64() * 1e6,
                rate(time),
                per_command(time),
                floor.as_secs_f64() / time.as_secs_f64()
            );
        }
    }
}
