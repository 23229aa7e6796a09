//! Engine faults ("Engine errors and limits", code 16): every memory-
//! touching command aimed at memory the channel may not touch stops the
//! channel with ENGINE_FAULT, ERROR_VA the faulting address, the fault
//! recorded in FAULT_VA/FAULT_INFO/FAULT_COUNT with its reason,
//! IRQ_STATUS.FAULT set and vector 0 raised (IRQ_MASK.FAULT set). And
//! memory outside what the vGPU may write is unchanged byte for byte:
//! the other vGPU's VRAM, the read-only guest memory, the guest memory
//! mapped without an fd (no DMA_WRITE reaches the client), and this
//! vGPU's own VRAM behind read-only entries.

use std::time::Duration;

use vgpud_tests::regs::{bar2, fault_info};

use crate::cmd::{self, code};
use crate::rig::*;

/// One faulting command: what it is, its dwords, the faulting VA, whether
/// the faulting access is a write, and the reason.
struct Case {
    name: &'static str,
    words: Vec<u32>,
    va: u64,
    write: bool,
    reason: u32,
}

fn case(name: &'static str, words: Vec<u32>, va: u64, write: bool, reason: u32) -> Case {
    Case {
        name,
        words,
        va,
        write,
        reason,
    }
}

fn cases() -> Vec<Case> {
    use fault_info::{NOT_MAPPED, NOT_PRESENT, OUTSIDE_VRAM, READ_ONLY};
    vec![
        // FILL into each kind of forbidden page.
        case(
            "FILL into read-only VRAM",
            cmd::fill(VA_RO_VRAM, 64, 1),
            VA_RO_VRAM,
            true,
            READ_ONLY,
        ),
        case(
            "FILL unmapped",
            cmd::fill(VA_UNMAPPED, 64, 1),
            VA_UNMAPPED,
            true,
            NOT_PRESENT,
        ),
        case(
            "FILL past the slice",
            cmd::fill(VA_OUTSIDE, 64, 1),
            VA_OUTSIDE,
            true,
            OUTSIDE_VRAM,
        ),
        case(
            "FILL into no map",
            cmd::fill(VA_NO_MAP, 64, 1),
            VA_NO_MAP,
            true,
            NOT_MAPPED,
        ),
        case(
            "FILL into memory without an fd",
            cmd::fill(VA_REMOTE, 64, 1),
            VA_REMOTE,
            true,
            NOT_MAPPED,
        ),
        case(
            "FILL into a read-only map",
            cmd::fill(VA_GUEST_RO + 0x40, 64, 1),
            VA_GUEST_RO + 0x40,
            true,
            READ_ONLY,
        ),
        // COPY: from and to.
        case(
            "COPY from unmapped",
            cmd::copy(VA_UNMAPPED + 4, DATA, 64),
            VA_UNMAPPED + 4,
            false,
            NOT_PRESENT,
        ),
        case(
            "COPY from past the slice",
            cmd::copy(VA_OUTSIDE, DATA, 64),
            VA_OUTSIDE,
            false,
            OUTSIDE_VRAM,
        ),
        case(
            "COPY from memory without an fd",
            cmd::copy(VA_REMOTE, DATA, 64),
            VA_REMOTE,
            false,
            NOT_MAPPED,
        ),
        case(
            "COPY from WRITABLE over a read-only map",
            cmd::copy(VA_GUEST_RO_W, DATA, 64),
            VA_GUEST_RO_W,
            false,
            READ_ONLY,
        ),
        case(
            "COPY into a read-only map",
            cmd::copy(DATA, VA_GUEST_RO, 64),
            VA_GUEST_RO,
            true,
            READ_ONLY,
        ),
        case(
            "COPY into read-only VRAM",
            cmd::copy(DATA, VA_RO_VRAM + 3, 64),
            VA_RO_VRAM + 3,
            true,
            READ_ONLY,
        ),
        case(
            "COPY into memory without an fd",
            cmd::copy(DATA, VA_REMOTE + 0x100, 64),
            VA_REMOTE + 0x100,
            true,
            NOT_MAPPED,
        ),
        // BLIT2D.
        case(
            "BLIT2D into read-only VRAM",
            cmd::blit2d(DATA, 64, VA_RO_VRAM, 64, 4, 4),
            VA_RO_VRAM,
            true,
            READ_ONLY,
        ),
        case(
            "BLIT2D from past the slice",
            cmd::blit2d(VA_OUTSIDE, 64, DATA, 64, 4, 4),
            VA_OUTSIDE,
            false,
            OUTSIDE_VRAM,
        ),
        case(
            "BLIT2D into a read-only map",
            cmd::blit2d(DATA, 64, VA_GUEST_RO, 64, 4, 4),
            VA_GUEST_RO,
            true,
            READ_ONLY,
        ),
        // FENCE, TIMESTAMP, STORE_REGISTER, SEMAPHORE_WAIT.
        case(
            "FENCE into read-only VRAM",
            cmd::fence(VA_RO_VRAM + 8, 1),
            VA_RO_VRAM + 8,
            true,
            READ_ONLY,
        ),
        case(
            "FENCE into memory without an fd",
            cmd::fence64(VA_REMOTE + 8, 1),
            VA_REMOTE + 8,
            true,
            NOT_MAPPED,
        ),
        case(
            "FENCE into a read-only map",
            cmd::fence(VA_GUEST_RO + 4, 1),
            VA_GUEST_RO + 4,
            true,
            READ_ONLY,
        ),
        case(
            "TIMESTAMP into a read-only map",
            cmd::timestamp(VA_GUEST_RO + 8),
            VA_GUEST_RO + 8,
            true,
            READ_ONLY,
        ),
        case(
            "TIMESTAMP past the slice",
            cmd::timestamp(VA_OUTSIDE + 16),
            VA_OUTSIDE + 16,
            true,
            OUTSIDE_VRAM,
        ),
        case(
            "STORE_REGISTER past the slice",
            cmd::store_register(0x48, VA_OUTSIDE + 4),
            VA_OUTSIDE + 4,
            true,
            OUTSIDE_VRAM,
        ),
        case(
            "STORE_REGISTER into read-only VRAM",
            cmd::store_register(0, VA_RO_VRAM + 4),
            VA_RO_VRAM + 4,
            true,
            READ_ONLY,
        ),
        case(
            "STORE_REGISTER into no map",
            cmd::store_register(0, VA_NO_MAP),
            VA_NO_MAP,
            true,
            NOT_MAPPED,
        ),
        case(
            "SEMAPHORE_WAIT on unmapped memory",
            cmd::semaphore_wait(VA_UNMAPPED, cmd::cmp::EQ, 0),
            VA_UNMAPPED,
            false,
            NOT_PRESENT,
        ),
        case(
            "SEMAPHORE_WAIT on memory without an fd",
            cmd::semaphore_wait(VA_REMOTE, cmd::cmp::EQ, 0x5a5a_5a5a),
            VA_REMOTE,
            false,
            NOT_MAPPED,
        ),
    ]
}

#[test]
fn every_forbidden_access_is_an_engine_fault_and_touches_nothing() -> anyhow::Result<()> {
    let d = daemon()?;
    let (mut a, b) = pair(&d)?;
    a.enable_all()?;
    a.set_ctl(bar2::IRQ_MASK, bar2::IRQ_FAULT)?;
    // Something to copy that is not zero.
    a.write_vram(DATA, &[0x99; 0x1000]);
    a.write_vram(RO_VRAM, &[0x77; 0x4000]);
    let b_before = b.vram(0, VRAM);
    let ro_before = a.guest_ro.bytes().to_vec();
    let remote_before = a.c.remote_memory().expect("remote").to_vec();
    let mut failures = Vec::new();
    for (i, c) in cases().into_iter().enumerate() {
        let ch = (i % 4) as u32;
        a.restart(ch)?;
        a.clear_device_status()?;
        a.drain_irqs()?;
        let count = a.ctl(bar2::FAULT_COUNT)?;
        let a_before = a.vram(0, VRAM);
        a.submit(ch, &cmd::concat(&[c.words.clone(), Vgpu::fence(ch, 1)]))?;
        let s = a.wait_stopped(ch, DEADLINE)?;
        let record = a.c.fault_record()?;
        let status = a.ctl(bar2::IRQ_STATUS)?;
        let info = fault_info::encode(ch, c.write, c.reason);
        let mut problems = Vec::new();
        if s.code != code::ENGINE_FAULT || s.va != c.va {
            problems.push(format!("channel {s:x?}, expected 16 at {:#x}", c.va));
        }
        if s.fence != 0 {
            problems.push("the FENCE after the fault ran".into());
        }
        if record.va != c.va || record.info != info || record.count != count + 1 {
            problems.push(format!(
                "fault record {record:x?}, expected VA {:#x} info {info:#x} count {}",
                c.va,
                count + 1
            ));
        }
        if status & bar2::IRQ_FAULT == 0 {
            problems.push(format!("IRQ_STATUS {status:#x} without FAULT"));
        }
        if a.irqs[0].wait(Duration::from_secs(2))? == 0 {
            problems.push("vector 0 not raised".into());
        }
        if a.irqs[1 + ch as usize].wait(Duration::from_secs(2))? == 0 {
            problems.push(format!("channel vector {} not raised", 1 + ch));
        }
        let mut a_after = a.vram(0, VRAM);
        // The ring (this case's commands) is the only change the test made.
        let ring = a.ring_base(ch) as usize;
        a_after[ring..ring + 256].copy_from_slice(&a_before[ring..ring + 256]);
        if let Err(e) = assert_same(&a_before, &a_after, "this vGPU's VRAM") {
            problems.push(format!("{e:#}"));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.name, problems.join("; ")));
        }
    }
    std::thread::sleep(QUIET);
    assert_same(&b_before, &b.vram(0, VRAM), "the other vGPU's VRAM")?;
    assert_same(&ro_before, a.guest_ro.bytes(), "the read-only guest memory")?;
    assert_same(
        &remote_before,
        a.c.remote_memory().expect("remote"),
        "guest memory mapped without an fd",
    )?;
    let served = a.c.served();
    assert_eq!(
        (served.dma_reads, served.dma_writes),
        (0, 0),
        "an engine reached memory without an fd through the client"
    );
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn a_copy_running_into_an_unmapped_page_faults_there_and_keeps_earlier_chunks() -> anyhow::Result<()>
{
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    let src = vgpud_tests::host::pattern(192 << 10, 3);
    a.write_vram(DATA, &src);
    // 192 KiB into the last 128 KiB of the identity map: the first two
    // 64 KiB chunks complete, the third faults at IDENTITY_END.
    let dst = IDENTITY_END - (128 << 10);
    a.submit(0, &cmd::copy(DATA, dst, 192 << 10))?;
    let s = a.wait_stopped(0, DEADLINE)?;
    assert_eq!((s.code, s.va), (code::ENGINE_FAULT, IDENTITY_END), "{s:x?}");
    let record = a.c.fault_record()?;
    assert_eq!(record.va, IDENTITY_END);
    assert_eq!(
        record.info,
        fault_info::encode(0, true, fault_info::NOT_PRESENT)
    );
    assert_same(
        &src[..128 << 10],
        &a.vram(dst, 128 << 10),
        "the chunks before the fault",
    )?;
    // A FILL that starts writable and runs into read-only VRAM: the fault
    // is at the first read-only byte.
    a.map_page(
        VA_RO_VRAM - 0x1000,
        vgpud_tests::page_tables::Page::vram(DATA + 0x8_0000),
    )?;
    a.enable(1)?;
    a.submit(1, &cmd::fill(VA_RO_VRAM - 0x800, 0x1000, 0xabab_abab))?;
    let s = a.wait_stopped(1, DEADLINE)?;
    assert_eq!((s.code, s.va), (code::ENGINE_FAULT, VA_RO_VRAM), "{s:x?}");
    assert!(
        a.vram(RO_VRAM, 0x1000).iter().all(|&x| x == 0),
        "read-only VRAM written"
    );
    Ok(())
}

#[test]
fn tables_pointing_outside_the_slice_never_reach_the_other_vgpu() -> anyhow::Result<()> {
    let d = daemon()?;
    let (mut a, mut bw) = pair(&d)?;
    a.enable(0)?;
    // Give B's VRAM a pattern; map A's VAs at every 2 MiB of VRAM offsets
    // from 16 MiB to 64 MiB (the rest of the GPU), large and small.
    bw.write_vram(0, &vgpud_tests::host::pattern(VRAM as usize, 9));
    let b_before = bw.vram(0, VRAM);
    let base_va: u64 = 0x4000_0000;
    for k in 0..24u64 {
        let offset = VRAM + (k << 21);
        let page = if k % 2 == 0 {
            vgpud_tests::page_tables::Page::vram(offset).large()
        } else {
            vgpud_tests::page_tables::Page::vram(offset)
        };
        a.tables.map(&mut a.bar0, base_va + (k << 21), page)?;
    }
    // Huge offsets: bits 51:12 all set, and one just past the slice end.
    a.tables.map(
        &mut a.bar0,
        base_va + (24 << 21),
        vgpud_tests::page_tables::Page::vram(((1 << 52) - 1) & !0xfff),
    )?;
    a.tables.map(
        &mut a.bar0,
        base_va + (25 << 21),
        vgpud_tests::page_tables::Page::vram(VRAM - 0x1000).large(),
    )?;
    a.recommit_roots()?;
    for k in 0..26u64 {
        a.restart(0)?;
        a.clear_device_status()?;
        let va = base_va + (k << 21);
        a.submit(0, &cmd::fill(va, 0x1000, 0xdddd_dddd))?;
        let s = a.wait_stopped(0, DEADLINE)?;
        let record = a.c.fault_record()?;
        let reason = fault_info::reason(record.info);
        assert!(
            s.code == code::ENGINE_FAULT && s.va == va,
            "FILL at {va:#x} (entry {k}): {s:x?}"
        );
        let expected = if k == 25 {
            // LARGE with address bits 20:12 set: decoded (invalid) first.
            fault_info::INVALID_ENTRY
        } else {
            fault_info::OUTSIDE_VRAM
        };
        assert_eq!(reason, expected, "entry {k}");
        a.restart(0)?;
        a.submit(0, &cmd::copy(va, DATA, 0x1000))?;
        let s = a.wait_stopped(0, DEADLINE)?;
        assert!(
            s.code == code::ENGINE_FAULT && s.va == va,
            "COPY from {va:#x}: {s:x?}"
        );
    }
    assert_same(&b_before, &bw.vram(0, VRAM), "the other vGPU's VRAM")?;
    assert!(
        a.vram(DATA, 0x1000).iter().all(|&x| x == 0),
        "something of another slice was copied in"
    );
    Ok(())
}

#[test]
fn a_read_only_dma_map_is_readable_but_never_written() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    // Reading through read-only entries works.
    a.run_ok(
        0,
        &cmd::copy(VA_GUEST_RO, DATA, 256),
        "COPY from a read-only map",
    )?;
    assert_eq!(a.vram(DATA, 256), vec![0xc3; 256]);
    let before = a.guest_ro.bytes().to_vec();
    for (i, words) in [
        cmd::fill(VA_GUEST_RO, 0x1_0000, 0),
        cmd::copy(DATA, VA_GUEST_RO_W, 16),
        cmd::fence64(VA_GUEST_RO_W + 0x800, u64::MAX),
        cmd::blit2d(DATA, 16, VA_GUEST_RO + 0x8000, 16, 4, 16),
    ]
    .into_iter()
    .enumerate()
    {
        a.restart(0)?;
        a.submit(0, &words)?;
        let s = a.wait_stopped(0, DEADLINE)?;
        assert_eq!(s.code, code::ENGINE_FAULT, "case {i}: {s:x?}");
        assert_eq!(
            fault_info::reason(a.c.fault_record()?.info),
            fault_info::READ_ONLY,
            "case {i}"
        );
        a.clear_device_status()?;
    }
    std::thread::sleep(QUIET);
    assert_same(&before, a.guest_ro.bytes(), "the read-only map")?;
    Ok(())
}
