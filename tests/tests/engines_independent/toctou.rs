//! Rewrites after the doorbell ("Validation": "What runs is the copy that
//! was checked: nothing the guest writes into the ring or a batch after
//! the doorbell (or while it is being read) changes it"). The engine is
//! held on a semaphore while the guest rewrites the ring and nested
//! batches, including into privileged forms; what then runs is exactly
//! what was validated.

use std::time::{Duration, Instant};

use crate::cmd::{self, PHYSICAL, PRIVILEGED, cmp, code};
use crate::rig::*;

#[test]
fn the_ring_and_nested_batches_rewritten_while_held_run_as_validated() -> anyhow::Result<()> {
    let d = daemon()?;
    let (mut a, b) = pair(&d)?;
    a.enable(0)?;
    let (t1, t2, t3) = (DATA, DATA + 0x1000, DATA + 0x2000);
    let evil = DATA + 0x10_0000;
    let b1 = BATCHES;
    let b2 = BATCHES + 0x1000;
    let batch2 = cmd::batch(&[cmd::fill(t2, 4096, 0x2222_2222)]);
    let batch1 = cmd::batch(&[
        cmd::fill(t1, 4096, 0x1111_1111),
        cmd::batch_start(b2, cmd::bytes_of(&batch2)),
    ]);
    a.write_dwords(b1, &batch1);
    a.write_dwords(b2, &batch2);
    let ring = cmd::concat(&[
        cmd::semaphore_wait(SEM, cmp::EQ, 1),
        cmd::batch_start(b1, cmd::bytes_of(&batch1)),
        cmd::fill(t3, 4096, 0x3333_3333),
        Vgpu::fence(0, 1),
    ]);
    a.submit(0, &ring)?;
    let s = a.chan(0)?;
    assert!(
        s.state() == 1 && s.get == cmd::bytes_of(&ring) && s.busy(),
        "accepted and held: {s:x?}"
    );
    let b_before = b.vram(0, VRAM);
    // Rewrite everything the submission read, keeping the lengths: the
    // ring's commands and both batches, into other targets, privileged
    // forms and batches that start others.
    let root = a.tables.root_entry();
    let evil_ring = cmd::concat(&[
        cmd::nop(4),
        cmd::with(cmd::batch_start(b1, cmd::bytes_of(&batch1)), PRIVILEGED),
        cmd::with(cmd::fill(evil, 4096, 0xeeee_eeee), PHYSICAL),
        cmd::fence(Vgpu::fence_va(0), 0xbad),
    ]);
    assert_eq!(evil_ring.len(), ring.len());
    a.write_dwords(a.ring_va(0, 0), &evil_ring);
    let evil1 = cmd::concat(&[
        cmd::with(cmd::fill(evil + 0x1000, 4096, 0xeeee_eeee), PHYSICAL),
        cmd::set_pt_root(root),
        cmd::nop(1),
        cmd::batch_end(),
    ]);
    assert_eq!(evil1.len(), batch1.len());
    a.write_dwords(b1, &evil1);
    let evil2 = cmd::concat(&[
        cmd::with(cmd::store_register(0x40, evil + 0x2000), PHYSICAL),
        cmd::nop(1),
        cmd::batch_end(),
    ]);
    assert_eq!(evil2.len(), batch2.len());
    a.write_dwords(b2, &evil2);
    a.set_u32(SEM, 1);
    a.wait_fence(0, 1)?;
    a.assert_running(0, "after the held submission")?;
    for (t, p) in [(t1, 0x1111_1111u32), (t2, 0x2222_2222), (t3, 0x3333_3333)] {
        assert!(
            a.vram(t, 4096).chunks(4).all(|w| w == p.to_le_bytes()),
            "target {t:#x} does not hold the validated pattern {p:#x}"
        );
    }
    assert!(
        a.vram(evil, 0x3000).iter().all(|&x| x == 0),
        "a rewritten command ran"
    );
    assert_same(&b_before, &b.vram(0, VRAM), "the other vGPU's VRAM")?;
    Ok(())
}

#[test]
fn the_ring_space_is_reused_at_once_while_its_commands_wait() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    // A held first submission, then 15 more of 280 bytes: the ring wraps
    // and the later ones overwrite the bytes of the earlier ones, which
    // have not run yet.
    a.submit(
        0,
        &cmd::concat(&[cmd::semaphore_wait(SEM, cmp::EQ, 1), Vgpu::fence(0, 1)]),
    )?;
    let mut wrapped = false;
    for k in 2..=16u32 {
        let before = a.put(0);
        a.submit(
            0,
            &cmd::concat(&[
                cmd::nop(60),
                cmd::fill(MARKS + 64 * u64::from(k), 64, 0x7700_0000 | k),
                Vgpu::fence(0, k),
            ]),
        )?;
        wrapped |= a.put(0) < before;
        let s = a.chan(0)?;
        assert_eq!(s.get, a.put(0), "submission {k} not taken: {s:x?}");
    }
    assert!(wrapped, "the test meant to wrap the ring");
    a.set_u32(SEM, 1);
    a.wait_fence(0, 16)?;
    for k in 2..=16u32 {
        let got = a.vram(MARKS + 64 * u64::from(k), 64);
        assert!(
            got.chunks(4).all(|w| w == (0x7700_0000 | k).to_le_bytes()),
            "submission {k} did not run as written"
        );
    }
    a.assert_running(0, "after the wrapped submissions")?;
    Ok(())
}

/// A thread flips a batch's FILL between its plain form and PHYSICAL while
/// the channel's doorbell reads it. Every submission is either refused as
/// PRIVILEGED or accepted and run through the MMU: the FILL's VA is
/// unmapped there, so a run faults (16) at that VA. No write may land
/// anywhere (a FILL run as PHYSICAL would write the GPU's memory at that
/// address, which is VRAM of some vGPU).
#[test]
fn a_batch_flipped_between_plain_and_physical_never_runs_physical() -> anyhow::Result<()> {
    let d = daemon()?;
    let (mut a, b) = pair(&d)?;
    a.enable(0)?;
    // Physical candidates: the start of the other slice and of this one.
    let target: u64 = VRAM + 0x1000;
    let batch = cmd::batch(&[cmd::nop(8), cmd::fill(target, 4096, 0xf1f1_f1f1)]);
    a.write_dwords(BATCHES, &batch);
    let header_at = BATCHES + 32;
    let plain = cmd::fill(target, 4096, 0)[0];
    let mut flipper = a.c.map_bar0()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let a_before = a.vram(0, IDENTITY_END);
    let b_before = b.vram(0, VRAM);
    let thread = std::thread::spawn(move || {
        let at = header_at as usize;
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let word = if n.is_multiple_of(2) {
                plain | PHYSICAL
            } else {
                plain
            };
            flipper.map[at..at + 4].copy_from_slice(&word.to_le_bytes());
            n += 1;
        }
        n
    });
    let (mut refused, mut faulted) = (0, 0);
    let deadline = Instant::now() + Duration::from_millis(700);
    while Instant::now() < deadline {
        a.restart(0)?;
        a.submit(0, &cmd::batch_start(BATCHES, cmd::bytes_of(&batch)))?;
        let s = a.wait_stopped(0, DEADLINE)?;
        match s.code {
            code::PRIVILEGED => {
                assert_eq!((s.va, s.get), (header_at, 0), "{s:x?}");
                refused += 1;
            }
            code::ENGINE_FAULT => {
                assert_eq!(s.va, target, "{s:x?}");
                faulted += 1;
            }
            other => panic!("unexpected code {other}: {s:x?}"),
        }
        a.clear_device_status()?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = thread.join().expect("flipper");
    assert!(flips > 100, "the flipper barely ran");
    let mut a_after = a.vram(0, IDENTITY_END);
    // The ring and the batch header are the only bytes the test wrote.
    a_after[header_at as usize..header_at as usize + 4]
        .copy_from_slice(&a_before[header_at as usize..header_at as usize + 4]);
    let ring = a.ring_base(0) as usize;
    a_after[ring..ring + 64].copy_from_slice(&a_before[ring..ring + 64]);
    assert_same(&a_before, &a_after, "this vGPU's VRAM")?;
    assert_same(&b_before, &b.vram(0, VRAM), "the other vGPU's VRAM")?;
    eprintln!("flipped batch: {refused} refused, {faulted} ran and faulted");
    assert!(refused + faulted > 10);
    Ok(())
}
