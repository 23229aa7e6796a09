//! The validator's fast path: a table-driven screen that passes the common
//! guest commands without a branch on the opcode, and leaves everything
//! else to the decoder.
//!
//! A stream's opcodes follow no pattern a branch predictor can learn, so a
//! decoder that dispatches on the opcode pays a mispredicted jump per
//! command, which costs more than the rest of the command's checks
//! together. The screen instead looks up one [`Rule`] by opcode and
//! applies the same checks to every command: header bits that must be 0, a
//! header field's bound, the length, and for each of the 8 payload dwords
//! one window test, `(dword − sub) & zero == 0`, which says "a multiple of
//! `zero`'s low bits' span, in a power-of-two window from `sub`". All of
//! them accumulate into one word, so the only branch is "pass or not",
//! which real streams almost always take the same way, and the lanes
//! vectorise.
//!
//! The screen is conservative, never exact: whatever it passes, the
//! decoder would decode as a guest command of the same length (a unit
//! test, a property test and the fuzz harness check this), but it does not
//! pass everything the decoder accepts. BATCH_START, BATCH_END, the rare
//! commands (TLB_INVALIDATE, SET_SCANOUT), every privileged form, every
//! refusal, STORE_REGISTER of a register other than a GPR, and edge values
//! that a power-of-two window cannot express (addresses from 2^47 up,
//! COPY and FILL lengths above 2 GiB) go to the decoder, which decides and
//! names the reason.

use crate::command::MAX_SURFACE_DIMENSION;
use crate::opcode::{
    FLAG_FENCE_INTERRUPT, FLAG_FENCE_VALUE64, FLAG_SEMAPHORE_COMPARE_MASK,
    FLAG_SEMAPHORE_COMPARE_SHIFT, HEADER_FLAGS_MASK, HEADER_RESERVED_MASK, Opcode, header_dwords,
};
use crate::registers::{GPR_COUNT, GPR0_OFFSET};

/// Dwords the screen reads: the longest command it passes (BLIT2D). The
/// validator keeps this many readable dwords after every copy.
pub(crate) const WINDOW: usize = 9;

/// A `dwords` value no header has, for rules that never pass.
const NEVER: u32 = 0x100;

/// What a command of one opcode (and, for FENCE, one width) must satisfy
/// to pass.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Rule {
    /// Per payload dword (dword 1 to 8): `(dword − sub) & zero` must be 0.
    sub: [u32; 8],
    zero: [u32; 8],
    /// Header bits that must be 0.
    header_zero: u32,
    /// A header field that must be at most `header_max`.
    header_field: u32,
    header_max: u32,
    /// The length the header must give ([`NEVER`]: never passes).
    dwords: u32,
    /// NOP: any length from 1 passes.
    any_length: bool,
    /// BLIT2D: both pitches (dwords 3 and 6) at least 4 × the width
    /// (dword 7).
    pitches: bool,
}

const NEUTRAL: Rule = Rule {
    sub: [0; 8],
    zero: [0; 8],
    header_zero: HEADER_RESERVED_MASK | HEADER_FLAGS_MASK,
    header_field: 0,
    header_max: 0,
    dwords: NEVER,
    any_length: false,
    pitches: false,
};

/// The window tests of a GPU VA's high dword. Below 2^48 (any address) it
/// has bits 31:16 clear. Below 2^47 it has bits 31:15 clear, and then a
/// range of up to 2^47 bytes from the address (any 32-bit length, any
/// BLIT2D footprint, which is under 2^46 + 2^16 bytes) stays below 2^48.
const VA_HI_ANY: u32 = 0xffff_0000;
const VA_HI_RANGE: u32 = 0xffff_8000;

const fn fixed(opcode: Opcode) -> Rule {
    let dwords = match opcode.dwords() {
        Some(dwords) => dwords as u32,
        None => NEVER,
    };
    Rule { dwords, ..NEUTRAL }
}

/// A GPU VA in payload lanes `lo`, `lo + 1`, aligned to `align`, its high
/// dword tested with `hi_zero`.
const fn va(mut rule: Rule, lo: usize, align: u32, hi_zero: u32) -> Rule {
    rule.zero[lo] = align - 1;
    rule.zero[lo + 1] = hi_zero;
    rule
}

/// Payload lane `lane` in `from ..= from + span − 1` (`span` a power of
/// two), a multiple of `align`.
const fn window(mut rule: Rule, lane: usize, from: u32, span: u32, align: u32) -> Rule {
    rule.sub[lane] = from;
    rule.zero[lane] = !(span - 1) | (align - 1);
    rule
}

const fn rules() -> [Rule; 512] {
    let nop = Rule {
        any_length: true,
        ..NEUTRAL
    };

    let copy = va(fixed(Opcode::Copy), 0, 1, VA_HI_RANGE);
    let copy = va(copy, 2, 1, VA_HI_RANGE);
    let copy = window(copy, 4, 1, 1 << 31, 1);

    let fill = va(fixed(Opcode::Fill), 0, 4, VA_HI_RANGE);
    let fill = window(fill, 2, 4, 1 << 31, 4);

    let blit = va(fixed(Opcode::Blit2d), 0, 4, VA_HI_RANGE);
    let blit = va(blit, 3, 4, VA_HI_RANGE);
    let blit = window(blit, 6, 1, MAX_SURFACE_DIMENSION, 1);
    let mut blit = window(blit, 7, 1, MAX_SURFACE_DIMENSION, 1);
    // Pitches: multiples of 4, at least a row.
    blit.zero[2] = 3;
    blit.zero[5] = 3;
    blit.pitches = true;

    let mut fence32 = va(fixed(Opcode::Fence), 0, 4, VA_HI_ANY);
    fence32.header_zero = HEADER_RESERVED_MASK | (HEADER_FLAGS_MASK & !FLAG_FENCE_INTERRUPT);
    fence32.zero[3] = u32::MAX;
    let mut fence64 = va(fixed(Opcode::Fence), 0, 8, VA_HI_ANY);
    fence64.header_zero =
        HEADER_RESERVED_MASK | (HEADER_FLAGS_MASK & !(FLAG_FENCE_INTERRUPT | FLAG_FENCE_VALUE64));

    let mut semaphore = va(fixed(Opcode::SemaphoreWait), 0, 4, VA_HI_ANY);
    semaphore.header_zero =
        HEADER_RESERVED_MASK | (HEADER_FLAGS_MASK & !FLAG_SEMAPHORE_COMPARE_MASK);
    semaphore.header_field = FLAG_SEMAPHORE_COMPARE_MASK;
    // The greatest compare operation, LE.
    semaphore.header_max = 5 << FLAG_SEMAPHORE_COMPARE_SHIFT;

    let timestamp = va(fixed(Opcode::Timestamp), 0, 8, VA_HI_ANY);

    // The GPRs are the first 16 dwords of the register space, a
    // power-of-two window; the other readable registers are left to the
    // decoder.
    let gprs = 4 * GPR_COUNT as u32;
    let lri = window(fixed(Opcode::LoadRegisterImm), 0, GPR0_OFFSET, gprs, 4);
    let store = va(fixed(Opcode::StoreRegister), 1, 4, VA_HI_ANY);
    let store = window(store, 0, GPR0_OFFSET, gprs, 4);

    // Index: the opcode, plus 256 when header bit 17 is set: FENCE's
    // VALUE64, and part of SEMAPHORE_WAIT's compare operation. Opcodes
    // without a rule never pass. Only the 18 rules real streams use are
    // ever read, so the table's size costs no cache.
    let mut rules = [NEUTRAL; 512];
    let mut high = 0;
    while high <= 256 {
        rules[Opcode::Nop.value() as usize | high] = nop;
        rules[Opcode::Copy.value() as usize | high] = copy;
        rules[Opcode::Fill.value() as usize | high] = fill;
        rules[Opcode::Blit2d.value() as usize | high] = blit;
        rules[Opcode::Fence.value() as usize | high] = if high == 0 { fence32 } else { fence64 };
        rules[Opcode::SemaphoreWait.value() as usize | high] = semaphore;
        rules[Opcode::Timestamp.value() as usize | high] = timestamp;
        rules[Opcode::LoadRegisterImm.value() as usize | high] = lri;
        rules[Opcode::StoreRegister.value() as usize | high] = store;
        high += 256;
    }
    rules
}

static RULES: [Rule; 512] = rules();

#[inline(always)]
fn rule_index(header: u32) -> usize {
    (header & 0xff | (header >> 9) & 0x100) as usize
}

/// Whether the command at `words[pos]` is certainly a guest command that
/// ends at or before `end`; if so, its length in dwords. `None` means
/// "ask the decoder", not "refused".
#[inline(always)]
pub(crate) fn screen(words: &[u32], pos: usize, end: usize) -> Option<usize> {
    let window: &[u32; WINDOW] = words.get(pos..)?.first_chunk()?;
    let header = window[0];
    let rule = &RULES[rule_index(header)];
    let dwords = header_dwords(header);
    let length_ok = (dwords as u32 == rule.dwords) | (rule.any_length & (dwords != 0));
    // A width above 16384 fails its lane test, so the row's wrapping in
    // 32 bits never lets a BLIT2D through.
    let row = window[7].wrapping_mul(4);
    let pitches_bad = (window[3] < row) | (window[6] < row);
    let bad = (header & rule.header_zero != 0)
        | ((header & rule.header_field) > rule.header_max)
        | !length_ok
        | (pos + dwords > end)
        | (pitches_bad & rule.pitches);
    let mut lanes = 0;
    for lane in 0..8 {
        lanes |= window[1 + lane].wrapping_sub(rule.sub[lane]) & rule.zero[lane];
    }
    if !bad & (lanes == 0) {
        Some(dwords)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, decode};
    use crate::encode::StreamBuilder;
    use crate::opcode::header;

    /// The screen's promise, for one window.
    fn check(window: &[u32; WINDOW]) -> Option<usize> {
        let passed = screen(window, 0, WINDOW);
        if let Some(dwords) = passed {
            match decode(&window[..]) {
                Ok((Decoded::Command(_), decoded)) => assert_eq!(decoded, dwords, "{window:x?}"),
                other => panic!("screen passed {window:x?}, decoder says {other:?}"),
            }
        }
        passed
    }

    fn window(words: &[u32]) -> [u32; WINDOW] {
        let mut window = [0; WINDOW];
        window[..words.len()].copy_from_slice(words);
        window
    }

    #[test]
    fn common_commands_pass() {
        let mut b = StreamBuilder::new();
        b.nop(1)
            .nop(9)
            .copy(0x1000, 0x2001, 3)
            .fill(0x1000, 8, 0)
            .blit2d(0x1000, 4096, 0x2000, 4096, 1024, 2)
            .fence32(0x1004, 1, true)
            .fence64(0x1008, 1 << 40, false)
            .semaphore_wait(0x1000, crate::CompareOp::Le, 1)
            .timestamp(0x1008)
            .load_register_imm(0x3c, 1)
            .store_register(0x3c, 0x1000);
        let words = b.words();
        let mut pos = 0;
        let mut passed = 0;
        while pos < words.len() {
            let mut padded = words[pos..].to_vec();
            padded.resize(padded.len().max(WINDOW), 0);
            let dwords = check(padded[..WINDOW].try_into().unwrap()).expect("passes");
            pos += dwords;
            passed += 1;
        }
        assert_eq!(passed, 11);
    }

    #[test]
    fn batches_rare_commands_and_privileged_forms_go_to_the_decoder() {
        let mut b = StreamBuilder::new();
        b.batch_start(0x1000, 4)
            .batch_end()
            .tlb_invalidate_all()
            .set_scanout(0, 0x1000, 4096, 1024, 1)
            .set_context(0)
            .set_pt_root(0)
            .copy(0, 0, 4)
            .with_flags(crate::FLAG_PHYSICAL)
            .load_register_imm(0x40, 0)
            .store_register(0x4c, 0)
            .store_register(0x50, 0);
        let words = b.words();
        let mut pos = 0;
        while pos < words.len() {
            let mut padded = words[pos..].to_vec();
            padded.resize(padded.len().max(WINDOW), 0);
            assert_eq!(check(padded[..WINDOW].try_into().unwrap()), None, "{pos}");
            pos += crate::opcode::header_dwords(words[pos]);
        }
    }

    #[test]
    fn a_command_past_the_end_does_not_pass() {
        let w = window(&[header(Opcode::Timestamp, 3, 0), 0x1000, 0]);
        assert_eq!(screen(&w, 0, 2), None);
        assert_eq!(screen(&w, 0, 3), Some(3));
        // Nor does one whose window runs off the buffer.
        assert_eq!(screen(&w[..8], 0, 3), None);
    }

    /// Values at and around every bound the rules use.
    const EDGES: [u32; 24] = [
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        0x3c,
        0x3d,
        0x40,
        0x4c,
        0x50,
        0x1000,
        0x3fff,
        0x4000,
        0x4001,
        0x7fff,
        0x8000,
        0xfffe,
        0xffff,
        0x1_0000,
        0x8000_0000,
        0xffff_fffc,
        u32::MAX,
    ];

    proptest::proptest! {
        #[test]
        fn random_windows_keep_the_promise(
            opcode in 0u32..18,
            dwords in 0u32..12,
            flags in proptest::prelude::any::<u8>(),
            payload in proptest::array::uniform8(proptest::prop_oneof![
                proptest::prelude::any::<u32>(),
                0u32..0x100,
                proptest::sample::select(EDGES.to_vec()),
            ]),
        ) {
            let mut w = [0; WINDOW];
            w[0] = opcode | dwords << 8 | u32::from(flags) << 16;
            w[1..].copy_from_slice(&payload);
            check(&w);
        }
    }

    #[test]
    fn every_edge_value_in_every_lane_keeps_the_promise() {
        let flag_sets = [
            0,
            1 << 16,
            1 << 17,
            1 << 18,
            5 << 17,
            6 << 17,
            7 << 17,
            1 << 24,
        ];
        let mut passed = 0;
        for opcode in 0..=17u32 {
            for dwords in [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 255] {
                for flags in flag_sets {
                    let base = [0x1000, 0, 0x4000, 0x1000, 0, 0x4000, 0x1000, 16, 16];
                    for lane in 1..WINDOW {
                        for edge in EDGES {
                            let mut w = base;
                            w[0] = opcode | dwords << 8 | flags;
                            w[lane] = edge;
                            if check(&w).is_some() {
                                passed += 1;
                            }
                        }
                    }
                }
            }
        }
        // The screen is not vacuous.
        assert!(passed > 1_000, "{passed}");
    }
}
