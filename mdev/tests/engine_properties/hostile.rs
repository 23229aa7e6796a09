//! The hostile property: a case is A's tables (valid mappings and hostile
//! entries), two channels with hostile roots and rings, and a list of
//! what the guest and its VMM do between engine steps; running it checks
//! the isolation contract.

use std::fs::File;
use std::ops::Range;

use proptest::collection::vec;
use proptest::prelude::*;
use shadow_mmu::{GPU_VA_SPACE, GpuVa, PteTarget};
use vgpu_commands::{Opcode, header};
use vgpu_emulation::bar2::channels::{USERD_HI, USERD_LO};
use vgpu_emulation::bar2::layout::{CTRL_INV_CONTROL, channel_register};
use vgpu_mdev::VirtualGpu;

use crate::drive::{Bystander, Ring, assert_channels_consistent, ring_size};
use crate::layout::{
    Hostile, Layout, Root, SLOTS, SlotMap, Space, build, crafted_tables, hostile_entries, layout,
    root,
};
use crate::rig::{
    B_RAM_TAG, B_VRAM_TAG, BATCHES_AT, HANG, PAGE, RO_FILE_OFFSET, RW_IOVA, RW_LEN, Rig, SLICE,
    Variant, assert_programmed_inside, backing, first_difference, holds_new_tag, memfd, read_file,
    reset_channel, ring_doorbell, run_until_idle, set_root, step, translate, write_file, write_reg,
};
use crate::stream::{Encoder, Op, engine_ops, hostile_ops};

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
pub struct HostileCase {
    variant: Variant,
    layout: Layout,
    hostile: Vec<Hostile>,
    crafted: u64,
    roots: [Root; 2],
    ring_sizes: [u32; 2],
    actions: Vec<Action>,
}

pub fn hostile_case() -> impl Strategy<Value = HostileCase> {
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
pub fn run_hostile(case: &HostileCase) {
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
                // Mapped or not, it succeeds: the window exactly, or a
                // range with no window in it (which removes nothing).
                let unmapped = a.unmap_dma(RW_IOVA, Some(RW_LEN));
                assert!(unmapped.is_ok(), "unmap of the read-write window");
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
