//! The GPU MMU registers: page-table roots, invalidation, faults and the
//! translate port, through the device.

use super::*;
use crate::bar2::control::*;
use crate::bar2::layout::*;
use crate::bar2::mmu::*;
use crate::{Fault, FaultReason, MmuRequest, Translation};

/// The test device has 7 channels.
const CHANNELS: u32 = 7;

fn mmu_request(effects: Effects) -> Option<MmuRequest> {
    assert_eq!(effects.vectors, 0, "MMU commands raise nothing");
    assert_eq!(effects.dma, None);
    effects.mmu
}

fn fault(channel: u32, va: u64, write: bool, reason: FaultReason) -> Fault {
    Fault {
        channel,
        va,
        write,
        reason,
    }
}

fn program_inv(dev: &mut VgpuDevice, va: u64, size: u64) {
    dev.bar2_write(CTRL_INV_VA_LO, 8, va);
    dev.bar2_write(CTRL_INV_SIZE_LO, 8, size);
}

#[test]
fn pt_root_high_half_write_commits_the_root() {
    let mut dev = device();
    let lo = pt_root_offset(3);
    assert_eq!(
        mmu_request(dev.bar2_write(lo, 4, 0x0012_3005)),
        None,
        "LO alone is stored"
    );
    let effects = dev.bar2_write(lo + 4, 4, 0x0000_00ab);
    assert_eq!(
        mmu_request(effects),
        Some(MmuRequest::SetRoot {
            channel: 3,
            root: 0x0000_00ab_0012_3005
        })
    );
    assert_eq!(dev.bar2_read(lo, 8), 0x0000_00ab_0012_3005);
    assert_eq!(dev.page_table_root(3), Some(0x0000_00ab_0012_3005));
}

#[test]
fn eight_byte_pt_root_write_makes_one_set_root() {
    let mut dev = device();
    let effects = dev.bar2_write(pt_root_offset(6), 8, 0x1_0000_2001);
    assert_eq!(
        mmu_request(effects),
        Some(MmuRequest::SetRoot {
            channel: 6,
            root: 0x1_0000_2001
        })
    );
}

#[test]
fn pt_root_byte_writes_keep_the_other_bytes() {
    let mut dev = device();
    dev.bar2_write(pt_root_offset(0), 8, 0x1122_3344_5566_7788);
    dev.bar2_write(pt_root_offset(0) + 1, 1, 0xaa);
    let effects = dev.bar2_write(pt_root_offset(0) + 6, 2, 0xbbcc);
    assert_eq!(
        mmu_request(effects),
        Some(MmuRequest::SetRoot {
            channel: 0,
            root: 0xbbcc_3344_5566_aa88
        })
    );
}

#[test]
fn pt_root_is_stored_as_written_for_every_channel() {
    let mut dev = device();
    for channel in 0..CHANNELS {
        dev.bar2_write(pt_root_offset(channel), 8, u64::MAX - u64::from(channel));
    }
    for channel in 0..CHANNELS {
        assert_eq!(
            dev.bar2_read(pt_root_offset(channel), 8),
            u64::MAX - u64::from(channel),
            "reserved bits too: the owner judges the entry"
        );
    }
}

#[test]
fn pt_root_of_a_missing_channel_reads_zero_and_ignores_writes() {
    let mut dev = device();
    for channel in [CHANNELS, 20, 63] {
        let effects = dev.bar2_write(pt_root_offset(channel), 8, 0xffff_f001);
        assert!(effects.is_empty(), "channel {channel}");
        assert_eq!(dev.bar2_read(pt_root_offset(channel), 8), 0);
        assert_eq!(dev.page_table_root(channel), None);
    }
    assert_eq!(
        dev.bar2_read(CTRL_ERROR_CODE, 4),
        0,
        "reserved, not an error"
    );
}

#[test]
fn the_rest_of_each_channel_slot_is_reserved() {
    let mut dev = device();
    for offset in [0x1108, 0x1110, 0x1118, 0x1128, 0x18f8] {
        assert!(dev.bar2_write(offset, 8, u64::MAX).is_empty());
        assert_eq!(dev.bar2_read(offset, 8), 0, "{offset:#x}");
    }
}

#[test]
fn inv_range_registers_read_back() {
    let mut dev = device();
    program_inv(&mut dev, 0x0000_8000_1234_5000, 0x0000_0001_0000_3000);
    assert_eq!(dev.bar2_read(CTRL_INV_VA_LO, 4), 0x1234_5000);
    assert_eq!(dev.bar2_read(CTRL_INV_VA_HI, 4), 0x8000);
    assert_eq!(dev.bar2_read(CTRL_INV_SIZE_LO, 8), 0x1_0000_3000);
    dev.bar2_write(CTRL_INV_VA_LO + 2, 2, 0xffff);
    assert_eq!(dev.bar2_read(CTRL_INV_VA_LO, 8), 0x0000_8000_ffff_5000);
}

#[test]
fn inv_control_range_asks_to_invalidate_the_range() {
    let mut dev = device();
    program_inv(&mut dev, 0x7f_ffe0_0000, 0x20_1000);
    let effects = dev.bar2_write(CTRL_INV_CONTROL, 4, u64::from(INV_CONTROL_RANGE | 5));
    assert_eq!(
        mmu_request(effects),
        Some(MmuRequest::Invalidate {
            channel: 5,
            va: 0x7f_ffe0_0000,
            size: 0x20_1000
        })
    );
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 0);
}

#[test]
fn inv_control_all_asks_to_invalidate_the_channel_and_wins_over_range() {
    let mut dev = device();
    // The range is bad, but ALL does not look at it.
    program_inv(&mut dev, 0x123, 0);
    for command in [INV_CONTROL_ALL | 6, INV_CONTROL_ALL | INV_CONTROL_RANGE | 6] {
        let effects = dev.bar2_write(CTRL_INV_CONTROL, 4, u64::from(command));
        assert_eq!(
            mmu_request(effects),
            Some(MmuRequest::InvalidateAll { channel: 6 })
        );
    }
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 0);
}

#[test]
fn inv_control_without_range_or_all_does_nothing() {
    let mut dev = device();
    program_inv(&mut dev, 0x1000, 0x1000);
    assert!(dev.bar2_write(CTRL_INV_CONTROL, 4, 2).is_empty());
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 0);
}

#[test]
fn inv_control_with_a_missing_channel_records_error_8() {
    let mut dev = device();
    program_inv(&mut dev, 0x1000, 0x1000);
    dev.bar2_write(CTRL_IRQ_MASK, 4, u64::from(IRQ_ERROR));
    let command = INV_CONTROL_RANGE | CHANNELS;
    let effects = dev.bar2_write(CTRL_INV_CONTROL, 4, u64::from(command));
    assert_eq!(effects, Effects::vector(0), "no request, ERROR raised");
    assert_eq!(
        dev.bar2_read(CTRL_ERROR_CODE, 4),
        DeviceErrorCode::BadChannel as u64
    );
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 8);
    assert_eq!(dev.bar2_read(CTRL_ERROR_INFO, 4), u64::from(command));
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), u64::from(IRQ_ERROR));
}

#[test]
fn inv_control_with_a_missing_channel_and_neither_bit_records_error_8() {
    let mut dev = device();
    let effects = dev.bar2_write(CTRL_INV_CONTROL, 4, u64::from(CHANNELS));
    assert!(mmu_request(effects).is_none());
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 8);
    assert_eq!(dev.bar2_read(CTRL_ERROR_INFO, 4), u64::from(CHANNELS));
}

#[test]
fn inv_control_channel_is_bits_5_to_0_only() {
    let mut dev = device();
    // Bits 7:6 and 31:10 are not part of the channel.
    let command = 0xffff_fc00 | 0xc0 | INV_CONTROL_ALL | 2;
    let effects = dev.bar2_write(CTRL_INV_CONTROL, 4, u64::from(command));
    assert_eq!(
        mmu_request(effects),
        Some(MmuRequest::InvalidateAll { channel: 2 })
    );
}

#[test]
fn inv_control_range_that_is_not_whole_pages_of_the_space_records_error_9() {
    let bad = [
        (0x1800, 0x1000),
        (0x1000, 0),
        (0x1000, 0x1800),
        ((1 << 48) - 0x1000, 0x2000),
        (u64::MAX - 0xfff, 0x1000),
        (0x1000, u64::MAX - 0xfff),
    ];
    for (va, size) in bad {
        let mut dev = device();
        program_inv(&mut dev, va, size);
        let command = INV_CONTROL_RANGE | 1;
        let effects = dev.bar2_write(CTRL_INV_CONTROL, 4, u64::from(command));
        assert_eq!(effects, Effects::NONE, "{va:#x}+{size:#x}: ERROR is masked");
        assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 9, "{va:#x}+{size:#x}");
        assert_eq!(
            dev.bar2_read(CTRL_ERROR_CODE, 4),
            DeviceErrorCode::BadRange as u64
        );
        assert_eq!(dev.bar2_read(CTRL_ERROR_INFO, 4), u64::from(command));
    }
    let mut dev = device();
    program_inv(&mut dev, (1 << 48) - 0x1000, 0x1000);
    let effects = dev.bar2_write(CTRL_INV_CONTROL, 4, u64::from(INV_CONTROL_RANGE));
    assert!(effects.mmu.is_some(), "the last page of the space");
}

#[test]
fn mmu_commands_are_write_only_and_results_read_only() {
    let mut dev = device();
    dev.bar2_write(CTRL_INV_CONTROL, 4, u64::from(INV_CONTROL_ALL));
    dev.bar2_write(CTRL_XLATE_CONTROL, 4, 0);
    assert_eq!(dev.bar2_read(CTRL_INV_CONTROL, 4), 0);
    assert_eq!(dev.bar2_read(CTRL_XLATE_CONTROL, 4), 0);
    for reg in [
        CTRL_FAULT_VA_LO,
        CTRL_FAULT_VA_HI,
        CTRL_FAULT_INFO,
        CTRL_XLATE_STATUS,
        CTRL_XLATE_RESULT_LO,
        CTRL_XLATE_RESULT_HI,
        CTRL_XLATE_TARGET,
    ] {
        assert!(dev.bar2_write(reg, 4, u64::MAX).is_empty());
        assert_eq!(dev.bar2_read(reg, 4), 0, "{reg:#x}");
    }
}

#[test]
fn recorded_fault_sets_the_fault_registers_and_irq_status_fault() {
    let mut dev = device();
    let effects = dev.record_fault(fault(4, 0x0000_7fff_1234_5678, true, FaultReason::ReadOnly));
    assert_eq!(effects, Effects::NONE, "FAULT is masked");
    assert_eq!(dev.bar2_read(CTRL_FAULT_VA_LO, 8), 0x0000_7fff_1234_5678);
    assert_eq!(dev.bar2_read(CTRL_FAULT_INFO, 4), 0x0005_0104);
    assert_eq!(dev.bar2_read(CTRL_FAULT_COUNT, 4), 1);
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), u64::from(IRQ_FAULT));
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), 0b1000);
    assert_eq!(
        dev.bar2_read(CTRL_ERROR_CODE, 4),
        0,
        "a fault is not an error"
    );
}

#[test]
fn fault_info_holds_channel_write_and_reason() {
    let reasons = [
        (FaultReason::NotPresent, 1),
        (FaultReason::InvalidEntry, 2),
        (FaultReason::OutsideVram, 3),
        (FaultReason::NotMapped, 4),
        (FaultReason::ReadOnly, 5),
        (FaultReason::WalkLimit, 6),
    ];
    for (reason, code) in reasons {
        let mut dev = device();
        dev.record_fault(fault(6, 0, false, reason));
        assert_eq!(dev.bar2_read(CTRL_FAULT_INFO, 4), (code << 16) | 6);
    }
    let mut dev = device();
    dev.record_fault(fault(0, 0, true, FaultReason::NotPresent));
    assert_eq!(dev.bar2_read(CTRL_FAULT_INFO, 4), 0x0001_0100);
}

#[test]
fn first_unacknowledged_fault_wins_and_fault_count_counts_all() {
    let mut dev = device();
    dev.record_fault(fault(1, 0x1000, false, FaultReason::NotPresent));
    dev.record_fault(fault(2, 0x2000, true, FaultReason::ReadOnly));
    dev.record_fault(fault(3, 0x3000, false, FaultReason::NotMapped));
    assert_eq!(dev.bar2_read(CTRL_FAULT_VA_LO, 8), 0x1000);
    assert_eq!(dev.bar2_read(CTRL_FAULT_INFO, 4), 0x0001_0001);
    assert_eq!(dev.bar2_read(CTRL_FAULT_COUNT, 4), 3);
}

#[test]
fn writing_fault_count_acknowledges_the_fault_and_keeps_counting() {
    let mut dev = device();
    dev.record_fault(fault(1, 0x1000, false, FaultReason::NotPresent));
    dev.record_fault(fault(2, 0x2000, true, FaultReason::ReadOnly));
    dev.bar2_write(CTRL_FAULT_COUNT, 1, 0);
    assert_eq!(dev.bar2_read(CTRL_FAULT_VA_LO, 8), 0, "cleared");
    assert_eq!(dev.bar2_read(CTRL_FAULT_INFO, 4), 0);
    assert_eq!(dev.bar2_read(CTRL_FAULT_COUNT, 4), 2, "faults since reset");
    assert_eq!(
        dev.bar2_read(CTRL_IRQ_STATUS, 4),
        u64::from(IRQ_FAULT),
        "status is W1C, separately"
    );
    dev.record_fault(fault(2, 0x2000, true, FaultReason::ReadOnly));
    assert_eq!(dev.bar2_read(CTRL_FAULT_VA_LO, 8), 0x2000, "the next one");
    assert_eq!(dev.bar2_read(CTRL_FAULT_COUNT, 4), 3);
}

#[test]
fn fault_raises_vector_0_only_while_irq_mask_fault_is_set() {
    let mut dev = device();
    dev.bar2_write(CTRL_IRQ_MASK, 4, u64::from(IRQ_ALL & !IRQ_FAULT));
    let f = fault(0, 0, false, FaultReason::NotPresent);
    assert_eq!(dev.record_fault(f), Effects::NONE);
    assert_eq!(
        dev.bar2_write(CTRL_IRQ_MASK, 4, u64::from(IRQ_ALL)),
        Effects::vector(0),
        "unmasking a pending FAULT delivers it"
    );
    assert_eq!(dev.record_fault(f), Effects::vector(0));
    dev.bar2_write(CTRL_IRQ_STATUS, 4, u64::from(IRQ_FAULT));
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), 0);
}

#[test]
fn xlate_va_reads_back() {
    let mut dev = device();
    dev.bar2_write(CTRL_XLATE_VA_LO, 8, 0x0000_1234_5678_9abc);
    assert_eq!(dev.bar2_read(CTRL_XLATE_VA_LO, 4), 0x5678_9abc);
    assert_eq!(dev.bar2_read(CTRL_XLATE_VA_HI, 4), 0x1234);
}

#[test]
fn xlate_control_asks_to_translate_for_the_channel_and_access() {
    let mut dev = device();
    dev.bar2_write(CTRL_XLATE_VA_LO, 8, 0x40_0123);
    let read = dev.bar2_write(CTRL_XLATE_CONTROL, 4, 6);
    assert_eq!(
        mmu_request(read),
        Some(MmuRequest::Translate {
            channel: 6,
            va: 0x40_0123,
            write: false
        })
    );
    let write = dev.bar2_write(CTRL_XLATE_CONTROL, 4, u64::from(XLATE_CONTROL_WRITE));
    assert_eq!(
        mmu_request(write),
        Some(MmuRequest::Translate {
            channel: 0,
            va: 0x40_0123,
            write: true
        })
    );
}

#[test]
fn xlate_control_with_a_missing_channel_records_error_8_and_translates_nothing() {
    let mut dev = device();
    let effects = dev.bar2_write(CTRL_XLATE_CONTROL, 4, 0x13f);
    assert_eq!(effects, Effects::NONE);
    assert_eq!(dev.bar2_read(CTRL_ERROR_CODE, 4), 8);
    assert_eq!(dev.bar2_read(CTRL_ERROR_INFO, 4), 0x13f);
    let late = dev.complete_translate(Err(FaultReason::NotPresent));
    assert_eq!(late, Effects::NONE, "nothing was outstanding");
    assert_eq!(dev.bar2_read(CTRL_FAULT_COUNT, 4), 0);
}

#[test]
fn xlate_control_with_a_missing_channel_leaves_the_last_answer() {
    let mut dev = device();
    dev.bar2_write(CTRL_XLATE_CONTROL, 4, 1);
    let _ = dev.complete_translate(Ok(Translation {
        address: 0x0000_0004_0000_5abc,
        system: true,
    }));
    dev.bar2_write(CTRL_XLATE_VA_LO, 8, 0x7000);
    dev.bar2_write(CTRL_XLATE_CONTROL, 4, u64::from(CHANNELS));
    assert_eq!(dev.bar2_read(CTRL_XLATE_STATUS, 4), 0);
    assert_eq!(
        dev.bar2_read(CTRL_XLATE_RESULT_LO, 8),
        0x0000_0004_0000_5abc
    );
    assert_eq!(dev.bar2_read(CTRL_XLATE_TARGET, 4), 1);
}

#[test]
fn completed_translation_sets_status_result_and_target() {
    let mut dev = device();
    dev.bar2_write(CTRL_IRQ_MASK, 4, u64::from(IRQ_ALL));
    dev.bar2_write(CTRL_XLATE_CONTROL, 4, 1);
    let done = dev.complete_translate(Ok(Translation {
        address: 0x0000_0008_0000_1234,
        system: true,
    }));
    assert_eq!(done, Effects::NONE, "success raises nothing");
    assert_eq!(dev.bar2_read(CTRL_XLATE_STATUS, 4), 0);
    assert_eq!(
        dev.bar2_read(CTRL_XLATE_RESULT_LO, 8),
        0x0000_0008_0000_1234
    );
    assert_eq!(dev.bar2_read(CTRL_XLATE_TARGET, 4), 1);

    dev.bar2_write(CTRL_XLATE_CONTROL, 4, 1);
    let _ = dev.complete_translate(Ok(Translation {
        address: 0x5000,
        system: false,
    }));
    assert_eq!(dev.bar2_read(CTRL_XLATE_RESULT_LO, 8), 0x5000);
    assert_eq!(dev.bar2_read(CTRL_XLATE_TARGET, 4), 0, "VRAM");
}

#[test]
fn faulted_translation_sets_status_and_records_the_fault() {
    let mut dev = device();
    dev.bar2_write(CTRL_XLATE_CONTROL, 4, 0);
    let _ = dev.complete_translate(Ok(Translation {
        address: 0x5000,
        system: true,
    }));
    dev.bar2_write(CTRL_IRQ_MASK, 4, u64::from(IRQ_FAULT));
    dev.bar2_write(CTRL_XLATE_VA_LO, 8, 0x1_2000_0040);
    dev.bar2_write(CTRL_XLATE_CONTROL, 4, u64::from(XLATE_CONTROL_WRITE | 2));
    let effects = dev.complete_translate(Err(FaultReason::OutsideVram));
    assert_eq!(effects, Effects::vector(0));
    assert_eq!(dev.bar2_read(CTRL_XLATE_STATUS, 4), 3);
    assert_eq!(dev.bar2_read(CTRL_XLATE_RESULT_LO, 8), 0);
    assert_eq!(dev.bar2_read(CTRL_XLATE_TARGET, 4), 0);
    assert_eq!(dev.bar2_read(CTRL_FAULT_VA_LO, 8), 0x1_2000_0040);
    assert_eq!(dev.bar2_read(CTRL_FAULT_INFO, 4), 0x0003_0102);
    assert_eq!(dev.bar2_read(CTRL_FAULT_COUNT, 4), 1);
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), u64::from(IRQ_FAULT));
}

#[test]
fn completion_without_a_pending_translation_is_ignored() {
    let mut dev = device();
    let ok = Translation {
        address: 0x1000,
        system: false,
    };
    assert_eq!(dev.complete_translate(Ok(ok)), Effects::NONE);
    assert_eq!(dev.bar2_read(CTRL_XLATE_RESULT_LO, 8), 0);
    dev.bar2_write(CTRL_XLATE_CONTROL, 4, 0);
    let _ = dev.complete_translate(Ok(ok));
    assert_eq!(
        dev.complete_translate(Err(FaultReason::NotPresent)),
        Effects::NONE,
        "completed once only"
    );
    assert_eq!(dev.bar2_read(CTRL_XLATE_STATUS, 4), 0);
    assert_eq!(dev.bar2_read(CTRL_FAULT_COUNT, 4), 0);
}

#[test]
fn reset_clears_the_mmu_registers_and_drops_a_pending_translation() {
    let mut dev = device();
    dev.bar2_write(pt_root_offset(1), 8, 0x1000_1001);
    program_inv(&mut dev, 0x1000, 0x1000);
    dev.record_fault(fault(1, 0x1000, false, FaultReason::NotPresent));
    dev.bar2_write(CTRL_XLATE_VA_LO, 8, 0x2000);
    dev.bar2_write(CTRL_XLATE_CONTROL, 4, 1);
    dev.reset();
    assert_eq!(
        dev.complete_translate(Err(FaultReason::NotMapped)),
        Effects::NONE
    );
    for reg in (CTRL_INV_VA_LO..=CTRL_XLATE_TARGET).step_by(4) {
        assert_eq!(dev.bar2_read(reg, 4), 0, "{reg:#x}");
    }
    assert_eq!(dev.page_table_root(1), Some(0));
    assert_eq!(dev.bar2_read(CTRL_IRQ_STATUS, 4), 0);
}
