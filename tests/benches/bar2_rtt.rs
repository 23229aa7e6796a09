//! Trapped-register round trip: synchronous 4-byte BAR2 reads and writes
//! through the raw vfio-user client against a release `vgpud`, reported as
//! a ratio to the floor measured in the same run, a raw Unix-socket echo
//! that moves the same number of bytes each way.
//!
//! The client, the daemon and the echo server are all pinned to CPU 0, so
//! every round trip is two context switches on one CPU, as in the
//! reference measurement (echo about 121k round trips/s on the project's
//! machine; libvfio-user's sample server at 0.90 of it).
//!
//! Run: `cargo bench -p vgpud-tests --bench bar2_rtt`
//! (`VGPUD_BENCH_OPS` sets the operations per measurement, default 200000).
//! It reports; it never fails on speed.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::floor::{Echo, READ_SHAPE, WRITE_SHAPE, serve_if_child};
use common::host::Machine;
use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_setaffinity};
use vgpud_tests::regs::{bar2, region};
use vgpud_tests::{TestDaemon, VGPU_A};

/// Rounds the measurements are interleaved in.
const ROUNDS: u64 = 5;

fn main() -> anyhow::Result<()> {
    if serve_if_child()? {
        return Ok(());
    }
    let ops: u64 = match std::env::var("VGPUD_BENCH_OPS") {
        Ok(value) => value.parse().context("VGPUD_BENCH_OPS")?,
        Err(_) => 200_000,
    };
    let machine = Machine::read();
    // Before anything is spawned: children inherit the affinity.
    pin(None)?;
    if std::env::var_os("VGPUD_BIN").is_none() {
        // Rebuild so that the release binary the harness picks is current.
        vgpud_tests::daemon::build_vgpud()?;
    }
    let daemon = TestDaemon::standard()?;
    let mut client = daemon.connect(VGPU_A)?;
    pin_process(daemon.pid().context("daemon pid")?)?;

    let mut echo_read = Echo::start(READ_SHAPE)?;
    let mut echo_write = Echo::start(WRITE_SHAPE)?;
    let mut read = Measurement::new();
    let mut write = Measurement::new();
    let mut floor_read = Measurement::new();
    let mut floor_write = Measurement::new();
    let mut mask = 0u32;
    // Interleaved rounds, so that load from elsewhere on the machine
    // weighs on the daemon and on its floor alike.
    for _ in 0..ROUNDS {
        read.run(ops / ROUNDS, || {
            let value = client.read_reg(region::BAR2, bar2::MAGIC, 4)?;
            anyhow::ensure!(
                value == u64::from(bar2::MAGIC_VALUE),
                "MAGIC read {value:#x}"
            );
            Ok(())
        })?;
        floor_read.run(ops / ROUNDS, || echo_read.round_trip())?;
        write.run(ops / ROUNDS, || {
            mask = (mask + 1) & 7;
            Ok(client.region_write(region::BAR2, bar2::IRQ_MASK, &mask.to_le_bytes())?)
        })?;
        floor_write.run(ops / ROUNDS, || echo_write.round_trip())?;
    }
    drop(client);
    drop(daemon);
    echo_read.finish()?;
    echo_write.finish()?;

    let rows = [
        Row::new("vgpud BAR2 read, 4 B", READ_SHAPE, &read, Some(&floor_read)),
        Row::new("echo floor", READ_SHAPE, &floor_read, None),
        Row::new(
            "vgpud BAR2 write, 4 B",
            WRITE_SHAPE,
            &write,
            Some(&floor_write),
        ),
        Row::new("echo floor", WRITE_SHAPE, &floor_write, None),
    ];
    print_report(&machine, ops, &rows);
    Ok(())
}

/// Pins a thread (None: the calling one) to CPU 0.
fn pin(tid: Option<Pid>) -> anyhow::Result<()> {
    let mut cpus = CpuSet::new();
    cpus.set(0);
    sched_setaffinity(tid, &cpus).context("sched_setaffinity")
}

/// Pins every thread of process `pid` to CPU 0 (they inherited it from us
/// already; this also covers threads created before that mattered).
fn pin_process(pid: u32) -> anyhow::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid = task?.file_name().to_string_lossy().parse::<i32>()?;
        // A thread may have exited since the listing.
        let _ = pin(Pid::from_raw(tid));
    }
    Ok(())
}

/// Latency histogram: 10 ns buckets up to 1 ms, so recording allocates
/// nothing and costs one increment.
struct Histogram {
    buckets: Vec<u32>,
    overflow: u64,
    count: u64,
}

const BUCKET_NS: u64 = 10;
const BUCKETS: usize = 100_000;

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: vec![0; BUCKETS],
            overflow: 0,
            count: 0,
        }
    }

    fn record(&mut self, elapsed: Duration) {
        let bucket = (elapsed.as_nanos() as u64 / BUCKET_NS) as usize;
        match self.buckets.get_mut(bucket) {
            Some(slot) => *slot += 1,
            None => self.overflow += 1,
        }
        self.count += 1;
    }

    /// The latency below which `quantile` of the samples lie (upper bucket
    /// edge); `None` if it falls in the overflow.
    fn quantile(&self, quantile: f64) -> Option<Duration> {
        let wanted = (quantile * self.count as f64).ceil() as u64;
        let mut seen = 0u64;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= wanted {
                return Some(Duration::from_nanos((index as u64 + 1) * BUCKET_NS));
            }
        }
        None
    }
}

/// Round trips timed so far on one path.
struct Measurement {
    ops: u64,
    elapsed: Duration,
    histogram: Histogram,
}

impl Measurement {
    fn new() -> Self {
        Measurement {
            ops: 0,
            elapsed: Duration::ZERO,
            histogram: Histogram::new(),
        }
    }

    /// Runs `op` for a short warm-up, then `ops` times, each timed.
    fn run(&mut self, ops: u64, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
        for _ in 0..(ops / 50).max(100) {
            op()?;
        }
        let start = Instant::now();
        let mut last = start;
        for _ in 0..ops {
            op()?;
            let now = Instant::now();
            self.histogram.record(now - last);
            last = now;
        }
        self.ops += ops;
        self.elapsed += last - start;
        Ok(())
    }

    fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

struct Row<'a> {
    name: &'a str,
    shape: (usize, usize),
    measurement: &'a Measurement,
    floor: Option<&'a Measurement>,
}

impl<'a> Row<'a> {
    fn new(
        name: &'a str,
        shape: (usize, usize),
        measurement: &'a Measurement,
        floor: Option<&'a Measurement>,
    ) -> Self {
        Row {
            name,
            shape,
            measurement,
            floor,
        }
    }
}

fn micros(value: Option<Duration>) -> String {
    value.map_or_else(
        || "> 1 ms".into(),
        |d| format!("{:.2} µs", d.as_secs_f64() * 1e6),
    )
}

fn print_report(machine: &Machine, ops: u64, rows: &[Row<'_>]) {
    println!("### BAR2 register round trip (`bar2_rtt`)\n");
    println!("- command: `cargo bench -p vgpud-tests --bench bar2_rtt`");
    println!(
        "- machine: {} CPUs (nproc), {}; client, vgpud and echo server pinned to CPU 0",
        machine.cpus, machine.model
    );
    println!(
        "- {ops} synchronous round trips per row, in {ROUNDS} interleaved rounds after warm-ups\n"
    );
    println!("| path | bytes request → reply | round trips/s | p50 | p99 | vs floor |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for row in rows {
        let ratio = row.floor.map_or_else(
            || "1.00 (floor)".to_string(),
            |floor| {
                format!(
                    "{:.2}",
                    row.measurement.ops_per_second() / floor.ops_per_second()
                )
            },
        );
        println!(
            "| {} | {} → {} | {:.0} | {} | {} | {} |",
            row.name,
            row.shape.0,
            row.shape.1,
            row.measurement.ops_per_second(),
            micros(row.measurement.histogram.quantile(0.50)),
            micros(row.measurement.histogram.quantile(0.99)),
            ratio
        );
    }
}
