//! The seed corpus of the `device_access` fuzz target
//! (`fuzz/seeds/device_access/`), replayed through the same harness so
//! that CI exercises it without nightly. The input layout is documented on
//! `vgpu_emulation::fuzzing` (its `input` module); the seeds are built
//! here as [`Case`]s and encoded.

use std::fs;
use std::path::PathBuf;

use vgpu_emulation::bar2::control::{IRQ_ALL, IRQ_ERROR};
use vgpu_emulation::bar2::dispi::*;
use vgpu_emulation::bar2::layout::*;
use vgpu_emulation::bar2::mmu::{INV_CONTROL_ALL, INV_CONTROL_RANGE, XLATE_CONTROL_WRITE};
use vgpu_emulation::fuzzing::{Case, Op, config, fuzz_device_access};
use vgpu_emulation::{DmaFault, Fault, FaultReason, Translation};

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/device_access")
}

#[test]
fn every_seed_runs_cleanly() {
    let mut seen = 0;
    for entry in fs::read_dir(seed_dir()).expect("seed directory") {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        fuzz_device_access(&data);
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} seeds");
}

const BAR2: u32 = 2;
const CONFIG: u32 = 7;

fn write(region: u32, offset: u64, data: &[u8]) -> Op {
    Op::Write {
        region,
        offset,
        data: data.to_vec(),
    }
}

fn read(region: u32, offset: u64, len: usize) -> Op {
    Op::Read {
        region,
        offset,
        len,
    }
}

fn write16(offset: u64, value: u16) -> Op {
    write(BAR2, offset, &value.to_le_bytes())
}

fn write32(offset: u64, value: u32) -> Op {
    write(BAR2, offset, &value.to_le_bytes())
}

fn write64(offset: u64, value: u64) -> Op {
    write(BAR2, offset, &value.to_le_bytes())
}

fn cfg_write32(offset: u64, value: u32) -> Op {
    write(CONFIG, offset, &value.to_le_bytes())
}

/// Four channels, 256 MiB of VRAM, 1920x1080.
fn profile() -> vgpu_emulation::DeviceConfig {
    config(3, 3, 5)
}

/// A DMA each way, one failed by the owner, completions with nothing
/// outstanding, and the DMAs the device refuses itself.
fn dma_self_test() -> Case {
    let ops = vec![
        write32(CTRL_IRQ_MASK, IRQ_ALL),
        write64(CTRL_DMA_IOVA_LO, 0x1_0000_0000),
        write64(CTRL_DMA_VRAM_LO, 0x10_0000),
        write32(CTRL_DMA_LENGTH, 4096),
        write32(CTRL_DMA_CONTROL, 1),
        Op::CompleteDma(Ok(())),
        read(BAR2, CTRL_DMA_STATUS, 8),
        Op::CompleteDma(Ok(())),
        write32(CTRL_DMA_CONTROL, 2),
        Op::CompleteDma(Err(DmaFault::ReadOnly)),
        read(BAR2, CTRL_ERROR_CODE, 8),
        write32(CTRL_ERROR_CODE, 0),
        write32(CTRL_DMA_LENGTH, (1 << 20) + 1),
        write32(CTRL_DMA_CONTROL, 1),
        write32(CTRL_DMA_LENGTH, 32),
        write64(CTRL_DMA_VRAM_LO, (256 << 20) - 16),
        write32(CTRL_DMA_CONTROL, 2),
        write32(CTRL_DMA_CONTROL, 3),
        write32(CTRL_IRQ_STATUS, IRQ_ALL),
        read(BAR2, CTRL_DMA_STATUS, 4),
    ];
    Case {
        config: profile(),
        ops,
    }
}

/// Page-table roots of the first and last of 63 channels and of one that
/// does not exist, invalidations good and bad, translations completed
/// both ways and once with nothing outstanding, and a fault reported for
/// a channel past the 6-bit field.
fn mmu_roots() -> Case {
    let root = |channel: u64| CHANNEL_MMU_OFFSET + channel * CHANNEL_MMU_STRIDE;
    let ops = vec![
        write32(CTRL_IRQ_MASK, IRQ_ALL),
        write64(root(0), 0x0000_0012_3456_7001),
        write32(root(1), 0x8000_1001),
        write32(root(1) + 4, 0x1),
        write64(root(62), 0x4001),
        write64(root(63), 0x5001),
        read(BAR2, root(62), 8),
        write64(CTRL_INV_VA_LO, 0x7fff_ffff_f000),
        write64(CTRL_INV_SIZE_LO, 0x1000),
        write32(CTRL_INV_CONTROL, INV_CONTROL_RANGE | 5),
        write32(CTRL_INV_CONTROL, INV_CONTROL_ALL | 62),
        write32(CTRL_INV_CONTROL, INV_CONTROL_ALL | 63),
        write64(CTRL_INV_SIZE_LO, 0x1800),
        write32(CTRL_INV_CONTROL, INV_CONTROL_RANGE | 1),
        write64(CTRL_XLATE_VA_LO, 0x1234_5678),
        write32(CTRL_XLATE_CONTROL, XLATE_CONTROL_WRITE | 2),
        Op::CompleteTranslate(Ok(Translation {
            address: 0x9_8765_4678,
            system: true,
        })),
        write32(CTRL_XLATE_CONTROL, 61),
        Op::CompleteTranslate(Err(FaultReason::NotMapped)),
        Op::CompleteTranslate(Ok(Translation {
            address: 0,
            system: false,
        })),
        read(BAR2, CTRL_FAULT_VA_LO, 8),
        Op::RecordFault(Fault {
            channel: 300,
            va: u64::MAX,
            write: true,
            reason: FaultReason::WalkLimit,
        }),
        write32(CTRL_FAULT_COUNT, 0),
        read(BAR2, CTRL_XLATE_STATUS, 8),
    ];
    Case {
        config: config(62, 2, 3),
        ops,
    }
}

/// BAR sizing, the command register, odd lengths and whole-space accesses
/// in config space.
fn bar_sizing() -> Case {
    let mut ops = Vec::new();
    for bar in [0x10, 0x14, 0x18, 0x1c, 0x30] {
        ops.push(cfg_write32(bar, u32::MAX));
        ops.push(read(CONFIG, bar, 4));
    }
    ops.extend([
        write(CONFIG, 0x04, &0x0546u16.to_le_bytes()),
        write(CONFIG, 0x3c, &[0x0b, 0xff, 0xff]),
        write(CONFIG, 0x72, &[0x00, 0xc0]),
        read(CONFIG, 0, 4096),
        read(CONFIG, 1, 4095),
        read(CONFIG, 0x4d, 7),
        write(CONFIG, 0, &[0xff; 256]),
        write(CONFIG, 0xffd, &[1, 2, 3]),
        Op::SetIntxAsserted(true),
        read(CONFIG, 0x04, 4),
    ]);
    Case {
        config: profile(),
        ops,
    }
}

/// Accesses every rule refuses.
fn bad_accesses() -> Case {
    let ops = vec![
        read(9, 0, 4),
        write(255, 0x1000, &[1, 2, 3, 4]),
        read(u32::MAX, u64::MAX, 8),
        read(0, 0, 4),
        write(0, 0x10, &[0; 8]),
        write(1, 0, &[0; 4]),
        read(6, 0, 4),
        write(8, 0x3c0, &[1]),
        read(BAR2, 0x1000, 0),
        read(BAR2, 0x1000, 3),
        write(BAR2, 0x1000, &[0xff; 16]),
        write(BAR2, CTRL_DMA_CONTROL + 2, &[1, 0, 0, 0]),
        read(BAR2, 0x3ffc, 8),
        write(BAR2, BAR2_SIZE, &[1]),
        write(BAR2, u64::MAX, &[1]),
        write(BAR2, u64::MAX - 7, &[1; 8]),
        read(CONFIG, 0, 0),
        read(CONFIG, 0, 4097),
        write(CONFIG, 4095, &[0xff, 0xff]),
        write(CONFIG, u64::MAX - 1, &[0xff, 0xff]),
        read(CONFIG, 4096, 1),
    ];
    Case {
        config: profile(),
        ops,
    }
}

/// The Linux bochs mode set of 512x512x32 into a 1 MiB slice, big-endian,
/// then a pan that pushes the frame out of the slice, and GETCAPS.
fn mode_set() -> Case {
    let dispi = |index: usize, value: u16| write16(dispi_offset(index), value);
    let ops = vec![
        dispi(DISPI_INDEX_ENABLE, 0),
        dispi(DISPI_INDEX_BPP, 32),
        dispi(DISPI_INDEX_XRES, 512),
        dispi(DISPI_INDEX_YRES, 512),
        dispi(DISPI_INDEX_BANK, 0),
        dispi(DISPI_INDEX_VIRT_WIDTH, 512),
        dispi(DISPI_INDEX_VIRT_HEIGHT, 512),
        dispi(DISPI_INDEX_X_OFFSET, 0),
        dispi(DISPI_INDEX_Y_OFFSET, 0),
        dispi(DISPI_INDEX_ENABLE, DISPI_ENABLED | DISPI_LFB_ENABLED),
        write32(QEXT_BYTE_ORDER_OFFSET, BYTE_ORDER_BIG),
        dispi(DISPI_INDEX_X_OFFSET, 1),
        dispi(DISPI_INDEX_X_OFFSET, 0),
        write64(dispi_offset(DISPI_INDEX_ENABLE), 0x0200_0200_0000_0041),
        dispi(DISPI_INDEX_ENABLE, DISPI_ENABLED | DISPI_GETCAPS),
        read(BAR2, dispi_offset(DISPI_INDEX_ID), 8),
        write(BAR2, VGA_PORTS_OFFSET, &[0x20]),
        read(BAR2, VGA_INPUT_STATUS_1_OFFSET, 2),
    ];
    Case {
        config: config(0, 0, 5),
        ops,
    }
}

/// MSI-X entries, the self-test of the first eight vectors, of the last
/// of 64 and of one past it, IRQ_STATUS, INTx, and a reset.
fn interrupts() -> Case {
    let mut ops = vec![
        write(CONFIG, 0x72, &[0x00, 0x80]),
        write(CONFIG, 0x04, &0x0400u16.to_le_bytes()),
    ];
    for vector in (0..8).chain([63]) {
        let entry = MSIX_TABLE_OFFSET + vector * MSIX_ENTRY_SIZE;
        ops.push(write64(entry, 0xfee0_0000 + vector));
        ops.push(write64(entry + 8, 0x4000 + vector));
        ops.push(write32(CTRL_SELFTEST, vector as u32));
    }
    ops.extend([
        write32(CTRL_SELFTEST, 64),
        write32(CTRL_IRQ_MASK, IRQ_ERROR),
        write32(CTRL_IRQ_STATUS, IRQ_ALL),
        Op::SetIntxAsserted(true),
        Op::SetIntxAsserted(false),
        read(BAR2, MSIX_PBA_OFFSET, 8),
        Op::Reset,
        write32(CTRL_SELFTEST, 7),
    ]);
    Case {
        config: config(62, 4, 1),
        ops,
    }
}

/// A DMA and a translation handed out, then a reset, then their late
/// completions, which must do nothing.
fn reset_in_flight() -> Case {
    let ops = vec![
        write32(CTRL_DMA_LENGTH, 1),
        write32(CTRL_DMA_CONTROL, 1),
        write32(CTRL_XLATE_CONTROL, 0),
        Op::Reset,
        Op::CompleteDma(Ok(())),
        Op::CompleteTranslate(Err(FaultReason::ReadOnly)),
        read(BAR2, CTRL_DMA_COUNT, 4),
    ];
    Case {
        config: config(0, 7, 7),
        ops,
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("dma_self_test", dma_self_test().encode()),
        ("mmu_roots", mmu_roots().encode()),
        ("bar_sizing", bar_sizing().encode()),
        ("bad_accesses", bad_accesses().encode()),
        ("mode_set", mode_set().encode()),
        ("interrupts", interrupts().encode()),
        ("reset_in_flight", reset_in_flight().encode()),
        ("empty", Vec::new()),
    ]
}

#[test]
fn seeds_decode_to_what_they_were_built_from() {
    for case in [
        dma_self_test(),
        mmu_roots(),
        bar_sizing(),
        bad_accesses(),
        mode_set(),
        interrupts(),
        reset_in_flight(),
    ] {
        assert_eq!(Case::decode(&case.encode()), case);
    }
}

#[test]
fn the_seeds_exercise_dma_mmu_display_and_refusals() {
    let outcome = |name: &str| {
        let (_, bytes) = seeds().into_iter().find(|(n, _)| *n == name).unwrap();
        fuzz_device_access(&bytes)
    };
    let dma = outcome("dma_self_test");
    assert_eq!(dma.dma_requests, 2);
    assert_eq!(dma.vectors, 1);
    let mmu = outcome("mmu_roots");
    // Three roots, an invalidation of a range and one of everything, two
    // translations; the other commands are refused.
    assert_eq!(mmu.mmu_requests, 7);
    assert_eq!(mmu.vectors, 1);
    let sizing = outcome("bar_sizing");
    assert_eq!(sizing.refused, 0);
    assert_eq!(sizing.accepted, 19);
    let bad = outcome("bad_accesses");
    assert_eq!((bad.accepted, bad.refused), (0, 21));
    assert!(outcome("mode_set").scanout);
    assert_eq!(outcome("interrupts").vectors, 1 << 63 | 0xff);
    let late = outcome("reset_in_flight");
    assert_eq!((late.dma_requests, late.mmu_requests), (1, 1));
}

/// Rewrites the seed files:
/// `cargo test -p vgpu-emulation --test fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes into fuzz/seeds; run by hand when the input layout changes"]
fn regenerate_seeds() {
    let dir = seed_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        fs::write(dir.join(name), bytes).unwrap();
    }
}
