//! Doorbell-to-fence latency of a small submission (a 64-byte FILL and a
//! FENCE) on one vGPU: rung through the channel's control page (a store
//! into the BAR0 mmap, picked up by the daemon's watcher, no exit) against
//! the trapped doorbell (a BAR2 write of RING_PUT, one vfio-user round
//! trip), and both against the floor measured in the same run: a bare
//! Unix-socket round trip of the trapped write's size, as `bar2_rtt`
//! measures it (the client and the echo child on CPU 0; the doorbell paths
//! run unpinned, because the daemon's watcher and engine threads need the
//! other CPU).
//!
//! Both paths measure the same completion signal: the FENCE's write of its
//! value into VRAM, seen through the client's mmap (the device mirrors the
//! same value into the control page right after; the bench checks the
//! mirror). The client waits by looking and yielding the CPU
//! (`sched_yield`) between looks.
//!
//! Back to back, each submission comes right after the previous fence, so
//! the watcher is still in its busy phase (it spins for 200 µs after a
//! doorbell). A second measurement leaves 20 ms between submissions, so
//! that the watcher has gone back to looking every 4 ms.
//!
//! Run: `cargo bench -p vgpud-tests --bench doorbell`
//! (`VGPUD_BENCH_ITERS` sets the submissions per path, default 2000;
//! `VGPUD_BENCH_IDLE_ITERS` those after 20 ms of quiet, default 100). It
//! reports; it fails only if a fence does not come or a channel stops.

mod common;

use std::time::{Duration, Instant};

use anyhow::ensure;
use common::floor::{Echo, WRITE_SHAPE, serve_if_child};
use common::host::{Machine, env_u64, prepare_daemon};
use common::rig::{DATA, Doorbell, Poll, Vgpu, one_gpu, profile, uuid, with_stderr};
use common::stats::{Samples, show};
use vgpu_commands::StreamBuilder;
use vgpud_tests::TestDaemon;
use vgpud_tests::regs::bar2;

/// Channel rung through its control page.
const PAGE: u32 = 0;
/// Channel rung through RING_PUT.
const TRAPPED: u32 = 1;
/// Rounds the paths are interleaved in.
const ROUNDS: u64 = 20;
/// Quiet before each submission of the second measurement.
const QUIET: Duration = Duration::from_millis(20);

fn main() -> anyhow::Result<()> {
    if serve_if_child()? {
        return Ok(());
    }
    let iters = env_u64("VGPUD_BENCH_ITERS", 2000)?;
    let idle_iters = env_u64("VGPUD_BENCH_IDLE_ITERS", 100)?;
    let machine = Machine::read();
    prepare_daemon()?;
    let id = uuid(1);
    let config = one_gpu(
        "64MiB",
        None,
        vec![profile("db-16m", "16MiB", 1, 2, None)],
        &[(id, "db-16m")],
    );
    let daemon = TestDaemon::start(&config)?;
    let mut vgpu = with_stderr(Vgpu::attach(&daemon, id, 2), &daemon)?;
    vgpu.enable_control_page(PAGE)?;
    let mut echo = Echo::start(WRITE_SHAPE)?;
    let mut small = StreamBuilder::new();
    small.fill(Vgpu::va(DATA), 64, 0x1234_5678);

    let mut page = Samples::new();
    let mut trapped = Samples::new();
    let mut register = Samples::new();
    let mut floor = Samples::new();
    let per_round = (iters / ROUNDS).max(1);
    let mut mask = 0u32;
    for _ in 0..ROUNDS {
        for _ in 0..per_round {
            page.push(submit(&mut vgpu, PAGE, &small, Doorbell::ControlPage)?);
        }
        for _ in 0..per_round {
            trapped.push(submit(&mut vgpu, TRAPPED, &small, Doorbell::Trapped)?);
        }
        for _ in 0..per_round {
            mask = (mask + 1) & 7;
            let start = Instant::now();
            vgpu.client.bar2_write32(bar2::IRQ_MASK, mask)?;
            register.push(start.elapsed());
        }
        echo.pinned(|echo| -> anyhow::Result<()> {
            for _ in 0..per_round {
                let start = Instant::now();
                echo.round_trip()?;
                floor.push(start.elapsed());
            }
            Ok(())
        })??;
    }
    let mut page_quiet = Samples::new();
    let mut trapped_quiet = Samples::new();
    let mut register_quiet = Samples::new();
    for _ in 0..idle_iters {
        std::thread::sleep(QUIET);
        page_quiet.push(submit(&mut vgpu, PAGE, &small, Doorbell::ControlPage)?);
        std::thread::sleep(QUIET);
        trapped_quiet.push(submit(&mut vgpu, TRAPPED, &small, Doorbell::Trapped)?);
        std::thread::sleep(QUIET);
        mask = (mask + 1) & 7;
        let start = Instant::now();
        vgpu.client.bar2_write32(bar2::IRQ_MASK, mask)?;
        register_quiet.push(start.elapsed());
    }
    // The page mirrors the channel's FENCE.
    std::thread::sleep(Duration::from_millis(1));
    ensure!(
        vgpu.page_fence(PAGE) == vgpu.submitted(PAGE),
        "the control page mirrors FENCE {} where {} completed",
        vgpu.page_fence(PAGE),
        vgpu.submitted(PAGE)
    );
    vgpu.check_running(PAGE)?;
    vgpu.check_running(TRAPPED)?;
    drop(vgpu);
    drop(daemon);

    println!("### Doorbell to fence (`doorbell`)\n");
    println!("- command: `cargo bench -p vgpud-tests --bench doorbell`");
    println!("- machine: {}", machine.describe());
    println!(
        "- a 64-byte FILL and a FENCE per submission; {} back to back per path in {ROUNDS} interleaved rounds; {idle_iters} per path after {} ms of quiet\n",
        per_round * ROUNDS,
        QUIET.as_millis()
    );
    println!("| path | p50 | p99 | max | p50 vs floor | p99 vs floor |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let floor_p50 = floor.median();
    let floor_p99 = floor.p99();
    let row = |name: &str, s: &mut Samples| {
        println!(
            "| {name} | {} | {} | {} | {:.1}× | {:.1}× |",
            show(s.median()),
            show(s.p99()),
            show(s.max()),
            s.median().as_secs_f64() / floor_p50.as_secs_f64(),
            s.p99().as_secs_f64() / floor_p99.as_secs_f64(),
        );
    };
    row("control-page doorbell, back to back", &mut page);
    row("trapped doorbell, back to back", &mut trapped);
    row("control-page doorbell, after quiet", &mut page_quiet);
    row("trapped doorbell, after quiet", &mut trapped_quiet);
    row("BAR2 register write alone (IRQ_MASK)", &mut register);
    row(
        "BAR2 register write alone, after quiet",
        &mut register_quiet,
    );
    row(
        "Unix-socket echo, 36 → 32 bytes, pinned (floor)",
        &mut floor,
    );
    let ratio = |a: &mut Samples, b: &mut Samples| {
        (
            a.median().as_secs_f64() / b.median().as_secs_f64(),
            a.p99().as_secs_f64() / b.p99().as_secs_f64(),
        )
    };
    let (busy50, busy99) = ratio(&mut page, &mut trapped);
    let (quiet50, quiet99) = ratio(&mut page_quiet, &mut trapped_quiet);
    println!(
        "\ncontrol page / trapped: back to back p50 {busy50:.2}, p99 {busy99:.2}; after quiet p50 {quiet50:.2}, p99 {quiet99:.2}"
    );
    println!(
        "goal (control page at most half of trapped, back to back p50): {}",
        if busy50 <= 0.5 { "met" } else { "missed" }
    );
    Ok(())
}

/// Writes `commands` into channel `n`'s ring, then times the doorbell to
/// the fence.
fn submit(
    vgpu: &mut Vgpu,
    n: u32,
    commands: &StreamBuilder,
    doorbell: Doorbell,
) -> anyhow::Result<Duration> {
    let put = vgpu.write_commands(n, commands)?;
    let value = vgpu.submitted(n);
    let start = Instant::now();
    vgpu.ring_doorbell(n, put, doorbell)?;
    vgpu.wait_fence(n, value, Poll::Spin)?;
    Ok(start.elapsed())
}
