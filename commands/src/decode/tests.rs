use super::*;
use crate::addr::GPU_VA_SPACE;
use crate::encode::StreamBuilder;
use crate::opcode::header;
use crate::registers::{DisplayRegister, Gpr, ReadableRegister};

const TOP: u64 = GPU_VA_SPACE;

fn va(value: u64) -> GpuVa {
    GpuVa::new(value).unwrap()
}

fn one(build: impl FnOnce(&mut StreamBuilder) -> &mut StreamBuilder) -> Vec<u32> {
    let mut builder = StreamBuilder::new();
    build(&mut builder);
    builder.into_words()
}

fn decoded(build: impl FnOnce(&mut StreamBuilder) -> &mut StreamBuilder) -> Decoded {
    let words = one(build);
    let (decoded, dwords) = decode(&words).unwrap();
    assert_eq!(dwords, words.len());
    decoded
}

fn command(build: impl FnOnce(&mut StreamBuilder) -> &mut StreamBuilder) -> Command {
    match decoded(build) {
        Decoded::Command(command) => command,
        other => panic!("not a guest command: {other:?}"),
    }
}

fn privileged(build: impl FnOnce(&mut StreamBuilder) -> &mut StreamBuilder) -> Privileged {
    match decoded(build) {
        Decoded::Privileged(form) => form,
        other => panic!("not privileged: {other:?}"),
    }
}

fn field(build: impl FnOnce(&mut StreamBuilder) -> &mut StreamBuilder) -> FieldError {
    match decode(&one(build)) {
        Err(DecodeError::BadField { field, .. }) => field,
        other => panic!("not a bad field: {other:?}"),
    }
}

// Each command, decoded.

#[test]
fn decodes_nop_of_any_length() {
    for dwords in [1, 2, 255] {
        assert_eq!(command(|b| b.nop(dwords)), Command::Nop { dwords });
    }
    // The payload is ignored, whatever it holds.
    let words = [header(Opcode::Nop, 3, 0), u32::MAX, 0x0e00_0002];
    assert_eq!(
        decode(&words),
        Ok((Decoded::Command(Command::Nop { dwords: 3 }), 3))
    );
}

#[test]
fn decodes_copy() {
    assert_eq!(
        one(|b| b.copy(0x1_2345_6789, 0xabcd_0000_0001, 77)),
        [0x0000_0602, 0x2345_6789, 0x1, 0x0000_0001, 0xabcd, 77]
    );
    assert_eq!(
        command(|b| b.copy(0x1_2345_6789, 0xabcd_0000_0001, 77)),
        Command::Copy {
            src: va(0x1_2345_6789),
            dst: va(0xabcd_0000_0001),
            bytes: 77
        }
    );
    // The last byte of the space is reachable.
    assert!(matches!(
        command(|b| b.copy(TOP - 1, 0, 1)),
        Command::Copy { .. }
    ));
}

#[test]
fn decodes_fill() {
    assert_eq!(
        command(|b| b.fill(0x1000, 0x40, 0xdead_beef)),
        Command::Fill {
            dst: va(0x1000),
            bytes: 0x40,
            pattern: 0xdead_beef
        }
    );
}

#[test]
fn decodes_blit2d() {
    assert_eq!(
        one(|b| b.blit2d(0x10_0000, 4096, 0x20_0000, 8192, 1024, 768))[0],
        0x0000_0904
    );
    assert_eq!(
        command(|b| b.blit2d(0x10_0000, 4096, 0x20_0000, 8192, 1024, 768)),
        Command::Blit2d(Blit2d {
            src: va(0x10_0000),
            src_pitch: 4096,
            dst: va(0x20_0000),
            dst_pitch: 8192,
            width: 1024,
            height: 768
        })
    );
}

#[test]
fn decodes_fence_of_32_and_64_bits() {
    assert_eq!(
        command(|b| b.fence32(0x2004, 9, false)),
        Command::Fence {
            dst: va(0x2004),
            value: FenceValue::U32(9),
            interrupt: false
        }
    );
    assert_eq!(one(|b| b.fence64(0x2008, 1 << 40, true))[0], 0x0006_0505);
    assert_eq!(
        command(|b| b.fence64(0x2008, 0x1_0000_0002, true)),
        Command::Fence {
            dst: va(0x2008),
            value: FenceValue::U64(0x1_0000_0002),
            interrupt: true
        }
    );
}

#[test]
fn decodes_semaphore_wait_with_every_compare_op() {
    for compare in CompareOp::ALL {
        let words = one(|b| b.semaphore_wait(0x3000, compare, 5));
        assert_eq!(words[0] >> 17 & 7, compare as u32);
        assert_eq!(
            command(|b| b.semaphore_wait(0x3000, compare, 5)),
            Command::SemaphoreWait {
                addr: va(0x3000),
                compare,
                value: 5
            }
        );
    }
}

#[test]
fn decodes_batch_start_and_batch_end() {
    assert_eq!(
        decoded(|b| b.batch_start(0x8000, 64)),
        Decoded::BatchStart {
            batch: va(0x8000),
            bytes: 64
        }
    );
    assert_eq!(decoded(|b| b.batch_end()), Decoded::BatchEnd);
}

#[test]
fn decodes_tlb_invalidate_all_and_range() {
    assert_eq!(
        command(|b| b.tlb_invalidate_all()),
        Command::TlbInvalidate(TlbScope::All)
    );
    assert_eq!(
        command(|b| b.tlb_invalidate_range(0x7000, 0x2_0000_0000)),
        Command::TlbInvalidate(TlbScope::Range {
            start: va(0x7000),
            bytes: 0x2_0000_0000
        })
    );
    assert!(matches!(
        command(|b| b.tlb_invalidate_range(0, TOP)),
        Command::TlbInvalidate(TlbScope::Range { .. })
    ));
}

#[test]
fn decodes_timestamp() {
    assert_eq!(
        command(|b| b.timestamp(0x4008)),
        Command::Timestamp { dst: va(0x4008) }
    );
}

#[test]
fn decodes_load_register_imm_to_every_gpr() {
    for index in 0..16 {
        let gpr = Gpr::new(index).unwrap();
        assert_eq!(
            command(|b| b.load_register_imm(gpr.offset(), 0x55)),
            Command::LoadRegisterImm {
                register: gpr,
                value: 0x55
            }
        );
    }
}

#[test]
fn decodes_store_register_of_every_readable_register() {
    let mut readable: Vec<ReadableRegister> = (0..16)
        .map(|n| ReadableRegister::Gpr(Gpr::new(n).unwrap()))
        .collect();
    readable.extend([
        ReadableRegister::CompletedFenceLo,
        ReadableRegister::CompletedFenceHi,
        ReadableRegister::TimestampLo,
        ReadableRegister::TimestampHi,
    ]);
    for register in readable {
        assert_eq!(
            command(|b| b.store_register(register.offset(), 0x5000)),
            Command::StoreRegister {
                register,
                dst: va(0x5000)
            }
        );
    }
}

#[test]
fn decodes_set_scanout_on_head_0() {
    assert_eq!(
        command(|b| b.set_scanout(0, 0x10_0000, 4096, 1024, 768)),
        Command::SetScanout(Scanout {
            surface: va(0x10_0000),
            pitch: 4096,
            width: 1024,
            height: 768
        })
    );
}

#[test]
fn every_guest_command_round_trips_through_encode() {
    let commands = [
        Command::Nop { dwords: 4 },
        Command::Copy {
            src: va(3),
            dst: va(TOP - 8),
            bytes: 8,
        },
        Command::Fence {
            dst: va(8),
            value: FenceValue::U64(u64::MAX),
            interrupt: true,
        },
        Command::TlbInvalidate(TlbScope::All),
        Command::StoreRegister {
            register: ReadableRegister::TimestampHi,
            dst: va(4),
        },
    ];
    for command in commands {
        let mut words = Vec::new();
        crate::encode::encode(&command, &mut words);
        assert_eq!(decode(&words), Ok((Decoded::Command(command), words.len())));
    }
}

// The privileged forms, recognised.

#[test]
fn physical_flag_is_recognised_on_every_memory_opcode() {
    let memory_opcodes = Opcode::ALL
        .into_iter()
        .filter(|opcode| opcode.flags() & FLAG_PHYSICAL != 0);
    let mut seen = 0;
    for opcode in memory_opcodes {
        let dwords = opcode.dwords().unwrap();
        let mut words = vec![0; dwords];
        words[0] = header(opcode, dwords as u8, FLAG_PHYSICAL);
        assert_eq!(
            decode(&words),
            Ok((
                Decoded::Privileged(Privileged::PhysicalAddressing { opcode }),
                dwords
            )),
            "{opcode}"
        );
        seen += 1;
    }
    assert_eq!(seen, 9);
}

#[test]
fn physical_addresses_are_not_checked_as_gpu_vas() {
    // A physical address may be anything; the form is refused as such.
    let form = privileged(|b| b.copy(u64::MAX, u64::MAX, 0).with_flags(FLAG_PHYSICAL));
    assert_eq!(form.code(), ChannelErrorCode::Privileged);
}

#[test]
fn privileged_batch_is_recognised() {
    let form = privileged(|b| b.batch_start(0x1000, 4).with_flags(FLAG_BATCH_PRIVILEGED));
    assert_eq!(form, Privileged::PrivilegedBatch);
}

#[test]
fn set_context_and_set_pt_root_are_recognised() {
    assert_eq!(
        privileged(|b| b.set_context(3)),
        Privileged::SetContext { context: 3 }
    );
    assert_eq!(
        privileged(|b| b.set_pt_root(0x1_2345_6001)),
        Privileged::SetPtRoot {
            root: 0x1_2345_6001
        }
    );
    assert_eq!(one(|b| b.set_context(3))[0], 0x0000_020e);
    assert_eq!(one(|b| b.set_pt_root(0))[0], 0x0000_030f);
}

#[test]
fn registers_outside_the_whitelist_are_recognised() {
    assert_eq!(
        privileged(|b| b.load_register_imm(0x104, 0x1000)),
        Privileged::LoadRegister {
            register: EngineRegister::PtRootLo,
            value: 0x1000
        }
    );
    // Readable, but not writable.
    assert_eq!(
        privileged(|b| b.load_register_imm(0x48, 0)).code(),
        ChannelErrorCode::RegisterNotAllowed
    );
    assert_eq!(
        privileged(|b| b.store_register(0x1204, 0x1000)),
        Privileged::StoreRegister {
            register: EngineRegister::Display {
                head: 2,
                register: DisplayRegister::SurfaceHi
            }
        }
    );
    for offset in [0x2, 0x50, 0x200, 0xffff_fffc] {
        assert_eq!(
            privileged(|b| b.load_register_imm(offset, 0)).code(),
            ChannelErrorCode::RegisterNotAllowed,
            "{offset:#x}"
        );
    }
}

#[test]
fn other_display_heads_are_recognised() {
    for head in [1, 3, 4, u32::MAX] {
        let form = privileged(|b| b.set_scanout(head, 0x1000, 4096, 1024, 768));
        assert_eq!(form, Privileged::OtherHead { head });
        assert_eq!(form.code(), ChannelErrorCode::DisplayHead);
    }
}

// Header refusals.

#[test]
fn zero_dword_is_an_unknown_opcode() {
    assert_eq!(
        decode(&[0; 4]),
        Err(DecodeError::UnknownOpcode { opcode: 0 })
    );
}

#[test]
fn unassigned_opcodes_are_unknown() {
    for opcode in 0x10..=0xff {
        let words = [header(Opcode::Nop, 1, 0) & !0xff | opcode];
        assert_eq!(
            decode(&words),
            Err(DecodeError::UnknownOpcode {
                opcode: opcode as u8
            })
        );
    }
}

#[test]
fn wrong_length_is_bad_length_for_every_opcode() {
    for opcode in Opcode::ALL {
        let Some(dwords) = opcode.dwords() else {
            continue;
        };
        for wrong in [0, dwords - 1, dwords + 1, 255] {
            let words = vec![header(opcode, wrong as u8, 0); 256];
            assert_eq!(
                decode(&words),
                Err(DecodeError::BadLength {
                    opcode,
                    dwords: wrong
                }),
                "{opcode} of {wrong}"
            );
        }
    }
}

#[test]
fn nop_of_length_0_is_bad_length() {
    assert_eq!(
        decode(&[header(Opcode::Nop, 0, 0)]),
        Err(DecodeError::BadLength {
            opcode: Opcode::Nop,
            dwords: 0
        })
    );
}

#[test]
fn command_past_the_end_is_truncated() {
    let words = one(|b| b.copy(0, 0, 4));
    assert_eq!(
        decode(&words[..5]),
        Err(DecodeError::Truncated {
            dwords: 6,
            available: 5
        })
    );
    assert_eq!(
        decode(&[header(Opcode::Nop, 9, 0)])
            .unwrap_err()
            .code()
            .value(),
        2
    );
    assert_eq!(
        decode(&[]),
        Err(DecodeError::Truncated {
            dwords: 1,
            available: 0
        })
    );
}

#[test]
fn reserved_header_bits_are_bad_field() {
    for opcode in Opcode::ALL {
        let dwords = opcode.dwords().unwrap_or(1);
        let undefined = HEADER_RESERVED_MASK | (HEADER_FLAGS_MASK & !opcode.flags());
        for bit in (0..32)
            .map(|bit| 1u32 << bit)
            .filter(|bit| undefined & bit != 0)
        {
            let mut words = vec![0; dwords];
            words[0] = header(opcode, dwords as u8, bit);
            assert_eq!(
                decode(&words),
                Err(DecodeError::BadField {
                    opcode,
                    field: FieldError::ReservedHeaderBits { bits: bit }
                }),
                "{opcode} bit {bit:#x}"
            );
        }
    }
}

#[test]
fn checks_run_in_the_documented_order() {
    // Length before reserved bits, reserved bits before privilege,
    // privilege before fields.
    let words = [
        header(Opcode::Copy, 5, 1 << 24 | FLAG_PHYSICAL),
        0,
        0,
        0,
        0,
        0,
    ];
    assert_eq!(
        decode(&words).unwrap_err().code(),
        ChannelErrorCode::BadLength
    );
    let words = [header(Opcode::SetContext, 2, FLAG_PHYSICAL), 0];
    assert_eq!(
        decode(&words).unwrap_err().code(),
        ChannelErrorCode::BadField
    );
    let form = privileged(|b| b.store_register(0x104, TOP).with_flags(FLAG_PHYSICAL));
    assert_eq!(
        form,
        Privileged::PhysicalAddressing {
            opcode: Opcode::StoreRegister
        }
    );
    let form = privileged(|b| b.store_register(0x104, TOP));
    assert_eq!(form.code(), ChannelErrorCode::RegisterNotAllowed);
    let form = privileged(|b| b.set_scanout(1, TOP, 0, 0, 0));
    assert_eq!(form.code(), ChannelErrorCode::DisplayHead);
}

// Field refusals.

#[test]
fn va_at_2_pow_48_is_bad_field() {
    assert_eq!(
        field(|b| b.copy(TOP, 0, 1)),
        FieldError::VaOutOfRange {
            dword: 1,
            value: TOP
        }
    );
    assert_eq!(
        field(|b| b.copy(0, u64::MAX, 1)),
        FieldError::VaOutOfRange {
            dword: 3,
            value: u64::MAX
        }
    );
    assert_eq!(
        field(|b| b.store_register(0, 1 << 63)),
        FieldError::VaOutOfRange {
            dword: 2,
            value: 1 << 63
        }
    );
    let builds: [fn(&mut StreamBuilder) -> &mut StreamBuilder; 8] = [
        |b| b.fill(TOP, 4, 0),
        |b| b.fence32(TOP, 0, false),
        |b| b.semaphore_wait(TOP, CompareOp::Eq, 0),
        |b| b.batch_start(TOP, 4),
        |b| b.timestamp(TOP),
        |b| b.tlb_invalidate_range(TOP, 4096),
        |b| b.set_scanout(0, TOP, 4, 1, 1),
        |b| b.blit2d(0, 4, TOP, 4, 1, 1),
    ];
    for build in builds {
        assert!(matches!(field(build), FieldError::VaOutOfRange { .. }));
    }
}

#[test]
fn copy_of_zero_bytes_or_past_2_pow_48_is_bad_field() {
    assert!(matches!(
        field(|b| b.copy(0, 0, 0)),
        FieldError::OutOfBounds { dword: 5, .. }
    ));
    assert_eq!(
        field(|b| b.copy(0, TOP - 1, 2)),
        FieldError::PastAddressSpace {
            dword: 3,
            start: va(TOP - 1),
            bytes: 2
        }
    );
    assert!(matches!(
        field(|b| b.copy(TOP - 4, 0, 5)),
        FieldError::PastAddressSpace { dword: 1, .. }
    ));
}

#[test]
fn fill_must_be_dword_aligned_and_non_empty() {
    assert_eq!(
        field(|b| b.fill(0x1002, 4, 0)),
        FieldError::Misaligned {
            dword: 1,
            value: 0x1002,
            align: 4
        }
    );
    assert_eq!(
        field(|b| b.fill(0x1000, 6, 0)),
        FieldError::Misaligned {
            dword: 3,
            value: 6,
            align: 4
        }
    );
    assert!(matches!(
        field(|b| b.fill(0x1000, 0, 0)),
        FieldError::OutOfBounds { .. }
    ));
    assert!(matches!(
        field(|b| b.fill(TOP - 4, 8, 0)),
        FieldError::PastAddressSpace { .. }
    ));
}

#[test]
fn blit2d_sizes_pitches_and_footprints_are_checked() {
    assert!(matches!(
        field(|b| b.blit2d(0, 4, 0, 4, 0, 1)),
        FieldError::OutOfBounds { dword: 7, .. }
    ));
    assert!(matches!(
        field(|b| b.blit2d(0, 1 << 20, 0, 1 << 20, 1, 16385)),
        FieldError::OutOfBounds { dword: 8, .. }
    ));
    assert_eq!(
        field(|b| b.blit2d(0, 4092, 0, 4096, 1024, 1)),
        FieldError::PitchTooSmall {
            dword: 3,
            pitch: 4092,
            width: 1024
        }
    );
    assert!(matches!(
        field(|b| b.blit2d(0, 4096, 0, 4098, 1024, 1)),
        FieldError::Misaligned { dword: 6, .. }
    ));
    assert!(matches!(
        field(|b| b.blit2d(2, 4096, 0, 4096, 1024, 1)),
        FieldError::Misaligned { dword: 1, .. }
    ));
    // The last row ends exactly at 2^48: fine; one pixel more is not.
    let src = TOP - 4096 * 9 - 4096;
    assert!(matches!(
        command(|b| b.blit2d(src, 4096, 0, 4096, 1024, 10)),
        Command::Blit2d(_)
    ));
    assert!(matches!(
        field(|b| b.blit2d(src + 4, 4096, 0, 4096, 1024, 10)),
        FieldError::PastAddressSpace { dword: 1, .. }
    ));
}

#[test]
fn fence_value_and_alignment_follow_its_width() {
    let words = [header(Opcode::Fence, 5, 0), 0x1000, 0, 1, 2];
    assert_eq!(
        decode(&words),
        Err(DecodeError::BadField {
            opcode: Opcode::Fence,
            field: FieldError::ReservedBits { dword: 4, bits: 2 }
        })
    );
    assert!(matches!(
        field(|b| b.fence32(0x1002, 0, false)),
        FieldError::Misaligned { .. }
    ));
    assert!(matches!(
        field(|b| b.fence64(0x1004, 0, false)),
        FieldError::Misaligned { .. }
    ));
}

#[test]
fn compare_ops_6_and_7_are_bad_field() {
    for op in [6, 7] {
        let flags = op << FLAG_SEMAPHORE_COMPARE_SHIFT;
        assert_eq!(
            field(|b| b.semaphore_wait(0x1000, CompareOp::Eq, 0).with_flags(flags)),
            FieldError::CompareOp { value: op }
        );
    }
    assert!(matches!(
        field(|b| b.semaphore_wait(0x1001, CompareOp::Eq, 0)),
        FieldError::Misaligned { .. }
    ));
}

#[test]
fn batch_start_must_name_whole_dwords() {
    assert!(matches!(
        field(|b| b.batch_start(0x1000, 0)),
        FieldError::OutOfBounds { .. }
    ));
    assert!(matches!(
        field(|b| b.batch_start(0x1000, 6)),
        FieldError::Misaligned { dword: 3, .. }
    ));
    assert!(matches!(
        field(|b| b.batch_start(0x1002, 4)),
        FieldError::Misaligned { dword: 1, .. }
    ));
    assert!(matches!(
        field(|b| b.batch_start(TOP - 4, 8)),
        FieldError::PastAddressSpace { .. }
    ));
}

#[test]
fn tlb_invalidate_ranges_are_page_granular() {
    assert!(matches!(
        field(|b| b.tlb_invalidate_range(0x1800, 4096)),
        FieldError::Misaligned { dword: 1, .. }
    ));
    assert!(matches!(
        field(|b| b.tlb_invalidate_range(0x1000, 0x1800)),
        FieldError::Misaligned { dword: 3, .. }
    ));
    assert!(matches!(
        field(|b| b.tlb_invalidate_range(0x1000, 0)),
        FieldError::OutOfBounds { .. }
    ));
    assert!(matches!(
        field(|b| b.tlb_invalidate_range(TOP - 4096, 8192)),
        FieldError::PastAddressSpace { .. }
    ));
    // With ALL, the range dwords are reserved.
    let words = [
        header(Opcode::TlbInvalidate, 5, FLAG_TLB_ALL),
        0,
        0,
        0x1000,
        0,
    ];
    assert_eq!(
        decode(&words).unwrap_err(),
        DecodeError::BadField {
            opcode: Opcode::TlbInvalidate,
            field: FieldError::ReservedBits {
                dword: 3,
                bits: 0x1000
            }
        }
    );
}

#[test]
fn timestamp_must_be_8_byte_aligned() {
    assert!(matches!(
        field(|b| b.timestamp(0x1004)),
        FieldError::Misaligned { align: 8, .. }
    ));
}

#[test]
fn scanout_surfaces_are_checked() {
    assert!(matches!(
        field(|b| b.set_scanout(0, 0x1100, 4096, 1024, 768)),
        FieldError::Misaligned {
            dword: 2,
            align: 4096,
            ..
        }
    ));
    assert!(matches!(
        field(|b| b.set_scanout(0, 0x1000, 4096, 16385, 768)),
        FieldError::OutOfBounds { dword: 5, .. }
    ));
    assert!(matches!(
        field(|b| b.set_scanout(0, 0x1000, 4000, 1024, 768)),
        FieldError::PitchTooSmall { dword: 4, .. }
    ));
    assert!(matches!(
        field(|b| b.set_scanout(0, TOP - 4096, 4096, 1024, 2)),
        FieldError::PastAddressSpace { .. }
    ));
}

#[test]
fn errors_say_what_and_where() {
    let error = decode(&one(|b| b.fill(0x1002, 4, 0))).unwrap_err();
    assert_eq!(
        error.to_string(),
        "FILL: 0x1002 in dword 1 is not a multiple of 4"
    );
    assert_eq!(error.code(), ChannelErrorCode::BadField);
}
