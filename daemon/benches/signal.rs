//! What signalling an interrupt costs now that the client's eventfd cannot
//! be trusted to stay non-blocking: `cargo bench -p vgpud --bench signal`.
//!
//! The floor is the plain `write(2)` of 1 to a non-blocking eventfd, the
//! one system call a signal needs; `EventFd::signal` makes the same write
//! within the watchdog's deadline (two atomic increments around it). Both
//! run on the same eventfd, interleaved round by round, 9 rounds of
//! 200 000 signals (`SIGNAL_BENCH_OPS` changes the count); medians are
//! reported.

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, eventfd};
use vgpu_mdev::{InterruptTrigger, Signalled};
use vgpud::eventfd::EventFd;

fn drain(fd: &OwnedFd) {
    let mut count = [0u8; 8];
    let _ = rustix::io::read(fd, &mut count);
}

fn floor(fd: &OwnedFd, ops: u32) -> Duration {
    let one = 1u64.to_ne_bytes();
    let start = Instant::now();
    for _ in 0..ops {
        black_box(rustix::io::write(fd, &one)).expect("write");
    }
    start.elapsed()
}

fn signal(event: &EventFd, ops: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..ops {
        assert_eq!(black_box(event.signal()), Signalled::Delivered);
    }
    start.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let ops: u32 = std::env::var("SIGNAL_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd");
    let reader = fd.try_clone().expect("dup");
    let event = EventFd::from_client(fd.try_clone().expect("dup")).expect("an eventfd");
    // Warm up: the thread is registered with the watchdog on first use.
    signal(&event, 1000);
    let (mut floors, mut signals) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        drain(&reader);
        floors.push(floor(&fd, ops));
        drain(&reader);
        signals.push(signal(&event, ops));
    }
    let floor = median(floors);
    let per = |d: Duration| d.as_nanos() as f64 / f64::from(ops);
    println!("| path | ns per signal | vs floor |");
    println!("| --- | ---: | ---: |");
    println!("| eventfd write(2) (floor) | {:.0} | 1.00 |", per(floor));
    let path = median(signals);
    println!(
        "| EventFd::signal (write within the deadline) | {:.0} | {:.2} |",
        per(path),
        floor.as_secs_f64() / path.as_secs_f64()
    );
}
