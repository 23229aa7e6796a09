//! Random command streams for the property tests: guest commands with
//! every field in range (the edges of the address space included), trees
//! of nested batches, and their layout in GPU memory with the commands
//! each tree must validate to.

use proptest::prelude::*;
use vgpu_commands::testing::TestMemory;
use vgpu_commands::{
    Blit2d, Command, CommandAt, CompareOp, FenceValue, GPU_VA_SPACE, Gpr, GpuVa,
    MAX_SURFACE_DIMENSION, ReadableRegister, RingState, Scanout, StreamBuilder, TlbScope,
};

/// The ring's base.
pub const RING: u64 = 0x10_0000;
/// Where batches go, one after another.
pub const BATCHES: u64 = 0x1000_0000;

/// An address for `bytes` bytes, aligned to `align`: anywhere, or near
/// the top of the space, where range checks bite.
pub fn va_for(bytes: u64, align: u64) -> BoxedStrategy<u64> {
    let last = (GPU_VA_SPACE - bytes) / align;
    prop_oneof![
        3 => 0..=last,
        1 => last.saturating_sub(64)..=last,
        1 => (last / 2).saturating_sub(64)..=(last / 2 + 64).min(last),
    ]
    .prop_map(move |n| n * align)
    .boxed()
}

fn gpu_va(bytes: u64, align: u64) -> BoxedStrategy<GpuVa> {
    va_for(bytes, align)
        .prop_map(|va| GpuVa::new(va).unwrap())
        .boxed()
}

fn length(min: u32, align: u32) -> BoxedStrategy<u32> {
    prop_oneof![
        3 => (min / align)..=4096 / align,
        1 => (min / align)..=u32::MAX / align,
    ]
    .prop_map(move |n| n * align)
    .boxed()
}

fn dimension() -> BoxedStrategy<u32> {
    prop_oneof![3 => 1..=64u32, 1 => 1..=MAX_SURFACE_DIMENSION].boxed()
}

/// A pitch for rows of `width` pixels.
fn pitch(width: u32) -> BoxedStrategy<u32> {
    let min = width * 4;
    prop_oneof![3 => Just(min), 1 => (min / 4..=u32::MAX / 4).prop_map(|n| n * 4)].boxed()
}

fn readable_register() -> impl Strategy<Value = ReadableRegister> {
    prop_oneof![
        (0..16u8).prop_map(|n| ReadableRegister::Gpr(Gpr::new(n).unwrap())),
        Just(ReadableRegister::CompletedFenceLo),
        Just(ReadableRegister::CompletedFenceHi),
        Just(ReadableRegister::TimestampLo),
        Just(ReadableRegister::TimestampHi),
    ]
}

/// Any guest command with every field in range.
pub fn guest_command() -> BoxedStrategy<Command> {
    prop_oneof![
        prop_oneof![1..=12u8, Just(255)].prop_map(|dwords| Command::Nop { dwords }),
        length(1, 1)
            .prop_flat_map(|bytes| {
                let room = u64::from(bytes);
                (gpu_va(room, 1), gpu_va(room, 1), Just(bytes))
            })
            .prop_map(|(src, dst, bytes)| Command::Copy { src, dst, bytes }),
        (length(4, 4), any::<u32>())
            .prop_flat_map(|(bytes, pattern)| {
                (gpu_va(u64::from(bytes), 4), Just(bytes), Just(pattern))
            })
            .prop_map(|(dst, bytes, pattern)| Command::Fill {
                dst,
                bytes,
                pattern
            }),
        (dimension(), dimension())
            .prop_flat_map(|(width, height)| (
                Just(width),
                Just(height),
                pitch(width),
                pitch(width)
            ))
            .prop_flat_map(|(width, height, src_pitch, dst_pitch)| {
                let footprint =
                    |pitch: u32| u64::from(pitch) * u64::from(height - 1) + u64::from(width) * 4;
                (
                    gpu_va(footprint(src_pitch), 4),
                    gpu_va(footprint(dst_pitch), 4),
                    Just((width, height, src_pitch, dst_pitch)),
                )
            })
            .prop_map(|(src, dst, (width, height, src_pitch, dst_pitch))| {
                Command::Blit2d(Blit2d {
                    src,
                    src_pitch,
                    dst,
                    dst_pitch,
                    width,
                    height,
                })
            }),
        (any::<bool>(), any::<u64>(), any::<bool>())
            .prop_flat_map(|(wide, value, interrupt)| {
                let value = if wide {
                    FenceValue::U64(value)
                } else {
                    FenceValue::U32(value as u32)
                };
                (
                    gpu_va(value.bytes(), value.bytes()),
                    Just(value),
                    Just(interrupt),
                )
            })
            .prop_map(|(dst, value, interrupt)| Command::Fence {
                dst,
                value,
                interrupt
            }),
        (gpu_va(4, 4), 0..6usize, any::<u32>()).prop_map(|(addr, op, value)| {
            Command::SemaphoreWait {
                addr,
                compare: CompareOp::ALL[op],
                value,
            }
        }),
        prop_oneof![
            Just(TlbScope::All),
            (1..=1u64 << 24)
                .prop_flat_map(|pages| (gpu_va(pages * 4096, 4096), Just(pages * 4096)))
                .prop_map(|(start, bytes)| TlbScope::Range { start, bytes }),
        ]
        .prop_map(Command::TlbInvalidate),
        gpu_va(8, 8).prop_map(|dst| Command::Timestamp { dst }),
        (0..16u8, any::<u32>()).prop_map(|(n, value)| Command::LoadRegisterImm {
            register: Gpr::new(n).unwrap(),
            value
        }),
        (readable_register(), gpu_va(4, 4))
            .prop_map(|(register, dst)| Command::StoreRegister { register, dst }),
        (dimension(), dimension())
            .prop_flat_map(|(width, height)| (Just(width), Just(height), pitch(width)))
            .prop_flat_map(|(width, height, pitch)| {
                let footprint = u64::from(pitch) * u64::from(height - 1) + u64::from(width) * 4;
                (gpu_va(footprint, 4096), Just((width, height, pitch)))
            })
            .prop_map(|(surface, (width, height, pitch))| {
                Command::SetScanout(Scanout {
                    surface,
                    pitch,
                    width,
                    height,
                })
            }),
    ]
    .boxed()
}

/// An entry of a ring or batch.
#[derive(Clone, Debug)]
pub enum Item {
    /// A guest command.
    Command(Command),
    /// A batch of its own items, started by a BATCH_START here.
    Batch(Vec<Item>),
    /// Dwords written as they are, marked: where they land is recorded.
    Marked(Vec<u32>),
}

/// Ring items with batches nested at most four deep.
pub fn ring_items() -> impl Strategy<Value = Vec<Item>> {
    let item = guest_command()
        .prop_map(Item::Command)
        .prop_recursive(4, 64, 4, |inner| {
            prop::collection::vec(inner, 0..5).prop_map(Item::Batch)
        });
    prop::collection::vec(item, 0..12)
}

/// Where a command lands before its list is placed.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// Word `n` of the list being built.
    Word(usize),
    /// A GPU VA.
    Va(u64),
}

#[derive(Clone, Debug)]
struct Flat {
    place: Place,
    level: u8,
    /// `None` for a marked entry.
    command: Option<Command>,
}

/// A tree laid out in memory.
#[derive(Debug)]
pub struct Layout {
    /// The ring and the batches.
    pub memory: TestMemory,
    /// The ring registers that submit the ring items.
    pub ring: RingState,
    /// The commands it must validate to.
    pub expected: Vec<CommandAt>,
    /// GPU VA and level of the marked dwords, if any.
    pub marked: Option<(u64, u8)>,
}

struct Builder {
    batches: Vec<(u64, Vec<u32>)>,
    next: u64,
}

impl Builder {
    fn list(&mut self, items: &[Item], level: u8) -> (Vec<u32>, Vec<Flat>) {
        let mut words = StreamBuilder::new();
        let mut flats = Vec::new();
        for item in items {
            let here = words.words().len();
            match item {
                Item::Command(command) => {
                    flats.push(Flat {
                        place: Place::Word(here),
                        level,
                        command: Some(*command),
                    });
                    words.command(command);
                }
                Item::Marked(raw) => {
                    flats.push(Flat {
                        place: Place::Word(here),
                        level,
                        command: None,
                    });
                    words.raw(raw);
                }
                Item::Batch(children) => {
                    let (mut body, child_flats) = self.list(children, level + 1);
                    let mut end = StreamBuilder::new();
                    end.batch_end();
                    body.extend(end.words());
                    let va = self.next;
                    self.next += 4 * body.len() as u64 + 64;
                    flats.extend(child_flats.into_iter().map(|flat| Flat {
                        place: match flat.place {
                            Place::Word(n) => Place::Va(va + 4 * n as u64),
                            va => va,
                        },
                        ..flat
                    }));
                    words.batch_start(va, 4 * body.len() as u32);
                    self.batches.push((va, body));
                }
            }
        }
        (words.into_words(), flats)
    }
}

/// Lays `items` out: the ring of `size` bytes (at least 4 KiB, grown to
/// hold them) with its commands from `get` (reduced into the ring).
pub fn lay_out(items: &[Item], size: u32, get: u32) -> Layout {
    let mut builder = Builder {
        batches: Vec::new(),
        next: BATCHES,
    };
    let (ring_words, flats) = builder.list(items, 0);
    let bytes = 4 * ring_words.len() as u32;
    let mut size = size.max(4096);
    while size <= bytes {
        size *= 2;
    }
    let get = (get % size) & !3;
    let mut memory = TestMemory::new();
    memory.map(RING, size as usize);
    memory.map(BATCHES, (builder.next - BATCHES) as usize);
    let put = memory.write_ring(RING, size, get, &ring_words);
    for (va, words) in &builder.batches {
        memory.write_words(*va, words);
    }
    let va = |place| match place {
        Place::Word(n) => RING + u64::from((get + 4 * n as u32) % size),
        Place::Va(va) => va,
    };
    let mut expected = Vec::new();
    let mut marked = None;
    for flat in flats {
        match flat.command {
            Some(command) => expected.push(CommandAt {
                va: GpuVa::new(va(flat.place)).unwrap(),
                level: flat.level,
                command,
            }),
            None => marked = marked.or(Some((va(flat.place), flat.level))),
        }
    }
    Layout {
        memory,
        ring: RingState {
            base: RING,
            size,
            get,
            put,
        },
        expected,
        marked,
    }
}

/// Counts the item lists of a tree (the ring's included).
pub fn lists(items: &[Item]) -> usize {
    1 + items
        .iter()
        .map(|item| match item {
            Item::Batch(children) => lists(children),
            _ => 0,
        })
        .sum::<usize>()
}

/// Inserts `marked` into the `n`th list of the tree (preorder, the ring
/// first), at position `at` modulo its length + 1.
pub fn insert(items: &mut Vec<Item>, n: &mut usize, at: usize, marked: &[u32]) -> bool {
    if *n == 0 {
        let position = at % (items.len() + 1);
        items.insert(position, Item::Marked(marked.to_vec()));
        return true;
    }
    *n -= 1;
    for item in items.iter_mut() {
        if let Item::Batch(children) = item
            && insert(children, n, at, marked)
        {
            return true;
        }
    }
    false
}
