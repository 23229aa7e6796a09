//! Property tests of the whole validator: random valid streams (every
//! guest command, batches nested to the limit, rings that wrap) validate
//! to exactly the commands they were built from; random bytes, dword
//! soups and mutations of valid streams never panic and agree with the
//! reference validator; and a privileged form placed anywhere, at any
//! nesting level, is always refused with its code at its VA.

mod streams;

use proptest::prelude::*;
use streams::*;
use vgpu_commands::fuzzing::{FuzzInput, fuzz_command_validator};
use vgpu_commands::testing::reference::{self, Outcome};
use vgpu_commands::{
    ChannelErrorCode, Command, EngineRegister, FLAG_BATCH_PRIVILEGED, FLAG_PHYSICAL, GpuVa, Opcode,
    StreamBuilder, StreamMemory, Validator, header,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_streams_validate_to_the_commands_they_were_built_from(
        items in ring_items(),
        size_log in 12u32..=16,
        get in any::<u32>(),
    ) {
        let mut layout = lay_out(&items, 1 << size_log, get);
        let mut validator = Validator::new();
        let stream = validator.validate(&layout.ring, &mut layout.memory).unwrap();
        let commands: Vec<_> = stream.commands().collect();
        prop_assert_eq!(&commands, &layout.expected);
        prop_assert_eq!(stream.len(), layout.expected.len());
        prop_assert_eq!(stream.new_get(), layout.ring.put);
        // Again, through the recycled buffers.
        validator.recycle(stream);
        let again = validator.validate(&layout.ring, &mut layout.memory).unwrap();
        prop_assert_eq!(again.commands().collect::<Vec<_>>(), commands);
    }

    #[test]
    fn every_guest_command_encodes_and_decodes_to_itself(command in guest_command()) {
        let mut words = Vec::new();
        vgpu_commands::encode(&command, &mut words);
        prop_assert_eq!(
            vgpu_commands::decode(&words),
            Ok((vgpu_commands::Decoded::Command(command), words.len()))
        );
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzz_command_validator(&data);
    }

    #[test]
    fn dword_soups_never_panic(
        words in prop::collection::vec(soup_dword(), 0..400),
        size in 0u8..12,
        flags in 0u8..8,
        get in 0u32..64,
        put in 0u32..2048,
        hole in 0u8..4,
    ) {
        let input = FuzzInput {
            size,
            flags,
            get: get * 4,
            put: put * 4,
            hole,
            image: words.iter().flat_map(|word| word.to_le_bytes()).collect(),
        };
        fuzz_command_validator(&input.encode());
    }

    #[test]
    fn mutated_valid_streams_never_panic_and_agree_with_the_reference(
        items in ring_items(),
        get in any::<u32>(),
        mutations in prop::collection::vec((any::<bool>(), any::<u32>(), mutation()), 1..6),
    ) {
        let mut layout = lay_out(&items, 4096, get);
        let batch_bytes = layout
            .expected
            .iter()
            .map(|at| at.va.get())
            .filter(|&va| va >= BATCHES)
            .max()
            .map_or(0, |last| last - BATCHES + 64);
        let ring = layout.ring;
        let span = u64::from(ring.put.wrapping_sub(ring.get) & (ring.size - 1));
        for (in_ring, at, mutation) in mutations {
            // A dword of the submitted span, or of the batches.
            let va = if (in_ring || batch_bytes == 0) && span > 0 {
                let offset = (u64::from(ring.get) + u64::from(at) % span) % u64::from(ring.size);
                RING + offset / 4 * 4
            } else if batch_bytes > 0 {
                BATCHES + (u64::from(at) % batch_bytes) / 4 * 4
            } else {
                continue;
            };
            let mut old = [0; 4];
            let gpu_va = GpuVa::new(va).unwrap();
            if layout.memory.read(gpu_va, &mut old).is_ok() {
                let new = mutation.apply(u32::from_le_bytes(old));
                layout.memory.write(va, &new.to_le_bytes());
            }
        }
        let mut fast = layout.memory.clone();
        let result = Validator::new().validate(&layout.ring, &mut fast);
        let expected = reference::validate(&layout.ring, &mut layout.memory);
        prop_assert_eq!(Outcome::of(&result), expected);
    }

    #[test]
    fn privileged_forms_anywhere_are_always_refused(
        mut items in ring_items(),
        list in any::<usize>(),
        at in any::<usize>(),
        (form, code) in privileged_form(),
        get in any::<u32>(),
    ) {
        let mut n = list % lists(&items);
        prop_assert!(insert(&mut items, &mut n, at, &form));
        let mut layout = lay_out(&items, 4096, get);
        let (va, level) = layout.marked.unwrap();
        let error = Validator::new()
            .validate(&layout.ring, &mut layout.memory)
            .unwrap_err();
        prop_assert_eq!(error.code(), code);
        prop_assert_eq!(error.info(), va);
        prop_assert_eq!(error.site().unwrap().level, level);
    }
}

/// A change to one dword of a valid stream.
#[derive(Clone, Copy, Debug)]
enum Mutation {
    Flip(u32),
    Replace(u32),
    Header { opcode: u8, dwords: u8, flags: u8 },
    Add(u32),
}

impl Mutation {
    fn apply(self, old: u32) -> u32 {
        match self {
            Mutation::Flip(bit) => old ^ 1 << (bit % 32),
            Mutation::Replace(new) => new,
            Mutation::Header {
                opcode,
                dwords,
                flags,
            } => u32::from(opcode) | u32::from(dwords) << 8 | u32::from(flags) << 16,
            Mutation::Add(n) => old.wrapping_add(n),
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<u32>().prop_map(Mutation::Flip),
        any::<u32>().prop_map(Mutation::Replace),
        (0..18u8, 0..12u8, any::<u8>()).prop_map(|(opcode, dwords, flags)| Mutation::Header {
            opcode,
            dwords,
            flags
        }),
        prop_oneof![Just(1), Just(4), Just(0x1_0000), Just(u32::MAX)].prop_map(Mutation::Add),
    ]
}

/// Dwords that make plausible streams: headers of every opcode with right
/// and wrong lengths and flags, small addresses that land in the fuzz
/// window, and edge values.
fn soup_dword() -> impl Strategy<Value = u32> {
    let headers = (0..17u8, any::<bool>(), any::<u8>()).prop_map(|(opcode, right, flags)| {
        let dwords = match Opcode::from_u8(opcode).and_then(Opcode::dwords) {
            Some(dwords) if right => dwords as u32,
            _ => u32::from(flags % 10),
        };
        let flags = if right { 0 } else { u32::from(flags) << 16 };
        u32::from(opcode) | dwords << 8 | flags
    });
    prop_oneof![
        4 => headers,
        2 => (0x10_0000u32..0x10_4000).prop_map(|va| va & !3),
        2 => 0u32..64,
        1 => prop_oneof![Just(0xffff), Just(0x1_0000), Just(4096), Just(u32::MAX)],
        1 => any::<u32>(),
    ]
}

/// A privileged form, encoded, and the code that refuses it.
fn privileged_form() -> impl Strategy<Value = (Vec<u32>, ChannelErrorCode)> {
    let encoded = |build: &dyn Fn(&mut StreamBuilder)| {
        let mut builder = StreamBuilder::new();
        build(&mut builder);
        builder.into_words()
    };
    let physical = guest_command()
        .prop_filter("addresses memory", |command| {
            command.opcode().flags() & FLAG_PHYSICAL != 0
        })
        .prop_map(move |command: Command| {
            let words = encoded(&|b| {
                b.command(&command).with_flags(FLAG_PHYSICAL);
            });
            (words, ChannelErrorCode::Privileged)
        });
    let batch = (any::<u64>(), any::<u32>(), 1..4u32).prop_map(move |(va, bytes, flags)| {
        let flags = if flags & 1 != 0 { FLAG_PHYSICAL } else { 0 }
            | if flags & 2 != 0 {
                FLAG_BATCH_PRIVILEGED
            } else {
                0
            };
        let words = encoded(&|b| {
            b.batch_start(va, bytes).with_flags(flags);
        });
        (words, ChannelErrorCode::Privileged)
    });
    let context = any::<u32>().prop_map(move |context| {
        (
            encoded(&|b| {
                b.set_context(context);
            }),
            ChannelErrorCode::Privileged,
        )
    });
    let root = any::<u64>().prop_map(move |root| {
        (
            encoded(&|b| {
                b.set_pt_root(root);
            }),
            ChannelErrorCode::Privileged,
        )
    });
    let not_writable = |offset: &u32| {
        EngineRegister::from_offset(*offset)
            .guest_writable()
            .is_none()
    };
    let lri = (
        prop_oneof![0x40u32..0x2000, any::<u32>()].prop_filter("not a GPR", not_writable),
        any::<u32>(),
    )
        .prop_map(move |(offset, value)| {
            (
                encoded(&|b| {
                    b.load_register_imm(offset, value);
                }),
                ChannelErrorCode::RegisterNotAllowed,
            )
        });
    let not_readable = |offset: &u32| {
        EngineRegister::from_offset(*offset)
            .guest_readable()
            .is_none()
    };
    let store = (
        prop_oneof![0x50u32..0x2000, any::<u32>()].prop_filter("not readable", not_readable),
        any::<u64>(),
    )
        .prop_map(move |(offset, dst)| {
            (
                encoded(&|b| {
                    b.store_register(offset, dst);
                }),
                ChannelErrorCode::RegisterNotAllowed,
            )
        });
    let head = (1..=u32::MAX, any::<u64>(), any::<u32>()).prop_map(move |(head, surface, size)| {
        (
            encoded(&|b| {
                b.set_scanout(head, surface, size, size, size);
            }),
            ChannelErrorCode::DisplayHead,
        )
    });
    let raw_header = Just((
        vec![header(Opcode::SetContext, 2, 0), 0],
        ChannelErrorCode::Privileged,
    ));
    prop_oneof![physical, batch, context, root, lri, store, head, raw_header]
}
