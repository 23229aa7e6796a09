//! Property tests of the engines on the simulated GPU, without a daemon
//! (issue 9): the isolation contract's point 1 checked byte for byte
//! (DESIGN.md, "The isolation contract": the simulated GPU enforces the
//! MMU as hardware would, so memory outside a vGPU's allowed set can be
//! compared before and after), and valid streams checked against a
//! reference model.
//!
//! One simulated GPU holds two vGPUs, A and B, with 4 MiB of VRAM each
//! (`rig`). A's guest memory is one memfd: a read-write window, an
//! adjacent read-only window, and a tail nobody maps; A also has a window
//! without an fd. B's memory sits in two windows, one at the IOVA of A's
//! read-write window. Page tables for A are generated (`layout`): valid
//! mappings of its VRAM and windows, and hostile entries (outside the
//! slice, into B's VRAM by offset arithmetic, into unmapped IOVA,
//! writable over the read-only window, reserved bits, tables in B's
//! memory or in crafted guest memory). Command streams are generated
//! (`stream`) and written into rings in A's VRAM, and the channels are
//! driven through their registers; the engines run synchronously, a step
//! at a time, since neither vGPU is powered on.
//!
//! - `hostile_streams_never_reach_outside_a`: any tables, any streams
//!   (mostly well-formed commands whose addresses reach anywhere, some
//!   malformed or privileged), register actions, DMA unmaps and device
//!   resets between engine steps. Nothing outside A's allowed set changes
//!   (B's VRAM and memory, A's read-only window and unmapped tail, a memfd
//!   nobody maps, A's read-write window once unmapped); every page the
//!   daemon programs into either vGPU's contexts lies inside what that vGPU
//!   owns; nothing translates into an unmapped window; B's own work
//!   completes untouched; A's memory never comes to hold B's data; the
//!   channels end in a documented state.
//! - `valid_streams_do_what_the_model_does`: streams that only touch what
//!   is mapped (writable where they write) leave A's memory exactly as
//!   the model (`model`) does, with FENCE, interrupt status and the control
//!   page as the model says.
//! - `a_stream_stops_at_its_first_fault_as_the_model_says`: the same, with
//!   one access that runs off a mapping into a hostile entry (or none):
//!   the channel stops there with the documented reason, ERROR_VA and
//!   FAULT_VA at the first address not reached, the chunks before written
//!   and nothing after.
//!
//! `focused` holds tests named for one behaviour each.
//!
//! Case counts: `PROPTEST_CASES` overrides the defaults below.

#[path = "engine_properties/drive.rs"]
mod drive;
#[path = "engine_properties/focused.rs"]
mod focused;
#[path = "engine_properties/layout.rs"]
mod layout;
#[path = "engine_properties/model.rs"]
mod model;
#[path = "engine_properties/rig.rs"]
mod rig;
#[path = "engine_properties/stream.rs"]
mod stream;

use std::fs::File;
use std::ops::Range;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use shadow_mmu::{GPU_VA_SPACE, GpuVa, PteTarget};
use vgpu_commands::{Opcode, StreamBuilder, header};
use vgpu_emulation::bar2::channels::{
    ERROR_CODE, ERROR_VA_HI, ERROR_VA_LO, FENCE_HI, FENCE_LO, INTR_FENCE, INTR_STATUS, RING_GET,
    STATUS, USERD_HI, USERD_LO,
};
use vgpu_emulation::bar2::layout::{
    CTRL_FAULT_COUNT, CTRL_FAULT_INFO, CTRL_FAULT_VA_HI, CTRL_FAULT_VA_LO, CTRL_INV_CONTROL,
    CTRL_IRQ_STATUS, channel_register,
};
use vgpu_mdev::VirtualGpu;

use crate::drive::{Bystander, Ring, assert_channels_consistent};
use crate::layout::{
    Hostile, Layout, Root, SLOTS, SlotMap, Space, build, crafted_tables, hostile_entries, layout,
    root,
};
use crate::model::{Planner, find_poison, poison_entry};
use crate::rig::{
    B_RAM_TAG, B_VRAM_TAG, BATCHES_AT, PAGE, RO_FILE_OFFSET, RUNNING, RW_IOVA, RW_LEN, Rig, SLICE,
    STOPPED, Variant, assert_programmed_inside, backing, channel_reg, first_difference,
    holds_new_tag, memfd, read_file, read_reg, reset_channel, ring_doorbell, run_until_idle,
    set_root, step, translate, write_file, write_reg,
};
use crate::stream::{Encoder, Op, engine_ops, hostile_ops, valid_ops, with_poison};

/// Longest the engines may take to finish a case's work: far more than
/// any case needs (a few SEMAPHORE watchdogs of 100 ms at most).
const HANG: Duration = Duration::from_secs(20);

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Failures are kept as focused tests, not regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn ring_size() -> impl Strategy<Value = u32> {
    prop_oneof![Just(4096u32), Just(8192), Just(16384)]
}

/// What the guest and its VMM do, in order, between engine steps.
#[derive(Clone, Debug)]
enum Action {
    /// Writes a stream into a channel's ring (less its last `trim`
    /// dwords) and rings the doorbell.
    Submit {
        channel: u32,
        ops: Vec<Op>,
        trim: usize,
    },
    /// Engine steps of A and B.
    Steps(u8),
    /// RING_PUT written with any value.
    BadPut { channel: u32, put: u32 },
    /// CONTROL RESET, then ENABLE.
    Reset { channel: u32 },
    /// PT_ROOT written again.
    SetRoot { channel: u32, root: Root },
    /// INV_CONTROL with ALL.
    InvalidateAll { channel: u32 },
    /// The VMM unmaps A's read-write window.
    Unmap,
    /// The VMM unmaps every window of A (`DMA_UNMAP` with ALL).
    UnmapAll,
    /// The VMM maps other memory at the read-write window's IOVA.
    Remap,
    /// USERD written: the channel's control page, wherever it points.
    Userd { channel: u32, userd: u64 },
    /// Doorbells, one NOP each, more than a channel holds at once.
    Flood { channel: u32, doorbells: u8 },
    /// DEVICE_RESET, then the tables, roots and rings set up again.
    DeviceReset,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (0..2u32, engine_ops())
            .prop_map(|(channel, ops)| Action::Submit { channel, ops, trim: 0 }),
        2 => (0..2u32, hostile_ops(), prop_oneof![4 => Just(0usize), 1 => 1..4usize])
            .prop_map(|(channel, ops, trim)| Action::Submit { channel, ops, trim }),
        3 => (1..6u8).prop_map(Action::Steps),
        1 => (0..2u32, any::<u32>()).prop_map(|(channel, put)| Action::BadPut { channel, put }),
        1 => (0..2u32).prop_map(|channel| Action::Reset { channel }),
        1 => (0..2u32, root()).prop_map(|(channel, root)| Action::SetRoot { channel, root }),
        1 => (0..2u32).prop_map(|channel| Action::InvalidateAll { channel }),
        1 => Just(Action::Unmap),
        1 => Just(Action::UnmapAll),
        1 => Just(Action::Remap),
        1 => (0..2u32, prop_oneof![
            (0..SLICE / 64 + 64).prop_map(|n| (n * 64) | 1),
            any::<u64>(),
        ])
            .prop_map(|(channel, userd)| Action::Userd { channel, userd }),
        1 => (0..2u32, 17..24u8).prop_map(|(channel, doorbells)| Action::Flood { channel, doorbells }),
        1 => Just(Action::DeviceReset),
    ]
}

#[derive(Clone, Debug)]
struct HostileCase {
    variant: Variant,
    layout: Layout,
    hostile: Vec<Hostile>,
    crafted: u64,
    roots: [Root; 2],
    ring_sizes: [u32; 2],
    actions: Vec<Action>,
}

fn hostile_case() -> impl Strategy<Value = HostileCase> {
    (
        (any::<bool>(), any::<bool>()),
        layout(),
        hostile_entries(),
        any::<u64>(),
        [root(), root()],
        [ring_size(), ring_size()],
        vec(action(), 1..8),
    )
        .prop_map(
            |((b_first, ram_a_unsealed), layout, hostile, crafted, roots, ring_sizes, actions)| {
                HostileCase {
                    variant: Variant {
                        b_first,
                        ram_a_unsealed,
                    },
                    layout,
                    hostile,
                    crafted,
                    roots,
                    ring_sizes,
                    actions,
                }
            },
        )
}

/// Runs `case` and checks the isolation contract; panics say what broke.
fn run_hostile(case: &HostileCase) {
    let rig = Rig::with(case.variant);
    let tables = build(&case.layout, &case.hostile, &[]);
    rig.put_a_vram(0, &tables.bytes);
    write_file(&rig.ram_a, RO_FILE_OFFSET, &crafted_tables(case.crafted));
    let bystander = Bystander::start(&rig);
    let a = &rig.a;
    let mut rings = [0, 1].map(|n| Ring::new(n, case.ring_sizes[n as usize]));
    let set_up = |rings: &mut [Ring; 2]| {
        for ring in rings {
            let root = case.roots[ring.channel as usize].value(tables.root);
            set_root(a, ring.channel, root);
            ring.enable(a);
        }
    };
    set_up(&mut rings);
    let mut before = rig.outside_a();
    bystander.expect(&mut before);
    let a_before = rig.a_memory();

    let mut encoder = Encoder::new(&case.layout);
    let mut mapped = true;
    // A's read-write window as the unmap left it, and the memory mapped
    // at its IOVA since.
    let mut frozen: Option<Vec<u8>> = None;
    let mut remapped: Vec<File> = Vec::new();
    for action in &case.actions {
        match action {
            Action::Submit { channel, ops, trim } => {
                let ring = &mut rings[*channel as usize];
                let mut words = encoder.encode(ops);
                let keep = words
                    .len()
                    .saturating_sub(*trim)
                    .min(ring.size as usize / 4 - 1);
                words.truncate(keep);
                for (at, bytes) in encoder.batches.drain(..) {
                    rig.put_a_vram(BATCHES_AT + at, &bytes);
                }
                ring.submit(a, &words, &mut |_, _| {});
            }
            Action::Steps(n) => {
                for _ in 0..*n {
                    step(a);
                    step(&rig.b);
                }
            }
            Action::BadPut { channel, put } => {
                ring_doorbell(a, *channel, *put);
                let ring = &mut rings[*channel as usize];
                ring.put = put % ring.size / 4 * 4;
            }
            Action::Reset { channel } => {
                reset_channel(a, *channel);
                rings[*channel as usize].put = 0;
            }
            Action::SetRoot { channel, root } => set_root(a, *channel, root.value(tables.root)),
            Action::InvalidateAll { channel } => write_reg(a, CTRL_INV_CONTROL, channel | 1 << 9),
            Action::Unmap => {
                let unmapped = a.unmap_dma(RW_IOVA, Some(RW_LEN));
                assert_eq!(unmapped.is_ok(), mapped, "unmap of the read-write window");
                if mapped {
                    frozen.get_or_insert_with(|| read_file(&rig.ram_a, 0, RW_LEN));
                    mapped = false;
                    assert_nothing_translates_into(a, &case.layout, RW_IOVA..RW_IOVA + RW_LEN);
                }
            }
            Action::UnmapAll => {
                let unmapped = a.unmap_dma(0, None).expect("unmap of every window");
                assert!(unmapped.revoked.is_ok(), "{:?}", unmapped.revoked);
                if mapped {
                    frozen.get_or_insert_with(|| read_file(&rig.ram_a, 0, RW_LEN));
                }
                mapped = false;
                assert_nothing_translates(a);
                assert_nothing_translates_into(a, &case.layout, 0..u64::MAX);
            }
            Action::Remap => {
                if !mapped {
                    let memory = memfd("ram-a-again", RW_LEN, true);
                    a.map_dma(RW_IOVA, RW_LEN, true, backing(&memory, 0))
                        .expect("the IOVA is free again");
                    remapped.push(memory);
                    mapped = true;
                }
            }
            Action::Userd { channel, userd } => {
                write_reg(a, channel_register(*channel, USERD_LO), *userd as u32);
                write_reg(
                    a,
                    channel_register(*channel, USERD_HI),
                    (userd >> 32) as u32,
                );
            }
            Action::Flood { channel, doorbells } => {
                let ring = &mut rings[*channel as usize];
                for _ in 0..*doorbells {
                    ring.submit(a, &[header(Opcode::Nop, 1, 0)], &mut |_, _| {});
                }
            }
            Action::DeviceReset => {
                a.reset().expect("DEVICE_RESET");
                rig.put_a_vram(0, &tables.bytes);
                set_up(&mut rings);
            }
        }
        assert_programmed_inside(a);
        assert_programmed_inside(&rig.b);
    }
    run_until_idle(&[a, &rig.b], HANG);

    rig.outside_a().assert_unchanged_since(&before);
    if let Some(frozen) = frozen {
        let now = read_file(&rig.ram_a, 0, RW_LEN);
        if let Some(at) = first_difference(&frozen, &now) {
            panic!("A's read-write window changed at {at:#x} after it was unmapped");
        }
    }
    // A's memory never comes to hold B's data, in A's VRAM, A's guest
    // memory file, or the memory mapped since an unmap.
    let mut was = a_before;
    let mut now = rig.a_memory();
    for memory in &remapped {
        was.extend(std::iter::repeat_n(0, RW_LEN as usize));
        now.extend(read_file(memory, 0, RW_LEN));
    }
    for tag in [B_VRAM_TAG, B_RAM_TAG] {
        let tag: [u8; 8] = tag;
        assert!(
            !holds_new_tag(&was, &now, tag),
            "A's memory holds B's data ({})",
            String::from_utf8_lossy(&tag)
        );
    }
    assert_channels_consistent(a);
    assert_channels_consistent(&rig.b);
}

/// Right after an unmap, no VA of A's slots in guest memory translates into
/// `gone`, through the tables or the TLB.
fn assert_nothing_translates_into(a: &VirtualGpu, layout: &Layout, gone: Range<u64>) {
    for slot in 0..SLOTS {
        let space = match layout.slots[slot as usize] {
            SlotMap::Pages { space, .. } | SlotMap::Large { space, .. } => space,
        };
        if !matches!(space, Space::RamRw | Space::RamRo) {
            continue;
        }
        let first = layout.first_va(slot);
        for page in (0..layout.len(slot)).step_by(PAGE as usize).take(64) {
            for channel in 0..2 {
                if let Some((address, true)) = translate(a, channel, first + page, false) {
                    assert!(
                        !gone.contains(&address),
                        "VA {:#x} of channel {channel} still reaches IOVA {address:#x}",
                        first + page
                    );
                }
            }
        }
    }
}

/// Right after every window went, no VA of A translates into guest memory.
fn assert_nothing_translates(a: &VirtualGpu) {
    let mut memory = a.memory();
    let mmu = &mut memory.mmu;
    for channel in 0..2 {
        let ctx = mmu.context(channel).expect("each channel has a context");
        let mut system = 0;
        mmu.physical()
            .mapped_pages(ctx, GpuVa(0), GPU_VA_SPACE, &mut |_, pte| {
                system += usize::from(matches!(pte.target(), PteTarget::System(_)));
            })
            .expect("the context exists");
        assert_eq!(
            system, 0,
            "channel {channel} maps guest memory with no window left"
        );
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn hostile_streams_never_reach_outside_a(case in hostile_case()) {
        run_hostile(&case);
    }
}

#[derive(Clone, Debug)]
struct ValidCase {
    layout: Layout,
    ops: Vec<Op>,
    ring_size: u32,
    /// Bytes of NOPs submitted first, so that the stream wraps.
    pad: u32,
    /// Where the stream is cut into more submissions (indices of command
    /// ends).
    cuts: Vec<usize>,
    /// Engine steps after each doorbell.
    steps: Vec<u8>,
}

fn valid_case(ops: impl Strategy<Value = Vec<Op>>) -> impl Strategy<Value = ValidCase> {
    (
        layout(),
        ops,
        ring_size(),
        any::<u32>(),
        vec(any::<usize>(), 0..3),
        vec(0..4u8, 8),
    )
        .prop_map(|(layout, ops, ring_size, pad, cuts, steps)| ValidCase {
            layout,
            ops,
            ring_size,
            pad: pad % ring_size / 4 * 4,
            cuts,
            steps,
        })
}

/// Splits `words` at command ends into spans of at most `cap` dwords,
/// and at the ends `cuts` name.
fn spans(words: &[u32], ends: &[usize], cap: usize, cuts: &[usize]) -> Vec<Vec<u32>> {
    let cut_at: Vec<usize> = cuts
        .iter()
        .filter(|_| !ends.is_empty())
        .map(|c| ends[c % ends.len()])
        .collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut last = 0;
    for &end in ends {
        if end - start > cap {
            out.push(words[start..last].to_vec());
            start = last;
        }
        last = end;
        if cut_at.contains(&end) {
            out.push(words[start..end].to_vec());
            start = end;
        }
    }
    if last > start {
        out.push(words[start..last].to_vec());
    }
    out.retain(|span| !span.is_empty());
    out
}

/// Runs `case` and checks A's memory against the model's; a stream with
/// a poisoned access must stop where the model says, with the fault the
/// model expects.
fn run_valid(case: &ValidCase) {
    let rig = Rig::new();
    let a = &rig.a;
    let poison = find_poison(&case.ops);
    let extra: Vec<_> = poison
        .and_then(|p| poison_entry(&case.layout, p))
        .into_iter()
        .collect();
    let tables = build(&case.layout, &[], &extra);
    rig.put_a_vram(0, &tables.bytes);
    set_root(a, 0, tables.root);
    let mut ring = Ring::new(0, case.ring_size);
    ring.enable(a);
    // The channel's control page, in VRAM nothing else uses: the device
    // mirrors GET, FENCE and ERROR_CODE there.
    write_reg(a, channel_register(0, USERD_LO), CONTROL_PAGE as u32 | 1);

    let mut planner = Planner::new(&case.layout, rig.a_memory(), poison);
    let (words, ends) = planner.plan(&case.ops);
    for (at, bytes) in &planner.batches {
        rig.put_a_vram(BATCHES_AT + at, bytes);
    }
    let before = rig.outside_a();

    let mut steps = case.steps.iter().cycle();
    let mut submit = |words: &[u32], planner: &mut Planner| {
        ring.submit(a, words, &mut |offset, bytes| {
            planner.model.put(offset as usize, bytes)
        });
        for _ in 0..*steps.next().expect("cycles") {
            step(a);
        }
    };
    let mut pad = StreamBuilder::new();
    let mut left = case.pad / 4;
    while left > 0 {
        let n = left.min(255);
        pad.nop(n as u8);
        left -= n;
    }
    if !pad.words().is_empty() {
        submit(pad.words(), &mut planner);
    }
    let cap = case.ring_size as usize / 4 - 1;
    for span in spans(&words, &ends, cap, &case.cuts) {
        submit(&span, &mut planner);
    }
    run_until_idle(&[a], HANG);

    assert_channels_consistent(a);
    let fence =
        u64::from(channel_reg(a, 0, FENCE_LO)) | u64::from(channel_reg(a, 0, FENCE_HI)) << 32;
    assert_eq!(
        fence, planner.model.fence,
        "FENCE is the last fence's value"
    );
    assert_eq!(
        channel_reg(a, 0, INTR_STATUS) & INTR_FENCE != 0,
        planner.model.fence_interrupt,
        "INTR_STATUS.FENCE: a FENCE that asked for an interrupt completed"
    );
    let faulted = read_reg(a, CTRL_IRQ_STATUS) & IRQ_FAULT != 0;
    assert_eq!(faulted, planner.fault.is_some(), "IRQ_STATUS.FAULT");
    // What the control page must hold: the registers it mirrors.
    let mirrored: Vec<u8> = [RING_GET, FENCE_LO, FENCE_HI, ERROR_CODE]
        .into_iter()
        .flat_map(|reg| channel_reg(a, 0, reg).to_le_bytes())
        .collect();
    planner.model.put(CONTROL_PAGE as usize + 4, &mirrored);
    match planner.fault {
        None => {
            assert_eq!(read_reg(a, CTRL_FAULT_COUNT), 0, "a valid stream faulted");
            assert_eq!(
                channel_reg(a, 0, ERROR_CODE),
                0,
                "a valid stream was refused"
            );
            assert_eq!(channel_reg(a, 0, STATUS), RUNNING);
            assert_eq!(channel_reg(a, 0, RING_GET), ring.put);
        }
        Some((va, write, reason)) => {
            assert_eq!(channel_reg(a, 0, STATUS), STOPPED, "the channel stopped");
            assert_eq!(channel_reg(a, 0, ERROR_CODE), 16, "ENGINE_FAULT");
            let error_va = u64::from(channel_reg(a, 0, ERROR_VA_LO))
                | u64::from(channel_reg(a, 0, ERROR_VA_HI)) << 32;
            let fault_va = u64::from(read_reg(a, CTRL_FAULT_VA_LO))
                | u64::from(read_reg(a, CTRL_FAULT_VA_HI)) << 32;
            let info = read_reg(a, CTRL_FAULT_INFO);
            let expected = reason << 16 | u32::from(write) << 8;
            assert_eq!(
                (error_va, fault_va, info, read_reg(a, CTRL_FAULT_COUNT)),
                (va, va, expected, 1),
                "(ERROR_VA, FAULT_VA, FAULT_INFO, FAULT_COUNT)"
            );
        }
    }

    let actual = rig.a_memory();
    planner.model.settle(&actual);
    if let Some(at) = first_difference(&planner.model.mem, &actual) {
        let place = if at < SLICE as usize {
            format!("VRAM offset {at:#x}")
        } else {
            format!("guest memory file offset {:#x}", at - SLICE as usize)
        };
        panic!(
            "A's memory differs from the model at {place}: model {:#04x}, device {:#04x}",
            planner.model.mem[at], actual[at]
        );
    }
    rig.outside_a().assert_unchanged_since(&before);
}

/// Channel 0's control page in the valid-stream properties: between the
/// batch buffers and the data, where no mapping reaches.
const CONTROL_PAGE: u64 = 0x7_0000;

/// IRQ_STATUS bit 3: a GPU MMU fault.
const IRQ_FAULT: u32 = 1 << 3;

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn valid_streams_do_what_the_model_does(case in valid_case(valid_ops())) {
        run_valid(&case);
    }

    #[test]
    fn a_stream_stops_at_its_first_fault_as_the_model_says(case in valid_case(with_poison())) {
        run_valid(&case);
    }
}
