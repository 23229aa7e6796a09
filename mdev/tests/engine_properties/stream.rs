//! Command streams as abstract operations: strategies for valid ones (the
//! model's planner turns them into commands) and hostile ones (encoded as
//! they are, addresses and all), and the encoder of hostile streams.

use proptest::collection::vec;
use proptest::prelude::*;
use vgpu_commands::{
    COMPLETED_FENCE_LO_OFFSET, CONTEXT_ID_OFFSET, CompareOp, DISPLAY_HEAD0_OFFSET,
    FLAG_BATCH_PRIVILEGED, FLAG_PHYSICAL, Gpr, MMU_CONTROL_OFFSET, PT_ROOT_HI_OFFSET,
    PT_ROOT_LO_OFFSET, ReadableRegister, StreamBuilder, TIMESTAMP_LO_OFFSET, TLB_CONTROL_OFFSET,
    WATCHDOG_OFFSET,
};

use crate::layout::{HOSTILE_SLOTS, Layout, SLOTS, bad_page, slot_va};
use crate::model::{Poison, PoisonOp};
use crate::rig::{BATCH_VA, BATCHES_LEN, MIB, RW_IOVA, SLICE};

/// An address: an offset into a slot's mapping (wrapped into it by the
/// planner of valid streams, used as it is in hostile ones), or any VA.
#[derive(Clone, Copy, Debug)]
pub enum Addr {
    Slot { slot: u8, offset: u32 },
    Raw(u64),
}

/// One operation of a stream.
#[derive(Clone, Debug)]
pub enum Op {
    Nop(u8),
    Copy {
        src: Addr,
        dst: Addr,
        bytes: u32,
    },
    Fill {
        dst: Addr,
        bytes: u32,
        pattern: u32,
    },
    Blit {
        src: Addr,
        dst: Addr,
        width: u32,
        height: u32,
        src_extra: u32,
        dst_extra: u32,
    },
    Fence {
        dst: Addr,
        value: u64,
        wide: bool,
        interrupt: bool,
    },
    Semaphore {
        addr: Addr,
        compare: CompareOp,
        value: u32,
    },
    Timestamp {
        dst: Addr,
    },
    Lri {
        gpr: u8,
        value: u32,
    },
    Store {
        register: ReadableRegister,
        dst: Addr,
    },
    TlbAll,
    TlbRange {
        start: Addr,
        pages: u32,
    },
    Batch(Vec<Op>),
    /// An access that runs off a slot's mapping (faulting streams only).
    Poison(Poison),
    // Hostile streams only from here on.
    /// SET_SCANOUT to head 0: a guest form this device does not carry out.
    Scanout(Addr),
    Privileged(Privileged),
    /// An operation with extra header flag (or reserved) bits.
    Flags {
        op: Box<Op>,
        flags: u32,
    },
    /// Dwords as they come.
    Raw(Vec<u32>),
    /// A batch without BATCH_END.
    Unterminated(Vec<Op>),
    /// BATCH_END where no batch ends.
    StrayEnd,
    /// BATCH_START of any address and length.
    BatchAt {
        at: Addr,
        bytes: u32,
    },
}

/// The privileged forms of the physical command set.
#[derive(Clone, Debug)]
pub enum Privileged {
    PhysicalCopy { src: u64, dst: u64, bytes: u32 },
    PhysicalFill { dst: u64, bytes: u32 },
    PhysicalFence { dst: u64 },
    Batch(Vec<Op>),
    SetContext(u32),
    SetPtRoot(u64),
    LoadRegister { offset: u32, value: u32 },
    StoreRegister { offset: u32, dst: Addr },
    OtherHead { head: u32, surface: u64 },
}

fn readable() -> impl Strategy<Value = ReadableRegister> {
    prop_oneof![
        4 => (0..16u8).prop_map(|n| ReadableRegister::Gpr(Gpr::new(n).expect("below 16"))),
        1 => Just(ReadableRegister::CompletedFenceLo),
        1 => Just(ReadableRegister::CompletedFenceHi),
        1 => Just(ReadableRegister::TimestampLo),
        1 => Just(ReadableRegister::TimestampHi),
    ]
}

fn compare() -> impl Strategy<Value = CompareOp> {
    proptest::sample::select(CompareOp::ALL.to_vec())
}

/// Copy lengths: mostly within a chunk, some over several 64 KiB chunks.
fn copy_len(max: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => 1..4096u32,
        3 => 4096..70_000u32,
        1 => 70_000..max,
    ]
}

/// The leaves of a valid stream, with `addr` for addresses.
fn leaf<A: Strategy<Value = Addr> + Clone + 'static>(
    addr: A,
    max_copy: u32,
) -> impl Strategy<Value = Op> + Clone {
    prop_oneof![
        1 => (1..=8u8).prop_map(Op::Nop),
        4 => (addr.clone(), addr.clone(), copy_len(max_copy))
            .prop_map(|(src, dst, bytes)| Op::Copy { src, dst, bytes }),
        3 => (addr.clone(), copy_len(max_copy), any::<u32>())
            .prop_map(|(dst, bytes, pattern)| Op::Fill { dst, bytes, pattern }),
        2 => (addr.clone(), addr.clone(), 1..=64u32, 1..=16u32, 0..8u32, 0..8u32).prop_map(
            |(src, dst, width, height, src_extra, dst_extra)| Op::Blit {
                src, dst, width, height, src_extra, dst_extra,
            }
        ),
        2 => (addr.clone(), any::<u64>(), any::<bool>(), any::<bool>())
            .prop_map(|(dst, value, wide, interrupt)| Op::Fence { dst, value, wide, interrupt }),
        1 => (addr.clone(), compare(), any::<u32>())
            .prop_map(|(addr, compare, value)| Op::Semaphore { addr, compare, value }),
        1 => addr.clone().prop_map(|dst| Op::Timestamp { dst }),
        1 => (any::<u8>(), any::<u32>()).prop_map(|(gpr, value)| Op::Lri { gpr, value }),
        1 => (readable(), addr.clone()).prop_map(|(register, dst)| Op::Store { register, dst }),
        1 => Just(Op::TlbAll),
        1 => (addr, 1..2048u32).prop_map(|(start, pages)| Op::TlbRange { start, pages }),
    ]
}

/// Valid operations, batches nested up to three deep (a BATCH_START at
/// level 3 is the deepest allowed).
pub fn valid_ops() -> impl Strategy<Value = Vec<Op>> {
    let addr = (0..SLOTS, any::<u32>()).prop_map(|(slot, offset)| Addr::Slot { slot, offset });
    let op =
        leaf(addr, 600_000).prop_recursive(3, 24, 6, |inner| vec(inner, 0..6).prop_map(Op::Batch));
    vec(op, 1..24)
}

/// Addresses in and out of what A maps, all of them valid fields (ranges
/// from them stay below 2^48): the engines, not the validator, must stop
/// what they reach. Slot 7, the top of the address space, is left out:
/// ranges from there would run past 2^48.
fn engine_addr() -> impl Strategy<Value = Addr> + Clone {
    let low_slot = (0..SLOTS - 1).prop_map(|s| s);
    prop_oneof![
        4 => (low_slot.clone(), 0..(64 << 10) as u32)
            .prop_map(|(slot, offset)| Addr::Slot { slot, offset }),
        1 => (low_slot, 0..(4 * MIB as u32))
            .prop_map(|(slot, offset)| Addr::Slot { slot, offset }),
        4 => (SLOTS..SLOTS + HOSTILE_SLOTS, 0..(16 << 10) as u32)
            .prop_map(|(slot, offset)| Addr::Slot { slot, offset }),
        1 => (0..(1u64 << 48) - 8 * MIB).prop_map(Addr::Raw),
        1 => (SLICE..2 * SLICE).prop_map(Addr::Raw),
        1 => (RW_IOVA..RW_IOVA + 4 * MIB).prop_map(Addr::Raw),
    ]
}

/// Any address, up to past 2^48.
fn hostile_addr() -> impl Strategy<Value = Addr> + Clone {
    prop_oneof![
        8 => engine_addr(),
        1 => (0..SLOTS + HOSTILE_SLOTS, any::<u32>())
            .prop_map(|(slot, offset)| Addr::Slot { slot, offset }),
        1 => any::<u64>().prop_map(Addr::Raw),
        1 => ((1u64 << 48) - 8192..(1u64 << 48) + 8192).prop_map(Addr::Raw),
    ]
}

fn privileged_register() -> impl Strategy<Value = u32> {
    prop_oneof![
        proptest::sample::select(vec![
            CONTEXT_ID_OFFSET,
            PT_ROOT_LO_OFFSET,
            PT_ROOT_HI_OFFSET,
            MMU_CONTROL_OFFSET,
            TLB_CONTROL_OFFSET,
            WATCHDOG_OFFSET,
            DISPLAY_HEAD0_OFFSET,
            DISPLAY_HEAD0_OFFSET + 0x104,
            COMPLETED_FENCE_LO_OFFSET,
            TIMESTAMP_LO_OFFSET,
            0x3,
        ]),
        any::<u32>(),
    ]
}

fn physical() -> impl Strategy<Value = u64> {
    prop_oneof![SLICE..2 * SLICE, 0..SLICE, any::<u64>()]
}

fn privileged_leaf() -> impl Strategy<Value = Privileged> {
    prop_oneof![
        (physical(), physical(), 1..70_000u32)
            .prop_map(|(src, dst, bytes)| Privileged::PhysicalCopy { src, dst, bytes }),
        (physical(), 1..70_000u32).prop_map(|(dst, bytes)| Privileged::PhysicalFill {
            dst: dst & !3,
            bytes: bytes & !3
        }),
        physical().prop_map(|dst| Privileged::PhysicalFence { dst: dst & !7 }),
        any::<u32>().prop_map(Privileged::SetContext),
        prop_oneof![Just(SLICE | 1), any::<u64>()].prop_map(Privileged::SetPtRoot),
        (privileged_register(), any::<u32>())
            .prop_map(|(offset, value)| Privileged::LoadRegister { offset, value }),
        (privileged_register(), hostile_addr())
            .prop_map(|(offset, dst)| Privileged::StoreRegister { offset, dst }),
        (prop_oneof![1..4u32, any::<u32>()], physical())
            .prop_map(|(head, surface)| Privileged::OtherHead { head, surface }),
    ]
}

/// A header with a plausible opcode and length, then dwords.
fn raw_command() -> impl Strategy<Value = Vec<u32>> {
    (0..0x12u32, 0..12u32, any::<u8>(), vec(any::<u32>(), 0..12)).prop_map(
        |(opcode, dwords, flags, mut payload)| {
            let header = opcode | dwords << 8 | u32::from(flags) << 16;
            payload.insert(0, header);
            payload
        },
    )
}

fn hostile_leaf() -> impl Strategy<Value = Op> {
    let semaphore = (hostile_addr(), any::<bool>()).prop_map(|(addr, ge)| Op::Semaphore {
        addr,
        // Conditions that hold whatever memory holds: a wait that never
        // ends costs the watchdog's 100 ms.
        compare: if ge { CompareOp::Ge } else { CompareOp::Le },
        value: if ge { 0 } else { u32::MAX },
    });
    prop_oneof![
        12 => leaf(hostile_addr(), 4 << 20).prop_map(|op| match op {
            Op::Semaphore { addr, .. } => Op::Semaphore {
                addr,
                compare: CompareOp::Ge,
                value: 0,
            },
            op => op,
        }),
        1 => semaphore,
        1 => hostile_addr().prop_map(Op::Scanout),
        3 => privileged_leaf().prop_map(Op::Privileged),
        1 => vec(any::<u32>(), 1..12).prop_map(Op::Raw),
        2 => raw_command().prop_map(Op::Raw),
        2 => (leaf(hostile_addr(), 4 << 20), any::<u32>()).prop_map(|(op, flags)| Op::Flags {
            op: Box::new(op),
            flags: flags & 0xff7f_0000,
        }),
        1 => Just(Op::StrayEnd),
        1 => (hostile_addr(), any::<u32>()).prop_map(|(at, bytes)| Op::BatchAt { at, bytes }),
    ]
}

/// Well-formed guest commands whose addresses reach anywhere below 2^48
/// (the slot 7 region is left out: ranges from there run past 2^48), in
/// batches nested as deep as allowed: streams the validator takes and the
/// engines must stop where the MMU says so.
pub fn engine_ops() -> impl Strategy<Value = Vec<Op>> {
    let op = leaf(engine_addr(), 4 << 20)
        .prop_map(|op| match op {
            Op::Semaphore { addr, .. } => Op::Semaphore {
                addr,
                compare: CompareOp::Ge,
                value: 0,
            },
            op => op,
        })
        .prop_recursive(3, 24, 6, |inner| vec(inner, 0..6).prop_map(Op::Batch));
    vec(op, 1..16)
}

/// Hostile operations, batches nested past the limit.
pub fn hostile_ops() -> impl Strategy<Value = Vec<Op>> {
    let op = hostile_leaf().prop_recursive(6, 32, 6, |inner| {
        prop_oneof![
            4 => vec(inner.clone(), 0..6).prop_map(Op::Batch),
            1 => vec(inner.clone(), 0..4).prop_map(Op::Unterminated),
            1 => vec(inner, 0..4).prop_map(|ops| Op::Privileged(Privileged::Batch(ops))),
        ]
    });
    vec(op, 1..16)
}

/// Encodes hostile streams as they are: addresses are the slot's VA plus
/// the offset, unclamped.
pub struct Encoder<'a> {
    layout: &'a Layout,
    /// Batch buffers: offset in the batch area and bytes.
    pub batches: Vec<(u64, Vec<u8>)>,
    next_batch: u64,
}

impl<'a> Encoder<'a> {
    pub fn new(layout: &'a Layout) -> Self {
        Self {
            layout,
            batches: Vec::new(),
            next_batch: 0,
        }
    }

    pub fn va(&self, addr: Addr) -> u64 {
        match addr {
            Addr::Slot { slot, offset } if slot < SLOTS => {
                self.layout.first_va(slot).wrapping_add(u64::from(offset))
            }
            Addr::Slot { slot, offset } => slot_va(slot) + u64::from(offset),
            Addr::Raw(va) => va,
        }
    }

    /// The stream's dwords; its batches are in `batches`.
    pub fn encode(&mut self, ops: &[Op]) -> Vec<u32> {
        let mut out = StreamBuilder::new();
        for op in ops {
            self.op(op, &mut out);
        }
        out.into_words()
    }

    /// Places a batch buffer, starting over at the top of the area when it
    /// is full (a guest may reuse its batch memory too).
    fn place(&mut self, mut bytes: Vec<u8>) -> (u64, u32) {
        bytes.truncate(BATCHES_LEN as usize);
        if self.next_batch + bytes.len() as u64 > BATCHES_LEN {
            self.next_batch = 0;
        }
        let at = self.next_batch;
        self.next_batch = (at + bytes.len() as u64).next_multiple_of(64);
        let len = bytes.len() as u32;
        self.batches.push((at, bytes));
        (BATCH_VA + at, len)
    }

    fn batch(&mut self, ops: &[Op], terminated: bool) -> (u64, u32) {
        let mut batch = StreamBuilder::new();
        for op in ops {
            self.op(op, &mut batch);
        }
        if terminated {
            batch.batch_end();
        }
        self.place(batch.to_bytes())
    }

    fn op(&mut self, op: &Op, out: &mut StreamBuilder) {
        match op {
            Op::Nop(n) => {
                out.nop(*n);
            }
            Op::Copy { src, dst, bytes } => {
                out.copy(self.va(*src), self.va(*dst), *bytes);
            }
            Op::Fill {
                dst,
                bytes,
                pattern,
            } => {
                out.fill(self.va(*dst) & !3, (bytes & !3).max(4), *pattern);
            }
            Op::Blit {
                src,
                dst,
                width,
                height,
                src_extra,
                dst_extra,
            } => {
                out.blit2d(
                    self.va(*src) & !3,
                    width * 4 + src_extra * 4,
                    self.va(*dst) & !3,
                    width * 4 + dst_extra * 4,
                    *width,
                    *height,
                );
            }
            Op::Fence {
                dst,
                value,
                wide,
                interrupt,
            } => {
                if *wide {
                    out.fence64(self.va(*dst) & !7, *value, *interrupt);
                } else {
                    out.fence32(self.va(*dst) & !3, *value as u32, *interrupt);
                }
            }
            Op::Semaphore {
                addr,
                compare,
                value,
            } => {
                out.semaphore_wait(self.va(*addr) & !3, *compare, *value);
            }
            Op::Timestamp { dst } => {
                out.timestamp(self.va(*dst) & !7);
            }
            Op::Lri { gpr, value } => {
                out.load_register_imm(u32::from(gpr % 16) * 4, *value);
            }
            Op::Store { register, dst } => {
                out.store_register(register.offset(), self.va(*dst) & !3);
            }
            Op::TlbAll => {
                out.tlb_invalidate_all();
            }
            Op::TlbRange { start, pages } => {
                out.tlb_invalidate_range(self.va(*start) & !0xfff, u64::from(*pages) << 12);
            }
            Op::Batch(ops) => {
                let (va, bytes) = self.batch(ops, true);
                out.batch_start(va, bytes);
            }
            Op::Scanout(surface) => {
                out.set_scanout(0, self.va(*surface) & !0xfff, 4096, 1024, 16);
            }
            Op::Privileged(p) => self.privileged(p, out),
            Op::Flags { op, flags } => {
                self.op(op, out);
                out.with_flags(*flags);
            }
            Op::Raw(words) => {
                out.raw(words);
            }
            Op::Unterminated(ops) => {
                let (va, bytes) = self.batch(ops, false);
                out.batch_start(va, bytes);
            }
            Op::StrayEnd => {
                out.batch_end();
            }
            Op::Poison(_) => unreachable!("a poison is planned with the model"),
            Op::BatchAt { at, bytes } => {
                out.batch_start(self.va(*at), *bytes);
            }
        }
    }

    fn privileged(&mut self, p: &Privileged, out: &mut StreamBuilder) {
        match p {
            Privileged::PhysicalCopy { src, dst, bytes } => {
                out.copy(*src, *dst, *bytes).with_flags(FLAG_PHYSICAL);
            }
            Privileged::PhysicalFill { dst, bytes } => {
                out.fill(*dst, *bytes, 0xdead_beef)
                    .with_flags(FLAG_PHYSICAL);
            }
            Privileged::PhysicalFence { dst } => {
                out.fence64(*dst, u64::MAX, true).with_flags(FLAG_PHYSICAL);
            }
            Privileged::Batch(ops) => {
                let (va, bytes) = self.batch(ops, true);
                out.batch_start(va, bytes).with_flags(FLAG_BATCH_PRIVILEGED);
            }
            Privileged::SetContext(context) => {
                out.set_context(*context);
            }
            Privileged::SetPtRoot(root) => {
                out.set_pt_root(*root);
            }
            Privileged::LoadRegister { offset, value } => {
                out.load_register_imm(*offset, *value);
            }
            Privileged::StoreRegister { offset, dst } => {
                out.store_register(*offset, self.va(*dst) & !3);
            }
            Privileged::OtherHead { head, surface } => {
                out.set_scanout(*head, surface & !0xfff, 4096, 1024, 16);
            }
        }
    }
}

/// One poisoned access (see `Poison`), somewhere in a valid stream: at
/// `index` among its top-level operations, inside a batch if `in_batch`.
pub fn with_poison() -> impl Strategy<Value = Vec<Op>> {
    let poison = (
        0..SLOTS - 1,
        proptest::option::weighted(0.85, (bad_page(), any::<bool>())),
        prop_oneof![
            3 => Just(PoisonOp::Fill),
            2 => Just(PoisonOp::CopyFrom),
            2 => Just(PoisonOp::CopyTo),
            1 => Just(PoisonOp::Fence),
            1 => Just(PoisonOp::Semaphore),
        ],
        prop_oneof![2 => 0..64u32, 1 => 0..300_000u32],
        prop_oneof![2 => 1..64u32, 1 => 1..200_000u32],
        (0..SLOTS, any::<u32>()).prop_map(|(slot, offset)| Addr::Slot { slot, offset }),
    )
        .prop_map(|(slot, entry, op, back, beyond, other)| Poison {
            slot,
            entry,
            op,
            back,
            // An access may run through a page of the window without an fd
            // into the pages after it: it faults at that page, writing
            // nothing past it (`focused::a_write_that_faults_writes_nothing_
            // past_the_fault`).
            beyond,
            other,
        });
    (valid_ops(), poison, any::<usize>(), any::<bool>()).prop_map(
        |(mut ops, poison, index, in_batch)| {
            let op = if in_batch {
                Op::Batch(vec![Op::Poison(poison)])
            } else {
                Op::Poison(poison)
            };
            ops.insert(index % (ops.len() + 1), op);
            ops
        },
    )
}
