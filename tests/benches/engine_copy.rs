//! Engine COPY and FILL of 64 MiB, VRAM to VRAM through the GPU MMU, each
//! in one command, timed from the (trapped) doorbell to the fence seen in
//! the BAR0 mmap, against floors measured in the same run in this
//! process: `copy_from_slice` and `fill` of 64 MiB between pre-touched
//! buffers of its own (and, for reference, the same copy between the two
//! VRAM regions through the client's mmap of the slice).
//!
//! Run: `cargo bench -p vgpud-tests --bench engine_copy`
//! (`VGPUD_BENCH_ROUNDS` sets the interleaved rounds, default 21; medians
//! are reported). It reports; it fails only if the engine's results are
//! wrong or a channel stops.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::ensure;
use common::host::{EngineTime, Machine, engine_times, env_u64, prepare_daemon};
use common::rig::{Doorbell, Poll, Vgpu, one_gpu, profile, uuid, with_stderr};
use common::stats::median;
use vgpu_commands::StreamBuilder;
use vgpud_tests::TestDaemon;

const MIB: u64 = 1 << 20;
/// Bytes of each copy and fill.
const LEN: u64 = 64 * MIB;
/// Where in the 256 MiB slice: the source, the copy's destination, the
/// fill's destination.
const SRC: u64 = 64 * MIB;
const DST: u64 = 128 * MIB;
const FILL_AT: u64 = 192 * MIB;
const PATTERN: u32 = 0xc0de_f00d;

fn main() -> anyhow::Result<()> {
    let rounds = env_u64("VGPUD_BENCH_ROUNDS", 21)?;
    let machine = Machine::read();
    prepare_daemon()?;
    let vgpu_id = uuid(1);
    let config = one_gpu(
        "256MiB",
        None,
        vec![profile("copy-256m", "256MiB", 1, 1, None)],
        &[(vgpu_id, "copy-256m")],
    );
    let daemon = TestDaemon::start(&config)?;
    let mut vgpu = with_stderr(Vgpu::attach(&daemon, vgpu_id, 1), &daemon)?;
    let (src, dst, fill_at) = (SRC as usize, DST as usize, FILL_AT as usize);
    let len = LEN as usize;

    // Touch every page: a source pattern, the destinations overwritten.
    for (i, word) in vgpu.vram_mut()[src..src + len]
        .chunks_exact_mut(8)
        .enumerate()
    {
        word.copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    }
    vgpu.vram_mut()[dst..dst + len].fill(0xff);
    vgpu.vram_mut()[fill_at..fill_at + len].fill(0xff);
    let floor_src = vgpu.vram()[src..src + len].to_vec();
    let mut floor_dst = vec![0xffu8; len];
    let mut floor_fill = vec![1u32; len / 4];

    let mut copy = StreamBuilder::new();
    copy.copy(Vgpu::va(SRC), Vgpu::va(DST), LEN as u32);
    let mut fill = StreamBuilder::new();
    fill.fill(Vgpu::va(FILL_AT), LEN as u32, PATTERN);

    let mut times = Times::default();
    // Round 0 warms up (the daemon's first touch of each page of its
    // mapping faults it in) and checks the results; it is not counted.
    for round in 0..=rounds {
        let memcpy = timed(|| floor_dst.copy_from_slice(black_box(&floor_src)));
        let vram_memcpy = timed(|| vgpu.vram_mut().copy_within(src..src + len, dst));
        vgpu.vram_mut()[dst..dst + len].fill(0);
        let (engine_copy, copy_run) = engine(&daemon, &mut vgpu, &copy)?;
        let memset = timed(|| black_box(&mut floor_fill).fill(black_box(PATTERN)));
        let (engine_fill, fill_run) = engine(&daemon, &mut vgpu, &fill)?;
        if round == 0 {
            check(&vgpu)?;
            continue;
        }
        times.memcpy.push(memcpy);
        times.vram_memcpy.push(vram_memcpy);
        times.copy.push(engine_copy);
        times.copy_run.push(copy_run);
        times.memset.push(memset);
        times.fill.push(engine_fill);
        times.fill_run.push(fill_run);
    }
    check(&vgpu)?;
    black_box((&floor_dst, &floor_fill));
    drop(vgpu);
    drop(daemon);
    times.report(&machine, rounds);
    Ok(())
}

/// Seconds `f` took.
fn timed(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

/// Submits `commands` on channel 0 and waits for their fence: the seconds
/// from the doorbell to the fence, and the engine time `list` charged to
/// the vGPU meanwhile.
fn engine(
    daemon: &TestDaemon,
    vgpu: &mut Vgpu,
    commands: &StreamBuilder,
) -> anyhow::Result<(f64, f64)> {
    let before = engine_times(daemon, &[vgpu.uuid])?[0];
    let put = vgpu.write_commands(0, commands)?;
    let value = vgpu.submitted(0);
    let start = Instant::now();
    vgpu.ring_doorbell(0, put, Doorbell::Trapped)?;
    vgpu.wait_fence(0, value, Poll::Spin)?;
    let elapsed = start.elapsed().as_secs_f64();
    // The fence is written before the turn ends; let the runner report it.
    std::thread::sleep(Duration::from_millis(5));
    let after = engine_times(daemon, &[vgpu.uuid])?[0];
    let EngineTime { run_ns, .. } = after.since(&before);
    Ok((elapsed, run_ns as f64 / 1e9))
}

/// The engine's COPY reproduced the source and its FILL the pattern.
fn check(vgpu: &Vgpu) -> anyhow::Result<()> {
    let vram = vgpu.vram();
    let (src, dst, fill_at) = (SRC as usize, DST as usize, FILL_AT as usize);
    let len = LEN as usize;
    ensure!(
        vram[dst..dst + len] == vram[src..src + len],
        "the engine's COPY did not reproduce the source"
    );
    ensure!(
        vram[fill_at..fill_at + len]
            .chunks_exact(4)
            .all(|w| w == PATTERN.to_le_bytes()),
        "the engine's FILL did not write the pattern"
    );
    Ok(())
}

#[derive(Default)]
struct Times {
    memcpy: Vec<f64>,
    vram_memcpy: Vec<f64>,
    copy: Vec<f64>,
    copy_run: Vec<f64>,
    memset: Vec<f64>,
    fill: Vec<f64>,
    fill_run: Vec<f64>,
}

impl Times {
    fn report(&self, machine: &Machine, rounds: u64) {
        let per_round = |a: &[f64], b: &[f64]| -> Vec<f64> {
            a.iter().zip(b).map(|(floor, x)| floor / x).collect()
        };
        let copy_ratios = per_round(&self.memcpy, &self.copy);
        let fill_ratios = per_round(&self.memset, &self.fill);
        let fill_vs_memcpy = per_round(&self.memcpy, &self.fill);
        let vram_ratios = per_round(&self.memcpy, &self.vram_memcpy);
        let range = |r: &[f64]| {
            let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.iter().copied().fold(0.0, f64::max);
            format!("{lo:.2}–{hi:.2}")
        };
        let gbps = |seconds: f64| LEN as f64 / seconds / 1e9;
        println!("### Engine COPY and FILL of 64 MiB (`engine_copy`)\n");
        println!("- command: `cargo bench -p vgpud-tests --bench engine_copy`");
        println!("- machine: {}", machine.describe());
        println!(
            "- {rounds} interleaved rounds after a warm-up; medians; ratios per round (floor time / path time), median and range\n"
        );
        println!("| path | time for 64 MiB | GB/s | vs floor | range | engine time (`list`) |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        let row = |name: &str, t: &[f64], ratio: Option<&[f64]>, run: Option<&[f64]>| {
            let t = median(t);
            let (ratio, spread) = ratio.map_or(("1.00 (floor)".into(), String::new()), |r| {
                (format!("{:.2}", median(r)), range(r))
            });
            let run = run.map_or(String::new(), |r| format!("{:.2} ms", median(r) * 1e3));
            println!(
                "| {name} | {:.2} ms | {:.2} | {ratio} | {spread} | {run} |",
                t * 1e3,
                gbps(t)
            );
        };
        row(
            "`copy_from_slice`, 64 MiB (floor)",
            &self.memcpy,
            None,
            None,
        );
        row(
            "`copy_within` in the VRAM mmap",
            &self.vram_memcpy,
            Some(&vram_ratios),
            None,
        );
        row(
            "engine COPY, doorbell to fence",
            &self.copy,
            Some(&copy_ratios),
            Some(&self.copy_run),
        );
        row("`[u32]::fill`, 64 MiB (floor)", &self.memset, None, None);
        row(
            "engine FILL, doorbell to fence",
            &self.fill,
            Some(&fill_ratios),
            Some(&self.fill_run),
        );
        println!(
            "\nengine FILL vs the `copy_from_slice` floor: {:.2} ({})",
            median(&fill_vs_memcpy),
            range(&fill_vs_memcpy)
        );
        println!(
            "goal: engine COPY at least 0.8 of `copy_from_slice`: {}",
            if median(&copy_ratios) >= 0.8 {
                "met"
            } else {
                "missed"
            }
        );
    }
}
