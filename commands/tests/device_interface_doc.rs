//! The worked example of docs/device-interface.md ("Commands") is what
//! the encoder writes and what the validator accepts, so that a driver
//! writer who copies it gets a working submission.

use std::fs;
use std::path::PathBuf;

use vgpu_commands::testing::TestMemory;
use vgpu_commands::{Command, FenceValue, GpuVa, RingState, StreamBuilder, Validator};

/// The dwords of the worked example's table, in order.
fn worked_example() -> Vec<u32> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/device-interface.md");
    let doc = fs::read_to_string(path).unwrap();
    let section = doc
        .split("### Worked example")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a worked example in the Commands section");
    section
        .lines()
        .filter_map(|line| {
            let value = line.split('|').nth(2)?.trim().trim_matches('`');
            u32::from_str_radix(value.strip_prefix("0x")?, 16).ok()
        })
        .collect()
}

#[test]
fn the_worked_example_is_what_the_encoder_writes() {
    let mut stream = StreamBuilder::new();
    stream
        .fill(0x1_0000_0000, 0x1000, 0xff00_00ff)
        .fence32(0x2000, 7, true);
    assert_eq!(worked_example(), stream.words());
}

#[test]
fn the_worked_example_validates_to_a_fill_and_a_fence() {
    let words = worked_example();
    let mut memory = TestMemory::new();
    memory.map(0x10_0000, 4096);
    let put = memory.write_ring(0x10_0000, 4096, 0, &words);
    assert_eq!(put, 0x28);
    let ring = RingState {
        base: 0x10_0000,
        size: 4096,
        get: 0,
        put,
    };
    let stream = Validator::new().validate(&ring, &mut memory).unwrap();
    let commands: Vec<Command> = stream.commands().map(|at| at.command).collect();
    assert_eq!(
        commands,
        [
            Command::Fill {
                dst: GpuVa::new(0x1_0000_0000).unwrap(),
                bytes: 0x1000,
                pattern: 0xff00_00ff
            },
            Command::Fence {
                dst: GpuVa::new(0x2000).unwrap(),
                value: FenceValue::U32(7),
                interrupt: true
            }
        ]
    );
}
