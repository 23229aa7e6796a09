//! Whole-device properties: reset, and random accesses from a hostile guest.

use proptest::prelude::*;

use super::*;
use crate::bar2::layout::*;

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

#[derive(Debug, Clone)]
struct Op {
    region: u32,
    offset: u64,
    len: usize,
    write: bool,
    fill: u8,
}

fn op() -> impl Strategy<Value = Op> {
    let offset = prop_oneof![
        4 => 0..0x110u64,
        4 => 0..0x4010u64,
        // The control block and the MMU registers, 8-byte aligned so that
        // every length is aligned too.
        2 => (0x1000..0x1900u64).prop_map(|offset| offset & !7),
        3 => prop::sample::select(&MMU_COMMANDS[..]),
        1 => any::<u64>(),
        1 => (u64::MAX - 16)..=u64::MAX,
    ];
    let len = prop_oneof![8 => 0..=9usize, 1 => 0..=4100usize];
    // Small fills name existing channels in the MMU command registers.
    let fill = prop_oneof![3 => any::<u8>(), 1 => 0..8u8];
    (0..11u32, offset, len, any::<bool>(), fill).prop_map(|(region, offset, len, write, fill)| {
        // Mostly the two emulated regions.
        let region = match region {
            0..=4 => 7,
            5..=8 => 2,
            other => other * 3 % 10,
        };
        Op {
            region,
            offset,
            len,
            write,
            fill,
        }
    })
}

/// What the device promises about the MMU requests it emits.
fn check_mmu_request(request: crate::MmuRequest) -> Result<(), TestCaseError> {
    use crate::MmuRequest::*;
    let channels = config().channels;
    match request {
        SetRoot { channel, .. } | InvalidateAll { channel } | Translate { channel, .. } => {
            prop_assert!(channel < channels);
        }
        Invalidate { channel, va, size } => {
            prop_assert!(channel < channels);
            prop_assert!(va % 4096 == 0 && size % 4096 == 0 && size != 0);
            prop_assert!(va.checked_add(size).is_some_and(|end| end <= 1 << 48));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn random_accesses_never_panic_or_change_read_only_registers(
        ops in proptest::collection::vec(op(), 1..48)
    ) {
        let mut dev = device();
        let before = read_only_values(&mut dev);
        for op in ops {
            let Ok(region) = RegionIndex::try_from(op.region) else {
                continue;
            };
            let mut data = vec![op.fill; op.len];
            let result = if op.write {
                dev.write(region, op.offset, &data).map(|effects| {
                    if let Some(dma) = effects.dma {
                        prop_assert!(dma.len >= 1 && u64::from(dma.len) <= 1 << 20);
                        prop_assert!(dma.vram_offset + u64::from(dma.len) <= 256 << 20);
                        dev.complete_dma(Ok(()));
                    }
                    if let Some(request) = effects.mmu {
                        check_mmu_request(request)?;
                        if let crate::MmuRequest::Translate { va, write, .. } = request {
                            let _ = dev.complete_translate(Ok(crate::Translation {
                                address: va ^ 0x5a5a,
                                system: write,
                            }));
                        }
                    }
                    Ok(())
                })
            } else {
                dev.read(region, op.offset, &mut data).map(|()| Ok(()))
            };
            if let Ok(inner) = result {
                inner?;
            }
            let _ = dev.scanout();
        }
        prop_assert_eq!(read_only_values(&mut dev), before);
    }
}
