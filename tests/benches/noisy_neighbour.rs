//! Noisy neighbours: the doorbell-to-fence latency of one vGPU that submits
//! one small command at a time (a 64-byte FILL and a FENCE, trapped
//! doorbell), while 7 other vGPUs of the same GPU flood the engine with
//! big FILLs and COPYs, against the same vGPU alone (the others not
//! attached) and with the others attached but idle. Under `best-effort`
//! and under `equal-share`, 2 ms slices.
//!
//! After each fence the prober thinks for a random time, uniform in 0 to
//! 16 ms (a round of 8 slices), so that its submissions land at every
//! phase of the schedule. A client that submits again as soon as its
//! fence comes always arrives just after its own turn, and under round
//! robin then waits a whole round: one more row shows that closed loop.
//! The prober waits for each fence by looking and yielding for 300 µs,
//! then looking every 50 µs (so latencies past 300 µs carry up to about
//! 0.1 ms of polling delay).
//!
//! Each submission starts with a TIMESTAMP, so that its latency splits
//! into the wait from the doorbell to the engine starting it (the
//! scheduler's wait, plus the daemon taking the doorbell) and the rest
//! (running it, and the client seeing the fence). The engine clock is
//! mapped onto the client's from the submissions made alone (each
//! timestamp lies between its doorbell and its fence; the intersection of
//! those bounds is printed as the mapping's uncertainty).
//!
//! Run: `cargo bench -p vgpud-tests --bench noisy_neighbour`
//! (`VGPUD_BENCH_PROBES` sets the submissions per condition, default
//! 300). It reports; it fails only if a channel stops or a fence does
//! not come.

mod common;

use std::time::{Duration, Instant};

use common::flood::{FloodSpec, Flooder};
use common::host::{Machine, env_u64, prepare_daemon};
use common::rig::{DATA, Doorbell, Poll, Vgpu, one_gpu, profile, uuid, with_stderr};
use common::stats::{Samples, show};
use uuid::Uuid;
use vgpu_commands::StreamBuilder;
use vgpud_tests::TestDaemon;

const NEIGHBOURS: u32 = 7;
const FLOOD: FloodSpec = FloodSpec {
    bytes: 1 << 20,
    depth: 8,
    poll: Duration::from_millis(2),
};
/// Longest think time between a fence and the next submission.
const THINK: Duration = Duration::from_millis(16);
const POLL: Poll = Poll::SpinThenNap {
    spin: Duration::from_micros(300),
    nap: Duration::from_micros(50),
};
/// The time slice (the daemon's default).
const SLICE: Duration = Duration::from_millis(2);

fn main() -> anyhow::Result<()> {
    let probes = env_u64("VGPUD_BENCH_PROBES", 300)?;
    let machine = Machine::read();
    prepare_daemon()?;
    let prober = uuid(1);
    let neighbours: Vec<Uuid> = (2..=NEIGHBOURS + 1).map(uuid).collect();
    let mut results = Vec::new();
    for policy in ["best-effort", "equal-share"] {
        let mut vgpus = vec![(prober, "noisy")];
        vgpus.extend(neighbours.iter().map(|&u| (u, "noisy")));
        let config = one_gpu(
            "256MiB",
            Some(policy),
            vec![profile("noisy", "16MiB", NEIGHBOURS + 1, 1, None)],
            &vgpus,
        );
        let daemon = TestDaemon::start(&config)?;
        let mut vgpu = with_stderr(Vgpu::attach(&daemon, prober, 1), &daemon)?;
        let origin = Instant::now();
        let mut think = Think::new(0x9e37_79b9_7f4a_7c15);
        let alone = probe(&mut vgpu, probes, origin, Some(&mut think))?;
        // The neighbours attached, channels running, nothing submitted.
        let idle: Vec<Vgpu> = neighbours
            .iter()
            .map(|&u| Vgpu::attach(&daemon, u, 1))
            .collect::<anyhow::Result<_>>()?;
        let beside_idle = probe(&mut vgpu, probes, origin, Some(&mut think))?;
        drop(idle);
        let flooders = Flooder::start_all(&daemon, &neighbours, FLOOD)?;
        std::thread::sleep(Duration::from_millis(500));
        let flooded = probe(&mut vgpu, probes, origin, Some(&mut think))?;
        let closed_loop = probe(&mut vgpu, probes / 4, origin, None)?;
        Flooder::stop_all(flooders)?;
        vgpu.check_running(0)?;
        results.push((policy, alone, beside_idle, flooded, closed_loop));
    }

    println!("### Noisy neighbours (`noisy_neighbour`)\n");
    println!("- command: `cargo bench -p vgpud-tests --bench noisy_neighbour`");
    println!("- machine: {}", machine.describe());
    println!(
        "- one vGPU submitting a TIMESTAMP, a 64-byte FILL and a FENCE, then thinking 0 to {} ms (uniform) after the fence, {probes} times per row ({} in the closed loop, no think time); {NEIGHBOURS} neighbours each keeping {} submissions of a {} KiB FILL and COPY in flight; 2 ms slices\n",
        THINK.as_millis(),
        probes / 4,
        FLOOD.depth,
        FLOOD.bytes >> 10
    );
    println!(
        "| policy | neighbours | p50 | p99 | max | p50 − alone | p99 − alone | to engine start p50, p99 | engine start to fence seen p50, p99 |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut verdicts = Vec::new();
    for (policy, mut alone, mut idle, mut flooded, mut closed_loop) in results {
        let clock = alone.clock();
        let (a50, a99) = (alone.latency.median(), alone.latency.p99());
        for (name, run) in [
            ("none attached (alone)", &mut alone),
            ("7 attached, idle", &mut idle),
            ("7 flooding", &mut flooded),
            ("7 flooding, closed loop", &mut closed_loop),
        ] {
            let (mut start, mut rest) = run.split(&clock);
            let s = &mut run.latency;
            println!(
                "| {policy} | {name} | {} | {} | {} | {} | {} | {}, {} | {}, {} |",
                show(s.median()),
                show(s.p99()),
                show(s.max()),
                show(s.median().saturating_sub(a50)),
                show(s.p99().saturating_sub(a99)),
                show(start.median()),
                show(start.p99()),
                show(rest.median()),
                show(rest.p99()),
            );
        }
        verdicts.push(format!(
            "{policy}: engine clock mapped onto the client's within ±{}",
            show(clock.uncertainty)
        ));
        let extra50 = flooded.latency.median().saturating_sub(a50);
        let extra99 = flooded.latency.p99().saturating_sub(a99);
        verdicts.push(format!(
            "{policy}: flooded p50 {} over alone, p99 {} over alone (goal at most one slice, 2 ms: p50 {}, p99 {})",
            show(extra50),
            show(extra99),
            if extra50 <= SLICE { "met" } else { "missed" },
            if extra99 <= SLICE { "met" } else { "missed" },
        ));
    }
    println!();
    for verdict in verdicts {
        println!("{verdict}");
    }
    Ok(())
}

/// Where each probe's TIMESTAMP goes.
const STAMP: u64 = DATA + 0x1000;

/// What the probes of one condition saw, in ns since the bench's origin
/// (doorbell, fence seen) and on the engine clock (TIMESTAMP).
struct Probes {
    latency: Samples,
    /// (doorbell, fence seen, engine timestamp) of each probe.
    marks: Vec<(u64, u64, u64)>,
}

/// The engine clock on the client's: client ns = engine ns − `offset`.
struct Clock {
    offset: i128,
    uncertainty: Duration,
}

impl Probes {
    /// The offset every probe allows: each timestamp lies between its
    /// doorbell and its fence.
    fn clock(&self) -> Clock {
        let lo = self
            .marks
            .iter()
            .map(|&(_, seen, ts)| i128::from(ts) - i128::from(seen))
            .max()
            .unwrap_or(0);
        let hi = self
            .marks
            .iter()
            .map(|&(rung, _, ts)| i128::from(ts) - i128::from(rung))
            .min()
            .unwrap_or(0);
        Clock {
            offset: (lo + hi) / 2,
            uncertainty: Duration::from_nanos(((hi - lo).unsigned_abs() / 2) as u64),
        }
    }

    /// Each latency split at the engine's start of the submission.
    fn split(&self, clock: &Clock) -> (Samples, Samples) {
        let mut to_start = Samples::new();
        let mut rest = Samples::new();
        for &(rung, seen, ts) in &self.marks {
            let start = i128::from(ts) - clock.offset;
            let nanos = |d: i128| Duration::from_nanos(d.max(0) as u64);
            to_start.push(nanos(start - i128::from(rung)));
            rest.push(nanos(i128::from(seen) - start));
        }
        (to_start, rest)
    }
}

/// Random think times, uniform in 0 to [`THINK`] (xorshift64: the bench
/// needs spread, not quality).
struct Think(u64);

impl Think {
    fn new(seed: u64) -> Self {
        Think(seed | 1)
    }

    fn next(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        THINK.mul_f64((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// `probes` submissions of a TIMESTAMP and a small FILL on channel 0, one
/// at a time, each after a think time (none without `think`); times in ns
/// since `origin`.
fn probe(
    vgpu: &mut Vgpu,
    probes: u64,
    origin: Instant,
    mut think: Option<&mut Think>,
) -> anyhow::Result<Probes> {
    let mut small = StreamBuilder::new();
    small
        .timestamp(Vgpu::va(STAMP))
        .fill(Vgpu::va(DATA), 64, 0x0bad_cafe);
    let mut latency = Samples::new();
    let mut marks = Vec::with_capacity(probes as usize);
    for _ in 0..probes {
        if let Some(think) = think.as_deref_mut() {
            std::thread::sleep(think.next());
        }
        let put = vgpu.write_commands(0, &small)?;
        let value = vgpu.submitted(0);
        let start = Instant::now();
        vgpu.ring_doorbell(0, put, Doorbell::Trapped)?;
        vgpu.wait_fence(0, value, POLL)?;
        let seen = Instant::now();
        latency.push(seen - start);
        let at = STAMP as usize;
        let stamp = u64::from_le_bytes(vgpu.vram()[at..at + 8].try_into()?);
        let since = |t: Instant| (t - origin).as_nanos() as u64;
        marks.push((since(start), since(seen), stamp));
    }
    Ok(Probes { latency, marks })
}
