//! Fuzzes the command validator with hostile rings and batches.
//!
//! The input picks the ring registers (size, base, GET, PUT), whether one
//! page faults and whether memory changes from read to read, and fills the
//! GPU memory that the ring and every batch are read from (layout:
//! `vgpu_commands::fuzzing`). The harness validates and checks the result
//! against the reference validator run over exactly the bytes that were
//! read, the invariants of a validated stream, a second validation through
//! recycled buffers, and the fast screen against the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vgpu_commands::fuzzing::fuzz_command_validator(data);
});
