//! The watchdog ("Engine errors and limits", code 17): a SEMAPHORE_WAIT
//! that waits 2 s, or a submission that uses 1 s of engine time, stops its
//! channel with ERROR_VA the command's VA; RESET and ENABLE bring the
//! channel back. Meanwhile the vGPU's other channels and the other vGPU
//! keep completing fences.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vgpud_tests::regs::channel as chreg;

use crate::cmd::{self, cmp, code};
use crate::rig::*;

/// Submits FENCE 1, 2, ... on `ch` of `v` until `stop`, waiting for each;
/// returns the completion times.
fn keep_fencing(v: &mut Vgpu, ch: u32, stop: &AtomicBool) -> anyhow::Result<Vec<Instant>> {
    let mut times = Vec::new();
    let mut k = 0u32;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        v.submit(
            ch,
            &cmd::concat(&[cmd::fill(DATA, 4096, k), Vgpu::fence(ch, k)]),
        )?;
        // A plain poll, without the rig's kick: this is what is tested.
        let deadline = Instant::now() + DEADLINE;
        while v.reg(ch, chreg::FENCE_LO)? != k {
            if Instant::now() > deadline {
                let s = v.chan(ch)?;
                anyhow::bail!("{}: fence {k} not done in {DEADLINE:?}: {s:?}", v.uuid);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        times.push(Instant::now());
    }
    Ok(times)
}

/// The longest stretch without a completion between `from` and `to`.
fn longest_gap(times: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for &t in times.iter().filter(|&&t| t > from && t < to) {
        gap = gap.max(t - last);
        last = t;
    }
    gap.max(to.saturating_duration_since(last))
}

#[test]
fn a_semaphore_that_never_releases_stops_after_2_s_and_recovers() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    a.set_u32(SEM, 0);
    a.irqs[1].take()?;
    let start = Instant::now();
    let at = a.submit(0, &cmd::semaphore_wait(SEM, cmp::EQ, 1))?;
    let hung_va = a.ring_va(0, at);
    // Channel 1 of the same vGPU keeps working while 0 waits.
    let mut ch1 = Vec::new();
    let mut k = 0;
    let s = loop {
        k += 1;
        a.submit(1, &Vgpu::fence(1, k))?;
        a.wait_fence(1, k)?;
        ch1.push(Instant::now());
        let s0 = a.chan(0)?;
        if s0.state() == chreg::STOPPED {
            break s0;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(6),
            "no watchdog: {s0:x?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    assert_eq!(
        (s.code, s.va, s.get),
        (code::WATCHDOG, hung_va, 16),
        "{s:x?}"
    );
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_millis(3500),
        "the watchdog fired after {elapsed:?}, documented 2 s"
    );
    assert!(s.intr & chreg::INTR_ERROR != 0);
    assert!(!s.busy());
    assert!(a.irqs[1].take()? > 0, "channel 0's vector not raised");
    let gap = longest_gap(&ch1, start, start + elapsed);
    assert!(gap < Duration::from_millis(500), "channel 1 waited {gap:?}");
    // RESET and ENABLE bring it back.
    a.restart(0)?;
    a.submit(
        0,
        &cmd::concat(&[cmd::fill(DATA, 64, 0x600d), Vgpu::fence(0, 1)]),
    )?;
    a.wait_fence(0, 1)?;
    a.assert_running(0, "after recovery")?;
    Ok(())
}

#[test]
fn the_other_vgpu_keeps_completing_fences_while_one_hangs() -> anyhow::Result<()> {
    let d = daemon()?;
    let (mut a, mut b) = pair(&d)?;
    a.enable_all()?;
    b.enable(0)?;
    let stop = AtomicBool::new(false);
    let (s, start, elapsed, b_times) = std::thread::scope(|sc| -> anyhow::Result<_> {
        let b_thread = sc.spawn(|| keep_fencing(&mut b, 0, &stop));
        std::thread::sleep(Duration::from_millis(50));
        a.set_u32(SEM, 0);
        let start = Instant::now();
        a.submit(0, &cmd::semaphore_wait(SEM, cmp::EQ, 1))?;
        let s = a.wait_stopped_long(0, Duration::from_secs(6))?;
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        Ok((s, start, elapsed, b_thread.join().expect("B thread")?))
    })?;
    assert_eq!(s.code, code::WATCHDOG, "{s:x?}");
    let gap = longest_gap(&b_times, start, start + elapsed);
    assert!(
        gap < Duration::from_millis(500),
        "the other vGPU waited {gap:?}"
    );
    Ok(())
}

#[test]
fn a_submission_that_uses_1_s_of_engine_time_is_stopped() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    // L2: 64 COPYs of 4 MiB; L1: 200 starts of L2 (308 KiB copied at
    // validation, about 50 GiB of copying when run).
    let l2 = BATCHES + 0x1_0000;
    let copies: Vec<Vec<u32>> = (0..64)
        .map(|_| cmd::copy(DATA, DATA + (5 << 20), 4 << 20))
        .collect();
    let l2_words = cmd::batch(&copies);
    a.write_dwords(l2, &l2_words);
    let l1 = BATCHES;
    let starts: Vec<Vec<u32>> = (0..200)
        .map(|_| cmd::batch_start(l2, cmd::bytes_of(&l2_words)))
        .collect();
    let l1_words = cmd::batch(&starts);
    a.write_dwords(l1, &l1_words);
    let start = Instant::now();
    a.submit(
        0,
        &cmd::concat(&[
            cmd::batch_start(l1, cmd::bytes_of(&l1_words)),
            Vgpu::fence(0, 1),
        ]),
    )?;
    // The other channels of A work meanwhile.
    std::thread::sleep(Duration::from_millis(100));
    for ch in 1..CHANNELS {
        a.submit(ch, &Vgpu::fence(ch, 7))?;
        a.wait_fence(ch, 7)?;
    }
    let s = a.wait_stopped_long(0, Duration::from_secs(8))?;
    let elapsed = start.elapsed();
    assert_eq!(s.code, code::WATCHDOG, "{s:x?}");
    assert!(
        s.va >= l2 && s.va < l2 + 64 * 24 && (s.va - l2).is_multiple_of(24),
        "ERROR_VA {:#x} is not one of the COPYs",
        s.va
    );
    assert_eq!(s.fence, 0);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "stopped after {elapsed:?}, documented 1 s of engine time"
    );
    let run_ns = counter(&d, VGPU_A, "engine_run_ns")?;
    assert!(
        run_ns >= 900_000_000,
        "engine_run_ns {run_ns} after a 1 s submission"
    );
    a.restart(0)?;
    a.submit(0, &Vgpu::fence(0, 2))?;
    a.wait_fence(0, 2)
}

#[test]
fn a_semaphore_released_by_another_channel_does_not_trip_the_watchdog() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    // Channel 0 waits for SEM >= 3; channel 1 writes it after 1.2 s of its
    // own semaphore wait released from the CPU.
    a.set_u32(SEM, 0);
    a.set_u32(SEM + 4, 0);
    a.submit(
        0,
        &cmd::concat(&[cmd::semaphore_wait(SEM, cmp::GE, 3), Vgpu::fence(0, 1)]),
    )?;
    a.submit(
        1,
        &cmd::concat(&[
            cmd::semaphore_wait(SEM + 4, cmp::NE, 0),
            cmd::fence(SEM, 3),
            Vgpu::fence(1, 1),
        ]),
    )?;
    std::thread::sleep(Duration::from_millis(1200));
    a.assert_running(0, "waiting 1.2 s")?;
    a.set_u32(SEM + 4, 1);
    a.wait_fence(1, 1)?;
    a.wait_fence(0, 1)?;
    Ok(())
}
