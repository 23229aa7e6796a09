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

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_setaffinity};
use vgpud_tests::regs::{bar2, region};
use vgpud_tests::{TestDaemon, VGPU_A};

/// vfio-user header plus the REGION_READ/WRITE fixed part, in bytes.
const ACCESS_HEADER: usize = 16 + 16;
/// A 4-byte read: request without data, reply with it.
const READ_SHAPE: (usize, usize) = (ACCESS_HEADER, ACCESS_HEADER + 4);
/// A 4-byte write: request with data, reply without.
const WRITE_SHAPE: (usize, usize) = (ACCESS_HEADER + 4, ACCESS_HEADER);
const ECHO_FLAG: &str = "--echo-server";
/// Rounds the measurements are interleaved in.
const ROUNDS: u64 = 5;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(ECHO_FLAG) {
        return echo_server(&args[2..]);
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

/// The floor: round trips of `shape` bytes through a Unix socket to a
/// child process (this bench re-executed) that answers each request.
struct Echo {
    child: KillOnDrop,
    stream: UnixStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Echo {
    fn start(shape: (usize, usize)) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("echo.sock");
        let listener = UnixListener::bind(&path)?;
        let child = Command::new(std::env::current_exe()?)
            .arg(ECHO_FLAG)
            .arg(&path)
            .arg(shape.0.to_string())
            .arg(shape.1.to_string())
            .spawn()?;
        let child = KillOnDrop(child);
        let (stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Echo {
            child,
            stream,
            request: vec![0x5a; shape.0],
            reply: vec![0; shape.1],
            _dir: dir,
        })
    }

    fn round_trip(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.request)?;
        self.stream.read_exact(&mut self.reply)?;
        Ok(())
    }

    /// Hangs up and checks that the echo server ended cleanly.
    fn finish(mut self) -> anyhow::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Both)?;
        let status = self.child.0.wait()?;
        if !status.success() {
            bail!("echo server exited with {status}");
        }
        Ok(())
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already exited in the normal case; then kill just fails.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Child mode: connect, then answer every `request`-byte message with a
/// `reply`-byte one until the parent hangs up.
fn echo_server(args: &[String]) -> anyhow::Result<()> {
    let [path, request, reply] = args else {
        bail!("usage: {ECHO_FLAG} SOCKET REQUEST_BYTES REPLY_BYTES");
    };
    pin(None)?;
    let mut stream = UnixStream::connect(path)?;
    let mut request = vec![0u8; request.parse()?];
    let reply = vec![0xa5u8; reply.parse()?];
    loop {
        match stream.read_exact(&mut request) {
            Ok(()) => stream.write_all(&reply)?,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}

struct Machine {
    cpus: usize,
    model: String,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        // Counted before pinning narrows what this process may use.
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        Machine { cpus, model }
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
