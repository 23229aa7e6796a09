//! What watching and managing the daemon costs the VMs it serves: the
//! trapped-register round trip of an attached vGPU (4-byte BAR2 reads)
//! while nothing else happens, against the same while a monitor polls
//! `stats` and `metrics` on the control socket 100 times a second (100
//! times what `vgpuctl top` does), and while vGPUs are created and removed
//! back to back on the same GPU. The three conditions are interleaved in
//! rounds, so drift in the machine's load falls on all of them.
//!
//! It also reports the control socket's own latency: `stats` and
//! `metrics` against `version`, which is the bare round trip of a control
//! request (the floor).
//!
//! Run: `cargo bench -p vgpud-tests --bench monitoring`
//! (`VGPUD_BENCH_OPS` sets the register reads per condition and round,
//! default 20000). It reports; it fails only if a request fails.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use common::host::{Machine, env_u64, prepare_daemon};
use common::stats::Samples;
use serde_json::{Value, json};
use vgpud_tests::control::{CONTROL_TIMEOUT, control_request};
use vgpud_tests::regs::region;
use vgpud_tests::{TestDaemon, VGPU_A};

const ROUNDS: usize = 5;
/// BAR2 offset of the DISPI id register.
const DISPI_ID: u64 = 0x500;
const MONITOR_PERIOD: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    Quiet,
    Monitor,
    Churn,
}

fn main() -> anyhow::Result<()> {
    let ops = env_u64("VGPUD_BENCH_OPS", 20_000)?;
    let machine = Machine::read();
    prepare_daemon()?;
    let daemon = TestDaemon::standard()?;
    let control = daemon.control_socket();
    let mut client = daemon.connect(VGPU_A)?;

    let mut samples = [Samples::new(), Samples::new(), Samples::new()];
    let mut background_requests = [0u64; 3];
    for _ in 0..ROUNDS {
        for (i, load) in [Load::Quiet, Load::Monitor, Load::Churn]
            .into_iter()
            .enumerate()
        {
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let background = {
                let (stop, done, control) = (Arc::clone(&stop), Arc::clone(&done), control.clone());
                std::thread::spawn(move || background(load, &control, &stop, &done))
            };
            for _ in 0..ops {
                let start = Instant::now();
                client.read_reg(region::BAR2, DISPI_ID, 4)?;
                samples[i].push(start.elapsed());
            }
            stop.store(true, Ordering::Relaxed);
            background.join().expect("background thread")?;
            background_requests[i] += done.load(Ordering::Relaxed);
        }
    }

    let mut control_samples = [Samples::new(), Samples::new(), Samples::new()];
    for _ in 0..200 {
        for (i, command) in ["version", "stats", "metrics"].into_iter().enumerate() {
            let start = Instant::now();
            request(&control, command, Value::Null)?;
            control_samples[i].push(start.elapsed());
        }
    }

    println!("monitoring: {}", machine.describe());
    println!("register round trip (4-byte BAR2 read), {ROUNDS} rounds of {ops} per condition:");
    let quiet_p50 = samples[0].quantile(0.5).as_nanos() as f64;
    for (i, name) in [
        "quiet",
        "stats+metrics at 100 Hz",
        "create+remove back to back",
    ]
    .iter()
    .enumerate()
    {
        let p50 = samples[i].quantile(0.5);
        let p99 = samples[i].quantile(0.99);
        println!(
            "  {name:<28} p50 {:>7.1} µs  p99 {:>7.1} µs  p50/quiet {:.3}  ({} control requests alongside)",
            p50.as_nanos() as f64 / 1e3,
            p99.as_nanos() as f64 / 1e3,
            p50.as_nanos() as f64 / quiet_p50,
            background_requests[i]
        );
    }
    println!("control round trip, 200 each:");
    let floor = control_samples[0].quantile(0.5).as_nanos() as f64;
    for (i, name) in ["version (floor)", "stats", "metrics"].iter().enumerate() {
        let p50 = control_samples[i].quantile(0.5);
        println!(
            "  {name:<16} p50 {:>7.1} µs  ratio to floor {:.2}",
            p50.as_nanos() as f64 / 1e3,
            p50.as_nanos() as f64 / floor
        );
    }
    Ok(())
}

fn request(control: &std::path::Path, command: &str, args: Value) -> anyhow::Result<Value> {
    let response = control_request(control, command, args, CONTROL_TIMEOUT)?;
    ensure!(response["ok"] == true, "{command}: {response}");
    Ok(response)
}

fn background(
    load: Load,
    control: &std::path::Path,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> anyhow::Result<()> {
    let transient = uuid::Uuid::from_u128(0xbe_0000);
    while !stop.load(Ordering::Relaxed) {
        match load {
            Load::Quiet => std::thread::sleep(Duration::from_millis(1)),
            Load::Monitor => {
                request(control, "stats", Value::Null)?;
                request(control, "metrics", Value::Null)?;
                done.fetch_add(2, Ordering::Relaxed);
                std::thread::sleep(MONITOR_PERIOD);
            }
            Load::Churn => {
                request(
                    control,
                    "create",
                    json!({"profile": "test-16m", "uuid": transient.to_string()}),
                )?;
                request(control, "remove", json!({"uuid": transient.to_string()}))?;
                done.fetch_add(2, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
