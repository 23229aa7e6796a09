//! An encoder of the command set written from `docs/device-interface.md`
//! ("Commands") alone: header bit layout, every opcode's dwords and flags.
//! It shares nothing with the `vgpu-commands` crate, so that a place where
//! the daemon and the document disagree shows up as a wrong outcome here.
//!
//! Every function returns the command's dwords; `with` ORs header flags in,
//! `concat` joins commands, `batch` appends the BATCH_END a batch needs.

/// Opcodes (header bits 7:0).
pub mod op {
    pub const NOP: u32 = 0x01;
    pub const COPY: u32 = 0x02;
    pub const FILL: u32 = 0x03;
    pub const BLIT2D: u32 = 0x04;
    pub const FENCE: u32 = 0x05;
    pub const SEMAPHORE_WAIT: u32 = 0x06;
    pub const BATCH_START: u32 = 0x07;
    pub const BATCH_END: u32 = 0x08;
    pub const TLB_INVALIDATE: u32 = 0x09;
    pub const TIMESTAMP: u32 = 0x0a;
    pub const LOAD_REGISTER_IMM: u32 = 0x0b;
    pub const STORE_REGISTER: u32 = 0x0c;
    pub const SET_SCANOUT: u32 = 0x0d;
    pub const SET_CONTEXT: u32 = 0x0e;
    pub const SET_PT_ROOT: u32 = 0x0f;
}

/// Header bit 16 on every opcode that addresses memory.
pub const PHYSICAL: u32 = 1 << 16;
/// BATCH_START header bit 17.
pub const PRIVILEGED: u32 = 1 << 17;
/// FENCE header bit 17.
pub const VALUE64: u32 = 1 << 17;
/// FENCE header bit 18.
pub const INTERRUPT: u32 = 1 << 18;
/// TLB_INVALIDATE header bit 17.
pub const ALL: u32 = 1 << 17;

/// SEMAPHORE_WAIT compare operations (header bits 19:17).
pub mod cmp {
    pub const EQ: u32 = 0;
    pub const NE: u32 = 1;
    pub const GE: u32 = 2;
    pub const GT: u32 = 3;
    pub const LT: u32 = 4;
    pub const LE: u32 = 5;
}

/// Channel error codes (validator 1-12, engines 16-18).
pub mod code {
    pub const UNKNOWN_OPCODE: u32 = 1;
    pub const BAD_LENGTH: u32 = 2;
    pub const PRIVILEGED: u32 = 3;
    pub const REGISTER_NOT_ALLOWED: u32 = 4;
    pub const DISPLAY_HEAD: u32 = 5;
    pub const BATCH_DEPTH: u32 = 6;
    pub const STREAM_TOO_LONG: u32 = 7;
    pub const BAD_FIELD: u32 = 8;
    pub const FETCH_FAULT: u32 = 9;
    pub const BAD_RING: u32 = 10;
    pub const UNTERMINATED_BATCH: u32 = 11;
    pub const STRAY_BATCH_END: u32 = 12;
    pub const ENGINE_FAULT: u32 = 16;
    pub const WATCHDOG: u32 = 17;
    pub const BAD_SURFACE: u32 = 18;
}

/// Dword 0: opcode in 7:0, DWORDS in 15:8, flags in 23:16.
pub const fn header(opcode: u32, dwords: u32, flags: u32) -> u32 {
    opcode | (dwords << 8) | flags
}

pub const fn lo(value: u64) -> u32 {
    value as u32
}

pub const fn hi(value: u64) -> u32 {
    (value >> 32) as u32
}

/// `cmd` with `flags` ORed into its header.
pub fn with(mut cmd: Vec<u32>, flags: u32) -> Vec<u32> {
    cmd[0] |= flags;
    cmd
}

/// The commands one after the other.
pub fn concat(parts: &[Vec<u32>]) -> Vec<u32> {
    parts.iter().flatten().copied().collect()
}

/// A batch buffer: the commands, then BATCH_END as the last dword.
pub fn batch(parts: &[Vec<u32>]) -> Vec<u32> {
    let mut out = concat(parts);
    out.extend(batch_end());
    out
}

/// Bytes of a command sequence.
pub fn bytes_of(dwords: &[u32]) -> u32 {
    (dwords.len() * 4) as u32
}

/// NOP of `dwords` dwords (1 to 255), its payload dwords zero.
pub fn nop(dwords: u32) -> Vec<u32> {
    let mut out = vec![0; dwords.max(1) as usize];
    out[0] = header(op::NOP, dwords, 0);
    out
}

pub fn copy(src: u64, dst: u64, bytes: u32) -> Vec<u32> {
    vec![
        header(op::COPY, 6, 0),
        lo(src),
        hi(src),
        lo(dst),
        hi(dst),
        bytes,
    ]
}

pub fn fill(dst: u64, bytes: u32, pattern: u32) -> Vec<u32> {
    vec![header(op::FILL, 5, 0), lo(dst), hi(dst), bytes, pattern]
}

/// BLIT2D of `width` × `height` 32-bit pixels.
pub fn blit2d(
    src: u64,
    src_pitch: u32,
    dst: u64,
    dst_pitch: u32,
    width: u32,
    height: u32,
) -> Vec<u32> {
    vec![
        header(op::BLIT2D, 9, 0),
        lo(src),
        hi(src),
        src_pitch,
        lo(dst),
        hi(dst),
        dst_pitch,
        width,
        height,
    ]
}

/// A 4-byte FENCE writing `value` to `dst`.
pub fn fence(dst: u64, value: u32) -> Vec<u32> {
    vec![header(op::FENCE, 5, 0), lo(dst), hi(dst), value, 0]
}

/// A FENCE with VALUE64.
pub fn fence64(dst: u64, value: u64) -> Vec<u32> {
    vec![
        header(op::FENCE, 5, VALUE64),
        lo(dst),
        hi(dst),
        lo(value),
        hi(value),
    ]
}

pub fn semaphore_wait(addr: u64, compare: u32, value: u32) -> Vec<u32> {
    vec![
        header(op::SEMAPHORE_WAIT, 4, compare << 17),
        lo(addr),
        hi(addr),
        value,
    ]
}

pub fn batch_start(va: u64, bytes: u32) -> Vec<u32> {
    vec![header(op::BATCH_START, 4, 0), lo(va), hi(va), bytes]
}

pub fn batch_end() -> Vec<u32> {
    vec![header(op::BATCH_END, 1, 0)]
}

pub fn tlb_invalidate(va: u64, size: u64) -> Vec<u32> {
    vec![
        header(op::TLB_INVALIDATE, 5, 0),
        lo(va),
        hi(va),
        lo(size),
        hi(size),
    ]
}

pub fn tlb_invalidate_all() -> Vec<u32> {
    vec![header(op::TLB_INVALIDATE, 5, ALL), 0, 0, 0, 0]
}

pub fn timestamp(dst: u64) -> Vec<u32> {
    vec![header(op::TIMESTAMP, 3, 0), lo(dst), hi(dst)]
}

pub fn load_register_imm(register: u32, value: u32) -> Vec<u32> {
    vec![header(op::LOAD_REGISTER_IMM, 3, 0), register, value]
}

pub fn store_register(register: u32, dst: u64) -> Vec<u32> {
    vec![header(op::STORE_REGISTER, 4, 0), register, lo(dst), hi(dst)]
}

pub fn set_scanout(head: u32, surface: u64, pitch: u32, width: u32, height: u32) -> Vec<u32> {
    vec![
        header(op::SET_SCANOUT, 7, 0),
        head,
        lo(surface),
        hi(surface),
        pitch,
        width,
        height,
    ]
}

pub fn set_context(context: u32) -> Vec<u32> {
    vec![header(op::SET_CONTEXT, 2, 0), context]
}

pub fn set_pt_root(root: u64) -> Vec<u32> {
    vec![header(op::SET_PT_ROOT, 3, 0), lo(root), hi(root)]
}

/// The commands as the little-endian bytes the ring holds.
pub fn to_bytes(dwords: &[u32]) -> Vec<u8> {
    dwords.iter().flat_map(|d| d.to_le_bytes()).collect()
}

/// A batch of exactly `bytes` bytes (a multiple of 4, at least 4): NOPs
/// and BATCH_END as its last dword.
pub fn nop_batch(bytes: u32) -> Vec<u32> {
    assert!(bytes >= 4 && bytes.is_multiple_of(4));
    let mut left = bytes / 4 - 1;
    let mut out = Vec::with_capacity((bytes / 4) as usize);
    while left > 0 {
        let n = left.min(255);
        out.extend(nop(n));
        left -= n;
    }
    out.extend(batch_end());
    out
}

#[test]
fn the_worked_example_encodes_to_the_documented_bytes() {
    let cmds = concat(&[
        fill(0x1_0000_0000, 0x1000, 0xff00_00ff),
        with(fence(0x2000, 7), INTERRUPT),
    ]);
    let expected: [u8; 40] = [
        0x03, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
        0x00, 0xff, 0x00, 0x00, 0xff, 0x05, 0x05, 0x04, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(to_bytes(&cmds), expected);
    assert_eq!(cmds[0], 0x0000_0503);
    assert_eq!(cmds[5], 0x0004_0505);
}

#[test]
fn nop_batches_have_the_asked_length_and_end_with_batch_end() {
    for bytes in [4, 8, 1024, 1028, 4096, 65_524] {
        let b = nop_batch(bytes);
        assert_eq!(bytes_of(&b), bytes);
        assert_eq!(*b.last().unwrap(), header(op::BATCH_END, 1, 0));
    }
}
