//! The `watch` program: for a while, reads a register of each vGPU (BAR2,
//! trapped: answered by the daemon) and writes and reads back a word of its
//! VRAM (BAR0, mapped: never reaches the daemon), and prints a line each
//! time what it sees changes. Used to measure what a guest sees when the
//! daemon goes away under it (docs/operations.md).
//!
//! ```text
//! VGPU-WATCH <address> t=<seconds> magic=<value> vram=<ok|lost>
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use crate::mapping::{Access, Mapping};
use crate::pci::{PciDevice, SYSFS_PCI_DEVICES};
use crate::registers::Registers;

/// BAR2 offset of the control block's MAGIC register.
const MAGIC: usize = 0x1000;
/// VRAM offset of the word `watch` writes (the last 4 KiB page, away from
/// the console's frame).
const PROBE_FROM_END: u64 = 4096;

/// Watches every vGPU for `duration`; returns the number of vGPUs it could
/// not watch at all.
pub fn run(duration: Duration, interval: Duration) -> usize {
    let devices = match PciDevice::find_vgpus(Path::new(SYSFS_PCI_DEVICES)) {
        Ok(d) => d,
        Err(e) => {
            println!("VGPU-WATCH none error={e}");
            return 1;
        }
    };
    let mut watched = Vec::new();
    let mut failures = 0;
    for device in devices {
        let size = device
            .resources()
            .ok()
            .and_then(|r| r.first().map(|b| b.size()))
            .unwrap_or(0);
        let vram = size.checked_sub(PROBE_FROM_END).and_then(|at| {
            Mapping::bar_with(&device.bar_path(0), at, 4096, Access::ReadWrite).ok()
        });
        match (Registers::open(&device), vram) {
            (Ok(registers), Some(vram)) => watched.push((device, registers, vram, String::new())),
            _ => {
                println!("VGPU-WATCH {} error=cannot map its BARs", device.address);
                failures += 1;
            }
        }
    }
    let start = Instant::now();
    let mut tick = 0u32;
    while start.elapsed() < duration {
        tick = tick.wrapping_add(1);
        for (device, registers, vram, last) in &mut watched {
            let magic = registers
                .read_u32(MAGIC)
                .map_or_else(|e| format!("error({e})"), |v| format!("{v:#010x}"));
            let word = 0x5a00_0000 | tick;
            let vram_state = match vram.write_u32(0, word).and_then(|()| vram.read_u32(0)) {
                Some(v) if v == word => "ok",
                _ => "lost",
            };
            let now = format!("magic={magic} vram={vram_state}");
            if now != *last {
                println!(
                    "VGPU-WATCH {} t={:.2} {now}",
                    device.address,
                    start.elapsed().as_secs_f64()
                );
                *last = now;
            }
        }
        std::thread::sleep(interval);
    }
    for (device, _, _, last) in &watched {
        println!(
            "VGPU-WATCH {} t={:.2} end {last}",
            device.address,
            start.elapsed().as_secs_f64()
        );
    }
    failures
}
