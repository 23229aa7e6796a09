//! What a copy through a DMA window costs, by how the window is reached:
//! `cargo bench -p vgpu-mdev --bench dma_copy`.
//!
//! A 64 MiB guest memfd is mapped as one window twice over: sealed against
//! shrinking (QEMU's default `memory-backend-memfd`, plain memory copies)
//! and unsealed (a `memory-backend-file`, copies checked by the kernel
//! with `process_vm_readv`/`process_vm_writev`). Each row reads or writes
//! the whole window in copies of 4 KiB (a page table, or a page of a
//! guest buffer) and of 64 KiB, and the floor is a plain `memcpy` of the
//! same sizes between two buffers of the daemon's own, measured in the
//! same run, interleaved round by round. The bench pins itself to the CPU
//! it starts on. `DMA_BENCH_ROUNDS` changes the 9 rounds; medians are
//! reported.

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::fs::{MemfdFlags, SealFlags};
use vgpu_mdev::{DmaBacking, DmaTarget, DmaWindows};

const WINDOW: usize = 64 << 20;
const IOVA: u64 = 1 << 32;

fn memfd(sealed: bool) -> OwnedFd {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    let fd = rustix::fs::memfd_create("dma-bench", flags).expect("memfd");
    rustix::fs::ftruncate(&fd, WINDOW as u64).expect("size the memfd");
    if sealed {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).expect("seal");
    }
    fd
}

fn window(sealed: bool) -> DmaWindows {
    let mut windows = DmaWindows::new();
    let backing = DmaBacking::Fd {
        fd: memfd(sealed),
        offset: 0,
    };
    windows
        .map(IOVA, WINDOW as u64, true, backing)
        .expect("map the window");
    windows
}

/// Reads (or writes) the whole window in copies of `chunk` bytes.
fn through_window(windows: &DmaWindows, chunk: usize, write: bool, buf: &mut [u8]) -> Duration {
    let start = Instant::now();
    for offset in (0..WINDOW).step_by(chunk) {
        let iova = IOVA + offset as u64;
        let Ok(DmaTarget::Local(dma)) = windows.resolve(iova, chunk as u64, write) else {
            panic!("the window resolves locally");
        };
        let done = if write {
            dma.write(&buf[..chunk])
        } else {
            dma.read(&mut buf[..chunk])
        };
        done.expect("the window's memory is there");
        black_box(&mut *buf);
    }
    start.elapsed()
}

/// The floor: the same copies between two buffers of the daemon's own.
fn floor(source: &[u8], chunk: usize, buf: &mut [u8]) -> Duration {
    let start = Instant::now();
    for from in black_box(source).chunks_exact(chunk) {
        buf[..chunk].copy_from_slice(from);
        black_box(&mut *buf);
    }
    start.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn pin_to_current_cpu() {
    let cpu = rustix::thread::sched_getcpu();
    let mut cpus = rustix::thread::CpuSet::new();
    cpus.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &cpus) {
        eprintln!("cannot pin the bench to CPU {cpu} ({e}); running unpinned");
    }
}

fn main() {
    let rounds: usize = std::env::var("DMA_BENCH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(9)
        .max(1);
    pin_to_current_cpu();
    let sealed = window(true);
    let unsealed = window(false);
    let source = vec![0x5au8; WINDOW];
    let mut buf = vec![0u8; 64 << 10];
    println!("DMA window copies: 64 MiB per row, {rounds} rounds, median");
    println!(
        "{:<8} {:<22} {:>10} {:>10} {:>9}",
        "copy", "path", "time", "GB/s", "vs floor"
    );
    for chunk in [4 << 10, 64 << 10] {
        let paths: [(&str, Option<(&DmaWindows, bool)>); 5] = [
            ("floor (memcpy)", None),
            ("sealed memfd, read", Some((&sealed, false))),
            ("sealed memfd, write", Some((&sealed, true))),
            ("unsealed file, read", Some((&unsealed, false))),
            ("unsealed file, write", Some((&unsealed, true))),
        ];
        let mut samples = vec![Vec::new(); paths.len()];
        // One warm-up round that touches every page, then the measured ones.
        for round in 0..=rounds {
            for ((_, path), samples) in paths.iter().zip(&mut samples) {
                let time = match path {
                    None => floor(&source, chunk, &mut buf),
                    Some((windows, write)) => through_window(windows, chunk, *write, &mut buf),
                };
                if round > 0 {
                    samples.push(time);
                }
            }
        }
        let times: Vec<Duration> = samples.into_iter().map(median).collect();
        for ((name, _), time) in paths.iter().zip(&times) {
            println!(
                "{:<8} {:<22} {:>8.2}ms {:>10.2} {:>9.3}",
                format!("{} KiB", chunk >> 10),
                name,
                time.as_secs_f64() * 1e3,
                WINDOW as f64 / time.as_secs_f64() / 1e9,
                times[0].as_secs_f64() / time.as_secs_f64()
            );
        }
    }
}
