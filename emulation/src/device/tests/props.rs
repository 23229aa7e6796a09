//! Whole-device properties: reset, and random accesses from a hostile guest
//! (with the owner's events), checked by the fuzz target's harness.

use proptest::prelude::*;

use super::*;
use crate::bar2::layout::*;
use crate::fuzzing::{self, FAULT_REASONS, Harness, Op};

/// Every byte of config space and BAR2, read the way a guest can.
pub(super) fn snapshot(dev: &mut VgpuDevice) -> Vec<u8> {
    let mut bytes = vec![0u8; 4096];
    dev.read(RegionIndex::CONFIG, 0, &mut bytes).unwrap();
    for offset in (0..BAR2_SIZE).step_by(8) {
        bytes.extend_from_slice(&dev.bar2_read(offset, 8).to_le_bytes());
    }
    bytes
}

/// Dirties every register a guest or the host can change.
fn dirty(dev: &mut VgpuDevice) {
    dev.write(RegionIndex::CONFIG, 0, &[0xff; 256]).unwrap();
    dev.cfg_write(0x44, 2, 3);
    dev.set_intx_asserted(true);
    for offset in (0..BAR2_SIZE).step_by(8) {
        dev.bar2_write(offset, 8, 0x0000_0004_0000_0001);
    }
    for (index, value) in [(1, 640), (2, 480), (3, 32), (4, 0x41), (6, 640), (9, 3)] {
        dev.bar2_write(dispi_offset(index), 2, value);
    }
    dev.bar2_write(QEXT_BYTE_ORDER_OFFSET, 4, 0xbebe_bebe);
    dev.bar2_write(CTRL_DMA_IOVA_LO, 8, 0x1000);
    dev.bar2_write(CTRL_DMA_LENGTH, 4, 16);
    dev.bar2_write(CTRL_DMA_CONTROL, 4, 1);
    dev.complete_dma(Err(crate::DmaFault::ReadOnly));
    // The loop above wrote every PT_ROOT and the INV and XLATE registers,
    // and started a translation.
    let _ = dev.complete_translate(Ok(crate::Translation {
        address: 0x1234_5678_9000,
        system: true,
    }));
    dev.bar2_write(CTRL_XLATE_CONTROL, 4, 2);
    let _ = dev.complete_translate(Err(crate::FaultReason::WalkLimit));
    let _ = dev.record_fault(crate::Fault {
        channel: 3,
        va: 0xdead_b000,
        write: true,
        reason: crate::FaultReason::ReadOnly,
    });
}

#[test]
fn reset_returns_a_dirtied_device_to_its_reset_state() {
    let mut fresh = device();
    let mut dev = device();
    dirty(&mut dev);
    assert!(dev.scanout().is_some());
    let dirty_snapshot = snapshot(&mut dev);
    let fresh_snapshot = snapshot(&mut fresh);
    let changed = dirty_snapshot
        .iter()
        .zip(&fresh_snapshot)
        .filter(|(a, b)| a != b)
        .count();
    assert!(changed > 64, "dirtying changed only {changed} bytes");
    dev.reset();
    let after = snapshot(&mut dev);
    // Config space is the first 4 KiB of the snapshot, BAR2 the rest.
    let first_difference = after.iter().zip(&fresh_snapshot).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "snapshot offset differs after reset"
    );
    assert_eq!(dev.scanout(), None);
    assert!(!dev.intx_disabled());
}

/// Read-only places a guest must never be able to change: (region,
/// offset, length, mask of the bits that are read-only).
const READ_ONLY: &[(RegionIndex, u64, usize, u64)] = &[
    (RegionIndex::CONFIG, 0x00, 4, u64::MAX >> 32),
    (RegionIndex::CONFIG, 0x06, 2, 0x0010),
    (RegionIndex::CONFIG, 0x08, 4, u64::MAX >> 32),
    (RegionIndex::CONFIG, 0x0e, 1, 0xff),
    (RegionIndex::CONFIG, 0x10, 4, 0x0fff_ffff),
    (RegionIndex::CONFIG, 0x18, 4, 0x3fff),
    (RegionIndex::CONFIG, 0x1c, 8, u64::MAX),
    (RegionIndex::CONFIG, 0x24, 4, u64::MAX >> 32),
    (RegionIndex::CONFIG, 0x2c, 8, u64::MAX),
    (RegionIndex::CONFIG, 0x3d, 1, 0xff),
    (RegionIndex::CONFIG, 0x40, 4, u64::MAX >> 32),
    (RegionIndex::CONFIG, 0x50, 4, 0xfffe_ffff),
    (RegionIndex::CONFIG, 0x70, 8, 0xffff_ffff_3fff_ffff),
    (RegionIndex::CONFIG, 0x78, 4, u64::MAX >> 32),
    (RegionIndex::CONFIG, 0x80, 8, u64::MAX),
    (RegionIndex::CONFIG, 0x8c, 8, u64::MAX),
    (RegionIndex::CONFIG, 0xc0, 8, u64::MAX),
    (RegionIndex::CONFIG, 0xc8, 8, u64::MAX),
    (RegionIndex::CONFIG, 0x100, 8, u64::MAX),
    (RegionIndex::BAR2, 0x00, 8, u64::MAX),
    (RegionIndex::BAR2, 0x78, 8, u64::MAX),
    (RegionIndex::BAR2, 0x514, 2, 0xffff),
    (RegionIndex::BAR2, 0x600, 4, u64::MAX >> 32),
    (RegionIndex::BAR2, 0x1000, 8, u64::MAX),
    (RegionIndex::BAR2, 0x1008, 8, u64::MAX),
    (RegionIndex::BAR2, 0x1010, 8, u64::MAX),
    (RegionIndex::BAR2, 0x1018, 4, u64::MAX >> 32),
    // The fault registers and XLATE_STATUS change only when the owner
    // reports (the test completes every translation successfully).
    (RegionIndex::BAR2, 0x1080, 8, u64::MAX),
    (RegionIndex::BAR2, 0x1088, 8, u64::MAX),
    (RegionIndex::BAR2, 0x109c, 4, u64::MAX >> 32),
    // PT_ROOT of channels the device does not have (it has 7).
    (RegionIndex::BAR2, 0x11e0, 8, u64::MAX),
    (RegionIndex::BAR2, 0x18e0, 8, u64::MAX),
    (RegionIndex::BAR2, 0x3000, 8, u64::MAX),
];

fn read_only_values(dev: &mut VgpuDevice) -> Vec<u64> {
    READ_ONLY
        .iter()
        .map(|&(region, offset, len, mask)| {
            let mut buf = [0u8; 8];
            dev.read(region, offset, &mut buf[..len]).unwrap();
            u64::from_le_bytes(buf) & mask
        })
        .collect()
}

/// Registers whose writes make MMU requests or errors, and the PT_ROOTs
/// around the last channel.
const MMU_COMMANDS: [u64; 8] = [
    CTRL_INV_CONTROL,
    CTRL_XLATE_CONTROL,
    CTRL_FAULT_COUNT,
    0x1100 + 0x04,
    0x1100 + 6 * 0x20,
    0x1100 + 6 * 0x20 + 0x04,
    0x1100 + 7 * 0x20,
    0x1100 + 63 * 0x20 + 0x04,
];

/// A region index as a VMM may send it: mostly the two emulated regions,
/// sometimes another of the nine, sometimes none of them.
fn region() -> impl Strategy<Value = u32> {
    prop_oneof![
        5 => Just(RegionIndex::CONFIG.raw()),
        5 => Just(RegionIndex::BAR2.raw()),
        2 => 0..9u32,
        1 => any::<u32>(),
    ]
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..0x110u64,
        4 => 0..0x4010u64,
        // The control block and the MMU registers, 8-byte aligned so that
        // every length is aligned too.
        2 => (0x1000..0x1900u64).prop_map(|offset| offset & !7),
        3 => prop::sample::select(&MMU_COMMANDS[..]),
        1 => any::<u64>(),
        1 => (u64::MAX - 16)..=u64::MAX,
    ]
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0..=9usize, 1 => 0..=4100usize]
}

/// A guest read or write: region, offset and length chosen freely. Short
/// writes carry arbitrary bytes; long ones repeat one byte. Small bytes
/// name existing channels in the MMU command registers.
fn access() -> impl Strategy<Value = Op> {
    let byte = prop_oneof![3 => any::<u8>(), 1 => 0..8u8];
    let data = len().prop_flat_map(move |len| {
        if len <= 16 {
            prop::collection::vec(byte.clone(), len).boxed()
        } else {
            byte.clone().prop_map(move |fill| vec![fill; len]).boxed()
        }
    });
    let read = (region(), offset(), len()).prop_map(|(region, offset, len)| Op::Read {
        region,
        offset,
        len,
    });
    let write = (region(), offset(), data).prop_map(|(region, offset, data)| Op::Write {
        region,
        offset,
        data,
    });
    prop_oneof![read, write]
}

fn fault_reason() -> impl Strategy<Value = crate::FaultReason> {
    prop::sample::select(&FAULT_REASONS[..])
}

/// What the owner does between guest accesses.
fn owner_event() -> impl Strategy<Value = Op> {
    use crate::{DmaFault, Fault, Translation};
    let dma_fault =
        prop::sample::select(&[DmaFault::NotMapped, DmaFault::ReadOnly, DmaFault::Failed][..]);
    prop_oneof![
        3 => prop::option::of(dma_fault).prop_map(|fault| Op::CompleteDma(fault.map_or(Ok(()), Err))),
        2 => (any::<u64>(), any::<bool>()).prop_map(|(address, system)| {
            Op::CompleteTranslate(Ok(Translation { address, system }))
        }),
        1 => fault_reason().prop_map(|reason| Op::CompleteTranslate(Err(reason))),
        1 => (0..70u32, any::<u64>(), any::<bool>(), fault_reason()).prop_map(
            |(channel, va, write, reason)| Op::RecordFault(Fault { channel, va, write, reason })
        ),
        1 => any::<bool>().prop_map(Op::SetIntxAsserted),
        1 => Just(Op::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// The owner completes every DMA and translation at once and
    /// successfully, so the fault registers and XLATE_STATUS stay too.
    #[test]
    fn random_accesses_keep_the_contract_and_read_only_registers(
        ops in proptest::collection::vec(access(), 1..48)
    ) {
        let mut harness = Harness::new(config());
        let before = read_only_values(harness.device());
        for op in ops {
            let effects = harness.apply(&op);
            if effects.dma.is_some() {
                harness.apply(&Op::CompleteDma(Ok(())));
            }
            if let Some(crate::MmuRequest::Translate { va, write, .. }) = effects.mmu {
                harness.apply(&Op::CompleteTranslate(Ok(crate::Translation {
                    address: va ^ 0x5a5a,
                    system: write,
                })));
            }
        }
        prop_assert_eq!(read_only_values(harness.device()), before);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any profile the fuzz header can choose, and guest accesses mixed
    /// with owner events (late, repeated or missing completions, faults,
    /// resets) in any order.
    #[test]
    fn guest_and_owner_steps_in_any_order_keep_the_contract(
        (channels, vram, resolution) in (any::<u8>(), any::<u8>(), any::<u8>()),
        ops in proptest::collection::vec(prop_oneof![3 => access(), 1 => owner_event()], 1..64)
    ) {
        let mut harness = Harness::new(fuzzing::config(channels, vram, resolution));
        for op in &ops {
            harness.apply(op);
        }
    }
}
