//! The seed corpus of the `command_validator` fuzz target
//! (`fuzz/seeds/command_validator/`), replayed through the same harness so
//! that CI exercises it without nightly. The input layout is documented on
//! `vgpu_commands::fuzzing`; the seeds are built here and encoded.

use std::fs;
use std::path::PathBuf;

use vgpu_commands::fuzzing::{
    FLAG_CHANGING_MEMORY, FLAG_HOLE, FLAG_MISALIGNED_BASE, FuzzInput, FuzzOutcome, IMAGE_BASE,
    fuzz_command_validator,
};
use vgpu_commands::{
    COMPLETED_FENCE_LO_OFFSET, ChannelErrorCode, CompareOp, FLAG_PHYSICAL, GPU_VA_SPACE,
    PT_ROOT_LO_OFFSET, StreamBuilder, TIMESTAMP_HI_OFFSET,
};

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/command_validator")
}

#[test]
fn every_seed_runs_cleanly() {
    let mut seen = 0;
    for entry in fs::read_dir(seed_dir()).expect("seed directory") {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        fuzz_command_validator(&data);
        seen += 1;
    }
    assert!(seen >= 12, "only {seen} seeds");
}

/// The ring's size in the seeds (size selector 0).
const RING: u32 = 4096;
/// Where the seeds put batches: just past the ring.
const BATCHES: u64 = IMAGE_BASE + RING as u64;

/// A seed under construction: a 4 KiB ring at the start of the image,
/// batches after it.
struct Seed(FuzzInput);

impl Seed {
    fn new() -> Self {
        Seed(FuzzInput {
            image: vec![0; RING as usize],
            ..FuzzInput::default()
        })
    }

    /// Writes `words` into the ring from `get`, wrapping, and submits
    /// them.
    fn ring(mut self, get: u32, build: impl FnOnce(&mut StreamBuilder)) -> Self {
        let mut builder = StreamBuilder::new();
        build(&mut builder);
        let mut at = get;
        for word in builder.words() {
            self.write(u64::from(at), &word.to_le_bytes());
            at = (at + 4) % RING;
        }
        self.0.get = get;
        self.0.put = at;
        self
    }

    /// Writes a batch at `va`; returns its length in bytes.
    fn batch(&mut self, va: u64, build: impl FnOnce(&mut StreamBuilder)) -> u32 {
        let mut builder = StreamBuilder::new();
        build(&mut builder);
        self.write(va - IMAGE_BASE, &builder.to_bytes());
        builder.byte_len()
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let at = offset as usize;
        if self.0.image.len() < at + bytes.len() {
            self.0.image.resize(at + bytes.len(), 0);
        }
        self.0.image[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn flags(mut self, flags: u8) -> Self {
        self.0.flags |= flags;
        self
    }
}

/// One guest command of every kind, in the ring.
fn every_command() -> FuzzInput {
    Seed::new()
        .ring(0, |b| {
            b.nop(3)
                .copy(0x1000, 0x2003, 77)
                .fill(0x3000, 64, 0xdead_beef)
                .blit2d(0x10_0000, 4096, 0x20_0000, 8192, 1024, 16)
                .fence32(0x4000, 1, false)
                .fence64(0x4008, 1 << 40, true)
                .semaphore_wait(0x4000, CompareOp::Ge, 1)
                .tlb_invalidate_all()
                .tlb_invalidate_range(0x10_0000, 0x20_0000)
                .timestamp(0x5000)
                .load_register_imm(0x3c, 7)
                .store_register(TIMESTAMP_HI_OFFSET, 0x5008)
                .store_register(COMPLETED_FENCE_LO_OFFSET, 0x500c)
                .set_scanout(0, 0x80_0000, 4096, 1024, 768);
        })
        .0
}

/// A chain of batches four deep, each level between commands.
fn nested_batches() -> FuzzInput {
    let mut seed = Seed::new();
    let mut next = (0, 0);
    for level in (1..=4u64).rev() {
        let va = BATCHES + 0x100 * level;
        let bytes = seed.batch(va, |b| {
            b.timestamp(0x8000 + 8 * level);
            if next.1 != 0 {
                b.batch_start(next.0, next.1);
            }
            b.fence32(0x9000, level as u32, true).batch_end();
        });
        next = (va, bytes);
    }
    seed.ring(0, |b| {
        b.nop(1).batch_start(next.0, next.1).nop(1);
    })
    .0
}

/// Commands that straddle the end of the ring.
fn ring_wrap() -> FuzzInput {
    Seed::new()
        .ring(RING - 8, |b| {
            b.copy(0x1000, 0x2000, 16).fence64(0x4000, 2, true);
        })
        .0
}

/// A batch that starts itself.
fn self_starting_batch() -> FuzzInput {
    let mut seed = Seed::new();
    seed.batch(BATCHES, |b| {
        b.nop(1).batch_start(BATCHES, 24).batch_end();
    });
    seed.ring(0, |b| {
        b.batch_start(BATCHES, 24);
    })
    .0
}

/// A physical COPY deep in a batch, after valid work.
fn physical_copy_in_a_batch() -> FuzzInput {
    let mut seed = Seed::new();
    let bytes = seed.batch(BATCHES, |b| {
        b.fill(0x1000, 4, 0)
            .copy(0x1000, 0x2000, 4)
            .with_flags(FLAG_PHYSICAL)
            .batch_end();
    });
    seed.ring(0, |b| {
        b.timestamp(0x10).batch_start(BATCHES, bytes);
    })
    .0
}

/// A register load into the page-table root, and a context switch after.
fn privileged_registers() -> FuzzInput {
    Seed::new()
        .ring(0, |b| {
            b.load_register_imm(0, 1)
                .load_register_imm(PT_ROOT_LO_OFFSET, 0x1000)
                .set_context(2)
                .set_pt_root(0x1000);
        })
        .0
}

/// A flip of display head 2.
fn other_head() -> FuzzInput {
    Seed::new()
        .ring(0, |b| {
            b.set_scanout(0, 0x80_0000, 4096, 1024, 768)
                .set_scanout(2, 0x80_0000, 4096, 1024, 768);
        })
        .0
}

/// A batch longer than a submission may copy.
fn stream_too_long() -> FuzzInput {
    Seed::new()
        .ring(0, |b| {
            b.batch_start(BATCHES, 1 << 20);
        })
        .0
}

/// A batch in the page that faults.
fn batch_in_a_hole() -> FuzzInput {
    let mut seed = Seed::new();
    seed.0.hole = 1;
    seed.batch(BATCHES, |b| {
        b.batch_end();
    });
    seed.ring(0, |b| {
        b.batch_start(BATCHES, 4);
    })
    .flags(FLAG_HOLE)
    .0
}

/// A ring base that is not page aligned.
fn misaligned_ring() -> FuzzInput {
    Seed::new()
        .ring(0, |b| {
            b.nop(1);
        })
        .flags(FLAG_MISALIGNED_BASE)
        .0
}

/// A batch without BATCH_END, then one with BATCH_END in its middle.
fn unterminated_batch() -> FuzzInput {
    let mut seed = Seed::new();
    seed.batch(BATCHES, |b| {
        b.nop(1).nop(1);
    });
    seed.ring(0, |b| {
        b.batch_start(BATCHES, 8);
    })
    .0
}

fn stray_batch_end() -> FuzzInput {
    let mut seed = Seed::new();
    seed.batch(BATCHES, |b| {
        b.batch_end().nop(1);
    });
    seed.ring(0, |b| {
        b.batch_start(BATCHES, 8);
    })
    .0
}

/// Fields out of range: an address at 2^48 after a valid one.
fn bad_fields() -> FuzzInput {
    Seed::new()
        .ring(0, |b| {
            b.timestamp(GPU_VA_SPACE - 8).timestamp(GPU_VA_SPACE);
        })
        .0
}

/// Unknown opcode and a wrong length.
fn bad_headers() -> FuzzInput {
    Seed::new()
        .ring(0, |b| {
            b.nop(1).raw(&[0x0000_0610]).raw(&[0x0000_0502, 0, 0, 0, 0]);
        })
        .0
}

/// A batch started twice from memory that changes at every read: the
/// first copy is a batch, the second is not, and is refused.
fn changing_memory() -> FuzzInput {
    let mut seed = Seed::new();
    seed.batch(BATCHES, |b| {
        b.batch_end();
    });
    seed.ring(0, |b| {
        b.batch_start(BATCHES, 4).batch_start(BATCHES, 4);
    })
    .flags(FLAG_CHANGING_MEMORY)
    .0
}

fn seeds() -> Vec<(&'static str, FuzzInput)> {
    vec![
        ("every_command", every_command()),
        ("nested_batches", nested_batches()),
        ("ring_wrap", ring_wrap()),
        ("self_starting_batch", self_starting_batch()),
        ("physical_copy_in_a_batch", physical_copy_in_a_batch()),
        ("privileged_registers", privileged_registers()),
        ("other_head", other_head()),
        ("stream_too_long", stream_too_long()),
        ("batch_in_a_hole", batch_in_a_hole()),
        ("misaligned_ring", misaligned_ring()),
        ("unterminated_batch", unterminated_batch()),
        ("stray_batch_end", stray_batch_end()),
        ("bad_fields", bad_fields()),
        ("bad_headers", bad_headers()),
        ("changing_memory", changing_memory()),
        ("empty", FuzzInput::default()),
    ]
}

#[test]
fn seeds_decode_to_what_they_were_built_from() {
    for (name, input) in seeds() {
        assert_eq!(FuzzInput::parse(&input.encode()), input, "{name}");
    }
}

#[test]
fn the_seeds_reach_what_they_were_written_for() {
    use ChannelErrorCode::*;
    let valid = |commands, reads| FuzzOutcome {
        code: None,
        commands,
        reads,
    };
    let refused = |code, reads| FuzzOutcome {
        code: Some(code),
        commands: 0,
        reads,
    };
    let expected = [
        ("every_command", valid(14, 1)),
        ("nested_batches", valid(10, 5)),
        ("ring_wrap", valid(2, 2)),
        ("self_starting_batch", refused(BatchDepth, 5)),
        ("physical_copy_in_a_batch", refused(Privileged, 2)),
        ("privileged_registers", refused(RegisterNotAllowed, 1)),
        ("other_head", refused(DisplayHead, 1)),
        ("stream_too_long", refused(StreamTooLong, 1)),
        ("batch_in_a_hole", refused(FetchFault, 2)),
        ("misaligned_ring", refused(BadRing, 0)),
        ("unterminated_batch", refused(UnterminatedBatch, 2)),
        ("stray_batch_end", refused(StrayBatchEnd, 2)),
        ("bad_fields", refused(BadField, 1)),
        ("bad_headers", refused(UnknownOpcode, 1)),
        ("changing_memory", refused(UnknownOpcode, 3)),
        ("empty", valid(0, 0)),
    ];
    let seeds = seeds();
    assert_eq!(seeds.len(), expected.len());
    for ((name, input), (expected_name, outcome)) in seeds.into_iter().zip(expected) {
        assert_eq!(name, expected_name);
        assert_eq!(fuzz_command_validator(&input.encode()), outcome, "{name}");
    }
}

/// Rewrites the seed files:
/// `cargo test -p vgpu-commands --test fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes into fuzz/seeds; run by hand when the input layout changes"]
fn regenerate_seeds() {
    let dir = seed_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, input) in seeds() {
        fs::write(dir.join(name), input.encode()).unwrap();
    }
}
