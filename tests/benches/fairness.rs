//! Engine fairness on one GPU: 8 vGPUs whose clients keep their queues
//! full of big FILLs and COPYs, each vGPU's engine time (`engine_run_ns`
//! of `list`) read before and after a window of several seconds.
//!
//! - `equal-share`: Jain's fairness index of the 8 run times (goal: at
//!   least 0.99);
//! - `fixed-share` with weights 1, 2, 3, 4, 1, 2, 3, 4 (profiles with
//!   `weight = N`): each share against weight / 20 (goal: within 5% of
//!   it, relative).
//!
//! The floor of a share is the policy's own: what the scheduler's
//! simulation in docs/scheduling.md reaches (1.000000 and shares within
//! 0.02%); this bench shows what the running daemon reaches with real
//! engine work, real clients and their threads on a 2-CPU machine.
//!
//! Run: `cargo bench -p vgpud-tests --bench fairness`
//! (`VGPUD_BENCH_SECONDS` sets each window, default 8). It reports; it
//! fails only if a channel stops or a fence does not come.

mod common;

use std::time::{Duration, Instant};

use common::flood::{FloodSpec, Flooder};
use common::host::{EngineTime, Machine, engine_times, env_seconds, prepare_daemon};
use common::rig::{one_gpu, profile, uuid};
use common::stats::jain;
use uuid::Uuid;
use vgpud_tests::TestDaemon;

const VGPUS: u32 = 8;
/// Each submission: a FILL of 1 MiB and a COPY of 1 MiB (about 1 ms of
/// engine time on the reference machine), 12 kept in flight (of the 16 a
/// channel holds), a look every 2 ms: a weight-4 vGPU's queue then holds
/// about 30 ms of its wall time, so that a client thread the loaded
/// machine delays for a few ms does not let it run dry.
const FLOOD: FloodSpec = FloodSpec {
    bytes: 1 << 20,
    depth: 12,
    poll: Duration::from_millis(2),
};
/// Flooding before the window opens.
const WARM_UP: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let window = env_seconds("VGPUD_BENCH_SECONDS", Duration::from_secs(8))?;
    let machine = Machine::read();
    prepare_daemon()?;
    let uuids: Vec<Uuid> = (1..=VGPUS).map(uuid).collect();

    let equal = {
        let vgpus: Vec<(Uuid, &str)> = uuids.iter().map(|&u| (u, "fair")).collect();
        let config = one_gpu(
            "256MiB",
            Some("equal-share"),
            vec![profile("fair", "16MiB", VGPUS, 1, None)],
            &vgpus,
        );
        measure(&config, &uuids, window)?
    };
    let weights: Vec<u32> = (0..VGPUS).map(|i| i % 4 + 1).collect();
    let fixed = {
        let names: Vec<String> = weights.iter().map(|w| format!("weight-{w}")).collect();
        let vgpus: Vec<(Uuid, &str)> = uuids
            .iter()
            .zip(&names)
            .map(|(&u, name)| (u, name.as_str()))
            .collect();
        let profiles = (1..=4)
            .map(|w| profile(&format!("weight-{w}"), "16MiB", VGPUS, 1, Some(w)))
            .collect();
        let config = one_gpu("256MiB", Some("fixed-share"), profiles, &vgpus);
        measure(&config, &uuids, window)?
    };

    println!("### Engine fairness (`fairness`)\n");
    println!("- command: `cargo bench -p vgpud-tests --bench fairness`");
    println!("- machine: {}", machine.describe());
    println!(
        "- {VGPUS} vGPUs on one GPU (2 ms slices), each client keeping {} submissions of a {} KiB FILL and a {} KiB COPY in flight; engine time over a {:.0} s window after {:.0} s of flooding\n",
        FLOOD.depth,
        FLOOD.bytes >> 10,
        FLOOD.bytes >> 10,
        window.as_secs_f64(),
        WARM_UP.as_secs_f64()
    );
    let equal_weights = vec![1; VGPUS as usize];
    report("equal-share", &equal, &equal_weights);
    report("fixed-share", &fixed, &weights);
    let equal_runs: Vec<f64> = equal.times.iter().map(|t| t.run_ns as f64).collect();
    let jain_equal = jain(&equal_runs);
    println!(
        "equal-share: Jain's index {jain_equal:.6} (goal at least 0.99: {})",
        if jain_equal >= 0.99 { "met" } else { "missed" }
    );
    let worst = worst_deviation(&fixed, &weights);
    println!(
        "fixed-share: largest deviation from weight / {} is {:+.2}% (goal within 5%: {})",
        weights.iter().sum::<u32>(),
        worst * 100.0,
        if worst.abs() <= 0.05 { "met" } else { "missed" }
    );
    Ok(())
}

/// What one window saw.
struct Window {
    /// Engine time of each vGPU over the window.
    times: Vec<EngineTime>,
    /// Wall time of the window.
    wall: Duration,
    /// Submissions each client made over its whole flood.
    submissions: Vec<u64>,
}

/// Starts a daemon on `config`, floods every vGPU of `uuids`, and reads
/// their engine time over `window`.
fn measure(
    config: &vgpud_tests::DaemonConfig,
    uuids: &[Uuid],
    window: Duration,
) -> anyhow::Result<Window> {
    let daemon = TestDaemon::start(config)?;
    let flooders = Flooder::start_all(&daemon, uuids, FLOOD)?;
    std::thread::sleep(WARM_UP);
    let before = engine_times(&daemon, uuids)?;
    let start = Instant::now();
    std::thread::sleep(window);
    let after = engine_times(&daemon, uuids)?;
    let wall = start.elapsed();
    let flooded = Flooder::stop_all(flooders)?;
    Ok(Window {
        times: after.iter().zip(&before).map(|(a, b)| a.since(b)).collect(),
        wall,
        submissions: flooded.iter().map(|f| f.submissions).collect(),
    })
}

/// Each share's relative deviation from weight / Σ weights; the largest
/// in size.
fn worst_deviation(window: &Window, weights: &[u32]) -> f64 {
    let total: f64 = window.times.iter().map(|t| t.run_ns as f64).sum();
    let weight_sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    window
        .times
        .iter()
        .zip(weights)
        .map(|(t, &w)| (t.run_ns as f64 / total) / (f64::from(w) / weight_sum) - 1.0)
        .fold(
            0.0,
            |worst: f64, d| if d.abs() > worst.abs() { d } else { worst },
        )
}

fn report(policy: &str, window: &Window, weights: &[u32]) {
    let total: f64 = window.times.iter().map(|t| t.run_ns as f64).sum();
    let weight_sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let wall_ns = window.wall.as_nanos() as f64;
    println!(
        "{policy}: the engine ran vGPU work {:.1}% of the {:.2} s window\n",
        total / wall_ns * 100.0,
        window.wall.as_secs_f64()
    );
    println!(
        "| vGPU | weight | run | share | expected | deviation | wait | idle | submissions (whole run) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, (t, &w)) in window.times.iter().zip(weights).enumerate() {
        let share = t.run_ns as f64 / total;
        let expected = f64::from(w) / weight_sum;
        println!(
            "| {} | {w} | {:.0} ms | {share:.4} | {expected:.4} | {:+.2}% | {:.0} ms | {:.0} ms | {} |",
            i + 1,
            t.run_ns as f64 / 1e6,
            (share / expected - 1.0) * 100.0,
            t.wait_ns as f64 / 1e6,
            t.idle_ns as f64 / 1e6,
            window.submissions[i],
        );
    }
    println!();
}
