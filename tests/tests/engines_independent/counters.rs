//! The control API's per-vGPU engine counters (`docs/control-api.md`,
//! `list`): `submissions` (ring spans validated and queued), `commands`
//! (commands in them), `refused_submissions` (spans refused, each stopping
//! its channel), and `engine_run_ns`, `engine_wait_ns`, `engine_idle_ns`,
//! which count since start-up over every attachment.

use std::time::{Duration, Instant};

use crate::cmd::{self, code};
use crate::rig::*;

fn counters(d: &vgpud_tests::TestDaemon, uuid: uuid::Uuid) -> anyhow::Result<[u64; 6]> {
    let names = [
        "submissions",
        "commands",
        "refused_submissions",
        "engine_run_ns",
        "engine_wait_ns",
        "engine_idle_ns",
    ];
    let mut out = [0; 6];
    for (i, name) in names.iter().enumerate() {
        out[i] = counter(d, uuid, name)?;
    }
    Ok(out)
}

#[test]
fn submissions_commands_and_refusals_are_counted_as_documented() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    let [s0, c0, r0, ..] = counters(&d, VGPU_A)?;
    // Three spans of 3, 1 and 2 commands.
    a.submit(
        0,
        &cmd::concat(&[cmd::fill(DATA, 64, 1), cmd::nop(3), Vgpu::fence(0, 1)]),
    )?;
    a.submit(0, &Vgpu::fence(0, 2))?;
    a.submit(1, &cmd::concat(&[cmd::nop(1), Vgpu::fence(1, 1)]))?;
    a.wait_fence(0, 2)?;
    a.wait_fence(1, 1)?;
    // An empty doorbell (PUT = GET) submits nothing.
    a.doorbell(0)?;
    let s = wait_counter(&d, VGPU_A, "submissions", |v| v >= s0 + 3)?;
    let c = wait_counter(&d, VGPU_A, "commands", |v| v >= c0 + 6)?;
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        counter(&d, VGPU_A, "submissions")? - s0,
        3,
        "submissions ({s})"
    );
    assert_eq!(counter(&d, VGPU_A, "commands")? - c0, 6, "commands ({c})");
    // Two refused spans: counted as refused, not as submissions.
    a.submit(2, &cmd::concat(&[Vgpu::fence(2, 1), cmd::set_context(0)]))?;
    a.assert_refused(2, code::PRIVILEGED, a.ring_va(2, 20), 0, "SET_CONTEXT")?;
    a.set_reg(3, vgpud_tests::regs::channel::RING_PUT, 3)?;
    a.assert_refused(3, code::BAD_RING, 3, 0, "PUT 3")?;
    let r = wait_counter(&d, VGPU_A, "refused_submissions", |v| v >= r0 + 2)?;
    assert_eq!(r - r0, 2, "refused_submissions");
    assert_eq!(counter(&d, VGPU_A, "submissions")? - s0, 3);
    assert_eq!(counter(&d, VGPU_A, "commands")? - c0, 6);
    // The other vGPU's counters did not move.
    let b = counters(&d, VGPU_B)?;
    assert_eq!(&b[..3], &[0, 0, 0], "the other vGPU counted something");
    Ok(())
}

#[test]
fn a_batch_counts_as_part_of_its_submission() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    let [s0, c0, ..] = counters(&d, VGPU_A)?;
    let words = cmd::batch(&[cmd::nop(1), cmd::nop(1), cmd::nop(1)]);
    a.write_dwords(BATCHES, &words);
    a.submit(
        0,
        &cmd::concat(&[
            cmd::batch_start(BATCHES, cmd::bytes_of(&words)),
            Vgpu::fence(0, 1),
        ]),
    )?;
    a.wait_fence(0, 1)?;
    let s = wait_counter(&d, VGPU_A, "submissions", |v| v > s0)? - s0;
    std::thread::sleep(Duration::from_millis(30));
    let c = counter(&d, VGPU_A, "commands")? - c0;
    assert_eq!(s, 1, "one span, one submission");
    // The document does not say whether a batch's commands count: at least
    // the two ring commands, at most those and the batch's four.
    eprintln!("a ring span of 2 commands starting a batch of 3 + BATCH_END counts {c} commands");
    assert!((2..=6).contains(&c), "commands {c}");
    Ok(())
}

#[test]
fn engine_time_counters_follow_the_work_and_survive_reattachment() -> anyhow::Result<()> {
    let d = daemon()?;
    let t0 = Instant::now();
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    let [.., run0, _wait0, idle0] = counters(&d, VGPU_A)?;
    // 24 starts of 16 × 2 MiB copies: some hundreds of ms, well under the
    // 1 s watchdog.
    a.write_vram(DATA, &[1; 4096]);
    let l2 = cmd::batch(
        &(0..16)
            .map(|_| cmd::copy(DATA, DATA + (4 << 20), 2 << 20))
            .collect::<Vec<_>>(),
    );
    a.write_dwords(BATCHES + 0x1_0000, &l2);
    let l1 = cmd::batch(
        &(0..24)
            .map(|_| cmd::batch_start(BATCHES + 0x1_0000, cmd::bytes_of(&l2)))
            .collect::<Vec<_>>(),
    );
    a.write_dwords(BATCHES, &l1);
    let start = Instant::now();
    a.submit(
        0,
        &cmd::concat(&[
            cmd::batch_start(BATCHES, cmd::bytes_of(&l1)),
            Vgpu::fence(0, 1),
        ]),
    )?;
    a.wait_fence(0, 1)?;
    let busy = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    // A doorbell, so that the idle stretch is accounted (see the ignored
    // test below: the counters lag while nothing happens).
    a.submit(0, &Vgpu::fence(0, 2))?;
    a.wait_fence(0, 2)?;
    let [.., run1, wait1, idle1] = counters(&d, VGPU_A)?;
    let elapsed = t0.elapsed();
    eprintln!(
        "busy {busy:?}: run {} ms, wait {} ms, idle {} ms over {elapsed:?}",
        (run1 - run0) / 1_000_000,
        wait1 / 1_000_000,
        (idle1 - idle0) / 1_000_000
    );
    assert!(run1 > run0, "engine_run_ns did not move");
    assert!(
        Duration::from_nanos(run1 - run0) <= busy + Duration::from_millis(50),
        "more run time than the work took"
    );
    assert!(
        Duration::from_nanos(run1 - run0) >= busy / 4,
        "run time {} ns for {busy:?} of work alone",
        run1 - run0
    );
    assert!(
        idle1 - idle0 >= 200_000_000,
        "300 ms attached without work added {} ns of idle",
        idle1 - idle0
    );
    let total = Duration::from_nanos(run1 + wait1 + idle1);
    assert!(
        total <= elapsed + Duration::from_millis(20),
        "run + wait + idle {total:?} exceed the {elapsed:?} attached"
    );
    // Detach and attach again: the counters go on from where they were.
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    let [s2, c2, _, run2, ..] = counters(&d, VGPU_A)?;
    assert!(run2 >= run1, "engine_run_ns went back after reattaching");
    assert!(
        s2 >= 2 && c2 >= 2,
        "submissions/commands reset by a reattachment"
    );
    a.enable(0)?;
    a.submit(0, &Vgpu::fence(0, 1))?;
    a.wait_fence(0, 1)?;
    Ok(())
}

#[test]
fn engine_counters_add_up_to_the_time_attached_when_read() -> anyhow::Result<()> {
    let d = daemon()?;
    let t0 = Instant::now();
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    a.submit(0, &Vgpu::fence(0, 1))?;
    a.wait_fence(0, 1)?;
    std::thread::sleep(Duration::from_millis(500));
    let [.., run, wait, idle] = counters(&d, VGPU_A)?;
    let elapsed = t0.elapsed();
    let total = Duration::from_nanos(run + wait + idle);
    // docs/scheduling.md, "Counters": every nanosecond since the vGPU
    // registered is in exactly one of them.
    assert!(
        total + Duration::from_millis(100) >= elapsed,
        "run {run} + wait {wait} + idle {idle} = {total:?} after {elapsed:?} attached"
    );
    Ok(())
}
