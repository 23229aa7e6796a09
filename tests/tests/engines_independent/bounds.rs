//! Bounds ("Engine errors and limits"): 16 submissions per channel, 16 MiB
//! of validated copies per vGPU, 16 remembered doorbells per channel with
//! the later ones merged into the 16th; and what DMA_UNMAP, DEVICE_RESET
//! and a channel RESET do to an engine that is running: once they are
//! answered, nothing more of the work touches the memory.

use std::time::{Duration, Instant};

use vgpud_tests::host::pattern;
use vgpud_tests::regs::{bar2, channel as chreg, fault_info};

use crate::cmd::{self, cmp, code};
use crate::rig::*;

const MIB: u32 = 1 << 20;

/// Holds channel `ch` with a first submission that waits for SEM == 1.
fn hold(a: &mut Vgpu, ch: u32) -> anyhow::Result<()> {
    a.set_u32(SEM, 0);
    a.submit(
        ch,
        &cmd::concat(&[cmd::semaphore_wait(SEM, cmp::EQ, 1), Vgpu::fence(ch, 1)]),
    )?;
    Ok(())
}

#[test]
fn a_channel_holds_16_submissions_and_takes_the_17th_when_one_completes() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    hold(&mut a, 0)?;
    for k in 2..=16 {
        a.submit(0, &Vgpu::fence(0, k))?;
        let s = a.chan(0)?;
        assert_eq!(s.get, a.put(0), "submission {k} not taken: {s:x?}");
    }
    let held_get = a.put(0);
    a.submit(0, &Vgpu::fence(0, 17))?;
    let s = a.chan(0)?;
    assert_eq!(s.get, held_get, "a 17th submission was taken: {s:x?}");
    assert_eq!(s.put, a.put(0), "RING_PUT reads what was written");
    assert!(s.state() == 1 && s.busy(), "{s:x?}");
    std::thread::sleep(QUIET);
    assert_eq!(
        a.chan(0)?.get,
        held_get,
        "the waiting doorbell was taken without room"
    );
    a.set_u32(SEM, 1);
    a.wait_fence(0, 17)?;
    assert_eq!(a.chan(0)?.get, a.put(0));
    Ok(())
}

#[test]
fn doorbells_past_16_waiting_are_merged_into_the_16th() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    let subs = counter(&d, VGPU_A, "submissions")?;
    let cmds = counter(&d, VGPU_A, "commands")?;
    hold(&mut a, 0)?;
    for k in 2..=16 {
        a.submit(0, &Vgpu::fence(0, k))?;
    }
    // 20 doorbells find no room: 16 are remembered, the last 5 make one
    // span (the 16th remembered, to the latest PUT).
    let held_get = a.put(0);
    for k in 17..=36 {
        a.submit(0, &Vgpu::fence(0, k))?;
    }
    assert_eq!(a.chan(0)?.get, held_get);
    a.set_u32(SEM, 1);
    a.wait_fence(0, 36)?;
    let subs = wait_counter(&d, VGPU_A, "submissions", |v| v >= subs + 32)? - subs;
    let cmds = wait_counter(&d, VGPU_A, "commands", |v| v >= cmds + 37)? - cmds;
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        subs, 32,
        "16 taken + 16 remembered (the last 5 merged into one)"
    );
    assert_eq!(cmds, 2 + 15 + 20, "every command counted once");
    Ok(())
}

#[test]
fn a_vgpu_takes_doorbells_only_while_it_holds_under_16_mib() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    // Channel 0: a held first submission of exactly 1 MiB (its span is a
    // SEMAPHORE_WAIT and a BATCH_START, 32 bytes), then submissions of
    // exactly 1 MiB each (a BATCH_START, 16 bytes, of 1 MiB - 16).
    let (b1, b2) = (DATA, DATA + u64::from(MIB));
    a.write_dwords(b1, &cmd::nop_batch(MIB - 32));
    a.write_dwords(b2, &cmd::nop_batch(MIB - 16));
    a.set_u32(SEM, 0);
    a.submit(
        0,
        &cmd::concat(&[
            cmd::semaphore_wait(SEM, cmp::EQ, 1),
            cmd::batch_start(b1, MIB - 32),
        ]),
    )?;
    for k in 2..=15 {
        a.submit(0, &cmd::batch_start(b2, MIB - 16))?;
        assert_eq!(a.chan(0)?.get, a.put(0), "submission {k} not taken");
    }
    // 15 MiB held: another channel's small doorbell is taken and runs.
    a.submit(1, &Vgpu::fence(1, 1))?;
    assert_eq!(a.chan(1)?.get, a.put(1));
    a.wait_fence(1, 1)?;
    // The 16th MiB: taken (15 MiB < 16 MiB before it).
    a.submit(0, &cmd::batch_start(b2, MIB - 16))?;
    assert_eq!(a.chan(0)?.get, a.put(0), "16th MiB not taken");
    // Now 16 MiB are held: doorbells of channels 1 and 2 wait.
    let get1 = a.chan(1)?.get;
    a.submit(1, &Vgpu::fence(1, 2))?;
    a.submit(2, &Vgpu::fence(2, 1))?;
    std::thread::sleep(QUIET);
    let (s1, s2) = (a.chan(1)?, a.chan(2)?);
    assert_eq!(
        s1.get, get1,
        "channel 1's doorbell taken at 16 MiB: {s1:x?}"
    );
    assert_eq!(s2.get, 0, "channel 2's doorbell taken at 16 MiB: {s2:x?}");
    assert_eq!(s1.fence, 1);
    a.set_u32(SEM, 1);
    a.wait_fence(1, 2)?;
    a.wait_fence(2, 1)?;
    a.wait_for_idle(0)?;
    a.assert_running(0, "after 16 MiB of batches")?;
    Ok(())
}

/// L2: 32 COPYs of 2 MiB from `src` to `dst`; L1: `starts` starts of L2.
fn long_copy(a: &mut Vgpu, ch: u32, src: u64, dst: u64, starts: u32) -> anyhow::Result<()> {
    let l2 = BATCHES + 0x10_0000 + 0x1_0000 * u64::from(ch);
    let l1 = BATCHES + 0x1_0000 * u64::from(ch);
    let l2_words = cmd::batch(
        &(0..32)
            .map(|_| cmd::copy(src, dst, 2 << 20))
            .collect::<Vec<_>>(),
    );
    a.write_dwords(l2, &l2_words);
    let l1_words = cmd::batch(
        &(0..starts)
            .map(|_| cmd::batch_start(l2, cmd::bytes_of(&l2_words)))
            .collect::<Vec<_>>(),
    );
    a.write_dwords(l1, &l1_words);
    a.submit(
        ch,
        &cmd::concat(&[
            cmd::batch_start(l1, cmd::bytes_of(&l1_words)),
            Vgpu::fence(ch, 0xd0e),
        ]),
    )?;
    Ok(())
}

/// Waits until `probe` says the engine has started writing.
fn wait_started(probe: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    while !probe() {
        anyhow::ensure!(Instant::now() < deadline, "the copy never started");
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

#[test]
fn dma_unmap_under_a_running_copy_waits_it_out_and_later_accesses_fault() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    a.write_vram(DATA, &pattern(2 << 20, 5));
    // Channel 0 copies VRAM into guest memory, channel 1 guest memory into
    // VRAM, for far longer than the test.
    long_copy(&mut a, 0, DATA, VA_GUEST, 64)?;
    long_copy(&mut a, 1, VA_GUEST, DATA + (4 << 20), 64)?;
    wait_started(|| a.guest.bytes()[..4096].iter().any(|&b| b != 0))?;
    a.c.dma_unmap(GUEST_IOVA, GUEST_SIZE)?;
    // Answered: from now on no engine touches that memory.
    let guest_after = a.guest.bytes().to_vec();
    let vram_after = a.vram(DATA + (4 << 20), 2 << 20);
    // Change the guest memory: a read after the unmap would carry this.
    a.guest.bytes_mut().fill(0x3c);
    let guest_changed = a.guest.bytes().to_vec();
    std::thread::sleep(Duration::from_millis(200));
    assert_same(
        &guest_changed,
        a.guest.bytes(),
        "guest memory after DMA_UNMAP",
    )?;
    assert_same(
        &vram_after,
        &a.vram(DATA + (4 << 20), 2 << 20),
        "VRAM fed from unmapped guest memory",
    )?;
    assert!(
        !guest_after.iter().all(|&b| b == 0),
        "nothing was copied before"
    );
    for ch in [0, 1] {
        let s = a.wait_stopped(ch, DEADLINE)?;
        assert!(
            s.code == code::ENGINE_FAULT && (VA_GUEST..VA_GUEST + GUEST_SIZE).contains(&s.va),
            "channel {ch}: {s:x?}"
        );
    }
    let record = a.c.fault_record()?;
    assert_eq!(
        fault_info::reason(record.info),
        fault_info::NOT_MAPPED,
        "{record:x?}"
    );
    Ok(())
}

#[test]
fn device_reset_under_running_engines_stops_them_before_its_reply() -> anyhow::Result<()> {
    let d = daemon()?;
    let (mut a, mut b) = pair(&d)?;
    a.enable_all()?;
    b.enable(0)?;
    a.write_vram(DATA, &pattern(2 << 20, 6));
    long_copy(&mut a, 0, DATA, VA_GUEST, 64)?;
    long_copy(&mut a, 1, DATA, DATA + (4 << 20), 64)?;
    wait_started(|| a.guest.bytes()[..4096].iter().any(|&x| x != 0))?;
    a.c.reset()?;
    let guest_after = a.guest.bytes().to_vec();
    assert!(
        a.bar0.map.iter().all(|&x| x == 0),
        "VRAM not zero when DEVICE_RESET was answered"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        a.bar0.map.iter().all(|&x| x == 0),
        "an engine wrote VRAM after DEVICE_RESET"
    );
    assert_same(
        &guest_after,
        a.guest.bytes(),
        "guest memory after DEVICE_RESET",
    )?;
    for ch in 0..CHANNELS {
        let s = a.chan(ch)?;
        assert_eq!(
            s,
            Chan {
                status: 0,
                get: 0,
                put: 0,
                code: 0,
                va: 0,
                fence: 0,
                intr: 0
            },
            "channel {ch} after DEVICE_RESET"
        );
        assert_eq!(a.c.pt_root(ch)?, 0);
    }
    // The other vGPU never noticed.
    for k in 1..=5 {
        b.submit(0, &Vgpu::fence(0, k))?;
        b.wait_fence(0, k)?;
    }
    assert_eq!(a.ctl(bar2::FAULT_COUNT)?, 0);
    Ok(())
}

#[test]
fn channel_reset_under_a_running_copy_drops_it_before_its_reply() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    a.write_vram(DATA, &pattern(2 << 20, 7));
    long_copy(&mut a, 0, DATA, VA_GUEST, 64)?;
    wait_started(|| a.guest.bytes()[..4096].iter().any(|&x| x != 0))?;
    // A channel of its own keeps working through the other's reset.
    a.submit(
        1,
        &cmd::concat(&[cmd::fill(DATA + (6 << 20), 4096, 1), Vgpu::fence(1, 1)]),
    )?;
    a.set_reg(0, chreg::CONTROL, chreg::RESET)?;
    let guest_after = a.guest.bytes().to_vec();
    a.wait_fence(1, 1)?;
    std::thread::sleep(Duration::from_millis(200));
    assert_same(
        &guest_after,
        a.guest.bytes(),
        "guest memory after channel RESET",
    )?;
    let s = a.chan(0)?;
    assert_eq!((s.status, s.get, s.put, s.fence), (0, 0, 0, 0), "{s:x?}");
    // And it comes back.
    a.enable(0)?;
    a.submit(0, &Vgpu::fence(0, 5))?;
    a.wait_fence(0, 5)
}

/// Fills channel 0 with 16 held submissions, then rings `n` doorbells of
/// a 4-byte FILL of MARKS + 4i each; returns their ring offsets.
fn sixteen_and_waiting(a: &mut Vgpu, n: u32) -> anyhow::Result<Vec<u32>> {
    hold(a, 0)?;
    for k in 2..=16 {
        a.submit(0, &Vgpu::fence(0, k))?;
    }
    let spans: Vec<u32> = (0..n)
        .map(|i| a.submit(0, &cmd::fill(MARKS + 4 * u64::from(i), 4, 0x1000 + i)))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        a.chan(0)?.get == spans[0],
        "a doorbell was taken without room"
    );
    Ok(spans)
}

#[test]
fn a_waiting_doorbell_is_validated_when_it_is_taken() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    // Until taken, a waiting span is the guest's: rewrite two of three
    // into other valid FILLs (same lengths). They run as rewritten.
    let spans = sixteen_and_waiting(&mut a, 3)?;
    let base = a.ring_base(0);
    let at = |off: u32| base + u64::from(off);
    a.write_dwords(at(spans[0]), &cmd::fill(MARKS + 0x40, 4, 0x2222));
    a.write_dwords(at(spans[2]), &cmd::fill(MARKS + 0x48, 4, 0x3333));
    a.set_u32(SEM, 1);
    a.wait_for_idle(0)?;
    a.assert_running(0, "after the waiting spans")?;
    assert_eq!(a.u32_at(MARKS + 0x40), 0x2222, "the rewritten first span");
    assert_eq!(a.u32_at(MARKS + 4), 0x1001, "the second span");
    assert_eq!(a.u32_at(MARKS + 0x48), 0x3333, "the rewritten third span");
    assert_eq!(
        (a.u32_at(MARKS), a.u32_at(MARKS + 8)),
        (0, 0),
        "a span ran as first written"
    );
    // Rewritten into a privileged form: refused when taken, at its VA,
    // with GET at its start.
    a.write_vram(MARKS, &[0; 0x80]);
    a.restart(0)?;
    let spans = sixteen_and_waiting(&mut a, 1)?;
    a.write_dwords(
        at(spans[0]),
        &cmd::with(cmd::fill(MARKS, 4, 0), cmd::PHYSICAL),
    );
    a.set_u32(SEM, 1);
    let s = a.wait_stopped(0, DEADLINE)?;
    assert_eq!(
        (s.code, s.va, s.get),
        (code::PRIVILEGED, at(spans[0]), spans[0]),
        "the waiting span, rewritten before it was taken: {s:?}"
    );
    Ok(())
}

#[test]
fn a_client_that_disconnects_mid_copy_leaves_its_memory_alone() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    a.write_vram(DATA, &pattern(2 << 20, 8));
    long_copy(&mut a, 0, DATA, VA_GUEST, 64)?;
    wait_started(|| a.guest.bytes()[..4096].iter().any(|&x| x != 0))?;
    a.c.shutdown();
    let deadline = Instant::now() + DEADLINE;
    while vgpud_tests::control::list_entry(&d.control_socket(), VGPU_A)?["attached"] == true {
        anyhow::ensure!(Instant::now() < deadline, "still attached");
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = a.guest.bytes().to_vec();
    std::thread::sleep(Duration::from_millis(200));
    assert_same(
        &after,
        a.guest.bytes(),
        "guest memory after the client left",
    )?;
    // The next client gets a fresh vGPU.
    let mut again = Vgpu::attach(&d, VGPU_A)?;
    assert_eq!(again.chan(0)?.status, 0);
    again.enable(0)?;
    again.submit(0, &Vgpu::fence(0, 1))?;
    again.wait_fence(0, 1)
}
