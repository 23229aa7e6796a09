//! Fuzzes the device model with what a guest chooses: region index (any
//! `u32`), offset (any `u64`), length and bytes of reads and writes, mixed
//! with the owner's DMA and translation completions, reported faults, INTx
//! and resets, on a profile the input picks (channels, VRAM size, maximum
//! resolution).
//!
//! The harness (layout and checks: `vgpu_emulation::fuzzing`) asserts
//! after every step that refusals follow the region rules and change
//! nothing, reads fill what they were asked for, and the effects name only
//! vectors, DMA ranges and MMU requests the device interface allows.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vgpu_emulation::fuzzing::fuzz_device_access(data);
});
