//! Property tests of the engines on the simulated GPU, without a daemon
//! (issue 9): the isolation contract's point 1 checked byte for byte
//! (DESIGN.md, "The isolation contract": the simulated GPU enforces the
//! MMU as hardware would, so memory outside a vGPU's allowed set can be
//! compared before and after), and valid streams checked against a
//! reference model.
//!
//! One simulated GPU holds two vGPUs, A and B, with 4 MiB of VRAM each
//! (`rig`). A's guest memory is one memfd: a read-write window, an
//! adjacent read-only window, and a tail nobody maps; A also has a window
//! without an fd. B's memory sits in two windows, one at the IOVA of A's
//! read-write window. Page tables for A are generated (`layout`): valid
//! mappings of its VRAM and windows, and hostile entries (outside the
//! slice, into B's VRAM by offset arithmetic, into unmapped IOVA,
//! writable over the read-only window, reserved bits, tables in B's
//! memory or in crafted guest memory). Command streams are generated
//! (`stream`) and written into rings in A's VRAM, and the channels are
//! driven through their registers; the engines run synchronously, a step
//! at a time, since neither vGPU is powered on.
//!
//! - `hostile_streams_never_reach_outside_a`: any tables, any streams
//!   (mostly well-formed commands whose addresses reach anywhere, some
//!   malformed or privileged), register actions, DMA unmaps and device
//!   resets between engine steps. Nothing outside A's allowed set changes
//!   (B's VRAM and memory, A's read-only window and unmapped tail, a memfd
//!   nobody maps, A's read-write window once unmapped); every page the
//!   daemon programs into either vGPU's contexts lies inside what that vGPU
//!   owns; nothing translates into an unmapped window; B's own work
//!   completes untouched; A's memory never comes to hold B's data; the
//!   channels end in a documented state.
//! - `valid_streams_do_what_the_model_does`: streams that only touch what
//!   is mapped (writable where they write) leave A's memory exactly as
//!   the model (`model`) does, with FENCE, interrupt status and the control
//!   page as the model says.
//! - `a_stream_stops_at_its_first_fault_as_the_model_says`: the same, with
//!   one access that runs off a mapping into a hostile entry (or none):
//!   the channel stops there with the documented reason, ERROR_VA and
//!   FAULT_VA at the first address not reached, the chunks before written
//!   and nothing after.
//!
//! `focused` holds tests named for one behaviour each.
//!
//! Case counts: `PROPTEST_CASES` overrides the defaults below.

#[path = "engine_properties/drive.rs"]
mod drive;
#[path = "engine_properties/focused.rs"]
mod focused;
#[path = "engine_properties/hostile.rs"]
mod hostile;
#[path = "engine_properties/layout.rs"]
mod layout;
#[path = "engine_properties/model.rs"]
mod model;
#[path = "engine_properties/rig.rs"]
mod rig;
#[path = "engine_properties/stream.rs"]
mod stream;
#[path = "engine_properties/valid.rs"]
mod valid;

use proptest::prelude::*;

use crate::hostile::{hostile_case, run_hostile};
use crate::stream::{valid_ops, with_poison};
use crate::valid::{run_valid, valid_case};

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Failures are kept as focused tests, not regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn hostile_streams_never_reach_outside_a(case in hostile_case()) {
        run_hostile(&case);
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn valid_streams_do_what_the_model_does(case in valid_case(valid_ops())) {
        run_valid(&case);
    }

    #[test]
    fn a_stream_stops_at_its_first_fault_as_the_model_says(case in valid_case(with_poison())) {
        run_valid(&case);
    }
}
